"""The WAN 2.1 causal 3D VAE (diffusers `AutoencoderKLWan`) in Flax NNX, channels-last, with diffusers weight loading.

Source: the public WAN 2.1 VAE as implemented in diffusers 0.42 (`models/autoencoders/autoencoder_kl_wan.py`); the
architecture, the weight names and the numerics below were read there. Shapes are channels-last throughout:
video `[B, T, H, W, 3]` in `[-1, 1]`, latents `[B, t, h, w, z_dim]`, convolutions `jax.lax.conv_general_dilated` with
`NDHWC` / `DHWIO` layouts (a torch Conv3d `[out, in, kt, kh, kw]` becomes `[kt, kh, kw, in, out]`).

Architecture (WAN 2.1 defaults: base_dim 96, dim_mult (1, 2, 4, 4), 2 residual blocks per level, z_dim 16):

  encoder   conv_in (3x3x3 causal) -> per level: num_res_blocks x ResidualBlock [-> AttentionBlock at attn_scales]
            -> Resample (spatial /2 on every level but the last; time /2 too where temporal_downsample)
            -> mid (ResidualBlock, AttentionBlock, ResidualBlock) -> RMSNorm, SiLU -> conv_out (2 z_dim channels)
            -> quant_conv (1x1x1): moments [mu, logvar]
  decoder   post_quant_conv (1x1x1) -> conv_in -> mid -> per level: (num_res_blocks + 1) x ResidualBlock
            -> Resample (nearest 2x + 3x3 conv halving the channels; time x2 first where the reversed
            temporal_downsample says so) -> RMSNorm, SiLU -> conv_out (3 channels) -> clamp to [-1, 1]

  ResidualBlock   x + conv2(SiLU(RMS(conv1(SiLU(RMS(x))))))   (1x1x1 shortcut conv when the width changes)
  RMSNorm         x / max(|x|_2, 1e-12) * sqrt(C) * gamma over channels (float32)
  AttentionBlock  one-head self-attention over the h * w positions of each frame, 1x1 qkv and output projections

Temporal factor `2 ** sum(temporal_downsample)` (4), spatial factor `2 ** (len(dim_mult) - 1)` (8).

Causal time and its cache. Every 3-tap temporal convolution is causal: output frame `f` sees input frames
`f - 2, f - 1, f`, with zeros before the clip. The clip is processed in chunks, as WAN does: the first frame alone,
then `temporal_factor` frames at a time for encode (one latent frame each), and one latent frame at a time for
decode. Each causal layer carries a cache between chunks: the last two frames of its input stream (zeros before the
first chunk); the time downsampler keeps the last frame; the time upsampler skips the first latent frame (it leaves it
as one frame) and starts its own zero cache with the second. A chunked run therefore equals the whole-clip
computation (`chunked=False`, one pass over all frames; tested to rounding), and both equal diffusers, whose
`feat_cache` lists hold the same frames.

Chunk loop: `jax.lax.scan`. The first chunk is its own call (it sets up the cache; its layers differ: no time
downsampling / upsampling), the remaining chunks are one `scan` over `[n_chunks, B, tf, H, W, 3]` with the cache as
carry. Why scan and not a Python loop: camjax calls `encode` inside its jitted train / sample steps, where a Python loop
would unroll into `1 + (T - 1) / 4` copies of the encoder (21 for 81 frames) and compile each; the scan body compiles
once whatever the clip length, and the cache stays on device. `encode` / `decode` are themselves `jax.jit`ted (one
compile per input shape and options); peak memory is one chunk's activations plus the cache.

Spatial tiling (`tile=(th, tw)` pixels, `tile_overlap` pixels, both multiples of the spatial factor): the frame is cut
into the fewest equal tiles whose overlaps are at least `tile_overlap`, spread evenly (equal sizes, so one compiled
tile function serves all); each tile runs the whole chunked computation (`jax.lax.map`: one tile's activations live at
a time), and overlapping tiles are blended with linear ramps across each overlap, normalised so the weights sum to one
everywhere. Encode blends latents, decode blends pixels. A tile at least as large as the frame gives the untiled
result (to rounding); smaller tiles see zero padding at their borders and differ (tests/models/test_wan_vae.py holds
them to diffusers' own tiling error).

Memory for one 81 x 480 x 832 clip (the WAN 2.1 VAE, 126.9M parameters = 0.5 GiB in float32; XLA:CPU buffer
assignment of the compiled programs, temporaries only): float32 encode 5.6 GiB untiled, 0.95 GiB with `tile=256`
(overlap 64), decode 6.8 / 1.7 GiB; bfloat16 encode 3.9 / 0.8 GiB, decode 4.4 / 1.6 GiB.

Normalisation (WAN pipelines): `encode` returns the posterior mean normalised per channel, `(mu - latents_mean) /
latents_std` (deterministic: no sampling); `decode` takes normalised latents and maps them back, `z * latents_std +
latents_mean`, before the decoder.

Numerics: parameters in `param_dtype` (float32); convolutions, attention and the rest compute in `dtype` (float32 by
default, `dtype="bfloat16"` halves activation memory), norms in float32; `encode` returns float32 latents and `decode`
float32 video. `precision` is passed to every convolution (None: the backend default, which may use TF32 for float32 on
GPUs; "highest" for exact float32).

Sharding: the VAE has its own logical-axis table, `VAE_RULES`. Parameters: conv output channels over `fsdp`; channel
axes sized by RGB or the latents, kernel taps and norm gains replicated. Activations: batch over `data, fsdp`, the
rest whole (`vae_height` can map frame rows to `context`, but that gave wrong results on XLA:CPU once the weights were
split over fsdp too). `from_diffusers(path, mesh=...)` / `WanVAE.create(config, mesh=...)` place the parameters by it,
and each chunk's input and output are constrained by it while a mesh is active (a dimension that does not divide its
mesh axes, e.g. one clip on a 2-way batch axis, stays replicated).

Errors: shapes that break the causal contract (`T != 1 + 4k`, `H`, `W` not multiples of 8) and bad tiles raise
`camjax.models.autoencoders.AutoencoderError`; a folder that cannot be loaded raises `VAEWeightsError` (a
`camjax.models.weights.WeightsError`) naming what is missing.

Entry points: `WanVAE.from_diffusers(path)`, `WanVAE.create(config)`, `vae.encode(video)`, `vae.decode(latents)`.
`WanVAE` follows `camjax.models.autoencoders.Autoencoder` (`temporal_factor`, `spatial_factor`, `latent_channels`,
`encode`, `decode`, `latent_shape`, `video_frames`, plus `check_video` / `check_latents` from `AutoencoderShapes`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from camjax import sharding
from camjax.models.autoencoders import AutoencoderError, AutoencoderShapes
from camjax.models.layers import attention, param
from camjax.models.weights import WeightsError

# Per-channel statistics of WAN 2.1 latents (diffusers AutoencoderKLWan defaults; the released config carries them).
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
                      -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
                     1.6382, 1.1253, 2.8251, 1.9160)

# Logical parameter axes of the VAE -> mesh axes.
VAE_PARAM_RULES: tuple[tuple[str, Any], ...] = (
    ("vae_kernel", None),  # kernel taps (kt, kh, kw)
    ("vae_in", None),  # conv input channels (the previous layer's output is already gathered)
    ("vae_out", "fsdp"),  # conv output channels: 96 .. 768 in WAN 2.1, multiples of 32
    ("vae_io", None),  # channel axes sized by RGB or the latents (3, 16, 32): too small to split
    ("vae_norm", None),  # RMSNorm gains
)
# Logical activation axes of the VAE -> mesh axes.
VAE_ACTIVATION_RULES: tuple[tuple[str, Any], ...] = (
    ("vae_batch", ("data", "fsdp")),
    ("vae_frames", None),
    # Frame rows stay whole: mapping them to "context" (XLA exchanging conv halos between row shards) gave wrong
    # results on XLA:CPU (jaxlib 0.10.2) once the weights were also split over fsdp; override only after checking.
    ("vae_height", None),
    ("vae_width", None),
    ("vae_channels", None),
)
VAE_RULES = sharding.Rules(params=VAE_PARAM_RULES, activations=VAE_ACTIVATION_RULES)
_ACT = ("vae_batch", "vae_frames", "vae_height", "vae_width", "vae_channels")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"


class VAEWeightsError(WeightsError):
  """A diffusers VAE folder that cannot be loaded: absent folder, no / wrong config.json, no weights, missing or
  unexpected tensors, shapes that do not fit."""


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
  """Size and options of a WAN 2.1 VAE (frozen and hashable: it is static under `jax.jit`).

  The first fields mirror diffusers' `AutoencoderKLWan` config (`from_diffusers_config`; diffusers spells
  `temporal_downsample` "temperal_downsample"); `dtype`, `param_dtype` and `precision` are camjax options.

  Attributes:
    base_dim: channels of the first encoder level (96 in WAN 2.1).
    decoder_base_dim: the decoder's base channels (None: `base_dim`).
    z_dim: latent channels (16).
    dim_mult: channel multiplier per level; `len(dim_mult) - 1` spatial halvings.
    num_res_blocks: residual blocks per encoder level (the decoder has one more per level).
    attn_scales: encoder resolutions (1.0, 0.5, ...) that get an attention block after each residual block (none in
      WAN 2.1).
    temporal_downsample: per downsampling level, whether it also halves time (`len(dim_mult) - 1` entries); the
      decoder upsamples time in the reverse order.
    latents_mean, latents_std: per-channel latent statistics used by `encode` / `decode` (z_dim entries each).
    in_channels, out_channels: video channels (3).
    dtype: compute dtype ("float32", "bfloat16", "float16").
    param_dtype: parameter dtype.
    precision: `jax.lax.Precision` name for every convolution (None: backend default; "highest": exact float32).
  """

  base_dim: int = 96
  decoder_base_dim: int | None = None
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: tuple[float, ...] = ()
  temporal_downsample: tuple[bool, ...] = (False, True, True)
  latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
  latents_std: tuple[float, ...] = WAN21_LATENTS_STD
  in_channels: int = 3
  out_channels: int = 3
  dtype: str = "float32"
  param_dtype: str = "float32"
  precision: str | None = None

  @property
  def spatial_factor(self) -> int:
    """Pixels per latent cell along height and width: `2 ** (len(dim_mult) - 1)`."""
    return 2**(len(self.dim_mult) - 1)

  @property
  def temporal_factor(self) -> int:
    """Video frames per latent frame after the first: `2 ** sum(temporal_downsample)`."""
    return 2**sum(bool(d) for d in self.temporal_downsample)

  def replace(self, **kw) -> WanVAEConfig:
    return dataclasses.replace(self, **kw)

  def validate(self) -> WanVAEConfig:
    """Returns self.

    Raises:
      AutoencoderError: inconsistent sizes, unknown dtype or precision.
    """
    bad = []
    for name in ("base_dim", "z_dim", "num_res_blocks", "in_channels", "out_channels"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        bad.append(f"{name}={value!r} (a positive int)")
    if self.decoder_base_dim is not None and (not isinstance(self.decoder_base_dim, int) or self.decoder_base_dim < 1):
      bad.append(f"decoder_base_dim={self.decoder_base_dim!r} (None or a positive int)")
    if not self.dim_mult or any(not isinstance(m, int) or m < 1 for m in self.dim_mult):
      bad.append(f"dim_mult={self.dim_mult!r} (positive ints)")
    elif len(self.temporal_downsample) != len(self.dim_mult) - 1:
      bad.append(f"temporal_downsample={self.temporal_downsample!r} needs len(dim_mult) - 1 = "
                 f"{len(self.dim_mult) - 1} entries")
    for name in ("latents_mean", "latents_std"):
      if len(getattr(self, name)) != self.z_dim:
        bad.append(f"{name} has {len(getattr(self, name))} entries, z_dim is {self.z_dim}")
    if any(not s > 0 for s in self.latents_std):
      bad.append("latents_std must be positive")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        bad.append(f"{name}={getattr(self, name)!r} (one of {sorted(_DTYPES)})")
    if self.precision not in (None, "default", "high", "highest"):
      bad.append(f"precision={self.precision!r} (None, 'default', 'high' or 'highest')")
    if bad:
      raise AutoencoderError("invalid WanVAEConfig: " + "; ".join(bad))
    return self

  @classmethod
  def from_diffusers_config(cls, cfg: dict[str, Any], **overrides) -> WanVAEConfig:
    """The config of a diffusers `AutoencoderKLWan` `config.json` (missing keys take diffusers' defaults).

    Raises:
      VAEWeightsError: not an `AutoencoderKLWan` config, a WAN 2.2 variant (`is_residual`, `patch_size`), or values
        that fail `validate`.
    """
    name = cfg.get("_class_name")
    if name != "AutoencoderKLWan":
      raise VAEWeightsError(f"the config describes {name!r}, not an 'AutoencoderKLWan' (the WAN 2.1 VAE)")
    if cfg.get("is_residual"):
      raise VAEWeightsError("is_residual=true is the WAN 2.2 VAE; camjax ports WAN 2.1")
    if cfg.get("patch_size") is not None:
      raise VAEWeightsError(f"patch_size={cfg['patch_size']}: patchified (WAN 2.2) VAEs are not supported")
    d = cls()
    fields = dict(
        base_dim=cfg.get("base_dim", d.base_dim), decoder_base_dim=cfg.get("decoder_base_dim"),
        z_dim=cfg.get("z_dim", d.z_dim), dim_mult=tuple(cfg.get("dim_mult", d.dim_mult)),
        num_res_blocks=cfg.get("num_res_blocks", d.num_res_blocks),
        attn_scales=tuple(float(s) for s in cfg.get("attn_scales", ())),
        temporal_downsample=tuple(bool(x) for x in cfg.get("temperal_downsample", d.temporal_downsample)),
        latents_mean=tuple(float(x) for x in cfg.get("latents_mean", d.latents_mean)),
        latents_std=tuple(float(x) for x in cfg.get("latents_std", d.latents_std)),
        in_channels=cfg.get("in_channels", 3), out_channels=cfg.get("out_channels", 3))
    fields.update(overrides)
    try:
      return cls(**fields).validate()
    except (AutoencoderError, TypeError) as e:
      raise VAEWeightsError(str(e)) from None


class _Stream:
  """The causal caches of one chunk: the previous chunk's (`old`, read in layer order) and this chunk's (`new`).

  `old is None` marks the first chunk, where caches start (zeros, or the first frames themselves).
  """

  def __init__(self, old: Sequence[jax.Array] | None):
    self.old = old
    self.new: list[jax.Array] = []

  @property
  def first(self) -> bool:
    return self.old is None

  def take(self) -> jax.Array | None:
    """The cache this layer left in the previous chunk (call before `put`), or None in the first chunk."""
    return None if self.old is None else self.old[len(self.new)]

  def put(self, cache: jax.Array) -> None:
    self.new.append(cache)


def _precision(config: WanVAEConfig):
  return None if config.precision is None else jax.lax.Precision(config.precision.upper())


class Conv(nnx.Module):
  """A 2D / 3D convolution over channels-last input: `kernel [*taps, in, out]`, `bias [out]`.

  Only the spatial (H, W) axes are padded here; callers handle time. A 1x1(x1) kernel runs as a matmul.
  """

  def __init__(self, c_in: int, c_out: int, taps: Sequence[int], *, stride: Sequence[int] | None = None,
               padding: Sequence[tuple[int, int]] | None = None, names=("vae_in", "vae_out"), rngs, config):
    taps = tuple(taps)
    self.stride = tuple(stride or (1,) * len(taps))
    self.padding = tuple(padding or [(0, 0)] * (len(taps) - 2) + [(k // 2, k // 2) for k in taps[-2:]])
    self.dtype, self.precision = _DTYPES[config.dtype], _precision(config)
    pdt = _DTYPES[config.param_dtype]
    self.kernel = param(rngs, nnx.initializers.variance_scaling(1.0, "fan_in", "normal"), (*taps, c_in, c_out),
                        ("vae_kernel",) * len(taps) + tuple(names), pdt)
    self.bias = param(rngs, nnx.initializers.zeros_init(), (c_out,), names[1:], pdt)

  def __call__(self, x: jax.Array) -> jax.Array:
    """`[N, (T,) H, W, in] -> [N, (T',) H', W', out]` in the compute dtype (time unpadded, "valid")."""
    kernel = self.kernel[...].astype(self.dtype)
    x = x.astype(self.dtype)
    if all(k == 1 for k in kernel.shape[:-2]) and all(s == 1 for s in self.stride):
      y = jnp.dot(x, kernel.reshape(kernel.shape[-2:]), precision=self.precision)
    else:
      spec = ("NDHWC", "DHWIO", "NDHWC") if kernel.ndim == 5 else ("NHWC", "HWIO", "NHWC")
      y = jax.lax.conv_general_dilated(x, kernel, self.stride, self.padding, dimension_numbers=spec,
                                       precision=self.precision)
    return y + self.bias[...].astype(self.dtype)


class CausalConv3d(Conv):
  """A 3D convolution, causal in time: output frame `f` sees input frames `f - kt + 1 .. f` (zeros before the clip).

  `__call__(x, stream)` runs one chunk `[B, T, H, W, C]`: the last `kt - 1` frames of the input stream so far (the
  cache) are prepended, and the new cache is put on `stream`. Spatial padding is `k // 2` on both sides.
  """

  def __init__(self, c_in: int, c_out: int, taps=(3, 3, 3), **kw):
    taps = (taps,) * 3 if isinstance(taps, int) else tuple(taps)
    super().__init__(c_in, c_out, taps, **kw)
    self.cache_frames = taps[0] - 1

  def __call__(self, x: jax.Array, stream: _Stream | None = None) -> jax.Array:
    if self.cache_frames:
      old = stream.take()
      if old is None:
        old = jnp.zeros((x.shape[0], self.cache_frames, *x.shape[2:]), self.dtype)
      x = jnp.concatenate([old, x.astype(self.dtype)], axis=1)
      stream.put(x[:, -self.cache_frames:])
    return super().__call__(x)


class RMSNorm(nnx.Module):
  """`x / max(|x|_2, 1e-12) * sqrt(C) * gamma` over the channel axis, in float32 (diffusers `WanRMS_norm`)."""

  def __init__(self, dim: int, *, rngs, config):
    self.gamma = param(rngs, nnx.initializers.ones_init(), (dim,), ("vae_norm",), _DTYPES[config.param_dtype])

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
    y = x32 / jnp.maximum(norm, 1e-12) * math.sqrt(x.shape[-1]) * self.gamma[...].astype(jnp.float32)
    return y.astype(x.dtype)


class ResidualBlock(nnx.Module):
  """`shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))))))`, both convs 3x3x3 causal; `[B, T, H, W, c_in] ->
  [B, T, H, W, c_out]`."""

  def __init__(self, c_in: int, c_out: int, *, rngs, config):
    self.norm1 = RMSNorm(c_in, rngs=rngs, config=config)
    self.conv1 = CausalConv3d(c_in, c_out, rngs=rngs, config=config)
    self.norm2 = RMSNorm(c_out, rngs=rngs, config=config)
    self.conv2 = CausalConv3d(c_out, c_out, rngs=rngs, config=config)
    self.conv_shortcut = CausalConv3d(c_in, c_out, 1, rngs=rngs, config=config) if c_in != c_out else None

  def __call__(self, x: jax.Array, stream: _Stream) -> jax.Array:
    h = x if self.conv_shortcut is None else self.conv_shortcut(x)
    x = self.conv1(jax.nn.silu(self.norm1(x)), stream)
    x = self.conv2(jax.nn.silu(self.norm2(x)), stream)
    return x + h.astype(x.dtype)


class AttentionBlock(nnx.Module):
  """`x + proj(attention(qkv(norm(x))))`: one head over the `H * W` positions of each frame (no time mixing)."""

  def __init__(self, dim: int, *, rngs, config):
    self.norm = RMSNorm(dim, rngs=rngs, config=config)
    self.to_qkv = Conv(dim, 3 * dim, (1, 1), rngs=rngs, config=config)
    self.proj = Conv(dim, dim, (1, 1), rngs=rngs, config=config)

  def __call__(self, x: jax.Array, stream: _Stream | None = None) -> jax.Array:
    b, t, h, w, c = x.shape
    qkv = self.to_qkv(self.norm(x).reshape(b * t, h * w, c))
    q, k, v = (a[:, :, None, :] for a in jnp.split(qkv, 3, axis=-1))  # channel order q, k, v; one head
    y = self.proj(attention(q, k, v)[:, :, 0, :])
    return x + y.reshape(b, t, h, w, c).astype(x.dtype)


class Resample(nnx.Module):
  """Spatial and temporal down / upsampling (diffusers `WanResample`), `[B, T, H, W, C]` chunks.

  modes:
    downsample2d: zero-pad bottom / right by 1, 3x3 conv stride 2 per frame: `H, W -> H / 2, W / 2`.
    downsample3d: the same, then a (3, 1, 1) time conv with stride 2 over `[last frame of the previous chunk, x]`;
      the first chunk passes through (one frame; a longer first chunk keeps frame 0 and halves the rest).
    upsample2d: nearest 2x, 3x3 conv to `out_dim` channels (default `dim // 2`).
    upsample3d: first a causal (3, 1, 1) time conv to `2 dim` channels whose halves become two frames (`T -> 2T`);
      the first chunk's first frame skips it (stays one frame) and its zero cache starts with the next frame.
  """

  MODES = ("downsample2d", "downsample3d", "upsample2d", "upsample3d")

  def __init__(self, dim: int, mode: str, out_dim: int | None = None, *, rngs, config):
    if mode not in self.MODES:
      raise AutoencoderError(f"Resample mode {mode!r} is not one of {self.MODES}")
    self.mode = mode
    kw = dict(rngs=rngs, config=config)
    if mode.startswith("up"):
      self.resample = Conv(dim, out_dim or dim // 2, (3, 3), **kw)
      self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), **kw) if mode == "upsample3d" else None
    else:
      self.resample = Conv(dim, dim, (3, 3), stride=(2, 2), padding=((0, 1), (0, 1)), **kw)
      self.time_conv = Conv(dim, dim, (3, 1, 1), stride=(2, 1, 1), **kw) if mode == "downsample3d" else None

  def __call__(self, x: jax.Array, stream: _Stream) -> jax.Array:
    if self.mode == "upsample3d":
      x = self._time_up(x, stream)
    b, t, h, w, c = x.shape
    y = x.reshape(b * t, h, w, c)
    if self.mode.startswith("up"):
      y = jnp.repeat(jnp.repeat(y, 2, axis=1), 2, axis=2)  # nearest-exact, scale 2
    y = self.resample(y)
    y = y.reshape(b, t, *y.shape[1:])
    if self.mode == "downsample3d":
      y = self._time_down(y, stream)
    return y

  def _time_down(self, x: jax.Array, stream: _Stream) -> jax.Array:
    old = stream.take()
    stream.put(x[:, -1:])
    if old is None:  # first chunk: frame 0 passes, the rest (if any) is convolved from frame 0 on
      if x.shape[1] == 1:
        return x
      return jnp.concatenate([x[:, :1], self.time_conv(x)], axis=1)
    return self.time_conv(jnp.concatenate([old, x], axis=1))

  def _time_up(self, x: jax.Array, stream: _Stream) -> jax.Array:
    head = None
    if stream.first:  # frame 0 skips the time conv; its zero cache starts with the next frame
      head, x = x[:, :1], x[:, 1:]
      if x.shape[1] == 0:
        stream.put(jnp.zeros((head.shape[0], 2, *head.shape[2:]), self.time_conv.dtype))
        return head
    y = self.time_conv(x, stream)  # [B, T, H, W, 2C]: the channel halves are the two output frames
    b, t, h, w, c2 = y.shape
    y = jnp.moveaxis(y.reshape(b, t, h, w, 2, c2 // 2), 4, 2).reshape(b, 2 * t, h, w, c2 // 2)
    return y if head is None else jnp.concatenate([head.astype(y.dtype), y], axis=1)


class MidBlock(nnx.Module):
  """ResidualBlock, AttentionBlock, ResidualBlock at constant width."""

  def __init__(self, dim: int, *, rngs, config):
    self.resnets = nnx.List([ResidualBlock(dim, dim, rngs=rngs, config=config) for _ in range(2)])
    self.attentions = nnx.List([AttentionBlock(dim, rngs=rngs, config=config)])

  def __call__(self, x: jax.Array, stream: _Stream) -> jax.Array:
    x = self.resnets[0](x, stream)
    x = self.attentions[0](x)
    return self.resnets[1](x, stream)


class Encoder(nnx.Module):
  """`[B, T, H, W, 3]` chunk -> `[B, t, H / sf, W / sf, 2 z_dim]` (before `quant_conv`)."""

  def __init__(self, c: WanVAEConfig, *, rngs):
    kw = dict(rngs=rngs, config=c)
    dims = [c.base_dim * m for m in (1, *c.dim_mult)]
    self.conv_in = CausalConv3d(c.in_channels, dims[0], names=("vae_io", "vae_out"), **kw)
    blocks, scale = [], 1.0
    for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
      for _ in range(c.num_res_blocks):
        blocks.append(ResidualBlock(c_in, c_out, **kw))
        if scale in c.attn_scales:
          blocks.append(AttentionBlock(c_out, **kw))
        c_in = c_out
      if i != len(c.dim_mult) - 1:
        blocks.append(Resample(c_out, "downsample3d" if c.temporal_downsample[i] else "downsample2d", **kw))
        scale /= 2.0
    self.down_blocks = nnx.List(blocks)
    self.mid_block = MidBlock(dims[-1], **kw)
    self.norm_out = RMSNorm(dims[-1], **kw)
    self.conv_out = CausalConv3d(dims[-1], 2 * c.z_dim, names=("vae_in", "vae_io"), **kw)

  def __call__(self, x: jax.Array, stream: _Stream) -> jax.Array:
    x = self.conv_in(x, stream)
    for block in self.down_blocks:
      x = block(x, stream)
    x = self.mid_block(x, stream)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), stream)


class UpBlock(nnx.Module):
  """(num_res_blocks + 1) residual blocks, then an optional `Resample` upsampler."""

  def __init__(self, c_in: int, c_out: int, num_res_blocks: int, mode: str | None, *, rngs, config):
    self.resnets = nnx.List([ResidualBlock(c_in if i == 0 else c_out, c_out, rngs=rngs, config=config)
                             for i in range(num_res_blocks + 1)])
    self.upsampler = Resample(c_out, mode, rngs=rngs, config=config) if mode else None

  def __call__(self, x: jax.Array, stream: _Stream) -> jax.Array:
    for block in self.resnets:
      x = block(x, stream)
    return x if self.upsampler is None else self.upsampler(x, stream)


class Decoder(nnx.Module):
  """`[B, t, h, w, z_dim]` chunk (after `post_quant_conv`) -> `[B, T, h * sf, w * sf, 3]` (unclamped)."""

  def __init__(self, c: WanVAEConfig, *, rngs):
    kw = dict(rngs=rngs, config=c)
    base = c.decoder_base_dim or c.base_dim
    dims = [base * m for m in (c.dim_mult[-1], *c.dim_mult[::-1])]
    temporal_up = tuple(c.temporal_downsample[::-1])
    self.conv_in = CausalConv3d(c.z_dim, dims[0], names=("vae_io", "vae_out"), **kw)
    self.mid_block = MidBlock(dims[0], **kw)
    blocks = []
    for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
      c_in = c_in // 2 if i > 0 else c_in  # the previous upsampler halved the channels
      mode = None if i == len(c.dim_mult) - 1 else ("upsample3d" if temporal_up[i] else "upsample2d")
      blocks.append(UpBlock(c_in, c_out, c.num_res_blocks, mode, **kw))
    self.up_blocks = nnx.List(blocks)
    self.norm_out = RMSNorm(dims[-1], **kw)
    self.conv_out = CausalConv3d(dims[-1], c.out_channels, names=("vae_in", "vae_io"), **kw)

  def __call__(self, x: jax.Array, stream: _Stream) -> jax.Array:
    x = self.conv_in(x, stream)
    x = self.mid_block(x, stream)
    for block in self.up_blocks:
      x = block(x, stream)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), stream)


@dataclasses.dataclass(frozen=True)
class _TilePlan:
  """Equal tiles over the latent grid: start rows / columns and the tile size, in latent cells."""

  rows: tuple[int, ...]
  cols: tuple[int, ...]
  size: tuple[int, int]


def _axis_starts(length: int, size: int, overlap: int) -> tuple[int, ...]:
  """Starts of the fewest `size` tiles covering `length` with overlaps >= `overlap`, spread evenly (so every overlap
  is about the same)."""
  if size >= length:
    return (0,)
  n = 1 + math.ceil((length - size) / (size - overlap))
  return tuple(round(k * (length - size) / (n - 1)) for k in range(n))


def _axis_weights(starts: Sequence[int], size: int, scale: int) -> np.ndarray:
  """`[n_tiles, size * scale]` linear-ramp blend weights along one axis, normalised to sum to one at every position."""
  n, s = len(starts), size * scale
  p = np.arange(s, dtype=np.float64)
  raw = np.ones((n, s))
  for k, start in enumerate(starts):
    if k > 0:
      m = (starts[k - 1] + size - start) * scale  # overlap with the previous tile
      raw[k] = np.minimum(raw[k], (p + 1) / (m + 1))
    if k < n - 1:
      m = (start + size - starts[k + 1]) * scale  # overlap with the next tile
      raw[k] = np.minimum(raw[k], (s - p) / (m + 1))
  total = np.zeros((starts[-1] + size) * scale)
  for k, start in enumerate(starts):
    total[start * scale:start * scale + s] += raw[k]
  return np.stack([raw[k] / total[start * scale:start * scale + s] for k, start in enumerate(starts)])


def _tile_plan(h: int, w: int, tile, overlap, sf: int) -> _TilePlan | None:
  """The tiles of an `h x w` latent grid for `tile=(th, tw)` pixels with `overlap` pixels (None: no tiling).

  Raises:
    AutoencoderError: tile or overlap sizes that are not positive multiples of `sf`, or an overlap >= the tile.
  """
  if tile is None:
    return None
  pair = lambda v: (v, v) if isinstance(v, (int, np.integer)) else tuple(v) if isinstance(v, (tuple, list)) else v
  tile = pair(tile)
  overlap = tuple((t // 4) // sf * sf for t in tile) if overlap is None and isinstance(tile, tuple) else pair(overlap)
  if not all(isinstance(v, tuple) and len(v) == 2 and all(isinstance(i, (int, np.integer)) for i in v)
             for v in (tile, overlap)):
    raise AutoencoderError(f"tile {tile!r} / tile_overlap {overlap!r}: expected ints or (height, width) int pairs in "
                           "pixels")
  for t, o in zip(tile, overlap):
    if t < sf or t % sf or o < 0 or o % sf or o >= t:
      raise AutoencoderError(f"tile {tile} with tile_overlap {overlap} px: sizes must be multiples of the spatial "
                             f"factor {sf}, tile >= {sf} and 0 <= overlap < tile")
  (th, tw), (oh, ow) = (min(tile[0] // sf, h), min(tile[1] // sf, w)), (overlap[0] // sf, overlap[1] // sf)
  return _TilePlan(_axis_starts(h, th, oh), _axis_starts(w, tw, ow), (th, tw))


def _tiled(fn, x: jax.Array, plan: _TilePlan, in_scale: int, out_scale: int) -> jax.Array:
  """`fn` applied to every tile of `x [B, T, H, W, C]` (positions scaled by `in_scale` from latent cells), the
  `[B, T', th * out_scale, tw * out_scale, C']` results blended into one `[B, T', H', W', C']` array."""
  (th, tw), b, t, c = plan.size, x.shape[0], x.shape[1], x.shape[-1]
  starts = [(r, q) for r in plan.rows for q in plan.cols]

  def one(start):
    size = (b, t, th * in_scale, tw * in_scale, c)
    return fn(jax.lax.dynamic_slice(x, (0, 0, start[0] * in_scale, start[1] * in_scale, 0), size))

  tiles = jax.lax.map(one, jnp.asarray(starts, jnp.int32))  # [n_tiles, B, T', th', tw', C']
  w_rows = _axis_weights(plan.rows, th, out_scale)
  w_cols = _axis_weights(plan.cols, tw, out_scale)
  height, width = (plan.rows[-1] + th) * out_scale, (plan.cols[-1] + tw) * out_scale
  out = jnp.zeros((*tiles.shape[1:3], height, width, tiles.shape[-1]), tiles.dtype)
  for k, (r, q) in enumerate(starts):
    weight = np.outer(w_rows[plan.rows.index(r)], w_cols[plan.cols.index(q)]).astype(np.float32)
    r0, q0 = r * out_scale, q * out_scale
    out = out.at[:, :, r0:r0 + th * out_scale, q0:q0 + tw * out_scale].add(tiles[k] * weight[..., None])
  return out


def _constrain(x: jax.Array, rules: sharding.Rules) -> jax.Array:
  """Shards a `[B, T, H, W, C]` activation by `rules.activations` under an active mesh (no-op without one); a
  dimension that does not divide its mesh axes stays replicated."""
  mesh = sharding.current_mesh()
  if mesh is None:
    return x
  axes = dict(mesh.shape)
  spec = sharding.logical_to_spec(_ACT, rules.activations, axes)
  fitted = []
  for size, entry in zip(x.shape, spec):
    names = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
    fitted.append(entry if names and size % math.prod(axes[a] for a in names) == 0 else None)
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(*fitted))


class WanVAE(nnx.Module, AutoencoderShapes):
  """The WAN 2.1 causal video VAE (module docstring): a camjax `Autoencoder` with learned weights.

  Attributes:
    config: the `WanVAEConfig`.
    rules: the logical-axis rule tables of its parameters and activations (`VAE_RULES`).
    temporal_factor: video frames per latent frame after the first (4).
    spatial_factor: pixels per latent cell along height and width (8).
    latent_channels: `z_dim` (16).
  """

  def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs, rules: sharding.Rules = VAE_RULES):
    self.config = config.validate()
    self.rules = rules
    c = self.config
    with nnx.use_eager_sharding(False):  # logical names are resolved by camjax.sharding, not at creation
      kw = dict(rngs=rngs, config=c)
      self.encoder = Encoder(c, rngs=rngs)
      self.quant_conv = CausalConv3d(2 * c.z_dim, 2 * c.z_dim, 1, names=("vae_io", "vae_io"), **kw)
      self.post_quant_conv = CausalConv3d(c.z_dim, c.z_dim, 1, names=("vae_io", "vae_io"), **kw)
      self.decoder = Decoder(c, rngs=rngs)

  @property
  def temporal_factor(self) -> int:
    return self.config.temporal_factor

  @property
  def spatial_factor(self) -> int:
    return self.config.spatial_factor

  @property
  def latent_channels(self) -> int:
    return self.config.z_dim

  @property
  def can_decode(self) -> bool:
    return True

  @classmethod
  def create(cls, config: WanVAEConfig, *, seed: int = 0, mesh=None, rules: sharding.Rules | None = None) -> WanVAE:
    """A randomly initialised VAE: kernels `N(0, 1 / fan_in)`, biases 0, RMSNorm gains 1 (the modules' initialisers'
    distributions), drawn on the host by `np.random.default_rng(seed)`: XLA:CPU takes about a minute to compile the
    ~90 threefry initialisers of even a tiny VAE. With a mesh, the parameters are placed by `rules` (`VAE_RULES`)."""
    rules = rules or VAE_RULES
    graphdef, abstract = sharding.abstract_module(lambda: cls(config, rngs=nnx.Rngs(0), rules=rules))
    rng = np.random.default_rng(seed)
    flat = list(nnx.to_flat_state(abstract))
    state = nnx.from_flat_state([(p, var.replace(jnp.asarray(_random_value(rng, p[-1], var.shape), var.dtype)))
                                 for p, var in flat])
    if mesh is not None:
      state = sharding.shard_params(state, mesh, rules)
    return nnx.merge(graphdef, state)

  @classmethod
  def from_diffusers(cls, path: str | os.PathLike, *, mesh=None, rules: sharding.Rules | None = None,
                     **overrides) -> WanVAE:
    """Load a diffusers `AutoencoderKLWan` folder (`save_pretrained` output).

    Args:
      path: folder with `config.json` and `diffusion_pytorch_model.safetensors`, or shards listed in
        `diffusion_pytorch_model.safetensors.index.json` (any other lone `*.safetensors` files are read too).
      mesh: optional mesh: the parameters are placed by `rules` (the whole VAE, ~127M parameters for WAN 2.1, is read
        on the host first).
      rules: the rule tables (default `VAE_RULES`).
      **overrides: `WanVAEConfig` fields to change, e.g. `dtype="bfloat16"`, `precision="highest"`.

    Returns:
      The VAE with every parameter loaded (cast to `param_dtype`).

    Raises:
      VAEWeightsError: the folder is absent, has no (or an unreadable) config.json, the config is not an
        `AutoencoderKLWan` (WAN 2.1) one, there are no weights, or tensors are missing / unexpected / of the wrong
        shape (all listed).
    """
    path = os.fspath(path)
    cfg = _read_config(path)
    try:
      config = WanVAEConfig.from_diffusers_config(cfg, **overrides)
    except VAEWeightsError as e:
      raise VAEWeightsError(f"{os.path.join(path, 'config.json')}: {e}") from None
    rules = rules or VAE_RULES
    graphdef, abstract = sharding.abstract_module(lambda: cls(config, rngs=nnx.Rngs(0), rules=rules))
    flat = list(nnx.to_flat_state(abstract))
    values = _checkpoint_values(_SafetensorsFolder(path), flat, path)
    state = nnx.from_flat_state([(p, var.replace(values[p])) for p, var in flat])
    if mesh is not None:
      state = sharding.shard_params(state, mesh, rules)
    return nnx.merge(graphdef, state)

  def encode(self, video, *, tile=None, tile_overlap=None, chunked: bool = True) -> jax.Array:
    """Normalised latents of a video (deterministic: the posterior mean).

    Args:
      video: `[B, T, H, W, 3]` floating video in `[-1, 1]`; `T = 1 + 4k`, `H`, `W` multiples of 8.
      tile: optional `(th, tw)` (or one int) tile size in pixels, multiples of 8, for spatial tiling.
      tile_overlap: overlap of neighbouring tiles in pixels (multiple of 8; default a quarter of the tile, rounded
        down to a multiple of 8).
      chunked: True (default): the first frame, then 4 frames at a time with the causal cache (WAN's way, least
        memory). False: the whole clip in one pass (the same result; more memory).

    Returns:
      `[B, 1 + (T - 1) // 4, H / 8, W / 8, z_dim]` float32 latents `(mu - latents_mean) / latents_std`.

    Raises:
      AutoencoderError: a shape or dtype that breaks the causal contract, or an invalid tile.
    """
    video = jnp.asarray(video)
    _, h, w, _ = self.check_video(video, self.config.in_channels)
    plan = _tile_plan(h, w, tile, tile_overlap, self.spatial_factor)
    graphdef, state = nnx.split(self)
    return _encode(graphdef, state, video, plan, chunked)

  def decode(self, latents, *, tile=None, tile_overlap=None, chunked: bool = True) -> jax.Array:
    """Video of normalised latents.

    Args:
      latents: `[B, t, h, w, z_dim]` normalised latents (as `encode` returns them).
      tile: optional `(th, tw)` (or one int) output tile size in pixels, multiples of 8, for spatial tiling.
      tile_overlap: overlap of neighbouring tiles in pixels (multiple of 8; default a quarter of the tile).
      chunked: True (default): one latent frame at a time with the causal cache; False: the whole clip at once.

    Returns:
      `[B, 1 + 4 (t - 1), 8 h, 8 w, 3]` float32 video clamped to `[-1, 1]`.

    Raises:
      AutoencoderError: wrong rank or channel count, or an invalid tile.
    """
    latents = jnp.asarray(latents)
    self.check_latents(latents)
    plan = _tile_plan(latents.shape[2], latents.shape[3], tile, tile_overlap, self.spatial_factor)
    graphdef, state = nnx.split(self)
    return _decode(graphdef, state, latents, plan, chunked)

  # -- the computation (traced inside `_encode` / `_decode`) --------------------------------------------------------

  def _stats(self) -> tuple[jax.Array, jax.Array]:
    return (jnp.asarray(self.config.latents_mean, jnp.float32), jnp.asarray(self.config.latents_std, jnp.float32))

  def _chunks(self, module, x: jax.Array, first: int, size: int, chunked: bool) -> jax.Array:
    """`module` over the time axis of `x [B, T, ...]`: frames `[:first]`, then `scan` over chunks of `size` frames
    carrying the causal cache (`chunked=False`: all frames in one call)."""
    if not chunked:
      return module(_constrain(x, self.rules), _Stream(None))
    stream = _Stream(None)
    out = _constrain(module(_constrain(x[:, :first], self.rules), stream), self.rules)
    n = (x.shape[1] - first) // size
    if n == 0:
      return out
    rest = jnp.moveaxis(x[:, first:].reshape(x.shape[0], n, size, *x.shape[2:]), 1, 0)

    def body(cache, chunk):
      s = _Stream(cache)
      y = _constrain(module(_constrain(chunk, self.rules), s), self.rules)
      return s.new, y

    _, ys = jax.lax.scan(body, stream.new, rest)  # [n, B, t_chunk, ...]
    ys = jnp.moveaxis(ys, 0, 1)
    return jnp.concatenate([out, ys.reshape(ys.shape[0], -1, *ys.shape[3:]).astype(out.dtype)], axis=1)

  def _encode_mean(self, video: jax.Array, chunked: bool) -> jax.Array:
    """`[B, T, H, W, 3]` -> posterior mean `[B, t, h, w, z_dim]` (float32, unnormalised)."""
    x = video.astype(_DTYPES[self.config.dtype])
    moments = self._chunks(self.encoder, x, 1, self.temporal_factor, chunked)
    moments = self.quant_conv(moments)
    return moments[..., :self.config.z_dim].astype(jnp.float32)

  def _decode_frames(self, z: jax.Array, chunked: bool) -> jax.Array:
    """Unnormalised `[B, t, h, w, z_dim]` -> `[B, T, H, W, 3]` float32 (unclamped)."""
    x = self.post_quant_conv(z.astype(_DTYPES[self.config.dtype]))
    return self._chunks(self.decoder, x, 1, 1, chunked).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("graphdef", "plan", "chunked"))
def _encode(graphdef, state, video, plan: _TilePlan | None, chunked: bool):
  vae = nnx.merge(graphdef, state)
  run = lambda v: vae._encode_mean(v, chunked)  # pylint: disable=protected-access
  mu = run(video) if plan is None else _tiled(run, video, plan, vae.spatial_factor, 1)
  mean, std = vae._stats()  # pylint: disable=protected-access
  return (mu - mean) / std


@functools.partial(jax.jit, static_argnames=("graphdef", "plan", "chunked"))
def _decode(graphdef, state, latents, plan: _TilePlan | None, chunked: bool):
  vae = nnx.merge(graphdef, state)
  mean, std = vae._stats()  # pylint: disable=protected-access
  z = latents.astype(jnp.float32) * std + mean
  run = lambda v: vae._decode_frames(v, chunked)  # pylint: disable=protected-access
  video = run(z) if plan is None else _tiled(run, z, plan, 1, vae.spatial_factor)
  return jnp.clip(video, -1.0, 1.0)


# -- diffusers weights ------------------------------------------------------------------------------------------------

_SEGMENTS = {"kernel": "weight", "upsampler": "upsamplers.0", "resample": "resample.1"}


def _diffusers_key(path) -> str:
  """A camjax state path -> its diffusers state-dict key (e.g. `decoder.up_blocks.0.upsampler.resample.kernel` ->
  `decoder.up_blocks.0.upsamplers.0.resample.1.weight`)."""
  return ".".join(_SEGMENTS.get(str(p), str(p)) for p in path)


def _to_camjax(value: np.ndarray, leaf: str) -> np.ndarray:
  """A torch tensor in camjax layout: conv `[out, in, *taps] -> [*taps, in, out]`, gains `[C, 1, ...] -> [C]`."""
  if leaf == "kernel" and value.ndim >= 3:
    return np.transpose(value, (*range(2, value.ndim), 1, 0))
  if leaf == "gamma":
    return value.reshape(-1)
  return value


def _random_value(rng: np.random.Generator, leaf: str, shape) -> np.ndarray:
  """A host-side random parameter: kernel `N(0, 1 / fan_in)`, gamma 1, bias 0."""
  if leaf == "kernel":
    return rng.standard_normal(shape, np.float32) / np.sqrt(math.prod(shape[:-1]))
  return np.ones(shape, np.float32) if leaf == "gamma" else np.zeros(shape, np.float32)


def _read_config(path: str) -> dict:
  """The parsed `config.json` of a diffusers folder.

  Raises:
    VAEWeightsError: no such folder, no config.json, or JSON that cannot be read.
  """
  if not os.path.isdir(path):
    raise VAEWeightsError(f"{path}: no such folder (expected a diffusers AutoencoderKLWan folder with config.json "
                          "and diffusion_pytorch_model.safetensors)")
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise VAEWeightsError(f"{path}: no config.json (expected a diffusers AutoencoderKLWan save_pretrained folder)")
  try:
    with open(cfg_path) as f:
      cfg = json.load(f)
  except (OSError, ValueError) as e:
    raise VAEWeightsError(f"{cfg_path}: cannot read the config ({e})") from None
  if not isinstance(cfg, dict) or cfg.get("_class_name") != "AutoencoderKLWan":
    name = cfg.get("_class_name") if isinstance(cfg, dict) else None
    raise VAEWeightsError(f"{cfg_path} describes {name!r}, not an 'AutoencoderKLWan' (the WAN 2.1 VAE)")
  return cfg


def _checkpoint_values(tensors: _SafetensorsFolder, flat, path: str) -> dict:
  """`{state path: array}` for every parameter of the abstract state `flat`, from the checkpoint (camjax layout,
  `param_dtype`).

  Raises:
    VAEWeightsError: missing or unexpected tensors and shapes that do not fit (all listed in one message).
  """
  values, problems, used = {}, [], set()
  for p, var in flat:
    key = _diffusers_key(p)
    if key not in tensors.files:
      problems.append(f"missing {key}")
      continue
    used.add(key)
    value = _to_camjax(tensors.read(key), p[-1])
    if value.shape != tuple(var.shape):
      problems.append(f"{key}: checkpoint shape {tensors.shape(key)} does not fit {'.'.join(map(str, p))} "
                      f"{tuple(var.shape)}")
      continue
    values[p] = jnp.asarray(value, var.dtype)
  unexpected = sorted(set(tensors.files) - used)
  if unexpected:
    more = f" (+{len(unexpected) - 5})" if len(unexpected) > 5 else ""
    problems.append(f"unexpected tensors {unexpected[:5]}{more}")
  if problems:
    more = " ..." if len(problems) > 12 else ""
    raise VAEWeightsError(f"{path}: the weights do not match the AutoencoderKLWan config ({len(problems)} problems): "
                          + "; ".join(problems[:12]) + more)
  return values


class _SafetensorsFolder:
  """The tensors of a diffusers folder: `files` maps each tensor name to its safetensors file; `read` loads one with
  safetensors' NumPy loader (bfloat16 tensors, which NumPy lacks, through its Flax loader)."""

  def __init__(self, folder: str):
    index = os.path.join(folder, WEIGHTS_INDEX)
    if os.path.isfile(index):
      try:
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
      except (OSError, ValueError, KeyError) as e:
        raise VAEWeightsError(f"{index}: cannot read the weight_map ({e!r})") from None
      missing = sorted({v for v in weight_map.values() if not os.path.isfile(os.path.join(folder, v))})
      if missing:
        raise VAEWeightsError(f"{index} lists shards that are not in the folder: {missing}")
      self.files = {k: os.path.join(folder, v) for k, v in weight_map.items()}
    else:
      paths = sorted(os.path.join(folder, p) for p in os.listdir(folder) if p.endswith(".safetensors"))
      if not paths:
        raise VAEWeightsError(f"{folder}: no weights (expected diffusion_pytorch_model.safetensors or {WEIGHTS_INDEX})")
      self.files = {}
      for p in paths:
        for k in self._keys(p):
          if k in self.files:
            raise VAEWeightsError(f"{folder}: tensor {k} is in both {self.files[k]} and {p}")
          self.files[k] = p

  @staticmethod
  def _keys(path: str) -> list[str]:
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    try:
      with safe_open(path, framework="numpy") as f:
        return list(f.keys())
    except Exception as e:  # safetensors raises its own SafetensorError / OSError types
      raise VAEWeightsError(f"{path}: cannot read safetensors file ({e})") from None

  def shape(self, key: str) -> tuple[int, ...]:
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    with safe_open(self.files[key], framework="numpy") as f:
      return tuple(f.get_slice(key).get_shape())

  def read(self, key: str) -> np.ndarray:
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    path = self.files[key]
    try:
      with safe_open(path, framework="numpy") as f:
        if f.get_slice(key).get_dtype() != "BF16":
          return f.get_tensor(key)
      with safe_open(path, framework="flax") as f:
        return np.asarray(f.get_tensor(key))
    except Exception as e:  # safetensors raises its own SafetensorError / OSError types
      raise VAEWeightsError(f"{path}: cannot read tensor {key} ({e})") from None
