"""Stage 4, metric scale calibration.

CameraCtrl II eq. 2 (REFERENCE.md section 3): per keyframe i, `s_i = argmin_s sum_p huber(|s S_i(p) - M_i(p)|)` with
S the SfM depth and M the metric depth, solved with RANSAC (1-point hypotheses `s = M/S`, inliers within a relative
tolerance, the Huber fit refined by iteratively reweighted least squares on the inliers); the scene scale is the mean
of the `s_i`, and the SfM translations are multiplied by it.

RealCam-I2V variant (REFERENCE.md section 4): per point `scale = M / S`, frame factor = median; clips whose largest
(or, separately, smallest) frame factor lies in the lowest or highest 2% of the dataset are dropped.

SfM depth: `camjax.geometry.sfm.estimate_cameras` returns cameras but not COLMAP's 3D points, so the SfM depth of a
keyframe is triangulated here from dense DIS flow to a partner frame with the SfM poses (forward-backward consistent
pixels with enough parallax only): the same scale as COLMAP's points, denser. `points_depth` projects 3D points into
a keyframe for when SfM points are available.

Metric depth comes from a `DepthSource`: RGB-D depth maps (`DepthFolder`, `ArrayDepth`) or a depth model
(`camjax.data.curate.metric.MetricDepthSource` over `camjax.depth.DepthAnythingMetric`, a local checkpoint folder).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from camjax import geometry as g
from camjax.data.curate.errors import CurationError


# --------------------------------------------------------------------------------------------- scale fits
@dataclasses.dataclass(frozen=True)
class ScaleFit:
  """One keyframe's scale: `scale` (metric / SfM), `inlier_ratio` of the RANSAC consensus, `num_points` used."""

  scale: float
  inlier_ratio: float
  num_points: int


