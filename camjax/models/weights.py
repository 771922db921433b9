"""Import diffusers-format WAN 2.1 weights (`WanTransformer3DModel.save_pretrained`) into the sharded NNX model.

A diffusers folder holds `config.json` and either one `diffusion_pytorch_model.safetensors` or shards listed in
`diffusion_pytorch_model.safetensors.index.json`. Tensors are read lazily with `safetensors.safe_open`: every camjax
parameter is built with `jax.make_array_from_callback`, so each host reads only the slices its devices hold (the layer
range and the rows / columns of its shards); the full unsharded model never sits on one host.

Layout conversions (REFERENCE.md section 8):
  * Linear `weight [out, in]` -> `kernel [in, out]`;
  * Conv3d patch embedding `[D, C, pt, ph, pw]` -> `kernel [pt * ph * pw * C, D]` (patch order pt, ph, pw, C);
  * per-block tensors `blocks.{i}.*` are stacked along camjax's leading `layers` axis;
  * camjax extensions (`WanConfig` fields `extra_in_channels`, `cross_streams`, `extra_kv`, `lora_*`) are not in WAN
    checkpoints. A WAN parameter is one that `config.plain()` (the config without extensions) has; every other
    parameter is camjax-only: it runs its seeded initialiser (zero gates, zero LoRA `B`), is not expected in the
    checkpoint, and is listed in an INFO log. The `extra_in_channels` input channels get zero patch-embedding kernel
    rows. So the loaded model computes exactly what WAN computes until it is fine-tuned.

The model is built abstractly (`jax.eval_shape`) and never randomly initialised as a whole: parameters the checkpoint
provides are created straight from it, and only the camjax-only ones run their initialiser (`_init_only`), so the
peak memory is one copy of the parameters, not two.

Entry point: `load_diffusers(path, mesh=..., **overrides)` (also `camjax.models.load_diffusers`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from camjax import sharding
from camjax.errors import CamjaxError
from camjax.models.wan import WanConfig, WanDiT

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"

log = logging.getLogger(__name__)

# camjax key fragments -> diffusers key fragments, where they differ (applied to ".path." strings).
_RENAME = (
    (".ffn.proj_in.", ".ffn.net.0.proj."),
    (".ffn.proj_out.", ".ffn.net.2."),
    (".to_out.", ".to_out.0."),
    (".kernel.", ".weight."),
    (".scale.", ".weight."),
)
# Top-level camjax modules -> diffusers prefixes.
_TOP = {
    "time_embedder": "condition_embedder.time_embedder",
    "time_proj": "condition_embedder.time_proj",
    "text_embedder": "condition_embedder.text_embedder",
}
# Diffusers keys that carry no information for camjax (RoPE buffers are recomputed).
_IGNORED_SUFFIXES = ("norm_added_q.weight",)


class WeightsError(CamjaxError):
  """A checkpoint that does not match the model (missing / unexpected keys, shapes), or an unreadable folder."""


class _Reader:
  """Lazy access to the tensors of one or more safetensors files."""

  def __init__(self, folder: str):
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    self._open = safe_open
    index = os.path.join(folder, INDEX_NAME)
    single = os.path.join(folder, WEIGHTS_NAME)
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      self.files = {k: os.path.join(folder, v) for k, v in weight_map.items()}
    elif os.path.exists(single):
      self.files = None
      self._single = single
    else:
      candidates = sorted(p for p in os.listdir(folder) if p.endswith(".safetensors"))
      if len(candidates) != 1:
        raise WeightsError(f"{folder}: expected {WEIGHTS_NAME} or {INDEX_NAME}, found {candidates or 'nothing'}")
      self.files, self._single = None, os.path.join(folder, candidates[0])
    self._handles = {}
    if self.files is None:
      with safe_open(self._single, framework="flax") as f:
        self.files = {k: self._single for k in f.keys()}  # noqa: SIM118 (safe_open has keys(), no iteration)
    self.shapes = {}
    for path in sorted(set(self.files.values())):
      f = self._handle(path)
      for k in f.keys():  # noqa: SIM118
        self.shapes[k] = tuple(f.get_slice(k).get_shape())

  def _handle(self, path):
    if path not in self._handles:
      try:
        self._handles[path] = self._open(path, framework="flax").__enter__()
      except Exception as e:  # safetensors raises its own SafetensorError / OSError types
        raise WeightsError(f"{path}: cannot read safetensors file ({e})") from e
    return self._handles[path]

  def read(self, key: str, index: tuple = ()) -> np.ndarray:
    """`tensor[index]` as a NumPy array (bf16 stays bf16 via ml_dtypes)."""
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
      sl = self._handle(self.files[key]).get_slice(key)
      value = sl[index] if index else sl[:]
    return np.asarray(value)

  def close(self):
    for h in self._handles.values():
      h.__exit__(None, None, None)
    self._handles.clear()


def _diffusers_key(path: Sequence[str]) -> tuple[str, str]:
  """A WAN parameter's camjax state path -> (diffusers key, kind); kind: linear | conv | direct | stacked_<kind>."""
  path = list(path)
  if path[:2] == ["patch_embedding", "proj"]:
    return "patch_embedding." + ("weight" if path[-1] == "kernel" else "bias"), \
        "conv" if path[-1] == "kernel" else "direct"
  stacked = path[0] == "blocks"
  if stacked:
    path = path[1:]
  elif path[0] in _TOP:
    path = _TOP[path[0]].split(".") + path[1:]
  kind = "linear" if path[-1] == "kernel" else "direct"
  key = "." + ".".join(path) + "."
  for old, new in _RENAME:
    key = key.replace(old, new)
  key = key.strip(".")
  if stacked:
    key = "blocks.{i}." + key
    kind = "stacked_" + kind
  return key, kind


