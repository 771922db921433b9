"""The main job: configs, one step of every CPU variant, resume after SIGTERM / SIGKILL, non-finite loss, 2 processes."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from camjax import methods, train
from camjax.data.pipeline import make_pipeline
from camjax.data.synthetic import SyntheticSource

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))


def load_config_module(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _fast(config, workdir_steps=1):
  """Keep the model and data shapes of a variant but make the run short (few scenes, one step, 1 sampler step)."""
  config.train.steps = workdir_steps
  if "phase2" in config:
    config.phase2.steps = min(config.phase2.steps, 1)  # the default runs phase 2 too: one step of it
  config.train.checkpoint_every = 1
  config.data.num_scenes = 2
  config.sample.num = 1
  config.sample.steps = 1
  config.eval.trials = 1
  if "following" in config.eval:
    config.eval.following = min(config.eval.following, 1)
  if "pairs" in config.eval:
    config.eval.pairs = min(config.eval.pairs, 1)
  if "scenes" in config.eval:
    config.eval.scenes = min(config.eval.scenes, 1)
  return config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_and_variant_builds_its_model_abstractly(path):
  """Every variant of every config file names a registered method and builds its generator under `eval_shape` (no
  allocation, so the paper-scale variants run here too); the WAN variants have the parameter counts of WAN 2.1."""
  import math  # pylint: disable=import-outside-toplevel

  from flax import nnx  # pylint: disable=import-outside-toplevel

  from camjax import methods  # pylint: disable=import-outside-toplevel
  module = load_config_module(path)
  assert set(module.CPU_VARIANTS) <= set(module.VARIANTS)
  for variant in module.VARIANTS:
    config = module.get_config(variant)
    assert config.variant == variant and config.method in methods.REGISTRY
    assert config.train.steps > 0 and config.data.batch_size > 0
    _, state = methods.abstract_generator(config)
    params = nnx.to_flat_state(nnx.state(state["dit"], nnx.Param))
    sizes = {"/".join(map(str, k)): math.prod(v.shape) for k, v in params}
    dit = sum(n for k, n in sizes.items() if "/lora/" not in k)  # the base DiT (LoRA factors counted apart)
    assert any("/lora/" in k for k in sizes) == bool(config.model.get("lora_rank", 0))
    if variant == "wan1_3b":
      assert 1.2e9 < dit < 1.5e9, dit  # WAN 2.1 T2V 1.3B
    elif variant == "wan14b":
      assert 13e9 < dit < 15e9, dit
    else:
      assert dit < 5e7, dit
  with pytest.raises(ValueError, match="unknown"):
    module.get_config("nope")


CPU_CASES = [(p, v) for p in CONFIGS for v in load_config_module(p).CPU_VARIANTS if v != "test"]
# Ablations differ from their config's default only by a flag of the networks or conditions: one step of each (both
# phases) is trained here; their sampling and end-of-run evaluation run the default's code (tested with the default).
TRAIN_ONLY = {("motionflow", "no_reference"), ("motionflow", "no_semantic"), ("realcam_i2v", "raw_scale")}


@pytest.mark.parametrize("path, variant", CPU_CASES, ids=[f"{p.stem}:{v}" for p, v in CPU_CASES])
def test_one_training_step_of_every_cpu_variant(path, variant, tmp_path, request):
  """One step (and one step of each further phase) of every CPU-sized variant of every config, with its samples and
  end-of-run evaluation ("test" is trained by the resume tests below)."""
  module = load_config_module(path)
  config = _fast(module.get_config(variant))
  if config.data.source == "re10k":  # only this variant needs the real data (skipped with a reason where it is absent)
    config.data.path = str(request.getfixturevalue("shared_data") / "re10k_clips")
  if (path.stem, variant) in TRAIN_ONLY:
    config.sample.num, config.eval.at_end = 0, False
  summary = train.train_and_evaluate(config, tmp_path)
  phases = methods.training_phases(config)
  assert summary.end_step == phases[-1].end == len(phases) and np.isfinite(summary.last_loss)
  if (path.stem, variant) in TRAIN_ONLY:
    assert not summary.samples and (tmp_path / "checkpoints" / str(summary.end_step)).is_dir()
    return
  assert summary.samples and summary.samples[0].stat().st_size > 0
  if "K" in methods.get(config.method).batch_keys(config)[0]:
    assert (summary.samples[0].parent / "trajectory_0.png").exists()
  metrics = json.loads((summary.samples[0].parent / "eval" / "metrics.json").read_text())  # end-of-run evaluation
  assert metrics["num_videos"] == 1 and "success_ratio" in json.dumps(metrics)
  assert (summary.samples[0].parent / "eval" / "report.md").exists()
  if "src_frames" in methods.get(config.method).batch_keys(config)[0]:  # video-to-video: source and target views
    assert (summary.samples[0].parent / "source_0.mp4").stat().st_size > 0
  if config.eval.get("pairs", 0):  # Track2View: target view vs copy-the-source and zeroed tracks on held-out pairs
    pairs = json.loads((tmp_path / "eval_pairs" / "metrics.json").read_text())
    columns = {"tracks", "zero_tracks", "copy_source", "repeat_first_frame", "mean_colour"}
    assert set(pairs["aggregate"]) == columns | {"true_target"}
    assert all(np.isfinite(pairs["aggregate"][c]["psnr"]) for c in columns)
    # Keypoint synchronisation: the copied source matches itself; a flat mean-colour video matches nothing.
    assert pairs["aggregate"]["copy_source"]["source_matches"] > 0 == pairs["aggregate"]["mean_colour"]["target_matches"]
    assert (tmp_path / "eval_pairs" / "strip_0.png").exists()
  if config.eval.get("following", 0):  # camera-conditioned vs null camera on a held-out procedural scene
    following = json.loads((tmp_path / "eval_following" / "metrics.json").read_text())
    assert {"camera", "null_camera"} <= set(following) and np.isfinite(following["camera"]["psnr"])
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  module = load_config_module(ROOT / "configs" / "cameractrl2.py")
  config = _fast(module.get_config("test"), workdir_steps=6)
  config.optimizer.update(lr=1e30, warmup_init_lr=1e30, end_lr=1e30, grad_clip=1e30)
  with pytest.raises(train.TrainingError, match=r"non-finite loss .* at step (\d+)") as err:
    train.train_and_evaluate(config, tmp_path)
  bad_step = int(str(err.value).split("at step ")[1].split(";")[0])
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) == bad_step - 1  # everything before the bad step, nothing after


# ----------------------------------------------------------------------------------------------------------------------
# Subprocess runs of `python -m camjax.main`
# ----------------------------------------------------------------------------------------------------------------------

RUN = ["--config=configs/cameractrl2.py:test", "--config.train.steps=8", "--config.train.checkpoint_every=2",
       "--config.train.log_every=1", "--config.sample.steps=1"]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def _main(workdir, *extra, wait=True):
  cmd = [sys.executable, "-m", "camjax.main", *RUN, f"--workdir={workdir}", *extra]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  if wait:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out
  return proc


def _losses(workdir) -> dict[int, float]:
  """Loss per logged step; a step logged twice (a resumed run re-logging rows it already wrote) fails."""
  out = {}
  for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    assert row["step"] not in out, f"step {row['step']} logged twice in {workdir}/metrics.jsonl"
    out[row["step"]] = row["loss"]
  return out


def _wait_for_step(proc, workdir, step, timeout=300):
  t0 = time.time()
  while time.time() - t0 < timeout:
    path = Path(workdir) / "metrics.jsonl"
    if path.exists() and any(json.loads(l)["step"] >= step for l in path.read_text().splitlines() if l.strip()):
      return
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {proc.stdout.read()[-3000:]}")
    time.sleep(0.2)
  raise AssertionError("timed out")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  out = _main(workdir)
  assert "trained to step 8" in out and "samples in" in out
  return workdir


def test_sigterm_then_sigkill_resume_matches_uninterrupted_run(uninterrupted, tmp_path):
  ref = _losses(uninterrupted)
  assert sorted(ref) == list(range(1, 9))
  # 1. SIGTERM during start-up (before the first step, so the run cannot finish first): the run saves at the next
  # step boundary and exits cleanly.
  proc = _main(tmp_path, wait=False)
  head = []
  while not (head and head[-1].startswith("camjax: workdir")):
    head.append(proc.stdout.readline())
    assert head[-1] or proc.poll() is None, "".join(head)[-2000:]
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0 and "preempted at step 1" in out, out[-2000:]
  assert sorted(_losses(tmp_path)) == [1]
  # 2. Restart, then SIGKILL mid-run (possibly mid-save).
  proc = _main(tmp_path, wait=False)
  _wait_for_step(proc, tmp_path, 6)
  proc.kill()
  proc.wait()
  # 3. Restart to the end: resumes from the last complete checkpoint, same losses as the uninterrupted run.
  out = _main(tmp_path)
  assert "resumed at step" in out
  got = _losses(tmp_path)
  assert sorted(got) == sorted(ref)
  np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)], rtol=1e-6)


def test_process_sharding_reproduces_the_global_batch():
  source = SyntheticSource(4, num_frames=5, height=16, width=16, num_tracks=0)
  kw = dict(num_frames=5, height=16, width=16, stride=(1, 1), seed=3, unlabeled_source=source, unlabeled_ratio=(4, 1))
  single = iter(make_pipeline(source, batch_size=2, process_index=0, process_count=1, **kw))
  parts = [iter(make_pipeline(source, batch_size=1, process_index=i, process_count=2, **kw)) for i in range(2)]
  for _ in range(3):
    a = next(single)
    b = [next(p) for p in parts]
    np.testing.assert_array_equal(a["frames"], np.concatenate([x["frames"] for x in b]))
    np.testing.assert_array_equal(a["has_camera"], np.concatenate([x["has_camera"] for x in b]))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch_two_processes(workdir):
  """Runs the launcher on a free port; another port when the coordinator lost the race for it (the port is free
  when picked, not necessarily when the coordinator binds it)."""
  script = ROOT / "launch" / "local_multiprocess.sh"
  cmd = ["bash", str(script), "2", *RUN, f"--workdir={workdir}"]
  for _ in range(3):
    env = dict(_env(), CAMJAX_PORT=str(_free_port()), PYTHON=sys.executable)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    if proc.returncode == 0 or "address already in use" not in log.lower():
      return proc, log
  return proc, log


def test_two_processes_train_like_one_and_share_checkpoints(uninterrupted, tmp_path):
  """`launch/local_multiprocess.sh 2 ...`: the same losses as one process with the same global batch."""
  proc, log = _launch_two_processes(tmp_path)
  assert proc.returncode == 0, log[-4000:]
  ref, got = _losses(uninterrupted), _losses(tmp_path)
  assert sorted(got) == sorted(ref)
  np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)], rtol=1e-5)
  # A single process resumes from the 2-process checkpoint (and continues to step 10).
  out = _main(tmp_path, "--config.train.steps=10")
  assert "resumed at step 8" in out


def test_ema_follows_the_parameters():
  """`optimizer.ema_decay > 0` keeps `ema = d * ema + (1 - d) * params` after every step (used for sampling), with
  the state donated to the step as in the main job."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from camjax import methods, sharding  # pylint: disable=import-outside-toplevel
  module = load_config_module(ROOT / "configs" / "cameractrl2.py")
  config = module.get_config("test")
  config.optimizer.ema_decay = decay = 0.75
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    model = methods.build_model(config, mesh)
    tx = train.make_optimizer(config)
    state, static = train.train_state(model, tx, config), model.static  # the main job's state, EMA included
    params = state["params"]
    source = SyntheticSource(2, seed=0, num_frames=9, height=32, width=32, num_tracks=0)
    host = next(iter(make_pipeline(source, num_frames=9, height=32, width=32, batch_size=2, seed=0)))
    batch = train.to_global(methods.host_batch(host, model.tokenizer, model.method, config), mesh)
    step = jax.jit(lambda s, b: train.train_step(s, b, static, tx), donate_argnums=(0,))  # as in the main job
    history = [jax.tree.map(np.array, params)]  # host copies: donation invalidates the device buffers
    for _ in range(3):
      state, _ = step(state, batch)
      history.append(jax.tree.map(np.array, state["params"]))
  expected = history[0]
  for p in history[1:]:
    expected = jax.tree.map(lambda e, q: decay * e + (1 - decay) * q, expected, p)
  leaves_ema, leaves_expected = jax.tree.leaves(state["ema"]), jax.tree.leaves(expected)
  for e, x in zip(leaves_ema, leaves_expected):
    np.testing.assert_allclose(np.asarray(e), np.asarray(x), rtol=1e-5, atol=1e-7)
  moved = [float(jnp.abs(e - p).max()) for e, p in zip(leaves_ema, jax.tree.leaves(history[-1]))]
  assert max(moved) > 0  # the EMA lags the parameters
