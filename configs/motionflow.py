"""MotionFlow: camera-trajectory control through a reference motion network (papers/001; camjax/methods/motionflow.py).

    python -m camjax.main --config=configs/motionflow.py                  # default: CPU-sized, procedural scenes
    python -m camjax.main --config=configs/motionflow.py:no_reference     # Table 4 ablation: no reference network
    python -m camjax.main --config=configs/motionflow.py:no_semantic      # Table 4 ablation: no semantic encoder
    python -m camjax.main --config=configs/motionflow.py:re10k --config.data.path=../shared/data/re10k_clips

Variants (the text after ':'):
  default       A CPU-sized video DiT (4 layers, width 192) with a 2-layer reference motion network of the same width,
                a 2-scale trajectory encoder, a tiny in-run DINOv2-style semantic ViT (2 layers, width 64, 4x4 patches
                of a 32x32 image; trained with the run, as the paper trains its semantic encoder in stage 1), a
                byte-level text encoder and a lossless pixel autoencoder (4x4 pixels per latent position, one frame
                per latent frame; a DiT token is an 8x8-pixel block, 192 numbers = the DiT width) on procedurally
                rendered scenes (9 frames at 32x32, 144 tokens per clip). DDPM (scaled-linear, 1000 steps) with
                x_0-prediction as a residual on the first frame reprojected through the trajectory at a learned depth
                (`model.anchor="depth_warp"`, camjax's CPU-sized design; the paper's eps-prediction failed at this
                size, see the objective below), DDIM sampling. Stage 1 (`train.steps`) then stage 2 (`phase2.steps`) in one run. There are no pretrained
                bases at this size, so stage 1 does NOT freeze them (`train.freeze_bases=False`): a frozen random
                video DiT has a zero output layer (WAN initialises `proj_out` at zero), which gives every parameter a
                zero gradient, and stage 1 would do nothing. End of run: held-out scenes, true vs reversed trajectory
                vs "repeat the first frame" vs "mean colour" (`<workdir>/eval_motionflow/`).
  no_reference  The default without the reference network: trajectory-encoder features (at the video width, one scale
                per group of video layers) go straight into reference attention (paper Table 4, "w/o referNet").
  no_semantic   The default without the semantic input and object attention in the video network (paper Table 4,
                "w/o Semantic Encoder"; the reference network still reads the image features, the paper's CLIP
                image encoder's role).
  test          Tiny and fast (the test-suite): stage 1 with the bases frozen (bit-identical), stage 2, guidance on.
  re10k         The default's model on the shared RealEstate10K clips (`data.path`), 9 frames at 32x64.
  wan1_3b       Paper scale, a documented adaptation (not run here): the video network on WAN 2.1 T2V 1.3B weights
                (`model.pretrained`), a reference network of the same size (to be initialised from the same weights,
                sec. 3.6 initialises it from SD 1.5; camjax's loader fills only the video DiT today), DINOv2 ViT-S/14
                from `semantic.path` (a local transformers folder, 224x224), precomputed WAN-VAE latents and umT5
                embeddings in the records (which must also carry `first_frame` for the semantic encoder). Stage 1:
                the bases frozen, Adam at 1e-4; stage 2: everything at 1e-5 (`phase2.lr`). The objective is WAN's own
                flow matching (velocity): WAN weights are a flow model, and re-fitting them to eps-DDPM is a change
                of parameterisation the paper's SD / AnimateDiff bases did not need.
Any field can be overridden: `--config.train.steps=50 --config.reference.lambda_c=0.5`.
"""

from __future__ import annotations

import ml_collections

from camjax.config_base import base