def _state_paths(state) -> dict[tuple[str, ...], nnx.Variable]:
  return {_str_path(path): v for path, v in nnx.to_flat_state(state)}


def load_diffusers(path: str | os.PathLike, *, mesh=None, rules=None, seed: int = 0,
                   **overrides) -> WanDiT:
  """Build a `WanDiT` from a diffusers `WanTransformer3DModel` folder.

  Args:
    path: folder with `config.json` and safetensors weights (as written by `save_pretrained`).
    mesh: optional mesh; parameters are created directly in their `NamedSharding`s and each host reads only the
      slices its devices hold.
    rules: optional `camjax.sharding.Rules`.
    seed: initialisation seed of the camjax-only parameters (the same values as `WanDiT.create(config, seed=seed)`
      gives them; gates and LoRA `B` are zero, so the seed never changes the loaded model's output).
    **overrides: `WanConfig` fields to change (e.g. `extra_in_channels=1, lora_rank=4, dtype="bfloat16",
      remat="full"`).

  Returns:
    The model, with every WAN parameter loaded (cast to `param_dtype`) and the camjax-only ones initialised.

  Raises:
    WeightsError: missing `config.json`, missing or unexpected tensor keys, or shape mismatches (all listed).
  """
  path = os.fspath(path)
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise WeightsError(f"{path}: no config.json (expected a diffusers save_pretrained folder)")
  with open(cfg_path) as f:
    config = WanConfig.from_diffusers_config(json.load(f), **overrides)
  reader = _Reader(path)
  try:
    return _load(reader, config, mesh, rules, seed)
  finally:
    reader.close()


def _load(reader: _Reader, config: WanConfig, mesh, rules, seed) -> WanDiT:
  """The model built abstractly, each parameter created from its checkpoint tensor in its sharding, then merged.

  The random initialiser never materialises the model: only the parameters the checkpoint lacks (camjax-only ones) are
  initialised, by `_init_only`.
  """
  make = lambda: WanDiT(config, rngs=nnx.Rngs(seed))
  with sharding.use_mesh(mesh, rules):
    graphdef, abstract_state = sharding.abstract_module(make)
    _, plain_state = sharding.abstract_module(lambda: WanDiT(config.plain(), rngs=nnx.Rngs(seed)))
  flat = list(nnx.to_flat_state(abstract_state))
  abstract = {_str_path(path): var for path, var in flat}
  wan_paths = set(_state_paths(plain_state))
  shardings = _shardings(abstract_state, mesh, rules)

  values = {}
  getters = _checkpoint_getters(reader, config, {p: v for p, v in abstract.items() if p in wan_paths})
  for p, getter in getters.items():
    var = abstract[p]
    values[p] = jax.make_array_from_callback(var.shape, shardings[p],
                                             lambda idx, g=getter, dt=var.dtype: g(idx).astype(dt))
  camjax_only = [p for p in abstract if p not in values]
  if camjax_only:
    names = ", ".join(".".join(p) for p in camjax_only)
    log.info("camjax-only parameters (initialised, not in the checkpoint): %s", names)
  values.update(_init_only(make, camjax_only, shardings, mesh, rules))
  state = nnx.from_flat_state([(path, var.replace(values[_str_path(path)])) for path, var in flat])
  return nnx.merge(graphdef, state)


def _str_path(path) -> tuple[str, ...]:
  return tuple(str(p) for p in path)


