"""CameraCtrl II training: data, model, the jitted train step, checkpoints, metrics, sampling.

Layout (big_vision style): one `train_and_evaluate(config, workdir)` driven by an ml_collections config; a pure
`train_step(state, batch)` jitted with explicit in/out shardings and donation; Orbax checkpoints holding the train
state AND the Grain iterator state, so a restarted run continues with the same batches and the same losses.
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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from camjax import sharding
from camjax.conditioning import cameractrl2 as cc2
from camjax.data.prepare import prepare_dataset
from camjax.diffusion import FlowMatching, euler, guided_denoiser, masked_mse
from camjax.errors import CamjaxError
from camjax.geometry import se3
from camjax.geometry.cameras import Cameras
from camjax.models import WanDiT, preset
from camjax.models.autoencoders import PixelAutoencoder, PrecomputedLatents
from camjax.models.text import ByteTextEncoder, drop_text, null_text

log = logging.getLogger("camjax.train")


class TrainingError(CamjaxError):
  """A run that cannot continue (non-finite loss, unsupported configuration, missing data)."""


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


class Generator(nnx.Module):
  """The trainable parts: the WAN DiT and (for the CPU default) the byte-level text encoder (None when the records
  carry precomputed text embeddings)."""

  def __init__(self, dit: WanDiT, text_encoder: ByteTextEncoder | None):
    self.dit = dit
    self.text_encoder = text_encoder


def make_autoencoder(config):
  ae = config.autoencoder
  if ae.kind == "pixel":
    return PixelAutoencoder(temporal_factor=ae.temporal_factor, spatial_factor=ae.spatial_factor, scale=ae.scale,
                            shift=ae.shift)
  if ae.kind == "precomputed":  # WAN-VAE latents stored in the records
    return PrecomputedLatents(temporal_factor=ae.temporal_factor, spatial_factor=ae.spatial_factor,
                              channels=ae.channels)
  raise TrainingError(f"autoencoder kind {ae.kind!r} is not one of 'pixel', 'precomputed' (records with latents)")


_TEXT_KINDS = ("byte", "precomputed")
_MODEL_FIELDS = ("num_heads", "head_dim", "ffn_dim", "num_layers", "camera", "cond_mask", "dtype", "remat",
                 "scan_layers", "attention")


def wan_config(config, autoencoder):
  m = config.model
  if config.text.kind not in _TEXT_KINDS:
    raise TrainingError(f"text kind {config.text.kind!r} is not one of {_TEXT_KINDS}")
  fields = {k: m[k] for k in _MODEL_FIELDS}
  return preset(m.preset, in_channels=autoencoder.latent_channels, out_channels=autoencoder.latent_channels,
                text_dim=config.text.width, **fields)


def make_generator(config, autoencoder, mesh) -> Generator:
  """The generator, randomly initialised or (`model.pretrained`) with WAN weights from a diffusers folder.

  Raises:
    TrainingError: the pretrained model does not match the latent channels or text width of the config.
  """
  cfg = wan_config(config, autoencoder)
  t = config.text

  def make_text_encoder(rngs):
    if t.kind == "precomputed":
      return None
    return ByteTextEncoder(t.width, t.num_layers, t.num_heads, t.max_length, rngs=rngs)

  if not config.model.pretrained:
    def make():
      rngs = nnx.Rngs(config.seed)
      return Generator(WanDiT(cfg, rngs=rngs), make_text_encoder(rngs))
    return sharding.create_sharded(make, mesh)

  options = {k: config.model[k] for k in ("camera", "cond_mask", "dtype", "remat", "scan_layers", "attention")}
  dit = WanDiT.from_diffusers(config.model.pretrained, mesh=mesh, seed=config.seed, **options)
  got, want = dit.config, cfg
  for name in ("in_channels", "out_channels", "text_dim"):
    if getattr(got, name) != getattr(want, name):
      raise TrainingError(f"pretrained model {config.model.pretrained}: {name} is {getattr(got, name)} but the config "
                          f"needs {getattr(want, name)} (autoencoder.channels / text.width)")
  encoder = None
  if t.kind != "precomputed":
    encoder = sharding.create_sharded(lambda: make_text_encoder(nnx.Rngs(config.seed)), mesh)
  return Generator(dit, encoder)


# ----------------------------------------------------------------------------------------------------------------------
# Optimiser (CameraCtrl II sec. 4.1: AdamW, warm-up from lr/2, cosine decay)
# ----------------------------------------------------------------------------------------------------------------------


def lr_schedule(config):
  """Warm-up from `warmup_init_lr` to `lr`, cosine decay to `end_lr`; phase 2 (when on) restarts the same shape."""
  o = config.optimizer

  def phase(steps):
    total = max(int(steps), o.warmup_steps + 1)
    warmup = optax.linear_schedule(o.warmup_init_lr, o.lr, o.warmup_steps)
    cosine = optax.cosine_decay_schedule(o.lr, total - o.warmup_steps, alpha=o.end_lr / o.lr)
    return optax.join_schedules([warmup, cosine], [o.warmup_steps])

  if not config.phase2.steps:
    return phase(config.train.steps)
  return optax.join_schedules([phase(config.train.steps), phase(config.phase2.steps)], [int(config.train.steps)])


@dataclasses.dataclass(frozen=True)
class Phase:
  """A training phase: the config it runs with and its global step range `[start, end)`."""

  config: Any
  start: int
  end: int


def training_phases(config) -> list[Phase]:
  """Phase 1 (`train.steps` single-clip steps), then phase 2 when `phase2.steps > 0` (CameraCtrl II sec. 4.1: clip
  extension on, optionally another resolution / clip length / batch / data path), continuing the same run."""
  phases = [Phase(config, 0, int(config.train.steps))]
  p2 = config.phase2
  if p2.steps:
    c = config.copy_and_resolve_references()
    c.data.update(height=p2.height or c.data.height, width=p2.width or c.data.width,
                  num_frames=p2.num_frames or c.data.num_frames, batch_size=p2.batch_size or c.data.batch_size,
                  path=p2.path or c.data.path)
    c.train.extension_prob = p2.extension_prob
    phases.append(Phase(c, phases[0].end, phases[0].end + int(p2.steps)))
  return phases


def make_optimizer(config):
  o = config.optimizer
  return optax.chain(optax.clip_by_global_norm(o.grad_clip),
                     optax.adamw(lr_schedule(config), b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def make_train_iterator(config, dataset, start_step: int = 0):
  from camjax.data.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from camjax.data.shards import ShardSource  # pylint: disable=import-outside-toplevel
  d = config.data
  n = jax.process_count()
  if d.batch_size % n:
    raise TrainingError(f"data.batch_size {d.batch_size} is not divisible by the {n} processes")
  source = ShardSource(dataset)
  unlabeled = source if d.unlabeled_ratio[1] > 0 else None
  ds = make_pipeline(source, num_frames=d.num_frames, height=d.height, width=d.width, batch_size=d.batch_size // n,
                     seed=config.seed, stride=tuple(d.stride), unlabeled_source=unlabeled,
                     unlabeled_ratio=tuple(d.unlabeled_ratio), worker_count=d.worker_count,
                     start_index=start_step * d.batch_size, text_length=_text_length(config),
                     global_reference=config.train.extension_reference_range if config.train.extension_prob else 0)
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
  if d.source == "synthetic":  # scenes never seen in training
    source = SyntheticSource(max(d.eval_scenes, s.num), seed=config.seed + 1_000_000, num_frames=d.num_frames,
                             height=d.render_size, width=d.render_size, num_tracks=0)
  else:
    source = ShardSource(dataset)
  num = min(s.num, len(source))
  ds = make_pipeline(source, num_frames=d.num_frames, height=d.height, width=d.width, batch_size=num, seed=0,
                     shuffle=False, num_epochs=1, process_index=0, process_count=1, text_length=_text_length(config))
  return next(iter(ds))


def _host_batch(batch: dict, tokenizer) -> dict[str, np.ndarray]:
  """The arrays the jitted step reads: frames or precomputed latents; token ids or precomputed text embeddings."""
  out = dict(K=batch["K"].astype(np.float32), w2c=batch["w2c"].astype(np.float32),
             has_camera=batch["has_camera"].astype(bool))
  if "latents" in batch:
    out["latents"] = batch["latents"].astype(np.float32)
  else:
    out["frames"] = batch["frames"]
  if "reference_w2c" in batch:
    out["reference_w2c"] = batch["reference_w2c"].astype(np.float32)
  if "num_cond" in batch:
    out["num_cond"] = np.asarray(batch["num_cond"], np.int32)
  if tokenizer is None:
    out.update(text=batch["text_embeddings"].astype(np.float32), text_mask=batch["text_mask"].astype(bool))
  else:
    out["text_ids"], out["text_mask"] = tokenizer.encode([str(c) for c in batch["caption"]])
  return out


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


@dataclasses.dataclass(frozen=True)
class Static:
  """Everything the jitted functions close over (hashable)."""

  graphdef: Any
  autoencoder: Any
  objective: FlowMatching
  tx: Any
  config: Any


def extension_latent_frames(min_frames: int, temporal_factor: int) -> int:
  """Latent frames that hold `min_frames` video frames of a causal VAE (5 frames -> 2 latent frames at 4x)."""
  return 1 + -(-(max(int(min_frames), 1) - 1) // temporal_factor)


def _conditions(static: Static, batch, rng, training: bool):
  """Latents, Plücker camera map and condition mask of a batch (inside jit).

  Training draws, per sample: camera dropout, I2V (first latent frame clean) and clip extension (CameraCtrl II sec.
  3.4: the first `n` latent frames clean, `n` from `train.extension_min_frames` video frames up to
  `train.extension_max_fraction` of the clip). Extension samples are posed relative to `batch["reference_w2c"]` (the
  first frame of the exploration they continue) when `train.extension_reference == "global"`, and relative to the
  window's first frame otherwise (the per-clip ablation of Table 5). Sampling reads the number of clean latent
  frames from `batch["num_cond"] [B]` when present (exploration), else `sample.i2v`.
  """
  c, ae = static.config, static.autoencoder
  if "latents" in batch:
    latents = batch["latents"]
    ae.check_latents(latents)
  else:
    latents = ae.encode(batch["frames"].astype(jnp.float32) / 127.5 - 1.0)
  b, t, h, w, _ = latents.shape
  w2c = batch["w2c"]
  labeled = batch["has_camera"]
  if training:
    k1, k2, k3 = jax.random.split(rng, 3)
    i2v = jax.random.uniform(k2, (b,)) < c.train.i2v_prob
    ext = cc2.sample_extension_frames(k3, b, t, extension_latent_frames(c.train.extension_min_frames,
                                                                        ae.temporal_factor),
                                      c.train.extension_max_fraction, c.train.extension_prob)
    num_cond = jnp.maximum(ext, i2v.astype(jnp.int32))
    if "reference_w2c" in batch and c.train.extension_reference == "global":
      glob = w2c @ se3.invert(batch["reference_w2c"])[:, None]  # = Cameras.relative(reference)
      w2c = jnp.where((ext > 0)[:, None, None, None], glob, w2c)
  else:
    num_cond = batch["num_cond"] if "num_cond" in batch else jnp.full((b,), int(c.sample.i2v))
  cams = Cameras(K=batch["K"], w2c=w2c, height=c.data.height, width=c.data.width)
  camera = cc2.camera_plucker(cams, (t, h, w), ae.temporal_factor, relative=False)  # poses as given
  if training:
    camera = cc2.drop_cameras(k1, camera, labeled, c.train.camera_dropout)
  else:
    camera = camera * labeled[:, None, None, None, None]
  cond_mask = cc2.extension_mask(b, (t, h, w), num_cond) if c.model.cond_mask else jnp.zeros((b, t, h, w, 1))
  return latents, camera, cond_mask


def _text(model: Generator, batch):
  """`[B, L, D]` text states: precomputed (umT5) embeddings from the batch, or the byte encoder's."""
  if model.text_encoder is None:
    return batch["text"]
  return model.text_encoder(batch["text_ids"], batch["text_mask"])


