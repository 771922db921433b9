"""Stage 1, shot and clip extraction (CameraCtrl II sec. 3.2): decode a video, cut it at shot boundaries, split each
shot into clips of a fixed number of frames (optionally at a lower frame rate and a smaller size), and drop clips that
are too dark or too static to be useful.

Thresholds (defaults of `ClipOptions`): mean luma < 20 / 255 is "too dark"; a mean absolute frame-to-frame change
< 0.5 / 255 is "static" (a frozen or still picture); a shot boundary is a frame pair whose HSV colour histograms
correlate below 0.5.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from camjax.data.curate.errors import CurationError, NoVideosError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass(frozen=True)
class ClipOptions:
  """Options of stage 1.

  Attributes:
    clip_length: frames per clip (after temporal subsampling).
    clip_stride: frames between clip starts (default: `clip_length`, non-overlapping).
    target_fps: subsample the video to about this frame rate (None: keep every frame).
    max_side: resize so the longer image side is at most this many pixels (None: keep the size).
    max_clips: at most this many clips per video (None: all).
    min_brightness: drop clips whose mean luma is below this (0-255).
    min_change: drop clips whose mean absolute frame-to-frame change is below this (0-255).
    shot_threshold: HSV-histogram correlation below which consecutive frames start a new shot.
    image_fps: frame rate assumed for image-sequence folders.
  """

  clip_length: int = 16
  clip_stride: int | None = None
  target_fps: float | None = 10.0
  max_side: int | None = 256
  max_clips: int | None = 2
  min_brightness: float = 20.0
  min_change: float = 0.5
  shot_threshold: float = 0.5
  image_fps: float = 10.0


@dataclasses.dataclass
class Clip:
  """One clip cut from a video: `frames uint8 [T, H, W, 3]` taken at `frame_indices [T]` of the decoded video."""

  clip_id: str
  video_id: str
  frames: np.ndarray
  frame_indices: np.ndarray
  fps: float
  scale_xy: tuple[float, float]  # (clip width / video width, clip height / video height)


def video_id_of(path) -> str:
  """A file-system safe id of a video path (its stem, with odd characters replaced)."""
  stem = Path(path).stem if Path(path).suffix.lower() in VIDEO_SUFFIXES else Path(path).name
  return _safe(stem)


def _safe(name: str) -> str:
  """`name` with every character but letters, digits and "-_." replaced by "_"."""
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def video_ids(paths) -> dict[Path, str]:
  """Unique ids of the videos `paths` (one folder's listing): `video_id_of` where that is unique, else the sanitised
  file name (`cat.mp4` and `cat.mov` become "cat.mp4" and "cat.mov"), else that name with "_2", "_3", ... appended."""
  paths = [Path(p) for p in paths]
  stems = [video_id_of(p) for p in paths]
  ids = [s if stems.count(s) == 1 else _safe(p.name) for s, p in zip(stems, paths)]
  out, used = {}, set()
  for p, i in zip(paths, ids):
    unique, k = i, 1
    while unique in used:
      k += 1
      unique = f"{i}_{k}"
    used.add(unique)
    out[p] = unique
  return out


def select_videos(videos_dir, only=None) -> dict[Path, str]:
  """The videos to curate under `videos_dir` and their unique ids (`video_ids` of the whole folder, so an id does not
  depend on `only`).

  Args:
    videos_dir: folder of video files and/or image-sequence folders.
    only: names to keep (a file or folder name, its stem, or its id); None: all.

  Returns:
    `{path: video_id}` in name order.

  Raises:
    CurationError: the folder does not exist.
    NoVideosError: the folder holds no video, or a name of `only` matches none of them.
  """
  found = list_videos(videos_dir)
  searched = (f"video files ({', '.join(VIDEO_SUFFIXES)}) and image-sequence folders "
              f"({', '.join(IMAGE_SUFFIXES)}) directly inside the folder")
  if not found:
    raise NoVideosError(f"no videos to curate: searched for {searched}", videos_dir=videos_dir, only=only)
  ids = video_ids(found)
  if only is None:
    return ids
  only = list(only)
  keys = {p: {p.name, video_id_of(p), i} for p, i in ids.items()}
  missing = [w for w in only if not any(w in k for k in keys.values())]
  if missing or not only:
    listing = ", ".join(p.name for p in found[:20]) + (f", ... ({len(found)} in all)" if len(found) > 20 else "")
    what = f"--only {missing} match no video (by file or folder name, stem or id)" if only else \
        "--only names no video"
    raise NoVideosError(f"{what}: searched for {searched}; found {listing}", videos_dir=videos_dir, only=only)
  wanted = set(only)
  return {p: i for p, i in ids.items() if keys[p] & wanted}


def list_videos(videos_dir) -> list[Path]:
  """Video files and image-sequence folders directly under `videos_dir`, sorted by name.

  Raises:
    CurationError: the folder does not exist.
  """
  videos_dir = Path(videos_dir)
  if not videos_dir.is_dir():
    raise CurationError("videos folder not found", source=videos_dir)
  out = []
  for p in sorted(videos_dir.iterdir()):
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
      out.append(p)
    elif p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()):
      out.append(p)
  return out


def video_fps(path, default: float) -> float:
  """Frame rate of a video file from its metadata (`default` for image folders or when unknown)."""
  path = Path(path)
  if path.is_dir():
    return default
  try:
    import imageio_ffmpeg

    meta = next(imageio_ffmpeg.read_frames(str(path)))
    fps = float(meta.get("fps") or 0)
    return fps if np.isfinite(fps) and fps > 0 else default
  except Exception:  # an unreadable file is reported by decode_video
    return default


def decode_video(path, image_fps: float = 10.0) -> tuple[np.ndarray, float]:
  """Decodes a video file (mediapy + ffmpeg) or an image-sequence folder (sorted by name).

  Returns:
    (`uint8 [T, H, W, 3]` frames, frames per second).

  Raises:
    CurationError: unreadable file, zero frames, or frames of different sizes.
  """
  from camjax import media

  path = Path(path)
  if path.is_dir():
    import mediapy

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
      raise CurationError("image folder has no frames", source=path)
    images = []
    for i, f in enumerate(files):
      try:
        im = np.asarray(mediapy.read_image(f))
      except Exception as e:
        raise CurationError(f"cannot read image ({e})", source=path, frame=i) from None
      if im.ndim == 2:
        im = np.repeat(im[..., None], 3, -1)
      if im.dtype != np.uint8:
        im = (im.astype(np.float64) / np.iinfo(im.dtype).max * 255).round().astype(np.uint8) \
            if np.issubdtype(im.dtype, np.integer) else (np.clip(im, 0, 1) * 255).round().astype(np.uint8)
      if images and im.shape[:2] != images[0].shape[:2]:
        raise CurationError(f"frame size {im.shape[:2]} differs from the first frame's {images[0].shape[:2]}",
                            source=path, frame=i)
      images.append(im[..., :3])
    return np.stack(images), float(image_fps)
  try:
    frames = media.read_video(path)
  except Exception as e:  # MediaError and anything ffmpeg throws
    raise CurationError(f"unreadable video ({e})", source=path) from None
  if frames.ndim != 4 or len(frames) == 0:
    raise CurationError(f"video has zero frames (decoded shape {frames.shape})", source=path)
  if frames.shape[-1] == 4:
    frames = frames[..., :3]
  return np.ascontiguousarray(frames, dtype=np.uint8), video_fps(path, image_fps)


def resize_max_side(frames: np.ndarray, max_side: int | None) -> np.ndarray:
  """Resizes `uint8 [T, H, W, 3]` so max(H, W) <= max_side (area filter; sizes rounded to even pixels)."""
  import cv2

  H, W = frames.shape[1:3]
  if max_side is None or max(H, W) <= max_side:
    return frames
  s = max_side / max(H, W)
  w, h = max(2, int(round(W * s / 2)) * 2), max(2, int(round(H * s / 2)) * 2)
  return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


def shot_boundaries(frames: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """Indices t where a new shot starts (frame t-1 -> t is a cut), from HSV histogram correlation.

  Args:
    frames: `uint8 [T, H, W, 3]`.
    threshold: correlation (-1..1) below which a cut is declared.

  Returns:
    Sorted int array of shot starts, always beginning with 0.
  """
  import cv2

  hists = []
  for f in frames:
    hsv = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2HSV)
    h = cv2.calcHist([hsv], [0, 1], None, [32, 32], [0, 180, 0, 256])
    hists.append(cv2.normalize(h, h).flatten())
  cuts = [0] + [t for t in range(1, len(frames))
                if cv2.compareHist(hists[t - 1], hists[t], cv2.HISTCMP_CORREL) < threshold]
  return np.asarray(cuts, dtype=np.int64)


def clip_statistics(frames: np.ndarray) -> dict[str, float]:
  """Brightness (mean luma, 0-255) and change (mean absolute frame-to-frame difference, 0-255) of a clip."""
  luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  change = float(np.abs(np.diff(luma, axis=0)).mean()) if len(frames) > 1 else 0.0
  return {"brightness": float(luma.mean()), "change": change}


def split_clips(frames: np.ndarray, fps: float, video_id: str, options: ClipOptions = ClipOptions()
                ) -> tuple[list[Clip], list[dict]]:
  """Cuts decoded frames into clips (stage 1).

  Args:
    frames: `uint8 [T, H, W, 3]` decoded video.
    fps: its frame rate.
    video_id: id used to name the clips (`<video_id>_c<k>`).
    options: `ClipOptions`.

  Returns:
    (kept clips, dropped clips as dicts `{"clip_id", "reason", **statistics}`).

  Raises:
    CurationError: bad frames or options.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise CurationError(f"split_clips needs uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}",
                        source=video_id)
  if options.clip_length < 2:
    raise CurationError(f"clip_length must be >= 2, got {options.clip_length}")
  step = 1
  if options.target_fps and fps > options.target_fps:
    step = max(1, int(round(fps / options.target_fps)))
  stride = options.clip_stride or options.clip_length
  H, W = frames.shape[1:3]
  cuts = list(shot_boundaries(frames, options.shot_threshold)) + [len(frames)]
  kept, dropped = [], []
  k = 0
  for a, b in zip(cuts[:-1], cuts[1:]):
    idx = np.arange(a, b, step)
    if len(idx) < options.clip_length:
      dropped.append({"clip_id": f"{video_id}_shot{a}", "reason": f"shot of {len(idx)} frames (after subsampling) "
                      f"is shorter than clip_length {options.clip_length}", "start": int(a)})
      continue
    for s in range(0, len(idx) - options.clip_length + 1, stride):
      sel = idx[s:s + options.clip_length]
      clip_id = f"{video_id}_c{k}"
      k += 1
      clip_frames = resize_max_side(frames[sel], options.max_side)
      stats = clip_statistics(clip_frames)
      if stats["brightness"] < options.min_brightness:
        dropped.append({"clip_id": clip_id, "reason": f"too dark (mean luma {stats['brightness']:.1f} < "
                        f"{options.min_brightness})", **stats})
        continue
      if stats["change"] < options.min_change:
        dropped.append({"clip_id": clip_id, "reason": f"static picture (mean frame change {stats['change']:.2f} < "
                        f"{options.min_change})", **stats})
        continue
      h, w = clip_frames.shape[1:3]
      kept.append(Clip(clip_id=clip_id, video_id=video_id, frames=clip_frames, frame_indices=sel,
                       fps=float(fps) / step, scale_xy=(w / W, h / H)))
      if options.max_clips is not None and len(kept) >= options.max_clips:
        return kept, dropped
  return kept, dropped
