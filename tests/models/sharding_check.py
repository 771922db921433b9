"""Run by test_sharding.py in a subprocess with 8 fake CPU devices: train steps of the toy DiT on several meshes.

The DiT has every camjax extension (an extra input channel, a cross stream, extra keys/values, LoRA) and gets every
generic input, so their parameters and activations are sharded too. The loss is flow matching written out here
(`x_t = (1 - sigma) x_0 + sigma eps`, target `eps - x_0`, timesteps `1000 sigma`) to test the model alone.

Every model, the single-device reference included, is initialised under one jit (`WanDiT.create` with a mesh; eager
initialisation compiles every op separately). The run is compile-bound: test_sharding.py passes fast-compile XLA flags
in `XLA_FLAGS`, which this script keeps.

Prints one JSON line: {mesh_name: {"losses": [...], "specs": {param path: spec}}}.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402

from camjax import sharding  # noqa: E402
from camjax.models import WanDiT, preset  # noqa: E402

MESHES = {
    "single": None,
    "dp2_fsdp2_tp2": {"data": 2, "fsdp": 2, "tensor": 2},
    "context8": {"data": 1, "context": 8},
}


def batch():
  """The batch (NumPy: eager jax.random ops would each compile)."""
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  b, t, h, w = 4, 4, 8, 8
  n, d = t * (h // 2) * (w // 2), 64
  return dict(latents=normal(b, t, h, w, 4), text=normal(b, 8, 16), extra_in=normal(b, t, h, w, 1),
              noise=normal(b, t, h, w, 4), sigma=rng.uniform(size=(b,)).astype(np.float32),
              token_map=0.1 * normal(b, n, d), cam=normal(b, 6, 8), extra_kv=normal(b, 2, 12, d))


def run(name, mesh_shape, remat):
  config = preset("toy", in_channels=4, out_channels=4, text_dim=16, remat=remat, extra_in_channels=1,
                  cross_streams=(("cam", 8),), extra_kv=True, lora_rank=2)
  mesh = None if mesh_shape is None else sharding.make_mesh(mesh_shape)
  if mesh is None:  # the reference: the values `WanDiT.create(config, seed=0)` gives, initialised under one jit
    make = lambda: WanDiT(config, rngs=nnx.Rngs(0))
    graphdef, _ = sharding.abstract_module(make)
    model = nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()))())
  else:
    model = WanDiT.create(config, seed=0, mesh=mesh)
  graphdef, params = nnx.split(model)
  # Move the zero-initialised parameters (gates, LoRA B, output projection) so every parameter gets a gradient (in
  # NumPy: an eager add compiles once per parameter shape and sharding).
  params = jax.tree.map(lambda x: np.asarray(x) + np.float32(0.01), params)
  tx = optax.adamw(1e-3)
  data = batch()

  def loss_fn(params, data):
    model = nnx.merge(graphdef, params)
    sigma = data["sigma"][:, None, None, None, None]
    x_t = (1 - sigma) * data["latents"] + sigma * data["noise"]
    extra_kv = jnp.swapaxes(data["extra_kv"], 0, 1)  # batch-major in the data, layer-major for the model
    pred = model(x_t, 1000 * data["sigma"], data["text"], extra_in=data["extra_in"], token_map=data["token_map"],
                 cross={"cam": data["cam"]}, extra_kv=extra_kv)
    return jnp.mean((pred - (data["noise"] - data["latents"])) ** 2)

  def step(params, opt_state, data):
    loss, grads = jax.value_and_grad(loss_fn)(params, data)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  with sharding.use_mesh(mesh):
    if mesh is None:
      params, data = jax.device_put((params, data))
    else:
      param_sh = sharding.param_shardings(params, mesh)
      params = jax.device_put(params, param_sh)
      data_sh = {k: NamedSharding(mesh, sharding.logical_to_spec(
          ("act_batch",) + (None,) * (v.ndim - 1), sharding.current_rules().activations, dict(mesh.shape)))
          for k, v in data.items()}
      data = jax.device_put(data, data_sh)
    opt_state = tx.init(params)
    jstep = jax.jit(step, donate_argnums=(0, 1))
    losses = []
    for _ in range(3):
      params, opt_state, loss = jstep(params, opt_state, data)
      losses.append(float(loss))
  specs = {jax.tree_util.keystr(path): str(tuple(leaf.sharding.spec)) if mesh is not None else "()"
           for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  return {"losses": losses, "specs": specs}


if __name__ == "__main__":
  remat = sys.argv[1] if len(sys.argv) > 1 else "none"
  assert len(jax.devices()) == 8, jax.devices()
  print(json.dumps({name: run(name, shape, remat) for name, shape in MESHES.items()}))
