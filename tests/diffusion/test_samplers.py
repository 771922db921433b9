"""Euler (flow matching) and DDIM (DDPM) samplers, checked on Gaussian targets with exact denoisers and against
diffusers' DDIMScheduler.

Gaussian target: x_0 ~ N(mu, diag(s^2)), independent dims. For flow matching, x_t = (1 - t) x_0 + t eps has
var_t = (1 - t)^2 s^2 + t^2 and the exact velocity E[eps - x_0 | x_t] is affine in x_t, so Euler maps x_T to an
affine function of x_T per dim: out = mu + c x_T with c = prod_i (1 + h_i A_i) (Euler preserves the mean path
(1 - t) mu exactly, since it is linear in t). The tests check (a) the sampler against that discrete recursion to
float precision and (b) the sample moments against the true (mu, s) within the recursion's known discretisation
bias.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax import diffusion as d

MU = np.array([2.0, -1.0, 0.5])
S = np.array([0.5, 1.5, 0.1])
N = 20000


def _normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------------------------ flow matching


def _exact_velocity(x, sigma):
  t = sigma[:, None]
  mu, s2 = jnp.asarray(MU, jnp.float32), jnp.asarray(S**2, jnp.float32)
  var = (1 - t) ** 2 * s2 + t**2
  centred = x - (1 - t) * mu
  e_x0 = mu + (1 - t) * s2 / var * centred
  e_eps = t / var * centred
  return e_eps - e_x0


def _euler_slope(steps, shift):
  """Per-dim slope c of the Euler map x_T -> x_0 with the exact velocity (float64 recursion)."""
  t = np.linspace(1.0, 0.0, steps + 1)
  sig = shift * t / (1 + (shift - 1) * t)
  c = np.ones(3)
  for i in range(steps):
    var = (1 - sig[i]) ** 2 * S**2 + sig[i] ** 2
    c *= 1 + (sig[i + 1] - sig[i]) * (sig[i] - (1 - sig[i]) * S**2) / var
  return c


@functools.lru_cache(maxsize=None)
def _euler_run(steps, shift):
  x_T = _normal(0, (N, 3))
  out = jax.jit(functools.partial(d.euler, _exact_velocity, steps=steps, shift=shift))(x_T)
  return np.asarray(x_T, np.float64), np.asarray(out, np.float64)


# Tolerances on std(out) / s. Euler is first order: its std bias shrinks like 1 / steps (the float64 recursion gives
# -2.3 %, -2.1 %, -6.8 % at 64 steps / shift 1, -4.5 %, -2.3 %, -17.7 % at 64 / shift 3 and -1.1 %, -0.6 %, -4.7 %
# at 256 / shift 3). The narrow dim (s = 0.1) is hardest: its std changes over sigma in [0, ~2 s], a range a shift
# > 1 covers with fewer, larger steps. Monte-Carlo error is removed by dividing by std(x_T) (the map is affine).
@pytest.mark.parametrize("steps, shift, tol", [(64, 1.0, 0.08), (64, 3.0, 0.2), (256, 3.0, 0.06)])
def test_euler_with_exact_velocity_reproduces_gaussian_moments(steps, shift, tol):
  x_T, out = _euler_run(steps, shift)
  c = _euler_slope(steps, shift)
  # (a) The sampler is exactly the Euler recursion: out = mu + c x_T (float32 accumulation only).
  np.testing.assert_allclose(out.std(0) / x_T.std(0), c, rtol=1e-3)
  np.testing.assert_allclose(out.mean(0), MU + c * x_T.mean(0), atol=2e-4)
  # (b) Against the target: the mean is exact up to Monte-Carlo error (sd s / sqrt(N); 5 sd allowed) and the std is
  # within the discretisation bias above.
  assert np.all(np.abs(out.mean(0) - MU) < 5 * S / np.sqrt(N))
  assert np.all(np.abs(out.std(0) / x_T.std(0) / S - 1) < tol)


def test_euler_is_first_order():
  """Quadrupling the steps divides the std error by about 4 (first-order global error)."""
  errors = [np.abs(_euler_run(steps, 3.0)[1].std(0) / _euler_run(steps, 3.0)[0].std(0) / S - 1) for steps in (64, 256)]
  ratio = errors[1] / errors[0]
  assert np.all((ratio > 0.2) & (ratio < 0.33)), ratio


def test_euler_camera_ctrl_ii_defaults_reach_reasonable_moments():
  """32 steps at shift 12 (CameraCtrl II's defaults) are tuned for video latents, not a 1-D Gaussian.

  The grid spends most steps near sigma = 1 and ends with one jump from sigma_1 = 0.279 to 0, which lands on the
  posterior mean E[x_0 | x_0.279] and so loses the posterior variance s^2 t^2 / var_t: the narrow dims come out
  under-dispersed (recursion: -28 %, -11 %, -75 %). The mean stays exact, so we check the mean tightly, the std
  only loosely (never over-dispersed, widest dim within 15 %).
  """
  x_T, out = _euler_run(32, 12.0)
  ratio = out.std(0) / x_T.std(0) / S
  np.testing.assert_allclose(ratio, _euler_slope(32, 12.0) / S, rtol=1e-3)
  assert np.all(np.abs(out.mean(0) - MU) < 5 * S / np.sqrt(N))
  assert np.all((ratio > 0.2) & (ratio <= 1.0))
  assert abs(ratio[1] - 1) < 0.15


def test_euler_calls_denoise_on_the_schedule_and_jits():
  seen = []

  def denoise(x, sigma):
    jax.debug.callback(lambda s: seen.append(np.asarray(s)), sigma, ordered=True)
    return jnp.ones_like(x) * 2.0

  x_T = np.zeros((2, 3, 4), np.float32)
  out = jax.jit(lambda x: d.euler(denoise, x, steps=5, shift=2.0))(x_T)
  sig = 2.0 * np.linspace(1, 0, 6) / (1 + np.linspace(1, 0, 6))
  assert len(seen) == 5 and all(s.shape == (2,) for s in seen)
  np.testing.assert_allclose(np.stack(seen)[:, 0], sig[:-1], rtol=1e-6)
  np.testing.assert_allclose(out, -2.0 * np.ones((2, 3, 4)), atol=1e-6)  # sum of (sigma_next - sigma) = -1


def test_euler_clean_mask_keeps_condition_frames():
  """Masked tokens equal `clean` exactly at the end, and the denoiser saw them clean at every step."""
  B, T, H, W, C = 2, 4, 3, 3, 2
  x_T = _normal(5, (B, T, H, W, C))
  clean = _normal(6, (B, T, H, W, C)) + 3.0
  mask = np.zeros((B, T, H, W), np.float32)
  mask[:, 0] = 1.0  # frame 0 is the clean condition frame

  def denoise(x, sigma):  # couples frames, so unclean condition tokens would change the other frames
    return x - jnp.mean(x, axis=1, keepdims=True) + sigma[:, None, None, None, None]

  run = jax.jit(lambda x, m: d.euler(denoise, x, steps=6, shift=3.0, clean=clean, clean_mask=m))
  out = np.asarray(run(x_T, mask))
  np.testing.assert_array_equal(out[:, 0], clean[:, 0])
  # Reference loop, written out.
  m = mask[..., None]
  x = x_T.astype(np.float64)
  sig = 3.0 * np.linspace(1, 0, 7) / (1 + 2.0 * np.linspace(1, 0, 7))
  for i in range(6):
    x = m * clean + (1 - m) * x
    v = x - x.mean(axis=1, keepdims=True) + sig[i]
    x = x + (sig[i + 1] - sig[i]) * v
  x = m * clean + (1 - m) * x
  np.testing.assert_allclose(out, x, atol=1e-5)
  assert not np.allclose(out[:, 1:], clean[:, 1:], atol=0.1)
  # Same result with a trailing-singleton mask.
  np.testing.assert_allclose(run(x_T, mask[..., None]), out, atol=1e-6)
  with pytest.raises(d.DiffusionError):
    d.euler(denoise, x_T, steps=6, clean=clean)


# ---------------------------------------------------------------------------------------------------------- DDIM


def test_ddim_timesteps_leading():
  ts = d.ddim_timesteps(1000, 50)
  np.testing.assert_array_equal(ts, np.arange(980, -1, -20))
  np.testing.assert_array_equal(d.ddim_timesteps(1000, 50, steps_offset=1), np.arange(981, 0, -20))
  with pytest.raises(d.DiffusionError):
    d.ddim_timesteps(1000, 1001)


@pytest.mark.parametrize("prediction, eta", [("eps", 0.0), ("v", 0.0), ("eps", 0.7)])
def test_ddim_matches_diffusers_step_by_step(prediction, eta):
  diffusers = pytest.importorskip("diffusers")
  torch = pytest.importorskip("torch")
  steps = 50
  sched = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                  set_alpha_to_one=False, clip_sample=False,
                                  prediction_type="epsilon" if prediction == "eps" else "v_prediction")
  sched.set_timesteps(steps)
  obj = d.DDPM(prediction=prediction)
  np.testing.assert_array_equal(sched.timesteps.numpy(), d.ddim_timesteps(1000, steps))

  def fake_model(x, t):  # a fixed linear "network"
    return 0.3 * x + 0.5e-3 * t - 0.1

  rs = np.random.default_rng(0)
  x_T = rs.standard_normal((2, 3, 4)).astype(np.float32)
  noises = rs.standard_normal((steps,) + x_T.shape).astype(np.float32)
  step = jax.jit(lambda x, p, t, tp, z: d.ddim_step(obj, x, p, t, tp, eta=eta, noise=z if eta else None))
  x_ref = torch.from_numpy(x_T)
  for i, t in enumerate(sched.timesteps):
    pred = fake_model(x_ref, float(t))
    kwargs = {"variance_noise": torch.from_numpy(noises[i])} if eta else {}
    ref_next = sched.step(pred, t, x_ref, eta=eta, **kwargs).prev_sample
    ours = step(jnp.asarray(x_ref.numpy()), jnp.asarray(pred.numpy()), int(t), int(t) - 1000 // steps,
                jnp.asarray(noises[i]))
    np.testing.assert_allclose(ours, ref_next.numpy(), atol=1e-5, rtol=1e-5, err_msg=f"step {i}, t = {int(t)}")
    x_ref = ref_next
  if eta == 0:  # the whole deterministic trajectory, end to end
    out = jax.jit(lambda x: d.ddim(lambda x, t: fake_model(x, t[:, None, None]), x, objective=obj, steps=steps))(x_T)
    np.testing.assert_allclose(out, x_ref.numpy(), atol=1e-5, rtol=1e-5)


def _exact_eps(obj):
  abar_all = obj.alphas_cumprod()

  def denoise(x, t):
    a = abar_all[t.astype(jnp.int32)][:, None]
    mu, s2 = jnp.asarray(MU, jnp.float32), jnp.asarray(S**2, jnp.float32)
    return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * s2 + 1 - a)

  return denoise


def test_ddim_with_exact_eps_reproduces_gaussian_moments():
  """50 DDIM steps with E[eps | x_t] of x_0 ~ N(mu, s^2).

  x_T is drawn from the exact marginal at the first step t = 980 (abar = 0.0058, not 0: starting from N(0, 1) would
  bias the mean by sqrt(abar) mu scaled down by the flow, a property of the schedule, not of the sampler). The last
  step goes to abar[0] = 0.99915 (set_alpha_to_one=False), so the target is x at t = 0:
  N(sqrt(abar_0) mu, abar_0 s^2 + 1 - abar_0). Deterministic DDIM is first order too; the float64 recursion of its
  affine map gives std biases of -5.0 %, -2.2 %, -22.6 % (the narrow dim again), hence the per-dim tolerances.
  """
  obj = d.DDPM()
  abar = np.cumprod(1 - np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000) ** 2)
  a_T = abar[980]
  z = _normal(1, (N, 3)).astype(np.float64)
  x_T = (np.sqrt(a_T) * MU + np.sqrt(a_T * S**2 + 1 - a_T) * z).astype(np.float32)
  out = np.asarray(jax.jit(lambda x: d.ddim(_exact_eps(obj), x, objective=obj, steps=50))(x_T), np.float64)
  mean0 = np.sqrt(abar[0]) * MU
  std0 = np.sqrt(abar[0] * S**2 + 1 - abar[0])
  assert np.all(np.abs(out.mean(0) - mean0) < 5 * std0 / np.sqrt(N))
  ratio = out.std(0) / z.std(0) / std0
  assert np.all(np.abs(ratio - 1) < np.array([0.07, 0.04, 0.25])), ratio
  assert np.all(ratio < 1.0)


def test_ddim_eta_needs_rng_and_clean_tokens_stay_clean():
  obj = d.DDPM(prediction="v")
  x_T = _normal(7, (2, 3, 2, 2, 4))
  clean = np.full(x_T.shape, 0.25, np.float32)
  mask = np.zeros(x_T.shape[:4], np.float32)
  mask[:, 0] = 1.0
  calls = []

  def denoise(x, t):
    calls.append(None)
    return 0.2 * x - jnp.mean(x, axis=1, keepdims=True) + 1e-4 * t[:, None, None, None, None]

  with pytest.raises(d.DiffusionError, match="rng"):
    d.ddim(denoise, x_T, objective=obj, steps=10, eta=1.0)

  @jax.jit
  def run(x_T, key):
    stochastic = d.ddim(denoise, x_T, objective=obj, steps=10, eta=1.0, rng=key, clean=clean, clean_mask=mask)
    deterministic = d.ddim(denoise, x_T, objective=obj, steps=10, clean=clean, clean_mask=mask)
    return stochastic, deterministic

  # An "rbg" key compiles much faster on CPU than the default threefry; the sampler takes any key type.
  out, det = (np.asarray(a) for a in run(x_T, jax.random.key(0, impl="rbg")))
  assert len(calls) == 2  # each sampler traces the denoiser once, inside its loop
  np.testing.assert_array_equal(out[:, 0], clean[:, 0])
  np.testing.assert_array_equal(det[:, 0], clean[:, 0])
  assert np.all(np.isfinite(out))
  assert not np.allclose(det, out, atol=1e-3)  # eta = 1 adds noise
  # Deterministic reference loop: clean tokens re-noised with x_T to the current step before each denoise call.
  m = mask[..., None]
  step = jax.jit(lambda x, t: (lambda x: d.ddim_step(obj, x, denoise(x, jnp.full((2,), t, jnp.float32)), t, t - 100))(
      m * obj.add_noise(clean, x_T, t) + (1 - m) * x))
  x = x_T
  for t in d.ddim_timesteps(1000, 10):
    x = step(x, t)
  x = m * clean + (1 - m) * np.asarray(x)
  np.testing.assert_allclose(det, x, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------- hooks


def _recording_hook(name, log):
  """A hook that records (name, index, level[0], final) at run time and returns x unchanged."""

  def hook(x, step):
    jax.debug.callback(lambda i, lv, name=name, final=step.final: log.append((name, int(i), float(lv), final)),
                       step.index, step.level[0], ordered=True)
    return x

  return hook


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_hooks_run_in_order_before_each_step_and_once_at_the_end(sampler):
  log = []
  calls = []

  def denoise(x, level):
    jax.debug.callback(lambda lv: log.append(("denoise", float(lv))), level[0], ordered=True)
    calls.append(None)
    return 0.1 * x

  hooks = [_recording_hook("a", log), _recording_hook("b", log)]
  x_T = _normal(8, (2, 3))
  if sampler == "euler":
    run = jax.jit(lambda x: d.euler(denoise, x, steps=3, shift=2.0, hooks=hooks))
    levels = list(np.asarray(d.sigma_schedule(3, 2.0))[:-1])
  else:
    run = jax.jit(lambda x: d.ddim(denoise, x, objective=d.DDPM(), steps=3, hooks=hooks))
    levels = list(d.ddim_timesteps(1000, 3).astype(float))
  jax.block_until_ready(run(x_T))
  assert len(calls) == 1  # the loop body is traced once
  expected = []
  for i, lv in enumerate(levels):
    expected += [("a", i, lv, False), ("b", i, lv, False), ("denoise", lv)]
  expected += [("a", 3, 0.0, True), ("b", 3, 0.0, True)]
  assert [e[0] for e in log] == [e[0] for e in expected]
  for got, want in zip(log, expected):
    assert got[1:-1] == pytest.approx(want[1:-1], rel=1e-6) and got[-1] == want[-1]


def test_hook_draws_fresh_noise_from_step_rng():
  """A noise-shaping hook (RealCam-I2V style): different noise every step, the same run for the same key, and not
  DDIM's eta noise (with JAX's threefry, `fold_in(rng, i) == split(rng, n)[i]`, hence the hooks' own stream)."""

  def shaping(x, step):
    assert step.x_T.shape == x.shape
    return x + 0.1 * jax.random.normal(step.rng, x.shape, x.dtype)

  def collect(log):
    def hook(x, step):
      jax.debug.callback(lambda z: log.append(np.asarray(z)), jax.random.normal(step.rng, x.shape), ordered=True)
      return x
    return hook

  x_T = np.zeros((2, 3, 4), np.float32)
  zero = lambda x, level: jnp.zeros_like(x)
  euler_draws, ddim_draws = [], []

  @jax.jit  # one compilation for every run below
  def run(x, key):
    out = d.euler(zero, x, steps=4, shift=1.0, hooks=[collect(euler_draws), shaping], rng=key)
    d.ddim(zero, x, objective=d.DDPM(), steps=4, eta=1.0, rng=key, hooks=[collect(ddim_draws)])
    eta_noise = jax.vmap(lambda k: jax.random.normal(k, x.shape))(jax.random.split(key, 4))  # ddim's keys
    return out, eta_noise

  first, eta_noise = jax.block_until_ready(run(x_T, jax.random.key(0)))
  draws = np.stack(euler_draws)
  assert draws.shape == (5,) + x_T.shape  # 4 steps + the final call
  for i in range(5):
    for j in range(i):
      assert not np.allclose(draws[i], draws[j])
  np.testing.assert_array_equal(run(x_T, jax.random.key(0))[0], first)
  assert not np.allclose(run(x_T, jax.random.key(1))[0], first)
  assert len(ddim_draws) == 15  # 3 runs of 4 steps + the final call
  for i in range(4):
    assert not np.allclose(ddim_draws[i], eta_noise[i])
  # Without an rng, step.rng is None.
  seen = []
  jax.eval_shape(lambda x: d.euler(zero, x, steps=1, hooks=[lambda x, step: (seen.append(step.rng), x)[1]]), x_T)
  assert seen == [None, None]


def test_clean_hook_equals_the_clean_shorthand_and_hooks_are_checked():
  x_T = _normal(9, (2, 3, 2, 2, 1))
  clean = np.full(x_T.shape, 0.5, np.float32)
  mask = np.zeros(x_T.shape[:2], np.float32)
  mask[:, 0] = 1.0

  def denoise(x, level):
    return x - jnp.mean(x, axis=1, keepdims=True) + 1e-3 * level[:, None, None, None, None]

  obj = d.DDPM()
  a, b, c, e = jax.jit(lambda x: (
      d.euler(denoise, x, steps=4, clean=clean, clean_mask=mask),
      d.euler(denoise, x, steps=4, hooks=[d.clean_hook(clean, mask)]),
      d.ddim(denoise, x, objective=obj, steps=4, clean=clean, clean_mask=mask),
      d.ddim(denoise, x, objective=obj, steps=4, hooks=[d.clean_hook(clean, mask, obj)])))(x_T)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(c, e)
  np.testing.assert_array_equal(np.asarray(e)[:, 0], clean[:, 0])
  with pytest.raises(d.DiffusionError, match="both"):
    d.clean_hook(clean, None)
  with pytest.raises(d.DiffusionError, match="objective"):
    d.clean_hook(clean, mask, objective="ddpm")
  with pytest.raises(d.DiffusionError, match="hook 0"):
    d.euler(denoise, x_T, steps=2, hooks=[lambda x, step: x[:1]])
  with pytest.raises(d.DiffusionError, match="hook 0"):
    d.euler(denoise, x_T, steps=2, hooks=[lambda x, step: x.astype(jnp.bfloat16)])
