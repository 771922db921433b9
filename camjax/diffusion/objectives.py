"""Training objectives, one interface: rectified flow matching (WAN 2.1, CameraCtrl II, Track2View, RealCam-I2V)
and DDPM (DynamiCrafter, MotionFlow, RealCam-I2V).

Both objectives are frozen (hashable) dataclasses, so they can be passed to `jax.jit` as static arguments, and
`make_objective(cfg)` builds either from a config. Arrays are JAX arrays whose first axis is the batch `B`; latents
are channels-last `[B, T, H, W, C]`, but every function works for any `[B, ...]`. Per-example noise levels are `[B]`
(or scalars) and broadcast over the remaining axes.

The interface (`Objective`), in the order a method uses it; `level` is the objective's noise level:

  kind                                       "flow" or "ddpm" (class attribute)
  sample_level(rng, batch) -> [B]            training levels: sigma in [0, 1] float32 / step in [0, N) int32
  add_noise(x0, noise, level) -> x_t         the forward process
  model_timesteps(level) -> [B] float32      the network's timestep input: sigma * 1000 / the step itself
  loss_terms(x_t, pred, x0, noise, level)    (prediction, target) float32, the loss is their squared difference
  sampler_prediction(x_t, pred, level)       the network output as the sampler integrates it
  sample(denoise, x_T, *, steps, hooks=(), rng=None, **options)   runs `euler` (flow) or `ddim` (DDPM)

Equations:

- Flow matching: `x_t = (1 - sigma) x_0 + sigma eps`, velocity `v = dx_t / dsigma = eps - x_0`; the network outputs
  `v` ("velocity") or `x_0` ("sample", then `v = (x_t - x_0) / sigma`). Sampled with `euler`.
- DDPM (Ho et al. 2020): `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps` over N scaled-linear steps; the network
  outputs `eps` or `v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0` (Salimans & Ho 2022). Sampled with `ddim`
  (Song et al. 2021, eq. 12).

Raises `DiffusionError` for invalid fields (on construction), unknown kinds, fields or sampler options, and
per-example values or masks whose shapes do not fit the latents.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Protocol

import jax
import jax.numpy as jnp

from camjax.diffusion import samplers, schedules
from camjax.diffusion.broadcast import align_mask as _align_mask
from camjax.diffusion.broadcast import per_example as _per_example
from camjax.diffusion.errors import DiffusionError

__all__ = ["DDPM", "DiffusionError", "FlowMatching", "OBJECTIVES", "Objective", "make_objective", "masked_mse"]

FLOW_DENSITIES = ("uniform", "logit_normal")
FLOW_PREDICTIONS = ("velocity", "sample")
DDPM_PREDICTIONS = ("eps", "v", "sample")


class Objective(Protocol):
  """The interface `FlowMatching` and `DDPM` share (see the module docstring); a method can train and sample
  through it without knowing which objective it has."""

  kind: ClassVar[str]

  def sample_level(self, rng, batch: int) -> jax.Array: ...

  def add_noise(self, x0, noise, level) -> jax.Array: ...

  def model_timesteps(self, level) -> jax.Array: ...

  def loss_terms(self, x_t, pred, x0, noise, level) -> tuple[jax.Array, jax.Array]: ...

  def sampler_prediction(self, x_t, pred, level) -> jax.Array: ...

  def sample(self, denoise: Callable, x_T, *, steps: int, hooks: Sequence[Callable] = (), rng=None,
             **options) -> jax.Array: ...


def _unknown_options(where: str, unknown: Mapping, allowed: Sequence[str]):
  if unknown:
    raise DiffusionError(f"{where}: unknown sampler option(s) {sorted(unknown)}; it takes {list(allowed)}")


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
    kind: "flow" (class attribute).
    shift: timestep shift `s > 0` applied to the sampled training times (1 = none); also `sample`'s default
      sampling shift.
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

  kind: ClassVar[str] = "flow"

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

  def sample_level(self, rng, batch: int):
    """The interface's training level: `sample_sigma(rng, batch)`, float32 `[B]` in [0, 1]."""
    return self.sample_sigma(rng, batch)

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

  def sampler_prediction(self, x_t, pred, sigma):
    """What `euler` integrates: the velocity of the network output, `velocity(x_t, pred, sigma)`."""
    return self.velocity(x_t, pred, sigma)

  def sample(self, denoise, x_T, *, steps: int, hooks=(), rng=None, shift=None, clean=None, clean_mask=None,
             **unknown):
    """Samples with `euler(denoise, x_T, steps=steps, shift=shift, hooks=hooks, rng=rng, clean=..., clean_mask=...)`.

    Args:
      denoise: `denoise(x_t [B, ...], sigma [B]) -> velocity [B, ...]` (e.g. `guided_denoiser`).
      x_T: initial standard normal noise `[B, ...]`.
      steps: number of Euler steps (static).
      hooks, rng, clean, clean_mask: as in `euler`.
      shift: the sampling grid's timestep shift; None uses `self.shift` (CameraCtrl II samples at 12).

    Raises:
      DiffusionError: an option `euler` does not take (e.g. DDIM's `eta`), or as `euler`.
    """
    _unknown_options("FlowMatching.sample", unknown, ("shift", "clean", "clean_mask"))
    return samplers.euler(denoise, x_T, steps=steps, shift=self.shift if shift is None else shift, hooks=hooks,
                          rng=rng, clean=clean, clean_mask=clean_mask)


