"""Geometry-consistent view synchronisation (camjax.eval.sync.epipolar_matches; camjax's addition, not the paper's
protocol): the fundamental matrix and ray distance of two known cameras, and what the count says about the true
target view, copy-the-source and the raw count on rendered procedural pairs."""

import cv2
import numpy as np
import pytest

from camjax.data.pairs import paired_example
from camjax.eval import sync


@pytest.fixture(scope="module")
def pair():
  """A held-out-style pair whose views differ by rotation and translation (orbit vs pan + tilt), 64 x 64, 9 frames."""
  return paired_example(3_000_001, num_frames=9, height=64, width=64, num_queries=32)


def _cams(ex, t):
  return (np.asarray(ex["src_K"][t], np.float64), np.asarray(ex["src_w2c"][t], np.float64),
          np.asarray(ex["tgt_K"][t], np.float64), np.asarray(ex["tgt_w2c"][t], np.float64))


def _project(points, K, w2c):
  cam = points @ w2c[:3, :3].T + w2c[:3, 3]
  return cam[:, :2] / cam[:, 2:] @ K[:2, :2].T + K[:2, 2], cam[:, 2]


def test_fundamental_matrix_and_ray_distance_hold_on_projected_points(pair):
  """Ground-truth 3D points projected into both cameras: `x_t^T F x_s = 0` (as a point-line distance in pixels) and
  the ray distance is 0; moving the target point off its epipolar line by 3 px gives 3 px; a point on the epipolar
  line that needs a negative depth (beyond the epipole's side) is rejected by cheirality."""
  t = 6
  K_s, w2c_s, K_t, w2c_t = _cams(pair, t)
  points = np.asarray(pair["points_world"][:, t], np.float64)
  x_s, z_s = _project(points, K_s, w2c_s)
  x_t, z_t = _project(points, K_t, w2c_t)
  keep = (z_s > 0) & (z_t > 0)
  assert keep.sum() >= 10
  x_s, x_t = x_s[keep], x_t[keep]
  F = sync.fundamental_matrix(K_s, w2c_s, K_t, w2c_t)
  hs, ht = np.c_[x_s, np.ones(len(x_s))], np.c_[x_t, np.ones(len(x_t))]
  lines = hs @ F.T  # epipolar lines F x_s in the target image
  line_px = np.abs(np.einsum("ni,ni->n", ht, lines)) / np.linalg.norm(lines[:, :2], axis=-1)
  assert line_px.max() < 1e-6
  np.testing.assert_allclose(sync.ray_distance(x_s, x_t, K_s, w2c_s, K_t, w2c_t), 0.0, atol=1e-6)
  normal = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=-1, keepdims=True)
  off = sync.ray_distance(x_s, x_t + 3.0 * normal, K_s, w2c_s, K_t, w2c_t)
  np.testing.assert_allclose(off, 3.0, atol=1e-6)
  # Same epipolar line, negative source depth (-X projects to the same source pixel as X): cheirality rejects it.
  R, tr = sync.relative_pose(w2c_s, w2c_t)
  behind = -(points[keep] @ w2c_s[:3, :3].T + w2c_s[:3, 3])
  hb = (behind @ R.T + tr) @ K_t.T
  x_behind = hb[:, :2] / hb[:, 2:]
  on_line = np.abs(np.einsum("ni,ni->n", np.c_[x_behind, np.ones(len(x_behind))], lines))
  assert (on_line / np.linalg.norm(lines[:, :2], axis=-1)).max() < 1e-6
  assert np.median(sync.ray_distance(x_s, x_behind, K_s, w2c_s, K_t, w2c_t)) > 5.0


