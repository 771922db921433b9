"""WanDiT behaviour: each generic input starts at zero and learns, scan/remat equivalence, config and shape errors,
RoPE, the text encoder.

These tests are compile-bound on CPU, so they share compilations: one toy DiT with every extension (the `fresh`
fixture: every extension at its initialisation; `perturbed`: every parameter moved off it) serves the per-input tests,
through one jitted forward per call signature and one jitted gradient w.r.t. (parameters, every generic input) for
both. Models are initialised under one jit (eager initialisation compiles every op separately) and test data comes from
NumPy. Test programs compile with fast-compile XLA options (`jit`).
"""

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
from camjax.xla_flags import fast_jit

B, T, H, W = 2, 3, 4, 6
N = T * (H // 2) * (W // 2)  # tokens after the (1, 2, 2) patchify
D = 64  # toy width
EVERYTHING = dict(extra_in_channels=1, cross_streams=(("cam", 8), ("sem", 6)), extra_kv=True, lora_rank=2)


jit = fast_jit  # small, compile-bound test programs: camjax.xla_flags.fast_compile_options


@functools.partial(jit, static_argnums=0, static_argnames="return_hidden")
def _apply(graphdef, state, args, kw, return_hidden=False):
  return nnx.merge(graphdef, state)(*args, **kw, return_hidden=return_hidden)


def run(model, *args, return_hidden=False, **kw):
  """A jitted forward (eager NNX calls dispatch op by op and are slow on CPU); one compile per model config and call
  signature."""
  return _apply(*nnx.split(model), args, kw, return_hidden=return_hidden)


def _config(**kw):
  return preset("toy", in_channels=4, out_channels=4, text_dim=16, **kw)


def _graphdef(config):
  """The graph of `WanDiT(config)`, traced abstractly (no parameter is computed)."""
  return nnx.split(nnx.eval_shape(lambda: WanDiT(config, rngs=nnx.Rngs(0))))[0]


def _jit_init(make):
  """`make()` (a module with its seeded parameters), initialised under one jit."""
  return nnx.merge(nnx.split(nnx.eval_shape(make))[0], jit(lambda: nnx.state(make()))())


@functools.cache
def _init_state(config):
  """`nnx.state(WanDiT(config, rngs=nnx.Rngs(0)))`, initialised under one jit (cached: arrays are immutable)."""
  return jit(lambda: nnx.state(WanDiT(config, rngs=nnx.Rngs(0))))()


def _build(**kw):
  """A new seeded toy model (its own Variables)."""
  config = _config(**kw)
  return nnx.merge(_graphdef(config), jax.tree.map(lambda x: x, _init_state(config)))


def _toy(**kw):
  model = _build(**kw)
  # WAN zero-initialises proj_out; randomise it so outputs depend on the tokens.
  model.proj_out.kernel[...] = jnp.asarray(0.05 * _normal(9, *model.proj_out.kernel.shape))
  return model


def _everything(**kw):
  """Every extension; the extra channel's patch-embedding rows zeroed (as when WAN weights are loaded), so every
  extension is at zero."""
  model = _toy(**EVERYTHING, **kw)
  kernel = np.array(model.patch_embedding.proj.kernel[...]).reshape(1, 2, 2, 5, D)
  kernel[:, :, :, 4] = 0.0
  model.patch_embedding.proj.kernel[...] = jnp.asarray(kernel.reshape(20, D))
  return model


def _normal(seed, *shape) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _batch(seed=0, b=B):
  rng = np.random.default_rng(100 + seed)
  latents = rng.standard_normal((b, T, H, W, 4)).astype(np.float32)
  timesteps = (rng.uniform(size=(b,)) * 1000).astype(np.float32)
  text = rng.standard_normal((b, 5, 16)).astype(np.float32)
  return latents, timesteps, text


def _diff(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


def _nonzero(x) -> bool:
  return float(np.abs(np.asarray(x[...])).max()) > 0


def _perturb(model, scale=0.1, seed=3):
  """Every parameter moved off its initialisation (zero gates become non-zero)."""
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(seed)
  return nnx.merge(graphdef, jax.tree.map(
      lambda x: jnp.asarray(np.asarray(x) + scale * rng.standard_normal(x.shape), x.dtype), state))


@functools.partial(jit, static_argnums=0)
def _grad_fn(graphdef, state, batch, inputs):
  latents, timesteps, text = batch
  target = jnp.tanh(latents[..., ::-1])

  def loss(state, inputs):
    return jnp.mean((nnx.merge(graphdef, state)(latents, timesteps, text, **inputs) - target) ** 2)

  return jax.grad(loss, argnums=(0, 1))(state, inputs)


def _grads(model, inputs):
  """Gradients of a toy MSE loss w.r.t. (model state, `inputs`)."""
  graphdef, state = nnx.split(model)
  return _grad_fn(graphdef, state, _batch(), inputs)


def _grid(t, h, w) -> np.ndarray:
  """RoPE positions of a (t, h, w) token grid in raster order: `[t h w, 3]` (frame, row, column)."""
  return np.stack(np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 3).astype(
      np.float32)


# Inputs of the per-input tests (NumPy) and `GRAD_INPUTS`: every generic input at once, for the shared gradient.
CAM, SEM = _normal(1, B, 7, 8), _normal(2, B, 3, 6)
CAM_MASK = np.arange(7)[None] < np.array([[7], [4]])
EXTRA_IN = _normal(2, B, T, H, W, 1)
TOKENS = 0.5 * _normal(1, B, N, D)
STATES = _normal(1, 2, B, 10, D)  # extra_kv: [num_layers, B, M, D]
GRID = _grid(T, H // 2, W // 2)
GRAD_INPUTS = dict(extra_in=EXTRA_IN, token_map=TOKENS, cross={"cam": CAM, "sem": SEM}, extra_kv=STATES,
                   positions=GRID + 0.3)


@pytest.fixture(scope="module")
def fresh():
  """Every extension (cross streams cam and sem), all at their initialisation. Tests must not modify it."""
  return _everything()


@pytest.fixture(scope="module")
def perturbed(fresh):
  return _perturb(fresh)


@pytest.fixture(scope="module")
def grads(fresh, perturbed):
  """`{"fresh" | "perturbed": (parameter grads, input grads)}` with every generic input given (one compile)."""
  return {"fresh": _grads(fresh, GRAD_INPUTS), "perturbed": _grads(perturbed, GRAD_INPUTS)}


@pytest.fixture(scope="module")
def plain():
  """The toy DiT without extensions (the same seeded WAN parameters as `fresh`). Tests must not modify it."""
  return _toy()


# ----------------------------------------------------------------------------------------------------------------------
# Each generic input: zero-initialised (output unchanged) and reachable by gradients
# ----------------------------------------------------------------------------------------------------------------------


def test_token_map_zero_is_identity_and_nonzero_learns(fresh, grads):
  latents, timesteps, text = _batch()
  base = run(fresh, latents, timesteps, text)
  np.testing.assert_array_equal(run(fresh, latents, timesteps, text, token_map=np.zeros((B, N, D), np.float32)), base)
  assert _diff(run(fresh, latents, timesteps, text, token_map=TOKENS), base) > 1e-3
  assert _nonzero(grads["fresh"][1]["token_map"])


def test_extra_in_channels_follow_the_latent_channels_and_learn(fresh, plain, grads):
  """Zero kernel rows for the extra channel: the model equals the plain model (the latents, then the extra channel,
  per patch: the layout of the old condition-mask channel), whatever extra_in holds; the rows get gradients."""
  model = nnx.clone(fresh)
  kernel = model.patch_embedding.proj.kernel
  assert kernel.shape == (4 * 5, D)
  # Copy the plain model into the extended one, padding the patch kernel [pt ph pw C, D] with a zero extra channel.
  padded = np.concatenate([np.asarray(plain.patch_embedding.proj.kernel[...]).reshape(1, 2, 2, 4, D),
                           np.zeros((1, 2, 2, 1, D), np.float32)], axis=3).reshape(20, D)
  nnx.update(model, nnx.state(plain, lambda path, _: path[:3] != ("patch_embedding", "proj", "kernel")))
  kernel[...] = jnp.asarray(padded)
  latents, timesteps, text = _batch()
  base = run(model, latents, timesteps, text)
  np.testing.assert_array_equal(run(model, latents, timesteps, text, extra_in=EXTRA_IN), base)  # zero rows: unchanged
  np.testing.assert_allclose(base, run(plain, latents, timesteps, text), atol=1e-6, rtol=0)  # dot over more K: 1e-6
  rows = np.asarray(grads["fresh"][0]["patch_embedding"]["proj"]["kernel"][...]).reshape(1, 2, 2, 5, D)  # zero rows
  assert float(np.abs(rows[:, :, :, 4]).min()) > 0  # every extra-channel weight gets a gradient
  kernel[...] = jnp.asarray(padded + 0.1 * _normal(3, 20, D))
  assert _diff(run(model, latents, timesteps, text, extra_in=EXTRA_IN), run(model, latents, timesteps, text)) > 1e-3


def test_cross_streams_start_at_zero_scale_and_learn(fresh, perturbed, grads):
  latents, timesteps, text = _batch()
  cross = {"cam": (CAM, CAM_MASK), "sem": SEM}
  base = run(fresh, latents, timesteps, text)
  np.testing.assert_array_equal(run(fresh, latents, timesteps, text, cross=cross), base)  # zero gates
  for name in ("cam", "sem"):
    assert _nonzero(grads["fresh"][0]["blocks"]["cross"][name]["gate"]), name

  model = perturbed
  base = run(model, latents, timesteps, text)

  def cam_only(scale, context=CAM):  # per-sample scales: one compiled forward for every case below
    return run(model, latents, timesteps, text, cross={"cam": (context, CAM_MASK)},
               cross_scale={"cam": np.asarray(scale, np.float32)})

  one = cam_only([1.0, 1.0])
  assert _diff(one, base) > 1e-3
  default = run(model, latents, timesteps, text, cross={"cam": (CAM, CAM_MASK)})  # scale 1 (another compile: 1e-6)
  np.testing.assert_allclose(default, one, atol=1e-6, rtol=0)
  # lambda_c = 0 is the stream switched off (a missing stream is skipped: `base`); the scale matters, per sample.
  np.testing.assert_array_equal(cam_only([0.0, 0.0]), base)
  two = cam_only([2.0, 2.0])
  assert _diff(two, one) > 1e-3
  np.testing.assert_allclose(cam_only([1.0, 2.0]), np.stack([one[0], two[1]]), atol=1e-6, rtol=0)
  # Masked context tokens do not matter.
  masked = CAM.copy()
  masked[1, 4:] = 9.0
  np.testing.assert_allclose(cam_only([1.0, 1.0], masked), one, atol=1e-6, rtol=0)
  g = grads["perturbed"][1]["cross"]
  assert _nonzero(g["cam"]) and _nonzero(g["sem"])


def test_extra_kv_starts_at_zero_and_learns(fresh, perturbed, grads):
  latents, timesteps, text = _batch()
  base = run(fresh, latents, timesteps, text)
  np.testing.assert_array_equal(run(fresh, latents, timesteps, text, extra_kv=STATES), base)  # gate 0: bit-identical
  gate_grads = np.asarray(grads["fresh"][0]["blocks"]["extra_kv_gate"][...])
  assert gate_grads.shape == (2, D) and float(np.abs(gate_grads).max(axis=1).min()) > 0  # both layers' gates learn

  model = perturbed
  base = run(model, latents, timesteps, text)
  with_kv = run(model, latents, timesteps, text, extra_kv=STATES)
  assert _diff(with_kv, base) > 1e-3
  positions = _grid(1, 2, 5)  # RoPE positions of the 10 extra tokens
  assert _diff(run(model, latents, timesteps, text, extra_kv=STATES, extra_kv_rope=positions), with_kv) > 1e-4
  state_grads = np.asarray(grads["perturbed"][1]["extra_kv"])
  assert state_grads.shape == STATES.shape and float(np.abs(state_grads).max(axis=(1, 2, 3)).min()) > 0  # every layer


def test_extra_kv_at_gate_one_is_joint_attention():
  """gate = 1: self-attention over the keys/values of [x, states]; gate = 0: over x alone."""
  with nnx.use_eager_sharding(False):
    attn = _jit_init(lambda: Attention(D, 2, eps=1e-6, implementation="xla", rngs=nnx.Rngs(0), dtype=jnp.float32,
                                       param_dtype=jnp.float32))
  graphdef, state = nnx.split(attn)
  x, states = _normal(1, B, 6, D), _normal(2, B, 4, D)

  @jit
  def compute(state, x, states, one, zero):  # one program (eager attention compiles op by op)
    attn = nnx.merge(graphdef, state)
    rope = rope_angles((1, 2, 3), 32)
    rope_extra = rope_angles((1, 2, 2), 32, offset=(1, 0, 0))
    joint = attn(x, rope=rope, extra_kv=(states, rope_extra, one))
    q = apply_rope(attn.norm_q(attn.to_q(x)).reshape(B, 6, 2, 32), rope)
    k = attn.norm_k(attn.to_k(jnp.concatenate([x, states], 1))).reshape(B, 10, 2, 32)
    k = apply_rope(k, jnp.concatenate([rope, rope_extra]))
    v = attn.to_v(jnp.concatenate([x, states], 1)).reshape(B, 10, 2, 32)
    expected = attn.to_out(jax.nn.dot_product_attention(q, k, v).reshape(B, 6, D))
    return joint, expected, attn(x, rope=rope, extra_kv=(states, rope_extra, zero)), attn(x, rope=rope)

  joint, expected, gate_zero, alone = compute(state, x, states, np.ones(D, np.float32), np.zeros(D, np.float32))
  np.testing.assert_allclose(joint, expected, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(gate_zero, alone)


def test_positions_default_grid_is_identity_and_matters(fresh, grads):
  latents, timesteps, text = _batch()
  base = run(fresh, latents, timesteps, text)
  np.testing.assert_array_equal(run(fresh, latents, timesteps, text, positions=GRID), base)
  np.testing.assert_array_equal(run(fresh, latents, timesteps, text, positions=np.stack([GRID] * B)), base)
  offset = (2, 1, 0)
  np.testing.assert_array_equal(run(fresh, latents, timesteps, text, positions=GRID, rope_offset=offset),
                                run(fresh, latents, timesteps, text, rope_offset=offset))
  # Every frame at position 0 (e.g. a second half sharing the first half's frames) is a different model input.
  same_frame = GRID.copy()
  same_frame[:, 0] = 0.0
  assert _diff(run(fresh, latents, timesteps, text, positions=same_frame), base) > 1e-4
  assert _nonzero(grads["fresh"][1]["positions"])


def test_return_hidden_gives_every_block_output(plain):
  model = plain
  latents, timesteps, text = _batch()
  base = run(model, latents, timesteps, text)
  out, hidden = run(model, latents, timesteps, text, return_hidden=True)
  np.testing.assert_array_equal(out, base)
  assert hidden.shape == (2, B, N, D)
  assert _diff(hidden[1], hidden[0]) > 1e-3
  graphdef, state = nnx.split(model)

  def loss(state, layer):
    _, hidden = nnx.merge(graphdef, state)(latents, timesteps, text, return_hidden=True)
    return jnp.mean(hidden[layer] ** 2)

  g0 = jit(jax.grad(loss), static_argnums=1)(state, 0)["blocks"]["ffn"]["proj_in"]["kernel"][...]
  g0 = np.asarray(g0)
  assert float(np.abs(g0[0]).max()) > 0 and float(np.abs(g0[1]).max()) == 0  # hidden[0] = block 0's output


@pytest.mark.parametrize("remat, extensions", [("full", False), ("dots", True)])
def test_scan_and_remat_do_not_change_results(remat, extensions, plain, perturbed):
  """Scanned vs looped under remat (with every extension, gates moved off zero): loss, grads, hidden states."""
  latents, timesteps, text = _batch(3)
  ref = perturbed if extensions else _perturb(plain)
  graphdef, state = nnx.split(ref)
  g2 = _graphdef(ref.config.replace(scan_layers=False, remat=remat))
  inputs = dict(extra_in=_normal(1, B, T, H, W, 1), token_map=_normal(2, B, N, D),
                cross={"cam": _normal(3, B, 7, 8), "sem": _normal(5, B, 3, 6)}, extra_kv=_normal(4, 2, B, 10, D),
                positions=GRID * 0.5)
  inputs = inputs if extensions else dict(positions=inputs["positions"])

  def loss(g, s):
    out, hidden = nnx.merge(g, s)(latents, timesteps, text, **inputs, return_hidden=True)
    return jnp.mean(out ** 2) + jnp.mean(hidden ** 2), hidden

  (l1, h1), g1 = jit(jax.value_and_grad(lambda s: loss(graphdef, s), has_aux=True))(state)  # scanned
  (l2, h2), gg2 = jit(jax.value_and_grad(lambda s: loss(g2, s), has_aux=True))(state)  # looped under remat
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  np.testing.assert_allclose(h1, h2, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(gg2)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_everything_zero_initialised_equals_plain(fresh):
  """All extensions at their initialisation (extra-channel rows zeroed): the same output as without any input."""
  latents, timesteps, text = _batch()
  base = run(fresh, latents, timesteps, text)
  got = run(fresh, latents, timesteps, text, extra_in=EXTRA_IN, cross={"cam": CAM, "sem": SEM}, extra_kv=STATES,
            token_map=np.zeros((B, N, D), np.float32))
  np.testing.assert_array_equal(got, base)


def test_bf16_compute_close_to_fp32(plain):
  latents, timesteps, text = _batch(4)
  bf16 = nnx.merge(_graphdef(plain.config.replace(dtype="bfloat16")), nnx.state(plain))
  assert bf16.config.dtype == "bfloat16"
  out = run(bf16, latents, timesteps, text)
  assert out.dtype == jnp.bfloat16
  ref = run(plain, latents, timesteps, text)
  assert _diff(out, ref) < 0.05 * float(np.abs(np.asarray(ref)).max())


# ----------------------------------------------------------------------------------------------------------------------
# Errors and config
# ----------------------------------------------------------------------------------------------------------------------


def test_bad_shapes_raise_model_error(plain, fresh):
  model = plain
  latents, timesteps, text = _batch()
  with pytest.raises(ModelError, match="divisible by the patch size"):
    model(latents[:, :, :3], timesteps, text)
  with pytest.raises(ModelError, match="text must be"):
    model(latents, timesteps, text[..., :8])
  with pytest.raises(ModelError, match=r"token_map must be \[B, N, D\] = \(2, 18, 64\)"):
    model(latents, timesteps, text, token_map=np.zeros((B, N - 1, D)))
  with pytest.raises(ModelError, match="extra_in_channels=0"):
    model(latents, timesteps, text, extra_in=latents[..., :1])
  with pytest.raises(ModelError, match="extra_kv=False"):
    model(latents, timesteps, text, extra_kv=np.zeros((2, B, 3, D)))
  with pytest.raises(ModelError, match="not built with"):
    model(latents, timesteps, text, cross={"cam": np.zeros((B, 3, 8))})
  with pytest.raises(ModelError, match=r"positions must be \[N, 3\] = \(18, 3\)"):
    model(latents, timesteps, text, positions=np.zeros((N, 2)))

  full = fresh
  with pytest.raises(ModelError, match=r"extra_in must be .* = \(2, 3, 4, 6, 1\)"):
    full(latents, timesteps, text, extra_in=latents)
  with pytest.raises(ModelError, match=r"cross\['cam'\] context must be .* \(2, Lc, 8\)"):
    full(latents, timesteps, text, cross={"cam": np.zeros((B, 3, 7))})
  with pytest.raises(ModelError, match=r"cross\['cam'\] mask must be"):
    full(latents, timesteps, text, cross={"cam": (np.zeros((B, 3, 8)), np.ones((B, 4), bool))})
  with pytest.raises(ModelError, match=r"cross_scale\['cam'\] must be a scalar or \[B\]"):
    full(latents, timesteps, text, cross={"cam": np.zeros((B, 3, 8))}, cross_scale={"cam": np.ones(3)})
  with pytest.raises(ModelError, match=r"extra_kv must be \[num_layers, B, M, D\] = \(2, 2, M, 64\)"):
    full(latents, timesteps, text, extra_kv=np.zeros((1, B, 3, D)))
  with pytest.raises(ModelError, match="extra_kv_rope must be"):
    full(latents, timesteps, text, extra_kv=np.zeros((2, B, 3, D)), extra_kv_rope=np.zeros((4, 3)))


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
  plain = nnx.to_flat_state(_init_state(_config()))
  full = dict(nnx.to_flat_state(_init_state(_config(**EVERYTHING))))
  for path, value in plain:
    if path[:3] != ("patch_embedding", "proj", "kernel"):  # its shape depends on extra_in_channels
      np.testing.assert_array_equal(full[path][...], value[...], err_msg=str(path))


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings, text encoder
# ----------------------------------------------------------------------------------------------------------------------


def test_rope_and_timestep_embedding():
  assert rope_axis_dims(128) == (44, 42, 42)  # WAN 2.1's split of a 128-wide head

  @jit
  def compute():  # one program (eager ops compile one by one)
    return (rope_angles((2, 3, 4), 12), rope_angles((2, 3, 4), 12, offset=(1, 2, 0)),
            rope_angles_from_positions(grid_positions((2, 3, 4)) + jnp.array([1., 2., 0.]), 12),
            grid_positions((2, 3, 4), offset=(1, 2, 0)), timestep_embedding(jnp.array([0.0, 500.0]), 8))

  angles, shifted, from_positions, positions, emb = compute()
  assert angles.shape == (24, 6)
  # token (f=1, i=2, j=3) is the last one; the first pair of each axis rotates by the position itself.
  t_dim, h_dim, _ = rope_axis_dims(12)
  np.testing.assert_allclose(angles[-1, [0, t_dim // 2, t_dim // 2 + h_dim // 2]], [1, 2, 3])
  np.testing.assert_array_equal(shifted, from_positions)
  np.testing.assert_array_equal(positions, _grid(2, 3, 4) + np.array([1, 2, 0], np.float32))  # raster order
  np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])  # cos first
  np.testing.assert_allclose(emb[1, 0], np.cos(500.0), rtol=1e-5)


def test_apply_rope_per_batch_angles():
  x = _normal(0, 2, 5, 2, 12)
  a0, a1 = rope_angles((1, 1, 5), 12), rope_angles((1, 1, 5), 12, offset=(3, 1, 0))
  both, one, other = jit(lambda x, a0, a1: (apply_rope(x, jnp.stack([a0, a1])), apply_rope(x, a0),
                                            apply_rope(x, a1)))(x, a0, a1)
  np.testing.assert_array_equal(both[0], one[0])
  np.testing.assert_array_equal(both[1], other[1])


def test_byte_text_encoder():
  enc = _jit_init(lambda: ByteTextEncoder(width=16, num_layers=1, num_heads=2, max_length=24, rngs=nnx.Rngs(0)))
  captions = ["a camera pans left", "orbit"]
  ids, m = enc.tokenize(captions)
  ids2 = np.where(m, ids, 7)  # garbage in padded positions is masked out

  @jit
  def compute():  # one program (the encoder called eagerly compiles op by op)
    emb, mask = enc.encode(captions)
    other, _ = enc.encode(["a camera pans right", "orbit"])
    dropped = drop_text(jax.random.key(0), emb, mask, drop_prob=1.0)
    return emb, mask, other, enc(jnp.asarray(ids2), jnp.asarray(m)), dropped, null_text(emb.shape)

  emb, mask, other, again, (text, tmask), (z, zm) = compute()
  assert emb.shape == (2, 24, 16) and mask.shape == (2, 24)
  np.testing.assert_array_equal(mask, m)
  assert float(np.abs(np.asarray(emb)[1, int(mask[1].sum()):]).max()) == 0  # zero at padding
  assert _diff(other[0], emb[0]) > 1e-4  # the caption matters
  np.testing.assert_allclose(other[1], emb[1], atol=1e-6)  # other rows do not leak across the batch
  for row in range(2):
    np.testing.assert_allclose(again[row, :int(m[row].sum())], emb[row, :int(m[row].sum())], atol=1e-5)
  np.testing.assert_array_equal(text, z)
  np.testing.assert_array_equal(tmask, zm)
