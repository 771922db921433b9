"""WanDiT behaviour: each generic input starts at zero and learns, scan/remat equivalence, config and shape errors,
RoPE, the text encoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax.models import ModelError, WanDiT, preset
from camjax.models.text import ByteTextEncoder, drop_text, null_text
from camjax.models.wan import (Attention, apply_rope, grid_positions, rope_angles, rope_angles_from_positions,
                               rope_axis_dims, timestep_embedding)

B, T, H, W = 2, 3, 4, 6
N = T * (H // 2) * (W // 2)  # tokens after the (1, 2, 2) patchify
D = 64  # toy width


@functools.partial(jax.jit, static_argnums=0, static_argnames="return_hidden")
def _apply(graphdef, state, args, kw, return_hidden=False):
  return nnx.merge(graphdef, state)(*args, **kw, return_hidden=return_hidden)


def run(model, *args, return_hidden=False, **kw):
  """A jitted forward (eager NNX calls dispatch op by op and are slow on CPU)."""
  return _apply(*nnx.split(model), args, kw, return_hidden=return_hidden)


def _toy(**kw):
  cfg = preset("toy", in_channels=4, out_channels=4, text_dim=16, **kw)
  model = WanDiT(cfg, rngs=nnx.Rngs(0))
  # WAN zero-initialises proj_out; randomise it so outputs depend on the tokens.
  model.proj_out.kernel[...] = 0.05 * jax.random.normal(jax.random.key(9), model.proj_out.kernel.shape)
  return model


def _batch(seed=0, b=B):
  k = jax.random.split(jax.random.key(seed), 3)
  latents = jax.random.normal(k[0], (b, T, H, W, 4))
  timesteps = jax.random.uniform(k[1], (b,)) * 1000
  text = jax.random.normal(k[2], (b, 5, 16))
  return latents, timesteps, text


def _normal(seed, *shape):
  return jax.random.normal(jax.random.key(seed), shape)


def _grads(model, inputs, seed=0, **fixed):
  """Gradients of a toy MSE loss w.r.t. (model state, `inputs`); `fixed` are further (non-differentiated) inputs."""
  graphdef, state = nnx.split(model)
  latents, timesteps, text = _batch(seed)
  target = jnp.tanh(latents[..., ::-1])

  def loss(state, inputs):
    return jnp.mean((nnx.merge(graphdef, state)(latents, timesteps, text, **inputs, **fixed) - target) ** 2)

  return jax.jit(jax.grad(loss, argnums=(0, 1)))(state, inputs)


def _nonzero(x) -> bool:
  return float(jnp.abs(x[...]).max()) > 0


def _perturb(model, scale=0.1, seed=3):
  """Every parameter moved off its initialisation (zero gates become non-zero)."""
  graphdef, state = nnx.split(model)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape)
                                                          for x, k in zip(leaves, keys)]))


# ----------------------------------------------------------------------------------------------------------------------
# Each generic input: zero-initialised (output unchanged) and reachable by gradients
# ----------------------------------------------------------------------------------------------------------------------


def test_token_map_zero_is_identity_and_nonzero_learns():
  model = _toy()
  latents, timesteps, text = _batch()
  base = run(model, latents, timesteps, text)
  np.testing.assert_array_equal(run(model, latents, timesteps, text, token_map=jnp.zeros((B, N, D))), base)
  tokens = 0.5 * _normal(1, B, N, D)
  assert float(jnp.abs(run(model, latents, timesteps, text, token_map=tokens) - base).max()) > 1e-3
  _, g = _grads(model, {"token_map": tokens})
  assert _nonzero(g["token_map"])


def test_extra_in_channels_follow_the_latent_channels_and_learn():
  """Zero kernel rows for the extra channel: the model equals the plain model (the latents, then the extra channel,
  per patch: the layout of the old condition-mask channel), whatever extra_in holds; the rows get gradients."""
  plain = _toy()
  model = _toy(extra_in_channels=1)
  kernel = model.patch_embedding.proj.kernel
  assert kernel.shape == (4 * 5, D)
  # Copy the plain model into the extended one, padding the patch kernel [pt ph pw C, D] with a zero extra channel.
  padded = jnp.concatenate([plain.patch_embedding.proj.kernel[...].reshape(1, 2, 2, 4, D), jnp.zeros((1, 2, 2, 1, D))],
                           axis=3).reshape(20, D)
  nnx.update(model, nnx.state(plain, lambda path, _: path[:3] != ("patch_embedding", "proj", "kernel")))
  kernel[...] = padded
  latents, timesteps, text = _batch()
  extra = _normal(2, B, T, H, W, 1)
  base = run(model, latents, timesteps, text)
  np.testing.assert_array_equal(run(model, latents, timesteps, text, extra_in=extra), base)  # zero rows: unchanged
  np.testing.assert_allclose(base, run(plain, latents, timesteps, text), atol=1e-6, rtol=0)  # dot over more K: 1e-6
  g, _ = _grads(model, {}, extra_in=extra)
  rows = g["patch_embedding"]["proj"]["kernel"][...].reshape(1, 2, 2, 5, D)
  assert float(jnp.abs(rows[:, :, :, 4]).min()) > 0  # every extra-channel weight gets a gradient
  kernel[...] = kernel[...] + 0.1 * _normal(3, 20, D)
  assert float(jnp.abs(run(model, latents, timesteps, text, extra_in=extra)
                       - run(model, latents, timesteps, text)).max()) > 1e-3


def test_cross_streams_start_at_zero_scale_and_learn():
  model = _toy(cross_streams=(("cam", 8), ("sem", 6)))
  latents, timesteps, text = _batch()
  cam, sem = _normal(1, B, 7, 8), _normal(2, B, 3, 6)
  cam_mask = jnp.arange(7)[None] < jnp.array([[7], [4]])
  cross = {"cam": (cam, cam_mask), "sem": sem}
  base = run(model, latents, timesteps, text)
  np.testing.assert_array_equal(run(model, latents, timesteps, text, cross=cross), base)  # zero gates
  g, _ = _grads(model, {}, cross=cross)
  for name in ("cam", "sem"):
    assert _nonzero(g["blocks"]["cross"][name]["gate"]), name

  model = _perturb(model)
  base = run(model, latents, timesteps, text)

  def cam_only(scale, context=cam):  # per-sample scales: one compiled forward for every case below
    return run(model, latents, timesteps, text, cross={"cam": (context, cam_mask)},
               cross_scale={"cam": jnp.asarray(scale, jnp.float32)})

  one = cam_only([1.0, 1.0])
  assert float(jnp.abs(one - base).max()) > 1e-3
  default = run(model, latents, timesteps, text, cross={"cam": (cam, cam_mask)})  # scale 1 (another compile: 1e-6)
  np.testing.assert_allclose(default, one, atol=1e-6, rtol=0)
  # lambda_c = 0 is the stream switched off (a missing stream is skipped: `base`); the scale matters, per sample.
  np.testing.assert_array_equal(cam_only([0.0, 0.0]), base)
  two = cam_only([2.0, 2.0])
  assert float(jnp.abs(two - one).max()) > 1e-3
  np.testing.assert_allclose(cam_only([1.0, 2.0]), jnp.stack([one[0], two[1]]), atol=1e-6, rtol=0)
  # Masked context tokens do not matter.
  np.testing.assert_allclose(cam_only([1.0, 1.0], cam.at[1, 4:].set(9.0)), one, atol=1e-6, rtol=0)
  _, g = _grads(model, {"cross": {"cam": cam, "sem": sem}})
  assert _nonzero(g["cross"]["cam"]) and _nonzero(g["cross"]["sem"])


def test_extra_kv_starts_at_zero_and_learns():
  model = _toy(extra_kv=True)
  latents, timesteps, text = _batch()
  states = _normal(1, 2, B, 10, D)  # [num_layers, B, M, D]
  base = run(model, latents, timesteps, text)
  np.testing.assert_array_equal(run(model, latents, timesteps, text, extra_kv=states), base)  # gate 0: bit-identical
  g, _ = _grads(model, {}, extra_kv=states)
  assert float(jnp.abs(g["blocks"]["extra_kv_gate"][...]).max(axis=1).min()) > 0  # both layers' gates learn

  model = _perturb(model)
  base = run(model, latents, timesteps, text)
  with_kv = run(model, latents, timesteps, text, extra_kv=states)
  assert float(jnp.abs(with_kv - base).max()) > 1e-3
  positions = grid_positions((1, 2, 5))  # RoPE positions of the 10 extra tokens
  assert float(jnp.abs(run(model, latents, timesteps, text, extra_kv=states, extra_kv_rope=positions)
                       - with_kv).max()) > 1e-4
  _, g = _grads(model, {"extra_kv": states})
  assert float(jnp.abs(g["extra_kv"]).max(axis=(1, 2, 3)).min()) > 0  # states of every layer reach the loss


def test_extra_kv_at_gate_one_is_joint_attention():
  """gate = 1: self-attention over the keys/values of [x, states]; gate = 0: over x alone."""
  with nnx.use_eager_sharding(False):
    attn = Attention(D, 2, eps=1e-6, implementation="xla", rngs=nnx.Rngs(0), dtype=jnp.float32,
                     param_dtype=jnp.float32)
  x, states = _normal(1, B, 6, D), _normal(2, B, 4, D)
  rope = rope_angles((1, 2, 3), 32)
  rope_extra = rope_angles((1, 2, 2), 32, offset=(1, 0, 0))
  joint = attn(x, rope=rope, extra_kv=(states, rope_extra, jnp.ones(D)))
  q = apply_rope(attn.norm_q(attn.to_q(x)).reshape(B, 6, 2, 32), rope)
  k = attn.norm_k(attn.to_k(jnp.concatenate([x, states], 1))).reshape(B, 10, 2, 32)
  k = apply_rope(k, jnp.concatenate([rope, rope_extra]))
  v = attn.to_v(jnp.concatenate([x, states], 1)).reshape(B, 10, 2, 32)
  expected = attn.to_out(jax.nn.dot_product_attention(q, k, v).reshape(B, 6, D))
  np.testing.assert_allclose(joint, expected, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(attn(x, rope=rope, extra_kv=(states, rope_extra, jnp.zeros(D))), attn(x, rope=rope))


def test_positions_default_grid_is_identity_and_matters():
  model = _toy()
  latents, timesteps, text = _batch()
  base = run(model, latents, timesteps, text)
  grid = grid_positions((T, H // 2, W // 2))
  np.testing.assert_array_equal(run(model, latents, timesteps, text, positions=grid), base)
  np.testing.assert_array_equal(run(model, latents, timesteps, text, positions=jnp.stack([grid] * B)), base)
  offset = (2, 1, 0)
  np.testing.assert_array_equal(run(model, latents, timesteps, text, positions=grid, rope_offset=offset),
                                run(model, latents, timesteps, text, rope_offset=offset))
  # Every frame at position 0 (e.g. a second half sharing the first half's frames) is a different model input.
  same_frame = grid.at[:, 0].set(0.0)
  assert float(jnp.abs(run(model, latents, timesteps, text, positions=same_frame) - base).max()) > 1e-4
  _, g = _grads(model, {"positions": grid + 0.3})
  assert _nonzero(g["positions"])


def test_return_hidden_gives_every_block_output():
  model = _toy()
  latents, timesteps, text = _batch()
  base = run(model, latents, timesteps, text)
  out, hidden = run(model, latents, timesteps, text, return_hidden=True)
  np.testing.assert_array_equal(out, base)
  assert hidden.shape == (2, B, N, D)
  assert float(jnp.abs(hidden[1] - hidden[0]).max()) > 1e-3
  graphdef, state = nnx.split(model)

  def loss(state, layer):
    _, hidden = nnx.merge(graphdef, state)(latents, timesteps, text, return_hidden=True)
    return jnp.mean(hidden[layer] ** 2)

  g0 = jax.jit(jax.grad(loss), static_argnums=1)(state, 0)["blocks"]["ffn"]["proj_in"]["kernel"][...]
  assert float(jnp.abs(g0[0]).max()) > 0 and float(jnp.abs(g0[1]).max()) == 0  # hidden[0] = block 0's output


def _everything(**kw):
  return _toy(extra_in_channels=1, cross_streams=(("cam", 8),), extra_kv=True, lora_rank=2, **kw)


@pytest.mark.parametrize("remat, extensions", [("full", False), ("dots", True)])
def test_scan_and_remat_do_not_change_results(remat, extensions):
  """Scanned vs looped under remat (with every extension, gates moved off zero): loss, grads, hidden states."""
  latents, timesteps, text = _batch(3)
  make = _everything if extensions else _toy
  ref = _perturb(make())
  graphdef, state = nnx.split(ref)
  g2, _ = nnx.split(make(scan_layers=False, remat=remat))
  inputs = dict(extra_in=_normal(1, B, T, H, W, 1), token_map=_normal(2, B, N, D), cross={"cam": _normal(3, B, 7, 8)},
                extra_kv=_normal(4, 2, B, 10, D), positions=grid_positions((T, H // 2, W // 2)) * 0.5)
  inputs = inputs if extensions else dict(positions=inputs["positions"])

  def loss(g, s):
    out, hidden = nnx.merge(g, s)(latents, timesteps, text, **inputs, return_hidden=True)
    return jnp.mean(out ** 2) + jnp.mean(hidden ** 2), hidden

  (l1, h1), g1 = jax.jit(jax.value_and_grad(lambda s: loss(graphdef, s), has_aux=True))(state)
  (l2, h2), gg2 = jax.jit(jax.value_and_grad(lambda s: loss(g2, s), has_aux=True))(state)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  np.testing.assert_allclose(h1, h2, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(gg2)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_everything_zero_initialised_equals_plain():
  """All extensions at their initialisation (extra-channel rows zeroed): the same output as without any input."""
  model = _everything()
  kernel = model.patch_embedding.proj.kernel
  kernel[...] = kernel[...].reshape(1, 2, 2, 5, D).at[:, :, :, 4].set(0.0).reshape(20, D)
  latents, timesteps, text = _batch()
  base = run(model, latents, timesteps, text)
  got = run(model, latents, timesteps, text, extra_in=_normal(1, B, T, H, W, 1), cross={"cam": _normal(3, B, 7, 8)},
            extra_kv=_normal(4, 2, B, 10, D), token_map=jnp.zeros((B, N, D)))
  np.testing.assert_array_equal(got, base)


def test_bf16_compute_close_to_fp32():
  latents, timesteps, text = _batch(4)
  f32 = _toy()
  bf16 = _toy(dtype="bfloat16")
  nnx.update(bf16, nnx.state(f32))
  out = run(bf16, latents, timesteps, text)
  assert out.dtype == jnp.bfloat16
  ref = run(f32, latents, timesteps, text)
  assert float(jnp.abs(out.astype(jnp.float32) - ref).max()) < 0.05 * float(jnp.abs(ref).max())


# ----------------------------------------------------------------------------------------------------------------------
# Errors and config
# ----------------------------------------------------------------------------------------------------------------------


def test_bad_shapes_raise_model_error():
  model = _toy()
  latents, timesteps, text = _batch()
  with pytest.raises(ModelError, match="divisible by the patch size"):
    model(latents[:, :, :3], timesteps, text)
  with pytest.raises(ModelError, match="text must be"):
    model(latents, timesteps, text[..., :8])
  with pytest.raises(ModelError, match=r"token_map must be \[B, N, D\] = \(2, 18, 64\)"):
    model(latents, timesteps, text, token_map=jnp.zeros((B, N - 1, D)))
  with pytest.raises(ModelError, match="extra_in_channels=0"):
    model(latents, timesteps, text, extra_in=latents[..., :1])
  with pytest.raises(ModelError, match="extra_kv=False"):
    model(latents, timesteps, text, extra_kv=jnp.zeros((2, B, 3, D)))
  with pytest.raises(ModelError, match="not built with"):
    model(latents, timesteps, text, cross={"cam": jnp.zeros((B, 3, 8))})
  with pytest.raises(ModelError, match=r"positions must be \[N, 3\] = \(18, 3\)"):
    model(latents, timesteps, text, positions=jnp.zeros((N, 2)))

  full = _everything()
  with pytest.raises(ModelError, match=r"extra_in must be .* = \(2, 3, 4, 6, 1\)"):
    full(latents, timesteps, text, extra_in=latents)
  with pytest.raises(ModelError, match=r"cross\['cam'\] context must be .* \(2, Lc, 8\)"):
    full(latents, timesteps, text, cross={"cam": jnp.zeros((B, 3, 7))})
  with pytest.raises(ModelError, match=r"cross\['cam'\] mask must be"):
    full(latents, timesteps, text, cross={"cam": (jnp.zeros((B, 3, 8)), jnp.ones((B, 4), bool))})
  with pytest.raises(ModelError, match=r"cross_scale\['cam'\] must be a scalar or \[B\]"):
    full(latents, timesteps, text, cross={"cam": jnp.zeros((B, 3, 8))}, cross_scale={"cam": jnp.ones(3)})
  with pytest.raises(ModelError, match=r"extra_kv must be \[num_layers, B, M, D\] = \(2, 2, M, 64\)"):
    full(latents, timesteps, text, extra_kv=jnp.zeros((1, B, 3, D)))
  with pytest.raises(ModelError, match="extra_kv_rope must be"):
    full(latents, timesteps, text, extra_kv=jnp.zeros((2, B, 3, D)), extra_kv_rope=jnp.zeros((4, 3)))


def test_config_validation_and_hashing():
  with pytest.raises(ModelError, match="head_dim"):
    preset("toy", head_dim=5)
  with pytest.raises(ModelError, match="lora_targets"):
    preset("toy", lora_rank=2, lora_targets=("attn1.to_q", "attn3.to_q"))
  with pytest.raises(ModelError, match="cross_streams entry"):
    preset("toy", cross_streams=(("not a name", 8),))
  with pytest.raises(ModelError, match="not unique"):
    preset("toy", cross_streams=(("cam", 8), ("cam", 4)))
  with pytest.raises(ModelError, match="extra_in_channels"):
    preset("toy", extra_in_channels=-1)
  with pytest.raises(ModelError, match="lora_alpha"):
    preset("toy", lora_rank=2, lora_alpha=0.0)
  # Lists and mappings from config files are stored as tuples: the config stays hashable (static under jit).
  a = preset("toy", cross_streams={"cam": 8}, lora_targets=["ffn.proj_in"])
  b = preset("toy", cross_streams=[["cam", 8]], lora_targets=("ffn.proj_in",))
  assert a == b and hash(a) == hash(b) and a.cross_streams == (("cam", 8),)
  assert a.plain() == preset("toy", lora_targets=("ffn.proj_in",)) != a


def test_new_parameters_are_created_after_wan_parameters():
  """Extensions never shift the seeded values of WAN's parameters (they draw their keys last)."""
  plain = nnx.to_flat_state(nnx.state(_toy()))
  full = dict(nnx.to_flat_state(nnx.state(_everything())))
  for path, value in plain:
    if path[:3] != ("patch_embedding", "proj", "kernel"):  # its shape depends on extra_in_channels
      np.testing.assert_array_equal(full[path][...], value[...], err_msg=str(path))


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings, text encoder
# ----------------------------------------------------------------------------------------------------------------------


