"""View synchronisation: how many points two videos agree on at the same timestamp (Track2View sec. 4).

Track2View scores synchronisation between the source video and the generated target view with GIM-LightGlue matches
between the frames of one timestamp (and CLIP-V similarity). camjax stands in OpenCV for the learned matcher: SIFT
keypoints, Lowe's ratio test, then a RANSAC fundamental matrix; the score of a frame pair is its number of RANSAC
inliers (matches consistent with one epipolar geometry, which is what two synchronised views of one static instant
share). Learned matchers find many more matches on real video, so the absolute counts are not comparable with the
paper's; the comparison that matters is between rows computed the same way on the same frames (the model, its
zeroed-tracks control, copy-the-source, repeat-the-first-frame).

Small frames (the CPU default renders 64 x 64) hold few SIFT keypoints; frames are upsampled (bicubic) so that their
shorter side is at least `min_side` pixels before detection, the same for every row.
"""

from __future__ import annotations

import numpy as np

from camjax.errors import CamjaxError


class SyncError(CamjaxError, ValueError):
  """Videos that cannot be compared frame by frame (shape, dtype, frame count)."""


def _gray(frame: np.ndarray, min_side: int) -> np.ndarray:
  import cv2  # pylint: disable=import-outside-toplevel
  img = np.asarray(frame)
  if img.dtype != np.uint8:
    raise SyncError(f"frames must be uint8 RGB, got {img.dtype}")
  gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
  side = min(gray.shape)
  if side < min_side:
    s = min_side / side
    gray = cv2.resize(gray, (round(gray.shape[1] * s), round(gray.shape[0] * s)), interpolation=cv2.INTER_CUBIC)
  return gray


def matched_keypoints(frame_a: np.ndarray, frame_b: np.ndarray, *, ratio: float = 0.75, ransac_px: float = 2.0,
                      min_side: int = 256) -> int:
  """Number of RANSAC-consistent SIFT matches between two `[H, W, 3]` uint8 frames (0 when fewer than 8 matches
  survive the ratio test, the minimum for a fundamental matrix). `ransac_px` is the epipolar distance threshold in
  pixels of the upsampled frames.

  Raises:
    SyncError: a frame that is not uint8.
  """
  import cv2  # pylint: disable=import-outside-toplevel
  sift = cv2.SIFT_create()
  ka, da = sift.detectAndCompute(_gray(frame_a, min_side), None)
  kb, db = sift.detectAndCompute(_gray(frame_b, min_side), None)
  if da is None or db is None or len(ka) < 2 or len(kb) < 2:
    return 0
  pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
  good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
  if len(good) < 8:
    return 0
  pa = np.float32([ka[m.queryIdx].pt for m in good])
  pb = np.float32([kb[m.trainIdx].pt for m in good])
  _, inliers = cv2.findFundamentalMat(pa, pb, cv2.FM_RANSAC, ransac_px, 0.999)
  return 0 if inliers is None else int(inliers.sum())


def _synchronised(source, generated, skip_frames: int) -> tuple[np.ndarray, np.ndarray]:
  a, b = np.asarray(source), np.asarray(generated)
  if a.ndim != 4 or b.ndim != 4 or a.shape[-1] != 3 or b.shape[-1] != 3:
    raise SyncError(f"videos must be [T, H, W, 3], got {a.shape} and {b.shape}")
  if a.shape[0] != b.shape[0]:
    raise SyncError(f"videos must have the same frame count to compare timestamps, got {a.shape[0]} and "
                    f"{b.shape[0]}")
  if not 0 <= skip_frames < a.shape[0]:
    raise SyncError(f"skip_frames={skip_frames} leaves no frame of {a.shape[0]}")
  return a, b


def sync_scores(source, generated, *, skip_frames: int = 1, **opts) -> dict[str, float]:
  """Per-timestamp matched keypoints between two synchronised videos `[T, H, W, 3]` uint8 (same `T`; sizes may
  differ), on frames `skip_frames..T-1`.

  Returns:
    `{"matches": mean inliers per frame, "matches_per_frame": list}`.

  Raises:
    SyncError: different frame counts, wrong rank, or nothing left after `skip_frames`.
  """
  a, b = _synchronised(source, generated, skip_frames)
  per = [matched_keypoints(a[t], b[t], **opts) for t in range(skip_frames, a.shape[0])]
  return {"matches": float(np.mean(per)), "matches_per_frame": per}


def clip_v(source, generated, encoder, *, skip_frames: int = 1) -> float:
  """CLIP-V (Track2View sec. 4, after ReCamMaster): the mean cosine similarity of CLIP image embeddings of the source
  and the generated frame at the same timestamp, over frames `skip_frames..T-1` of two synchronised videos
  `[T, H, W, 3]` uint8 (sizes may differ).

  Args:
    encoder: maps `uint8 [N, H, W, 3]` to L2-normalised `[N, D]`, e.g. `camjax.eval.learned.load("clip", path)` (a
      local OpenAI CLIP TorchScript archive; camjax downloads nothing).

  Raises:
    SyncError: as `sync_scores` (shapes, frame counts, `skip_frames`).
  """
  a, b = _synchronised(source, generated, skip_frames)
  fa, fb = np.asarray(encoder(a[skip_frames:])), np.asarray(encoder(b[skip_frames:]))
  return float(np.mean(np.sum(fa * fb, axis=-1)))
