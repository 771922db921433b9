"""CameraCtrl II: camera-controlled video generation with a WAN 2.1 DiT (papers/000, sec. 3-4).

    python -m camjax.main --config=configs/cameractrl2.py                 # default: CPU-sized, procedural scenes
    python -m camjax.main --config=configs/cameractrl2.py:re10k --config.data.path=../shared/data/re10k_clips
    python -m camjax.main --config=configs/cameractrl2.py:wan1_3b --config.model.pretrained=/path/to/Wan2.1-T2V-1.3B-Diffusers/transformer
    python -m camjax.models.tiny --out runs/wan_tiny/models   # then precompute (below) and
    python -m camjax.main --config=configs/cameractrl2.py:wan_tiny

Variants (the text after ':'):
  default  A CPU-sized DiT (4 layers, width 128) with a byte-level text encoder and a lossless pixel autoencoder
           (4x temporal, 8x spatial, like WAN's VAE) trained on procedurally rendered dynamic scenes with exact
           cameras (256 scenes generated on first use into the workdir's `data/`). Phase 1 (300 single-clip I2V
           steps) then phase 2 (100 steps with clip extension, 13-frame windows) in minutes on 2 cores, then samples
           with the CameraCtrl II sampler (Euler + shift + 3-way CFG). Its prediction is the condition frame
           reprojected through the camera at a learned per-cell depth plus a residual (`model.anchor="depth_warp"`),
           its Plücker input x10. `python -m camjax.explore --workdir ...` extends its clips.
  re10k    The same model on real RealEstate10K-layout clips (`data.path`: pose files + videos, ingested into
           ArrayRecord shards on first use). Samples from a real first frame along the real trajectory.
  test     Tiny and fast (used by the test-suite): a handful of steps.
  wan1_3b  Paper scale (sec. 4.1): WAN 2.1 T2V 1.3B weights from `model.pretrained` (a diffusers folder), AdamW
           lr 1e-4 with warm-up from 5e-5 over 500 steps, cosine to 1e-5, weight decay 0.01, betas (0.9, 0.95),
           phase 1 at 192x320, batch 640, 100k steps. The records
           (`data.path`, camjax ArrayRecord shards) carry precomputed, normalised WAN-VAE `latents [21, 24, 40, 16]`
           of the 81-frame 192x320 clip (the window is the whole clip) and umT5 `text_embeddings [L, 4096]`
           (padded to 512 tokens), made from videos by `python -m camjax.data.precompute`. With
           `autoencoder.path` (the pipeline's `vae/` folder) samples are decoded by camjax's JAX WAN VAE into the
           usual mp4 layout and evaluated; without it they are saved as latents (`latents_<i>.npy`). With
           `text.encoder_path` / `text.tokenizer_path` (umT5) `camjax.explore` embeds its captions and continues
           clips from generated frames (it needs `autoencoder.path` too).
           Phase 2 (sec. 4.1): 50k more steps at 384x640, batch 512, with clip extension (`phase2.path`: records
           at that size).
  wan14b   As wan1_3b with the 14B model.
  wan_tiny Exactly the wan1_3b path at toy size on a CPU: a tiny random WAN DiT (`model.pretrained`), a tiny random
           WAN VAE and umT5 + toy tokenizer, all written by `python -m camjax.models.tiny --out DIR` (needs the
           `parity` extra), under `tiny_models` (default runs/wan_tiny/models); records with latents and umT5
           embeddings of 9-frame 32x32 procedural clips at `data.path` (default runs/wan_tiny/latents, also the
           unlabeled stream), made by

             python -m camjax.data.synthetic --out runs/wan_tiny/frames --num_scenes 16 --resolution 32 --frames 9
             python -m camjax.data.precompute --data runs/wan_tiny/frames --out runs/wan_tiny/latents \\
                 --vae runs/wan_tiny/models/vae --text_encoder runs/wan_tiny/models/text_encoder \\
                 --tokenizer runs/wan_tiny/models/tokenizer --num_frames 9 --height 32 --width 32

           Phase 1 (60 steps) then phase 2 (30 steps, clip extension with the global reference), decoded mp4
           samples and their evaluation in about 2 minutes on 2 cores, mostly compilation; then
           `python -m camjax.explore --workdir runs/cameractrl2-wan_tiny --trajectory pan_left --trajectory
           dolly_in --out explore_out` continues its clips. The weights are random: the videos are noise; every
           format, shape and stage is the paper's. (Not in CPU_VARIANTS: it needs the setup step;
           tests/test_wan_tiny.py runs it from raw frames.)
Any field can be overridden: `--config.train.steps=50 --config.model.num_layers=2`.
"""

