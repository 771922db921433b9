"""Named camjax errors.

Every error raised on bad input derives from :class:`CamjaxError` and says what was wrong and where (file, line,
frame), so a user can fix the input without reading camjax's source.
"""

from __future__ import annotations


class CamjaxError(Exception):
  """Base class of every error camjax raises on bad input."""


def where(source: str | None = None, line: int | None = None, frame: int | None = None) -> str:
  """Formats a location as ``"path:line (frame 3)"``; empty when nothing is known."""
  parts = []
  if source is not None:
    parts.append(f"{source}:{line}" if line is not None else str(source))
  elif line is not None:
    parts.append(f"line {line}")
  if frame is not None:
    parts.append(f"frame {frame}")
  return " ".join(parts)


class TrainingError(CamjaxError):
  """A run that cannot continue (non-finite loss, unsupported configuration, missing data, no checkpoint)."""
