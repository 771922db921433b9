"""WAN 2.1 DiT throughput on this machine: jitted forward and flow-matching train step (AdamW), in video tokens/s.

For each named case it prints the parameter count, the token count (`B * (T/pt) * (H/ph) * (W/pw)` video tokens after
the 3D patchify), the compile time, the median step time over `--iters` timed runs (compile and one warm-up run
excluded), tokens/s, the estimated matmul FLOPs per forward (`dit_flops`; a train step counts 3x), the achieved
TFLOP/s and the MFU when a peak is known (`--peak_tflops`; default 989 TFLOP/s, H100/H200 bf16 dense, on a GPU
backend; "n/a" on CPU). Every case runs with the CameraCtrl II camera input (a Plücker map at the latent grid).

Cases:
  toy             the CPU toy preset, latents [2, 5, 16, 16, 16] (320 tokens), text [2, 16, 64].
  wan1_3b_1layer  one WAN 2.1 1.3B block in float32 (bf16 matmuls are slow on CPU), latents [1, 3, 16, 28, 16]
                  (336 tokens), text [1, 64, 4096].
  wan1_3b_full    GPU only: the full 1.3B model (30 layers, bf16, remat "dots"), latents [1, 21, 60, 104, 16]
                  (an 81x480x832 video through WAN's 4x8x8 VAE, 32760 tokens), text [1, 512, 4096], cuDNN attention.

Run: `python benchmarks/dit.py` (the two CPU cases), or e.g.
`python benchmarks/dit.py --case wan1_3b_full [--attention xla] [--iters 10] [--peak_tflops 989]`.
Record results in docs/benchmarks.md with the machine.
"""

import argparse
import dataclasses
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from camjax.diffusion import FlowMatching, masked_mse
from camjax.models import WanDiT, num_params, preset

GPU_PEAK_TFLOPS = 989.0  # H100 / H200 SXM, bf16 dense tensor cores


@dataclasses.dataclass(frozen=True)
class Case:
  preset: str
  overrides: dict
  latents: tuple[int, int, int, int, int]  # [B, T, H, W, C] at the latent grid
  text_len: int
  gpu_only: bool = False
  note: str = ""


CASES = {
    "toy": Case("toy", dict(in_channels=16, out_channels=16, text_dim=64), (2, 5, 16, 16, 16), 16),
    "wan1_3b_1layer": Case("wan1_3b", dict(num_layers=1, dtype="float32", remat="none"), (1, 3, 16, 28, 16), 64,
                           note="float32: bf16 matmuls are emulated and slow on CPU"),
    "wan1_3b_full": Case("wan1_3b", dict(attention="cudnn"), (1, 21, 60, 104, 16), 512, gpu_only=True,
                         note="81x480x832 video through WAN's 4x8x8 VAE"),
}
CPU_CASES = ("toy", "wan1_3b_1layer")


def dit_flops(cfg, batch: int, tokens: int, text_len: int) -> int:
  """Matmul FLOPs (2 m n k per matmul) of one WanDiT forward.

  Args:
    cfg: the `WanConfig`.
    batch: B.
    tokens: video tokens per sample, N = (T/pt)(H/ph)(W/pw).
    text_len: text tokens per sample, L.

  Counts the patch embedding (and the camera patchify when `cfg.camera`), the time MLP and modulation projection, the
  text projection, per block the self-attention q/k/v/out projections and scores (QK^T and PV: 2 * 2 N^2 D), the
  cross-attention projections (q/out over N tokens, k/v over L) and scores (2 * 2 N L D), the FFN, and the final
  projection. Norms, RoPE, softmax and elementwise ops are not counted; neither is remat recomputation.
  """
  d, f, n, l = cfg.dim, cfg.ffn_dim, tokens, text_len
  pv = cfg.patch_volume
  mm = lambda m, k, nn: 2 * m * k * nn
  flops = mm(n, pv * cfg.in_channels + (pv if cfg.cond_mask else 0), d)  # patch embedding
  if cfg.camera:
    flops += mm(n, pv * 6, d)  # camera patchify
  flops += mm(1, cfg.freq_dim, d) + mm(1, d, d) + mm(1, d, 6 * d)  # time MLP + modulation (once per sample)
  flops += mm(l, cfg.text_dim, d) + mm(l, d, d)  # text projection
  block = 4 * mm(n, d, d) + 2 * mm(n, n, d)  # self-attention: q/k/v/out, QK^T and PV
  block += 2 * mm(n, d, d) + 2 * mm(l, d, d) + 2 * mm(n, l, d)  # cross-attention: q/out, k/v on text, scores
  block += mm(n, d, f) + mm(n, f, d)  # FFN
  flops += cfg.num_layers * block
  flops += mm(n, d, pv * cfg.out_channels)  # final projection
  return batch * flops


def inputs(cfg, case: Case):
  b, t, h, w, c = case.latents
  keys = jax.random.split(jax.random.key(1), 4)
  x0 = jax.random.normal(keys[0], (b, t, h, w, c), jnp.float32)
  text = jax.random.normal(keys[1], (b, case.text_len, cfg.text_dim), jnp.float32)
  camera = jax.random.normal(keys[2], (b, t, h, w, 6), jnp.float32) if cfg.camera else None
  loss_mask = jnp.ones((b, t, h, w), jnp.float32)  # every latent frame generated (no condition frames)
  return x0, text, camera, loss_mask


