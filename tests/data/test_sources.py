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


def test_nerf_ingest_of_the_fox_capture(shared_data):
  record = next(sources.nerf_records(shared_data / "fox" / "transforms.json", size=(192, 108)))
  assert record.frames.shape == (50, 192, 108, 3)
  full = g.read_nerf_transforms(shared_data / "fox" / "transforms.json")
  np.testing.assert_allclose(record.K[0], np.diag([0.1, 0.1, 1.0]) @ full.K[0])
  record.validate()
