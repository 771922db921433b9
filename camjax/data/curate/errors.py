"""Errors of the curation pipeline."""

from __future__ import annotations

from camjax.errors import CamjaxError, where


class CurationError(CamjaxError, ValueError):
  """Bad input to a curation stage (wrong frame shape or dtype, too few frames, unusable depth, bad option).

  Attributes:
    source: the video or file at fault, when known.
    frame: the 0-based frame index at fault, when known.
  """

  def __init__(self, message: str, *, source=None, frame: int | None = None):
    self.source = None if source is None else str(source)
    self.frame = frame
    loc = where(self.source, None, frame)
    super().__init__(f"{loc}: {message}" if loc else message)
