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
    y = jnp.dot(x.astype(dtype), self.kernel[...].astype(dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    if self.lora is not None:
      y = y + self.lora(x).astype(dtype)
    return y


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


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
              implementation: str | None = None) -> jax.Array:
  """Scaled dot-product attention, `softmax(q k^T / sqrt(d)) v`.

  Args:
    q: `[B, N, heads, head_dim]`.
    k, v: `[B, S, heads, head_dim]`.
    mask: optional key mask `[B, S]` (True = attend).
    implementation: `None` (XLA; any backend), `"xla"`, or `"cudnn"` (GPU flash attention).

  Returns:
    `[B, N, heads, head_dim]` in q's dtype (softmax in float32).
  """
  if mask is not None:
    mask = mask[:, None, None, :].astype(bool)
  impl = None if implementation in (None, "xla") else implementation
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)


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
