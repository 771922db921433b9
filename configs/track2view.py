"""Track2View: video-to-video re-rendering conditioned on paired 3D point tracks (papers/003; docs/methods.md).

    python -m camjax.main --config=configs/track2view.py            # default: CPU-sized, procedural paired views
    python -m camjax.main --config=configs/track2view.py:wan1_3b --config.model.pretrained=/path/to/transformer

Variants (the text after ':'):
  default  A CPU-sized DiT (4 layers, width 128, trained fully from scratch) with the pixel autoencoder on procedural
           two-camera scenes: 64 pairs rendered on first use into the workdir's `data/` (camjax.data.pairs: camera A
           reversed + camera B, half the queries at frame 0 and half at the middle frame, ground-truth 3D tracks).
           `model.anchor="depth_warp"` (camjax's, not the paper): x-prediction as a residual on the source video
           reprojected into the target cameras at a learned disparity (camjax/methods/track2view.py).
           Samples held-out pairs and reports the target view against "copy the source video" and the same model
           with its tracks zeroed (`<workdir>/eval_pairs/`).
  test     Tiny and fast (used by the test-suite).
  wan1_3b  Paper scale: WAN 2.1 T2V 1.3B weights, LoRA (rank 64) on q, k, v, o and the FFN of every block, the
           conditioner trained fully (8 temporal layers), 1152 query points, 50 sampling steps, velocity prediction
           and no anchor (the paper). Needs the WAN VAE and umT5 ports (issue #21) for real videos; until then it
           runs on the pixel autoencoder only as a shape check.
"""

from __future__ import annotations

import ml_collections

from camjax.config_base import base

VARIANTS = ("default", "test", "wan1_3b")
CPU_VARIANTS = ("default", "test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = (arg or "default").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown track2view variant {variant!r}: {', '.join(VARIANTS)}")
  c = base("track2view", variant)
  # LoRA on every block (paper scale; 0 = train the whole DiT, the CPU default has no pretrained base).
  c.model.update(lora_rank=0, lora_alpha=1.0)
  # camjax's CPU-sized anchor (not the paper): the clean-sample prediction of the target view is a residual on the
  # source video reprojected into the target cameras at a learned per-cell disparity (`anchor_disparity` 1 / metres
  # at init: one plane at 4 m, about the median depth of the procedural rooms). Needs the pixel autoencoder and
  # x-prediction ("sample", set below). "none": the plain DiT output (the paper).
  c.model.update(anchor="depth_warp", anchor_disparity=0.25)
  # The dual-view track conditioner (camjax.conditioning.tracks); mlp_hidden 0 = the DiT width.
  c.tracks = ml_collections.ConfigDict(dict(num_layers=2, num_fourier=8, mlp_hidden=0))
  # Paired views rendered into the workdir: `num_scenes` pairs of `num_frames` at `render_size` (= height = width),
  # `num_queries` tracked points per pair (half at frame 0, half at the middle frame).
  c.data.update(source="pairs", num_scenes=64, eval_scenes=8, render_size=64, num_frames=17, height=64, width=64,
                num_queries=64, batch_size=4)
  # x-prediction: the DiT's output is a clean sample, which the depth-warp anchor is added to.
  c.objective.update(kind="flow", shift=1.0, density="logit_normal", prediction="sample")
  c.train.update(steps=300, source_frame_drop=0.5, track_keep=(0.5, 1.0))
  c.sample.update(num=2, steps=24, shift=3.0, w_text=1.0)
  # Held-out pairs evaluated at the end (target view vs copy-the-source and zeroed tracks) -> eval_pairs/.
  # `camera_errors`: the Track2View RotErr / TransErr of every video of the pair report by SfM (`trials` per video).
  # `clip`: a local OpenAI CLIP TorchScript file (camjax.eval.learned) adds CLIP-V vs the source ("" = none).
  c.eval.update(pairs=8, trials=1, camera_errors=True, clip="")

  if variant == "test":
    c.model.update(num_heads=2, head_dim=16, ffn_dim=64, num_layers=2)
    c.text.update(width=32, max_length=24)
    c.tracks.update(num_layers=1, num_fourier=4)
    c.data.update(num_scenes=3, eval_scenes=1, render_size=32, num_frames=5, height=32, width=32, num_queries=8,
                  batch_size=2)
    c.train.update(steps=2, log_every=1, checkpoint_every=2)
    c.optimizer.update(warmup_steps=1)
    c.sample.update(num=1, steps=2)
    c.eval.update(pairs=1, at_end=True)
  elif variant == "wan1_3b":
    c.model.update(preset="wan1_3b", num_heads=12, head_dim=128, ffn_dim=8960, num_layers=30, dtype="bfloat16",
                   remat="dots", attention="cudnn", pretrained="/path/to/Wan2.1-T2V-diffusers/transformer",
                   lora_rank=64, lora_alpha=64.0, anchor="none")
    c.tracks.update(num_layers=8, num_fourier=8)
    c.data.update(num_frames=81, render_size=128, height=128, width=128, num_queries=1152, batch_size=8)
    c.objective.update(shift=3.0, prediction="velocity")
    c.optimizer.update(lr=1e-4, warmup_init_lr=5e-5, warmup_steps=500, end_lr=1e-5)
    c.train.update(steps=10_000, log_every=50, checkpoint_every=1000)
    c.sample.update(steps=50, shift=5.0, w_text=5.0)
  return c
