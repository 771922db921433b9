"""Memory plan of the paper-scale CameraCtrl II variants: per-device bytes, largest batch per device, checked by XLA.

`python benchmarks/memory.py` prints, for the WAN 2.1 1.3B and 14B variants of `configs/cameractrl2.py` (`wan1_3b`,
`wan14b`) at 81 x 480 x 832 video frames (WAN VAE 4x temporal, 8x spatial: latents [21, 60, 104, 16]; patch (1, 2, 2):
N = 21 * 30 * 52 = 32760 tokens; umT5 text L = 512 tokens) with the config's remat policy, the per-device bytes of
parameters, gradients, optimizer state, EMA and activations on the meshes camjax is launched on, and the largest batch
per device that fits under the device memory minus a headroom. It then checks its parameter / optimizer / EMA figures
against XLA: the same sharded train step (`camjax.train.train_step`, donated state, explicit out-shardings) with fewer
layers and frames is compiled ahead of time on an 8-device fake CPU mesh (a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`), and `compiled.memory_analysis()` is compared with the
analytic figures of that reduced config. Nothing large is allocated: every model, state and batch is abstract
(`jax.eval_shape`, `jax.ShapeDtypeStruct` with shardings).

    python benchmarks/memory.py                       # both variants, every mesh, 81x480x832 + the config's phases
    python benchmarks/memory.py --json plan.json      # also dump every figure
    python benchmarks/memory.py --headroom 0.05 --variants wan14b --meshes h200x8 --no_aot
    python benchmarks/memory.py --variants wan1_3b --remat full --workloads paper   # another remat policy

Meshes (`MESHES`): `h200x8` one 8 x H200 node, fsdp 8 (`config.mesh` is `fsdp=-1`: every device on fsdp); `h200x32`
the 4-node x 8-GPU SLURM example of `launch/slurm_multigpu.sh` (wan14b), fsdp 32; `v5p-64` the TPU slice of
`launch/tpu_pod.sh`'s example (wan1_3b; 64 TensorCores = 32 chips = 32 JAX devices), fsdp 32. Device memory: H200
139 GiB usable (141 GB HBM3e), TPU v5p 95 GiB HBM per chip.

The model (all bytes per device; e = compute dtype bytes (bfloat16: 2), p = param dtype bytes (float32: 4)):

* Parameters, frozen weights, EMA: every leaf of the real abstract generator (`camjax.methods.base.abstract_generator`,
  split by `Method.trainable`) at its shard shape under the PartitionSpec that `camjax.sharding.param_specs` gives it on
  that mesh (`embed -> fsdp`; norms, `heads` / `mlp` biases are replicated while `tensor = 1`). The analytic count
  `wan_param_count(cfg)` (below) must equal the count of those leaves. EMA = the trainable parameters when
  `optimizer.ema_decay > 0` (0 for the WAN variants, whose configs set `ema_decay=0.0`).
* Gradients: the trainable parameters' bytes, sharded like them (`jax.value_and_grad` in the param dtype).
* Optimizer state: `optax.chain(clip_by_global_norm, adamw)` keeps AdamW's `mu` and `nu` in the param dtype (2 x the
  trainable parameters) plus two int32 counts. Two layouts: "as built" is whatever `camjax.train.train_state` produces,
  read from the output shardings of `train_state` compiled ahead of time on that mesh (today `jax.jit(tx.init)` has no
  out-shardings and XLA returns the moments REPLICATED on every device); "sharded" gives `mu` / `nu` the parameters'
  PartitionSpecs (`optax.tree_map_params`), the ZeRO layout fsdp intends.
* FSDP transient: one block's weights all-gathered (p bytes), their compute-dtype copy (e) and the block's full
  gradient before its reduce-scatter (p): `P_block * (2p + e)`, P_block = parameters of one of the scanned blocks.
* Activations per sample (B = 1 per device; they scale linearly with the per-device batch, context = tensor = 1):
  - saved for the backward by the scan under the remat policy (`camjax.models.wan.REMAT_POLICIES`), per block:
      full (`nothing_saveable`):                  s = N D e                      (the block input, the scan carry)
      dots (`dots_with_no_batch_dims_saveable`):  s = (8 N D + N F + 2 L D) e    (block input; q, k, v, out of the
            self-attention; q, out of the cross-attention; FFN out; the FFN hidden [N, F]; cross keys / values)
    plus outside the blocks h = 3 N D 4 + N D e (the final norm in float32); saved = num_layers * s + h. Attention
    logits `[B, heads, N, S]` come from dots WITH batch dimensions, so neither policy saves them.
  - the working set of the one block being recomputed in the backward: the residuals JAX keeps for one block without
    remat minus those the policy already saved (counted by tracing the real block at the real shapes with
    `jax.ad_checkpoint.saved_residuals`: no closed formula, as it follows the block's code; an upper bound of what
    XLA keeps, since it may fuse elementwise chains).
  - attention: with `attention="xla"` (XLA's dot-product attention, the only choice on TPU: cuDNN is GPU-only) the
    working set holds the softmax output (float32) and the probabilities (e) of `[heads, N, N]` and `[heads, N, L]`, and
    the softmax backward adds its float32 gradient: `H (N^2 + N L) (4 + e + 4)` bytes; with `attention="cudnn"` (the
    config's choice; flash attention, no N^2 matrix) those are replaced by the log-sum-exp, `2 H N 4`.
  - the batch's own arrays (latents, text embeddings, cameras).
* Total at batch b = params + frozen + grads + opt state + EMA + transient + b * activations; the largest b with
  total <= (1 - headroom) * device memory is the plan (0: does not fit). On GPU, JAX preallocates only
  XLA_PYTHON_CLIENT_MEM_FRACTION (0.75) of the memory: run with XLA_PYTHON_CLIENT_MEM_FRACTION=0.92 or so.

What is analytic and what is measured: parameter, gradient, optimizer, EMA and saved-activation bytes are analytic
(formulas over the real shardings); the saved activations are also traced (`saved_residuals` of the real loss at the
real shapes) and the working set is traced only; the ahead-of-time check compares the analytic state bytes with
XLA:CPU's `argument_size_in_bytes` of the compiled step (must agree within `AOT_TOLERANCE`), and prints XLA:CPU's
`temp_size_in_bytes` next to the analytic transient (grads + FSDP transient + activations) of the reduced config:
CPU buffer assignment and fusion are not those of a GPU or TPU, so that line is an indication, not a check.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from camjax import xla_flags

if __name__ == "__main__":  # before jax starts a backend: fake CPU devices for the meshes' compiled layouts
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=32").strip()
  xla_flags.apply_defaults()  # what the main job runs with

import jax  # noqa: E402  pylint: disable=wrong-import-position
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax._src.ad_checkpoint import saved_residuals  # noqa: E402  (public as jax.ad_checkpoint.print_saved_residuals)
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

from camjax import methods, sharding, train  # noqa: E402
from camjax.diffusion import make_objective  # noqa: E402
from camjax.errors import CamjaxError  # noqa: E402
from camjax.methods.base import Model, Static, abstract_generator, make_autoencoder, wan_config  # noqa: E402
from camjax.models.wan import LORA_TARGETS, WanConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30
AOT_TOLERANCE = 0.01  # relative: analytic state bytes vs XLA's argument bytes of the compiled step
HEADROOM = 0.10


class MemoryPlanError(CamjaxError):
  """A config, mesh or workload the memory plan cannot model (named in the message)."""


# ----------------------------------------------------------------------------------------------------------------------
# Devices, meshes, workloads
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Device:
  """An accelerator: its usable memory (GiB) and the attention implementation camjax runs on it."""

  name: str
  memory_gib: float  # usable device memory
  attention: str  # the attention implementation camjax can run there ("cudnn" on NVIDIA GPUs, else "xla")


H200 = Device("H200", 139.0, "cudnn")
V5P = Device("TPU v5p", 95.0, "xla")


@dataclasses.dataclass(frozen=True)
class MeshPlan:
  """A named mesh of one device kind: camjax axis sizes (`data, fsdp, context, tensor`) and where it comes from."""

  name: str
  device: Device
  shape: tuple[tuple[str, int], ...]  # (axis, size) over camjax's mesh axes
  note: str

  @property
  def axes(self) -> dict[str, int]:
    return {a: dict(self.shape).get(a, 1) for a in sharding.MESH_AXES}

  @property
  def num_devices(self) -> int:
    return math.prod(self.axes.values())


MESHES = {
    "h200x8": MeshPlan("h200x8", H200, (("fsdp", 8),), "one 8 x H200 node, fsdp 8"),
    "h200x32": MeshPlan("h200x32", H200, (("fsdp", 32),), "4 nodes x 8 H200 (launch/slurm_multigpu.sh), fsdp 32"),
    "v5p-64": MeshPlan("v5p-64", V5P, (("fsdp", 32),), "TPU v5p-64 = 32 chips (launch/tpu_pod.sh), fsdp 32"),
}


@dataclasses.dataclass(frozen=True)
class Workload:
  """Video clips of `frames x height x width` pixels (the latent grid follows from the config's autoencoder)."""

  name: str
  frames: int
  height: int
  width: int


PAPER = Workload("81x480x832", 81, 480, 832)


def config_workloads(config) -> list[tuple[Workload, int]]:
  """`(clip size, global batch)` of the config's own training phases (CameraCtrl II sec. 4.1: phase 1 at 192x320,
  batch 640; phase 2 at 384x640, batch 512)."""
  out = []
  for i, phase in enumerate(methods.training_phases(config)):
    d = phase.config.data
    out.append((Workload(f"phase {i + 1}: {d.num_frames}x{d.height}x{d.width}", d.num_frames, d.height, d.width),
                int(d.batch_size)))
  return out


def load_config(variant: str, path: Path = ROOT / "configs" / "cameractrl2.py", **model_overrides):
  """`get_config(variant)` of a camjax config file, with `config.model` fields overridden."""
  spec = importlib.util.spec_from_file_location(f"_memory_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  config.model.update(model_overrides)
  return config


def with_workload(config, workload: Workload):
  """A copy of `config` whose clips are `workload`'s."""
  c = config.copy_and_resolve_references()
  c.data.update(num_frames=workload.frames, height=workload.height, width=workload.width)
  return c


def latent_grid(config) -> tuple[int, int, int, int]:
  """`(t, h, w, c)` latents of the config's clips."""
  d = config.data
  return make_autoencoder(config).latent_shape(d.num_frames, d.height, d.width)


def num_tokens(config) -> int:
  """Video tokens per clip after the DiT's patchify, `N = (t / pt)(h / ph)(w / pw)`."""
  t, h, w, _ = latent_grid(config)
  pt, ph, pw = wan_config(config, make_autoencoder(config), methods.get(config.method)).patch_size
  return (t // pt) * (h // ph) * (w // pw)


# ----------------------------------------------------------------------------------------------------------------------
# Parameters: analytic count, the real abstract module, per-device bytes from the real shardings
# ----------------------------------------------------------------------------------------------------------------------


def _dense(i: int, o: int, bias: bool = True) -> int:
  return i * o + (o if bias else 0)


def _attention(d: int) -> int:
  return 4 * _dense(d, d) + 2 * d  # q, k, v, out + RMSNorm scales of q and k


def block_param_count(cfg: WanConfig) -> int:
  """Parameters of one WAN block (`camjax.models.wan.WanBlock`): self- and cross-attention, affine norm2, FFN,
  modulation table, and the camjax extensions the config switches on (cross streams, extra-kv gate, LoRA)."""
  d, f = cfg.dim, cfg.ffn_dim
  n = 2 * _attention(d) + (2 * d if cfg.cross_attn_norm else 0) + _dense(d, f) + _dense(f, d) + 6 * d
  n += len(cfg.cross_streams) * (_attention(d) + d)  # CrossStream: attention + gate
  n += d if cfg.extra_kv else 0
  if cfg.lora_rank:
    shapes = {t: (d, d) for t in LORA_TARGETS} | {"ffn.proj_in": (d, f), "ffn.proj_out": (f, d)}
    n += sum(cfg.lora_rank * sum(shapes[t]) for t in cfg.lora_targets)  # A [in, r], B [r, out]
  return n


def wan_param_count(cfg: WanConfig) -> int:
  """Analytic parameter count of `WanDiT(cfg)` (diffusers `WanTransformer3DModel` plus camjax's extensions).

  patch embedding `pv (C_in + E) D + D`; time MLP `f_t D + D + D^2 + D`; modulation projection `6 D^2 + 6 D`; text
  projection `d_txt D + D + D^2 + D`; `num_layers` blocks (`block_param_count`); output projection
  `D pv C_out + pv C_out`; output modulation table `2 D`; per cross stream a context projection `d_ctx D + D`.
  (pv = patch volume, E = extra input channels, f_t = freq_dim, d_txt = text_dim.) Without extensions it equals
  diffusers' `WanTransformer3DModel` count: WAN 2.1 1.3B 1,418,996,800, 14B 14,288,491,584 (counted on torch's meta
  device).
  """
  d, pv = cfg.dim, cfg.patch_volume
  n = _dense(pv * (cfg.in_channels + cfg.extra_in_channels), d)
  n += _dense(cfg.freq_dim, d) + _dense(d, d) + _dense(d, 6 * d)
  n += _dense(cfg.text_dim, d) + _dense(d, d)
  n += cfg.num_layers * block_param_count(cfg)
  n += _dense(d, pv * cfg.out_channels) + 2 * d
  n += sum(_dense(ctx, d) for _, ctx in cfg.cross_streams)
  return n


def generator_param_count(config) -> int:
  """Analytic parameters of the method's generator: the DiT, plus CameraCtrl II's camera patchify (bias-free,
  `pv 6 D`) when `model.camera`. Text encoders other than precomputed embeddings are not modelled.

  Raises:
    MemoryPlanError: a text encoder or method whose parameters have no formula here.
  """
  if config.text.kind != "precomputed" or config.method != "cameractrl2":
    raise MemoryPlanError(f"no parameter formula for method {config.method!r} with text kind {config.text.kind!r}; "
                          "the plan models cameractrl2 with precomputed text embeddings")
  cfg = wan_config(config, make_autoencoder(config), methods.get(config.method))
  camera = cfg.patch_volume * 6 * cfg.dim if config.model.get("camera", False) else 0
  return wan_param_count(cfg) + camera


@dataclasses.dataclass
class AbstractModel:
  """The generator of a config, abstract: `static` for the jitted step, `params` (trainable) and `frozen` (or None)
  as `nnx.State`s whose values are `jax.ShapeDtypeStruct`s."""

  static: Static
  params: nnx.State
  frozen: nnx.State | None


def abstract_model(config) -> AbstractModel:
  """The config's generator without allocating it, split like `camjax.methods.build_model` does."""
  method = methods.get(config.method)
  graphdef, state = abstract_generator(config, method)
  graphdef, params, frozen = nnx.split(nnx.merge(graphdef, state), method.trainable(config), ...)
  frozen = frozen if jax.tree.leaves(frozen) else None
  static = Static(graphdef, make_autoencoder(config), make_objective(config.objective), config, method)
  return AbstractModel(static, params, frozen)


def count_leaves(state) -> int:
  """Number of scalars in a pytree of arrays or `jax.ShapeDtypeStruct`s."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def abstract_mesh(axes: dict[str, int]) -> AbstractMesh:
  """A device-free mesh over camjax's four axes (the analytic figures need only the axis sizes)."""
  sizes = tuple(int(axes.get(a, 1)) for a in sharding.MESH_AXES)
  return AbstractMesh(sizes, sharding.MESH_AXES, axis_types=(AxisType.Auto,) * len(sizes))


def shard(state, mesh, rules: sharding.Rules | None = None):
  """`state` with every value a `jax.ShapeDtypeStruct` carrying its NamedSharding from `camjax.sharding.param_specs`
  (`mesh` may be an `AbstractMesh`)."""
  specs = sharding.param_specs(state, mesh, rules)
  is_var = lambda x: isinstance(x, nnx.Variable)
  return jax.tree.map(lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=NamedSharding(mesh, s))),
                      state, specs, is_leaf=is_var)


def device_bytes(tree) -> int:
  """Bytes one device holds of a pytree of `jax.ShapeDtypeStruct`s with shardings (the largest shard)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def total_bytes(tree) -> int:
  """Bytes of a pytree of arrays or `jax.ShapeDtypeStruct`s, unsharded."""
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def sharded_opt_state(tx, params):
  """AdamW's state with `mu` / `nu` sharded like the parameters and the counts replicated (the fsdp/ZeRO layout)."""
  abstract = jax.eval_shape(tx.init, params)
  mesh = jax.tree.leaves(params)[0].sharding.mesh
  shardings = jax.tree.map(lambda x: x.sharding, params)
  out = optax.tree_map_params(tx, lambda _, s: s, abstract, shardings,
                              transform_non_params=lambda _: NamedSharding(mesh, P()))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, out)


