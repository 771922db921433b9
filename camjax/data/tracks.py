"""Real-video 3D point tracks for Track2View (issue #18; REFERENCE.md section 5; papers/003 sec. 3.3).

`camjax.data.pairs` builds paired tracks on procedural scenes from the renderer's ground truth. This module is the
same construction on posed real videos, with a real tracker in place of the ground truth:

  1. 2D tracks (`track_2d`): OpenCV's pyramidal Lucas-Kanade (`cv2.calcOpticalFlowPyrLK`, Bouguet 2000) followed frame
     to frame from each query's frame, forwards to the last frame and backwards to the first, with a forward-backward
     check at every step (the point tracked back to the previous frame must land within `fb_threshold` pixels of
     where it started; Kalal et al. 2010, "Forward-backward error", applied per step). A track that fails once (FB
     error, LK status, leaving the image) stays invalid for the rest of that direction: there is no re-detection, so a
     track never jumps to another point after an occlusion. Frames too far apart for the pyramid can seed LK with a
     frame-to-frame homography (`TrackConfig.prior`). Queries come from `cv2.goodFeaturesToTrack` (Shi-Tomasi
     corners) by default (`pick_queries`), or a regular grid, or the caller's `[N, 3]` `(t, x, y)`.
  2. Lifting (`lift_tracks`): per-frame metric depth sampled bilinearly at the track (`sample_depth`; invalid where a
     tap of non-zero weight is missing, zero or non-finite, or the taps straddle a depth edge), unprojected with the frame's camera
     to world points. Depth comes from an array or a `camjax.data.curate.scale.DepthSource` (RGB-D files:
     `DepthFolder`; in memory: `ArrayDepth`; a learned metric depth model implements the same protocol). Static
     scenes can instead be triangulated from all of a track's valid observations with the given cameras
     (`triangulate_tracks`, linear DLT in normalised image coordinates, Hartley & Zisserman sec. 12.2), no depth.
  3. Pairs (`paired_tracks`): two synchronised views A (source) and B (target), the paper's reverse-and-append
     construction: the sequence `A[T-1], ..., A[0], B[0], ..., B[T-1]` (`2T` frames, the paper's; the shared first
     frame twice, so a real pair whose first frames differ slightly still works; `pairs.concatenated_sequence` keeps
     it once, `2T - 1`: either way index `T - 1` is A's frame 0), queries half on its first frame
     (= A frame T-1) and half on its middle frame `T - 1` (= A frame 0), tracked through the whole sequence, the A half
     re-reversed. Output: `camjax.data.pairs.PairedTracks`, the same fields, shapes and conventions as the procedural
     pairs (`query_frame` is the index in the concatenated sequence, 0 or `T - 1`).

Conventions (those of `camjax.data.pairs` and `camjax.geometry.cameras`):
  * Track arrays are TRACK-major, `[N, T, ...]` (the `PairedTracks` / conditioner layout).
  * `xy` are continuous pixel coordinates with pixel (i, j) covering `[j, j + 1) x [i, i + 1)`, centre at
    `(j + 0.5, i + 0.5)`. OpenCV's LK uses pixel centres at integers: converted at the border (`- 0.5` in, `+ 0.5` out).
  * `depth` is camera-space z in metres (the depth source's units); `points_world` in the cameras' world frame.
  * Invalid entries hold finite values (0 where nothing is known), never NaN, so masked arithmetic stays finite.

Validity in `paired_tracks` (as `camjax.data.pairs`):
  * `src_valid`: tracked by LK in A at that frame (FB check passed) AND a valid depth there (or, triangulating, a
    well-conditioned triangulation). A lost track is treated as occluded: the conditioner samples source features
    at `src_xy` only where valid.
  * `tgt_valid`: the track's 3D point at that frame is known (lifted from A where A sees it, else from B's half of the
    tracked sequence with B's depth), and its reprojection with B's camera has positive depth and lands inside B's
    image. No occlusion knowledge, exactly as at inference (`pairs.target_tracks_from_source`). `tgt_xy` / `tgt_depth`
    are that reprojection, so source and target are one 3D point by construction.

Curation and training records (`window_tracks`, `write_window_tracks`, `read_window_tracks`): one `.npz` per clip, the
tracks of each `T`-frame window stacked along a leading window axis, keys `WINDOW_KEYS` (single view) or `PAIRED_WINDOW_KEYS` (a
synchronised pair), named and shaped as `pairs.paired_example`'s track keys. docs/tracks.md has the measured accuracy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from camjax import geometry as g
from camjax.geometry import se3
from camjax.data.curate.scale import DepthSource
from camjax.data.pairs import PairedTracks, project, target_tracks_from_source
from camjax.errors import CamjaxError, where
from camjax.io import atomic_write


class TrackingError(CamjaxError, ValueError):
  """Inputs the tracking stage cannot use: wrong shapes or dtypes, frame counts that disagree, non-finite or invalid
  cameras, a depth source without depth for the video, a bad config value, an unreadable tracks file.

  Attributes:
    source: the video id / file at fault, when known.
    frame: the 0-based frame at fault, when known.
  """

  def __init__(self, message: str, *, source=None, frame: int | None = None):
    self.source = None if source is None else str(source)
    self.frame = frame
    loc = where(self.source, None, frame)
    super().__init__(f"{loc}: {message}" if loc else message)


class NoFeaturesError(TrackingError):
  """No trackable point on a query frame (a textureless or fully masked frame): curation drops such a clip."""


# ------------------------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class TrackConfig:
  """Tracker, query picker and lifting settings (pixels unless named otherwise).

  Attributes:
    window: LK window side (`winSize`), pixels at every pyramid level.
    levels: LK pyramid levels above the image (`maxLevel`); motion up to about `window / 2 * 2**levels` pixels per
      frame is reachable.
    iterations, epsilon: LK stopping criteria per level (iterations, update size in pixels).
    min_eigen: LK `minEigThreshold`: points whose window has a smaller normalised gradient eigenvalue fail.
    fb_threshold: forward-backward check, pixels (`inf` disables it).
    quality_level, min_distance, block_size: `cv2.goodFeaturesToTrack` (Shi-Tomasi) settings; `min_distance` pixels.
    border: queries are not placed within this many pixels of the image edge.
    depth_edge: relative depth spread `max / min - 1` of the 4 bilinear taps above which a depth sample is invalid (a
      sample across a depth edge would float between the surfaces).
    min_parallax_deg: triangulation: a track whose viewing rays span a smaller angle is invalid (depth ill-posed).
    max_reprojection_px: triangulation: a track whose mean reprojection error over its valid observations is larger is
      invalid.
    prior: LK's starting guess: "none" (the previous position: video, motion within the pyramid's reach) or
      "homography" (the position moved by the frame-to-frame homography of ORB matches, RANSAC: frames far apart,
      e.g. RGB-D keyframes 300 px apart, where plain LK loses every track). Image evidence only, no camera or depth.
  """

  window: int = 21
  levels: int = 4
  iterations: int = 30
  epsilon: float = 0.01
  min_eigen: float = 1e-4
  fb_threshold: float = 1.0
  quality_level: float = 0.01
  min_distance: float = 4.0
  block_size: int = 7
  border: int = 4
  depth_edge: float = 0.05
  min_parallax_deg: float = 1.0
  max_reprojection_px: float = 2.0
  prior: str = "none"

  def validate(self) -> TrackConfig:
    """Returns self; raises `TrackingError` naming the first out-of-range field."""
    checks = (("window", self.window >= 3 and self.window % 2 == 1, "an odd integer >= 3"),
              ("levels", self.levels >= 0, ">= 0"), ("iterations", self.iterations >= 1, ">= 1"),
              ("epsilon", self.epsilon > 0, "> 0"), ("min_eigen", self.min_eigen >= 0, ">= 0"),
              ("fb_threshold", self.fb_threshold > 0, "> 0"),
              ("quality_level", 0 < self.quality_level < 1, "in (0, 1)"),
              ("min_distance", self.min_distance >= 0, ">= 0"), ("block_size", self.block_size >= 3, ">= 3"),
              ("border", self.border >= 0, ">= 0"), ("depth_edge", self.depth_edge > 0, "> 0"),
              ("min_parallax_deg", self.min_parallax_deg >= 0, ">= 0"),
              ("max_reprojection_px", self.max_reprojection_px > 0, "> 0"),
              ("prior", self.prior in ("none", "homography"), "'none' or 'homography'"))
    for name, ok, expected in checks:
      if not ok:
        raise TrackingError(f"TrackConfig.{name} must be {expected}, got {getattr(self, name)!r}")
    return self


DEFAULT_CONFIG = TrackConfig()


# ------------------------------------------------------------------------------------------------ checks
def _check_frames(frames, what: str = "frames", source=None) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise TrackingError(f"{what} must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}", source=source)
  if frames.shape[0] < 1 or min(frames.shape[1:3]) < 2:
    raise TrackingError(f"{what} must hold >= 1 frame of >= 2x2 pixels, got {frames.shape}", source=source)
  return frames


def _check_camera_arrays(K, w2c, num_frames: int, source=None) -> tuple[np.ndarray, np.ndarray]:
  """`K [T, 3, 3]`, `w2c [T, 4, 4]` as float64, finite and valid (`geometry.validate_poses`)."""
  K, w2c = np.asarray(K, np.float64), np.asarray(w2c, np.float64)
  if K.shape != (num_frames, 3, 3) or w2c.shape != (num_frames, 4, 4):
    raise TrackingError(f"cameras must be K [T, 3, 3] and w2c [T, 4, 4] with T = {num_frames} frames, got K "
                        f"{K.shape} and w2c {w2c.shape}", source=source)
  try:
    g.validate_poses(w2c, K)
  except g.CameraError as e:
    raise TrackingError(f"invalid camera: {e}", source=source, frame=e.frame) from None
  return K, w2c


def _check_cameras(cameras: g.Cameras, frames: np.ndarray, source=None) -> tuple[np.ndarray, np.ndarray]:
  if not isinstance(cameras, g.Cameras):
    raise TrackingError(f"cameras must be a camjax.geometry.Cameras, got {type(cameras).__name__}", source=source)
  if cameras.image_size != tuple(frames.shape[1:3]):
    raise TrackingError(f"cameras describe {cameras.height}x{cameras.width} images, frames are "
                        f"{frames.shape[1]}x{frames.shape[2]}", source=source)
  return _check_camera_arrays(cameras.K, cameras.w2c, frames.shape[0], source)


def _check_tracks(xy, valid, what: str = "tracks") -> tuple[np.ndarray, np.ndarray]:
  xy, valid = np.asarray(xy, np.float64), np.asarray(valid)
  if xy.ndim != 3 or xy.shape[-1] != 2:
    raise TrackingError(f"{what}: xy must be [N, T, 2], got {xy.shape}")
  if valid.shape != xy.shape[:2] or valid.dtype != bool:
    raise TrackingError(f"{what}: valid must be bool [N, T] = {xy.shape[:2]}, got {valid.dtype} {valid.shape}")
  if not np.isfinite(xy[valid]).all():
    raise TrackingError(f"{what}: non-finite xy at a valid entry")
  return xy, valid


def _check_queries(queries, num_frames: int, height: int, width: int, max_frame: int | None = None) -> np.ndarray:
  q = np.asarray(queries, np.float64)
  if q.ndim != 2 or q.shape[1] != 3 or q.shape[0] < 1:
    raise TrackingError(f"queries must be [N, 3] (t, x, y) with N >= 1, got {q.shape}")
  if not np.isfinite(q).all():
    raise TrackingError("queries hold a non-finite value")
  t = q[:, 0]
  last = num_frames - 1 if max_frame is None else max_frame
  if (t != np.round(t)).any() or t.min() < 0 or t.max() > last:
    raise TrackingError(f"query frames must be integers in [0, {last}], got {np.unique(t)[:8].tolist()}")
  x, y = q[:, 1], q[:, 2]
  outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
  if outside.any():
    i = int(np.flatnonzero(outside)[0])
    raise TrackingError(f"query {i} at (x, y) = ({x[i]:g}, {y[i]:g}) lies outside the {height}x{width} image")
  return q


# ------------------------------------------------------------------------------------------------ queries
def _gray(frame: np.ndarray) -> np.ndarray:
  import cv2

  return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def pick_queries(frames, num_queries: int, query_frames: Sequence[int], *, masks=None, method: str = "features",
                 config: TrackConfig = DEFAULT_CONFIG) -> np.ndarray:
  """Query points on the given frames: `num_queries // k` on each of the `k` frames, the remainder on the last one
  (for the paper's two query frames: `N // 2` on the first, `N - N // 2` on the second).

  Args:
    frames: uint8 `[T, H, W, 3]`.
    num_queries: N >= 1 wanted in total.
    query_frames: frame indices to place queries on (in order).
    masks: optional bool `[T, H, W]`: queries only where True (e.g. where a depth map is valid).
    method: "features" (`cv2.goodFeaturesToTrack`, Shi-Tomasi corners, strongest first, at least `min_distance`
      apart) or "grid" (pixel centres of a regular grid with about the wanted count, masked pixels dropped).
    config: picker settings (`quality_level`, `min_distance`, `block_size`, `border`).

  Returns:
    float64 `[N', 3]` `(t, x, y)`, pixels (centres at +0.5), `N' <= num_queries`: a frame with fewer corners than asked
    gives fewer.

  Raises:
    TrackingError: bad shapes or arguments. NoFeaturesError: a query frame where nothing can be placed.
  """
  import cv2

  frames = _check_frames(frames)
  T, H, W = frames.shape[:3]
  query_frames = [int(f) for f in query_frames]
  if int(num_queries) != num_queries or num_queries < len(query_frames) or not query_frames:
    raise TrackingError(f"pick_queries: num_queries must be an integer >= the {len(query_frames)} query frames, "
                        f"got {num_queries}")
  if any(not 0 <= f < T for f in query_frames):
    raise TrackingError(f"pick_queries: query frames {query_frames} out of range for {T} frames")
  if method not in ("features", "grid"):
    raise TrackingError(f"pick_queries: method must be 'features' or 'grid', got {method!r}")
  if masks is not None:
    masks = np.asarray(masks, bool)
    if masks.shape != (T, H, W):
      raise TrackingError(f"pick_queries: masks must be bool [T, H, W] = {(T, H, W)}, got {masks.shape}")
  counts = [int(num_queries) // len(query_frames)] * len(query_frames)
  counts[-1] += int(num_queries) - sum(counts)
  b = config.border
  out = []
  for f, count in zip(query_frames, counts):
    allowed = np.zeros((H, W), bool)
    allowed[b:H - b, b:W - b] = True
    if masks is not None:
      allowed &= masks[f]
    if method == "features":
      pts = cv2.goodFeaturesToTrack(_gray(frames[f]), maxCorners=count, qualityLevel=config.quality_level,
                                    minDistance=config.min_distance, mask=allowed.astype(np.uint8) * 255,
                                    blockSize=config.block_size)
      xy = np.zeros((0, 2)) if pts is None else pts.reshape(-1, 2).astype(np.float64) + 0.5
    else:
      step = max(1.0, np.sqrt(allowed.sum() / count))
      ys, xs = np.meshgrid(np.arange(step / 2, H, step), np.arange(step / 2, W, step), indexing="ij")
      xi, yi = xs.ravel().astype(np.int64), ys.ravel().astype(np.int64)
      keep = allowed[yi, xi]
      xy = np.stack([xi[keep], yi[keep]], -1)[:count].astype(np.float64) + 0.5
    if len(xy) == 0:
      raise NoFeaturesError(f"no {'corner' if method == 'features' else 'grid point'} to place a query on "
                            f"({'masked, ' if masks is not None else ''}border {b} px)", frame=f)
    out.append(np.concatenate([np.full((len(xy), 1), float(f)), xy], -1))
  return np.concatenate(out)


# ------------------------------------------------------------------------------------------------ 2D tracks
def _homography(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray | None:
  """The image-to-image homography of two grey frames from ORB matches (ratio test 0.8, RANSAC 8 px), or None when
  fewer than 12 matches agree: the motion prior of `TrackConfig.prior = "homography"`."""
  import cv2

  orb = cv2.ORB_create(2000)
  k1, d1 = orb.detectAndCompute(prev, None)
  k2, d2 = orb.detectAndCompute(nxt, None)
  if d1 is None or d2 is None or len(k1) < 12 or len(k2) < 2:
    return None
  good = [m[0] for m in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(d1, d2, k=2)
          if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
  if len(good) < 12:
    return None
  p1 = np.float32([k1[m.queryIdx].pt for m in good])
  p2 = np.float32([k2[m.trainIdx].pt for m in good])
  H, inliers = cv2.findHomography(p1, p2, cv2.RANSAC, 8.0)
  if H is None or inliers.sum() < 12 or not np.isfinite(H).all():
    return None
  return H


def _apply_homography(H: np.ndarray | None, pts: np.ndarray) -> np.ndarray:
  if H is None:
    return pts
  ph = np.concatenate([pts, np.ones((len(pts), 1))], -1) @ H.T
  out = ph[:, :2] / ph[:, 2:]
  return np.where(np.isfinite(out).all(-1, keepdims=True) & (np.abs(ph[:, 2:]) > 1e-9), out, pts)


def _lk_step(prev, nxt, pts: np.ndarray, config: TrackConfig, H: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
  """One LK step of OpenCV-convention points `[M, 2]` from image `prev` to `nxt`, with the forward-backward check;
  `H` (prev -> nxt homography) seeds both directions. Returns `(new points [M, 2], ok [M])`."""
  import cv2

  params = dict(winSize=(config.window, config.window), maxLevel=config.levels, minEigThreshold=config.min_eigen,
                criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, config.iterations, config.epsilon))
  flags = 0 if H is None else cv2.OPTFLOW_USE_INITIAL_FLOW
  p0 = np.ascontiguousarray(pts, np.float32).reshape(-1, 1, 2)
  guess = np.ascontiguousarray(_apply_homography(H, pts), np.float32).reshape(-1, 1, 2)
  p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, p0, guess if H is not None else None, flags=flags, **params)
  back = None if H is None else np.ascontiguousarray(
      _apply_homography(np.linalg.inv(H), p1.reshape(-1, 2).astype(np.float64)), np.float32).reshape(-1, 1, 2)
  p0b, st2, _ = cv2.calcOpticalFlowPyrLK(nxt, prev, p1, back, flags=flags, **params)
  p1, p0b = p1.reshape(-1, 2).astype(np.float64), p0b.reshape(-1, 2).astype(np.float64)
  fb = np.linalg.norm(p0b - pts, axis=-1)
  H_, W_ = prev.shape
  inside = (p1[:, 0] >= -0.5) & (p1[:, 0] < W_ - 0.5) & (p1[:, 1] >= -0.5) & (p1[:, 1] < H_ - 0.5)
  ok = (st1.ravel() == 1) & (st2.ravel() == 1) & np.isfinite(p1).all(-1) & (fb <= config.fb_threshold) & inside
  return p1, ok


def track_2d(frames, queries, *, config: TrackConfig = DEFAULT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
  """2D point tracks by pyramidal Lucas-Kanade with a forward-backward check (module docstring, step 1).

  From each query's frame the point is followed frame to frame forwards to the last frame and backwards to the first
  (`cv2.calcOpticalFlowPyrLK`, Bouguet 2000). Every step is checked by tracking the new position back to the previous
  frame: more than `config.fb_threshold` pixels from the start (or an LK failure, or leaving the image) and the track
  is invalid from that frame on in that direction, and stays invalid (no re-detection).

  Args:
    frames: uint8 `[T, H, W, 3]` RGB.
    queries: `[N, 3]` `(t, x, y)`: query frame (integer) and pixel position (centres at +0.5), e.g. `pick_queries`.
    config: tracker settings.

  Returns:
    `(xy float32 [N, T, 2] pixels, valid bool [N, T])`; `xy` is 0 where invalid; at the query frame `xy` is the
    query and valid.

  Raises:
    TrackingError: frames not uint8 `[T, H, W, 3]`; queries not `[N, 3]`, outside the image or on a frame that does
      not exist; a config value out of range.
  """
  config.validate()
  frames = _check_frames(frames)
  T, H, W = frames.shape[:3]
  q = _check_queries(queries, T, H, W)
  gray = [_gray(f) for f in frames]
  N = len(q)
  xy = np.zeros((N, T, 2))
  valid = np.zeros((N, T), bool)
  priors = {}  # (from, to) -> homography, shared by the query frames
  for f in np.unique(q[:, 0]).astype(int):
    rows = np.flatnonzero(q[:, 0] == f)
    xy[rows, f], valid[rows, f] = q[rows, 1:], True
    for step in (1, -1):
      alive, pts = rows, q[rows, 1:] - 0.5  # OpenCV: pixel centres at integers
      t = f
      while alive.size and 0 <= t + step < T:
        homography = None
        if config.prior == "homography":
          if (t, t + step) not in priors:
            priors[(t, t + step)] = _homography(gray[t], gray[t + step])
          homography = priors[(t, t + step)]
        pts, ok = _lk_step(gray[t], gray[t + step], pts, config, homography)
        t += step
        alive, pts = alive[ok], pts[ok]
        xy[alive, t], valid[alive, t] = pts + 0.5, True
  return xy.astype(np.float32), valid


# ------------------------------------------------------------------------------------------------ lifting
@dataclasses.dataclass(frozen=True)
class LiftedTracks:
  """3D tracks of `N` points over `T` frames.

  Attributes:
    points_world: float32 `[N, T, 3]` metres (the depth's units), world frame of the cameras; 0 where invalid.
    depth: float32 `[N, T]` camera-space z in metres; 0 where invalid.
    valid: bool `[N, T]`: the 2D track was valid and its depth known (sampled, or a sound triangulation).
  """

  points_world: np.ndarray
  depth: np.ndarray
  valid: np.ndarray


def sample_depth(depth, xy, valid=None, *, edge: float = DEFAULT_CONFIG.depth_edge) -> tuple[np.ndarray, np.ndarray]:
  """Bilinear samples of per-frame depth maps at track positions.

  Args:
    depth: `[T, H, W]` metres; 0, negative or non-finite = missing.
    xy: `[N, T, 2]` pixels (centres at +0.5): sample `n, t` reads map `t`. Positions are clamped to the pixel
      centres at the image edge.
    valid: optional bool `[N, T]`; False entries are not sampled.
    edge: relative spread `max / min - 1` of the 4 taps above which the sample is invalid (a depth edge).

  Returns:
    `(depth float64 [N, T], ok bool [N, T])`: ok where `valid` and every tap of non-zero weight is present and these
    taps do not straddle an edge; the depth is 0 where not ok.

  Raises:
    TrackingError: shapes that do not fit (`T` maps for `T` frames of tracks).
  """
  depth = np.asarray(depth, np.float64)
  xy = np.asarray(xy, np.float64)
  if depth.ndim != 3 or min(depth.shape[1:]) < 2:
    raise TrackingError(f"depth must be [T, H, W] with H, W >= 2, got {depth.shape}")
  if xy.ndim != 3 or xy.shape[1:] != (depth.shape[0], 2):
    raise TrackingError(f"xy must be [N, T, 2] with T = {depth.shape[0]} depth maps, got {xy.shape}")
  valid = np.ones(xy.shape[:2], bool) if valid is None else np.asarray(valid, bool)
  T, H, W = depth.shape
  u = np.clip(np.nan_to_num(xy[..., 0] - 0.5), 0, W - 1)
  v = np.clip(np.nan_to_num(xy[..., 1] - 0.5), 0, H - 1)
  x0 = np.minimum(np.floor(u).astype(np.int64), W - 2)
  y0 = np.minimum(np.floor(v).astype(np.int64), H - 2)
  fu, fv = u - x0, v - y0
  t = np.broadcast_to(np.arange(T), x0.shape)
  taps = np.stack([depth[t, y0, x0], depth[t, y0, x0 + 1], depth[t, y0 + 1, x0], depth[t, y0 + 1, x0 + 1]], -1)
  weights = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], -1)
  used = weights > 0
  good = np.isfinite(taps) & (taps > 0)
  present = (good | ~used).all(-1)
  counted = good & used  # at least one tap has weight > 0, so `present` implies a counted tap
  spread_ok = np.where(counted, taps, -np.inf).max(-1) <= (1 + edge) * np.where(counted, taps, np.inf).min(-1)
  ok = valid & present & spread_ok
  return np.where(ok, (weights * np.where(counted, taps, 0.0)).sum(-1), 0.0), ok


def liftable_mask(depth, *, edge: float = DEFAULT_CONFIG.depth_edge) -> np.ndarray:
  """bool `[T, H, W]`: pixels whose depth and 3x3 neighbours' depths are present and within `max / min <= 1 + edge`
  (where `sample_depth` can lift a point). Queries are placed only there when depth is known: corners on a depth edge
  (T-junctions of two surfaces) are not points of either surface."""
  import cv2

  depth = np.asarray(depth, np.float32)
  good = np.isfinite(depth) & (depth > 0)
  lo = np.where(good, depth, 0.0).astype(np.float32)  # a missing neighbour: a minimum of 0 fails the test below
  kernel = np.ones((3, 3), np.uint8)
  out = np.empty(depth.shape, bool)
  for t in range(depth.shape[0]):
    mx = cv2.dilate(lo[t], kernel, borderType=cv2.BORDER_REPLICATE).astype(np.float64)
    mn = cv2.erode(lo[t], kernel, borderType=cv2.BORDER_REPLICATE).astype(np.float64)
    out[t] = good[t] & (mn > 0) & (mx <= (1 + edge) * mn)
  return out


def _unproject(xy: np.ndarray, depth: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> np.ndarray:
  """World points `[N, T, 3]` of pixels `[N, T, 2]` at camera depths `[N, T]` in cameras `K [T, 3, 3]`, `w2c`."""
  pix = np.concatenate([xy, np.ones(xy.shape[:2] + (1,))], -1)
  rays = np.einsum("tij,ntj->nti", np.linalg.inv(K), pix)
  c2w = se3.invert(w2c)
  return np.einsum("tij,ntj->nti", c2w[:, :3, :3], rays * depth[..., None]) + c2w[None, :, :3, 3]


def _parallax_deg(X: np.ndarray, valid: np.ndarray, centres: np.ndarray, chunk_elements: int = 1 << 22
                  ) -> np.ndarray:
  """`[N]` the largest angle (degrees) between two viewing rays `centre_t -> X_n` over the valid frames of each track
  (0 with fewer than two), computed in chunks of tracks so `[chunk, T, T]` stays under `chunk_elements`."""
  N, T = valid.shape
  rays = X[:, None] - centres[None]
  rays = rays / np.maximum(np.linalg.norm(rays, axis=-1, keepdims=True), 1e-12)
  step = max(1, chunk_elements // max(T * T, 1))
  min_cos = np.ones(N)
  for start in range(0, N, step):
    r, v = rays[start:start + step], valid[start:start + step]
    cos = np.einsum("nti,nsi->nts", r, r)
    min_cos[start:start + step] = np.where(v[:, :, None] & v[:, None, :], cos, 1.0).min(axis=(1, 2))
  return np.degrees(np.arccos(np.clip(min_cos, -1.0, 1.0)))


def triangulate_tracks(xy, valid, K, w2c, *, config: TrackConfig = DEFAULT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
  """One static 3D point per track from all its valid observations (linear DLT, Hartley & Zisserman sec. 12.2).

  For observation `t` with normalised coordinates `(a, b) = K_t^-1 (x, y, 1)` and `P_t = w2c_t[:3]`, the rows
  `a P_t[2] - P_t[0]` and `b P_t[2] - P_t[1]` (scaled to unit norm) constrain the homogeneous point `X`; `X` is the
  right singular vector of the smallest singular value of the stacked rows.

  Args:
    xy: `[N, T, 2]` pixels (centres at +0.5); valid: bool `[N, T]`.
    K: `[T, 3, 3]` pixel intrinsics; w2c: `[T, 4, 4]` world-to-camera (OpenCV).
    config: `min_parallax_deg` and `max_reprojection_px` decide which triangulations are sound.

  Returns:
    `(points float64 [N, 3] world (0 where not ok), ok bool [N])`: ok for tracks with >= 2 valid observations, a
    finite point in front of every camera that observed it, viewing rays spanning >= `min_parallax_deg` and a mean
    reprojection error <= `max_reprojection_px`.

  Raises:
    TrackingError: shapes that do not fit; non-finite or invalid cameras.
  """
  xy, valid = _check_tracks(xy, valid, "triangulate_tracks")
  K, w2c = _check_camera_arrays(K, w2c, xy.shape[1])
  N, T = valid.shape
  pix = np.concatenate([xy, np.ones((N, T, 1))], -1)
  n = np.einsum("tij,ntj->nti", np.linalg.inv(K), pix)
  P = w2c[:, :3, :]  # [T, 3, 4]
  rows = np.concatenate([n[..., 0:1, None] * P[None, :, 2:3] - P[None, :, 0:1],
                         n[..., 1:2, None] * P[None, :, 2:3] - P[None, :, 1:2]], axis=2)  # [N, T, 2, 4]
  rows = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
  rows = np.where(valid[..., None, None], rows, 0.0).reshape(N, 2 * T, 4)
  _, _, vt = np.linalg.svd(rows, full_matrices=False)
  Xh = vt[:, -1]
  with np.errstate(divide="ignore", invalid="ignore"):
    X = Xh[:, :3] / Xh[:, 3:]
  finite = np.isfinite(X).all(-1) & (np.abs(Xh[:, 3]) > 1e-12)
  X = np.where(finite[:, None], X, 0.0)
  proj, z = project(np.repeat(X[:, None], T, 1), g.Cameras(K=K, w2c=w2c, height=1, width=1))
  err = np.linalg.norm(proj - xy, axis=-1)
  count = valid.sum(1)
  front = np.where(valid, z > 0, True).all(1)
  mean_err = np.where(valid, err, 0.0).sum(1) / np.maximum(count, 1)
  parallax = _parallax_deg(X, valid, se3.invert(w2c)[:, :3, 3])
  ok = (count >= 2) & finite & front & (parallax >= config.min_parallax_deg) & (mean_err <= config.max_reprojection_px)
  return np.where(ok[:, None], X, 0.0), ok


def resolve_depth(depth, frames: np.ndarray, *, video_id: str = "", frame_indices=None) -> np.ndarray | None:
  """Per-frame depth maps `float32 [T, H, W]` metres from an array or a `DepthSource`; None stays None (triangulate).

  Args:
    depth: `[T, H, W]` array (resized to the frames' size with `scale.resize_depth` when it differs), a
      `camjax.data.curate.scale.DepthSource` (called as `depth(video_id, frame_indices, frames)`), or None.
    frames: uint8 `[T, H, W, 3]` the depth belongs to.
    video_id, frame_indices: what a `DepthSource` is asked for (default frame indices `0 .. T-1`).

  Raises:
    TrackingError: a depth array of another frame count or rank; a depth source without depth for `video_id`.
  """
  from camjax.data.curate.errors import CurationError
  from camjax.data.curate.scale import resize_depth

  if depth is None:
    return None
  T, H, W = frames.shape[:3]
  if isinstance(depth, DepthSource) and not isinstance(depth, np.ndarray):
    indices = np.arange(T) if frame_indices is None else np.asarray(frame_indices)
    try:
      maps = depth(video_id, indices, frames)
    except CurationError as e:
      raise TrackingError(f"depth source failed: {e}", source=video_id) from None
    if maps is None:
      raise TrackingError(f"the depth source {type(depth).__name__} has no depth for this video", source=video_id)
  else:
    maps = depth
  maps = np.asarray(maps, np.float32)
  if maps.ndim != 3 or maps.shape[0] != T:
    raise TrackingError(f"depth must be [T, H, W] with T = {T} frames, got {maps.shape}", source=video_id or None)
  return resize_depth(maps, H, W)


def lift_tracks(xy, valid, depth, K, w2c, *, config: TrackConfig = DEFAULT_CONFIG, frames=None, video_id: str = "",
                frame_indices=None) -> LiftedTracks:
  """2D tracks -> 3D tracks with per-frame depth, or by triangulation for a static scene (module docstring, step 2).

  With depth: `X_t = c2w_t (d_t K_t^-1 (x_t, y_t, 1))`, `d_t` the depth map of frame `t` sampled bilinearly at the
  track (`sample_depth`: invalid where missing, zero, non-finite or across a depth edge). Every frame is lifted on
  its own, so moving points keep their motion.

  Without depth (`depth=None`, static scenes only): each track's point is triangulated once from all its valid
  observations with the given cameras (`triangulate_tracks`) and is the same at every frame.

  Args:
    xy: `[N, T, 2]` pixels (centres at +0.5); valid: bool `[N, T]` (e.g. `track_2d`'s).
    depth: float `[T, H, W]` metres at the image size `xy` and `K` refer to (`resolve_depth` resizes), a
      `camjax.data.curate.scale.DepthSource` (needs `frames`; resized to them), or None.
    K: `[T, 3, 3]` pixel intrinsics; w2c: `[T, 4, 4]` world-to-camera, OpenCV axes.
    config: `depth_edge`; triangulation thresholds.
    frames, video_id, frame_indices: for a `DepthSource` (`resolve_depth`).

  Returns:
    `LiftedTracks`: `valid` = the 2D track is valid AND its depth is known and positive.

  Raises:
    TrackingError: shapes or frame counts that do not fit, non-finite or invalid cameras, a `DepthSource` without
      `frames` or without depth for the video.
  """
  config.validate()
  xy, valid = _check_tracks(xy, valid, "lift_tracks")
  N, T = valid.shape
  K, w2c = _check_camera_arrays(K, w2c, T, source=video_id or None)
  if depth is not None and not isinstance(depth, np.ndarray) and isinstance(depth, DepthSource):
    if frames is None:
      raise TrackingError("lift_tracks: a DepthSource needs the frames (frames=...)", source=video_id or None)
    depth = resolve_depth(depth, _check_frames(frames), video_id=video_id, frame_indices=frame_indices)
  if depth is None:
    X, ok = triangulate_tracks(xy, valid, K, w2c, config=config)
    points = np.repeat(X[:, None], T, axis=1)
    _, z = project(points, g.Cameras(K=K, w2c=w2c, height=1, width=1))
    lifted = valid & ok[:, None] & (z > 0)
    d = np.where(lifted, z, 0.0)
  else:
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 3 or depth.shape[0] != T:
      raise TrackingError(f"lift_tracks: depth must be [T, H, W] with T = {T} track frames, got {depth.shape}",
                          source=video_id or None)
    d, lifted = sample_depth(depth, xy, valid, edge=config.depth_edge)
    points = _unproject(xy, d, K, w2c)
  points = np.where(lifted[..., None], points, 0.0)
  return LiftedTracks(points_world=points.astype(np.float32), depth=d.astype(np.float32), valid=lifted)


# ----------------------------------------------------------------------------------------------- one video
@dataclasses.dataclass(frozen=True)
class View:
  """One posed video: what `track_video`, `paired_tracks` and `window_tracks` take.

  Attributes:
    frames: uint8 `[T, H, W, 3]`.
    cameras: `camjax.geometry.Cameras [T]` of the frames (pixel K at `H x W`, OpenCV w2c, metres for metric depth).
    depth: float `[T, H, W]` metres, a `camjax.data.curate.scale.DepthSource`, or None (static scene: triangulate).
    video_id: the name a `DepthSource` knows the video by (also named in errors).
    frame_indices: `[T]` the frames' indices in that video (what a `DepthSource` loads); default `0 .. T-1`.
  """

  frames: np.ndarray
  cameras: g.Cameras
  depth: object = None
  video_id: str = ""
  frame_indices: np.ndarray | None = None

  @property
  def num_frames(self) -> int:
    return int(np.shape(self.frames)[0])

  def indices(self) -> np.ndarray:
    return np.arange(self.num_frames) if self.frame_indices is None else np.asarray(self.frame_indices)

  def take(self, indices) -> View:
    """The view restricted to `indices` (a window): frames, cameras, depth rows, and the video's frame indices."""
    idx = np.asarray(indices)
    depth = self.depth
    if depth is not None and not isinstance(depth, DepthSource):
      depth = np.asarray(depth)[idx]
    return View(frames=np.asarray(self.frames)[idx], cameras=self.cameras.take(idx), depth=depth,
                video_id=self.video_id, frame_indices=self.indices()[idx])

  def checked(self, what: str = "view") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """`(frames, K, w2c, depth maps or None)`, checked (`TrackingError` naming `what` and the video)."""
    source = f"{what} {self.video_id}".strip()
    frames = _check_frames(self.frames, f"{what} frames", source)
    K, w2c = _check_cameras(self.cameras, frames, source)
    depth = resolve_depth(self.depth, frames, video_id=self.video_id, frame_indices=self.indices())
    return frames, K, w2c, depth


@dataclasses.dataclass(frozen=True)
class VideoTracks:
  """3D point tracks of one posed video (`track_video`).

  Attributes:
    xy: float32 `[N, T, 2]` LK positions, pixels (centres at +0.5); 0 where not tracked.
    tracked: bool `[N, T]` LK valid (forward-backward check passed every step since the query).
    depth: float32 `[N, T]` camera-space z, metres; 0 where not `valid`.
    points_world: float32 `[N, T, 3]` metres, world frame of the cameras; 0 where not `valid`.
    valid: bool `[N, T]`: tracked AND lifted (depth known).
    query_frame: int32 `[N]` the video frame each query was placed on.
  """

  xy: np.ndarray
  tracked: np.ndarray
  depth: np.ndarray
  points_world: np.ndarray
  valid: np.ndarray
  query_frame: np.ndarray

  @property
  def num_tracks(self) -> int:
    return int(self.xy.shape[0])

  @property
  def num_frames(self) -> int:
    return int(self.xy.shape[1])

  def record(self) -> dict[str, np.ndarray]:
    """The source-view keys of a Track2View record (`WINDOW_KEYS` without the window fields): `src_xy`, `src_depth`,
    `src_valid`, `points_world`, and `query_frame` in `pairs.PairedTracks`' convention (the index in the
    reversed-source sequence, `T - 1 - video frame`: queries on the last and first video frames give 0 and `T - 1`)."""
    return {"src_xy": self.xy.astype(np.float32), "src_depth": self.depth.astype(np.float32),
            "src_valid": self.valid.copy(), "points_world": self.points_world.astype(np.float32),
            "query_frame": (self.num_frames - 1 - self.query_frame).astype(np.int32)}


def track_video(frames, cameras: g.Cameras, depth, *, queries=None, num_queries: int = 256,
                query_frames: Sequence[int] | None = None, query_method: str = "features",
                config: TrackConfig = DEFAULT_CONFIG, video_id: str = "", frame_indices=None) -> VideoTracks:
  """3D point tracks of a posed video: `pick_queries` -> `track_2d` -> `lift_tracks`.

  Args:
    frames: uint8 `[T, H, W, 3]`.
    cameras: `Cameras [T]` of the frames.
    depth: `[T, H, W]` metres, a `DepthSource`, or None (static scene: triangulate with the cameras).
    queries: `[N, 3]` `(t, x, y)`; default `pick_queries(frames, num_queries, query_frames)`, where the depth can lift
      them (`liftable_mask`) when depth is given.
    num_queries: N when picking.
    query_frames: default `(T - 1, 0)`: the source frames of the paper's two query frames (the first frame of the
      reversed-source sequence is the source's last frame, its middle frame the source's first), half on each, so a
      single video's tracks are distributed as the source half of `paired_tracks`'.
    query_method: "features" or "grid" (`pick_queries`).
    config: tracker and lifting settings.
    video_id, frame_indices: for a `DepthSource`.

  Returns:
    `VideoTracks`.

  Raises:
    TrackingError: bad shapes, frame counts that disagree, invalid cameras, no depth for the video.
    NoFeaturesError: a query frame with nothing to track.
  """
  view = View(frames=frames, cameras=cameras, depth=depth, video_id=video_id, frame_indices=frame_indices)
  frames, K, w2c, maps = view.checked("video")
  T = frames.shape[0]
  if queries is None:
    qf = (T - 1, 0) if query_frames is None else tuple(query_frames)
    if T == 1:
      qf = (0,)
    masks = None if maps is None else liftable_mask(maps, edge=config.depth_edge)
    queries = pick_queries(frames, num_queries, qf, masks=masks, method=query_method, config=config)
  xy, tracked = track_2d(frames, queries, config=config)
  lifted = lift_tracks(xy, tracked, maps, K, w2c, config=config)
  return VideoTracks(xy=xy, tracked=tracked, depth=lifted.depth, points_world=lifted.points_world,
                     valid=lifted.valid, query_frame=np.asarray(queries)[:, 0].astype(np.int32))


# ------------------------------------------------------------------------------------------------- pairs
def reversed_and_appended(frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
  """The paper's tracking sequence `A[T-1], ..., A[0], B[0], ..., B[T-1]`, `[2T, H, W, 3]` (sec. 3.3)."""
  return np.concatenate([frames_a[::-1], frames_b])


def paired_tracks(view_a: View, view_b: View, *, queries=None, num_queries: int = 256,
                  query_method: str = "features", config: TrackConfig = DEFAULT_CONFIG) -> PairedTracks:
  """Paired 3D tracks of two synchronised posed videos, the paper's reverse-and-append way (module docstring, step 3).

  Track2View sec. 3.3: the reversed source A and the target B form one `2T`-frame sequence; queries are placed on its
  first frame (A frame `T - 1`) and its middle frame (`T - 1`, A frame 0) and never beyond (at inference only the
  source exists); `track_2d` follows them through the whole sequence, across the shared first frame, so each track
  has a source half and a target half of the same point; the A half is re-reversed. Each half is lifted with its
  view's depth and cameras (`lift_tracks`); without depth (either view's `depth` None: a static scene) each track is
  triangulated once from all observations in both views. The track's 3D point at frame `t` is A's lift where A sees
  it, else B's. The target positions are that point reprojected with B's cameras (`pairs.target_tracks_from_source`),
  as at inference.

  Args:
    view_a: the source `View` (T frames); view_b: the target `View`, synchronised (same T, same image size).
    queries: `[N, 3]` `(t, x, y)` with `t` a frame of the concatenated sequence in `[0, T - 1]` (A frame `T - 1 - t`);
      default `pick_queries` of `num_queries` on frames 0 and `T - 1` (where A's depth can lift them, `liftable_mask`).
    num_queries: N when picking; query_method: "features" or "grid".
    config: tracker and lifting settings.

  Returns:
    `camjax.data.pairs.PairedTracks` (`[N, T, ...]` arrays, `query_frame` in the concatenated sequence): `src_*` from
    the A half (`src_valid` = tracked and lifted in A; `src_xy` / `src_depth` where not valid: the known 3D point's
    projection, else 0), `tgt_*` the reprojection into B (valid: 3D point known, depth > 0, inside B's image),
    `points_world` the per-frame 3D points (0 where unknown).

  Raises:
    TrackingError: views of other frame counts or image sizes, bad shapes, invalid cameras, queries beyond the middle
      frame, no depth for a video.
    NoFeaturesError: a query frame with nothing to track.
  """
  frames_a, K_a, w2c_a, depth_a = view_a.checked("source view")
  frames_b, K_b, w2c_b, depth_b = view_b.checked("target view")
  T = frames_a.shape[0]
  if frames_b.shape != frames_a.shape:
    raise TrackingError(f"synchronised views must have the same frame count and image size: source "
                        f"{frames_a.shape[:3]}, target {frames_b.shape[:3]} ([T, H, W])")
  H, W = frames_a.shape[1:3]
  sequence = reversed_and_appended(frames_a, frames_b)
  if queries is None:
    masks = None
    if depth_a is not None:
      masks = np.zeros(sequence.shape[:3], bool)
      masks[:T] = liftable_mask(depth_a, edge=config.depth_edge)[::-1]
    queries = pick_queries(sequence, num_queries, (0, T - 1), masks=masks, method=query_method, config=config)
  queries = _check_queries(queries, 2 * T, H, W, max_frame=T - 1)
  xy, tracked = track_2d(sequence, queries, config=config)
  xy_a, tracked_a = xy[:, T - 1::-1], tracked[:, T - 1::-1]
  xy_b, tracked_b = xy[:, T:], tracked[:, T:]

  if depth_a is None or depth_b is None:  # static scene: one triangulation from both views
    X, ok = triangulate_tracks(np.concatenate([xy_a, xy_b], 1), np.concatenate([tracked_a, tracked_b], 1),
                               np.concatenate([K_a, K_b]), np.concatenate([w2c_a, w2c_b]), config=config)
    points = np.repeat(X[:, None], T, axis=1)
    known = np.repeat(ok[:, None], T, axis=1)
    _, z_a = project(points, view_a.cameras.numpy())
    src_valid = tracked_a & known & (z_a > 0)
    sampled = None
  else:
    lift_a = lift_tracks(xy_a, tracked_a, depth_a, K_a, w2c_a, config=config)
    lift_b = lift_tracks(xy_b, tracked_b, depth_b, K_b, w2c_b, config=config)
    points = np.where(lift_a.valid[..., None], lift_a.points_world, lift_b.points_world).astype(np.float64)
    known = lift_a.valid | lift_b.valid
    src_valid, sampled = lift_a.valid, lift_a.depth
  points = np.where(known[..., None], points, 0.0)

  cams_a, cams_b = view_a.cameras.numpy(), view_b.cameras.numpy()
  proj_a, z_a = project(points, cams_a)
  src_xy = np.where(src_valid[..., None], xy_a, np.where(known[..., None], proj_a, 0.0))
  src_depth = np.where(known, z_a, 0.0)
  if sampled is not None:  # the sampled depth where A lifted the point (equal to z_a up to float rounding)
    src_depth = np.where(src_valid, sampled, src_depth)
  tgt_xy, tgt_depth, tgt_valid = target_tracks_from_source(points, known, cams_b)
  tgt_xy = np.where(known[..., None], tgt_xy, 0.0)
  return PairedTracks(src_xy=src_xy.astype(np.float32), tgt_xy=tgt_xy.astype(np.float32),
                      src_depth=src_depth.astype(np.float32),
                      tgt_depth=np.where(known, tgt_depth, 0.0).astype(np.float32), src_valid=src_valid,
                      tgt_valid=tgt_valid, points_world=points.astype(np.float32),
                      query_frame=queries[:, 0].astype(np.int32))


# ----------------------------------------------------------------------------------------------- records
# Keys of a window-tracks file (`write_window_tracks`); W windows, N tracks, T frames per window. The track keys are
# `pairs.paired_example`'s, with a leading window axis.
WINDOW_KEYS = {
    "window_start": "int32 [W]: first frame of each window (index into the tracked view's frames)",
    "window_stride": "int32 []: frame step inside a window",
    "src_xy": "float32 [W, N, T, 2]: source pixels (centres at +0.5)",
    "src_depth": "float32 [W, N, T]: source camera z, metres",
    "src_valid": "bool [W, N, T]: tracked and lifted in the source",
    "points_world": "float32 [W, N, T, 3]: metres, world frame of the view's cameras",
    "query_frame": "int32 [W, N]: 0 or T-1 as pairs.PairedTracks (index in the reversed-source sequence); -1 pads",
}
PAIRED_WINDOW_KEYS = {
    **WINDOW_KEYS,
    "tgt_xy": "float32 [W, N, T, 2]: target pixels, the 3D point reprojected with the target cameras",
    "tgt_depth": "float32 [W, N, T]: target camera z, metres",
    "tgt_valid": "bool [W, N, T]: 3D point known, depth > 0 and inside the target image (no occlusion)",
}
_TRACK_DTYPES = {"src_xy": np.float32, "src_depth": np.float32, "src_valid": bool, "points_world": np.float32,
                 "query_frame": np.int32, "tgt_xy": np.float32, "tgt_depth": np.float32, "tgt_valid": bool}


def _pad(arrays: dict[str, np.ndarray], num_tracks: int) -> dict[str, np.ndarray]:
  """Pads (or keeps the first `num_tracks` of) the `[N, ...]` track arrays to `num_tracks`: padding is invalid, 0,
  with `query_frame` -1."""
  out = {}
  for key, value in arrays.items():
    value = np.asarray(value, _TRACK_DTYPES[key])[:num_tracks]
    pad = np.full((num_tracks - len(value),) + value.shape[1:], -1 if key == "query_frame" else 0, value.dtype)
    out[key] = np.concatenate([value, pad])
  return out


def window_tracks(source: View, target: View | None = None, *, num_frames: int, stride: int = 1,
                  starts: Sequence[int] | None = None, num_queries: int = 256, query_method: str = "features",
                  config: TrackConfig = DEFAULT_CONFIG) -> dict[str, np.ndarray]:
  """Per-window tracks of a posed video (or a synchronised pair) as record arrays: what curation stores beside a clip.

  Each window (`num_frames` frames from `start`, every `stride`) is tracked on its own: `track_video(...).record()` for
  one view (queries on the window's last and first frames), `paired_tracks(...)` for a pair. Tracks are padded to
  `num_queries` (invalid, `query_frame` -1) so windows stack.

  Args:
    source: the posed video (`View`); target: the synchronised target video, or None.
    num_frames: T >= 2 frames per window; stride: frame step in a window.
    starts: first frames of the windows; default non-overlapping windows from frame 0.
    num_queries, query_method, config: as `track_video` / `paired_tracks`.

  Returns:
    `{key: array}` with the keys of `WINDOW_KEYS` (single view) or `PAIRED_WINDOW_KEYS` (pair).

  Raises:
    TrackingError: a window past the end of the video, bad sizes, the errors of `track_video` / `paired_tracks`.
    NoFeaturesError: a window's query frame with nothing to track.
  """
  if int(num_frames) != num_frames or num_frames < 2 or int(stride) != stride or stride < 1:
    raise TrackingError(f"window_tracks: num_frames must be >= 2 and stride >= 1, got {num_frames} and {stride}")
  total = source.num_frames
  if target is not None and target.num_frames != total:
    raise TrackingError(f"window_tracks: source has {total} frames, target {target.num_frames} (synchronised views "
                        "need the same count)")
  span = (num_frames - 1) * stride + 1
  starts = list(range(0, total - span + 1, span)) if starts is None else [int(s) for s in starts]
  if not starts:
    raise TrackingError(f"window_tracks: a window of {num_frames} frames at stride {stride} needs {span} frames, the "
                        f"video has {total}", source=source.video_id or None)
  rows = []
  for start in starts:
    if start < 0 or start + span > total:
      raise TrackingError(f"window_tracks: window at frame {start} ({span} frames) does not fit in {total} frames",
                          source=source.video_id or None, frame=start)
    idx = start + stride * np.arange(num_frames)
    if target is None:
      s = source.take(idx)
      tracks = track_video(s.frames, s.cameras, s.depth, num_queries=num_queries, query_method=query_method,
                           config=config, video_id=s.video_id, frame_indices=s.frame_indices).record()
    else:
      tracks = paired_tracks(source.take(idx), target.take(idx), num_queries=num_queries, query_method=query_method,
                             config=config).arrays()
    rows.append(_pad(tracks, num_queries))
  out = {"window_start": np.asarray(starts, np.int32), "window_stride": np.asarray(stride, np.int32)}
  out.update({key: np.stack([r[key] for r in rows]) for key in rows[0]})
  return out


def write_window_tracks(path, arrays: dict[str, np.ndarray]) -> Path:
  """Writes `window_tracks(...)`'s arrays as a compressed `.npz` at `path`, atomically (`camjax.io.atomic_write`),
  after checking them (`check_window_tracks`). Returns the path."""
  path = Path(path)
  check_window_tracks(arrays, str(path))
  with atomic_write(path, "wb") as f:
    np.savez_compressed(f, **arrays)
  return path


def read_window_tracks(path) -> dict[str, np.ndarray]:
  """The arrays of a window-tracks file, checked (`check_window_tracks`).

  Raises:
    TrackingError: a missing or unreadable file, or arrays of other keys, dtypes or shapes, naming the file.
  """
  path = Path(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except FileNotFoundError:
    raise TrackingError("window-tracks file not found", source=path) from None
  except Exception as e:  # pylint: disable=broad-except  # zipfile / zlib / numpy raise many kinds
    raise TrackingError(f"cannot read window-tracks file ({type(e).__name__}: {e})", source=path) from None
  check_window_tracks(arrays, str(path))
  return arrays


def check_window_tracks(arrays: dict[str, np.ndarray], source: str | None = None) -> None:
  """Raises `TrackingError` (naming `source`) unless `arrays` has exactly the keys of `WINDOW_KEYS` or
  `PAIRED_WINDOW_KEYS` with their dtypes and consistent `[W, N, T, ...]` shapes."""
  keys = set(arrays)
  if keys not in (set(WINDOW_KEYS), set(PAIRED_WINDOW_KEYS)):
    missing = sorted(set(WINDOW_KEYS) - keys)
    extra = sorted(keys - set(PAIRED_WINDOW_KEYS))
    raise TrackingError(f"window tracks need the keys of WINDOW_KEYS or PAIRED_WINDOW_KEYS; missing {missing}, "
                        f"unknown {extra}, target keys {sorted(keys & {'tgt_xy', 'tgt_depth', 'tgt_valid'})}",
                        source=source)
  Wn, N, T = np.shape(arrays["src_valid"]) if np.ndim(arrays["src_valid"]) == 3 else (None, None, None)
  if Wn is None:
    raise TrackingError(f"src_valid must be [W, N, T], got {np.shape(arrays['src_valid'])}", source=source)
  shapes = {"window_start": (Wn,), "window_stride": (), "query_frame": (Wn, N), "points_world": (Wn, N, T, 3)}
  for view in ("src", "tgt"):
    shapes.update({f"{view}_xy": (Wn, N, T, 2), f"{view}_depth": (Wn, N, T), f"{view}_valid": (Wn, N, T)})
  for key in keys:
    value = np.asarray(arrays[key])
    dtype = np.dtype(_TRACK_DTYPES.get(key, np.int32))
    if value.shape != shapes[key] or value.dtype != dtype:
      raise TrackingError(f"{key} is {value.dtype} {value.shape}, expected {dtype} {shapes[key]}", source=source)


# ------------------------------------------------------------------------------------------------ checks
def static_lifting_errors(tracks: VideoTracks, cameras: g.Cameras, depth) -> dict[str, np.ndarray]:
  """How well lifted tracks agree with the 2D tracks and the depth maps in LATER frames (static scenes: a point's
  world position is the same at every frame).

  For every track `n`, frame `t` where it was lifted (`tracks.valid`) and later frame `s > t` where LK still tracks
  it (`tracks.tracked`): the world point `X_t` is projected with camera `s`; the reprojection error is the pixel
  distance to the LK position `xy_s`, the depth error `|z_s(X_t) - D_s| / D_s` with `D_s` the depth map of frame `s`
  sampled bilinearly at the projection (pairs whose sample is invalid are left out of the depth error).

  Args:
    tracks: `track_video(...)` (with depth: per-frame lifts).
    cameras: `Cameras [T]`; depth: float `[T, H, W]` metres (the sensor's).

  Returns:
    `{"offset": int [M] (s - t), "reprojection_px": [M], "depth_offset": int [M'], "depth_rel": [M'] (fraction)}`.
  """
  depth = np.asarray(depth, np.float64)
  N, T = tracks.valid.shape
  cams = cameras.numpy()
  offsets, errors, d_off, d_rel = [], [], [], []
  for t in range(T - 1):
    rows = np.flatnonzero(tracks.valid[:, t])
    if not rows.size:
      continue
    X = np.repeat(tracks.points_world[rows, t].astype(np.float64)[:, None], T, 1)
    xy, z = project(X, cams)
    maps, ok_d = sample_depth(depth, xy)
    for s in range(t + 1, T):
      m = tracks.tracked[rows, s] & (z[:, s] > 0)
      offsets.append(np.full(m.sum(), s - t))
      errors.append(np.linalg.norm(xy[m, s] - tracks.xy[rows[m], s], axis=-1))
      md = m & ok_d[:, s]
      d_off.append(np.full(md.sum(), s - t))
      d_rel.append(np.abs(z[md, s] - maps[md, s]) / maps[md, s])
  cat = lambda a, dt: np.concatenate(a).astype(dt) if a else np.zeros(0, dt)  # noqa: E731
  return {"offset": cat(offsets, np.int64), "reprojection_px": cat(errors, np.float64),
          "depth_offset": cat(d_off, np.int64), "depth_rel": cat(d_rel, np.float64)}
