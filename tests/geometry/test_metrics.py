"""Alignment and error metrics: evo parity on real SLAM trajectories, known transforms, protocol properties."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from camjax import geometry as g
from camjax.geometry import CameraError, metrics, se3


def random_c2w(T=20, seed=0):
  rng = np.random.default_rng(seed)
  R = Rotation.random(T, random_state=seed).as_matrix()
  return se3.make_pose(R, np.cumsum(rng.normal(size=(T, 3)), axis=0))


def sim3(c2w, s, R, t):
  return g.Similarity(s, R, t).apply_c2w(c2w)


def test_umeyama_recovers_a_known_similarity():
  src = np.random.default_rng(0).normal(size=(30, 3))
  R = Rotation.from_rotvec([0.3, -1.0, 0.5]).as_matrix()
  dst = 2.5 * src @ R.T + [1, 2, 3]
  s, R_fit, t = g.umeyama(src, dst)
  assert s == pytest.approx(2.5)
  np.testing.assert_allclose(R_fit, R, atol=1e-12)
  np.testing.assert_allclose(t, [1, 2, 3], atol=1e-12)
  assert g.umeyama(src, dst, with_scale=False).scale == 1.0
  with pytest.raises(CameraError, match="shape"):
    g.umeyama(src, dst[:5])
  with pytest.raises(CameraError, match="identical"):
    g.umeyama(np.zeros((5, 3)), dst[:5])


def test_ate_rpe_agree_with_evo_on_tum_fr1_xyz(shared_data):
  pytest.importorskip("evo")
  import copy

  from evo.core import metrics as evo_metrics
  from evo.core import sync
  from evo.tools import file_interface

  d = shared_data / "slam_trajectories" / "evo"
  for estimate in ("freiburg1_xyz-rgbdslam.txt", "freiburg1_xyz-ORB_kf_mono.txt"):
    ref = file_interface.read_tum_trajectory_file(str(d / "freiburg1_xyz-groundtruth.txt"))
    est = file_interface.read_tum_trajectory_file(str(d / estimate))
    ref, est = sync.associate_trajectories(ref, est)
    aligned = copy.deepcopy(est)
    aligned.align(ref, correct_scale=True)
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, aligned))
    rpe = evo_metrics.RPE(evo_metrics.PoseRelation.translation_part, delta=1, delta_unit=evo_metrics.Unit.frames,
                          all_pairs=False)
    rpe.process_data((ref, est))

    gt, ours = g.read_tum(d / "freiburg1_xyz-groundtruth.txt"), g.read_tum(d / estimate)
    i_gt, i_est = g.associate(gt.timestamps, ours.timestamps)
    np.testing.assert_array_equal(gt.timestamps[i_gt], ref.timestamps)
    ate = metrics.ate(ours.take(i_est), gt.take(i_gt), align="sim3")
    rel = metrics.rpe(ours.take(i_est), gt.take(i_gt), delta=1)
    for ours_stats, evo_stats in ((ate, ape.get_all_statistics()), (rel, rpe.get_all_statistics())):
      for key in ("rmse", "mean", "median", "std", "min", "max", "sse"):
        assert ours_stats[key] == pytest.approx(float(evo_stats[key]), rel=1e-6), (estimate, key)


def test_errors_vanish_for_a_similar_copy_and_grow_with_noise():
  gt = random_c2w()
  est = sim3(gt, 0.3, Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix(), np.array([5.0, 0, 0]))
  for fit in ("orientations", "positions"):
    e = metrics.cameractrl2_errors(est, gt, rotation_fit=fit)
    assert e["trans_err"] < 1e-9 and e["rot_err"] < 1e-6 and e["scale"] == pytest.approx(1 / 0.3)
  assert metrics.ate(est, gt)["rmse"] < 1e-9
  noisy = est.copy()
  noisy[:, :3, 3] += np.random.default_rng(1).normal(scale=0.05, size=(20, 3))
  assert metrics.cameractrl2_errors(noisy, gt)["trans_err"] > 0.01


def test_orientation_fit_removes_the_roll_floor_of_centre_only_alignment():
  """A straight path leaves the roll about the travel direction free for centre-only Umeyama (REFERENCE.md 4)."""
  T = 25
  c2w = np.tile(np.eye(4), (T, 1, 1))
  c2w[:, 2, 3] = np.linspace(0, 2, T)
  c2w[:, :3, :3] = Rotation.from_rotvec(np.outer(np.linspace(0, 0.2, T), [0, 1, 0])).as_matrix()
  noise = np.random.default_rng(0).normal(scale=1e-3, size=(T, 3))
  noise[:, 2] = 0
  est = c2w.copy()
  est[:, :3, 3] += noise
  by_orientation = metrics.cameractrl2_errors(est, c2w, rotation_fit="orientations")["rot_err"]
  assert by_orientation < 1e-6
  assert metrics.cameractrl2_errors(est, c2w, rotation_fit="positions")["rot_err"] > 100 * by_orientation


def test_a_reversed_trajectory_does_not_align_to_the_true_one():
  """Orientation fit + least-squares scale would pick s < 0 (a point reflection) for a trajectory run backwards
  and report zero translation error; the scale is constrained to s >= 0."""
  T = 17
  gt = np.tile(np.eye(4), (T, 1, 1))
  gt[:, 0, 3] = np.linspace(0, 1, T)  # truck right 1 m
  rev = gt.copy()
  rev[:, 0, 3] *= -1  # truck left 1 m
  sim = g.align_orientations(rev, gt)
  assert sim.scale == 0.0
  err = metrics.cameractrl2_errors(rev, gt)["trans_err"]
  assert err == pytest.approx(np.abs(np.linspace(0, 1, T) - 0.5).mean())  # every centre at the GT mean
  assert metrics.cameractrl2_errors(gt, gt)["trans_err"] < 1e-12


def test_cami2v_sums_and_normalisation():
  gt = random_c2w(T=10)
  zero = metrics.cami2v_errors(gt, gt)
  assert all(v == pytest.approx(0, abs=1e-9) for v in zero.values())
  # Scale-free relative protocol: a uniformly scaled estimate has no translation error; the metric one does.
  scaled = gt.copy()
  scaled[:, :3, 3] *= 3
  assert metrics.cami2v_errors(scaled, gt)["trans_err"] == pytest.approx(0, abs=1e-9)
  assert metrics.cami2v_errors(scaled, gt, metric=True)["trans_err"] > 1
  # Rotation error is a SUM in radians: one frame off by 0.1 rad about its own axis gives 0.1.
  bent = gt.copy()
  bent[4, :3, :3] = bent[4, :3, :3] @ Rotation.from_rotvec([0, 0, 0.1]).as_matrix()
  assert metrics.cami2v_errors(bent, gt)["rot_err"] == pytest.approx(0.1, rel=1e-6)


def test_track2view_scale_from_first_two_frames_and_degrees():
  gt = random_c2w(T=8)
  rel = se3.invert(gt[0])[None] @ gt
  est = rel.copy()
  est[:, :3, 3] *= 0.2  # any global scale is undone by the first-two-frames alignment
  e = metrics.track2view_errors(est, gt)
  assert e["trans_err"] == pytest.approx(0, abs=1e-9) and e["scale"] == pytest.approx(5.0)
  bent = rel.copy()
  bent[1:, :3, :3] = bent[1:, :3, :3] @ Rotation.from_rotvec([0, np.radians(2.0), 0]).as_matrix()
  assert metrics.track2view_errors(bent, gt)["rot_err"] == pytest.approx(2.0 * 7 / 8)
  with pytest.raises(CameraError, match="frames"):
    metrics.track2view_errors(gt[:3], gt)
