"""The WAN 2.1 video diffusion transformer in Flax NNX, with generic zero-initialised conditioning inputs.

Architecture (WAN 2.1; diffusers `WanTransformer3DModel`, REFERENCE.md section 8), channels-last throughout:

  latents [B, T, H, W, C] ++ extra_in [B, T, H, W, E]  --3D patchify (1, 2, 2)-->  tokens [B, N, D]  (+ token_map)
  timesteps [B] (0..1000) --sinusoid (cos first)--> time MLP --> temb [B, D] --SiLU, Linear--> 6-way modulation
  text [B, L, text_dim] --Linear, GELU-tanh, Linear--> context [B, L, D]
  blocks l = 0 .. num_layers - 1:
    x += gate_msa * SelfAttn(LN(x) * (1 + scale_msa) + shift_msa)   (q/k RMSNorm across heads, 3D RoPE;
                                                                      + keys/values of extra_kv[l], gated)
    x += CrossAttn(LN_affine(x), context)
    x += gate_s * cross_scale[s] * CrossAttn_s(LN(x_pre), context_s[l]) (each configured cross stream s; x_pre =
                                                                      the tokens entering the text cross-attention)
    x += c_gate * FFN_gelu_tanh(LN(x) * (1 + c_scale) + c_shift)
    x *= 1 + gate_o * ObjectMask(x_sa, semantic)                     (object attention, x_sa = the tokens after the
                                                                      self-attention)
  out = Linear(LN(x) * (1 + scale) + shift)  --unpatchify--> [B, T, H, W, C_out]

The model knows no paper. A paper's conditioner (`camjax.conditioning.<paper>`) turns its inputs into these generic
hooks, each of which starts at zero, so a loaded WAN computes exactly what WAN computes until training moves it:

  extra_in       `[B, T, H, W, extra_in_channels]` channels after the latent channels (their patch-embedding kernel
                 rows are zero when WAN weights are loaded). RealCam-I2V: the clean first-frame latent and its mask;
                 clip extension: the condition mask.
  token_map      `[B, N, D]` tokens added after the patch embedding, before block 0 (no parameters here: the
                 conditioner owns its zero-initialised projection). CameraCtrl II: the camera patchify of the Plücker
                 map; Track2View: the maps of both halves of its concatenated sequence; MotionFlow: semantic features.
  cross          named cross-attention streams (`cross_streams`), each with its own projections and a zero-initialised
                 per-block gate, scaled by `cross_scale` at call time; a context is shared by every block
                 (`[B, Lc, C]`) or given per block (`[num_layers, B, Lc, C]`, scanned with the layers). MotionFlow:
                 camera attention (lambda_c) with one trajectory-encoder scale per group of layers.
  extra_kv       `[num_layers, B, M, D]` per-layer hidden states whose keys/values (each block's own projections) the
                 self-attention also attends to, through a zero-initialised per-block gate. MotionFlow: reference
                 attention on a reference network's hidden states (that network called with `return_hidden=True`).
  positions      per-token RoPE positions replacing the default grid. Track2View: the second half of a concatenated
                 sequence takes the same frame positions as the first.
  semantic       `[B, P, object_attention_dim]` features (`WanConfig.object_attention_dim`): every block's output is
                 multiplied by `1 + gate * mask`, `mask [B, N, 1]` the attention of the tokens (after the
                 self-attention) over the features read out as a saliency (`ObjectAttention`), `gate [D]` zero-
                 initialised. MotionFlow: object attention on the reference image's DINO features.
  return_hidden  every block's output `[num_layers, B, N, D]`.
  LoRA           `lora_rank > 0`: zero-initialised low-rank adapters on `lora_targets` (`camjax.models.lora`).
                 Track2View.

Blocks are stacked along a leading `layers` axis and run with `jax.lax.scan` (or a Python loop) under a configurable
`jax.checkpoint` policy. Rotary tables, the time embedder, the modulation tables and the norms stay in float32, as in
WAN; the rest computes in `config.dtype`. Diffusers weights load with `camjax.models.weights.load_diffusers`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax import sharding
from camjax.models.lora import attach as attach_lora
from camjax.models.layers import (Dense, LayerNorm, ModelError, PatchEmbed, RMSNorm, attention, gelu_tanh, layer_norm,
                                  param, unpatchify)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

REMAT_POLICIES = {
    "none": None,  # no rematerialisation
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
}

# Linear layers of a block that can carry LoRA adapters ("<module>.<layer>"): q, k, v, output projections of the self-
# (attn1) and text cross-attention (attn2), and both FFN linears.
LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                "attn2.to_out", "ffn.proj_in", "ffn.proj_out")


@dataclasses.dataclass(frozen=True)
class WanConfig:
  """Size and options of a WAN 2.1 DiT (frozen and hashable: it is static under `jax.jit`).

  The first block of fields mirrors diffusers' `WanTransformer3DModel` config (`from_diffusers_config`); the rest are
  camjax options. None of the camjax extensions exists in a WAN checkpoint; each starts at zero (module docstring):
    extra_in_channels: input channels concatenated after the `in_channels` latent channels before the patch embedding
      (`in_channels` counts latent channels only).
    cross_streams: `((name, context_dim), ...)`: extra cross-attention streams (a mapping `{name: context_dim}` is
      accepted and stored as pairs). Names are Python identifiers.
    extra_kv: give every block's self-attention a gate for extra keys/values (`__call__(extra_kv=...)`).
    object_attention_dim: width of the semantic features of every block's object attention (`__call__(semantic=...)`,
      `ObjectAttention`); none when 0.
    lora_rank, lora_alpha, lora_targets: LoRA adapters `(alpha / rank) A B` on the named linears of every block (see
      `LORA_TARGETS`); none when `lora_rank == 0`.
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
  # camjax extensions (zero-initialised; not in WAN checkpoints)
  extra_in_channels: int = 0
  cross_streams: tuple[tuple[str, int], ...] = ()
  extra_kv: bool = False
  object_attention_dim: int = 0
  lora_rank: int = 0
  lora_alpha: float = 1.0
  lora_targets: tuple[str, ...] = LORA_TARGETS
  # camjax options
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat: str = "none"  # key of REMAT_POLICIES
  attention: str = "xla"  # "xla" | "cudnn"

  def __post_init__(self):
    # Lists (from config files) become tuples so that the config stays hashable.
    streams = self.cross_streams.items() if isinstance(self.cross_streams, Mapping) else self.cross_streams
    object.__setattr__(self, "cross_streams", tuple(tuple(s) if isinstance(s, list | tuple) else s for s in streams))
    object.__setattr__(self, "patch_size", tuple(self.patch_size))
    object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

  @property
  def dim(self) -> int:
    return self.num_heads * self.head_dim

  @property
  def patch_volume(self) -> int:
    return math.prod(self.patch_size)

  @property
  def cross_stream_names(self) -> tuple[str, ...]:
    return tuple(name for name, _ in self.cross_streams)

  def replace(self, **kw) -> WanConfig:
    return dataclasses.replace(self, **kw)

  def plain(self) -> WanConfig:
    """This config without camjax extensions: the model a WAN checkpoint of this size holds."""
    return self.replace(extra_in_channels=0, cross_streams=(), extra_kv=False, object_attention_dim=0, lora_rank=0)

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
    if not isinstance(self.extra_in_channels, numbers.Integral) or self.extra_in_channels < 0:
      raise ModelError(f"extra_in_channels {self.extra_in_channels!r} must be an integer >= 0")
    if not isinstance(self.object_attention_dim, numbers.Integral) or self.object_attention_dim < 0 \
        or self.object_attention_dim % self.num_heads:
      raise ModelError(f"object_attention_dim {self.object_attention_dim!r} must be an integer >= 0 divisible by "
                       f"num_heads={self.num_heads} (the object attention's query / key width)")
    self._validate_cross_streams()
    self._validate_lora()
    return self

  def _validate_cross_streams(self):
    for stream in self.cross_streams:
      ok = isinstance(stream, tuple) and len(stream) == 2 and isinstance(stream[0], str) and stream[0].isidentifier()
      if not ok or not isinstance(stream[1], numbers.Integral) or stream[1] < 1:
        raise ModelError(f"cross_streams entry {stream!r} must be (name, context_dim) with an identifier name and "
                         "context_dim >= 1")
    names = self.cross_stream_names
    if len(set(names)) != len(names):
      raise ModelError(f"cross_streams names {names} are not unique")

  def _validate_lora(self):
    if not isinstance(self.lora_rank, numbers.Integral) or self.lora_rank < 0:
      raise ModelError(f"lora_rank {self.lora_rank!r} must be an integer >= 0")
    if self.lora_rank and not self.lora_alpha > 0:
      raise ModelError(f"lora_alpha {self.lora_alpha!r} must be > 0")
    unknown = [t for t in self.lora_targets if t not in LORA_TARGETS]
    if unknown:
      raise ModelError(f"lora_targets {unknown} unknown; choose from {LORA_TARGETS}")
    if len(set(self.lora_targets)) != len(self.lora_targets):
      raise ModelError(f"lora_targets {self.lora_targets} has duplicates")
    if self.lora_rank and not self.lora_targets:
      raise ModelError(f"lora_rank {self.lora_rank} with no lora_targets")

  @classmethod
  def from_diffusers_config(cls, cfg: dict[str, Any], **overrides) -> WanConfig:
    """From a diffusers `config.json` of `WanTransformer3DModel` (T2V; I2V image conditioning is refused).

    `overrides` set any other field, e.g. `extra_in_channels=1, lora_rank=4, dtype="bfloat16"`.
    """
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


