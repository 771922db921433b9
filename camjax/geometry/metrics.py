"""Camera-trajectory error metrics, each named after the protocol it follows.

Inputs are `Cameras` or camera-to-world arrays `[T, 4, 4]` (OpenCV axes) of the SAME frames, estimated first and
ground truth second. Every function returns a plain dict of floats; units are in each docstring.

Protocols:
  * `ate`, `rpe` — TUM/evo absolute and relative pose error (translation part), metres (GT units).
  * `cami2v_errors` — CamI2V / RealCam-I2V: SUMS over frames, RotErr in radians (REFERENCE.md section 4).
  * `cameractrl2_errors` — CameraCtrl II: ATE-style Sim(3) alignment, MEANS, RotErr in degrees (section 3).
  * `track2view_errors` — Track2View: mean geodesic degrees; TransErr after scale alignment on the first two frames.
"""

from __future__ import annotations

import numpy as np

from camjax.geometry import se3
from camjax.geometry.align import Similarity, align_orientations, umeyama
from camjax.geometry.cameras import Cameras
from camjax.geometry.errors import CameraError


def _c2w(x) -> np.ndarray:
  c2w = np.asarray(x.c2w if isinstance(x, Cameras) else x, dtype=np.float64)
  if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
    raise CameraError(f"expected camera-to-world poses [T, 4, 4], got shape {c2w.shape}")
  if not np.isfinite(c2w).all():
    raise CameraError("camera poses contain NaN or inf")
  return c2w


def _pair(est, gt) -> tuple[np.ndarray, np.ndarray]:
  est, gt = _c2w(est), _c2w(gt)
  if len(est) != len(gt):
    raise CameraError(f"estimated trajectory has {len(est)} frames, ground truth {len(gt)}")
  return est, gt


def _relative_to_first(c2w: np.ndarray) -> np.ndarray:
  return se3.invert(c2w[0])[None] @ c2w


def _stats(errors: np.ndarray) -> dict[str, float]:
  return {"rmse": float(np.sqrt(np.mean(errors**2))), "mean": float(np.mean(errors)),
          "median": float(np.median(errors)), "std": float(np.std(errors)), "min": float(np.min(errors)),
          "max": float(np.max(errors)), "sse": float(np.sum(errors**2))}


# ------------------------------------------------------------------------------------------------ TUM / evo
def ate(est, gt, align: str = "sim3") -> dict[str, float]:
  """Absolute trajectory error (evo `ape`, translation part): `|c_gt_i - S(c_est_i)|` after aligning the estimate.

  Args:
    est, gt: `[T]` trajectories of associated frames (see `align.associate` for timestamps).
    align: "sim3" (Umeyama with scale, evo `--align --correct_scale`), "se3" (`--align`), or "none".

  Returns:
    `rmse, mean, median, std, min, max, sse` of the per-frame errors (GT units, metres for TUM/KITTI), and `scale`
    of the alignment.
  """
  est, gt = _pair(est, gt)
  if align == "none":
    sim = Similarity(1.0, np.eye(3), np.zeros(3))
  elif align in ("sim3", "se3"):
    sim = umeyama(est[:, :3, 3], gt[:, :3, 3], with_scale=align == "sim3")
  else:
    raise CameraError(f"unknown alignment {align!r}: use 'sim3', 'se3' or 'none'")
  errors = np.linalg.norm(gt[:, :3, 3] - sim.apply_points(est[:, :3, 3]), axis=-1)
  return {**_stats(errors), "scale": sim.scale}


def rpe(est, gt, delta: int = 1, align: str = "none") -> dict[str, float]:
  """Relative pose error (evo `rpe`, translation part, delta in frames, consecutive non-overlapping pairs):
  `|trans((gt_i^-1 gt_j)^-1 (est_i^-1 est_j))|` for pairs `(i, j = i + delta)`, `i = 0, delta, 2 delta, ...`.

  Args:
    est, gt: `[T]` trajectories of associated frames.
    delta: frame step.
    align: "none" (evo's default) or "sim3" (estimate scaled by the Umeyama scale first).

  Returns:
    `rmse, mean, median, std, min, max, sse` in GT units.
  """
  est, gt = _pair(est, gt)
  if delta < 1 or delta >= len(est):
    raise CameraError(f"rpe delta {delta} out of range for {len(est)} frames")
  if align == "sim3":
    est = umeyama(est[:, :3, 3], gt[:, :3, 3]).apply_c2w(est)
  elif align != "none":
    raise CameraError(f"unknown alignment {align!r}: use 'none' or 'sim3'")
  i = np.arange(0, len(est), delta)
  i, j = i[:-1], i[1:]
  rel_gt = se3.invert(gt[i]) @ gt[j]
  rel_est = se3.invert(est[i]) @ est[j]
  E = se3.invert(rel_gt) @ rel_est
  return _stats(np.linalg.norm(E[:, :3, 3], axis=-1))


