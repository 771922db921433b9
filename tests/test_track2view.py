"""Track2View as a method: its pair data, LoRA training leaves the base bit-identical."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from camjax import methods, sharding, train

ROOT = Path(__file__).resolve().parents[1]


def _config(variant="test"):
  spec = importlib.util.spec_from_file_location("track2view", ROOT / "configs" / "track2view.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def test_rendered_pairs_are_keyed_and_reused(tmp_path):
  """The main job's pairs are rendered once into a folder named by what produced them and reused, not re-rendered
  (the main job itself runs in tests/test_train.py's one-step test of every CPU variant)."""
  config = _config()
  method = methods.get("track2view")
  folder = method.prepare_data(config, tmp_path)["main"]
  assert folder.parent == tmp_path / "data" and folder.name.startswith("pairs_3x5f32px_q8_seed0_")
  stamp = (folder / "pairs.json").stat().st_mtime_ns
  assert method.prepare_data(config, tmp_path)["main"] == folder
  assert (folder / "pairs.json").stat().st_mtime_ns == stamp
  config.data.num_queries = 4
  assert method.prepare_data(config, tmp_path)["main"] != folder
  host = next(iter(method.pipeline(config, {"main": folder}, training=True, batch_size=2, start_index=0, seed=0,
                                   process_index=0, process_count=1)))
  assert host["src_frames"].shape == (2, 5, 32, 32, 3) and host["src_xy"].shape == (2, 8, 5, 2)


def test_lora_training_updates_only_lora_and_the_conditioner():
  """`model.lora_rank > 0`: the optimiser holds LoRA + track-conditioner parameters only, and after training steps
  every other DiT parameter is bit-identical."""
  config = _config()
  config.model.update(lora_rank=2, lora_alpha=2.0)
  config.optimizer.update(lr=1e-2, warmup_init_lr=1e-2, weight_decay=0.0)  # only gradients move parameters
  mesh = sharding.make_mesh(dict(config.mesh))
  from camjax.data import pairs  # pylint: disable=import-outside-toplevel
  with sharding.use_mesh(mesh):
    model = methods.build_model(config, mesh)
    names = lambda state: {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(state)}
    trained = names(model.params)
    assert trained and all("/lora/" in n or n.startswith("tracks/") for n in trained)
    assert any(n.startswith("tracks/") for n in trained) and any("/lora/" in n for n in trained)
    assert not any("/lora/" in n or n.startswith("tracks/") for n in names(model.frozen))
    # A pretrained base has a nonzero output layer (camjax's random init zeroes it, which would stop every gradient).
    flat = nnx.to_flat_state(model.frozen)
    for key, var in flat:
      if "/".join(map(str, key)) == "dit/proj_out/kernel":
        var.set_value(jax.random.normal(jax.random.key(1), var.get_value().shape) * 0.02)
    model.frozen = nnx.from_flat_state(flat)
    tx = train.make_optimizer(config)
    state = train.train_state(model, tx, config)
    n_opt = sum(x.size for x in jax.tree.leaves(state["opt_state"]) if hasattr(x, "size") and x.ndim)
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    assert n_opt == 2 * n_params  # Adam's two moments of the trainable parameters, nothing of the frozen base
    frozen_before = jax.tree.map(np.array, state["frozen"])
    params_before = jax.tree.map(np.array, state["params"])
    source = pairs.PairedSyntheticSource(2, seed=0, num_frames=5, height=32, width=32, num_queries=8)
    host = next(iter(pairs.make_pair_pipeline(source, batch_size=2, shuffle=False, num_epochs=1, process_index=0,
                                              process_count=1)))
    batch = train.to_global(methods.host_batch(host, model.tokenizer, model.method, config), mesh)
    step = jax.jit(lambda s, b: train.train_step(s, b, model.static, tx), donate_argnums=(0,))
    for _ in range(3):
      state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
  for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(state["frozen"])):
    np.testing.assert_array_equal(a, np.asarray(b))
  changed = [not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(params_before),
                                                                  jax.tree.leaves(state["params"]))]
  assert all(changed), [k for k, c in zip(sorted(trained), changed) if not c]
