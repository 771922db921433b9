"""Samplers: Euler integration of the flow-matching ODE and DDIM for DDPM models, with per-step hooks and an RNG.

Interface (arrays are `[B, ...]`; video latents are `[B, T, H, W, C]`):

- `denoise(x_t [B, ...], level [B] float32) -> [B, ...]`: the network, already wrapped with guidance (see
  `camjax.diffusion.guidance.guided_denoiser`). For `euler` the level is `sigma` in [0, 1] and the output is the
  velocity `eps - x_0` (`FlowMatching.sampler_prediction`); for `ddim` the level is the integer timestep in [0, N)
  as float32 and the output is in the `DDPM`'s own parameterisation (eps or v).
- `hook(x [B, ...], step: SamplerStep) -> x [B, ...]` (same shape and dtype): hooks run in the order given, before
  every `denoise` call and once more after the last step with `step.final = True` (a Python bool, so a hook can
  branch on it statically). `step.level` is the level the following `denoise` call receives (0 at the final call),
  `step.x_T` the initial noise, `step.rng` a key distinct for every call (None without `rng`). Clean conditioning
  (CameraCtrl II clip extension, image-to-video, Track2View source views) is the hook `clean_hook`; RealCam-I2V's
  scene-constrained noise shaping is a hook drawing fresh noise from `step.rng`.

Updates:

- Euler on the flow `x_sigma = (1 - sigma) x_0 + sigma eps`: `x <- x + (sigma_{i+1} - sigma_i) v(x, sigma_i)` over
  `sigma_schedule(steps, shift)` (from 1 down to 0).
- DDIM (Song et al. 2021, eq. 12), as diffusers' `DDIMScheduler` (`timestep_spacing="leading"`,
  `set_alpha_to_one=False`, no clipping): `x_{t'} = sqrt(a') x_0 + sqrt(1 - a' - s_t^2) eps + s_t z` with
  `a = abar_t`, `a' = abar_{t'}` and `s_t = eta sqrt((1 - a') / (1 - a) (1 - a / a'))`.

Both samplers jit with `steps` static; the loop is a `jax.lax.fori_loop`, so `denoise` and each hook are traced once
(twice for hooks: in the loop and at the final call). Bad arguments raise `DiffusionError` while tracing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from camjax.diffusion import schedules
from camjax.diffusion.broadcast import align_mask, per_example
from camjax.diffusion.errors import DiffusionError

# The hook keys come from `fold_in(rng, HOOK_STREAM)`, a stream of their own: with JAX's partitionable threefry,
# `split(rng, n)[i] == fold_in(rng, i)`, so keys `fold_in(rng, i)` would repeat DDIM's eta noise keys
# (`split(rng, steps)[i]`) and a noise-shaping hook would add the same noise twice. The constant is "hook" in ASCII.
HOOK_STREAM = 0x686F6F6B


class SamplerStep(NamedTuple):
  """What a sampler hook sees at one call.

  Attributes:
    index: int32 scalar, the step about to be taken (0 .. steps - 1), `steps` at the final call.
    level: `[B]` float32, the level the following `denoise` call receives: `sigma` (Euler) or the timestep (DDIM);
      0 at the final call.
    x_T: the initial noise `[B, ...]`.
    rng: `fold_in(fold_in(rng, HOOK_STREAM), index)`, a key distinct for every call and deterministic for a given
      `rng`; None when the sampler got no `rng`.
    final: True only at the call after the last step (a Python bool).
  """

  index: jax.Array
  level: jax.Array
  x_T: jax.Array
  rng: jax.Array | None
  final: bool


def _step(index, level, x_T, hook_rng, final: bool) -> SamplerStep:
  index = jnp.asarray(index, dtype=jnp.int32)
  rng = None if hook_rng is None else jax.random.fold_in(hook_rng, index)
  return SamplerStep(index=index, level=level, x_T=x_T, rng=rng, final=final)


def _run_hooks(hooks: Sequence[Callable], x, step: SamplerStep):
  for n, hook in enumerate(hooks):
    out = hook(x, step)
    if getattr(out, "shape", None) != x.shape or getattr(out, "dtype", None) != x.dtype:
      raise DiffusionError(f"sampler hook {n} ({getattr(hook, '__name__', type(hook).__name__)}) returned "
                           f"{getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}; it must return "
                           f"the latents' shape {tuple(x.shape)} and dtype {x.dtype}")
    x = out
  return x


def _clean_mask(x, clean, clean_mask, where: str):
  """Checks clean conditioning against the latents `x`; returns the aligned float32 mask."""
  mask = align_mask(clean_mask, x, where)
  if jnp.broadcast_shapes(jnp.shape(clean), x.shape) != x.shape:
    raise DiffusionError(f"{where}: `clean` of shape {tuple(jnp.shape(clean))} does not broadcast to the latents "
                         f"{tuple(x.shape)}")
  return mask


def clean_hook(clean, clean_mask, objective=None) -> Callable:
  """The clean-token hook: tokens where `clean_mask` is 1 are held at `clean`, so the network sees the condition
  frames at every step and the output contains them exactly.

  - Flow matching (`objective` None or a `FlowMatching`): `x = m clean + (1 - m) x` at every call.
  - DDPM (`objective` a `DDPM`): before each step the clean tokens are re-noised to the current level,
    `x = m add_noise(clean, x_T, level) + (1 - m) x`, using `x_T` itself as the fixed noise (standard normal
    everywhere, its values under the mask otherwise unused); at the final call `x = m clean + (1 - m) x`.

  Args:
    clean: clean condition latents, broadcastable to the sampled latents `[B, ...]`.
    clean_mask: mask aligned with the latents' leading axes (`[B, T, H, W]`, `[B, T, H, W, 1]`, ...), 1 where the
      token is a fixed clean condition.
    objective: None, a `FlowMatching` or a `DDPM` (its `kind` decides).

  Returns:
    `hook(x, step) -> x`.

  Raises:
    DiffusionError: `clean` or `clean_mask` is None, or `objective` has an unknown `kind`; when called, shapes
      that do not fit the latents.
  """
  kind = "flow" if objective is None else getattr(objective, "kind", None)
  if kind not in ("flow", "ddpm"):
    raise DiffusionError(f"clean_hook: objective must be None, a FlowMatching or a DDPM, got "
                         f"{type(objective).__name__}")
  if clean is None or clean_mask is None:
    raise DiffusionError("clean_hook needs both `clean` and `clean_mask`")
  clean = jnp.asarray(clean)

  def hook(x, step: SamplerStep):
    mask = _clean_mask(x, clean, clean_mask, "clean_hook")
    if kind == "flow" or step.final:
      value = clean
    else:
      value = objective.add_noise(jnp.broadcast_to(clean, x.shape).astype(x.dtype), step.x_T, step.level)
    return (mask * value + (1.0 - mask) * x).astype(x.dtype)

  return hook


def _with_clean(hooks, x_T, clean, clean_mask, objective, where: str) -> tuple:
  """`hooks` with `clean_hook` prepended when the `clean=` / `clean_mask=` shorthand is used."""
  hooks = tuple(hooks)
  if clean is None and clean_mask is None:
    return hooks
  if clean is None or clean_mask is None:
    raise DiffusionError(f"{where}: pass both `clean` and `clean_mask` (or neither)")
  _clean_mask(x_T, clean, clean_mask, where)
  return (clean_hook(clean, clean_mask, objective),) + hooks


def _hook_rng(rng):
  return None if rng is None else jax.random.fold_in(rng, HOOK_STREAM)


def euler(denoise, x_T, *, steps: int = 32, shift=12.0, hooks: Sequence[Callable] = (), rng=None, clean=None,
          clean_mask=None):
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
    hooks: `hook(x, step: SamplerStep) -> x`, run in order before every `denoise` call and once after the last step
      (`step.final`); `step.level` is `sigma_i` (0 at the final call).
    rng: optional PRNG key for the hooks' `step.rng`.
    clean: optional clean condition latents, broadcastable to `x_T`; with `clean_mask`, shorthand for prepending
      `clean_hook(clean, clean_mask)` to `hooks`.
    clean_mask: optional mask aligned with `x_T`'s leading axes, 1 where the token is a fixed clean condition:
      `x = clean_mask * clean + (1 - clean_mask) * x` before every `denoise` call and at the end.

  Returns:
    Samples `x_0`, the shape and dtype of `x_T`.

  Raises:
    DiffusionError: bad `steps` / `shift`, only one of `clean` / `clean_mask`, mask / clean shapes that do not
      fit `x_T`, or a hook returning another shape or dtype.
  """
  x_T = jnp.asarray(x_T)
  sigmas = schedules.sigma_schedule(steps, shift)
  hooks = _with_clean(hooks, x_T, clean, clean_mask, None, "euler")
  hook_rng = _hook_rng(rng)
  batch = x_T.shape[0]

  def body(i, x):
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    level = jnp.full((batch,), sigma, dtype=jnp.float32)
    x = _run_hooks(hooks, x, _step(i, level, x_T, hook_rng, False))
    v = denoise(x, level)
    return (x.astype(jnp.float32) + (sigma_next - sigma) * v.astype(jnp.float32)).astype(x.dtype)

  x = jax.lax.fori_loop(0, int(steps), body, x_T)
  return _run_hooks(hooks, x, _step(int(steps), jnp.zeros((batch,), jnp.float32), x_T, hook_rng, True))


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


