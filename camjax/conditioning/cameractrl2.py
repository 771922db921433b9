"""CameraCtrl II camera conditioning (papers/000, sec. 3.3-3.4; REFERENCE.md sections 2-3).

* Camera patchify: the 6-channel Plücker map at the latent token grid is embedded by a patchify with the SAME patch
  size and output width as the video patchify; its tokens are added to the video tokens before the first DiT block
  (nothing deeper: Table 4). It is zero-initialised so a pretrained WAN starts unchanged, and bias-free so the null
  camera (an all-zero map) adds exactly nothing, during training and after it.
* One pose per latent frame: with a causal VAE of temporal factor `tf`, latent frame `i` covers video frames
  `1 + (i - 1) tf ... i tf` and the pose of video frame `i * tf` is used (frame 0 for latent frame 0).
* The null camera is the all-zero Plücker map (unlabeled clips in joint training; the camera branch of CFG eq. 3).
* Clip extension (sec. 3.4): the clean latents of the last frames of clip i are concatenated before the noisy latents of
  clip i+1 along time, with a mask channel (1 = condition, 0 = generate); the loss covers generated tokens only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from camjax.errors import CamjaxError
from camjax.geometry.cameras import Cameras
from camjax.geometry.plucker import plucker
from camjax.models.layers import PatchEmbed


class ConditioningError(CamjaxError):
  """Conditioning inputs that do not fit the latent grid (frame counts, shapes)."""


class CameraPatchify(PatchEmbed):
  """Zero-initialised, bias-free patch embedding of the Plücker map: `[B, t, h, w, 6] -> [B, N, D]` camera tokens.

  Without a bias the map is linear, so the null camera (all-zero Plücker map) gives all-zero tokens whatever the
  weights: "null camera" and "no camera" stay the same model input after any amount of training.
  """

  def __init__(self, dim: int, patch_size, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    super().__init__(6, dim, patch_size, rngs=rngs, dtype=dtype, param_dtype=param_dtype, zero_init=True,
                     use_bias=False)


def latent_frame_indices(num_frames: int, temporal_factor: int) -> np.ndarray:
  """Video frame whose pose conditions each latent frame: `0, tf, 2 tf, ...` (`1 + (T - 1) / tf` of them).

  Raises:
    ConditioningError: if `(num_frames - 1)` is not a multiple of `temporal_factor`.
  """
  if num_frames < 1 or (num_frames - 1) % temporal_factor:
    raise ConditioningError(f"{num_frames} frames do not fit a causal VAE with temporal factor {temporal_factor} "
                            f"(need 1 + {temporal_factor}k frames)")
  return np.arange(0, num_frames, temporal_factor)


def camera_plucker(cameras: Cameras, latent_grid: tuple[int, int, int], temporal_factor: int = 4,
                   relative: bool = True, dtype=jnp.float32) -> jax.Array:
  """The CameraCtrl II camera input: Plücker map at the latent grid, one pose per latent frame.

  Args:
    cameras: per VIDEO frame cameras `[..., T, ...]` (K in pixels of the video), `T = 1 + tf (t - 1)`; or already one
      camera per latent frame (`T == t`).
    latent_grid: `(t, h, w)` of the latents (before the DiT patchify).
    temporal_factor: the VAE's temporal factor `tf` (4 for WAN; 1 for a frame-wise autoencoder).
    relative: express poses relative to the first frame (CameraCtrl convention; the first pose becomes identity).
    dtype: output dtype.

  Returns:
    `[..., t, h, w, 6]` Plücker map `[o x d, d]` (REFERENCE.md section 2) with K rescaled to the `h x w` grid.

  Raises:
    ConditioningError: frame counts that do not match the latent grid.
  """
  t, h, w = latent_grid
  n = cameras.num_frames
  if n != t:
    idx = latent_frame_indices(n, temporal_factor)
    if len(idx) != t:
      raise ConditioningError(f"{n} camera frames give {len(idx)} latent frames with temporal factor "
                              f"{temporal_factor}, but the latents have {t}")
    cameras = cameras.take(idx)
  if relative:
    cameras = cameras.relative(0)
  return plucker(cameras, h, w, dtype=dtype)


def null_camera(latents_shape) -> jax.Array:
  """The all-zero Plücker map `[B, t, h, w, 6]` for latents of shape `[B, t, h, w, C]`."""
  return jnp.zeros((*latents_shape[:-1], 6), jnp.float32)


def drop_cameras(rng: jax.Array, camera: jax.Array, labeled: jax.Array | None, drop_prob: float) -> jax.Array:
  """Null the camera of unlabeled clips and, with probability `drop_prob`, of labeled ones (camera CFG training).

  Args:
    rng: PRNG key.
    camera: `[B, t, h, w, 6]` Plücker maps.
    labeled: optional `[B]` bool (False = unlabeled clip: its camera is always nulled).
    drop_prob: probability of dropping a labeled clip's camera.

  Returns:
    `[B, t, h, w, 6]` with dropped rows set to zero.
  """
  keep = jax.random.uniform(rng, camera.shape[:1]) >= drop_prob
  if labeled is not None:
    keep = keep & labeled.astype(bool)
  return camera * keep[:, None, None, None, None].astype(camera.dtype)


def extension_mask(batch: int, latent_grid: tuple[int, int, int], num_cond: jax.Array | int) -> jax.Array:
  """Condition mask for clip extension: the first `num_cond` latent frames are clean conditions (1), the rest 0.

  Args:
    batch: B.
    latent_grid: `(t, h, w)`.
    num_cond: `[B]` or scalar number of condition latent frames per sample.

  Returns:
    `[B, t, h, w, 1]` float32.
  """
  t, h, w = latent_grid
  num_cond = jnp.broadcast_to(jnp.asarray(num_cond), (batch,))
  frame = jnp.arange(t)[None] < num_cond[:, None]  # [B, t]
  return jnp.broadcast_to(frame[:, :, None, None, None], (batch, t, h, w, 1)).astype(jnp.float32)


def sample_extension_frames(rng: jax.Array, batch: int, num_latent_frames: int, min_frames: int = 1,
                            max_fraction: float = 0.5, extension_prob: float = 0.5) -> jax.Array:
  """Number of clean condition latent frames per sample for joint single-clip / extension training.

  CameraCtrl II trains extension jointly with single-clip generation, with "from 5 frames up to 50% of the clip" as
  conditions (video frames; `min_frames` here counts latent frames). With probability `1 - extension_prob` a sample
  has no condition frames (plain generation).

  Returns:
    `[B]` int32 in `[0, floor(max_fraction * t)]`.
  """
  hi = max(int(max_fraction * num_latent_frames), min_frames)
  k_rng, p_rng = jax.random.split(rng)
  n = jax.random.randint(k_rng, (batch,), min_frames, hi + 1)
  use = jax.random.uniform(p_rng, (batch,)) < extension_prob
  return jnp.where(use, n, 0).astype(jnp.int32)
