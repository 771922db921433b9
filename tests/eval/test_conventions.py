"""Hand-worked examples of every metric definition: summed radians (CamI2V) vs aligned mean degrees (CameraCtrl II)
vs Track2View, outlier rejection, PSNR/SSIM conventions, appearance consistency and the Fréchet distance."""

import numpy as np
import pytest

from camjax import geometry as g
from camjax.eval import EvalError, appearance_consistency, psnr, reject_outliers, score_trials, ssim
from camjax.eval.camera import Trial
from camjax.eval.learned import frechet_distance
from camjax.geometry import se3
from camjax.geometry.sfm import SfMResult

ALPHA = 0.05  # radians


def rz(a):
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def line_cameras(rotations):
  """Cameras at centres (i, 0, 0), camera-to-world rotations `rotations`, 64x64 images."""
  c2w = np.stack([se3.make_pose(R, np.array([i, 0.0, 0.0])) for i, R in enumerate(rotations)])
  return g.Cameras.from_c2w(c2w, g.intrinsics(50.0, 50.0, 32.0, 32.0), height=64, width=64)


GT = line_cameras([np.eye(3)] * 4)
# Frames 0..3 rotated about their optical axis by +a, -a, +a, -a: the orientation-fitted alignment is the identity
# (the perturbations cancel), while relative to frame 0 the odd frames are off by 2a and frame 2 by 0.
EST = line_cameras([rz(ALPHA), rz(-ALPHA), rz(ALPHA), rz(-ALPHA)])


def trial(cams, seed=0, reproj=0.5, frames=None):
  idx = np.arange(cams.num_frames) if frames is None else np.asarray(frames)
  return Trial(seed=seed, result=SfMResult(cameras=cams.take(idx), frame_indices=idx, num_frames=GT.num_frames,
                                           mean_reprojection_error=reproj))


def test_protocol_conventions_on_a_hand_worked_trajectory():
  res = score_trials([trial(EST)], GT)
  half = 2 * np.sin(ALPHA / 2)  # |e_x - Rz(-a) e_x|
  # CamI2V: relative to frame 0, SUMMED, radians: 2a + 0 + 2a.
  assert res["cami2v"]["rot_err"] == pytest.approx(4 * ALPHA, rel=1e-9)
  # translations normalised by max |t| = 3: sum_i (i / 3) |e_x - Rz(-a) e_x|
  assert res["cami2v"]["trans_err"] == pytest.approx((0 + 1 + 2 + 3) / 3 * half, rel=1e-9)
  rot_fro = [0, 2 * np.sqrt(2) * np.sin(ALPHA), 0, 2 * np.sqrt(2) * np.sin(ALPHA)]  # |I - Rz(2a)|_F
  cammc = sum(np.hypot(r, i / 3 * half) for i, r in enumerate(rot_fro))
  assert res["cami2v"]["cammc"] == pytest.approx(cammc, rel=1e-9)
  # CameraCtrl II: aligned, MEAN, degrees: every frame is off by a.
  assert res["cameractrl2"]["rot_err"] == pytest.approx(np.degrees(ALPHA), rel=1e-9)
  assert res["cameractrl2"]["trans_err"] == pytest.approx(0.0, abs=1e-12)
  # Track2View: relative to frame 0, MEAN degrees (0, 2a, 0, 2a); scale from frames 0-1 is 1.
  assert res["track2view"]["rot_err"] == pytest.approx(np.degrees(ALPHA), rel=1e-9)
  assert res["track2view"]["trans_err"] == pytest.approx((0 + 1 + 2 + 3) / 4 * half, rel=1e-9)
  # The two rotation conventions differ by the frame count and the unit: 4a rad vs a in degrees.
  assert res["cami2v"]["rot_err"] / np.radians(res["cameractrl2"]["rot_err"]) == pytest.approx(4.0)
  assert res["success_ratio"] == 1.0 and res["best_trial"] == 0


