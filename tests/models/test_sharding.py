"""Sharding: rules, meshes, and the toy DiT (every camjax extension) trained on 8 fake CPU devices under several
meshes (golden specs)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from camjax import sharding

HERE = os.path.dirname(__file__)


# XLA options that make the check's small, compile-bound programs compile several times faster on CPU: no LLVM
# optimisation, XLA's classic fusion emitter (code generation only).
FAST_COMPILE = (("xla_backend_optimization_level", 0), ("xla_cpu_use_fusion_emitters", False))


def _fast_xla_flags() -> list[str]:
  """`FAST_COMPILE` as XLA_FLAGS, those this jaxlib knows only (probed here: an unknown flag aborts XLA)."""
  flags = []
  for name, value in FAST_COMPILE:
    try:
      jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(compiler_options={name: value})
      flags.append(f"--{name}={str(value).lower()}")
    except Exception:  # pylint: disable=broad-except
      pass
  return flags


@pytest.fixture(scope="module")
def eight_device_run():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *_fast_xla_flags()]).strip()
  proc = subprocess.run([sys.executable, os.path.join(HERE, "sharding_check.py")], capture_output=True, text=True,
                        env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_losses_match_single_device(eight_device_run):
  ref = eight_device_run["single"]["losses"]
  assert ref[2] < ref[0]  # the steps train
  for name in ("dp2_fsdp2_tp2", "context8"):
    for a, b in zip(eight_device_run[name]["losses"], ref):
      assert abs(a - b) <= 1e-5 * abs(b), (name, eight_device_run[name]["losses"], ref)


GOLDEN = {  # (data=2, fsdp=2, tensor=2): Megatron-style TP over heads / MLP, FSDP over the model width
    "['blocks']['attn1']['to_q']['kernel'].value": "(None, 'fsdp', 'tensor')",
    "['blocks']['attn1']['to_out']['kernel'].value": "(None, 'tensor', 'fsdp')",
    "['blocks']['attn1']['norm_q']['scale'].value": "(None, 'tensor')",
    "['blocks']['attn2']['to_k']['kernel'].value": "(None, 'fsdp', 'tensor')",
    "['blocks']['ffn']['proj_in']['kernel'].value": "(None, 'fsdp', 'tensor')",
    "['blocks']['ffn']['proj_out']['kernel'].value": "(None, 'tensor', 'fsdp')",
    "['blocks']['ffn']['proj_out']['bias'].value": "(None, 'fsdp')",
    "['blocks']['scale_shift_table'].value": "(None, None, None, 'fsdp')",
    "['blocks']['norm2']['scale'].value": "()",
    "['patch_embedding']['proj']['kernel'].value": "(None, 'fsdp')",
    "['blocks']['attn1']['to_q']['lora']['a'].value": "(None, 'fsdp')",
    "['blocks']['attn1']['to_q']['lora']['b'].value": "(None, None, 'tensor')",
    "['blocks']['ffn']['proj_out']['lora']['a'].value": "(None, 'tensor')",
    "['blocks']['cross']['cam']['attn']['to_k']['kernel'].value": "(None, 'fsdp', 'tensor')",
    "['blocks']['cross']['cam']['gate'].value": "(None, 'fsdp')",
    "['blocks']['extra_kv_gate'].value": "(None, 'tensor')",
    "['cross_embedders']['cam']['kernel'].value": "(None, 'fsdp')",
    "['text_embedder']['linear_1']['kernel'].value": "(None, 'fsdp')",
    "['time_proj']['kernel'].value": "('fsdp',)",
    "['proj_out']['kernel'].value": "('fsdp',)",
}


def test_golden_param_shardings(eight_device_run):
  specs = eight_device_run["dp2_fsdp2_tp2"]["specs"]
  for path, spec in GOLDEN.items():
    assert specs[path] == spec, (path, specs[path])
  # With only sequence parallelism every parameter is replicated.
  assert {s.replace("None", "").strip("(), ") for s in eight_device_run["context8"]["specs"].values()} == {""}


def test_logical_to_spec_rules():
  rules = sharding.PARAM_RULES
  assert sharding.logical_to_spec(("embed", "mlp"), rules) == P("fsdp", "tensor")
  # A mesh axis is used once: the second "embed" stays unsharded.
  assert sharding.logical_to_spec(("embed", "embed"), rules) == P("fsdp", None)
  assert sharding.logical_to_spec(("layers", "lora", "mlp"), rules) == P(None, None, "tensor")  # LoRA rank: replicated
  # Axes of size 1 are dropped.
  assert sharding.logical_to_spec(("embed", "mlp"), rules, {"fsdp": 1, "tensor": 4}) == P(None, "tensor")
  acts = sharding.ACTIVATION_RULES
  assert sharding.logical_to_spec(("act_batch", "act_seq"), acts) == P(("data", "fsdp"), "context")
  with pytest.raises(sharding.ShardingError, match="no rule"):
    sharding.logical_to_spec(("embd",), rules)
  custom = sharding.Rules.create(params={"mlp": None})
  assert sharding.logical_to_spec(("embed", "mlp"), custom.params) == P("fsdp", None)


def test_make_mesh_and_constrain():
  mesh = sharding.make_mesh({"fsdp": -1})
  assert dict(mesh.shape) == {"data": 1, "fsdp": len(jax.devices()), "context": 1, "tensor": 1}
  with pytest.raises(sharding.ShardingError, match="unknown mesh axes"):
    sharding.make_mesh({"model": 1})
  with pytest.raises(sharding.ShardingError, match="slots"):
    sharding.make_mesh({"data": len(jax.devices()) + 1})
  x = jnp.ones((2, 3))
  assert sharding.constrain(x, ("act_batch", None)) is x  # no mesh: a no-op
  with pytest.raises(sharding.ShardingError, match="names"):
    sharding.constrain(x, ("act_batch",))
