"""Procedural scene rendering speed (scenes/second) and the pipeline's batch rate on this machine.

Run: `python benchmarks/synthetic.py`. Record results in docs/benchmarks.md with the machine.
"""

import platform
import time

from camjax.data import synthetic
from camjax.data.pipeline import make_pipeline


def scenes_per_second(num_scenes, **kwargs):
  start = time.perf_counter()
  for seed in range(num_scenes):
    synthetic.render_scene(seed, **kwargs)
  return num_scenes / (time.perf_counter() - start)


def main():
  print(f"machine: {platform.machine()} {platform.processor()}")
  rate = scenes_per_second(20, num_frames=17, height=64, width=64, num_tracks=256)
  print(f"render 64x64x17, 1 camera, 256 tracks: {rate:.2f} scenes/s")
  rate = scenes_per_second(3, num_frames=25, height=256, width=256, num_tracks=256)
  print(f"render 256x256x25, 1 camera, 256 tracks: {rate:.3f} scenes/s")
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
