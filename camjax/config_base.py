"""The shared base of every camjax config: mesh, model size, autoencoder, text, data, objective, optimiser, train loop,
sampling and evaluation. A paper's config file (`configs/<method>.py`) starts from `base(method)`, adds its own
fields (cameras, tracks, phases, guidance weights) and exports its variant names (`VARIANTS`, `CPU_VARIANTS`).

The values here are the CPU-sized defaults; paper-scale variants override them.
"""

from __future__ import annotations

import ml_collections


def base(method: str, variant: str = "default") -> ml_collections.ConfigDict:
  """The shared sections, with `config.method = method` (a `camjax.methods` registry name)."""
  c = ml_collections.ConfigDict()
  c.method = method
  c.variant = variant
  c.seed = 0

  # Mesh: axis sizes (one may be -1 = all remaining devices). Data batches are split over data x fsdp.
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, context=1, tensor=1))

  # WAN 2.1 DiT (camjax.models.WanConfig fields) on top of a named size; a method adds its own fields.
  c.model = ml_collections.ConfigDict(dict(
      preset="toy", num_heads=4, head_dim=32, ffn_dim=512, num_layers=4,
      # remat "full": on CPU recomputing a block in the backward beats storing its activations (the train step of the
      # CPU default: 125 -> 109 ms, docs/benchmarks.md); the WAN variants set their own.
      dtype="float32", remat="full", scan_layers=True, attention="xla",
      pretrained="",  # diffusers WanTransformer3DModel folder to load
  ))
  # kind: "pixel" (lossless space-to-depth, `channels` = colour channels) | "precomputed" (records carry VAE latents
  # with `channels` latent channels; no decoding, samples are saved as latents).
  c.autoencoder = ml_collections.ConfigDict(dict(kind="pixel", temporal_factor=4, spatial_factor=8, channels=3,
                                                 scale=1.0, shift=0.0))
  # kind: "byte" (a small trained byte-level encoder) | "precomputed" (records carry `text_embeddings [L, width]`,
  # padded / truncated to `max_length` tokens).
  c.text = ml_collections.ConfigDict(dict(kind="byte", width=64, num_layers=1, num_heads=2, max_length=48))

  c.data = ml_collections.ConfigDict(dict(
      source="synthetic",  # synthetic | re10k | shards (an existing camjax ArrayRecord dataset at `path`)
      path="",  # re10k: folder of pose files + videos; shards: dataset folder
      num_scenes=64, eval_scenes=2, render_size=64, render_frames=0,  # synthetic only (0: num_frames)
      num_frames=17, height=64, width=64, stride=(1, 2),
      batch_size=8,  # global batch (split over processes and the data x fsdp mesh axes)
      worker_count=0,
  ))
  # camjax.diffusion.make_objective: kind "flow" (shift, density, logit_mean, logit_std, prediction "velocity" |
  # "sample") or "ddpm" (prediction "eps" | "v", num_train_timesteps, beta_start, beta_end).
  c.objective = ml_collections.ConfigDict(dict(kind="flow", shift=1.0, density="logit_normal", prediction="velocity"))
  c.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_init_lr=5e-4, warmup_steps=30, end_lr=1e-4, weight_decay=0.01, b1=0.9, b2=0.95, grad_clip=1.0,
      ema_decay=0.0))
  c.train = ml_collections.ConfigDict(dict(
      steps=300, log_every=10, checkpoint_every=100, keep_checkpoints=3,
      text_dropout=0.1,  # text CFG training
  ))
  # Sampling: `every` steps during training (0: only at the end), `num` samples, the objective's sampler with `steps`
  # (flow: Euler with `shift`; DDPM: DDIM with `eta`), text guidance `w_text`.
  c.sample = ml_collections.ConfigDict(dict(every=0, num=2, steps=24, shift=3.0, eta=0.0, w_text=2.0))
  # After the final samples: camjax.eval on them (SfM camera error over `trials` seeds, motion strength, PSNR/SSIM vs
  # the ground truth, the trivial baselines) -> samples/step_N/eval/report.md; methods add their own evaluations.
  c.eval = ml_collections.ConfigDict(dict(at_end=True, trials=2))
  return c
