"""Paired 3D point tracks (Track2View sec. 3.3) on procedural two-camera scenes: ground-truth correspondences,
surface consistency in both views, query placement, validity, determinism, the Grain source."""

import numpy as np
import pytest

from camjax import geometry as g
from camjax.data import pairs, synthetic
from camjax.data.records import DataError

SEED, T, H, W, N = 0, 9, 32, 32, 64


@pytest.fixture(scope="module")
def pair():
  return pairs.render_pair(SEED, num_frames=T, height=H, width=W)


@pytest.fixture(scope="module")
def tracks(pair):
  return pairs.paired_tracks(pair, N, np.random.default_rng(1))


def _project(points, cams):
  """Independent pinhole projection: K (R p + t) -> (xy, z)."""
  cam = np.einsum("tij,ntj->nti", cams.w2c[:, :3, :3], points.astype(np.float64)) + cams.w2c[None, :, :3, 3]
  pix = np.einsum("tij,ntj->nti", cams.K, cam)
  return pix[..., :2] / pix[..., 2:], cam[..., 2]


def _rendered_depth_at(depth_maps, xy):
  """The rendered depth `[N, T]` at the pixel each point falls in (nearest pixel: floor of the coordinate)."""
  n, t = xy.shape[:2]
  xi = np.clip(np.floor(xy[..., 0]).astype(int), 0, depth_maps.shape[2] - 1)
  yi = np.clip(np.floor(xy[..., 1]).astype(int), 0, depth_maps.shape[1] - 1)
  return depth_maps[np.broadcast_to(np.arange(t), (n, t)), yi, xi]


def test_concatenated_sequence_is_reversed_source_then_target():
  view, frame = pairs.concatenated_sequence(4)
  assert view.tolist() == [0, 0, 0, 0, 1, 1, 1]  # 2T - 1 frames: A3 A2 A1 A0(=B0) B1 B2 B3
  assert frame.tolist() == [3, 2, 1, 0, 1, 2, 3]
  first, middle = pairs.query_frames(4)
  assert (first, middle) == (0, 3) and middle == (len(view) - 1) // 2 and frame[middle] == 0


def test_pair_shares_frame_zero_and_cameras_differ(pair):
  assert np.array_equal(pair.src.frames[0], pair.tgt.frames[0])
  np.testing.assert_allclose(pair.src.cameras.w2c[0], pair.tgt.cameras.w2c[0], atol=1e-12)
  assert np.abs(pair.src.cameras.w2c[-1] - pair.tgt.cameras.w2c[-1]).max() > 1e-2
  for seed in range(30):  # trajectories: A moves, B shares none of A's moves
    a, b = pairs.pair_trajectories(seed)
    moves = lambda name: {p.split(":")[0] for p in name.split("+")}
    assert a != "static" and not moves(a) & moves(b)


def test_points_world_project_to_both_tracks(pair, tracks):
  """(a) the paired construction reproduces the ground-truth correspondences in both views."""
  assert tracks.src_xy.shape == tracks.tgt_xy.shape == (N, T, 2)
  assert tracks.points_world.shape == (N, T, 3) and tracks.points_world.dtype == np.float32
  for cams, xy, depth in ((pair.src.cameras, tracks.src_xy, tracks.src_depth),
                          (pair.tgt.cameras, tracks.tgt_xy, tracks.tgt_depth)):
    ref_xy, ref_z = _project(tracks.points_world, cams)
    front = ref_z > 0
    assert front.mean() > 0.9
    np.testing.assert_allclose(xy[front], ref_xy[front], atol=1e-3)
    np.testing.assert_allclose(depth, ref_z, rtol=1e-5, atol=1e-5)
  # Frame 0 is the shared pose: the same query is at the same pixel and depth in both views.
  np.testing.assert_allclose(tracks.src_xy[:, 0], tracks.tgt_xy[:, 0], atol=1e-3)
  np.testing.assert_allclose(tracks.src_depth[:, 0], tracks.tgt_depth[:, 0], rtol=1e-6)
  # The views differ later (otherwise the test above proves nothing about the target half).
  assert np.abs(tracks.src_xy[:, -1] - tracks.tgt_xy[:, -1]).max() > 1.0


