"""MotionFlow's building blocks on the WAN DiT (papers/001, sec. 3.2-3.6; REFERENCE.md section 6).

MotionFlow builds on UNets: Stable Diffusion 1.5 as the *reference motion network* (an image-diffusion twin that turns
the reference image and the camera trajectory into per-frame "reference motion maps") and AnimateDiff as the *video
network*. camjax carries each mechanism onto the WAN DiT and its generic, zero-initialised inputs
(`camjax.models.wan`); nothing here changes the DiT.

  paper (UNet)                                   camjax (WAN DiT)
  ---------------------------------------------  -------------------------------------------------------------------
  trajectory encoder: Plücker map -> 2D ResNet   `TrajectoryEncoder`: Plücker `[B, T, H, W, 6]` -> patchify to the DiT
  blocks, each followed by self-attention;       token grid -> per scale: residual MLP blocks, each followed by self-
  multi-scale camera features (sec. 3.2)         attention (per frame by default) -> `num_scales` features
                                                 `[B, N, out_dim]`, one per group of DiT layers (`layer_scales`,
                                                 `per_layer`). A DiT has one token grid, so the "scales" are depths.
  camera cross-attention of the reference        `decoupled_attention` (eq. 4 on heads) and `DecoupledCrossAttention`.
  network, eq. 4:                                On a WanDiT: the text cross-attention (the image features as its
  F = softmax(Q K_i^T / sqrt d) V_i              context) plus a cross stream "camera" called with
      + lambda_c softmax(Q K_c^T / sqrt d) V_c   `cross_scale={"camera": lambda_c}`, the stream sharing the text
                                                 cross-attention's query and output projection (`tie_cross_stream`;
                                                 WanBlock feeds every cross branch the same pre-cross tokens, so this
                                                 is eq. 4 exactly, tested). Multi-scale camera features enter as a
                                                 per-layer context `[num_layers, B, Lc, C]` (`per_layer`).
  reference attention: the block's feature map   `reference_kv` + `reference_positions` -> the video DiT's `extra_kv`
  and the reference motion map of the same       and `extra_kv_rope`. At extra-kv gate 1 the video tokens attend to
  layer side by side (width 2w), self-attention  [own keys; reference keys] through the block's OWN k/v projections,
  over both, keep the video half (sec. 3.5)      which is the side-by-side self-attention with its video half kept
                                                 (tested on a WanDiT against a run on the width-concatenated latents).
  semantic encoder: DINO ViT-S (sec. 3.3)        `SemanticViT` (in-run JAX DINOv2, `load_dinov2` from a local
                                                 transformers folder) or `SemanticEncoder` (torch, frozen, for
                                                 precomputed features).
  semantic features added to the noise           `SemanticInput`: features resized to the token grid -> a token map
                                                 (WanDiT's `token_map`, added before block 0).
  object attention: an attention map between     `camjax.models.wan.ObjectAttention` (re-exported here), a WanDiT
  semantic features and the reference-attention  hook (`WanConfig.object_attention_dim`, `semantic=`): every block's
  output, used as a semantic mask multiplied     output times `1 + gate * mask`, `mask [B, N, 1]` the attention of
  into the block's output                        the block's post-self-attention tokens over the semantic tokens,
                                                 read out as an attention-weighted saliency.
  temporal attention per spatial location        nothing to add: WAN's self-attention spans frames and space.

Everything new starts at zero, so the base model is unchanged at step 0 (paper sec. 3.6: "All other modules are
initialized to zero"), with exactly ONE zero on each path so that gradients flow at once (two zeros in series, e.g. a
zero encoder output read through a zero gate, would have zero gradient for both):

* `TrajectoryEncoder` is randomly initialised; its consumer is zero: WanDiT's per-block cross-stream gate, or
  `DecoupledCrossAttention`'s camera value projection `to_v_camera` (kernel and bias zero: the camera term is exactly 0
  for any lambda_c, while the camera attention weights are not, so `to_v_camera` gets a gradient at step 0).
* reference attention: WanDiT's per-block `extra_kv_gate` (zero).
* `SemanticInput`: zero, bias-free projection (a zero feature map adds exactly nothing, also after training).
* `ObjectAttention`: per-channel gate zero.

Two semantic encoders: `SemanticViT` (a DINOv2 ViT in JAX, run inside the jitted step and trained with the run as
the paper trains its semantic encoder in stage 1; random and tiny at CPU size, or real DINOv2 weights through
`load_dinov2`) and `SemanticEncoder` (the transformers model itself in torch, frozen: for precomputing features
outside the step). The MotionFlow method (`camjax.methods.motionflow`) uses `SemanticViT`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from camjax import sharding
from camjax.conditioning.cameractrl2 import ConditioningError
from camjax.models.layers import Dense, LayerNorm, PatchEmbed, RMSNorm, attention, param
from camjax.models.wan import Attention, ObjectAttention, grid_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ATTENTION_SCOPES = ("frame", "video")
LAYOUTS = ("side_by_side", "aligned")
_DTYPES = ("float32", "bfloat16", "float16")


class MotionFlowError(ConditioningError):
  """MotionFlow conditioning inputs or options that do not fit (shapes, token grids, config values)."""


class SemanticEncoderError(MotionFlowError):
  """The semantic encoder's weights folder is missing or holds an unsupported model."""


