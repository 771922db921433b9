"""MotionFlow (papers/001) as a camjax method: a reference motion network turns a camera trajectory and the reference
image into per-frame, per-layer motion maps that guide an eps-prediction video DiT through reference and object
attention.

The paper builds on UNets (SD 1.5 as the reference motion network, AnimateDiff as the video network); camjax carries
each mechanism onto WAN DiTs (docs/methods.md, "MotionFlow as a method", has the full table and the corrected
equations):

* Trajectory encoder (sec. 3.2): the Plücker map of the target trajectory (eq. 3 as corrected: direction
  `R K^-1 [w, h, 1]`, no `+ t`; origin the camera centre; one pose per latent frame, relative to the first) through
  `conditioning.motionflow.TrajectoryEncoder` (patchify to the DiT token grid, residual blocks each followed by
  self-attention), one feature per scale, scale s feeding a group of layers (`per_layer`).
* Reference motion network (sec. 3.4): a second, smaller `WanDiT` (`Generator.reference`) run frame by frame (an image
  twin: `[B t, 1, h, w, C]`) on the clean reference latent repeated over the frames (`reference.input = "image"`, the
  ReferenceNet reading) or on the noisy video latent frame by frame (`"video"`, eq. 4's literal `phi_i(z_t)`), at the
  video's timestep. Its text cross-attention reads the reference image's features (`K_i, V_i`: the semantic ViT's
  tokens standing in for the paper's CLIP image features) and a cross stream "camera" tied to it (`tie_cross_stream`:
  same query and output projection, eq. 4 exactly, `lambda_c = reference.lambda_c`) reads the trajectory features,
  one scale per group of its layers (a per-layer context `[layers, B t, h w, C]`). Its per-layer outputs
  (`return_hidden`) are the reference motion maps.
* Video network (sec. 3.5): the WAN DiT with, in every block, reference attention (`extra_kv`: the block's own k/v
  projections over the motion map of its layer, placed to the right of the frame, `reference.layout =
  "side_by_side"`: the paper's concatenation along the width), object attention (`WanConfig.object_attention_dim`:
  the block's output times `1 + gate * mask`, the mask from the attention of the post-self-attention tokens over the
  semantic features) and the semantic features added to the noisy input (`SemanticInput`, a token map). No explicit
  temporal layer: WAN's self-attention already spans every frame and location (docs/methods.md says why).
* Semantic encoder (sec. 3.3): `conditioning.motionflow.SemanticViT`, a DINOv2 ViT run inside the step and trained
  with the run (random and tiny at CPU size; DINOv2 ViT-S/14 weights from `semantic.path`, a local transformers
  folder, at paper scale).
* Zero at step 0 (sec. 3.6): the camera stream's gate, the extra-kv gates, the object-attention gates and the
  semantic input projection start at zero, so the video network computes exactly its base model (the reference
  network and the semantic ViT then receive no gradient until the gates move; each path has exactly one zero).
* Objective: `config.objective`: DDPM with scaled-linear betas over 1000 steps, eq. 1 read as `x_t = sqrt(abar_t)
  x_0 + sqrt(1 - abar_t) eps`, and eq. 2's eps-prediction (`prediction="eps"`; the CPU-sized configs predict `v`,
  configs/motionflow.py says why); sampling with DDIM and the text + image guidance chain
  `[null image + null text, image + null text, image + text]`, weights `[w_image, w_text]` (the null image: zero
  image features and a zero reference latent). The first latent frame is the reference image, held clean
  (`model.clean_first_frame`, camjax's I2V convention, with a condition-mask input channel).
* Training in two stages (sec. 3.6), both phases of one run: stage 1 (`train.steps`) trains the trajectory
  encoder and the "motion extractor" (every new module: the camera streams of the reference network, the
  reference-attention and object-attention gates, the semantic encoder and input) with the reference network and the
  video network frozen (`train.freeze_bases`); stage 2 (`phase2.steps`) trains everything. `Method.trainable` is
  read once per run by `camjax.train`, so stage 1 freezes by `jax.lax.stop_gradient` inside the loss: the frozen
  parts get zero gradients and, since Adam's moments of a parameter that never had a gradient are zero and
  `optimizer.weight_decay` is 0 (the paper's Adam), a zero update, bit for bit (tests/test_motionflow_method.py).
* End of run (`evaluate_at_end`): `eval.scenes` held-out procedural scenes, the true and the reversed trajectory,
  "repeat the first frame" and "mean colour", PSNR / SSIM on frames 1..T-1 -> `<workdir>/eval_motionflow/`.
* Ablations (paper Table 4) as config variants: `reference.enabled = False` feeds the trajectory encoder's features
  (at the video width) straight into reference attention; `semantic.enabled = False` removes the semantic input and
  object attention from the video network (the reference network keeps reading image features).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from camjax.conditioning import cameractrl2 as cc2
from camjax.conditioning import motionflow as mf
from camjax.diffusion import clean_hook, guided_denoiser
from camjax.geometry.cameras import Cameras
from camjax.methods.base import Method, batch_latents, clip_video, denoising_loss, text_states
from camjax.conditioning.anchor import DisparityHead, anchor_poses, condition_anchor, reproject_anchor
from camjax.methods.registry import MethodError
from camjax.models import WanDiT
from camjax.models.text import drop_text, null_text

log = logging.getLogger("camjax.methods.motionflow")

# Generator paths of the modules MotionFlow adds (the "trajectory encoder and motion extractor" of stage 1); every other
# parameter belongs to a base network (video DiT, reference DiT, text encoder) and is frozen in stage 1.
NEW_MODULES = ("trajectory", "semantic", "semantic_input", "extra_kv_gate", "object_attention", "cross",
               "cross_embedders", "disparity_head")
# `model.anchor`: "none" (the paper: the network's output is the prediction) or "depth_warp" (camjax's CPU-sized
# design, as CameraCtrl II's default: the x_0 prediction is a residual on the first frame reprojected through the
# trajectory at a learned per-cell disparity; needs the pixel autoencoder and `objective.prediction="sample"`).
ANCHORS = ("none", "depth_warp")
REFERENCE_INPUTS = ("image", "video")
# Held-out evaluation scenes: seeds from here (+ config.seed), never rendered for training.
EVAL_SEED = 4_000_000
EVAL_MODES = ("true", "reversed")
EVAL_COLUMNS = ("true", "reversed", "repeat_first_frame", "mean_colour")


class MotionFlowMethodError(MethodError):
  """A batch or config the MotionFlow method cannot use (named, with what was expected)."""


def new_modules():
  """`nnx` filter of the parameters MotionFlow adds to its base networks (stage 1's trainable set)."""
  return nnx.All(nnx.Param, nnx.Any(*[nnx.PathContains(name) for name in NEW_MODULES]))


def base_modules():
  """`nnx` filter of the base networks' parameters (frozen in stage 1 with `train.freeze_bases`)."""
  return nnx.All(nnx.Param, nnx.Not(nnx.Any(*[nnx.PathContains(name) for name in NEW_MODULES])))


def stage_view(model, config):
  """The generator the loss differentiates: in stage 1 with `train.freeze_bases`, the base networks' parameters pass
  through `jax.lax.stop_gradient` (zero gradients); otherwise the generator itself."""
  if int(config.train.stage) != 1 or not config.train.freeze_bases:
    return model
  graphdef, base, rest = nnx.split(model, base_modules(), ...)
  return nnx.merge(graphdef, jax.lax.stop_gradient(base), rest)


# ----------------------------------------------------------------------------------------------------------------------
# Sizes of the added networks
# ----------------------------------------------------------------------------------------------------------------------


def semantic_config(config) -> mf.SemanticViTConfig:
  """The semantic ViT's size: `semantic.path`'s DINOv2 config when set (its weights are loaded in `conditioners`),
  else the `semantic` fields."""
  s = config.semantic
  res = (int(s.resolution), int(s.resolution))
  if s.path:
    return mf.SemanticViTConfig.from_dinov2(s.path, res, dtype=config.model.dtype)
  return mf.SemanticViTConfig(dim=int(s.dim), num_layers=int(s.num_layers), num_heads=int(s.num_heads),
                              mlp_dim=int(s.mlp_dim), patch_size=int(s.patch_size), resolution=res,
                              dtype=config.model.dtype).validate()


def needs_image_features(config) -> bool:
  """The semantic ViT runs when the reference network reads image features or the video network its semantics."""
  return bool(config.reference.enabled or config.semantic.enabled)


def reference_dit_config(config, dit_config):
  """The reference motion network: the video DiT's width and heads (its maps are the video blocks' extra keys /
  values), `reference.num_layers` layers, `reference.ffn_dim`, image features as its text, a camera cross stream."""
  r = config.reference
  return dit_config.replace(num_layers=int(r.num_layers), ffn_dim=int(r.ffn_dim), text_dim=semantic_config(config).dim,
                            cross_streams=(("camera", int(config.trajectory.out_dim)),), extra_in_channels=0,
                            extra_kv=False, object_attention_dim=0, lora_rank=0)


def trajectory_config(config, dit_config) -> mf.TrajectoryEncoderConfig:
  """The trajectory encoder: its features go to the reference network's camera stream (`trajectory.out_dim`) or,
  without the reference network, straight into reference attention (the video width, one scale per layer group)."""
  t = config.trajectory
  out_dim = int(t.out_dim) if config.reference.enabled else dit_config.dim
  return mf.TrajectoryEncoderConfig(out_dim=out_dim, width=int(t.width), num_scales=int(t.num_scales),
                                    blocks_per_scale=int(t.blocks_per_scale), mlp_hidden=int(t.mlp_hidden),
                                    num_heads=int(t.num_heads), patch_size=tuple(dit_config.patch_size),
                                    attention_scope=str(t.attention_scope), dtype=dit_config.dtype,
                                    param_dtype=dit_config.param_dtype, attention=dit_config.attention).validate()


# ----------------------------------------------------------------------------------------------------------------------
# Inputs of a batch
# ----------------------------------------------------------------------------------------------------------------------


class Conditions(NamedTuple):
  """What a batch gives the networks (inside jit).

  Attributes:
    latents: `[B, t, h, w, C]` clean latents.
    cond_mask: `[B, t, h, w, 1]`, 1 on the first latent frame with `model.clean_first_frame`, else zeros.
    camera: tuple of `num_scales` trajectory features `[B, N, C_cam]` (N DiT tokens).
    image: `{"features": [B, P, C_s] or None, "reference": [B, 1, h, w, C]}`: the reference image's semantic
      features and its latent (the null image: both zero).
  """

  latents: jax.Array
  cond_mask: jax.Array
  camera: tuple
  image: dict
  warp: tuple | None = None  # `(anchor latents, anchor_poses(...))` with `model.anchor="depth_warp"`


def reference_image(static, batch, latents) -> jax.Array:
  """`[B, H, W, 3]` float reference image (the first frame) in [-1, 1]: decoded from the batch's frames, or
  `batch["first_frame"]` (uint8) with precomputed latents.

  Raises:
    MotionFlowMethodError: precomputed latents without `first_frame` while the semantic ViT needs pixels.
  """
  del latents
  if "frames" in batch:
    return batch["frames"][:, 0].astype(jnp.float32) / 127.5 - 1.0
  if "first_frame" in batch:
    return batch["first_frame"].astype(jnp.float32) / 127.5 - 1.0
  raise MotionFlowMethodError("MotionFlow's semantic encoder reads the reference image's pixels: a batch with "
                              "precomputed latents must carry `first_frame [B, H, W, 3]` uint8 (records with the "
                              "first frame), or set reference.enabled=False and semantic.enabled=False")


def conditions(model, static, batch) -> Conditions:
  """Latents, first-frame mask, trajectory features and image inputs of a batch (inside jit).

  Raises:
    MotionFlowMethodError: `K` / `w2c` that are not one camera per video frame.
  """
  c, ae = static.config, static.autoencoder
  latents = batch_latents(static, batch)
  b, t, h, w, _ = latents.shape
  K, w2c = batch["K"], batch["w2c"]
  if K.ndim != 4 or K.shape[-2:] != (3, 3) or w2c.shape != (*K.shape[:2], 4, 4):
    raise MotionFlowMethodError(f"batch K {K.shape} and w2c {w2c.shape} must be [B, T, 3, 3] and [B, T, 4, 4] (one "
                                "camera per video frame)")
  cams = Cameras(K=K, w2c=w2c, height=c.data.height, width=c.data.width)
  plucker = cc2.camera_plucker(cams, (t, h, w), ae.temporal_factor, relative=True)  # eq. 3, corrected
  camera = tuple(model.trajectory(plucker.astype(jnp.dtype(c.model.dtype))))
  cond_mask = cc2.extension_mask(b, (t, h, w), 1) if c.model.clean_first_frame else jnp.zeros((b, t, h, w, 1))
  features = model.semantic(reference_image(static, batch, latents)) if needs_image_features(c) else None
  warp = None
  if c.model.get("anchor", "none") == "depth_warp":
    warp = (condition_anchor(latents, cond_mask, ae.temporal_factor),
            anchor_poses(static, dict(batch, has_camera=jnp.ones((b,), bool)), cond_mask))
  return Conditions(latents, cond_mask, camera, {"features": features, "reference": latents[:, :1]}, warp)


def null_image(image: dict, keep: jax.Array | None = None) -> dict:
  """The image inputs with the samples where `keep [B]` is False (all, for `keep=None`) zeroed: the null image of
  image guidance and image dropout."""
  def zero(x):
    if x is None:
      return None
    if keep is None:
      return jnp.zeros_like(x)
    return x * keep.reshape(-1, *(1,) * (x.ndim - 1)).astype(x.dtype)

  return {k: zero(v) for k, v in image.items()}


# ----------------------------------------------------------------------------------------------------------------------
# The networks
# ----------------------------------------------------------------------------------------------------------------------


def reference_maps(model, config, x_t, timesteps, camera, image, grid) -> mf.ReferenceKV:
  """The reference motion maps as the video DiT's reference-attention inputs (`extra_kv`, `extra_kv_rope`).

  With the reference network: `[B t, 1, h, w, C]` frames (the reference latent repeated, or the noisy video latent,
  `reference.input`) at the video's timesteps, image features as the text, the trajectory features of each frame as the
  per-layer camera context (eq. 4 with `lambda_c`); its per-layer outputs become `[layers, B, t h w, D]` maps of the
  video's layers. Without it (the Table 4 ablation): the trajectory features themselves, one scale per layer group.

  Args:
    x_t: `[B, t, h, w, C]` the video DiT's input latents; timesteps: `[B]`.
    camera: `Conditions.camera`; image: `Conditions.image`; grid: `(t, h', w')` DiT token grid.
  """
  r = config.reference
  layers = model.dit.config.num_layers
  if not r.enabled:
    return mf.ReferenceKV(mf.per_layer(camera, layers), mf.reference_positions(grid, r.layout))
  b, t = x_t.shape[:2]
  if r.input == "image":
    frames = jnp.broadcast_to(image["reference"], x_t.shape)
  else:
    frames = x_t
  frames = frames.reshape(b * t, 1, *x_t.shape[2:])
  per_frame = lambda a: jnp.repeat(a, t, axis=0)  # [B, ...] -> [B t, ...] (frame-major within a sample)
  cams = [f.reshape(b * t, -1, f.shape[-1]) for f in camera]  # the tokens of frame f of sample i at row i t + f
  context = mf.per_layer(cams, model.reference.config.num_layers)
  _, hidden = model.reference(frames, per_frame(timesteps), per_frame(image["features"]),
                              cross={"camera": context}, cross_scale={"camera": float(r.lambda_c)},
                              return_hidden=True)
  return mf.reference_kv(hidden, grid, per_frame=True, num_layers=layers, layout=r.layout)


def video_forward(model, config, latents, timesteps, text, text_mask, *, cond_mask, camera, image, warp=None,
                  autoencoder=None):
  """The video network's prediction `[B, t, h, w, C]` (inside jit): reference attention on the motion maps, the
  semantic token map and object attention (with `semantic.enabled`), the first-frame mask channel; with `warp`
  (`Conditions.warp`, `model.anchor="depth_warp"`) the output is a residual on the first frame reprojected at the
  disparity head's depth (the poses repeat when guidance concatenates its condition sets along the batch)."""
  dit = model.dit
  pt, ph, pw = dit.config.patch_size
  _, t, h, w, _ = latents.shape
  grid = (t // pt, h // ph, w // pw)
  kv = reference_maps(model, config, latents, timesteps, camera, image, grid)
  inputs = dict(extra_kv=kv.states.astype(latents.dtype), extra_kv_rope=kv.positions)
  if config.model.clean_first_frame:
    inputs["extra_in"] = cond_mask
  if config.semantic.enabled:
    features = image["features"]
    inputs["token_map"] = model.semantic_input(features, model.semantic.config.grid, grid)
    inputs["semantic"] = features
  if warp is None:
    return dit(latents, timesteps, text, text_mask, **inputs)
  out, hidden = dit(latents, timesteps, text, text_mask, return_hidden=True, **inputs)
  anchor, poses = warp
  k = latents.shape[0] // anchor.shape[0]
  anchor, poses = jax.tree.map(lambda x: jnp.tile(x, (k,) + (1,) * (x.ndim - 1)), (anchor, poses))
  disparity = model.disparity_head(hidden[-1], latents.shape[1:4])
  return out + reproject_anchor(anchor, disparity, *poses, autoencoder.spatial_factor, autoencoder.temporal_factor)


# ----------------------------------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------------------------------


class MotionFlow(Method):
  """MotionFlow on the shared stack (module docstring)."""

  name = "motionflow"

  def batch_keys(self, config):
    del config
    return ("K", "w2c"), ("first_frame",)

  def dit_options(self, config):
    out = {"extra_kv": True}
    if config.model.clean_first_frame:
      out["extra_in_channels"] = 1
    if config.semantic.enabled:
      out["object_attention_dim"] = semantic_config(config).dim
    return out

  def conditioners(self, config, dit_config, rngs):
    dtypes = dict(dtype=jnp.dtype(dit_config.dtype), param_dtype=jnp.dtype(dit_config.param_dtype))
    out = {"trajectory": mf.TrajectoryEncoder(trajectory_config(config, dit_config), rngs=rngs)}
    if config.reference.enabled:
      reference = WanDiT(reference_dit_config(config, dit_config), rngs=rngs)
      mf.tie_cross_stream(reference.blocks, "camera", gate=0.0)  # eq. 4's shared Q / W_out; the camera term starts at 0
      out["reference"] = reference
    if needs_image_features(config):
      vit = mf.SemanticViT(semantic_config(config), rngs=rngs)
      if config.semantic.path:
        mf.load_dinov2(vit, config.semantic.path)
      out["semantic"] = vit
    if config.semantic.enabled:
      out["semantic_input"] = mf.SemanticInput(out["semantic"].config.dim, dit_config.dim, rngs=rngs, **dtypes)
    if config.model.get("anchor", "none") == "depth_warp":
      out["disparity_head"] = DisparityHead(dit_config.dim, dit_config.patch_size, config.autoencoder.temporal_factor,
                                            rngs=rngs, init=float(config.model.get("anchor_disparity", 0.25)))
    return out

  def phases(self, config):
    phases = [(int(config.train.steps), {})]  # stage 1: the run's config (train.stage = 1)
    if int(config.phase2.steps):
      overrides = {"train.stage": 2}
      lr = float(config.phase2.get("lr", 0.0))
      if lr > 0:  # sec. 3.6: stage 2 at its own rate (1e-5 after stage 1's 1e-4), the same warm-up / decay shape
        o = config.optimizer
        overrides.update({"optimizer.lr": lr, "optimizer.warmup_init_lr": lr * o.warmup_init_lr / o.lr,
                          "optimizer.end_lr": lr * o.end_lr / o.lr})
      phases.append((int(config.phase2.steps), overrides))
    return phases

  def validate(self, config):
    bad = []
    r, s, t = config.reference, config.semantic, config.train
    if int(t.stage) not in (1, 2):
      bad.append(f"train.stage={t.stage!r} (1: stage 1, bases frozen with train.freeze_bases; 2: everything trains)")
    if t.freeze_bases and float(config.optimizer.weight_decay) != 0.0:
      bad.append(f"optimizer.weight_decay={config.optimizer.weight_decay!r} (must be 0 with train.freeze_bases: AdamW's "
                 "decay would move the frozen base networks in stage 1; the paper trains with Adam)")
    if int(config.phase2.steps) < 0:
      bad.append(f"phase2.steps={config.phase2.steps!r} (stage 2's steps, >= 0)")
    if float(config.phase2.get("lr", 0.0)) < 0:
      bad.append(f"phase2.lr={config.phase2.lr!r} (stage 2's learning rate; 0 keeps stage 1's optimizer)")
    if r.input not in REFERENCE_INPUTS:
      bad.append(f"reference.input={r.input!r} (one of {REFERENCE_INPUTS})")
    if r.layout not in mf.LAYOUTS:
      bad.append(f"reference.layout={r.layout!r} (one of {mf.LAYOUTS})")
    scales, layers = int(config.trajectory.num_scales), int(r.num_layers if r.enabled else config.model.num_layers)
    if not 1 <= scales <= layers:
      bad.append(f"trajectory.num_scales={scales!r} (1 .. {layers}: every scale feeds a group of "
                 f"{'reference' if r.enabled else 'video'} layers)")
    if r.enabled and int(r.num_layers) < 1:
      bad.append(f"reference.num_layers={r.num_layers!r} (>= 1)")
    if not 0.0 <= float(t.image_dropout) <= 1.0:
      bad.append(f"train.image_dropout={t.image_dropout!r} (a probability)")
    if needs_image_features(config) and not s.path and int(s.resolution) % int(s.patch_size):
      bad.append(f"semantic.resolution={s.resolution!r} (a multiple of semantic.patch_size={s.patch_size})")
    anchor = config.model.get("anchor", "none")
    if anchor not in ANCHORS:
      bad.append(f"model.anchor={anchor!r} (one of {ANCHORS})")
    elif anchor == "depth_warp" and (config.autoencoder.kind != "pixel" or config.objective.kind != "ddpm"
                                     or config.objective.get("prediction") != "sample"
                                     or not config.model.clean_first_frame):
      bad.append(f"model.anchor={anchor!r} (a residual on the first frame needs autoencoder.kind='pixel', "
                 "objective.kind='ddpm' with prediction='sample' and model.clean_first_frame=True)")
    ae = config.autoencoder
    if ae.kind == "pixel":
      cell = int(ae.spatial_factor) * 2  # WAN's (1, 2, 2) patch on the latent grid
      if int(config.data.height) % cell or int(config.data.width) % cell:
        bad.append(f"data.height x width = {config.data.height} x {config.data.width} (multiples of {cell}: the "
                   f"{ae.spatial_factor}x autoencoder and the 2x2 patch)")
    return bad

  # ------------------------------------------------------------------------------------------------------ inside jit
  def loss(self, model, static, batch, rng):
    c = static.config
    model = stage_view(model, c)
    k_noise, k_level, k_text, k_image = jax.random.split(rng, 4)
    cond = conditions(model, static, batch)
    latents = cond.latents
    keep = jax.random.uniform(k_image, (latents.shape[0],)) >= float(c.train.image_dropout)
    image = null_image(cond.image, keep)
    text = text_states(model, batch)
    text, text_mask = drop_text(k_text, text, batch["text_mask"], c.train.text_dropout)
    noise = jax.random.normal(k_noise, latents.shape, latents.dtype)
    level = static.objective.sample_level(k_level, latents.shape[0])

    def network(x, timesteps, text, text_mask):
      return video_forward(model, c, x, timesteps, text, text_mask, cond_mask=cond.cond_mask, camera=cond.camera,
                           image=image, warp=cond.warp, autoencoder=static.autoencoder)

    clean = cond.cond_mask if c.model.clean_first_frame else None
    return denoising_loss(network, static.objective, latents, noise, level, text, text_mask, clean_mask=clean)

  def sample(self, model, static, batch, rng):
    """DDIM (or the objective's sampler) from noise with the first latent frame held clean, the text + image
    guidance chain `[null image + null text, image + null text, image + text]` with `[w_image, w_text]` (one set
    when both weights are 1)."""
    c, s = static.config, static.config.sample
    cond = conditions(model, static, batch)
    text = text_states(model, batch)
    text_mask = batch["text_mask"].astype(bool)

    def model_fn(latents, timesteps, text, text_mask, image, cond_mask, camera):
      return video_forward(model, c, latents, timesteps, text, text_mask, cond_mask=cond_mask, camera=camera,
                           image=image, warp=cond.warp, autoencoder=static.autoencoder)

    full = dict(text=text, text_mask=text_mask, image=cond.image)
    if float(s.w_image) == 1.0 and float(s.w_text) == 1.0:
      sets, weights = [full], []
    else:
      blank, blank_mask = null_text(text.shape)
      nulled = null_image(cond.image)
      sets = [dict(text=blank, text_mask=blank_mask, image=nulled), dict(text=blank, text_mask=blank_mask,
                                                                         image=cond.image), full]
      weights = [float(s.w_image), float(s.w_text)]
    denoise = guided_denoiser(model_fn, static.objective, sets, weights, cond_mask=cond.cond_mask, camera=cond.camera)
    noise = jax.random.normal(rng, cond.latents.shape, cond.latents.dtype)
    opts = dict(shift=s.shift) if static.objective.kind == "flow" else dict(eta=float(s.get("eta", 0.0)))
    # The first latent frame is held exactly clean at every step (`clean_hook` without an objective): the network was
    # trained seeing it clean (`denoising_loss`'s clean mask), not re-noised to the step's level.
    hooks = [clean_hook(cond.latents, cond.cond_mask)] if c.model.clean_first_frame else []
    out = static.objective.sample(denoise, noise, steps=int(s.steps), hooks=hooks, rng=rng, **opts)
    return clip_video(static, out)

  # ------------------------------------------------------------------------------------------------------ end of run
  def evaluate_at_end(self, weights, config, mesh, workdir, model):
    """The true and the reversed trajectory on `eval.scenes` held-out procedural scenes, next to "repeat the first
    frame" and "mean colour" -> `workdir/eval_motionflow/` (report.md, metrics.json, strip_<i>.png). Single-process
    runs only."""
    n = int(config.eval.get("scenes", 0))
    if not n or jax.process_count() > 1:
      return
    result = evaluate_scenes(self, weights, config, mesh, model, n, workdir / "eval_motionflow")
    log.info("MotionFlow on held-out scenes (%s): %s", workdir / "eval_motionflow", result["aggregate"])


def eval_scenes(config, num_scenes: int) -> list[dict]:
  """`num_scenes` held-out procedural scenes (seeds `EVAL_SEED + config.seed + i`) rendered like the training data
  (`data.render_size`, then resized to `data.height x data.width`): `{"frames" uint8 [T, H, W, 3], "cameras"
  Cameras, "caption"}`."""
  from camjax.data.pipeline import resize_frames  # pylint: disable=import-outside-toplevel
  from camjax.data.synthetic import render_scene  # pylint: disable=import-outside-toplevel

  d = config.data
  out = []
  for i in range(num_scenes):
    clip = render_scene(EVAL_SEED + int(config.seed) + i, num_frames=int(d.num_frames), height=int(d.render_size),
                        width=int(d.render_size))[0]
    frames = resize_frames(np.asarray(clip.frames), int(d.height), int(d.width))
    cams = clip.cameras.numpy().resize(int(d.height), int(d.width))
    out.append({"frames": frames, "cameras": cams, "caption": str(clip.caption)})
  return out


def _to_uint8(video) -> np.ndarray:
  return np.round((np.asarray(video, np.float32) + 1) * 127.5).clip(0, 255).astype(np.uint8)


def evaluate_scenes(method: MotionFlow, weights, config, mesh, model, num_scenes: int, out_dir) -> dict:
  """Scores the model on held-out scenes with the true and the reversed trajectory and writes the report (see
  `MotionFlow.evaluate_at_end`). Returns `{"num_scenes", "aggregate": {column: {psnr, ssim}}, "model_beats",
  "true_beats_reversed", "per_scene"}`."""
  import json  # pylint: disable=import-outside-toplevel
  from pathlib import Path  # pylint: disable=import-outside-toplevel

  from camjax.eval.following import reversed_trajectory  # pylint: disable=import-outside-toplevel
  from camjax.eval.quality import baseline_scores  # pylint: disable=import-outside-toplevel
  from camjax.eval.report import jsonable, strip, write_png  # pylint: disable=import-outside-toplevel
  from camjax.io import atomic_write  # pylint: disable=import-outside-toplevel
  from camjax.methods.base import generate, host_batch, merge  # pylint: disable=import-outside-toplevel

  static = dataclasses.replace(model.static, config=config)
  fn = jax.jit(lambda w, batch, rng: method.sample(merge(static, w), static, batch, rng))
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  scenes = eval_scenes(config, num_scenes)
  videos = {}
  for mode in EVAL_MODES:
    cams = [reversed_trajectory(s["cameras"]) if mode == "reversed" else s["cameras"] for s in scenes]
    host = {"frames": np.stack([s["frames"] for s in scenes]), "K": np.stack([np.asarray(k.K) for k in cams]),
            "w2c": np.stack([np.asarray(k.w2c) for k in cams]), "caption": np.array([s["caption"] for s in scenes])}
    batch = host_batch(host, model.tokenizer, method, config)
    videos[mode] = _to_uint8(generate(weights, fn, batch, mesh, jax.random.key(int(config.seed) + 11)))
  rows = []
  for i, scene in enumerate(scenes):
    gt = scene["frames"]
    scores = baseline_scores(gt, videos["true"][i])
    row = {"scene": i, "caption": scene["caption"], "true": scores.pop("model"),
           "reversed": baseline_scores(gt, videos["reversed"][i])["model"], **scores}
    row["true_beats_reversed"] = bool(row["true"]["psnr"] > row["reversed"]["psnr"])
    rows.append(row)
    write_png(out_dir / f"strip_{i}.png", strip([gt, videos["true"][i], videos["reversed"][i]]))
  keys = ("psnr", "ssim")
  if config.eval.get("lpips", ""):  # LPIPS when local weights are given (lower is better)
    from camjax.eval.learned import load  # pylint: disable=import-outside-toplevel
    metric = load("lpips", config.eval.lpips)
    for i, row in enumerate(rows):
      for col, value in lpips_scores(metric, scenes[i]["frames"], videos["true"][i], videos["reversed"][i]).items():
        row[col]["lpips"] = value
    keys += ("lpips",)
  agg = {col: {k: float(np.mean([r[col][k] for r in rows])) for k in keys} for col in EVAL_COLUMNS}
  beats = {b: {k: bool(agg["true"][k] > agg[b][k]) for k in ("psnr", "ssim")} for b in EVAL_COLUMNS[1:]}
  if "lpips" in keys:
    for b in EVAL_COLUMNS[1:]:
      beats[b]["lpips"] = bool(agg["true"]["lpips"] < agg[b]["lpips"])
  result = {"num_scenes": num_scenes, "variant": str(config.variant), "aggregate": agg, "model_beats": beats,
            "true_beats_reversed": int(sum(r["true_beats_reversed"] for r in rows)),
            "psnr_true_minus_reversed": float(np.mean([r["true"]["psnr"] - r["reversed"]["psnr"] for r in rows])),
            "per_scene": rows}
  with atomic_write(out_dir / "metrics.json") as f:
    json.dump(jsonable(result), f, indent=2)
  _write_report(out_dir, result, config)
  return result


def lpips_scores(metric, gt, true_video, reversed_video, skip_frames: int = 1) -> dict[str, float]:
  """Mean LPIPS (`camjax.eval.learned.LPIPS`, lower = closer) against the true video `gt uint8 [T, H, W, 3]` on frames
  `skip_frames..T-1` of every column of the report: the true and the reversed trajectory's videos and the two
  trivial baselines built from `gt`."""
  from camjax.eval.quality import mean_colour, repeat_first_frame  # pylint: disable=import-outside-toplevel
  videos = {"true": true_video, "reversed": reversed_video, "repeat_first_frame": repeat_first_frame(gt),
            "mean_colour": mean_colour(gt)}
  return {col: float(np.mean(metric.distance(np.asarray(gt)[skip_frames:], np.asarray(v)[skip_frames:])))
          for col, v in videos.items()}


def _write_report(out_dir, result: dict, config) -> None:
  from camjax.io import atomic_write  # pylint: disable=import-outside-toplevel

  names = {"true": "MotionFlow (true trajectory)", "reversed": "reversed trajectory", "repeat_first_frame":
           "repeat first frame", "mean_colour": "mean colour"}
  agg, n = result["aggregate"], result["num_scenes"]
  yes = lambda v: "yes" if v else "no"
  lines = [f"# MotionFlow ({config.variant}) on held-out procedural scenes", "",
           f"{n} scenes (seeds {EVAL_SEED} + {config.seed} ...), {config.data.num_frames} frames at "
           f"{config.data.height}x{config.data.width}, I2V from the true first frame; PSNR / SSIM against the true "
           "video on frames 1..T-1. Strips: ground truth / true trajectory / reversed trajectory.", "",
           "| | " + " | ".join(names[c] for c in EVAL_COLUMNS) + " |", "|---" * (len(EVAL_COLUMNS) + 1) + "|",
           "| PSNR dB | " + " | ".join(f"{agg[c]['psnr']:.2f}" for c in EVAL_COLUMNS) + " |",
           "| SSIM | " + " | ".join(f"{agg[c]['ssim']:.3f}" for c in EVAL_COLUMNS) + " |",
           *(["| LPIPS (lower is better) | " + " | ".join(f"{agg[c]['lpips']:.3f}" for c in EVAL_COLUMNS) + " |"]
             if "lpips" in agg["true"] else []), "",
           f"True trajectory beats the reversed one on {result['true_beats_reversed']} of {n} scenes (mean "
           f"{result['psnr_true_minus_reversed']:+.2f} dB).", "",
           "| MotionFlow beats | PSNR | SSIM |", "|---|---|---|"]
  lines += [f"| {names[b]} | {yes(v['psnr'])} | {yes(v['ssim'])} |" for b, v in result["model_beats"].items()]
  lines += ["", "| scene | " + " | ".join(f"PSNR {names[c]}" for c in EVAL_COLUMNS) + " |",
            "|---" * (len(EVAL_COLUMNS) + 1) + "|"]
  lines += [f"| {r['scene']} | " + " | ".join(f"{r[c]['psnr']:.2f}" for c in EVAL_COLUMNS) + " |"
            for r in result["per_scene"]]
  lines += ["", *[f"![scene {r['scene']}](strip_{r['scene']}.png)" for r in result["per_scene"]], ""]
  with atomic_write(out_dir / "report.md") as f:
    f.write("\n".join(lines))


METHOD = MotionFlow()
__all__ = ["METHOD", "MotionFlow", "MotionFlowMethodError", "base_modules", "conditions", "eval_scenes",
           "evaluate_scenes", "lpips_scores", "new_modules", "reference_maps", "stage_view", "video_forward"]