def test_failures_partial_registration_and_outlier_trials():
  bad = line_cameras([rz(0.5), rz(-0.5), rz(0.5), rz(-0.5)])  # a wildly wrong reconstruction
  trials = [trial(EST, seed=0, reproj=0.4), trial(EST, seed=1, reproj=0.3), trial(EST, seed=2, reproj=0.5),
            trial(bad, seed=3, reproj=0.2), Trial(seed=4, result=None, error="CameraError: no reconstruction"),
            trial(EST, seed=5, frames=[0, 1, 2])]
  res = score_trials(trials, GT)
  assert res["trials"] == 6 and res["successful_trials"] == 4 and res["kept_trials"] == 3
  assert res["success_ratio"] == pytest.approx(4 / 6)
  assert res["registered_ratio"] == pytest.approx((4 * 4 + 0 + 3) / (6 * 4))
  flags = [t["outlier"] for t in res["per_trial"]]
  assert flags == [False, False, False, True, False, False]
  assert "registered 3 of 4" in res["per_trial"][5]["error"]
  assert res["cameractrl2"]["rot_err"] == pytest.approx(np.degrees(ALPHA))
  assert res["cameractrl2"]["rot_err_std"] == pytest.approx(0.0, abs=1e-9)
  assert res["best_trial"] == 1  # lowest reprojection error among the kept trials, not the outlier's 0.2 px
  # Accepting partial reconstructions turns trial 5 into a success.
  assert score_trials(trials, GT, min_registered=0.75)["successful_trials"] == 5
  # No successful trial: NaN metrics, no estimate, nothing raised.
  none = score_trials([Trial(seed=0, result=None, error="x")], GT)
  assert none["success_ratio"] == 0 and np.isnan(none["cami2v"]["rot_err"]) and none["estimated_cameras"] is None


def test_pure_rotation_leaves_translation_protocols_undefined_instead_of_raising():
  pan = g.Cameras.from_c2w(np.stack([se3.make_pose(rz(0.1 * i), np.zeros(3)) for i in range(4)]),
                           g.intrinsics(50.0, 50.0, 32.0, 32.0), height=64, width=64)
  res = score_trials([trial(pan)], pan, protocols=("cami2v", "track2view"))
  assert np.isnan(res["cami2v"]["rot_err"]) and "translation" in res["per_trial"][0]["cami2v_note"]
  with pytest.raises(EvalError, match="unknown protocols"):
    score_trials([trial(pan)], pan, protocols=("cami2v", "bogus"))


def test_metric_variants_put_the_reconstruction_in_metres_with_frame_0s_depth():
  """RealCam-I2V's TransErr_abs / CamMC_abs (`cami2v_abs`): frame 0 sees points 4 m away (its metric depth). An SfM
  world at half scale (points at 2 units, centres i / 2) is put back in metres and scores 0; a reconstruction that
  moves the right way but twice as far (points at 2 units, centres i) scores the doubled distance, which the
  relative protocol (each trajectory normalised by its own scale) cannot see."""
  points = np.array([[x, y, 4.0] for x in (-1.0, 0.0, 1.0, 2.0) for y in (-1.0, 0.0, 1.0, 0.5, -0.5)])  # 20 points
  depth = np.full((64, 64), 4.0)

  def sfm(scale_points, scale_centres):
    c2w = np.stack([se3.make_pose(np.eye(3), np.array([i * scale_centres, 0.0, 0.0])) for i in range(4)])
    cams = g.Cameras.from_c2w(c2w, g.intrinsics(50.0, 50.0, 32.0, 32.0), height=64, width=64)
    result = SfMResult(cameras=cams, frame_indices=np.arange(4), num_frames=4, mean_reprojection_error=0.5,
                       frame_points={0: points * scale_points})
    return Trial(seed=0, result=result)

  right = score_trials([sfm(0.5, 0.5)], GT, protocols=("cami2v",), metric_depth=depth)
  assert right["cami2v_abs"]["trans_err"] == pytest.approx(0.0, abs=1e-9)
  assert right["cami2v_abs"]["cammc"] == pytest.approx(0.0, abs=1e-9)
  far = score_trials([sfm(0.5, 1.0)], GT, protocols=("cami2v",), metric_depth=depth)
  assert far["cami2v"]["trans_err"] == pytest.approx(0.0, abs=1e-9)  # relative: blind to the distance
  assert far["cami2v_abs"]["trans_err"] == pytest.approx((0 + 1 + 2 + 3) / 3, rel=1e-9)  # |t/3 - 2t/3| summed
  # Too few points on valid depth, or frame 0 not registered: NaN with a note, nothing raised.
  holes = score_trials([sfm(0.5, 0.5)], GT, protocols=("cami2v",), metric_depth=np.zeros((64, 64)))
  assert np.isnan(holes["cami2v_abs"]["trans_err"]) and "valid metric depth" in holes["per_trial"][0]["cami2v_abs_note"]
  with pytest.raises(EvalError, match="needs metric_depth"):
    score_trials([sfm(0.5, 0.5)], GT, protocols=("cami2v_abs",))


