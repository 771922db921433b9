"""`evaluate_dir` / `python -m camjax.eval` on a main-job sample folder and on --videos/--cameras folders:
report.md, metrics.json, frusta plots and strips are written, bad samples become error rows."""

import json
import re

import numpy as np
import pytest

from camjax import geometry as g
from camjax.eval import EvalError, evaluate_videos, find_samples, latest_step_dir, render_scenes
from camjax.eval.following import run_following
from camjax.eval.__main__ import main

pytest.importorskip("pycolmap")


def write_video(path, frames):
  import mediapy

  from camjax.media import _setup_ffmpeg

  _setup_ffmpeg()
  mediapy.write_video(str(path), frames, fps=8, crf=12)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp("work")
  clip = render_scenes(1, seed=0, num_frames=13, height=128, width=160, trajectories=["truck_right:0.8"])[0]
  old = root / "samples" / "step_10"
  old.mkdir(parents=True)
  d = root / "samples" / "step_200"
  d.mkdir()
  write_video(d / "generated_0.mp4", clip.frames)
  write_video(d / "ground_truth_0.mp4", clip.frames)
  g.write_re10k(d / "cameras_0.txt", clip.cameras)
  (d / "caption_0.txt").write_text(clip.caption)
  write_video(d / "generated_1.mp4", clip.frames[:8])  # 8 frames for 13 cameras: an error row
  g.write_re10k(d / "cameras_1.txt", clip.cameras)
  return root


def test_discovery(workdir, tmp_path):
  assert latest_step_dir(workdir).name == "step_200"
  assert latest_step_dir(workdir, 10).name == "step_10"
  with pytest.raises(EvalError, match="no step_7"):
    latest_step_dir(workdir, 7)
  with pytest.raises(EvalError, match="no step_<N>"):
    latest_step_dir(tmp_path)
  samples = find_samples(workdir / "samples" / "step_200")
  assert [s.name for s in samples] == ["sample_0", "sample_1"]
  assert samples[0].ground_truth is not None and samples[1].ground_truth is None and samples[0].caption
  with pytest.raises(EvalError, match="no generated_"):
    find_samples(workdir / "samples" / "step_10")


def test_cli_workdir_writes_the_report(workdir, capsys):
  assert main(["--workdir", str(workdir), "--trials", "1"]) == 0
  out = workdir / "samples" / "step_200" / "eval"
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["num_videos"] == 2 and metrics["num_errors"] == 1
  good, bad = metrics["videos"]
  assert "8 frames but 13 cameras" in bad["error"]
  m = good["metrics"]
  assert m["success_ratio"] == 1.0 and m["cameractrl2/rot_err"] < 1.0
  assert m["psnr"] == 100.0 and m["ssim"] == pytest.approx(1.0)  # ground truth = the same file
  assert m["repeat_first_frame/psnr"] < 40 and m["mean_colour/ssim"] < m["ssim"]  # the trivial baselines, frames 1..
  assert metrics["baselines"]["repeat_first_frame"]["psnr"] == pytest.approx(m["repeat_first_frame/psnr"])
  assert metrics["baselines"]["model"]["psnr"] == 100.0 and metrics["quality_frames"] == "frames 1..T-1"
  assert m["motion_strength"] >= 0.0
  assert metrics["aggregate"]["cameractrl2/rot_err"] == pytest.approx(m["cameractrl2/rot_err"])
  assert metrics["units"]["cami2v/rot_err"].startswith("rad")
  report = (out / "report.md").read_text()
  assert "| sample_0 | 1 |" in report and "error: " in report
  assert "| baseline: repeat first frame |" in report and "PSNR dB (frames 1..T-1)" in report
  for f in ("strip_sample_0.png", "frusta_sample_0.png"):
    assert (out / f).stat().st_size > 1000
  assert "report:" in capsys.readouterr().out
  assert main(["--workdir", str(workdir), "--step", "10"]) == 2  # no samples there: a clear error, exit code 2


def test_videos_and_cameras_folders(workdir, tmp_path):
  d = workdir / "samples" / "step_200"
  videos, cams = tmp_path / "videos", tmp_path / "cams"
  videos.mkdir()
  cams.mkdir()
  (videos / "clip.mp4").write_bytes((d / "generated_0.mp4").read_bytes())
  (cams / "clip.txt").write_text((d / "cameras_0.txt").read_text())
  (videos / "lonely.mp4").write_bytes((d / "generated_0.mp4").read_bytes())  # no camera file: skipped

  out = evaluate_videos(videos, cams, tmp_path / "out", trials=1, motion=False, intrinsics="frames",
                        protocols=("cameractrl2",))
  assert [v["name"] for v in out["videos"]] == ["clip"]
  assert set(out["aggregate"]) == {"success_ratio", "registered_ratio", "cameractrl2/rot_err",
                                   "cameractrl2/rot_err_std", "cameractrl2/trans_err", "cameractrl2/trans_err_std"}
  assert out["aggregate"]["cameractrl2/rot_err"] < 1.0
  with pytest.raises(EvalError, match="has a camera file"):
    evaluate_videos(videos, tmp_path, tmp_path / "out2")


def _garbage_video(path):
  path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())


