"""RealCam-I2V metric scene-scale alignment (camjax.data.curate.metric): pycolmap triangulation with known cameras,
frame factors, the dataset filter, RealEstate10K-layout clips, and the scale of a real SfM reconstruction recovered
from sensor depth."""

import json

import numpy as np
import pytest

from camjax import depth as dp
from camjax import geometry as g
from camjax.data.curate import CurationError, metric, validation
from camjax.geometry import se3


@pytest.fixture(scope="module")
def static_clip():
  """A static procedural scene seen by a translating, tilting camera (metric ground-truth cameras and depth)."""
  return validation.render_clip(3, "truck_right:0.8+tilt_up:6", num_frames=8, height=120, width=160, moving=False)


def test_procedural_scale_recovered_within_2_percent(static_clip):
  clip = static_clip
  s = float(np.exp(np.random.default_rng(7).uniform(np.log(0.05), np.log(20))))  # an unknown SfM scale
  relative = clip.cameras.scale_translation(1 / s)
  points = metric.triangulate_clip(clip.frames, relative)
  a = metric.align_clip(clip.frames, relative, dp.RenderedDepth.from_clip(clip), points=points)
  assert abs(a.factor / s - 1) < 0.02, a.stats()
  assert a.frames == list(range(8)) and all(abs(f / s - 1) < 0.02 for f in a.frame_factors), a.stats()
  assert min(a.num_points) >= 50 and a.mean_reprojection_error < 1.0
  # the scaled cameras are the metric ones, and relative to the reference they are the paper's c_cam^metric
  np.testing.assert_allclose(a.cameras.centers, clip.cameras.centers, atol=0.02 * np.abs(clip.cameras.centers).max())
  rel_metric = a.cameras.relative(0).c2w[:, :3, 3]
  np.testing.assert_allclose(rel_metric, a.factor * relative.relative(0).c2w[:, :3, 3], rtol=1e-9, atol=1e-12)
  # the factor is read from the depth given: depth twice as far, factor twice as large
  doubled = metric.align_clip(clip.frames, relative, 2 * clip.depth, score_frames=[0], points=points)
  assert doubled.factor == pytest.approx(2 * a.factor, rel=1e-9) and doubled.frames == [0]


