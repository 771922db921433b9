"""MotionFlow's camera protocol (appendix A): summed geodesic RotErr (radians) and summed, unnormalised TransErr of
first-frame-relative poses, against an independent NumPy evaluation and hand cases."""

import numpy as np
import pytest

from camjax.eval.motionflow import compare_estimates, motionflow_errors
from camjax.geometry.cameras import Cameras
from camjax.geometry.errors import CameraError
from camjax.geometry.sfm import SfMResult


def rot(axis, angle):
  """Rodrigues, written out here (not camjax's so3_exp)."""
  k = np.asarray(axis, float) / np.linalg.norm(axis)
  Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def random_rotations(rs, n):
  q = rs.standard_normal((n, 4))
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  w, x, y, z = q.T
  return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
                   np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
                   np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], 1)


def poses(R, t):
  P = np.tile(np.eye(4), (len(R), 1, 1))
  P[:, :3, :3], P[:, :3, 3] = R, t
  return P


def reference(est, gt, relative=True, translation="c2w"):
  """Appendix A evaluated directly: arccos of the trace, sums over frames."""
  if relative:
    est = np.stack([np.linalg.inv(est[0]) @ p for p in est])
    gt = np.stack([np.linalg.inv(gt[0]) @ p for p in gt])
  if translation == "w2c":
    est, gt = np.linalg.inv(est), np.linalg.inv(gt)
  rot_err = trans_err = 0.0
  for a, b in zip(est, gt):
    rot_err += np.arccos(np.clip((np.trace(a[:3, :3].T @ b[:3, :3]) - 1) / 2, -1, 1))
    trans_err += np.linalg.norm(a[:3, 3] - b[:3, 3])
  return rot_err, trans_err


@pytest.mark.parametrize("relative, translation", [(True, "c2w"), (False, "c2w"), (True, "w2c")])
def test_matches_a_direct_numpy_evaluation_on_random_trajectories(relative, translation):
  rs = np.random.default_rng(0)
  for _ in range(5):
    n = 7
    gt = poses(random_rotations(rs, n), rs.standard_normal((n, 3)) * 3)
    est = poses(random_rotations(rs, n), rs.standard_normal((n, 3)) * 3)
    got = motionflow_errors(est, gt, relative=relative, translation=translation)
    want = reference(est, gt, relative, translation)
    # arccos of a trace within 1e-16 of 3 (frame 0 after `relative`) is ~1e-8 off zero; camjax's atan2 form is not.
    np.testing.assert_allclose([got["rot_err"], got["trans_err"]], want, rtol=1e-9, atol=1e-7)
    assert got["rot_err"] > 1.0 and got["trans_err"] > 1.0


def test_hand_cases():
  rs = np.random.default_rng(1)
  gt = poses(random_rotations(rs, 5), rs.standard_normal((5, 3)))
  assert motionflow_errors(gt, gt) == {"rot_err": 0.0, "trans_err": 0.0}
  # One frame turned by 90 degrees about its own optical axis: RotErr = pi / 2, centres unchanged.
  est = gt.copy()
  est[3, :3, :3] = est[3, :3, :3] @ rot([0, 0, 1], np.pi / 2)
  got = motionflow_errors(est, gt)
  assert got["rot_err"] == pytest.approx(np.pi / 2, abs=1e-12)
  assert got["trans_err"] == pytest.approx(0.0, abs=1e-12)
  # One camera centre moved by 0.5 along x (first frame fixed): TransErr = 0.5 in the first camera's frame too.
  est = gt.copy()
  est[2, :3, 3] += [0.5, 0, 0]
  assert motionflow_errors(est, gt)["trans_err"] == pytest.approx(0.5, abs=1e-12)
  # Translations are NOT normalised: scaling both trajectories scales TransErr; RotErr is unchanged.
  est = poses(random_rotations(rs, 5), rs.standard_normal((5, 3)))
  a, b = motionflow_errors(est, gt), motionflow_errors(_scaled(est, 10), _scaled(gt, 10))
  assert b["trans_err"] == pytest.approx(10 * a["trans_err"], rel=1e-12)
  assert b["rot_err"] == pytest.approx(a["rot_err"], rel=1e-12)


def _scaled(P, s):
  P = P.copy()
  P[:, :3, 3] *= s
  return P


