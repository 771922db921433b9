"""Procedural scenes: ground-truth geometry end to end, determinism, multi-camera, SfM recovery, CLI."""

import subprocess
import sys

import numpy as np
import pytest

from camjax import geometry as g
from camjax.data import synthetic
from camjax.data.records import DataError
from camjax.geometry import se3


@pytest.fixture(scope="module")
def clips():
  return synthetic.render_scene(7, num_frames=9, height=96, width=128, num_cameras=2, num_tracks=400)


def test_tracks_land_on_the_rendered_surface_points(clips):
  for clip in clips:
    cams = clip.cameras
    f = cams.K[0, 0, 0]
    per_pixel, depth_rel = [], []
    for t in range(cams.num_frames):
      vis = clip.tracks_visible[:, t]
      xyz = clip.tracks_xyz[vis, t].astype(np.float64)
      cam = xyz @ cams.w2c[t, :3, :3].T + cams.w2c[t, :3, 3]
      pix = cam @ cams.K[t].T
      uv = pix[:, :2] / pix[:, 2:]
      ui, vi = np.floor(uv).astype(int).T
      # Unproject the rendered depth at the pixel centre the track falls in: it must be the same surface point.
      d = clip.depth[t, vi, ui]
      ray = np.stack([ui + 0.5, vi + 0.5, np.ones_like(d)], -1) @ np.linalg.inv(cams.K[t]).T
      world = (ray * d[:, None]) @ cams.c2w[t, :3, :3].T + cams.c2w[t, :3, 3]
      per_pixel.append(np.linalg.norm(world - xyz, axis=-1) / (cam[:, 2] / f))  # distance in pixels at that depth
      depth_rel.append(np.abs(d - cam[:, 2]) / cam[:, 2])
    per_pixel, depth_rel = np.concatenate(per_pixel), np.concatenate(depth_rel)
    assert len(per_pixel) > 1000
    assert np.median(per_pixel) < 0.5 and np.percentile(per_pixel, 95) < 1.5  # sub-pixel at the rendered resolution
    assert np.median(depth_rel) < 0.01


def test_first_frame_tracks_are_visible_and_occlusion_is_detected(clips):
  clip = clips[0]
  assert clip.tracks_visible[:, 0].all()
  assert 0.2 < clip.tracks_visible.mean() < 1.0  # the camera moves: some points leave the view or get occluded


def test_multi_camera_scenes_share_the_first_frame_and_content(clips):
  a, b = clips
  np.testing.assert_allclose(a.cameras.w2c[0], b.cameras.w2c[0], atol=1e-12)
  np.testing.assert_array_equal(a.frames[0], b.frames[0])
  assert a.caption == b.caption and a.trajectory != b.trajectory
  assert not np.array_equal(a.frames[-1], b.frames[-1])


def test_rendering_is_deterministic_and_metric():
  one = synthetic.render_scene(11, num_frames=3, height=32, width=32, trajectories=["dolly_in:1"])[0]
  two = synthetic.render_scene(11, num_frames=3, height=32, width=32, trajectories=["dolly_in:1"])[0]
  np.testing.assert_array_equal(one.frames, two.frames)
  # dolly_in:1 moves the camera 1 metre along its (tilted) optical axis.
  assert np.linalg.norm(one.cameras.centers[-1] - one.cameras.centers[0]) == pytest.approx(1.0)
  assert one.depth.max() < 15 and (one.depth > 0).mean() > 0.5  # metres inside the room
  assert "on a" in one.caption and one.frames.dtype == np.uint8


def test_objects_move_between_frames():
  scene = synthetic.random_scene(np.random.default_rng(0))
  moving = [o for o in scene.objects if o.motion != "static"]
  assert moving
  positions = [np.concatenate([o.pose(t)[1], se3.so3_log(o.pose(t)[0])]) for o in moving for t in (0.0, 1.0)]
  assert any(np.linalg.norm(positions[2 * i] - positions[2 * i + 1]) > 0.05 for i in range(len(moving)))


def _reference_value_noise(points, seed, frequency, octaves=4):
  """The per-corner formula (`_hash3` at each of the 8 lattice corners): `value_noise` must give its bits."""
  total, amplitude, norm = 0.0, 1.0, 0.0
  for octave in range(octaves):
    p = points * frequency * (2.0**octave)
    i = np.floor(p)
    f = p - i
    f = f * f * (3 - 2 * f)
    i = i.astype(np.int64)
    acc = 0.0
    for dx in (0, 1):
      for dy in (0, 1):
        for dz in (0, 1):
          w = (f[..., 0] if dx else 1 - f[..., 0]) * (f[..., 1] if dy else 1 - f[..., 1]) * \
              (f[..., 2] if dz else 1 - f[..., 2])
          acc = acc + w * synthetic._hash3(i[..., 0] + dx, i[..., 1] + dy, i[..., 2] + dz, seed + octave)
    total = total + amplitude * acc
    norm += amplitude
    amplitude *= 0.5
  return total / norm


