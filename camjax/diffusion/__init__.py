"""camjax.diffusion: flow-matching and DDPM objectives, Euler / DDIM samplers and batched classifier-free guidance.

Flow matching (WAN 2.1, CameraCtrl II): `x_t = (1 - sigma) x_0 + sigma eps`, target `v = eps - x_0`, model timestep
`sigma * 1000`, inference with `euler` (32 steps, shift 12). DDPM (DynamiCrafter, MotionFlow): scaled-linear betas
over 1000 steps, eps- or v-prediction, inference with `ddim`. Guidance evaluates all condition sets in one batched
forward (`camera_text_cfg` is CameraCtrl II eq. 3).
"""

from camjax.diffusion.guidance import batched_predictions, camera_text_cfg, cfg, guided_denoiser, text_cfg
from camjax.diffusion.objectives import DDPM, DiffusionError, FlowMatching, masked_mse
from camjax.diffusion.samplers import ddim, ddim_step, ddim_timesteps, euler
from camjax.diffusion.schedules import (alphas_cumprod, sample_timesteps_logit_normal, sample_timesteps_uniform,
                                        scaled_linear_betas, shift_sigma, sigma_schedule)

__all__ = [
    "DDPM", "DiffusionError", "FlowMatching", "alphas_cumprod", "batched_predictions", "camera_text_cfg", "cfg",
    "ddim", "ddim_step", "ddim_timesteps", "euler", "guided_denoiser", "masked_mse", "sample_timesteps_logit_normal",
    "sample_timesteps_uniform", "scaled_linear_betas", "shift_sigma", "sigma_schedule", "text_cfg",
]
