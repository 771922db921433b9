"""Pallas TPU (Mosaic) kernels for bilinear gather, scatter and the corner dot, as dense bilinear-weight matmul tiles.

The TensorCore has no gather, scatter or atomics (STACK.md), so each op is a product with the (implicit, never
materialised) sparse interpolation matrix `A[b] [N, M]`, `A[n, m] = sum_k w[n, k] * (idx[n, k] == m)`:

  gather      out = A @ table          grid (B, N / bn, C / bc, M / bm), M reduced last
  scatter     out = A^T @ values       grid (B, M / bm, C / bc, N / bn), N reduced last
  corner_dot  out[n, k] = sum_m onehot_k[n, m] * (u @ table^T)[n, m]   grid (B, N / bn, M / bm, C / bc)

The `[bn, bm]` (or `[bm, bn]`) tile of `A` is rebuilt in VMEM from `broadcasted_iota` and the block's 4 corner
indices/weights, then fed to the MXU. Work is `2 N M C` flops per frame instead of the `8 N C` of a gather, so this
formulation suits TPUs (where the MXU is idle otherwise) and small grids; exact results are unaffected. Tiles of `A`
are built in float32 and cast to bfloat16 for a bfloat16 table (the MXU's native input; the weights then carry bf16
rounding, ~0.4 %), and f32 products use `Precision.HIGHEST`.

Blocks: bn is a multiple of 128 (N sits on lanes in the `[B, 4, N]` layout used by scatter), bm a multiple of 16
(sublanes; bf16 packs 16 rows), bc a multiple of 128; the wrappers pick divisors of the real sizes where possible
(Track2View: N 1152 = 9 x 128, M 6240 = 13 x 480, C 1536 = 3 x 512) and otherwise pad with zeros.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from camjax.kernels.bilinear.common import acc_dtype, aligned_block, make_ops, match_varying, pad_axis, round_up

DEFAULT_BLOCKS = dict(block_n=128, block_m=512, block_c=512)


def _blocks(N, M, C, block_n, block_m, block_c):
  bn = aligned_block(N, block_n or DEFAULT_BLOCKS["block_n"], 128)
  bm = aligned_block(M, block_m or DEFAULT_BLOCKS["block_m"], 16)
  bc = aligned_block(C, block_c or DEFAULT_BLOCKS["block_c"], 128)
  return bn, bm, bc


def _mxu_dot(a, b, contract, dtype):
  """`lax.dot_general` over `contract` with float32 (or wider) accumulation and full precision for f32 inputs."""
  precision = lax.Precision.HIGHEST if a.dtype != jnp.bfloat16 else lax.Precision.DEFAULT
  return lax.dot_general(a, b, (contract, ((), ())), precision=precision, preferred_element_type=dtype)


def _params(semantics, interpret):
  # TPU interpret mode (jax 0.10) does not extend user dimension_semantics by the grid axes `vmap` adds (the Mosaic
  # lowering does), and semantics do not change interpreted results: leave them out there.
  return None if interpret else pltpu.CompilerParams(dimension_semantics=semantics)


def _gather_kernel(idx_ref, w_ref, table_ref, out_ref, acc_ref, *, block_m, dtype):
  m = pl.program_id(3)

  @pl.when(m == 0)
  def _():
    acc_ref[...] = jnp.zeros(acc_ref.shape, acc_ref.dtype)

  idx, w = idx_ref[...], w_ref[...].astype(dtype)  # [bn, 4]
  cells = m * block_m + lax.broadcasted_iota(jnp.int32, (idx.shape[0], block_m), 1)
  tile = jnp.zeros(cells.shape, dtype)
  for k in range(4):
    tile += jnp.where(idx[:, k:k + 1] == cells, w[:, k:k + 1], 0)
  table = table_ref[...]
  lhs = tile.astype(table.dtype) if table.dtype == jnp.bfloat16 else tile
  acc_ref[...] += _mxu_dot(lhs, table.astype(lhs.dtype), ((1,), (0,)), acc_ref.dtype)

  @pl.when(m == pl.num_programs(3) - 1)
  def _():
    out_ref[...] = acc_ref[...].astype(out_ref.dtype)


def gather(table, idx, w, out_dtype, *, interpret=False, block_n=None, block_m=None, block_c=None):
  """Weighted 4-corner row gather `[B, M, C] -> [B, N, C]` as dense tiles (see common.py)."""
  B, M, C = table.shape
  N = idx.shape[1]
  bn, bm, bc = _blocks(N, M, C, block_n, block_m, block_c)
  n_pad, m_pad, c_pad = round_up(N, bn), round_up(M, bm), round_up(C, bc)
  idx = pad_axis(idx.astype(jnp.int32), 1, n_pad)
  w = pad_axis(w, 1, n_pad)
  table = pad_axis(pad_axis(table, 1, m_pad), 2, c_pad)
  dtype = acc_dtype(table.dtype, w.dtype)
  (idx, w, table), out_struct = match_varying(idx, w, table)
  out = pl.pallas_call(
      functools.partial(_gather_kernel, block_m=bm, dtype=dtype),
      out_shape=out_struct((B, n_pad, c_pad), out_dtype),
      grid=(B, n_pad // bn, c_pad // bc, m_pad // bm),
      in_specs=[pl.BlockSpec((None, bn, 4), lambda b, i, j, m: (b, i, 0)),
                pl.BlockSpec((None, bn, 4), lambda b, i, j, m: (b, i, 0)),
                pl.BlockSpec((None, bm, bc), lambda b, i, j, m: (b, m, j))],
      out_specs=pl.BlockSpec((None, bn, bc), lambda b, i, j, m: (b, i, j)),
      scratch_shapes=[pltpu.VMEM((bn, bc), dtype)],
      compiler_params=_params(("parallel", "parallel", "parallel", "arbitrary"), interpret),
      interpret=interpret,
      name="bilinear_gather_tpu",
  )(idx, w, table)
  return out[:, :N, :C]


def _scatter_kernel(idx_ref, w_ref, values_ref, out_ref, *, block_m):
  m, n = pl.program_id(1), pl.program_id(3)

  @pl.when(n == 0)
  def _():
    out_ref[...] = jnp.zeros(out_ref.shape, out_ref.dtype)

  idx, w = idx_ref[...], w_ref[...].astype(out_ref.dtype)  # [4, bn]
  cells = m * block_m + lax.broadcasted_iota(jnp.int32, (block_m, idx.shape[1]), 0)
  tile = jnp.zeros(cells.shape, out_ref.dtype)
  for k in range(4):
    tile += jnp.where(idx[k:k + 1, :] == cells, w[k:k + 1, :], 0)
  values = values_ref[...]
  lhs = tile.astype(values.dtype) if values.dtype == jnp.bfloat16 else tile
  out_ref[...] += _mxu_dot(lhs, values.astype(lhs.dtype), ((1,), (0,)), out_ref.dtype)


def scatter(values, idx, w, num_cells, *, interpret=False, block_n=None, block_m=None, block_c=None):
  """Weighted 4-corner scatter-add `[B, N, C] -> [B, M, C]` in the accumulation dtype, as dense tiles."""
  B, N, C = values.shape
  bn, bm, bc = _blocks(N, num_cells, C, block_n, block_m, block_c)
  n_pad, m_pad, c_pad = round_up(N, bn), round_up(num_cells, bm), round_up(C, bc)
  idx_t = pad_axis(jnp.swapaxes(idx, 1, 2).astype(jnp.int32), 2, n_pad)
  w_t = pad_axis(jnp.swapaxes(w, 1, 2), 2, n_pad)
  values = pad_axis(pad_axis(values, 1, n_pad), 2, c_pad)
  dtype = acc_dtype(values.dtype, w.dtype)
  (idx_t, w_t, values), out_struct = match_varying(idx_t, w_t, values)
  out = pl.pallas_call(
      functools.partial(_scatter_kernel, block_m=bm),
      out_shape=out_struct((B, m_pad, c_pad), dtype),
      grid=(B, m_pad // bm, c_pad // bc, n_pad // bn),
      in_specs=[pl.BlockSpec((None, 4, bn), lambda b, m, j, n: (b, 0, n)),
                pl.BlockSpec((None, 4, bn), lambda b, m, j, n: (b, 0, n)),
                pl.BlockSpec((None, bn, bc), lambda b, m, j, n: (b, n, j))],
      out_specs=pl.BlockSpec((None, bm, bc), lambda b, m, j, n: (b, m, j)),
      compiler_params=_params(("parallel", "parallel", "parallel", "arbitrary"), interpret),
      interpret=interpret,
      name="bilinear_scatter_tpu",
  )(idx_t, w_t, values)
  return out[:, :num_cells, :C]


def _corner_dot_kernel(idx_ref, table_ref, u_ref, out_ref, *, block_m):
  m, j = pl.program_id(2), pl.program_id(3)

  @pl.when((m == 0) & (j == 0))
  def _():
    out_ref[...] = jnp.zeros(out_ref.shape, out_ref.dtype)

  u, table = u_ref[...], table_ref[...]
  common = jnp.promote_types(u.dtype, table.dtype)
  prod = _mxu_dot(u.astype(common), table.astype(common), ((1,), (1,)), out_ref.dtype)  # [bn, bm]
  idx = idx_ref[...]  # [bn, 4]
  cells = m * block_m + lax.broadcasted_iota(jnp.int32, prod.shape, 1)
  corner = lax.broadcasted_iota(jnp.int32, out_ref.shape, 1)
  update = jnp.zeros(out_ref.shape, out_ref.dtype)
  for k in range(4):
    picked = jnp.sum(jnp.where(idx[:, k:k + 1] == cells, prod, 0), axis=1, keepdims=True)  # [bn, 1]
    update += jnp.where(corner == k, picked, 0)
  out_ref[...] += update


def corner_dot(table, idx, u, *, interpret=False, block_n=None, block_m=None, block_c=None):
  """`[B, N, 4]` per-corner dot products `sum_c u[b, n, c] * table[b, idx[b, n, k], c]`, as dense tiles."""
  B, M, C = table.shape
  N = idx.shape[1]
  bn, bm, bc = _blocks(N, M, C, block_n, block_m, block_c)
  n_pad, m_pad, c_pad = round_up(N, bn), round_up(M, bm), round_up(C, bc)
  idx = pad_axis(idx.astype(jnp.int32), 1, n_pad)
  table = pad_axis(pad_axis(table, 1, m_pad), 2, c_pad)
  u = pad_axis(pad_axis(u, 1, n_pad), 2, c_pad)
  (idx, table, u), out_struct = match_varying(idx, table, u)
  out = pl.pallas_call(
      functools.partial(_corner_dot_kernel, block_m=bm),
      out_shape=out_struct((B, n_pad, 4), acc_dtype(table.dtype, u.dtype)),
      grid=(B, n_pad // bn, m_pad // bm, c_pad // bc),
      in_specs=[pl.BlockSpec((None, bn, 4), lambda b, i, m, j: (b, i, 0)),
                pl.BlockSpec((None, bm, bc), lambda b, i, m, j: (b, m, j)),
                pl.BlockSpec((None, bn, bc), lambda b, i, m, j: (b, i, j))],
      out_specs=pl.BlockSpec((None, bn, 4), lambda b, i, m, j: (b, i, 0)),
      compiler_params=_params(("parallel", "parallel", "arbitrary", "arbitrary"), interpret),
      interpret=interpret,
      name="bilinear_corner_dot_tpu",
  )(idx, table, u)
  return out[:, :N]


@functools.lru_cache(maxsize=None)
def ops(interpret: bool = False, block_n: int | None = None, block_m: int | None = None, block_c: int | None = None):
  """`(gather_op, scatter_op)` with custom VJPs, built from this module's kernels. `interpret=True` runs them in
  Pallas' TPU interpret mode (`pltpu.InterpretParams`) on any backend."""
  mode = pltpu.InterpretParams() if interpret else False
  kw = dict(interpret=mode, block_n=block_n, block_m=block_m, block_c=block_c)
  return make_ops(
      lambda table, idx, w, out_dtype: gather(table, idx, w, out_dtype, **kw),
      lambda values, idx, w, num_cells: scatter(values, idx, w, num_cells, **kw),
      lambda table, idx, u: corner_dot(table, idx, u, **kw))
