"""The main job's run folder under faults: one job at a time, config checks before anything is written, damaged
checkpoints skipped in favour of the previous one, bad flags and config values ending in one named error."""

import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from camjax import checkpoints, methods, train
from camjax import workdir as wd

ROOT = Path(__file__).resolve().parents[1]


def _config(**overrides):
  spec = importlib.util.spec_from_file_location("cameractrl2_config", ROOT / "configs" / "cameractrl2.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("test")
  config.train.update(steps=4, checkpoint_every=2)
  config.data.num_scenes = 2
  config.sample.steps = 1
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
  """A finished 4-step run of the `test` variant with checkpoints at steps 2 and 4."""
  workdir = tmp_path_factory.mktemp("trained")
  summary = train.train_and_evaluate(_config(), workdir)
  assert summary.end_step == 4
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
  return workdir


def _copy(src: Path, dst: Path) -> Path:
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns(wd.LOCK_NAME))
  return dst


def _main(*args, cwd=ROOT, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  return subprocess.run([sys.executable, "-m", "camjax.main", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


# ----------------------------------------------------------------------------------------------------------------------
# Config checks
# ----------------------------------------------------------------------------------------------------------------------


def test_incompatible_model_config_is_refused_before_the_workdir_is_touched(trained, tmp_path):
  workdir = _copy(trained, tmp_path / "w")
  before = (workdir / "config.json").read_bytes()
  with pytest.raises(wd.ConfigMismatchError, match=r"model\.num_layers: 2 in the workdir, 3 now"):
    train.train_and_evaluate(_config(**{"model.num_layers": 3}), workdir)
  assert (workdir / "config.json").read_bytes() == before
  assert not list((workdir / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
  # A longer run of the same model is fine (and resumes).
  summary = train.train_and_evaluate(_config(**{"train.steps": 5}), workdir)
  assert (summary.start_step, summary.end_step) == (4, 5)
  steps = [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5]  # a resumed run does not duplicate rows


@pytest.mark.parametrize("field, value", [("model.num_layers", 0), ("data.batch_size", 0), ("train.steps", 0)])
def test_invalid_config_values_raise_before_a_workdir_is_created(field, value, tmp_path):
  with pytest.raises(train.ConfigError, match=rf"{field}={value}"):
    train.train_and_evaluate(_config(**{field: value}), tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_batch_must_split_over_processes_and_data_parallel_devices():
  config = _config(**{"data.batch_size": 6})
  train.check_batch_split(config, data_parallel=2, processes=1)
  with pytest.raises(train.ConfigError, match=r"data.batch_size=6 is not divisible by the 4 data-parallel devices"):
    train.check_batch_split(config, data_parallel=4, processes=1)
  with pytest.raises(train.ConfigError, match=r"4 processes"):
    train.check_batch_split(config, data_parallel=1, processes=4)


def test_workdir_naming_a_file_is_refused(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("x")
  with pytest.raises(wd.WorkdirError, match="is a file"):
    train.train_and_evaluate(_config(), path)


@pytest.mark.parametrize("args, message", [
    (["--config=configs/missing.py"], r"config file 'configs/missing.py' not found"),
    (["--config=configs/cameractrl2.py:nope"], r"unknown cameractrl2 variant 'nope'"),
    (["--config=configs/cameractrl2.py:test", "--config.model.num_layerz=3"],
     r"model has no field 'num_layerz'; did you mean model.num_layers\?"),
    (["--config=configs/cameractrl2.py:test", "--config.model.num_layers=0"], r"model.num_layers=0 \(must be >= 1\)"),
])
def test_bad_config_flags_end_in_one_named_error_and_leave_no_workdir(args, message, tmp_path):
  proc = _main(*args, f"--workdir={tmp_path / 'w'}")
  assert proc.returncode != 0
  assert "camjax: error:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert __import__("re").search(message, proc.stderr), proc.stderr[-2000:]
  assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------------------------------------------------
# One job per workdir
# ----------------------------------------------------------------------------------------------------------------------


def test_a_second_job_on_a_locked_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = wd.ensure_dir(tmp_path / "w")
  with wd.WorkdirLock(workdir):
    proc = _main("--config=configs/cameractrl2.py:test", f"--workdir={workdir}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "is in use by another camjax job" in proc.stderr and f'"pid": {os.getpid()}' in proc.stderr
    assert not (workdir / "checkpoints").exists() and not (workdir / "config.json").exists()
  with wd.WorkdirLock(workdir):  # released: taken again
    pass


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
  workdir = wd.ensure_dir(tmp_path / "w")
  code = f"from camjax import workdir as wd; import time; l = wd.WorkdirLock({str(workdir)!r}).__enter__(); " \
         "print('locked', flush=True); time.sleep(60)"
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  with pytest.raises(wd.WorkdirLockedError, match=f'"pid": {proc.pid}'):
    wd.WorkdirLock(workdir).__enter__()
  proc.kill()
  proc.wait()
  with wd.WorkdirLock(workdir):  # SIGKILL released the flock; the stale file does not block
    pass


# ----------------------------------------------------------------------------------------------------------------------
# Damaged checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def _largest_file(folder: Path) -> Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_bytes(path: Path, n: int = 4096):
  data = bytearray(path.read_bytes())
  start = max(0, len(data) // 2 - n // 2)
  for i in range(start, min(len(data), start + n)):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


DAMAGES = {
    "data file deleted": lambda d: _largest_file(d / "state").unlink(),
    "data file truncated": lambda d: os.truncate(_largest_file(d / "state"), 100),
    "_METADATA deleted": lambda d: (d / "state" / "_METADATA").unlink(),
    "4 KB flipped": lambda d: _flip_bytes(_largest_file(d / "state")),
}


@pytest.fixture(scope="module")
def models():
  """(config, mesh, train model, sampling-only model) of the `trained` run's config, built once for the module."""
  from camjax import sharding  # pylint: disable=import-outside-toplevel
  config = _config()
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    model = methods.build_model(config, mesh)
    state = train.train_state(model, train.make_optimizer(config), config)
    return config, mesh, state, methods.build_model(config, mesh)


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(damage, trained, models, tmp_path, caplog):
  from camjax import sharding  # pylint: disable=import-outside-toplevel
  workdir = _copy(trained, tmp_path / "w")
  DAMAGES[damage](workdir / "checkpoints" / "4")
  config, mesh, initial, sampler = models
  with sharding.use_mesh(mesh), caplog.at_level(logging.WARNING, logger="camjax.checkpoints"):
    dataset = train.prepare_datasets(config, workdir)
    mngr = checkpoints.manager(workdir, config)
    try:
      state, step, _, _ = checkpoints.restore_train_state(
          mngr, initial, lambda _: train.make_train_iterator(config, dataset))
    finally:
      mngr.close()
    assert step == 2 and int(state["step"]) == 2
    assert "checkpoint step 4" in caplog.text and "restored checkpoint step 2 after skipping step 4" in caplog.text
    # Sampling-only restores (exploration, evaluation) read params only: they fall back when the damage reaches them.
    params, step = checkpoints.restore_weights(workdir, methods.weights_template(sampler, with_ema=False), config)
    assert set(params) == {"params"} and step in (2, 4)
    if damage == "_METADATA deleted":
      assert step == 2
      for a, b in zip(*(jax.tree.leaves(t) for t in (params["params"], state["params"]))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_checkpoint_damaged_is_a_named_error(trained, models, tmp_path):
  from camjax import sharding  # pylint: disable=import-outside-toplevel
  workdir = _copy(trained, tmp_path / "w")
  for step in ("2", "4"):
    (workdir / "checkpoints" / step / "state" / "_METADATA").unlink()
  config, mesh, _, sampler = models
  template = methods.weights_template(sampler, with_ema=False)
  with sharding.use_mesh(mesh):
    with pytest.raises(train.CheckpointError, match=r"no checkpoint in .* restores: step 4 .*; step 2"):
      checkpoints.restore_weights(workdir, template, config)
    with pytest.raises(train.TrainingError, match=r"no checkpoint at step 3 .* there are steps 2, 4"):
      checkpoints.restore_weights(workdir, template, config, step=3)


# ----------------------------------------------------------------------------------------------------------------------
# Signals and buffers
# ----------------------------------------------------------------------------------------------------------------------


def test_sigterm_interrupts_a_wait_for_data_that_never_ends():
  def never():
    while True:
      time.sleep(0.05)
      yield from ()

  preemption = train.Preemption()
  try:
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    t0 = time.time()
    with pytest.raises(train._Interrupted):  # pylint: disable=protected-access
      preemption.next_batch(never())
    assert time.time() - t0 < 10 and preemption.requested
  finally:
    preemption.restore()


def test_ema_has_its_own_buffers_so_the_donated_state_holds_each_buffer_once():
  from camjax import sharding  # pylint: disable=import-outside-toplevel
  config = _config(**{"optimizer.ema_decay": 0.9})
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    state = train.train_state(methods.build_model(config, mesh), train.make_optimizer(config), config)
  pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state)]
  assert len(pointers) == len(set(pointers))


def test_clips_shorter_than_the_window_stop_the_run_with_a_named_error(tmp_path):
  """3-frame procedural clips for 9-frame windows: a named error, not a run that takes 0 steps forever."""
  proc = _main("--config=configs/cameractrl2.py:test", "--config.data.render_frames=3", f"--workdir={tmp_path}")
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "camjax: error:" in proc.stderr and "too short" in proc.stderr, proc.stderr[-3000:]
  assert not list((tmp_path / "checkpoints").glob("*"))
