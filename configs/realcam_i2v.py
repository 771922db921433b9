"""RealCam-I2V: metric-scale camera control from one image, with a 3D preview, scene-constrained noise shaping and four
modes (papers/002; camjax/methods/realcam_i2v.py; docs/realcam.md).

    python -m camjax.main --config=configs/realcam_i2v.py --workdir /tmp/realcam_default            # CPU, minutes
    python -m camjax.main --config=configs/realcam_i2v.py:raw_scale --workdir /tmp/realcam_raw      # the ablation
    python -m camjax.main --config=configs/realcam_i2v.py:re10k --workdir /tmp/realcam_re10k \\
        --config.realcam.depth_model=/path/to/depth-anything-v2-metric-folder      # real clips, metric-aligned
    python -m camjax.realcam --workdir /tmp/realcam_default --image photo.jpg --depth depth.png --trajectory dolly_in
        --metres 1.0 --out /tmp/realcam_out

Variants (the text after ':'):
  default    A CPU-sized DiT (4 layers, width 128) with CameraCtrl II's camera patchify, the given-frame channels and a
             byte-level text encoder, on the lossless pixel autoencoder (4x temporal, 8x spatial), trained for 300
             steps on 64 procedural scenes (17 frames, 64x64) whose camera travel is scaled per scene by a log-uniform
             factor in [0.25, 4], with the true metric cameras; all four modes trained jointly. Its prediction is the
             anchor frame reprojected through the cameras at a learned per-cell depth plus a residual
             (`model.anchor="depth_warp"`). Ends with samples of
             held-out scenes (with noise shaping) and `<workdir>/eval_realcam/` (shaping vs no shaping vs the trivial
             baselines on 96 held-out scenes, camera errors on the first 8).
  raw_scale  The ablation: the same run with raw, scale-ambiguous cameras (every clip's translations normalised so
             that its largest camera displacement is 1, as a scale-free SfM reconstruction gives), in training and
             in sampling.
  re10k      The default's model on real RealEstate10K-layout clips (`data.path`, default ../shared/data/re10k_clips)
             whose translations are first aligned to metric scale with a metric depth model
             (`realcam.depth_model`, a local Depth Anything V2 metric folder; required): per clip, frame 0's metric
             depth over the SfM depth of its triangulated points, median -> factor, translations x factor, clips with
             outlying factors dropped (`camjax.data.curate.metric.align_re10k`). The aligned clips are written once
             into `<workdir>/data/realcam_re10k_*` (reused while the clips, the depth-model files and the settings
             are unchanged); the clips of the last scene (sorted ids; `realcam.heldout_scenes`) are held out. 13
             frames at 64x112, 300 steps.
             Ends with samples of held-out clips and `<workdir>/eval_realcam/` on them (the preview from the depth
             model's depth of frame 0; PSNR / SSIM against the real frames next to the trivial baselines). Not in
             CPU_VARIANTS: it needs the depth-model folder.
  test       Tiny and fast (used by the test-suite).
  wan1_3b    Paper-scale settings, documented, not run: WAN 2.1 T2V 1.3B weights (`model.pretrained`), the WAN VAE
             inside the step (`autoencoder.kind="wan_vae"`, `autoencoder.path`: it encodes the video, the given
             frames of each sample's mode and the preview, and decodes the samples; frozen), velocity prediction,
             17 frames at 320x512 (RealCam-I2V, sec. 4.1: 16-frame clips at 512x320 on DynamiCrafter; 17 = 1 + 4k
             for WAN's causal VAE), Adam at a constant lr 1e-4 (sec. 4.1; the batch size is not given there, 64
             here), 50 sampling steps at shift 5, CFG 7.5 / 3, on metric-aligned RealEstate10K-layout clips
             (`data.source="re10k"` with `realcam.depth_model`, as `re10k`) whose records carry the umT5 embeddings
             of their captions (`text.encoder_path`, embedded once when the clips are aligned; prompts and
             held-out captions are embedded when sampled).
  wan_tiny   The wan1_3b path at toy size on a CPU: a tiny random WAN DiT, WAN VAE and umT5 encoder in their public
             formats (`python -m camjax.models.tiny --out runs/wan_tiny/models`, the `parity` extra; `tiny_models`
             moves every folder), the VAE inside the step, umT5 embeddings in the records and of every prompt,
             9-frame 32x32 procedural scenes, velocity prediction, no anchor. The models are random: the point is
             that the causal-VAE encoding of the given frames and of the preview, the frozen VAE and the decoding run
             as at paper scale (tests/test_realcam_wan_vae.py).
Any field can be overridden: `--config.train.steps=100 --config.realcam.scale=raw`.
"""