def built_train_state(model: AbstractModel, tx, config):
  """The abstract train state `{step, params, opt_state[, frozen][, ema]}` with the shardings `camjax.train.
  train_state` gives it, read from `train_state` compiled ahead of time on the (device) mesh of `model.params`."""

  def init(params, frozen):
    built = Model(model.static, params, frozen, model.static.autoencoder, None)
    return train.train_state(built, tx, config)

  compiled = jax.jit(init).lower(model.params, model.frozen).compile()
  shapes = jax.eval_shape(init, model.params, model.frozen)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes,
                      compiled.output_shardings)


def block_params(params) -> int:
  """Parameters of ONE scanned block (the leaves under `blocks`, divided by their leading layer count)."""
  n, layers = 0, None
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    if "blocks" in keys:
      layers = leaf.shape[0]
      n += math.prod(leaf.shape[1:])
  return n if layers else 0


@dataclasses.dataclass
class StateBytes:
  """Per-device bytes of the train state on one mesh (see the module docstring)."""

  param_count: int
  params: int  # trainable + frozen weights
  grads: int
  opt_sharded: int
  opt_built: int | None  # None: not compiled (no devices for that mesh)
  ema: int
  transient: int


def sharded_model(model: AbstractModel, mesh, rules: sharding.Rules | None = None) -> AbstractModel:
  """`model` with its parameters (and frozen weights) carrying their shardings on `mesh` (see `shard`)."""
  frozen = shard(model.frozen, mesh, rules) if model.frozen is not None else None
  return dataclasses.replace(model, params=shard(model.params, mesh, rules), frozen=frozen)


