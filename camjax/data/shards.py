"""Shards: TFDS datasets in ArrayRecord format (Tensor/Text features only, so no TensorFlow is needed), read back by
Grain through `tfds.data_source`.

`write_shards(records, out_dir)` builds `<out_dir>/camjax_clips/<version>/`; TFDS writes into an `incomplete.*`
folder and renames it when done, so an interrupted write leaves no dataset behind.

`build_dataset(records, out_dir, provenance)` does the same for the dataset CLIs and the main job's cache, with a
provenance file (`<out_dir>/camjax_provenance.json`: the producing arguments and a listing of the input files) so a
re-run with the same arguments and inputs reuses the dataset, a re-run with others refuses (`StaleDatasetError`,
naming what differs) unless asked to overwrite, and an overwrite replaces the folder atomically (written beside it,
then renamed).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from camjax.data.records import SCHEMA_VERSION, ClipRecord, DataError, RecordError, from_example, to_example

DATASET_NAME = "camjax_clips"  # the TFDS name of `tfds_builder.CamjaxClips` (its feature spec lives there too)


def write_shards(records: Iterable[ClipRecord] | Callable[[], Iterable[ClipRecord]], out_dir, *,
                 split: str = "train", description: str = "") -> Path:
  """Validates and writes records as a TFDS ArrayRecord dataset; returns the dataset folder.

  Raises:
    RecordError: the first invalid record (nothing is left behind).
  """
  from camjax.data import tfds_builder  # imports TFDS: only when writing (shards -> tfds_builder, never back)

  def examples():
    seen = set()
    for record in (records() if callable(records) else records):
      record.validate()
      if record.clip_id in seen:
        raise RecordError(record.clip_id, "duplicate clip id")
      seen.add(record.clip_id)
      yield record.clip_id, to_example(record)

  builder = tfds_builder.CamjaxClips(data_dir=str(out_dir), examples=examples, split=split,
                                     description=description)
  builder.download_and_prepare(file_format="array_record")
  return Path(builder.data_dir)


def dataset_dir(path) -> Path:
  """The versioned dataset folder under `path` (a data_dir, its `camjax_clips` folder, or the version folder).

  Raises:
    RecordError: no written dataset there.
  """
  path = Path(path)
  for candidate in (path, path / DATASET_NAME):
    if (candidate / "dataset_info.json").is_file():
      return candidate
    versions = sorted(p for p in candidate.glob("*") if (p / "dataset_info.json").is_file()) if candidate.is_dir() else []
    if versions:
      return versions[-1]
  raise RecordError("<dataset>", f"no camjax dataset at {path} (expected {DATASET_NAME}/<version>/dataset_info.json)")


class ShardSource:
  """Random-access source of `ClipRecord`s over a written dataset (what Grain's `MapDataset.source` takes)."""

  def __init__(self, data_dir, split: str = "train"):
    import tensorflow_datasets as tfds

    self.data_dir = dataset_dir(data_dir)
    try:
      self._source = tfds.builder_from_directory(str(self.data_dir)).as_data_source(split=split)
    except Exception as e:  # TFDS raises several error types for partial / foreign datasets
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise RecordError("<dataset>", f"cannot open the dataset at {self.data_dir}: {first_line}") from None

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> ClipRecord:
    try:
      ex = self._source[index]
    except Exception as e:  # corrupt ArrayRecord chunk or undecodable example
      raise RecordError(f"#{index}", f"cannot decode example {index} of {self.data_dir} ({e})") from None
    return from_example(ex)


# ------------------------------------------------------------------------------------------------------ provenance
PROVENANCE_FILE = "camjax_provenance.json"
PROVENANCE_FORMAT = 1
LISTING_LIMIT = 20_000  # input files listed one by one in the provenance file (beyond: count, bytes and digest only)
_TMP_PREFIX = ".camjax-tmp-"
_OLD_PREFIX = ".camjax-old-"
_OWN_ENTRIES = {DATASET_NAME, PROVENANCE_FILE, "downloads"}  # what `build_dataset` leaves in a dataset folder
_RECORD_ONLY = ("written_at", "clips", "dataset")  # provenance fields that describe the write, not its inputs


class StaleDatasetError(DataError):
  """The output folder holds a dataset made from other arguments or inputs (or of unknown origin): the message names
  what differs and how to replace it."""


def input_listing(*paths) -> dict[str, dict[str, Any]]:
  """A listing of input files, per resolved input path (file or folder, walked recursively, symlinks followed).

  Each entry has `count` (files), `bytes` (total size), `sha256` (of the full listing) and `files`, the sorted
  `[relative path, size in bytes, mtime in ns]` of every file (None beyond `LISTING_LIMIT` files). Folders holding a
  camjax provenance file (datasets written by camjax) and camjax temporary folders are not inputs and are skipped.

  Raises:
    DataError: an input path does not exist.
  """
  out = {}
  for path in paths:
    root = Path(path).resolve()
    if not root.exists():
      raise DataError(f"input {path} does not exist")
    files = []
    if root.is_file():
      st = root.stat()
      files.append([root.name, st.st_size, st.st_mtime_ns])
    else:
      for folder, dirs, names in os.walk(root, followlinks=True):
        if PROVENANCE_FILE in names and Path(folder) != root:
          dirs[:] = []
          continue
        dirs[:] = sorted(d for d in dirs if not d.startswith((_TMP_PREFIX, _OLD_PREFIX)))
        for name in sorted(names):
          st = (Path(folder) / name).stat()
          files.append([(Path(folder) / name).relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    out[str(root)] = {"count": len(files), "bytes": sum(f[1] for f in files), "sha256": digest,
                      "files": files if len(files) <= LISTING_LIMIT else None}
  return out


def make_provenance(producer: str, arguments: dict[str, Any], inputs: dict[str, dict] | None = None) -> dict:
  """The provenance of a dataset: `producer` (e.g. "camjax.data.synthetic"), its `arguments` (JSON values; paths
  resolved) and, for ingests, an `input_listing` of the files read."""
  return {"format": PROVENANCE_FORMAT, "producer": producer, "schema_version": SCHEMA_VERSION,
          "arguments": json.loads(json.dumps(arguments)), "inputs": inputs or {}}


def provenance_key(provenance: dict) -> dict:
  """The fields that decide whether two datasets are the same (not when or how many clips were written)."""
  return {k: v for k, v in provenance.items() if k not in _RECORD_ONLY}


def provenance_digest(provenance: dict, length: int = 12) -> str:
  """A short hex digest of `provenance_key(provenance)`: names cache folders by what produced them."""
  return hashlib.sha256(json.dumps(provenance_key(provenance), sort_keys=True).encode()).hexdigest()[:length]


def read_provenance(out_dir) -> dict | None:
  """The provenance written with the dataset at `out_dir`; None when there is none (or it is unreadable)."""
  try:
    return json.loads((Path(out_dir) / PROVENANCE_FILE).read_text())
  except (OSError, ValueError):
    return None


def _few(names: list[str], n: int = 3) -> str:
  return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _listing_differences(root: str, old: dict, new: dict) -> list[str]:
  if old.get("sha256") == new.get("sha256"):
    return []
  if old.get("files") is None or new.get("files") is None:
    return [f"input files under {root} changed: {old.get('count')} files / {old.get('bytes')} bytes, now "
            f"{new.get('count')} files / {new.get('bytes')} bytes"]
  a, b = {f[0]: tuple(f[1:]) for f in old["files"]}, {f[0]: tuple(f[1:]) for f in new["files"]}
  out = []
  for what, names in (("new", sorted(set(b) - set(a))), ("removed", sorted(set(a) - set(b))),
                      ("changed (size or mtime)", sorted(k for k in set(a) & set(b) if a[k] != b[k]))):
    if names:
      out.append(f"{len(names)} {what} input file(s) under {root}: {_few(names)}")
  return out


def provenance_differences(old: dict | None, new: dict) -> list[str]:
  """What differs between a dataset's provenance `old` and the one asked for, one line each (empty when equal)."""
  if old is None:
    return ["the folder has no provenance file (written by an older camjax, by hand, or interrupted)"]
  out = []
  for field in ("format", "producer", "schema_version"):
    if old.get(field) != new.get(field):
      out.append(f"{field}: {old.get(field)!r}, asked {new.get(field)!r}")
  a, b = old.get("arguments", {}), new.get("arguments", {})
  for k in sorted(set(a) | set(b)):
    if a.get(k) != b.get(k):
      out.append(f"{k}: {a.get(k, '<absent>')!r} in the dataset, asked {b.get(k, '<absent>')!r}")
  a, b = old.get("inputs", {}), new.get("inputs", {})
  for root in sorted(set(a) | set(b)):
    if root not in b:
      out.append(f"input {root} was read for the dataset but is not an input now")
    elif root not in a:
      out.append(f"input {root} is new (the dataset was made from other inputs)")
    else:
      out.extend(_listing_differences(root, a[root], b[root]))
  if not out and provenance_key(old) != provenance_key(new):
    out.append("the provenance differs")
  return out


def _is_own_folder(out_dir: Path) -> bool:
  """True when `out_dir` is empty or holds nothing but what `build_dataset` writes (safe to replace)."""
  return all(p.name in _OWN_ENTRIES for p in out_dir.iterdir())


def _replace_folder(tmp: Path, out_dir: Path) -> None:
  """Puts the finished `tmp` folder at `out_dir`, replacing what was there (two renames, the old copy deleted last)."""
  if not out_dir.exists():
    tmp.rename(out_dir)
    return
  old = out_dir.parent / f"{_OLD_PREFIX}{out_dir.name}-{uuid.uuid4().hex[:8]}"
  out_dir.rename(old)
  try:
    tmp.rename(out_dir)
  except BaseException:
    old.rename(out_dir)
    raise
  shutil.rmtree(old, ignore_errors=True)


def build_dataset(records: Iterable[ClipRecord] | Callable[[], Iterable[ClipRecord]], out_dir, provenance: dict, *,
                  overwrite: bool = False, split: str = "train", description: str = "") -> tuple[Path, bool]:
  """Writes `records` as a dataset at `out_dir` with its provenance, or reuses the one there when it was made from the
  same arguments and inputs (`provenance_key` equal).

  The dataset is written to a temporary folder beside `out_dir` and renamed into place when complete, so an error or
  an interrupt leaves `out_dir` as it was and nothing half-written behind.

  Args:
    records: the records, or a function returning them (called only when writing).
    out_dir: dataset root folder (TFDS data_dir).
    provenance: from `make_provenance`.
    overwrite: write even when `out_dir` holds a dataset (same or other provenance), replacing it.

  Returns:
    `(versioned dataset folder, reused)`.

  Raises:
    StaleDatasetError: `out_dir` holds a dataset of another (or unknown) provenance and `overwrite` is False.
    DataError: `out_dir` holds files that are not a camjax dataset (never replaced: choose another folder).
    RecordError: an invalid record (nothing is written).
  """
  out_dir = Path(out_dir)
  if out_dir.exists() and not out_dir.is_dir():
    raise DataError(f"{out_dir} is a file, not a dataset folder")
  if out_dir.is_dir() and any(out_dir.iterdir()):
    if not _is_own_folder(out_dir):
      others = sorted(p.name for p in out_dir.iterdir() if p.name not in _OWN_ENTRIES)
      raise DataError(f"{out_dir} holds files that are not a camjax dataset ({_few(others)}): not writing into it "
                      "or replacing it; choose a new or empty output folder")
    old = read_provenance(out_dir)
    if not overwrite:
      differences = provenance_differences(old, provenance)
      if not differences:
        try:
          return dataset_dir(out_dir), True
        except RecordError:
          differences = ["the provenance file is there but the dataset is not (deleted or interrupted)"]
      raise StaleDatasetError(
          f"{out_dir} holds a dataset made from other arguments or inputs:\n  " + "\n  ".join(differences) +
          "\nRe-run with --overwrite (build_dataset(..., overwrite=True)) to replace it, or choose another output "
          "folder.")
  count = [0]

  def counted():
    for record in (records() if callable(records) else records):
      count[0] += 1
      yield record

  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = out_dir.parent / f"{_TMP_PREFIX}{out_dir.name}-{uuid.uuid4().hex[:8]}"
  try:
    path = write_shards(counted, tmp, split=split, description=description)
    written = dict(provenance, clips=count[0], dataset=path.relative_to(tmp).as_posix(),
                   written_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    (tmp / PROVENANCE_FILE).write_text(json.dumps(written, indent=1) + "\n")
    _replace_folder(tmp, out_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return dataset_dir(out_dir), False