def test_half_the_queries_on_the_first_and_half_on_the_middle_frame(pair, tracks):
  """(d) each query sits at a pixel centre, visible, on the rendered surface at the source frame it was placed on."""
  first, middle = pairs.query_frames(T)
  assert tracks.query_frame.tolist() == [first] * (N // 2) + [middle] * (N - N // 2)
  src_frame = tracks.query_source_frame
  assert set(src_frame[: N // 2]) == {T - 1} and set(src_frame[N // 2:]) == {0}
  rows = np.arange(N)
  xy, z = tracks.src_xy[rows, src_frame], tracks.src_depth[rows, src_frame]
  np.testing.assert_allclose(xy - np.floor(xy), 0.5, atol=1e-3)  # rays go through pixel centres
  assert tracks.src_valid[rows, src_frame].all()
  rendered = pair.src.depth[src_frame, np.floor(xy[:, 1]).astype(int), np.floor(xy[:, 0]).astype(int)]
  np.testing.assert_allclose(z, rendered, rtol=1e-4)
  # At the other query frame the first-frame queries are (mostly) not at pixel centres: the camera moved, so the
  # A half really was re-reversed rather than read forwards.
  other = tracks.src_xy[: N // 2, 0]
  assert (np.abs(other - np.floor(other) - 0.5).max(-1) < 1e-3).mean() < 0.5


def test_valid_source_tracks_land_on_the_rendered_surface(pair, tracks):
  """(b) where a source track is valid its depth is the rendered depth at its pixel."""
  valid = tracks.src_valid
  assert valid.sum() > 0.5 * valid.size
  rendered = _rendered_depth_at(pair.src.depth, tracks.src_xy)[valid]
  rel = np.abs(rendered - tracks.src_depth[valid]) / tracks.src_depth[valid]
  assert rel.max() <= 0.03 and np.median(rel) < 0.01


def test_reprojected_target_tracks_land_on_the_target_surface_and_occluded_ones_stay_valid(pair, tracks):
  """(c) inference-time target tracks = the paired target tracks; on the target render where visible."""
  xy, depth, valid = pairs.target_tracks_from_source(tracks.points_world, np.ones((N, T), bool), pair.tgt.cameras)
  assert xy.dtype == depth.dtype == np.float32 and valid.dtype == bool
  np.testing.assert_allclose(xy[valid], tracks.tgt_xy[valid], atol=1e-3)
  np.testing.assert_allclose(depth, tracks.tgt_depth, rtol=1e-5)
  assert np.array_equal(valid, tracks.tgt_valid)

  rendered = _rendered_depth_at(pair.tgt.depth, xy)
  rel = np.abs(rendered - depth) / depth
  visible = valid & (rel <= 0.03)
  occluded = valid & (rendered > 0) & (rendered < 0.9 * depth)  # something clearly in front
  assert visible.sum() > 0.6 * valid.sum()
  assert np.median(rel[visible]) < 0.01
  assert occluded.sum() > 0 and valid[occluded].all()  # occlusion in the target does not invalidate
  # Frame 0 is the shared pose: the middle-frame queries are exactly on the target's rendered surface there.
  mid = tracks.query_frame == pairs.query_frames(T)[1]
  np.testing.assert_allclose(depth[mid, 0], rendered[mid, 0], rtol=1e-4)
  # An invalid source frame makes the target frame invalid.
  src_valid = np.ones((N, T), bool)
  src_valid[:, 3] = False
  assert not pairs.target_tracks_from_source(tracks.points_world, src_valid, pair.tgt.cameras)[2][:, 3].any()


def test_validity_is_positive_depth_inside_the_image(pair, tracks):
  """(e) target: depth > 0 and inside; source: that and visible in the source render."""
  for xy, depth, valid in ((tracks.tgt_xy, tracks.tgt_depth, tracks.tgt_valid),
                           (tracks.src_xy, tracks.src_depth, tracks.src_valid)):
    inside = (depth > 0) & (xy[..., 0] >= 0) & (xy[..., 0] < W) & (xy[..., 1] >= 0) & (xy[..., 1] < H)
    assert not (valid & ~inside).any()
  tgt_inside = (tracks.tgt_depth > 0) & (tracks.tgt_xy >= 0).all(-1) & (tracks.tgt_xy < [W, H]).all(-1)
  assert np.array_equal(tracks.tgt_valid, tgt_inside)
  assert (~tgt_inside).any()  # some tracks leave the target image
  src_inside = (tracks.src_depth > 0) & (tracks.src_xy >= 0).all(-1) & (tracks.src_xy < [W, H]).all(-1)
  assert (src_inside & ~tracks.src_valid).any()  # source occlusion does invalidate

  # Edges and the back of the camera, on hand-made cameras: pixel x in [0, W), z > 0; xy stays finite behind.
  K = g.intrinsics(10.0, 10.0, W / 2, H / 2)[None]
  cams = g.Cameras(K=K, w2c=np.eye(4)[None], height=H, width=W)
  xs = np.array([0.0, W - 1e-3, W, -1e-3])  # pixel x of points at z = 2 m, y at the image centre
  points = np.stack([(xs - W / 2) * 2 / 10, np.zeros(4), np.full(4, 2.0)], -1)[:, None]
  points = np.concatenate([points, [[[0.0, 0.0, -2.0]]]])  # behind the camera
  xy, depth, valid = pairs.target_tracks_from_source(points, np.ones((5, 1), bool), cams)
  assert valid[:, 0].tolist() == [True, True, False, False, False]
  assert depth[4, 0] < 0 and np.isfinite(xy).all()


def test_examples_are_deterministic_per_seed_and_posed_relative_to_the_first_frame():
  """(f) the same seed gives the same example; the source index is the seed offset."""
  kw = dict(num_frames=5, height=H, width=W, num_queries=16)
  a, b = pairs.paired_example(SEED + 3, **kw), pairs.paired_example(SEED + 3, **kw)
  assert a.keys() == b.keys()
  for key in a:
    assert np.array_equal(a[key], b[key]), key
  other = pairs.paired_example(SEED + 4, **kw)
  assert not np.array_equal(a["src_frames"], other["src_frames"])
  assert not np.array_equal(a["src_xy"], other["src_xy"])
  source = pairs.PairedSyntheticSource(2, seed=SEED + 2, **kw)
  assert len(source) == 2 and np.array_equal(source[1]["tgt_xy"], a["tgt_xy"])
  assert str(source[1]["clip_id"]) == str(a["clip_id"])
  with pytest.raises(IndexError):
    source[2]

  # Shapes and dtypes; poses relative to the source's first camera; points_world in that frame.
  assert a["src_frames"].shape == (5, H, W, 3) and a["src_frames"].dtype == np.uint8
  assert a["src_w2c"].shape == a["tgt_w2c"].shape == (5, 4, 4) and a["src_K"].dtype == np.float32
  np.testing.assert_allclose(a["src_w2c"][0], np.eye(4), atol=1e-6)
  np.testing.assert_allclose(a["tgt_w2c"][0], np.eye(4), atol=1e-6)
  assert a["src_valid"].dtype == bool and a["query_frame"].dtype == np.int32
  assert isinstance(a["caption"].item(), str) and a["caption"].item()
  for view in ("src", "tgt"):
    cams = g.Cameras(K=a[f"{view}_K"].astype(np.float64), w2c=a[f"{view}_w2c"].astype(np.float64), height=H,
                     width=W)
    xy, z = _project(a["points_world"], cams)
    np.testing.assert_allclose(xy[z > 0], a[f"{view}_xy"][z > 0], atol=1e-3)


def test_grain_batches_the_source():
  grain = pytest.importorskip("grain")
  source = pairs.PairedSyntheticSource(2, seed=SEED, num_frames=3, height=16, width=16, num_queries=8)
  batch = grain.MapDataset.source(source).batch(2)[0]
  assert batch["src_frames"].shape == (2, 3, 16, 16, 3) and batch["tgt_xy"].shape == (2, 8, 3, 2)
  assert batch["src_valid"].shape == (2, 8, 3) and len(batch["caption"]) == 2


def test_bad_arguments_raise_named_errors(tracks, pair):
  with pytest.raises(DataError, match="num_queries"):
    pairs.paired_example(SEED, num_frames=3, height=8, width=8, num_queries=1)
  with pytest.raises(DataError, match="num_frames"):
    pairs.PairedSyntheticSource(1, num_frames=1)
  with pytest.raises(DataError, match="reference"):
    pairs.paired_example(SEED, num_frames=3, height=8, width=8, num_queries=4, reference="last")
  with pytest.raises(DataError, match=r"valid must be \[N, T\]"):
    pairs.target_tracks_from_source(tracks.points_world, np.ones((N, T + 1), bool), pair.tgt.cameras)
  with pytest.raises(DataError, match="target cameras"):
    pairs.target_tracks_from_source(tracks.points_world, np.ones((N, T), bool), pair.tgt.cameras.take(np.arange(3)))
  with pytest.raises(DataError, match="2 cameras"):
    pairs.render_pair(SEED, num_frames=3, height=8, width=8, trajectories=["pan_left"])


def test_query_sampling_refuses_an_all_sky_frame():
  frame = synthetic.Frame(rgb=np.zeros((2, 2, 3)), depth=np.zeros((2, 2)), surface=np.full((2, 2), synthetic.SKY),
                          local=np.zeros((2, 2, 3)))
  with pytest.raises(DataError, match="only sky"):
    pairs._sample_queries(frame, 4, np.random.default_rng(0), "scene 0, source frame 3")
