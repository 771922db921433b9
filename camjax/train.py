"""The method-agnostic train loop: data, optimiser, one jitted step, checkpoints, metrics, phases, sampling.

Layout (big_vision style): one `train_and_evaluate(config, workdir)` driven by an ml_collections config whose
`config.method` names a registered `camjax.methods` method (the paper: its batch keys, conditioners, trainable filter,
loss, sampler, phases and end-of-run evaluation). This module names no paper. The jitted `train_step(state, batch)`
has explicit shardings and donation; Orbax checkpoints (`camjax.checkpoints`) hold the train state
`{step, params, opt_state[, frozen][, ema]}` AND the Grain iterator state, so a restarted run continues with the same
batches and the same losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from camjax import checkpoints, methods, sharding
from camjax.checkpoints import CheckpointError, allgather as _allgather
from camjax.data.prepare import prepare_dataset
from camjax.errors import TrainingError
from camjax.geometry.cameras import Cameras
from camjax.methods import Model, Phase, Static, build_model, generate, host_batch, training_phases
from camjax.methods.base import make_video_codec, to_uint8

log = logging.getLogger("camjax.train")


# ----------------------------------------------------------------------------------------------------------------------
# Optimiser (CameraCtrl II sec. 4.1: AdamW, warm-up from lr/2, cosine decay)
# ----------------------------------------------------------------------------------------------------------------------


def lr_schedule(config):
  """Per phase (`camjax.methods.training_phases`): warm-up from `warmup_init_lr` to `lr`, then cosine decay to
  `end_lr`; every phase restarts the same shape with its own `optimizer` fields (a phase may override
  `optimizer.lr`: MotionFlow's stage 2 trains at a tenth of stage 1's rate)."""

  def phase(steps, o):
    total = max(int(steps), o.warmup_steps + 1)
    warmup = optax.linear_schedule(o.warmup_init_lr, o.lr, o.warmup_steps)
    cosine = optax.cosine_decay_schedule(o.lr, total - o.warmup_steps, alpha=o.end_lr / o.lr)
    return optax.join_schedules([warmup, cosine], [o.warmup_steps])

  phases = training_phases(config)
  if len(phases) == 1:
    return phase(phases[0].end, config.optimizer)
  return optax.join_schedules([phase(p.end - p.start, p.config.optimizer) for p in phases],
                              [p.start for p in phases[1:]])


def make_optimizer(config):
  o = config.optimizer
  return optax.chain(optax.clip_by_global_norm(o.grad_clip),
                     optax.adamw(lr_schedule(config), b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def prepare_datasets(config, workdir: Path) -> dict[str, Path]:
  """`{"main": dataset, **extras}`: the config's dataset and the method's `extra_datasets`, each rendered / ingested
  on first use (`camjax.data.prepare.prepare_dataset`)."""
  method = methods.get(config.method)
  own = method.prepare_data(config, workdir)
  if own is not None:
    return own
  out = {"main": prepare_dataset(config, workdir)}
  for name, overrides in method.extra_datasets(config).items():
    out[name] = prepare_dataset(methods.apply_overrides(config, overrides), workdir)
  return out


def make_train_iterator(config, datasets, start_step: int = 0):
  """The process-local training batches, starting at global batch `start_step` of the phase.

  Args:
    config: the phase's config.
    datasets: `prepare_datasets(...)`'s `{"main": folder, **extras}` (or the main folder alone, for methods with no
      extra datasets).
    start_step: the first global batch.
  """
  from camjax.data.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from camjax.data.shards import ShardSource  # pylint: disable=import-outside-toplevel
  if not isinstance(datasets, dict):
    datasets = {"main": datasets}
  d = config.data
  n = jax.process_count()
  if d.batch_size % n:
    raise TrainingError(f"data.batch_size {d.batch_size} is not divisible by the {n} processes")
  method = methods.get(config.method)
  own = method.pipeline(config, datasets, training=True, batch_size=d.batch_size // n,
                        start_index=start_step * d.batch_size, seed=config.seed)
  if own is not None:
    return iter(own)
  source = ShardSource(datasets["main"])
  extra = {k: ShardSource(v) for k, v in datasets.items() if k != "main"}
  ds = make_pipeline(source, num_frames=d.num_frames, height=d.height, width=d.width, batch_size=d.batch_size // n,
                     seed=config.seed, stride=tuple(d.stride), worker_count=d.worker_count,
                     start_index=start_step * d.batch_size, text_length=_text_length(config),
                     **method.pipeline_options(config, source, training=True, extra=extra))
  return iter(ds)


def _text_length(config) -> int | None:
  """Precomputed text embeddings are padded to `text.max_length` tokens by the pipeline."""
  return config.text.max_length if config.text.kind == "precomputed" else None


def eval_batch(config, dataset) -> dict[str, np.ndarray]:
  """A fixed batch for periodic sampling: held-out procedural scenes, or the first clips of a real dataset."""
  from camjax.data.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from camjax.data.shards import ShardSource  # pylint: disable=import-outside-toplevel
  from camjax.data.synthetic import SyntheticSource  # pylint: disable=import-outside-toplevel
  d, s = config.data, config.sample
  own = methods.get(config.method).pipeline(
      config, dataset if isinstance(dataset, dict) else {"main": dataset}, training=False, batch_size=int(s.num),
      start_index=0, seed=0, process_index=0, process_count=1)
  if own is not None:
    return next(iter(own))
  dataset = dataset["main"] if isinstance(dataset, dict) else dataset
  if d.source == "synthetic":  # scenes never seen in training
    source = SyntheticSource(max(d.eval_scenes, s.num), seed=config.seed + 1_000_000, num_frames=d.num_frames,
                             height=d.render_size, width=d.render_size, num_tracks=0)
  else:
    source = ShardSource(dataset)
  num = min(s.num, len(source))
  ds = make_pipeline(source, num_frames=d.num_frames, height=d.height, width=d.width, batch_size=num, seed=0,
                     shuffle=False, num_epochs=1, process_index=0, process_count=1, text_length=_text_length(config),
                     **methods.get(config.method).pipeline_options(config, source, training=False))
  return next(iter(ds))


def batch_sharding(mesh) -> NamedSharding:
  spec = sharding.logical_to_spec(("act_batch",), sharding.current_rules().activations, dict(mesh.shape))
  return NamedSharding(mesh, spec)


def to_global(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Process-local host batches -> global device arrays sharded over the batch axes (one call on every process)."""
  sh = batch_sharding(mesh)
  out = {}
  for k, v in batch.items():
    s = NamedSharding(mesh, P(*sh.spec, *([None] * (v.ndim - 1))))
    out[k] = jax.make_array_from_process_local_data(s, v)
  return out


