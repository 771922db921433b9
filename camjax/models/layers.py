"""Small NNX building blocks with logical axis names on every parameter and explicit compute dtypes.

Parameters are stored in `param_dtype` (float32 master weights); `dtype` is the compute dtype (e.g. bfloat16).
Norms always compute in float32 (WAN's FP32LayerNorm), then cast back to the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from camjax.errors import CamjaxError

Names = Sequence[str | None]


class ModelError(CamjaxError):
  """A model built or called with inconsistent shapes or options."""


def param(rngs: nnx.Rngs | None, init, shape, names: Names, dtype=jnp.float32, kind=nnx.Param) -> nnx.Param:
  """A parameter initialised with `init(key, shape, dtype)` that carries logical axis `names`.

  `kind` is the `nnx.Param` subclass to create (e.g. `camjax.models.lora.LoraParam`, so filters can select it).
  """
  if len(names) != len(shape):
    raise ModelError(f"logical names {tuple(names)} do not match parameter shape {tuple(shape)}")
  key = rngs.params() if rngs is not None else jax.random.key(0)
  init = nnx.with_partitioning(init, tuple(names))
  return kind(init(key, tuple(shape), dtype))


class Dense(nnx.Module):
  """`y = x @ kernel + bias (+ lora(x))` with `kernel [in, out]` (a torch Linear's weight transposed).

  `lora` is None unless `camjax.models.lora.attach` gave the layer a low-rank adapter (any module mapping
  `[..., in] -> [..., out]`); its output is added after the bias, so a zero adapter leaves `y` bit-identical.
  """

  def __init__(self, in_features: int, out_features: int, names: Names, *, rngs: nnx.Rngs, use_bias: bool = True,
               dtype=jnp.float32, param_dtype=jnp.float32, kernel_init=nnx.initializers.xavier_uniform(),
               bias_init=nnx.initializers.zeros_init()):
    self.dtype = dtype
    self.kernel = param(rngs, kernel_init, (in_features, out_features), names, param_dtype)
    self.bias = param(rngs, bias_init, (out_features,), names[1:], param_dtype) if use_bias else None
    self.lora = nnx.data(None)  # a data slot: `lora.attach` may put an adapter module here

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype
    y = matmul(x.astype(dtype), self.kernel[...].astype(dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    if self.lora is not None:
      y = y + self.lora(x).astype(dtype)
    return y


def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`x [..., in] @ kernel [in, ...]` (kernel's trailing axes kept), with x's leading axes flattened into one.

  The same values as `jnp.tensordot(x, kernel, 1)`; the flat form makes the kernel's gradient a single-axis
  contraction, for which XLA:CPU needs no transposed copy of the output gradient (with 3D `x` it wrote one per
  linear layer, docs/benchmarks.md). Flattening contiguous leading axes is free on every backend.
  """
  y = jnp.tensordot(x.reshape(-1, x.shape[-1]), kernel, 1)
  return y.reshape(*x.shape[:-1], *kernel.shape[1:])


class RMSNorm(nnx.Module):
  """`x / sqrt(mean(x^2) + eps) * scale` over the last axis, computed in float32 (torch.nn.RMSNorm)."""

  def __init__(self, dim: int, names: Names, *, eps: float = 1e-6, param_dtype=jnp.float32, rngs=None):
    self.eps = eps
    self.scale = param(rngs, nnx.initializers.ones_init(), (dim,), names, param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis in float32 (WAN's FP32LayerNorm); optional affine `scale`/`bias`."""

  def __init__(self, dim: int, names: Names = ("norm",), *, eps: float = 1e-6, affine: bool = True,
               param_dtype=jnp.float32, rngs=None):
    self.eps = eps
    if affine:
      self.scale = param(rngs, nnx.initializers.ones_init(), (dim,), names, param_dtype)
      self.bias = param(rngs, nnx.initializers.zeros_init(), (dim,), names, param_dtype)
    else:
      self.scale = self.bias = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = layer_norm(x.astype(jnp.float32), self.eps)
    if self.scale is not None:
      y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(x.dtype)


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
  """Normalise the last axis to zero mean and unit variance (no affine), in x's dtype."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def gelu_tanh(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=True)


ATTENTION_IMPLEMENTATIONS = (None, "xla", "reference", "cudnn")


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
              implementation: str | None = None) -> jax.Array:
  """Scaled dot-product attention, `softmax(q k^T / sqrt(d)) v`.

  Args:
    q: `[B, N, heads, head_dim]`.
    k, v: `[B, S, heads, head_dim]`.
    mask: optional key mask `[B, S]` (True = attend). A query whose keys are all masked attends uniformly to every
      key (as `jax.nn.dot_product_attention`).
    implementation: `None` or `"xla"` (any backend: `xla_attention`, a plain-jnp attention with a memory-lean
      hand-written backward), `"reference"` (`jax.nn.dot_product_attention`'s XLA path, autodiff backward), or
      `"cudnn"` (GPU flash attention).

  Returns:
    `[B, N, heads, head_dim]` in q's dtype (softmax in float32).

  Raises:
    ModelError: an unknown `implementation`.
  """
  if implementation not in ATTENTION_IMPLEMENTATIONS:
    raise ModelError(f"attention implementation {implementation!r} not in {ATTENTION_IMPLEMENTATIONS}")
  if implementation in (None, "xla"):
    return xla_attention(q, k, v, mask)
  if mask is not None:
    mask = mask[:, None, None, :].astype(bool)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=None if implementation == "reference"
                                      else implementation)


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """`attention` in plain jnp with a hand-written VJP (the standard softmax-attention gradient, as in FlashAttention,
  Dao et al. 2022, alg. 2, without the tiling).

  The same values as `jax.nn.dot_product_attention` (float32 tolerance), but the backward keeps only `q, k, v`, the
  output and the per-query softmax statistics (row max and 1 / row sum) instead of the `[B, heads, N, S]`
  probabilities, and recomputes the probabilities once. Written for XLA:CPU, where its forward + backward is about
  1.7x faster than autodiff of the reference (docs/benchmarks.md, "camjax vs torch"): the row max is a `select`
  reduction (XLA:CPU's NaN-propagating `max` reduction does not vectorise), the backward works on the transposed scores
  `[B, heads, S, N]` so that no batched matmul contracts the large operand's leading axis, and
  `D_i = rowsum(dO_i * O_i)` replaces the reduction over the probability map.

  Args / returns: as `attention` (`q [B, N, heads, d]`, `k, v [B, S, heads, d]`, `mask [B, S]`).
  """
  heads_first = lambda a: jnp.swapaxes(a, 1, 2)  # [B, N, H, d] <-> [B, H, N, d]
  mask = None if mask is None else mask.astype(bool)
  out = _attention(heads_first(q), heads_first(k), heads_first(v), mask)
  return heads_first(out)


_MASKED = float(jnp.finfo(jnp.float32).min)  # the logit of a masked key (jax.nn.dot_product_attention's value)


def _logits(q, k, mask, keys_first: bool):
  """Unscaled float32 logits `q k^T` `[B, H, N, S]` (or `[B, H, S, N]` when `keys_first`) of `q [B, H, N, d]`,
  `k [B, H, S, d]`; masked keys get a huge negative logit. The softmax scale is applied in the exponent
  (`exp((l - max l) / sqrt(d))`, equal to the scaled softmax since the scale is positive), so that no pass over the
  logits only scales them."""
  spec = "bhsd,bhnd->bhsn" if keys_first else "bhnd,bhsd->bhns"
  logits = jnp.einsum(spec, *((k, q) if keys_first else (q, k)), preferred_element_type=jnp.float32)
  if mask is not None:
    logits = jnp.where(mask[:, None, :, None] if keys_first else mask[:, None, None, :], logits, _MASKED)
  return logits


def _row_max(x):
  """max over the last axis as a `select` reduction (exact; vectorises on XLA:CPU, unlike `jnp.max`)."""
  return jax.lax.reduce(x, -jnp.inf, lambda a, b: jnp.where(a > b, a, b), (x.ndim - 1,))[..., None]


@jax.custom_vjp
def _attention(q, k, v, mask):
  return _attention_fwd(q, k, v, mask)[0]


def _attention_fwd(q, k, v, mask):
  scale = q.shape[-1] ** -0.5
  logits = _logits(q, k, mask, keys_first=False)
  row_max = _row_max(logits)
  p = jnp.exp((logits - row_max) * scale)
  inv_sum = 1.0 / jnp.sum(p, axis=-1, keepdims=True)
  out = jnp.einsum("bhns,bhsd->bhnd", p.astype(v.dtype), v, preferred_element_type=jnp.float32) * inv_sum
  out = out.astype(q.dtype)
  return out, (q, k, v, mask, out, row_max, inv_sum)


def _attention_bwd(residuals, d_out):
  q, k, v, mask, out, row_max, inv_sum = residuals
  f32 = jnp.float32
  # Transposed probabilities p^T [B, H, S, N]: every matmul below contracts a small operand's leading axis only.
  scale = q.shape[-1] ** -0.5
  p_t = jnp.exp((_logits(q, k, mask, keys_first=True) - jnp.swapaxes(row_max, -1, -2)) * scale) \
      * jnp.swapaxes(inv_sum, -1, -2)
  d_v = jnp.einsum("bhsn,bhnd->bhsd", p_t.astype(d_out.dtype), d_out, preferred_element_type=f32)
  d_p_t = jnp.einsum("bhsd,bhnd->bhsn", v, d_out, preferred_element_type=f32)
  delta = jnp.sum(d_out.astype(f32) * out.astype(f32), axis=-1)[:, :, None, :]  # rowsum(dO * O) [B, H, 1, N]
  d_logits_t = p_t * (d_p_t - delta) * scale
  if mask is not None:  # masked logits are constants
    d_logits_t = jnp.where(mask[:, None, :, None], d_logits_t, 0.0)
  d_logits_t = d_logits_t.astype(q.dtype)
  d_k = jnp.einsum("bhsn,bhnd->bhsd", d_logits_t, q, preferred_element_type=f32)
  d_q = jnp.swapaxes(jnp.einsum("bhsd,bhsn->bhdn", k, d_logits_t, preferred_element_type=f32), -1, -2)
  return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), None


_attention.defvjp(_attention_fwd, _attention_bwd)


def patchify(x: jax.Array, patch_size) -> jax.Array:
  """`[B, T, H, W, C] -> [B, (T/pt)(H/ph)(W/pw), pt*ph*pw*C]` (tokens in t, h, w order; features pt, ph, pw, C)."""
  pt, ph, pw = patch_size
  return einops.rearrange(x, "b (t pt) (h ph) (w pw) c -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)


def unpatchify(x: jax.Array, grid, patch_size) -> jax.Array:
  """Inverse of `patchify`: `[B, N, pt*ph*pw*C] -> [B, T, H, W, C]`."""
  pt, ph, pw = patch_size
  t, h, w = grid
  return einops.rearrange(x, "b (t h w) (pt ph pw c) -> b (t pt) (h ph) (w pw) c", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)


class PatchEmbed(nnx.Module):
  """3D patch embedding: a Conv3d with kernel = stride = patch, as a matmul over flattened patches."""

  def __init__(self, channels: int, dim: int, patch_size, *, rngs, dtype, param_dtype, zero_init: bool = False,
               use_bias: bool = True):
    self.patch_size = tuple(patch_size)
    init = nnx.initializers.zeros_init() if zero_init else nnx.initializers.xavier_uniform()
    self.proj = Dense(math.prod(patch_size) * channels, dim, ("patch", "embed"), rngs=rngs, dtype=dtype,
                      param_dtype=param_dtype, kernel_init=init, use_bias=use_bias)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.proj(patchify(x, self.patch_size))
