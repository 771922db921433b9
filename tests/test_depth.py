"""camjax.depth: the metric-depth interface, RGB-D readers, ground-truth sources, Depth Anything V2 (metric) loading on
a tiny random checkpoint, unprojection and depth errors."""

import json
import shutil

import numpy as np
import pytest

from camjax import depth as dp
from camjax import geometry as g
from camjax.data.curate import scale
from camjax.errors import CamjaxError
from camjax.geometry import se3


# ------------------------------------------------------------------------------------------- RGB-D depth files
def test_read_depth_decodes_the_shared_rgbd_formats(shared_data):
  import cv2

  o3d, book = shared_data / "rgbd_open3d", shared_data / "rgbd_slambook2"
  raw = cv2.imread(str(o3d / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
  tum = dp.read_depth(o3d / "TUM_depth.png", "tum")
  np.testing.assert_allclose(tum, raw / 5000.0, rtol=1e-6)
  np.testing.assert_allclose(dp.read_depth(o3d / "TUM_depth.png", 5000.0), tum)
  kinect = dp.read_depth(book / "kinect_5frames_posed/depth/1.pgm", "mm")
  # indoor scenes: most valid readings between 0.3 and 10 m, and invalid pixels are exactly 0
  for d in (tum, kinect, dp.read_depth(o3d / "NYU_depth.pgm", "nyu"), dp.read_depth(o3d / "SUN_depth.png", "sun")):
    assert d.dtype == np.float32 and d.shape == (480, 640)
    valid = d[d > 0]
    assert valid.size > 0.5 * d.size and np.isfinite(d).all()
    assert 0.3 < np.median(valid) < 10 and np.percentile(valid, 99) < 12
  # the NYU raw disparity read without its byte swap would give nonsense (the decoding is discriminating)
  nyu_raw = cv2.imread(str(o3d / "NYU_depth.pgm"), cv2.IMREAD_UNCHANGED).astype(np.float64)
  assert (351.3 / (1092.5 - nyu_raw) > 0).mean() < 0.2
  with pytest.raises(dp.DepthError, match="unknown depth format"):
    dp.read_depth(o3d / "TUM_depth.png", "kitti")
  with pytest.raises(dp.DepthError, match="not found"):
    dp.read_depth(o3d / "missing.png")


def test_sensor_depth_answers_for_its_frames_only(shared_data):
  root = shared_data / "rgbd_slambook2/kinect_5frames_posed"
  sensor = dp.SensorDepth([root / f"color/{i}.png" for i in (1, 2, 3)], [root / f"depth/{i}.pgm" for i in (1, 2, 3)],
                          "mm")
  assert isinstance(sensor, dp.MetricDepth) and len(sensor) == 3
  image = sensor.color(1)
  assert image.shape == (480, 640, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(sensor(image), dp.read_depth(root / "depth/2.pgm", "mm"))
  with pytest.raises(dp.DepthError, match="not one of its 3 frames"):
    sensor(dp.SensorDepth([root / "color/4.png"], [root / "depth/4.pgm"], "mm").color(0))
  with pytest.raises(dp.DepthError, match="uint8"):
    sensor(image.astype(np.float32))
  with pytest.raises(dp.DepthError, match="as many depth maps"):
    dp.SensorDepth([root / "color/1.png"], [], "mm")


def test_rendered_depth_is_the_renderers_ground_truth():
  from camjax.data.curate import validation

  clip = validation.render_clip(2, "truck_left:0.5", num_frames=3, height=24, width=32)
  source = dp.RenderedDepth.from_clip(clip)
  for t in range(3):
    np.testing.assert_array_equal(source(clip.frames[t]), clip.depth[t])
  other = clip.frames[0].copy()
  other[0, 0] ^= 1
  with pytest.raises(dp.DepthError, match="no depth for this 32x24 image"):
    source(other)
  with pytest.raises(dp.DepthError, match="frames"):
    dp.RenderedDepth(clip.frames, clip.depth[:2])


# -------------------------------------------------------------------------------------------- geometry, metrics
def test_default_intrinsics_of_a_user_image():
  K = dp.default_intrinsics(480, 640)
  np.testing.assert_allclose(K, [[320, 0, 320], [0, 320, 240], [0, 0, 1]])
  np.testing.assert_allclose(dp.default_intrinsics(720, 400)[:2, :2], np.eye(2) * 360)


def test_unproject_inverts_projection():
  rng = np.random.default_rng(0)
  H, W = 12, 16
  K = g.intrinsics(20.0, 22.0, 7.5, 6.0)
  depth = rng.uniform(0.5, 4.0, (H, W))
  depth[3, 4] = 0  # invalid
  c2w = g.Cameras.from_c2w(np.eye(4)[None], K, height=H, width=W).c2w[0]
  c2w[:3, :3] = se3.so3_exp(np.array([0.1, -0.2, 0.05]))
  c2w[:3, 3] = [0.3, -1.0, 2.0]
  points = dp.unproject(depth, K, c2w)
  assert points.shape == (H, W, 3) and np.isnan(points[3, 4]).all() and np.isfinite(np.delete(points.reshape(-1, 3),
                                                                                                3 * W + 4, 0)).all()
  uv, z = scale.points_depth(points.reshape(-1, 3)[np.isfinite(points.reshape(-1, 3)).all(1)], np.linalg.inv(c2w), K,
                             H, W)
  ys, xs = np.mgrid[0:H, 0:W]
  keep = depth.ravel() > 0
  np.testing.assert_allclose(uv, np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], -1)[keep], atol=1e-9)
  np.testing.assert_allclose(z, depth.ravel()[keep], rtol=1e-12)
  with pytest.raises(dp.DepthError, match="K"):
    dp.unproject(depth, np.eye(4))


def test_depth_errors():
  rng = np.random.default_rng(1)
  gt = rng.uniform(1.0, 5.0, (20, 30))
  e = dp.depth_errors(1.1 * gt, gt)
  assert e["abs_rel"] == pytest.approx(0.1) and e["delta1"] == 1.0 and e["coverage"] == 1.0
  assert e["rmse"] == pytest.approx(0.1 * np.sqrt(np.mean(gt**2)))
  assert dp.depth_errors(1.3 * gt, gt)["delta1"] == 0.0
  pred = gt.copy()
  pred[:10] = 0  # half the prediction invalid: evaluated on the other half, coverage says so
  gt_holes = gt.copy()
  gt_holes[:, :3] = np.nan
  e = dp.depth_errors(pred, gt_holes)
  assert e["abs_rel"] == 0 and e["num_pixels"] == 10 * 27 and e["coverage"] == pytest.approx(0.5)
  with pytest.raises(dp.DepthError, match="differ in shape"):
    dp.depth_errors(gt[:3], gt)
  with pytest.raises(dp.DepthError, match="no pixel"):
    dp.depth_errors(np.zeros_like(gt), gt)


# ------------------------------------------------------------------------------- Depth Anything V2 (metric)
def test_depth_anything_metric_loads_and_matches_transformers(tiny_depth_anything):
  import torch

  path, model, processor = tiny_depth_anything
  source = dp.DepthAnythingMetric(path)
  assert isinstance(source, dp.MetricDepth) and source.max_depth == 20.0
  image = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
  depth = source(image)
  assert depth.shape == (40, 70) and depth.dtype == np.float32
  assert np.isfinite(depth).all() and (depth > 0).all() and depth.max() <= 20.0 and depth.std() > 1e-3
  # parity with transformers' own preprocessing, forward and post-processing
  reference = processor(images=image, return_tensors="pt")
  assert source.input_size(40, 70) == tuple(reference["pixel_values"].shape[-2:]) == (28, 56)
  np.testing.assert_allclose(source.preprocess(image), reference["pixel_values"].numpy(), atol=1e-5)
  with torch.no_grad():
    out = model(**reference)
  expected = processor.post_process_depth_estimation(out, target_sizes=[(40, 70)])[0]["predicted_depth"].numpy()
  np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-5)


