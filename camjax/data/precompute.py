"""Precompute WAN-VAE latents and umT5 text embeddings into a camjax dataset (what the paper-scale variants train on).

    python -m camjax.data.precompute --data IN --out OUT --vae VAE_DIR --text_encoder TEXT_DIR \\
        [--tokenizer TOK_DIR] --num_frames 81 --height 480 --width 832 [--frame_stride 1] \\
        [--process_index i --process_count n]

`IN` is any camjax dataset (curated, ingested, procedural: `camjax_clips` ArrayRecord shards). Every clip is cut into
non-overlapping windows of `num_frames` frames (`num_frames = 1 + 4k`, the WAN VAE's causal grouping) taken every
`frame_stride` frames, resized to cover `height x width` and centre-cropped (intrinsics moved the same way, as the
training pipeline does). Each window becomes one record of `OUT` with `latents [t, h, w, 16]` (normalised,
`camjax.models.wan_vae.WanVAE.encode`), its cameras, and `text_embeddings [L, D]` (umT5 over the caption, the real
tokens only: the pipeline zero-pads them to `text.max_length`, as WAN does). Clips shorter than one window are
counted and reported, not written.

Resumable and shardable: process `i` of `n` encodes windows `i, i + n, ...` of the input's clips into a cache folder
beside `OUT` (one `.npz` per clip, written to a temporary name and renamed), skipping clips already there. The cache
folder is keyed by the digest of everything that produced it (arguments, the input's listing, the encoder folders'
listings), so a cache made from other inputs or encoders is never reused. Each process writes a done-marker when its
share is complete; the process that finds every marker present assembles `OUT` (`camjax.data.shards.build_dataset`,
under an exclusive lock, so concurrent finishers never both write) and removes the cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from camjax.data.pipeline import resize_center_crop_window
from camjax.data.records import ClipRecord, DataError
from camjax.data.shards import (ShardSource, build_dataset, dataset_dir, input_listing, make_provenance,
                                provenance_digest)

log = logging.getLogger(__name__)

PRODUCER = "camjax.data.precompute"


def window_starts(num_frames: int, window: int, frame_stride: int) -> list[int]:
  """First frames of the non-overlapping windows of `window` frames taken every `frame_stride` frames of a clip of
  `num_frames` frames (empty when the clip is too short)."""
  span = (window - 1) * frame_stride + 1
  return list(range(0, num_frames - span + 1, span + frame_stride - 1)) if num_frames >= span else []


def clip_windows(record: ClipRecord, *, window: int, height: int, width: int,
                 frame_stride: int = 1) -> Iterator[tuple[int, np.ndarray, object]]:
  """`(start, frames uint8 [window, height, width, 3], cameras)` for every window of a record with frames.

  Raises:
    DataError: the record has no frames (it already holds latents).
  """
  if record.frames is None:
    raise DataError(f"record {record.clip_id!r} has no frames to encode (it already holds latents?)")
  for start in window_starts(record.num_frames, window, frame_stride):
    indices = start + frame_stride * np.arange(window)
    out = resize_center_crop_window(record, indices, height, width)
    yield start, out["frames"], out["cameras"]


def _listing(path) -> dict:
  return input_listing(path) if path else {}


class Precompute:
  """One precompute job (see the module docstring).

  Args:
    data: input camjax dataset folder.
    out: output dataset folder.
    encode_video: `[1, T, H, W, 3]` float32 in `[-1, 1]` -> latents `[1, t, h, w, c]` (e.g. `WanVAE.encode`).
    encode_captions: captions -> one `[L_i, D]` array of real-token embeddings each (None: records without text).
    window, height, width, frame_stride: the windows (`window = 1 + 4k`).
    encoders: description of the encoders for the provenance (folder paths; their file listings are recorded).
    process_index, process_count: this process' share of the clips.
  """

  def __init__(self, data, out, *, encode_video: Callable, encode_captions: Callable | None, window: int,
               height: int, width: int, frame_stride: int = 1, encoders: dict | None = None,
               process_index: int = 0, process_count: int = 1):
    if window < 1 or (window - 1) % 4:
      raise DataError(f"--num_frames={window}: the WAN VAE needs 1 + 4k frames (e.g. 17, 33, 81)")
    if not 0 <= process_index < process_count:
      raise DataError(f"--process_index={process_index} is not in [0, {process_count})")
    self.source = ShardSource(data)
    self.out = Path(out)
    self.encode_video, self.encode_captions = encode_video, encode_captions
    self.window, self.height, self.width, self.frame_stride = int(window), int(height), int(width), int(frame_stride)
    self.rank, self.size = int(process_index), int(process_count)
    encoders = encoders or {}
    self.provenance = make_provenance(PRODUCER, {
        "data": str(Path(data).resolve()), "num_frames": self.window, "height": self.height, "width": self.width,
        "frame_stride": self.frame_stride, "encoders": {k: str(Path(v).resolve()) if v else "" for k, v in
                                                        encoders.items()}},
        inputs={**input_listing(self.source.data_dir), **{k: v for p in encoders.values() for k, v in
                                                          _listing(p).items()}})
    self.cache = self.out.parent / f".{self.out.name}-precompute-{provenance_digest(self.provenance)}"

  # ------------------------------------------------------------------------------------------------ one process
  def run(self, progress: bool = True) -> dict:
    """Encodes this process' clips (skipping cached ones), marks its share done and, when every share is done,
    assembles the dataset. Returns counts: `clips`, `windows`, `too_short`, `cached`, `assembled`."""
    self.cache.mkdir(parents=True, exist_ok=True)
    mine = range(self.rank, len(self.source), self.size)
    counts = {"clips": 0, "windows": 0, "too_short": 0, "cached": 0}
    bar = None
    if progress:
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      bar = tqdm(total=len(mine), desc=f"precompute {self.rank + 1}/{self.size}", unit="clip")
    for index in mine:
      path = self.cache / f"{index:08d}.npz"
      if path.exists():
        counts["cached"] += 1
        with np.load(path) as z:
          n = int(z["num_windows"])
      else:
        n = self._encode_clip(index, path)
      counts["windows"] += n
      counts["too_short"] += n == 0
      counts["clips"] += 1
      if bar is not None:
        bar.update()
    if bar is not None:
      bar.close()
    marker = self.cache / f"done-{self.rank}-of-{self.size}.json"
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(counts))
    os.replace(tmp, marker)
    counts["assembled"] = self.assemble_if_complete()
    return counts

  def _encode_clip(self, index: int, path: Path) -> int:
    record = self.source[index]
    arrays: dict[str, np.ndarray] = {}
    windows = list(clip_windows(record, window=self.window, height=self.height, width=self.width,
                                frame_stride=self.frame_stride))
    text = None
    if windows and self.encode_captions is not None:
      text = np.asarray(self.encode_captions([record.caption])[0], np.float32)
    for i, (start, frames, cams) in enumerate(windows):
      video = frames.astype(np.float32)[None] / 127.5 - 1.0
      latents = np.asarray(self.encode_video(video), np.float32)[0]
      if not np.isfinite(latents).all():
        raise DataError(f"record {record.clip_id!r} window at frame {start}: the VAE gave non-finite latents")
      arrays.update({f"latents_{i}": latents, f"K_{i}": np.asarray(cams.K), f"w2c_{i}": np.asarray(cams.w2c),
                     f"start_{i}": np.int64(start)})
    meta = {"clip_id": record.clip_id, "caption": record.caption, "has_camera": record.has_camera,
            "fps": record.fps / self.frame_stride, "metric_scale": record.metric_scale, "source": record.source,
            "scene_id": record.scene_id, "camera_index": record.camera_index}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, num_windows=np.int64(len(windows)), meta=np.str_(json.dumps(meta)),
             **({"text": text} if text is not None else {}), **arrays)
    os.replace(tmp, path)
    return len(windows)

  # ------------------------------------------------------------------------------------------------ assembly
  def _records(self) -> Iterator[ClipRecord]:
    for index in range(len(self.source)):
      with np.load(self.cache / f"{index:08d}.npz") as z:
        meta = json.loads(str(z["meta"]))
        text = z["text"] if "text" in z.files else None
        for i in range(int(z["num_windows"])):
          yield ClipRecord(
              clip_id=f"{meta['clip_id']}@{int(z[f'start_{i}'])}", K=z[f"K_{i}"], w2c=z[f"w2c_{i}"],
              height=self.height, width=self.width, latents=z[f"latents_{i}"], fps=meta["fps"],
              caption=meta["caption"], text_embeddings=text, has_camera=meta["has_camera"],
              metric_scale=meta["metric_scale"], source=meta["source"], scene_id=meta["scene_id"] or meta["clip_id"],
              camera_index=meta["camera_index"])

  def assemble_if_complete(self) -> bool:
    """Writes the dataset when every process' done-marker is present (and no other process is writing it)."""
    markers = [self.cache / f"done-{r}-of-{self.size}.json" for r in range(self.size)]
    if not all(m.exists() for m in markers):
      return False
    lock = self.cache / "assemble.lock"
    try:
      fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      return False  # another process is assembling
    os.close(fd)
    try:
      windows = sum(json.loads(m.read_text())["windows"] for m in markers)
      if windows == 0:
        raise DataError(f"no clip of {self.source.data_dir} is long enough for one window of {self.window} frames "
                        f"every {self.frame_stride} frame(s)")
      build_dataset(self._records, self.out, self.provenance, overwrite=False,
                    description=f"camjax precompute of {self.source.data_dir}")
    finally:
      lock.unlink(missing_ok=True)
    shutil.rmtree(self.cache, ignore_errors=True)
    return True


