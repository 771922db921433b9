"""LoRA on the WAN DiT: zero-initialised, trains alone under an optimizer over the LoRA parameters only, merges.

Compile-bound on CPU: models are initialised under one jit, data comes from NumPy, and test programs compile with
fast-compile XLA options (`jit`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from camjax.models import LORA_TARGETS, ModelError, WanDiT, lora, preset
from camjax.xla_flags import fast_jit


jit = fast_jit  # small, compile-bound test programs: camjax.xla_flags.fast_compile_options


def _config(**kw):
  return preset("toy", in_channels=4, out_channels=4, text_dim=16, **kw)


def _abstract(config):
  """`WanDiT(config)` traced abstractly: its structure, no parameter computed."""
  return nnx.eval_shape(lambda: WanDiT(config, rngs=nnx.Rngs(0)))


@functools.cache
def _init_state(config):
  """`nnx.state(WanDiT(config, rngs=nnx.Rngs(0)))`, initialised under one jit (eager initialisation compiles every op
  separately); cached (arrays are immutable)."""
  return jit(lambda: nnx.state(WanDiT(config, rngs=nnx.Rngs(0))))()


def _toy(**kw):
  """A new seeded toy DiT (its own Variables) with a random output projection."""
  config = _config(**kw)
  model = nnx.merge(nnx.split(_abstract(config))[0], jax.tree.map(lambda x: x, _init_state(config)))
  rng = np.random.default_rng(9)
  model.proj_out.kernel[...] = jnp.asarray(0.05 * rng.standard_normal(model.proj_out.kernel.shape), jnp.float32)
  return model


def _batch():
  rng = np.random.default_rng(0)
  return (rng.standard_normal((2, 3, 4, 6, 4)).astype(np.float32), (rng.uniform(size=(2,)) * 1000).astype(np.float32),
          rng.standard_normal((2, 5, 16)).astype(np.float32), rng.standard_normal((2, 3, 4, 6, 4)).astype(np.float32))


def _forward(model, latents, timesteps, text):
  graphdef, state = nnx.split(model)
  return _apply(graphdef, state, latents, timesteps, text)


@functools.partial(jit, static_argnums=0)
def _apply(graphdef, state, latents, timesteps, text):
  return nnx.merge(graphdef, state)(latents, timesteps, text)


def test_lora_params_sit_on_every_target_and_start_at_the_base_model():
  base, model = _toy(), _toy(lora_rank=2, lora_alpha=4.0)
  layers = lora.adapted_layers(model)
  assert len(layers) == len(LORA_TARGETS) == 10
  # Per stacked layer: A [layers, in, 2], B [layers, 2, out]; width 64, FFN 256.
  expected = 2 * sum(2 * (i + o) for i, o in [(64, 64)] * 8 + [(64, 256), (256, 64)])
  assert lora.num_params(model) == expected
  a = model.blocks.ffn.proj_in.lora.a
  assert isinstance(a, lora.LoraParam) and a.shape == (2, 64, 2) and float(np.abs(np.asarray(a[...])).min()) > 0
  np.testing.assert_array_equal(model.blocks.ffn.proj_in.lora.b[...], 0)
  latents, timesteps, text, _ = _batch()
  np.testing.assert_array_equal(_forward(model, latents, timesteps, text), _forward(base, latents, timesteps, text))
  only = _abstract(_config(lora_rank=3, lora_targets=("attn1.to_q", "ffn.proj_out")))
  assert sorted(".".join(map(str, p)) for p, _ in lora.adapted_layers(only)) == ["blocks.attn1.to_q",
                                                                                "blocks.ffn.proj_out"]
  with pytest.raises(ModelError, match="lora_targets"):
    preset("toy", lora_rank=2, lora_targets=("attn1.q",))


def test_lora_trains_alone_and_merges():
  model = _toy(lora_rank=2, lora_alpha=4.0)  # scale alpha / rank = 2: merge must apply it
  graphdef, lora_params, base_params = nnx.split(model, lora.trainable, ...)
  base_before = jax.tree.map(np.asarray, base_params)
  lora_before = jax.tree.map(np.asarray, lora_params)
  latents, timesteps, text, target = _batch()
  tx = optax.adamw(1e-2)
  opt_state = tx.init(lora_params)

  def loss_fn(lora_params, base_params):
    out = nnx.merge(graphdef, lora_params, base_params)(latents, timesteps, text)
    return jnp.mean((out - target) ** 2)

  @jit
  def step(lora_params, base_params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(lora_params, base_params)
    updates, opt_state = tx.update(grads, opt_state, lora_params)
    return optax.apply_updates(lora_params, updates), opt_state, loss

  losses = []
  for _ in range(3):
    lora_params, opt_state, loss = step(lora_params, base_params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < losses[0]

  # (a) base parameters bit-identical (the split keeps them out of the optimizer).
  for before, after in zip(jax.tree.leaves(base_before), jax.tree.leaves(base_params)):
    np.testing.assert_array_equal(before, after)
  # (b) optimizer state: LoRA-shaped leaves only (Adam's mu and nu), plus scalar step counts.
  lora_shapes = {x.shape for x in jax.tree.leaves(lora_params)}
  arrays = [x for x in jax.tree.leaves(opt_state) if x.ndim]
  assert all(x.shape in lora_shapes for x in arrays)
  assert sum(x.size for x in arrays) == 2 * lora.num_params(model)
  # (c) every B factor moved off zero.
  trained = nnx.merge(graphdef, lora_params, base_params)
  for path, layer in lora.adapted_layers(trained):
    assert float(np.abs(np.asarray(layer.lora.b[...])).max(axis=(1, 2)).min()) > 0, path
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(lora_before), jax.tree.leaves(lora_params)))

  # (d) merged kernels compute what the adapters computed; the input model is untouched.
  merged = lora.merge(trained)
  np.testing.assert_allclose(_forward(merged, latents, timesteps, text), _forward(trained, latents, timesteps, text),
                             atol=1e-5, rtol=0)
  for _, layer in lora.adapted_layers(merged):
    np.testing.assert_array_equal(layer.lora.b[...], 0)
  assert float(np.abs(np.asarray(trained.blocks.attn1.to_q.lora.b[...])).max()) > 0
  kernel, adapted = merged.blocks.attn1.to_q, trained.blocks.attn1.to_q
  assert kernel.lora.scale == 2.0
  np.testing.assert_allclose(kernel.kernel[...], np.asarray(adapted.kernel[...]) + kernel.lora.scale * np.matmul(
      np.asarray(adapted.lora.a[...]), np.asarray(adapted.lora.b[...])), atol=1e-6)
