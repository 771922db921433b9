"""Training objectives: rectified flow matching (WAN 2.1, CameraCtrl II) and DDPM (DynamiCrafter, MotionFlow).

Both objectives are frozen (hashable) dataclasses, so they can be passed to `jax.jit` as static arguments. Arrays
are JAX arrays whose first axis is the batch `B`; latents are channels-last `[B, T, H, W, C]`, but every function
works for any `[B, ...]`. Per-example scalars (`sigma`, `timesteps`) are `[B]` (or scalars) and broadcast over the
remaining axes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from camjax.diffusion import schedules
from camjax.errors import CamjaxError

FLOW_DENSITIES = ("uniform", "logit_normal")
FLOW_PREDICTIONS = ("velocity", "sample")
DDPM_PREDICTIONS = ("eps", "v")


class DiffusionError(CamjaxError, ValueError):
  """Invalid diffusion configuration or call: unknown density or parameterisation, mismatched condition sets, bad
  mask shape."""


def _per_example(v, x):
  """Reshapes per-example scalars `[B]` (or a scalar) to `[B, 1, ..., 1]` so they broadcast against `x [B, ...]`."""
  v = jnp.asarray(v)
  if v.ndim == 0:
    return v
  if v.ndim != 1 or v.shape[0] != x.shape[0]:
    raise DiffusionError(f"expected per-example values of shape [{x.shape[0]}] (or a scalar) for an array of shape "
                         f"{tuple(x.shape)}, got shape {tuple(v.shape)}")
  return v.reshape(v.shape + (1,) * (x.ndim - 1))


def _align_mask(mask, x, where: str):
  """Aligns a mask with the leading axes of `x [B, ...]` (appending trailing singleton axes) as float32.

  `[B, T, H, W]` and `[B, T, H, W, 1]` both become `[B, T, H, W, 1]` for `x [B, T, H, W, C]`.

  Raises:
    DiffusionError: the mask has more axes than `x` or does not broadcast to it.
  """
  mask = jnp.asarray(mask, dtype=jnp.float32)
  if mask.ndim > x.ndim:
    raise DiffusionError(f"{where}: mask of shape {tuple(mask.shape)} has more axes than the array "
                         f"{tuple(x.shape)}")
  mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
  if any(m not in (1, n) for m, n in zip(mask.shape, x.shape)):
    raise DiffusionError(f"{where}: mask of shape {tuple(mask.shape)} does not broadcast to the array "
                         f"{tuple(x.shape)} (masks are aligned with the leading axes)")
  return mask


@dataclasses.dataclass(frozen=True)
class FlowMatching:
  """Rectified flow matching: `x_t = (1 - sigma) x_0 + sigma eps`, the model regresses `v = eps - x_0`.

  Training draws `t` from `density` and uses `sigma = shift_sigma(t, shift)`; the WAN DiT is conditioned on
  `timestep = sigma * timestep_scale` (0..1000).

  The network either outputs the velocity (`prediction="velocity"`, WAN 2.1 and CameraCtrl II) or the clean sample
  (`prediction="sample"`, "x-prediction", Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise").
  An x-prediction network `x_theta` is turned into a velocity `v = (x_t - x_theta) / sigma`, so samplers and
  guidance see velocities either way, and it is trained with that velocity's loss, the denominator clamped at
  `min_sigma`: `|(x_theta - x_0) / max(sigma, min_sigma)|^2`. Use it when a token has many more dimensions than the
  network is wide (camjax's CPU default: 3072-dimensional pixel tokens, width 128): the velocity contains the noise,
  which a narrow network cannot pass through, while the clean sample lies on a low-dimensional manifold.

  Attributes:
    shift: timestep shift `s > 0` applied to the sampled times (1 = none).
    density: "uniform" (`t ~ U[0, 1)`) or "logit_normal" (`t = sigmoid(N(logit_mean, logit_std^2))`).
    logit_mean: mean of the logit-normal density.
    logit_std: standard deviation of the logit-normal density.
    timestep_scale: factor from sigma to the model's timestep input.
    prediction: what the network outputs, "velocity" or "sample" (see above).
    min_sigma: x-prediction's loss-denominator clamp.

  Raises:
    DiffusionError: on construction, for an unknown `density` or `prediction`, `shift <= 0`, `logit_std <= 0` or
      `min_sigma <= 0`.
  """

  shift: float = 1.0
  density: str = "logit_normal"
  logit_mean: float = 0.0
  logit_std: float = 1.0
  timestep_scale: float = 1000.0
  prediction: str = "velocity"
  min_sigma: float = 0.05

  def __post_init__(self):
    if self.density not in FLOW_DENSITIES:
      raise DiffusionError(f"unknown flow-matching density {self.density!r}; choose one of {FLOW_DENSITIES}")
    if not self.shift > 0:
      raise DiffusionError(f"FlowMatching.shift must be > 0, got {self.shift}")
    if not self.logit_std > 0:
      raise DiffusionError(f"FlowMatching.logit_std must be > 0, got {self.logit_std}")
    if self.prediction not in FLOW_PREDICTIONS:
      raise DiffusionError(f"unknown flow-matching prediction {self.prediction!r}; choose one of {FLOW_PREDICTIONS}")
    if not self.min_sigma > 0:
      raise DiffusionError(f"FlowMatching.min_sigma must be > 0, got {self.min_sigma}")

  def sample_sigma(self, rng, batch: int):
    """Draws training noise levels: `sigma = shift_sigma(t, shift)` with `t` from `density`; returns float32 `[B]`."""
    if self.density == "uniform":
      t = schedules.sample_timesteps_uniform(rng, (batch,))
    else:
      t = schedules.sample_timesteps_logit_normal(rng, (batch,), self.logit_mean, self.logit_std)
    return schedules.shift_sigma(t, self.shift)

  def add_noise(self, x0, noise, sigma):
    """Interpolates `x_t = (1 - sigma) x_0 + sigma eps`.

    Args:
      x0: clean latents `[B, ...]`.
      noise: standard normal noise, the shape of `x0`.
      sigma: noise levels in [0, 1], `[B]` or a scalar.

    Returns:
      `x_t`, the shape and dtype of `x0` (computed in at least float32).
    """
    s = _per_example(sigma, x0).astype(jnp.float32)
    return ((1.0 - s) * x0 + s * noise).astype(x0.dtype)

  def target(self, x0, noise, sigma=None):
    """The velocity regression target `v = eps - x_0` (`d x_t / d sigma`; independent of `sigma`)."""
    del sigma
    return noise - x0

  def model_timesteps(self, sigma):
    """The DiT's timestep input, `sigma * timestep_scale` (float32, the shape of `sigma`)."""
    return jnp.asarray(sigma, dtype=jnp.float32) * self.timestep_scale

  def velocity(self, x_t, pred, sigma):
    """The velocity of a network output at `x_t`: `pred` itself, or `(x_t - pred) / sigma` for x-prediction
    (`sigma > 0`, as on every step of a sampler; float32)."""
    if self.prediction == "velocity":
      return pred
    s = _per_example(sigma, x_t).astype(jnp.float32)
    return (x_t.astype(jnp.float32) - pred.astype(jnp.float32)) / s

  def loss_terms(self, x_t, pred, x0, noise, sigma):
    """`(prediction, target)` whose squared difference is the training loss of a network output `pred` at
    `x_t = add_noise(x0, noise, sigma)`: `(pred, eps - x_0)` for velocity prediction; for x-prediction the velocities
    `((x_t - pred) / d, (x_t - x_0) / d)` with `d = max(sigma, min_sigma)` (equal to `eps - x_0` for
    `sigma >= min_sigma`). float32, the shape of `x0`."""
    if self.prediction == "velocity":
      return pred.astype(jnp.float32), self.target(x0, noise).astype(jnp.float32)
    d = jnp.maximum(_per_example(sigma, x_t).astype(jnp.float32), self.min_sigma)
    x_t = x_t.astype(jnp.float32)
    return (x_t - pred.astype(jnp.float32)) / d, (x_t - x0.astype(jnp.float32)) / d

  def predict_x0(self, x_t, v, sigma):
    """Clean estimate from a velocity: `x_0 = x_t - sigma v`."""
    return x_t - _per_example(sigma, x_t) * v

  def predict_eps(self, x_t, v, sigma):
    """Noise estimate from a velocity: `eps = x_t + (1 - sigma) v`."""
    return x_t + (1.0 - _per_example(sigma, x_t)) * v


@dataclasses.dataclass(frozen=True)
class DDPM:
  """Discrete DDPM: `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`, `t` in {0, ..., N - 1}, scaled-linear betas.

  Attributes:
    prediction: "eps" (the model predicts `eps`) or "v" (it predicts `v = sqrt(abar) eps - sqrt(1 - abar) x_0`).
    num_train_timesteps: `N`.
    beta_start: first beta of the scaled-linear schedule.
    beta_end: last beta of the scaled-linear schedule.

  Raises:
    DiffusionError: on construction, for an unknown `prediction` or an invalid schedule.
  """

  prediction: str = "eps"
  num_train_timesteps: int = 1000
  beta_start: float = 0.00085
  beta_end: float = 0.012

  def __post_init__(self):
    if self.prediction not in DDPM_PREDICTIONS:
      raise DiffusionError(f"unknown DDPM prediction {self.prediction!r}; choose one of {DDPM_PREDICTIONS}")
    if int(self.num_train_timesteps) != self.num_train_timesteps or self.num_train_timesteps < 1:
      raise DiffusionError(f"DDPM.num_train_timesteps must be an integer >= 1, got {self.num_train_timesteps}")
    if not 0.0 < self.beta_start < 1.0 or not 0.0 < self.beta_end < 1.0:
      raise DiffusionError(f"DDPM betas must lie in (0, 1), got beta_start={self.beta_start}, "
                           f"beta_end={self.beta_end}")

  def betas(self):
    """`[N]` float32 scaled-linear betas."""
    return schedules.scaled_linear_betas(self.num_train_timesteps, self.beta_start, self.beta_end)

  def alphas_cumprod(self):
    """`[N]` float32 `abar_t`."""
    return schedules.alphas_cumprod(self.betas())

  def _abar(self, timesteps, x):
    t = jnp.round(jnp.asarray(timesteps)).astype(jnp.int32)
    return _per_example(self.alphas_cumprod()[t], x)

  def sample_timesteps(self, rng, batch: int):
    """Draws training steps uniformly from {0, ..., N - 1}; int32 `[B]`."""
    return jax.random.randint(rng, (batch,), 0, self.num_train_timesteps, dtype=jnp.int32)

  def add_noise(self, x0, noise, timesteps):
    """Forward process `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`.

    Args:
      x0: clean latents `[B, ...]`.
      noise: standard normal noise, the shape of `x0`.
      timesteps: integer steps `[B]` (or a scalar) in [0, N); floats are rounded.

    Returns:
      `x_t`, the shape and dtype of `x0`.
    """
    a = self._abar(timesteps, x0)
    return (jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise).astype(x0.dtype)

  def target(self, x0, noise, timesteps):
    """Regression target: `eps`, or `v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0` for `prediction="v"`."""
    if self.prediction == "eps":
      return noise
    a = self._abar(timesteps, x0)
    return (jnp.sqrt(a) * noise - jnp.sqrt(1.0 - a) * x0).astype(x0.dtype)

  def model_timesteps(self, timesteps):
    """The model's timestep input: the step index itself, as float32."""
    return jnp.asarray(timesteps).astype(jnp.float32)

  def predict_x0(self, x_t, pred, timesteps):
    """Clean estimate: `(x_t - sqrt(1 - abar) eps) / sqrt(abar)` (eps) or `sqrt(abar) x_t - sqrt(1 - abar) v` (v)."""
    a = self._abar(timesteps, x_t)
    if self.prediction == "eps":
      return (x_t - jnp.sqrt(1.0 - a) * pred) / jnp.sqrt(a)
    return jnp.sqrt(a) * x_t - jnp.sqrt(1.0 - a) * pred

  def predict_eps(self, x_t, pred, timesteps):
    """Noise estimate: `pred` itself (eps) or `sqrt(abar) v + sqrt(1 - abar) x_t` (v)."""
    if self.prediction == "eps":
      return pred
    a = self._abar(timesteps, x_t)
    return jnp.sqrt(a) * pred + jnp.sqrt(1.0 - a) * x_t


def masked_mse(pred, target, mask=None):
  """Mean squared error over the elements a mask counts: `sum(m (pred - target)^2) / sum(broadcast(m))`.

  The mask is aligned with the *leading* axes of `pred` and gets trailing singleton axes appended as needed, so for
  `pred [B, T, H, W, C]` the masks `[B, T, H, W]`, `[B, T, H, W, 1]`, `[B, T, 1, 1, 1]` and `[B, T, H, W, C]` all
  work; the denominator counts every element of `pred` the mask covers (a `[B, T, H, W]` mask weighs each of the C
  channels). A 0/1 mask gives the mean over the counted elements (1 = counts, 0 = ignored, e.g. the clean condition
  frames of CameraCtrl II); fractional masks give a weighted mean. Masked-out elements never contribute, even if
  they are NaN or inf.

  Args:
    pred: predictions `[B, ...]`.
    target: regression targets, the shape of `pred`.
    mask: optional weights `[B, ...]` of rank <= `pred`'s, broadcastable after trailing axes are appended.

  Returns:
    A float32 scalar; 0 when the mask counts nothing.

  Raises:
    DiffusionError: `pred` and `target` shapes differ, or the mask does not broadcast to `pred`.
  """
  if pred.shape != target.shape:
    raise DiffusionError(f"masked_mse: prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
  se = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  if mask is None:
    return jnp.mean(se)
  mask = jnp.broadcast_to(_align_mask(mask, se, "masked_mse"), se.shape)
  total = jnp.sum(jnp.where(mask != 0, mask * se, 0.0))
  count = jnp.sum(mask)
  return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)
