"""WAN 2.1 DiT throughput on this machine: jitted forward and flow-matching train step (AdamW), in video tokens/s.

For each named case it prints the parameter count, the token count (`B * (T/pt) * (H/ph) * (W/pw)` video tokens after
the 3D patchify), the compile time, the median step time over `--iters` timed runs (compile and one warm-up run
excluded), tokens/s, the estimated matmul FLOPs per forward (`dit_flops`; a train step counts 3x), the achieved
TFLOP/s and the MFU when a peak is known (`--peak_tflops`; default 989 TFLOP/s, H100/H200 bf16 dense, on a GPU
backend; "n/a" on CPU). Every case runs with a CameraCtrl II-style camera input: a 6-channel map at the latent grid
embedded by a bias-free, zero-initialised `PatchEmbed` (trained with the DiT) and passed as the DiT's `token_map`.

Cases:
  toy             the CPU toy preset, latents [2, 5, 16, 16, 16] (320 tokens), text [2, 16, 64].
  wan1_3b_1layer  one WAN 2.1 1.3B block in float32 (bf16 matmuls are slow on CPU), latents [1, 3, 16, 28, 16]
                  (336 tokens), text [1, 64, 4096].
  wan1_3b_full    GPU only: the full 1.3B model (30 layers, bf16, remat "dots"), latents [1, 21, 60, 104, 16]
                  (an 81x480x832 video through WAN's 4x8x8 VAE, 32760 tokens), text [1, 512, 4096], cuDNN attention.

Run: `python benchmarks/dit.py` (the two CPU cases), or e.g.
`python benchmarks/dit.py --case wan1_3b_full [--attention xla] [--iters 10] [--peak_tflops 989]`.

`python benchmarks/dit.py --vs_torch` (needs the `parity` extra: torch + diffusers) times ONE train step (forward +
backward + AdamW, flow-matching MSE) of the same model in camjax and in diffusers' `WanTransformer3DModel` (torch,
CPU, one thread per usable CPU), interleaved in one run so both see the same machine load: the CPU default's DiT (4 layers, width
128, FFN 512, 16 latent channels, text 16 x 64) on latents [2, 5, 16, 16, 16] = 320 tokens at batch 2, no camera
input (diffusers has none). It prints both medians and the ratio torch / camjax (> 1: camjax is faster).
Torch gets one thread per CPU the process may run on, so `taskset -c 0 python benchmarks/dit.py --vs_torch` compares
both on one core (the fair figure on a loaded machine, where torch's spin-waiting threads collapse).
Record results in docs/benchmarks.md with the machine.
"""

import argparse
import dataclasses
import functools
import os
import platform
import statistics
import time

from camjax import xla_flags

xla_flags.apply_defaults()  # what the main job runs with (CAMJAX_XLA_DEFAULTS=0 measures without)

import jax  # noqa: E402  pylint: disable=wrong-import-position
import jax.numpy as jnp  # noqa: E402  pylint: disable=wrong-import-position
import optax
from flax import nnx

from camjax.diffusion import FlowMatching, masked_mse
from camjax.models import WanDiT, num_params, preset
from camjax.models.layers import PatchEmbed

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


class CameraDiT(nnx.Module):
  """The DiT with a camera token map: `dit(x_t, timesteps, text, token_map=camera_patchify(camera [B, T, H, W, 6]))`."""

  def __init__(self, cfg, seed: int = 0):
    self.dit = WanDiT.create(cfg, seed=seed)
    with nnx.use_eager_sharding(False):
      self.camera_patchify = PatchEmbed(6, cfg.dim, cfg.patch_size, rngs=nnx.Rngs(seed + 1), dtype=jnp.dtype(cfg.dtype),
                                        param_dtype=jnp.dtype(cfg.param_dtype), zero_init=True, use_bias=False)

  def __call__(self, x_t, timesteps, text, camera):
    return self.dit(x_t, timesteps, text, token_map=self.camera_patchify(camera))


def dit_flops(cfg, batch: int, tokens: int, text_len: int, camera: bool = True) -> int:
  """Matmul FLOPs (2 m n k per matmul) of one WanDiT forward.

  Args:
    cfg: the `WanConfig`.
    batch: B.
    tokens: video tokens per sample, N = (T/pt)(H/ph)(W/pw).
    text_len: text tokens per sample, L.
    camera: count the camera patchify (`CameraDiT`).

  Counts the patch embedding (and the camera patchify when `camera`), the time MLP and modulation projection, the
  text projection, per block the self-attention q/k/v/out projections and scores (QK^T and PV: 2 * 2 N^2 D), the
  cross-attention projections (q/out over N tokens, k/v over L) and scores (2 * 2 N L D), the FFN, and the final
  projection. Norms, RoPE, softmax and elementwise ops are not counted; neither is remat recomputation.
  """
  d, f, n, l = cfg.dim, cfg.ffn_dim, tokens, text_len
  pv = cfg.patch_volume
  mm = lambda m, k, nn: 2 * m * k * nn
  flops = mm(n, pv * (cfg.in_channels + cfg.extra_in_channels), d)  # patch embedding
  if camera:
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
  camera = jax.random.normal(keys[2], (b, t, h, w, 6), jnp.float32)
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
  model = CameraDiT(cfg, seed=0)
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
    return nnx.merge(graphdef, params)(x_t, timesteps, text, camera)

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
    pred = nnx.merge(graphdef, params)(x_t, objective.model_timesteps(sigma), text, camera)
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