from __future__ import annotations

import ml_collections

from camjax.config_base import base

VARIANTS = ("default", "test", "raw_scale", "re10k", "wan1_3b", "wan_tiny")
# Variants that run on a CPU with nothing but this repository (the config test trains one step of each); `re10k`
# runs on a CPU too but needs a metric depth-model folder (tests/test_realcam_re10k.py builds a tiny random one).
CPU_VARIANTS = ("default", "test", "raw_scale")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = (arg or "default").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown realcam_i2v variant {variant!r}: {', '.join(VARIANTS)}")
  c = base("realcam_i2v", variant)

  # "depth_warp" (camjax's CPU default, as CameraCtrl II's): the clean-sample prediction is a residual on the anchor
  # frame (frame 0; the last given frame in continuation) reprojected through the cameras at a per-cell disparity
  # (1 / metres) that a zero-initialised head reads from the DiT, `anchor_disparity` before training
  # (methods.realcam_i2v.anchor_poses, methods.cameractrl2.DisparityHead); "condition_frame": a residual on the last
  # clean latent frame; "none": plain prediction.
  c.model.update(anchor="depth_warp", anchor_disparity=0.25)
  # scale: "metric" (the true metric cameras, the paper's metric-aligned training) | "raw" (per-clip normalised
  # translations, SfM-like: the ablation). scale_range: the per-scene factor on the camera's travel (log-uniform).
  c.realcam = ml_collections.ConfigDict(dict(scale="metric", scale_range=(0.25, 4.0)))
  # Procedural scenes rendered once into <workdir>/data/realcam_...; `eval_scenes` held-out scenes for the samples.
  c.data.update(source="realcam_scenes", num_scenes=64, eval_scenes=2, render_size=64, num_frames=17, height=64,
                width=64, stride=(1, 1), batch_size=8)
  c.objective.update(kind="flow", shift=1.0, density="logit_normal", prediction="sample")
  c.train.update(
      camera_dropout=0.1,  # camera CFG training (the null camera is the all-zero Plücker map)
      # Weights of the modes (basic, interpolation, loop, continuation) drawn per training sample.
      mode_probs=(0.4, 0.2, 0.2, 0.2),
  )
  # Sampling: Euler, text + camera guidance (one forward when both weights are 1), `mode` for the run's samples,
  # noise shaping (`shaping_target` "z_t" = the paper's equation, "x0" = Fig. 6) while sigma > `shaping_threshold`.
  c.sample.update(num=2, steps=24, shift=3.0, w_text=1.0, w_cam=1.0, mode="basic", shaping=True,
                  shaping_target="z_t", shaping_threshold=0.9)
  # Held-out scenes of the end-of-run evaluation (eval_realcam/report.md); 0 skips it. 96: noise shaping's gain over
  # plain sampling (~0.2 dB in the mask) is about one standard error on 32 scenes (docs/realcam.md). `runs`: its
  # sampling runs (names of methods.realcam_i2v.RUNS, with "shaping"); empty = all six. `camera_runs`: the runs whose
  # videos (and the ground-truth video, the SfM reference) get CamI2V camera errors, metric variants included
  # (`trials` SfM seeds each), on the first `camera_scenes` scenes (0: all; SfM takes ~12 s a video); empty skips.
  c.eval.update(scenes=96, trials=1, runs=(), camera_runs=("shaping", "no_shaping"), camera_scenes=8)

  if variant == "raw_scale":
    c.realcam.scale = "raw"
  elif variant == "test":
    c.model.update(num_heads=2, head_dim=16, ffn_dim=64, num_layers=2)
    c.text.update(width=32, max_length=24)
    c.data.update(num_scenes=3, eval_scenes=1, render_size=32, num_frames=9, height=32, width=32, batch_size=2)
    c.train.update(steps=2, log_every=1, checkpoint_every=2)
    c.optimizer.update(warmup_steps=1)
    c.sample.update(num=1, steps=2)
    c.eval.update(scenes=1, at_end=True)
  elif variant == "re10k":
    # Real RealEstate10K-layout clips (pose files + videos) aligned to metric scale once per workdir with the metric
    # depth model `depth_model` (methods.realcam_i2v.prepare_re10k, camjax.data.curate.metric.align_re10k): per clip
    # frame 0's median metric / SfM depth over its triangulated points scales the translations; clips whose frame
    # factors fall in the outer `align_quantile` are dropped; `align_min_points` SfM points on frame 0 at least;
    # `align_threads` 1 keeps COLMAP reproducible. The clips of the last `heldout_scenes` scenes are held out for
    # the samples and the evaluation (eval.scenes: at most that many held-out clips).
    c.realcam.update(depth_model="", depth_device="cpu", align_quantile=0.02, align_min_points=20, align_threads=1,
                     heldout_scenes=1)
    # 13 = 1 + 4k frames fit every shared clip (14 or 25 frames; with 17 the 14-frame ones are skipped and counted);
    # 64x112 keeps their 1.8:1 aspect (as cameractrl2.py:re10k); stride up to 2 on the 25-frame clips.
    c.data.update(source="re10k", path="../shared/data/re10k_clips", num_frames=13, height=64, width=112,
                  stride=(1, 2), batch_size=8)
  elif variant == "wan1_3b":
    c.model.update(preset="wan1_3b", num_heads=12, head_dim=128, ffn_dim=8960, num_layers=30, dtype="bfloat16",
                   remat="dots", attention="cudnn", pretrained="/path/to/Wan2.1-T2V-1.3B-Diffusers/transformer",
                   anchor="none")
    c.autoencoder.update(kind="wan_vae", temporal_factor=4, spatial_factor=8, channels=16,
                         path="/path/to/Wan2.1-T2V-1.3B-Diffusers/vae")
    c.text.update(kind="precomputed", width=4096, max_length=512,
                  encoder_path="/path/to/Wan2.1-T2V-1.3B-Diffusers/text_encoder",
                  tokenizer_path="/path/to/Wan2.1-T2V-1.3B-Diffusers/tokenizer")
    c.realcam.update(depth_model="/path/to/depth-anything-v2-metric-folder", depth_device="cpu", align_quantile=0.02,
                     align_min_points=20, align_threads=1, heldout_scenes=1)
    c.data.update(source="re10k", path="/path/to/re10k_clips", num_frames=17, height=320, width=512, stride=(1, 2),
                  batch_size=64, worker_count=8)
    c.objective.update(shift=3.0, prediction="velocity")
    c.optimizer.update(lr=1e-4, warmup_init_lr=1e-4, warmup_steps=1, end_lr=1e-4, weight_decay=0.0, ema_decay=0.0)
    c.train.update(steps=50_000, log_every=50, checkpoint_every=1000)
    c.sample.update(every=5000, steps=50, shift=5.0, w_text=7.5, w_cam=3.0)
    c.mesh.update(data=1, fsdp=-1, context=1, tensor=1)
  elif variant == "wan_tiny":
    _wan_tiny(c)
  return c


