"""Orbax checkpoints of a camjax run: save with fingerprints, restore the newest good step, restore weights only.

A checkpoint step holds `state` (the train state `{step, params, opt_state[, frozen][, ema]}`), `data` (the Grain
iterator of each process) and `fingerprint` (per leaf `[sum, sum |x|]`, compared after a restore, so a damaged
checkpoint is skipped in favour of the previous one instead of being trained on). Inference paths (exploration,
evaluation) restore `params`, `frozen` and `ema` only, with `restore_weights`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from camjax.errors import TrainingError

log = logging.getLogger("camjax.checkpoints")

class CheckpointError(TrainingError):
  """No checkpoint of the workdir restores (each one is missing files, damaged, or holds non-finite values)."""



def manager(workdir: Path, config, state_handler=None):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  options = ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, enable_async_checkpointing=True,
                                         create=True)
  handlers = None if state_handler is None else dict(state=state_handler, fingerprint=ocp.JsonCheckpointHandler())
  return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options, item_handlers=handlers)


@jax.jit
def _fingerprint(tree) -> list[jax.Array]:
  """Per leaf `[sum, sum of |x|]` in float32: saved beside every checkpoint, compared after a restore."""
  return [jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.abs(x.astype(jnp.float32)))])
          for x in jax.tree.leaves(tree)]


def _fingerprint_json(state: dict) -> dict[str, list[list[float]]]:
  """`{key: per-leaf [sum, sum |x|]}` of each top-level entry of a train state (a partial restore checks its part)."""
  return {k: [[float(v) for v in np.asarray(f)] for f in jax.device_get(_fingerprint(state[k]))] for k in state}


def _fingerprint_problem(state: dict, saved: dict | None) -> str | None:
  """Why a restored state is not the one that was saved (non-finite values, a changed fingerprint), or None."""
  got = _fingerprint_json(state)
  for key, leaves in got.items():
    if not all(math.isfinite(v) for f in leaves for v in f):
      return f"its {key} hold non-finite values"
  for key, leaves in got.items():
    if saved is None or key not in saved:  # written before fingerprints existed
      continue
    if len(saved[key]) != len(leaves):
      return f"its {key} fingerprint has {len(saved[key])} leaves, the state {len(leaves)}"
    for i, ((s, a), (s2, _)) in enumerate(zip(saved[key], leaves)):
      if abs(s - s2) > 1e-5 * a + 1e-30:
        return f"leaf {i} of its {key} sums to {s2!r}, saved as {s!r} (damaged data)"
  return None


def save(mngr, step: int, state, data_iter, force: bool = False):
  """Saves the state, the Grain iterator and the state's fingerprint.

  Raises:
    TrainingError: the state holds non-finite values (nothing is saved).
  """
  import grain  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  fingerprint = _fingerprint_json(state)
  bad = [k for k, leaves in fingerprint.items() if not all(math.isfinite(v) for f in leaves for v in f)]
  if bad:
    raise TrainingError(f"non-finite {', '.join(bad)} at step {step}; stopping without saving it. The last "
                        f"checkpoint is step {mngr.latest_step()} in {mngr.directory}")
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=grain.checkpoint.CheckpointSave(data_iter),
                                          fingerprint=ocp.args.JsonSave(fingerprint)), force=force)


def _one_line(e: BaseException, limit: int = 240) -> str:
  """`Type: message` on one line; for a chained error (tensorstore under orbax) the innermost cause, which names the
  file and the array."""
  while e.__cause__ is not None:
    e = e.__cause__
  text = " ".join(f"{type(e).__name__}: {e}".split()).split(" See full TensorStore details")[0]
  return text if len(text) <= limit else text[:limit] + "..."


def _restore_step(mngr, step: int, args: dict):
  """Restores `args` (+ the fingerprint when saved) at `step`; returns (restored items, problem or None)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  if (Path(mngr.directory) / str(step) / "fingerprint").exists():
    args = dict(args, fingerprint=ocp.args.JsonRestore())
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(**args))
  except Exception as e:  # pylint: disable=broad-except  # orbax / tensorstore / grain raise many kinds
    return None, _one_line(e)
  return restored, _fingerprint_problem(restored["state"], restored.get("fingerprint"))