def test_value_noise_is_bit_identical_to_the_per_corner_formula():
  points = np.random.default_rng(0).uniform(-9, 9, size=(3000, 3))
  points[:5] = [[0, 0, 0], [-1e-17, 0, 3], [4, -3, 8], [-4, 1e-9, -4], [0.5, -0.5, 2.0 / 3]]  # lattice and plane points
  for seed, frequency in ((0, 1.5), (12345, 3.0), ((1 << 30) - 1, 4.0)):
    np.testing.assert_array_equal(synthetic.value_noise(points, seed, frequency),
                                  _reference_value_noise(points, seed, frequency))
  assert synthetic.value_noise(points.reshape(50, 60, 3), 1).shape == (50, 60)


def test_batched_poses_match_one_time_poses():
  scene = synthetic.random_scene(np.random.default_rng(4), num_objects=4)
  times = np.arange(9) / 8.0
  for obj in scene.objects:
    R, centre = obj.poses(times)
    for i, time in enumerate(times):
      R1, c1 = obj.pose(float(time))
      np.testing.assert_array_equal(R[i], R1)
      np.testing.assert_array_equal(centre[i], c1)


def test_batched_frames_are_bit_identical_to_one_frame_renders(monkeypatch):
  monkeypatch.setattr(synthetic, "_MAX_RAYS", 2 * 24 * 20)  # two frames per batch: batches of 2, 2, 1
  clip, = synthetic.render_scene(5, num_frames=5, height=24, width=20, num_tracks=0)
  scene = synthetic.random_scene(np.random.default_rng(5))
  times = np.arange(5) / clip.fps
  cams = clip.cameras
  frames = synthetic.render_frames(scene, times, cams.K, cams.w2c, 24, 20)
  for i, time in enumerate(times):
    one = synthetic.render_frame(scene, float(time), cams.K[i], cams.w2c[i], 24, 20)
    for name in ("rgb", "depth", "surface", "local"):
      np.testing.assert_array_equal(getattr(frames, name)[i], getattr(one, name), err_msg=f"frame {i} {name}")
  np.testing.assert_array_equal(clip.depth, frames.depth.astype(np.float32))
  np.testing.assert_array_equal(clip.frames, np.round(frames.rgb * 255).astype(np.uint8))
  assert (frames.surface >= synthetic.FIRST_OBJECT).any() and (frames.surface == synthetic.SKY).any()


def test_render_records_in_processes_equals_rendering_here():
  kwargs = dict(num_frames=3, height=16, width=16, num_cameras=2, num_tracks=8)
  here = list(synthetic.render_records([4, 9], workers=1, **kwargs))
  pooled = list(synthetic.render_records([4, 9], workers=2, **kwargs))
  assert [r.clip_id for r in pooled] == [r.clip_id for r in here] == [
      "synthetic-000004-cam0", "synthetic-000004-cam1", "synthetic-000009-cam0", "synthetic-000009-cam1"]
  for a, b in zip(here, pooled):
    for name in ("frames", "depth", "K", "w2c", "tracks_xyz", "tracks_visible"):
      np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
  with pytest.raises(DataError, match="workers must be an integer >= 1"):
    next(synthetic.render_records([0], workers=0))


def test_pycolmap_recovers_a_rendered_256px_trajectory():
  pytest.importorskip("pycolmap")
  clip = synthetic.render_scene(3, num_frames=25, height=256, width=256,
                                trajectories=["truck_right:1.0+pan_left:10"], num_tracks=8)[0]
  result = g.sfm.estimate_cameras(clip.frames, clip.cameras.K[0])
  assert result.success_ratio == 1.0
  errors = g.metrics.cameractrl2_errors(result.cameras, clip.cameras.take(result.frame_indices))
  assert errors["rot_err"] < 1.0  # degrees, after Sim(3) alignment
  path_length = np.linalg.norm(np.diff(clip.cameras.centers, axis=0), axis=-1).sum()
  assert errors["trans_err"] < 0.05 * path_length


