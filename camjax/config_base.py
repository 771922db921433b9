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
  # kind: "pixel" (lossless space-to-depth, `channels` = colour channels) | "precomputed" (records carry normalised
  # VAE latents with `channels` latent channels; the jitted train / sample steps never encode or decode).
  # path (precomputed only): a diffusers AutoencoderKLWan folder, the WAN VAE of those latents. Samples are then
  # decoded with camjax's JAX VAE outside the jitted sampler, one sample at a time (`tile` > 0: in spatial tiles of
  # that many pixels, a multiple of 8), into the usual mp4 layout (generated_<i>.mp4, ground_truth_<i>.mp4 from the
  # record's latents, sample_<i>.mp4) and evaluated; `camjax.explore` encodes its first frame / condition frames with
  # it. Without a path samples are saved as latents (`latents_<i>.npy`). With "precomputed" the VAE is a host-side
  # codec that never enters the jitted step (`camjax.methods.base.make_video_codec`).
  # | "wan_vae" (path required): the WAN VAE of `path` INSIDE the jitted steps, a frozen module of the generator
  # (saved with the checkpoints), for methods that encode there what records cannot carry (RealCam-I2V: given frames
  # of a mode drawn per sample, the preview); records carry frames (`camjax.methods.base.make_step_vae`).
  c.autoencoder = ml_collections.ConfigDict(dict(kind="pixel", temporal_factor=4, spatial_factor=8, channels=3,
                                                 scale=1.0, shift=0.0, path="", tile=0))
  # kind: "byte" (a small trained byte-level encoder) | "precomputed" (records carry `text_embeddings [L, width]`,
  # padded / truncated to `max_length` tokens). encoder_path / tokenizer_path (precomputed only): transformers umT5
  # encoder and tokenizer folders ("" tokenizer: the encoder folder, then a `tokenizer/` beside it) that embed captions
  # the records do not carry (exploration, camera following) the way precompute did; training reads the records'.
  c.text = ml_collections.ConfigDict(dict(kind="byte", width=64, num_layers=1, num_heads=2, max_length=48,
                                          encoder_path="", tokenizer_path=""))

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


def load_config(spec: str, variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a config file, as `--config=` reads it: `load_config("configs/realcam_i2v.py:test")` or
  `load_config("configs/realcam_i2v.py", "test")` (no variant: the file's default). For notebooks and tests.

  Raises:
    FileNotFoundError: no such config file.
    ValueError: an unknown variant (from the file's `get_config`).
  """
  import importlib.util  # pylint: disable=import-outside-toplevel
  from pathlib import Path  # pylint: disable=import-outside-toplevel
  path, _, tail = str(spec).partition(":")
  if not Path(path).is_file():
    raise FileNotFoundError(f"config file {path!r} not found")
  module_spec = importlib.util.spec_from_file_location(f"_camjax_config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant if variant is not None else (tail or None))