# ----------------------------------------------------------------------------------------------------------------------
# Trajectory encoder (sec. 3.2)
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrajectoryEncoderConfig:
  """Size of the trajectory encoder (frozen and hashable: static under `jax.jit`).

  Attributes:
    out_dim: width of each output feature (the `context_dim` of the DiT's camera cross stream, or the DiT width).
    width: internal token width.
    num_scales: number of output features; scale `s` feeds the DiT layers `l` with `l * num_scales // num_layers == s`.
    blocks_per_scale: (residual block, self-attention) pairs before each output.
    mlp_hidden: hidden width of the residual blocks.
    num_heads: self-attention heads (`width % num_heads == 0`, head width even and >= 2).
    patch_size: `(pt, ph, pw)` patchify of the Plücker map to the DiT token grid: the DiT's patch size for a map at
      the latent grid (`(1, 2, 2)` for WAN), times the VAE factor for a map at pixel resolution (`(1, 16, 16)`).
    attention_scope: "frame" (self-attention among the tokens of each frame, the paper's image-twin setting) or
      "video" (among all tokens of the clip).
    dtype, param_dtype: compute / parameter dtypes; norms and softmax stay float32.
    eps: LayerNorm and q/k RMSNorm epsilon.
    attention: attention implementation ("xla" | "cudnn").
  """

  out_dim: int = 1536
  width: int = 320
  num_scales: int = 4
  blocks_per_scale: int = 1
  mlp_hidden: int = 640
  num_heads: int = 5
  patch_size: tuple[int, int, int] = (1, 2, 2)
  attention_scope: str = "frame"
  dtype: str = "float32"
  param_dtype: str = "float32"
  eps: float = 1e-6
  attention: str = "xla"

  def __post_init__(self):
    object.__setattr__(self, "patch_size", tuple(self.patch_size))

  def replace(self, **kw) -> TrajectoryEncoderConfig:
    return dataclasses.replace(self, **kw)

  def validate(self) -> TrajectoryEncoderConfig:
    for name in ("out_dim", "width", "num_scales", "blocks_per_scale", "mlp_hidden", "num_heads"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise MotionFlowError(f"TrajectoryEncoderConfig.{name} must be a positive integer, got {value!r}")
    if self.width % self.num_heads or (self.width // self.num_heads) % 2:
      raise MotionFlowError(f"TrajectoryEncoderConfig.width {self.width} must split into {self.num_heads} heads of "
                            "even width")
    if len(self.patch_size) != 3 or any(not isinstance(p, int) or p < 1 for p in self.patch_size):
      raise MotionFlowError(f"TrajectoryEncoderConfig.patch_size {self.patch_size} must be three positive integers")
    if self.attention_scope not in ATTENTION_SCOPES:
      raise MotionFlowError(f"TrajectoryEncoderConfig.attention_scope {self.attention_scope!r} must be one of "
                            f"{ATTENTION_SCOPES}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise MotionFlowError(f"TrajectoryEncoderConfig.{name} {getattr(self, name)!r} must be one of {_DTYPES}")
    return self


class ResidualBlock(nnx.Module):
  """Token-wise residual block, the DiT form of a ResNet block: `x + Linear(SiLU(Linear(LN(x))))`."""

  def __init__(self, width: int, hidden: int, *, eps: float, rngs: nnx.Rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm = LayerNorm(width, eps=eps, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = Dense(width, hidden, ("embed", "mlp"), **kw)
    self.fc2 = Dense(hidden, width, ("mlp", "embed"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x + self.fc2(jax.nn.silu(self.fc1(self.norm(x)))).astype(x.dtype)


class SelfAttentionBlock(nnx.Module):
  """Pre-LN self-attention `x + Attn(LN(x))` (WAN's attention: q/k RMSNorm across heads; no RoPE: every Plücker ray
  already encodes where its pixel looks)."""

  def __init__(self, width: int, num_heads: int, *, eps: float, implementation: str, rngs: nnx.Rngs, dtype,
               param_dtype):
    self.norm = LayerNorm(width, eps=eps, param_dtype=param_dtype, rngs=rngs)
    self.attn = Attention(width, num_heads, eps=eps, implementation=implementation, rngs=rngs, dtype=dtype,
                          param_dtype=param_dtype)

  def __call__(self, x: jax.Array, groups: int) -> jax.Array:
    """x `[B, N, W]`; attention within each of `groups` equal, consecutive runs of tokens (the frames)."""
    b, n, w = x.shape
    h = self.norm(x).reshape(b * groups, n // groups, w)
    return x + self.attn(h).reshape(b, n, w).astype(x.dtype)


class EncoderScale(nnx.Module):
  """`blocks_per_scale` (residual block, self-attention) pairs, then the scale's output `Linear(LN(x))`."""

  def __init__(self, c: TrajectoryEncoderConfig, *, rngs: nnx.Rngs):
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.res = nnx.List([ResidualBlock(c.width, c.mlp_hidden, eps=c.eps, **kw) for _ in range(c.blocks_per_scale)])
    self.attn = nnx.List([SelfAttentionBlock(c.width, c.num_heads, eps=c.eps, implementation=c.attention, **kw)
                          for _ in range(c.blocks_per_scale)])
    self.norm = LayerNorm(c.width, eps=c.eps, param_dtype=param_dtype, rngs=rngs)
    self.out = Dense(c.width, c.out_dim, (None, "embed"), **kw)

  def __call__(self, x: jax.Array, groups: int) -> tuple[jax.Array, jax.Array]:
    for res, attn in zip(self.res, self.attn):
      x = attn(res(x), groups)
    return x, self.out(self.norm(x))


class TrajectoryEncoder(nnx.Module):
  """MotionFlow's trajectory encoder (sec. 3.2) on the DiT token grid: Plücker map -> multi-scale camera features.

  Call::

    features = encoder(plucker)          # list of num_scales arrays [B, N, out_dim]
    per_layer(features, num_layers)      # [num_layers, B, N, out_dim], scale s for its group of DiT layers

  The Plücker map is patchified like `camjax.conditioning.cameractrl2.CameraPatchify` (a patch embedding with
  `config.patch_size`; here with a bias and random weights, since the zero sits in the consumer, see the module
  docstring), then each scale applies `blocks_per_scale` (residual block, self-attention) pairs and emits
  `Linear(LN(x))`; the next scale continues from the same token stream, so later scales are deeper features.

  Args (of `__call__`):
    plucker: `[B, T, H, W, 6]` Plücker map `[o x d, d]` (REFERENCE.md section 2), one pose per latent frame
      (`camjax.conditioning.cameractrl2.camera_plucker`), at the latent grid or at pixel resolution; `T, H, W`
      divisible by `config.patch_size`.

  Returns:
    `num_scales` arrays `[B, N, out_dim]` in the compute dtype, `N = (T/pt)(H/ph)(W/pw)` tokens in (t, h, w) raster
    order (the DiT's order when the patch grid is the DiT's).

  Raises:
    MotionFlowError: a map that is not `[B, T, H, W, 6]` or does not divide into patches.
  """

  def __init__(self, config: TrajectoryEncoderConfig, *, rngs: nnx.Rngs):
    self.config = config.validate()
    with nnx.use_eager_sharding(False):  # logical names are resolved by camjax.sharding, not at creation
      c = self.config
      dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
      self.embed = PatchEmbed(6, c.width, c.patch_size, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
      self.scales = nnx.List([EncoderScale(c, rngs=rngs) for _ in range(c.num_scales)])

  @classmethod
  def create(cls, config: TrajectoryEncoderConfig, *, seed: int = 0, mesh=None, rules=None) -> TrajectoryEncoder:
    """Initialise with `nnx.Rngs(seed)`; with a mesh, parameters are created directly in their shardings."""
    return sharding.create_sharded(lambda: cls(config, rngs=nnx.Rngs(seed)), mesh, rules)

  def token_grid(self, shape) -> tuple[int, int, int]:
    """`(t, h, w)` token grid of a Plücker map of `shape [B, T, H, W, 6]` (raises `MotionFlowError` when it is not)."""
    pt, ph, pw = self.config.patch_size
    if len(shape) != 5 or shape[-1] != 6:
      raise MotionFlowError(f"trajectory encoder: the Plücker map must be [B, T, H, W, 6], got {tuple(shape)}")
    _, t, h, w, _ = shape
    if t % pt or h % ph or w % pw:
      raise MotionFlowError(f"trajectory encoder: the Plücker map's (T, H, W) = {(t, h, w)} is not divisible by the "
                            f"patch size {self.config.patch_size}")
    return t // pt, h // ph, w // pw

  def __call__(self, plucker: jax.Array) -> list[jax.Array]:
    t, _, _ = self.token_grid(plucker.shape)
    groups = t if self.config.attention_scope == "frame" else 1
    x = self.embed(plucker.astype(jnp.dtype(self.config.dtype)))
    features = []
    for scale in self.scales:
      x, feature = scale(x, groups)
      features.append(sharding.constrain(feature, ("act_batch", "act_seq", "act_embed")))
    return features


def layer_scales(num_layers: int, num_scales: int) -> np.ndarray:
  """Which encoder scale feeds each DiT layer: `[num_layers]` int, layer `l` -> `l * num_scales // num_layers`
  (consecutive groups of layers, sizes differing by at most one; shallow scales feed shallow layers).

  Raises:
    MotionFlowError: `num_scales` outside `[1, num_layers]` (a scale would feed no layer).
  """
  if not 1 <= num_scales <= num_layers:
    raise MotionFlowError(f"{num_scales} encoder scales cannot feed {num_layers} DiT layers (need 1 <= scales <= "
                          "layers)")
  return np.arange(num_layers) * num_scales // num_layers


def per_layer(features, num_layers: int) -> jax.Array:
  """The encoder's features stacked per DiT layer: `[num_layers, B, N, D]`, layer `l` holding scale
  `layer_scales(num_layers, len(features))[l]` (for a per-layer cross context or per-layer keys/values).

  Raises:
    MotionFlowError: features of different shapes, or more scales than layers.
  """
  shapes = {tuple(f.shape) for f in features}
  if len(shapes) != 1:
    raise MotionFlowError(f"per_layer: the scales' features differ in shape: {sorted(shapes)}")
  return jnp.stack(list(features))[jnp.asarray(layer_scales(num_layers, len(features)))]


# ----------------------------------------------------------------------------------------------------------------------
# Decoupled cross-attention (eq. 4)
# ----------------------------------------------------------------------------------------------------------------------


def _per_example(value, like: jax.Array) -> jax.Array:
  """A scalar or `[B]` value broadcastable against `like [B, ...]` (float32)."""
  value = jnp.asarray(value, jnp.float32)
  if value.ndim == 0:
    return value
  if value.shape != like.shape[:1]:
    raise MotionFlowError(f"lambda_c must be a scalar or [B] = {like.shape[:1]}, got shape {value.shape}")
  return value.reshape(-1, *(1,) * (like.ndim - 1))


def decoupled_attention(q, k_image, v_image, k_camera, v_camera, lambda_c, *, image_mask=None, camera_mask=None,
                        implementation: str | None = None) -> jax.Array:
  """MotionFlow eq. 4 on heads: `softmax(Q K_i^T / sqrt d) V_i + lambda_c softmax(Q K_c^T / sqrt d) V_c`.

  The two softmaxes are separate (one over the image keys, one over the camera keys) and share the query; summing
  before the output projection is what a cross-attention layer then projects.

  Args:
    q: `[B, N, heads, d]` queries of the tokens.
    k_image, v_image: `[B, L_i, heads, d]` keys / values of the reference-image features.
    k_camera, v_camera: `[B, L_c, heads, d]` keys / values of the camera features (trajectory encoder).
    lambda_c: scalar or `[B]` weight of the camera term (paper: "the coefficient that balances image condition and
      camera condition"); 0 gives the image-only attention exactly.
    image_mask, camera_mask: optional `[B, L]` bool key masks (True = attend).
    implementation: passed to `camjax.models.layers.attention` (None / "xla" / "cudnn").

  Returns:
    `[B, N, heads, d]` in q's dtype (the sum in float32).

  Raises:
    MotionFlowError: `lambda_c` that is neither a scalar nor `[B]`.
  """
  image = attention(q, k_image, v_image, image_mask, implementation)
  camera = attention(q, k_camera, v_camera, camera_mask, implementation)
  lam = _per_example(lambda_c, image)
  return (image.astype(jnp.float32) + lam * camera.astype(jnp.float32)).astype(image.dtype)


class DecoupledCrossAttention(nnx.Module):
  """Cross-attention of eq. 4 (the reference motion network's camera motion attention), WAN-style: q/k RMSNorm across
  heads (as every WAN attention; SD 1.5 has none).

  `Q = norm_q(to_q(x))`, `K_i = norm_k(to_k(image))`, `V_i = to_v(image)`, `K_c = norm_k_camera(to_k_camera(camera))`,
  `V_c = to_v_camera(camera)`; the output is `to_out(decoupled_attention(...))`. `to_v_camera` starts at zero (kernel
  and bias), so the camera term is exactly zero at initialisation for any lambda_c, and it is the first thing a
  gradient moves.

  With `camera=None` (no camera: the null condition for guidance) or `lambda_c = 0` the layer is exactly a WAN
  `Attention` with the same q/k/v/out weights on the image features.

  On a WanDiT the same computation is the text cross-attention plus a tied cross stream (`tie_cross_stream`).

  Args (of `__call__`):
    x: `[B, N, dim]` tokens (already normalised, as a cross-attention input).
    image: `[B, L_i, image_dim]` reference-image features; image_mask: optional `[B, L_i]` bool.
    camera: `[B, L_c, camera_dim]` camera features or None; camera_mask: optional `[B, L_c]` bool.
    lambda_c: scalar or `[B]`.

  Returns:
    `[B, N, dim]` in the compute dtype.
  """

  def __init__(self, dim: int, num_heads: int, image_dim: int, camera_dim: int, *, eps: float = 1e-6,
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32, implementation: str = "xla"):
    if dim % num_heads:
      raise MotionFlowError(f"DecoupledCrossAttention: dim {dim} is not divisible by {num_heads} heads")
    self.num_heads = num_heads
    self.implementation = implementation
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    zeros = nnx.initializers.zeros_init()
    with nnx.use_eager_sharding(False):
      self.to_q = Dense(dim, dim, ("embed", "heads"), **kw)
      self.to_k = Dense(image_dim, dim, (None, "heads"), **kw)
      self.to_v = Dense(image_dim, dim, (None, "heads"), **kw)
      self.to_out = Dense(dim, dim, ("heads", "embed"), **kw)
      self.norm_q = RMSNorm(dim, ("heads",), eps=eps, param_dtype=param_dtype, rngs=rngs)
      self.norm_k = RMSNorm(dim, ("heads",), eps=eps, param_dtype=param_dtype, rngs=rngs)
      self.to_k_camera = Dense(camera_dim, dim, (None, "heads"), **kw)
      self.to_v_camera = Dense(camera_dim, dim, (None, "heads"), kernel_init=zeros, **kw)
      self.norm_k_camera = RMSNorm(dim, ("heads",), eps=eps, param_dtype=param_dtype, rngs=rngs)

  def _heads(self, a):
    return a.reshape(*a.shape[:-1], self.num_heads, -1)

  def __call__(self, x, image, camera=None, lambda_c=1.0, *, image_mask=None, camera_mask=None):
    q = self._heads(self.norm_q(self.to_q(x)))
    k, v = self._heads(self.norm_k(self.to_k(image))), self._heads(self.to_v(image))
    if camera is None:
      out = attention(q, k, v, image_mask, self.implementation)
    else:
      k_c = self._heads(self.norm_k_camera(self.to_k_camera(camera)))
      v_c = self._heads(self.to_v_camera(camera))
      out = decoupled_attention(q, k, v, k_c, v_c, lambda_c, image_mask=image_mask, camera_mask=camera_mask,
                                implementation=self.implementation)
    return self.to_out(out.reshape(*out.shape[:2], -1))


def tie_cross_stream(blocks, name: str = "camera", gate: float = 1.0) -> None:
  """Make a WanDiT cross stream the camera term of eq. 4 (in place).

  Sets the stream's query projection to the text cross-attention's (`norm2`'s affine folded in:
  `LN(x) (s * W_q) + (b W_q + b_q)` equals `to_q(norm2(x))`), its q-norm and output kernel to `attn2`'s, its output
  bias to 0 and its gate to `gate`. The stream's k/v projections (the camera branch `K_c, V_c`, read from `cross[name]`
  after the DiT's `cross_embedders[name]`) are left as they are. With `cross_scale={name: lambda}` the block then adds

    to_out(softmax(Q K_i^T / sqrt d) V_i)  +  gate * lambda * W_out softmax(Q' K_c^T / sqrt d) V_c

  with `K_i, V_i` from the DiT's `text` input (the image features in the reference network): eq. 4 with
  `lambda_c = gate * lambda`. WanBlock gives every cross branch the block's pre-cross tokens, so `Q' = Q` and this is
  exactly eq. 4 (`tests/conditioning/test_motionflow.py`). The tie is a copy made at initialisation: training may
  move the stream's query / output projections away from the text cross-attention's (a superset of eq. 4; the
  MotionFlow method ties with `gate=0`, so the camera term starts at zero).

  Args:
    blocks: a `WanBlock`, or the DiT's stacked blocks (`WanDiT.blocks`: every array with a leading layers axis).
    name: the cross stream.
    gate: the stream gate's value (1 for eq. 4; 0 restores "starts at zero" with the tied query and output).

  Raises:
    MotionFlowError: the blocks have no such stream, or LoRA adapters on `attn2.to_q` / `attn2.to_out` (they would
      not be shared).
  """
  if blocks.cross is None or name not in blocks.cross:
    raise MotionFlowError(f"tie_cross_stream: the blocks have no cross stream {name!r}")
  attn2, stream = blocks.attn2, blocks.cross[name].attn
  if attn2.to_q.lora is not None or attn2.to_out.lora is not None:
    raise MotionFlowError("tie_cross_stream: attn2 carries LoRA adapters; the tied stream would not follow them")
  w_q, b_q = attn2.to_q.kernel[...], attn2.to_q.bias[...]
  if blocks.norm2 is not None:
    s, b = blocks.norm2.scale[...], blocks.norm2.bias[...]
    b_q = jnp.einsum("...i,...ij->...j", b.astype(jnp.float32), w_q.astype(jnp.float32)) + b_q
    w_q = s[..., :, None] * w_q
  stream.to_q.kernel[...] = w_q.astype(stream.to_q.kernel.dtype)
  stream.to_q.bias[...] = b_q.astype(stream.to_q.bias.dtype)
  stream.norm_q.scale[...] = attn2.norm_q.scale[...]
  stream.to_out.kernel[...] = attn2.to_out.kernel[...]
  stream.to_out.bias[...] = jnp.zeros_like(stream.to_out.bias[...])
  gate_param = blocks.cross[name].gate
  gate_param[...] = jnp.full_like(gate_param[...], gate)


# ----------------------------------------------------------------------------------------------------------------------
# Reference attention (sec. 3.5)
# ----------------------------------------------------------------------------------------------------------------------


class ReferenceKV(NamedTuple):
  """WanDiT inputs of reference attention: `dit(..., extra_kv=states, extra_kv_rope=positions)`."""

  states: jax.Array  # [num_layers, B, M, D]
  positions: jax.Array  # [M, 3] (frame, row, column) in patch units


def reference_positions(grid: tuple[int, int, int], layout: str = "side_by_side") -> jax.Array:
  """RoPE positions of a reference motion map on the token grid `(t, h, w)`: `[t * h * w, 3]` (frame, row, column).

  * "side_by_side" (the paper's concatenation along the width): column `j` of the map sits at column `w + j`, to the
    right of the video's `w` columns, so `[video | reference]` is one `(t, h, 2w)` grid.
  * "aligned": the map's token at `(f, i, j)` takes the video token's position `(f, i, j)` (RoPE then favours the
    same location; in the paper's UNet, without positional encoding, both layouts are the same).

  Raises:
    MotionFlowError: unknown layout.
  """
  if layout not in LAYOUTS:
    raise MotionFlowError(f"reference layout {layout!r} must be one of {LAYOUTS}")
  t, h, w = grid
  return grid_positions((t, h, w), (0, 0, w if layout == "side_by_side" else 0))


def reference_kv(hidden: jax.Array, grid: tuple[int, int, int], *, first: jax.Array | None = None,
                 per_frame: bool = False, num_layers: int | None = None,
                 layout: str = "side_by_side") -> ReferenceKV:
  """The video DiT's reference-attention inputs from the reference network's per-layer states.

  WanDiT's `extra_kv[l]` is normalised and modulated like block `l`'s tokens and projected by block `l`'s OWN k/v
  projections; block `l`'s self-attention then attends to `[its tokens; extra_kv[l]]` (blended in by a zero-initialised
  gate). At gate 1 this is exactly the paper's reference attention: the feature map and the reference motion map side
  by side, self-attention over both (same W_q, W_k, W_v), the video half kept (the reference half's queries are never
  computed). No extra projection is learned.

  Which states: ReferenceNet-style banking (MotionFlow, Animate Anyone) hands block `l` of the video network the
  tokens ENTERING block `l` of the reference network. Pass `first` (the reference tokens entering block 0: its
  `patch_embedding` output plus any token map) to get exactly that: `states = [first, hidden[0], ..., hidden[L-2]]`.
  Without `first`, block `l` gets the OUTPUT of reference block `l` (`hidden[l]`).

  Args:
    hidden: `[L_ref, B_ref, M_ref, D]` from `reference_dit(..., return_hidden=True)`.
    grid: `(t, h, w)` token grid of the reference motion map (the video's grid).
    first: optional `[B_ref, M_ref, D]` tokens entering reference block 0 (see above).
    per_frame: the reference network ran frame by frame (an image twin: `B_ref = B t`, `M_ref = h w`); frames are
      folded back into the sequence, frame-major: `[.., B, t h w, D]`.
    num_layers: layers of the video DiT when it differs from `L_ref`: video layer `l` takes reference layer
      `l * L_ref // num_layers`.
    layout: positions of the map, `reference_positions(grid, layout)`.

  Returns:
    `ReferenceKV(states [num_layers, B, t h w, D], positions [t h w, 3])`.

  Raises:
    MotionFlowError: shapes that do not fit the grid, `first` of the wrong shape, an unknown layout.
  """
  if hidden.ndim != 4:
    raise MotionFlowError(f"reference_kv: hidden must be [L, B, M, D], got {tuple(hidden.shape)}")
  t, h, w = grid
  L, b_ref, m_ref, d = hidden.shape
  want_m = h * w if per_frame else t * h * w
  if m_ref != want_m or (per_frame and b_ref % t):
    what = f"[L, B t, h w = {want_m}, D] (per_frame)" if per_frame else f"[L, B, t h w = {want_m}, D]"
    raise MotionFlowError(f"reference_kv: hidden must be {what} for the grid {grid}, got {tuple(hidden.shape)}")
  states = hidden
  if first is not None:
    if tuple(first.shape) != (b_ref, m_ref, d):
      raise MotionFlowError(f"reference_kv: first must be [B, M, D] = {(b_ref, m_ref, d)}, got {tuple(first.shape)}")
    states = jnp.concatenate([first[None].astype(hidden.dtype), hidden[:-1]], axis=0)
  if per_frame:
    states = states.reshape(L, b_ref // t, t * h * w, d)
  if num_layers is not None and num_layers != L:
    if num_layers < 1:
      raise MotionFlowError(f"reference_kv: num_layers must be >= 1, got {num_layers}")
    states = states[jnp.asarray(np.arange(num_layers) * L // num_layers)]
  return ReferenceKV(states, reference_positions(grid, layout))


# ----------------------------------------------------------------------------------------------------------------------
# Semantic encoder, semantic input, object attention (sec. 3.3, 3.5)
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SemanticViTConfig:
  """Size of the in-run semantic encoder (a DINOv2 ViT in JAX; frozen and hashable).

  Attributes:
    dim: token width (DINOv2 ViT-S/14: 384).
    num_layers: transformer blocks (ViT-S: 12).
    num_heads: attention heads (ViT-S: 6).
    mlp_dim: MLP hidden width (ViT-S: 1536).
    patch_size: square patch side in pixels (DINOv2: 14).
    resolution: `(height, width)` in pixels the reference image is resized to; multiples of `patch_size`.
    layer_scale: initial LayerScale value (DINOv2: 1.0; the loaded weights replace it).
    eps: LayerNorm epsilon (DINOv2: 1e-6).
    dtype, param_dtype: compute / parameter dtypes (LayerNorm and softmax in float32).
  """

  dim: int = 384
  num_layers: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536
  patch_size: int = 14
  resolution: tuple[int, int] = (224, 224)
  layer_scale: float = 1.0
  eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "resolution", tuple(int(r) for r in self.resolution))

  def replace(self, **kw) -> SemanticViTConfig:
    return dataclasses.replace(self, **kw)

  @property
  def grid(self) -> tuple[int, int]:
    """`(hp, wp)` patch grid of the features."""
    return self.resolution[0] // self.patch_size, self.resolution[1] // self.patch_size

  def validate(self) -> SemanticViTConfig:
    for name in ("dim", "num_layers", "num_heads", "mlp_dim", "patch_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise MotionFlowError(f"SemanticViTConfig.{name} must be a positive integer, got {value!r}")
    if self.dim % self.num_heads:
      raise MotionFlowError(f"SemanticViTConfig.dim {self.dim} is not divisible by {self.num_heads} heads")
    if len(self.resolution) != 2 or any(r < self.patch_size or r % self.patch_size for r in self.resolution):
      raise MotionFlowError(f"SemanticViTConfig.resolution {self.resolution} must be two multiples of the patch size "
                            f"{self.patch_size}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise MotionFlowError(f"SemanticViTConfig.{name} {getattr(self, name)!r} must be one of {_DTYPES}")
    return self

  @classmethod
  def from_dinov2(cls, path, resolution: tuple[int, int] = (224, 224), **overrides) -> SemanticViTConfig:
    """The size of a transformers `Dinov2Model` folder's `config.json` (nothing else is read).

    Raises:
      SemanticEncoderError: no `config.json`, or a model that is not a plain DINOv2 (registers, SwiGLU FFN).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
      raise SemanticEncoderError(
          f"semantic encoder: no transformers model folder at {path} (config.json missing). Save a DINOv2 ViT-S there "
          "with `AutoModel.from_pretrained('facebook/dinov2-small').save_pretrained(path)` where a hub is reachable")
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("model_type") != "dinov2" or cfg.get("use_swiglu_ffn") or cfg.get("num_register_tokens"):
      raise SemanticEncoderError(f"semantic encoder: {path} holds a {cfg.get('model_type')!r} model "
                                 f"(swiglu={cfg.get('use_swiglu_ffn')}, registers={cfg.get('num_register_tokens')}); "
                                 "the in-run encoder loads plain DINOv2 (dinov2-small / -base)")
    dim = int(cfg["hidden_size"])
    kw = dict(dim=dim, num_layers=int(cfg["num_hidden_layers"]), num_heads=int(cfg["num_attention_heads"]),
              mlp_dim=int(dim * float(cfg.get("mlp_ratio", 4))), patch_size=int(cfg["patch_size"]),
              resolution=tuple(resolution), layer_scale=float(cfg.get("layerscale_value", 1.0)),
              eps=float(cfg.get("layer_norm_eps", 1e-6)))
    kw.update(overrides)
    return cls(**kw).validate()


class ViTBlock(nnx.Module):
  """A DINOv2 block: `x + ls1 * Attn(LN(x))`, then `x + ls2 * MLP(LN(x))` (exact GELU, q/k/v with biases)."""

  def __init__(self, c: SemanticViTConfig, *, rngs: nnx.Rngs):
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.num_heads = c.num_heads
    self.norm1 = LayerNorm(c.dim, eps=c.eps, param_dtype=param_dtype, rngs=rngs)
    self.query = Dense(c.dim, c.dim, ("embed", "heads"), **kw)
    self.key = Dense(c.dim, c.dim, ("embed", "heads"), **kw)
    self.value = Dense(c.dim, c.dim, ("embed", "heads"), **kw)
    self.out = Dense(c.dim, c.dim, ("heads", "embed"), **kw)
    self.norm2 = LayerNorm(c.dim, eps=c.eps, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = Dense(c.dim, c.mlp_dim, ("embed", "mlp"), **kw)
    self.fc2 = Dense(c.mlp_dim, c.dim, ("mlp", "embed"), **kw)
    init = nnx.initializers.constant(c.layer_scale)
    self.ls1 = param(rngs, init, (c.dim,), ("embed",), param_dtype)
    self.ls2 = param(rngs, init, (c.dim,), ("embed",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    heads = lambda a: a.reshape(*a.shape[:-1], self.num_heads, -1)
    h = self.norm1(x)
    a = attention(heads(self.query(h)), heads(self.key(h)), heads(self.value(h)))
    x = x + (self.out(a.reshape(*a.shape[:2], -1)) * self.ls1[...].astype(x.dtype)).astype(x.dtype)
    h = self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))
    return x + (h * self.ls2[...].astype(x.dtype)).astype(x.dtype)


class SemanticViT(nnx.Module):
  """MotionFlow's semantic encoder run inside the jitted step (sec. 3.3, "a lightweight ViT ... (Caron et al.)", trained
  in stage 1): a DINOv2 ViT in JAX, randomly initialised (the CPU-sized default: a tiny one trained with the run) or
  loaded from a local transformers `Dinov2Model` folder (`load_dinov2`, real DINOv2 ViT-S/14 weights).

  Preprocessing (as `SemanticEncoder`): images in `[-1, 1]` -> `[0, 1]` -> bilinear (antialiased) resize to
  `config.resolution` -> ImageNet mean / std. Then DINOv2: patch embedding (a Conv2d with kernel = stride = patch),
  the class token, position embeddings (one per patch of the `resolution` grid; `load_dinov2` interpolates the
  checkpoint's table to it with transformers' own code), the blocks, a final LayerNorm.

  Args (of `__call__`):
    images: `[B, H, W, 3]` float in `[-1, 1]`.

  Returns:
    `[B, hp * wp, dim]` patch tokens (row-major, the class token dropped) after the final LayerNorm: DINOv2's
    `last_hidden_state[:, 1:]`, `(hp, wp) = config.grid`.

  Raises:
    MotionFlowError: images that are not `[B, H, W, 3]`.
  """

  def __init__(self, config: SemanticViTConfig, *, rngs: nnx.Rngs):
    self.config = config.validate()
    c = self.config
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    with nnx.use_eager_sharding(False):
      self.patch = PatchEmbed(3, c.dim, (1, c.patch_size, c.patch_size), rngs=rngs, dtype=dtype,
                              param_dtype=param_dtype)
      normal = nnx.initializers.truncated_normal(0.02)
      self.cls = param(rngs, normal, (c.dim,), ("embed",), param_dtype)
      self.pos = param(rngs, normal, (1 + c.grid[0] * c.grid[1], c.dim), (None, "embed"), param_dtype)
      self.blocks = nnx.List([ViTBlock(c, rngs=rngs) for _ in range(c.num_layers)])
      self.norm = LayerNorm(c.dim, eps=c.eps, param_dtype=param_dtype, rngs=rngs)

  def preprocess(self, images: jax.Array) -> jax.Array:
    """`[B, H, W, 3]` in [-1, 1] -> normalised `[B, h, w, 3]` float32 at `config.resolution`."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise MotionFlowError(f"semantic encoder: images must be [B, H, W, 3], got {tuple(images.shape)}")
    x = (images.astype(jnp.float32) + 1.0) / 2.0
    size = self.config.resolution
    if tuple(x.shape[1:3]) != size:
      x = jax.image.resize(x, (x.shape[0], *size, 3), method="linear")
    return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)

  def __call__(self, images: jax.Array) -> jax.Array:
    c = self.config
    x = self.preprocess(images)
    tokens = self.patch(x[:, None].astype(jnp.dtype(c.dtype)))  # [B, hp wp, dim]
    cls = jnp.broadcast_to(self.cls[...].astype(tokens.dtype), (tokens.shape[0], 1, c.dim))
    x = jnp.concatenate([cls, tokens], axis=1) + self.pos[...].astype(tokens.dtype)
    for block in self.blocks:
      x = block(x)
    return self.norm(x)[:, 1:]


def load_dinov2(module: SemanticViT, path) -> SemanticViT:
  """Copies a transformers `Dinov2Model` folder's weights into `module` (in place; torch reads the folder), with the
  checkpoint's position embeddings interpolated to `module.config.resolution` by the model's own
  `interpolate_pos_encoding` (bicubic, as DINOv2 runs at that resolution).

  Raises:
    SemanticEncoderError: the folder is missing or holds another model, or its size differs from `module.config`.
  """
  want = SemanticViTConfig.from_dinov2(path, module.config.resolution, dtype=module.config.dtype,
                                       param_dtype=module.config.param_dtype)
  if want != module.config:
    raise SemanticEncoderError(f"semantic encoder: {path} holds {want}, but the module was built as {module.config}")
  try:
    import torch
    import transformers
  except ImportError:
    raise SemanticEncoderError("semantic encoder: loading DINOv2 weights needs torch and transformers") from None
  model = transformers.Dinov2Model.from_pretrained(path).eval()
  c = module.config
  with torch.no_grad():
    dummy = torch.zeros(1, 1 + c.grid[0] * c.grid[1], c.dim)
    pos = model.embeddings.interpolate_pos_encoding(dummy, *c.resolution)[0].detach()
  sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

  def put(variable, value):
    variable[...] = jnp.asarray(np.asarray(value, np.float32).reshape(variable[...].shape), variable[...].dtype)

  conv = sd["embeddings.patch_embeddings.projection.weight"]  # [dim, 3, p, p] -> rows (ph, pw, c)
  put(module.patch.proj.kernel, conv.transpose(2, 3, 1, 0).reshape(-1, c.dim))
  put(module.patch.proj.bias, sd["embeddings.patch_embeddings.projection.bias"])
  put(module.cls, sd["embeddings.cls_token"])
  put(module.pos, pos.float().numpy())
  for i, block in enumerate(module.blocks):
    pre = f"encoder.layer.{i}."
    # transformers 5 names (q/k/v/o_proj), then the older ones (attention.attention.query, attention.output.dense).
    for name, keys in (("query", ("attention.q_proj", "attention.attention.query")),
                       ("key", ("attention.k_proj", "attention.attention.key")),
                       ("value", ("attention.v_proj", "attention.attention.value")),
                       ("out", ("attention.o_proj", "attention.output.dense")), ("fc1", ("mlp.fc1",)),
                       ("fc2", ("mlp.fc2",))):
      key = next((pre + k for k in keys if pre + k + ".weight" in sd), None)
      if key is None:
        raise SemanticEncoderError(f"semantic encoder: {path} has no {pre}{keys[0]}.weight (unknown DINOv2 layout)")
      put(getattr(block, name).kernel, sd[key + ".weight"].T)
      put(getattr(block, name).bias, sd[key + ".bias"])
    for name in ("norm1", "norm2"):
      put(getattr(block, name).scale, sd[pre + name + ".weight"])
      put(getattr(block, name).bias, sd[pre + name + ".bias"])
    put(block.ls1, sd[pre + "layer_scale1.lambda1"])
    put(block.ls2, sd[pre + "layer_scale2.lambda1"])
  put(module.norm.scale, sd["layernorm.weight"])
  put(module.norm.bias, sd["layernorm.bias"])
  return module


class SemanticFeatures(NamedTuple):
  """Patch features of a semantic encoder: `tokens [B, hp * wp, C]` float32 (row-major patches, class and register
  tokens removed), `grid = (hp, wp)`, `cls [B, C]`."""

  tokens: np.ndarray
  grid: tuple[int, int]
  cls: np.ndarray


class SemanticEncoder:
  """MotionFlow's semantic encoder (sec. 3.3, "ViT-S based DINO"): a frozen transformers `Dinov2Model` /
  `Dinov2WithRegistersModel` / `ViTModel` loaded from a LOCAL folder (nothing is downloaded), run with torch.

  Preprocessing: images in `[-1, 1]` (camjax frames) or uint8 -> `[0, 1]` -> bilinear (antialiased) resize to
  `resolution` -> normalised with the folder's `preprocessor_config.json` `image_mean` / `image_std` (ImageNet's when
  absent) -> `[B, 3, h, w]`.

  Args:
    path: folder with `config.json` and the weights (`save_pretrained` output), e.g. `facebook/dinov2-small` saved on a
      machine with network access.
    resolution: `(height, width)` in pixels fed to the ViT, multiples of its patch size (224 x 224: 16 x 16 patches of
      DINOv2's 14).
    device: torch device.

  Raises:
    SemanticEncoderError: the folder or its `config.json` is missing, the model type is not a ViT / DINOv2, torch or
      transformers is not installed, or `resolution` is not a multiple of the patch size.
  """

  MODEL_TYPES = ("dinov2", "dinov2_with_registers", "vit")

  def __init__(self, path, *, resolution: tuple[int, int] = (224, 224), device: str = "cpu"):
    path = Path(path)
    if not (path / "config.json").is_file():
      raise SemanticEncoderError(
          f"semantic encoder: no transformers model folder at {path} (config.json missing). Save a DINO ViT-S there "
          "with `AutoModel.from_pretrained('facebook/dinov2-small').save_pretrained(path)` where a hub is reachable, "
          "or pass precomputed features")
    try:
      import torch
      import transformers
    except ImportError:
      raise SemanticEncoderError("semantic encoder: needs torch and transformers (pip install camjax[parity])") \
          from None
    config = transformers.AutoConfig.from_pretrained(path)
    if config.model_type not in self.MODEL_TYPES:
      raise SemanticEncoderError(f"semantic encoder: {path} holds a {config.model_type!r} model; expected one of "
                                 f"{self.MODEL_TYPES}")
    self.patch_size = int(config.patch_size)
    if any(r % self.patch_size for r in resolution):
      raise SemanticEncoderError(f"semantic encoder: resolution {tuple(resolution)} is not a multiple of the patch "
                                 f"size {self.patch_size}")
    self.resolution = tuple(int(r) for r in resolution)
    self.dim = int(config.hidden_size)
    self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    self.model_type = config.model_type
    self.device = torch.device(device)
    self.model = transformers.AutoModel.from_pretrained(path).to(self.device).eval()
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    preprocessor = path / "preprocessor_config.json"
    if preprocessor.is_file():
      cfg = json.loads(preprocessor.read_text())
      mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
    self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
    self.std = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)

  @property
  def grid(self) -> tuple[int, int]:
    """`(hp, wp)` patch grid of the features."""
    return self.resolution[0] // self.patch_size, self.resolution[1] // self.patch_size

  def preprocess(self, images):
    """`[B, H, W, 3]` in [-1, 1] (float) or uint8 -> normalised torch `[B, 3, h, w]` float32 on the device."""
    import torch
    import torch.nn.functional as F

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise SemanticEncoderError(f"semantic encoder: images must be [B, H, W, 3], got {images.shape}")
    x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else (images.astype(np.float32) + 1.0) / 2.0
    x = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != self.resolution:
      x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False, antialias=True)
    return ((x - self.mean) / self.std).to(self.device)

  def __call__(self, images) -> SemanticFeatures:
    """Features of `images [B, H, W, 3]` (see the class docstring): `SemanticFeatures`."""
    import torch

    kw = {"interpolate_pos_encoding": True} if self.model_type == "vit" else {}
    with torch.no_grad():
      hidden = self.model(pixel_values=self.preprocess(images), **kw).last_hidden_state
    hidden = hidden.float().cpu().numpy()
    return SemanticFeatures(hidden[:, self.num_prefix_tokens:], self.grid, hidden[:, 0])


class SemanticInput(nnx.Module):
  """Semantic features added to the noisy input (sec. 3.5, "fused with multi-frame noise"): the reference image's
  patch features are resized to the token grid (`jax.image.resize` "linear": bilinear on pixel centres, antialiased
  when shrinking, as torch's `interpolate(mode="bilinear", antialias=True)`), projected to the DiT width by a
  zero-initialised, bias-free linear map and repeated over the frames: a `token_map` for WanDiT (added after the patch
  embedding, before block 0; sum it with any other token map).

  Args (of `__call__`):
    features: `[B, hp * wp, C]` semantic tokens (row-major patches).
    feature_grid: `(hp, wp)`.
    token_grid: `(t, h, w)` of the DiT tokens.

  Returns:
    `[B, t * h * w, dim]` in the compute dtype, tokens in (t, h, w) raster order; exactly zero at initialisation,
    and for all-zero features whatever the weights.
  """

  def __init__(self, semantic_dim: int, dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    with nnx.use_eager_sharding(False):
      self.proj = Dense(semantic_dim, dim, (None, "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                        use_bias=False, kernel_init=nnx.initializers.zeros_init())

  def __call__(self, features, feature_grid: tuple[int, int], token_grid: tuple[int, int, int]) -> jax.Array:
    hp, wp = feature_grid
    t, h, w = token_grid
    c = self.proj.kernel.shape[0]
    if features.ndim != 3 or features.shape[1:] != (hp * wp, c):
      raise MotionFlowError(f"SemanticInput: features must be [B, hp * wp = {hp * wp}, C = {c}], got "
                            f"{tuple(features.shape)}")
    b = features.shape[0]
    grid = features.astype(jnp.float32).reshape(b, hp, wp, c)
    if (hp, wp) != (h, w):
      grid = jax.image.resize(grid, (b, h, w, c), method="linear")
    tokens = self.proj(grid.reshape(b, h * w, c))  # [B, h w, D]
    return jnp.broadcast_to(tokens[:, None], (b, t, h * w, tokens.shape[-1])).reshape(b, t * h * w, -1)
