"""The Grain input pipeline: shuffle, repeat, shard by process, sample a window with a random stride, resize +
centre-crop with the intrinsics updated, relative poses, labeled:unlabeled mixing, batching.

    it = iter(make_pipeline(source, num_frames=17, height=64, width=64, batch_size=8, seed=0))
    batch = next(it)             # {"frames": uint8 [B, T, H, W, 3], "K": [B, T, 3, 3], "w2c": [B, T, 4, 4], ...}
    state = it.get_state()       # save with the train state; it.set_state(state) resumes bit-exactly

A source is any random-access sequence of `ClipRecord`s: `shards.ShardSource` (TFDS ArrayRecord shards),
`synthetic.SyntheticSource` (rendered on the fly) or a plain list.

Clips shorter than the window are not corrupt: they are skipped and counted apart (`pipeline_stats.too_short`, not
`pipeline_stats.skipped`). When no record gives a window at all the pipeline raises `NoWindowError` instead of
looking for one forever (see `make_pipeline`'s `no_window_after`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import grain
import jax
import numpy as np
from PIL import Image

from camjax.data.records import ClipRecord, DataError, RecordError

log = logging.getLogger(__name__)
NO_WINDOW_PASSES = 8  # default `no_window_after`: this many draws per record of the sources ...
NO_WINDOW_MAX_DRAWS = 2048  # ... at most


class ClipTooShortError(RecordError):
  """A record with too few frames for the window asked for (not corrupt: `Window` counts it apart)."""

  def __init__(self, clip_id: str, num_frames: int, message: str):
    self.num_frames = num_frames
    super().__init__(clip_id, message)


class NoWindowError(DataError):
  """No record of the source gives a training window (all too short for the window, or corrupt)."""


@dataclasses.dataclass
class SkipStats:
  """What this process's pipeline skipped (with `on_error="skip"`).

  With `worker_count > 0` the windows are cut in the worker processes and these counts stay there (empty here).
  """

  skipped: list[str] = dataclasses.field(default_factory=list)  # corrupt records, distinct clip ids, first seen first
  too_short: list[str] = dataclasses.field(default_factory=list)  # records shorter than the window, distinct clip ids
  skipped_draws: int = 0  # draws of a corrupt record (a record counts again each epoch)
  too_short_draws: int = 0  # draws of a too-short record
  windows: int = 0  # windows produced
  longest_too_short: int = 0  # frames of the longest too-short clip seen


def resize_frames(frames: np.ndarray, height: int, width: int, resample=Image.BILINEAR) -> np.ndarray:
  """Resizes `[T, H, W, C]` frames (uint8 or float32 single-channel stacks) to `height x width` with PIL."""
  if frames.shape[1:3] == (height, width):
    return frames
  out = []
  for f in frames:
    if f.ndim == 2 or (f.ndim == 3 and f.shape[-1] == 1):  # float maps (depth): PIL mode "F"
      img = Image.fromarray(np.asarray(f.reshape(f.shape[:2]), np.float32), mode="F")
      out.append(np.asarray(img.resize((width, height), resample)).reshape((height, width) + f.shape[2:]))
    else:
      out.append(np.asarray(Image.fromarray(f).resize((width, height), resample)))
  return np.stack(out).astype(frames.dtype)


def cover_crop(src_height: int, src_width: int, height: int, width: int) -> tuple[int, int, int, int]:
  """`(rh, rw, top, left)`: resize `src` to `rh x rw` to cover `height x width` (aspect kept), then crop the centre
  `height x width` at `(top, left)` (integer pixels)."""
  scale = max(height / src_height, width / src_width)
  rh, rw = max(height, round(src_height * scale)), max(width, round(src_width * scale))
  return rh, rw, (rh - height) // 2, (rw - width) // 2


def resize_center_crop_window(record: ClipRecord, indices: np.ndarray, height: int, width: int,
                              with_depth: bool = False) -> dict[str, Any]:
  """Frames `indices` of a record, resized to cover `height x width` (aspect kept) and centre-cropped, with the
  intrinsics moved by exactly the same integer crop."""
  rh, rw, top, left = cover_crop(record.height, record.width, height, width)
  cams = record.cameras.take(indices).resize(rh, rw).crop(top, left, height, width)
  out = {"cameras": cams}
  if record.frames is not None:
    out["frames"] = resize_frames(record.frames[indices], rh, rw)[:, top:top + height, left:left + width]
  if with_depth:
    if record.depth is None:
      raise RecordError(record.clip_id, "the pipeline asks for depth but the record has none")
    depth = resize_frames(record.depth[indices].astype(np.float32), rh, rw, resample=Image.NEAREST)
    out["depth"] = depth[:, top:top + height, left:left + width]
  return out


def _few(names: list[str], n: int = 3) -> str:
  return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _identity_poses(shape) -> np.ndarray:
  """Identity w2c of the given `[..., 4, 4]` shape: the placeholder poses of unlabeled clips."""
  return np.broadcast_to(np.eye(4, dtype=np.float32), shape).copy()


class Window(grain.transforms.RandomMap):
  """Validates a record and samples a training window (module-level class so Grain workers can pickle it)."""

  def __init__(self, num_frames: int, height: int, width: int, stride: tuple[int, int] = (1, 1),
               reference: str = "first", with_depth: bool = False, on_error: str = "skip",
               text_length: int | None = None, global_reference: int = 0, no_window_after: int = 0,
               num_records: int | None = None):
    """`no_window_after`: raise `NoWindowError` after this many draws in a row without a window, before the first
    window (0: never); `num_records`: records in the sources (named in that error)."""
    if on_error not in ("skip", "raise"):
      raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if reference not in ("first", "none"):
      raise ValueError(f"reference must be 'first' or 'none', got {reference!r}")
    self.num_frames, self.height, self.width = num_frames, height, width
    self.stride, self.reference, self.with_depth, self.on_error = tuple(stride), reference, with_depth, on_error
    self.text_length, self.global_reference = text_length, global_reference
    self.no_window_after, self.num_records = no_window_after, num_records
    self.stats = SkipStats()
    self._failed_in_a_row = 0
    self._seen: set[str] = set()  # clip ids already in stats.skipped / stats.too_short

  @property
  def min_clip_frames(self) -> int:
    """Frames a clip needs for one window: `(num_frames - 1) * min stride + 1`."""
    return (self.num_frames - 1) * self.stride[0] + 1

  def random_map(self, record: ClipRecord, rng: np.random.Generator):
    try:
      out = self._window(record, rng)
    except RecordError as e:
      if self.on_error == "raise":
        raise
      self._count_failure(e)
      return None
    self.stats.windows += 1
    self._failed_in_a_row = 0
    return out

  def _count_failure(self, e: RecordError) -> None:
    """Counts a record that gave no window (logged once per clip); raises `NoWindowError` when none ever gives one."""
    s = self.stats
    if isinstance(e, ClipTooShortError):
      s.too_short_draws += 1
      s.longest_too_short = max(s.longest_too_short, e.num_frames)
      if e.clip_id not in self._seen:
        self._seen.add(e.clip_id)
        s.too_short.append(e.clip_id)
        log.warning("skipping a clip too short for the window (counted in pipeline_stats.too_short): %s", e)
    else:
      s.skipped_draws += 1
      if e.clip_id not in self._seen:
        self._seen.add(e.clip_id)
        s.skipped.append(e.clip_id)
        log.warning("skipping corrupt record: %s", e)
    self._failed_in_a_row += 1
    draws = s.windows + s.too_short_draws + s.skipped_draws
    if s.windows == 0 and self.no_window_after and self._failed_in_a_row >= self.no_window_after:
      raise NoWindowError(self._no_window_message())
    if draws >= 64 and draws & (draws - 1) == 0 and s.windows < draws // 2:
      log.warning("%d of the first %d draws gave no window (%d clips too short for %d frames, %d corrupt)",
                  draws - s.windows, draws, len(s.too_short), self.min_clip_frames, len(s.skipped))

  def _no_window_message(self) -> str:
    s = self.stats
    records = f" ({self.num_records} records in the sources)" if self.num_records is not None else ""
    longest = f"; the longest seen has {s.longest_too_short}" if s.too_short else ""
    corrupt = f" ({_few(s.skipped)})" if s.skipped else ""
    return (f"no record gives a window of {self.num_frames} frames at stride >= {self.stride[0]}: the last "
            f"{self._failed_in_a_row} draws{records} gave none and none ever did. Too short: {len(s.too_short)} clips "
            f"(a window needs {self.min_clip_frames} frames{longest}). Corrupt or unusable: {len(s.skipped)} "
            f"clips{corrupt}. Lower data.num_frames or the minimum of data.stride, give clips of at least "
            f"{self.min_clip_frames} frames, or fix the corrupt records (logged above).")

  def _window(self, record, rng: np.random.Generator, reference_w2c=None) -> dict[str, Any]:
    if isinstance(record, tuple):  # a synchronised camera pair: one window, the same frames for both
      src, tgt = record
      if src.num_frames != tgt.num_frames:
        raise RecordError(tgt.clip_id, f"paired with {src.clip_id} but has {tgt.num_frames} frames, not "
                          f"{src.num_frames}")
      seed = int(rng.integers(1 << 62))  # the same draw for both: one window, the same frame indices
      a = self._window(src, np.random.default_rng(seed))
      # Both views relative to the SOURCE's first window frame: they share frame 0, so this is one global frame.
      b = self._window(tgt, np.random.default_rng(seed), reference_w2c=src.w2c[a["frame_indices"][0]])
      return {**{f"src_{k}": v for k, v in a.items()}, **{f"tgt_{k}": v for k, v in b.items()}}
    if not isinstance(record, ClipRecord):
      raise RecordError("<unknown>", f"pipeline sources must yield ClipRecord, got {type(record).__name__}")
    record.validate()
    if record.frames is None:
      return self._latent_window(record, reference_w2c, rng)
    T = record.num_frames
    lo, hi = self.stride
    max_stride = min(hi, (T - 1) // max(self.num_frames - 1, 1)) if self.num_frames > 1 else hi
    if max_stride < lo:
      raise ClipTooShortError(record.clip_id, T, f"{T} frames cannot give a window of {self.num_frames} at stride >= "
                              f"{lo} (needs {self.min_clip_frames} frames)")
    stride = int(rng.integers(lo, max_stride + 1))
    span = (self.num_frames - 1) * stride + 1
    start = int(rng.integers(0, T - span + 1))
    indices = start + stride * np.arange(self.num_frames)
    out = resize_center_crop_window(record, indices, self.height, self.width, self.with_depth)
    out = self._finish(record, out, reference_w2c, stride, indices)
    if self.global_reference:
      # An earlier frame of the clip stands for the first frame of an exploration that reached this window
      # (CameraCtrl II sec. 3.4: every clip posed in one global frame); its pose in the window's frame.
      back = int(rng.integers(0, min(self.global_reference, start // stride) + 1))
      ref = record.cameras.take(np.array([start - back * stride, start])).relative(1).w2c[0]
      out["reference_w2c"] = np.asarray(ref if record.has_camera else np.eye(4), np.float32)
    return out

  def _latent_window(self, record: ClipRecord, reference_w2c, rng) -> dict[str, Any]:
    """A record with precomputed latents and no frames: the latents encode the whole clip at the stored size (a
    causal VAE's latent frame 0 holds frame 0 alone, so windows cannot start later), hence the window is the clip.

    With `global_reference`, no frame before the window exists, so the reference is a frame of the clip drawn
    uniformly from frames `0 .. global_reference` (frame 0, the per-clip reference, stays a case): its pose in the
    window's frame, as for frame windows. The model then sees first poses other than the identity, as in an
    exploration's later clips."""
    T = record.num_frames
    if T != self.num_frames or (record.height, record.width) != (self.height, self.width):
      raise RecordError(record.clip_id, f"precomputed latents cover the whole clip ({T} frames at "
                        f"{record.height}x{record.width}); the pipeline asks for {self.num_frames} frames at "
                        f"{self.height}x{self.width}: precompute latents at the training size")
    indices = np.arange(T)
    out = {"cameras": record.cameras, "latents": np.asarray(record.latents, np.float32)}
    if self.global_reference:
      ref = int(rng.integers(0, min(self.global_reference, T - 1) + 1))
      pose = record.cameras.take(np.array([ref, 0])).relative(1).w2c[0]
      out["reference_w2c"] = np.asarray(pose if record.has_camera else np.eye(4), np.float32)
    if self.with_depth:
      if record.depth is None:
        raise RecordError(record.clip_id, "the pipeline asks for depth but the record has none")
      out["depth"] = np.asarray(record.depth, np.float32)
    return self._finish(record, out, reference_w2c, 1, indices)

  def _finish(self, record: ClipRecord, out: dict[str, Any], reference_w2c, stride: int,
              indices: np.ndarray) -> dict[str, Any]:
    cams = out.pop("cameras")
    if not record.has_camera:
      w2c = _identity_poses(cams.w2c.shape)
    elif self.reference == "first":
      w2c = cams.relative(0 if reference_w2c is None else reference_w2c).w2c
    else:
      w2c = cams.w2c
    out.update(w2c=np.asarray(w2c, np.float32), K=np.asarray(cams.K, np.float32),
               has_camera=np.bool_(record.has_camera), caption=np.str_(record.caption),
               clip_id=np.str_(record.clip_id), fps=np.float32(record.fps), stride=np.int32(stride),
               frame_indices=indices.astype(np.int32))
    if self.text_length is not None:
      out.update(_pad_text(record, self.text_length))
    return out


def _pad_text(record: ClipRecord, length: int) -> dict[str, np.ndarray]:
  """Precomputed text embeddings `[L, D]` padded / truncated to `[length, D]`, with a `[length]` validity mask."""
  if record.text_embeddings is None:
    raise RecordError(record.clip_id, "the pipeline asks for precomputed text embeddings but the record has none")
  emb = np.asarray(record.text_embeddings, np.float32)
  if emb.ndim != 2 or not np.isfinite(emb).all():
    raise RecordError(record.clip_id, f"text_embeddings must be finite [L, D], got {emb.shape}")
  n = min(len(emb), length)
  text = np.zeros((length, emb.shape[1]), np.float32)
  text[:n] = emb[:n]
  mask = np.zeros((length,), bool)
  mask[:n] = True
  return {"text_embeddings": text, "text_mask": mask}


class StripCamera(grain.transforms.Map):
  """Marks an element unlabeled (CameraCtrl II joint training): `has_camera = False`, identity poses."""

  def map(self, element):
    if element is None:
      return None
    return {**element, "has_camera": np.bool_(False), "w2c": _identity_poses(element["w2c"].shape)}


class PairedSource:
  """Pairs of synchronised cameras of the same scene (same `scene_id`, sharing frame 0): for every scene, camera 0
  with each other camera (Track2View / ReCamMaster video-to-video training).

  Grouping needs each record's `(scene_id, camera_index)`: taken from `source.scene_index()` when the source has it
  (`SyntheticSource` does, without rendering), otherwise read once from every record.
  """

  def __init__(self, source: Sequence[ClipRecord]):
    self.source = source
    if hasattr(source, "scene_index"):
      index = source.scene_index()
    else:
      index = [(source[i].scene_id, source[i].camera_index) for i in range(len(source))]
    scenes: dict[str, dict[int, int]] = {}
    for i, (scene, camera) in enumerate(index):
      scenes.setdefault(scene, {})[camera] = i
    self.pairs = [(cams[0], cams[k]) for _, cams in sorted(scenes.items()) if 0 in cams
                  for k in sorted(cams) if k != 0]
    if not self.pairs:
      raise RecordError("<dataset>", "no scene has a camera 0 and another camera to pair with")

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, index: int):
    a, b = self.pairs[index]
    return self.source[a], self.source[b]