# ----------------------------------------------------------------------------------------------------------------------
# Train step
# ----------------------------------------------------------------------------------------------------------------------


def train_step(state: dict, batch: dict, static: Static, tx):
  """One optimisation step of the method's loss over the trainable parameters.

  `state = {step, params, opt_state[, frozen][, ema]}`; returns (new state, metrics). The step's RNG is
  `fold_in(key(config.seed), step)`, so a resumed run draws what the uninterrupted run would have.
  """
  rng = jax.random.fold_in(jax.random.key(static.config.seed), state["step"])
  frozen = state.get("frozen")

  def loss_fn(params):
    model = methods.merge(static, {"params": params, "frozen": frozen})
    return static.method.loss(model, static, batch, rng)

  loss, grads = jax.value_and_grad(loss_fn)(state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  new = dict(state, step=state["step"] + 1, params=params, opt_state=opt_state)
  decay = static.config.optimizer.ema_decay
  if decay > 0:
    new["ema"] = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state["ema"], params)
  metrics = dict(loss=loss, grad_norm=optax.global_norm(grads), lr=lr_schedule(static.config)(state["step"]))
  return new, metrics


def train_state(model: Model, tx, config) -> dict:
  """The initial train state `{step, params, opt_state[, frozen][, ema]}` of a built model (the optimiser holds
  moments for the trainable parameters only, sharded exactly like them: without `out_shardings` jit replicates AdamW's
  `mu` / `nu` on every device, 106 GiB per device for WAN 14B, benchmarks/memory.py)."""
  leaves = jax.tree.leaves(model.params)
  meshes = [x.sharding.mesh for x in leaves if not isinstance(x, jax.core.Tracer)
            and isinstance(x.sharding, NamedSharding)]
  if len(meshes) != len(leaves):  # traced (benchmarks/memory.py builds it inside a jit) or not on a mesh
    opt_state = jax.jit(tx.init)(model.params) if not any(isinstance(x, jax.core.Tracer) for x in leaves) \
        else tx.init(model.params)
  else:
    shardings = jax.tree.map(lambda x: x.sharding, model.params)
    replicated = NamedSharding(meshes[0], P())
    opt_shardings = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, model.params), shardings,
                                          transform_non_params=lambda _: replicated)
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(model.params)
  state = dict(step=jnp.zeros((), jnp.int32), params=model.params, opt_state=opt_state)
  if model.frozen is not None:
    state["frozen"] = model.frozen
  if config.optimizer.ema_decay > 0:
    # Its own buffers: the train step donates the state, and one buffer donated twice fails on GPU / TPU.
    state["ema"] = jax.tree.map(jnp.copy, model.params)
  return state


