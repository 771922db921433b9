"""Trivial baselines next to the model in every quality table (issue 16): repeat the first frame, mean colour, copy
the source; PSNR/SSIM on the frames after the condition frames; the samples report and camera following show them,
and camera following counts the scenes where the true camera beats the reversed one. No SfM, no model."""

import json
import types

import numpy as np
import pytest

from camjax import geometry as g
from camjax.eval import (BASELINES, EvalError, baseline_scores, camera_following, copy_source, frame_quality,
                         mean_colour, psnr, repeat_first_frame, ssim, write_following_report)
from camjax.eval import following as following_module

C1 = 0.01**2  # SSIM's C1 on [0, 1] pixels


def moving_video(T=5, H=24, W=32, seed=0):
  """A smooth random texture sliding 2 pixels right per frame: `uint8 [T, H, W, 3]`."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (H // 4, (W + 2 * T) // 4 + 1, 3)).astype(np.float64)
  big = np.kron(base, np.ones((4, 4, 1)))[:H]
  return np.stack([big[:, 2 * t:2 * t + W] for t in range(T)]).round().astype(np.uint8)


def constant_video(levels, H=16, W=16):
  return np.stack([np.full((H, W, 3), v, np.uint8) for v in levels])


def test_repeat_first_frame_and_copy_source():
  video = moving_video()
  frozen = repeat_first_frame(video)
  assert frozen.shape == video.shape and frozen.dtype == np.uint8
  assert (frozen == video[0]).all()
  static = np.repeat(video[:1], 5, axis=0)
  scores = baseline_scores(static)  # a static clip is its own frozen video
  assert scores["repeat_first_frame"]["psnr"] == 100.0 and scores["repeat_first_frame"]["ssim"] == pytest.approx(1.0)
  np.testing.assert_array_equal(copy_source(video), video)  # video-to-video: the source unchanged
  with pytest.raises(EvalError, match=r"\[T, H, W, C\]"):
    repeat_first_frame(video[0])


def test_mean_colour_hand_worked():
  gt = constant_video([0, 60, 90])  # mean over all frames and pixels: 50
  mc = mean_colour(gt)
  assert mc.dtype == np.uint8 and mc.shape == gt.shape and (mc == 50).all()
  scores = baseline_scores(gt)  # frames 1, 2 only: off by 10 and 40 levels
  want = np.mean([20 * np.log10(255 / 10), 20 * np.log10(255 / 40)])
  assert scores["mean_colour"]["psnr"] == pytest.approx(want)
  lum = lambda a, b: (2 * a * b + C1) / (a * a + b * b + C1)  # noqa: E731  constant images: luminance term
  assert scores["mean_colour"]["ssim"] == pytest.approx(np.mean([lum(50 / 255, 60 / 255), lum(50 / 255, 90 / 255)]))
  # The frozen first frame (0) against frames 1, 2 (60, 90).
  assert scores["repeat_first_frame"]["psnr"] == pytest.approx(np.mean([20 * np.log10(255 / v) for v in (60, 90)]))
  assert set(scores) == set(BASELINES)  # no model, no source


def test_mean_colour_of_a_float_clip_is_scored_in_the_clips_range():
  gt8 = constant_video([0, 200, 250])  # mean 150
  gt = gt8 / 127.5 - 1  # [-1, 1]; its mean colour (+0.18) has no negative value
  assert mean_colour(gt).dtype == gt.dtype and (mean_colour(gt) >= 0).all()
  for name in BASELINES:
    for k in ("psnr", "ssim"):
      assert baseline_scores(gt)[name][k] == pytest.approx(baseline_scores(gt8)[name][k])


def test_skip_frames_leaves_the_condition_frames_out():
  gt = moving_video()
  generated = gt.copy()
  generated[0] = 255 - gt[0]  # only the condition frame is wrong
  assert frame_quality(generated, gt)["psnr"] == 100.0
  assert frame_quality(generated, gt, skip_frames=0)["psnr"] < 100.0
  # The frozen first frame scores 100 dB on frame 0: counting it inflates the baseline too.
  with_frame0 = baseline_scores(gt, skip_frames=0)["repeat_first_frame"]
  after = baseline_scores(gt)["repeat_first_frame"]
  assert after["psnr"] == pytest.approx(psnr(repeat_first_frame(gt)[1:], gt[1:]))
  assert after["ssim"] == pytest.approx(ssim(repeat_first_frame(gt)[1:], gt[1:]))
  assert with_frame0["psnr"] == pytest.approx((100 + 4 * after["psnr"]) / 5)
  scores = baseline_scores(gt, generated, source=np.roll(gt, 1, axis=2), skip_frames=2)
  assert list(scores) == ["model", "repeat_first_frame", "mean_colour", "copy_source"]
  assert scores["model"]["psnr"] == 100.0 and scores["copy_source"]["psnr"] < 100.0
  assert baseline_scores(gt, source=gt)["copy_source"]["psnr"] == 100.0
  for bad in (5, -1, 1.0, True):
    with pytest.raises(EvalError, match="skip_frames"):
      baseline_scores(gt, skip_frames=bad)
  with pytest.raises(EvalError, match="differs"):
    baseline_scores(gt, gt[:4])


def _write_video(path, frames):
  import mediapy

  from camjax.media import _setup_ffmpeg

  _setup_ffmpeg()
  mediapy.write_video(str(path), frames, fps=8, crf=12)


def test_samples_report_shows_the_baselines(tmp_path):
  from camjax.eval import evaluate_dir
  from camjax.media import read_video

  gt = moving_video(T=6, H=32, W=48)
  _write_video(tmp_path / "ground_truth_0.mp4", gt)
  _write_video(tmp_path / "generated_0.mp4", np.roll(gt, 2, axis=2))
  out = evaluate_dir(tmp_path, tmp_path / "eval", motion=False)  # no cameras: no SfM
  want = baseline_scores(read_video(tmp_path / "ground_truth_0.mp4"), read_video(tmp_path / "generated_0.mp4"))
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["quality_frames"] == "frames 1..T-1" and metrics["settings"]["skip_frames"] == 1
  assert metrics["num_with_ground_truth"] == 1
  assert set(metrics["baselines"]) == {"model", "repeat_first_frame", "mean_colour"}
  for name, scores in want.items():
    for k in ("psnr", "ssim"):
      assert metrics["baselines"][name][k] == pytest.approx(scores[k])
      key = k if name == "model" else f"{name}/{k}"
      assert metrics["videos"][0]["metrics"][key] == pytest.approx(scores[k])
      assert metrics["aggregate"][key] == pytest.approx(scores[k])
  assert out["baselines"]["repeat_first_frame"]["psnr"] == pytest.approx(want["repeat_first_frame"]["psnr"])
  report = (tmp_path / "eval" / "report.md").read_text()
  lines = report.splitlines()
  start = lines.index("## Frame quality against the ground truth (frames 1..T-1; mean over 1 video with a ground "
                      "truth)")
  assert lines[start + 2] == "| video | PSNR dB (frames 1..T-1) | SSIM (frames 1..T-1) |"
  assert [line.split(" | ")[0] for line in lines[start + 4:start + 7]] == [
      "| model", "| baseline: repeat first frame", "| baseline: mean colour"]
  header = next(line for line in lines if line.startswith("| video | PSNR dB (frames 1..T-1)") and "mean colour" in
                line)
  assert header.split(" | ")[1:] == ["PSNR dB (frames 1..T-1)", "SSIM (frames 1..T-1)", "repeat first frame PSNR dB",
                                     "repeat first frame SSIM", "mean colour PSNR dB", "mean colour SSIM |"]


def _scenes(num, T=6, H=24, W=32):
  cams = g.preset("truck_right:1", T, height=H, width=W)
  return [types.SimpleNamespace(frames=moving_video(T, H, W, seed=i), cameras=cams, caption=f"scene {i}",
                                trajectory="truck_right:1") for i in range(num)]


def test_following_counts_true_over_reversed_and_baselines(tmp_path, monkeypatch):
  no_sfm = lambda frames, cameras, **kw: {"success_ratio": 0.0, "registered_ratio": 0.0,  # noqa: E731
                                          "estimated_cameras": None}
  monkeypatch.setattr(following_module, "camera_accuracy", no_sfm)
  scenes = _scenes(3)  # one trajectory, three textures: the fake model finds its scene by the first frame

  def generate(first_frame, cameras, caption, null_camera):
    gt = next(s.frames for s in scenes if (s.frames[0] == first_frame).all())
    if null_camera:
      return np.repeat(gt[:1], len(gt), axis=0)
    if np.allclose(cameras.w2c, scenes[0].cameras.w2c):
      return gt
    out = np.roll(gt, -4, axis=2)  # moves the wrong way
    out[0] = gt[0]
    return out

  res = camera_following(generate, scenes, trials=1)
  c = res["comparison"]
  assert c["true_beats_reversed"] == res["num_scenes"] == c["num_scenes"] == 3
  assert c["psnr_true_minus_reversed"] > 10 and c["psnr_true_minus_null"] > 10
  assert c["model_beats"] == {b: {"psnr": True, "ssim": True} for b in BASELINES}
  assert set(res["repeat_first_frame"]) == set(res["mean_colour"]) == {"psnr", "ssim"}
  # The null-camera fake is the frozen first frame: it scores exactly the repeat-first-frame baseline.
  assert res["null_camera"]["psnr"] == pytest.approx(res["repeat_first_frame"]["psnr"])
  assert res["camera"]["psnr"] == 100.0 and res["skip_frames"] == 1
  assert all(r["true_beats_reversed"] and r["psnr_true_minus_reversed"] > 0 for r in res["per_scene"])

  out = write_following_report(tmp_path, res)
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert saved == json.loads(json.dumps(out))
  assert saved["comparison"]["true_beats_reversed"] == 3
  assert saved["comparison"]["model_beats"]["repeat_first_frame"] == {"psnr": True, "ssim": True}
  assert {"camera", "null_camera", "reversed_camera", "repeat_first_frame", "mean_colour"} <= set(saved)
  assert {"true_beats_reversed", "psnr_true_minus_reversed", "psnr_true_minus_null", "repeat_first_frame",
          "mean_colour"} <= set(saved["per_scene"][0])
  text = (tmp_path / "report.md").read_text()
  assert ("| metric | camera-conditioned | null camera | reversed camera | baseline: repeat first frame | "
          "baseline: mean colour |") in text
  assert "| PSNR dB (frames 1..T-1) | 100 |" in text and "| success_ratio | 0 | 0 | 0 | – | – |" in text
  assert "| scenes where the true camera beats the reversed one (PSNR) | 3 of 3 |" in text
  assert "| camera-conditioned beats repeat first frame in mean PSNR | yes (100 vs " in text
  from PIL import Image

  strip_rows = 6  # ground truth, 3 modes, 2 baselines
  assert Image.open(tmp_path / "strip_scene0.png").size[1] == strip_rows * (24 + 4) - 4
