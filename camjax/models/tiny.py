"""Tiny random WAN 2.1 models in their public formats: the `wan_tiny` variant's CPU stand-ins for WAN's weights.

    python -m camjax.models.tiny --out runs/wan_tiny/models

writes, under `--out`, what a WAN 2.1 T2V diffusers pipeline folder holds, at toy size and with random weights:

    transformer/    diffusers `WanTransformer3DModel` (1 layer, 2 heads of 12, 16 latent channels, text width 32)
    vae/            diffusers `AutoencoderKLWan` (the WAN 2.1 layout: 8x space, 4x time, 16 channels; base width 8)
    text_encoder/   transformers `UMT5EncoderModel` (1 layer, width 32, vocabulary 256)
    tokenizer/      a Unigram tokenizer trained on procedural-scene captions, umT5-style (`</s>` appended, `<pad>` 0)

so that `configs/cameractrl2.py:wan_tiny` runs the paper-scale path (precomputed VAE latents and umT5 embeddings,
WAN weights from `model.pretrained`, samples decoded with the JAX VAE, exploration with umT5 captions) on a CPU in
seconds (docs/methods.md, "Paper scale end to end"). The models are random: what they generate is noise; the point is
that every format, shape and stage is the real one.

Writing them needs torch, diffusers and transformers (camjax's `parity` extra: `pip install -e .[parity]`); reading
them back does not (camjax loads safetensors with its own code). The same seed writes the same weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camjax.errors import CamjaxError

# Sizes (the `wan_tiny` config reads them, so config and folders cannot drift apart).
LATENT_CHANNELS = 16  # WAN 2.1's z_dim
TEXT_WIDTH = 32  # umT5 d_model = the DiT's text_dim
DIT = dict(num_heads=2, head_dim=12, ffn_dim=32, num_layers=1, freq_dim=256)
VAE = dict(base_dim=8, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
           temperal_downsample=[False, True, True], dropout=0.0)
UMT5 = dict(vocab_size=256, d_model=TEXT_WIDTH, d_kv=8, num_heads=4, d_ff=64, num_layers=1,
            relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as umT5's
FOLDERS = ("transformer", "vae", "text_encoder", "tokenizer")


class MissingParityExtraError(CamjaxError, ImportError):
  """torch / diffusers / transformers / tokenizers are not installed (camjax's `parity` extra)."""


class TinyModelsError(CamjaxError, ValueError):
  """An output folder that already holds other files."""


def _require():
  """`(torch, diffusers, transformers, tokenizers)`, or MissingParityExtraError naming what is missing."""
  mods, missing = [], []
  for name in ("torch", "diffusers", "transformers", "tokenizers"):
    try:
      mods.append(__import__(name))
    except ImportError:
      missing.append(name)
  if missing:
    raise MissingParityExtraError(
        f"python -m camjax.models.tiny needs {', '.join(missing)} (not installed): install camjax's parity extra, "
        "`pip install -e .[parity]` (torch CPU, diffusers, transformers, accelerate)")
  return tuple(mods)


def caption_corpus(num_scenes: int = 400, seed: int = 0) -> list[str]:
  """Captions of `num_scenes` procedural scenes (`camjax.data.synthetic.random_scene`, nothing rendered) plus camera
  phrases: the toy tokenizer's training text, so the procedural captions tokenize into words, not `<unk>`."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from camjax.data.synthetic import random_scene  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  extra = ["the camera pans to the left", "the camera moves forward into the room", "a slow orbit to the right",
           "a quiet room at dusk", "the camera tilts up towards the ceiling"]
  return [random_scene(rng).caption() for _ in range(num_scenes)] + extra * 8


def _train_tokenizer(tokenizers, transformers, out: Path, vocab_size: int):
  from tokenizers import decoders, models, pre_tokenizers, processors, trainers  # pylint: disable=C0415
  tok = tokenizers.Tokenizer(models.Unigram())
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  tok.decoder = decoders.Metaspace()
  trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), unk_token="<unk>")
  tok.train_from_iterator(caption_corpus(), trainer)
  eos = tok.token_to_id("</s>")
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                              unk_token="<unk>")
  fast.save_pretrained(out)
  return len(fast)


def _check_out(out: Path) -> None:
  if out.exists() and not out.is_dir():
    raise TinyModelsError(f"--out {out} exists and is not a folder")
  if out.is_dir():
    foreign = sorted(p.name for p in out.iterdir() if p.name not in FOLDERS)
    if foreign:
      raise TinyModelsError(f"--out {out} holds other files ({', '.join(foreign[:5])}): choose a new or empty folder")


def write_tiny_models(out, seed: int = 0) -> dict[str, Path]:
  """Writes the four folders (module docstring) under `out` (existing ones are replaced).

  Args:
    out: the root folder (created).
    seed: torch seed of the random weights.

  Returns:
    `{"transformer": path, "vae": path, "text_encoder": path, "tokenizer": path}`.

  Raises:
    MissingParityExtraError: torch / diffusers / transformers / tokenizers are missing.
    TinyModelsError: `out` is a file or holds files other than the four folders.
  """
  torch, diffusers, transformers, tokenizers = _require()
  from camjax.models.wan import preset  # pylint: disable=import-outside-toplevel
  out = Path(out)
  _check_out(out)
  out.mkdir(parents=True, exist_ok=True)
  paths = {name: out / name for name in FOLDERS}
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # tiny tensors: torch's worker threads only cost time on a small machine
  try:
    torch.manual_seed(seed)
    dit = preset("toy", in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, text_dim=TEXT_WIDTH, **DIT)
    cfg = {k: v for k, v in dit.to_diffusers_config().items() if not k.startswith("_")}
    diffusers.WanTransformer3DModel(**cfg).save_pretrained(paths["transformer"])
    g = torch.Generator().manual_seed(seed + 1)
    stats = dict(latents_mean=(0.1 * torch.randn(LATENT_CHANNELS, generator=g)).tolist(),
                 latents_std=(1.0 + 0.5 * torch.rand(LATENT_CHANNELS, generator=g)).tolist())
    diffusers.AutoencoderKLWan(**VAE, **stats).save_pretrained(paths["vae"])
    vocab = _train_tokenizer(tokenizers, transformers, paths["tokenizer"], UMT5["vocab_size"])
    if vocab > UMT5["vocab_size"]:  # the trainer may add pieces; the encoder must cover every id
      raise TinyModelsError(f"toy tokenizer has {vocab} ids, more than the encoder's {UMT5['vocab_size']}")
    encoder = transformers.UMT5EncoderModel(transformers.UMT5Config(**UMT5))
    encoder.save_pretrained(paths["text_encoder"], safe_serialization=True)
  finally:
    torch.set_num_threads(threads)
  return paths


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m camjax.models.tiny", description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True, help="root folder of transformer/, vae/, text_encoder/, tokenizer/")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  try:
    paths = write_tiny_models(args.out, seed=args.seed)
  except CamjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  root, data = Path(args.out), Path(args.out).parent
  print("wrote " + ", ".join(str(p) for p in paths.values()))
  print("next (configs/cameractrl2.py, variant wan_tiny):\n"
        f"  python -m camjax.data.synthetic --out {data}/frames --num_scenes 16 --resolution 32 --frames 9\n"
        f"  python -m camjax.data.precompute --data {data}/frames --out {data}/latents --vae {root}/vae "
        f"--text_encoder {root}/text_encoder --tokenizer {root}/tokenizer --num_frames 9 --height 32 --width 32\n"
        f"  python -m camjax.main --config=configs/cameractrl2.py:wan_tiny --config.tiny_models={root} "
        f"--config.data.path={data}/latents")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