def sampling_weights(state: dict) -> dict:
  """`{params[, frozen]}` a sampler uses: the EMA parameters when the run keeps them."""
  out = {"params": state.get("ema", state["params"])}
  if "frozen" in state:
    out["frozen"] = state["frozen"]
  return out


# ----------------------------------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------------------------------


def write_samples(videos: np.ndarray, batch: dict, out_dir: Path, image_size: tuple[int, int],
                  fps: float = 8.0) -> list[Path]:
  """Writes one folder of samples (the layout `camjax.eval` reads), atomically file by file.

  For every sample i: `generated_<i>.mp4` (the sample alone), `ground_truth_<i>.mp4` and `sample_<i>.mp4` (ground
  truth | sample side by side) when the batch has frames, `cameras_<i>.txt` (the conditioning cameras, RealEstate10K
  format), `caption_<i>.txt` and `trajectory_<i>.png` (frusta). Undecodable samples (precomputed latents of a run
  without `autoencoder.path`) are written as `latents_<i>.npy` instead of videos; runs with it decode them first
  (`_sample_and_write`), so latent runs get this same mp4 layout.

  Args:
    videos: `[B, T, H, W, 3]` float video in [-1, 1], or `[B, t, h, w, c]` latents.
    batch: the host batch the samples were conditioned on (`K`, `w2c`, `caption`, optionally `frames`).
    out_dir: the folder (created).
    image_size: `(H, W)` the intrinsics refer to.
    fps: frame rate of the mp4s.

  Returns:
    The paths of the main outputs (`sample_<i>.mp4`, else `generated_<i>.mp4`, else `latents_<i>.npy`).
  """
  import mediapy  # pylint: disable=import-outside-toplevel

  from camjax import media  # pylint: disable=import-outside-toplevel
  from camjax.geometry.formats import write_re10k  # pylint: disable=import-outside-toplevel
  from camjax.geometry.plot import plot_trajectories  # pylint: disable=import-outside-toplevel
  from camjax.io import atomic_write  # pylint: disable=import-outside-toplevel
  media._setup_ffmpeg()  # pylint: disable=protected-access
  out_dir.mkdir(parents=True, exist_ok=True)

  def write_video(name: str, video: np.ndarray) -> Path:
    path, tmp = out_dir / name, out_dir / f".{name}.tmp.mp4"
    mediapy.write_video(tmp, video, fps=fps)
    os.replace(tmp, path)
    return path

  height, width = image_size
  paths = []
  for i, out in enumerate(np.asarray(videos, np.float32)):
    caption = str(batch["caption"][i])
    if out.shape[-1] == 3:
      sample_u8 = to_uint8(out)
      main = write_video(f"generated_{i}.mp4", sample_u8)
      truth = batch.get("frames", batch.get("tgt_frames"))  # video-to-video methods name their views src_ / tgt_
      if "src_frames" in batch:
        write_video(f"source_{i}.mp4", batch["src_frames"][i])
      if truth is not None:
        write_video(f"ground_truth_{i}.mp4", truth[i])
        side = [batch["src_frames"][i]] if "src_frames" in batch else []
        main = write_video(f"sample_{i}.mp4", np.concatenate([*side, truth[i], sample_u8], axis=2))
    else:
      main = out_dir / f"latents_{i}.npy"
      with atomic_write(main, "wb") as f:
        np.save(f, out)
    paths.append(main)
    k_key, w_key = ("K", "w2c") if "K" in batch else ("tgt_K", "tgt_w2c")  # the generated view's cameras
    if k_key in batch and w_key in batch:  # camera-conditioned methods: the cameras and their frusta
      cams = Cameras(K=np.asarray(batch[k_key][i], np.float64), w2c=np.asarray(batch[w_key][i], np.float64),
                     height=int(height), width=int(width))
      write_re10k(out_dir / f"cameras_{i}.txt", cams)
      plot_trajectories(cams, out_dir / f"trajectory_{i}.png", title=f"sample {i}: {caption[:60]}")
    with atomic_write(out_dir / f"caption_{i}.txt") as f:
      f.write(caption + "\n")
  return paths


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints, metrics, preemption
# ----------------------------------------------------------------------------------------------------------------------