def denoising_loss(dit: WanDiT, objective: FlowMatching, latents, noise, sigma, text, text_mask, camera, cond_mask,
                   use_cond_mask: bool = True):
  """CameraCtrl II eq. 1 with clean condition tokens (sec. 3.4): condition tokens (`cond_mask = 1`) enter the DiT
  clean and are left out of the loss; the rest are noised to `sigma` and regressed to the objective's target.

  Args:
    dit: the DiT.
    objective: flow matching (`add_noise`, `loss_terms`, `model_timesteps`; velocity or x-prediction).
    latents: `[B, t, h, w, c]` clean latents; noise: the same shape; sigma: `[B]` in (0, 1).
    text, text_mask: `[B, L, D]`, `[B, L]`.
    camera: `[B, t, h, w, 6]` Plücker map; cond_mask: `[B, t, h, w, 1]` (1 = condition).
    use_cond_mask: feed the mask channel to the DiT (`model.cond_mask`).

  Returns:
    Scalar mean squared error over generated tokens.
  """
  x_t = objective.add_noise(latents, noise, sigma)
  x_in = cond_mask * latents + (1 - cond_mask) * x_t
  out = dit(x_in, objective.model_timesteps(sigma), text, text_mask, camera=camera,
            cond_mask=cond_mask if use_cond_mask else None)
  pred, target = objective.loss_terms(x_t, out, latents, noise, sigma)
  return masked_mse(pred, target, 1 - cond_mask)


