"""Pallas GPU kernels (Triton backend) for bilinear gather, atomic scatter-add and the corner dot.

Layout: the corner indices / weights are passed transposed, `[B, 4, N]`, so that one corner of a block of tracks is a
contiguous row (Triton dislikes lane slicing). Big arrays (`table [B, M, C]`, values, cotangents) are whole-array refs
indexed by hand: Triton blocks must be powers of two and Pallas-Triton does not mask ragged edge blocks, so the
wrappers pad N and C up to whole blocks (a no-op at Track2View sizes: N = 1152, C = 1536) and never block over M.

- gather: grid `(B, N / bn, C / bc)`; per program 4 row-gathers `table[b, idx[k, :], c-block]` (a `[bn, bc]` load
  with an index vector) weighted and summed in float32.
- scatter: grid `(B, N / bn, C / bc)`; per program a loop over its `bn` tracks and 4 corners, each doing ONE
  `atomic_add` of a contiguous `[bc]` channel row into a zero-initialised float32 output (aliased input), skipped when
  the weight is 0 (out-of-grid corner, invalid or padded track). Every atomic has a scalar row index, so Pallas'
  interpret mode discharges them one after another and stays exact for duplicate cells (STACK.md: vector-index
  atomics act as a `set` there); on a GPU the hardware atomics make duplicates add up.
- corner_dot: grid `(B, N / bn)`; a loop over channel blocks accumulates `sum_c u[n, c] * table[idx[k, n], c]` for
  the 4 corners in registers.

Compiler params are `pallas.triton.CompilerParams` (without them Pallas picks Mosaic GPU, STACK.md).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from camjax.kernels.bilinear.common import acc_dtype, make_ops, match_varying, pad_axis, pow2_block, round_up

DEFAULT_BLOCKS = dict(gather_n=32, scatter_n=16, dot_n=32, block_c=256)


def _layout(idx, w, block_n):
  """`[B, N, 4]` -> `[B, 4, Np]` with Np a multiple of block_n; padded tracks get index 0 and weight 0."""
  n_pad = round_up(idx.shape[1], block_n)
  idx_t = pad_axis(jnp.swapaxes(idx, 1, 2).astype(jnp.int32), 2, n_pad)
  w_t = pad_axis(jnp.swapaxes(w, 1, 2), 2, n_pad)
  return idx_t, w_t


def _full_spec(shape):
  return pl.BlockSpec(tuple(shape), lambda *_: (0,) * len(shape))


def _params(num_warps):
  return plgpu.CompilerParams(num_warps=num_warps, num_stages=1)


def _gather_kernel(idx_ref, w_ref, table_ref, out_ref, *, block_c, dtype):
  b, j = pl.program_id(0), pl.program_id(2)
  cols = pl.ds(pl.multiple_of(j * block_c, block_c), block_c)
  acc = jnp.zeros(out_ref.shape, dtype)
  for k in range(4):
    rows = idx_ref[k, :]
    acc += w_ref[k, :].astype(dtype)[:, None] * table_ref[b, rows, cols].astype(dtype)
  out_ref[...] = acc.astype(out_ref.dtype)


def gather(table, idx, w, out_dtype, *, interpret=False, block_n=None, block_c=None, num_warps=4):
  """Weighted 4-corner row gather `[B, M, C] -> [B, N, C]` (see common.py)."""
  B, M, C = table.shape
  N = idx.shape[1]
  bn = pow2_block(N, block_n or DEFAULT_BLOCKS["gather_n"])
  bc = pow2_block(C, block_c or DEFAULT_BLOCKS["block_c"])
  c_pad = round_up(C, bc)
  idx_t, w_t = _layout(idx, w, bn)
  table = pad_axis(table, 2, c_pad)
  n_pad = idx_t.shape[2]
  (idx_t, w_t, table), out_struct = match_varying(idx_t, w_t, table)
  out = pl.pallas_call(
      functools.partial(_gather_kernel, block_c=bc, dtype=acc_dtype(table.dtype, w.dtype)),
      out_shape=out_struct((B, n_pad, c_pad), out_dtype),
      grid=(B, n_pad // bn, c_pad // bc),
      in_specs=[pl.BlockSpec((None, 4, bn), lambda b, i, j: (b, 0, i)),
                pl.BlockSpec((None, 4, bn), lambda b, i, j: (b, 0, i)),
                _full_spec(table.shape)],
      out_specs=pl.BlockSpec((None, bn, bc), lambda b, i, j: (b, i, j)),
      compiler_params=_params(num_warps),
      interpret=interpret,
      name="bilinear_gather_triton",
  )(idx_t, w_t, table)
  return out[:, :N, :C]


def _scatter_kernel(idx_ref, w_ref, values_ref, zeros_ref, out_ref, *, block_n, block_c):
  del zeros_ref  # aliased with out_ref
  b, i, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  cols = pl.ds(pl.multiple_of(j * block_c, block_c), block_c)

  def track(t, carry):
    row = values_ref[b, i * block_n + t, cols].astype(out_ref.dtype)
    for k in range(4):
      cell, weight = idx_ref[k, t], w_ref[k, t].astype(out_ref.dtype)

      @pl.when(weight != 0)
      def _():
        plgpu.atomic_add(out_ref, (b, cell, cols), weight * row)

    return carry

  lax.fori_loop(0, block_n, track, 0)


def scatter(values, idx, w, num_cells, *, interpret=False, block_n=None, block_c=None, num_warps=4):
  """Atomic weighted 4-corner scatter-add `[B, N, C] -> [B, M, C]` in the accumulation dtype (see common.py)."""
  B, N, C = values.shape
  bn = pow2_block(N, block_n or DEFAULT_BLOCKS["scatter_n"])
  bc = pow2_block(C, block_c or DEFAULT_BLOCKS["block_c"])
  c_pad = round_up(C, bc)
  idx_t, w_t = _layout(idx, w, bn)
  n_pad = idx_t.shape[2]
  values = pad_axis(pad_axis(values, 1, n_pad), 2, c_pad)
  dtype = acc_dtype(values.dtype, w.dtype)
  zeros = jnp.zeros((B, num_cells, c_pad), dtype)
  (idx_t, w_t, values, zeros), out_struct = match_varying(idx_t, w_t, values, zeros)
  out = pl.pallas_call(
      functools.partial(_scatter_kernel, block_n=bn, block_c=bc),
      out_shape=out_struct(zeros.shape, dtype),
      grid=(B, n_pad // bn, c_pad // bc),
      in_specs=[pl.BlockSpec((None, 4, bn), lambda b, i, j: (b, 0, i)),
                pl.BlockSpec((None, 4, bn), lambda b, i, j: (b, 0, i)),
                _full_spec(values.shape),
                _full_spec(zeros.shape)],
      out_specs=_full_spec(zeros.shape),
      input_output_aliases={3: 0},
      compiler_params=_params(num_warps),
      interpret=interpret,
      name="bilinear_scatter_triton",
  )(idx_t, w_t, values, zeros)
  return out[:, :, :C]


def _corner_dot_kernel(idx_ref, table_ref, u_ref, out_ref, *, block_n, block_c, num_c_blocks, dtype):
  b, i = pl.program_id(0), pl.program_id(1)
  tracks = pl.ds(pl.multiple_of(i * block_n, block_n), block_n)
  rows = [idx_ref[k, :] for k in range(4)]

  def channel_block(j, accs):
    cols = pl.ds(pl.multiple_of(j * block_c, block_c), block_c)
    u = u_ref[b, tracks, cols].astype(dtype)
    return tuple(acc + jnp.sum(u * table_ref[b, rows[k], cols].astype(dtype), axis=1) for k, acc in enumerate(accs))

  accs = lax.fori_loop(0, num_c_blocks, channel_block, tuple(jnp.zeros((block_n,), dtype) for _ in range(4)))
  for k in range(4):
    out_ref[k, :] = accs[k].astype(out_ref.dtype)


def corner_dot(table, idx, u, *, interpret=False, block_n=None, block_c=None, num_warps=4):
  """`[B, N, 4]` per-corner dot products `sum_c u[b, n, c] * table[b, idx[b, n, k], c]` (see common.py)."""
  B, M, C = table.shape
  N = idx.shape[1]
  bn = pow2_block(N, block_n or DEFAULT_BLOCKS["dot_n"])
  bc = pow2_block(C, block_c or DEFAULT_BLOCKS["block_c"])
  c_pad = round_up(C, bc)
  idx_t, _ = _layout(idx, jnp.zeros(idx.shape, jnp.float32), bn)
  n_pad = idx_t.shape[2]
  table = pad_axis(table, 2, c_pad)
  u = pad_axis(pad_axis(u, 1, n_pad), 2, c_pad)
  dtype = acc_dtype(table.dtype, u.dtype)
  (idx_t, table, u), out_struct = match_varying(idx_t, table, u)
  out = pl.pallas_call(
      functools.partial(_corner_dot_kernel, block_n=bn, block_c=bc, num_c_blocks=c_pad // bc, dtype=dtype),
      out_shape=out_struct((B, 4, n_pad), dtype),
      grid=(B, n_pad // bn),
      in_specs=[pl.BlockSpec((None, 4, bn), lambda b, i: (b, 0, i)),
                _full_spec(table.shape),
                _full_spec(u.shape)],
      out_specs=pl.BlockSpec((None, 4, bn), lambda b, i: (b, 0, i)),
      compiler_params=_params(num_warps),
      interpret=interpret,
      name="bilinear_corner_dot_triton",
  )(idx_t, table, u)
  return jnp.swapaxes(out[:, :, :N], 1, 2)


@functools.lru_cache(maxsize=None)
def ops(interpret: bool = False, block_n: int | None = None, block_c: int | None = None):
  """`(gather_op, scatter_op)` with custom VJPs, built from this module's kernels."""
  kw = dict(interpret=interpret, block_n=block_n, block_c=block_c)
  return make_ops(
      lambda table, idx, w, out_dtype: gather(table, idx, w, out_dtype, **kw),
      lambda values, idx, w, num_cells: scatter(values, idx, w, num_cells, **kw),
      lambda table, idx, u: corner_dot(table, idx, u, **kw))