def test_zero_baseline_is_the_homography_transfer_error(pair):
  """Identical camera centres (a pure rotation, here the target camera rotated about its centre): F is exactly zero
  and the ray distance is the transfer error of `K_t R K_s^-1`; a near depth bound makes a tiny baseline the same."""
  K_s, w2c_s, K_t, _ = _cams(pair, 4)
  rot = cv2.Rodrigues(np.array([0.02, -0.05, 0.01]))[0]
  w2c_t = np.eye(4)
  w2c_t[:3, :3] = rot @ w2c_s[:3, :3]
  w2c_t[:3, 3] = rot @ w2c_s[:3, 3]
  assert np.abs(sync.fundamental_matrix(K_s, w2c_s, K_t, w2c_t)).max() == 0.0  # a rounding-level t is 0
  rng = np.random.default_rng(0)
  x_s = rng.uniform(0, 64, (20, 2))
  H = K_t @ rot @ np.linalg.inv(K_s)
  h = np.c_[x_s, np.ones(20)] @ H.T
  x_t = h[:, :2] / h[:, 2:] + rng.normal(0, 2.0, (20, 2))
  transfer = np.linalg.norm(x_t - h[:, :2] / h[:, 2:], axis=-1)
  np.testing.assert_allclose(sync.ray_distance(x_s, x_t, K_s, w2c_s, K_t, w2c_t), transfer, atol=1e-9)
  # A 0.1 mm baseline with points no nearer than 1 m: parallax below 0.01 px, the same errors within that.
  tiny = w2c_t.copy()
  tiny[:3, 3] += [1e-4, 0.0, 0.0]
  near = sync.ray_distance(x_s, x_t, K_s, w2c_s, K_t, tiny, depth_range=(1.0, np.inf))
  np.testing.assert_allclose(near, transfer, atol=0.01)


def test_the_true_target_view_is_geometry_consistent_and_copying_the_source_is_not(pair):
  """The raw count (`sync_scores`, the paper protocol's stand-in) gives copy-the-source far more matches than the
  true target view; the geometric count gives the true target view its matches and copy-the-source none. Without the
  minimum shift, copy-the-source keeps only the identity matches that happen to lie on their epipolar segment."""
  every = slice(0, 9, 2)  # frames 0, 2, .., 8 (frame 0 is skipped: the views share it)
  src, gt = pair["src_frames"][every], pair["tgt_frames"][every]
  cams = tuple(pair[k][every] for k in ("src_K", "src_w2c", "tgt_K", "tgt_w2c"))
  raw_copy, raw_true = sync.sync_scores(src, src)["matches"], sync.sync_scores(src, gt)["matches"]
  assert raw_copy > 3 * raw_true
  true = sync.epipolar_sync_scores(src, gt, *cams)
  copy = sync.epipolar_sync_scores(src, src, *cams)
  assert true["matches_geo"] >= 8 and len(true["matches_geo_per_frame"]) == 4
  assert copy["matches_geo"] == 0
  unmoved = sync.epipolar_sync_scores(src, src, *cams, min_shift_px=0.0)["matches_geo"]
  assert unmoved < 0.25 * raw_copy
  # The intrinsics follow the frame size: the true target view at 128 x 128 with K doubled scores like at 64 x 64,
  # and with the 64-px K it does not.
  big = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_CUBIC) for f in gt[:3]])  # frames 0, 2, 4
  K2 = np.asarray(cams[2][:3], np.float64) * np.array([2.0, 2.0, 1.0])[:, None]
  three = tuple(c[:3] for c in cams)
  scaled = sync.epipolar_sync_scores(src[:3], big, three[0], three[1], K2, three[3])["matches_geo"]
  unscaled = sync.epipolar_sync_scores(src[:3], big, *three)["matches_geo"]
  assert scaled >= 0.7 * np.mean(true["matches_geo_per_frame"][:2]) and unscaled < 0.5 * scaled


def test_pure_translation_needs_the_minimum_shift():
  """Two cameras that only translate (pedestal up vs truck right): every identity match lies on its epipolar line,
  so without the minimum shift copy-the-source keeps ALL its matches; with it, none."""
  ex = paired_example(3_000_000, num_frames=5, height=64, width=64, num_queries=16)
  src = ex["src_frames"]
  cams = (ex["src_K"], ex["src_w2c"], ex["tgt_K"], ex["tgt_w2c"])
  frame = 4
  K_s, w2c_s, K_t, w2c_t = _cams(ex, frame)
  R, t = sync.relative_pose(w2c_s, w2c_t)
  assert np.allclose(R, np.eye(3), atol=1e-6) and np.linalg.norm(t) > 0.05
  everything = sync.epipolar_matches(src[frame], src[frame], K_s, w2c_s, K_t, w2c_t, min_shift_px=0.0)
  assert everything > 50
  assert sync.epipolar_matches(src[frame], src[frame], K_s, w2c_s, K_t, w2c_t) == 0
  assert sync.epipolar_matches(src[frame], ex["tgt_frames"][frame], K_s, w2c_s, K_t, w2c_t) > 10
  assert sync.epipolar_sync_scores(src, np.full_like(src, 90), *cams)["matches_geo"] == 0  # no keypoints -> 0


