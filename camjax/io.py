"""Small file helpers shared by camjax: atomic writes (nothing half-written is ever left behind)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs):
  """Opens a temporary file beside `path` and renames it over `path` only when the block succeeds.

  A crash or exception inside the block leaves `path` as it was (absent or the previous version).
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, mode, **kwargs) as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
