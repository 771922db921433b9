"""The end-to-end command: rendered videos with known cameras and depth plus bad inputs, resumability, shards the
training pipeline reads, and a real video from ../shared/data/videos."""

import dataclasses
import json
import shutil

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
  assert sorted(v) == ["broken", "empty", "moving", "static"]
  assert v["moving"]["status"] == "kept"
  assert v["static"]["status"] == "dropped" and v["static"]["stage"] == "motion"
  assert "static camera" in v["static"]["reason"]
  static = v["static"]["clips"]["static_c0"]
  assert static["stage"] == "motion" and static["stats"]["motion"]["camera_motion_px"] < 0.5, static
  assert v["moving"]["clips"]["moving_c0"]["stats"]["motion"]["camera_motion_px"] > 2.0
  assert data["stages"] == {"clips": {"kept": 2, "dropped": 2}, "motion": {"kept": 1, "dropped": 1},
                            "poses": {"kept": 1, "dropped": 0}, "scale": {"kept": 1, "dropped": 0},
                            "balance": {"kept": 1, "dropped": 0}, "shards": {"kept": 1, "dropped": 0}}
  assert data["output"]["num_clips"] == 1 and (curated["out"] / "balance.png").is_file()
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


def _poses_cache(out):
  """The mtime of every stage-3 (SfM) cache entry under `out`."""
  return {p.name: p.stat().st_mtime_ns for p in (out / "work" / "poses").glob("*.npz")}


def test_rerun_resumes_from_the_cache(curated):
  before = _poses_cache(curated["out"])
  assert len(before) == 1
  report = pipeline.run(curated["videos"], curated["out"], curated["options"], depth=curated["depth"], progress=False)
  assert _poses_cache(curated["out"]) == before  # SfM was not run again
  assert report.data["videos"]["moving"]["status"] == "kept"


def _rerun_copy(curated, tmp_path, videos=None, **changes):
  """Reruns the curation (of `videos`, default all) into a copy of the fixture's output with some options changed;
  returns (out, report)."""
  out = tmp_path / "out"
  if not out.exists():
    shutil.copytree(curated["out"], out)
  options = dataclasses.replace(curated["options"], **changes)
  report = pipeline.run(curated["videos"], out, options, depth=curated["depth"], videos=videos, progress=False)
  return out, report


def test_rerun_with_other_options_does_not_reuse_their_decisions(curated, tmp_path):
  out, _ = _rerun_copy(curated, tmp_path, min_camera_motion=1000.0)
  data = json.loads((out / "report.json").read_text())
  assert data["config"]["min_camera_motion"] == 1000.0
  moving = data["videos"]["moving"]
  assert moving["status"] == "dropped" and moving["stage"] == "motion" and "< 1000.0" in moving["reason"], moving
  assert data["stages"]["motion"] == {"kept": 0, "dropped": 2} and data["stages"]["shards"]["kept"] == 0
  # stage-1 options key the clip cache: 8-frame clips are cut afresh, not the cached 12-frame ones
  clips_8 = dataclasses.replace(curated["options"].clips, clip_length=8)
  _, report = _rerun_copy(curated, tmp_path, clips=clips_8, min_camera_motion=1000.0)
  assert report.data["videos"]["moving"]["clips"]["moving_c0"]["stats"]["clips"]["video_frames"] == [0, 7]
  # back to the fixture's options: its cached SfM result is used again and the clip is kept again
  _, report = _rerun_copy(curated, tmp_path)
  assert report.data["videos"]["moving"]["status"] == "kept"
  assert _poses_cache(out) == _poses_cache(curated["out"])


def test_outputs_reflect_the_current_run(curated, tmp_path):
  from camjax.data.shards import ShardSource, dataset_dir

  out, report = _rerun_copy(curated, tmp_path, videos=["static", "broken"])  # keeps no clip
  assert report.data["output"] == {} and "shards:" not in (out / "summary.txt").read_text()
  assert not (out / "shards").exists() and not (out / "balance.png").exists()
  assert sorted(p.name for p in out.iterdir()) == ["report.json", "summary.txt", "work"]  # no temporary left
  out, _ = _rerun_copy(curated, tmp_path, balance=False)  # shards written again, no histogram
  source = ShardSource(dataset_dir(out / "shards"))
  assert len(source) == 1 and source[0].clip_id == "moving_c0"
  (out / "balance.png").write_bytes(b"stale")
  _rerun_copy(curated, tmp_path, balance=False)
  assert not (out / "balance.png").exists()
  assert json.loads((out / "report.json").read_text())["balance"] == {}
  assert sorted(p.name for p in out.iterdir()) == ["report.json", "shards", "summary.txt", "work"]


def test_cli_on_a_real_video(shared_data, tmp_path, capsys):
  from camjax.data.shards import ShardSource, dataset_dir

  videos = shared_data / "videos"
  if not (videos / "cat.mp4").is_file():
    pytest.skip(f"{videos}/cat.mp4 not found")
  rc = cli.main(["--videos", str(videos), "--out", str(tmp_path), "--only", "cat.mp4", "--max_clips", "1",
                 "--no_progress"])
  assert rc == 0
  data = json.loads((tmp_path / "report.json").read_text())
  assert list(data["videos"]) == ["cat"]
  cat = data["videos"]["cat"]
  # handheld camera moving around a cat (MANIFEST): measured 1.66 px/frame of background flow, all 16 frames
  # registered at 0.41 px reprojection error
  assert cat["status"] == "kept" and cat["stage"] == "shards", cat
  assert list(cat["clips"]) == ["cat_c0"]
  stats = cat["clips"]["cat_c0"]["stats"]
  assert stats["clips"]["video_size"] == [480, 368] and stats["clips"]["video_frames"] == [0, 30]
  assert stats["motion"]["camera_motion_px"] > 1.0, stats
  assert stats["poses"]["registered"] >= 0.8 and stats["poses"]["reprojection_error_px"] < 2.0, stats
  source = ShardSource(dataset_dir(tmp_path / "shards"))
  assert len(source) == 1
  record = source[0]
  assert record.clip_id == "cat_c0" and record.source == "curate:cat.mp4"
  assert record.frames.shape == (16, 256, 196, 3) and np.isnan(record.metric_scale)  # no depth: SfM scale
  assert "cat: kept (1 clip(s) written)" in capsys.readouterr().out
  assert cli.main(["--videos", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