def loss_fn(params, static: Static, batch, rng):
  model = nnx.merge(static.graphdef, params)
  k_cond, k_noise, k_sigma, k_text = jax.random.split(rng, 4)
  latents, camera, cond_mask = _conditions(static, batch, k_cond, training=True)
  noise = jax.random.normal(k_noise, latents.shape, latents.dtype)
  sigma = static.objective.sample_sigma(k_sigma, latents.shape[0])
  text = _text(model, batch)
  text, text_mask = drop_text(k_text, text, batch["text_mask"], static.config.train.text_dropout)
  return denoising_loss(model.dit, static.objective, latents, noise, sigma, text, text_mask, camera, cond_mask,
                        static.config.model.cond_mask)


def train_step(state: dict, batch: dict, static: Static):
  """One optimisation step. `state = {step, params, opt_state[, ema]}`; returns (new state, metrics)."""
  rng = jax.random.fold_in(jax.random.key(static.config.seed), state["step"])
  loss, grads = jax.value_and_grad(loss_fn)(state["params"], static, batch, rng)
  updates, opt_state = static.tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  new = dict(state, step=state["step"] + 1, params=params, opt_state=opt_state)
  decay = static.config.optimizer.ema_decay
  if decay > 0:
    new["ema"] = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state["ema"], params)
  metrics = dict(loss=loss, grad_norm=optax.global_norm(grads), lr=lr_schedule(static.config)(state["step"]))
  return new, metrics


