"""RealCam-I2V's scene-constrained noise shaping (sec. 3.3, its equation and Fig. 6), for flow matching and DDPM.

While the noise level is above a threshold (0.9), the latents under the preview mask `m` are replaced by the
preview's latents `z_preview` noised to the current level with FRESH noise at every step:

    z_t <- m (alpha_t z_preview + sigma_t eps) + (1 - m) z_t,    eps ~ N(0, I) drawn anew at every step

with `alpha_t z_preview + sigma_t eps` the objective's own forward process (`objective.add_noise`): flow matching
`(1 - sigma) z + sigma eps`, DDPM `sqrt(abar_t) z + sqrt(1 - abar_t) eps`.

The paper's equation and its Fig. 6 disagree on where the preview goes. The equation (above) pastes the noised
preview into the state `z_t` before the network sees it; Fig. 6's caption says the selected pixels are pasted onto
the model's predicted clean latent `z_0`. camjax implements the equation as the default (`target="z_t"`, the
sampler hook `noise_shaping_hook`), which is also what CamI2V / RealCam-I2V's released DDIM sampler does (it
re-noises the preview latents with `q_sample` before every network call while `t >= 900`). The Fig. 6 variant
(`target="x0"`) cannot be a hook: a hook only sees the state before the network call, not the network's clean
prediction. It is `noise_shaping_denoiser`, a wrapper around the sampler's `denoise`: the clean estimate `x_0` of
the network output gets `m z_preview + (1 - m) x_0`, and the output is rewritten as the prediction (velocity, eps
or v) that has this clean estimate at the unchanged `z_t`. The sampler then forms the next state from it: Euler's
`z_{s'} = (s'/s) z_s + (1 - s'/s) x_0'` and deterministic DDIM's `sqrt(abar') x_0' + sqrt(1 - abar') eps'` with
`eps' = (z_t - sqrt(abar) x_0') / sqrt(1 - abar)`, i.e. the noise the model saw stays in `z_t` and only the clean
part changes. It draws no noise. `noise_shaping(denoise, ..., target=...)` returns the pair `(denoise, hooks)`
for either variant, so a method switches with one option.

The level compared with the threshold ("t > 0.9" in the paper, `t >= 900` of 1000 in CamI2V's DDPM code) is
`shaping_level`: sigma itself for flow matching (WAN's model timestep is `1000 sigma`, so sigma > 0.9 is
timestep > 900); `t / N` for DDPM, the paper's and the released code's reading. (The DDPM noise std
`sqrt(1 - abar_t)` would not do: with the scaled-linear betas it is above 0.9 for every `t >= 572`, so shaping would
cover 43% of the trajectory instead of 10%.) The comparison is strict (`level > threshold`): CamI2V's `t >= 900`
differs only at exactly t = 900, which DynamiCrafter's DDIM grid (`steps_offset = 1`: ..., 921, 901, 881, ...)
never visits.

Put `clean_hook` (the reference frame held clean) AFTER the shaping hook, so the condition frames win where both
apply.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from camjax.diffusion.broadcast import align_mask, per_example
from camjax.diffusion.errors import DiffusionError
from camjax.diffusion.samplers import SamplerStep

__all__ = ["SHAPING_STREAM", "TARGETS", "noise_shaping", "noise_shaping_denoiser", "noise_shaping_hook",
           "shaping_level"]

TARGETS = ("z_t", "x0")  # the paper's equation (a hook), Fig. 6's caption (a denoiser wrapper)

# A hook given its own `rng` draws from `fold_in(fold_in(rng, SHAPING_STREAM), step.index)`: with a bare
# `fold_in(rng, index)` the keys would equal DDIM's eta-noise keys `split(rng, steps)[index]` when the caller passes
# the sampler's rng here too (see `samplers.HOOK_STREAM`). The constant is "shap" in ASCII.
SHAPING_STREAM = 0x73686170


def _kind(objective, where: str) -> str:
  kind = getattr(objective, "kind", None)
  if kind not in ("flow", "ddpm"):
    raise DiffusionError(f"{where}: objective must be a FlowMatching or a DDPM, got {type(objective).__name__}")
  return kind


def shaping_level(objective, level):
  """The noise level noise shaping compares with its threshold, in [0, 1] (1 = pure noise).

  Args:
    objective: a `FlowMatching` or a `DDPM`.
    level: the sampler's level `[B]` (or scalar): sigma in [0, 1] (flow matching) or the timestep in [0, N) (DDPM).

  Returns:
    float32, the shape of `level`: sigma itself (flow matching) or `t / N` (DDPM; N = `num_train_timesteps`).

  Raises:
    DiffusionError: `objective` is neither objective.
  """
  level = jnp.asarray(level, jnp.float32)
  if _kind(objective, "shaping_level") == "flow":
    return level
  return level / float(objective.num_train_timesteps)


def _active(objective, level, threshold: float):
  """`shaping_level(objective, level) > threshold`, compared as `t > threshold N` for DDPM so that float32
  division cannot move a timestep such as 900 across a threshold of 0.9."""
  if objective.kind == "flow":
    return jnp.asarray(level, jnp.float32) > threshold
  return jnp.asarray(level, jnp.float32) > threshold * float(objective.num_train_timesteps)


def _check(objective, preview_latents, mask, threshold, where: str):
  _kind(objective, where)
  if preview_latents is None or mask is None:
    raise DiffusionError(f"{where} needs both `preview_latents` and `mask`")
  if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
    raise DiffusionError(f"{where}: threshold must be a number in [0, 1], got {threshold!r}")
  return jnp.asarray(preview_latents), jnp.asarray(mask)


def _fit(preview, mask, x, where: str):
  """`(preview float32 broadcast to x, mask [B, ..., 1...] float32)`; a mask without the batch axis
  (`[t, h, w]` for latents `[B, t, h, w, C]`) is shared by the batch."""
  if mask.ndim == x.ndim - 2:
    mask = mask[None]
  mask = align_mask(mask, x, where)
  fits = preview.ndim <= x.ndim and all(p in (1, n) for p, n in zip(preview.shape[::-1], x.shape[::-1]))
  if not fits:
    raise DiffusionError(f"{where}: preview_latents of shape {tuple(preview.shape)} do not broadcast to the latents "
                         f"{tuple(x.shape)}")
  return jnp.broadcast_to(preview, x.shape).astype(jnp.float32), mask


def noise_shaping_hook(preview_latents, mask, objective, *, threshold: float = 0.9, rng=None) -> Callable:
  """The paper's noise shaping as a sampler hook (`target="z_t"`, RealCam-I2V's equation in sec. 3.3).

  At every call with `shaping_level(objective, step.level) > threshold` (per example):

    `x <- m add_noise(preview_latents, eps, step.level) + (1 - m) x`,  `eps ~ N(0, I)` fresh at every step,

  nothing at the other calls or at the final one. `eps` is `jax.random.normal(key, x.shape, float32)` with
  `key = step.rng` (the sampler's hook key, distinct for every step) or, when `rng` is given,
  `fold_in(fold_in(rng, SHAPING_STREAM), step.index)`. The same keys give the same result.

  Args:
    preview_latents: `[B, t, h, w, C]` clean latents of the preview video (or anything broadcastable to the
      sampled latents, e.g. `[1, t, h, w, C]`).
    mask: `[B, t, h, w]`, `[t, h, w]` (shared by the batch) or with a trailing 1; 1 where the preview is pasted
      (`camjax.geometry.render.latent_mask`; bool or float).
    objective: the `FlowMatching` or `DDPM` the sampler runs.
    threshold: shaping applies while the level is above it (RealCam-I2V: 0.9); 1 switches it off.
    rng: optional PRNG key for the fresh noise; None uses the sampler's `step.rng` (pass `rng=` to the sampler).

  Returns:
    `hook(x, step: SamplerStep) -> x` for `euler` / `ddim` / `objective.sample`.

  Raises:
    DiffusionError: an unknown objective, a threshold outside [0, 1], a missing preview or mask; when called,
      shapes that do not fit the latents, or no key (neither `rng` nor a sampler `rng`).
  """
  preview_latents, mask = _check(objective, preview_latents, mask, threshold, "noise_shaping_hook")
  base = None if rng is None else jax.random.fold_in(rng, SHAPING_STREAM)

  def hook(x, step: SamplerStep):
    if step.final:
      return x
    preview, m = _fit(preview_latents, mask, x, "noise_shaping_hook")
    key = step.rng if base is None else jax.random.fold_in(base, step.index)
    if key is None:
      raise DiffusionError("noise_shaping_hook draws fresh noise at every step: give it `rng=` or pass `rng=` to "
                           "the sampler")
    active = _active(objective, step.level, threshold)  # [B] (or scalar)
    weight = m * per_example(active.astype(jnp.float32), x)
    # Drawn at every step, shaped or not (one draw of the latents' size, small next to a network call): a
    # `lax.cond` would skip it below the threshold but recompile at every eager call.
    noise = jax.random.normal(key, x.shape, jnp.float32)
    noised = objective.add_noise(preview, noise, step.level)
    return (weight * noised + (1.0 - weight) * x.astype(jnp.float32)).astype(x.dtype)

  return hook


def _prediction_from_x0(objective, x_t, x0, level):
  """The sampler prediction whose clean estimate at `x_t` is `x0` (float32): the velocity `(x_t - x0) / sigma`
  (flow), `eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)` or `v = sqrt(abar) eps - sqrt(1 - abar) x0` (DDPM)."""
  if objective.kind == "flow":
    sigma = per_example(jnp.asarray(level, jnp.float32), x_t)
    return (x_t - x0) / jnp.where(sigma > 0, sigma, 1.0)
  t = jnp.round(jnp.asarray(level)).astype(jnp.int32)
  abar = per_example(objective.alphas_cumprod()[t], x_t)
  eps = (x_t - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)
  if objective.prediction == "eps":
    return eps
  return jnp.sqrt(abar) * eps - jnp.sqrt(1.0 - abar) * x0


def noise_shaping_denoiser(denoise: Callable, preview_latents, mask, objective, *,
                           threshold: float = 0.9) -> Callable:
  """Fig. 6's variant (`target="x0"`): the preview pasted into the network's predicted clean latent.

  Wraps a sampler `denoise(x_t, level)`. Where `shaping_level(objective, level) > threshold` (per example) and
  `m > 0`, the output becomes the prediction at the same `x_t` whose clean estimate is
  `x_0' = m preview_latents + (1 - m) x_0`, with `x_0 = objective.predict_x0(x_t, pred, level)` (see the module
  docstring for the next state this gives); elsewhere the output is the network's, bit for bit. Draws no noise.

  Args:
    denoise: `denoise(x_t [B, ...], level [B]) -> prediction` as the sampler calls it (velocity for `euler`, the
      DDPM's eps or v for `ddim`; e.g. `guided_denoiser`).
    preview_latents: `[B, t, h, w, C]` clean preview latents (or broadcastable to the latents).
    mask: `[B, t, h, w]` or `[t, h, w]` (or with a trailing 1), 1 where the preview is pasted.
    objective: the `FlowMatching` or `DDPM` the sampler runs.
    threshold: shaping applies while the level is above it (in [0, 1]).

  Returns:
    `denoise(x_t, level) -> prediction`, the network's shape and dtype.

  Raises:
    DiffusionError: as `noise_shaping_hook`; when called, shapes that do not fit the latents.
  """
  preview_latents, mask = _check(objective, preview_latents, mask, threshold, "noise_shaping_denoiser")

  def shaped_denoise(x_t, level):
    pred = denoise(x_t, level)
    preview, m = _fit(preview_latents, mask, x_t, "noise_shaping_denoiser")
    active = _active(objective, level, threshold)
    weight = m * per_example(active.astype(jnp.float32), x_t)
    x32, p32 = x_t.astype(jnp.float32), pred.astype(jnp.float32)
    x0 = objective.predict_x0(x32, p32, level)
    pasted = _prediction_from_x0(objective, x32, weight * preview + (1.0 - weight) * x0, level)
    return jnp.where(weight > 0, pasted, p32).astype(pred.dtype)

  return shaped_denoise


def noise_shaping(denoise: Callable, preview_latents, mask, objective, *, target: str = "z_t",
                  threshold: float = 0.9, rng=None) -> tuple[Callable, tuple[Callable, ...]]:
  """Either variant as `(denoise, hooks)` for `objective.sample(denoise, x_T, hooks=hooks + more, rng=...)`.

  Args:
    denoise: the sampler's `denoise(x_t, level)`.
    preview_latents, mask, objective, threshold: as in `noise_shaping_hook`.
    target: "z_t" (the paper's equation, default): `denoise` unchanged and `(noise_shaping_hook(...),)`;
      "x0" (Fig. 6): `noise_shaping_denoiser(denoise, ...)` and no hook.
    rng: the hook's key (target "z_t" only; None uses the sampler's `step.rng`).

  Returns:
    `(denoise, hooks)`.

  Raises:
    DiffusionError: an unknown `target`, `rng` given with target "x0" (it draws no noise), or as the two builders.
  """
  if target not in TARGETS:
    raise DiffusionError(f"noise_shaping: unknown target {target!r}; choose one of {TARGETS}")
  if target == "z_t":
    return denoise, (noise_shaping_hook(preview_latents, mask, objective, threshold=threshold, rng=rng),)
  if rng is not None:
    raise DiffusionError("noise_shaping: target 'x0' draws no noise, so it takes no `rng`")
  return noise_shaping_denoiser(denoise, preview_latents, mask, objective, threshold=threshold), ()