def test_video_without_camera_file_is_listed_as_skipped(workdir, tmp_path, capsys):
  videos, cams, out = tmp_path / "videos", tmp_path / "cams", tmp_path / "out"
  videos.mkdir()
  cams.mkdir()
  _garbage_video(videos / "broken.mp4")  # evaluated (an error row): no SfM needed
  (cams / "broken.txt").write_text((workdir / "samples" / "step_200" / "cameras_0.txt").read_text())
  _garbage_video(videos / "lonely.mp4")  # no camera file
  assert main(["--videos", str(videos), "--cameras", str(cams), "--out", str(out), "--no_motion"]) == 0
  reason = f"no camera file {cams / 'lonely.txt'}"
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["num_skipped"] == 1
  assert metrics["skipped"] == [{"name": "lonely", "video": str(videos / "lonely.mp4"), "reason": reason}]
  assert [v["name"] for v in metrics["videos"]] == ["broken"]
  assert f"| lonely | {reason} |" in (out / "report.md").read_text()
  printed = capsys.readouterr().out
  assert f"lonely: skipped ({reason})" in printed and "1 skipped" in printed


def test_table_cell_is_one_line_without_pipes():
  from camjax.eval.report import table_cell

  assert table_cell("a | b\n  c\td") == "a \\| b c d"
  long = "ffmpeg version 7 Copyright\n" + "  configuration: --enable-x\n" * 50 + "Error opening input: moov atom not found"
  cell = table_cell(long, limit=120)
  assert "\n" not in cell and len(cell) <= 124 and cell.startswith("ffmpeg version 7")
  assert cell.endswith("moov atom not found") and " … " in cell


def test_decode_error_with_ffmpeg_banner_stays_in_its_table_row(workdir, tmp_path):
  videos, cams = tmp_path / "videos", tmp_path / "cams"
  videos.mkdir()
  cams.mkdir()
  _garbage_video(videos / "broken.mp4")
  (cams / "broken.txt").write_text((workdir / "samples" / "step_200" / "cameras_0.txt").read_text())
  out = evaluate_videos(videos, cams, tmp_path / "out", motion=False)
  assert "\n" in out["videos"][0]["error"]  # ffmpeg's multi-line banner: metrics.json keeps the whole message
  lines = (tmp_path / "out" / "report.md").read_text().splitlines()
  start = lines.index("## Per video") + 2
  table = lines[start:lines.index("", start)]
  header, rows = table[0], table[2:]
  assert len(rows) == 1 and rows[0].startswith("| broken | error: ") and "cannot decode video" in rows[0]
  unescaped = lambda line: len(re.findall(r"(?<!\\)\|", line))  # noqa: E731
  assert unescaped(rows[0]) == unescaped(header) and len(rows[0]) < 400


def _frozen(first_frame, cameras, caption, null_camera):
  """A 'model' that never moves: the first frame repeated (its SfM fails; the ground-truth video's need not)."""
  del caption, null_camera
  return np.repeat(first_frame[None], cameras.num_frames, axis=0)


def test_following_report_ground_truth_row_and_its_switch(tmp_path):
  """Issue #16: `run_following` (the main job's and the CLI's entry point) adds the ground-truth video's SfM floor
  as the last column of the following report and to metrics.json by default; `ground_truth_video=False` (passed
  through its options) leaves it out. Toy 32x40 scenes, 1 SfM trial: the floor's numbers may be undefined (`–`)."""
  size = dict(num_frames=5, height=32, width=40, trials=1, protocols=("cameractrl2",))
  res = run_following(_frozen, 2, tmp_path / "on", **size)
  floor = res["ground_truth_video"]
  assert set(floor) == {"success_ratio", "registered_ratio", "cameractrl2/rot_err", "cameractrl2/rot_err_std",
                        "cameractrl2/trans_err", "cameractrl2/trans_err_std"}  # camera metrics only, no PSNR/SSIM
  per_scene = [r["ground_truth_video"]["success_ratio"] for r in res["per_scene"]]
  assert floor["success_ratio"] == pytest.approx(np.mean(per_scene)) and 0.0 <= floor["success_ratio"] <= 1.0
  saved = json.loads((tmp_path / "on" / "metrics.json").read_text())
  assert saved["ground_truth_video"]["success_ratio"] == pytest.approx(floor["success_ratio"])
  assert [r["ground_truth_video"]["success_ratio"] for r in saved["per_scene"]] == pytest.approx(per_scene)
  lines = (tmp_path / "on" / "report.md").read_text().splitlines()
  header = next(line for line in lines if line.startswith("| metric |"))
  assert header.endswith("| baseline: mean colour | ground-truth video (SfM floor) |")
  row = next(line for line in lines if line.startswith("| SSIM (frames 1..T-1) |")).split(" | ")
  assert row[-1] == "– |" and len(row) == len(header.split(" | "))  # no trivial SSIM 1 for the ground truth
  success = next(line for line in lines if line.startswith("| success_ratio |"))
  # The frozen 'model' never registers; the floor is whatever SfM makes of the toy scenes.
  assert success == f"| success_ratio | 0 | 0 | 0 | – | – | {floor['success_ratio']:.4g} |"
  assert sum(line.startswith("| ground_truth_video |") for line in lines) == 2  # one row per scene table

  off = run_following(_frozen, 1, tmp_path / "off", ground_truth_video=False, **size)
  assert "ground_truth_video" not in off and "ground_truth_video" not in off["per_scene"][0]
  assert "ground_truth_video" not in json.loads((tmp_path / "off" / "metrics.json").read_text())
  text = (tmp_path / "off" / "report.md").read_text()
  assert "SfM floor" not in text and "| metric | camera-conditioned |" in text