# ----------------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------------


def sample(params, static: Static, batch, rng):
  """CameraCtrl II sampler: Euler with shift over flow matching, 3-way text + camera CFG (eq. 3), first frame clean.

  Returns:
    `[B, T, H, W, 3]` float video in [-1, 1]; or the `[B, t, h, w, c]` latents when the autoencoder cannot decode
    (precomputed latents).
  """
  s = static.config.sample
  model = nnx.merge(static.graphdef, params)
  latents, camera, cond_mask = _conditions(static, batch, rng, training=False)
  text = _text(model, batch)
  blank, blank_mask = null_text(text.shape)
  use_mask = static.config.model.cond_mask

  def model_fn(latents, timesteps, text, text_mask, camera, cond_mask=None):
    out = model.dit(latents, timesteps, text, text_mask, camera=camera, cond_mask=cond_mask if use_mask else None)
    return static.objective.velocity(latents, out, timesteps / static.objective.timestep_scale)

  denoise = guided_denoiser(model_fn, static.objective, text=text, null_text=blank, text_mask=batch["text_mask"],
                            null_text_mask=blank_mask, camera=camera, w_text=s.w_text, w_cam=s.w_cam,
                            cond_mask=cond_mask)
  noise = jax.random.normal(rng, latents.shape, latents.dtype)
  out = euler(denoise, noise, steps=s.steps, shift=s.shift, clean=latents, clean_mask=cond_mask)
  if not getattr(static.autoencoder, "can_decode", True):
    return out
  return jnp.clip(static.autoencoder.decode(out), -1, 1)


