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
  result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "3 clips" in result.stdout and "exploration.mp4" in result.stdout
