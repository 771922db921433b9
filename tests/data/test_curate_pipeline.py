"""The end-to-end command: rendered videos with known cameras and depth plus bad inputs, resumability, shards the
training pipeline reads, and a real video from ../shared/data/videos."""

import json

import numpy as np
import pytest

from camjax.data.curate import __main__ as cli
from camjax.data.curate import clips, pipeline, scale, validation

pytest.importorskip("pycolmap")


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
  import mediapy

  root = tmp_path_factory.mktemp("curate")
  videos = root / "videos"
  videos.mkdir()
  moving = validation.render_clip(0, "truck_left:1.0", num_frames=12, height=144, width=192)
  static = validation.render_clip(3, "static", num_frames=12, height=144, width=192)
  for name, clip in (("moving", moving), ("static", static)):  # image-sequence folders (lossless)
    (videos / name).mkdir()
    for i, frame in enumerate(clip.frames):
      mediapy.write_image(videos / name / f"{i:03d}.png", frame)
  (videos / "broken.mp4").write_bytes(b"not a video at all")
  (videos / "empty.mp4").write_bytes(b"")
  depth = scale.ArrayDepth({"moving": moving.depth, "static": static.depth})
  options = pipeline.CurateOptions(clips=clips.ClipOptions(clip_length=12, target_fps=None, max_side=None,
                                                           image_fps=8.0), fov_deg=60.0)
  out = root / "out"
  report = pipeline.run(videos, out, options, depth=depth, progress=False)
  return {"root": root, "out": out, "report": report, "moving": moving, "options": options, "depth": depth,
          "videos": videos}


def test_report_says_what_each_stage_did(curated):
  data = json.loads((curated["out"] / "report.json").read_text())
  v = data["videos"]
  assert v["moving"]["status"] == "kept"
  assert v["static"]["status"] == "dropped" and v["static"]["stage"] == "motion"
  assert "static camera" in v["static"]["reason"]
  assert v["broken"]["status"] == "dropped" and v["broken"]["stage"] == "clips" and "unreadable" in v["broken"]["reason"]
  assert v["empty"]["status"] == "dropped" and v["empty"]["stage"] == "clips"
  stats = v["moving"]["clips"]["moving_c0"]["stats"]
  assert stats["poses"]["registered"] == 1.0 and stats["poses"]["reprojection_error_px"] < 1.0
  assert "moving:" in (curated["out"] / "summary.txt").read_text()


def test_shards_hold_metric_cameras_and_feed_the_training_pipeline(curated):
  from camjax.data.pipeline import make_pipeline
  from camjax.data.shards import ShardSource, dataset_dir
  from camjax.geometry import align

  source = ShardSource(dataset_dir(curated["out"] / "shards"))  # what train.py does for data.source = "shards"
  assert len(source) == 1
  record = source[0]
  assert record.source == "curate:moving" and record.scene_id == "moving" and record.depth is not None
  gt = curated["moving"].cameras
  sim = align.umeyama(record.cameras.centers, gt.centers)
  assert abs(sim.scale - 1) < 0.05 and abs(record.metric_scale) > 0  # metric: no rescaling needed
  batch = next(iter(make_pipeline(source, num_frames=8, height=64, width=64, batch_size=1, seed=0, worker_count=0)))
  assert batch["frames"].shape[:2] == (1, 8)


def test_rerun_resumes_from_the_cache(curated):
  marker = curated["out"] / "work" / "poses" / "moving_c0.npz"
  before = marker.stat().st_mtime_ns
  report = pipeline.run(curated["videos"], curated["out"], curated["options"], depth=curated["depth"], progress=False)
  assert marker.stat().st_mtime_ns == before  # SfM was not run again
  assert report.data["videos"]["moving"]["status"] == "kept"


def test_cli_on_a_real_video(shared_data, tmp_path, capsys):
  videos = shared_data / "videos"
  if not (videos / "cat.mp4").is_file():
    pytest.skip(f"{videos}/cat.mp4 not found")
  rc = cli.main(["--videos", str(videos), "--out", str(tmp_path), "--only", "cat.mp4", "--max_clips", "1",
                 "--no_progress"])
  assert rc == 0
  data = json.loads((tmp_path / "report.json").read_text())
  assert list(data["videos"]) == ["cat"]
  cat = data["videos"]["cat"]
  assert cat["status"] in ("kept", "dropped") and (cat["status"] == "kept" or cat["reason"])
  assert "camjax curation summary" in capsys.readouterr().out
  assert cli.main(["--videos", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