def grid_positions(grid: tuple[int, int, int], offset=(0, 0, 0)) -> jax.Array:
  """RoPE positions of a token grid: `[t * h * w, 3]` float32 (frame, row, column) in (t, h, w) raster order.

  Positions are in patch units and start at `offset`.
  """
  axes = [jnp.arange(n, dtype=jnp.float32) + offset[axis] for axis, n in enumerate(grid)]
  return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def rope_angles_from_positions(positions: jax.Array, head_dim: int, theta: float = 10000.0) -> jax.Array:
  """Rotation angles of WAN's 3D RoPE for tokens at `positions [..., N, 3]` (frame, row, column; patch units).

  Each axis gets its own 1D RoPE of width `rope_axis_dims(head_dim)`; channel pair `k` of an axis of width `d` rotates
  by `pos * theta^(-2k / d)`. Positions may be fractional or repeat (e.g. two token sets on the same frames).

  Returns:
    `[..., N, head_dim // 2]` float32 angles (radians): the t pairs, then the h pairs, then the w pairs.
  """
  positions = positions.astype(jnp.float32)
  angles = []
  for axis, d in enumerate(rope_axis_dims(head_dim)):
    inv = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32)[: d // 2] / d)
    angles.append(positions[..., axis:axis + 1] * inv)
  return jnp.concatenate(angles, axis=-1)


def rope_angles(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0,
                offset: tuple[int, int, int] = (0, 0, 0)) -> jax.Array:
  """Rotation angles of WAN's 3D RoPE for a token grid whose positions start at `offset` (e.g. to continue a scene
  clip by clip): `rope_angles_from_positions(grid_positions(grid, offset), ...)`.

  Returns:
    `[t * h * w, head_dim // 2]` float32 angles (radians), tokens in (t, h, w) raster order.
  """
  return rope_angles_from_positions(grid_positions(grid, offset), head_dim, theta)


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
  """Rotate interleaved channel pairs `(2k, 2k + 1)` of `x [B, N, heads, head_dim]` by `angles`.

  `angles` is `[N, head_dim / 2]` (shared by the batch) or `[B, N, head_dim / 2]` (per sample).
  """
  x32 = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
  if angles.ndim == 2:
    angles = angles[None]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
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

  def __call__(self, x, context=None, mask=None, rope=None, extra_kv=None):
    """Attention of `x [B, N, D]` over `context [B, S, D]` (None: self-attention), key `mask [B, S]` (True = attend).

    Args:
      rope: RoPE angles for q and k, `[N, head_dim / 2]` or `[B, N, head_dim / 2]` (self-attention).
      extra_kv: optional `(states [B, M, D], angles [M | B, M, head_dim / 2] or None, gate [D])`: keys/values of
        `states` from this layer's own projections join those of `context`, blended in per channel (before `to_out`)
        as `o = a(x; ctx) + gate * (a(x; [ctx, states]) - a(x; ctx))`: exactly `a(x; ctx)` at gate 0, the joint
        attention over both at gate 1.
    """
    context = x if context is None else context
    kv_seq = self.seq_axis if context is x else "act_text"
    q = self._split_heads(self.norm_q(self.to_q(x)), self.seq_axis)
    k, v = self._keys_values(context, kv_seq)
    if rope is not None:
      q, k = apply_rope(q, rope), apply_rope(k, rope)
    out = attention(q, k, v, mask, self.implementation)
    if extra_kv is not None:
      out = self._blend_extra(q, k, v, mask, out, *extra_kv)
    return self.to_out(out.reshape(*out.shape[:2], -1))

  def _split_heads(self, a, seq_axis):
    a = a.reshape(*a.shape[:-1], self.num_heads, -1)
    return sharding.constrain(a, ("act_batch", seq_axis, "act_heads", "act_kv"))

  def _keys_values(self, context, seq_axis):
    return (self._split_heads(self.norm_k(self.to_k(context)), seq_axis),
            self._split_heads(self.to_v(context), seq_axis))

  def _blend_extra(self, q, k, v, mask, out, states, angles, gate):
    k_extra, v_extra = self._keys_values(states, "act_text")
    if angles is not None:
      k_extra = apply_rope(k_extra, angles)
    if mask is not None:
      mask = jnp.concatenate([mask.astype(bool), jnp.ones(states.shape[:2], bool)], axis=1)
    joint = attention(q, jnp.concatenate([k, k_extra], axis=1), jnp.concatenate([v, v_extra], axis=1), mask,
                      self.implementation)
    gate = gate.astype(jnp.float32).reshape(self.num_heads, -1)
    out32 = out.astype(jnp.float32)
    return (out32 + gate * (joint.astype(jnp.float32) - out32)).astype(out.dtype)


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


class CrossStream(nnx.Module):
  """An extra cross-attention stream of a block: `x += gate * scale * Attn(LN(x), context)`, `gate [D]` starting at 0.

  `context` is already projected to the model width; `scale` is a call-time float (or `[B]`), e.g. MotionFlow's
  lambda_c.
  """

  def __init__(self, dim: int, num_heads: int, *, eps: float, implementation: str, rngs, dtype, param_dtype):
    self.eps = eps
    self.attn = Attention(dim, num_heads, eps=eps, implementation=implementation, rngs=rngs, dtype=dtype,
                          param_dtype=param_dtype)
    self.gate = param(rngs, nnx.initializers.zeros_init(), (dim,), ("embed",), param_dtype)

  def increment(self, x, context, mask, scale):
    """The float32 `gate * scale * Attn(LN(x), context)` this stream adds to the tokens `x [B, N, D]`."""
    h = layer_norm(x.astype(jnp.float32), self.eps).astype(x.dtype)
    y = self.attn(h, context, mask).astype(jnp.float32) * self.gate[...].astype(jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)
    return y * (scale.reshape(-1, 1, 1) if scale.ndim else scale)

  def __call__(self, x, context, mask, scale):
    """x `[B, N, D]`; context `[B, Lc, D]`; mask `[B, Lc]` bool or None; scale: a scalar or `[B]`."""
    return (x.astype(jnp.float32) + self.increment(x, context, mask, scale)).astype(x.dtype)


class ObjectAttention(nnx.Module):
  """Object attention (MotionFlow sec. 3.5): a semantic mask from the attention of the tokens over semantic features
  (e.g. DINO patch tokens of the reference image), multiplied pointwise into the block's output.

    q = norm_q(to_q(LN(query))),  k = norm_k(to_k(s)),  v_p = sigmoid(to_score(s))_p   (per head: a saliency in (0, 1))
    mask_n = mean_heads( sum_p softmax_p(q_n k_p^T / sqrt d) v_p )                        in (0, 1), `[B, N, 1]`
    out = h * (1 + gate * mask)                                                            `gate [D]`, zero-initialised

  The paper's "attention map used as a semantic mask" is aggregated per token as the attention-weighted saliency of
  the semantic tokens it attends to (a learned score per semantic token and head), so a token that attends to salient
  (object) patches gets a mask near 1 and one that attends to background near 0. At initialisation `gate = 0` and the
  output is `h` exactly. In a `WanBlock` (`WanConfig.object_attention_dim`) the query is the block's tokens after the
  self-attention (the paper's reference-attention output) and `h` the block's output.

  `inner_dim` (default `dim`) is the query / key width (split over `num_heads`); a `WanBlock` uses the semantic
  features' width, which keeps the module small next to the block (about 0.75M parameters per block at WAN 1.3B with
  DINOv2 ViT-S features instead of 3M).

  Args (of `__call__` / `mask`):
    h: `[B, N, dim]` tokens the mask multiplies.
    semantic: `[B, P, semantic_dim]` semantic features (shared by all frames).
    semantic_mask: optional `[B, P]` bool (True = a real semantic token).
    query: optional `[B, N, dim]` tokens the mask is computed from (default `h`).

  Returns:
    `__call__`: `[B, N, dim]` in h's dtype; `mask`: `[B, N, 1]` float32.

  Raises:
    ModelError: `inner_dim` not divisible by `num_heads`; tokens / features that are not `[B, N, dim]` /
      `[B, P, C]` with the same batch.
  """

  def __init__(self, dim: int, semantic_dim: int, num_heads: int, *, inner_dim: int | None = None, eps: float = 1e-6,
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32, implementation: str = "xla"):
    inner = dim if inner_dim is None else int(inner_dim)
    if inner % num_heads:
      raise ModelError(f"ObjectAttention: inner width {inner} is not divisible by {num_heads} heads")
    self.num_heads = num_heads
    self.eps = eps
    self.implementation = implementation
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    with nnx.use_eager_sharding(False):
      self.to_q = Dense(dim, inner, ("embed", "heads"), **kw)
      self.to_k = Dense(semantic_dim, inner, (None, "heads"), **kw)
      self.to_score = Dense(semantic_dim, num_heads, (None, None), **kw)
      self.norm_q = RMSNorm(inner, ("heads",), eps=eps, param_dtype=param_dtype, rngs=rngs)
      self.norm_k = RMSNorm(inner, ("heads",), eps=eps, param_dtype=param_dtype, rngs=rngs)
      self.gate = param(rngs, nnx.initializers.zeros_init(), (dim,), ("embed",), param_dtype)

  def mask(self, h, semantic, semantic_mask=None) -> jax.Array:
    """The semantic mask `[B, N, 1]` (float32) of the tokens `h [B, N, dim]` (class docstring)."""
    if h.ndim != 3 or semantic.ndim != 3 or semantic.shape[0] != h.shape[0]:
      raise ModelError(f"ObjectAttention: h must be [B, N, D] and semantic [B, P, C], got {tuple(h.shape)} and "
                       f"{tuple(semantic.shape)}")
    heads = lambda a: a.reshape(*a.shape[:-1], self.num_heads, -1)
    x = layer_norm(h.astype(jnp.float32), self.eps).astype(h.dtype)
    q = heads(self.norm_q(self.to_q(x)))
    k = heads(self.norm_k(self.to_k(semantic.astype(h.dtype))))
    score = jax.nn.sigmoid(self.to_score(semantic.astype(h.dtype)).astype(jnp.float32))  # [B, P, heads]
    # The per-head saliency as a value of the head's full width (all channels equal): the attention runs through the
    # same (flash-capable) kernel as the rest of the model, and channel 0 is the attention-weighted saliency.
    v = jnp.broadcast_to(score[..., None], k.shape).astype(q.dtype)
    out = attention(q, k, v, semantic_mask, self.implementation)[..., 0]  # [B, N, heads]
    return jnp.mean(out.astype(jnp.float32), axis=-1, keepdims=True)

  def __call__(self, h, semantic, semantic_mask=None, query=None) -> jax.Array:
    m = self.mask(h if query is None else query, semantic, semantic_mask)
    gate = self.gate[...].astype(jnp.float32)
    return (h.astype(jnp.float32) * (1.0 + gate * m)).astype(h.dtype)


class WanBlock(nnx.Module):
  """One WAN 2.1 transformer block (self-attention, cross-attention, FFN with 6-way AdaLN modulation), plus the camjax
  extensions its config asks for (cross streams, an extra-keys/values gate, object attention, LoRA adapters)."""

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
    self._add_extras(c, rngs)

  def _add_extras(self, c: WanConfig, rngs: nnx.Rngs):
    """camjax's block parameters, created after WAN's so that WAN's keep their seeded values."""
    dtype, param_dtype = _DTYPES[c.dtype], _DTYPES[c.param_dtype]
    self.cross = nnx.Dict({
        name: CrossStream(c.dim, c.num_heads, eps=c.eps, implementation=c.attention, rngs=rngs, dtype=dtype,
                          param_dtype=param_dtype) for name in c.cross_stream_names}) if c.cross_streams else None
    self.extra_kv_gate = param(rngs, nnx.initializers.zeros_init(), (c.dim,), ("heads",),
                               param_dtype) if c.extra_kv else None
    self.object_attention = ObjectAttention(
        c.dim, c.object_attention_dim, c.num_heads, inner_dim=c.object_attention_dim, eps=c.eps, rngs=rngs,
        dtype=dtype, param_dtype=param_dtype, implementation=c.attention) if c.object_attention_dim else None
    for target in c.lora_targets if c.lora_rank else ():
      module, layer = target.split(".")
      attach_lora(getattr(getattr(self, module), layer), c.lora_rank, c.lora_alpha, rngs=rngs)

  def __call__(self, x, context, context_mask, modulation, rope, extras=None):
    """One block.

    Args:
      x: `[B, N, D]` tokens.
      context: `[B, L, D]` projected text; context_mask: `[B, L]` bool or None.
      modulation: `[B, 6, D]` float32.
      rope: `[N, head_dim / 2]` or `[B, N, head_dim / 2]` angles.
      extras: optional camjax inputs of this layer: `"cross"`: `{name: (context [B, Lc, D], mask or None, scale)}`;
        `"extra_kv"`: `[B, M, D]` states (pre-normalised and modulated here like `x`); `"extra_kv_rope"`: their
        angles `[M | B, M, head_dim / 2]` or None; `"semantic"`: `(features [B, P, C], mask [B, P] or None)` of the
        object attention.
    """
    extras = extras or {}
    mod = self.scale_shift_table[...].astype(jnp.float32) + modulation
    shift, scale, gate, c_shift, c_scale, c_gate = [mod[:, i][:, None] for i in range(6)]
    ln = lambda a: layer_norm(a.astype(jnp.float32), self.eps)
    dtype = x.dtype

    h = (ln(x) * (1 + scale) + shift).astype(dtype)
    extra_kv = None
    if extras.get("extra_kv") is not None:
      states = (ln(extras["extra_kv"]) * (1 + scale) + shift).astype(dtype)
      extra_kv = (states, extras.get("extra_kv_rope"), self.extra_kv_gate[...])
    x = (x.astype(jnp.float32) + self.attn1(h, rope=rope, extra_kv=extra_kv).astype(jnp.float32) * gate).astype(dtype)
    x = sharding.constrain(x, ("act_batch", "act_seq", "act_embed"))
    x_self = x  # the (reference-)attention output: object attention's query

    # Every cross branch reads the same tokens (the text cross-attention's input), so a stream is an additive term
    # next to the text one: MotionFlow's decoupled cross-attention (eq. 4) with lambda_c as the stream's scale.
    x_cross = x
    h = self.norm2(x) if self.norm2 is not None else x
    x = x + self.attn2(h, context, context_mask).astype(dtype)
    for name, (stream_context, stream_mask, stream_scale) in extras.get("cross", {}).items():
      x = (x.astype(jnp.float32) + self.cross[name].increment(x_cross, stream_context, stream_mask, stream_scale)
           ).astype(dtype)

    h = (ln(x) * (1 + c_scale) + c_shift).astype(dtype)
    x = (x.astype(jnp.float32) + self.ffn(h).astype(jnp.float32) * c_gate).astype(dtype)
    if self.object_attention is not None and extras.get("semantic") is not None:
      semantic, semantic_mask = extras["semantic"]
      x = self.object_attention(x, semantic, semantic_mask, query=x_self)
    return sharding.constrain(x, ("act_batch", "act_seq", "act_embed"))


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


class WanDiT(nnx.Module):
  """WAN 2.1 DiT with generic, zero-initialised conditioning inputs (module docstring).

  Call::

    model(latents, timesteps, text, text_mask=None, *, extra_in=None, token_map=None, cross=None, cross_scale=None,
          extra_kv=None, extra_kv_rope=None, semantic=None, semantic_mask=None, positions=None,
          rope_offset=(0, 0, 0), return_hidden=False)

  Args (of `__call__`; N = (T/pt)(H/ph)(W/pw) tokens, D = `config.dim`):
    latents: `[B, T, H, W, in_channels]` channels-last noisy latents; T, H, W divisible by the patch size.
    timesteps: `[B]` diffusion time on WAN's 0..1000 scale (flow matching: `sigma * 1000`).
    text: `[B, L, text_dim]` text embeddings (umT5 for WAN weights, the byte encoder for the CPU default).
    text_mask: optional `[B, L]` bool key mask for cross-attention (None = attend to all L, as WAN does with
      zero-padded embeddings).
    extra_in: `[B, T, H, W, extra_in_channels]` channels concatenated after the latent channels (None = zeros);
      requires `config.extra_in_channels`.
    token_map: `[B, N, D]` added to the tokens after the patch embedding, before block 0 (None = nothing).
    cross: `{name: context [B, Lc, context_dim]}` or `{name: (context, mask [B, Lc] bool)}` for configured
      `cross_streams`; a stream left out skips its branch (exactly as if it had no parameters). A context
      `[num_layers, B, Lc, context_dim]` gives every block its own (scanned with the layers; the mask stays `[B, Lc]`).
    cross_scale: `{name: float or [B]}` multiplier of each stream's output (default 1.0).
    extra_kv: `[num_layers, B, M, D]` per-layer states (another DiT's `return_hidden`); block l's self-attention also
      attends to `extra_kv[l]` (scanned with the layers); requires `config.extra_kv`.
    extra_kv_rope: RoPE positions of the extra states, `[M, 3]` or `[B, M, 3]` (frame, row, column in patch units, as
      `positions`; `rope_offset` is NOT added); None = their keys are not rotated.
    semantic: `[B, P, object_attention_dim]` features of every block's object attention (`ObjectAttention`);
      requires `config.object_attention_dim`; None = no object attention (exactly the model without it).
    semantic_mask: optional `[B, P]` bool key mask of `semantic`.
    positions: RoPE positions of the tokens, `[N, 3]` or `[B, N, 3]` float (frame, row, column in patch units), instead
      of the grid `grid_positions((T/pt, H/ph, W/pw))`; `rope_offset` is added to either.
    rope_offset: (t, h, w) position offset of the tokens.
    return_hidden: also return every block's output.

  Returns:
    The model prediction (velocity for flow matching) `[B, T, H, W, out_channels]` in the compute dtype; with
    `return_hidden`, `(prediction, hidden [num_layers, B, N, D])`.

  Raises:
    ModelError: inputs that do not match the config (the expected shape is in the message).

  Weights: `WanDiT.create` initialises (seeded); `camjax.models.weights.load_diffusers` loads a diffusers folder.
  """

  def __init__(self, config: WanConfig, *, rngs: nnx.Rngs):
    config = config.validate()
    self.config = config
    with nnx.use_eager_sharding(False):  # logical names are resolved by camjax.sharding, not at creation
      self._build(config, rngs)

  def _build(self, c: WanConfig, rngs: nnx.Rngs):
    dtype, param_dtype = _DTYPES[c.dtype], _DTYPES[c.param_dtype]
    self.patch_embedding = PatchEmbed(c.in_channels + c.extra_in_channels, c.dim, c.patch_size, rngs=rngs, dtype=dtype,
                                      param_dtype=param_dtype)
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
    self._add_extras(c, rngs)

  def _add_extras(self, c: WanConfig, rngs: nnx.Rngs):
    """camjax's top-level parameters, created after WAN's: one context projection `context_dim -> D` per stream."""
    dtype, param_dtype = _DTYPES[c.dtype], _DTYPES[c.param_dtype]
    self.cross_embedders = nnx.Dict({
        name: Dense(context_dim, c.dim, (None, "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        for name, context_dim in c.cross_streams}) if c.cross_streams else None

  @classmethod
  def create(cls, config: WanConfig, *, seed: int = 0, mesh=None, rules=None) -> WanDiT:
    """Initialise with `nnx.Rngs(seed)`; with a mesh, parameters are created directly in their shardings."""
    return sharding.create_sharded(lambda: cls(config, rngs=nnx.Rngs(seed)), mesh, rules)

  def __call__(self, latents, timesteps, text, text_mask=None, *, extra_in=None, token_map=None, cross=None,
               cross_scale=None, extra_kv=None, extra_kv_rope=None, semantic=None, semantic_mask=None, positions=None,
               rope_offset=(0, 0, 0), return_hidden=False):
    c = self.config
    self._check(latents, timesteps, text, text_mask)
    b, t, h, w, _ = latents.shape
    pt, ph, pw = c.patch_size
    grid = (t // pt, h // ph, w // pw)
    self._check_extras(b, (t, h, w), math.prod(grid), extra_in=extra_in, token_map=token_map, cross=cross,
                       cross_scale=cross_scale, extra_kv=extra_kv, extra_kv_rope=extra_kv_rope, positions=positions,
                       rope_offset=rope_offset)
    self._check_semantic(b, semantic, semantic_mask)
    dtype = _DTYPES[c.dtype]

    x = latents.astype(dtype)
    if c.extra_in_channels:
      extra = jnp.zeros((b, t, h, w, c.extra_in_channels), dtype) if extra_in is None else extra_in
      x = jnp.concatenate([x, extra.astype(dtype)], axis=-1)
    x = self.patch_embedding(x)
    if token_map is not None:
      x = x + token_map.astype(dtype)
    x = sharding.constrain(x, ("act_batch", "act_seq", "act_embed"))

    if positions is None:
      rope = rope_angles(grid, c.head_dim, c.rope_theta, rope_offset)
    else:
      offset = jnp.asarray(rope_offset, jnp.float32)
      rope = rope_angles_from_positions(positions.astype(jnp.float32) + offset, c.head_dim, c.rope_theta)
    temb = self.time_embedder(timestep_embedding(timesteps, c.freq_dim))  # float32 [B, D]
    modulation = self.time_proj(jax.nn.silu(temb)).reshape(b, 6, c.dim)
    context = self.text_embedder(text.astype(dtype))
    context = sharding.constrain(context, ("act_batch", "act_text", "act_embed"))
    extras, layer_contexts = self._extras(cross, cross_scale, extra_kv_rope, dtype)
    if semantic is not None:
      extras["semantic"] = (semantic.astype(dtype), semantic_mask)

    x, hidden = self._run_blocks(x, context, text_mask, modulation, rope, extras, extra_kv, layer_contexts,
                                 return_hidden)

    mod = self.scale_shift_table[...].astype(jnp.float32) + temb[:, None]  # [B, 2, D]
    shift, scale = mod[:, 0:1], mod[:, 1:2]
    x = (layer_norm(x.astype(jnp.float32), c.eps) * (1 + scale) + shift).astype(dtype)
    x = self.proj_out(x)
    out = unpatchify(x, grid, c.patch_size)
    return (out, hidden) if return_hidden else out

  def _check(self, latents, timesteps, text, text_mask):
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

  def _check_extras(self, b, thw, n, *, extra_in, token_map, cross, cross_scale, extra_kv, extra_kv_rope, positions,
                    rope_offset):
    c = self.config
    if extra_in is not None:
      if not c.extra_in_channels:
        raise ModelError("extra_in was given but the model was built with extra_in_channels=0")
      if tuple(extra_in.shape) != (b, *thw, c.extra_in_channels):
        raise ModelError(f"extra_in must be [B, T, H, W, extra_in_channels] = {(b, *thw, c.extra_in_channels)}, got "
                         f"{tuple(extra_in.shape)}")
    if token_map is not None and tuple(token_map.shape) != (b, n, c.dim):
      raise ModelError(f"token_map must be [B, N, D] = {(b, n, c.dim)} (N tokens after the patchify), got "
                       f"{tuple(token_map.shape)}")
    self._check_cross(b, cross, cross_scale)
    if extra_kv is not None:
      if not c.extra_kv:
        raise ModelError("extra_kv was given but the model was built with extra_kv=False")
      if extra_kv.ndim != 4 or tuple(extra_kv.shape[:2]) != (c.num_layers, b) or extra_kv.shape[-1] != c.dim:
        raise ModelError(f"extra_kv must be [num_layers, B, M, D] = ({c.num_layers}, {b}, M, {c.dim}), got "
                         f"{tuple(extra_kv.shape)}")
    if extra_kv_rope is not None:
      if extra_kv is None:
        raise ModelError("extra_kv_rope was given without extra_kv")
      m = extra_kv.shape[2]
      if tuple(extra_kv_rope.shape) not in ((m, 3), (b, m, 3)):
        raise ModelError(f"extra_kv_rope must be [M, 3] = {(m, 3)} or [B, M, 3] = {(b, m, 3)}, got "
                         f"{tuple(extra_kv_rope.shape)}")
    if positions is not None and tuple(positions.shape) not in ((n, 3), (b, n, 3)):
      raise ModelError(f"positions must be [N, 3] = {(n, 3)} or [B, N, 3] = {(b, n, 3)}, got "
                       f"{tuple(positions.shape)}")
    if len(rope_offset) != 3:
      raise ModelError(f"rope_offset must be (t, h, w), got {rope_offset!r}")

  def _check_cross(self, b, cross, cross_scale):
    streams = dict(self.config.cross_streams)
    for what, given in (("cross", cross), ("cross_scale", cross_scale)):
      if given is None:
        continue
      if not isinstance(given, Mapping):
        raise ModelError(f"{what} must be a mapping {{stream name: ...}}, got {type(given).__name__}")
      unknown = sorted(set(given) - set(streams))
      if unknown:
        raise ModelError(f"{what} names streams {unknown} the model was not built with (cross_streams: "
                         f"{tuple(streams)})")
    for name, value in (cross or {}).items():
      if isinstance(value, list | tuple) and len(value) != 2:
        raise ModelError(f"cross[{name!r}] must be a context or a (context, mask) pair, got {len(value)} items")
      context, mask = value if isinstance(value, list | tuple) else (value, None)
      layers = self.config.num_layers
      shared = context.ndim == 3 and context.shape[0] == b
      per_layer = context.ndim == 4 and tuple(context.shape[:2]) == (layers, b)
      if not (shared or per_layer) or context.shape[-1] != streams[name]:
        raise ModelError(f"cross[{name!r}] context must be [B, Lc, context_dim] = ({b}, Lc, {streams[name]}) or per "
                         f"layer [num_layers, B, Lc, context_dim] = ({layers}, {b}, Lc, {streams[name]}), got "
                         f"{tuple(context.shape)}")
      if mask is not None and tuple(mask.shape) != tuple(context.shape[-3:-1]):
        raise ModelError(f"cross[{name!r}] mask must be [B, Lc] = {tuple(context.shape[-3:-1])}, got "
                         f"{tuple(mask.shape)}")
    for name, scale in (cross_scale or {}).items():
      if jnp.ndim(scale) and jnp.shape(scale) != (b,):
        raise ModelError(f"cross_scale[{name!r}] must be a scalar or [B] = ({b},), got shape {jnp.shape(scale)}")

  def _check_semantic(self, b, semantic, semantic_mask):
    c = self.config
    if semantic is None:
      if semantic_mask is not None:
        raise ModelError("semantic_mask was given without semantic")
      return
    if not c.object_attention_dim:
      raise ModelError("semantic was given but the model was built with object_attention_dim=0")
    if semantic.ndim != 3 or semantic.shape[0] != b or semantic.shape[-1] != c.object_attention_dim:
      raise ModelError(f"semantic must be [B, P, object_attention_dim] = ({b}, P, {c.object_attention_dim}), got "
                       f"{tuple(semantic.shape)}")
    if semantic_mask is not None and tuple(semantic_mask.shape) != tuple(semantic.shape[:2]):
      raise ModelError(f"semantic_mask must be [B, P] = {tuple(semantic.shape[:2])}, got {tuple(semantic_mask.shape)}")

  def _extras(self, cross, cross_scale, extra_kv_rope, dtype) -> tuple[dict, dict]:
    """The camjax inputs of the blocks: `(shared, per_layer)`. `shared` holds the cross streams `{name: (context
    [B, Lc, D] projected to the width, or None for a per-layer context, mask, scale)}` and the extra_kv RoPE angles;
    `per_layer` holds `{name: [num_layers, B, Lc, D]}` projected per-layer contexts (scanned with the layers)."""
    c = self.config
    extras, per_layer = {}, {}
    if cross:
      streams = {}
      for name in c.cross_stream_names:  # config order
        if name not in cross:
          continue
        value = cross[name]
        context, mask = value if isinstance(value, list | tuple) else (value, None)
        context = self.cross_embedders[name](context.astype(dtype))
        scale = (cross_scale or {}).get(name, 1.0)
        if context.ndim == 4:
          per_layer[name] = sharding.constrain(context, (None, "act_batch", "act_text", "act_embed"))
          streams[name] = (None, mask, scale)
        else:
          streams[name] = (sharding.constrain(context, ("act_batch", "act_text", "act_embed")), mask, scale)
      extras["cross"] = streams
    if extra_kv_rope is not None:
      extras["extra_kv_rope"] = rope_angles_from_positions(extra_kv_rope, c.head_dim, c.rope_theta)
    return extras, per_layer

  def _run_blocks(self, x, context, context_mask, modulation, rope, extras, extra_kv, layer_contexts, return_hidden):
    """The blocks over `x` (scanned or looped, under the remat policy), with block l's `extra_kv[l]` and per-layer
    cross contexts `layer_contexts[name][l]`: `(x, hidden [num_layers, B, N, D] or None)`."""
    c = self.config
    graphdef, state = nnx.split(self.blocks)

    def body(carry, xs):
      layer_state, layer_kv, layer_ctx = xs
      block = nnx.merge(graphdef, layer_state)
      layer_extras = extras if layer_kv is None else {**extras, "extra_kv": layer_kv}
      if layer_ctx:
        streams = dict(extras["cross"])
        for name, ctx in layer_ctx.items():
          streams[name] = (ctx, *streams[name][1:])
        layer_extras = {**layer_extras, "cross": streams}
      y = block(carry, context, context_mask, modulation, rope, layer_extras)
      return y, (y if return_hidden else None)

    policy = REMAT_POLICIES[c.remat]
    if c.remat != "none":
      body = jax.checkpoint(body, policy=policy, prevent_cse=not c.scan_layers)
    xs = (state, extra_kv, layer_contexts)
    if c.scan_layers:
      return jax.lax.scan(body, x, xs)
    hidden = []
    for i in range(c.num_layers):
      x, y = body(x, jax.tree.map(lambda a, i=i: a[i], xs))
      hidden.append(y)
    return x, (jnp.stack(hidden) if return_hidden else None)


def num_params(model: nnx.Module) -> int:
  """Number of parameters of an NNX module (LoRA factors included; `camjax.models.lora.num_params` counts those)."""
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
