"""Bilinear sample / scatter (camjax.kernels.bilinear) at Track2View sizes: time, effective bandwidth, roofline.

Work (REFERENCE.md 5, Track2View's dual-view track conditioner): `B x T` frames (default 2 x 21 = 42 on an
accelerator), N = 1152 tracks, a 60 x 104 token grid (M = 6240 cells), C = 1536 channels, bfloat16 and float32.
Cases per implementation and dtype:

  sample       fwd: grid [BT, 60, 104, C] x coords [BT, N, 2] -> [BT, N, C]; fwd+bwd: grad w.r.t. grid and coords
  scatter      fwd: values [BT, N, C] -> normalised grid + weight map;      fwd+bwd: grad w.r.t. values and coords

"xla" is the plain-jnp reference (XLA gather / scatter-add of the same math), the baseline every Pallas kernel is
compared with ("speedup"). Effective bandwidth = nominal bytes / time, where nominal bytes count every element the
op has to move once: a gather reads the 4 corner rows of each track and writes its output row, `(4N + N) C`; a
scatter reads each track row and writes the output grid once, `(N + M) C`; the backward of either is the other plus
a corner dot, `(4N + N) C` (element size of the dtype). "roofline" = effective bandwidth / peak HBM bandwidth
(`--peak_gbps`, default 4800 GB/s, H200; GPU only).

On a GPU the Pallas-Triton kernels are first checked against the reference at the benchmark size (max abs error of
forward and gradients); on a TPU the Pallas-TPU kernels likewise. On CPU the Pallas kernels only run in interpret
mode, so the script checks both (Triton and TPU) on small inputs and prints XLA-reference timings for `--frames`
(default 2) frames: those are correctness and baseline figures, not kernel speed.

Run: `python benchmarks/bilinear.py [--frames 42] [--iters 20] [--dtypes bfloat16,float32] [--peak_gbps 4800]`.
Record accelerator results in docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from camjax.kernels.bilinear import bilinear_sample, bilinear_scatter, default_implementation

HEIGHT, WIDTH, TRACKS, CHANNELS = 60, 104, 1152, 1536


def make_inputs(frames, height, width, tracks, channels, dtype, seed=0):
  """Grid, coords (half the tracks at random, half clustered as real tracks are), values, visibility."""
  rng = np.random.default_rng(seed)
  grid = jnp.asarray(rng.normal(size=(frames, height, width, channels)), dtype)
  values = jnp.asarray(rng.normal(size=(frames, tracks, channels)), dtype)
  coords = np.stack([rng.uniform(-0.5, width + 0.5, (frames, tracks)),
                     rng.uniform(-0.5, height + 0.5, (frames, tracks))], -1)
  coords[:, ::2] = np.clip(coords[:, ::2] * 0.3 + [0.35 * width, 0.35 * height], 0, None)  # a crowded region
  visibility = rng.uniform(size=(frames, tracks)) > 0.1
  return grid, jnp.asarray(coords, jnp.float32), values, jnp.asarray(visibility)


def cases(implementation, height, width, **kw):
  """`{name: (fn, args_selector)}` of the four timed functions for one implementation."""
  def sample(g, c, v):
    return bilinear_sample(g, c, v, implementation=implementation, **kw)

  def scatter(x, c, v):
    return bilinear_scatter(x, c, v.astype(jnp.float32), height=height, width=width, implementation=implementation,
                            **kw)[0]

  def sample_loss(g, c, v):
    return jnp.sum(sample(g, c, v).astype(jnp.float32) ** 2)

  def scatter_loss(x, c, v):
    return jnp.sum(scatter(x, c, v).astype(jnp.float32) ** 2)

  return {
      "sample fwd": (sample, "grid"),
      "sample fwd+bwd": (jax.grad(sample_loss, argnums=(0, 1)), "grid"),
      "scatter fwd": (scatter, "values"),
      "scatter fwd+bwd": (jax.grad(scatter_loss, argnums=(0, 1)), "values"),
  }


def nominal_bytes(name, frames, cells, tracks, channels, itemsize):
  gather = (4 * tracks + tracks) * channels
  scatter = (tracks + cells) * channels
  per_frame = {"sample fwd": gather, "sample fwd+bwd": gather + scatter + gather,
               "scatter fwd": scatter, "scatter fwd+bwd": scatter + gather + gather}[name]
  return per_frame * frames * itemsize


def time_fn(fn, args, iters):
  """(compile seconds, median seconds per call over `iters` runs after one warm-up)."""
  jitted = jax.jit(fn)
  start = time.perf_counter()
  jax.block_until_ready(jitted(*args))
  compile_s = time.perf_counter() - start
  jax.block_until_ready(jitted(*args))
  runs = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(jitted(*args))
    runs.append(time.perf_counter() - start)
  return compile_s, statistics.median(runs)


def max_errors(implementation, inputs, height, width, **kw):
  """Max abs error of forward and gradients of `implementation` against the reference, per case."""
  grid, coords, values, visibility = inputs
  errors = {}
  for (name, (fn, which)), (_, (ref_fn, _)) in zip(cases(implementation, height, width, **kw).items(),
                                                    cases("xla", height, width).items()):
    args = (grid if which == "grid" else values, coords, visibility)
    got, want = jax.jit(fn)(*args), jax.jit(ref_fn)(*args)
    errors[name] = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                       for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
  return errors


def interpret_check():
  """CPU: both Pallas implementations in interpret mode on small inputs (odd sizes, crowded cells) vs the reference."""
  inputs = make_inputs(2, 6, 10, 37, 8, jnp.float32, seed=1)
  print("interpret-mode correctness (B=2, 6x10 grid, N=37, C=8, float32), max abs error vs reference:")
  for implementation, kw in (("pallas_triton", dict(interpret=True, block_n=16, block_c=4)),
                             ("pallas_tpu", dict(interpret=True, block_m=16))):
    errors = max_errors(implementation, inputs, 6, 10, **kw)
    print(f"  {implementation:14s} " + "  ".join(f"{k}: {v:.1e}" for k, v in errors.items()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  accelerator = jax.default_backend() in ("gpu", "tpu")
  parser.add_argument("--frames", type=int, default=42 if accelerator else 2, help="B x T frames")
  parser.add_argument("--tracks", type=int, default=TRACKS)
  parser.add_argument("--channels", type=int, default=CHANNELS)
  parser.add_argument("--iters", type=int, default=20 if accelerator else 3)
  parser.add_argument("--dtypes", default="bfloat16,float32")
  parser.add_argument("--peak_gbps", type=float, default=4800.0, help="HBM bandwidth for the roofline (GPU)")
  args = parser.parse_args()

  backend = jax.default_backend()
  device = jax.devices()[0]
  print(f"jax {jax.__version__}, backend {backend}, device {device.device_kind}, host {platform.machine()}, "
        f"frames {args.frames}, tracks {args.tracks}, grid {HEIGHT}x{WIDTH}, channels {args.channels}")
  kernel = default_implementation()
  implementations = ["xla"] + ([kernel] if kernel != "xla" else [])
  if not accelerator:
    interpret_check()
    print("CPU: Pallas kernels run only in interpret mode here; timing the XLA reference only.")

  cells = HEIGHT * WIDTH
  header = f"{'case':18s} {'dtype':9s} {'impl':14s} {'ms':>9s} {'GB/s':>8s} {'roofline':>9s} {'speedup':>8s} {'compile s':>9s}"
  for dtype_name in args.dtypes.split(","):
    dtype = jnp.dtype(dtype_name)
    inputs = make_inputs(args.frames, HEIGHT, WIDTH, args.tracks, args.channels, dtype)
    grid, coords, values, visibility = inputs
    if kernel != "xla":
      errors = max_errors(kernel, inputs, HEIGHT, WIDTH)
      print(f"{kernel} vs reference, {dtype_name}, max abs error: "
            + "  ".join(f"{k}: {v:.1e}" for k, v in errors.items()))
    print(header)
    baseline = {}
    for implementation in implementations:
      for name, (fn, which) in cases(implementation, HEIGHT, WIDTH).items():
        fn_args = (grid if which == "grid" else values, coords, visibility)
        compile_s, seconds = time_fn(fn, fn_args, args.iters)
        gbps = nominal_bytes(name, args.frames, cells, args.tracks, args.channels, dtype.itemsize) / seconds / 1e9
        roofline = f"{gbps / args.peak_gbps:8.0%}" if backend == "gpu" else "     n/a"
        baseline.setdefault(name, seconds)
        speedup = baseline[name] / seconds
        print(f"{name:18s} {dtype_name:9s} {implementation:14s} {seconds * 1e3:9.3f} {gbps:8.1f} {roofline:>9s} "
              f"{speedup:7.2f}x {compile_s:9.2f}")


if __name__ == "__main__":
  main()