class _Interrupted(Exception):
  """SIGTERM / SIGINT while the loop waits for data (the step boundary may never come)."""


class Preemption:
  """SIGTERM -> save at the next step boundary and exit cleanly (agreed across processes at log / checkpoint steps,
  so multi-process runs do not all-gather a flag every step). A signal that arrives while the loop waits for data
  (`waiting_for_data`) interrupts the wait at once: that wait may never end."""

  def __init__(self):
    self.requested = False
    self.waiting_for_data = False
    self._old = {}
    for sig in (signal.SIGTERM,):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass

  def _handle(self, signum, frame):
    del frame
    log.warning("signal %d: checkpointing at the next step and exiting", signum)
    self.requested = True
    if self.waiting_for_data:
      raise _Interrupted(f"signal {signum} while waiting for data")

  def next_batch(self, data_iter):
    self.waiting_for_data = True
    try:
      return next(data_iter)
    finally:
      self.waiting_for_data = False

  def should_stop(self, agree: bool) -> bool:
    """The local flag in single-process runs; with several processes, the OR over processes when `agree` (a step
    at which every process calls this), else False."""
    if jax.process_count() == 1:
      return self.requested
    return agree and bool(np.any(_allgather(self.requested)))

  def restore(self):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class MetricWriter:
  """TensorBoard event files (tensorboardX) + `metrics.jsonl` in the workdir, written by process 0 only.

  A run resumed at step `start` drops the rows (and TensorBoard events) of steps after `start` that an interrupted
  run wrote past its last checkpoint, so every step is logged once.
  """

  def __init__(self, workdir: Path, start: int = 0):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      path = workdir / "metrics.jsonl"
      if path.exists():
        from camjax.io import atomic_write  # pylint: disable=import-outside-toplevel
        rows = [l for l in path.read_text().splitlines() if l.strip() and _row_step(l) <= start]
        with atomic_write(path) as f:
          f.write("".join(r + "\n" for r in rows))
      self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=start + 1 if start else None)
      self.jsonl = open(path, "a")  # noqa: SIM115

  def write(self, step: int, metrics: dict[str, float]):
    if not self.enabled:
      return
    for k, v in metrics.items():
      self.tb.add_scalar(k, v, step)
    self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self.jsonl.flush()

  def close(self):
    if self.enabled:
      self.tb.close()
      self.jsonl.close()


def _row_step(line: str) -> int:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return 1 << 62  # a torn last line of a killed run: dropped


# ----------------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunSummary:
  workdir: Path
  start_step: int
  end_step: int
  first_loss: float | None
  last_loss: float | None
  steps_per_sec: float
  tokens_per_sec: float
  samples: list[Path]
  preempted: bool = False


class ConfigError(TrainingError):
  """A config value no run can use (checked before anything is created)."""


