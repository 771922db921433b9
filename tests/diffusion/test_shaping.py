"""Scene-constrained noise shaping (RealCam-I2V sec. 3.3): the z_t hook (the paper's equation) and the x0 denoiser
wrapper (Fig. 6), for flow matching and DDPM (eps and v), alone and inside the samplers.

Everything that draws noise runs under `fast_jit`: XLA:CPU's LLVM passes take seconds over threefry + erfinv per
shape, which dominated this file's runtime otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax import diffusion as d
from camjax.diffusion import shaping as s
from camjax.diffusion.samplers import HOOK_STREAM, SamplerStep
from camjax.xla_flags import fast_jit

SHAPE = (2, 4, 16, 16, 16)  # [B, t, h, w, C]: 16384 values per example for the statistics
OBJECTIVES = {"flow": d.FlowMatching(), "ddpm": d.DDPM(), "ddpm_v": d.DDPM(prediction="v")}
KEY = jax.random.key(0)


def _normal(seed, shape=SHAPE):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _call(hook, x, index, level, rng=None):
  """`hook(x, step)` at a (not final) step, compiled with fast_jit; `level` a scalar or `[B]`."""
  def run(x, index, level, rng):
    level = jnp.broadcast_to(jnp.asarray(level, jnp.float32), (x.shape[0],))
    return hook(x, SamplerStep(index=jnp.int32(index), level=level, x_T=None, rng=rng, final=False))

  return fast_jit(run)(x, index, jnp.asarray(level, jnp.float32), rng)


@fast_jit
def _normal_at(key, index, like):
  return jax.random.normal(jax.random.fold_in(key, index), like.shape)


def _hook_noise(rng, index, like):
  return _normal_at(jax.random.fold_in(rng, s.SHAPING_STREAM), index, like)


def _corr(a, b):
  a, b = np.ravel(a) - np.mean(a), np.ravel(b) - np.mean(b)
  return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_shaping_level_is_sigma_or_t_over_n():
  np.testing.assert_allclose(s.shaping_level(OBJECTIVES["flow"], jnp.array([0.3, 0.95])), [0.3, 0.95])
  np.testing.assert_allclose(s.shaping_level(OBJECTIVES["ddpm"], jnp.array([900.0, 950.0])), [0.9, 0.95])
  hook = s.noise_shaping_hook(_normal(1), jnp.ones(SHAPE[1:4]), OBJECTIVES["ddpm"], rng=KEY)
  x = _normal(2)
  assert (_call(hook, x, 0, 900.0) == x).all()  # strictly above: t = 900 is not shaped, t = 901 is
  assert not (_call(hook, x, 0, 901.0) == x).all()


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_a_threshold_above_every_level_changes_nothing(name):
  objective = OBJECTIVES[name]
  top = 1.0 if objective.kind == "flow" else objective.num_train_timesteps - 1.0
  preview, mask, x = _normal(1), jnp.ones(SHAPE[1:4]), _normal(2)
  hook = s.noise_shaping_hook(preview, mask, objective, threshold=1.0, rng=KEY)
  assert (_call(hook, x, 0, top) == x).all()
  denoise = lambda x_t, level: 0.5 * x_t
  wrapped = s.noise_shaping_denoiser(denoise, preview, mask, objective, threshold=1.0)
  assert (wrapped(x, jnp.full((2,), top)) == denoise(x, top)).all()
  # A whole sampler run is unchanged too.
  x_T = _normal(3, (2, 3, 4, 4, 2))
  small_preview, small_mask = _normal(4, (2, 3, 4, 4, 2)), jnp.ones((3, 4, 4))
  shaped_denoise, hooks = s.noise_shaping(denoise, small_preview, small_mask, objective, threshold=1.0)
  plain, shaped = fast_jit(lambda x: (objective.sample(denoise, x, steps=8, rng=KEY),
                                     objective.sample(shaped_denoise, x, steps=8, hooks=hooks, rng=KEY)))(x_T)
  # The hook returns its input exactly (above); the two programs may still fuse Euler's arithmetic differently.
  np.testing.assert_allclose(np.asarray(plain), np.asarray(shaped), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,level", [("flow", 1.0), ("flow", 0.95), ("ddpm", 999.0), ("ddpm", 950.0)])
def test_a_full_mask_gives_the_noised_preview(name, level):
  objective = OBJECTIVES[name]
  preview, x = _normal(1), _normal(2)
  hook = s.noise_shaping_hook(preview, jnp.ones(SHAPE[:4], bool), objective, rng=KEY)
  out = np.asarray(_call(hook, x, 7, level))
  noise = _hook_noise(KEY, 7, x)
  expected = objective.add_noise(preview, noise, jnp.full((2,), level))
  np.testing.assert_allclose(out, np.asarray(expected), rtol=1e-6, atol=1e-6)
  # The statistics of the forward process: corr(out, preview) = a / sqrt(a^2 + b^2) for x_t = a z + b eps.
  if objective.kind == "flow":
    a, b = 1.0 - level, level
  else:
    abar = float(objective.alphas_cumprod()[int(level)])
    a, b = np.sqrt(abar), np.sqrt(1.0 - abar)
  assert abs(_corr(out, preview) - a / np.hypot(a, b)) < 0.02
  assert abs(_corr(out, x)) < 0.02  # nothing of the old state survives under the mask
  assert abs(np.std(out) - np.hypot(a, b)) < 0.02
  if level == 1.0:
    np.testing.assert_array_equal(out, np.asarray(noise))  # pure noise at sigma = 1


def test_a_partial_mask_changes_only_masked_latents_of_examples_above_the_threshold():
  objective = OBJECTIVES["flow"]
  preview, x = _normal(1), _normal(2).astype(jnp.bfloat16)
  mask = np.random.default_rng(3).random(SHAPE[1:4]) > 0.5  # [t, h, w], shared by the batch
  hook = s.noise_shaping_hook(preview, mask, objective, rng=KEY)
  shaped = _call(hook, x, 0, jnp.array([0.95, 0.5]))
  assert shaped.dtype == jnp.bfloat16
  out = np.asarray(shaped, np.float32)
  x = np.asarray(x, np.float32)
  np.testing.assert_array_equal(out[1], x[1])  # level 0.5: below the threshold
  np.testing.assert_array_equal(out[0][~mask], x[0][~mask])
  assert (out[0][mask] != x[0][mask]).mean() > 0.99
  # A per-example mask [B, t, h, w].
  both = np.stack([mask, ~mask])
  out = np.asarray(_call(s.noise_shaping_hook(preview, both, objective, rng=KEY), jnp.asarray(x), 0, 0.95))
  np.testing.assert_array_equal(out[1][mask], x[1][mask])
  np.testing.assert_array_equal(out[0][~mask], x[0][~mask])


def test_fresh_noise_at_every_step_deterministic_for_the_same_key():
  objective = OBJECTIVES["flow"]
  preview, x, mask = jnp.zeros(SHAPE), _normal(2), jnp.ones(SHAPE[1:4])
  first = s.noise_shaping_hook(preview, mask, objective, rng=KEY)
  again = s.noise_shaping_hook(preview, mask, objective, rng=KEY)
  a0, a1 = _call(first, x, 0, 1.0), _call(first, x, 1, 1.0)
  np.testing.assert_array_equal(np.asarray(a0), np.asarray(_call(again, x, 0, 1.0)))
  assert abs(_corr(a0, a1)) < 0.02  # a new draw at the next step
  # Without its own key the hook uses the sampler's step.rng as given.
  sampler_key = jax.random.key(9)
  out = _call(s.noise_shaping_hook(preview, mask, objective), x, 3, 1.0, rng=jax.random.fold_in(sampler_key, 3))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(_normal_at(sampler_key, 3, x)))
  with pytest.raises(d.DiffusionError, match="rng"):
    _call(s.noise_shaping_hook(preview, mask, objective), x, 0, 1.0)


@pytest.mark.parametrize("name", ["flow", "ddpm"])
def test_the_hook_inside_the_sampler_pastes_the_last_shaped_state(name):
  """With a network that predicts no change (zero velocity / zero noise) and a full mask, the sample is the noised
  preview of the last shaped step, carried to the end by the sampler's (known, linear) updates."""
  objective = OBJECTIVES[name]
  shape, steps, rng = (2, 3, 4, 4, 2), 20 if objective.kind == "flow" else 50, jax.random.key(5)
  preview, x_T = _normal(1, shape), _normal(2, shape)
  denoise = lambda x_t, level: jnp.zeros_like(x_t)
  hooks = (s.noise_shaping_hook(preview, jnp.ones(shape[:4]), objective),)
  out = np.asarray(fast_jit(lambda x: objective.sample(denoise, x, steps=steps, hooks=hooks, rng=rng))(x_T))
  hook_noise = lambda i: _normal_at(jax.random.fold_in(rng, HOOK_STREAM), i, x_T)
  if objective.kind == "flow":
    sigmas = np.asarray(d.sigma_schedule(steps, objective.shift))
    last = int(np.nonzero(sigmas[:-1] > 0.9)[0][-1])
    expected = objective.add_noise(preview, hook_noise(last), sigmas[last])
  else:
    ts = d.ddim_timesteps(objective.num_train_timesteps, steps)
    last = int(np.nonzero(ts / objective.num_train_timesteps > 0.9)[0][-1])
    abar = np.asarray(objective.alphas_cumprod())
    # eps = 0: x_0 = x_t / sqrt(abar_t), each DDIM step rescales by sqrt(abar' / abar), down to abar[0].
    expected = np.sqrt(abar[0] / abar[ts[last]]) * objective.add_noise(
        preview, hook_noise(last), int(ts[last]))
  assert last >= 1
  np.testing.assert_allclose(out, np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_the_x0_variant_pastes_the_preview_into_the_clean_estimate_only_under_the_mask(name):
  objective = OBJECTIVES[name]
  preview, x_t = _normal(1), _normal(2)
  mask = np.random.default_rng(3).random(SHAPE[:4]) > 0.5
  denoise = lambda x, level: 0.3 * x + 0.1  # elementwise, so positions do not interact
  wrapped = s.noise_shaping_denoiser(denoise, preview, mask, objective)
  level = jnp.array([0.95, 0.95]) if objective.kind == "flow" else jnp.array([950.0, 950.0])
  pred, new = np.asarray(denoise(x_t, level)), np.asarray(wrapped(x_t, level))
  np.testing.assert_array_equal(new[~mask], pred[~mask])
  x0 = np.asarray(objective.predict_x0(x_t, jnp.asarray(new), level))
  np.testing.assert_allclose(x0[mask], np.asarray(preview)[mask], rtol=1e-4, atol=1e-4)
  # Inside a sampler: the samples differ from the plain run only where the mask is 1.
  small = (2, 3, 4, 4, 2)
  small_mask = np.random.default_rng(4).random(small[:4]) > 0.5
  x_T = _normal(5, small)
  shaped_denoise, hooks = s.noise_shaping(denoise, _normal(6, small), small_mask, objective, target="x0")
  assert hooks == ()
  plain, shaped = (np.asarray(a) for a in fast_jit(lambda x: (objective.sample(denoise, x, steps=20),
                                                             objective.sample(shaped_denoise, x, steps=20)))(x_T))
  np.testing.assert_array_equal(shaped[~small_mask], plain[~small_mask])
  assert (shaped[small_mask] != plain[small_mask]).all()


def test_noise_shaping_builds_either_variant_and_rejects_bad_input():
  objective, preview, mask = OBJECTIVES["flow"], _normal(1), jnp.ones(SHAPE[1:4])
  denoise = lambda x, level: x
  same, hooks = s.noise_shaping(denoise, preview, mask, objective, rng=KEY)
  assert same is denoise and len(hooks) == 1
  with pytest.raises(d.DiffusionError, match="target"):
    s.noise_shaping(denoise, preview, mask, objective, target="z0")
  with pytest.raises(d.DiffusionError, match="no `rng`"):
    s.noise_shaping(denoise, preview, mask, objective, target="x0", rng=KEY)
  with pytest.raises(d.DiffusionError, match="threshold"):
    s.noise_shaping_hook(preview, mask, objective, threshold=1.5)
  with pytest.raises(d.DiffusionError, match="objective"):
    s.noise_shaping_hook(preview, mask, object())
  with pytest.raises(d.DiffusionError, match="mask"):
    _call(s.noise_shaping_hook(preview, jnp.ones((4, 8, 8)), objective, rng=KEY), _normal(2), 0, 1.0)
  with pytest.raises(d.DiffusionError, match="preview_latents"):
    _call(s.noise_shaping_hook(preview[:, :2], mask, objective, rng=KEY), _normal(2), 0, 1.0)
