"""Backward reprojection (inverse warping) of frames through a disparity map and a relative camera pose; jittable.

For every pixel `p = (u, v)` of a DESTINATION camera (pixel centres at `(j + 0.5, i + 0.5)`, REFERENCE.md section 1)
with disparity `d = 1 / depth` (camera z, in the inverse of the poses' translation unit; metres for procedural
scenes):

    X_dst = K_dst^-1 [u, v, 1]^T / d                   (the surface point in the destination camera)
    X_src = R X_dst + t,   [R | t] = dst_to_src          (= w2c_src @ c2w_dst, OpenCV axes)
    p'    = (K_src X_src)_xy / (K_src X_src)_z           (its pixel in the source camera)
    out(p) = src(p')                                    (bilinear, edge-clamped: `sample_bilinear`)

The point is moved scaled by its disparity, `d X_src = R K_dst^-1 [u, v, 1]^T + d t`, which is the same projective
point without a division by a small `d`: `d = 0` (a point at infinity, e.g. the renderer's sky) gives the rotation-only
homography. Points that land behind the source camera (`z' <= eps`, which for `d > 0` means `depth' <= eps / d`) keep
their own pixel `p`. This is the inverse warping of depth-image-based rendering (e.g. Zhou et al. 2017, "Unsupervised
Learning of Depth and Ego-Motion from Video", eq. 2); occlusions are not modelled (a destination pixel always reads
the source surface in front along its reprojection, right or wrong).

    out = reproject(src_frames, disparity, dst_to_src, K_dst, K_src)   # [B, F, H, W, C]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from camjax.errors import CamjaxError


class WarpError(CamjaxError, ValueError):
  """Inputs of `reproject` / `sample_bilinear` whose shapes do not fit together (checked statically, also under jit)."""


def pixel_grid(height: int, width: int, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
  """`(x, y)`, each `[height, width]`: the pixel-centre coordinates `(j + 0.5, i + 0.5)` of every pixel."""
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=dtype) + 0.5, jnp.arange(width, dtype=dtype) + 0.5, indexing="ij")
  return xs, ys


def sample_bilinear(frames: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """Frames read at continuous pixel positions, bilinear and edge-clamped.

  Pixel `(row i, column j)` covers `[j, j + 1) x [i, i + 1)` with its centre at `(j + 0.5, i + 0.5)` (the camjax
  convention, as `camjax.kernels.bilinear`): a position at a pixel centre reads exactly that pixel. Positions outside
  the centres' hull are clamped to it (edge padding: the border pixel repeats outwards), unlike the zero padding of
  `camjax.kernels.bilinear`. Differentiable in `frames`, `x` and `y` (zero gradient in `x`, `y` where clamped).

  Args:
    frames: `[B, F, H, W, C]` values.
    x, y: `[B, F, Ho, Wo]` pixel positions in `frames`' pixel units (any output size).

  Returns:
    `[B, F, Ho, Wo, C]` in `frames`' dtype (interpolated in float32 or wider).

  Raises:
    WarpError: `frames` is not 5-D, or `x`, `y` are not `[B, F, Ho, Wo]` with `frames`' `B, F`.
  """
  if frames.ndim != 5:
    raise WarpError(f"sample_bilinear: frames must be [B, F, H, W, C], got shape {tuple(frames.shape)}")
  if x.shape != y.shape or x.ndim != 4 or x.shape[:2] != frames.shape[:2]:
    raise WarpError(f"sample_bilinear: x {tuple(x.shape)} and y {tuple(y.shape)} must both be [B, F, Ho, Wo] with "
                    f"B, F = {tuple(frames.shape[:2])} of frames {tuple(frames.shape)}")
  b, f, h, w, c = frames.shape
  acc = jnp.promote_types(frames.dtype, jnp.float32)
  gx = jnp.clip(x.astype(acc) - 0.5, 0.0, w - 1)  # grid units: pixel centre j at j
  gy = jnp.clip(y.astype(acc) - 0.5, 0.0, h - 1)
  x0, y0 = jnp.floor(gx), jnp.floor(gy)
  wx, wy = (gx - x0)[..., None], (gy - y0)[..., None]
  x0i, y0i = x0.astype(jnp.int32), y0.astype(jnp.int32)
  x1i, y1i = jnp.minimum(x0i + 1, w - 1), jnp.minimum(y0i + 1, h - 1)
  flat = frames.reshape(b * f, h * w, c).astype(acc)

  def at(yi, xi):
    idx = (yi * w + xi).reshape(b * f, -1, 1)
    return jnp.take_along_axis(flat, idx, axis=1).reshape(*x.shape, c)

  out = (1 - wy) * ((1 - wx) * at(y0i, x0i) + wx * at(y0i, x1i)) + wy * ((1 - wx) * at(y1i, x0i) + wx * at(y1i, x1i))
  return out.astype(frames.dtype)


def reproject_coords(disparity: jax.Array, dst_to_src: jax.Array, K_dst: jax.Array, K_src: jax.Array, *,
                     eps: float = 1e-4) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Where every destination pixel lands in the source camera (module docstring).

  Args:
    disparity: `[B, F, H, W]` destination disparity `1 / depth` per pixel (>= 0; 0 = at infinity).
    dst_to_src: `[B, F, 4, 4]` rigid transforms from destination-camera to source-camera coordinates
      (`w2c_src @ c2w_dst`).
    K_dst: `[B, F, 3, 3]` pixel intrinsics of the destination camera at `H x W`.
    K_src: `[B, F, 3, 3]` pixel intrinsics of the source camera at the source frames' resolution.
    eps: a projected `z' <= eps` (scaled by the disparity) counts as behind the source camera.

  Returns:
    `(x, y, in_front)`, each `[B, F, H, W]`: source pixel positions (centre convention; a destination pixel whose
    point is behind the source camera keeps its own position) and whether the point is in front of the source camera.

  Raises:
    WarpError: shapes that do not fit together.
  """
  if disparity.ndim != 4:
    raise WarpError(f"reproject: disparity must be [B, F, H, W], got shape {tuple(disparity.shape)}")
  bf = tuple(disparity.shape[:2])
  for name, m, tail in (("dst_to_src", dst_to_src, (4, 4)), ("K_dst", K_dst, (3, 3)), ("K_src", K_src, (3, 3))):
    if tuple(m.shape) != (*bf, *tail):
      raise WarpError(f"reproject: {name} must be [B, F, {tail[0]}, {tail[1]}] = {(*bf, *tail)} (B, F of the "
                      f"disparity), got {tuple(m.shape)}")
  acc = jnp.promote_types(disparity.dtype, jnp.float32)
  d = disparity.astype(acc)
  xs, ys = pixel_grid(d.shape[2], d.shape[3], acc)
  pix = jnp.stack([xs, ys, jnp.ones_like(xs)], -1)  # [H, W, 3]
  rel = dst_to_src.astype(acc)
  # d X_src = R K_dst^-1 p + d t, then K_src: the whole chain as one 3x3 per frame plus a scaled translation.
  M = K_src.astype(acc) @ rel[..., :3, :3] @ jnp.linalg.inv(K_dst.astype(acc))  # [B, F, 3, 3]
  kt = jnp.einsum("bfij,bfj->bfi", K_src.astype(acc), rel[..., :3, 3])  # [B, F, 3]
  proj = jnp.einsum("bfij,hwj->bfhwi", M, pix) + d[..., None] * kt[:, :, None, None, :]
  z = proj[..., 2]
  in_front = z > eps
  zs = jnp.where(in_front, z, 1.0)
  x = jnp.where(in_front, proj[..., 0] / zs, xs)
  y = jnp.where(in_front, proj[..., 1] / zs, ys)
  return x, y, in_front