def state_bytes(config, mesh, rules: sharding.Rules | None = None, built_mesh=None) -> StateBytes:
  """Per-device bytes of the train state of `config` on `mesh` (module docstring).

  Args:
    config: a camjax config (its generator, optimiser, EMA, dtypes).
    mesh: the mesh (an `AbstractMesh` suffices: only axis sizes are read).
    rules: the sharding rule tables (default: `camjax.sharding`'s).
    built_mesh: a device mesh of the same shape; when given, the "as built" optimizer layout is read from
      `camjax.train.train_state` compiled on it (else `opt_built` is None).
  """
  model = sharded_model(abstract_model(config), mesh, rules)
  tx = train.make_optimizer(config)
  opt_built = None
  if built_mesh is not None:
    with sharding.use_mesh(built_mesh, rules):
      built = built_train_state(sharded_model(model, built_mesh, rules), tx, config)
    opt_built = device_bytes(built["opt_state"])
  params, frozen = model.params, model.frozen
  compute = jnp.dtype(config.model.dtype).itemsize
  param_bytes = jnp.dtype(jax.tree.leaves(params)[0].dtype).itemsize
  return StateBytes(
      param_count=count_leaves(model.params) + (count_leaves(model.frozen) if model.frozen is not None else 0),
      params=device_bytes(params) + (device_bytes(frozen) if frozen is not None else 0),
      grads=device_bytes(params),
      opt_sharded=device_bytes(sharded_opt_state(tx, params)),
      opt_built=opt_built,
      ema=device_bytes(params) if config.optimizer.ema_decay > 0 else 0,
      transient=block_params(model.params) * (2 * param_bytes + compute),
  )


