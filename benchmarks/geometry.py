"""Geometry throughput on this machine: Plücker maps (jit, CPU/GPU) and the host-side readers.

Run: `python benchmarks/geometry.py`. Prints one line per figure; record results in docs/benchmarks.md.
"""

import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from camjax import geometry as g


def timeit(fn, repeats=20):
  fn()  # compile / warm up
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def main():
  print(f"machine: {platform.processor() or platform.machine()}, jax {jax.__version__}, devices {jax.devices()}")
  for batch, frames, h, w in [(1, 25, 320, 576), (8, 21, 40, 72), (8, 16, 192, 320)]:
    cams = g.Cameras.stack([g.preset("orbit_left+dolly_in", frames, height=h, width=w)] * batch)
    cams = jax.tree.map(jnp.asarray, cams)
    fn = jax.jit(lambda c: g.plucker(c))
    seconds = timeit(lambda: fn(cams))
    rays = batch * frames * h * w
    print(f"plucker [B={batch}, T={frames}, {h}x{w}]: {seconds * 1e3:.2f} ms, {rays / seconds / 1e6:.1f} Mrays/s")
  with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "poses.txt"
    g.write_re10k(path, g.preset("orbit_left", 1000), url="https://example.invalid")
    seconds = timeit(lambda: g.read_re10k(path, image_size=(320, 576)).w2c, repeats=5)
    print(f"read_re10k 1000 frames (parse + validate): {seconds * 1e3:.1f} ms")


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  main()
