"""Video I/O through mediapy with the ffmpeg binary shipped by `imageio-ffmpeg` (no system ffmpeg needed)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from camjax.errors import CamjaxError


class MediaError(CamjaxError, ValueError):
  """A video that cannot be read or written."""


@functools.cache
def _setup_ffmpeg() -> None:
  import imageio_ffmpeg
  import mediapy

  mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())


def read_video(path) -> np.ndarray:
  """Decodes a video file to `uint8 [T, H, W, 3]`.

  Raises:
    MediaError: the file is missing or cannot be decoded.
  """
  import mediapy

  path = Path(path)
  if not path.is_file():
    raise MediaError(f"{path}: video file not found")
  _setup_ffmpeg()
  try:
    return np.asarray(mediapy.read_video(str(path)))
  except Exception as e:  # ffmpeg failures surface as RuntimeError / OSError
    raise MediaError(f"{path}: cannot decode video ({e})") from None