def compile_and_time(fn, args, iters: int, update=None):
  """(compile seconds, median seconds per call) of `jax.jit`ted `fn(*args)`.

  Compilation is timed ahead of time (`lower().compile()`); one warm-up call follows; then `iters` calls are timed
  one by one with `jax.block_until_ready`. `update(args, out)` gives the next call's arguments (donated state).
  """
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  out = jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(iters):
    if update is not None:
      args = update(args, out)
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return compile_s, statistics.median(times)


def run_case(name: str, case: Case, args, peak_tflops):
  overrides = dict(case.overrides)
  if args.attention is not None:
    overrides["attention"] = args.attention
  cfg = preset(case.preset, **overrides)
  b, t, h, w, _ = case.latents
  pt, ph, pw = cfg.patch_size
  n = (t // pt) * (h // ph) * (w // pw)
  tokens = b * n

  start = time.perf_counter()
  model = WanDiT.create(cfg, seed=0)
  count = num_params(model)
  graphdef, params = nnx.split(model)
  del model  # the train step donates `params`
  params = jax.block_until_ready(params)
  init_s = time.perf_counter() - start

  print(f"[{name}] preset {case.preset} {overrides}: {cfg.num_layers} layers, dim {cfg.dim}, ffn {cfg.ffn_dim}, "
        f"heads {cfg.num_heads}, dtype {cfg.dtype}, remat {cfg.remat}, attention {cfg.attention}"
        + (f" ({case.note})" if case.note else ""))
  print(f"[{name}] params: {count / 1e6:.2f} M ({count:,}), init {init_s:.1f} s")
  print(f"[{name}] latents {list(case.latents)}, text [{b}, {case.text_len}, {cfg.text_dim}] -> {n} tokens/sample, "
        f"{tokens} tokens/step; timed iters {args.iters}")

  fwd_flops = dit_flops(cfg, b, n, case.text_len)
  x0, text, camera, loss_mask = inputs(cfg, case)
  objective = FlowMatching()

  @jax.jit
  def forward(params, x_t, timesteps, text, camera):
    return nnx.merge(graphdef, params)(x_t, timesteps, text, camera=camera)

  timesteps = jnp.full((b,), 500.0, jnp.float32)
  compile_s, fwd_s = compile_and_time(forward, (params, x0, timesteps, text, camera), args.iters)
  report(name, "forward", compile_s, fwd_s, tokens, fwd_flops, peak_tflops)

  tx = optax.adamw(1e-4)
  opt_state = tx.init(params)

  def loss_fn(params, x0, text, camera, loss_mask, rng):
    noise_rng, sigma_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
    sigma = objective.sample_sigma(sigma_rng, x0.shape[0])
    x_t = objective.add_noise(x0, noise, sigma)
    pred = nnx.merge(graphdef, params)(x_t, objective.model_timesteps(sigma), text, camera=camera)
    return masked_mse(pred, objective.target(x0, noise), loss_mask)

  def train_step(params, opt_state, x0, text, camera, loss_mask, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, x0, text, camera, loss_mask, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(train_step, donate_argnums=(0, 1))

  def update(step_args, out):
    params, opt_state, _ = out
    rng = jax.random.fold_in(step_args[-1], 1)
    return (params, opt_state, *step_args[2:-1], rng)

  step_args = (params, opt_state, x0, text, camera, loss_mask, jax.random.key(0))
  compile_s, step_s = compile_and_time(step, step_args, args.iters, update)
  report(name, "train step", compile_s, step_s, tokens, 3 * fwd_flops, peak_tflops)


def report(name, what, compile_s, seconds, tokens, flops, peak_tflops):
  achieved = flops / seconds / 1e12
  mfu = f"{100 * achieved / peak_tflops:.1f}%" if peak_tflops else "n/a"
  print(f"[{name}] {what}: {tokens / seconds:,.0f} tokens/s, {seconds * 1e3:.1f} ms/step (median), "
        f"compile {compile_s:.1f} s, {flops / 1e9:,.1f} GFLOP, {achieved:.3f} TFLOP/s, MFU {mfu}")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--case", action="append", choices=sorted(CASES),
                      help=f"case to run (repeatable; default: {', '.join(CPU_CASES)})")
  parser.add_argument("--iters", type=int, default=5, help="timed iterations per figure (median reported)")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help=f"peak FLOP/s of the device for MFU (default: {GPU_PEAK_TFLOPS:g} on GPU, none on CPU)")
  parser.add_argument("--attention", choices=("xla", "cudnn"), default=None,
                      help="attention implementation (default: the case's; cudnn for wan1_3b_full, xla otherwise)")
  args = parser.parse_args()
  if args.iters < 1:
    parser.error("--iters must be >= 1")
  names = args.case or list(CPU_CASES)

  backend = jax.default_backend()
  device = jax.devices()[0]
  print(f"machine: {device.device_kind} ({device.platform}, {jax.device_count()} device(s)), {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), jax {jax.__version__}")
  refused = [n for n in names if CASES[n].gpu_only and backend != "gpu"]
  if refused:
    parser.error(f"case(s) {', '.join(refused)} need a GPU (the full 1.3B model at 32760 tokens); this backend is "
                 f"{backend!r}. Run the CPU cases ({', '.join(CPU_CASES)}) here.")
  if args.attention == "cudnn" and backend != "gpu":
    parser.error("--attention cudnn needs a GPU")
  peak = args.peak_tflops if args.peak_tflops is not None else (GPU_PEAK_TFLOPS if backend == "gpu" else None)
  print(f"peak for MFU: {f'{peak:g} TFLOP/s' if peak else 'n/a'}; FLOPs = matmuls only (dit_flops), train step = 3x "
        f"forward")
  for name in names:
    run_case(name, CASES[name], args, peak)


if __name__ == "__main__":
  main()
