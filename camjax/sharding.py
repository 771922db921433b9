"""Meshes, logical axis names and the rules that map them onto mesh axes.

camjax model code never names a mesh axis. Parameters carry logical axis names in their `out_sharding` metadata
(`nnx.with_partitioning(init, ("embed", "mlp"))`); activations are constrained with `constrain(x, names)`. This module
turns logical names into `PartitionSpec`s through a rule table, one table for parameters and one for activations (an
activation dimension has its own logical name so that the tables can shard parameters and activations independently).

The mesh has four axes (maxtext / maxdiffusion naming):
  * `data`: pure data parallelism (parameters replicated);
  * `fsdp`: data parallelism with parameters and optimizer state sharded (ZeRO-3);
  * `context`: sequence (video-token) parallelism;
  * `tensor`: Megatron-style tensor parallelism over attention heads and MLP hidden units.

Usage::

  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with sharding.use_mesh(mesh):          # jax.set_mesh + the rule tables
    model = WanDiT.create(config, rngs_seed=0)   # parameters created with their NamedShardings
    out = jax.jit(step)(...)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from camjax.errors import CamjaxError

MESH_AXES = ("data", "fsdp", "context", "tensor")

# Logical parameter axes -> mesh axes. A mesh axis is used at most once per array (first dimension wins).
PARAM_RULES: tuple[tuple[str, Any], ...] = (
    ("layers", None),  # stacked DiT blocks (scanned)
    ("embed", "fsdp"),  # model width
    ("mlp", "tensor"),  # FFN hidden
    ("heads", "tensor"),  # attention inner dim (heads * head_dim)
    ("kv", None),  # per-head features
    ("vocab", None),
    ("patch", None),  # flattened patch (pt * ph * pw * C_in) or output patch
    ("modulation", None),  # the 6 (or 2) AdaLN modulation slots
    ("norm", None),
    ("text_embed", None),  # text-encoder output width (input of the text projection)
    ("freq", None),  # sinusoidal timestep features
    ("lora", None),  # LoRA rank (camjax.models.lora)
)

# Logical activation axes -> mesh axes.
ACTIVATION_RULES: tuple[tuple[str, Any], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_seq", "context"),  # video tokens
    ("act_text", None),  # text tokens
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("act_mlp", "tensor"),
)


class ShardingError(CamjaxError):
  """A mesh or a sharding rule that cannot be applied (unknown axis, size that does not divide)."""


@dataclasses.dataclass(frozen=True)
class Rules:
  """The two rule tables (logical name -> mesh axis, a tuple of mesh axes, or None)."""

  params: tuple[tuple[str, Any], ...] = PARAM_RULES
  activations: tuple[tuple[str, Any], ...] = ACTIVATION_RULES

  @classmethod
  def create(cls, params: Mapping[str, Any] | Sequence | None = None,
             activations: Mapping[str, Any] | Sequence | None = None) -> Rules:
    """Default tables with entries overridden by `params` / `activations` (mappings or (name, axes) pairs)."""

    def merged(base, override):
      if override is None:
        return base
      override = dict(override.items() if isinstance(override, Mapping) else override)
      out = [(k, override.pop(k)) if k in override else (k, v) for k, v in base]
      return tuple(out) + tuple(override.items())

    return cls(merged(PARAM_RULES, params), merged(ACTIVATION_RULES, activations))


_STATE = {"rules": Rules()}


def make_mesh(shape: Mapping[str, int] | Sequence[int] | None = None, devices=None) -> jax.sharding.Mesh:
  """A `Mesh` with the four camjax axes (`data, fsdp, context, tensor`), all `AxisType.Auto`.

  Args:
    shape: `{"data": 2, "fsdp": 4}` (missing axes get size 1; one axis may be -1 = "all remaining devices"), or a
      4-tuple in `MESH_AXES` order. Default: everything on `fsdp`.
    devices: devices to use (default `jax.devices()`, i.e. all processes' devices).

  Raises:
    ShardingError: unknown axis names, or sizes whose product is not the device count.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if shape is None:
    shape = {"fsdp": -1}
  if not isinstance(shape, Mapping):
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
      raise ShardingError(f"mesh shape {shape} must have {len(MESH_AXES)} entries, one per axis {MESH_AXES}")
    shape = dict(zip(MESH_AXES, shape))
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ShardingError(f"unknown mesh axes {sorted(unknown)}; camjax meshes have {MESH_AXES}")
  sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ShardingError(f"only one mesh axis may be -1, got {free}")
  known = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if n % known:
      raise ShardingError(f"mesh {dict(shape)}: {n} devices are not divisible by {known}")
    sizes[free[0]] = n // known
  if math.prod(sizes.values()) != n:
    raise ShardingError(f"mesh {sizes} has {math.prod(sizes.values())} slots but there are {n} devices")
  dims = tuple(sizes[a] for a in MESH_AXES)
  return jax.make_mesh(dims, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


@contextlib.contextmanager
def use_mesh(mesh: jax.sharding.Mesh | None, rules: Rules | None = None):
  """`jax.set_mesh(mesh)` plus the rule tables used by `constrain` and `param_shardings`.

  Without an active mesh `constrain` is a no-op, so the same model code runs unsharded (tests, single device).
  """
  previous = _STATE["rules"]
  _STATE["rules"] = rules or previous
  try:
    if mesh is None:
      yield None
    else:
      with jax.set_mesh(mesh):
        yield mesh
  finally:
    _STATE["rules"] = previous


def current_rules() -> Rules:
  return _STATE["rules"]


def current_mesh():
  """The mesh set by `use_mesh` / `jax.set_mesh`, or None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return None
  return mesh


def logical_to_spec(names: Sequence[str | None], rules: Sequence[tuple[str, Any]],
                    mesh_axes: Mapping[str, int] | None = None) -> PartitionSpec:
  """Map logical axis names to a `PartitionSpec` through `rules`.

  A mesh axis is used at most once (the first dimension that asks for it gets it); mesh axes of size 1 or absent from
  `mesh_axes` are dropped. Unknown logical names raise `ShardingError` (a typo would otherwise replicate silently).
  """
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name in names:
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise ShardingError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
    target = table[name]
    axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
    keep = tuple(a for a in axes if a not in used and (mesh_axes is None or mesh_axes.get(a, 1) > 1))
    used.update(keep)
    spec.append(None if not keep else (keep[0] if len(keep) == 1 else keep))
  return PartitionSpec(*spec)


def _check_divisible(shape, spec: PartitionSpec, mesh_axes: Mapping[str, int], what: str):
  for dim, (size, axes) in enumerate(zip(shape, spec)):
    if axes is None:
      continue
    axes = (axes,) if isinstance(axes, str) else axes
    n = math.prod(mesh_axes[a] for a in axes)
    if size % n:
      raise ShardingError(f"{what}: dimension {dim} of shape {tuple(shape)} (size {size}) is not divisible by mesh "
                          f"axes {axes} (size {n}); change the mesh or the model size")


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """`with_sharding_constraint` by logical activation names; a no-op without an active mesh.

  Raises:
    ShardingError: if `len(names) != x.ndim` or a sharded dimension does not divide its mesh axes.
  """
  if len(names) != x.ndim:
    raise ShardingError(f"constrain: {len(names)} names {tuple(names)} for an array of shape {x.shape}")
  mesh = current_mesh()
  if mesh is None:
    return x
  spec = logical_to_spec(names, current_rules().activations, dict(mesh.shape))
  _check_divisible(x.shape, spec, dict(mesh.shape), f"activation {tuple(names)}")
  return jax.lax.with_sharding_constraint(x, spec)


def variable_names(variable: nnx.Variable) -> tuple[str | None, ...] | None:
  """The logical axis names stored on an NNX variable (`nnx.with_partitioning`), or None."""
  names = variable.get_metadata().get("out_sharding")
  return tuple(names) if names else None


def param_specs(state, mesh: jax.sharding.Mesh, rules: Rules | None = None):
  """PartitionSpecs for every variable of an NNX state (abstract or concrete), from their logical names.

  Raises:
    ShardingError: a variable with logical names whose sharded dimension does not divide the mesh.
  """
  rules = rules or current_rules()
  mesh_axes = dict(mesh.shape)

  def spec_of(path, v):
    names = variable_names(v) if isinstance(v, nnx.Variable) else None
    if names is None:
      return PartitionSpec()
    if len(names) != len(v.shape):
      raise ShardingError(f"parameter {jax.tree_util.keystr(path)}: names {names} for shape {v.shape}")
    spec = logical_to_spec(names, rules.params, mesh_axes)
    _check_divisible(v.shape, spec, mesh_axes, f"parameter {jax.tree_util.keystr(path)} {names}")
    return spec

  return jax.tree_util.tree_map_with_path(spec_of, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def param_shardings(state, mesh: jax.sharding.Mesh, rules: Rules | None = None):
  """`NamedSharding`s for every variable of an NNX state (see `param_specs`)."""
  specs = param_specs(state, mesh, rules)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def shard_params(state, mesh: jax.sharding.Mesh, rules: Rules | None = None):
  """Place an NNX state onto `mesh` with its logical shardings (a `device_put`)."""
  return jax.device_put(state, param_shardings(state, mesh, rules))


def abstract_module(make_module):
  """`(graphdef, abstract state)` of the module `make_module()` builds, without allocating parameters.

  (`nnx.eval_shape` would try to turn the logical names into mesh shardings when a mesh is active; tracing with
  `jax.eval_shape` keeps them as metadata for `param_shardings`.)
  """
  out = {}

  def build():
    graphdef, state = nnx.split(make_module())
    out["graphdef"] = graphdef
    return state

  state = jax.eval_shape(build)
  return out["graphdef"], state


def create_sharded(make_module, mesh: jax.sharding.Mesh | None, rules: Rules | None = None):
  """Build an NNX module whose parameters are created directly in their shardings.

  `make_module()` builds the module (including its `nnx.Rngs`). With a mesh, the module is first traced abstractly
  (`nnx.eval_shape`), the shardings are derived from the logical names, and the real initialisation runs under
  `jax.jit(out_shardings=...)`, so no host ever holds the full unsharded parameters. Without a mesh it simply calls
  `make_module()`.
  """
  if mesh is None:
    return make_module()
  graphdef, abstract_state = abstract_module(make_module)
  with use_mesh(mesh, rules):
    shardings = param_shardings(abstract_state, mesh, rules)

    def init():
      return nnx.state(make_module())

    state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def describe(state) -> dict[str, str]:
  """`{path: "shape dtype spec"}` for every array of a state: for logs and golden tests."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
    value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
    sharding = getattr(value, "sharding", None)
    spec = sharding.spec if isinstance(sharding, NamedSharding) else None
    out[jax.tree_util.keystr(path)] = f"{tuple(value.shape)} {np.dtype(value.dtype).name} {spec}"
  return out
