"""The WAN 2.1 video diffusion transformer in Flax NNX, with the CameraCtrl II camera patchify and a condition mask.

Architecture (WAN 2.1; diffusers `WanTransformer3DModel`, REFERENCE.md section 8), channels-last throughout:

  latents [B, T, H, W, C] (+ condition-mask channel)  --3D patchify (1, 2, 2)-->  tokens [B, N, D]
  (+ CameraCtrl II camera tokens: the Plücker map patchified the same way, bias-free and zero-initialised, added
   before block 0; an all-zero map, the null camera, adds exactly nothing)
  timesteps [B] (0..1000) --sinusoid (cos first)--> time MLP --> temb [B, D] --SiLU, Linear--> 6-way modulation
  text [B, L, text_dim] --Linear, GELU-tanh, Linear--> context [B, L, D]
  blocks x num_layers:
    x += gate_msa * SelfAttn(LN(x) * (1 + scale_msa) + shift_msa)    (q/k RMSNorm across heads, 3D RoPE)
    x += CrossAttn(LN_affine(x), context)
    x += c_gate * FFN_gelu_tanh(LN(x) * (1 + c_scale) + c_shift)
  out = Linear(LN(x) * (1 + scale) + shift)  --unpatchify--> [B, T, H, W, C]

Blocks are stacked along a leading `layers` axis and run with `jax.lax.scan` (or a Python loop) under a configurable
`jax.checkpoint` policy. Rotary tables, the time embedder, the modulation tables and the norms stay in float32, as in
WAN; the rest computes in `config.dtype`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax import sharding
from camjax.models.layers import (Dense, LayerNorm, ModelError, PatchEmbed, RMSNorm, attention, gelu_tanh, layer_norm,
                                  param, unpatchify)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

REMAT_POLICIES = {
    "none": None,  # no rematerialisation
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
}


@dataclasses.dataclass(frozen=True)
class WanConfig:
  """Size and options of a WAN 2.1 DiT.

  The first block of fields mirrors diffusers' `WanTransformer3DModel` config (`from_diffusers_config`); the rest are
  camjax options. `in_channels` counts latent channels only; `cond_mask=True` adds one mask channel to the patch
  embedding input (zero-initialised when importing WAN weights so the pretrained model is unchanged).
  """

  patch_size: tuple[int, int, int] = (1, 2, 2)
  num_heads: int = 2
  head_dim: int = 32
  in_channels: int = 16
  out_channels: int = 16
  text_dim: int = 64
  freq_dim: int = 256
  ffn_dim: int = 256
  num_layers: int = 2
  cross_attn_norm: bool = True
  eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_max_seq_len: int = 1024
  # camjax options
  camera: bool = True  # CameraCtrl II camera patchify
  cond_mask: bool = False  # condition-mask channel concatenated to the latents
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat: str = "none"  # key of REMAT_POLICIES
  attention: str = "xla"  # "xla" | "cudnn"

  @property
  def dim(self) -> int:
    return self.num_heads * self.head_dim

  @property
  def patch_volume(self) -> int:
    return math.prod(self.patch_size)

  def replace(self, **kw) -> WanConfig:
    return dataclasses.replace(self, **kw)

  def validate(self) -> WanConfig:
    if self.head_dim % 2 or self.head_dim < 6:
      raise ModelError(f"head_dim {self.head_dim} must be even and >= 6 (3D RoPE splits it over t, h, w)")
    if self.remat not in REMAT_POLICIES:
      raise ModelError(f"remat {self.remat!r} not in {sorted(REMAT_POLICIES)}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ModelError(f"{name} {getattr(self, name)!r} not in {sorted(_DTYPES)}")
    if len(self.patch_size) != 3:
      raise ModelError(f"patch_size {self.patch_size} must be (pt, ph, pw)")
    return self

  @classmethod
  def from_diffusers_config(cls, cfg: dict[str, Any], **overrides) -> WanConfig:
    """From a diffusers `config.json` of `WanTransformer3DModel` (T2V; I2V image conditioning is refused)."""
    if cfg.get("image_dim") or cfg.get("added_kv_proj_dim"):
      raise ModelError("WAN I2V checkpoints (image_dim / added_kv_proj_dim) are not supported yet; use a T2V model")
    if cfg.get("qk_norm", "rms_norm_across_heads") not in ("rms_norm_across_heads", True):
      raise ModelError(f"qk_norm {cfg.get('qk_norm')!r} is not supported (WAN 2.1 uses rms_norm_across_heads)")
    kw = dict(
        patch_size=tuple(cfg.get("patch_size", (1, 2, 2))),
        num_heads=int(cfg.get("num_attention_heads", 40)),
        head_dim=int(cfg.get("attention_head_dim", 128)),
        in_channels=int(cfg.get("in_channels", 16)),
        out_channels=int(cfg.get("out_channels") or cfg.get("in_channels", 16)),
        text_dim=int(cfg.get("text_dim", 4096)),
        freq_dim=int(cfg.get("freq_dim", 256)),
        ffn_dim=int(cfg.get("ffn_dim", 13824)),
        num_layers=int(cfg.get("num_layers", 40)),
        cross_attn_norm=bool(cfg.get("cross_attn_norm", True)),
        eps=float(cfg.get("eps", 1e-6)),
        rope_max_seq_len=int(cfg.get("rope_max_seq_len", 1024)),
    )
    kw.update(overrides)
    return cls(**kw).validate()

  def to_diffusers_config(self) -> dict[str, Any]:
    return dict(
        _class_name="WanTransformer3DModel", patch_size=list(self.patch_size), num_attention_heads=self.num_heads,
        attention_head_dim=self.head_dim, in_channels=self.in_channels, out_channels=self.out_channels,
        text_dim=self.text_dim, freq_dim=self.freq_dim, ffn_dim=self.ffn_dim, num_layers=self.num_layers,
        cross_attn_norm=self.cross_attn_norm, qk_norm="rms_norm_across_heads", eps=self.eps, image_dim=None,
        added_kv_proj_dim=None, rope_max_seq_len=self.rope_max_seq_len)


PRESETS = {
    # CPU toy: 2 layers, width 64.
    "toy": WanConfig(num_heads=2, head_dim=32, ffn_dim=256, num_layers=2, text_dim=64),
    # WAN 2.1 T2V 1.3B and 14B (diffusers configs of Wan-AI/Wan2.1-T2V-1.3B-Diffusers / -14B-Diffusers).
    "wan1_3b": WanConfig(num_heads=12, head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096, freq_dim=256,
                         dtype="bfloat16", remat="dots"),
    "wan14b": WanConfig(num_heads=40, head_dim=128, ffn_dim=13824, num_layers=40, text_dim=4096, freq_dim=256,
                        dtype="bfloat16", remat="full"),
}


def preset(name: str, **overrides) -> WanConfig:
  """A named size (`toy`, `wan1_3b`, `wan14b`) with field overrides."""
  if name not in PRESETS:
    raise ModelError(f"unknown WAN preset {name!r}; choose from {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides).validate()


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------------------------


def timestep_embedding(timesteps: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal timestep features, cos first (diffusers `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)`).

  Args:
    timesteps: `[B]` on WAN's 0..1000 scale (float).
    dim: feature count (even).

  Returns:
    `[B, dim]` float32: `[cos(t w_k), sin(t w_k)]`, `w_k = max_period^(-k / (dim / 2))`.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
  """Per-axis rotary widths (t, h, w) of WAN's 3D RoPE: `h = w = 2 (d // 6)`, `t = d - h - w`."""
  h = w = 2 * (head_dim // 6)
  return head_dim - h - w, h, w


def rope_angles(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0,
                offset: tuple[int, int, int] = (0, 0, 0)) -> jax.Array:
  """Rotation angles of WAN's 3D RoPE for a token grid.

  Each axis (frame, row, column) gets its own 1D RoPE of width `rope_axis_dims(head_dim)`; channel pair `k` of an axis of
  width `d` rotates by `pos * theta^(-2k / d)`. Positions start at `offset` (used to continue a scene clip by clip).

  Returns:
    `[t * h * w, head_dim // 2]` float32 angles (radians), tokens in (t, h, w) raster order.
  """
  angles = []
  for axis, (n, d) in enumerate(zip(grid, rope_axis_dims(head_dim))):
    inv = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32)[: d // 2] / d)
    pos = jnp.arange(n, dtype=jnp.float32) + offset[axis]
    a = pos[:, None] * inv[None]
    shape = [1, 1, 1, d // 2]
    shape[axis] = n
    angles.append(jnp.broadcast_to(a.reshape(shape), (*grid, d // 2)))
  return jnp.concatenate(angles, axis=-1).reshape(-1, head_dim // 2)


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
  """Rotate interleaved channel pairs `(2k, 2k + 1)` of `x [B, N, heads, head_dim]` by `angles [N, head_dim / 2]`."""
  x32 = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
  cos = jnp.cos(angles)[None, :, None, :]
  sin = jnp.sin(angles)[None, :, None, :]
  x1, x2 = x32[..., 0], x32[..., 1]
  out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)


class TimeEmbedding(nnx.Module):
  """diffusers `TimestepEmbedding`: Linear(freq_dim, D) -> SiLU -> Linear(D, D), kept in float32."""

  def __init__(self, freq_dim: int, dim: int, *, rngs, param_dtype):
    init = nnx.initializers.normal(0.02)
    self.linear_1 = Dense(freq_dim, dim, ("freq", "embed"), rngs=rngs, param_dtype=param_dtype, kernel_init=init)
    self.linear_2 = Dense(dim, dim, (None, "embed"), rngs=rngs, param_dtype=param_dtype, kernel_init=init)

  def __call__(self, x):
    return self.linear_2(jax.nn.silu(self.linear_1(x)))


class TextProjection(nnx.Module):
  """diffusers `PixArtAlphaTextProjection` with GELU-tanh: Linear(text_dim, D) -> GELU -> Linear(D, D)."""

  def __init__(self, text_dim: int, dim: int, *, rngs, dtype, param_dtype):
    init = nnx.initializers.normal(0.02)
    self.linear_1 = Dense(text_dim, dim, ("text_embed", "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                          kernel_init=init)
    self.linear_2 = Dense(dim, dim, (None, "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                          kernel_init=init)

  def __call__(self, x):
    return self.linear_2(gelu_tanh(self.linear_1(x)))


# ----------------------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------------------


class Attention(nnx.Module):
  """WAN attention: q/k/v projections, q/k RMSNorm across all heads, optional RoPE, output projection."""

  def __init__(self, dim: int, num_heads: int, *, eps: float, rngs, dtype, param_dtype, implementation: str,
               seq_axis: str = "act_seq"):
    self.num_heads = num_heads
    self.seq_axis = seq_axis  # logical name of the query sequence axis
    self.implementation = implementation
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.to_q = Dense(dim, dim, ("embed", "heads"), **kw)
    self.to_k = Dense(dim, dim, ("embed", "heads"), **kw)
    self.to_v = Dense(dim, dim, ("embed", "heads"), **kw)
    self.to_out = Dense(dim, dim, ("heads", "embed"), **kw)
    self.norm_q = RMSNorm(dim, ("heads",), eps=eps, param_dtype=param_dtype, rngs=rngs)
    self.norm_k = RMSNorm(dim, ("heads",), eps=eps, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x, context=None, mask=None, rope=None):
    context = x if context is None else context
    kv_seq = self.seq_axis if context is x else "act_text"
    q = self.norm_q(self.to_q(x))
    k = self.norm_k(self.to_k(context))
    v = self.to_v(context)
    heads = lambda a: a.reshape(*a.shape[:-1], self.num_heads, -1)
    q, k, v = heads(q), heads(k), heads(v)
    q = sharding.constrain(q, ("act_batch", self.seq_axis, "act_heads", "act_kv"))
    k = sharding.constrain(k, ("act_batch", kv_seq, "act_heads", "act_kv"))
    v = sharding.constrain(v, ("act_batch", kv_seq, "act_heads", "act_kv"))
    if rope is not None:
      q, k = apply_rope(q, rope), apply_rope(k, rope)
    out = attention(q, k, v, mask, self.implementation)
    return self.to_out(out.reshape(*out.shape[:2], -1))


class FeedForward(nnx.Module):
  """Linear(D, F) -> GELU-tanh -> Linear(F, D)."""

  def __init__(self, dim: int, hidden: int, *, rngs, dtype, param_dtype, seq_axis: str = "act_seq"):
    self.seq_axis = seq_axis
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.proj_in = Dense(dim, hidden, ("embed", "mlp"), **kw)
    self.proj_out = Dense(hidden, dim, ("mlp", "embed"), **kw)

  def __call__(self, x):
    h = gelu_tanh(self.proj_in(x))
    h = sharding.constrain(h, ("act_batch", self.seq_axis, "act_mlp"))
    return self.proj_out(h)


class WanBlock(nnx.Module):
  """One WAN 2.1 transformer block (self-attention, cross-attention, FFN with 6-way AdaLN modulation)."""

  def __init__(self, config: WanConfig, *, rngs: nnx.Rngs):
    c = config
    dim = c.dim
    dtype, param_dtype = _DTYPES[c.dtype], _DTYPES[c.param_dtype]
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.attn1 = Attention(dim, c.num_heads, eps=c.eps, implementation=c.attention, **kw)
    self.attn2 = Attention(dim, c.num_heads, eps=c.eps, implementation=c.attention, **kw)
    self.norm2 = LayerNorm(dim, eps=c.eps, affine=True, param_dtype=param_dtype, rngs=rngs) if c.cross_attn_norm \
        else None
    self.ffn = FeedForward(dim, c.ffn_dim, **kw)
    self.eps = c.eps
    init = lambda key, shape, dt: jax.random.normal(key, shape, dt) / dim**0.5
    self.scale_shift_table = param(rngs, init, (1, 6, dim), (None, "modulation", "embed"), param_dtype)

  def __call__(self, x, context, context_mask, modulation, rope):
    """x `[B, N, D]`; context `[B, L, D]`; modulation `[B, 6, D]` float32; rope `[N, head_dim / 2]`."""
    mod = self.scale_shift_table[...].astype(jnp.float32) + modulation
    shift, scale, gate, c_shift, c_scale, c_gate = [mod[:, i][:, None] for i in range(6)]
    ln = lambda a: layer_norm(a.astype(jnp.float32), self.eps)
    dtype = x.dtype

    h = (ln(x) * (1 + scale) + shift).astype(dtype)
    x = (x.astype(jnp.float32) + self.attn1(h, rope=rope).astype(jnp.float32) * gate).astype(dtype)
    x = sharding.constrain(x, ("act_batch", "act_seq", "act_embed"))

    h = self.norm2(x) if self.norm2 is not None else x
    x = x + self.attn2(h, context, context_mask).astype(dtype)

    h = (ln(x) * (1 + c_scale) + c_shift).astype(dtype)
    x = (x.astype(jnp.float32) + self.ffn(h).astype(jnp.float32) * c_gate).astype(dtype)
    return sharding.constrain(x, ("act_batch", "act_seq", "act_embed"))


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


class WanDiT(nnx.Module):
  """WAN 2.1 DiT with CameraCtrl II camera conditioning.

  Call: `model(latents, timesteps, text, text_mask=None, camera=None, cond_mask=None) -> [B, T, H, W, C_out]`.

  Args (of `__call__`):
    latents: `[B, T, H, W, C]` channels-last noisy latents; T, H, W divisible by the patch size.
    timesteps: `[B]` diffusion time on WAN's 0..1000 scale (flow matching: `sigma * 1000`).
    text: `[B, L, text_dim]` text embeddings (umT5 for WAN weights, the byte encoder for the CPU default).
    text_mask: optional `[B, L]` bool key mask for cross-attention (None = attend to all L, as WAN does with
      zero-padded embeddings).
    camera: optional `[B, T, H, W, 6]` Plücker map at the latent grid (one pose per latent frame). None or an
      all-zero map is the null camera (unlabeled clips, camera CFG); requires `config.camera`.
    cond_mask: optional `[B, T, H, W, 1]` (or `[B, T, H, W]`): 1 = clean condition token, 0 = generate.
      Concatenated to the latent channels when `config.cond_mask` (None = all zeros).
    rope_offset: optional (t, h, w) position offset of the first token for RoPE.

  Returns:
    The model prediction (velocity for flow matching) `[B, T, H, W, out_channels]` in the compute dtype.

  Raises:
    ModelError: shapes that do not match the config (listed in the message).
  """

  def __init__(self, config: WanConfig, *, rngs: nnx.Rngs):
    config = config.validate()
    self.config = config
    with nnx.use_eager_sharding(False):  # logical names are resolved by camjax.sharding, not at creation
      self._build(config, rngs)

  def _build(self, c: WanConfig, rngs: nnx.Rngs):
    # Local import: camjax.conditioning builds on camjax.models.layers (import cycle at module level).
    from camjax.conditioning.cameractrl2 import CameraPatchify  # pylint: disable=import-outside-toplevel

    dtype, param_dtype = _DTYPES[c.dtype], _DTYPES[c.param_dtype]
    in_ch = c.in_channels + (1 if c.cond_mask else 0)
    self.patch_embedding = PatchEmbed(in_ch, c.dim, c.patch_size, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    # CameraCtrl II camera patchify: same patch size and width as the video patchify, zero-initialised, no bias.
    self.camera_patchify = CameraPatchify(c.dim, c.patch_size, rngs=rngs, dtype=dtype,
                                          param_dtype=param_dtype) if c.camera else None
    self.time_embedder = TimeEmbedding(c.freq_dim, c.dim, rngs=rngs, param_dtype=param_dtype)
    self.time_proj = Dense(c.dim, 6 * c.dim, ("embed", "modulation"), rngs=rngs, dtype=jnp.float32,
                           param_dtype=param_dtype)
    self.text_embedder = TextProjection(c.text_dim, c.dim, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    @nnx.split_rngs(splits=c.num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs):
      return WanBlock(c, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.proj_out = Dense(c.dim, c.patch_volume * c.out_channels, ("embed", "patch"), rngs=rngs, dtype=dtype,
                          param_dtype=param_dtype, kernel_init=nnx.initializers.zeros_init())
    init = lambda key, shape, dt: jax.random.normal(key, shape, dt) / c.dim**0.5
    self.scale_shift_table = param(rngs, init, (1, 2, c.dim), (None, "modulation", "embed"), param_dtype)

  @classmethod
  def create(cls, config: WanConfig, *, seed: int = 0, mesh=None, rules=None) -> WanDiT:
    """Initialise with `nnx.Rngs(seed)`; with a mesh, parameters are created directly in their shardings."""
    return sharding.create_sharded(lambda: cls(config, rngs=nnx.Rngs(seed)), mesh, rules)

  @classmethod
  def from_diffusers(cls, path, mesh=None, rules=None, **overrides) -> WanDiT:
    """Load a diffusers `save_pretrained` folder of `WanTransformer3DModel` (see `camjax.models.weights`)."""
    from camjax.models import weights  # pylint: disable=import-outside-toplevel
    return weights.load_diffusers(path, mesh=mesh, rules=rules, **overrides)

  def _check(self, latents, timesteps, text, text_mask, camera, cond_mask):
    c = self.config
    if latents.ndim != 5 or latents.shape[-1] != c.in_channels:
      raise ModelError(f"latents must be [B, T, H, W, {c.in_channels}], got {latents.shape}")
    b, t, h, w, _ = latents.shape
    if t % c.patch_size[0] or h % c.patch_size[1] or w % c.patch_size[2]:
      raise ModelError(f"latent grid {(t, h, w)} is not divisible by the patch size {c.patch_size}")
    if timesteps.shape != (b,):
      raise ModelError(f"timesteps must be [B={b}], got {timesteps.shape}")
    if text.ndim != 3 or text.shape[0] != b or text.shape[-1] != c.text_dim:
      raise ModelError(f"text must be [B={b}, L, {c.text_dim}], got {text.shape}")
    if text_mask is not None and text_mask.shape != text.shape[:2]:
      raise ModelError(f"text_mask must be {text.shape[:2]}, got {text_mask.shape}")
    if camera is not None:
      if not c.camera:
        raise ModelError("a camera was given but the model was built with camera=False")
      if camera.shape != (b, t, h, w, 6):
        raise ModelError(f"camera must be the Plücker map at the latent grid {(b, t, h, w, 6)}, got {camera.shape}")
    if cond_mask is not None:
      if not c.cond_mask:
        raise ModelError("a cond_mask was given but the model was built with cond_mask=False")
      if cond_mask.shape not in ((b, t, h, w), (b, t, h, w, 1)):
        raise ModelError(f"cond_mask must be {(b, t, h, w, 1)}, got {cond_mask.shape}")

  def __call__(self, latents, timesteps, text, text_mask=None, camera=None, cond_mask=None, *,
               rope_offset=(0, 0, 0)):
    c = self.config
    self._check(latents, timesteps, text, text_mask, camera, cond_mask)
    dtype = _DTYPES[c.dtype]
    b, t, h, w, _ = latents.shape
    pt, ph, pw = c.patch_size
    grid = (t // pt, h // ph, w // pw)

    x = latents.astype(dtype)
    if c.cond_mask:
      mask = jnp.zeros((b, t, h, w, 1), dtype) if cond_mask is None else cond_mask.reshape(b, t, h, w, 1)
      x = jnp.concatenate([x, mask.astype(dtype)], axis=-1)
    x = self.patch_embedding(x)
    if camera is not None:
      x = x + self.camera_patchify(camera.astype(dtype))
    x = sharding.constrain(x, ("act_batch", "act_seq", "act_embed"))

    rope = rope_angles(grid, c.head_dim, c.rope_theta, rope_offset)
    temb = self.time_embedder(timestep_embedding(timesteps, c.freq_dim))  # float32 [B, D]
    modulation = self.time_proj(jax.nn.silu(temb)).reshape(b, 6, c.dim)
    context = self.text_embedder(text.astype(dtype))
    context = sharding.constrain(context, ("act_batch", "act_text", "act_embed"))

    x = self._run_blocks(x, context, text_mask, modulation, rope)

    mod = self.scale_shift_table[...].astype(jnp.float32) + temb[:, None]  # [B, 2, D]
    shift, scale = mod[:, 0:1], mod[:, 1:2]
    x = (layer_norm(x.astype(jnp.float32), c.eps) * (1 + scale) + shift).astype(dtype)
    x = self.proj_out(x)
    return unpatchify(x, grid, c.patch_size)

  def _run_blocks(self, x, context, context_mask, modulation, rope):
    c = self.config
    graphdef, state = nnx.split(self.blocks)

    def body(carry, layer_state):
      block = nnx.merge(graphdef, layer_state)
      return block(carry, context, context_mask, modulation, rope), None

    policy = REMAT_POLICIES[c.remat]
    if c.remat != "none":
      body = jax.checkpoint(body, policy=policy, prevent_cse=not c.scan_layers)
    if c.scan_layers:
      x, _ = jax.lax.scan(body, x, state)
    else:
      for i in range(c.num_layers):
        x, _ = body(x, jax.tree.map(lambda a, i=i: a[i], state))
    return x


def num_params(model: nnx.Module) -> int:
  """Number of parameters of an NNX module."""
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