from __future__ import annotations

import ml_collections

from camjax.config_base import base

VARIANTS = ("default", "test", "re10k", "wan1_3b", "wan14b", "wan_tiny")
# Variants that run on a CPU (the config test trains one step of each).
CPU_VARIANTS = ("default", "test", "re10k")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = (arg or "default").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown cameractrl2 variant {variant!r}: {', '.join(VARIANTS)}")
  c = base("cameractrl2", variant)

  # The camera patchify (a token map before block 0) and the condition-mask input channel (clip extension).
  c.model.update(camera=True, cond_mask=True, camera_scale=1.0)  # camera_scale: methods.cameractrl2.conditions
  # "condition_frame": the clean-sample prediction is a residual on the last condition frame; "flow_warp" (camjax's CPU
  # default): on that frame warped by a learned per-cell flow (camjax.methods.cameractrl2); "depth_warp": reprojected
  # through the camera at a learned depth; "none": the paper's plain prediction.
  c.model.anchor = "none"
  # "depth_warp": the condition frame reprojected through the camera at a learned per-cell disparity (1 / metres for
  # procedural scenes), `anchor_disparity` before training (methods.cameractrl2.DisparityHead).
  c.model.anchor_disparity = 0.25
  # Joint training (sec. 3.2): labeled : unlabeled clips (4:1) from a separate unlabeled dataset whose cameras are
  # ignored (they get the null camera): `unlabeled_path` (a camjax dataset), or for procedural data
  # `unlabeled_scenes` more scenes rendered with another seed. (1, 0) disables. With camera dropout 0.1 of the labeled
  # clips, 1/5 + 4/5 * 0.1 = 28% of the training clips see the null camera (docs/methods.md).
  c.data.update(unlabeled_ratio=(4, 1), unlabeled_path="", unlabeled_scenes=16)
  # prediction: "sample" (x-prediction) for the CPU-sized model, whose 3072-dimensional pixel tokens are far wider
  # than the DiT (a velocity contains the noise, which width 128 cannot carry); "velocity" for WAN weights.
  c.objective.update(kind="flow", shift=1.0, density="logit_normal", prediction="sample")
  c.train.update(
      camera_dropout=0.1,  # camera CFG training
      i2v_prob=0.5,  # first latent frame given clean (image-to-video)
      # Clip extension (sec. 3.4): with probability `extension_prob` the first latent frames (from
      # `extension_min_frames` video frames up to `extension_max_fraction` of the clip) are given clean and left out of
      # the loss; such samples are posed relative to a frame up to `extension_reference_range` strides earlier (the
      # exploration's first frame, "global") or to the window's first frame ("clip", Table 5's per-clip ablation).
      extension_prob=0.0, extension_min_frames=5, extension_max_fraction=0.5, extension_reference="global",
      extension_reference_range=8,
  )
  # Phase 2 (sec. 4.1): continues the run for `steps` more steps with clip extension on, optionally at another
  # resolution / clip length / batch / data path (0 or "" = as phase 1). The learning rate restarts its warm-up +
  # cosine shape.
  c.phase2 = ml_collections.ConfigDict(dict(steps=0, extension_prob=0.5, height=0, width=0, num_frames=0,
                                            batch_size=0, path=""))
  # CFG eq. 3: text weight `w_text` (base) and camera weight `w_cam`; `i2v`: the first frame is given.
  c.sample.update(w_cam=3.0, i2v=True)
  # Camera following (true vs null vs reversed camera) on `following` held-out procedural scenes ->
  # eval_following/report.md; on demand: `python -m camjax.eval --workdir W --following N`.
  c.eval.following = 0

  if variant == "default":
    # Both phases, briefly: 300 single-clip steps, then 100 steps with clip extension on 13-frame windows of the
    # 17-frame scenes (so extension samples can be posed relative to an earlier, "global" first frame).
    c.phase2.update(steps=100, num_frames=13)
    # camjax's CPU-sized choices (docs/evaluation.md, "what changed and why"): the prediction is the condition frame
    # reprojected through the camera at a learned per-cell depth plus a residual; the Plücker map x10 (the
    # zero-initialised patchify learns 10x faster under Adam: without it the camera was ignored); image-to-video only
    # (what the evaluation asks for); 256 scenes (4x: the model saw each of 64 scenes ~40 times).
    c.model.update(anchor="depth_warp", camera_scale=10.0)
    c.train.i2v_prob = 1.0
    c.data.num_scenes = 256
    c.eval.following = 8  # held-out procedural scenes, the training data's kind
  elif variant == "test":
    c.model.update(num_heads=2, head_dim=16, ffn_dim=64, num_layers=2)
    c.text.update(width=32, max_length=24)
    c.data.update(num_scenes=4, eval_scenes=1, render_size=32, num_frames=9, height=32, width=32, batch_size=2,
                  unlabeled_scenes=2)
    c.train.update(steps=4, log_every=1, checkpoint_every=2)
    c.optimizer.update(warmup_steps=2)
    c.sample.update(num=1, steps=2)
    c.eval.at_end = False
  elif variant == "re10k":
    c.data.update(source="re10k", path="../shared/data/re10k_clips", num_frames=13, height=64, width=112,
                  stride=(1, 1), unlabeled_ratio=(1, 0), batch_size=4)
    c.train.update(steps=200, checkpoint_every=50)
  elif variant in ("wan1_3b", "wan14b"):
    c.model.update(preset=variant, num_heads=12 if variant == "wan1_3b" else 40, head_dim=128,
                   ffn_dim=8960 if variant == "wan1_3b" else 13824, num_layers=30 if variant == "wan1_3b" else 40,
                   dtype="bfloat16", remat="dots" if variant == "wan1_3b" else "full", attention="cudnn",
                   pretrained="/path/to/Wan2.1-T2V-diffusers/transformer")
    c.autoencoder.update(kind="precomputed", temporal_factor=4, spatial_factor=8, channels=16)
    c.text.update(kind="precomputed", width=4096, max_length=512)
    c.data.update(source="shards", path="/path/to/records_with_latents", num_frames=81, height=192, width=320,
                  stride=(1, 3), batch_size=640, worker_count=8, unlabeled_path="/path/to/unlabeled_records")
    c.objective.update(shift=3.0, prediction="velocity")  # WAN 2.1 is a velocity model
    c.optimizer.update(lr=1e-4, warmup_init_lr=5e-5, warmup_steps=500, end_lr=1e-5, grad_clip=1.0, ema_decay=0.0)
    c.train.update(steps=100_000, log_every=50, checkpoint_every=1000, i2v_prob=0.5, extension_prob=0.0)
    # Phase 2: 384x640 with clip extension, 50k steps at batch 512 (records with latents at that size).
    c.phase2.update(steps=50_000, height=384, width=640, batch_size=512, extension_prob=0.5,
                    path="/path/to/records_with_latents_384x640")
    c.sample.update(every=5000, steps=32, shift=12.0, w_text=7.5, w_cam=8.0)
    c.mesh.update(data=1, fsdp=-1, context=1, tensor=1)
  elif variant == "wan_tiny":
    _wan_tiny(c)
  return c


