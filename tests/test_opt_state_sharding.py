"""The optimiser state is sharded exactly like the parameters (AdamW's mu / nu replicated on every device made WAN 14B
not fit anywhere: docs/benchmarks.md, memory plan). 8 fake CPU devices in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import importlib.util, jax, optax
from camjax import methods, sharding, train
spec = importlib.util.spec_from_file_location("c", "configs/cameractrl2.py")
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
config = m.get_config("test")
mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "context": 1, "tensor": 1})
with sharding.use_mesh(mesh):
  model = methods.build_model(config, mesh)
  state = train.train_state(model, optax.adamw(1e-3), config)
adam = state["opt_state"][0]
for moments in (adam.mu, adam.nu):
  pairs = list(zip(jax.tree.leaves(model.params), jax.tree.leaves(moments)))
  assert all(p.sharding.is_equivalent_to(q.sharding, p.ndim) for p, q in pairs)
  assert sum(not q.sharding.is_fully_replicated for _, q in pairs) > len(pairs) // 3
print("OK")
'''


def test_adam_moments_are_sharded_like_the_parameters():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
