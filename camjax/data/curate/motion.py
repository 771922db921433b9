"""Dynamic-video selection (CameraCtrl II sec. 3.2, REFERENCE.md section 3): dense optical flow, a moving-object
(foreground) mask and the camera-movement score = mean optical flow over the static background.

The paper segments moving objects with TMO, whose weights are not available here. camjax derives the foreground from
the flow itself: per frame pair, the dominant (camera) motion is fitted to a grid of flow correspondences with RANSAC:
a homography (any camera rotation, planar or distant scenes) or a fundamental matrix (any static scene seen by a
translating camera), chosen by Torr's GRIC. A pixel is foreground when its flow is inconsistent with the chosen
camera-motion model by more than `threshold` pixels (homography transfer error, Sampson epipolar distance). Object
motion along the epipolar lines of a translating camera cannot be told from parallax by two-view geometry and is
missed (see docs/curation.md for the IoU measured on rendered clips). A learned segmenter replaces this through the
`ForegroundSegmenter` protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np

from camjax.data.curate.errors import CurationError


def _check_frames(frames, what: str, min_frames: int = 2) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise CurationError(f"{what} needs uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
  if len(frames) < min_frames:
    raise CurationError(f"{what} needs at least {min_frames} frames, got {len(frames)}")
  if frames.shape[1] < 8 or frames.shape[2] < 8:
    raise CurationError(f"{what} needs frames of at least 8x8 pixels, got {frames.shape[1]}x{frames.shape[2]}")
  return frames


def _check_flow(flow, frames: np.ndarray) -> np.ndarray:
  flow = np.asarray(flow, dtype=np.float32)
  T, H, W = frames.shape[:3]
  if flow.shape != (T - 1, H, W, 2):
    raise CurationError(f"flow must be [T-1, H, W, 2] = {(T - 1, H, W, 2)} for these frames, got {flow.shape}")
  if not np.isfinite(flow).all():
    bad = int(np.flatnonzero(~np.isfinite(flow).reshape(T - 1, -1).all(-1))[0])
    raise CurationError("flow has non-finite values", frame=bad)
  return flow


def optical_flow(frames, preset: str = "medium") -> np.ndarray:
  """Dense forward optical flow with OpenCV's DIS (Kroeger et al. 2016).

  Args:
    frames: `uint8 [T, H, W, 3]` RGB, T >= 2.
    preset: DIS preset, "ultrafast", "fast" or "medium".

  Returns:
    `float32 [T-1, H, W, 2]`: flow (x, y) in pixels from frame t to frame t+1 (pixel p of frame t moves to p + flow).

  Raises:
    CurationError: frames of the wrong shape or dtype, fewer than 2 frames, or an unknown preset.
  """
  import cv2

  frames = _check_frames(frames, "optical_flow")
  presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
             "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
  if preset not in presets:
    raise CurationError(f"unknown DIS preset {preset!r}: use one of {sorted(presets)}")
  dis = cv2.DISOpticalFlow_create(presets[preset])
  gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
  out = np.empty((len(frames) - 1, *frames.shape[1:3], 2), np.float32)
  for t in range(len(frames) - 1):
    out[t] = dis.calc(gray[t], gray[t + 1], None)
  return out


# ------------------------------------------------------------------------------------ camera-motion models
def _pixel_grid(H: int, W: int) -> np.ndarray:
  v, u = np.meshgrid(np.arange(H, dtype=np.float32), np.arange(W, dtype=np.float32), indexing="ij")
  return np.stack([u, v], -1)  # [H, W, 2] pixel coordinates (x, y)


def _homography_error(Hm: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """Transfer error |H p - q| in pixels, `p`, `q` `[N, 2]`."""
  ph = np.concatenate([p, np.ones_like(p[:, :1])], -1) @ Hm.T
  with np.errstate(divide="ignore", invalid="ignore"):
    proj = ph[:, :2] / ph[:, 2:3]
  err = np.linalg.norm(proj - q, axis=-1)
  return np.where(np.isfinite(err), err, np.inf)


def _sampson_error(F: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """Sampson (first-order geometric) epipolar distance in pixels of correspondences `p -> q` `[N, 2]`."""
  ph = np.concatenate([p, np.ones_like(p[:, :1])], -1).astype(np.float64)
  qh = np.concatenate([q, np.ones_like(q[:, :1])], -1).astype(np.float64)
  Fp = ph @ F.T  # F p
  Ftq = qh @ F  # F^T q
  num = np.einsum("ni,ni->n", qh, Fp) ** 2
  den = Fp[:, 0] ** 2 + Fp[:, 1] ** 2 + Ftq[:, 0] ** 2 + Ftq[:, 1] ** 2
  with np.errstate(divide="ignore", invalid="ignore"):
    err = np.sqrt(num / den)
  return np.where(np.isfinite(err), err, 0.0)


def _gric(residuals: np.ndarray, sigma: float, d: int, k: int) -> float:
  """Torr's Geometric Robust Information Criterion of a model with manifold dimension `d` and `k` parameters fitted
  to `n` 2-view correspondences (r = 4 dimensions) with residuals (pixels): lower is better."""
  n, r = len(residuals), 4
  rho = np.minimum((residuals / sigma) ** 2, 2.0 * (r - d))
  return float(rho.sum() + np.log(r) * d * n + np.log(r * n) * k)


def background_residual(flow_t: np.ndarray, *, threshold: float = 1.0, stride: int = 4, sigma: float = 0.5,
                        seed: int = 0) -> np.ndarray:
  """Per-pixel inconsistency of one flow field with the dominant camera motion.

  The camera motion is a homography H (camera rotation, or a planar / distant scene) or a fundamental matrix F
  (translation in a 3D scene), both fitted with RANSAC to a grid of flow correspondences; GRIC (Torr 1998) picks
  the model. F is never used when H explains the flow as well: for a camera that does not translate F is
  degenerate and would absorb the motion of a moving object.

  Args:
    flow_t: `float32 [H, W, 2]` flow (pixels) of one frame pair.
    threshold: RANSAC inlier threshold, pixels.
    stride: grid step (pixels) of the correspondences the models are fitted to.
    sigma: flow noise (pixels) assumed by GRIC.
    seed: OpenCV RNG seed (RANSAC is then deterministic).

  Returns:
    `float32 [H, W]`: residual in pixels under the selected model (transfer error for H, Sampson distance for F).
  """
  import cv2

  H, W = flow_t.shape[:2]
  grid = _pixel_grid(H, W)
  q_all = grid + flow_t
  p = grid[::stride, ::stride].reshape(-1, 2)
  q = q_all[::stride, ::stride].reshape(-1, 2)
  inside = (q[:, 0] >= 0) & (q[:, 0] <= W - 1) & (q[:, 1] >= 0) & (q[:, 1] <= H - 1)
  p, q = p[inside], q[inside]
  P, Q = grid.reshape(-1, 2), q_all.reshape(-1, 2)
  if len(p) < 8:
    return np.zeros((H, W), np.float32)
  cv2.setRNGSeed(seed)
  Hm, _ = cv2.findHomography(p, q, cv2.RANSAC, threshold, maxIters=2000, confidence=0.999)
  if Hm is None:
    return np.linalg.norm(flow_t, axis=-1).astype(np.float32)  # no camera model: any motion is unexplained
  gric_h = _gric(_homography_error(Hm, p, q), sigma, d=2, k=8)
  F, _ = cv2.findFundamentalMat(p, q, cv2.FM_RANSAC, threshold, 0.999, 2000)
  if F is not None and F.shape == (3, 3) and _gric(_sampson_error(F, p, q), sigma, d=3, k=7) < gric_h:
    residual = _sampson_error(F, P, Q)
  else:
    residual = _homography_error(Hm, P, Q)
  return np.minimum(residual, 1e3).reshape(H, W).astype(np.float32)


@runtime_checkable
class ForegroundSegmenter(Protocol):
  """Anything that marks moving-object pixels: the flow-based default, or a learned segmenter (TMO in the paper).

  `__call__(frames uint8 [T, H, W, 3], flow float32 [T-1, H, W, 2]) -> bool [T-1, H, W]` (True = moving object in
  frame t of pair (t, t+1)).
  """

  def __call__(self, frames: np.ndarray, flow: np.ndarray) -> np.ndarray:
    ...


@dataclasses.dataclass(frozen=True)
class FlowSegmenter:
  """Flow-based foreground segmenter (the default `ForegroundSegmenter`; see the module docstring).

  Attributes:
    threshold: residual (pixels) above which a pixel is foreground; also the RANSAC inlier threshold.
    stride: grid step (pixels) of the correspondences the camera-motion models are fitted to.
    sigma: flow noise (pixels) assumed by the model selection (GRIC).
    open_size: side (pixels) of the morphological opening that removes isolated foreground pixels (0: none).
    border: pixels at the image border never marked foreground (flow there is unreliable).
  """

  threshold: float = 1.0
  stride: int = 4
  sigma: float = 0.5
  open_size: int = 3
  border: int = 2

  def __call__(self, frames: np.ndarray, flow: np.ndarray) -> np.ndarray:
    import cv2

    T1, H, W = flow.shape[:3]
    out = np.zeros((T1, H, W), bool)
    kernel = np.ones((self.open_size, self.open_size), np.uint8) if self.open_size > 1 else None
    for t in range(T1):
      residual = background_residual(flow[t], threshold=self.threshold, stride=self.stride,
                                     sigma=self.sigma, seed=t)
      mask = (residual > self.threshold).astype(np.uint8)
      if kernel is not None:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
      if self.border:
        b = self.border
        mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = 0, 0, 0, 0
      out[t] = mask.astype(bool)
    return out


def foreground_mask(frames, flow=None, segmenter: ForegroundSegmenter | None = None) -> np.ndarray:
  """Moving-object mask of a clip.

  Args:
    frames: `uint8 [T, H, W, 3]`, T >= 2.
    flow: `float32 [T-1, H, W, 2]` forward flow in pixels (computed with `optical_flow` when None).
    segmenter: a `ForegroundSegmenter` (default: `FlowSegmenter()`).

  Returns:
    `bool [T-1, H, W]`: True on pixels of frame t whose motion to frame t+1 is inconsistent with the camera motion.

  Raises:
    CurationError: bad frames or a flow of the wrong shape, or a segmenter returning the wrong shape.
  """
  frames = _check_frames(frames, "foreground_mask")
  flow = optical_flow(frames) if flow is None else _check_flow(flow, frames)
  segmenter = FlowSegmenter() if segmenter is None else segmenter
  mask = np.asarray(segmenter(frames, flow))
  if mask.shape != flow.shape[:3]:
    raise CurationError(f"segmenter returned a mask of shape {mask.shape}, expected {flow.shape[:3]}")
  return mask.astype(bool)


def camera_movement_score(frames, flow=None, mask=None) -> float:
  """Camera-movement score (CameraCtrl II sec. 3.2): mean optical-flow magnitude over the static background.

  Args:
    frames: `uint8 [T, H, W, 3]`, T >= 2.
    flow: `float32 [T-1, H, W, 2]` forward flow, pixels (computed when None).
    mask: `bool [T-1, H, W]` foreground (excluded; computed with `foreground_mask` when None).

  Returns:
    Mean background flow magnitude in pixels per frame (0.0 when every pixel is foreground).

  Raises:
    CurationError: bad frames, flow or mask.
  """
  frames = _check_frames(frames, "camera_movement_score")
  flow = optical_flow(frames) if flow is None else _check_flow(flow, frames)
  mask = foreground_mask(frames, flow) if mask is None else np.asarray(mask, dtype=bool)
  if mask.shape != flow.shape[:3]:
    raise CurationError(f"mask must be [T-1, H, W] = {flow.shape[:3]}, got {mask.shape}")
  background = ~mask
  if not background.any():
    return 0.0
  return float(np.linalg.norm(flow, axis=-1)[background].mean())


def mask_iou(predicted, target) -> float:
  """Intersection over union of two boolean masks of the same shape (1.0 when both are empty)."""
  predicted, target = np.asarray(predicted, bool), np.asarray(target, bool)
  if predicted.shape != target.shape:
    raise CurationError(f"mask_iou: shapes differ, {predicted.shape} vs {target.shape}")
  union = (predicted | target).sum()
  return 1.0 if union == 0 else float((predicted & target).sum() / union)