def _shardings(abstract_state, mesh, rules) -> dict[tuple[str, ...], jax.sharding.Sharding]:
  """Each parameter's sharding: its logical `NamedSharding` on `mesh`, or the first local device without one."""
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return {p: device for p in _state_paths(abstract_state)}
  return _state_paths(sharding.param_shardings(abstract_state, mesh, rules))


def _checkpoint_getters(reader: _Reader, config: WanConfig, abstract) -> dict[tuple[str, ...], Callable]:
  """`{camjax path: index -> np.ndarray}` for every WAN parameter in `abstract` (all must be in the checkpoint).

  Raises:
    WeightsError: missing or unexpected checkpoint keys and shapes that do not fit (all listed in one message).
  """
  used: set[str] = set()
  problems: list[str] = []
  getters = {}
  for p, var in abstract.items():
    key, kind = _diffusers_key(p)
    keys = [key.format(i=i) for i in range(config.num_layers)] if kind.startswith("stacked") else [key]
    missing = [k for k in keys if k not in reader.shapes]
    if missing:
      problems.append(f"missing {missing[0]}" + (f" (+{len(missing) - 1} layers)" if len(missing) > 1 else ""))
      continue
    used.update(keys)
    src_shape = reader.shapes[keys[0]]
    getter = _getter(reader, keys, kind, src_shape, var.shape, config)
    if getter is None:
      problems.append(f"{keys[0]}: checkpoint shape {src_shape} does not fit camjax {'.'.join(p)} {var.shape}")
      continue
    getters[p] = getter
  unexpected = [k for k in reader.shapes if k not in used and not k.endswith(_IGNORED_SUFFIXES)]
  if unexpected:
    problems.append(f"unexpected keys {unexpected[:5]}" + (f" (+{len(unexpected) - 5})" if len(unexpected) > 5 else ""))
  if problems:
    raise WeightsError("checkpoint does not match the WAN config: " + "; ".join(problems))
  return getters


def _init_only(make, paths, shardings, mesh, rules) -> dict[tuple[str, ...], jax.Array]:
  """Initialise only the parameters at `paths` (camjax-only ones), each created directly in its sharding.

  The whole module's initialiser is traced under `jax.jit`, but only these leaves are outputs: JAX and XLA drop the
  rest of the computation as dead code, so no other parameter is ever materialised (the parameter values are the
  same as those of `make()`).
  """
  if not paths:
    return {}

  def init():
    state = _state_paths(nnx.state(make()))
    return [state[p].get_value() for p in paths]

  with sharding.use_mesh(mesh, rules):
    arrays = jax.jit(init, out_shardings=[shardings[p] for p in paths])()
  return dict(zip(paths, arrays))


def _getter(reader: _Reader, keys, kind, src_shape, dst_shape, config: WanConfig) -> Callable | None:
  """A function `index -> np.ndarray` producing `dst[index]` from the checkpoint, or None if shapes do not fit."""
  stacked = kind.startswith("stacked")
  base = kind.removeprefix("stacked_")
  inner = dst_shape[1:] if stacked else dst_shape

  if base == "linear":
    if tuple(src_shape[::-1]) != tuple(inner):
      return None
    one = lambda key, idx: reader.read(key, (idx[1], idx[0])).T
  elif base == "direct":
    if math.prod(src_shape) != math.prod(inner) or (tuple(src_shape) != tuple(inner) and len(inner) != 1):
      return None
    one = lambda key, idx: reader.read(key).reshape(inner)[idx]
  elif base == "conv":
    d, c, pt, ph, pw = src_shape
    extra = inner[0] - pt * ph * pw * c  # rows of the camjax extra_in_channels: zero
    if inner[1] != d or (pt, ph, pw) != tuple(config.patch_size) or extra % (pt * ph * pw) or extra < 0:
      return None
    c_dst = c + extra // (pt * ph * pw)

    def one(key, idx):
      w = np.transpose(reader.read(key), (2, 3, 4, 1, 0))  # [pt, ph, pw, C, D]
      w = np.concatenate([w, np.zeros((pt, ph, pw, c_dst - c, d), w.dtype)], axis=3)
      return w.reshape(inner)[idx]
  else:
    return None

  if not stacked:
    return lambda idx: one(keys[0], _norm_index(idx, len(inner)))

  def stacked_get(idx):
    idx = _norm_index(idx, len(dst_shape))
    layers = range(*idx[0].indices(len(keys)))
    return np.stack([one(keys[i], idx[1:]) for i in layers])

  return stacked_get


def _norm_index(idx, ndim):
  idx = tuple(idx) + (slice(None),) * (ndim - len(tuple(idx)))
  return idx