def _wan_tiny(c: ml_collections.ConfigDict) -> None:
  """The wan1_3b path at toy size (module docstring): one field each moves every model folder (`tiny_models`) and
  both datasets (`data.path`)."""
  from camjax.models import tiny  # pylint: disable=import-outside-toplevel  # sizes only: no torch needed here
  models = ml_collections.FieldReference("runs/wan_tiny/models")
  data = ml_collections.FieldReference("runs/wan_tiny/latents")
  c.tiny_models = models
  c.model.update(preset="toy", **{k: v for k, v in tiny.DIT.items() if k != "freq_dim"}, dtype="float32",
                 remat="none", attention="xla", pretrained=models + "/transformer")
  c.autoencoder.update(kind="precomputed", temporal_factor=4, spatial_factor=8, channels=tiny.LATENT_CHANNELS,
                       path=models + "/vae")
  c.text.update(kind="precomputed", width=tiny.TEXT_WIDTH, max_length=128, encoder_path=models + "/text_encoder",
                tokenizer_path=models + "/tokenizer")
  c.data.update(source="shards", path=data, unlabeled_path=data, num_frames=9, height=32, width=32, stride=(1, 1),
                batch_size=4)
  c.objective.update(shift=3.0, prediction="velocity")
  c.optimizer.update(lr=1e-3, warmup_init_lr=5e-4, warmup_steps=10, end_lr=1e-4)
  c.train.update(steps=60, log_every=10, checkpoint_every=30, i2v_prob=0.5, extension_prob=0.0)
  c.phase2.update(steps=30, extension_prob=0.5)  # same size and records, clip extension on
  c.sample.update(num=2, steps=8, shift=3.0, w_text=5.0, w_cam=5.0)
  c.eval.trials = 1