@dataclasses.dataclass(frozen=True)
class DDPM:
  """Discrete DDPM: `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`, `t` in {0, ..., N - 1}, scaled-linear betas.

  Attributes:
    kind: "ddpm" (class attribute).
    prediction: "eps" (the model predicts `eps`), "v" (it predicts `v = sqrt(abar) eps - sqrt(1 - abar) x_0`) or
      "sample" (it predicts `x_0`, diffusers' `prediction_type="sample"`; the loss is the x_0 MSE).
    num_train_timesteps: `N`.
    beta_start: first beta of the scaled-linear schedule.
    beta_end: last beta of the scaled-linear schedule.

  Raises:
    DiffusionError: on construction, for an unknown `prediction` or an invalid schedule.
  """

  kind: ClassVar[str] = "ddpm"

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

  def sample_level(self, rng, batch: int):
    """The interface's training level: `sample_timesteps(rng, batch)`, int32 `[B]` in [0, N)."""
    return self.sample_timesteps(rng, batch)

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
    """Regression target: `eps`, `v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0` for `prediction="v"`, or `x_0` for
    `prediction="sample"`."""
    if self.prediction == "eps":
      return noise
    if self.prediction == "sample":
      return x0
    a = self._abar(timesteps, x0)
    return (jnp.sqrt(a) * noise - jnp.sqrt(1.0 - a) * x0).astype(x0.dtype)

  def model_timesteps(self, timesteps):
    """The model's timestep input: the step index itself, as float32."""
    return jnp.asarray(timesteps).astype(jnp.float32)

  def loss_terms(self, x_t, pred, x0, noise, timesteps):
    """`(pred, target(x0, noise, timesteps))` as float32, the shape of `x0`: the network output and the `eps`
    (`v`, `x_0`) it regresses; `x_t` is unused (kept for the common interface)."""
    del x_t
    return pred.astype(jnp.float32), self.target(x0, noise, timesteps).astype(jnp.float32)

  def sampler_prediction(self, x_t, pred, timesteps):
    """What `ddim` consumes: the network output itself, in this objective's `prediction` parameterisation."""
    del x_t, timesteps
    return pred

  def predict_x0(self, x_t, pred, timesteps):
    """Clean estimate: `(x_t - sqrt(1 - abar) eps) / sqrt(abar)` (eps), `sqrt(abar) x_t - sqrt(1 - abar) v` (v) or
    `pred` itself (sample)."""
    if self.prediction == "sample":
      return pred
    a = self._abar(timesteps, x_t)
    if self.prediction == "eps":
      return (x_t - jnp.sqrt(1.0 - a) * pred) / jnp.sqrt(a)
    return jnp.sqrt(a) * x_t - jnp.sqrt(1.0 - a) * pred

  def predict_eps(self, x_t, pred, timesteps):
    """Noise estimate: `pred` itself (eps), `sqrt(abar) v + sqrt(1 - abar) x_t` (v) or
    `(x_t - sqrt(abar) x_0) / sqrt(1 - abar)` (sample)."""
    if self.prediction == "eps":
      return pred
    a = self._abar(timesteps, x_t)
    if self.prediction == "sample":
      return (x_t - jnp.sqrt(a) * pred) / jnp.sqrt(1.0 - a)
    return jnp.sqrt(a) * pred + jnp.sqrt(1.0 - a) * x_t

  def sample(self, denoise, x_T, *, steps: int, hooks=(), rng=None, eta=0.0, steps_offset: int = 0, clean=None,
             clean_mask=None, **unknown):
    """Samples with `ddim(denoise, x_T, objective=self, steps=steps, eta=eta, rng=rng, hooks=hooks,
    steps_offset=steps_offset, clean=..., clean_mask=...)`.

    Args:
      denoise: `denoise(x_t [B, ...], timesteps [B] float32) -> prediction` in `self.prediction`'s
        parameterisation (e.g. `guided_denoiser`).
      x_T: initial standard normal noise `[B, ...]`.
      steps: number of DDIM steps (static).
      hooks, rng, eta, steps_offset, clean, clean_mask: as in `ddim`.

    Raises:
      DiffusionError: an option `ddim` does not take (e.g. Euler's `shift`), or as `ddim`.
    """
    _unknown_options("DDPM.sample", unknown, ("eta", "steps_offset", "clean", "clean_mask"))
    return samplers.ddim(denoise, x_T, objective=self, steps=steps, eta=eta, rng=rng, hooks=hooks, clean=clean,
                         clean_mask=clean_mask, steps_offset=steps_offset)


