"""Camera accuracy, motion strength and camera following on procedurally rendered clips with pycolmap SfM (real
runs, low resolution): the true video scores well against its cameras and clearly worse against other cameras or
as a frozen frame."""

import numpy as np
import pytest

from camjax import geometry as g
from camjax.eval import (EvalError, camera_accuracy, camera_following, motion_stats, motion_strength, render_scenes,
                         write_following_report)

pytest.importorskip("pycolmap")
pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def clip():
  return render_scenes(1, seed=0, num_frames=17, height=128, width=160, trajectories=["truck_right:1"])[0]


def test_true_cameras_vs_other_cameras(clip):
  res = camera_accuracy(clip.frames, clip.cameras, trials=2, seed=0)
  assert res["success_ratio"] == 1.0 and res["kept_trials"] == 2
  assert res["cameractrl2"]["rot_err"] < 1.0  # degrees, the bar for rendered clips
  assert res["cameractrl2"]["rot_err_std"] >= 0.0 and np.isfinite(res["cami2v"]["cammc"])
  assert res["estimated_cameras"].num_frames == 17
  np.testing.assert_allclose(res["estimated_cameras"].K[0], clip.cameras.K[0], atol=1e-6)  # K held fixed
  # The same frames against another trajectory (same intrinsics): clearly worse under every protocol.
  other = g.preset("pan_left:20+pedestal_up:0.5", 17, K=clip.cameras.K[0], height=128, width=160)
  worse = camera_accuracy(clip.frames, other, trials=1, seed=0)
  for p, m in [("cameractrl2", "rot_err"), ("cami2v", "rot_err"), ("track2view", "rot_err"), ("cami2v", "cammc")]:
    assert worse[p][m] > 5 * res[p][m], (p, m, worse[p][m], res[p][m])


def test_rendered_clips_with_random_trajectories_are_below_one_degree():
  """The issue's bar on 8 rendered clips with random trajectory compositions (scenes 100-107: truck, orbits, dollies,
  pan + dolly). Scene 104 is a 0.53 m dolly-out that COLMAP's default 4-pixel two-view threshold labels planar and
  reconstructs as a pitch: the same SfM with `max_error=4` is degrees off, the 1-pixel default is not."""
  scenes = render_scenes(8, seed=100, num_frames=17, height=128, width=160)
  errors = [camera_accuracy(s.frames, s.cameras, trials=1)["cameractrl2"]["rot_err"] for s in scenes]
  assert max(errors) < 1.0, errors
  dolly = scenes[4]
  assert dolly.trajectory.startswith("dolly_out")
  colmap_default = camera_accuracy(dolly.frames, dolly.cameras, trials=1, max_error=4.0)["cameractrl2"]["rot_err"]
  assert colmap_default > 1.0 > errors[4]


def test_bad_inputs_raise_named_errors(clip):
  with pytest.raises(EvalError, match="17 frames but 16 cameras"):
    camera_accuracy(clip.frames, clip.cameras.take(np.arange(16)))
  with pytest.raises(EvalError, match="uint8"):
    camera_accuracy(clip.frames.astype(np.float32), clip.cameras)
  with pytest.raises(EvalError, match="64x80 images"):
    camera_accuracy(clip.frames, clip.cameras.resize(64, 80))
  with pytest.raises(EvalError, match="mapper"):
    camera_accuracy(clip.frames, clip.cameras, mapper="hierarchical")


def test_motion_strength_sees_objects_not_a_frozen_frame():
  moving = render_scenes(1, seed=3, num_frames=9, height=96, width=128, trajectories=["static"])[0]
  frozen = np.repeat(moving.frames[:1], 9, axis=0)
  stats = motion_stats(moving.frames)
  assert stats["motion_strength"] > 0.5 and 0 < stats["foreground_fraction"] < 0.5
  assert motion_strength(frozen) == 0.0
  with pytest.raises(EvalError, match="T >= 2"):
    motion_strength(moving.frames[:1])


