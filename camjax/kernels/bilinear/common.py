"""What every bilinear implementation shares: input checks, the corner layout, block/padding helpers, and the
`custom_vjp` wiring that turns three coordinate-free kernels into differentiable sample and scatter ops.

The kernels never see coordinates. `reference.corner_weights` turns `coords [B, N, 2]` into flat corner indices
`idx [B, N, 4]` (int32, into `H * W`) and bilinear weights `w [B, N, 4]` (validity / per-point weights folded in).
Every backend then provides

  gather(table [B, M, C], idx, w) -> [B, N, C]        out[b, n] = sum_k w[b, n, k] * table[b, idx[b, n, k]]
  scatter(values [B, N, C], idx, w, M) -> [B, M, C]    the transpose of gather (duplicates add up)
  corner_dot(table [B, M, C], idx, u [B, N, C]) -> [B, N, 4]   sum_c u[b, n, c] * table[b, idx[b, n, k], c]

and `make_ops` wires them into `jax.custom_vjp` functions (gather and scatter are each other's transpose; corner_dot is
the cotangent of the weights, from which JAX's autodiff of `corner_weights` gives the coordinate gradient). Pallas
calls are not differentiable themselves (STACK.md), so this is the only place gradients are defined.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from camjax.errors import CamjaxError

IMPLEMENTATIONS = ("xla", "pallas_triton", "pallas_tpu")


class BilinearError(CamjaxError):
  """Bad input to a bilinear op (shapes, dtypes, implementation name)."""


def acc_dtype(*dtypes):
  """The accumulation dtype: float32, or float64 when an input is float64."""
  return jnp.result_type(jnp.float32, *dtypes)


def check_sample_inputs(grid, coords, valid, where: str = "bilinear_sample"):
  """Raises `BilinearError` unless `grid [B, H, W, C]`, `coords [B, N, 2]`, `valid [B, N] | None` fit together."""
  if grid.ndim != 4:
    raise BilinearError(f"{where}: grid must be [B, H, W, C], got shape {grid.shape}")
  if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[0] != grid.shape[0]:
    raise BilinearError(f"{where}: coords must be [B={grid.shape[0]}, N, 2] (x, y pixels), got shape {coords.shape}")
  if not jnp.issubdtype(coords.dtype, jnp.floating):
    raise BilinearError(f"{where}: coords must be floating point pixel coordinates, got {coords.dtype}")
  if valid is not None and tuple(valid.shape) != tuple(coords.shape[:2]):
    raise BilinearError(f"{where}: valid must be [B, N] = {coords.shape[:2]}, got shape {valid.shape}")


def check_scatter_inputs(values, coords, weights, height, width, where: str = "bilinear_scatter"):
  """Raises `BilinearError` unless `values [B, N, C]`, `coords [B, N, 2]`, `weights [B, N] | None` and the grid size
  fit together."""
  if values.ndim != 3:
    raise BilinearError(f"{where}: values must be [B, N, C], got shape {values.shape}")
  if coords.ndim != 3 or tuple(coords.shape) != (values.shape[0], values.shape[1], 2):
    raise BilinearError(f"{where}: coords must be [B, N, 2] = {values.shape[:2] + (2,)}, got shape {coords.shape}")
  if not jnp.issubdtype(coords.dtype, jnp.floating):
    raise BilinearError(f"{where}: coords must be floating point pixel coordinates, got {coords.dtype}")
  if weights is not None and tuple(weights.shape) != tuple(values.shape[:2]):
    raise BilinearError(f"{where}: weights must be [B, N] = {values.shape[:2]}, got shape {weights.shape}")
  if int(height) < 1 or int(width) < 1:
    raise BilinearError(f"{where}: height and width must be positive, got {height} x {width}")


def round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def pow2_block(dim: int, preferred: int) -> int:
  """A power-of-two block for a dimension of size `dim` (Triton): the largest power of two <= `preferred` dividing
  `dim` when that is not tiny, else `min(preferred, next_pow2(dim))` (the dimension is then padded)."""
  preferred = 1 << (max(int(preferred), 1).bit_length() - 1)
  target = min(preferred, 1 << (dim - 1).bit_length()) if dim > 1 else 1
  divisor = dim & -dim  # largest power of two dividing dim
  block = min(divisor, preferred)
  return block if block >= min(16, target) else target


def aligned_block(dim: int, preferred: int, multiple: int) -> int:
  """A block for a dimension of size `dim` on TPU: a multiple of `multiple`, at most `max(preferred, multiple)`,
  dividing `dim` when such a block exists (no padding), else `preferred` rounded to `multiple` (capped at the
  padded dimension)."""
  preferred = max(round_up(int(preferred), multiple), multiple)
  for block in range(min(preferred, round_up(dim, multiple)), multiple - 1, -multiple):
    if dim % block == 0:
      return block
  return min(preferred, round_up(dim, multiple))


def pad_axis(x, axis: int, size: int, value=0):
  """Pads `x` with `value` along `axis` up to `size` (no-op when already that size)."""
  extra = size - x.shape[axis]
  if extra == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths, constant_values=value)


def match_varying(*arrays):
  """Makes kernel inputs agree on the mesh axes they vary over inside `shard_map` (`check_vma=True`).

  Returns `(arrays, out_struct)`: the arrays, each `pcast` to the union of the inputs' varying manual axes, and a
  `out_struct(shape, dtype)` building `jax.ShapeDtypeStruct`s that vary over the same axes (what `pallas_call` needs
  for its outputs there). Outside `shard_map` the set is empty and nothing changes.
  """
  varying = frozenset().union(*(jax.typeof(x).manual_axis_type.varying for x in arrays))
  if varying:
    axes = tuple(sorted(varying))
    arrays = tuple(x if jax.typeof(x).manual_axis_type.varying >= varying else
                   jax.lax.pcast(x, tuple(a for a in axes if a not in jax.typeof(x).manual_axis_type.varying),
                                 to="varying") for x in arrays)
  mat = jax.sharding.ManualAxisType(varying=varying)
  return arrays, lambda shape, dtype: jax.ShapeDtypeStruct(tuple(shape), dtype, manual_axis_type=mat)


def make_ops(gather: Callable, scatter: Callable, corner_dot: Callable):
  """Wires three kernels into differentiable `(gather_op, scatter_op)`.

  Args:
    gather: `(table [B, M, C], idx [B, N, 4], w [B, N, 4], out_dtype) -> [B, N, C]`.
    scatter: `(values [B, N, C], idx, w, num_cells M) -> [B, M, C]` in `acc_dtype(values, w)`.
    corner_dot: `(table [B, M, C], idx, u [B, N, C]) -> [B, N, 4]` in the accumulation dtype.

  Returns:
    `gather_op(table, idx, w)` (output in the table's dtype) and `scatter_op(values, idx, w, num_cells)` (output in
    the accumulation dtype), both differentiable (first order) w.r.t. table / values and w; idx gets no cotangent.
  """

  @jax.custom_vjp
  def gather_op(table, idx, w):
    return gather(table, idx, w, table.dtype)

  def gather_fwd(table, idx, w):
    return gather(table, idx, w, table.dtype), (table, idx, w)

  def gather_bwd(res, dout):
    table, idx, w = res
    dtable = scatter(dout, idx, w, table.shape[1]).astype(table.dtype)
    dw = corner_dot(table, idx, dout).astype(w.dtype)
    return dtable, None, dw

  gather_op.defvjp(gather_fwd, gather_bwd)

  @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
  def scatter_op(values, idx, w, num_cells):
    return scatter(values, idx, w, num_cells)

  def scatter_fwd(values, idx, w, num_cells):
    return scatter(values, idx, w, num_cells), (values, idx, w)

  def scatter_bwd(num_cells, res, dgrid):
    del num_cells
    values, idx, w = res
    dvalues = gather(dgrid, idx, w, values.dtype)
    dw = corner_dot(dgrid, idx, values).astype(w.dtype)
    return dvalues, None, dw

  scatter_op.defvjp(scatter_fwd, scatter_bwd)

  # Inside shard_map, inputs may vary over different mesh axes (e.g. sharded features, replicated coordinates). Casting
  # them to a common set OUTSIDE the custom_vjp lets JAX transpose the cast (a psum), so each cotangent comes back with
  # its primal's type.
  def gather_public(table, idx, w):
    return gather_op(*match_varying(table, idx, w)[0])

  def scatter_public(values, idx, w, num_cells):
    return scatter_op(*match_varying(values, idx, w)[0], num_cells)

  return gather_public, scatter_public
