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


class NoVideosError(CurationError):
  """The run found nothing to curate: the videos folder holds no video file or image-sequence folder, or the
  `--only` names match none of them. The message names the folder, the file extensions searched and the names asked for.

  Attributes:
    videos_dir: the folder searched.
    only: the names asked for (None: all).
  """

  def __init__(self, message: str, *, videos_dir, only=None):
    self.videos_dir = str(videos_dir)
    self.only = None if only is None else list(only)
    super().__init__(message, source=videos_dir)
