"""The camjax main job: `python -m camjax.main --config=configs/cameractrl2.py[:variant] [--config.x=y ...]`.

Trains (resuming from the latest checkpoint in `--workdir`), checkpoints, samples, and prints a summary. Multi-process
(TPU pods, multi-GPU hosts, or N CPU processes on one machine) runs the same command once per process:
  * explicit: `--coordinator=HOST:PORT --num_processes=N --process_id=i` (CPU processes use gloo collectives);
  * auto-detected: `--distributed` on TPU VMs and under SLURM (`jax.distributed.initialize()` reads the environment).
See `launch/` for scripts.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally `path.py:variant`.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder (checkpoints, metrics, samples). Default: ./runs/<config>-<variant>.")
flags.DEFINE_string("coordinator", None, "Coordinator address HOST:PORT for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process' index in a multi-process run.")
flags.DEFINE_bool("distributed", False, "Initialise jax.distributed from the environment (TPU VM, SLURM).")


def _init_distributed():
  import jax  # pylint: disable=import-outside-toplevel
  if FLAGS.coordinator:
    if FLAGS.num_processes is None or FLAGS.process_id is None:
      raise app.UsageError("--coordinator needs --num_processes and --process_id")
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()


def _config_arg(argv) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _unknown_override(argv, path: str) -> str | None:
  """The first `--config.a.b=...` override naming a field the config file does not have (with a suggestion)."""
  import difflib  # pylint: disable=import-outside-toplevel

  from camjax.config_base import load_config  # pylint: disable=import-outside-toplevel
  try:
    config = load_config(path)
  except Exception:  # pylint: disable=broad-except  # the caller reports the original error
    return None
  for a in argv:
    if not a.startswith("--config."):
      continue
    keys = a[len("--config."):].split("=", 1)[0].split(".")
    node = config
    for depth, key in enumerate(keys):
      if not hasattr(node, "keys") or key not in node:
        where = ".".join(keys[:depth]) or "config"
        options = list(node.keys()) if hasattr(node, "keys") else []
        close = difflib.get_close_matches(key, options, n=1)
        hint = f"; did you mean {'.'.join(keys[:depth] + close)}?" if close else ""
        return f"{a.split('=', 1)[0]}: {where} has no field {key!r}{hint}"
      node = node[key]
  return None


def _config_error(argv, e: Exception) -> str:
  """A one-paragraph message for a `--config` that cannot be loaded: missing file, unknown variant, unknown field."""
  path = _config_arg(argv)
  if path is None:
    return "--config is required, e.g. --config=configs/cameractrl2.py"
  file = path.partition(":")[0]
  if not os.path.isfile(file):
    return f"--config={path}: config file {file!r} not found (relative paths are from {os.getcwd()})"
  unknown = _unknown_override(argv, path)
  if unknown:
    return unknown
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  if any(l.startswith("Traceback") for l in lines):  # ml_collections embeds the config file's traceback
    lines = lines[-1:]
  return f"--config={path}: {' '.join(lines)}"


def parse_flags(argv):
  """absl's flag parsing, with the config loaded eagerly so a bad `--config` ends in one clear line (exit 2)."""
  try:
    rest = FLAGS(argv)
    config = FLAGS.config  # the config file is loaded lazily, and a failed load surfaces on first use: use it now
    if config is not None:
      config.keys()
    return rest
  except (flags.Error, OSError, ValueError, KeyError, AttributeError, TypeError, SyntaxError) as e:
    print(f"camjax: error: {_config_error(argv, e)}", file=sys.stderr, flush=True)
    sys.exit(2)


