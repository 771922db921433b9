"""The umT5 text encoder of WAN 2.1 in Flax NNX, its safetensors loader, its tokenizer and WAN's caption handling.

Architecture (transformers' `UMT5EncoderModel`, the encoder half of umT5, Chung et al. 2023, "UniMax"; T5: Raffel et
al. 2020, JMLR 21(140)), for token ids `[B, L]`:

  x = embed_tokens[ids]
  per layer:  x += o(Attn(q(n1(x)), k(n1(x)), v(n1(x)); bias_l + key mask))      (n = T5's RMS norm)
              x += wo(act(wi_0(n2(x))) * wi_1(n2(x)))                             (gated FFN; plain: wo(act(wi(.))))
  hidden = n_final(x)

  * Attention scores are `q . k` WITHOUT the 1/sqrt(d_kv) factor (T5 folds it into the initialisation), plus a learned
    relative position bias `bias_l[h, i, j] = table_l[bucket(j - i), h]`. umT5 has its own table in EVERY layer; T5 /
    mT5 (`model_type` "t5" / "mt5", also accepted) have one table in layer 0 that every layer reuses.
  * Buckets are bidirectional (T5's `_relative_position_bucket`, encoder case): half of `num_buckets` for keys after
    the query, half for keys at or before it; in each half the first `num_buckets / 4` distances get their own bucket
    and larger distances share logarithmically wider ones up to `max_distance` (everything beyond: the last bucket).
    Computed in float32 like the reference; `relative_position_buckets` equals transformers' buckets exactly.
  * The norm is T5LayerNorm: `x * rsqrt(mean(x^2) + eps) * weight`, no mean subtraction, no bias, in float32.
  * FFN activation from `feed_forward_proj`: "gated-gelu" (umT5 / WAN) is the gated FFN with `gelu_new`, the tanh
    approximation `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`; "relu" (original T5) a plain ReLU FFN.

Numerics: the residual stream, norms, softmax and `wo` (transformers keeps `wo` in float32 too) run in float32; the
other projections and the attention products run in the compute `dtype` (e.g. bfloat16) with float32 accumulation.
Positions whose mask is False are still computed (as transformers does: padded queries attend to the real keys, and
no query attends to a padded key), so `UMT5Encoder.__call__` matches `UMT5EncoderModel` at every position; WAN's
`encode_text` then zeroes them.

WAN's caption handling (`encode_text`, the same as diffusers' `WanPipeline._get_t5_prompt_embeds` and WAN's own
`T5EncoderModel`): tokenize with the umT5 tokenizer (eos appended, truncated to `max_length = 512` tokens so that the
row still ends in eos), run the encoder on the padded batch with its mask, zero every position after the last real
token. The result is camjax's text interface (`camjax.models.text`): embeddings `[B, 512, D]` (4096 for umT5-XXL) and a
mask `[B, 512]` True on real tokens; the null text of CFG stays the all-zero embedding.

Checkpoints: a transformers folder (`save_pretrained`) with `config.json` and `model.safetensors` or shards listed in
`model.safetensors.index.json`, from `UMT5EncoderModel`, `UMT5Model` or `UMT5ForConditionalGeneration` (decoder and
`lm_head` tensors are ignored), or a diffusers WAN pipeline folder (its `text_encoder/` and `tokenizer/` subfolders).
Only safetensors are read: WAN's original `models_t5_umt5-xxl-enc-bf16.pth` and `pytorch_model.bin` are not.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from camjax import sharding
from camjax.errors import CamjaxError
from camjax.models.layers import Dense, RMSNorm, param
from camjax.models.tokenizers import TokenizerError
from camjax.models.wan import _DTYPES

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
WAN_TEXT_LENGTH = 512  # WAN's text_len: every caption is padded / truncated to 512 umT5 tokens

# model_type -> (relative position bias in every layer, transformers' default feed_forward_proj)
_MODEL_TYPES = {"umt5": (True, "gated-gelu"), "t5": (False, "relu"), "mt5": (False, "gated-gelu")}

_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact (erf) GELU
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # tanh approximation
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


class TextEncoderError(CamjaxError, ValueError):
  """A text-encoder checkpoint or config camjax cannot use, or encoder inputs of the wrong shape / type."""


# ----------------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UMT5Config:
  """Sizes of a umT5 / T5 encoder; the defaults are WAN 2.1's umT5-XXL.

  Attributes:
    vocab_size: rows of the token embedding (256384 for umT5; the tokenizer may use fewer).
    d_model: `D`, the width of the output embeddings.
    d_kv: features per attention head.
    d_ff: FFN hidden width.
    num_layers, num_heads: encoder depth and attention heads.
    relative_attention_num_buckets, relative_attention_max_distance: relative position buckets (see module doc).
    layer_norm_epsilon: `eps` of the RMS norms.
    feed_forward_proj: "gated-<act>" (gated FFN `wi_0`, `wi_1`, `wo`) or "<act>" (`wi`, `wo`), act in `_ACTIVATIONS`;
      "gated-gelu" means `gelu_new` (transformers' rule).
    bias_per_layer: True (umT5): a relative position table in every layer; False (T5 / mT5): layer 0's table is shared.
    dtype: compute dtype of the projections and attention products ("float32", "bfloat16", "float16").
    param_dtype: storage dtype of the parameters.

  Raises:
    TextEncoderError: on construction, a size that is not a positive int, buckets that cannot be split (fewer than 4,
      or `max_distance` not above `num_buckets / 4`), an unknown activation or dtype.
  """

  vocab_size: int = 256384
  d_model: int = 4096
  d_kv: int = 64
  d_ff: int = 10240
  num_layers: int = 24
  num_heads: int = 64
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "gated-gelu"
  bias_per_layer: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                 "relative_attention_num_buckets", "relative_attention_max_distance"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TextEncoderError(f"UMT5Config.{name} must be a positive int, got {value!r}")
    if self.relative_attention_num_buckets < 4:
      raise TextEncoderError(f"relative_attention_num_buckets must be >= 4, got {self.relative_attention_num_buckets}")
    if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 4:
      raise TextEncoderError(f"relative_attention_max_distance {self.relative_attention_max_distance} must exceed "
                             f"num_buckets / 4 = {self.relative_attention_num_buckets // 4}")
    self.activation  # noqa: B018 (validates feed_forward_proj)
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise TextEncoderError(f"UMT5Config.{name} {getattr(self, name)!r} not in {sorted(_DTYPES)}")

  @property
  def gated(self) -> bool:
    """Whether the FFN is gated (`wi_0`, `wi_1`) rather than plain (`wi`)."""
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self) -> str:
    """The FFN activation's transformers name (`ACT2FN` key), following `T5Config`'s parsing of `feed_forward_proj`."""
    parts = self.feed_forward_proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
      raise TextEncoderError(f"feed_forward_proj {self.feed_forward_proj!r} is not '<act>' or 'gated-<act>'")
    act = "gelu_new" if self.feed_forward_proj == "gated-gelu" else parts[-1]
    if act not in _ACTIVATIONS:
      raise TextEncoderError(f"feed_forward_proj {self.feed_forward_proj!r}: activation {act!r} not in "
                             f"{sorted(_ACTIVATIONS)}")
    return act

  @classmethod
  def from_transformers_config(cls, config: dict, source: str = "config", **overrides) -> UMT5Config:
    """The encoder config of a transformers `config.json` dict (`model_type` "umt5", "t5" or "mt5").

    Missing fields take transformers' defaults for that model type; `overrides` (e.g. `dtype="bfloat16"`) win.

    Raises:
      TextEncoderError: `model_type` is not a T5-family type, the config is a decoder-only one (`is_decoder`), or a
        size is invalid; the message names `source`.
    """
    model_type = config.get("model_type")
    if model_type not in _MODEL_TYPES:
      raise TextEncoderError(f"{source}: model_type {model_type!r} is not a umT5 / T5 encoder "
                             f"(expected one of {sorted(_MODEL_TYPES)}; architectures {config.get('architectures')})")
    if config.get("is_decoder", False):
      raise TextEncoderError(f"{source}: is_decoder is true (a decoder config, not an encoder)")
    per_layer, default_ffn = _MODEL_TYPES[model_type]
    fields = dict(
        vocab_size=config.get("vocab_size", 32128), d_model=config.get("d_model", 512), d_kv=config.get("d_kv", 64),
        d_ff=config.get("d_ff", 2048), num_layers=config.get("num_layers", 6), num_heads=config.get("num_heads", 8),
        relative_attention_num_buckets=config.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=config.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=float(config.get("layer_norm_epsilon", 1e-6)),
        feed_forward_proj=config.get("feed_forward_proj", default_ffn), bias_per_layer=per_layer)
    fields.update(overrides)
    try:
      return cls(**fields)
    except TextEncoderError as e:
      raise TextEncoderError(f"{source}: {e}") from e


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """Bidirectional relative position buckets of T5 / umT5 encoders (transformers' `_relative_position_bucket`).

  Args:
    query_length, key_length: sequence lengths (static).
    num_buckets, max_distance: `relative_attention_num_buckets`, `relative_attention_max_distance`.

  Returns:
    int32 `[query_length, key_length]`: the bucket of `key_position - query_position`, in `[0, num_buckets)`.
    Computed in float32 as the reference does (identical buckets; checked in the tests for the umT5-XXL sizes).
  """
  rel = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
  half = num_buckets // 2
  offset = (rel > 0).astype(np.int32) * half
  n = np.abs(rel)
  max_exact = half // 2
  ratio = (np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact))
           / np.float32(math.log(max_distance / max_exact)))
  large = np.minimum(max_exact + (ratio * np.float32(half - max_exact)).astype(np.int32), half - 1)
  return (offset + np.where(n < max_exact, n, large)).astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


class _SelfAttention(nnx.Module):
  """T5 self-attention: no 1/sqrt(d) scaling, an additive relative position bias, a key mask."""

  def __init__(self, c: UMT5Config, has_bias: bool, *, rngs, dtype, param_dtype):
    self.num_heads, self.d_kv, self.dtype = c.num_heads, c.d_kv, dtype
    inner = c.num_heads * c.d_kv
    normal = nnx.initializers.normal
    kw = dict(rngs=rngs, use_bias=False, dtype=dtype, param_dtype=param_dtype)
    # Mesh-TensorFlow initialisation (the scale of q absorbs the missing 1/sqrt(d_kv)).
    self.q = Dense(c.d_model, inner, ("embed", "heads"), kernel_init=normal((c.d_model * c.d_kv) ** -0.5), **kw)
    self.k = Dense(c.d_model, inner, ("embed", "heads"), kernel_init=normal(c.d_model ** -0.5), **kw)
    self.v = Dense(c.d_model, inner, ("embed", "heads"), kernel_init=normal(c.d_model ** -0.5), **kw)
    self.o = Dense(inner, c.d_model, ("heads", "embed"), kernel_init=normal(inner ** -0.5), **kw)
    self.relative_attention_bias = (
        param(rngs, normal(c.d_model ** -0.5), (c.relative_attention_num_buckets, c.num_heads), (None, None),
              param_dtype) if has_bias else None)

  def position_bias(self, buckets: np.ndarray) -> jax.Array:
    """float32 `[heads, L, L]` from the bucket map `[L, L]` (this layer must own a table)."""
    return jnp.transpose(self.relative_attention_bias[...].astype(jnp.float32)[buckets], (2, 0, 1))

  def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array) -> jax.Array:
    b, l, _ = x.shape
    split = lambda a: sharding.constrain(a.reshape(b, l, self.num_heads, self.d_kv),
                                         ("act_batch", "act_text", "act_heads", "act_kv"))
    q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) + bias[None]
    # A masked key gets the most negative float32: zero weight wherever the row has a real key (a row without any
    # real key attends uniformly, finite).
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32).astype(self.dtype)
    return self.o(out.reshape(b, l, -1)).astype(jnp.float32)


class _FeedForward(nnx.Module):
  """T5 FFN: `wo(act(wi_0 x) * wi_1 x)` (gated) or `wo(act(wi x))`; `wo` in float32 (as transformers keeps it)."""

  def __init__(self, c: UMT5Config, *, rngs, dtype, param_dtype):
    normal = nnx.initializers.normal
    kw = dict(rngs=rngs, use_bias=False, param_dtype=param_dtype)
    win = dict(kernel_init=normal(c.d_model ** -0.5), dtype=dtype, **kw)
    self.act = _ACTIVATIONS[c.activation]
    if c.gated:
      self.wi_0 = Dense(c.d_model, c.d_ff, ("embed", "mlp"), **win)
      self.wi_1 = Dense(c.d_model, c.d_ff, ("embed", "mlp"), **win)
      self.wi = None
    else:
      self.wi = Dense(c.d_model, c.d_ff, ("embed", "mlp"), **win)
      self.wi_0 = self.wi_1 = None
    self.wo = Dense(c.d_ff, c.d_model, ("mlp", "embed"), kernel_init=normal(c.d_ff ** -0.5), dtype=jnp.float32, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.act(self.wi(x)) if self.wi is not None else self.act(self.wi_0(x)) * self.wi_1(x)
    return self.wo(sharding.constrain(h, ("act_batch", "act_text", "act_mlp")))


class _Block(nnx.Module):
  """`x += Attn(n1(x)); x += FFN(n2(x))` (pre-norm, float32 residual)."""

  def __init__(self, c: UMT5Config, has_bias: bool, *, rngs, dtype, param_dtype):
    norm = dict(eps=c.layer_norm_epsilon, param_dtype=param_dtype, rngs=rngs)
    self.attn_norm = RMSNorm(c.d_model, ("norm",), **norm)
    self.attn = _SelfAttention(c, has_bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.ffn_norm = RMSNorm(c.d_model, ("norm",), **norm)
    self.ffn = _FeedForward(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, x, mask, bias):
    x = x + self.attn(self.attn_norm(x), mask, bias)
    return x + self.ffn(self.ffn_norm(x))


class UMT5Encoder(nnx.Module):
  """The umT5 (or T5 / mT5) encoder: token ids `[B, L]` + mask -> hidden states `[B, L, D]` (float32).

  Build with random weights as `UMT5Encoder(config, rngs=nnx.Rngs(0))`, or load a checkpoint with
  `UMT5Encoder.from_transformers(path)`. Parameter names mirror transformers' (`embed_tokens`, `blocks[i].attn.q/k/v/o`,
  `relative_attention_bias`, `ffn.wi_0/wi_1/wo`, `final_norm`).
  """

  def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs):
    self.config = config
    dtype, param_dtype = _DTYPES[config.dtype], _DTYPES[config.param_dtype]
    with nnx.use_eager_sharding(False):
      self.embed_tokens = param(rngs, nnx.initializers.normal(1.0), (config.vocab_size, config.d_model),
                                ("vocab", "embed"), param_dtype)
      self.blocks = nnx.List([
          _Block(config, config.bias_per_layer or i == 0, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
          for i in range(config.num_layers)])
      self.final_norm = RMSNorm(config.d_model, ("norm",), eps=config.layer_norm_epsilon, param_dtype=param_dtype,
                                rngs=rngs)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """Encodes token ids (transformers' `UMT5EncoderModel(...).last_hidden_state`).

    Args:
      input_ids: integer `[B, L]` token ids (JAX or NumPy) in `[0, vocab_size)` (not range-checked here: under `jit`
        an out-of-range id would be clamped; `encode_text` checks them).
      attention_mask: `[B, L]` bool or 0/1 ints, True / 1 on real tokens; None: all real.

    Returns:
      float32 `[B, L, d_model]`. Padded positions (mask False) hold what transformers computes there (their queries
      attend to the real tokens), not zeros; `encode_text` zeroes them.

    Raises:
      TextEncoderError: `input_ids` is not a 2-D integer array, or the mask's shape differs from it.
    """
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise TextEncoderError(f"input_ids must be integer [B, L], got shape {input_ids.shape} dtype {input_ids.dtype}")
    attention_mask = jnp.ones(input_ids.shape, bool) if attention_mask is None else jnp.asarray(attention_mask)
    if attention_mask.shape != input_ids.shape:
      raise TextEncoderError(f"attention_mask shape {attention_mask.shape} != input_ids shape {input_ids.shape}")
    mask = attention_mask.astype(bool)
    c = self.config
    length = input_ids.shape[1]
    buckets = relative_position_buckets(length, length, c.relative_attention_num_buckets,
                                        c.relative_attention_max_distance)
    x = self.embed_tokens[...][input_ids].astype(jnp.float32)
    x = sharding.constrain(x, ("act_batch", "act_text", "act_embed"))
    bias = None
    for block in self.blocks:
      if block.attn.relative_attention_bias is not None:  # umT5: every layer; T5: layer 0, then shared
        bias = block.attn.position_bias(buckets)
      x = block(x, mask, bias)
    return self.final_norm(x)

  @classmethod
  def from_transformers(cls, path: str | os.PathLike, *, dtype: str = "float32",
                        param_dtype: str = "float32") -> UMT5Encoder:
    """Loads a transformers umT5 / T5 encoder folder (`save_pretrained`, safetensors only).

    Args:
      path: a folder with `config.json` and `model.safetensors` or a sharded `model.safetensors.index.json` (from
        `UMT5EncoderModel`, `UMT5Model` or `UMT5ForConditionalGeneration`; decoder and `lm_head` tensors are ignored),
        or a diffusers WAN pipeline folder whose `text_encoder/` holds them. The encoder's tensors may sit under
        `encoder.` (transformers) or at the top level; the token embedding is `encoder.embed_tokens.weight` or, if
        absent, `shared.weight`.
      dtype: compute dtype; param_dtype: storage dtype (e.g. "bfloat16" halves umT5-XXL's 23 GB in float32).

    Returns:
      The encoder with every parameter from the checkpoint, on JAX's default device.

    Raises:
      TextEncoderError: the folder or `config.json` is absent; the config is not a umT5 / T5 / mT5 encoder; no
        safetensors weights (a `.bin` / `.pth` is not read); or tensors missing, of the wrong shape or unexpected in
        the encoder (all listed in one message).
    """
    folder = _model_folder(path)
    config_path = os.path.join(folder, CONFIG_NAME)
    try:
      with open(config_path) as f:
        raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise TextEncoderError(f"{config_path}: cannot read the config ({e})") from e
    config = UMT5Config.from_transformers_config(raw, source=config_path, dtype=dtype, param_dtype=param_dtype)
    graphdef, abstract = sharding.abstract_module(lambda: cls(config, rngs=nnx.Rngs(0)))
    flat = list(nnx.to_flat_state(abstract))
    with _SafetensorsReader(folder) as reader:
      values = _read_params(reader, [(tuple(str(p) for p in path), var) for path, var in flat], folder)
    state = nnx.from_flat_state([(path, var.replace(values[tuple(str(p) for p in path)])) for path, var in flat])
    return nnx.merge(graphdef, state)


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint reading
# ----------------------------------------------------------------------------------------------------------------------


def _model_folder(path) -> str:
  """`path`, or its `text_encoder/` subfolder when `path` is a diffusers pipeline folder without a config."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise TextEncoderError(f"{path}: no such text-encoder folder (expected a transformers save_pretrained folder "
                           f"with {CONFIG_NAME} and safetensors weights)")
  if not os.path.exists(os.path.join(path, CONFIG_NAME)):
    sub = os.path.join(path, "text_encoder")
    if os.path.exists(os.path.join(sub, CONFIG_NAME)):
      return sub
    raise TextEncoderError(f"{path}: no {CONFIG_NAME} (nor text_encoder/{CONFIG_NAME}); found "
                           f"{sorted(os.listdir(path))[:10] or 'an empty folder'}")
  return path


class _SafetensorsReader:
  """The tensors of a folder's safetensors file(s): `shapes` {key: shape} and `read(key)` (NumPy, on the host)."""

  def __init__(self, folder: str):
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    self._open, self._handles = safe_open, {}
    files = sorted(os.listdir(folder))
    indices = [f for f in files if f.endswith(".safetensors.index.json")]
    singles = [f for f in files if f.endswith(".safetensors")]
    if INDEX_NAME in indices or len(indices) == 1:
      index = os.path.join(folder, INDEX_NAME if INDEX_NAME in indices else indices[0])
      try:
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
      except (OSError, json.JSONDecodeError, KeyError) as e:
        raise TextEncoderError(f"{index}: not a safetensors index with a weight_map ({e})") from e
      missing = sorted({v for v in weight_map.values() if not os.path.exists(os.path.join(folder, v))})
      if missing:
        raise TextEncoderError(f"{index}: shard files missing from the folder: {missing}")
      shards = sorted(set(weight_map.values()))
    elif WEIGHTS_NAME in singles or len(singles) == 1:
      shards = [WEIGHTS_NAME if WEIGHTS_NAME in singles else singles[0]]
    else:
      other = [f for f in files if f.endswith((".bin", ".pth", ".pt", ".ckpt"))]
      hint = (f"; {other} are not read (only safetensors): re-save with save_pretrained(safe_serialization=True)"
              if other else "")
      raise TextEncoderError(f"{folder}: no safetensors weights ({WEIGHTS_NAME} or {INDEX_NAME}), found "
                             f"{singles or 'none'}{hint}")
    self.files, self.shapes = {}, {}
    for shard in shards:
      handle = self._handle(os.path.join(folder, shard))
      for key in handle.keys():  # noqa: SIM118 (safe_open has keys(), no iteration)
        self.files[key] = os.path.join(folder, shard)
        self.shapes[key] = tuple(handle.get_slice(key).get_shape())

  def _handle(self, path):
    if path not in self._handles:
      try:
        self._handles[path] = self._open(path, framework="flax").__enter__()
      except Exception as e:  # safetensors raises its own SafetensorError / OSError types
        raise TextEncoderError(f"{path}: cannot read safetensors file ({e})") from e
    return self._handles[path]

  def read(self, key: str) -> np.ndarray:
    """The tensor `key` as a host array (bfloat16 stays bfloat16)."""
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
      return np.asarray(self._handle(self.files[key]).get_tensor(key))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    for handle in self._handles.values():
      handle.__exit__(None, None, None)
    self._handles.clear()


def _checkpoint_key(path: tuple[str, ...], prefix: str) -> tuple[str, bool]:
  """A parameter's camjax path -> (transformers key, transpose?) (the embedding is handled by the caller)."""
  if path == ("final_norm", "scale"):
    return prefix + "final_layer_norm.weight", False
  _, i, part, *rest = path  # ("blocks", i, part, ...)
  layer = f"{prefix}block.{i}.layer."
  if part == "attn_norm":
    return layer + "0.layer_norm.weight", False
  if part == "ffn_norm":
    return layer + "1.layer_norm.weight", False
  if part == "attn" and rest == ["relative_attention_bias"]:
    return layer + "0.SelfAttention.relative_attention_bias.weight", False
  if part == "attn":
    return layer + f"0.SelfAttention.{rest[0]}.weight", True
  return layer + f"1.DenseReluDense.{rest[0]}.weight", True


def _read_params(reader: _SafetensorsReader, params, folder: str) -> dict[tuple[str, ...], jax.Array]:
  """`{camjax path: array}` for every parameter, cast to its dtype; all problems reported together.

  Raises:
    TextEncoderError: missing tensors, shape mismatches, unexpected encoder tensors.
  """
  keys = reader.shapes
  prefix = "encoder." if any(k.startswith("encoder.") for k in keys) else ""
  problems, used, values = [], set(), {}
  for path, var in params:
    if path == ("embed_tokens",):
      options = [prefix + "embed_tokens.weight", "shared.weight"]
      key, transpose = next((k for k in options if k in keys), options[0]), False
      if key not in keys:
        problems.append(f"missing token embedding ({' or '.join(options)})")
        continue
    else:
      key, transpose = _checkpoint_key(path, prefix)
      if key not in keys:
        problems.append(f"missing {key}")
        continue
    used.add(key)
    shape = keys[key][::-1] if transpose else keys[key]
    if tuple(shape) != tuple(var.shape):
      problems.append(f"{key}: shape {keys[key]} does not fit {'.'.join(path)} {tuple(var.shape)}"
                      + (" (transposed)" if transpose else ""))
      continue
    value = reader.read(key)
    values[path] = jnp.asarray((value.T if transpose else value).astype(var.dtype))
  ignored = ("decoder.", "lm_head.", "shared.", "encoder.embed_tokens.")
  unexpected = [k for k in keys if k not in used and not k.startswith(ignored) and (k.startswith(prefix))]
  if unexpected:
    problems.append(f"unexpected encoder tensors {unexpected[:5]}"
                    + (f" (+{len(unexpected) - 5})" if len(unexpected) > 5 else ""))
  if problems:
    raise TextEncoderError(f"{folder}: checkpoint does not match its config: " + "; ".join(problems))
  return values


# ----------------------------------------------------------------------------------------------------------------------
# Tokenizer and WAN's caption handling
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransformersTokenizer:
  """A transformers tokenizer (umT5's SentencePiece tokenizer for WAN) with `ByteTokenizer`'s interface.

  Attributes:
    tokenizer: the wrapped `PreTrainedTokenizerBase` (must have a pad token).
    max_length: `L`, tokens per encoded row (WAN: 512).
  """

  tokenizer: Any
  max_length: int = WAN_TEXT_LENGTH

  @property
  def vocab_size(self) -> int:
    """Number of ids the tokenizer can produce (added tokens included)."""
    return len(self.tokenizer)

  def encode(self, texts: Sequence[str], max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tokenizes captions the way WAN does: special tokens (umT5: eos) added, truncated, right-padded.

    Args:
      texts: `B` captions (a list or tuple of `str`; a bare `str` is refused).
      max_length: row length `L` (default `self.max_length`). Longer captions are truncated so that the row still
        ends in the tokenizer's special tokens (umT5: `[pieces..., eos]`).

    Returns:
      `(ids, mask)`: `ids` int32 `[B, L]` (pad id after the caption), `mask` bool `[B, L]`, True on real tokens
      (a prefix of each row).

    Raises:
      TokenizerError: `texts` is a bare string or holds a non-`str`; `max_length` < 1.
    """
    max_length = self.max_length if max_length is None else max_length
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
      raise TokenizerError(f"max_length must be a positive int, got {max_length!r}")
    if isinstance(texts, (str, bytes)):
      raise TokenizerError(f"texts must be a sequence of str, got a bare {type(texts).__name__}: wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TokenizerError(f"texts[{i}] is {type(text).__name__} ({text!r:.40}), not str")
    if not texts:
      return np.zeros((0, max_length), np.int32), np.zeros((0, max_length), bool)
    out = self.tokenizer(texts, padding="max_length", max_length=max_length, truncation=True,
                         add_special_tokens=True, return_attention_mask=True, padding_side="right")
    return np.asarray(out["input_ids"], np.int32), np.asarray(out["attention_mask"], bool)

  def decode(self, ids) -> list[str]:
    """Token ids `[B, L]` -> `B` captions (special tokens and padding skipped)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
      raise TokenizerError(f"ids must be a 2-D integer array [B, L], got shape {ids.shape} dtype {ids.dtype}")
    return self.tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")


def load_tokenizer(path: str | os.PathLike, max_length: int = WAN_TEXT_LENGTH) -> TransformersTokenizer:
  """Loads a local tokenizer (umT5's for WAN) through transformers' `AutoTokenizer`; nothing is downloaded.

  Args:
    path: a tokenizer folder (`tokenizer.json` and / or `tokenizer_config.json`, as `save_pretrained` writes), a
      diffusers WAN pipeline folder (its `tokenizer/` subfolder is used), or a `tokenizer.json` file (read with
      `tokenizers.Tokenizer.from_file`; `<pad>`, `</s>`, `<unk>` become the pad / eos / unk tokens when present).
    max_length: the wrapper's default row length.

  Returns:
    A `TransformersTokenizer`.

  Raises:
    TokenizerError: the path is absent, holds no tokenizer files, transformers cannot load it, or the tokenizer has no
      pad token.
  """
  path = os.fspath(path)
  if os.path.isfile(path):
    tokenizer = _from_tokenizer_json(path)
  elif os.path.isdir(path):
    folder = path
    if not any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES):
      sub = os.path.join(path, "tokenizer")
      if not any(os.path.exists(os.path.join(sub, f)) for f in _TOKENIZER_FILES):
        raise TokenizerError(f"{path}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}) here or in tokenizer/")
      folder = sub
    if not os.path.exists(os.path.join(folder, "tokenizer_config.json")) and \
        os.path.exists(os.path.join(folder, "tokenizer.json")):
      tokenizer = _from_tokenizer_json(os.path.join(folder, "tokenizer.json"))
    else:
      from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
      try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
      except Exception as e:  # transformers raises OSError / ValueError / ImportError variants
        raise TokenizerError(f"{folder}: transformers cannot load the tokenizer ({type(e).__name__}: {e})") from e
  else:
    raise TokenizerError(f"{path}: no such tokenizer folder or tokenizer.json file")
  if tokenizer.pad_token_id is None:
    raise TokenizerError(f"{path}: the tokenizer has no pad token (needed to pad captions to {max_length} tokens)")
  return TransformersTokenizer(tokenizer, max_length)


def _from_tokenizer_json(path: str):
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  from transformers import PreTrainedTokenizerFast  # pylint: disable=import-outside-toplevel
  try:
    tok = Tokenizer.from_file(path)
  except Exception as e:  # tokenizers raises a bare Exception on a malformed file
    raise TokenizerError(f"{path}: not a tokenizers tokenizer.json ({e})") from e
  vocab = tok.get_vocab()
  special = {name: token for name, token in (("pad_token", "<pad>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))
             if token in vocab}
  return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def encode_text(tokenizer, encoder: UMT5Encoder, captions: Sequence[str],
                max_length: int = WAN_TEXT_LENGTH) -> tuple[jax.Array, jax.Array]:
  """WAN's caption embeddings: tokenize, encode, zero everything after the last real token.

  The same as diffusers' `WanPipeline._get_t5_prompt_embeds` (and WAN's `T5EncoderModel`): the padded batch runs
  through the encoder with its mask, then rows are cut at their length and zero-padded back to `max_length`.

  Args:
    tokenizer: a `TransformersTokenizer` (`load_tokenizer`) or a transformers tokenizer.
    encoder: the `UMT5Encoder`.
    captions: `B` captions.
    max_length: `L` (WAN: 512); longer captions are truncated (still ending in eos).

  Returns:
    `(embeddings float32 [B, L, d_model], mask bool [B, L])`: embeddings zero where mask is False; mask True on the
    real tokens (pieces and eos), a prefix of each row.

  Raises:
    TokenizerError: bad captions (see `TransformersTokenizer.encode`).
    TextEncoderError: a token id outside the encoder's vocabulary (tokenizer and encoder do not belong together).
  """
  if not isinstance(tokenizer, TransformersTokenizer):
    tokenizer = TransformersTokenizer(tokenizer, max_length)
  ids, mask = tokenizer.encode(captions, max_length)
  if ids.size and ids.max() >= encoder.config.vocab_size:
    raise TextEncoderError(f"token id {ids.max()} is outside the encoder's vocabulary ({encoder.config.vocab_size}):"
                           " the tokenizer does not belong to this encoder")
  mask = jnp.asarray(mask)
  return _encode_masked(encoder, jnp.asarray(ids), mask), mask


@nnx.jit
def _encode_masked(encoder: UMT5Encoder, ids: jax.Array, mask: jax.Array) -> jax.Array:
  return encoder(ids, mask) * mask[..., None].astype(jnp.float32)
