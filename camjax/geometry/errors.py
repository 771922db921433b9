"""Errors of the camera geometry library."""

from __future__ import annotations

from camjax.errors import CamjaxError, where


class CameraError(CamjaxError, ValueError):
  """Invalid camera data: malformed pose file, non-orthonormal rotation, NaN, bad focal, wrong frame count.

  Attributes:
    source: the file (or other origin) the cameras came from, when known.
    line: the 1-based line of that file, when known.
    frame: the 0-based frame index at fault, when known.
  """

  def __init__(self, message: str, *, source=None, line: int | None = None, frame: int | None = None):
    self.source = None if source is None else str(source)
    self.line = line
    self.frame = frame
    loc = where(self.source, line, frame)
    super().__init__(f"{loc}: {message}" if loc else message)
