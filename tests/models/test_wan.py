"""WanDiT behaviour: camera patchify, condition mask, null camera, remat/scan equivalence, errors, text encoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from camjax.diffusion import camera_text_cfg
from camjax.models import ModelError, WanDiT, preset
from camjax.models.text import ByteTextEncoder, drop_text, null_text
from camjax.models.wan import rope_angles, rope_axis_dims, timestep_embedding


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, latents, timesteps, text, text_mask=None, camera=None, cond_mask=None):
  return nnx.merge(graphdef, state)(latents, timesteps, text, text_mask, camera=camera, cond_mask=cond_mask)


def run(model, *args, **kw):
  """A jitted forward (eager NNX calls dispatch op by op and are slow on CPU)."""
  return _apply(*nnx.split(model), *args, **kw)


def _toy(**kw):
  cfg = preset("toy", in_channels=4, out_channels=4, text_dim=16, **kw)
  model = WanDiT(cfg, rngs=nnx.Rngs(0))
  # WAN zero-initialises proj_out; randomise it so outputs depend on the tokens.
  model.proj_out.kernel[...] = 0.05 * jax.random.normal(jax.random.key(9), model.proj_out.kernel.shape)
  return model


def _batch(seed=0, b=2, t=3, h=4, w=6):
  k = jax.random.split(jax.random.key(seed), 4)
  latents = jax.random.normal(k[0], (b, t, h, w, 4))
  timesteps = jax.random.uniform(k[1], (b,)) * 1000
  text = jax.random.normal(k[2], (b, 5, 16))
  camera = jax.random.normal(k[3], (b, t, h, w, 6))
  return latents, timesteps, text, camera


def test_camera_patchify_zero_init_then_learns():
  model = _toy()
  latents, timesteps, text, camera = _batch()
  base = run(model, latents, timesteps, text)
  np.testing.assert_array_equal(run(model, latents, timesteps, text, camera=camera), base)  # zero init: unchanged
  np.testing.assert_array_equal(run(model, latents, timesteps, text, camera=jnp.zeros_like(camera)), base)

  graphdef, state = nnx.split(model)
  target = jnp.tanh(camera[..., :4])  # a camera-dependent target

  def loss_fn(state):
    return jnp.mean((nnx.merge(graphdef, state)(latents, timesteps, text, camera=camera) - target) ** 2)

  tx = optax.adam(1e-2)
  grads = jax.jit(jax.grad(loss_fn))(state)
  assert float(jnp.abs(grads["camera_patchify"]["proj"]["kernel"][...]).max()) > 0
  updates, _ = tx.update(grads, tx.init(state), state)
  model = nnx.merge(graphdef, optax.apply_updates(state, updates))
  with_cam = run(model, latents, timesteps, text, camera=camera)
  assert float(jnp.abs(with_cam - run(model, latents, timesteps, text)).max()) > 1e-4
  # Zero-initialised, the camera patchify leaves no trace on the null camera after a step either.
  np.testing.assert_array_equal(run(model, latents, timesteps, text, camera=jnp.zeros_like(camera)),
                                run(model, latents, timesteps, text))


def test_null_camera_equals_no_camera_after_training():
  """The camera patchify has no bias: after ANY parameter update the all-zero Plücker map still adds nothing."""
  model = _toy()
  latents, timesteps, text, camera = _batch(1)
  graphdef, state = nnx.split(model)
  # Move every parameter away from its initialisation (a bias would now be non-zero), then take an Adam step on a
  # loss that sees both the camera and the null camera.
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  state = jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  target = jnp.tanh(camera[..., :4])

  def loss_fn(state):
    m = nnx.merge(graphdef, state)
    with_cam = m(latents, timesteps, text, camera=camera)
    null_cam = m(latents, timesteps, text, camera=jnp.zeros_like(camera))
    return jnp.mean((with_cam - target) ** 2) + jnp.mean((null_cam - target[::-1]) ** 2)

  tx = optax.adam(1e-2)
  grads = jax.jit(jax.grad(loss_fn))(state)
  updates, _ = tx.update(grads, tx.init(state), state)
  model = nnx.merge(graphdef, optax.apply_updates(state, updates))
  assert float(jnp.abs(model.camera_patchify.proj.kernel[...]).min()) > 0  # every camera weight moved off zero
  zero = jnp.zeros_like(camera)
  np.testing.assert_array_equal(model.camera_patchify(zero), 0)  # null camera tokens are exactly zero
  np.testing.assert_allclose(run(model, latents, timesteps, text, camera=zero), run(model, latents, timesteps, text),
                             atol=1e-6, rtol=0)
  assert float(jnp.abs(run(model, latents, timesteps, text, camera=camera)
                       - run(model, latents, timesteps, text)).max()) > 1e-3
  assert "bias" not in nnx.state(model.camera_patchify)["proj"]


def test_cond_mask_channel():
  model = _toy(cond_mask=True)
  latents, timesteps, text, _ = _batch(2)
  zero = jnp.zeros(latents.shape[:-1] + (1,))
  np.testing.assert_array_equal(run(model, latents, timesteps, text, cond_mask=zero), run(model, latents, timesteps, text))
  model.patch_embedding.proj.kernel[...] = jax.random.normal(jax.random.key(4), model.patch_embedding.proj.kernel.shape)
  assert float(jnp.abs(run(model, latents, timesteps, text, cond_mask=zero + 1)
                       - run(model, latents, timesteps, text, cond_mask=zero)).max()) > 1e-4


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_scan_and_remat_do_not_change_results(remat):
  latents, timesteps, text, camera = _batch(3)
  ref = _toy()
  graphdef, state = nnx.split(ref)
  other = _toy(scan_layers=False, remat=remat)
  g2, _ = nnx.split(other)

  def loss(g, s):
    return jnp.mean(nnx.merge(g, s)(latents, timesteps, text, camera=camera) ** 2)

  l1, g1 = jax.jit(jax.value_and_grad(lambda s: loss(graphdef, s)))(state)
  l2, gg2 = jax.jit(jax.value_and_grad(lambda s: loss(g2, s)))(state)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(gg2)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bf16_compute_close_to_fp32():
  latents, timesteps, text, camera = _batch(4)
  f32 = _toy()
  bf16 = _toy(dtype="bfloat16")
  nnx.update(bf16, nnx.state(f32))
  out = run(bf16, latents, timesteps, text)
  assert out.dtype == jnp.bfloat16
  ref = run(f32, latents, timesteps, text)
  assert float(jnp.abs(out.astype(jnp.float32) - ref).max()) < 0.05 * float(jnp.abs(ref).max())


def test_bad_shapes_raise_model_error():
  model = _toy()
  latents, timesteps, text, camera = _batch()
  with pytest.raises(ModelError, match="divisible by the patch size"):
    run(model, latents[:, :, :3], timesteps, text)
  with pytest.raises(ModelError, match="latent grid"):
    run(model, latents, timesteps, text, camera=camera[:, :2])
  with pytest.raises(ModelError, match="cond_mask=False"):
    run(model, latents, timesteps, text, cond_mask=latents[..., :1])
  with pytest.raises(ModelError, match="text must be"):
    run(model, latents, timesteps, text[..., :8])
  with pytest.raises(ModelError, match="head_dim"):
    preset("toy", head_dim=5)


def test_rope_and_timestep_embedding():
  assert rope_axis_dims(128) == (44, 42, 42)  # WAN 2.1's split of a 128-wide head
  angles = rope_angles((2, 3, 4), 12)
  assert angles.shape == (24, 6)
  # token (f=1, i=2, j=3) is the last one; the first pair of each axis rotates by the position itself.
  t_dim, h_dim, _ = rope_axis_dims(12)
  np.testing.assert_allclose(angles[-1, [0, t_dim // 2, t_dim // 2 + h_dim // 2]], [1, 2, 3])
  emb = timestep_embedding(jnp.array([0.0, 500.0]), 8)
  np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])  # cos first
  np.testing.assert_allclose(emb[1, 0], np.cos(500.0), rtol=1e-5)


def test_byte_text_encoder():
  enc = ByteTextEncoder(width=16, num_layers=1, num_heads=2, max_length=24, rngs=nnx.Rngs(0))
  emb, mask = enc.encode(["a camera pans left", "orbit"])
  assert emb.shape == (2, 24, 16) and mask.shape == (2, 24)
  assert float(jnp.abs(emb[1, int(mask[1].sum()):]).max()) == 0  # zero at padding
  other, _ = enc.encode(["a camera pans right", "orbit"])
  assert float(jnp.abs(other[0] - emb[0]).max()) > 1e-4  # the caption matters
  np.testing.assert_allclose(other[1], emb[1], atol=1e-6)  # other rows do not leak across the batch
  ids, m = enc.tokenize(["orbit"])
  ids2 = np.where(m, ids, 7)  # garbage in padded positions is masked out
  np.testing.assert_allclose(enc(jnp.asarray(ids2), jnp.asarray(m))[0, :int(m.sum())], emb[1, :int(m.sum())],
                             atol=1e-5)
  text, tmask = drop_text(jax.random.key(0), emb, mask, drop_prob=1.0)
  z, zm = null_text(emb.shape)
  np.testing.assert_array_equal(text, z)
  np.testing.assert_array_equal(tmask, zm)


def test_batched_three_way_cfg_equals_separate_forwards():
  """CameraCtrl II eq. 3 from ONE batched forward equals the formula over three separate forwards of the real DiT."""
  model = _toy()
  model.camera_patchify.proj.kernel[...] = jax.random.normal(jax.random.key(5), model.camera_patchify.proj.kernel.shape)
  latents, timesteps, text, camera = _batch(5)
  text_mask = jnp.arange(5)[None] < jnp.array([[5], [3]])
  null_text, null_mask = null_text_like(text)
  calls = []

  def model_fn(latents, timesteps, text, text_mask, camera):
    calls.append(latents.shape[0])
    return run(model, latents, timesteps, text, text_mask, camera=camera)

  guided = camera_text_cfg(model_fn, latents=latents, timesteps=timesteps, text=text, text_mask=text_mask,
                           null_text=null_text, null_text_mask=null_mask, camera=camera, w_text=7.5, w_cam=8.0)
  assert calls == [6]  # one forward of batch 3 B
  zero = jnp.zeros_like(camera)
  e_null = run(model, latents, timesteps, null_text, null_mask, camera=zero)
  e_text = run(model, latents, timesteps, text, text_mask, camera=zero)
  e_full = run(model, latents, timesteps, text, text_mask, camera=camera)
  expected = e_null + 7.5 * (e_text - e_null) + 8.0 * (e_full - e_text)
  assert float(jnp.abs(e_full - e_text).max()) > 1e-3 and float(jnp.abs(e_text - e_null).max()) > 1e-3
  np.testing.assert_allclose(guided, expected, atol=2e-4 * float(jnp.abs(expected).max()))


def null_text_like(text):
  return null_text(text.shape)
