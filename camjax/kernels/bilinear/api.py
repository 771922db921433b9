"""Bilinear sample / scatter with a choice of implementation: the public entry point of `camjax.kernels.bilinear`.

    out = bilinear_sample(grid, coords, valid)                          # [B, H, W, C] x [B, N, 2] -> [B, N, C]
    grid, weight = bilinear_scatter(values, coords, weights, height=H, width=W)   # -> [B, H, W, C], [B, H, W]

`implementation`:
  None             by backend: "pallas_triton" on GPU, "pallas_tpu" on TPU, "xla" elsewhere;
  "xla"            the plain-jnp reference (`reference.py`: XLA gather / scatter-add), the semantic definition;
  "pallas_triton"  Pallas GPU kernels, Triton backend (`pallas_triton.py`): row gather and atomic scatter-add;
  "pallas_tpu"     Pallas TPU kernels (`pallas_tpu.py`): dense bilinear-weight matmul tiles on the MXU.

The coordinate convention is the reference's (pixel centres at `j + 0.5`, align_corners=False, zero padding; see
`reference.py`). The Pallas paths compute the 4 corner indices and weights with `reference.corner_weights` in jnp and
hand them to coordinate-free kernels wrapped in `jax.custom_vjp` (`common.make_ops`), so `jax.grad` reaches the grid,
the values, the per-point weights AND the coordinates, and the results agree with the reference to float rounding.
Every path works under `jit`, `vmap` and inside `shard_map` over the batch axis (the kernels only see the local batch).

`interpret=None` runs a Pallas kernel in interpret mode when the default backend is not the kernel's platform
(Triton: `interpret=True`; TPU: `pltpu.InterpretParams()`), so tests on CPU exercise the same kernel code; this is slow
and meant for tests only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from camjax.kernels.bilinear import reference
from camjax.kernels.bilinear.common import (IMPLEMENTATIONS, BilinearError, acc_dtype, check_sample_inputs,
                                            check_scatter_inputs)

_BLOCK_NAMES = {"pallas_triton": ("block_n", "block_c"), "pallas_tpu": ("block_n", "block_m", "block_c")}


def default_implementation(backend: str | None = None) -> str:
  """The implementation `implementation=None` picks on `backend` (default: `jax.default_backend()`)."""
  backend = backend or jax.default_backend()
  return {"gpu": "pallas_triton", "cuda": "pallas_triton", "tpu": "pallas_tpu"}.get(backend, "xla")


def _resolve(implementation, interpret, blocks, where):
  impl = default_implementation() if implementation is None else implementation
  if impl not in IMPLEMENTATIONS:
    raise BilinearError(f"{where}: unknown implementation {impl!r}; expected None or one of {IMPLEMENTATIONS}")
  if impl == "xla":
    if blocks:
      raise BilinearError(f"{where}: block sizes {sorted(blocks)} apply to Pallas implementations, not 'xla'")
    return impl, None
  unknown = set(blocks) - set(_BLOCK_NAMES[impl])
  if unknown:
    raise BilinearError(f"{where}: unknown block sizes {sorted(unknown)} for {impl}; allowed {_BLOCK_NAMES[impl]}")
  if interpret is None:
    interpret = default_implementation() != impl
  if impl == "pallas_triton":
    from camjax.kernels.bilinear import pallas_triton as backend
  else:
    from camjax.kernels.bilinear import pallas_tpu as backend
  return impl, backend.ops(bool(interpret), **{k: int(v) for k, v in sorted(blocks.items())})


def bilinear_sample(grid, coords, valid=None, *, implementation: str | None = None, interpret: bool | None = None,
                    **blocks):
  """Reads a feature grid at points (Track2View's grid -> tracks step, REFERENCE.md 5).

  Args:
    grid: `[B, H, W, C]` features.
    coords: `[B, N, 2]` (x, y) pixel coordinates, pixel (i, j) centred at (j + 0.5, i + 0.5).
    valid: optional `[B, N]` mask; invalid points read zeros (and pass no gradient).
    implementation: None | "xla" | "pallas_triton" | "pallas_tpu" (module docstring).
    interpret: run a Pallas kernel in interpret mode; None: when not on the kernel's platform.
    **blocks: Pallas block sizes (`block_n`, `block_c`, and `block_m` for TPU); defaults in each backend module.

  Returns:
    `[B, N, C]` in the grid's dtype (accumulated in float32, or float64 for float64 inputs).

  Raises:
    BilinearError: on mismatched shapes, non-float coordinates, or an unknown implementation / block name.
  """
  check_sample_inputs(grid, coords, valid)
  impl, kernel_ops = _resolve(implementation, interpret, blocks, "bilinear_sample")
  if impl == "xla":
    return reference.bilinear_sample(grid, coords, valid)
  B, H, W, C = grid.shape
  idx, w = reference.corner_weights(coords.astype(jnp.promote_types(coords.dtype, jnp.float32)), H, W)
  if valid is not None:
    w = w * valid[..., None].astype(w.dtype)
  gather_op, _ = kernel_ops
  return gather_op(grid.reshape(B, H * W, C), idx, w)


def bilinear_scatter(values, coords, weights=None, *, height: int, width: int, normalize: bool = True,
                     eps: float = 1e-6, implementation: str | None = None, interpret: bool | None = None, **blocks):
  """Splats point features onto a grid (Track2View's tracks -> grid step, REFERENCE.md 5): each point adds
  `weight x bilinear weight x value` to its 4 neighbouring cells; with `normalize`, cells average their contributions.

  Args:
    values: `[B, N, C]` features.
    coords: `[B, N, 2]` (x, y) pixel coordinates (convention in `reference.py`).
    weights: optional `[B, N]` per-point weights (a validity mask as 0/1); default 1. Differentiable.
    height, width: output grid size in cells.
    normalize: divide each cell by its accumulated weight; cells whose weight is <= eps stay 0.
    eps: threshold of the normalisation.
    implementation, interpret, **blocks: as in `bilinear_sample`.

  Returns:
    `(grid [B, height, width, C], weight_map [B, height, width])`: grid in the values' dtype, weights in float32
    (float64 for float64 inputs).

  Raises:
    BilinearError: on mismatched shapes, non-float coordinates, a non-positive grid size, or an unknown
      implementation / block name.
  """
  check_scatter_inputs(values, coords, weights, height, width)
  impl, kernel_ops = _resolve(implementation, interpret, blocks, "bilinear_scatter")
  if impl == "xla":
    return reference.bilinear_scatter(values, coords, weights, height=height, width=width, normalize=normalize,
                                      eps=eps)
  B, N, C = values.shape
  dtype = acc_dtype(values.dtype)
  idx, w = reference.corner_weights(coords.astype(jnp.promote_types(coords.dtype, jnp.float32)), height, width)
  w = w.astype(dtype)
  if weights is not None:
    w = w * weights[..., None].astype(dtype)
  _, scatter_op = kernel_ops
  grid = scatter_op(values, idx, w, height * width)  # [B, H * W, C] in dtype
  batch = jnp.broadcast_to(jnp.arange(B)[:, None, None], idx.shape)
  weight_map = jnp.zeros((B, height * width), dtype).at[batch, idx].add(w)
  if normalize:
    grid = jnp.where(weight_map[..., None] > eps, grid / jnp.maximum(weight_map, eps)[..., None], 0.0)
  return grid.reshape(B, height, width, C).astype(values.dtype), weight_map.reshape(B, height, width)
