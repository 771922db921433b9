"""Schedules, flow-matching / DDPM objectives and the masked loss.

Inputs are NumPy and the code under test runs inside `jax.jit` (one XLA compilation per test rather than one per
eager op), which keeps the suite fast on a small CPU.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax import diffusion as d
from camjax.errors import CamjaxError


def _normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- schedules


def test_shift_sigma_formula_endpoints_and_monotone():
  t = np.linspace(0.0, 1.0, 101, dtype=np.float32)
  shift = jax.jit(d.shift_sigma)
  for s in (0.5, 1.0, 3.0, 12.0):
    got = np.asarray(shift(t, s))
    np.testing.assert_allclose(got, s * t / (1 + (s - 1) * t), rtol=1e-6, atol=1e-7)
    assert got[0] == 0.0 and got[-1] == pytest.approx(1.0, abs=1e-7)
    assert np.all(np.diff(got) > 0)
    if s == 1.0:
      np.testing.assert_allclose(got, t, atol=1e-7)
    if s > 1:
      assert np.all(got[1:-1] > t[1:-1])  # shift > 1 moves every interior time toward noise
  with pytest.raises(d.DiffusionError):
    d.shift_sigma(t, 0.0)


def test_sigma_schedule_camera_ctrl_ii():
  sig = np.asarray(jax.jit(d.sigma_schedule, static_argnums=0)(32, 12.0))
  grid = np.linspace(1, 0, 33)
  assert sig.shape == (33,)
  assert sig[0] == pytest.approx(1.0, abs=1e-7) and sig[-1] == 0.0
  assert np.all(np.diff(sig) < 0)
  np.testing.assert_allclose(sig, 12 * grid / (1 + 11 * grid), rtol=1e-6)
  assert sig[-2] == pytest.approx(12 / 32 / (1 + 11 / 32), rel=1e-6)  # the big last step: sigma 0.279 -> 0
  with pytest.raises(d.DiffusionError):
    d.sigma_schedule(0, 1.0)


# -------------------------------------------------------------------------------------------------- flow matching


def test_flow_matching_interpolation_and_target():
  fm = d.FlowMatching(shift=3.0, density="uniform")
  x0, noise = _normal(0, (4, 2, 3, 3, 5)), _normal(1, (4, 2, 3, 3, 5))

  @jax.jit
  def run(x0, noise):
    sigma = fm.sample_sigma(jax.random.key(0), 4)
    xt = fm.add_noise(x0, noise, sigma)
    v = fm.target(x0, noise, sigma)
    return dict(sigma=sigma, xt=xt, v=v, x0_hat=fm.predict_x0(xt, v, sigma), eps_hat=fm.predict_eps(xt, v, sigma),
                model_t=fm.model_timesteps(sigma), at0=fm.add_noise(x0, noise, jnp.zeros(4)),
                at1=fm.add_noise(x0, noise, jnp.ones(4)))

  r = {k: np.asarray(v) for k, v in run(x0, noise).items()}
  assert r["sigma"].shape == (4,) and r["sigma"].dtype == np.float32
  sb = r["sigma"][:, None, None, None, None]
  np.testing.assert_allclose(r["xt"], (1 - sb) * x0 + sb * noise, atol=1e-6)
  np.testing.assert_allclose(r["v"], noise - x0, atol=1e-6)
  np.testing.assert_allclose(r["xt"], x0 + sb * r["v"], atol=1e-5)           # x_t = x_0 + sigma v
  np.testing.assert_allclose(r["xt"] + (1 - sb) * r["v"], noise, atol=1e-5)  # x_t + (1 - sigma) v = eps
  np.testing.assert_allclose(r["x0_hat"], x0, atol=1e-5)
  np.testing.assert_allclose(r["eps_hat"], noise, atol=1e-5)
  np.testing.assert_allclose(r["model_t"], r["sigma"] * 1000, rtol=1e-6)
  np.testing.assert_allclose(r["at0"], x0)     # sigma = 0 is the data
  np.testing.assert_allclose(r["at1"], noise)  # sigma = 1 the noise


def test_flow_matching_densities():
  n = 20000
  configs = [d.FlowMatching(density="logit_normal"), d.FlowMatching(logit_mean=1.0), d.FlowMatching(density="uniform"),
             d.FlowMatching(shift=3.0, density="uniform"), d.FlowMatching(shift=3.0, density="logit_normal")]
  samples = jax.jit(lambda key: [fm.sample_sigma(key, n) for fm in configs])(jax.random.key(1))
  logit, logit_pos, uniform, uniform_3, logit_3 = (np.asarray(s) for s in samples)
  # Logit-normal, mean 0: median sigmoid(0) = 0.5; Monte-Carlo sd of the median is 1 / (2 f(0.5) sqrt(n)) = 0.002.
  assert np.all((logit > 0) & (logit < 1))
  assert np.median(logit) == pytest.approx(0.5, abs=0.01)
  assert np.median(logit_pos) == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.01)
  assert np.all((uniform >= 0) & (uniform <= 1))
  assert np.mean(uniform) == pytest.approx(0.5, abs=0.01)
  assert np.std(uniform) == pytest.approx(np.sqrt(1 / 12), abs=0.01)
  # Shift 3 maps the median 0.5 to 3 * 0.5 / (1 + 2 * 0.5) = 0.75.
  assert np.median(uniform_3) == pytest.approx(0.75, abs=0.01)
  assert np.median(logit_3) == pytest.approx(0.75, abs=0.01)
  with pytest.raises(d.DiffusionError, match="uniform.*logit_normal"):
    d.FlowMatching(density="cosine")
  with pytest.raises(CamjaxError):
    d.FlowMatching(shift=-1.0)


def test_flow_matching_x_prediction_velocity_and_loss():
  x0, noise = _normal(0, (3, 2, 4, 4, 6)), _normal(1, (3, 2, 4, 4, 6))
  sigma = jnp.array([0.02, 0.3, 0.9])  # the first below min_sigma = 0.05
  fm_x, fm_v = d.FlowMatching(prediction="sample"), d.FlowMatching()
  xt = fm_x.add_noise(x0, noise, sigma)
  sb = np.asarray(sigma)[:, None, None, None, None]
  # A perfect x-prediction is the true velocity, for the sampler and for guidance.
  np.testing.assert_allclose(fm_x.velocity(xt, x0, sigma), noise - x0, atol=2e-4)
  np.testing.assert_allclose(fm_v.velocity(xt, noise - x0, sigma), noise - x0)  # velocity prediction: as is
  # Loss terms: zero for the perfect prediction; the velocity target where sigma >= min_sigma; the x-error over
  # max(sigma, 0.05) everywhere.
  pred, target = fm_x.loss_terms(xt, x0, x0, noise, sigma)
  np.testing.assert_allclose(pred, target, atol=1e-6)
  np.testing.assert_allclose(target[1:], (noise - x0)[1:], atol=1e-4)
  wrong = x0 + 0.1
  pred, target = fm_x.loss_terms(xt, wrong, x0, noise, sigma)
  np.testing.assert_allclose(pred - target, -0.1 / np.maximum(sb, 0.05) * np.ones_like(xt), rtol=1e-4)
  pred, target = fm_v.loss_terms(xt, noise - x0 + 0.1, x0, noise, sigma)
  np.testing.assert_allclose(pred - target, 0.1 * np.ones_like(xt), rtol=1e-4)
  with pytest.raises(d.DiffusionError, match="velocity.*sample"):
    d.FlowMatching(prediction="eps")
  with pytest.raises(d.DiffusionError, match="min_sigma"):
    d.FlowMatching(prediction="sample", min_sigma=0.0)


def test_flow_matching_is_a_static_jit_argument():
  f = jax.jit(lambda obj, x0, e, s: obj.add_noise(x0, e, s), static_argnums=0)
  out = f(d.FlowMatching(shift=5.0), np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32),
          np.array([0.25, 1.0], np.float32))
  np.testing.assert_allclose(out, [[0.75] * 3, [0.0] * 3], atol=1e-7)
  assert hash(d.FlowMatching(shift=5.0)) == hash(d.FlowMatching(shift=5.0))


# ----------------------------------------------------------------------------------------------------------- DDPM


@functools.lru_cache(maxsize=None)
def _tables():
  return tuple(np.asarray(a) for a in jax.jit(
      lambda: (d.scaled_linear_betas(), d.alphas_cumprod(d.scaled_linear_betas()), d.DDPM().alphas_cumprod()))())


def test_ddpm_betas_match_scaled_linear_formula():
  betas, abar, abar_obj = _tables()
  ref = np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000) ** 2
  np.testing.assert_allclose(betas, ref, rtol=1e-5)
  np.testing.assert_allclose(abar, np.cumprod(1 - ref), rtol=1e-5)
  assert abar[0] == pytest.approx(1 - 0.00085, rel=1e-6)
  assert abar[-1] == pytest.approx(0.00466, abs=2e-5)  # not zero: the schedule's terminal SNR is 0.0047
  np.testing.assert_allclose(abar_obj, abar, rtol=1e-6)


def test_ddpm_alphas_cumprod_match_diffusers():
  diffusers = pytest.importorskip("diffusers")
  sched = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
  betas, abar, _ = _tables()
  np.testing.assert_allclose(abar, sched.alphas_cumprod.numpy(), rtol=1e-5)
  np.testing.assert_allclose(betas, sched.betas.numpy(), rtol=1e-5)


def _ddpm_target(prediction, x0, noise, abar):
  return {"eps": noise, "v": np.sqrt(abar) * noise - np.sqrt(1 - abar) * x0, "sample": x0}[prediction]


@pytest.mark.parametrize("prediction", ["eps", "v", "sample"])
def test_ddpm_targets_and_round_trips(prediction):
  obj = d.DDPM(prediction=prediction)
  x0, noise = _normal(2, (6, 2, 4, 4, 3)), _normal(3, (6, 2, 4, 4, 3))

  @jax.jit
  def run(x0, noise):
    t = obj.sample_timesteps(jax.random.key(2), 6)
    t = t.at[0].set(0).at[1].set(999)  # both ends of the schedule
    xt = obj.add_noise(x0, noise, t)
    target = obj.target(x0, noise, t)
    # With the exact target as the "prediction", both conversions recover the truth.
    return dict(t=t, xt=xt, target=target, x0_hat=obj.predict_x0(xt, target, t),
                eps_hat=obj.predict_eps(xt, target, t), model_t=obj.model_timesteps(t))

  r = {k: np.asarray(v) for k, v in run(x0, noise).items()}
  t = r["t"]
  assert t.dtype == np.int32 and t.shape == (6,) and np.all((t >= 0) & (t < 1000))
  abar = _tables()[1][t][:, None, None, None, None]
  np.testing.assert_allclose(r["xt"], np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise, atol=1e-5)
  np.testing.assert_allclose(r["target"], _ddpm_target(prediction, x0, noise, abar), atol=1e-5)
  # eps -> x_0 divides by sqrt(abar_999) = 0.068, amplifying float32 rounding ~15x; x_0 -> eps divides by
  # sqrt(1 - abar_0) = 0.029 (~35x).
  np.testing.assert_allclose(r["x0_hat"], x0, atol=2e-3 if prediction == "eps" else 1e-5)
  np.testing.assert_allclose(r["eps_hat"], noise, atol=2e-3 if prediction == "sample" else 1e-5)
  assert r["model_t"].dtype == np.float32
  np.testing.assert_array_equal(r["model_t"], t.astype(np.float32))


def test_ddpm_rejects_unknown_prediction():
  with pytest.raises(d.DiffusionError, match="eps.*v.*sample"):
    d.DDPM(prediction="x0")
  with pytest.raises(d.DiffusionError):
    d.DDPM(beta_end=1.5)


# ------------------------------------------------------------------------------------------ the common interface


def test_make_objective_builds_both_kinds_and_names_bad_fields():
  flow = d.make_objective({"kind": "flow", "shift": 1.0, "density": "logit_normal", "prediction": "sample"})
  assert flow == d.FlowMatching(shift=1.0, density="logit_normal", prediction="sample") and flow.kind == "flow"
  ddpm = d.make_objective({"kind": "ddpm", "prediction": "eps", "num_train_timesteps": 1000,
                           "beta_start": 0.00085, "beta_end": 0.012})
  assert ddpm == d.DDPM() and ddpm.kind == "ddpm"
  # Fields of the other kind are ignored, so one config can switch kinds.
  assert d.make_objective({"kind": "ddpm", "shift": 12.0, "density": "uniform"}) == d.DDPM()
  assert d.make_objective({"kind": "flow", "num_train_timesteps": 10}) == d.FlowMatching()
  ml_collections = pytest.importorskip("ml_collections")
  cfg = ml_collections.ConfigDict({"kind": "flow", "shift": 3.0, "density": "uniform"})
  assert d.make_objective(cfg) == d.FlowMatching(shift=3.0, density="uniform")
  assert d.make_objective(ml_collections.FrozenConfigDict(cfg)) == d.FlowMatching(shift=3.0, density="uniform")
  for bad, message in [({"kind": "edm"}, "'edm'"), ({"shift": 1.0}, "kind None"),
                       ({"kind": "flow", "shfit": 1.0}, "shfit"), ({"kind": "ddpm", "prediction": "velocity"}, "eps"),
                       (["kind", "flow"], "mapping")]:
    with pytest.raises(d.DiffusionError, match=message):
      d.make_objective(bad)


def test_flow_matching_common_names_are_the_existing_methods():
  fm = d.FlowMatching(shift=3.0, prediction="sample")
  key = jax.random.key(4)
  np.testing.assert_array_equal(fm.sample_level(key, 7), fm.sample_sigma(key, 7))
  x0, noise = _normal(0, (2, 3, 4)), _normal(1, (2, 3, 4))
  sigma = np.array([0.4, 0.9], np.float32)
  xt, pred = fm.add_noise(x0, noise, sigma), x0 + 0.1
  np.testing.assert_array_equal(fm.sampler_prediction(xt, pred, sigma), fm.velocity(xt, pred, sigma))
  assert d.FlowMatching.kind == "flow" and "kind" not in {f.name for f in dataclasses.fields(fm)}


@pytest.mark.parametrize("prediction", ["eps", "v", "sample"])
def test_ddpm_common_interface(prediction):
  obj = d.DDPM(prediction=prediction)
  x0, noise = _normal(2, (4, 3, 5)), _normal(3, (4, 3, 5))
  key = jax.random.key(5)

  @jax.jit
  def run(x0, noise):
    t = obj.sample_level(key, 4)
    xt = obj.add_noise(x0, noise, t)
    pred = obj.target(x0, noise, t) + 0.25
    return t, obj.sample_timesteps(key, 4), obj.loss_terms(xt, pred, x0, noise, t), obj.sampler_prediction(xt, pred, t)

  t, t_ref, (pred, target), sampler_pred = (jax.tree.map(np.asarray, v) for v in run(x0, noise))
  assert t.dtype == np.int32 and t.shape == (4,)
  np.testing.assert_array_equal(t, t_ref)
  abar = _tables()[1][t][:, None, None]
  assert pred.dtype == target.dtype == np.float32
  np.testing.assert_allclose(target, _ddpm_target(prediction, x0, noise, abar), atol=1e-5)
  np.testing.assert_allclose(pred - target, 0.25, atol=1e-5)
  np.testing.assert_array_equal(sampler_pred, pred)  # DDIM consumes the prediction in its own parameterisation


def test_sample_dispatches_to_euler_and_ddim():
  x_T = _normal(4, (2, 3, 4))
  clean, mask = np.full(x_T.shape, 0.5, np.float32), np.array([[1.0, 0.0, 0.0]] * 2, np.float32)
  key = jax.random.key(6)

  def denoise(x, level):
    return 0.3 * x - 0.2 + 1e-3 * level[:, None, None]

  fm = d.FlowMatching(shift=2.0)
  got, ref, ref_shift = jax.jit(lambda x: (
      fm.sample(denoise, x, steps=5, shift=3.0, clean=clean, clean_mask=mask, rng=key),
      d.euler(denoise, x, steps=5, shift=3.0, clean=clean, clean_mask=mask),
      d.euler(denoise, x, steps=5, shift=2.0)))(x_T)
  np.testing.assert_array_equal(got, ref)
  np.testing.assert_array_equal(jax.jit(lambda x: fm.sample(denoise, x, steps=5))(x_T), ref_shift)  # shift default
  ddpm = d.DDPM(prediction="v")
  got, ref = jax.jit(lambda x: (
      ddpm.sample(denoise, x, steps=8, eta=0.5, rng=key, steps_offset=1, clean=clean, clean_mask=mask),
      d.ddim(denoise, x, objective=ddpm, steps=8, eta=0.5, rng=key, steps_offset=1, clean=clean,
             clean_mask=mask)))(x_T)
  np.testing.assert_array_equal(got, ref)
  with pytest.raises(d.DiffusionError, match="eta"):
    fm.sample(denoise, x_T, steps=5, eta=0.5)
  with pytest.raises(d.DiffusionError, match="shift"):
    ddpm.sample(denoise, x_T, steps=5, shift=3.0)


# ----------------------------------------------------------------------------------------------------- masked_mse

SHAPE = (2, 3, 4, 4, 5)
mse = jax.jit(d.masked_mse)


def test_masked_mse_without_mask_or_all_ones_is_the_mean():
  pred, target = _normal(4, SHAPE), _normal(5, SHAPE)
  plain = float(np.mean((pred - target) ** 2))
  assert float(mse(pred, target)) == pytest.approx(plain, rel=1e-6)
  for mask_shape in (SHAPE[:4], SHAPE[:4] + (1,), SHAPE):
    assert float(mse(pred, target, np.ones(mask_shape, np.float32))) == pytest.approx(plain, rel=1e-6)


@pytest.mark.parametrize("trailing", [(), (1,)])
def test_masked_mse_ignores_masked_elements(trailing):
  pred, target = _normal(6, SHAPE), _normal(7, SHAPE)
  mask = np.ones(SHAPE[:4], np.float32)
  mask[:, 0] = 0  # the clean condition frame does not count
  mask = mask.reshape(mask.shape + trailing)
  loss = float(mse(pred, target, mask))
  assert loss == pytest.approx(float(((pred - target) ** 2)[:, 1:].mean()), rel=1e-5)
  # Changing (even to NaN) a masked-out prediction leaves the loss unchanged ...
  for value in (100.0, np.nan):
    changed = pred.copy()
    changed[:, 0] = value
    assert float(mse(changed, target, mask)) == pytest.approx(loss, rel=1e-6)
  # ... but changing a counted one does.
  changed = pred.copy()
  changed[:, 1] += 1.0
  assert float(mse(changed, target, mask)) > loss + 0.1


def test_masked_mse_all_zero_mask_is_zero_and_bad_masks_raise():
  pred, target = _normal(8, SHAPE), _normal(9, SHAPE)
  loss_and_grad = jax.jit(jax.value_and_grad(d.masked_mse))
  for shape in (SHAPE[:4], SHAPE[:4] + (1,)):
    loss, grad = loss_and_grad(pred, target, np.zeros(shape, np.float32))
    assert float(loss) == 0.0
    assert np.all(np.asarray(grad) == 0)  # finite: no 0 / 0
  with pytest.raises(d.DiffusionError):
    d.masked_mse(pred, target, np.ones((2, 3, 4, 4, 2), np.float32))
  with pytest.raises(d.DiffusionError):
    d.masked_mse(pred, target[..., :2])