def default_workdir(config) -> str:
  name = os.path.splitext(os.path.basename(FLAGS["config"].config_filename or "config"))[0]
  return os.path.join("runs", f"{name}-{config.variant}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax / tfds info lines would drown the progress bar
  started = time.monotonic()
  config = FLAGS.config
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/cameractrl2.py")
  from camjax import xla_flags  # pylint: disable=import-outside-toplevel
  xla_flags.apply_defaults()  # before jax starts a backend
  _init_distributed()
  import jax  # pylint: disable=import-outside-toplevel

  from camjax import train  # pylint: disable=import-outside-toplevel
  from camjax.errors import CamjaxError  # pylint: disable=import-outside-toplevel
  preemption = train.Preemption()  # from here on SIGTERM means: checkpoint at the next step and exit
  workdir = FLAGS.workdir or default_workdir(config)
  if jax.process_index() == 0:
    print(f"camjax: workdir {os.path.abspath(workdir)} ({jax.process_count()} process(es), "
          f"{jax.device_count()} device(s): {jax.devices()[0].platform})", flush=True)
  try:
    summary = train.train_and_evaluate(config, workdir, preemption)
  except CamjaxError as e:
    print(f"camjax: error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  if jax.process_index() == 0:
    resumed = f" (resumed at step {summary.start_step})" if summary.start_step else ""
    loss = (f"loss {summary.first_loss:.4f} -> {summary.last_loss:.4f}" if summary.first_loss is not None
            else "no steps run")
    print(f"camjax: trained to step {summary.end_step}{resumed}; {loss}; {summary.steps_per_sec:.2f} steps/s, "
          f"{summary.tokens_per_sec:.0f} tokens/s", flush=True)
    if summary.preempted:
      print(f"camjax: preempted at step {summary.end_step}: rerun the same command to continue from the last "
            "checkpoint", flush=True)
    print(f"camjax: checkpoints in {os.path.abspath(os.path.join(workdir, 'checkpoints'))}", flush=True)
    if summary.samples:
      print(f"camjax: samples in {os.path.abspath(os.path.dirname(summary.samples[0]))}", flush=True)
    following = os.path.join(workdir, "eval_following", "report.md")
    if (summary.samples or not int(config.sample.num)) and os.path.exists(following):
      print(f"camjax: camera following (true / null / reversed camera) in {os.path.abspath(following)}", flush=True)
      print(_following_table(os.path.join(workdir, "eval_following", "metrics.json")), flush=True)
    wall = time.monotonic() - started
    print(f"camjax: wall time {int(wall // 60)} min {wall % 60:.0f} s (data, training, sampling, evaluation)",
          flush=True)


def _following_table(path: str) -> str:
  """The headline of a camera-following report (`camjax.eval.following`): PSNR / SSIM per mode and baseline, the
  controls, and the SfM camera error next to the ground-truth video's; '' when the file cannot be read."""
  import json  # pylint: disable=import-outside-toplevel
  try:
    with open(path, encoding="utf-8") as f:
      m = json.load(f)
  except (OSError, ValueError):
    return ""
  rows = [("camera-conditioned", "camera"), ("null camera", "null_camera"), ("reversed camera", "reversed_camera"),
          ("repeat first frame", "repeat_first_frame"), ("mean colour", "mean_colour"),
          ("ground-truth video", "ground_truth_video")]
  lines = [f"  {'':22s} {'PSNR dB':>8s} {'SSIM':>7s} {'RotErr (CamI2V)':>16s}"]
  fmt = lambda v, f: "-" if v is None or v != v else format(v, f)  # pylint: disable=unnecessary-lambda-assignment
  for name, key in rows:
    if key in m:
      r = m[key]
      lines.append(f"  {name:22s} {fmt(r.get('psnr'), '8.2f'):>8s} {fmt(r.get('ssim'), '7.3f'):>7s} "
                   f"{fmt(r.get('cami2v/rot_err'), '16.3f'):>16s}")
  c = m.get("comparison", {})
  if c:
    lines.append(f"  true camera beats reversed on {c['true_beats_reversed']} of {c['num_scenes']} scenes "
                 f"({c['psnr_true_minus_reversed']:+.2f} dB), null {c['psnr_true_minus_null']:+.2f} dB")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
