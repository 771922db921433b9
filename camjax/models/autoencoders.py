"""Video autoencoders: the interface every camjax autoencoder follows, and a lossless pixel autoencoder.

Conventions shared by every autoencoder:

* **Video** is `[B, T, H, W, 3]` floating point (float32 or bfloat16), RGB, values in `[-1, 1]` (`uint8 / 127.5 - 1`).
* **Latents** are `[B, t, h, w, c]`, channels-last.
* **Causal time axis** (the WAN 2.x / CameraCtrl II VAE convention): the first frame is encoded alone into latent
  frame 0, then every following group of `temporal_factor` frames into one latent frame, so

      t = 1 + (T - 1) // temporal_factor,   valid only when (T - 1) % temporal_factor == 0  (T = 1 + k * tf).

  Video frame `f >= 1` lands in latent frame `1 + (f - 1) // temporal_factor`; frame 0 in latent frame 0.
* **Space**: `h = H / spatial_factor`, `w = W / spatial_factor`, which must divide exactly.

Shapes that break these rules raise :class:`AutoencoderError` naming the shape and the rule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol, runtime_checkable

import einops
import jax.numpy as jnp

from camjax.errors import CamjaxError


class AutoencoderError(CamjaxError, ValueError):
  """A video or latent whose shape or dtype an autoencoder cannot take, or an invalid autoencoder setting."""


@runtime_checkable
class Autoencoder(Protocol):
  """What camjax needs from a video autoencoder (structural: any class with these members qualifies).

  Implementations need not inherit from anything; :class:`AutoencoderShapes` is a plain mixin that supplies
  `latent_shape`, `video_frames` and shape checks from the three factor attributes (it has no metaclass, so it
  mixes with `flax.nnx.Module`, Linen modules and dataclasses alike).

  Attributes:
    temporal_factor: video frames per latent frame after the first (causal convention, see the module docstring).
    spatial_factor: pixels per latent token along each of height and width.
    latent_channels: `c`, the size of the latent channel axis.
  """

  temporal_factor: int
  spatial_factor: int
  latent_channels: int

  def encode(self, video):
    """`[B, T, H, W, 3]` float video in `[-1, 1]` -> `[B, t, h, w, c]` latents."""
    ...

  def decode(self, latents):
    """`[B, t, h, w, c]` latents -> `[B, T, H, W, 3]` video with `T = video_frames(t)`."""
    ...

  def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """`(t, h, w, c)` of the latents of a `frames x height x width` video."""
    ...

  def video_frames(self, latent_frames: int) -> int:
    """Number of video frames `T` that `latent_frames` latent frames decode to."""
    ...


def _nearest_multiples(value: int, step: int, offset: int = 0) -> str:
  """`"a or b"`: the valid sizes `offset + k * step` (k >= 0, size >= max(offset, 1)) just below and above `value`."""
  below = offset + ((value - offset) // step) * step
  above = below + step
  options = [n for n in (below, above) if n >= max(offset, 1) and n != value]
  return " or ".join(str(n) for n in options)


class AutoencoderShapes:
  """Mixin: latent/video shape arithmetic and checks from `temporal_factor`, `spatial_factor`, `latent_channels`.

  The class using it must provide those three attributes (fields or properties).
  """

  temporal_factor: int
  spatial_factor: int
  latent_channels: int

  def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Latent shape of one video.

    Args:
      frames: `T`, the number of video frames; must be `1 + k * temporal_factor` for some `k >= 0`.
      height: `H` in pixels; must be divisible by `spatial_factor`.
      width: `W` in pixels; must be divisible by `spatial_factor`.

    Returns:
      `(t, h, w, c)` with `t = 1 + (T - 1) // temporal_factor`, `h = H / spatial_factor`,
      `w = W / spatial_factor`, `c = latent_channels`.

    Raises:
      AutoencoderError: a size that breaks the rules above.
    """
    tf, sf = self.temporal_factor, self.spatial_factor
    frames, height, width = int(frames), int(height), int(width)
    if frames < 1 or (frames - 1) % tf:
      raise AutoencoderError(
          f"{frames} frames cannot be encoded with temporal factor {tf}: need 1 + {tf}k frames "
          f"(the first frame alone, then groups of {tf}), e.g. {_nearest_multiples(frames, tf, 1)}")
    for name, size in (("height", height), ("width", width)):
      if size < 1 or size % sf:
        raise AutoencoderError(
            f"{name} {size} px is not divisible by spatial factor {sf}: use e.g. {_nearest_multiples(size, sf)}")
    return 1 + (frames - 1) // tf, height // sf, width // sf, self.latent_channels

  def video_frames(self, latent_frames: int) -> int:
    """Video frames decoded from `latent_frames` latent frames: `1 + (latent_frames - 1) * temporal_factor`.

    Raises:
      AutoencoderError: `latent_frames < 1`.
    """
    latent_frames = int(latent_frames)
    if latent_frames < 1:
      raise AutoencoderError(f"{latent_frames} latent frames: need at least 1")
    return 1 + (latent_frames - 1) * self.temporal_factor

  def check_video(self, video, channels: int = 3) -> tuple[int, int, int, int]:
    """Checks a `[B, T, H, W, channels]` floating video (shape and dtype only; values are not inspected).

    Returns:
      `(t, h, w, c)`, as :meth:`latent_shape`.

    Raises:
      AutoencoderError: wrong rank, channel count, non-floating dtype, or sizes that break the shape rules.
    """
    shape = tuple(video.shape)
    if len(shape) != 5 or shape[-1] != channels:
      raise AutoencoderError(f"video shape {shape}: expected [B, T, H, W, {channels}]")
    if not jnp.issubdtype(video.dtype, jnp.floating):
      raise AutoencoderError(
          f"video dtype {video.dtype} is not floating point: expected values in [-1, 1], e.g. uint8 / 127.5 - 1")
    try:
      return self.latent_shape(*shape[1:4])
    except AutoencoderError as e:
      raise AutoencoderError(f"video shape {shape} [B, T, H, W, C]: {e}") from None

  def check_latents(self, latents) -> None:
    """Checks `[B, t, h, w, latent_channels]` latents (shape only).

    Raises:
      AutoencoderError: wrong rank, channel count, or `t < 1`.
    """
    shape = tuple(latents.shape)
    if len(shape) != 5 or shape[-1] != self.latent_channels or shape[1] < 1:
      raise AutoencoderError(
          f"latent shape {shape}: expected [B, t >= 1, h, w, {self.latent_channels}] (channels-last)")


