"""MotionFlow's sampler: the eps objective's DDIM trajectory against diffusers' `DDIMScheduler`, every intermediate
`x_t` compared (REFERENCE.md section 7).

Configuration matched on both sides: 1000 scaled-linear betas 0.00085 -> 0.012, "leading" timestep spacing (camjax's
only spacing; diffusers' default), `set_alpha_to_one=False` (the last step lands on `abar[0]`), no clipping. The
"network" is a fixed, deterministic function of `(x, t)`. For `eta > 0` diffusers gets, as `variance_noise`, the noise
camjax draws itself (`ddim`'s documented scheme: the noise of step i is `normal(split(rng, steps)[i])`), so both
trajectories are the same up to float32 rounding.

`tests/diffusion/test_samplers.py` checks single `ddim_step` calls against diffusers; here the whole sampler runs
(`DDPM.sample`, i.e. `ddim` with its timestep table, its `fori_loop`, its key split and its final step), and a sampler
hook records the `x_t` each network call sees.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax import diffusion as d
from camjax.diffusion import samplers
from camjax.xla_flags import fast_jit

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

SHAPE = (2, 3, 4, 4, 2)  # [B, T, H, W, C] latents


def fake_network(x, t):
  """A deterministic stand-in for the eps (or v) network: `0.1 x + 0.02 + 2e-4 t`, `t` per example."""
  t = t.reshape((-1,) + (1,) * (x.ndim - 1))
  return 0.1 * x + 0.02 + 2e-4 * t


def diffusers_trajectory(x_T, *, prediction, steps, eta, steps_offset, noises):
  """diffusers' DDIM loop: `(timesteps, [x_T, x_t1, ..., x_0])` as NumPy."""
  sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                  beta_end=0.012, timestep_spacing="leading", steps_offset=steps_offset,
                                  set_alpha_to_one=False, clip_sample=False, thresholding=False,
                                  prediction_type={"eps": "epsilon", "v": "v_prediction", "sample": "sample"}[prediction])
  sched.set_timesteps(steps)
  x = torch.from_numpy(np.asarray(x_T))
  xs = [x.numpy()]
  for i, t in enumerate(sched.timesteps):
    pred = fake_network(x, torch.full((x.shape[0],), float(t)))
    kw = {"variance_noise": torch.from_numpy(np.array(noises[i]))} if eta else {}
    x = sched.step(pred, t, x, eta=eta, **kw).prev_sample
    xs.append(x.numpy())
  return sched.timesteps.numpy(), xs


@functools.cache
def _sampler(prediction, steps, eta, steps_offset):
  """camjax's DDIM (through the objective interface), returning the final sample and, from a recording hook, the
  `x_t` and the timestep of every network call."""
  objective = d.DDPM(prediction=prediction, num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012)

  def run(x_T, rng):
    def record(x, step):  # hooks see x before every network call (index 0 .. steps - 1) and at the end (index steps)
      jax.debug.callback(lambda i, lvl, xx: seen.append((int(i), np.asarray(lvl), np.asarray(xx))), step.index,
                         step.level, x, ordered=True)
      return x

    return objective.sample(lambda x, t: fake_network(x, t), x_T, steps=steps, hooks=(record,), rng=rng, eta=eta,
                            steps_offset=steps_offset)

  seen: list = []
  return fast_jit(run), seen


CASES = [  # (prediction, steps, eta, steps_offset)
    ("eps", 50, 0.0, 0),  # deterministic DDIM, SD's default table 980 ... 0
    ("eps", 25, 0.0, 1),  # steps_offset 1 (SD 1.5 / AnimateDiff / LVDM): 961 ... 1
    ("eps", 30, 0.6, 1),  # stochastic, 1000 not a multiple of the steps (ratio 33)
    ("v", 20, 1.0, 0),  # v-prediction, DDPM-like eta = 1
    ("sample", 20, 0.0, 1),  # x_0-prediction (MotionFlow's CPU default with the depth-warp anchor)
]


@pytest.mark.parametrize("prediction, steps, eta, steps_offset", CASES)
def test_ddim_trajectory_matches_diffusers(prediction, steps, eta, steps_offset):
  rng = jax.random.key(3)
  x_T = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
  # The noise camjax's ddim injects at step i (documented in `samplers.ddim`), handed to diffusers as well.
  keys = jax.random.split(rng, steps)
  noises = [np.asarray(jax.random.normal(keys[i], SHAPE, jnp.float32)) for i in range(steps)]

  ref_ts, ref_xs = diffusers_trajectory(x_T, prediction=prediction, steps=steps, eta=eta, steps_offset=steps_offset,
                                        noises=noises)
  run, seen = _sampler(prediction, steps, eta, steps_offset)
  seen.clear()
  out = np.asarray(jax.block_until_ready(run(x_T, rng)))
  jax.effects_barrier()

  ours = {i: (lvl, xx) for i, lvl, xx in seen}
  assert sorted(ours) == list(range(steps + 1))
  np.testing.assert_array_equal(samplers.ddim_timesteps(1000, steps, steps_offset), ref_ts)
  np.testing.assert_array_equal([ours[i][0][0] for i in range(steps)], ref_ts.astype(np.float32))
  assert ref_ts[0] == (steps - 1) * (1000 // steps) + steps_offset
  for i in range(steps + 1):
    np.testing.assert_allclose(ours[i][1], ref_xs[i], rtol=1e-5, atol=1e-5,
                               err_msg=f"x before network call {i} (t = {ref_ts[i] if i < steps else 'end'})")
  np.testing.assert_allclose(out, ref_xs[-1], rtol=1e-5, atol=1e-5)
  # Not vacuous: the trajectory moves far from the start, and eta > 0 takes another path than eta = 0.
  assert np.abs(ref_xs[-1] - ref_xs[0]).max() > 0.5
  if eta:
    _, det_xs = diffusers_trajectory(x_T, prediction=prediction, steps=steps, eta=0.0, steps_offset=steps_offset,
                                     noises=noises)
    assert np.abs(det_xs[-1] - ref_xs[-1]).max() > 0.05


def test_set_alpha_to_one_true_differs_only_in_the_last_step():
  """What camjax does NOT do: `set_alpha_to_one=True` (diffusers' default; AnimateDiff's scheduler config) ends the
  last step on `abar = 1`, i.e. returns the x_0 prediction. camjax matches `set_alpha_to_one=False` (SD 1.5), so the
  two differ by a small amount on the last step only."""
  x_T = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
  steps = 10
  _, ours = diffusers_trajectory(x_T, prediction="eps", steps=steps, eta=0.0, steps_offset=1, noises=None)
  sched = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                  set_alpha_to_one=True, clip_sample=False)
  sched.set_timesteps(steps)
  x = torch.from_numpy(x_T)
  for t in sched.timesteps:
    x = sched.step(fake_network(x, torch.full((x.shape[0],), float(t))), t, x).prev_sample
  gap = np.abs(x.numpy() - ours[-1]).max()
  assert 1e-3 < gap < 0.1, gap
