"""Track2View's dual-view track conditioner (papers/003, sec. 3.2, eqs. 1-4; REFERENCE.md section 5).

Paired 3D point tracks, projected into the source and the target camera, become two additive token maps, one for each
half of the DiT's frame-concatenated sequence `[source tokens, noisy target tokens]`:

  z_src [B, T, h, w, D] --bilinear sample at p_src-->  [B, N, T, D]
      + Dense(Fourier(p_src / grid)) -> residual MLP -> zero where v_src is False              (eq. 1)
      + frame embedding -> L-layer temporal transformer over T per track, keys = valid
        source frames -> LayerNorm  =: g [B, N, T, D], shared by both views                   (eq. 2)
  per view v in (source, target):
      g + Dense(Fourier(disparity_v / max disparity over BOTH views))                         (eq. 3)
      -> zero-initialised bias-free projection -> bilinear scatter at p_v with weights v_v,
         cells average their contributions -> [B, T * h * w, D]                                (eq. 4)

The paper's equations did not survive in its text; this is camjax's reconstruction (REFERENCE.md 5). Choices:

* `z_src` is the DiT's PATCH-EMBEDDED source tokens (`WanDiT.patch_embedding(source latents)`, width D) reshaped to the
  token grid `(T, h, w)`, not the VAE latents: the paper samples "the source video tokens"; sampling on the token grid
  makes the sample and the scatter grids the same cells the maps are added to (latents sit at the finer pre-patchify
  grid, `(1, 2, 2)` for WAN); and the frozen pretrained patch embedding already lifts 16 latent channels x a 2x2 patch
  to width D, so no extra input projection is learned and the features are meaningful from step 0.
* Positions are in PIXELS OF THE TOKEN GRID (x, y), pixel centres at `j + 0.5` (`camjax.kernels.bilinear`'s convention);
  `video_to_token_coords` converts video pixels. For the Fourier encoding they are normalised to `[-1, 1]` over the
  grid (`normalize_coords`: `2 p / (w, h) - 1`, REFERENCE.md's `p in [-1, 1]`).
* Fourier features of a scalar `u` are `sin(pi 2^k u), cos(pi 2^k u)`, `k = 0 .. num_fourier - 1`: band 0 winds once
  over the whole `[-1, 1]` extent (unique), the top band resolves `2^(1 - num_fourier)` of it (with 8 bands, about a
  quarter of a token on WAN's 52-token width). Disparity `1 / depth` is divided by the largest valid disparity of the
  sample over both views (so `u in [0, 1]`, relative scale between the views kept, global scale removed) and uses the
  same bands.
* The temporal transformer is pre-LN (WAN's `Attention`, q/k RMS-normalised, and `FeedForward`) with a fixed sinusoidal
  embedding of the latent frame index added first, so that a frame where the track is hidden in the source (a zero
  feature) still asks a frame-specific query: the paper's point is to carry visual context INTO those frames. Keys are
  the valid source frames; a track with none attends to its first frame (which holds only the frame embedding), so it
  stays finite and independent of its inputs.
* Both output projections are zero-initialised and BIAS-FREE, applied per track before the scatter (a linear map
  commutes with the cell average), so at init both maps are exactly zero (a loaded WAN is unchanged) and afterwards
  cells no valid track reaches stay exactly zero.
* Inputs at invalid entries are never read: positions and depths there are replaced before any arithmetic, so NaN or
  garbage there cannot leak into values or gradients.
* Sampling and scattering are `camjax.kernels.bilinear.bilinear_sample / bilinear_scatter` (no parameters);
  `implementation` / `interpret` / `blocks` pass through (tests force "xla" and the Pallas kernels in interpret mode).
  Latent frames are folded into the kernels' batch axis: `[B * T, h, w, D]` grids, `[B * T, N]` points.

Training augmentations (sec. 3.2, last paragraph): `augment_tracks` (keep 50-100% of the tracks) and
`drop_source_frames` (zero up to 50% of the source frames). Helpers: `subsample_tracks` (video -> latent frame rate),
`video_to_token_coords`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from camjax import sharding
from camjax.conditioning.cameractrl2 import ConditioningError, latent_frame_indices
from camjax.kernels.bilinear import bilinear_sample, bilinear_scatter
from camjax.models.layers import Dense, LayerNorm
from camjax.models.wan import Attention, FeedForward, timestep_embedding

# Logical activation name of the latent-frame axis inside the temporal transformer (tracks are the batch there). It
# must never map to the `context` mesh axis (T = 21 frames); "act_text" is the existing short, unsharded sequence name.
FRAME_AXIS = "act_text"


class TrackError(ConditioningError):
  """Track inputs that do not fit together or the token grid (shapes, frame counts, config values)."""


@dataclasses.dataclass(frozen=True)
class TrackConditionerConfig:
  """Size of the dual-view track conditioner (frozen and hashable: static under `jax.jit`).

  Attributes:
    dim: token width D (the DiT's width: 1536 for WAN 2.1 1.3B).
    num_fourier: frequency bands per encoded scalar (2 features each: sin, cos).
    mlp_hidden: hidden width of the residual MLP (eq. 1) and of the temporal transformer's FFNs.
    num_layers: temporal transformer layers L (paper default 8; Table 4 ablates 2-8).
    num_heads: attention heads of the temporal transformer (`dim % num_heads == 0`).
    dtype: compute dtype ("float32" | "bfloat16"); norms and softmax stay float32.
    param_dtype: parameter dtype (float32 master weights).
    eps: LayerNorm / q-k RMSNorm epsilon.
    attention: attention implementation passed to `camjax.models.layers.attention` ("xla" | "cudnn").
  """

  dim: int = 1536
  num_fourier: int = 8
  mlp_hidden: int = 1536
  num_layers: int = 8
  num_heads: int = 12
  dtype: str = "float32"
  param_dtype: str = "float32"
  eps: float = 1e-6
  attention: str = "xla"

  def replace(self, **kw) -> TrackConditionerConfig:
    return dataclasses.replace(self, **kw)

  def validate(self) -> TrackConditionerConfig:
    for name in ("dim", "num_fourier", "mlp_hidden", "num_heads"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        raise TrackError(f"TrackConditionerConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
    if not isinstance(self.num_layers, int) or self.num_layers < 0:
      raise TrackError(f"TrackConditionerConfig.num_layers must be an integer >= 0, got {self.num_layers!r}")
    if self.dim % self.num_heads or self.dim % 2:
      raise TrackError(f"TrackConditionerConfig.dim {self.dim} must be even and divisible by num_heads "
                       f"{self.num_heads}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise TrackError(f"TrackConditionerConfig.{name} {getattr(self, name)!r} must be float32, bfloat16 or float16")
    return self


class TrackMaps(NamedTuple):
  """The conditioner's output: additive token maps `[B, T * h * w, D]` for each half of the DiT sequence, tokens in
  (t, h, w) raster order like the DiT's patchified tokens."""

  source: jax.Array
  target: jax.Array

  def concatenated(self) -> jax.Array:
    """`[B, 2 T h w, D]`: the `token_map` of the frame-concatenated sequence `[source frames, target frames]`."""
    return jnp.concatenate([self.source, self.target], axis=1)


# ----------------------------------------------------------------------------------------------------------------------
# Encodings and coordinate helpers
# ----------------------------------------------------------------------------------------------------------------------


def fourier_features(u: jax.Array, num_bands: int) -> jax.Array:
  """NeRF-style Fourier features of the last axis: `[..., K] -> [..., K * 2 * num_bands]` float32, per scalar
  `[sin(pi 2^k u), cos(pi 2^k u)]` for `k = 0 .. num_bands - 1` (frequencies innermost)."""
  freqs = jnp.pi * 2.0 ** jnp.arange(num_bands, dtype=jnp.float32)
  args = u.astype(jnp.float32)[..., None] * freqs  # [..., K, F]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1).reshape(*u.shape[:-1], -1)


def normalize_coords(coords: jax.Array, grid_size: tuple[int, int]) -> jax.Array:
  """Token-grid pixels `(x, y)` -> `[-1, 1]` over the grid (`2 p / (w, h) - 1`; the grid's edges map to -1 and 1).

  Args:
    coords: `[..., 2]` (x, y) in pixels of a `grid_size = (h, w)` grid.
  """
  h, w = grid_size
  return 2.0 * coords / jnp.asarray([w, h], coords.dtype) - 1.0


def video_to_token_coords(coords: jax.Array, video_size: tuple[int, int], grid_size: tuple[int, int]) -> jax.Array:
  """Video pixels -> token-grid pixels, both (x, y) with pixel centres at `j + 0.5` (edges map to edges).

  Args:
    coords: `[..., 2]` (x, y) in pixels of the `video_size = (H, W)` video.
    grid_size: `(h, w)` of the DiT token grid (WAN: `(H / 16, W / 16)`: VAE x8 then patch x2).

  Returns:
    `[..., 2]` (x, y) in pixels of the token grid: `p * (w / W, h / H)`.
  """
  (H, W), (h, w) = video_size, grid_size
  return coords * jnp.asarray([w / W, h / H], jnp.result_type(coords.dtype, jnp.float32))


def subsample_tracks(tracks, temporal_factor: int, axis: int = 2):
  """Tracks at the video frame rate -> the latent frame rate: video frames `0, tf, 2 tf, ...`, the frames whose poses
  condition the latent frames in `camjax.conditioning.cameractrl2.latent_frame_indices`.

  Args:
    tracks: an array `[B, N, T_video, ...]` (positions `[B, N, T_video, 2]`, depths / validity `[B, N, T_video]`) or a
      pytree of them.
    temporal_factor: the VAE's temporal factor `tf` (4 for WAN).
    axis: the frame axis of every leaf (2 in the `[B, N, T, ...]` layout).

  Returns:
    The same structure with `1 + (T_video - 1) / tf` frames on `axis`.

  Raises:
    TrackError: when leaves disagree on `T_video` or `T_video - 1` is not a multiple of `tf`.
  """
  leaves = jax.tree.leaves(tracks)
  counts = {leaf.shape[axis] for leaf in leaves}
  if len(counts) != 1:
    raise TrackError(f"subsample_tracks: leaves have different frame counts {sorted(counts)} on axis {axis}")
  try:
    idx = latent_frame_indices(counts.pop(), temporal_factor)
  except ConditioningError as e:
    raise TrackError(f"subsample_tracks: {e}") from None
  return jax.tree.map(lambda a: jnp.take(a, jnp.asarray(idx), axis=axis), tracks)


# ----------------------------------------------------------------------------------------------------------------------
# Augmentations (training only)
# ----------------------------------------------------------------------------------------------------------------------


def augment_tracks(rng: jax.Array, valid: jax.Array, keep_min: float = 0.5, keep_max: float = 1.0) -> jax.Array:
  """Track subsampling (paper sec. 3.2): per sample keep a random fraction `U[keep_min, keep_max)` of its tracks.

  A track counts as present when any entry of `valid[b, n]` is True; `ceil(fraction x present)` of the present tracks
  are kept (uniformly at random), the others lose all their entries. To drop the same tracks from both views pass
  both masks stacked: `augment_tracks(rng, jnp.stack([v_src, v_tgt], -1))`.

  Args:
    rng: PRNG key.
    valid: `[B, N, ...]` bool (e.g. `[B, N, T]` or `[B, N, T, 2]`).
    keep_min, keep_max: bounds of the kept fraction, `0 <= keep_min <= keep_max <= 1`.

  Returns:
    `[B, N, ...]` bool: `valid` with the dropped tracks set to False.
  """
  if not 0.0 <= keep_min <= keep_max <= 1.0:
    raise TrackError(f"augment_tracks: need 0 <= keep_min <= keep_max <= 1, got {keep_min}, {keep_max}")
  valid = jnp.asarray(valid).astype(bool)
  if valid.ndim < 2:
    raise TrackError(f"augment_tracks: valid must be [B, N, ...], got shape {valid.shape}")
  B, N = valid.shape[:2]
  present = valid.reshape(B, N, -1).any(axis=-1)
  frac_rng, order_rng = jax.random.split(rng)
  fraction = jax.random.uniform(frac_rng, (B,), minval=keep_min, maxval=keep_max)
  num_present = present.sum(axis=-1)
  num_keep = jnp.clip(jnp.ceil(fraction * num_present), 0, num_present).astype(jnp.int32)
  scores = jnp.where(present, jax.random.uniform(order_rng, (B, N)), 2.0)  # absent tracks rank last
  rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
  keep = rank < num_keep[:, None]
  return valid & keep.reshape(B, N, *(1,) * (valid.ndim - 2))


def drop_source_frames(rng: jax.Array, num_frames: int, max_fraction: float = 0.5, *, batch: int = 1) -> jax.Array:
  """Source frame dropout (paper sec. 3.2): per sample, a uniform number in `[0, floor(max_fraction T)]` of the T
  source latent frames, chosen at random, are dropped.

  Apply the mask to BOTH the clean source latents (`latents * keep[:, :, None, None, None]`) and the source validity
  (`v_src & keep[:, None, :]`), so the conditioner does not sample a zeroed frame.

  Args:
    rng: PRNG key.
    num_frames: T latent frames.
    max_fraction: largest dropped fraction, in `[0, 1]`.
    batch: B.

  Returns:
    `[B, T]` bool, True = keep the frame.
  """
  if not 0.0 <= max_fraction <= 1.0:
    raise TrackError(f"drop_source_frames: max_fraction must be in [0, 1], got {max_fraction}")
  count_rng, order_rng = jax.random.split(rng)
  num_drop = jax.random.randint(count_rng, (batch,), 0, int(math.floor(max_fraction * num_frames)) + 1)
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(order_rng, (batch, num_frames)), axis=-1), axis=-1)
  return rank >= num_drop[:, None]


