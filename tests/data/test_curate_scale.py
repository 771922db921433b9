"""Stage 4 (scale calibration, CameraCtrl II eq. 2 and the RealCam-I2V variant) and the depth sources."""

import numpy as np
import pytest

from camjax import geometry as g
from camjax.data.curate import CurationError, scale, validation


def _pairs(rng, n=2000, s_true=3.7, noise=0.01):
  metric = rng.uniform(0.5, 8.0, n)
  sfm = metric / s_true * (1 + noise * rng.standard_normal(n))
  return sfm, metric


def test_ransac_recovers_the_scale_under_30_percent_outliers():
  rng = np.random.default_rng(0)
  sfm, metric = _pairs(rng)
  bad = rng.choice(len(sfm), size=int(0.3 * len(sfm)), replace=False)
  corrupted = metric.copy()
  corrupted[bad] = rng.uniform(0.2, 20.0, len(bad))  # 30% wrong metric depths
  fit = scale.fit_scale(sfm, corrupted)
  assert abs(fit.scale / 3.7 - 1) < 0.01, fit
  assert 0.6 < fit.inlier_ratio < 0.8
  # the closed-form least-squares fit is pulled away by the same outliers: the test discriminates
  assert abs(scale.least_squares_scale(sfm, corrupted) / 3.7 - 1) > 0.05


def test_without_outliers_it_matches_the_closed_form_fit():
  rng = np.random.default_rng(1)
  sfm, metric = _pairs(rng, noise=0.005)
  fit = scale.fit_scale(sfm, metric)
  assert fit.scale == pytest.approx(scale.least_squares_scale(sfm, metric), rel=2e-3)
  exact = scale.fit_scale(metric / 2.5, metric)
  assert exact.scale == pytest.approx(2.5, rel=1e-9) and exact.inlier_ratio == 1.0


def test_realcam_frame_factor_and_quantile_filter():
  rng = np.random.default_rng(2)
  sfm, metric = _pairs(rng, s_true=1.5)
  assert scale.median_ratio_scale(sfm, metric) == pytest.approx(1.5, rel=0.01)
  factors = [list(1.0 + 0.01 * rng.standard_normal(4)) for _ in range(100)]
  factors[7][2] = 50.0  # one frame of clip 7 is off: its max factor is the dataset's largest
  factors[42][0] = 0.01
  keep = scale.realcam_keep(factors, quantile=0.02)
  assert not keep[7] and not keep[42] and keep.sum() >= 90


def test_calibrate_clip_recovers_a_known_scale_from_rendered_depth():
  clip = validation.render_clip(7, "truck_right:0.8+tilt_up:6")  # with moving objects
  s_true = 7.0
  sfm_like = clip.cameras.scale_translation(1 / s_true)  # exact cameras at an arbitrary scale
  result = scale.calibrate_clip(clip.frames, sfm_like, clip.depth)
  assert abs(result.scale / s_true - 1) < 0.03, result.stats()
  assert all(abs(f / s_true - 1) < 0.06 for f in result.frame_factors)
  with pytest.raises(CurationError, match="no keyframe"):
    scale.calibrate_clip(clip.frames, sfm_like, np.zeros_like(clip.depth))


def test_points_depth_projects_into_the_keyframe():
  cams = g.Cameras.from_c2w(np.eye(4)[None], g.intrinsics(100, 100, 32, 24), height=48, width=64)
  uv, z = scale.points_depth([[0, 0, 2.0], [0.1, 0, 4.0], [0, 0, -1.0], [50, 0, 1.0]], cams.w2c[0], cams.K[0], 48, 64)
  np.testing.assert_allclose(z, [2.0, 4.0])
  np.testing.assert_allclose(uv, [[32, 24], [34.5, 24]])


def test_depth_sources(tmp_path):
  import cv2
  frames = np.zeros((3, 24, 32, 3), np.uint8)
  folder = tmp_path / "vid"
  folder.mkdir()
  for i in range(4):
    cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((48, 64), 1000 * (i + 1), np.uint16))
  depth = scale.DepthFolder(tmp_path, scale=1000.0)("vid", np.array([1, 2, 3]), frames)
  assert depth.shape == (3, 24, 32)
  np.testing.assert_allclose(depth[:, 0, 0], [2.0, 3.0, 4.0])
  assert scale.DepthFolder(tmp_path)("other", np.array([0]), frames) is None
  with pytest.raises(CurationError, match="depth maps"):
    scale.DepthFolder(tmp_path)("vid", np.array([9]), frames)
