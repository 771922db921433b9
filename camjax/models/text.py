"""Text conditioning: the `[B, L, D]` embeddings + `[B, L]` mask interface, and a small trainable byte-level encoder.

Large configs read precomputed text embeddings (umT5-XXL for WAN, `D = 4096`) from the records; the CPU default trains
`ByteTextEncoder` jointly with the DiT so that captions mean something without any download. The null text of
classifier-free guidance is the all-zero embedding with an all-true mask (CameraCtrl II eq. 3's `0_text`; WAN also
zero-pads its text embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from camjax.models.layers import LayerNorm, ModelError, param
from camjax.models.tokenizers import ByteTokenizer
from camjax.models.wan import _DTYPES, Attention, FeedForward


class _EncoderBlock(nnx.Module):
  """Pre-LN transformer block: x += SelfAttn(LN(x)); x += FFN(LN(x))."""

  def __init__(self, width, num_heads, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm1 = LayerNorm(width, param_dtype=param_dtype, rngs=rngs)
    self.attn = Attention(width, num_heads, eps=1e-6, implementation="xla", seq_axis="act_text", **kw)
    self.norm2 = LayerNorm(width, param_dtype=param_dtype, rngs=rngs)
    self.ffn = FeedForward(width, 4 * width, seq_axis="act_text", **kw)

  def __call__(self, x, mask):
    h = self.norm1(x)
    x = x + self.attn(h, h, mask)
    return x + self.ffn(self.norm2(x))


class ByteTextEncoder(nnx.Module):
  """A small transformer over UTF-8 bytes (`ByteTokenizer`): captions -> `[B, L, width]` embeddings.

  Args:
    width: embedding width (= the DiT's `text_dim`).
    num_layers, num_heads: transformer size.
    max_length: tokens per caption (longer captions are truncated).
  """

  def __init__(self, width: int = 64, num_layers: int = 2, num_heads: int = 2, max_length: int = 64, *,
               rngs: nnx.Rngs, dtype: str = "float32", param_dtype: str = "float32"):
    if width % num_heads:
      raise ModelError(f"text encoder width {width} is not divisible by {num_heads} heads")
    self.tokenizer = ByteTokenizer(max_length)
    self.max_length = max_length
    dt, pdt = _DTYPES[dtype], _DTYPES[param_dtype]
    with nnx.use_eager_sharding(False):
      init = nnx.initializers.normal(0.02)
      self.token_embedding = param(rngs, init, (self.tokenizer.vocab_size, width), ("vocab", "embed"), pdt)
      self.position_embedding = param(rngs, init, (max_length, width), (None, "embed"), pdt)
      self.blocks = nnx.List([_EncoderBlock(width, num_heads, rngs=rngs, dtype=dt, param_dtype=pdt)
                              for _ in range(num_layers)])
      self.norm = LayerNorm(width, param_dtype=pdt, rngs=rngs)
    self.dtype = dt

  def tokenize(self, texts: Sequence[str]):
    """Captions -> `(ids int32 [B, L], mask bool [B, L])` (NumPy)."""
    return self.tokenizer.encode(texts)

  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """Token ids `[B, L]` (int) and mask `[B, L]` (bool) -> embeddings `[B, L, width]`, zero at padding."""
    if ids.ndim != 2 or ids.shape[1] > self.max_length:
      raise ModelError(f"ids must be [B, L <= {self.max_length}], got {ids.shape}")
    x = self.token_embedding[...][ids] + self.position_embedding[...][: ids.shape[1]]
    x = x.astype(self.dtype)
    for block in self.blocks:
      x = block(x, mask)
    x = self.norm(x)
    return x * mask[..., None].astype(x.dtype)

  def encode(self, texts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
    """Captions -> `(embeddings [B, L, width], mask [B, L])`."""
    ids, mask = self.tokenize(texts)
    return self(jnp.asarray(ids), jnp.asarray(mask)), jnp.asarray(mask)


def null_text(shape) -> tuple[jax.Array, jax.Array]:
  """The null text `(zeros [B, L, D], all-true mask [B, L])` of classifier-free guidance."""
  b, l, d = shape
  return jnp.zeros((b, l, d), jnp.float32), jnp.ones((b, l), bool)


def drop_text(rng: jax.Array, text: jax.Array, text_mask: jax.Array, drop_prob: float):
  """Replace each sample's text by the null text with probability `drop_prob` (text CFG training).

  Returns:
    `(text [B, L, D], text_mask [B, L])`.
  """
  drop = jax.random.uniform(rng, text.shape[:1]) < drop_prob
  text = jnp.where(drop[:, None, None], 0.0, text).astype(text.dtype)
  text_mask = jnp.where(drop[:, None], True, text_mask.astype(bool))
  return text, text_mask
