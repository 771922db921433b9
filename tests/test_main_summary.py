"""The main job's closing summary: the camera-following headline it prints from the report's metrics.json."""

import json

from camjax.main import _following_table


def test_following_table_prints_modes_baselines_floor_and_controls(tmp_path):
  metrics = {
      "camera": {"psnr": 22.1, "ssim": 0.651, "cami2v/rot_err": 0.456},
      "null_camera": {"psnr": 19.36, "ssim": 0.285, "cami2v/rot_err": float("nan")},
      "reversed_camera": {"psnr": 17.55, "ssim": 0.2, "cami2v/rot_err": 3.44},
      "repeat_first_frame": {"psnr": 19.73, "ssim": 0.293},
      "mean_colour": {"psnr": 17.8, "ssim": 0.275},
      "ground_truth_video": {"cami2v/rot_err": 0.089},
      "comparison": {"true_beats_reversed": 8, "num_scenes": 8, "psnr_true_minus_reversed": 4.55,
                     "psnr_true_minus_null": 2.74},
  }
  path = tmp_path / "metrics.json"
  path.write_text(json.dumps(metrics))
  lines = _following_table(str(path)).splitlines()
  row = {line.split("  ")[1].strip(): line.split()[-3:] for line in lines[1:7]}
  assert row["camera-conditioned"] == ["22.10", "0.651", "0.456"]
  assert row["null camera"][-1] == "-"  # NaN: SfM failed on every scene
  assert row["repeat first frame"] == ["19.73", "0.293", "-"]
  assert row["ground-truth video"] == ["-", "-", "0.089"]
  assert "beats reversed on 8 of 8 scenes (+4.55 dB), null +2.74 dB" in lines[-1]
  assert _following_table(str(tmp_path / "missing.json")) == ""