VARIANTS = ("default", "test", "no_reference", "no_semantic", "re10k", "wan1_3b")
# Variants that run on a CPU (the config test trains one step of each).
CPU_VARIANTS = ("default", "test", "no_reference", "no_semantic", "re10k")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = (arg or "default").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown motionflow variant {variant!r}: {', '.join(VARIANTS)}")
  c = base("motionflow", variant)

  # The video network (WAN DiT, width 4 x 48 = 192 = the numbers in a token, so an eps prediction can carry the noise):
  # the first latent frame is the reference image, held clean, with a condition-mask input channel (camjax's I2V
  # convention).
  c.model.update(num_heads=4, head_dim=48, ffn_dim=768, clean_first_frame=True)
  # camjax's CPU-sized design (as CameraCtrl II's default, docs/methods.md): the x_0 prediction is a residual on the
  # first frame reprojected through the trajectory at a learned per-cell disparity (`anchor_disparity` at init);
  # "none": the paper's plain prediction.
  c.model.update(anchor="depth_warp", anchor_disparity=0.25)
  # The reference motion network (sec. 3.4): a WanDiT of the video's width; `input` "image" (the clean reference
  # latent repeated over the frames, ReferenceNet-style) or "video" (the noisy video latent frame by frame, eq. 4's
  # literal phi_i(z_t)); `lambda_c` weighs the camera term of eq. 4; `layout` places the maps beside the frame
  # ("side_by_side", the paper's width concatenation) or on the frame's own positions ("aligned").
  c.reference = ml_collections.ConfigDict(dict(enabled=True, num_layers=2, ffn_dim=384, lambda_c=1.0, input="image",
                                               layout="side_by_side"))
  # The trajectory encoder (sec. 3.2): `num_scales` features of width `out_dim` (the reference network's camera
  # context; the video width without the reference network).
  c.trajectory = ml_collections.ConfigDict(dict(out_dim=64, width=64, num_scales=2, blocks_per_scale=1,
                                                mlp_hidden=128, num_heads=2, attention_scope="frame"))
  # The semantic encoder (sec. 3.3): an in-run DINOv2 ViT (`dim`, `num_layers`, `num_heads`, `mlp_dim`, `patch_size`
  # at `resolution` x `resolution` pixels), or the DINOv2 weights of `path` (a local transformers folder; its
  # config.json sets the size). `enabled`: the video network's semantic input and object attention.
  c.semantic = ml_collections.ConfigDict(dict(enabled=True, path="", dim=64, num_layers=2, num_heads=2, mlp_dim=128,
                                              patch_size=4, resolution=32))
  # Lossless pixel tokens: 4x4 pixels per latent position, one frame per latent frame; with WAN's 2x2 patch a DiT
  # token is an 8x8-pixel block (192 numbers: the DiT width). (2x2 pixels per position, 576 tokens per clip, trained
  # about 9x slower per step on this machine.)
  c.autoencoder.update(kind="pixel", temporal_factor=1, spatial_factor=4, channels=3)
  c.data.update(num_scenes=64, render_size=64, num_frames=9, height=32, width=32, stride=(1, 2), batch_size=4)
  # DDPM with scaled-linear betas 0.00085 -> 0.012 over 1000 steps and DDIM sampling (REFERENCE.md section 7). The
  # paper's eq. 2 is eps-prediction (`prediction="eps"`, the `test` variant's); the CPU-sized variants predict x_0
  # (`"sample"`, which the depth-warp anchor needs: the prediction is a residual on the warped first frame). Trained
  # from scratch for 500 steps, the eps model's clean estimate at high noise is hopeless (x_0 = (x_t - sqrt(1 - abar)
  # eps) / sqrt(abar) magnifies its eps error 13x at t = 950: 7.7 dB) and its DDIM samples are saturated colour noise
  # (8.2 dB on the held-out scenes); v-prediction (`"v"`) samples reached 16 dB without the anchor (docs/methods.md,
  # "MotionFlow as a method").
  c.objective = ml_collections.ConfigDict(dict(kind="ddpm", prediction="sample", num_train_timesteps=1000,
                                               beta_start=0.00085, beta_end=0.012))
  # Adam (no weight decay: the paper's optimiser, and stage 1's frozen parts stay bit-identical).
  c.optimizer.update(lr=5e-4, warmup_init_lr=1e-4, warmup_steps=20, end_lr=5e-5, weight_decay=0.0, b1=0.9, b2=0.999)
  # Stage 1 is the run's config (`stage` 1, `steps`); `freeze_bases`: the video and reference networks (and the text
  # encoder) frozen in stage 1, as the paper's pretrained AnimateDiff / SD 1.5; `image_dropout`: image CFG training.
  c.train.update(steps=300, stage=1, freeze_bases=False, image_dropout=0.1, text_dropout=0.1, checkpoint_every=100)
  # Stage 2 (sec. 3.6): every parameter trains for `steps` more steps (0 = no stage 2) at `lr` (0: stage 1's
  # optimizer; the warm-up start and end rates scale with it). The CPU default trains from scratch, so both stages
  # keep one rate.
  c.phase2 = ml_collections.ConfigDict(dict(steps=200, lr=0.0))
  # DDIM steps; text + image guidance weights (1 and 1: the plain conditional prediction, one forward per step).
  c.sample.update(num=2, steps=25, eta=0.0, w_text=1.0, w_image=1.0)
  # Held-out procedural scenes at the end of the run: true vs reversed trajectory vs the trivial baselines; `lpips`: a
  # local LPIPS TorchScript file (camjax.eval.learned) adds LPIPS to the report ("" = none; nothing is downloaded).
  c.eval.update(scenes=8, lpips="")

  if variant == "no_reference":
    c.reference.enabled = False
  elif variant == "no_semantic":
    c.semantic.enabled = False
  elif variant == "test":
    c.model.update(num_heads=2, head_dim=16, ffn_dim=64, num_layers=2)
    c.reference.update(num_layers=1, ffn_dim=64)
    c.trajectory.update(out_dim=16, width=16, num_scales=1, mlp_hidden=32)
    c.semantic.update(dim=16, num_layers=1, mlp_dim=32, resolution=16)
    c.text.update(width=32, max_length=24)
    c.autoencoder.spatial_factor = 2
    c.data.update(num_scenes=2, eval_scenes=1, render_size=16, num_frames=3, height=16, width=16, batch_size=2)
    c.train.update(steps=1, freeze_bases=True, log_every=1, checkpoint_every=1)
    c.phase2.update(steps=1, lr=2.5e-4)
    c.optimizer.update(warmup_steps=1)
    c.objective.prediction = "eps"  # the paper's eq. 2
    c.model.anchor = "none"
    c.sample.update(num=1, steps=2, w_text=2.0, w_image=1.5)
    c.eval.update(at_end=False, scenes=1)
  elif variant == "re10k":
    c.data.update(source="re10k", path="../shared/data/re10k_clips", num_frames=9, height=32, width=64,
                  stride=(1, 2), batch_size=4)
    c.eval.scenes = 0  # no procedural ground truth for real clips: the final samples are evaluated (camjax.eval)
  elif variant == "wan1_3b":
    c.model.update(preset="wan1_3b", num_heads=12, head_dim=128, ffn_dim=8960, num_layers=30, dtype="bfloat16",
                   remat="dots", attention="cudnn", pretrained="/path/to/Wan2.1-T2V-1.3B-Diffusers/transformer")
    c.reference.update(num_layers=30, ffn_dim=8960)
    c.trajectory.update(out_dim=1536, width=320, num_scales=4, mlp_hidden=640, num_heads=5)
    # DINOv2 ViT-S/14 (facebook/dinov2-small) sizes; set `path` to a local folder with its weights.
    c.semantic.update(path="", dim=384, num_layers=12, num_heads=6, mlp_dim=1536, patch_size=14, resolution=224)
    c.autoencoder.update(kind="precomputed", temporal_factor=4, spatial_factor=8, channels=16)
    c.text.update(kind="precomputed", width=4096, max_length=512)
    c.data.update(source="shards", path="/path/to/records_with_latents", num_frames=81, height=192, width=320,
                  stride=(1, 3), batch_size=8, worker_count=8)
    c.objective = ml_collections.ConfigDict(dict(kind="flow", shift=3.0, density="logit_normal",
                                                 prediction="velocity"))
    c.model.anchor = "none"
    c.optimizer.update(lr=1e-4, warmup_init_lr=1e-5, warmup_steps=100, end_lr=1e-4, grad_clip=1.0)
    c.train.update(steps=20_000, freeze_bases=True, log_every=50, checkpoint_every=1000)
    c.phase2.update(steps=60_000, lr=1e-5)
    c.sample.update(every=5000, steps=50, shift=12.0, w_text=7.5, w_image=1.5)
    c.eval.scenes = 0
    c.mesh.update(data=1, fsdp=-1, context=1, tensor=1)
  return c