def test_cli_writes_a_dataset_the_pipeline_reads(tmp_path):
  out = tmp_path / "synth"
  proc = subprocess.run([sys.executable, "-m", "camjax.data.synthetic", "--out", str(out), "--num_scenes", "2",
                         "--resolution", "32", "--frames", "5", "--cameras", "2", "--tracks", "16"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  from camjax.data.pipeline import make_pipeline
  from camjax.data.shards import ShardSource
  source = ShardSource(out)
  assert len(source) == 4
  record = source[0]
  assert record.tracks_xyz.shape == (16, 5, 3) and record.depth.shape == (5, 32, 32)
  batch = next(iter(make_pipeline(source, num_frames=5, height=32, width=32, batch_size=4, seed=0)))
  assert batch["frames"].shape == (4, 5, 32, 32, 3) and batch["has_camera"].all()


TINY = ["--num_scenes", "2", "--resolution", "16", "--frames", "3", "--tracks", "4"]


def _dataset_files(root):
  return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("flag, value", [
    ("--num_scenes", "0"), ("--num_scenes", "-3"), ("--cameras", "0"), ("--resolution", "0"), ("--frames", "0"),
    ("--tracks", "-1"), ("--fps", "0"), ("--workers", "0"),
])
def test_cli_rejects_out_of_range_arguments_naming_the_flag(tmp_path, capsys, flag, value):
  argv = ["--out", str(tmp_path / "synth"), "--num_scenes", "1", "--resolution", "8", "--frames", "2", "--tracks", "2"]
  with pytest.raises(SystemExit) as info:
    synthetic.main(argv + [flag, value])
  assert info.value.code == 2
  assert f"argument {flag}: must be" in capsys.readouterr().err
  assert not (tmp_path / "synth").exists()


def test_cli_reuses_an_identical_dataset_refuses_a_stale_one_and_overwrites_atomically(tmp_path, capsys):
  from camjax.data.shards import PROVENANCE_FILE, ShardSource
  out = tmp_path / "synth"
  synthetic.main(["--out", str(out)] + TINY)
  assert "wrote 2 clips" in capsys.readouterr().out
  files = _dataset_files(out)
  provenance = (out / PROVENANCE_FILE).read_text()
  assert '"num_scenes": 2' in provenance and '"resolution": 16' in provenance

  synthetic.main(["--out", str(out)] + TINY)  # the same arguments: reused, not rendered again
  assert "reusing" in capsys.readouterr().out and (out / PROVENANCE_FILE).read_text() == provenance

  with pytest.raises(SystemExit) as info:  # other arguments: refused, naming what differs and how to overwrite
    synthetic.main(["--out", str(out), "--num_scenes", "1", "--resolution", "8", "--frames", "3", "--tracks", "4"])
  err = capsys.readouterr().err
  assert info.value.code == 1
  assert "num_scenes: 2 in the dataset, asked 1" in err and "resolution: 16 in the dataset, asked 8" in err
  assert "--overwrite" in err and "frames:" not in err
  assert _dataset_files(out) == files and len(ShardSource(out)) == 2  # the old dataset is untouched

  synthetic.main(["--out", str(out), "--num_scenes", "1", "--resolution", "8", "--frames", "3", "--tracks", "4",
                  "--overwrite"])
  assert "wrote 1 clips" in capsys.readouterr().out
  source = ShardSource(out)
  assert len(source) == 1 and source[0].frames.shape == (3, 8, 8, 3)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no temporary or old copy left behind


def test_an_interrupted_overwrite_leaves_the_old_dataset(tmp_path, monkeypatch):
  from camjax.data.shards import ShardSource
  out = tmp_path / "synth"
  synthetic.write_dataset(out, 2, resolution=16, frames=3, tracks=4, progress=False)
  files = _dataset_files(out)

  def failing(seed, **kwargs):
    if seed == 1:
      raise KeyboardInterrupt
    return real(seed, **kwargs)

  real = synthetic.scene_records
  monkeypatch.setattr(synthetic, "scene_records", failing)
  with pytest.raises(KeyboardInterrupt):
    synthetic.write_dataset(out, 3, resolution=16, frames=3, tracks=4, progress=False, overwrite=True)
  assert _dataset_files(out) == files and len(ShardSource(out)) == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]


def test_cli_never_writes_into_a_folder_that_is_not_a_dataset(tmp_path, capsys):
  out = tmp_path / "mine"
  out.mkdir()
  (out / "notes.txt").write_text("keep me")
  for extra in ([], ["--overwrite"]):
    with pytest.raises(SystemExit) as info:
      synthetic.main(["--out", str(out)] + TINY + extra)
    assert info.value.code == 1 and "not a camjax dataset (notes.txt)" in capsys.readouterr().err
  assert [p.name for p in out.iterdir()] == ["notes.txt"]