def validate_config(config) -> None:
  """Raises `ConfigError` naming every field whose value no run can use."""
  bad = []

  def need(ok: bool, field: str, value, what: str):
    if not ok:
      bad.append(f"{field}={value!r} ({what})")

  m, d, t = config.model, config.data, config.train
  for name in ("num_layers", "num_heads", "head_dim", "ffn_dim"):
    need(int(m[name]) >= 1, f"model.{name}", m[name], "must be >= 1")
  for name in ("batch_size", "num_frames", "height", "width"):
    need(int(d[name]) >= 1, f"data.{name}", d[name], "must be >= 1")
  need(int(t.steps) >= 1, "train.steps", t.steps, "must be >= 1")
  need(int(t.log_every) >= 1, "train.log_every", t.log_every, "must be >= 1")
  need(int(t.checkpoint_every) >= 1, "train.checkpoint_every", t.checkpoint_every, "must be >= 1")
  need(int(t.keep_checkpoints) >= 1, "train.keep_checkpoints", t.keep_checkpoints, "must be >= 1")
  need(int(config.sample.steps) >= 1, "sample.steps", config.sample.steps, "must be >= 1")
  need(int(config.sample.num) >= 0, "sample.num", config.sample.num, "must be >= 0")
  try:
    method = methods.get(config.method)
    if config.autoencoder.kind == "wan_vae" and not method.step_vae:
      bad.append(f"autoencoder.kind='wan_vae' (the WAN VAE inside the step; {config.method} encodes the records' "
                 "frames or reads their latents: use 'precomputed' with autoencoder.path)")
    bad += method.validate(config)
  except methods.MethodError as e:
    bad.append(str(e))
  if bad:
    raise ConfigError("invalid config: " + "; ".join(bad))


def check_batch_split(config, data_parallel: int, processes: int) -> None:
  """Raises `ConfigError` when a phase's global batch does not split evenly over the processes and over the
  `data x fsdp` devices the batch axis is sharded on."""
  for i, phase in enumerate(training_phases(config)):
    b = int(phase.config.data.batch_size)
    field = "data.batch_size" + ("" if i == 0 else f" of phase {i + 1}")
    if b % processes:
      raise ConfigError(f"{field}={b} is not divisible by the {processes} processes: use a multiple of {processes}")
    if b % data_parallel:
      raise ConfigError(f"{field}={b} is not divisible by the {data_parallel} data-parallel devices (mesh data x "
                        f"fsdp): use a multiple of {data_parallel}, or change config.mesh")


def train_and_evaluate(config, workdir, preemption: Preemption | None = None) -> RunSummary:
  """Train (resuming from the newest good checkpoint in `workdir`), checkpoint, sample and evaluate.

  The workdir is locked for the run (one job at a time) and checked against the model configuration of any run it
  already holds before anything in it is written. `preemption` (a `Preemption` made early, so a SIGTERM during start-up
  is not lost) defaults to one installed here.

  Raises:
    ConfigError: a config value no run can use, or a batch that does not split over the processes / devices.
    camjax.workdir.WorkdirError: `workdir` is a file, is in use by another job (`WorkdirLockedError`), or holds a run
      with another model configuration (`ConfigMismatchError`).
    CheckpointError: the workdir has checkpoints and none restores.
    TrainingError: non-finite loss (the run stops; checkpoints only ever hold states whose losses were checked).
  """
  from camjax import workdir as wd  # pylint: disable=import-outside-toplevel
  validate_config(config)
  workdir = wd.ensure_dir(workdir)
  lock = wd.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  _on_process_zero(lock.__enter__, workdir)
  try:
    _on_process_zero(lambda: (wd.check_compatible(workdir, config), wd.save_config(workdir, config)), workdir)
    return _train_and_evaluate(config, workdir, preemption or Preemption())
  finally:
    lock.__exit__(None, None, None)


def _on_process_zero(fn, workdir: Path) -> None:
  """Runs `fn` on process 0; every process raises when it failed there (no process is left waiting at a barrier)."""
  from camjax import workdir as wd  # pylint: disable=import-outside-toplevel
  error = None
  if jax.process_index() == 0:
    try:
      fn()
    except wd.WorkdirError as e:
      error = e
  if not np.all(_allgather(error is None)):
    raise error or wd.WorkdirError(f"workdir {workdir} cannot be used by this run (see process 0's error)")