def make_pipeline(source: Sequence[ClipRecord], *, num_frames: int, height: int, width: int, batch_size: int,
                  seed: int = 0, stride: tuple[int, int] = (1, 1), reference: str = "first",
                  unlabeled_source: Sequence[ClipRecord] | None = None, unlabeled_ratio: tuple[int, int] = (4, 1),
                  shuffle: bool = True, num_epochs: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, with_depth: bool = False, on_error: str = "skip",
                  drop_remainder: bool = True, worker_count: int = 0, paired: bool = False,
                  start_index: int = 0, text_length: int | None = None,
                  global_reference: int = 0, no_window_after: int | None = None) -> grain.IterDataset:
  """Builds the training input pipeline.

  Args:
    source: labeled clips (records with `has_camera=False` pass through as unlabeled).
    num_frames: T of every window; height, width: output frame size (resize to cover, then centre crop).
    batch_size: per-process batch size.
    seed: shuffling and window-sampling seed.
    stride: inclusive range of the random temporal stride (capped per clip so the window fits).
    reference: "first" (poses relative to the window's first frame) or "none" (as stored).
    unlabeled_source: clips without cameras, mixed in at `unlabeled_ratio` = (labeled, unlabeled) weights
      (CameraCtrl II: 4:1); their cameras are stripped (`has_camera=False`).
    shuffle: shuffle globally each epoch.
    num_epochs: None repeats forever.
    process_index, process_count: shard by process (default: `jax.process_index()` / `jax.process_count()`).
    with_depth: include resized metric depth `[B, T, H, W]` (nearest).
    on_error: "skip" (log once per clip + count in `pipeline_stats`: corrupt records in `skipped`, clips too short for
      the window in `too_short`) or "raise" a `RecordError` (`ClipTooShortError` for a too-short clip).
    drop_remainder: drop a last partial batch.
    worker_count: Grain worker processes (0 = in-process).
    paired: yield synchronised camera pairs of one scene (`PairedSource`): every key twice, prefixed `src_` and
      `tgt_`, the same frame indices for both, both posed relative to the source's first frame.
    start_index: skip the first `start_index` elements of the global stream (before sharding by process), e.g.
      `step * global_batch` to resume at a step with a different process count than the checkpoint's.
    text_length: also yield the records' precomputed `text_embeddings` padded / truncated to `[B, text_length, D]`
      with a `text_mask [B, text_length]` (records without them are corrupt for this pipeline).
    global_reference: also yield `reference_w2c [B, 4, 4]`: the pose, in the window's frame (relative to its first
      frame), of a frame up to `global_reference` strides before the window (uniform, clamped to the clip start;
      identity for unlabeled clips). Clip-extension training poses extension samples relative to it, as if the window
      continued an exploration that started there (CameraCtrl II sec. 3.4, global reference).
    no_window_after: with `on_error="skip"`, raise `NoWindowError` (from `next()`) when this many draws in a row gave
      no window before any window was produced: no record can give one (all too short or corrupt), so the pipeline
      would search forever. Default: `NO_WINDOW_PASSES` (8) draws per record of the sources, at most
      `NO_WINDOW_MAX_DRAWS` (2048). Failures are properties of the records, so once a window was produced the
      pipeline never raises; 8 passes make a false alarm (a usable record never drawn) unlikely even with one usable
      record and sharding by process (each epoch is reshuffled). 0 disables the check.

  Records with precomputed `latents` and no frames yield `latents [B, t, h, w, c]` instead of `frames`; their window
  is the whole clip, so `num_frames`, `height`, `width` must match the records.

  Returns:
    A Grain `IterDataset` of batches; `iter()` of it has `get_state()` / `set_state()`; `.pipeline_stats` is the
    `SkipStats` of this process (with `worker_count=0`).

  Raises:
    NoWindowError: (from `next()`) no record gives a window, see `no_window_after`.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  labeled = PairedSource(source) if paired else source
  num_records = len(labeled) + (len(unlabeled_source) if unlabeled_source is not None else 0)
  if no_window_after is None:
    no_window_after = min(NO_WINDOW_PASSES * max(num_records, 1), NO_WINDOW_MAX_DRAWS)
  window = Window(num_frames, height, width, stride, reference, with_depth, on_error, text_length, global_reference,
                  no_window_after=no_window_after, num_records=num_records)

  def prepare(src, salt: int) -> grain.MapDataset:
    ds = grain.MapDataset.source(src).seed(seed + salt)
    if shuffle:
      ds = ds.shuffle()
    return ds.repeat(num_epochs).random_map(window)

  ds = prepare(labeled, 0)
  if unlabeled_source is not None:
    ds = grain.MapDataset.mix([ds, prepare(unlabeled_source, 1).map(StripCamera())], weights=list(unlabeled_ratio))
  # Shard by process LAST (MapDatasets are lazy: each process only reads its own elements): element i of the global
  # stream, with its random window, goes to process i % n, so N processes with per-process batch B / N see exactly
  # the global batches of one process with batch B.
  ds = ds[start_index:][process_index::process_count]
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  it_ds = it_ds.batch(batch_size, drop_remainder=drop_remainder)
  if worker_count > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  it_ds.pipeline_stats = window.stats
  return it_ds