def write_samples(videos: np.ndarray, batch: dict, out_dir: Path, image_size: tuple[int, int],
                  fps: float = 8.0) -> list[Path]:
  """Writes one folder of samples (the layout `camjax.eval` reads), atomically file by file.

  For every sample i: `generated_<i>.mp4` (the sample alone), `ground_truth_<i>.mp4` and `sample_<i>.mp4` (ground
  truth | sample side by side) when the batch has frames, `cameras_<i>.txt` (the conditioning cameras, RealEstate10K
  format), `caption_<i>.txt` and `trajectory_<i>.png` (frusta). Undecodable samples (precomputed latents) are written
  as `latents_<i>.npy` instead of videos.

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
      sample_u8 = np.round((out + 1) * 127.5).clip(0, 255).astype(np.uint8)
      main = write_video(f"generated_{i}.mp4", sample_u8)
      if "frames" in batch:
        write_video(f"ground_truth_{i}.mp4", batch["frames"][i])
        main = write_video(f"sample_{i}.mp4", np.concatenate([batch["frames"][i], sample_u8], axis=2))
    else:
      main = out_dir / f"latents_{i}.npy"
      with atomic_write(main, "wb") as f:
        np.save(f, out)
    paths.append(main)
    cams = Cameras(K=np.asarray(batch["K"][i], np.float64), w2c=np.asarray(batch["w2c"][i], np.float64),
                   height=int(height), width=int(width))
    write_re10k(out_dir / f"cameras_{i}.txt", cams)
    with atomic_write(out_dir / f"caption_{i}.txt") as f:
      f.write(caption + "\n")
    plot_trajectories(cams, out_dir / f"trajectory_{i}.png", title=f"sample {i}: {caption[:60]}")
  return paths


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints, metrics, preemption
# ----------------------------------------------------------------------------------------------------------------------


class CheckpointError(TrainingError):
  """No checkpoint of the workdir restores (each one is missing files, damaged, or holds non-finite values)."""


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


def checkpoint_manager(workdir: Path, config, state_handler=None):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  options = ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, enable_async_checkpointing=True,
                                         create=True)
  handlers = None if state_handler is None else dict(state=state_handler, fingerprint=ocp.JsonCheckpointHandler())
  return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options, item_handlers=handlers)


@jax.jit
def _fingerprint(tree) -> list[jax.Array]:
  """Per leaf `[sum, sum of |x|]` in float32: saved beside every checkpoint, compared after a restore."""
  return [jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.abs(x.astype(jnp.float32)))])
          for x in jax.tree.leaves(tree)]


def _fingerprint_json(state: dict) -> dict[str, list[list[float]]]:
  """`{key: per-leaf [sum, sum |x|]}` of each top-level entry of a train state (a partial restore checks its part)."""
  return {k: [[float(v) for v in np.asarray(f)] for f in jax.device_get(_fingerprint(state[k]))] for k in state}


def _fingerprint_problem(state: dict, saved: dict | None) -> str | None:
  """Why a restored state is not the one that was saved (non-finite values, a changed fingerprint), or None."""
  got = _fingerprint_json(state)
  for key, leaves in got.items():
    if not all(math.isfinite(v) for f in leaves for v in f):
      return f"its {key} hold non-finite values"
  for key, leaves in got.items():
    if saved is None or key not in saved:  # written before fingerprints existed
      continue
    if len(saved[key]) != len(leaves):
      return f"its {key} fingerprint has {len(saved[key])} leaves, the state {len(leaves)}"
    for i, ((s, a), (s2, _)) in enumerate(zip(saved[key], leaves)):
      if abs(s - s2) > 1e-5 * a + 1e-30:
        return f"leaf {i} of its {key} sums to {s2!r}, saved as {s!r} (damaged data)"
  return None


def _save(mngr, step: int, state, data_iter, force: bool = False):
  """Saves the state, the Grain iterator and the state's fingerprint.

  Raises:
    TrainingError: the state holds non-finite values (nothing is saved).
  """
  import grain  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  fingerprint = _fingerprint_json(state)
  bad = [k for k, leaves in fingerprint.items() if not all(math.isfinite(v) for f in leaves for v in f)]
  if bad:
    raise TrainingError(f"non-finite {', '.join(bad)} at step {step}; stopping without saving it. The last "
                        f"checkpoint is step {mngr.latest_step()} in {mngr.directory}")
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=grain.checkpoint.CheckpointSave(data_iter),
                                          fingerprint=ocp.args.JsonSave(fingerprint)), force=force)


def _one_line(e: BaseException, limit: int = 240) -> str:
  """`Type: message` on one line; for a chained error (tensorstore under orbax) the innermost cause, which names the
  file and the array."""
  while e.__cause__ is not None:
    e = e.__cause__
  text = " ".join(f"{type(e).__name__}: {e}".split()).split(" See full TensorStore details")[0]
  return text if len(text) <= limit else text[:limit] + "..."


def _restore_step(mngr, step: int, args: dict):
  """Restores `args` (+ the fingerprint when saved) at `step`; returns (restored items, problem or None)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  if (Path(mngr.directory) / str(step) / "fingerprint").exists():
    args = dict(args, fingerprint=ocp.args.JsonRestore())
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(**args))
  except Exception as e:  # pylint: disable=broad-except  # orbax / tensorstore / grain raise many kinds
    return None, _one_line(e)
  return restored, _fingerprint_problem(restored["state"], restored.get("fingerprint"))