@pytest.fixture(scope="module")
def pair_with_depth():
  return paired_example(3_000_001, num_frames=9, height=64, width=64, num_queries=32, depth_maps=True)


def test_true_correspondence_matches_judge_depth(pair_with_depth):
  """`true_matches` (ground-truth depth): the true target view scores, copy-the-source scores 0, and the same true
  target view scored with the source depth doubled (every point on its ray, at the wrong depth: what the epipolar
  count accepts) loses most of its matches while its epipolar count does not change."""
  ex = pair_with_depth
  every = slice(0, 9, 2)
  src, gt = ex["src_frames"][every], ex["tgt_frames"][every]
  depth_src, depth_tgt = ex["src_depth_map"][every], ex["tgt_depth_map"][every]
  assert depth_src.shape == src.shape[:3] and np.all(depth_src >= 0) and np.mean(depth_src > 0) > 0.5  # 0: sky
  cams = tuple(ex[k][every] for k in ("src_K", "src_w2c", "tgt_K", "tgt_w2c"))
  true = sync.true_sync_scores(src, gt, depth_src, *cams, depth_gen=depth_tgt)
  assert true["matches_true"] >= 8 and len(true["matches_true_per_frame"]) == 4
  assert sync.true_sync_scores(src, src, depth_src, *cams, depth_gen=depth_tgt)["matches_true"] == 0
  wrong = sync.true_sync_scores(src, gt, 2.0 * depth_src, *cams, depth_gen=depth_tgt)["matches_true"]
  assert wrong < 0.3 * true["matches_true"]
  # No more than the epipolar count of the same frames (a true correspondence lies on its ray's image).
  geo = sync.epipolar_sync_scores(src, gt, *cams, max_px=4.0, min_shift_px=0.0)["matches_geo"]
  assert true["matches_true"] <= geo
  with pytest.raises(sync.SyncError, match=r"depth_a must be \[H, W\]"):
    sync.true_matches(src[1], gt[1], depth_src[1, :-1], *(c[1] for c in cams))
  with pytest.raises(sync.SyncError, match="max_px"):
    sync.true_matches(src[1], gt[1], depth_src[1], *(c[1] for c in cams), max_px=0.0)
  with pytest.raises(sync.SyncError, match="depth maps must have 5 frames"):
    sync.true_sync_scores(src, gt, depth_src[:-1], *cams)


def test_bad_inputs_raise_sync_errors(pair):
  src, gt = pair["src_frames"], pair["tgt_frames"]
  K_s, w2c_s, K_t, w2c_t = _cams(pair, 3)
  with pytest.raises(sync.SyncError, match=r"K \[3, 3\] and w2c \[4, 4\]"):
    sync.epipolar_matches(src[3], gt[3], K_s[:2], w2c_s, K_t, w2c_t)
  sheared = w2c_t.copy()
  sheared[0, 1] += 0.3
  with pytest.raises(sync.SyncError, match="camera b.*orthonormal"):
    sync.fundamental_matrix(K_s, w2c_s, K_t, sheared)
  bad_K = K_s.copy()
  bad_K[0, 0] = np.nan
  with pytest.raises(sync.SyncError, match="camera a.*non-finite"):
    sync.ray_distance(np.zeros((1, 2)), np.zeros((1, 2)), bad_K, w2c_s, K_t, w2c_t)
  with pytest.raises(sync.SyncError, match=r"\[N, 2\]"):
    sync.ray_distance(np.zeros((3, 2)), np.zeros((2, 2)), K_s, w2c_s, K_t, w2c_t)
  with pytest.raises(sync.SyncError, match="depth_range"):
    sync.epipolar_matches(src[3], gt[3], K_s, w2c_s, K_t, w2c_t, depth_range=(2.0, 1.0))
  with pytest.raises(sync.SyncError, match="max_px"):
    sync.epipolar_matches(src[3], gt[3], K_s, w2c_s, K_t, w2c_t, max_px=0.0)
  with pytest.raises(sync.SyncError, match=r"\[H, W, 3\]"):
    sync.epipolar_matches(src[3, ..., 0], gt[3], K_s, w2c_s, K_t, w2c_t)
  cams = (pair["src_K"], pair["src_w2c"], pair["tgt_K"], pair["tgt_w2c"])
  with pytest.raises(sync.SyncError, match=r"w2c_gen must be \[9, 4, 4\]"):
    sync.epipolar_sync_scores(src, gt, *cams[:3], cams[3][:-1])
  with pytest.raises(sync.SyncError, match="same frame count"):
    sync.epipolar_sync_scores(src, gt[:-1], *cams)
  broken = np.array(cams[3])
  broken[5, 3, 3] = 2.0
  with pytest.raises(sync.SyncError, match="frame 5: camera b"):
    sync.epipolar_sync_scores(src, gt, *cams[:3], broken)