def test_relative_removes_a_common_rigid_motion_but_not_a_per_frame_error():
  rs = np.random.default_rng(2)
  gt = poses(random_rotations(rs, 6), rs.standard_normal((6, 3)))
  world = poses(random_rotations(rs, 1), rs.standard_normal((1, 3)))[0]
  moved = world[None] @ gt  # the same trajectory in another SfM world frame
  assert motionflow_errors(moved, gt)["rot_err"] == pytest.approx(0.0, abs=1e-9)
  assert motionflow_errors(moved, gt)["trans_err"] == pytest.approx(0.0, abs=1e-9)
  assert motionflow_errors(moved, gt, relative=False)["rot_err"] > 0.1


def test_accepts_cameras_and_compares_common_sfm_frames():
  rs = np.random.default_rng(3)
  gt = poses(random_rotations(rs, 6), rs.standard_normal((6, 3)))
  est = poses(random_rotations(rs, 6), rs.standard_normal((6, 3)))
  cams = lambda P: Cameras.from_c2w(P, np.diag([100.0, 100.0, 1.0]), height=64, width=64)
  want = motionflow_errors(est, gt)
  got = motionflow_errors(cams(est), cams(gt))
  assert got == pytest.approx(want, rel=1e-9)
  # SfM registered frames {0, 1, 3, 4, 5} of the generated video and {0, 2, 3, 4, 5} of the real one: 0, 3, 4, 5.
  gen_idx, real_idx = np.array([0, 1, 3, 4, 5]), np.array([0, 2, 3, 4, 5])
  gen = SfMResult(cams(est[gen_idx]), gen_idx, 6, 0.5)
  real = SfMResult(cams(gt[real_idx]), real_idx, 6, 0.5)
  common = [0, 3, 4, 5]
  got = compare_estimates(gen, real)
  assert got["frames"] == 4
  assert got["rot_err"] == pytest.approx(motionflow_errors(est[common], gt[common])["rot_err"], rel=1e-9)
  assert got["trans_err"] == pytest.approx(motionflow_errors(est[common], gt[common])["trans_err"], rel=1e-9)


def test_bad_inputs_raise_named_errors():
  gt = np.tile(np.eye(4), (3, 1, 1))
  with pytest.raises(CameraError, match="4 frames, ground truth 3"):
    motionflow_errors(np.tile(np.eye(4), (4, 1, 1)), gt)
  with pytest.raises(CameraError, match=r"\[T, 4, 4\]"):
    motionflow_errors(gt[:, :3], gt)
  bad = gt.copy()
  bad[2, 0, 0] = np.nan
  with pytest.raises(CameraError, match="frame 2.*NaN"):
    motionflow_errors(bad, gt)
  bad = gt.copy()
  bad[1, :3, :3] *= 1.1  # not a rotation
  with pytest.raises(CameraError, match="frame 1.*SO\\(3\\)"):
    motionflow_errors(gt, bad)
  bad = gt.copy()
  bad[1, :3, :3] = np.diag([1.0, 1.0, -1.0])  # a reflection (det -1)
  with pytest.raises(CameraError, match="frame 1.*det"):
    motionflow_errors(gt, bad)
  with pytest.raises(CameraError, match="translation"):
    motionflow_errors(gt, gt, translation="centre")


def test_the_protocol_is_registered_in_camera_accuracy_by_name():
  from camjax.eval import camera
  from camjax.geometry import Cameras, intrinsics
  rng = np.random.default_rng(3)
  T = 6
  w2c = np.tile(np.eye(4), (T, 1, 1))
  w2c[:, 0, 3] = np.linspace(0, 1, T)
  cams = Cameras(K=np.tile(intrinsics(50.0, 50.0, 32.0, 32.0), (T, 1, 1)), w2c=w2c, height=64, width=64)
  from camjax.geometry.sfm import SfMResult
  est_w2c = w2c.copy()
  est_w2c[1:, :3, 3] += rng.normal(0, 0.05, (T - 1, 3))
  est = Cameras(K=cams.K, w2c=est_w2c, height=64, width=64)
  trial = camera.Trial(seed=0, result=SfMResult(cameras=est, frame_indices=np.arange(T), num_frames=T,
                                                 mean_reprojection_error=0.5))
  result = camera.score_trials([trial], cams, protocols=("motionflow",))
  assert {"rot_err", "trans_err"} <= set(result["motionflow"]) and result["motionflow"]["trans_err"] > 0
  assert "motionflow/rot_err" in camera.summary(result)