def _restore_newest_good(mngr, make_args) -> tuple[Any, int | None]:
  """Walks the checkpoints newest first and returns (restored items, step) of the first that restores and passes its
  fingerprint check, naming every one it skipped; (None, None) when there is no checkpoint.

  Raises:
    CheckpointError: there are checkpoints but none restores.
  """
  skipped = []
  for step in sorted(mngr.all_steps(), reverse=True):
    restored, problem = _restore_step(mngr, step, make_args(step))
    ok = problem is None
    if jax.process_count() > 1:
      ok = bool(np.all(_allgather(ok)))
      problem = problem or "it failed on another process"
    if ok:
      if skipped:
        log.warning("restored checkpoint step %d after skipping %s", step, "; ".join(skipped))
      return restored, step
    skipped.append(f"step {step} ({problem})")
    log.warning("checkpoint step %d in %s does not restore: %s", step, mngr.directory, problem)
  if skipped:
    raise CheckpointError(f"no checkpoint in {mngr.directory} restores: " + "; ".join(skipped) +
                          ". Delete the damaged step folders (or the whole checkpoints folder to start over)")
  return None, None


def _restore(mngr, state, iterator_at):
  """Newest good checkpoint -> (state, step, data iterator, data iterator restored?); with no checkpoint,
  (state, None, `iterator_at(0)`, False).

  `iterator_at(step)` builds a fresh data iterator of the phase `step` belongs to; the Grain state is per process
  (`data/process_i-of-n.json`), so a checkpoint written by a different number of processes restores the train state
  only, and the caller rebuilds the iterator at the step's position in the global stream. A checkpoint that fails to
  restore, or whose values are non-finite or differ from the fingerprint saved with them, is skipped (and named) in
  favour of the previous one.
  """
  import grain  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  tried = {}

  def make_args(step):
    data_file = (Path(mngr.directory) / str(step) / "data" /
                 f"process_{jax.process_index()}-of-{jax.process_count()}.json")
    same_layout = bool(np.all(_allgather(data_file.exists())))
    tried[step] = (iterator_at(step), same_layout)
    args = dict(state=ocp.args.StandardRestore(target))
    if same_layout:
      args["data"] = grain.checkpoint.CheckpointRestore(tried[step][0])
    return args

  restored, step = _restore_newest_good(mngr, make_args)
  if step is None:
    return state, None, iterator_at(0), False
  return restored["state"], step, *tried[step]


def _allgather(x) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray([x])
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(np.asarray(x)))


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
  for name in ("batch_size", "num_frames", "height", "width", "steps"):
    need(int(config.phase2[name]) >= 0, f"phase2.{name}", config.phase2[name], "must be >= 0 (0: as phase 1)")
  need(int(t.steps) >= 1, "train.steps", t.steps, "must be >= 1")
  need(int(t.log_every) >= 1, "train.log_every", t.log_every, "must be >= 1")
  need(int(t.checkpoint_every) >= 1, "train.checkpoint_every", t.checkpoint_every, "must be >= 1")
  need(int(t.keep_checkpoints) >= 1, "train.keep_checkpoints", t.keep_checkpoints, "must be >= 1")
  need(int(config.sample.steps) >= 1, "sample.steps", config.sample.steps, "must be >= 1")
  need(int(config.sample.num) >= 0, "sample.num", config.sample.num, "must be >= 0")
  if bad:
    raise ConfigError("invalid config: " + "; ".join(bad))