# ----------------------------------------------------------------------------------------------------------------------
# The conditioner
# ----------------------------------------------------------------------------------------------------------------------


class TemporalBlock(nnx.Module):
  """Pre-LN transformer block over the latent frames of each track: `x += Attn(LN x, key mask)`, `x += FFN(LN x)`."""

  def __init__(self, c: TrackConditionerConfig, *, rngs: nnx.Rngs):
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm1 = LayerNorm(c.dim, eps=c.eps, param_dtype=param_dtype, rngs=rngs)
    self.attn = Attention(c.dim, c.num_heads, eps=c.eps, implementation=c.attention, seq_axis=FRAME_AXIS, **kw)
    self.norm2 = LayerNorm(c.dim, eps=c.eps, param_dtype=param_dtype, rngs=rngs)
    self.ffn = FeedForward(c.dim, c.mlp_hidden, seq_axis=FRAME_AXIS, **kw)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x `[B N, T, D]`; mask `[B N, T]` bool (True = a key to attend to)."""
    x = x + self.attn(self.norm1(x), mask=mask).astype(x.dtype)
    return x + self.ffn(self.norm2(x)).astype(x.dtype)


class TrackConditioner(nnx.Module):
  """Track2View's dual-view track conditioner (module docstring): paired tracks -> `TrackMaps(source, target)`.

  Call::

    maps = conditioner(z_src, p_src, p_tgt, d_src, d_tgt, v_src, v_tgt, implementation=None, interpret=None,
                       blocks=None)
    prediction = dit(concat([src_latents, noisy_tgt_latents], frames), ..., token_map=maps.concatenated(),
                     positions=...)

  Args (of `__call__`; T latent frames, `(h, w)` the token grid, N tracks):
    z_src: `[B, T, h, w, D]` clean source tokens: the DiT's patch embedding of the source latents, `[B, T h w, D]`
      reshaped to the token grid.
    p_src, p_tgt: `[B, N, T, 2]` (x, y) track positions in the source / target view, in pixels of the token grid,
      pixel centres at `j + 0.5` (`video_to_token_coords` converts video pixels).
    d_src, d_tgt: `[B, N, T]` camera-space depths (metres; > 0 where valid; only ratios matter).
    v_src, v_tgt: `[B, N, T]` bool validity (in front of the camera and inside the view; False entries are ignored).
    implementation, interpret, blocks: passed to `camjax.kernels.bilinear` (`blocks`: a dict of Pallas block sizes).

  Returns:
    `TrackMaps(source, target)`, each `[B, T h w, D]` in the compute dtype, tokens in (t, h, w) raster order. Both are
    exactly zero at initialisation.

  Raises:
    TrackError: inputs whose shapes do not fit together or the config.
  """

  def __init__(self, config: TrackConditionerConfig, *, rngs: nnx.Rngs):
    self.config = config.validate()
    with nnx.use_eager_sharding(False):  # logical names are resolved by camjax.sharding, not at creation
      self._build(self.config, rngs)

  def _build(self, c: TrackConditionerConfig, rngs: nnx.Rngs):
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.position_proj = Dense(4 * c.num_fourier, c.dim, (None, "embed"), **kw)  # Fourier(x, y) -> D
    self.mlp_norm = LayerNorm(c.dim, eps=c.eps, param_dtype=param_dtype, rngs=rngs)
    self.mlp = FeedForward(c.dim, c.mlp_hidden, seq_axis=FRAME_AXIS, **kw)
    self.layers = nnx.List([TemporalBlock(c, rngs=rngs) for _ in range(c.num_layers)])
    self.final_norm = LayerNorm(c.dim, eps=c.eps, param_dtype=param_dtype, rngs=rngs)
    self.disparity_proj = Dense(2 * c.num_fourier, c.dim, (None, "embed"), **kw)  # Fourier(disparity) -> D
    zeros = nnx.initializers.zeros_init()
    self.source_out = Dense(c.dim, c.dim, (None, "embed"), use_bias=False, kernel_init=zeros, **kw)
    self.target_out = Dense(c.dim, c.dim, (None, "embed"), use_bias=False, kernel_init=zeros, **kw)

  @classmethod
  def create(cls, config: TrackConditionerConfig, *, seed: int = 0, mesh=None, rules=None) -> TrackConditioner:
    """Initialise with `nnx.Rngs(seed)`; with a mesh, parameters are created directly in their shardings."""
    return sharding.create_sharded(lambda: cls(config, rngs=nnx.Rngs(seed)), mesh, rules)

  def __call__(self, z_src, p_src, p_tgt, d_src, d_tgt, v_src, v_tgt, *, implementation: str | None = None,
               interpret: bool | None = None, blocks: dict | None = None) -> TrackMaps:
    self._check(z_src, p_src, p_tgt, d_src, d_tgt, v_src, v_tgt)
    kernel = dict(implementation=implementation, interpret=interpret, **(blocks or {}))
    grid = z_src.shape[2:4]
    v_src, v_tgt = v_src.astype(bool), v_tgt.astype(bool)
    p_src, p_tgt = _clean_coords(p_src, v_src), _clean_coords(p_tgt, v_tgt)
    feats = self._source_features(z_src, p_src, v_src, kernel)  # [B, N, T, D]
    feats = self._temporal(feats, v_src)
    disp_src, disp_tgt = joint_disparity(d_src, d_tgt, v_src, v_tgt)
    maps = []
    for out, p, v, disp in ((self.source_out, p_src, v_src, disp_src), (self.target_out, p_tgt, v_tgt, disp_tgt)):
      encoding = jnp.where(v[..., None], fourier_features(disp[..., None], self.config.num_fourier), 0)
      view = feats + self.disparity_proj(encoding).astype(feats.dtype)
      maps.append(_scatter_frames(out(view), p, v, grid, kernel))
    return TrackMaps(*maps)

  def _source_features(self, z_src, p_src, v_src, kernel):
    """Eq. 1: `ResMLP(sample(z_src, p_src) + Dense(Fourier(p_src)))`, zero where `v_src` is False. `[B, N, T, D]`."""
    c = self.config
    B, T, h, w, D = z_src.shape
    N = p_src.shape[1]
    dtype = jnp.dtype(c.dtype)
    sampled = bilinear_sample(z_src.reshape(B * T, h, w, D), _frames_first(p_src).reshape(B * T, N, 2),
                              _frames_first(v_src).reshape(B * T, N), **kernel)
    sampled = jnp.swapaxes(sampled.reshape(B, T, N, D), 1, 2).astype(dtype)  # [B, N, T, D]
    x = sampled + self.position_proj(fourier_features(normalize_coords(p_src, (h, w)), c.num_fourier))
    x = x.reshape(B * N, T, D)
    x = x + self.mlp(self.mlp_norm(x)).astype(dtype)
    return jnp.where(v_src[..., None], x.reshape(B, N, T, D), 0).astype(dtype)

  def _temporal(self, feats, v_src):
    """Eq. 2: frame embedding + L transformer layers over T per track, keys = valid source frames. `[B, N, T, D]`."""
    B, N, T, D = feats.shape
    x = feats + timestep_embedding(jnp.arange(T), D).astype(feats.dtype)
    x = x.reshape(B * N, T, D)
    mask = v_src.reshape(B * N, T)
    # A track never seen in the source attends to its first frame (only the frame embedding there): finite, and
    # independent of its inputs and of T.
    mask = mask | (~mask.any(axis=-1, keepdims=True) & (jnp.arange(T) == 0))
    for layer in self.layers:
      x = layer(x, mask)
    return self.final_norm(x).reshape(B, N, T, D)

  def _check(self, z_src, p_src, p_tgt, d_src, d_tgt, v_src, v_tgt):
    D = self.config.dim
    if z_src.ndim != 5 or z_src.shape[-1] != D:
      raise TrackError(f"z_src must be [B, T, h, w, D={D}] source tokens on the token grid, got {tuple(z_src.shape)}")
    B, T = z_src.shape[:2]
    if p_src.ndim != 4 or p_src.shape[0] != B or p_src.shape[2:] != (T, 2):
      raise TrackError(f"p_src must be [B={B}, N, T={T}, 2] (x, y token-grid pixels), got {tuple(p_src.shape)}")
    N = p_src.shape[1]
    for name, a, shape in (("p_tgt", p_tgt, (B, N, T, 2)), ("d_src", d_src, (B, N, T)), ("d_tgt", d_tgt, (B, N, T)),
                           ("v_src", v_src, (B, N, T)), ("v_tgt", v_tgt, (B, N, T))):
      if tuple(a.shape) != shape:
        raise TrackError(f"{name} must be {list(shape)} like p_src [B, N, T, 2], got {tuple(a.shape)}")
    for name, a in (("p_src", p_src), ("p_tgt", p_tgt), ("d_src", d_src), ("d_tgt", d_tgt)):
      if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TrackError(f"{name} must be floating point, got {a.dtype}")


def joint_disparity(d_src, d_tgt, v_src, v_tgt):
  """Eq. 3's input: disparity `1 / depth` of both views divided by the largest valid disparity of each sample over
  BOTH views (so `[0, 1]`, the views' relative scale kept, a global depth scale removed); 0 where invalid or
  `depth <= 0`.

  Args:
    d_src, d_tgt: `[B, N, T]` depths (metres). v_src, v_tgt: `[B, N, T]` bool.

  Returns:
    `(disp_src, disp_tgt)`, each `[B, N, T]` float32.
  """

  def disparity(d, v):
    ok = v.astype(bool) & (d > 0) & jnp.isfinite(d)
    return jnp.where(ok, 1.0 / jnp.where(ok, d, 1).astype(jnp.float32), 0.0)

  disp_src, disp_tgt = disparity(d_src, v_src), disparity(d_tgt, v_tgt)
  scale = jnp.maximum(disp_src.max(axis=(1, 2)), disp_tgt.max(axis=(1, 2)))[:, None, None]
  scale = jnp.maximum(scale, jnp.finfo(jnp.float32).tiny)
  return disp_src / scale, disp_tgt / scale


def _clean_coords(p, v):
  """Positions with invalid entries replaced by 0 (never read; keeps NaN there out of values and gradients)."""
  return jnp.where(v[..., None], p, 0).astype(jnp.promote_types(p.dtype, jnp.float32))


def _frames_first(a):
  """`[B, N, T, ...] -> [B, T, N, ...]`."""
  return jnp.swapaxes(a, 1, 2)


def _scatter_frames(values, coords, valid, grid, kernel):
  """Eq. 4 per latent frame: `values [B, N, T, D]` at `coords [B, N, T, 2]` with weights `valid` onto the `(h, w)`
  grid, cells averaged. Returns `[B, T h w, D]`."""
  B, N, T, D = values.shape
  h, w = grid
  out, _ = bilinear_scatter(_frames_first(values).reshape(B * T, N, D), _frames_first(coords).reshape(B * T, N, 2),
                            _frames_first(valid).reshape(B * T, N).astype(jnp.float32), height=h, width=w,
                            normalize=True, **kernel)
  return out.reshape(B, T * h * w, D)