def ddim_step(objective, x_t, pred, t, t_prev, *, eta=0.0, noise=None):
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
  a = per_example(abar[jnp.asarray(t).astype(jnp.int32)], x_t)
  a_prev = per_example(jnp.where(t_prev >= 0, abar[jnp.maximum(t_prev, 0).astype(jnp.int32)], abar[0]), x_t)
  x_t32 = x_t.astype(jnp.float32)
  pred32 = pred.astype(jnp.float32)
  x0 = objective.predict_x0(x_t32, pred32, t)
  eps = objective.predict_eps(x_t32, pred32, t)
  std = eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
  out = jnp.sqrt(a_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - a_prev - std**2, 0.0)) * eps
  if noise is not None:
    out = out + std * noise.astype(jnp.float32)
  return out.astype(x_t.dtype)


def ddim(denoise, x_T, *, objective, steps: int = 50, eta=0.0, rng=None, hooks: Sequence[Callable] = (),
         clean=None, clean_mask=None, steps_offset: int = 0):
  """DDIM sampling over `ddim_timesteps(N, steps, steps_offset)`, matching diffusers' `DDIMScheduler` with
  `timestep_spacing="leading"`, `set_alpha_to_one=False`, no clipping.

  Each step runs the hooks, calls `denoise(x, t)` and applies `ddim_step` toward the next timestep; the last step
  goes to `abar[0]` (not to 1), so the result is the sample at noise level `t = 0`, like diffusers and LVDM. The
  hooks run once more at the end (`step.final`, level 0).

  Args:
    denoise: `denoise(x_t [B, ...], timesteps [B] float32) -> prediction` in `objective.prediction`'s
      parameterisation.
    x_T: initial standard normal noise `[B, ...]`.
    objective: the `DDPM` the model was trained with.
    steps: number of DDIM steps (static).
    eta: stochasticity; 0 = deterministic DDIM. A non-zero value needs `rng`.
    rng: PRNG key: the `eta > 0` noise of step i uses `split(rng, steps)[i]`; the hooks get keys from their own
      stream (`SamplerStep.rng`).
    hooks: `hook(x, step: SamplerStep) -> x`, run in order before every `denoise` call and once after the last step;
      `step.level` is the timestep `t` as float32 (0 at the final call).
    clean: optional clean condition latents, broadcastable to `x_T`; with `clean_mask`, shorthand for prepending
      `clean_hook(clean, clean_mask, objective)` (clean tokens re-noised with `x_T` to the current step before every
      `denoise` call, exactly `clean` at the end).
    clean_mask: optional mask aligned with `x_T`'s leading axes, 1 = fixed clean token.
    steps_offset: added to every timestep (diffusers' `steps_offset`).

  Returns:
    Samples, the shape and dtype of `x_T`.

  Raises:
    DiffusionError: `objective` is not a `DDPM`, bad `steps`, `eta` other than the number 0 without `rng`,
      clean / mask shapes that do not fit, or a hook returning another shape or dtype.
  """
  if getattr(objective, "kind", None) != "ddpm":
    raise DiffusionError(f"ddim needs a DDPM objective, got {type(objective).__name__}")
  stochastic = not (isinstance(eta, (int, float)) and eta == 0)
  if stochastic and rng is None:
    raise DiffusionError("ddim: eta != 0 needs an `rng` key")
  x_T = jnp.asarray(x_T)
  ts_np = ddim_timesteps(objective.num_train_timesteps, steps, steps_offset)
  ratio = objective.num_train_timesteps // int(steps)
  ts = jnp.asarray(ts_np)
  ts_prev = jnp.asarray(ts_np - ratio)
  hooks = _with_clean(hooks, x_T, clean, clean_mask, objective, "ddim")
  hook_rng = _hook_rng(rng)
  keys = jax.random.split(rng, int(steps)) if stochastic else None
  batch = x_T.shape[0]

  def body(i, x):
    t, t_prev = ts[i], ts_prev[i]
    level = jnp.full((batch,), t, dtype=jnp.float32)
    x = _run_hooks(hooks, x, _step(i, level, x_T, hook_rng, False))
    pred = denoise(x, level)
    noise = jax.random.normal(keys[i], x.shape, dtype=jnp.float32) if stochastic else None
    return ddim_step(objective, x, pred, t, t_prev, eta=eta, noise=noise)

  x = jax.lax.fori_loop(0, int(steps), body, x_T)
  return _run_hooks(hooks, x, _step(int(steps), jnp.zeros((batch,), jnp.float32), x_T, hook_rng, True))