def check_batch_split(config, data_parallel: int, processes: int) -> None:
  """Raises `ConfigError` when a phase's global batch does not split evenly over the processes and over the
  `data x fsdp` devices the batch axis is sharded on."""
  for i, phase in enumerate(training_phases(config)):
    b = int(phase.config.data.batch_size)
    field = "data.batch_size" if i == 0 or not config.phase2.batch_size else "phase2.batch_size"
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
    state = model.state

    def phase_fns(phase: Phase):
      static = dataclasses.replace(model.static, config=phase.config)
      sample_fn = jax.jit(functools.partial(sample, static=static), out_shardings=NamedSharding(mesh, P()))
      step_fn = jax.jit(functools.partial(train_step, static=static), donate_argnums=(0,),
                        out_shardings=(jax.tree.map(lambda x: x.sharding, state), None))
      return step_fn, sample_fn

    datasets = {}

    def dataset_of(phase: Phase):
      key = (phase.config.data.source, phase.config.data.path)
      if key not in datasets:
        datasets[key] = prepare_dataset(phase.config, workdir)
      return datasets[key]

    mngr = checkpoint_manager(workdir, config)
    phase_at = lambda step: next(i for i, ph in enumerate(phases) if step <= ph.end or i == len(phases) - 1)
    # The data iterator of the phase a checkpoint step belongs to (each restore attempt gets a fresh one).
    iterator_at = lambda step: make_train_iterator(phases[phase_at(step)].config, dataset_of(phases[phase_at(step)]))
    state, resumed, data_iter, data_restored = _restore(mngr, state, iterator_at)
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
          log.info("phase %d from step %d (clip extension p=%.2f, %d frames at %dx%d)", cur + 1, step,
                   phase.config.train.extension_prob, phase.config.data.num_frames, phase.config.data.height,
                   phase.config.data.width)
          data_iter = make_train_iterator(phase.config, dataset_of(phase))
          step_fn, sample_fn = phase_fns(phase)
          tokens_per_step = _tokens_per_step(phase.config, model.autoencoder)
          t0, timed_steps = None, 0
        batch = to_global(_host_batch(preemption.next_batch(data_iter), tokenizer), mesh)
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
          _save(mngr, done, state, data_iter, force=stop)
        if config.sample.every and done % config.sample.every == 0 and done != total:
          samples = _sample_and_write(state, sample_fn, phase.config, dataset_of(phase), tokenizer, mesh, workdir,
                                      done)
        if stop:
          preempted = True
          log.warning("preempted: saved step %d, exiting", done)
          break
      bar.close()
      mngr.wait_until_finished()
      end = int(state["step"])
      if not preempted and end >= total:
        samples = _sample_and_write(state, sample_fn, phase.config, dataset_of(phase), tokenizer, mesh, workdir, end)
        if config.eval.at_end and samples and samples[0].suffix == ".mp4":
          from camjax import eval as evaluation  # pylint: disable=import-outside-toplevel
          result = evaluation.evaluate_dir(samples[0].parent, trials=config.eval.trials)
          log.info("evaluation of the final samples: %s", result["aggregate"])
        if config.eval.at_end and config.eval.get("following", 0):
          _following_at_end(state, config, mesh, workdir, model)
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


def _following_at_end(state, config, mesh, workdir: Path, model: Model) -> None:
  """Camera following (true vs null vs reversed camera) of the final model on `config.eval.following` held-out
  procedural scenes -> `workdir/eval_following/` (single-process runs; else `python -m camjax.eval --following`)."""
  if jax.process_count() > 1:
    log.info("camera following is evaluated in single-process runs: python -m camjax.eval --workdir %s --following "
             "%d", workdir, config.eval.following)
    return
  from camjax.eval import following  # pylint: disable=import-outside-toplevel
  from camjax.explore import Explorer  # pylint: disable=import-outside-toplevel
  explorer = Explorer(config, state.get("ema", state["params"]), mesh=mesh, seed=config.seed, model=model)
  out = workdir / "eval_following"
  result = following.run_following(explorer.following_generator(), int(config.eval.following), out,
                                   num_frames=explorer.num_frames, height=explorer.height, width=explorer.width,
                                   seed=config.seed, trials=config.eval.trials)
  log.info("camera following (%s): %s", out, {m: {k: round(result[m][k], 4) for k in ("psnr", "ssim", "success_ratio")}
                                              for m in following.MODES})