OBJECTIVES = {"flow": FlowMatching, "ddpm": DDPM}


def make_objective(cfg) -> FlowMatching | DDPM:
  """Builds an objective from a config: a mapping or an `ml_collections.ConfigDict` with `kind` ("flow" or "ddpm")
  and any of that objective's dataclass fields (the rest keep their defaults).

  Fields that belong to the *other* kind (e.g. `shift` with `kind="ddpm"`, `num_train_timesteps` with
  `kind="flow"`) are ignored, so one config can carry both sets and switch with `--config.objective.kind=...`;
  a name that is a field of neither objective is an error.

  Examples:
    `make_objective({"kind": "flow", "shift": 1.0, "density": "logit_normal", "prediction": "sample"})`,
    `make_objective({"kind": "ddpm", "prediction": "eps", "num_train_timesteps": 1000, "beta_start": 0.00085,
    "beta_end": 0.012})`.

  Raises:
    DiffusionError: `cfg` is not a mapping, `kind` is missing or unknown, a name is a field of neither objective,
      or a field value is invalid (see the dataclasses).
  """
  if isinstance(cfg, Mapping):
    values = dict(cfg)
  elif callable(getattr(cfg, "items", None)):  # ml_collections.ConfigDict / FrozenConfigDict
    values = dict(cfg.items())
  else:
    raise DiffusionError(f"make_objective needs a mapping or ConfigDict, got {type(cfg).__name__}")
  kind = values.pop("kind", None)
  if kind not in OBJECTIVES:
    raise DiffusionError(f"unknown objective kind {kind!r}; choose one of {tuple(OBJECTIVES)}")
  fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in OBJECTIVES.items()}
  known = set().union(*fields.values())
  unknown = sorted(set(values) - known)
  if unknown:
    raise DiffusionError(f"unknown objective field(s) {unknown} for kind {kind!r}; {kind!r} takes "
                         f"{sorted(fields[kind])}")
  return OBJECTIVES[kind](**{k: v for k, v in values.items() if k in fields[kind]})


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
  small = _align_mask(mask, se, "masked_mse")
  mask = jnp.broadcast_to(small, se.shape)
  total = jnp.sum(jnp.where(mask != 0, mask * se, 0.0))
  # The count from the mask's own shape times the broadcast factor: a mask that is a constant (Track2View's fixed
  # target half) would otherwise be summed at full size by XLA's constant folding at compile time (seconds).
  count = jnp.sum(small) * float(math.prod(se.shape) // math.prod(small.shape))
  return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)
