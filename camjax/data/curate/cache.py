"""Stage caches of the curation run, keyed by everything that produced them.

A cache entry's name is a hash of its stage, the identity of the input video (resolved path, size and modification
time of the file, or of every image of an image-sequence folder), the key of the entry it was computed from, and the
options of the stage. A rerun with other options or a changed input therefore misses the cache and recomputes, and two
inputs that share a stem (`cat.mp4`, `cat.mov`) never share an entry. Entries are written atomically
(`camjax.io.atomic_write`), so a crash leaves either a whole entry or none.

Layout: `<work>/<stage>/<key>.json` or `.npz`, and for stage 1 the clips' frames under `<work>/clips/<key>/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from camjax.data.curate.clips import IMAGE_SUFFIXES
from camjax.data.curate.report import _jsonable as report_jsonable
from camjax.io import atomic_write

# Bump when a stage's cached result changes meaning (old entries are then never read again).
CACHE_VERSION = 2


def _jsonable(x):
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return _jsonable(dataclasses.asdict(x))
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return {"shape": list(x.shape), "dtype": str(x.dtype), "sha256": array_digest(x)}
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, Path):
    return str(x)
  return x


def array_digest(x) -> str:
  """SHA-256 of an array's shape, dtype and bytes (hex)."""
  x = np.ascontiguousarray(x)
  h = hashlib.sha256(f"{x.shape}{x.dtype}".encode())
  h.update(x.tobytes())
  return h.hexdigest()


def file_identity(path) -> dict:
  """What identifies an input video: its resolved path, and the size and modification time (ns) of the file, or of
  each image (by name) of an image-sequence folder."""
  path = Path(path).resolve()
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return {"path": str(path), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
  st = path.stat()
  return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(stage: str, **parts) -> str:
  """A stable hex key of `stage` and `parts` (dataclasses, dicts, lists, scalars and arrays; arrays by digest)."""
  text = json.dumps(_jsonable({"stage": stage, "version": CACHE_VERSION, **parts}), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class StageCache:
  """The entries of one stage under `<work>/<stage>/`."""

  root: Path
  stage: str

  def path(self, key: str, suffix: str) -> Path:
    return Path(self.root) / self.stage / f"{key}{suffix}"

  def load_json(self, key: str):
    """The cached JSON of `key`, or None when there is none."""
    p = self.path(key, ".json")
    return json.loads(p.read_text()) if p.is_file() else None

  def save_json(self, key: str, obj) -> None:
    with atomic_write(self.path(key, ".json")) as f:
      json.dump(report_jsonable(obj), f)

  def load_npz(self, key: str) -> dict | None:
    """The cached arrays of `key`, or None when there are none."""
    p = self.path(key, ".npz")
    return load_npz(p) if p.is_file() else None

  def save_npz(self, key: str, **arrays) -> None:
    save_npz(self.path(key, ".npz"), **arrays)


def save_npz(path: Path, **arrays) -> None:
  """Writes `arrays` as a compressed `.npz` at `path`, atomically."""
  with atomic_write(path, "wb") as f:
    np.savez_compressed(f, **arrays)


def load_npz(path: Path) -> dict:
  """Every array of the `.npz` at `path`."""
  with np.load(path) as z:
    return {k: z[k] for k in z.files}