@dataclasses.dataclass
class Model:
  """What `build_model` returns: the jit statics, the initial train state and the pieces around them."""

  static: Static
  state: dict
  autoencoder: Any
  tokenizer: Any


def build_model(config, mesh, with_optimizer: bool = True) -> Model:
  """Generator, optimiser and initial train state `{step, params, opt_state[, ema]}` (inside `use_mesh(mesh)`).

  `with_optimizer=False` (sampling only: exploration, evaluation) leaves `opt_state` out: no optimiser moments are
  allocated.
  """
  autoencoder = make_autoencoder(config)
  generator = make_generator(config, autoencoder, mesh)
  graphdef, params = nnx.split(generator)
  tx = make_optimizer(config)
  objective = FlowMatching(shift=config.objective.shift, density=config.objective.density,
                           prediction=config.objective.get("prediction", "velocity"))
  state = dict(step=jnp.zeros((), jnp.int32), params=params)
  if with_optimizer:
    state["opt_state"] = jax.jit(tx.init)(params)
  if config.optimizer.ema_decay > 0:
    # Its own buffers: the train step donates the state, and one buffer donated twice fails on GPU / TPU.
    state["ema"] = jax.tree.map(jnp.copy, params)
  tokenizer = None if generator.text_encoder is None else generator.text_encoder.tokenizer
  return Model(Static(graphdef, autoencoder, objective, tx, config), state, autoencoder, tokenizer)


def restore_latest(workdir, model: Model, step: int | None = None) -> tuple[dict, int]:
  """`{params[, ema]}` of the newest good (or the given) checkpoint in `workdir`; the optimiser and data states are
  not read. A checkpoint that does not restore is skipped (and named) in favour of the previous one.

  Raises:
    TrainingError: no checkpoint there, or no checkpoint at `step` (the message lists those there).
    CheckpointError: none restores.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  keys = [k for k in ("params", "ema") if k in model.state]
  target = {k: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), model.state[k])
            for k in keys}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  mngr = checkpoint_manager(Path(workdir), model.static.config, state_handler=ocp.PyTreeCheckpointHandler())
  try:
    steps = sorted(mngr.all_steps())
    if not steps:
      raise TrainingError(f"no checkpoint in {Path(workdir) / 'checkpoints'}: train first")
    if step is not None and step not in steps:
      raise TrainingError(f"no checkpoint at step {step} in {Path(workdir) / 'checkpoints'}; there are steps "
                          f"{', '.join(map(str, steps))}")
    args = lambda s: dict(state=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True))
    if step is not None:
      restored, problem = _restore_step(mngr, step, args(step))
      if problem is not None:
        raise CheckpointError(f"checkpoint step {step} in {mngr.directory} does not restore: {problem}")
    else:
      restored, step = _restore_newest_good(mngr, args)
    return restored["state"], step
  finally:
    mngr.close()


def _tokens_per_step(config, autoencoder) -> int:
  d = config.data
  t, h, w, _ = autoencoder.latent_shape(d.num_frames, d.height, d.width)
  return d.batch_size * t * h * w // (2 * 2)


def generate(params, sample_fn, batch: dict[str, np.ndarray], mesh, rng) -> np.ndarray:
  """Runs a jitted `sample` on a small host batch replicated on every process (padded to the batch sharding).

  Returns:
    The host array of `sample`'s output for the batch's `B` samples.
  """
  n = len(batch["K"])
  shards = math.prod(mesh.shape[a] for a in ("data", "fsdp"))
  pad = -n % shards  # the batch axis is sharded over data x fsdp: repeat the last sample to fill it
  batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in batch.items()}
  batch = jax.device_put(batch, NamedSharding(mesh, P()))
  return np.asarray(jax.device_get(sample_fn(params, batch=batch, rng=rng)))[:n]


def _sample_and_write(state, sample_fn, config, dataset, tokenizer, mesh, workdir: Path, step: int) -> list[Path]:
  host = eval_batch(config, dataset)
  params = state.get("ema", state["params"])
  videos = generate(params, sample_fn, _host_batch(host, tokenizer), mesh, jax.random.key(config.seed + 7))
  if jax.process_index() != 0:
    return []
  return write_samples(videos, host, workdir / "samples" / f"step_{step:06d}", (config.data.height, config.data.width),
                       fps=float(host["fps"][0]))