def test_rope_and_timestep_embedding():
  assert rope_axis_dims(128) == (44, 42, 42)  # WAN 2.1's split of a 128-wide head
  angles = rope_angles((2, 3, 4), 12)
  assert angles.shape == (24, 6)
  # token (f=1, i=2, j=3) is the last one; the first pair of each axis rotates by the position itself.
  t_dim, h_dim, _ = rope_axis_dims(12)
  np.testing.assert_allclose(angles[-1, [0, t_dim // 2, t_dim // 2 + h_dim // 2]], [1, 2, 3])
  np.testing.assert_array_equal(rope_angles((2, 3, 4), 12, offset=(1, 2, 0)),
                                rope_angles_from_positions(grid_positions((2, 3, 4)) + jnp.array([1., 2., 0.]), 12))
  emb = timestep_embedding(jnp.array([0.0, 500.0]), 8)
  np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])  # cos first
  np.testing.assert_allclose(emb[1, 0], np.cos(500.0), rtol=1e-5)


def test_apply_rope_per_batch_angles():
  x = _normal(0, 2, 5, 2, 12)
  a0, a1 = rope_angles((1, 1, 5), 12), rope_angles((1, 1, 5), 12, offset=(3, 1, 0))
  both = apply_rope(x, jnp.stack([a0, a1]))
  np.testing.assert_array_equal(both[0], apply_rope(x, a0)[0])
  np.testing.assert_array_equal(both[1], apply_rope(x, a1)[1])


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