def test_depth_anything_metric_names_what_is_wrong(tiny_depth_anything, tmp_path):
  path = tiny_depth_anything[0]
  with pytest.raises(dp.DepthModelNotFoundError, match="folder not found"):
    dp.DepthAnythingMetric(tmp_path / "nowhere")
  with pytest.raises(dp.DepthModelNotFoundError, match="no config.json"):
    dp.DepthAnythingMetric(tmp_path)

  def variant(name, edit=None, drop=()):
    folder = tmp_path / name
    shutil.copytree(path, folder)
    if edit is not None:
      config = json.loads((folder / "config.json").read_text())
      edit(config)
      (folder / "config.json").write_text(json.dumps(config))
    for f in drop:
      (folder / f).unlink()
    return folder

  with pytest.raises(dp.NotMetricDepthError, match="relative-depth checkpoint"):
    dp.DepthAnythingMetric(variant("relative", lambda c: c.update(depth_estimation_type="relative")))
  with pytest.raises(dp.NotMetricDepthError, match="no positive max_depth"):
    dp.DepthAnythingMetric(variant("no_max", lambda c: c.pop("max_depth")))
  with pytest.raises(dp.NotMetricDepthError, match="model_type is 'dpt'"):
    dp.DepthAnythingMetric(variant("dpt", lambda c: c.update(model_type="dpt")))
  with pytest.raises(dp.DepthModelNotFoundError, match="no weights"):
    dp.DepthAnythingMetric(variant("no_weights", drop=["model.safetensors"]))
  assert issubclass(dp.NotMetricDepthError, dp.DepthError) and issubclass(dp.DepthError, CamjaxError)