def _check_positive_int(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise AutoencoderError(f"{name} must be a positive int, got {value!r}")


def _check_factors(ae) -> None:
  for name in ("temporal_factor", "spatial_factor", "channels"):
    _check_positive_int(name, getattr(ae, name))


def slot_frames(latent_frames: int, temporal_factor: int, num_frames: int):
  """`[t, tf]` int32: the video frame each slot `(i, ft)` of `PixelAutoencoder`'s latents holds,
  `max(i tf + ft - (tf - 1), 0)` (latent frame 0 holds frame 0 repeated `tf` times), clipped to `num_frames - 1`."""
  tf = int(temporal_factor)
  frames = jnp.maximum(jnp.arange(latent_frames)[:, None] * tf + jnp.arange(tf)[None] - (tf - 1), 0)
  return jnp.minimum(frames, int(num_frames) - 1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class PixelAutoencoder(AutoencoderShapes):
  """Lossless space-to-depth "autoencoder": no weights, an exact invertible reshuffle of pixels into channels.

  A stand-in for a learned VAE with the same shape contract (tests, CPU smoke runs, pixel-space diffusion).

  encode:
    1. pad the front of the video with `temporal_factor - 1` copies of frame 0, so `T = 1 + k * tf` frames become
       `tf * t` frames and frame 0 fills latent frame 0 on its own (causal convention);
    2. fold every group of `tf` frames and every `sf x sf` pixel block into channels, giving
       `latent_channels = channels * tf * sf**2`;
    3. apply `(x - shift) * scale` (skipped when it is the identity).

  Latent channel order is `(ft, fy, fx, c)`, colour fastest: channel index
  `((ft * sf + fy) * sf + fx) * channels + c`, where `ft` is the frame offset inside the (padded) group of `tf`,
  `fy` / `fx` the row / column offset inside the `sf x sf` block and `c` the colour. Latent `[b, i, y, x, ch]` holds
  padded frame `i * tf + ft`, i.e. video frame `i * tf + ft - (tf - 1)` (frame 0 for every `ft` of `i = 0`),
  pixel row `y * sf + fy`, column `x * sf + fx`, colour `c`.

  decode inverts encode exactly and drops the padded frames (for latent frame 0 only offset `ft = tf - 1` is read,
  the copies at `ft < tf - 1` are ignored). `decode(encode(v)) == v` bit for bit when `scale == 1` and
  `shift == 0`; otherwise to rounding (~1e-6 relative in float32). Jit-able, vmap-able, keeps the input dtype
  (bfloat16 stays bfloat16). Values are not range-checked, so any float video round-trips.

  Attributes:
    temporal_factor: `tf`, frames per latent frame after the first.
    spatial_factor: `sf`, pixels per latent token along height and width.
    channels: colour channels of the video (3 for RGB).
    scale: multiplies the latents after `shift` is subtracted, e.g. `1 / std` for ~unit-variance latents.
    shift: subtracted from the folded pixels before scaling, e.g. their mean.

  Raises:
    AutoencoderError: on construction, a non-positive factor or channel count, or a zero / non-finite scale or
      non-finite shift.
  """

  temporal_factor: int = 4
  spatial_factor: int = 8
  channels: int = 3
  scale: float = 1.0
  shift: float = 0.0

  def __post_init__(self):
    _check_factors(self)
    if not math.isfinite(self.scale) or self.scale == 0:
      raise AutoencoderError(f"scale must be finite and non-zero, got {self.scale!r}")
    if not math.isfinite(self.shift):
      raise AutoencoderError(f"shift must be finite, got {self.shift!r}")

  @property
  def latent_channels(self) -> int:
    """`channels * temporal_factor * spatial_factor**2` (3 * 4 * 64 = 768 with the defaults)."""
    return self.channels * self.temporal_factor * self.spatial_factor**2

  @property
  def _identity_affine(self) -> bool:
    return self.scale == 1.0 and self.shift == 0.0

  def encode(self, video):
    """Folds a video into latents.

    Args:
      video: `[B, T, H, W, channels]` floating video, values nominally in `[-1, 1]`; `T = 1 + k * temporal_factor`,
        `H` and `W` divisible by `spatial_factor`.

    Returns:
      `[B, t, h, w, latent_channels]` latents in the input dtype, `t = 1 + (T - 1) // temporal_factor`,
      channels ordered `(ft, fy, fx, c)` (see the class docstring).

    Raises:
      AutoencoderError: a shape or dtype that breaks the rules (checked statically, also under jit).
    """
    video = jnp.asarray(video)
    self.check_video(video, self.channels)
    tf, sf = self.temporal_factor, self.spatial_factor
    if tf > 1:
      video = jnp.concatenate([jnp.repeat(video[:, :1], tf - 1, axis=1), video], axis=1)
    z = einops.rearrange(video, "b (t ft) (h fy) (w fx) c -> b t h w (ft fy fx c)", ft=tf, fy=sf, fx=sf)
    if not self._identity_affine:
      z = (z - self.shift) * self.scale
    return z

  def decode(self, latents):
    """Unfolds latents back into a video (exact inverse of :meth:`encode`).

    Args:
      latents: `[B, t, h, w, latent_channels]`, channels ordered `(ft, fy, fx, c)`.

    Returns:
      `[B, T, h * spatial_factor, w * spatial_factor, channels]` video in the latents' dtype, with
      `T = 1 + (t - 1) * temporal_factor`.

    Raises:
      AutoencoderError: wrong rank or channel count.
    """
    z = jnp.asarray(latents)
    self.check_latents(z)
    tf, sf = self.temporal_factor, self.spatial_factor
    if not self._identity_affine:
      z = z / self.scale + self.shift
    video = einops.rearrange(z, "b t h w (ft fy fx c) -> b (t ft) (h fy) (w fx) c", ft=tf, fy=sf, fx=sf,
                             c=self.channels)
    return video[:, tf - 1:]


@dataclasses.dataclass(frozen=True)
class _LearnedShapes(AutoencoderShapes):
  """The factors and channel count of a learned VAE (WAN's by default) whose weights live elsewhere."""

  temporal_factor: int = 4
  spatial_factor: int = 8
  channels: int = 16

  def __post_init__(self):
    _check_factors(self)

  @property
  def latent_channels(self) -> int:
    return self.channels


@dataclasses.dataclass(frozen=True)
class PrecomputedLatents(_LearnedShapes):
  """The shape contract of a learned VAE whose latents were computed offline and stored in the records.

  Paper-scale training (CameraCtrl II on WAN 2.1) reads WAN-VAE latents from `ClipRecord.latents`; the WAN VAE runs
  beside the steps (`camjax.methods.base.make_video_codec`): training needs only the shapes, so this class carries
  the factors and channel count and refuses to encode or decode. Latents are expected already normalised the way
  the DiT was trained (WAN: per-channel `(z - mean) / std`).

  Attributes:
    temporal_factor: frames per latent frame after the first (WAN VAE: 4).
    spatial_factor: pixels per latent cell along height and width (WAN VAE: 8).
    channels: latent channels (WAN VAE: 16).

  Raises:
    AutoencoderError: on construction, a non-positive factor or channel count; `encode` / `decode` always.
  """

  @property
  def can_decode(self) -> bool:
    return False

  def encode(self, video):
    raise AutoencoderError("PrecomputedLatents cannot encode video: the records must carry `latents` (precompute "
                           "them with the VAE the DiT was trained with)")

  def decode(self, latents):
    raise AutoencoderError("PrecomputedLatents cannot decode latents: decode them offline with the matching VAE")


@dataclasses.dataclass(frozen=True)
class StepVAE(_LearnedShapes):
  """The shape contract of a learned VAE that runs INSIDE the jitted steps (`autoencoder.kind="wan_vae"`): methods
  that encode inside the step what the records cannot carry (RealCam-I2V: the given frames of a mode drawn per
  sample, the preview rendered at sampling time) put the WAN VAE of `path` into the generator as a frozen module
  (`Generator.vae`); its weights are arguments of the step like every other parameter, never constants of it.

  This object is what `Static.autoencoder` holds outside the step (shapes for data, DiT and batch checks; hashable);
  inside the step `camjax.methods.base.bind_autoencoder(model, static)` swaps in the generator's `vae`, which
  encodes and decodes. Called unbound, `encode` / `decode` raise.

  Attributes:
    temporal_factor: frames per latent frame after the first (WAN VAE: 4).
    spatial_factor: pixels per latent cell along height and width (WAN VAE: 8).
    channels: latent channels (WAN VAE: 16).
    path: the diffusers `AutoencoderKLWan` folder.

  Raises:
    AutoencoderError: on construction, a non-positive factor or channel count; `encode` / `decode` always.
  """

  path: str = ""

  @property
  def can_decode(self) -> bool:
    return True

  def encode(self, video):
    raise AutoencoderError(f"the WAN VAE of {self.path!r} encodes inside the step only through the generator's "
                           "`vae` module: call camjax.methods.base.bind_autoencoder(model, static) first (a method "
                           "that does not bind it cannot use autoencoder.kind='wan_vae')")

  def decode(self, latents):
    raise AutoencoderError(f"the WAN VAE of {self.path!r} decodes inside the step only through the generator's "
                           "`vae` module: call camjax.methods.base.bind_autoencoder(model, static) first")
