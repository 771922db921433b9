"""The paper-scale memory plan (benchmarks/memory.py): the analytic parameter count against the real module, per-device
bytes read from the real shardings, and one ahead-of-time check against XLA on 8 fake CPU devices."""

import importlib.util
import math
import sys
from pathlib import Path

import jax
import pytest
from flax import nnx

from camjax import sharding
from camjax.models import WanDiT, preset

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def _load_memory():
  spec = importlib.util.spec_from_file_location("camjax_benchmark_memory", ROOT / "benchmarks" / "memory.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
  spec.loader.exec_module(module)
  return module


memory = _load_memory()


def _small_wan(**model):
  """The paper-scale variant's config (precomputed latents and text, bf16, remat, fsdp) at toy width: D = 64."""
  return memory.load_config("wan1_3b", num_heads=2, head_dim=32, ffn_dim=64, num_layers=2, **model)


@pytest.mark.parametrize("extras", [
    {},
    dict(extra_in_channels=1, cross_streams=(("cam", 24),), extra_kv=True, lora_rank=3,
         lora_targets=("attn1.to_q", "attn2.to_out", "ffn.proj_in", "ffn.proj_out")),
], ids=["plain", "extensions"])
def test_param_count_equals_abstract_module(extras):
  cfg = preset("toy", **extras)
  _, state = sharding.abstract_module(lambda: WanDiT(cfg, rngs=nnx.Rngs(0)))
  assert all(isinstance(v, nnx.Param) for v in _variables(state))  # nothing but parameters in the module
  leaves = memory.count_leaves(state)
  assert memory.wan_param_count(cfg) == leaves
  # one scanned block, read from the stacked leaves (the FSDP transient's size), matches its formula
  assert memory.block_params(state) == memory.block_param_count(cfg) > 0


def test_generator_count_includes_the_camera_patchify():
  config = _small_wan()
  assert memory.generator_param_count(config) == memory.count_leaves(memory.abstract_model(config).params)


def test_device_bytes_follow_the_sharding_rules():
  config = _small_wan()
  params = memory.abstract_model(config).params
  sharded = replicated = 0
  for leaf in _variables(params):
    size = math.prod(leaf.shape) * 4  # float32 master weights
    if "embed" in (sharding.variable_names(leaf) or ()):
      sharded += size
    else:
      replicated += size
  assert replicated < 0.05 * sharded  # norms and heads / mlp biases only

  state = memory.state_bytes(config, memory.abstract_mesh({"fsdp": 8}))
  assert state.params == sharded // 8 + replicated  # embed -> fsdp: each such leaf holds 1/8 on a device
  assert state.grads == state.params
  assert state.opt_sharded == 2 * state.params + 2 * 4  # AdamW mu, nu + two int32 counts
  assert state.ema == 0 and state.opt_built is None  # ema_decay 0; no devices asked for the as-built layout
  assert memory.state_bytes(config, memory.abstract_mesh({"fsdp": 1})).params == sharded + replicated
  unsharded = memory.state_bytes(config, memory.abstract_mesh({"fsdp": 8}),
                                 rules=sharding.Rules.create(params={"embed": None}))
  assert unsharded.params == sharded + replicated


def _variables(state) -> list[nnx.Variable]:
  return jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def test_saved_bytes_formula_and_batch_arithmetic():
  cfg = preset("wan14b", in_channels=16, out_channels=16)
  n, d = 32760, 5120
  assert memory.saved_bytes(cfg, n, 512) == 40 * n * d * 2 + 3 * n * d * 4 + n * d * 2  # full remat: block inputs
  with pytest.raises(memory.MemoryPlanError, match="remat 'none'"):
    memory.saved_bytes(cfg.replace(remat="none"), n, 512)
  state = memory.StateBytes(param_count=0, params=GiB, grads=GiB, opt_sharded=GiB, opt_built=None, ema=0, transient=0)
  act = memory.Activations(tokens=n, saved=GiB, saved_traced=GiB, working=GiB, attention=0, inputs=0,
                           attention_impl="cudnn")
  mesh = memory.MeshPlan("m", memory.Device("d", 10.0, "cudnn"), (("fsdp", 8),), "")
  row = memory.plan_row("v", mesh, state, act, headroom=0.1)
  assert row["max_batch"] == {"sharded": 3}  # (9 GiB budget - 3 GiB state) / 2 GiB per sample


def test_aot_check_agrees_with_xla():
  reduced = dict(num_layers=1, frames=5, height=64, width=64, num_heads=2, head_dim=32, ffn_dim=64)
  [result] = memory.run_aot_subprocess(["wan1_3b"], reduced, temp=False, layouts=("built",))
  errors = memory.aot_errors(result)
  assert list(errors) == ["built"]
  assert abs(errors["built"]) <= memory.AOT_TOLERANCE, memory.format_aot(result)
  compiled, analytic = result["compiled"]["built_b1"], result["analytic"]
  assert compiled["alias"] > 0  # the state is donated
  assert analytic["ema"] == analytic["params"] > 0  # the check switches EMA on
  assert analytic["opt_built"] >= analytic["opt_sharded"] == 2 * analytic["params"] + 8
