"""camjax.diffusion: one diffusion core for every method: objectives, schedules, samplers with hooks, guidance chains.

Modules, bottom floor first (each imports only those above it in this list, no lazy imports):

- `errors`: `DiffusionError`.
- `broadcast`: per-example scalars and masks against `[B, ...]`.
- `schedules`: flow-matching sigmas with timestep shift, DDPM scaled-linear betas.
- `samplers`: `euler` (flow matching) and `ddim` (DDPM), both taking `hooks` (`hook(x, SamplerStep) -> x`, before
  every network call and once at the end) and an `rng`; `clean_hook` holds clean condition tokens.
- `shaping`: RealCam-I2V's scene-constrained noise shaping: `noise_shaping_hook` (the paper's equation: paste the
  noised preview into `z_t`) and `noise_shaping_denoiser` (Fig. 6: paste into the predicted clean latent),
  `noise_shaping(..., target=)` for either.
- `objectives`: `FlowMatching` and `DDPM` behind one interface (`kind`, `sample_level`, `add_noise`,
  `model_timesteps`, `loss_terms`, `sampler_prediction`, `sample`); `make_objective(cfg)`; `masked_mse`.
- `guidance`: `chain` over named condition sets in one batched forward, `e_0 + sum_k w_k (e_k - e_{k-1})`;
  `cfg`, `text_cfg`, `camera_text_cfg` as its cases; `guided_denoiser` turns a network into a sampler's `denoise`.

Which method uses what:

- CameraCtrl II: `FlowMatching` (`x_t = (1 - sigma) x_0 + sigma eps`, target `v = eps - x_0`, model timestep
  `sigma * 1000`), `euler` with 32 steps at shift 12, the three-set text + camera chain (`camera_text_cfg`,
  eq. 3), the first frame held clean (`clean_hook`).
- RealCam-I2V: flow matching or DDPM, with `noise_shaping` (a sampler hook drawing fresh noise from `step.rng` at
  every step, or the clean-prediction variant) for scene-constrained noise shaping, plus `clean_hook` for the
  reference image (after the shaping hook, so the clean frame wins).
- MotionFlow: `DDPM` with eps prediction (scaled-linear betas over 1000 steps), `ddim`, a text + image chain.
- Track2View: `FlowMatching` with the source-view tokens held clean (`clean_hook`) and masked out of the loss
  (`masked_mse`).
"""

from camjax.diffusion.errors import DiffusionError
from camjax.diffusion.guidance import (batched_predictions, camera_text_cfg, cfg, chain, guided_denoiser,
                                       text_cfg)
from camjax.diffusion.objectives import DDPM, FlowMatching, Objective, make_objective, masked_mse
from camjax.diffusion.samplers import SamplerStep, clean_hook, ddim, ddim_step, ddim_timesteps, euler
from camjax.diffusion.shaping import noise_shaping, noise_shaping_denoiser, noise_shaping_hook, shaping_level
from camjax.diffusion.schedules import (alphas_cumprod, sample_timesteps_logit_normal, sample_timesteps_uniform,
                                        scaled_linear_betas, shift_sigma, sigma_schedule)

__all__ = [
    "DDPM", "DiffusionError", "FlowMatching", "Objective", "SamplerStep", "alphas_cumprod", "batched_predictions",
    "camera_text_cfg", "cfg", "chain", "clean_hook", "ddim", "ddim_step", "ddim_timesteps", "euler",
    "guided_denoiser", "make_objective", "masked_mse", "noise_shaping", "noise_shaping_denoiser",
    "noise_shaping_hook", "sample_timesteps_logit_normal", "sample_timesteps_uniform",
    "scaled_linear_betas", "shaping_level", "shift_sigma", "sigma_schedule", "text_cfg",
]
