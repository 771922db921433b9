"""Samplers: Euler integration of the flow-matching ODE and DDIM for DDPM models.

A sampler takes a *denoiser* closure (the network, already wrapped with guidance, see
`camjax.diffusion.guidance.guided_denoiser`) and an initial noise `x_T [B, ...]` (latents are `[B, T, H, W, C]`).
Both samplers jit with `steps` static; the loop is a `jax.lax.fori_loop`, so the denoiser is traced once.

Clean conditioning (CameraCtrl II clip extension, image-to-video): tokens where `clean_mask` is 1 are held at the
given `clean` values, so the network always sees the conditioning frames, and the output contains them exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from camjax.diffusion import schedules
from camjax.diffusion.objectives import DDPM, DiffusionError, _align_mask, _per_example


def _clean_fixer(x, clean, clean_mask, where: str):
  """Returns `f(x, value) = m value + (1 - m) x` for the clean tokens, or None without clean conditioning."""
  if clean is None and clean_mask is None:
    return None
  if clean is None or clean_mask is None:
    raise DiffusionError(f"{where}: pass both `clean` and `clean_mask` (or neither)")
  mask = _align_mask(clean_mask, x, where)
  clean = jnp.asarray(clean)
  if jnp.broadcast_shapes(clean.shape, x.shape) != x.shape:
    raise DiffusionError(f"{where}: `clean` of shape {tuple(clean.shape)} does not broadcast to the latents "
                         f"{tuple(x.shape)}")

  def fix(x, value):
    return (mask * value + (1.0 - mask) * x).astype(x.dtype)

  return fix


def euler(denoise, x_T, *, steps: int = 32, shift=12.0, clean=None, clean_mask=None):
  """Integrates the flow-matching ODE `dx/dsigma = v(x, sigma)` from sigma = 1 (noise) to 0 with explicit Euler.

  With `sigma_i = sigma_schedule(steps, shift)[i]` the update is `x <- x + (sigma_{i+1} - sigma_i) v(x, sigma_i)`
  (float32 arithmetic, result in `x_T`'s dtype). The defaults are CameraCtrl II's: 32 steps, shift 12. Euler's
  global error is first order in the step size; a coarse final step (from `sigma_1`, 0.28 for 32 steps at shift 12)
  returns roughly the posterior mean `E[x_0 | x_sigma]`, i.e. slightly under-dispersed samples.

  Args:
    denoise: `denoise(x_t [B, ...], sigma [B] float32 in [0, 1]) -> velocity [B, ...]` (`eps - x_0`).
    x_T: initial standard normal noise `[B, ...]`.
    steps: number of Euler steps (static Python int >= 1).
    shift: timestep shift of the sigma grid (> 0).
    clean: optional clean condition latents, broadcastable to `x_T`.
    clean_mask: optional mask aligned with `x_T`'s leading axes (`[B, T, H, W]`, `[B, T, H, W, 1]`, ...), 1 where
      the token is a fixed clean condition. Before every `denoise` call and at the end,
      `x = clean_mask * clean + (1 - clean_mask) * x`.

  Returns:
    Samples `x_0`, the shape and dtype of `x_T`.

  Raises:
    DiffusionError: bad `steps` / `shift`, only one of `clean` / `clean_mask`, or mask / clean shapes that do not
      fit `x_T`.
  """
  x_T = jnp.asarray(x_T)
  sigmas = schedules.sigma_schedule(steps, shift)
  fix = _clean_fixer(x_T, clean, clean_mask, "euler")
  batch = x_T.shape[0]

  def body(i, x):
    if fix is not None:
      x = fix(x, clean)
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    v = denoise(x, jnp.full((batch,), sigma, dtype=jnp.float32))
    return (x.astype(jnp.float32) + (sigma_next - sigma) * v.astype(jnp.float32)).astype(x.dtype)

  x = jax.lax.fori_loop(0, int(steps), body, x_T)
  return x if fix is None else fix(x, clean)


def ddim_timesteps(num_train_timesteps: int, steps: int, steps_offset: int = 0):
  """DDIM's "leading" timestep spacing (diffusers `DDIMScheduler`, `timestep_spacing="leading"`).

  `ratio = N // steps`; timesteps are `arange(steps) * ratio + steps_offset`, in decreasing order, so 50 steps over
  N = 1000 give 980, 960, ..., 0.

  Args:
    num_train_timesteps: `N`.
    steps: number of sampling steps, `1 <= steps <= N`.
    steps_offset: constant added to every timestep (diffusers' `steps_offset`; LVDM / DynamiCrafter use 1).

  Returns:
    NumPy int32 `[steps]`, decreasing.

  Raises:
    DiffusionError: `steps` outside [1, N].
  """
  if int(steps) != steps or not 1 <= steps <= num_train_timesteps:
    raise DiffusionError(f"DDIM needs 1 <= steps <= {num_train_timesteps}, got {steps}")
  ratio = num_train_timesteps // int(steps)
  return (np.arange(int(steps))[::-1] * ratio + steps_offset).astype(np.int32)


def ddim_step(objective: DDPM, x_t, pred, t, t_prev, *, eta=0.0, noise=None):
  """One DDIM update (Song et al. 2021, eq. 12) from step `t` to `t_prev`, as diffusers' `DDIMScheduler.step`.

  With `a = abar[t]`, `a' = abar[t_prev]` (or `abar[0]` when `t_prev < 0`, diffusers' `set_alpha_to_one=False`),
  `x_0` and `eps` recovered from `pred` via the objective's parameterisation, and
  `sigma_t = eta sqrt((1 - a') / (1 - a) (1 - a / a'))`:

    `x_{t_prev} = sqrt(a') x_0 + sqrt(1 - a' - sigma_t^2) eps + sigma_t z`,  `z ~ N(0, I)` (`noise`).

  No clipping or thresholding of `x_0` is applied.

  Args:
    objective: the `DDPM` the model was trained with.
    x_t: current sample `[B, ...]`.
    pred: model output at `(x_t, t)` in the objective's parameterisation ("eps" or "v").
    t: current integer step, scalar or `[B]`.
    t_prev: next (smaller) step, scalar or `[B]`; negative means "past the end".
    eta: 0 for deterministic DDIM, 1 for DDPM-like ancestral noise.
    noise: `z`, the shape of `x_t`; required when `eta != 0`.

  Returns:
    `x_{t_prev}`, the shape and dtype of `x_t`.

  Raises:
    DiffusionError: `noise` is None and `eta` is not the Python number 0.
  """
  if noise is None and not (isinstance(eta, (int, float)) and eta == 0):
    raise DiffusionError("ddim_step: eta != 0 needs `noise`")
  abar = objective.alphas_cumprod()
  t_prev = jnp.asarray(t_prev)
  a = _per_example(abar[jnp.asarray(t).astype(jnp.int32)], x_t)
  a_prev = _per_example(jnp.where(t_prev >= 0, abar[jnp.maximum(t_prev, 0).astype(jnp.int32)], abar[0]), x_t)
  x_t32 = x_t.astype(jnp.float32)
  pred32 = pred.astype(jnp.float32)
  x0 = objective.predict_x0(x_t32, pred32, t)
  eps = objective.predict_eps(x_t32, pred32, t)
  std = eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
  out = jnp.sqrt(a_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - a_prev - std**2, 0.0)) * eps
  if noise is not None:
    out = out + std * noise.astype(jnp.float32)
  return out.astype(x_t.dtype)


def ddim(denoise, x_T, *, objective: DDPM, steps: int = 50, eta=0.0, rng=None, clean=None, clean_mask=None,
         steps_offset: int = 0):
  """DDIM sampling over `ddim_timesteps(N, steps, steps_offset)`, matching diffusers' `DDIMScheduler` with
  `timestep_spacing="leading"`, `set_alpha_to_one=False`, no clipping.

  Each step calls `denoise(x, t)` and applies `ddim_step` toward the next timestep; the last step goes to
  `abar[0]` (not to 1), so the result is the sample at noise level `t = 0`, like diffusers and LVDM.

  Clean conditioning: the clean tokens are re-noised to the current level before every `denoise` call,
  `x = m add_noise(clean, x_T, t) + (1 - m) x`, using `x_T` itself as the fixed noise (drawn once, by the caller; it
  is standard normal everywhere, and its values under the mask are otherwise unused), and are set to `clean` exactly
  at the end.

  Args:
    denoise: `denoise(x_t [B, ...], timesteps [B] float32) -> prediction` in `objective.prediction`'s
      parameterisation.
    x_T: initial standard normal noise `[B, ...]`.
    objective: the `DDPM` the model was trained with.
    steps: number of DDIM steps (static).
    eta: stochasticity; 0 = deterministic DDIM. A non-zero value needs `rng`.
    rng: PRNG key for the `eta > 0` noise (split once per step).
    clean: optional clean condition latents, broadcastable to `x_T`.
    clean_mask: optional mask aligned with `x_T`'s leading axes, 1 = fixed clean token.
    steps_offset: added to every timestep (diffusers' `steps_offset`).

  Returns:
    Samples, the shape and dtype of `x_T`.

  Raises:
    DiffusionError: `objective` is not a `DDPM`, bad `steps`, `eta` other than the number 0 without `rng`, or
      clean / mask shapes that do not fit.
  """
  if not isinstance(objective, DDPM):
    raise DiffusionError(f"ddim needs a DDPM objective, got {type(objective).__name__}")
  stochastic = not (isinstance(eta, (int, float)) and eta == 0)
  if stochastic and rng is None:
    raise DiffusionError("ddim: eta != 0 needs an `rng` key")
  x_T = jnp.asarray(x_T)
  ts_np = ddim_timesteps(objective.num_train_timesteps, steps, steps_offset)
  ratio = objective.num_train_timesteps // int(steps)
  ts = jnp.asarray(ts_np)
  ts_prev = jnp.asarray(ts_np - ratio)
  fix = _clean_fixer(x_T, clean, clean_mask, "ddim")
  keys = jax.random.split(rng, int(steps)) if stochastic else None
  batch = x_T.shape[0]

  def body(i, x):
    t, t_prev = ts[i], ts_prev[i]
    if fix is not None:
      x = fix(x, objective.add_noise(jnp.broadcast_to(clean, x.shape).astype(x.dtype), x_T, t))
    pred = denoise(x, jnp.full((batch,), t, dtype=jnp.float32))
    noise = jax.random.normal(keys[i], x.shape, dtype=jnp.float32) if stochastic else None
    return ddim_step(objective, x, pred, t, t_prev, eta=eta, noise=noise)

  x = jax.lax.fori_loop(0, int(steps), body, x_T)
  return x if fix is None else fix(x, clean)
