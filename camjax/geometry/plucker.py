"""Plücker ray embeddings in the CameraCtrl convention (CameraCtrl, CameraCtrl II, CamI2V, RealCam-I2V, AC3D).

REFERENCE.md section 2. Per frame and pixel of an `height x width` grid, with K scaled to that grid:
  1. pixel centres `u = x + 0.5, v = y + 0.5`;
  2. `d_c = ((u - cx) / fx, (v - cy) / fy, 1)`, L2-normalised;
  3. `d = R_c2w d_c`, `o = t_c2w` (camera centre in the world / reference frame);
  4. channels `[o x d, d]` (moment first, then direction), no further normalisation.
The papers print `d = R K^-1 [u, v, 1]^T + t`; every public implementation uses the direction without `+ t` (above).
"""

from __future__ import annotations

import jax.numpy as jnp

from camjax.geometry import se3
from camjax.geometry.cameras import Cameras


def plucker(cameras: Cameras, height: int | None = None, width: int | None = None, dtype=jnp.float32):
  """Plücker map of every frame at a `height x width` grid.

  The grid may be the pixel grid (default: the cameras' image size) or a coarser latent token grid (e.g. `H / 8`,
  `W / 8` for an 8x VAE, or `H / 16` for a patch-2 DiT): K is rescaled from the cameras' image size to the grid, so
  each cell's ray passes through that cell's centre. Jit-able (the grid size is static).

  Args:
    cameras: `Cameras` with `K [..., T, 3, 3]`, `w2c [..., T, 4, 4]`. Use `cameras.relative()` first for the
      CameraCtrl relative-pose convention (reference frame = identity).
    height: grid height (default `cameras.height`).
    width: grid width (default `cameras.width`).
    dtype: output dtype.

  Returns:
    `[..., T, height, width, 6]`: channels `[o x d, d]`, `d` unit directions in world axes, `o` the camera centre.
  """
  height = cameras.height if height is None else int(height)
  width = cameras.width if width is None else int(width)
  K = jnp.asarray(cameras.K, dtype=jnp.float32)
  c2w = se3.invert(jnp.asarray(cameras.w2c, dtype=jnp.float32))
  sx, sy = width / cameras.width, height / cameras.height
  fx, fy = K[..., 0, 0] * sx, K[..., 1, 1] * sy
  cx, cy = K[..., 0, 2] * sx, K[..., 1, 2] * sy
  v, u = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5, jnp.arange(width, dtype=jnp.float32) + 0.5,
                      indexing="ij")  # [h, w]
  e = lambda a: a[..., None, None]  # per-frame scalars -> broadcast over the grid
  d_cam = jnp.stack([(u - e(cx)) / e(fx), (v - e(cy)) / e(fy), jnp.ones(fx.shape + (height, width))], axis=-1)
  d_cam = d_cam / jnp.linalg.norm(d_cam, axis=-1, keepdims=True)
  d = jnp.einsum("...ij,...hwj->...hwi", c2w[..., :3, :3], d_cam)
  o = jnp.broadcast_to(c2w[..., None, None, :3, 3], d.shape)
  return jnp.concatenate([jnp.cross(o, d), d], axis=-1).astype(dtype)


def pixel_unshuffle(x, factor: int):
  """Folds `factor x factor` spatial blocks into channels: `[..., H, W, C] -> [..., H/f, W/f, C * f * f]`.

  Channel order matches PyTorch's `PixelUnshuffle` applied to a channels-first tensor (channel-major, then the row
  and column offset inside the block), so CameraCtrl's 384-channel map is `pixel_unshuffle(plucker(...), 8)`.
  """
  *lead, H, W, C = x.shape
  if H % factor or W % factor:
    raise ValueError(f"pixel_unshuffle: {H}x{W} is not divisible by {factor}")
  x = x.reshape(*lead, H // factor, factor, W // factor, factor, C)
  n = len(lead)
  # [..., h, fy, w, fx, C] -> [..., h, w, C, fy, fx]
  x = x.transpose(*range(n), n, n + 2, n + 4, n + 1, n + 3)
  return x.reshape(*lead, H // factor, W // factor, C * factor * factor)


def plucker_unshuffled(cameras: Cameras, factor: int = 8, dtype=jnp.float32):
  """CameraCtrl's variant: the map at pixel resolution folded by `PixelUnshuffle(factor)`:
  `[..., T, H / factor, W / factor, 6 * factor**2]` (384 channels for factor 8)."""
  return pixel_unshuffle(plucker(cameras, dtype=dtype), factor)