# ----------------------------------------------------------------------------------------------------------------------
# Activations: analytic saved bytes, traced residuals, attention
# ----------------------------------------------------------------------------------------------------------------------


def saved_bytes(cfg: WanConfig, n: int, text_len: int) -> int:
  """Analytic bytes per sample the scan saves for the backward under `cfg.remat` (module docstring).

  Raises:
    MemoryPlanError: a remat policy or camjax extension without a formula here.
  """
  if cfg.cross_streams or cfg.extra_kv or cfg.lora_rank:
    raise MemoryPlanError("saved_bytes models plain WAN blocks (no cross streams, extra_kv or LoRA)")
  e = np.dtype(jnp.dtype(cfg.dtype)).itemsize
  d, f = cfg.dim, cfg.ffn_dim
  per_block = {"full": n * d * e, "dots": (8 * n * d + n * f + 2 * text_len * d) * e}
  if cfg.remat not in per_block:
    raise MemoryPlanError(f"no saved-activation formula for remat {cfg.remat!r} (have {sorted(per_block)})")
  return cfg.num_layers * per_block[cfg.remat] + 3 * n * d * 4 + n * d * e


def abstract_batch(config, batch_size: int, mesh=None) -> dict[str, jax.ShapeDtypeStruct]:
  """The host batch the jitted step reads (`camjax.methods.host_batch`), abstract, sharded over the batch axes when
  `mesh` is given.

  Raises:
    MemoryPlanError: a config whose batch is not precomputed latents + text with CameraCtrl II's cameras.
  """
  if config.autoencoder.kind != "precomputed" or config.text.kind != "precomputed" or config.method != "cameractrl2":
    raise MemoryPlanError("abstract_batch models cameractrl2 with precomputed latents and text embeddings, got method "
                          f"{config.method!r}, autoencoder {config.autoencoder.kind!r}, text {config.text.kind!r}")
  b, d = batch_size, config.data
  shapes = dict(latents=((b, *latent_grid(config)), jnp.float32),
                text=((b, config.text.max_length, config.text.width), jnp.float32),
                text_mask=((b, config.text.max_length), jnp.bool_), K=((b, d.num_frames, 3, 3), jnp.float32),
                w2c=((b, d.num_frames, 4, 4), jnp.float32), has_camera=((b,), jnp.bool_))

  def sds(shape, dtype):
    if mesh is None:
      return jax.ShapeDtypeStruct(shape, dtype)
    spec = sharding.logical_to_spec(("act_batch",), sharding.current_rules().activations, dict(mesh.shape))
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P(*spec, *([None] * (len(shape) - 1)))))

  return {k: sds(*v) for k, v in shapes.items()}


