"""Real-data ingest on ../shared/data: RealEstate10K clips and the fox NeRF capture."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from camjax import geometry as g
from camjax import media
from camjax.data import RecordError
from camjax.data import sources
from camjax.data.shards import ShardSource


def test_re10k_ingest_matches_pose_files_and_videos(shared_data, tmp_path):
  root = shared_data / "re10k_clips"
  out = tmp_path / "re10k"
  proc = subprocess.run([sys.executable, "-m", "camjax.data.sources", "re10k", "--root", str(root), "--out",
                         str(out)], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  source = ShardSource(out)
  records = {source[i].clip_id: source[i] for i in range(len(source))}
  assert len(records) == 8  # the plain 16-frame pose files have no video and are skipped
  for clip_id, record in records.items():
    stem = clip_id.removeprefix("re10k-")
    frames = media.read_video(root / "videos" / f"{stem}.mp4")
    np.testing.assert_array_equal(record.frames, frames)
    cams = g.read_re10k(root / "pose_files" / f"{stem}.txt", image_size=(320, 576))
    np.testing.assert_allclose(record.K, cams.K)
    np.testing.assert_allclose(record.w2c, cams.w2c)
    assert record.source.startswith("re10k:https://")


def test_re10k_frame_count_mismatch_is_a_named_error(shared_data, tmp_path):
  clips = shared_data / "re10k_clips"
  (tmp_path / "pose_files").mkdir()
  (tmp_path / "videos").mkdir()
  shutil.copy(clips / "pose_files" / "0bf152ef84195293_svdxt.txt", tmp_path / "pose_files" / "clip.txt")
  shutil.copy(clips / "videos" / "0bf152ef84195293_svd.mp4", tmp_path / "videos" / "clip.mp4")
  with pytest.raises(RecordError, match="14 frames but 25 cameras"):
    list(sources.re10k_records(tmp_path))


def test_text_beside_the_clips_is_not_a_pose_file(shared_data, tmp_path):
  """A LICENSE.txt / README.txt beside the clips is skipped as not a pose file; a pose file stays one even when it
  has only its URL line or a garbled row (the reader then names the problem)."""
  clips = shared_data / "re10k_clips"
  assert not sources.is_re10k_pose_file(clips / "LICENSE.txt")
  pose_files = sources.re10k_pose_files(clips)
  assert pose_files and all(p.parent.name == "pose_files" for p in pose_files)
  assert len(pose_files) == len(list((clips / "pose_files").glob("*.txt")))
  (tmp_path / "README.txt").write_text("Clips for a test\n\n1. Keep them.\n2. Do not commit them.\n")
  (tmp_path / "url_only.txt").write_text("https://www.youtube.com/watch?v=x\n")
  row = "33400000 0.5 0.9 0.5 0.5 0 0 " + " ".join(["1", "0", "0", "0", "0", "1", "0", "0", "0", "0", "1", "0"])
  (tmp_path / "no_url.txt").write_text(row.replace("0.9", "zero") + "\n")  # 19 tokens, one garbled
  assert [p.name for p in sources.re10k_pose_files(tmp_path)] == ["no_url.txt", "url_only.txt"]
  with pytest.raises(g.CameraError):
    g.read_re10k(tmp_path / "no_url.txt")
  (tmp_path / "no_url.txt").unlink(), (tmp_path / "url_only.txt").unlink()
  with pytest.raises(RecordError, match="no RealEstate10K pose files"):
    list(sources.re10k_records(tmp_path))


def test_nerf_ingest_of_the_fox_capture(shared_data):
  record = next(sources.nerf_records(shared_data / "fox" / "transforms.json", size=(192, 108)))
  assert record.frames.shape == (50, 192, 108, 3)
  full = g.read_nerf_transforms(shared_data / "fox" / "transforms.json")
  np.testing.assert_allclose(record.K[0], np.diag([0.1, 0.1, 1.0]) @ full.K[0])
  record.validate()


def test_colmap_ingest_of_a_real_sfm_model(tmp_path):
  pycolmap = pytest.importorskip("pycolmap")
  import mediapy

  from camjax.data import synthetic
  clip = synthetic.render_scene(3, num_frames=10, height=128, width=128, trajectories=["truck_right:0.6"],
                                num_tracks=4)[0]
  (tmp_path / "images").mkdir()
  for i, frame in enumerate(clip.frames):
    mediapy.write_image(tmp_path / "images" / f"{i:03d}.png", frame)
  K = clip.cameras.K[0]
  reader = pycolmap.ImageReaderOptions()
  reader.camera_model = "PINHOLE"
  reader.camera_params = f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"
  pycolmap.extract_features(tmp_path / "db.db", tmp_path / "images", camera_mode=pycolmap.CameraMode.SINGLE,
                            reader_options=reader, device=pycolmap.Device.cpu)
  pycolmap.match_exhaustive(tmp_path / "db.db", device=pycolmap.Device.cpu)
  (tmp_path / "sparse").mkdir()
  options = pycolmap.GlobalPipelineOptions()
  options.mapper.bundle_adjustment.refine_focal_length = False  # intrinsics known and held fixed
  recs = pycolmap.global_mapping(tmp_path / "db.db", tmp_path / "images", tmp_path / "sparse", options)
  model = tmp_path / "model"
  model.mkdir()
  max(recs.values(), key=lambda r: r.num_reg_images()).write(model)
  record = next(sources.colmap_records(model, tmp_path / "images"))
  record.validate()
  assert record.num_frames == 10  # every frame registered
  np.testing.assert_array_equal(record.frames[0], clip.frames[0])
  np.testing.assert_allclose(record.K[0], K, rtol=1e-6)
  rel = g.metrics.cameractrl2_errors(record.cameras, clip.cameras)
  assert rel["rot_err"] < 2.0


def test_re10k_cli_reuses_unchanged_inputs_refuses_changed_ones_and_overwrites(tmp_path, capsys, tiny_re10k):
  from camjax.data.shards import PROVENANCE_FILE
  root, out = tmp_path / "clips", tmp_path / "out"
  tiny_re10k(root, "a")
  argv = ["re10k", "--root", str(root), "--out", str(out)]
  sources.main(argv)
  assert "wrote" in capsys.readouterr().out and len(ShardSource(out)) == 1
  provenance = (out / PROVENANCE_FILE).read_text()
  assert '"a/000.png"' in provenance and '"a.txt"' in provenance  # the input listing: path, size, mtime

  sources.main(argv)
  assert "reusing" in capsys.readouterr().out and (out / PROVENANCE_FILE).read_text() == provenance

  tiny_re10k(root, "b")  # the input folder changed
  with pytest.raises(SystemExit) as info:
    sources.main(argv)
  err = capsys.readouterr().err
  assert info.value.code == 1 and "4 new input file(s)" in err and "b.txt" in err and "--overwrite" in err
  assert len(ShardSource(out)) == 1
  with pytest.raises(SystemExit):
    sources.main(argv + ["--fps", "4"])
  assert "fps: 8.0 in the dataset, asked 4.0" in capsys.readouterr().err

  sources.main(argv + ["--overwrite"])
  assert "wrote" in capsys.readouterr().out
  assert sorted(ShardSource(out)[i].clip_id for i in range(2)) == ["re10k-a", "re10k-b"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["clips", "out"]  # nothing half-written left behind

  (root / "a" / "001.png").write_bytes((root / "a" / "000.png").read_bytes())  # a frame rewritten
  with pytest.raises(SystemExit):
    sources.main(argv)
  err = capsys.readouterr().err
  assert "1 changed (size or mtime) input file(s)" in err and "a/001.png" in err