def load_encoders(vae: str, text_encoder: str | None, tokenizer: str | None, max_length: int = 512):
  """`(encode_video, encode_captions)` from local folders: `WanVAE.from_diffusers(vae)` (jitted encode) and umT5
  (`UMT5Encoder.from_transformers`, tokenizer from `tokenizer` or the encoder folder) with WAN's text handling.

  Raises:
    camjax.models errors naming the missing folder / file.
  """
  import jax  # pylint: disable=import-outside-toplevel

  from camjax.models import umt5  # pylint: disable=import-outside-toplevel
  from camjax.models.wan_vae import WanVAE  # pylint: disable=import-outside-toplevel

  model = WanVAE.from_diffusers(vae)
  encode_video = jax.jit(model.encode)
  encode_captions = None
  if text_encoder:
    encoder = umt5.UMT5Encoder.from_transformers(text_encoder)
    tok = umt5.load_tokenizer(tokenizer or text_encoder, max_length=max_length)

    def encode_captions(captions: Sequence[str]) -> list[np.ndarray]:
      emb, mask = umt5.encode_text(tok, encoder, list(captions), max_length=max_length)
      emb, mask = np.asarray(emb), np.asarray(mask)
      return [e[:max(int(m.sum()), 1)] for e, m in zip(emb, mask)]
  return encode_video, encode_captions


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m camjax.data.precompute", description=__doc__.split("\n\n")[0])
  p.add_argument("--data", required=True, help="input camjax dataset folder")
  p.add_argument("--out", required=True, help="output dataset folder (records with latents + text embeddings)")
  p.add_argument("--vae", required=True, help="diffusers AutoencoderKLWan folder")
  p.add_argument("--text_encoder", default="", help="transformers umT5 encoder folder (omit: no text embeddings)")
  p.add_argument("--tokenizer", default="", help="tokenizer folder (default: the text encoder folder)")
  p.add_argument("--num_frames", type=int, default=81)
  p.add_argument("--height", type=int, default=480)
  p.add_argument("--width", type=int, default=832)
  p.add_argument("--frame_stride", type=int, default=1)
  p.add_argument("--max_length", type=int, default=512)
  p.add_argument("--process_index", type=int, default=int(os.environ.get("CAMJAX_PROCESS_INDEX", 0)))
  p.add_argument("--process_count", type=int, default=int(os.environ.get("CAMJAX_PROCESS_COUNT", 1)))
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  encode_video, encode_captions = load_encoders(args.vae, args.text_encoder, args.tokenizer, args.max_length)
  job = Precompute(args.data, args.out, encode_video=encode_video, encode_captions=encode_captions,
                   window=args.num_frames, height=args.height, width=args.width, frame_stride=args.frame_stride,
                   encoders={"vae": args.vae, "text_encoder": args.text_encoder, "tokenizer": args.tokenizer},
                   process_index=args.process_index, process_count=args.process_count)
  counts = job.run()
  print(f"precompute: {counts['clips']} clips ({counts['cached']} from the cache), {counts['windows']} windows, "
        f"{counts['too_short']} clips shorter than one window of {args.num_frames} frames")
  if counts["assembled"]:
    print(f"wrote {dataset_dir(args.out)}")
  else:
    print("this share is done; the dataset is assembled by the last process to finish")


if __name__ == "__main__":
  main()
