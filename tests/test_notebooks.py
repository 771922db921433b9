"""The colab-style notebooks run top to bottom on CPU (their `# %%` scripts are executed) and match their source."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "docs" / "notebooks"
SCRIPTS = sorted(p for p in NOTEBOOKS.glob("*.py") if p.name != "build.py")
# What each script must print when it ran through (beyond exiting 0).
EXPECTED = {"explore": ("3 clips", "exploration.mp4"), "track2view": ("2 pairs scored", "copy_source")}


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
  result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert all(text in result.stdout for text in EXPECTED[script.stem]), result.stdout[-3000:]
  if script.stem == "track2view" and (ROOT.parent / "shared" / "data" / "re10k_clips").is_dir():
    assert "re-rendered the real clip" in result.stdout and "side_by_side.mp4" in result.stdout
