"""Noise schedules: flow-matching sigmas (with timestep shift) and DDPM betas / cumulative alphas.

Flow matching (WAN 2.1, SD3, CameraCtrl II) interpolates `x_t = (1 - sigma) x_0 + sigma eps` with `sigma` in [0, 1]
(1 = pure noise). The *timestep shift* `s` remaps a uniform grid toward the noisy end, which high-resolution video
needs because its signal survives more noise than a small image does.

DDPM (DynamiCrafter, MotionFlow) uses 1000 discrete steps with the "scaled linear" betas of Stable Diffusion and
`x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`.

Every function is jit-able; integer sizes (`steps`, `num_train_timesteps`, shapes) are static. Invalid sizes,
shifts or betas given as Python numbers raise `DiffusionError` (from `camjax.diffusion.errors`, the floor below).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from camjax.diffusion.errors import DiffusionError


def _check_shift(shift):
  if isinstance(shift, (int, float)) and not shift > 0:
    raise DiffusionError(f"timestep shift must be > 0, got {shift}")


def shift_sigma(t, shift):
  """Applies the flow-matching timestep shift, `sigma = s t / (1 + (s - 1) t)`.

  The map fixes 0 and 1, is strictly increasing on [0, 1] for `s > 0`, is the identity for `s = 1`, and moves every
  interior point toward 1 (more noise) for `s > 1`; it is the SD3 / WAN resolution shift written on sigma.

  Args:
    t: unshifted times in [0, 1], any shape.
    shift: the shift `s > 0` (Python number or scalar array).

  Returns:
    Shifted sigmas, the shape of `t`.

  Raises:
    DiffusionError: `shift` is a Python number `<= 0`.
  """
  _check_shift(shift)
  t = jnp.asarray(t, dtype=jnp.result_type(t, jnp.float32))
  return shift * t / (1.0 + (shift - 1.0) * t)


def sample_timesteps_uniform(rng, shape):
  """Draws training times `t ~ U[0, 1)` of the given shape (float32)."""
  return jax.random.uniform(rng, shape, dtype=jnp.float32)


def sample_timesteps_logit_normal(rng, shape, mean=0.0, std=1.0):
  """Draws training times `t = sigmoid(n)`, `n ~ N(mean, std^2)` (SD3's logit-normal density, float32).

  The median of `t` is `sigmoid(mean)`; a positive `mean` favours noisier times.
  """
  return jax.nn.sigmoid(mean + std * jax.random.normal(rng, shape, dtype=jnp.float32))


def sigma_schedule(steps: int, shift=1.0):
  """Inference sigmas `shift_sigma(linspace(1, 0, steps + 1), shift)`: `[steps + 1]` float32 from 1 down to 0.

  Args:
    steps: number of integration steps (static Python int, >= 1).
    shift: timestep shift `s > 0` (CameraCtrl II samples with 32 steps and `s = 12`).

  Returns:
    `[steps + 1]` strictly decreasing sigmas with `sigma[0] = 1` and `sigma[-1] = 0`.

  Raises:
    DiffusionError: `steps < 1` or `shift <= 0`.
  """
  if int(steps) != steps or steps < 1:
    raise DiffusionError(f"sigma_schedule needs an integer number of steps >= 1, got {steps}")
  return shift_sigma(jnp.linspace(1.0, 0.0, int(steps) + 1, dtype=jnp.float32), shift)


def scaled_linear_betas(num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
  """Stable Diffusion's "scaled linear" betas, `linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2` (float32, `[N]`).

  Raises:
    DiffusionError: `num_train_timesteps < 1` or betas outside (0, 1).
  """
  if int(num_train_timesteps) != num_train_timesteps or num_train_timesteps < 1:
    raise DiffusionError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps}")
  for name, b in (("beta_start", beta_start), ("beta_end", beta_end)):
    if isinstance(b, (int, float)) and not 0.0 < b < 1.0:
      raise DiffusionError(f"{name} must lie in (0, 1), got {b}")
  root = jnp.linspace(jnp.sqrt(jnp.float32(beta_start)), jnp.sqrt(jnp.float32(beta_end)), int(num_train_timesteps),
                      dtype=jnp.float32)
  return root**2


def alphas_cumprod(betas):
  """Cumulative signal fractions `abar_t = prod_{i <= t} (1 - beta_i)`, `[N] -> [N]` (float32, decreasing)."""
  return jnp.cumprod(1.0 - jnp.asarray(betas, dtype=jnp.float32))
