"""Procedural scene rendering speed (scenes/second) and the pipeline's batch rate on this machine.

Run: `python benchmarks/synthetic.py [--repeats 3] [--workers 2] [--skip_large]`. Record results in
docs/benchmarks.md with the machine and its load (`uptime`): the machine may be shared, so every rate is the median
of `--repeats` runs, and the rendering rates are also given per CPU-second of this process (less sensitive to other
processes than wall time).
"""

import argparse
import os
import platform
import statistics
import time

from camjax.data import synthetic
from camjax.data.pipeline import make_pipeline

SMALL = dict(num_frames=17, height=64, width=64, num_tracks=256)  # what the CPU defaults train on
LARGE = dict(num_frames=25, height=256, width=256, num_tracks=256)


def scenes_per_second(num_scenes, repeats=1, **kwargs):
  """Median `(wall-clock scenes/s, scenes per CPU-second)` of rendering `num_scenes` scenes in this process."""
  wall, cpu = [], []
  for _ in range(repeats):
    w, c = time.perf_counter(), time.process_time()
    for seed in range(num_scenes):
      synthetic.render_scene(seed, **kwargs)
    wall.append(num_scenes / (time.perf_counter() - w))
    cpu.append(num_scenes / (time.process_time() - c))
  return statistics.median(wall), statistics.median(cpu)


def pool_scenes_per_second(num_scenes, workers, repeats=1, **kwargs):
  """Median wall-clock scenes/s of `synthetic.render_records` (what the dataset builder runs) with `workers`
  processes, process start-up included."""
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in synthetic.render_records(range(num_scenes), workers=workers, **kwargs):
      pass
    rates.append(num_scenes / (time.perf_counter() - start))
  return statistics.median(rates)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--skip_large", action="store_true", help="skip the 256x256x25 render and the pipeline")
  args = parser.parse_args()
  print(f"machine: {platform.machine()} {platform.processor()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}")
  synthetic.render_scene(0, **SMALL)  # warm up
  wall, cpu = scenes_per_second(20, args.repeats, **SMALL)
  print(f"render 64x64x17, 1 camera, 256 tracks: {wall:.2f} scenes/s ({cpu:.2f} per CPU-second)")
  if args.workers > 1:
    rate = pool_scenes_per_second(256, args.workers, args.repeats, **SMALL)
    print(f"render_records 64x64x17, 256 scenes, {args.workers} processes: {rate:.2f} scenes/s (start-up included)")
  if args.skip_large:
    return
  wall, cpu = scenes_per_second(3, args.repeats, **LARGE)
  print(f"render 256x256x25, 1 camera, 256 tracks: {wall:.3f} scenes/s ({cpu:.3f} per CPU-second)")
  source = synthetic.SyntheticSource(64, num_frames=17, height=64, width=64)
  records = [source[i] for i in range(len(source))]  # pre-rendered: time the pipeline alone
  it = iter(make_pipeline(records, num_frames=17, height=64, width=64, batch_size=8, stride=(1, 1)))
  next(it)
  start = time.perf_counter()
  for _ in range(20):
    next(it)
  print(f"pipeline batches of 8 x 17 x 64x64 from memory: {20 / (time.perf_counter() - start):.1f} batches/s")


if __name__ == "__main__":
  main()