def traced_residuals(config, batch_size: int = 1) -> list[tuple[int, tuple[int, ...], str]]:
  """`(bytes, shape, source)` of every residual JAX saves for the backward of the method's loss (what
  `jax.ad_checkpoint.print_saved_residuals` lists), traced at the config's shapes without allocating anything;
  the parameters and the batch themselves are left out. Attention is traced as "xla" (cuDNN does not trace on CPU;
  under the "full" and "dots" policies both save the same residuals)."""
  config = _override(config, attention="xla")
  model = abstract_model(config)
  batch = abstract_batch(config, batch_size)
  static = model.static

  def loss(params, frozen, batch):
    frozen, batch = jax.lax.stop_gradient((frozen, batch))
    generator = methods.merge(static, {"params": params, "frozen": frozen})
    return static.method.loss(generator, static, batch, jax.random.key(0))

  out = []
  for aval, source in saved_residuals(loss, model.params, model.frozen, batch):
    if source.startswith("from the argument"):
      continue
    out.append((math.prod(aval.shape) * np.dtype(aval.dtype).itemsize, tuple(aval.shape), source))
  return out


_TRACE_CACHE: dict[str, tuple[list, list]] = {}  # config JSON -> residuals at batch 1 and 2


def _per_sample(config, score_shapes) -> tuple[int, int]:
  """(bytes per sample, of which attention-score arrays) of the traced residuals: batch 2 minus batch 1."""
  key = config.to_json_best_effort()
  if key not in _TRACE_CACHE:
    _TRACE_CACHE[key] = (traced_residuals(config, 1), traced_residuals(config, 2))
  one, two = _TRACE_CACHE[key]
  total = lambda rs: sum(r[0] for r in rs)
  scores = lambda rs: sum(r[0] for r in rs if any(r[1][-len(s):] == s for s in score_shapes))
  return total(two) - total(one), scores(two) - scores(one)


@dataclasses.dataclass
class Activations:
  """Per-sample activation bytes of one config and attention implementation (module docstring)."""

  tokens: int
  saved: int  # analytic
  saved_traced: int
  working: int  # traced: one block's recompute minus what the policy saved (scores adjusted for `attention`)
  attention: int  # xla: the softmax gradient [H, N, N + L] float32; cudnn: log-sum-exp
  inputs: int
  attention_impl: str

  @property
  def per_sample(self) -> int:
    return self.saved + self.working + self.attention + self.inputs


def activations(config, attention: str) -> Activations:
  """Per-sample activation bytes of `config` (its remat policy, clip size and text length) with `attention`.

  Traces the loss six times (all layers under the policy, one layer under the policy and without remat, each at
  batch 1 and 2; cached per config), nothing is allocated.

  Args:
    config: a paper-scale camjax config (precomputed latents and text).
    attention: "xla" (score matrices materialised) or "cudnn" (flash attention: none).

  Raises:
    MemoryPlanError: another attention, or a remat policy / model without a saved-bytes formula (`saved_bytes`).
  """
  if attention not in ("xla", "cudnn"):
    raise MemoryPlanError(f"attention {attention!r}: the plan models 'xla' and 'cudnn'")
  cfg = wan_config(config, make_autoencoder(config), methods.get(config.method))
  n, text_len, h = num_tokens(config), config.text.max_length, cfg.num_heads
  scores = ((h, n, n), (h, n, text_len))
  saved_traced, saved_scores = _per_sample(config, scores)
  one = lambda remat: dict(num_layers=1, remat=remat)
  none_one, none_scores = _per_sample(_override(config, **one("none")), scores)
  policy_one, policy_scores = _per_sample(_override(config, **one(cfg.remat)), scores)
  working = none_one - policy_one
  if attention == "xla":
    extra = h * (n * n + n * text_len) * 4  # d(logits) of the softmax backward, float32
  else:  # flash attention: no score matrices; the log-sum-exp of the self- and cross-attention per head and token
    working -= none_scores - policy_scores
    saved_traced -= saved_scores
    extra = 2 * h * n * 4
  inputs = total_bytes(abstract_batch(config, 1))
  return Activations(n, saved_bytes(cfg, n, text_len), saved_traced, working, extra, inputs, attention)


def _override(config, **model):
  c = config.copy_and_resolve_references()
  c.model.update(model)
  return c


# ----------------------------------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------------------------------


