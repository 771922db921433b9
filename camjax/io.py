"""Small file helpers shared by camjax: atomic writes (nothing half-written is ever left behind)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
  """The process umask (reading it means setting it: set it straight back)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs):
  """Opens a temporary file beside `path` and renames it over `path` only when the block succeeds.

  A crash or exception inside the block leaves `path` as it was (absent or the previous version). The file gets the
  permissions of a plain `open(path, "w")` (0666 minus the umask), not the 0600 of the temporary file.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, mode, **kwargs) as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
  """Renames the complete folder `tmp` to `out`; a previous `out` is moved aside first, then deleted (a reader sees
  the old folder or the new one, never a half-written one)."""
  import shutil  # pylint: disable=import-outside-toplevel
  import uuid  # pylint: disable=import-outside-toplevel
  tmp, out = Path(tmp), Path(out)
  if not out.exists():
    os.replace(tmp, out)
    return
  old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
  os.replace(out, old)
  os.replace(tmp, out)
  shutil.rmtree(old, ignore_errors=True)