def test_reject_outliers():
  np.testing.assert_array_equal(reject_outliers([1.0, 1.1, 0.9, 10.0]), [True, True, True, False])
  np.testing.assert_array_equal(reject_outliers([1.0, 1.0, 1.0]), [True, True, True])  # MAD 0: 10% floor
  np.testing.assert_array_equal(reject_outliers([1.0, 50.0]), [True, True])  # too few to judge
  np.testing.assert_array_equal(reject_outliers([1.0, np.nan, 1.2, 1.1]), [True, False, True, True])


def test_psnr_hand_worked_and_value_conventions():
  zeros = np.zeros((2, 16, 16, 3), np.uint8)
  assert psnr(zeros, zeros + 255) == pytest.approx(0.0)
  assert psnr(zeros, zeros + 1) == pytest.approx(20 * np.log10(255.0))
  assert psnr(zeros, zeros) == 100.0  # capped
  # One frame identical, one off by 1/255 everywhere: the mean of per-frame PSNRs, not the PSNR of the mean MSE.
  b = zeros.copy()
  b[1] += 1
  assert psnr(zeros, b) == pytest.approx((100 + 20 * np.log10(255.0)) / 2)
  rng = np.random.default_rng(0)
  a8, b8 = rng.integers(0, 256, (2, 3, 24, 24, 3), dtype=np.uint8)
  ref = psnr(a8, b8)
  assert psnr(a8 / 255.0, b8 / 255.0) == pytest.approx(ref)  # [0, 1] floats
  assert psnr(a8 / 127.5 - 1, b8 / 127.5 - 1) == pytest.approx(ref)  # [-1, 1] floats
  assert ssim(a8 / 127.5 - 1, b8 / 127.5 - 1) == pytest.approx(ssim(a8, b8))
  with pytest.raises(EvalError, match="outside"):
    psnr(a8.astype(np.float32), b8.astype(np.float32))  # [0, 255] floats are ambiguous
  with pytest.raises(EvalError, match="shape"):
    psnr(a8, b8[:, :2])


def test_ssim_hand_worked():
  a = np.full((1, 20, 20, 3), 0.2)
  b = np.full((1, 20, 20, 3), 0.6)
  c1 = 0.01**2
  # Constant images: no variance, so SSIM is the luminance term alone.
  assert ssim(a, b) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1))
  rng = np.random.default_rng(1)
  x = rng.random((2, 32, 32, 3))
  assert ssim(x, x) == pytest.approx(1.0)
  noisy = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
  noisier = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
  assert 1.0 > ssim(x, noisy) > ssim(x, noisier) > 0
  assert ssim(x, noisy) == pytest.approx(ssim(noisy, x))  # symmetric
  # Negated structure (same means and variances): the structure term is negative.
  assert ssim(x, 1 - x) < 0
  with pytest.raises(EvalError, match="larger than"):
    ssim(x[:, :8, :8], x[:, :8, :8])


def test_appearance_consistency():
  red = np.zeros((4, 16, 16, 3), np.uint8)
  red[..., 0] = 200
  blue = np.zeros((4, 16, 16, 3), np.uint8)
  blue[..., 2] = 200
  same = appearance_consistency([red, red, red], overlap=2)
  assert same["color_hist_intersection"] == pytest.approx(1.0)
  assert same["overlap_psnr"] == 100.0 and same["overlap_ssim"] == pytest.approx(1.0)
  assert appearance_consistency([red, blue])["color_hist_intersection"] == pytest.approx(0.0)
  # Half-red half-blue vs red: intersection 0.5.
  mixed = red.copy()
  mixed[:, :8] = blue[:, :8]
  assert appearance_consistency([red, mixed])["color_hist_intersection"] == pytest.approx(0.5)
  # Feature cosine with a mean-colour "encoder": red vs mixed features (200, 0, 0) and (100, 0, 100) -> cos 45 deg.
  encoder = lambda v: v.reshape(len(v), -1, 3).mean(1)  # noqa: E731
  out = appearance_consistency([red, mixed], encoder=encoder)
  assert out["feature_cosine"] == pytest.approx(np.cos(np.pi / 4))
  with pytest.raises(EvalError, match="at least 2"):
    appearance_consistency([red])


def test_frechet_distance_hand_worked():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(500, 3))
  assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
  v = np.array([1.0, -2.0, 0.5])
  assert frechet_distance(a, a + v) == pytest.approx(np.sum(v**2), rel=1e-6)  # same covariance
  # Scaling centred features by 2: tr(S + 4S - 2 * 2S) = tr(S).
  c = a - a.mean(0)
  assert frechet_distance(c, 2 * c) == pytest.approx(np.trace(np.cov(c, rowvar=False)), rel=1e-6)
  with pytest.raises(EvalError, match="width"):
    frechet_distance(a, a[:, :2])
