"""Plain-jnp bilinear sample and scatter: the semantic definition every kernel implementation is tested against.

Coordinate convention (the same as camjax intrinsics): `coords[..., 0] = x`, `coords[..., 1] = y` in continuous
pixel units where pixel `(row i, column j)` covers `[j, j + 1) x [i, i + 1)`, so its CENTRE is `(j + 0.5, i + 0.5)`.
A point at a pixel centre reads exactly that pixel. This matches `torch.nn.functional.grid_sample` with
`align_corners=False` and `padding_mode="zeros"` after mapping `[-1, 1]` to `[0, W] x [0, H]`.

The 4 neighbours of a point are the pixel centres around it; a neighbour outside the grid contributes nothing (zero
padding), so a point half a pixel outside the border still gets half of the border pixel, and points further out get
zero. Invalid points (`valid = False` or zero `weights`) read zeros and scatter nothing.

Sample and (unnormalised) scatter are each other's transpose: `<sample(G, c), V> = <G, scatter(V, c)>`.
"""

from __future__ import annotations

import jax.numpy as jnp


def corner_weights(coords, height: int, width: int):
  """Flat indices `[..., N, 4]` (into `height * width`) and bilinear weights `[..., N, 4]` of each point's four
  neighbours; out-of-grid neighbours get weight 0 (and a clamped, harmless index)."""
  gx = coords[..., 0] - 0.5
  gy = coords[..., 1] - 0.5
  x0, y0 = jnp.floor(gx), jnp.floor(gy)
  fx, fy = gx - x0, gy - y0
  xs = jnp.stack([x0, x0 + 1, x0, x0 + 1], axis=-1)
  ys = jnp.stack([y0, y0, y0 + 1, y0 + 1], axis=-1)
  w = jnp.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=-1)
  inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
  w = jnp.where(inside, w, 0.0)
  xi = jnp.clip(xs, 0, width - 1).astype(jnp.int32)
  yi = jnp.clip(ys, 0, height - 1).astype(jnp.int32)
  return yi * width + xi, w


def bilinear_sample(grid, coords, valid=None):
  """Reads a feature grid at points.

  Args:
    grid: `[B, H, W, C]` features.
    coords: `[B, N, 2]` (x, y) pixel coordinates (convention in the module docstring).
    valid: optional `[B, N]` bool; invalid points read zeros.

  Returns:
    `[B, N, C]` in the grid's dtype (accumulated in float32 or wider).
  """
  B, H, W, C = grid.shape
  idx, w = corner_weights(coords.astype(jnp.promote_types(coords.dtype, jnp.float32)), H, W)
  if valid is not None:
    w = w * valid[..., None].astype(w.dtype)
  flat = grid.reshape(B, H * W, C)
  corners = jnp.take_along_axis(flat, idx.reshape(B, -1)[..., None], axis=1).reshape(idx.shape + (C,))
  acc_dtype = jnp.promote_types(grid.dtype, jnp.float32)
  out = jnp.einsum("bnk,bnkc->bnc", w.astype(acc_dtype), corners.astype(acc_dtype))
  return out.astype(grid.dtype)


def bilinear_scatter(values, coords, weights=None, *, height: int, width: int, normalize: bool = True,
                     eps: float = 1e-6):
  """Splats point features onto a grid: each point adds `weight x bilinear weight x value` to its 4 neighbours.

  Args:
    values: `[B, N, C]` features.
    coords: `[B, N, 2]` (x, y) pixel coordinates.
    weights: optional `[B, N]` per-point weights (a validity mask as 0/1); default 1.
    height, width: output grid size.
    normalize: divide each cell by its accumulated weight (cells average their contributions, Track2View);
      cells with accumulated weight <= eps stay 0.
    eps: threshold of the normalisation.

  Returns:
    `(grid [B, H, W, C], weight_map [B, H, W])`, grid in the values' dtype, weights in float32 (or wider).
  """
  B, N, C = values.shape
  acc_dtype = jnp.promote_types(values.dtype, jnp.float32)
  idx, w = corner_weights(coords.astype(jnp.promote_types(coords.dtype, jnp.float32)), height, width)
  w = w.astype(acc_dtype)
  if weights is not None:
    w = w * weights[..., None].astype(acc_dtype)
  contrib = w[..., None] * values[:, :, None, :].astype(acc_dtype)  # [B, N, 4, C]
  batch = jnp.broadcast_to(jnp.arange(B)[:, None, None], idx.shape)
  grid = jnp.zeros((B, height * width, C), acc_dtype).at[batch, idx].add(contrib)
  weight_map = jnp.zeros((B, height * width), acc_dtype).at[batch, idx].add(w)
  if normalize:
    grid = jnp.where(weight_map[..., None] > eps, grid / jnp.maximum(weight_map, eps)[..., None], 0.0)
  return grid.reshape(B, height, width, C).astype(values.dtype), weight_map.reshape(B, height, width)
