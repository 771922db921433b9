"""CameraCtrl II (papers/000) as a camjax method: camera-controlled video generation with a WAN DiT.

* Conditioning: the Plücker map of one pose per latent frame, patchified by `camjax.conditioning.cameractrl2.
  CameraPatchify` (bias-free, zero-initialised) into a token map added before block 0 (sec. 3.3, Table 4); the null
  camera is the all-zero map (unlabeled clips and camera dropout, sec. 3.2).
* Clip extension (sec. 3.4): the first latent frames of a sample enter clean (`cond_mask = 1`, also an extra input
  channel of the DiT when `model.cond_mask`) and are left out of the loss; image-to-video is the one-frame case.
  Extension samples are posed relative to an earlier "global" reference frame (`batch["reference_w2c"]`).
* Objective: `config.objective` (flow matching with velocity or x-prediction for CameraCtrl II); sampling with the
  objective's sampler (Euler + shift for flow matching) and CFG eq. 3, the three-set chain
  `[null text + null camera, text + null camera, text + camera]` with weights `[w_text, w_cam]`.
* Phases (sec. 4.1): `train.steps` single-clip steps, then `phase2.steps` with clip extension on, optionally at
  another resolution / clip length / batch / data path.
* `model.anchor = "condition_frame"` (an earlier CPU-sized default, not the paper): the clean-sample prediction is
  a residual on the last condition frame repeated over the window (`condition_anchor`), so the untrained model is the
  "repeat the first frame" baseline and training learns how the scene moves (docs/evaluation.md).
* `model.anchor = "flow_warp"` (an earlier CPU-sized default, not the paper): as "condition_frame", but the anchor is
  the condition frame warped by a flow that a zero-initialised head (`FlowHead`) reads from the DiT's last hidden
  states: per token and video frame a displacement of each 8 x 8 pixel cell, upsampled bilinearly and applied by
  bilinear sampling (`warp_anchor`). A camera move is mostly a smooth image motion, which a width-128 DiT cannot
  write into 3072-dimensional pixel tokens (the residual path) but can into two numbers per cell; the camera-to-
  motion mapping is still learned from the Plücker tokens alone (docs/evaluation.md).
* `model.anchor = "depth_warp"` (camjax's CPU-sized default, not the paper): the anchor is the condition frame
  reprojected through the camera: a zero-initialised head (`DisparityHead`) reads a disparity per cell and video
  frame from the DiT's last hidden states (`model.anchor_disparity` at init), each output pixel is unprojected with
  it, moved into the condition frame's camera by the relative pose of the two frames and sampled there
  (`reproject_anchor`). The camera then decides the image motion exactly, and the DiT only has to learn depth (one
  number per cell); clips without a camera reproject with the identity, i.e. no motion (`anchor_poses`).
* End of run: camera following (true vs null vs reversed camera, with the trivial baselines) on held-out procedural
  scenes (`eval.following`).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from camjax.conditioning import cameractrl2 as cc2
from camjax.conditioning.anchor import (DisparityHead, FlowHead, anchor_poses, condition_anchor, reproject_anchor,
                                        warp_anchor)
from camjax.diffusion import clean_hook, guided_denoiser
from camjax.geometry import se3
from camjax.geometry.cameras import Cameras
from camjax.methods.base import Method, batch_latents, clip_video, denoising_loss, text_states
from camjax.models.text import drop_text, null_text

log = logging.getLogger("camjax.methods.cameractrl2")
# Seed offset of the procedural scenes of the unlabeled stream (other scenes than the labeled ones).
UNLABELED_SEED = 7919


def extension_latent_frames(min_frames: int, temporal_factor: int) -> int:
  """Latent frames that hold `min_frames` video frames of a causal VAE (5 frames -> 2 latent frames at 4x)."""
  return 1 + -(-(max(int(min_frames), 1) - 1) // temporal_factor)


def conditions(static, batch: dict, rng: jax.Array, training: bool):
  """Latents, Plücker camera map and condition mask of a batch (inside jit).

  Training draws, per sample: camera dropout, I2V (first latent frame clean) and clip extension (sec. 3.4: the first
  `n` latent frames clean, `n` from `train.extension_min_frames` video frames up to `train.extension_max_fraction` of
  the clip). Extension samples are posed relative to `batch["reference_w2c"]` (the first frame of the exploration they
  continue) when `train.extension_reference == "global"`, and relative to the window's first frame otherwise (the
  per-clip ablation of Table 5). Sampling reads the number of clean latent frames from `batch["num_cond"] [B]` when
  present (exploration), else `sample.i2v`.

  Returns:
    `(latents [B, t, h, w, c], camera [B, t, h, w, 6], cond_mask [B, t, h, w, 1])`.
  """
  c, ae = static.config, static.autoencoder
  latents = batch_latents(static, batch)
  b, t, h, w, _ = latents.shape
  w2c = batch["w2c"]
  if batch["K"].shape != (*w2c.shape[:-2], 3, 3) or w2c.shape[-2:] != (4, 4):
    raise cc2.ConditioningError(f"batch K {batch['K'].shape} and w2c {w2c.shape} must be [B, T, 3, 3] and "
                                "[B, T, 4, 4] (one camera per video frame)")
  labeled = batch["has_camera"]
  if training:
    k1, k2, k3 = jax.random.split(rng, 3)
    i2v = jax.random.uniform(k2, (b,)) < c.train.i2v_prob
    ext = cc2.sample_extension_frames(k3, b, t, extension_latent_frames(c.train.extension_min_frames,
                                                                        ae.temporal_factor),
                                      c.train.extension_max_fraction, c.train.extension_prob)
    num_cond = jnp.maximum(ext, i2v.astype(jnp.int32))
    if "reference_w2c" in batch and c.train.extension_reference == "global":
      glob = w2c @ se3.invert(batch["reference_w2c"])[:, None]  # = Cameras.relative(reference)
      w2c = jnp.where((ext > 0)[:, None, None, None], glob, w2c)
  else:
    num_cond = batch["num_cond"] if "num_cond" in batch else jnp.full((b,), int(c.sample.i2v))
  cams = Cameras(K=batch["K"], w2c=w2c, height=c.data.height, width=c.data.width)
  camera = cc2.camera_plucker(cams, (t, h, w), ae.temporal_factor, relative=False)  # poses as given
  # `model.camera_scale` multiplies the Plücker map: under Adam, the zero-initialised bias-free patchify then moves
  # `scale` times faster (a per-module learning rate); 1 for the paper-scale variants.
  camera = camera * float(c.model.get("camera_scale", 1.0))
  if training:
    camera = cc2.drop_cameras(k1, camera, labeled, c.train.camera_dropout)
  else:
    camera = camera * labeled[:, None, None, None, None]
  cond_mask = cc2.extension_mask(b, (t, h, w), num_cond) if c.model.cond_mask else jnp.zeros((b, t, h, w, 1))
  return latents, camera, cond_mask


ANCHORS = ("none", "condition_frame", "flow_warp", "depth_warp")


class CameraCtrl2(Method):
  """CameraCtrl II on the shared stack (module docstring)."""

  name = "cameractrl2"

  def batch_keys(self, config):
    del config
    return ("K", "w2c", "has_camera"), ("reference_w2c", "num_cond")

  def extra_datasets(self, config):
    """The unlabeled stream of joint training (sec. 3.2), a dataset of its own whose cameras are ignored:
    `data.unlabeled_path` (a camjax dataset), or for procedural data `data.unlabeled_scenes` more scenes rendered with
    another seed."""
    d = config.data
    if d.unlabeled_ratio[1] <= 0:
      return {}
    if d.unlabeled_path:
      return {"unlabeled": {"data.source": "shards", "data.path": d.unlabeled_path}}
    if d.source == "synthetic":
      return {"unlabeled": {"data.num_scenes": int(d.unlabeled_scenes), "seed": int(config.seed) + UNLABELED_SEED}}
    return {}  # validate() names the missing path

  def pipeline_options(self, config, source, training, extra=None):
    if not training:
      return {}
    d, t = config.data, config.train
    unlabeled = (extra or {}).get("unlabeled") if d.unlabeled_ratio[1] > 0 else None
    return dict(unlabeled_source=unlabeled, unlabeled_ratio=tuple(d.unlabeled_ratio),
                global_reference=t.extension_reference_range if t.extension_prob else 0)

  def dit_options(self, config):
    return {"extra_in_channels": 1} if config.model.cond_mask else {}

  def conditioners(self, config, dit_config, rngs):
    if not config.model.camera:
      return {}
    # Same patch size and width as the video patchify, zero-initialised, no bias (the null camera adds nothing).
    dtypes = dict(dtype=jnp.dtype(dit_config.dtype), param_dtype=jnp.dtype(dit_config.param_dtype))
    out = {"camera": cc2.CameraPatchify(dit_config.dim, dit_config.patch_size, rngs=rngs, **dtypes)}
    if config.model.get("anchor", "none") == "flow_warp":
      out["flow_head"] = FlowHead(dit_config.dim, dit_config.patch_size, config.autoencoder.temporal_factor,
                                  rngs=rngs)
    if config.model.get("anchor", "none") == "depth_warp":
      out["disparity_head"] = DisparityHead(dit_config.dim, dit_config.patch_size, config.autoencoder.temporal_factor,
                                            rngs=rngs, init=float(config.model.get("anchor_disparity", 0.25)))
    return out

  def phases(self, config):
    p2, d = config.phase2, config.data
    phases = [(int(config.train.steps), {})]
    if p2.steps:
      phases.append((int(p2.steps), {
          "data.height": p2.height or d.height, "data.width": p2.width or d.width,
          "data.num_frames": p2.num_frames or d.num_frames, "data.batch_size": p2.batch_size or d.batch_size,
          "data.path": p2.path or d.path, "train.extension_prob": p2.extension_prob}))
    return phases

  def validate(self, config):
    bad = []
    for name in ("batch_size", "num_frames", "height", "width", "steps"):
      if int(config.phase2[name]) < 0:
        bad.append(f"phase2.{name}={config.phase2[name]!r} (must be >= 0; 0: as phase 1)")
    d = config.data
    if d.unlabeled_ratio[1] > 0 and not d.unlabeled_path and d.source != "synthetic":
      bad.append(f"data.unlabeled_ratio={tuple(d.unlabeled_ratio)!r} (an unlabeled stream needs data.unlabeled_path, "
                 "a camjax dataset; or set data.unlabeled_ratio=(1, 0))")
    if d.unlabeled_ratio[1] > 0 and not d.unlabeled_path and int(d.unlabeled_scenes) < 1:
      bad.append(f"data.unlabeled_scenes={d.unlabeled_scenes!r} (must be >= 1 for the unlabeled stream)")
    anchor = config.model.get("anchor", "none")
    if anchor not in ANCHORS:
      bad.append(f"model.anchor={anchor!r} (one of {ANCHORS})")
    elif anchor in ("flow_warp", "depth_warp") and not config.model.camera:
      bad.append(f"model.anchor={anchor!r} (its head is a camera conditioner: needs model.camera=True)")
    elif anchor == "depth_warp" and float(config.model.get("anchor_disparity", 0.25)) <= 0:
      bad.append(f"model.anchor_disparity={config.model.anchor_disparity!r} (the initial disparity, > 0)")
    elif anchor != "none" and (config.autoencoder.kind != "pixel" or config.objective.get("prediction") != "sample"):
      bad.append(f"model.anchor={anchor!r} (a residual on the condition frame needs autoencoder.kind='pixel' and "
                 "objective.prediction='sample')")
    if config.train.extension_reference not in ("global", "clip"):
      bad.append(f"train.extension_reference={config.train.extension_reference!r} (must be 'global' or 'clip')")
    return bad

  @staticmethod
  def dit_inputs(model, config, camera, cond_mask) -> dict:
    """The DiT's conditioning inputs: the camera token map and the condition-mask channel."""
    out = {}
    if config.model.camera:
      out["token_map"] = model.camera(camera.astype(jnp.dtype(model.dit.config.dtype)))
    if config.model.cond_mask:
      out["extra_in"] = cond_mask
    return out

  @staticmethod
  def anchor(static, latents, cond_mask):
    """`condition_anchor` when `model.anchor` is not "none" (the warps start from it), else None."""
    if static.config.model.get("anchor", "none") == "none":
      return None
    return condition_anchor(latents, cond_mask, static.autoencoder.temporal_factor)

  @staticmethod
  def anchored(model, static, anchor, poses=None):
    """The DiT as the objective sees it: its output plus the anchor (warped by the flow head for "flow_warp",
    reprojected at the disparity head's depth through `poses = anchor_poses(...)` for "depth_warp")."""
    if anchor is None:
      return model.dit
    kind = static.config.model.get("anchor", "none")
    if kind not in ("flow_warp", "depth_warp"):
      return lambda *a, **k: model.dit(*a, **k) + anchor
    ae = static.autoencoder

    def dit(latents, *args, **kwargs):
      out, hidden = model.dit(latents, *args, return_hidden=True, **kwargs)
      if kind == "flow_warp":
        flow = model.flow_head(hidden[-1], latents.shape[1:4])
        return out + warp_anchor(anchor, flow, ae.spatial_factor, ae.temporal_factor)
      disparity = model.disparity_head(hidden[-1], latents.shape[1:4])
      # Guidance concatenates its k condition sets along the batch: the poses repeat per set.
      k = latents.shape[0] // poses[0].shape[0]
      tiled = [jnp.tile(x, (k,) + (1,) * (x.ndim - 1)) for x in poses]
      return out + reproject_anchor(anchor, disparity, *tiled, ae.spatial_factor, ae.temporal_factor)

    return dit

  @staticmethod
  def poses(static, batch, cond_mask):
    """`anchor_poses` for "depth_warp", else None."""
    if static.config.model.get("anchor", "none") != "depth_warp":
      return None
    return anchor_poses(static, batch, cond_mask)

  def loss(self, model, static, batch, rng):
    c = static.config
    k_cond, k_noise, k_sigma, k_text = jax.random.split(rng, 4)
    latents, camera, cond_mask = conditions(static, batch, k_cond, training=True)
    noise = jax.random.normal(k_noise, latents.shape, latents.dtype)
    sigma = static.objective.sample_level(k_sigma, latents.shape[0])
    text = text_states(model, batch)
    text, text_mask = drop_text(k_text, text, batch["text_mask"], c.train.text_dropout)
    poses = self.poses(static, batch, cond_mask)
    dit = self.anchored(model, static, self.anchor(static, latents, cond_mask), poses)
    return denoising_loss(dit, static.objective, latents, noise, sigma, text, text_mask, clean_mask=cond_mask,
                          **self.dit_inputs(model, c, camera, cond_mask))

  def sample(self, model, static, batch, rng):
    """CameraCtrl II sampler: the objective's sampler (Euler with shift for flow matching), 3-way text + camera CFG
    (eq. 3), the first `num_cond` latent frames held clean (I2V / extension)."""
    c = static.config
    s = c.sample
    latents, camera, cond_mask = conditions(static, batch, rng, training=False)
    text = text_states(model, batch)
    blank, blank_mask = null_text(text.shape)
    text_mask = batch["text_mask"].astype(bool)

    anchor = self.anchor(static, latents, cond_mask)

    # The depth warp's poses are the same in every guidance set (`anchor_poses`): CFG extrapolates the residuals only.
    poses = self.poses(static, batch, cond_mask)

    def model_fn(latents, timesteps, text, text_mask, camera, cond_mask, anchor=None):
      dit = self.anchored(model, static, anchor, poses)
      return dit(latents, timesteps, text, text_mask, **self.dit_inputs(model, c, camera, cond_mask))

    null_cam = jnp.zeros_like(camera)
    sets = [dict(text=blank, text_mask=blank_mask, camera=null_cam),
            dict(text=text, text_mask=text_mask, camera=null_cam)]
    weights = [s.w_text]
    if c.model.camera:
      sets.append(dict(text=text, text_mask=text_mask, camera=camera))
      weights.append(s.w_cam)
    denoise = guided_denoiser(model_fn, static.objective, sets, weights, cond_mask=cond_mask, anchor=anchor)
    noise = jax.random.normal(rng, latents.shape, latents.dtype)
    opts = dict(shift=s.shift) if static.objective.kind == "flow" else dict(eta=float(s.get("eta", 0.0)))
    hooks = [clean_hook(latents, cond_mask, static.objective)]
    out = static.objective.sample(denoise, noise, steps=s.steps, hooks=hooks, rng=rng, **opts)
    return clip_video(static, out)

  def evaluate_at_end(self, weights, config, mesh, workdir, model):
    """Camera following (true vs null vs reversed camera) of the final model on `config.eval.following` held-out
    procedural scenes -> `workdir/eval_following/` (single-process runs; else `python -m camjax.eval --following`)."""
    n = int(config.eval.get("following", 0))
    if not n:
      return
    if jax.process_count() > 1:
      log.info("camera following is evaluated in single-process runs: python -m camjax.eval --workdir %s "
               "--following %d", workdir, n)
      return
    from camjax.eval import following  # pylint: disable=import-outside-toplevel
    from camjax.explore import Explorer  # pylint: disable=import-outside-toplevel
    explorer = Explorer(config, weights, mesh=mesh, seed=config.seed, model=model)
    out = workdir / "eval_following"
    result = following.run_following(explorer.following_generator(), n, out, num_frames=explorer.num_frames,
                                     height=explorer.height, width=explorer.width, seed=config.seed,
                                     trials=config.eval.trials)
    summary = {m: {k: round(result[m][k], 4) for k in ("psnr", "ssim", "success_ratio")} for m in following.MODES}
    log.info("camera following (%s): %s", out, summary)


METHOD = CameraCtrl2()

# The CameraCtrl II conditioner is a plain nnx module; re-exported for callers that build one directly.
CameraPatchify = cc2.CameraPatchify
__all__ = ["METHOD", "CameraCtrl2", "CameraPatchify", "conditions", "extension_latent_frames"]
