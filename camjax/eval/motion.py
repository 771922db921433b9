"""Motion strength (CameraCtrl II sec. 4.2, 2)): how much the OBJECTS of a video move, camera motion excluded.

`motion_strength` = mean optical-flow magnitude `sqrt(u^2 + v^2)` (pixels per frame, at the video's resolution) over
the foreground (moving-object) pixels of every frame pair. The paper uses RAFT flow and TMO masks; camjax uses the
curation pipeline's OpenCV DIS flow and flow-based foreground mask (`camjax.data.curate.motion`), so the absolute
numbers are not comparable with the paper's table, only between camjax runs at one resolution. (The paper's text
also mentions a conversion "from radians to degrees", which has no meaning for pixel flow and is not applied.)
"""

from __future__ import annotations

import numpy as np

from camjax.eval.errors import EvalError


def motion_strength(frames) -> float:
  """Mean flow magnitude (pixels / frame) over the foreground pixels of `frames uint8 [T, H, W, 3]`; 0.0 when no
  pixel is foreground (a static scene, or pure camera motion).

  Raises:
    EvalError: frames are not `uint8 [T, H, W, 3]` with T >= 2.
  """
  return motion_stats(frames)["motion_strength"]


def motion_stats(frames) -> dict[str, float]:
  """`motion_strength` plus `foreground_fraction` (share of foreground pixels) and `mean_flow` (mean flow magnitude
  over ALL pixels, camera motion included), pixels per frame."""
  from camjax.data.curate.motion import foreground_mask, optical_flow

  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) < 2:
    raise EvalError(f"motion strength needs uint8 [T >= 2, H, W, 3] frames, got {frames.dtype} {frames.shape}")
  flow = optical_flow(frames)
  mask = np.asarray(foreground_mask(frames, flow), dtype=bool)
  magnitude = np.linalg.norm(flow, axis=-1)
  return {"motion_strength": float(magnitude[mask].mean()) if mask.any() else 0.0,
          "foreground_fraction": float(mask.mean()), "mean_flow": float(magnitude.mean())}