def _train_and_evaluate(config, workdir: Path, preemption: Preemption) -> RunSummary:
  mesh = sharding.make_mesh(dict(config.mesh))
  check_batch_split(config, math.prod(mesh.shape[a] for a in ("data", "fsdp")), jax.process_count())
  phases = training_phases(config)
  total = phases[-1].end
  with sharding.use_mesh(mesh):
    model = build_model(config, mesh)
    method = model.method
    tx = make_optimizer(config)
    state = train_state(model, tx, config)

    def phase_fns(phase: Phase):
      static = dataclasses.replace(model.static, config=phase.config)
      sample_fn = jax.jit(methods.sample_fn(static), out_shardings=NamedSharding(mesh, P()))
      step_fn = jax.jit(functools.partial(train_step, static=static, tx=tx), donate_argnums=(0,),
                        out_shardings=(jax.tree.map(lambda x: x.sharding, state), None))
      return step_fn, sample_fn

    datasets = {}

    def dataset_of(phase: Phase):
      key = (phase.config.data.source, phase.config.data.path)
      if key not in datasets:
        datasets[key] = prepare_datasets(phase.config, workdir)
      return datasets[key]

    mngr = checkpoints.manager(workdir, config)
    phase_at = lambda step: next(i for i, ph in enumerate(phases) if step <= ph.end or i == len(phases) - 1)
    # The data iterator of the phase a checkpoint step belongs to (each restore attempt gets a fresh one).
    iterator_at = lambda step: make_train_iterator(phases[phase_at(step)].config, dataset_of(phases[phase_at(step)]))
    state, resumed, data_iter, data_restored = checkpoints.restore_train_state(mngr, state, iterator_at)
    start = int(state["step"])
    cur = phase_at(start)
    phase = phases[cur]
    if resumed is not None:
      log.info("resumed from step %d", resumed)
      if not data_restored:
        log.warning("checkpoint written by another number of processes: data resumes at global batch %d", start)
        data_iter = make_train_iterator(phase.config, dataset_of(phase), start_step=start - phase.start)
    step_fn, sample_fn = phase_fns(phase)
    tokenizer = model.tokenizer
    codec = make_video_codec(config, mesh)  # checked now (not after training); its weights load at the first sample
    writer = MetricWriter(workdir, start)
    losses = _LossLog()
    samples: list[Path] = []
    t0, timed_steps, preempted = None, 0, False
    tokens_per_step = _tokens_per_step(phase.config, model.autoencoder)
    bar = None
    try:
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=jax.process_index() != 0)
      for step in range(start, total):
        if step == phase.end:  # next phase: its data, its jitted functions (new shapes compile once)
          cur += 1
          phase = phases[cur]
          log.info("phase %d from step %d (%d frames at %dx%d, batch %d)", cur + 1, step, phase.config.data.num_frames,
                   phase.config.data.height, phase.config.data.width, phase.config.data.batch_size)
          data_iter = make_train_iterator(phase.config, dataset_of(phase))
          step_fn, sample_fn = phase_fns(phase)
          tokens_per_step = _tokens_per_step(phase.config, model.autoencoder)
          t0, timed_steps = None, 0
        batch = to_global(host_batch(preemption.next_batch(data_iter), tokenizer, method, phase.config), mesh)
        state, metrics = step_fn(state, batch)
        done = step + 1
        if t0 is None:
          jax.block_until_ready(metrics["loss"])
          t0 = time.perf_counter()  # exclude compilation
        else:
          timed_steps += 1
        losses.add(done, metrics["loss"])
        bar.update(1)
        log_now = done % config.train.log_every == 0 or done == total
        save_now = done % config.train.checkpoint_every == 0 or done == total or done == phase.end
        stop = preemption.should_stop(agree=log_now or save_now)
        if log_now or save_now or stop:  # the host reads losses here only (no per-step sync)
          losses.check(mngr, workdir)
          bar.set_postfix(loss=f"{losses.last:.4f}")
        if log_now:
          m = {k: float(v) for k, v in metrics.items()}
          m["phase"] = cur + 1
          if timed_steps:
            rate = timed_steps / (time.perf_counter() - t0)
            m.update(steps_per_sec=rate, tokens_per_sec=rate * tokens_per_step)
          writer.write(done, m)
        if save_now or stop:
          checkpoints.save(mngr, done, state, data_iter, force=stop)
        if config.sample.every and done % config.sample.every == 0 and done != total:
          samples = _sample_and_write(state, sample_fn, phase.config, dataset_of(phase), tokenizer, mesh, workdir,
                                      done, codec)
        if stop:
          preempted = True
          log.warning("preempted: saved step %d, exiting", done)
          break
      bar.close()
      mngr.wait_until_finished()
      end = int(state["step"])
      if not preempted and end >= total:
        samples = _sample_and_write(state, sample_fn, phase.config, dataset_of(phase), tokenizer, mesh, workdir, end,
                                    codec)
        if config.eval.at_end and samples and samples[0].suffix == ".mp4":
          from camjax import eval as evaluation  # pylint: disable=import-outside-toplevel
          result = evaluation.evaluate_dir(samples[0].parent, trials=config.eval.trials)
          log.info("evaluation of the final samples: %s", result["aggregate"])
        if config.eval.at_end:
          method.evaluate_at_end(sampling_weights(state), config, mesh, workdir, model)
    except _Interrupted as e:
      preempted = True
      log.warning("%s: exiting; the run continues from checkpoint step %s", e, mngr.latest_step())
    finally:
      if bar is not None:
        bar.close()
      preemption.restore()
      writer.close()
      mngr.wait_until_finished()
      mngr.close()
  rate = timed_steps / (time.perf_counter() - t0) if timed_steps else float("nan")
  return RunSummary(workdir, start, int(state["step"]), losses.first, losses.last, rate, rate * tokens_per_step,
                    samples, preempted)


