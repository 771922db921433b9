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


def default_workdir(config) -> str:
  name = os.path.splitext(os.path.basename(FLAGS["config"].config_filename or "config"))[0]
  return os.path.join("runs", f"{name}-{config.variant}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax / tfds info lines would drown the progress bar
  config = FLAGS.config
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/cameractrl2.py")
  _init_distributed()
  import jax  # pylint: disable=import-outside-toplevel

  from camjax import train  # pylint: disable=import-outside-toplevel
  workdir = FLAGS.workdir or default_workdir(config)
  if jax.process_index() == 0:
    print(f"camjax: workdir {os.path.abspath(workdir)} ({jax.process_count()} process(es), "
          f"{jax.device_count()} device(s): {jax.devices()[0].platform})", flush=True)
  try:
    summary = train.train_and_evaluate(config, workdir)
  except train.CamjaxError as e:
    print(f"camjax: error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  if jax.process_index() == 0:
    resumed = f" (resumed at step {summary.start_step})" if summary.start_step else ""
    loss = (f"loss {summary.first_loss:.4f} -> {summary.last_loss:.4f}" if summary.first_loss is not None
            else "no steps run")
    print(f"camjax: trained to step {summary.end_step}{resumed}; {loss}; {summary.steps_per_sec:.2f} steps/s, "
          f"{summary.tokens_per_sec:.0f} tokens/s", flush=True)
    if summary.preempted:
      print("camjax: preempted: checkpoint saved; rerun the same command to continue", flush=True)
    print(f"camjax: checkpoints in {os.path.abspath(os.path.join(workdir, 'checkpoints'))}", flush=True)
    if summary.samples:
      print(f"camjax: samples in {os.path.abspath(os.path.dirname(summary.samples[0]))}", flush=True)
    following = os.path.join(workdir, "eval_following", "report.md")
    if summary.samples and os.path.exists(following):
      print(f"camjax: camera following (true / null / reversed camera) in {os.path.abspath(following)}", flush=True)


if __name__ == "__main__":
  app.run(main)
