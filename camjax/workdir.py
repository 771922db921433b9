"""The run folder of the main job: one run at a time (a lock held by the running process), a config check before
anything in it is touched, and metric rows that a restarted run does not duplicate.

    with WorkdirLock(workdir):          # WorkdirLockedError names the holder (pid, host, command, start time)
      check_compatible(workdir, config)   # ConfigMismatchError lists the fields that differ from the saved run
      save_config(workdir, config)
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from camjax.errors import CamjaxError
from camjax.io import atomic_write

LOCK_NAME = ".camjax.lock"
CONFIG_NAME = "config.json"
# Config fields that decide the checkpointed tree or what its weights mean: a workdir trained with other values
# cannot be continued (train.steps, data, sampling, evaluation and phase-2 settings may change between runs).
MODEL_SECTIONS = ("model", "autoencoder", "text", "objective")
# Fields of those sections that say where files are or how they are read, not what the weights mean: a run may resume
# after a weight folder moved (the checkpoint holds every trained weight).
LOCATION_FIELDS = ("model.pretrained", "autoencoder.path", "autoencoder.tile", "text.encoder_path",
                   "text.tokenizer_path")


class WorkdirError(CamjaxError):
  """A workdir that cannot be used for this run."""


class WorkdirLockedError(WorkdirError):
  """Another process is running a job in this workdir."""


class ConfigMismatchError(WorkdirError):
  """The workdir holds a run whose model configuration differs from this one."""


def ensure_dir(workdir: str | os.PathLike) -> Path:
  """Creates `workdir` (and parents); raises `WorkdirError` when it names a file."""
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"--workdir {workdir} is a file, not a folder: give a folder path (it is created if missing)")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except (FileExistsError, NotADirectoryError) as e:
    raise WorkdirError(f"--workdir {workdir}: cannot create it ({e}); a parent is a file") from e
  return workdir


class WorkdirLock:
  """An exclusive `flock` on `workdir/.camjax.lock`, held while the job runs and released by the OS when the process
  ends (even on SIGKILL), so a stale lock file never blocks a later run.

  Raises (on enter):
    WorkdirLockedError: another live process holds the lock; the message names it.
  """

  def __init__(self, workdir: str | os.PathLike):
    self.path = Path(workdir) / LOCK_NAME
    self._fd: int | None = None

  def __enter__(self) -> "WorkdirLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
      os.close(fd)
      raise WorkdirLockedError(f"workdir {self.path.parent} is in use by another camjax job ({holder}); wait for it "
                               f"to end, stop it, or pass another --workdir") from None
    info = dict(pid=os.getpid(), host=socket.gethostname(), started=datetime.datetime.now().isoformat(timespec="seconds"),
                command=" ".join(sys.argv)[:300])
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc):
    if self._fd is not None:
      with contextlib.suppress(OSError):
        os.ftruncate(self._fd, 0)
      os.close(self._fd)  # closing releases the flock
      self._fd = None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def model_fields(config) -> dict[str, Any]:
  """The flattened `MODEL_SECTIONS` of a config (ConfigDict or its JSON dict), JSON-normalised, plus whether an EMA
  is kept (it is part of the checkpointed state)."""
  tree = config if isinstance(config, dict) else json.loads(config.to_json_best_effort())
  out = {}
  for section in MODEL_SECTIONS:
    out.update(_flatten(tree.get(section, {}), f"{section}."))
  for field in LOCATION_FIELDS:
    out.pop(field, None)
  out["method"] = tree.get("method", "cameractrl2")  # configs written before methods existed were CameraCtrl II
  out["optimizer.ema_decay>0"] = float(tree.get("optimizer", {}).get("ema_decay", 0.0)) > 0
  return out


def check_compatible(workdir: str | os.PathLike, config) -> None:
  """Raises `ConfigMismatchError` when `workdir` holds checkpoints of a run whose model fields differ from `config`'s.

  Run before anything in the workdir is written, so a refused run leaves the workdir as it was.
  """
  workdir = Path(workdir)
  saved_path = workdir / CONFIG_NAME
  ckpt = workdir / "checkpoints"
  has_checkpoints = ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())
  if not has_checkpoints or not saved_path.exists():
    return
  try:
    saved = json.loads(saved_path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f"{saved_path} is unreadable ({e}); the workdir's run cannot be checked against this config: "
                       f"use another --workdir") from e
  old, new = model_fields(saved), model_fields(config)
  diff = [f"{k}: {old.get(k, '<absent>')!r} in the workdir, {new.get(k, '<absent>')!r} now"
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  if diff:
    raise ConfigMismatchError(f"workdir {workdir} holds checkpoints of a run with another model configuration:\n  " +
                              "\n  ".join(diff) + "\nUse another --workdir, or drop the overrides to continue that run")


def save_config(workdir: str | os.PathLike, config) -> None:
  """Writes `workdir/config.json` (what `camjax.explore` and `camjax.eval` rebuild the model from), atomically."""
  with atomic_write(Path(workdir) / CONFIG_NAME) as f:
    f.write(config.to_json_best_effort(indent=2))