def reproject(src_frames: jax.Array, disparity: jax.Array, dst_to_src: jax.Array, K_dst: jax.Array, K_src: jax.Array,
              *, eps: float = 1e-4) -> jax.Array:
  """Source frames reprojected into destination cameras at a destination disparity (backward warp, module docstring).

  Args:
    src_frames: `[B, F, Hs, Ws, C]` source frames (any channels: RGB, pixel-autoencoder latents, features).
    disparity: `[B, F, H, W]` destination disparity `1 / depth` per pixel (>= 0; 0 = at infinity), in the inverse of
      `dst_to_src`'s translation unit (metres for procedural scenes).
    dst_to_src: `[B, F, 4, 4]` destination-camera to source-camera transform, `w2c_src @ c2w_dst` (OpenCV axes).
    K_dst: `[B, F, 3, 3]` pixel intrinsics of the destination at `H x W`.
    K_src: `[B, F, 3, 3]` pixel intrinsics of the source at `Hs x Ws`.
    eps: see `reproject_coords`.

  Returns:
    `[B, F, H, W, C]` in `src_frames`' dtype: each destination pixel reads the source frame (bilinear, edge-clamped)
    where its point projects; points behind the source camera read the source at their own pixel. Identity poses and
    equal intrinsics return the source frames (at any disparity). Differentiable in `src_frames` and `disparity`.

  Raises:
    WarpError: shapes that do not fit together.
  """
  if src_frames.ndim != 5 or tuple(src_frames.shape[:2]) != tuple(disparity.shape[:2]):
    raise WarpError(f"reproject: src_frames must be [B, F, Hs, Ws, C] with B, F = {tuple(disparity.shape[:2])} of "
                    f"the disparity {tuple(disparity.shape)}, got {tuple(src_frames.shape)}")
  x, y, _ = reproject_coords(disparity, dst_to_src, K_dst, K_src, eps=eps)
  return sample_bilinear(src_frames, x, y)


__all__ = ["WarpError", "pixel_grid", "reproject", "reproject_coords", "sample_bilinear"]
