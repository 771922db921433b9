"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3) for `camjax.models.layers.Dense`.

A layer with an adapter computes

  y = x W + b + (alpha / rank) * (x A) B,    A [in, rank], B [rank, out]

with `A` drawn uniformly in `+-1 / sqrt(in)` (what peft's `kaiming_uniform_(a=sqrt(5))` gives) and `B` zero, so an
adapted model computes exactly what its base computes until `B` moves. Both factors are `LoraParam`s (an `nnx.Param`
subclass), so `nnx` filters select them:

  graphdef, lora_params, base_params = nnx.split(model, lora.trainable, nnx.Param)   # train lora_params only

Under the DiT's `nnx.vmap`-stacked blocks the factors are stacked on the leading `layers` axis like every block
parameter (`A [layers, in, rank]`); the rank axis has the logical name `"lora"` (replicated, `camjax.sharding`).
`merge` folds the adapters into the kernels for export; `WanConfig.lora_rank > 0` attaches adapters to the layers named
by `WanConfig.lora_targets`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from camjax import sharding
from camjax.models.layers import Dense, ModelError, param


class LoraParam(nnx.Param):
  """A LoRA factor (`A` or `B`): an `nnx.Param`, so it trains with the rest unless a filter separates it."""


trainable = LoraParam  # the `nnx` filter of every LoRA parameter (`nnx.split(model, lora.trainable, nnx.Param)`)


class LoraAdapter(nnx.Module):
  """`x -> (alpha / rank) * (x A) B` for a `Dense` of `in_features -> out_features` (`B` zero-initialised)."""

  def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, names, *, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    if rank < 1:
      raise ModelError(f"LoRA rank must be >= 1, got {rank}")
    names = tuple(names) if names else (None, None)
    bound = 1.0 / math.sqrt(in_features)
    init_a = lambda key, shape, dt: jax.random.uniform(key, shape, dt, -bound, bound)
    self.a = param(rngs, init_a, (in_features, rank), (names[0], "lora"), param_dtype, kind=LoraParam)
    self.b = param(rngs, nnx.initializers.zeros_init(), (rank, out_features), ("lora", names[1]), param_dtype,
                   kind=LoraParam)
    self.scale = alpha / rank
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype
    h = jnp.dot(x.astype(dtype), self.a[...].astype(dtype))
    return jnp.dot(h, self.b[...].astype(dtype)) * jnp.asarray(self.scale, dtype)


def attach(dense: Dense, rank: int, alpha: float, *, rngs: nnx.Rngs) -> Dense:
  """Give `dense` a zero-initialised LoRA adapter of `rank` (in place; returns `dense`).

  The adapter's parameters are created from `rngs` now (call it after every other parameter of the enclosing module,
  so the others keep their seeded values) in the dtypes of `dense`, with `dense.kernel`'s logical axis names.

  Raises:
    ModelError: `dense` already has an adapter, or `rank < 1`.
  """
  if dense.lora is not None:
    raise ModelError("this Dense layer already has a LoRA adapter")
  in_features, out_features = dense.kernel.shape[-2:]
  dense.lora = LoraAdapter(in_features, out_features, rank, alpha, sharding.variable_names(dense.kernel), rngs=rngs,
                           dtype=dense.dtype, param_dtype=dense.kernel.dtype)
  return dense


def adapted_layers(model: nnx.Module) -> list[tuple[tuple, Dense]]:
  """`(path, layer)` of every `Dense` inside `model` that has a LoRA adapter."""
  return [(path, node) for path, node in nnx.iter_graph(model)
          if isinstance(node, Dense) and node.lora is not None]


def merge(model: nnx.Module) -> nnx.Module:
  """A copy of `model` with every adapter folded into its kernel: `W <- W + (alpha / rank) A B`, and `B <- 0`.

  The copy keeps the module structure (same graphdef, same config), so it runs wherever the adapted model ran and its
  output equals the adapted model's up to float rounding; with `B = 0` the adapters add nothing and a second `merge`
  changes nothing. Stacked layers (`A [layers, in, r]`) merge layer by layer. The input model is not modified.
  """
  merged = nnx.clone(model)  # new modules and variables over the same (immutable) arrays
  for _, layer in adapted_layers(merged):
    adapter = layer.lora
    a = adapter.a[...].astype(jnp.float32)
    b = adapter.b[...].astype(jnp.float32)
    delta = adapter.scale * jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
    layer.kernel[...] = (layer.kernel[...].astype(jnp.float32) + delta).astype(layer.kernel.dtype)
    adapter.b[...] = jnp.zeros_like(adapter.b[...])
  return merged


def num_params(model: nnx.Module) -> int:
  """Number of LoRA parameters (elements of every `LoraParam`) in `model`."""
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, LoraParam)))
