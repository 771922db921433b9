"""Stage 3, camera estimation (CameraCtrl II sec. 3.2 uses VGGSfM; camjax uses pycolmap through
`camjax.geometry.sfm.estimate_cameras`): sequential matching, global (default) or incremental mapping, known
intrinsics held fixed when given. A clip is kept when at least `min_registered` of its frames register and the mean
reprojection error is at most `max_reprojection_error` pixels; the kept clip is the longest run of consecutive
registered frames (a record needs a camera for every frame).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from camjax import geometry as g
from camjax.data.curate.errors import CurationError


@dataclasses.dataclass(frozen=True)
class PoseOptions:
  """Options of stage 3 (see the module docstring).

  Attributes:
    mapper: "global" (GLOMAP) or "incremental".
    min_registered: fraction of a clip's frames that must register.
    max_reprojection_error: pixels.
    min_frames: the kept run of registered frames needs at least this many frames.
    seed, num_threads: of pycolmap (1 thread: reproducible).
  """

  mapper: str = "global"
  min_registered: float = 0.8
  max_reprojection_error: float = 2.0
  min_frames: int = 8
  seed: int = 0
  num_threads: int = 1


@dataclasses.dataclass
class PoseResult:
  """Outcome of stage 3 for one clip.

  Attributes:
    kept: whether the clip passed.
    reason: why it was dropped (empty when kept).
    cameras: `Cameras [T']` of `frame_indices` (SfM world frame and scale), None when SfM failed.
    frame_indices: `int [T']` indices into the clip's frames.
    registered: frames registered / frames in the clip.
    reprojection_error: mean reprojection error, pixels (NaN when SfM failed).
  """

  kept: bool
  reason: str
  cameras: g.Cameras | None
  frame_indices: np.ndarray
  registered: float
  reprojection_error: float

  def stats(self) -> dict:
    return {"registered": round(self.registered, 4), "reprojection_error_px": round(self.reprojection_error, 4),
            "num_frames": int(len(self.frame_indices))}


def longest_run(indices: np.ndarray) -> np.ndarray:
  """The longest run of consecutive integers in sorted `indices` (the earliest on ties)."""
  indices = np.sort(np.asarray(indices, dtype=np.int64))
  if len(indices) == 0:
    return indices
  breaks = np.flatnonzero(np.diff(indices) != 1) + 1
  runs = np.split(indices, breaks)
  return max(runs, key=len)


def estimate_clip_cameras(frames: np.ndarray, K=None, options: PoseOptions = PoseOptions()) -> PoseResult:
  """Runs SfM on one clip and applies the keep rules.

  Args:
    frames: `uint8 [T, H, W, 3]`.
    K: pixel intrinsics `[3, 3]` at the clip's size, held fixed (None: COLMAP estimates a shared pinhole camera).
    options: `PoseOptions`.

  Returns:
    `PoseResult`; an SfM failure is a dropped result, never an exception.

  Raises:
    CurationError: bad frames or options.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise CurationError(f"estimate_clip_cameras needs uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
  if len(frames) < 2:
    raise CurationError(f"estimate_clip_cameras needs at least 2 frames, got {len(frames)}")
  if options.mapper not in ("global", "incremental"):
    raise CurationError(f"unknown mapper {options.mapper!r}: use 'global' or 'incremental'")
  empty = np.zeros(0, np.int64)
  try:
    result = g.sfm.estimate_cameras(frames, K, mapper=options.mapper, seed=options.seed,
                                    num_threads=options.num_threads)
  except Exception as e:  # CameraError (nothing registered) or a pycolmap failure: recorded, never fatal
    return PoseResult(False, f"SfM failed: {e}", None, empty, 0.0, float("nan"))
  order = np.argsort(result.frame_indices)
  cams = result.cameras.take(order)
  indices = result.frame_indices[order]
  registered = len(indices) / len(frames)
  error = result.mean_reprojection_error
  if registered < options.min_registered:
    return PoseResult(False, f"only {len(indices)} of {len(frames)} frames registered (< {options.min_registered:.0%})",
                      cams, indices, registered, error)
  if not np.isfinite(error) or error > options.max_reprojection_error:
    return PoseResult(False, f"mean reprojection error {error:.2f} px > {options.max_reprojection_error} px",
                      cams, indices, registered, error)
  run = longest_run(indices)
  if len(run) < options.min_frames:
    return PoseResult(False, f"longest run of consecutive registered frames is {len(run)} < {options.min_frames}",
                      cams, indices, registered, error)
  keep = np.isin(indices, run)
  return PoseResult(True, "", cams.take(np.flatnonzero(keep)), indices[keep], registered, error)