def _restore_newest_good(mngr, make_args) -> tuple[Any, int | None]:
  """Walks the checkpoints newest first and returns (restored items, step) of the first that restores and passes its
  fingerprint check, naming every one it skipped; (None, None) when there is no checkpoint.

  Raises:
    CheckpointError: there are checkpoints but none restores.
  """
  skipped = []
  for step in sorted(mngr.all_steps(), reverse=True):
    restored, problem = _restore_step(mngr, step, make_args(step))
    ok = problem is None
    if jax.process_count() > 1:
      ok = bool(np.all(allgather(ok)))
      problem = problem or "it failed on another process"
    if ok:
      if skipped:
        log.warning("restored checkpoint step %d after skipping %s", step, "; ".join(skipped))
      return restored, step
    skipped.append(f"step {step} ({problem})")
    log.warning("checkpoint step %d in %s does not restore: %s", step, mngr.directory, problem)
  if skipped:
    raise CheckpointError(f"no checkpoint in {mngr.directory} restores: " + "; ".join(skipped) +
                          ". Delete the damaged step folders (or the whole checkpoints folder to start over)")
  return None, None


def restore_train_state(mngr, state, iterator_at):
  """Newest good checkpoint -> (state, step, data iterator, data iterator restored?); with no checkpoint,
  (state, None, `iterator_at(0)`, False).

  `iterator_at(step)` builds a fresh data iterator of the phase `step` belongs to; the Grain state is per process
  (`data/process_i-of-n.json`), so a checkpoint written by a different number of processes restores the train state
  only, and the caller rebuilds the iterator at the step's position in the global stream. A checkpoint that fails to
  restore, or whose values are non-finite or differ from the fingerprint saved with them, is skipped (and named) in
  favour of the previous one.
  """
  import grain  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  tried = {}

  def make_args(step):
    data_file = (Path(mngr.directory) / str(step) / "data" /
                 f"process_{jax.process_index()}-of-{jax.process_count()}.json")
    same_layout = bool(np.all(allgather(data_file.exists())))
    tried[step] = (iterator_at(step), same_layout)
    args = dict(state=ocp.args.StandardRestore(target))
    if same_layout:
      args["data"] = grain.checkpoint.CheckpointRestore(tried[step][0])
    return args

  restored, step = _restore_newest_good(mngr, make_args)
  if step is None:
    return state, None, iterator_at(0), False
  return restored["state"], step, *tried[step]


def allgather(x) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray([x])
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(np.asarray(x)))


def restore_weights(workdir, template: dict, config, step: int | None = None) -> tuple[dict, int]:
  """The weights `{params[, frozen][, ema]}` of the newest good (or the given) checkpoint in `workdir`; the optimiser
  and data states are not read. A checkpoint that does not restore is skipped (and named) in favour of the previous
  one.

  Args:
    workdir: a run folder (`<workdir>/checkpoints`).
    template: `{key: state}` of the entries to read (arrays or `jax.ShapeDtypeStruct`s with shardings), e.g. the
      `params`, `frozen` and `ema` of `camjax.methods.build_model(...)` (see `camjax.methods.weights_template`).
    config: the run's config (`train.keep_checkpoints`).
    step: a checkpoint step, or None for the newest good one.

  Raises:
    TrainingError: no checkpoint there, or no checkpoint at `step` (the message lists those there).
    CheckpointError: none restores.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  target = {k: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), v)
            for k, v in template.items()}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  mngr = manager(Path(workdir), config, state_handler=ocp.PyTreeCheckpointHandler())
  try:
    steps = sorted(mngr.all_steps())
    if not steps:
      raise TrainingError(f"no checkpoint in {Path(workdir) / 'checkpoints'}: train first")
    if step is not None and step not in steps:
      raise TrainingError(f"no checkpoint at step {step} in {Path(workdir) / 'checkpoints'}; there are steps "
                          f"{', '.join(map(str, steps))}")
    args = lambda s: dict(state=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True))
    if step is not None:
      restored, problem = _restore_step(mngr, step, args(step))
      if problem is not None:
        raise CheckpointError(f"checkpoint step {step} in {mngr.directory} does not restore: {problem}")
    else:
      restored, step = _restore_newest_good(mngr, args)
    return restored["state"], step
  finally:
    mngr.close()
