"""A newcomer's first run: the README's `pip install -e . && python -m camjax.main ...` in a fresh virtual environment
with the BASE install only (no test / parity extras), through the end-of-run evaluation and camera following."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_main_job_runs_end_to_end_on_the_base_install(tmp_path):
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
  python = str(venv / "bin" / "python")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-compile", "-e", "."], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=1500)
  assert install.returncode == 0, (install.stdout + install.stderr)[-4000:]
  # Only the base install: the parity extras are absent, so nothing the main job calls may need them.
  absent = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, env=env)
  assert absent.returncode != 0
  workdir = tmp_path / "run"
  run = subprocess.run(
      [python, "-m", "camjax.main", "--config=configs/cameractrl2.py:test", f"--workdir={workdir}",
       "--config.eval.at_end=True", "--config.eval.trials=1", "--config.eval.following=1", "--config.sample.steps=1",
       "--config.train.steps=2"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
  out = run.stdout + run.stderr
  assert run.returncode == 0, out[-4000:]
  assert "trained to step 2" in out and "camera following" in out, out[-4000:]
  assert (workdir / "samples" / "step_000002" / "eval" / "report.md").exists()
  assert (workdir / "eval_following" / "report.md").exists()
  status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True)
  if status.returncode == 0:  # a checkout: running the job left nothing in it
    assert not [l for l in status.stdout.splitlines() if "runs/" in l or "egg-info" in l], status.stdout