def max_batch(budget: float, fixed: float, per_sample: float) -> int:
  """Largest integer b >= 0 with `fixed + b * per_sample <= budget`."""
  return max(0, int((budget - fixed) // per_sample)) if per_sample > 0 else 0


def plan_row(variant: str, mesh: MeshPlan, state: StateBytes, act: Activations, headroom: float) -> dict:
  """One row of the plan: the figures (bytes per device), the total at batch 1 and the largest batch per device for
  each optimizer layout ("built", "sharded"), under a budget of `(1 - headroom)` of the device memory."""
  budget = (1 - headroom) * mesh.device.memory_gib * GiB
  fixed = {layout: state.params + state.grads + opt + state.ema + state.transient
           for layout, opt in (("built", state.opt_built), ("sharded", state.opt_sharded)) if opt is not None}
  return dict(
      variant=variant, mesh=mesh.name, device=mesh.device.name, devices=mesh.num_devices,
      memory_gib=mesh.device.memory_gib, budget_gib=budget / GiB, attention=act.attention_impl, tokens=act.tokens,
      params=state.params, grads=state.grads, opt_built=state.opt_built, opt_sharded=state.opt_sharded, ema=state.ema,
      transient=state.transient, act_saved=act.saved, act_saved_traced=act.saved_traced, act_working=act.working,
      act_attention=act.attention, act_inputs=act.inputs, act_per_sample=act.per_sample,
      total_b1={k: v + act.per_sample for k, v in fixed.items()},
      max_batch={k: max_batch(budget, v, act.per_sample) for k, v in fixed.items()},
  )


def _gib(x) -> str:
  return "-" if x is None else f"{x / GiB:.2f}"


def format_plan(rows: list[dict]) -> str:
  """The plan rows as a markdown table (GiB per device)."""
  head = ("| model | mesh | attention | params | grads | opt state (as built / sharded) | EMA | FSDP transient | "
          "activations / sample (saved + working + attention + inputs) | total at batch 1 (as built / sharded) | "
          "largest batch / device (as built / sharded) |")
  lines = [head, "|" + "---|" * 11]
  for r in rows:
    lines.append(
        f"| {r['variant']} | {r['mesh']} ({r['devices']} x {r['device']}, budget {r['budget_gib']:.1f} GiB) | "
        f"{r['attention']} | {_gib(r['params'])} | {_gib(r['grads'])} | {_gib(r['opt_built'])} / "
        f"{_gib(r['opt_sharded'])} | {_gib(r['ema'])} | {_gib(r['transient'])} | {_gib(r['act_per_sample'])} "
        f"({_gib(r['act_saved'])} + {_gib(r['act_working'])} + {_gib(r['act_attention'])} + {_gib(r['act_inputs'])}) | "
        f"{_gib(r['total_b1'].get('built'))} / {_gib(r['total_b1']['sharded'])} | "
        f"{r['max_batch'].get('built', '-')} / {r['max_batch']['sharded']} |")
  return "\n".join(lines)


def device_mesh(plan: MeshPlan):
  """A device mesh of `plan`'s shape on this process's (fake CPU) devices, or None when there are too few."""
  if len(jax.devices()) < plan.num_devices:
    return None
  return sharding.make_mesh(plan.axes, devices=jax.devices()[:plan.num_devices])


# ----------------------------------------------------------------------------------------------------------------------
# Ahead-of-time check: the sharded step of a reduced config, compiled on 8 fake CPU devices
# ----------------------------------------------------------------------------------------------------------------------

AOT_REDUCED = dict(num_layers=2, frames=13, height=256, width=256, ema_decay=0.999)  # 4 x 32 x 32 latents: 1024 tokens


def reduced_config(variant: str, num_layers: int, frames: int, height: int, width: int, ema_decay: float, **model):
  """The variant with fewer layers and a smaller clip, XLA attention (CPU) and EMA switched on (to check it)."""
  config = load_config(variant, num_layers=num_layers, attention="xla", **model)
  config.optimizer.ema_decay = ema_decay
  return with_workload(config, Workload("reduced", frames, height, width))


def compile_step(config, mesh, batch_per_device: int, opt_layout: str):
  """`memory_analysis()` of `camjax.train.train_step` for `config` on `mesh`, compiled ahead of time from abstract
  arguments, and the per-device bytes of its state and batch. `opt_layout`: "built" (as `train_state` makes it) or
  "sharded"."""
  with sharding.use_mesh(mesh):
    model = sharded_model(abstract_model(config), mesh)
    tx = train.make_optimizer(config)
    state = built_train_state(model, tx, config)
    if opt_layout == "sharded":
      state["opt_state"] = sharded_opt_state(tx, model.params)
    batch = abstract_batch(config, batch_per_device * math.prod(mesh.shape[a] for a in ("data", "fsdp")), mesh)
    step = jax.jit(functools.partial(train.train_step, static=model.static, tx=tx), donate_argnums=(0,),
                   out_shardings=(jax.tree.map(lambda x: x.sharding, state), None))
    compiled = step.lower(state, batch).compile(compiler_options=xla_flags.fast_compile_options())
  stats = compiled.memory_analysis()
  return dict(argument=int(stats.argument_size_in_bytes), output=int(stats.output_size_in_bytes),
              alias=int(stats.alias_size_in_bytes), temp=int(stats.temp_size_in_bytes),
              state={k: device_bytes(v) for k, v in state.items()}, batch=device_bytes(batch))


def aot_check(variant: str, reduced: dict | None = None, temp: bool = True,
              layouts: tuple[str, ...] = ("built", "sharded")) -> dict:
  """The ahead-of-time check of one variant on an 8-device fsdp mesh: analytic state bytes vs XLA's argument bytes,
  for the optimizer layout as built and sharded, and (`temp`) XLA:CPU's temp bytes at 1 and 3 samples per device
  next to the analytic transient figures.

  Args:
    variant: a `configs/cameractrl2.py` variant.
    reduced: overrides of `AOT_REDUCED` (layers, clip size, EMA) and of `config.model` fields.
    temp: also compile 3 samples per device and trace the activations (the temp indication).
    layouts: the optimizer layouts to compile ("built": as `train_state` makes it; "sharded": like the parameters).

  Raises:
    MemoryPlanError: fewer than 8 devices (start the process with
      `XLA_FLAGS=--xla_force_host_platform_device_count=8`, as `run_aot_subprocess` does).
  """
  reduced = dict(AOT_REDUCED, **(reduced or {}))
  config = reduced_config(variant, **reduced)
  if len(jax.devices()) < 8:
    raise MemoryPlanError(f"aot_check needs 8 devices, this process has {len(jax.devices())}")
  mesh = sharding.make_mesh({"fsdp": 8}, devices=jax.devices()[:8])
  state = state_bytes(config, abstract_mesh({"fsdp": 8}), built_mesh=mesh)
  out = dict(variant=variant, reduced=reduced, tokens=num_tokens(config), param_count=state.param_count, compiled={})
  for layout, b in tuple((layout, 1) for layout in layouts) + ((("built", 3),) if temp else ()):
    out["compiled"][f"{layout}_b{b}"] = compile_step(config, mesh, b, layout)
  out["analytic_state"] = {layout: state.params + opt + state.ema
                           for layout, opt in (("built", state.opt_built), ("sharded", state.opt_sharded))}
  out["analytic"] = dataclasses.asdict(state)
  if temp:
    act = activations(config, "xla")
    out["analytic_temp_per_sample"] = act.per_sample - act.inputs
    out["analytic_temp_b1"] = state.grads + state.transient + act.per_sample - act.inputs
  return out


def aot_errors(result: dict) -> dict[str, float]:
  """Relative difference of the analytic state bytes (params + opt state + EMA, per device) from XLA's argument bytes
  minus the batch, per optimizer layout."""
  out = {}
  for layout in [k[:-3] for k in result["compiled"] if k.endswith("_b1")]:
    c = result["compiled"][f"{layout}_b1"]
    measured = c["argument"] - c["batch"] - c["state"]["step"]
    out[layout] = (result["analytic_state"][layout] - measured) / measured
  return out


def start_aot(variants, reduced: dict | None = None, temp: bool = True,
              layouts: tuple[str, ...] = ("built", "sharded")) -> subprocess.Popen:
  """Starts `aot_check` of each variant in a fresh Python process with 8 fake CPU devices (`finish_aot` collects);
  `reduced` overrides `AOT_REDUCED` (and may set `config.model` fields)."""
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=8".strip())
  cmd = [sys.executable, str(Path(__file__).resolve()), "--aot_worker", ",".join(variants),
         "--aot_reduced", json.dumps(reduced or {}), "--aot_layouts", ",".join(layouts)]
  cmd += [] if temp else ["--aot_no_temp"]
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_aot(proc: subprocess.Popen, timeout: float = 900) -> list[dict]:
  """The results of a `start_aot` process.

  Raises:
    MemoryPlanError: the worker failed (its stderr is in the message).
  """
  out, err = proc.communicate(timeout=timeout)
  if proc.returncode != 0:
    raise MemoryPlanError(f"AOT worker {' '.join(proc.args)} failed:\n{err[-3000:]}")
  return json.loads(out.strip().splitlines()[-1])


def run_aot_subprocess(variants, reduced: dict | None = None, temp: bool = True,
                       layouts: tuple[str, ...] = ("built", "sharded")) -> list[dict]:
  """`aot_check` of each variant in a fresh Python process with 8 fake CPU devices; returns their results."""
  return finish_aot(start_aot(variants, reduced, temp, layouts))


def format_aot(result: dict) -> str:
  """The lines of one `aot_check` result."""
  errors = aot_errors(result)
  r = result["reduced"]
  lines = [f"AOT {result['variant']}: {r['num_layers']} layers, {r['frames']}x{r['height']}x{r['width']} clips "
           f"({result['tokens']} tokens), ema_decay {r['ema_decay']}, fsdp 8 on 8 fake CPU devices, "
           f"{result['param_count']:,} parameters"]
  for layout in errors:
    c = result["compiled"][f"{layout}_b1"]
    measured = c["argument"] - c["batch"] - c["state"]["step"]
    lines.append(f"  opt state {layout:7s}: params + opt state + EMA per device: analytic "
                 f"{_mib(result['analytic_state'][layout])}, XLA argument_size - batch - step {_mib(measured)} "
                 f"({errors[layout]:+.2e}); output {_mib(c['output'])}, aliased (donated) {_mib(c['alias'])}")
  if "built_b3" not in result["compiled"]:
    return "\n".join(lines)
  b1, b3 = result["compiled"]["built_b1"]["temp"], result["compiled"]["built_b3"]["temp"]
  lines.append(f"  XLA:CPU temp (indication only): {_mib(b1)} at 1 sample/device, {_mib(b3)} at 3 -> "
               f"{_mib((b3 - b1) / 2)} per sample; analytic: {_mib(result['analytic_temp_b1'])} at 1, "
               f"{_mib(result['analytic_temp_per_sample'])} per sample (xla attention)")
  return "\n".join(lines)


def _mib(x) -> str:
  return f"{x / 2**20:,.1f} MiB"


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------


def plan(variants, mesh_names, headroom: float, workloads: str = "all", **model) -> tuple[list[dict], list[dict]]:
  """Rows of the paper-scale table (every variant x mesh with the mesh's attention; on TPU also a flash kernel for
  comparison) and of the phases table (largest batch per device at the config's own phase resolutions). `model`
  overrides `config.model` fields (e.g. `remat="full"`)."""
  rows, phase_rows = [], []
  for variant in variants:
    config = load_config(variant, **model)
    for mesh_name in mesh_names:
      mesh = MESHES[mesh_name]
      state = state_bytes(config, abstract_mesh(mesh.axes), built_mesh=device_mesh(mesh))
      for impl in [mesh.device.attention] + (["cudnn"] if mesh.device.attention == "xla" else []):
        row = plan_row(variant, mesh, state, activations(with_workload(config, PAPER), impl), headroom)
        row["attention"] = impl if mesh.device.attention == impl else "flash (cuDNN-like; none in camjax for TPU)"
        rows.append(row)
      if workloads != "all":
        continue
      for workload, batch_size in config_workloads(config):
        row = plan_row(variant, mesh, state, activations(with_workload(config, workload), mesh.device.attention),
                       headroom)
        row.update(workload=workload.name, global_batch=batch_size)
        phase_rows.append(row)
  return rows, phase_rows


def format_phases(rows: list[dict]) -> str:
  """The phase rows as a markdown table."""
  lines = ["| model | mesh | clips | tokens | activations / sample | largest batch / device (as built / sharded) | "
           "config's global batch / devices |", "|" + "---|" * 7]
  for r in rows:
    lines.append(f"| {r['variant']} | {r['mesh']} | {r['workload']} | {r['tokens']} | {_gib(r['act_per_sample'])} | "
                 f"{r['max_batch'].get('built', '-')} / {r['max_batch']['sharded']} | "
                 f"{r['global_batch']} / {r['devices']} = {r['global_batch'] / r['devices']:g} |")
  return "\n".join(lines)


def describe_variant(variant: str, **model) -> str:
  """A variant's sizes, dtypes, remat and attention, its token count at 81x480x832 and its parameter count (analytic
  vs the abstract generator's leaves)."""
  config = load_config(variant, **model)
  cfg = wan_config(config, make_autoencoder(config), methods.get(config.method))
  big = with_workload(config, PAPER)
  analytic, leaves = generator_param_count(config), count_leaves(abstract_model(config).params)
  return (f"{variant}: D={cfg.dim}, heads={cfg.num_heads}, FFN={cfg.ffn_dim}, layers={cfg.num_layers}, compute "
          f"{cfg.dtype}, params {cfg.param_dtype}, remat {cfg.remat!r}, attention {cfg.attention!r}, ema_decay "
          f"{config.optimizer.ema_decay}; {PAPER.name} -> latents {latent_grid(big)} -> {num_tokens(big)} tokens, "
          f"text {config.text.max_length}\n  parameters: analytic {analytic:,}, abstract generator leaves {leaves:,} "
          f"({'equal' if analytic == leaves else 'DIFFERENT'})")


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  parser.add_argument("--variants", default="wan1_3b,wan14b")
  parser.add_argument("--meshes", default=",".join(MESHES))
  parser.add_argument("--headroom", type=float, default=HEADROOM, help="fraction of device memory kept free")
  parser.add_argument("--remat", default="", help="override the variants' remat policy (e.g. full, dots)")
  parser.add_argument("--workloads", choices=("paper", "all"), default="all",
                      help="paper: 81x480x832 only; all: also the config's own phase resolutions")
  parser.add_argument("--json", default="", help="write every figure to this file")
  parser.add_argument("--no_aot", action="store_true", help="skip the ahead-of-time XLA check")
  parser.add_argument("--aot_worker", default="", help=argparse.SUPPRESS)
  parser.add_argument("--aot_reduced", default="{}", help=argparse.SUPPRESS)
  parser.add_argument("--aot_no_temp", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--aot_layouts", default="built,sharded", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None):
  args = _parse_args(argv)
  if args.aot_worker:  # the subprocess: one JSON line on stdout
    reduced = json.loads(args.aot_reduced)
    layouts = tuple(args.aot_layouts.split(","))
    print(json.dumps([aot_check(v, reduced, not args.aot_no_temp, layouts) for v in args.aot_worker.split(",")]))
    return
  variants, mesh_names = args.variants.split(","), args.meshes.split(",")
  unknown = [m for m in mesh_names if m not in MESHES]
  if unknown:
    raise MemoryPlanError(f"unknown meshes {unknown}; known: {sorted(MESHES)}")
  model = {"remat": args.remat} if args.remat else {}
  t0 = time.perf_counter()
  aot_proc = None if args.no_aot else start_aot(variants, model)  # compiles while the plan is computed here
  print(f"machine: {jax.default_backend()}, {os.cpu_count()} CPUs, jax {jax.__version__}; no accelerator: analytic "
        f"and traced figures, layouts compiled on {len(jax.devices())} fake CPU devices, AOT check on 8")
  for name in mesh_names:
    m = MESHES[name]
    print(f"mesh {name}: {m.note}; {m.device.name} {m.device.memory_gib:g} GiB, attention {m.device.attention!r}")
  for variant in variants:
    print(describe_variant(variant, **model))
  rows, phase_rows = plan(variants, mesh_names, args.headroom, args.workloads, **model)
  print(f"\nper device, GiB; budget = device memory - {args.headroom:.0%} headroom; at b samples per device: total = "
        "params + grads + opt state + EMA + FSDP transient + b * activations")
  print(format_plan(rows))
  for r in rows:
    if r["mesh"] == mesh_names[0]:
      diff = (r["act_saved"] - r["act_saved_traced"]) / r["act_saved_traced"]
      print(f"  {r['variant']} saved activations per sample: analytic {_gib(r['act_saved'])} GiB, traced "
            f"{_gib(r['act_saved_traced'])} GiB ({diff:+.1%})")
  if phase_rows:
    print("\nthe config's own phases (largest batch per device; camjax has no gradient accumulation, so the global "
          "batch needs this many per device):")
    print(format_phases(phase_rows))
  aot = []
  if aot_proc is not None:
    aot = finish_aot(aot_proc)
    print()
    for result in aot:
      print(format_aot(result))
    worst = max(abs(e) for r in aot for e in aot_errors(r).values())
    print(f"AOT state check: worst relative difference {worst:.2e} (tolerance {AOT_TOLERANCE:.0e}): "
          f"{'OK' if worst <= AOT_TOLERANCE else 'FAILED'}")
  print(f"wall time {time.perf_counter() - t0:.0f} s")
  if args.json:
    Path(args.json).write_text(json.dumps(dict(rows=rows, phases=phase_rows, aot=aot), indent=1))


if __name__ == "__main__":
  main()
