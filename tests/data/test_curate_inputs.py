"""Which inputs a curation run reads and how they key its caches: videos sharing a stem, a video rewritten between
runs, and folders or `--only` names that select nothing (tiny rendered mp4 / mov files)."""

import json

import numpy as np
import pytest

from camjax.data.curate import NoVideosError, clips, pipeline, validation
from camjax.data.curate import __main__ as cli

# Stage 1 only needs 8 frames; an impossible camera-motion threshold stops every clip at stage 2, before SfM.
OPTIONS = pipeline.CurateOptions(clips=clips.ClipOptions(clip_length=8, target_fps=None, max_side=None),
                                 min_camera_motion=1e3, balance=False)


def _write_video(path, frames, fps=8.0):
  import imageio_ffmpeg
  import mediapy

  mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
  mediapy.write_video(path, frames, fps=fps)


@pytest.fixture(scope="module")
def moving_frames():
  return validation.render_clip(0, "truck_left:1.0", num_frames=10, height=72, width=96).frames


def _frozen(frames):
  return np.repeat(frames[:1], len(frames), axis=0)  # a still picture: stage 1 drops it as "static picture"


def _videos(report):
  return report.data["videos"]


def test_videos_sharing_a_stem_keep_their_own_ids_and_cache_entries(tmp_path, moving_frames):
  videos = tmp_path / "videos"
  videos.mkdir()
  _write_video(videos / "cat.mp4", moving_frames)
  _write_video(videos / "cat.mov", _frozen(moving_frames))
  for _ in range(2):  # the second run reads every stage from the cache
    v = _videos(pipeline.run(videos, tmp_path / "out", OPTIONS, progress=False))
    assert set(v) == {"cat.mov", "cat.mp4"}
    assert v["cat.mov"]["path"].endswith("cat.mov") and v["cat.mp4"]["path"].endswith("cat.mp4")
    assert v["cat.mov"]["stage"] == "clips" and "static picture" in v["cat.mov"]["reason"]
    assert list(v["cat.mp4"]["clips"]) == ["cat.mp4_c0"]
    clip = v["cat.mp4"]["clips"]["cat.mp4_c0"]
    assert clip["stage"] == "motion" and clip["stats"]["motion"]["camera_motion_px"] > 1.0, clip
  assert len(list((tmp_path / "out" / "work" / "clips").glob("*.json"))) == 2
  # ids come from the whole folder, so selecting one of the two does not change its id
  assert set(clips.select_videos(videos, ["cat.mp4"]).values()) == {"cat.mp4"}


def test_a_rewritten_video_is_curated_again(tmp_path, moving_frames):
  videos = tmp_path / "videos"
  videos.mkdir()
  _write_video(videos / "v.mp4", moving_frames)
  v = _videos(pipeline.run(videos, tmp_path / "out", OPTIONS, progress=False))
  assert v["v"]["clips"]["v_c0"]["stage"] == "motion"
  _write_video(videos / "v.mp4", _frozen(moving_frames))  # same path, new size and modification time
  v = _videos(pipeline.run(videos, tmp_path / "out", OPTIONS, progress=False))
  assert v["v"]["stage"] == "clips" and "static picture" in v["v"]["reason"], v["v"]


def test_an_empty_folder_is_a_named_error(tmp_path, capsys):
  (tmp_path / "videos").mkdir()
  (tmp_path / "videos" / "notes.txt").write_text("not a video")
  with pytest.raises(NoVideosError, match=r"videos: no videos to curate: searched for video files \(.mp4, .mov"):
    pipeline.run(tmp_path / "videos", tmp_path / "out", OPTIONS, progress=False)
  assert cli.main(["--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "out"), "--no_progress"]) == 2
  err = capsys.readouterr().err
  assert str(tmp_path / "videos") in err and ".mp4" in err and ".png" in err, err
  assert not (tmp_path / "out" / "report.json").exists()


def test_only_matching_nothing_is_a_named_error(tmp_path, capsys, moving_frames):
  videos = tmp_path / "videos"
  videos.mkdir()
  _write_video(videos / "cat.mp4", moving_frames)
  rc = cli.main(["--videos", str(videos), "--out", str(tmp_path / "out"), "--only", "dog.mp4", "--no_progress"])
  assert rc == 2
  err = capsys.readouterr().err
  assert str(videos) in err and "dog.mp4" in err and ".mp4" in err and "found cat.mp4" in err, err
  with pytest.raises(NoVideosError, match=r"--only \['dog'\] match no video") as e:
    pipeline.run(videos, tmp_path / "out", OPTIONS, videos=["cat", "dog"], progress=False)
  assert e.value.only == ["cat", "dog"] and e.value.videos_dir == str(videos)
  with pytest.raises(NoVideosError, match="--only names no video"):
    pipeline.run(videos, tmp_path / "out", OPTIONS, videos=[], progress=False)
  assert not (tmp_path / "out" / "report.json").exists()
  report = pipeline.run(videos, tmp_path / "out", OPTIONS, videos=["cat"], progress=False)  # by stem: selected
  assert list(_videos(report)) == ["cat"]
  assert list(json.loads((tmp_path / "out" / "report.json").read_text())["videos"]) == ["cat"]