# ---------------------------------------------------------------------------------------- CamI2V / RealCam
def cami2v_errors(est, gt, metric: bool = False) -> dict[str, float]:
  """CamI2V / RealCam-I2V camera errors (their Table 1 protocol), poses relative to frame 0, SUMMED over frames.

  * `rot_err`: sum of geodesic angles between relative rotations, RADIANS.
  * `trans_err`: sum of `|t_gt / s_gt - t_est / s_est|` over relative camera centres with `s = max_i |t_i|` of each
    trajectory (relative protocol); with `metric=True` both are divided by the GT's `s_gt` instead (the metric-
    scale protocol, for estimates already in metres).
  * `cammc`: sum of Frobenius norms of the 3x4 `[R | t]` differences, translations normalised as for `trans_err`.

  Units: radians and GT-normalised (unitless).
  """
  est, gt = map(_relative_to_first, _pair(est, gt))
  t_est, t_gt = est[:, :3, 3], gt[:, :3, 3]
  s_gt = np.linalg.norm(t_gt, axis=-1).max()
  s_est = s_gt if metric else np.linalg.norm(t_est, axis=-1).max()
  if s_gt <= 1e-12 or s_est <= 1e-12:
    raise CameraError("cami2v_errors: a trajectory has no translation to normalise by")
  t_gt_n, t_est_n = t_gt / s_gt, t_est / s_est
  rot = se3.geodesic_angle(gt[:, :3, :3], est[:, :3, :3])
  trans = np.linalg.norm(t_gt_n - t_est_n, axis=-1)
  diff = np.concatenate([gt[:, :3, :3] - est[:, :3, :3], (t_gt_n - t_est_n)[..., None]], axis=-1)
  cammc = np.linalg.norm(diff.reshape(len(gt), -1), axis=-1)
  return {"rot_err": float(rot.sum()), "trans_err": float(trans.sum()), "cammc": float(cammc.sum())}


# ------------------------------------------------------------------------------------------------ CameraCtrl II
def cameractrl2_errors(est, gt, rotation_fit: str = "orientations") -> dict[str, float]:
  """CameraCtrl II camera errors (sec. 4.2): align the estimate to GT with a similarity (ATE style: centre both,
  fit scale, rotation by SVD, translation), then MEANS over frames.

  * `trans_err`: mean `|c_gt_i - S(c_est_i)|` (GT units);
  * `rot_err`: mean geodesic angle between `R_align R_est_i` and `R_gt_i`, DEGREES.

  Args:
    rotation_fit: "positions" = the paper's literal Umeyama on camera centres; "orientations" (default) fits the
      alignment rotation to the camera orientations (see `align.align_orientations`), which removes the
      ~1.5 degree rotation floor that centre-only alignment has on near-straight real trajectories.
  """
  est, gt = _pair(est, gt)
  if rotation_fit == "positions":
    sim = umeyama(est[:, :3, 3], gt[:, :3, 3])
  elif rotation_fit == "orientations":
    sim = align_orientations(est, gt)
  else:
    raise CameraError(f"unknown rotation_fit {rotation_fit!r}: use 'orientations' or 'positions'")
  aligned = sim.apply_c2w(est)
  trans = np.linalg.norm(gt[:, :3, 3] - aligned[:, :3, 3], axis=-1)
  rot = np.rad2deg(se3.geodesic_angle(gt[:, :3, :3], aligned[:, :3, :3]))
  return {"trans_err": float(trans.mean()), "rot_err": float(rot.mean()), "scale": sim.scale}


# ---------------------------------------------------------------------------------------------- Track2View
def track2view_errors(est, gt) -> dict[str, float]:
  """Track2View camera errors (its sec. 4, following CameraCtrl): poses relative to frame 0;
  `rot_err` = mean geodesic angle, DEGREES; `trans_err` = mean `|t_gt_i - s t_est_i|` with the scale
  `s = |t_gt_1| / |t_est_1|` aligned on the first two frames (GT units).

  Raises:
    CameraError: fewer than 2 frames, or no motion between the first two frames of either trajectory.
  """
  est, gt = map(_relative_to_first, _pair(est, gt))
  if len(gt) < 2:
    raise CameraError("track2view_errors needs at least 2 frames")
  n_gt, n_est = np.linalg.norm(gt[1, :3, 3]), np.linalg.norm(est[1, :3, 3])
  if n_gt <= 1e-12 or n_est <= 1e-12:
    raise CameraError("track2view_errors: no translation between the first two frames to align the scale on")
  s = n_gt / n_est
  trans = np.linalg.norm(gt[:, :3, 3] - s * est[:, :3, 3], axis=-1)
  rot = np.rad2deg(se3.geodesic_angle(gt[:, :3, :3], est[:, :3, :3]))
  return {"trans_err": float(trans.mean()), "rot_err": float(rot.mean()), "scale": float(s)}