def _check_pairs(sfm_depth, metric_depth, min_points: int = 1, what: str = "the scale fit"
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Valid (positive, finite) depth pairs; raises `CurationError` when fewer than `min_points`."""
  S = np.asarray(sfm_depth, np.float64).ravel()
  M = np.asarray(metric_depth, np.float64).ravel()
  if S.shape != M.shape:
    raise CurationError(f"SfM and metric depth differ in size: {S.size} vs {M.size}")
  ok = np.isfinite(S) & np.isfinite(M) & (S > 0) & (M > 0)
  if ok.sum() < min_points:
    if min_points == 1:
      raise CurationError(f"no valid depth pair for {what}")
    raise CurationError(f"only {int(ok.sum())} valid depth pairs for {what} (need {min_points})")
  return S[ok], M[ok]


def least_squares_scale(sfm_depth, metric_depth) -> float:
  """Closed-form `argmin_s sum (s S - M)^2 = sum S M / sum S^2` over valid (positive, finite) pairs.

  Raises:
    CurationError: no valid pair.
  """
  S, M = _check_pairs(sfm_depth, metric_depth)
  return float((S * M).sum() / (S * S).sum())


def huber_scale(S: np.ndarray, M: np.ndarray, delta: float, s0: float, iterations: int = 20) -> float:
  """`argmin_s sum huber_delta(s S - M)` by iteratively reweighted least squares from `s0` (metres for `delta`)."""
  s = s0
  for _ in range(iterations):
    r = np.abs(s * S - M)
    w = np.where(r <= delta, 1.0, delta / np.maximum(r, 1e-12))
    s_new = float((w * S * M).sum() / (w * S * S).sum())
    if abs(s_new - s) <= 1e-10 * abs(s):
      return s_new
    s = s_new
  return s


def fit_scale(sfm_depth, metric_depth, *, tolerance: float = 0.1, huber_delta: float | None = None,
              iterations: int = 200, min_points: int = 10, seed: int = 0) -> ScaleFit:
  """CameraCtrl II eq. 2 for one keyframe: the Huber-loss scale between SfM and metric depth, with RANSAC.

  Args:
    sfm_depth: SfM depths `[N]` (or any shape; non-positive / non-finite entries are ignored).
    metric_depth: metric depths of the same pixels, metres.
    tolerance: a pair is an inlier of hypothesis s when `|s S - M| <= tolerance * M`.
    huber_delta: Huber threshold in metres (default: `tolerance` x the median metric depth).
    iterations: RANSAC hypotheses (1-point: `s = M_k / S_k`).
    min_points: fewer valid pairs raise.
    seed: RANSAC seed.

  Returns:
    `ScaleFit`.

  Raises:
    CurationError: fewer than `min_points` valid pairs.
  """
  S, M = _check_pairs(sfm_depth, metric_depth, min_points)
  rng = np.random.default_rng(seed)
  ratios = M / S
  picks = rng.choice(len(S), size=min(iterations, len(S)), replace=False)
  best, best_count = None, -1
  for k in picks:
    s = ratios[k]
    count = int((np.abs(s * S - M) <= tolerance * M).sum())
    if count > best_count:
      best, best_count = s, count
  inliers = np.abs(best * S - M) <= tolerance * M
  s0 = float((S[inliers] * M[inliers]).sum() / (S[inliers] ** 2).sum())
  delta = tolerance * float(np.median(M)) if huber_delta is None else huber_delta
  s = huber_scale(S[inliers], M[inliers], delta, s0)
  inliers = np.abs(s * S - M) <= tolerance * M  # consensus of the refined scale
  return ScaleFit(scale=float(s), inlier_ratio=float(inliers.mean()), num_points=int(len(S)))


def median_ratio_scale(sfm_depth, metric_depth) -> float:
  """RealCam-I2V frame factor: the median of the per-point ratios `M / S`.

  Raises:
    CurationError: no valid pair.
  """
  S, M = _check_pairs(sfm_depth, metric_depth, what="the frame factor")
  return float(np.median(M / S))


def realcam_keep(frame_factors: Sequence[Sequence[float]], quantile: float = 0.02) -> np.ndarray:
  """RealCam-I2V outlier filter over a dataset: drop clips whose largest frame factor, or smallest frame factor, lies
  below the `quantile` or above the `1 - quantile` quantile of the clips' largest (smallest) factors.

  Args:
    frame_factors: per clip, its frames' factors (`median_ratio_scale`).
    quantile: fraction cut at each end (0.02 in the paper).

  Returns:
    `bool [num_clips]`, True = keep.
  """
  if not len(frame_factors):
    return np.zeros(0, bool)
  hi = np.array([np.max(f) for f in frame_factors], np.float64)
  lo = np.array([np.min(f) for f in frame_factors], np.float64)
  keep = np.ones(len(hi), bool)
  for v in (hi, lo):
    a, b = np.quantile(v, [quantile, 1 - quantile])
    keep &= (v >= a) & (v <= b)
  return keep


# ----------------------------------------------------------------------------------------------- SfM depth
def points_depth(points_world, w2c, K, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Projects world points `[P, 3]` into a camera: (pixel coordinates `[P', 2]` (x, y; pixel centres at +0.5),
  camera depths `[P']`) of the points in front of the camera and inside the image."""
  X = np.asarray(points_world, np.float64)
  w2c, K = np.asarray(w2c, np.float64), np.asarray(K, np.float64)
  cam = X @ w2c[:3, :3].T + w2c[:3, 3]
  z = cam[:, 2]
  front = z > 1e-9
  uv = (cam[front] @ K.T)[:, :2] / z[front, None]
  inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
  return uv[inside], z[front][inside]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Bilinear samples of `image [H, W, C]` at float pixel indices `x`, `y` `[N]` inside the image -> `[N, C]`."""
  H, W = image.shape[:2]
  x0 = np.clip(np.floor(x).astype(np.int64), 0, W - 2)
  y0 = np.clip(np.floor(y).astype(np.int64), 0, H - 2)
  fx, fy = (x - x0)[:, None], (y - y0)[:, None]
  return ((1 - fx) * (1 - fy) * image[y0, x0] + fx * (1 - fy) * image[y0, x0 + 1] +
          (1 - fx) * fy * image[y0 + 1, x0] + fx * fy * image[y0 + 1, x0 + 1])


def triangulated_depth(flow_fw: np.ndarray, flow_bw: np.ndarray, w2c_a, w2c_b, K_a, K_b, *, stride: int = 2,
                       max_fb_error: float = 0.5, min_parallax_deg: float = 0.5, border: int = 4
                       ) -> tuple[np.ndarray, np.ndarray]:
  """SfM-scale depth of frame a's pixels, triangulated from dense flow to frame b with known cameras.

  For pixel x of frame a and its flow match x' in frame b, the depth z along the ray r = K_a^-1 x solves, in least
  squares, `x' ~ K_b (R z r + t)` with `[R | t]` = camera a -> camera b (linear in z).

  Args:
    flow_fw: `[H, W, 2]` flow a -> b (pixels); flow_bw: `[H, W, 2]` flow b -> a (forward-backward check).
    w2c_a, w2c_b: `[4, 4]` cameras (SfM world); K_a, K_b: `[3, 3]` pixel intrinsics.
    stride: pixel grid step.
    max_fb_error: pixels; larger forward-backward disagreement is dropped (occlusions, bad flow).
    min_parallax_deg: rays meeting at a smaller angle are dropped (depth ill-conditioned).
    border: pixels at the border are skipped.

  Returns:
    (pixel coordinates `[N, 2]` as integer (x, y) indices, depths `[N]` in SfM units), positive depths only.
  """
  H, W = flow_fw.shape[:2]
  ys, xs = np.mgrid[border:H - border:stride, border:W - border:stride]
  xs, ys = xs.ravel(), ys.ravel()
  f = flow_fw[ys, xs].astype(np.float64)
  xb, yb = xs + f[:, 0], ys + f[:, 1]
  inside = (xb >= 0) & (xb <= W - 1) & (yb >= 0) & (yb <= H - 1)
  back = _bilinear(flow_bw.astype(np.float64), np.clip(xb, 0, W - 1), np.clip(yb, 0, H - 1))
  fb = np.hypot(f[:, 0] + back[:, 0], f[:, 1] + back[:, 1])
  ok = inside & (fb <= max_fb_error)
  rel = np.asarray(w2c_b, np.float64) @ np.linalg.inv(np.asarray(w2c_a, np.float64))
  R, t = rel[:3, :3], rel[:3, 3]
  # Pixel index (x, y) has its centre at (x + 0.5, y + 0.5) in camjax's K convention.
  pa = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=np.float64)], -1)
  pb = np.stack([xb + 0.5, yb + 0.5, np.ones_like(xb)], -1)
  r = pa @ np.linalg.inv(K_a).T
  nb = pb @ np.linalg.inv(K_b).T
  a = r @ R.T  # R r
  # x'(a_z z + t_z) = a_x z + t_x  ->  z (x' a_z - a_x) = t_x - x' t_z (same for y)
  c1, d1 = nb[:, 0] * a[:, 2] - a[:, 0], t[0] - nb[:, 0] * t[2]
  c2, d2 = nb[:, 1] * a[:, 2] - a[:, 1], t[1] - nb[:, 1] * t[2]
  with np.errstate(divide="ignore", invalid="ignore"):
    z = (c1 * d1 + c2 * d2) / (c1 * c1 + c2 * c2)
    X_b = a * z[:, None] + t
    cos = np.einsum("ni,ni->n", a, X_b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(X_b, axis=-1))
  parallax = np.degrees(np.arccos(np.clip(cos, -1, 1)))
  ok &= np.isfinite(z) & (z > 0) & (X_b[:, 2] > 0) & (parallax >= min_parallax_deg)
  return np.stack([xs[ok], ys[ok]], -1), z[ok]


# ----------------------------------------------------------------------------------------- depth sources
@runtime_checkable
class DepthSource(Protocol):
  """Metric depth of a clip: `__call__(video_id, frame_indices [T] of the decoded video, frames uint8 [T, H, W, 3])`
  returns `float32 [T, H, W]` metres (0 = invalid) at the frames' size, or None when it has no depth for the video."""

  def __call__(self, video_id: str, frame_indices: np.ndarray, frames: np.ndarray) -> np.ndarray | None:
    ...


def resize_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of `[T, h, w]` depth maps to `[T, height, width]` (no mixing across edges)."""
  import cv2

  depth = np.asarray(depth, np.float32)
  if depth.shape[1:] == (height, width):
    return depth
  return np.stack([cv2.resize(d, (width, height), interpolation=cv2.INTER_NEAREST) for d in depth])


@dataclasses.dataclass
class ArrayDepth:
  """Depth maps held in memory: `{video_id: float [T_video, h, w] metres}` (rendered or preloaded RGB-D depth)."""

  depth: dict

  def __call__(self, video_id, frame_indices, frames):
    if video_id not in self.depth:
      return None
    d = np.asarray(self.depth[video_id])
    if np.max(frame_indices) >= len(d):
      raise CurationError(f"depth has {len(d)} frames, clip needs frame {int(np.max(frame_indices))}", source=video_id)
    return resize_depth(d[np.asarray(frame_indices)], *frames.shape[1:3])


@dataclasses.dataclass
class DepthFolder:
  """RGB-D depth maps on disk, one per decoded video frame: `<root>/<video_id>.npy` (`[T, h, w]` metres) or a folder
  `<root>/<video_id>/` of per-frame files sorted by name (`.npy` metres; 16-bit `.png` / `.pgm` divided by `scale`,
  e.g. 1000 for millimetres, 5000 for TUM RGB-D)."""

  root: Path
  scale: float = 1000.0

  def __post_init__(self):
    self.root = Path(self.root)
    if not self.root.is_dir():
      raise CurationError("depth folder not found", source=self.root)

  def _load_frame(self, path: Path) -> np.ndarray:
    if path.suffix == ".npy":
      return np.load(path).astype(np.float32)
    import cv2

    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if d is None:
      raise CurationError("cannot read depth map", source=path)
    return d.astype(np.float32) / self.scale

  def __call__(self, video_id, frame_indices, frames):
    stacked = self.root / f"{video_id}.npy"
    if stacked.is_file():
      return ArrayDepth({video_id: np.load(stacked)})(video_id, frame_indices, frames)
    folder = self.root / video_id
    if not folder.is_dir():
      return None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".npy", ".png", ".pgm"))
    if np.max(frame_indices) >= len(files):
      raise CurationError(f"{len(files)} depth maps, clip needs frame {int(np.max(frame_indices))}", source=folder)
    return resize_depth(np.stack([self._load_frame(files[i]) for i in frame_indices]), *frames.shape[1:3])


# ------------------------------------------------------------------------------------------- clip scale
@dataclasses.dataclass
class ClipScale:
  """Stage 4 outcome for one clip: the scene `scale` (mean of the keyframe scales, eq. 2), per-keyframe fits, and the
  RealCam-I2V frame factors (`median_ratio_scale`) of the same keyframes."""

  scale: float
  keyframes: list[int]
  fits: list[ScaleFit]
  frame_factors: list[float]

  def stats(self) -> dict:
    return {"scale": self.scale, "keyframes": self.keyframes,
            "keyframe_scales": [round(f.scale, 6) for f in self.fits],
            "inlier_ratios": [round(f.inlier_ratio, 4) for f in self.fits],
            "num_points": [f.num_points for f in self.fits],
            "realcam_frame_factors": [round(v, 6) for v in self.frame_factors]}


def calibrate_clip(frames: np.ndarray, cameras: g.Cameras, metric_depth: np.ndarray, *, num_keyframes: int = 4,
                   gap: int = 3, tolerance: float = 0.1, min_points: int = 50, seed: int = 0) -> ClipScale:
  """Metric scale of one clip's SfM cameras (CameraCtrl II eq. 2).

  Args:
    frames: `uint8 [T, H, W, 3]` (the frames `cameras` belong to).
    cameras: `Cameras [T]` from SfM (arbitrary scale).
    metric_depth: `float [T, H, W]` metres, 0 = invalid.
    num_keyframes: keyframes spread evenly over the clip.
    gap: partner frame distance for the triangulation (the farther of +gap / -gap that exists).
    tolerance: RANSAC relative inlier tolerance (`fit_scale`).
    min_points: keyframes with fewer triangulated pixels of valid metric depth are skipped.
    seed: RANSAC seed.

  Returns:
    `ClipScale`; multiply the translations by `.scale`.

  Raises:
    CurationError: shapes disagree, or no keyframe has enough valid pairs.
  """
  from camjax.data.curate.motion import optical_flow

  frames = np.asarray(frames)
  metric_depth = np.asarray(metric_depth, np.float32)
  T, H, W = frames.shape[:3]
  if metric_depth.shape != (T, H, W) or cameras.num_frames != T:
    raise CurationError(f"calibrate_clip: frames {frames.shape}, depth {metric_depth.shape} and "
                        f"{cameras.num_frames} cameras disagree")
  gap = max(1, min(gap, T - 1))
  keyframes = sorted({int(round(k)) for k in np.linspace(0, T - 1, num_keyframes)})
  fits, factors, used = [], [], []
  for k in keyframes:
    j = k + gap if k + gap < T else k - gap
    if j < 0:
      continue
    pair = np.stack([frames[k], frames[j]])
    fw = optical_flow(pair)[0]
    bw = optical_flow(pair[::-1])[0]
    pix, z = triangulated_depth(fw, bw, cameras.w2c[k], cameras.w2c[j], cameras.K[k], cameras.K[j])
    m = metric_depth[k][pix[:, 1], pix[:, 0]] if len(pix) else np.zeros(0)
    valid = m > 0
    if valid.sum() < min_points:
      continue
    fits.append(fit_scale(z[valid], m[valid], tolerance=tolerance, seed=seed + k))
    factors.append(median_ratio_scale(z[valid], m[valid]))
    used.append(k)
  if not fits:
    raise CurationError(f"no keyframe has {min_points} triangulated pixels with valid metric depth "
                        "(too little camera translation, or no depth)")
  return ClipScale(scale=float(np.mean([f.scale for f in fits])), keyframes=used, fits=fits, frame_factors=factors)