class _LossLog:
  """Device losses of the steps since the last check; read to the host in one transfer at log / checkpoint steps."""

  def __init__(self):
    self.pending: list[tuple[int, jax.Array]] = []
    self.first: float | None = None
    self.last: float | None = None

  def add(self, step: int, loss: jax.Array):
    self.pending.append((step, loss))

  def check(self, mngr, workdir: Path):
    """Raises `TrainingError` at the first non-finite loss since the last check (before anything is saved)."""
    values = jax.device_get([l for _, l in self.pending])
    steps = [s for s, _ in self.pending]
    self.pending = []
    for step, value in zip(steps, values):
      value = float(value)
      if not math.isfinite(value):
        raise TrainingError(f"non-finite loss {value} at step {step}; stopping. The last checkpoint (step "
                            f"{mngr.latest_step()}) in {workdir / 'checkpoints'} holds only checked steps")
      self.first = value if self.first is None else self.first
      self.last = value


def _tokens_per_step(config, autoencoder) -> int:
  d = config.data
  t, h, w, _ = autoencoder.latent_shape(d.num_frames, d.height, d.width)
  return d.batch_size * t * h * w // (2 * 2)


def _sample_and_write(state, sample_fn, config, dataset, tokenizer, mesh, workdir: Path, step: int,
                      codec=None) -> list[Path]:
  """Samples the eval batch and writes them (process 0). With a `codec` (the WAN VAE of `autoencoder.path`,
  `camjax.methods.base.make_video_codec`), latent samples and the records' latents (the ground truth) are decoded
  outside the jitted sampler, on every process, before process 0 writes mp4s. `sample.num = 0` writes nothing (the
  method's end-of-run evaluation still runs)."""
  if int(config.sample.num) == 0:
    return []
  host = eval_batch(config, dataset)
  batch = host_batch(host, tokenizer, methods.get(config.method), config)
  videos = generate(sampling_weights(state), sample_fn, batch, mesh, jax.random.key(config.seed + 7))
  if codec is not None:  # a codec means precomputed latents: the sampler returned latents
    videos = codec.decode(videos)
    if "latents" in host and "frames" not in host:
      host = dict(host, frames=to_uint8(codec.decode(host["latents"])))
  if jax.process_index() != 0:
    return []
  return write_samples(videos, host, workdir / "samples" / f"step_{step:06d}", (config.data.height, config.data.width),
                       fps=float(host["fps"][0]))
