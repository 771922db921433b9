"""RealCam-I2V's 3D preview (sec. 3.3, Fig. 7): unproject the reference image with its metric depth, drop statistical
outliers, render the point cloud along the user's trajectory with a z-buffer, and keep the pixels whose k x k
neighbourhood is covered (the mask of scene-constrained noise shaping, Fig. 6), resized to the latent grid.

Conventions (`cameras.py`): OpenCV axes, `w2c` world-to-camera, `K` in pixels, pixel (x, y) covers
`[x, x + 1) x [y, y + 1)` so its centre is `(x + 0.5, y + 0.5)`; depth maps hold the camera-space z in metres (the
paper's `p_c = D(u, v) K^-1 [u, v, 1]^T`), with `depth <= 0` (or non-finite) meaning "no depth".

Where the work runs:

- `unproject` and `remove_outliers` are host-side NumPy (the number of points depends on the data). The outlier
  removal uses SciPy's KD-tree (`scipy.spatial.cKDTree`; SciPy is a dependency of jax itself, so it is always
  installed): about 0.3 s for 64k points and 11 neighbours on the 2-core CPU test machine.
- `render_points`, `coverage_mask` and `latent_mask` are JAX and jit-able (sizes static); `render_points` is a
  z-buffer splat built from scatter-mins, vmapped over the frames.
- `preview` chains them and returns a `Preview`.

What the public code does and camjax differs in (facts from CamI2V / RealCam-I2V's released code): it renders with
Open3D (points of 2 pixels, `remove_statistical_outlier(nb_neighbors=12, std_ratio=3.0)`, which counts the point
itself among its 12), erodes the "pixel is not background" mask with a 5x5 box filter (reflect padding, all 25
covered), resizes it bilinearly to the latent grid and thresholds it at 0.9. camjax takes the coverage from the
z-buffer itself (a black pixel of the scene is not mistaken for a hole), resizes by area (every pixel of a latent
cell counts equally) and, for a causal video VAE, averages the frames each latent frame encodes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from camjax.errors import CamjaxError

__all__ = ["Preview", "RenderError", "coverage_mask", "latent_mask", "preview", "remove_outliers", "render_points",
           "unproject"]


class RenderError(CamjaxError, ValueError):
  """Invalid input to the preview renderer: mismatched image / depth / camera shapes, non-finite cameras, an empty
  point cloud, bad splat radius, window size or latent shape. The message names the argument and its shape."""


# ------------------------------------------------------------------------------------------------ point cloud
def _matrix(value, shape, name: str) -> np.ndarray:
  m = np.asarray(value, dtype=np.float64)
  if m.shape != shape:
    raise RenderError(f"{name} must have shape {list(shape)}, got {list(m.shape)}")
  if not np.isfinite(m).all():
    raise RenderError(f"{name} has non-finite values (NaN or inf)")
  return m


def unproject(image, depth, K, c2w) -> tuple[np.ndarray, np.ndarray]:
  """Lifts every pixel with a depth into world space (RealCam-I2V sec. 3.3, `p_c = D(u, v) K^-1 [u, v, 1]^T`).

  Pixel (x, y) is lifted through its centre `(x + 0.5, y + 0.5)`, so projecting the point back with the same
  camera lands it in the same pixel. Pixels whose depth is not finite or `<= 0` are skipped.

  Args:
    image: `[H, W, C]` colours (any value range and dtype; usually RGB in [0, 1] or [0, 255]).
    depth: `[H, W]` camera-space z in metres (a metric depth map, not the distance along the ray).
    K: `[3, 3]` pixel intrinsics of the image.
    c2w: `[4, 4]` camera-to-world pose of the image (OpenCV axes); the identity gives points in the camera frame.

  Returns:
    `(points [N, 3] float32 metres in world axes, colors [N, C] float32)`, pixels in row-major order,
    `N <= H * W`.

  Raises:
    RenderError: `image` not `[H, W, C]`, `depth` not `[H, W]` of the same size, `K` / `c2w` of the wrong shape or
      non-finite, or a singular `K`.
  """
  image = np.asarray(image)
  depth = np.asarray(depth, dtype=np.float64)
  if image.ndim != 3 or depth.shape != image.shape[:2]:
    raise RenderError(f"unproject needs image [H, W, C] and depth [H, W] of the same size, got image "
                      f"{list(image.shape)} and depth {list(depth.shape)}")
  K = _matrix(K, (3, 3), "K")
  c2w = _matrix(c2w, (4, 4), "c2w")
  if abs(np.linalg.det(K)) < 1e-12:
    raise RenderError(f"K is singular: {K.tolist()}")
  height, width = depth.shape
  y, x = np.nonzero(np.isfinite(depth) & (depth > 0))
  pixels = np.stack([x + 0.5, y + 0.5, np.ones(x.shape)], axis=-1)  # [N, 3]
  rays = pixels @ np.linalg.inv(K).T
  cam = rays / rays[:, 2:3] * depth[y, x][:, None]  # z = depth (K's last row is [0, 0, 1] for a pinhole)
  world = cam @ c2w[:3, :3].T + c2w[:3, 3]
  return world.astype(np.float32), image[y, x].astype(np.float32)


def remove_outliers(points, k: int = 11, std_ratio: float = 3.0) -> np.ndarray:
  """Statistical outlier removal: drops points far from their neighbours (as Open3D's `remove_statistical_outlier`).

  For every point, `d_i` is the mean Euclidean distance to its `k` nearest other points (a KD-tree query,
  `scipy.spatial.cKDTree`, all cores); a point is kept when `d_i <= mean(d) + std_ratio * std(d)` (sample std over
  the cloud). RealCam-I2V calls Open3D with `nb_neighbors=12, std_ratio=3.0`, and Open3D counts the point itself
  among the 12: the defaults here (11 other points) are the same rule.

  Args:
    points: `[N, 3]` positions (any unit).
    k: neighbours per point (>= 1).
    std_ratio: how many standard deviations above the mean distance a point may lie (> 0).

  Returns:
    `keep [N]` bool; apply it to the points and their colours alike. All True when `N <= k + 1` (too few points
    for the statistic).

  Raises:
    RenderError: `points` not `[N, 3]` or non-finite, `k < 1`, or `std_ratio <= 0`.
  """
  points = np.asarray(points, dtype=np.float64)
  if points.ndim != 2 or points.shape[1] != 3:
    raise RenderError(f"remove_outliers needs points [N, 3], got {list(points.shape)}")
  if not np.isfinite(points).all():
    raise RenderError("remove_outliers: points have non-finite values (NaN or inf)")
  if int(k) != k or k < 1 or not std_ratio > 0:
    raise RenderError(f"remove_outliers needs an integer k >= 1 and std_ratio > 0, got k={k}, std_ratio={std_ratio}")
  n = points.shape[0]
  if n <= k + 1:
    return np.ones(n, dtype=bool)
  from scipy.spatial import cKDTree  # pylint: disable=import-outside-toplevel  # ~1 s to import, only when used
  distances, _ = cKDTree(points).query(points, k=int(k) + 1, workers=-1)
  mean = distances[:, 1:].mean(axis=1)  # column 0 is the point itself (or an exact duplicate): distance 0
  return mean <= mean.mean() + std_ratio * mean.std(ddof=1)


# ------------------------------------------------------------------------------------------------ z-buffer splat
def _render_frame(points, colors, valid, K, w2c, background, depth_tolerance, near, *, height: int, width: int,
                  radius: int):
  """One frame of `render_points`: `(image [H, W, C], depth [H, W], covered [H, W])`."""
  n = points.shape[0]
  cam = points @ w2c[:3, :3].T + w2c[:3, 3]
  z = cam[:, 2]
  front = valid & (z > near)
  pix = cam @ K.T
  zs = jnp.where(front, z, 1.0)
  u, v = pix[:, 0] / zs, pix[:, 1] / zs
  front = front & jnp.isfinite(u) & jnp.isfinite(v)
  offsets = np.arange(-radius, radius + 1, dtype=np.float32)
  dy, dx = (a.reshape(-1) for a in np.meshgrid(offsets, offsets, indexing="ij"))  # [S], S = (2r + 1)^2
  px = jnp.floor(u)[:, None] + dx  # [N, S] candidate pixels, float until they are known to be inside
  py = jnp.floor(v)[:, None] + dy
  inside = front[:, None] & (px >= 0) & (px < width) & (py >= 0) & (py < height)
  dump = height * width  # the slot candidates outside the image write to
  pixel = jnp.where(inside, jnp.clip(py, 0, height - 1).astype(jnp.int32) * width
                    + jnp.clip(px, 0, width - 1).astype(jnp.int32), dump)
  zc = jnp.broadcast_to(z[:, None], pixel.shape)
  # 1. nearest depth per pixel; 2. among candidates within the depth tolerance of it, the one whose projection is
  # closest to the pixel centre; 3. among those, the lowest point index. Every step is a min, so the winner does not
  # depend on the order of the points or of the scatter.
  zbuf = jnp.full(dump + 1, jnp.inf, z.dtype).at[pixel].min(zc)
  candidate = inside & (zc <= zbuf[pixel] * (1.0 + depth_tolerance))
  dist2 = jnp.square(u[:, None] - (px + 0.5)) + jnp.square(v[:, None] - (py + 0.5))
  dbuf = jnp.full(dump + 1, jnp.inf, dist2.dtype).at[jnp.where(candidate, pixel, dump)].min(dist2)
  best = candidate & (dist2 <= dbuf[pixel])
  ids = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], pixel.shape)
  winner = jnp.full(dump + 1, n, jnp.int32).at[jnp.where(best, pixel, dump)].min(ids)[:dump]
  covered = winner < n
  w = jnp.minimum(winner, n - 1)
  image = jnp.where(covered[:, None], colors[w], background)
  depth = jnp.where(covered, z[w], 0.0)
  return image.reshape(height, width, -1), depth.reshape(height, width), covered.reshape(height, width)


@functools.partial(jax.jit, static_argnames=("height", "width", "radius", "batch_frames"))
def _render(points, colors, valid, K, w2c, background, depth_tolerance, near, *, height, width, radius,
            batch_frames):
  frame = functools.partial(_render_frame, height=height, width=width, radius=radius)
  if batch_frames is None:
    return jax.vmap(frame, in_axes=(None, None, None, 0, 0, None, None, None))(
        points, colors, valid, K, w2c, background, depth_tolerance, near)
  return jax.lax.map(lambda kw: frame(points, colors, valid, kw[0], kw[1], background, depth_tolerance, near),
                     (K, w2c), batch_size=batch_frames)


def render_points(points, colors, K, w2c, height: int, width: int, *, radius: int = 0, depth_tolerance=0.01,
                  near=1e-3, valid=None, background=0.0, batch_frames: int | None = None):
  """Renders a coloured point cloud into every camera of a trajectory with a z-buffer (jit-able).

  Each point is projected with the pinhole model and lands in pixel `(floor(u), floor(v))` (pixel centres at
  `+0.5`); with `radius = r` it also covers the `(2r + 1) x (2r + 1)` square of pixels around that one (a splat,
  which closes the cracks a point cloud shows when the camera moves closer than the reference view). Per pixel the
  winner is decided by three scatter-mins, so the result is deterministic and independent of the point order:

  1. the nearest depth `z_min` among the points covering the pixel;
  2. among points with `z <= z_min (1 + depth_tolerance)` (the same surface), the one whose projection is closest
     to the pixel centre (so a splat does not shift a surface seen head-on by a pixel);
  3. among those, the lowest point index.

  Points at `z <= near` (behind or at the camera) are dropped. Memory is `O(T N (2r + 1)^2)` with all frames in one
  vmap; `batch_frames` bounds it by rendering that many frames at a time (`jax.lax.map`).

  Args:
    points: `[N, 3]` world points (metres), `N >= 1`.
    colors: `[N, C]` per-point colours (float).
    K: `[3, 3]` or `[T, 3, 3]` pixel intrinsics of the rendered `height x width` images.
    w2c: `[T, 4, 4]` world-to-camera poses (OpenCV axes).
    height: image height in pixels (static).
    width: image width in pixels (static).
    radius: splat radius in pixels (static int >= 0); 0 renders each point into exactly one pixel.
    depth_tolerance: relative depth band of step 2 (>= 0; 0 is a strict z-buffer with a centre-distance tie-break).
    near: near plane in metres.
    valid: optional `[N]` bool, False for points to ignore (lets callers pad clouds to a fixed size).
    background: value of uncovered pixels (scalar or `[C]`).
    batch_frames: None renders all frames in one vmap; an int renders that many at a time (static).

  Returns:
    `(images [T, H, W, C] float32, depth [T, H, W] float32 camera-space z of the winning point (0 where
    uncovered), covered [T, H, W] bool)`.

  Raises:
    RenderError: shapes other than the above (checked on the static shapes, so it also raises under `jax.jit`),
      `N == 0`, a non-integer or negative `radius`, or non-positive image sizes.
  """
  points = jnp.asarray(points, jnp.float32)
  colors = jnp.asarray(colors, jnp.float32)
  w2c = jnp.asarray(w2c, jnp.float32)
  K = jnp.asarray(K, jnp.float32)
  if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
    raise RenderError(f"render_points needs points [N, 3] with N >= 1, got {list(points.shape)}")
  if colors.ndim != 2 or colors.shape[0] != points.shape[0]:
    raise RenderError(f"render_points needs colors [N, C] for {points.shape[0]} points, got {list(colors.shape)}")
  if w2c.ndim != 3 or w2c.shape[1:] != (4, 4):
    raise RenderError(f"render_points needs w2c [T, 4, 4], got {list(w2c.shape)}")
  frames = w2c.shape[0]
  if K.shape == (3, 3):
    K = jnp.broadcast_to(K, (frames, 3, 3))
  if K.shape != (frames, 3, 3):
    raise RenderError(f"render_points needs K [3, 3] or [{frames}, 3, 3] for {frames} poses, got {list(K.shape)}")
  if int(radius) != radius or radius < 0:
    raise RenderError(f"render_points needs an integer radius >= 0, got {radius}")
  if int(height) != height or int(width) != width or height < 1 or width < 1:
    raise RenderError(f"render_points needs positive integer height and width, got {height} x {width}")
  if batch_frames is not None and (int(batch_frames) != batch_frames or batch_frames < 1):
    raise RenderError(f"render_points: batch_frames must be None or an integer >= 1, got {batch_frames}")
  valid = jnp.ones(points.shape[0], bool) if valid is None else jnp.asarray(valid, bool)
  if valid.shape != (points.shape[0],):
    raise RenderError(f"render_points needs valid [{points.shape[0]}], got {list(valid.shape)}")
  background = jnp.asarray(background, jnp.float32)
  if background.ndim > 1 or background.size not in (1, colors.shape[1]):
    raise RenderError(f"render_points needs a scalar background or one value per colour channel "
                      f"({colors.shape[1]}), got shape {list(background.shape)}")
  background = jnp.broadcast_to(background.reshape(-1), (colors.shape[1],))
  return _render(points, colors, valid, K, w2c, background, jnp.float32(depth_tolerance), jnp.float32(near),
                 height=int(height), width=int(width), radius=int(radius),
                 batch_frames=None if batch_frames is None else int(batch_frames))


# ------------------------------------------------------------------------------------------------ masks
def coverage_mask(covered, k: int = 5):
  """Pixels whose whole `k x k` neighbourhood is covered (RealCam-I2V sec. 3.3: a visible pixel next to a hole lies
  on an edge the depth may have got wrong, so it is excluded). A binary erosion with a `k x k` box; the image border
  is reflect-padded (`jnp.pad(mode="reflect")`, PyTorch's "reflect", as CamI2V's code), so the border itself is
  not treated as a hole. Every hole grows by `k // 2` pixels on each side. Jit-able.

  Args:
    covered: `[..., H, W]` bool (e.g. `render_points`' `[T, H, W]`).
    k: odd window size >= 1 (RealCam-I2V: 5); 1 returns `covered`.

  Returns:
    `[..., H, W]` bool.

  Raises:
    RenderError: `k` not an odd integer >= 1, fewer than 2 axes, or an image side not larger than `k // 2`.
  """
  covered = jnp.asarray(covered)
  if int(k) != k or k < 1 or k % 2 == 0:
    raise RenderError(f"coverage_mask needs an odd integer k >= 1, got {k}")
  if covered.ndim < 2:
    raise RenderError(f"coverage_mask needs covered [..., H, W], got {list(covered.shape)}")
  pad = int(k) // 2
  if min(covered.shape[-2:]) <= pad:
    raise RenderError(f"coverage_mask: image {list(covered.shape[-2:])} too small for a {k} x {k} window")
  x = covered.astype(jnp.int32)
  lead = [(0, 0)] * (x.ndim - 2)
  x = jnp.pad(x, lead + [(pad, pad), (pad, pad)], mode="reflect")
  window = (1,) * (x.ndim - 2) + (int(k), int(k))
  out = jax.lax.reduce_window(x, jnp.int32(1), jax.lax.min, window, (1,) * x.ndim, "VALID")
  return out.astype(bool)


def _area_weights(size: int, out: int) -> np.ndarray:
  """`[out, size]` area-resize weights: output cell i averages the input over `[i s, (i + 1) s)`, `s = size / out`
  (fractional overlaps weigh by their length); every row sums to 1."""
  step = size / out
  lo = np.arange(out)[:, None] * step
  j = np.arange(size)[None, :]
  overlap = np.clip(np.minimum(lo + step, j + 1) - np.maximum(lo, j), 0.0, None)
  return overlap / step


def _temporal_weights(frames: int, latent_frames: int) -> np.ndarray:
  """`[t, T]` weights of a causal video VAE with stride `s = (T - 1) / (t - 1)`: latent 0 is frame 0, latent k the
  mean of frames `s (k - 1) + 1 .. s k`."""
  if latent_frames == frames:
    return np.eye(frames)
  if latent_frames < 2 or (frames - 1) % (latent_frames - 1):
    raise RenderError(f"latent_mask: {frames} frames do not fit {latent_frames} latent frames of a causal VAE "
                      f"(needs T = 1 + s (t - 1), e.g. 49 frames -> 13 latents for s = 4, or T = t)")
  stride = (frames - 1) // (latent_frames - 1)
  weights = np.zeros((latent_frames, frames))
  weights[0, 0] = 1.0
  for k in range(1, latent_frames):
    weights[k, stride * (k - 1) + 1:stride * k + 1] = 1.0 / stride
  return weights


def latent_mask(mask, latent_shape, threshold: float = 0.9):
  """Resizes a per-pixel mask to the latent grid and thresholds it (RealCam-I2V: threshold 0.9). Jit-able.

  - Space: area resize (each latent cell is the mean of the pixels it covers; fractional overlaps for sizes that
    are not multiples). CamI2V's code resizes bilinearly (`align_corners=True`) instead; the area mean asks that
    90% of the cell's pixels be covered.
  - Time: a causal video VAE (WAN) encodes frame 0 alone into latent 0 and frames `4k - 3 .. 4k` into latent k;
    the mask of latent k is the mean over its frames (stride `s = (T - 1) / (t - 1)`, 4 for WAN). `T == t` (no
    temporal compression, DynamiCrafter) maps frame to frame.

  A cell is kept when its mean is `>= threshold` (within 1e-6, so a fraction such as 9/10 is not lost to float32
  rounding).

  Args:
    mask: `[..., T, H, W]` bool or float in [0, 1] (e.g. `coverage_mask`'s output).
    latent_shape: `(t, h, w)` of the latents.
    threshold: the fraction of covered pixels a latent cell needs.

  Returns:
    `[..., t, h, w]` bool.

  Raises:
    RenderError: `mask` with fewer than 3 axes, `latent_shape` not three positive integers, or frame counts that
      no causal VAE stride maps (`T != 1 + s (t - 1)`).
  """
  mask = jnp.asarray(mask)
  if mask.ndim < 3:
    raise RenderError(f"latent_mask needs mask [..., T, H, W], got {list(mask.shape)}")
  latent_shape = tuple(latent_shape)
  if len(latent_shape) != 3 or any(int(s) != s or s < 1 for s in latent_shape):
    raise RenderError(f"latent_mask needs latent_shape (t, h, w) of positive integers, got {latent_shape}")
  t, h, w = (int(s) for s in latent_shape)
  frames, height, width = mask.shape[-3:]
  wt = jnp.asarray(_temporal_weights(frames, t), jnp.float32)
  wh = jnp.asarray(_area_weights(height, h), jnp.float32)
  ww = jnp.asarray(_area_weights(width, w), jnp.float32)
  fraction = jnp.einsum("...ThW,tT->...thW", mask.astype(jnp.float32), wt)
  fraction = jnp.einsum("...tHW,hH,wW->...thw", fraction, wh, ww)
  return fraction >= threshold - 1e-6


# ------------------------------------------------------------------------------------------------ preview
@dataclasses.dataclass(frozen=True)
class Preview:
  """A rendered preview of a trajectory and its noise-shaping masks.

  Attributes:
    video: `[T, H, W, C]` float32 rendered frames (the reference image's value range; `background` where uncovered).
    depth: `[T, H, W]` float32 camera-space z in metres (0 where uncovered).
    covered: `[T, H, W]` bool, pixels some point landed on.
    mask: `[T, H, W]` bool, `coverage_mask(covered, k)`: pixels whose k x k neighbourhood is covered.
    latent_mask: `[t, h, w]` bool, `latent_mask(mask, latent_shape, threshold)`; None without `latent_shape`.
    num_points: points rendered (after outlier removal).
    num_outliers: points removed as statistical outliers.
  """

  video: jax.Array
  depth: jax.Array
  covered: jax.Array
  mask: jax.Array
  latent_mask: jax.Array | None
  num_points: int
  num_outliers: int


def preview(image, depth, K, c2w_ref, w2c, *, K_render=None, latent_shape=None, k: int = 5,
            threshold: float = 0.9, radius: int = 1, depth_tolerance=0.05, outlier_neighbours: int | None = 11,
            outlier_std_ratio: float = 3.0, background=0.0, batch_frames: int | None = None) -> Preview:
  """RealCam-I2V's preview (sec. 3.3, Fig. 6-7): the reference image lifted with its metric depth, cleaned of
  statistical outliers, rendered along the trajectory, with the noise-shaping masks.

  Args:
    image: `[H, W, C]` reference image.
    depth: `[H, W]` its metric depth (camera-space z, metres; `<= 0` = none).
    K: `[3, 3]` pixel intrinsics of the reference image.
    c2w_ref: `[4, 4]` camera-to-world pose of the reference image in the trajectory's world frame (the identity
      for poses relative to the reference, CameraCtrl's `rel_c2w_i = w2c_ref @ c2w_i`).
    w2c: `[T, 4, 4]` world-to-camera poses of the trajectory, translations in metres (metric-scale cameras).
    K_render: `[3, 3]` or `[T, 3, 3]` intrinsics of the rendered frames (same `H x W`); default `K`.
    latent_shape: `(t, h, w)` of the video latents for `latent_mask`; None skips it.
    k: window of `coverage_mask` (RealCam-I2V: 5).
    threshold: latent-cell threshold of `latent_mask` (RealCam-I2V: 0.9).
    radius: splat radius of `render_points` in pixels (1: a 3x3 square, close to Open3D's 2-pixel points, which
      keeps the cloud closed when the camera moves closer; 0 leaves cracks then).
    depth_tolerance: relative depth band of `render_points`. 5%: with 3x3 splats, a neighbour's splat on a slanted
      surface (a floor) is up to a few % nearer than the pixel's own point; at 1% frame 0 reproduced only 43% (64 x 64)
      / 85% (320 x 240) of a photo's pixels within one level, at 5% 85% / 98% (radius 0: 99.5% / 98.6%, but cracks).
    outlier_neighbours: `k` of `remove_outliers`; None keeps every point.
    outlier_std_ratio: `std_ratio` of `remove_outliers`.
    background: colour of uncovered pixels.
    batch_frames: as in `render_points`.

  Returns:
    A `Preview`.

  Raises:
    RenderError: as `unproject`, `remove_outliers`, `render_points`, `coverage_mask` and `latent_mask`, or a
      reference image without a single valid depth.
  """
  points, colors = unproject(image, depth, K, c2w_ref)
  if points.shape[0] == 0:
    raise RenderError("preview: the depth map has no valid pixel (every depth is <= 0 or non-finite)")
  outliers = 0
  if outlier_neighbours is not None:
    keep = remove_outliers(points, outlier_neighbours, outlier_std_ratio)
    outliers = int((~keep).sum())
    points, colors = points[keep], colors[keep]
  height, width = np.shape(depth)
  video, rendered_depth, covered = render_points(
      points, colors, K if K_render is None else K_render, w2c, height, width, radius=radius,
      depth_tolerance=depth_tolerance, background=background, batch_frames=batch_frames)
  mask = coverage_mask(covered, k)
  small = None if latent_shape is None else latent_mask(mask, latent_shape, threshold)
  return Preview(video=video, depth=rendered_depth, covered=covered, mask=mask, latent_mask=small,
                 num_points=int(points.shape[0]), num_outliers=outliers)
