"""The main job's dataset: the ArrayRecord dataset a config trains on, rendered or ingested on first use.

    dataset = prepare_dataset(config, workdir)   # e.g. <workdir>/data/re10k_clips_3f9a0c12d4e5/camjax_clips/1.0.0

`data.source = "shards"` names an existing dataset (`data.path`). Procedural scenes (`"synthetic"`) and RealEstate10K
ingests (`"re10k"`) are written once under `<workdir>/data/`, in a folder named by a digest of what produced them
(`shards.provenance_digest`): every producing argument and, for ingests, a listing (relative path, size, mtime) of the
input files. So another input folder, even of the same name, or a changed one (a file added, removed, rewritten) gets
its own ingest instead of the old one; an unchanged one is reused. The folder holds the full provenance
(`camjax_provenance.json`) beside the dataset.

With several processes (multi-host), process 0 writes and the others wait at a barrier (`sync_global_devices`); every
process computes the folder name itself, so `data.path` must read the same on every host (a shared filesystem).
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax

from camjax.data import shards
from camjax.data.records import DataError, RecordError

log = logging.getLogger(__name__)
SOURCES = ("synthetic", "re10k", "shards")


def _sync(name: str) -> None:
  """A barrier across processes (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def on_process_zero(write, barrier: str) -> None:
  """Runs `write()` on process 0 only, then a barrier named `barrier` on every process; an exception of `write` is
  re-raised on process 0 after the barrier, so that no other process waits for it forever (they then find the
  output missing and raise their own error). Every dataset a run prepares in its workdir is written this way."""
  error = None
  if jax.process_index() == 0:
    try:
      write()
    except Exception as e:  # pylint: disable=broad-except  # re-raised after the barrier
      error = e
  _sync(barrier)
  if error is not None:
    raise error


def _synthetic(config):
  """`(folder name, provenance, write(out))` of the config's procedural scenes."""
  from camjax.data import synthetic  # pylint: disable=import-outside-toplevel

  d = config.data
  kwargs = dict(seed=int(config.seed), resolution=int(d.render_size), frames=int(d.render_frames or d.num_frames),
                cameras=1, tracks=0)
  provenance = synthetic.dataset_provenance(int(d.num_scenes), **kwargs)
  name = f"synthetic_{d.num_scenes}x{kwargs['frames']}f{d.render_size}px_seed{config.seed}"

  def write(out: Path, overwrite: bool):
    return synthetic.build_dataset(out, int(d.num_scenes), overwrite=overwrite, progress=jax.process_index() == 0,
                                   **kwargs)

  return name, provenance, write


def _re10k(config):
  """`(folder name, provenance, write(out))` of the config's RealEstate10K ingest."""
  from camjax.data import sources  # pylint: disable=import-outside-toplevel

  path = config.data.path
  if not path or not Path(path).is_dir():
    raise DataError(f"data.path {path!r} is not a folder: data.source 're10k' reads a folder of RealEstate10K pose "
                    "files + videos (set --config.data.path)")
  provenance = sources.re10k_provenance(path)

  def write(out: Path, overwrite: bool):
    return shards.build_dataset(lambda: sources.re10k_records(path), out, provenance, overwrite=overwrite,
                                description=f"RealEstate10K clips from {Path(path).resolve()}")

  return f"re10k_{Path(path).resolve().name}", provenance, write


def prepare_dataset(config, workdir: Path) -> Path:
  """The versioned ArrayRecord dataset folder the config trains on (what `shards.ShardSource` opens).

  Args:
    config: an ml_collections config with `seed` and `data.source` ("synthetic" | "re10k" | "shards"), `data.path`
      (re10k: folder of pose files + videos; shards: a written dataset), and for synthetic `data.num_scenes`,
      `data.render_size` (pixels), `data.render_frames` (0: `data.num_frames`).
    workdir: the run's folder; rendered / ingested datasets go to `<workdir>/data/<kind>_<name>_<digest>/`.

  Returns:
    The dataset folder (`.../camjax_clips/<version>`), the same on every process.

  Raises:
    DataError: unknown `data.source`; `data.path` missing (re10k, shards) or holding no dataset (shards); the
      dataset was not written (on process 0: its error; on the others: the folder they computed is absent).
    RecordError: (a DataError) a corrupt clip while ingesting; `CameraError`: a malformed pose file.
  """
  d = config.data
  if d.source == "shards":
    if not d.path or not Path(d.path).exists():
      raise DataError(f"data.path {d.path!r} does not exist: data.source 'shards' reads a written camjax dataset "
                      "(set --config.data.path)")
    return shards.dataset_dir(d.path)
  if d.source not in SOURCES:
    raise DataError(f"data.source {d.source!r} is not one of {', '.join(SOURCES)}")
  name, provenance, write = (_synthetic if d.source == "synthetic" else _re10k)(config)
  out = Path(workdir) / "data" / f"{name}_{shards.provenance_digest(provenance)}"
  on_process_zero(lambda: _write_or_reuse(out, write), f"camjax dataset {out.name}")
  try:
    return shards.dataset_dir(out)
  except RecordError:
    raise DataError(f"process {jax.process_index()}: no dataset at {out} after process 0 wrote its dataset: the "
                    f"processes disagree on the inputs (data.path {d.path!r} must read the same on every host)"
                    ) from None


def _write_or_reuse(out: Path, write) -> None:
  """Reuses the dataset at `out` (same provenance) or writes it; a leftover of another provenance is replaced (the
  folder is named by the provenance digest, so that is an interrupted or hand-edited folder)."""
  try:
    path, reused = write(out, overwrite=False)
  except shards.StaleDatasetError as e:
    log.warning("replacing the dataset cache %s: %s", out, e)
    path, reused = write(out, overwrite=True)
  log.info("%s dataset %s", "reusing" if reused else "wrote", path)
