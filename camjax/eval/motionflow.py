"""MotionFlow's camera-trajectory protocol (papers/001, sec. 4.1 and appendix A; REFERENCE.md section 6).

What the paper prints (appendix A):

  RotErr   = sum_{i=1}^{n} arccos((tr(R_out_i^T R_gt_i^T) - 1) / 2)          (eq. 5, radians)
  TransErr = sum_{i=1}^{n} || T_out_i - T_gt_i ||_2                           (eq. 6)

"The relative rotation distances are then converted to radians, and we sum the total error of all frames"; "the norm of
the relative translation vector for each frame is also summed". The cameras of the generated video AND of the real video
are both estimated with the same SfM method (sec. 4.1: "to eliminate the potential scale differences"); translations are
not normalised. This is not the CamI2V protocol (`camjax.geometry.metrics.cami2v_errors`), which divides every
trajectory by its largest translation.

What camjax implements (`motionflow_errors`):

* eq. 5's `R_gt^T` is a typo: `arccos((tr(A^T B^T) - 1) / 2)` is not a distance between `A` and `B` (it is not zero for
  `A = B` unless `A^2 = I`). camjax uses `tr(R_out^T R_gt)`, the geodesic angle between the two rotations, computed
  as `atan2(|skew|, (tr - 1) / 2)` (`camjax.geometry.se3.geodesic_angle`), equal to the arccos form but accurate near
  0 and pi.
* "relative": both trajectories are first expressed relative to their own first frame, `rel_c2w_i = c2w_0^-1 c2w_i`
  (REFERENCE.md section 1, the CameraCtrl / MotionCtrl convention the paper follows), so frame 0 is the identity in
  both and contributes 0; every frame, frame 0 included, is summed. `relative=False` compares the poses as given.
* `T` is the translation of the relative camera-to-world pose, i.e. the camera centre in the first camera's frame
  (`translation="c2w"`, default); `translation="w2c"` uses the translation of the relative world-to-camera pose
  (`-R^T c`), which has the same norm per frame but differs when the rotations differ.
* No scale alignment: `trans_err` is in the units of the inputs. Compare estimates of the SAME SfM method on the
  generated and the real video (`compare_estimates`), as the paper does; against conditioning (ground-truth) cameras
  the number depends on the SfM's arbitrary scale.

Running the protocol with camjax's SfM: `camjax.eval.camera.estimate_trials` on the generated and on the real video
(same intrinsics, mapper and seeds), then `compare_estimates(gen_trial.result, real_trial.result)` per trial pair.
"""

from __future__ import annotations

import numpy as np

from camjax.geometry import se3
from camjax.geometry.cameras import Cameras
from camjax.geometry.errors import CameraError

METRIC_KEYS = ("rot_err", "trans_err")
UNITS = {"rot_err": "rad, summed", "trans_err": "input units, summed, not normalised"}
ROTATION_TOLERANCE = 1e-4  # |R^T R - I| and |det R - 1| (REFERENCE.md section 1)
TRANSLATIONS = ("c2w", "w2c")


def _c2w(x, name: str) -> np.ndarray:
  c2w = np.asarray(x.c2w if isinstance(x, Cameras) else x, dtype=np.float64)
  if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or len(c2w) == 0:
    raise CameraError(f"motionflow_errors: {name} must be camera-to-world poses [T, 4, 4] with T >= 1, got shape "
                      f"{c2w.shape}")
  bad = np.flatnonzero(~np.isfinite(c2w).all(axis=(1, 2)))
  if len(bad):
    raise CameraError(f"motionflow_errors: {name} pose contains NaN or inf", frame=int(bad[0]))
  R = c2w[:, :3, :3]
  ortho = np.abs(np.swapaxes(R, 1, 2) @ R - np.eye(3)).max(axis=(1, 2))
  det = np.linalg.det(R)
  bad = np.flatnonzero((ortho > ROTATION_TOLERANCE) | (np.abs(det - 1.0) > ROTATION_TOLERANCE))
  if len(bad):
    i = int(bad[0])
    raise CameraError(f"motionflow_errors: {name} rotation is not in SO(3) (|R^T R - I| = {ortho[i]:.2e}, det = "
                      f"{det[i]:.6f})", frame=i)
  return c2w


def motionflow_errors(est, gt, *, relative: bool = True, translation: str = "c2w") -> dict[str, float]:
  """MotionFlow's RotErr and TransErr (appendix A, eqs. 5-6 as corrected in the module docstring), SUMMED over frames.

  Args:
    est: `[T, 4, 4]` camera-to-world poses (OpenCV axes) of the generated video, or `Cameras [T]`.
    gt: `[T, 4, 4]` camera-to-world poses of the real video (estimated by the same SfM in the paper), or `Cameras`.
    relative: express each trajectory relative to its own first frame first (`c2w_0^-1 c2w_i`; the paper's
      "relative" distances). False compares the given poses.
    translation: "c2w" (camera centres, default) or "w2c" (world-to-camera translations) of the (relative) poses.

  Returns:
    `{"rot_err": sum_i angle(R_est_i^T R_gt_i) in RADIANS, "trans_err": sum_i |t_est_i - t_gt_i|_2 in the poses' units
    (not normalised)}`.

  Raises:
    CameraError: shapes other than `[T, 4, 4]`, different frame counts, NaN/inf, a rotation outside SO(3) (tolerance
      `ROTATION_TOLERANCE`; the frame is named), or an unknown `translation`.
  """
  if translation not in TRANSLATIONS:
    raise CameraError(f"motionflow_errors: translation {translation!r} must be one of {TRANSLATIONS}")
  est, gt = _c2w(est, "est"), _c2w(gt, "gt")
  if len(est) != len(gt):
    raise CameraError(f"motionflow_errors: estimated trajectory has {len(est)} frames, ground truth {len(gt)}")
  if relative:
    est, gt = se3.invert(est[0])[None] @ est, se3.invert(gt[0])[None] @ gt
  if translation == "w2c":
    est, gt = se3.invert(est), se3.invert(gt)
  rot = se3.geodesic_angle(est[:, :3, :3], gt[:, :3, :3])
  trans = np.linalg.norm(est[:, :3, 3] - gt[:, :3, 3], axis=-1)
  return {"rot_err": float(rot.sum()), "trans_err": float(trans.sum())}


def compare_estimates(generated, real, **kw) -> dict[str, float]:
  """MotionFlow's protocol on two SfM estimates (sec. 4.1): the generated video's cameras against the real video's,
  both from the same SfM method, on the frames BOTH registered.

  Args:
    generated, real: `camjax.geometry.sfm.SfMResult` of the generated and of the real video (same frame count).
    **kw: `relative`, `translation` of `motionflow_errors` (relative to the first COMMON frame).

  Returns:
    `motionflow_errors` of the common frames, plus `frames` (how many were compared).

  Raises:
    CameraError: the videos have different frame counts or fewer than one common registered frame.
  """
  if generated.num_frames != real.num_frames:
    raise CameraError(f"compare_estimates: the generated video has {generated.num_frames} frames, the real one "
                      f"{real.num_frames}")
  common, gen_idx, real_idx = np.intersect1d(np.asarray(generated.frame_indices), np.asarray(real.frame_indices),
                                             return_indices=True)
  if len(common) == 0:
    raise CameraError("compare_estimates: no frame is registered in both reconstructions")
  errs = motionflow_errors(np.asarray(generated.cameras.c2w)[gen_idx], np.asarray(real.cameras.c2w)[real_idx], **kw)
  return {**errs, "frames": int(len(common))}