VS_TORCH = dict(num_heads=4, head_dim=32, ffn_dim=512, num_layers=4, in_channels=16, out_channels=16, text_dim=64,
                freq_dim=256, remat="full")  # remat: the CPU default's setting
VS_TORCH_SHAPE = (2, 5, 16, 16, 16)  # [B, T, H, W, C] latents: 2 x 5 x 8 x 8 = 320 tokens after the (1, 2, 2) patchify
VS_TORCH_TEXT = 16


def camjax_train_step(cfg, shape, text_len):
  """A `step()` closure running one donated, jitted camjax train step (AdamW, flow-matching MSE) per call."""
  model = WanDiT.create(cfg, seed=0)
  graphdef, params = nnx.split(model)
  tx = optax.adamw(1e-4)
  keys = jax.random.split(jax.random.key(1), 3)
  x0 = jax.random.normal(keys[0], shape, jnp.float32)
  text = jax.random.normal(keys[1], (shape[0], text_len, cfg.text_dim), jnp.float32)
  objective = FlowMatching()

  def loss_fn(params, rng):
    noise_rng, sigma_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
    sigma = objective.sample_sigma(sigma_rng, x0.shape[0])
    x_t = objective.add_noise(x0, noise, sigma)
    pred = nnx.merge(graphdef, params)(x_t, objective.model_timesteps(sigma), text)
    return jnp.mean((pred - objective.target(x0, noise)) ** 2)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  state = [params, tx.init(params), jax.random.key(0)]

  def run():
    state[2] = jax.random.fold_in(state[2], 1)
    state[0], state[1], loss = step(*state)
    return jax.block_until_ready(loss)

  return run, num_params(model)


def torch_train_step(cfg, shape, text_len):
  """The same step in diffusers' `WanTransformer3DModel` (torch, float32, CPU): forward, MSE, backward, AdamW."""
  import diffusers  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(_usable_cpus())
  torch.manual_seed(0)
  model = diffusers.WanTransformer3DModel(
      patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
      in_channels=cfg.in_channels, out_channels=cfg.out_channels, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
      ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm,
      qk_norm="rms_norm_across_heads", eps=cfg.eps, rope_max_seq_len=cfg.rope_max_seq_len).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
  b, t, h, w, c = shape
  x0 = torch.randn(b, c, t, h, w)
  text = torch.randn(b, text_len, cfg.text_dim)

  def run():
    noise = torch.randn_like(x0)
    sigma = torch.rand(b).view(b, 1, 1, 1, 1)
    x_t = (1 - sigma) * x0 + sigma * noise
    pred = model(x_t, sigma.view(b) * 1000, text, return_dict=False)[0]
    loss = torch.mean((pred - (noise - x0)) ** 2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss)

  return run, sum(p.numel() for p in model.parameters())


def _usable_cpus() -> int:
  """CPUs this process may run on (`taskset` narrows it; XLA:CPU sizes its pool from the same affinity mask)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def vs_torch(iters: int):
  """Interleaved camjax / torch train steps of the same DiT (module docstring); prints medians and the ratio."""
  cfg = preset("toy", **VS_TORCH)
  b, t, h, w, _ = VS_TORCH_SHAPE
  tokens = b * t * (h // 2) * (w // 2)
  jax_step, jax_params = camjax_train_step(cfg, VS_TORCH_SHAPE, VS_TORCH_TEXT)
  torch_step, torch_params = torch_train_step(cfg, VS_TORCH_SHAPE, VS_TORCH_TEXT)
  print(f"[vs_torch] {cfg.num_layers} layers, width {cfg.dim}, ffn {cfg.ffn_dim}, latents {list(VS_TORCH_SHAPE)} "
        f"= {tokens // b} tokens/sample, {tokens} per step; remat {cfg.remat}; XLA_FLAGS {os.environ.get('XLA_FLAGS', '')!r}; params camjax {jax_params:,} / torch {torch_params:,}")
  start = time.perf_counter()
  jax_step()
  print(f"[vs_torch] camjax compile + first step {time.perf_counter() - start:.1f} s")
  for _ in range(3):  # warm-up both
    jax_step()
    torch_step()
  times = {"camjax": [], "torch": []}
  for _ in range(iters):
    for name, fn in (("camjax", jax_step), ("torch", torch_step)):
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  med = {k: statistics.median(v) for k, v in times.items()}
  for k in ("camjax", "torch"):
    print(f"[vs_torch] {k}: {med[k] * 1e3:.1f} ms/step (median of {iters}, min {min(times[k]) * 1e3:.1f}), "
          f"{tokens / med[k]:,.0f} tokens/s")
  print(f"[vs_torch] ratio torch/camjax = {med['torch'] / med['camjax']:.2f} (> 1: camjax faster)")


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
  parser.add_argument("--vs_torch", action="store_true",
                      help="time one train step of the CPU default's DiT in camjax and in diffusers (torch), "
                           "interleaved, and print the ratio")
  args = parser.parse_args()
  if args.iters < 1:
    parser.error("--iters must be >= 1")
  if args.vs_torch:
    print(f"machine: {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
          f", {_usable_cpus()} usable by this process, jax {jax.__version__}")
    vs_torch(max(args.iters, 20))
    return
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