def test_frame_factor_is_the_median_point_ratio():
  H, W = 30, 40
  K = g.intrinsics(40.0, 40.0, 20.0, 15.0)
  rng = np.random.default_rng(0)
  depth = rng.uniform(1.0, 6.0, (H, W))
  pts = dp.unproject(depth, K).reshape(-1, 3)[::7] / 2.5  # SfM points = metric points / 2.5 (camera at the origin)
  w2c = np.eye(4)
  assert metric.frame_factor(depth, pts, w2c, K) == pytest.approx(2.5, rel=1e-9)
  bad = pts.copy()
  bad[: len(bad) // 3] *= 3.0  # a third of the points are wrong: the median does not move
  assert metric.frame_factor(depth, bad, w2c, K) == pytest.approx(2.5, rel=1e-9)
  holes = depth.copy()
  holes[:, :] = 0
  with pytest.raises(CurationError, match="only 0 SfM points"):
    metric.frame_factor(holes, pts, w2c, K)


def test_keep_by_factor_cuts_two_percent_at_each_end():
  rng = np.random.default_rng(2)
  factors = [list(1.0 + 0.01 * rng.standard_normal(4)) for _ in range(100)]
  factors[7][2] = 50.0  # clip 7's largest factor is the dataset's largest
  factors[42][0] = 0.01  # clip 42's smallest is the smallest
  keep = metric.keep_by_factor(factors, quantile=0.02)
  assert not keep[7] and not keep[42]
  assert 100 - 4 <= keep.sum() <= 100 - 2  # floor(0.02 * 99) = 1 clip per end of each ordering
  # a tiny dataset loses nothing (interpolated quantiles would drop its extremes)
  assert metric.keep_by_factor([[1.0], [2.0]]).all()
  assert metric.keep_by_factor([[1.0], [2.0]], quantile=0.0).all()
  with pytest.raises(CurationError, match="quantile"):
    metric.keep_by_factor(factors, quantile=0.5)
  with pytest.raises(CurationError, match="clip 1"):
    metric.keep_by_factor([[1.0], []])


def test_triangulation_checks_its_inputs(static_clip):
  with pytest.raises(CurationError, match="cameras"):
    metric.triangulate_clip(static_clip.frames[:3], static_clip.cameras)
  with pytest.raises(CurationError, match="uint8"):
    metric.triangulate_clip(static_clip.frames[:1], static_clip.cameras)
  with pytest.raises(CurationError, match="reference frame 9"):
    metric.align_clip(static_clip.frames, static_clip.cameras, static_clip.depth, reference=9)


def test_metric_depth_source_plugs_into_the_curation_pipeline(static_clip):
  source = metric.MetricDepthSource(dp.RenderedDepth.from_clip(static_clip))
  out = source("vid", np.array([2, 3]), static_clip.frames[2:4])
  np.testing.assert_array_equal(out, static_clip.depth[2:4])
  with pytest.raises(CurationError, match="vid frame 5: metric depth failed"):
    source("vid", np.array([5]), 255 - static_clip.frames[:1])


def test_align_re10k_layout_clips(tmp_path):
  """A 16:9 procedural clip written in the RealEstate10K frame-folder layout with its poses at an arbitrary scale."""
  from PIL import Image

  clip = validation.render_clip(5, "dolly_in:1.0+pan_left:10", num_frames=6, height=90, width=160, moving=False)
  s = 3.3
  cams = clip.cameras.scale_translation(1 / s)
  rows = []
  for i in range(6):
    k = cams.K[i]
    intr = [k[0, 0] / 160, k[1, 1] / 90, k[0, 2] / 160, k[1, 2] / 90, 0, 0]
    rows.append(" ".join(str(v) for v in [i * 125000] + intr + cams.w2c[i, :3].reshape(-1).tolist()))
  root = tmp_path / "clips"
  (root / "scene").mkdir(parents=True)
  (root / "scene.txt").write_text("https://example.com/scene\n" + "\n".join(rows) + "\n")
  for i, f in enumerate(clip.frames):
    Image.fromarray(f).save(root / "scene" / f"{i:03d}.png")
  out = tmp_path / "metric"
  report = metric.align_re10k(root, dp.RenderedDepth.from_clip(clip), out=out)
  assert len(report) == 1 and report[0]["kept"], report
  assert abs(report[0]["factor"] / s - 1) < 0.02, report
  scaled = g.read_re10k(out / "scene.txt", image_size=(90, 160))
  np.testing.assert_allclose(scaled.K, clip.cameras.K, rtol=1e-6)
  np.testing.assert_allclose(scaled.centers, clip.cameras.centers, atol=0.02 * np.abs(clip.cameras.centers).max())
  assert (out / "scene.txt").read_text().startswith("https://example.com/scene\n0 ")
  assert json.loads((out / "metric_scale.json").read_text())[0]["clip"] == "scene"
  # a depth source without depth for these frames: the clip is reported and dropped, nothing raises
  other = validation.render_clip(6, "static", num_frames=1, height=90, width=160)
  report = metric.align_re10k(root, dp.RenderedDepth.from_clip(other))
  assert not report[0]["kept"] and "no depth for this 160x90 image" in report[0]["reason"]


def test_real_sfm_scale_recovered_from_sensor_depth(shared_data):
  """rgbd_slambook2 kinect_5frames_posed: COLMAP's global mapper on the 5 real frames (320x240, intrinsics fixed)
  gives cameras at an arbitrary scale; the RealCam-I2V factor from the Kinect depth must match the scale of the
  Sim(3) fit of the SfM camera centres to the metric ground-truth centres within 5%."""
  import cv2

  root = shared_data / "rgbd_slambook2/kinect_5frames_posed"
  rows = np.loadtxt(root / "pose.txt")  # tx ty tz qx qy qz qw, camera-to-world, metres
  gt = g.Cameras.from_c2w(se3.make_pose(se3.quaternion_to_matrix(rows[:, 3:7]), rows[:, :3]),
                          g.intrinsics(518.0, 519.0, 325.5, 253.5), height=480, width=640).resize(240, 320)
  sensor = dp.SensorDepth([root / f"color/{i}.png" for i in range(1, 6)],
                          [root / f"depth/{i}.pgm" for i in range(1, 6)], "mm")
  frames = np.stack([cv2.resize(sensor.color(i), (320, 240), interpolation=cv2.INTER_AREA) for i in range(5)])
  depth = np.stack([cv2.resize(sensor.depth(i), (320, 240), interpolation=cv2.INTER_NEAREST) for i in range(5)])
  sfm = g.sfm.estimate_cameras(frames, gt.K[0], mapper="global")
  assert list(sfm.frame_indices) == [0, 1, 2, 3, 4]
  truth = g.umeyama(sfm.cameras.centers, gt.centers).scale
  a = metric.align_clip(frames, sfm.cameras, depth)
  assert abs(a.factor / truth - 1) < 0.05, (truth, a.stats())
  assert all(abs(f / truth - 1) < 0.08 for f in a.frame_factors), (truth, a.stats())


def test_per_frame_intrinsics_zoom():
  """A zooming camera: each frame has its own K (pycolmap gets one camera per image)."""
  clip = validation.render_clip(4, "zoom_in:1.5+truck_right:0.8", num_frames=6, height=120, width=160, moving=False)
  assert not np.allclose(clip.cameras.K[0], clip.cameras.K[-1])
  s = 0.4
  a = metric.align_clip(clip.frames, clip.cameras.scale_translation(1 / s), dp.RenderedDepth.from_clip(clip))
  assert abs(a.factor / s - 1) < 0.02 and all(abs(f / s - 1) < 0.02 for f in a.frame_factors), a.stats()
