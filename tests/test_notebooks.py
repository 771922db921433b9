"""The colab-style notebooks run top to bottom on CPU (their `# %%` scripts are executed) and match their source."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "docs" / "notebooks"
SCRIPTS = sorted(p for p in NOTEBOOKS.glob("*.py") if p.name != "build.py")
# What each script must print when it ran through (beyond exiting 0).
EXPECTED = {"explore": ("3 clips", "exploration.mp4"), "track2view": ("2 pairs scored", "copy_source"),
            "realcam_i2v": ("held-out scenes scored: 1", "trained to step 2"),
            "motionflow": ("held-out scenes scored: 2", "trained to step 1", "true - reversed trajectory")}
# The table rows (name, then numbers) that the procedural-scene cells of these notebooks must print.
TABLE_ROWS = {"realcam_i2v": ("shaping", "no_shaping", "repeat_first_frame", "mean_colour", "preview"),
              "motionflow": ("model", "reversed", "repeat_first_frame", "mean_colour")}


def _build_module():
  spec = importlib.util.spec_from_file_location("build", NOTEBOOKS / "build.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_notebook_is_generated_from_its_script(script):
  committed = script.with_suffix(".ipynb")
  assert committed.exists(), f"run python docs/notebooks/build.py to generate {committed.name}"
  assert committed.read_text() == _build_module().notebook(script), "stale notebook: rerun docs/notebooks/build.py"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(script, tmp_path):
  env = dict(os.environ, MPLBACKEND="Agg", CAMJAX_ROOT=str(ROOT), TMPDIR=str(tmp_path))
  env.pop("CAMJAX_EXPLORE_WORKDIR", None)
  env.pop("CAMJAX_T2V_WORKDIR", None)
  env.pop("CAMJAX_T2V_VARIANT", None)
  for name in ("CAMJAX_REALCAM_WORKDIR", "CAMJAX_REALCAM_VARIANT", "CAMJAX_MOTIONFLOW_WORKDIR",
               "CAMJAX_MOTIONFLOW_VARIANT"):
    env.pop(name, None)
  result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert all(text in result.stdout for text in EXPECTED[script.stem]), result.stdout[-3000:]
  if script.stem == "track2view" and (ROOT.parent / "shared" / "data" / "re10k_clips").is_dir():
    assert "re-rendered the real clip" in result.stdout and "side_by_side.mp4" in result.stdout
  for row in TABLE_ROWS.get(script.stem, ()):
    assert re.search(rf"^{row} +-?\d+\.\d+ +-?\d+\.\d+", result.stdout, re.M), f"no table row {row!r}"
  if script.stem == "realcam_i2v" and (ROOT.parent / "shared" / "data" / "rgbd_open3d").is_dir():
    assert "real photo:" in result.stdout and "generated.mp4" in result.stdout
    written = {p.name for p in tmp_path.glob("camjax_realcam_*/realcam_photo/*")}
    assert {"points.ply", "preview.mp4", "generated.mp4", "summary.json"} <= written, written
  if script.stem == "motionflow" and (ROOT.parent / "shared" / "data" / "re10k_clips").is_dir():
    assert "generated the real clip" in result.stdout
    written = {p.name for p in tmp_path.glob("camjax_motionflow_*/motionflow_real/*.mp4")}
    assert written == {"real.mp4", "generated.mp4", "reversed.mp4"}, written