def test_reversed_trajectory_inverts_the_motion(clip):
  from camjax.eval.following import reversed_trajectory
  rev = reversed_trajectory(clip.cameras)
  rel, rev_rel = clip.cameras.numpy().relative(0), rev.relative(0)
  np.testing.assert_allclose(rev_rel.c2w, np.linalg.inv(rel.c2w), atol=1e-9)  # truck right 1 m -> truck left 1 m
  np.testing.assert_allclose(rev.w2c[0], clip.cameras.w2c[0], atol=1e-9)
  np.testing.assert_allclose(rev_rel.centers[-1], -rel.centers[-1], atol=1e-9)
  np.testing.assert_allclose(reversed_trajectory(rev).w2c, clip.cameras.w2c, atol=1e-9)


def test_camera_following_ground_truth_vs_frozen_frame(clip, tmp_path):
  def generate(first_frame, cameras, caption, null_camera):  # follows the trajectory it is given exactly
    assert first_frame.shape == (128, 160, 3) and cameras.num_frames == 17 and caption
    if null_camera:
      return np.repeat(first_frame[None], 17, axis=0)
    if np.allclose(cameras.w2c, clip.cameras.w2c):
      return clip.frames
    return render_scenes(1, seed=0, num_frames=17, height=128, width=160, trajectories=["truck_left:1"])[0].frames

  res = camera_following(generate, [clip], trials=1)
  cam, null, rev = res["camera"], res["null_camera"], res["reversed_camera"]
  assert cam["psnr"] == 100.0 and cam["ssim"] == pytest.approx(1.0)
  assert null["psnr"] < 30 and null["ssim"] < 0.9
  assert rev["psnr"] < 30 and rev["cameractrl2/trans_err"] > 5 * cam["cameractrl2/trans_err"]
  assert cam["success_ratio"] == 1.0 and cam["cameractrl2/rot_err"] < 1.0
  assert null["success_ratio"] == 0.0 and np.isnan(null["cameractrl2/rot_err"])
  # The null-camera fake is the frozen first frame: the repeat-first-frame baseline, computed without a model.
  assert res["repeat_first_frame"]["psnr"] == pytest.approx(null["psnr"]) and res["mean_colour"]["psnr"] < 30
  assert res["comparison"]["true_beats_reversed"] == 1 and res["comparison"]["psnr_true_minus_reversed"] > 60
  # Issue #16: the ground-truth video's own camera error, the SfM floor of the protocol (0.05-0.4 degrees CameraCtrl
  # II RotErr on rendered 128x160 clips, docs/evaluation.md), in the mean and per scene; no PSNR/SSIM for it.
  floor = res["ground_truth_video"]
  assert floor["success_ratio"] == 1.0 and 0.0 < floor["cameractrl2/rot_err"] < 0.5
  assert floor["track2view/rot_err"] < 1.0 and np.isfinite(floor["cami2v/cammc"]) and "psnr" not in floor
  assert res["per_scene"][0]["ground_truth_video"] == floor and res["per_scene"][0]["estimated"]["ground_truth_video"]
  # This fake returns the ground truth for the true camera: the same SfM (1 thread, same seed) gives the same numbers.
  assert floor["cameractrl2/rot_err"] == cam["cameractrl2/rot_err"]
  out = write_following_report(tmp_path, res)
  text = (tmp_path / "report.md").read_text()
  assert "| PSNR dB (frames 1..T-1) | 100 |" in text and "reversed camera" in text
  assert "baseline: repeat first frame" in text and (tmp_path / "strip_scene0.png").is_file()
  assert (tmp_path / "frusta_scene0.png").is_file() and out["camera"]["success_ratio"] == 1.0
  header = next(line for line in text.splitlines() if line.startswith("| metric |"))
  assert header.endswith("| baseline: mean colour | ground-truth video (SfM floor) |")
  rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
  assert rows["| PSNR dB (frames 1..T-1)"].endswith("| – |") and "inf" not in text
  assert rows["| cameractrl2/rot_err"].endswith(f"| {floor['cameractrl2/rot_err']:.4g} |")
  assert "| ground_truth_video | – | – | 1 | 1 |" in text  # the per-scene table
  assert "| camera-conditioned vs ground-truth video (SfM floor): RotErr° (CC2) |" in text  # the controls
  assert out["ground_truth_video"]["cameractrl2/rot_err"] == pytest.approx(floor["cameractrl2/rot_err"])
  assert out["per_scene"][0]["ground_truth_video"]["success_ratio"] == 1.0
  with pytest.raises(EvalError, match="generate returned"):
    camera_following(lambda f, c, t, null_camera: clip.frames[:5], [clip], trials=1)