def test_the_pair_report_carries_the_geometric_count_next_to_the_raw_one(tmp_path):
  """`camjax.methods.track2view`: every column and the true target view get `source_matches_geo` beside the raw
  `source_matches`, the aggregate averages it, `model_beats` compares it and the report shows its row. Here the
  "model" is the true target view and the zeroed-tracks "control" a copy of the source."""
  from camjax.methods import track2view  # pylint: disable=import-outside-toplevel
  ex = paired_example(3_000_001, num_frames=3, height=64, width=64, num_queries=16)
  near, far = track2view.geo_depth_range(ex)
  depth = ex["src_depth"][ex["src_valid"]]
  assert near == pytest.approx(track2view.GEO_NEAR_FRACTION * depth.min()) and far == np.inf
  videos = {"tracks": np.asarray(ex["tgt_frames"]), "zero_tracks": np.asarray(ex["src_frames"])}
  row = {"pair": 0, **track2view.score_pair(ex, videos, None)}
  assert row["tracks"]["source_matches_geo"] == row["true_target_source_matches_geo"] > 5
  assert row["copy_source"]["source_matches_geo"] == row["zero_tracks"]["source_matches_geo"] == 0
  assert row["copy_source"]["source_matches"] > 3 * row["true_target_source_matches"]  # the raw count, unchanged
  result = track2view.aggregate_pairs([row])
  assert result["aggregate"]["true_target"]["source_matches_geo"] == row["true_target_source_matches_geo"]
  assert result["model_beats"]["copy_source"]["source_matches_geo"]
  track2view.write_pair_report(tmp_path, {**result, "camera_settings": None}, seed=0)
  report = (tmp_path / "report.md").read_text()
  geo = row["tracks"]["source_matches_geo"]
  assert f"| geometry-consistent source matches (camjax) | {geo:.4g} | 0 | 0 |" in report
  assert "| mean colour | true target view (reference) |" in report and "camjax's addition" in report
  assert "matches at the true correspondence" not in report  # no rendered depth in `ex`: no such row
  # With the rendered depth maps: the true-correspondence count beside the others.
  ex = paired_example(3_000_001, num_frames=3, height=64, width=64, num_queries=16, depth_maps=True)
  row = {"pair": 0, **track2view.score_pair(ex, videos, None)}
  assert row["tracks"]["source_matches_true"] == row["true_target_source_matches_true"] > 3
  assert row["copy_source"]["source_matches_true"] == row["zero_tracks"]["source_matches_true"] == 0
  result = track2view.aggregate_pairs([row])
  assert result["model_beats"]["zero_tracks"]["source_matches_true"]
  track2view.write_pair_report(tmp_path, {**result, "camera_settings": None}, seed=0)
  report = (tmp_path / "report.md").read_text()
  true = row["tracks"]["source_matches_true"]
  assert f"| matches at the true correspondence (camjax) | {true:.4g} | 0 | 0 |" in report