def _wan_tiny(c: ml_collections.ConfigDict) -> None:
  """The wan_vae path at toy size (module docstring); `tiny_models` moves both model folders."""
  from camjax.models import tiny  # pylint: disable=import-outside-toplevel  # sizes only: no torch needed here
  models = ml_collections.FieldReference("runs/wan_tiny/models")
  c.tiny_models = models
  c.model.update(preset="toy", **{k: v for k, v in tiny.DIT.items() if k != "freq_dim"}, dtype="float32",
                 remat="none", attention="xla", pretrained=models + "/transformer", anchor="none")
  c.autoencoder.update(kind="wan_vae", temporal_factor=4, spatial_factor=8, channels=tiny.LATENT_CHANNELS,
                       path=models + "/vae")
  c.text.update(kind="precomputed", width=tiny.TEXT_WIDTH, max_length=32, encoder_path=models + "/text_encoder",
                tokenizer_path=models + "/tokenizer")
  c.data.update(num_scenes=8, eval_scenes=1, render_size=32, num_frames=9, height=32, width=32, batch_size=2)
  c.objective.update(shift=3.0, prediction="velocity")
  c.train.update(steps=20, log_every=5, checkpoint_every=20)
  c.optimizer.update(warmup_steps=5)
  c.sample.update(num=1, steps=4)
  c.eval.update(scenes=1, camera_runs=())
