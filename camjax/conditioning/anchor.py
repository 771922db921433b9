"""Anchored clean-sample prediction, shared by the CPU-sized models of every method (CameraCtrl II, RealCam-I2V,
MotionFlow, Track2View): the DiT predicts a residual on an anchor, the last condition frame of the pixel
autoencoder's latents repeated over the window (`condition_anchor`), optionally moved by the cameras. Two ways to move
it: per-cell image flow read by a zero-initialised head (`FlowHead`, `warp_anchor`), or the anchor frame reprojected
through the conditioning cameras at a per-cell disparity read by a zero-initialised head (`DisparityHead`,
`reproject_anchor`, with CameraCtrl II's slot poses from `anchor_poses`). An untrained head gives the trivial baseline
("repeat the condition frame", or the frame on one plane), so training only learns how the scene moves or how deep
it is. camjax's CPU-scale choice, not a paper's (each method's module docstring says how it uses them;
docs/evaluation.md, E3 and E7, measured why).

Every function reads the pixel autoencoder's latent layout (`camjax.models.autoencoders.PixelAutoencoder`: channels
ordered `(ft, fy, fx, c)`) and works inside jit.
"""

from __future__ import annotations

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from camjax.geometry import se3, warp
from camjax.models.autoencoders import slot_frames
from camjax.models.layers import Dense, LayerNorm, unpatchify


def anchor_poses(static, batch: dict, cond_mask):
  """Per output slot the pose of its video frame relative to the anchor (last condition) frame, for `depth_warp`.

  Slot `(i, ft)` of the pixel autoencoder holds video frame `max(i * tf + ft - (tf - 1), 0)`; the anchor frame is
  `(n - 1) * tf` (n = clean latent frames). Clips without a camera (`batch["has_camera"]` False: unlabeled clips, the
  evaluation's null camera) get the identity: no motion. Camera dropout and CFG's null branches drop only the DiT's
  Plücker tokens and keep the warp (the same warp in every guidance set, so guidance extrapolates the residual, not
  the image motion: `3 x warped - 2 x still` would be a double exposure).

  Returns:
    `(rel [B, t, tf, 4, 4]` mapping the slot camera's coordinates to the anchor camera's (`w2c_anchor @ c2w_slot`),
    `K_slot [B, t, tf, 3, 3]`, `K_anchor [B, 3, 3])` (pixel intrinsics: zooms change them per frame).
  """
  tf = static.autoencoder.temporal_factor
  w2c, K = batch["w2c"], batch["K"]
  b, t = cond_mask.shape[:2]
  n = jnp.sum(cond_mask[:, :, 0, 0, 0], axis=1).astype(jnp.int32)
  frames = slot_frames(t, tf, w2c.shape[1])  # [t, tf]
  a = jnp.clip((n - 1) * tf, 0, w2c.shape[1] - 1)  # [B]
  w2c_a = jnp.take_along_axis(w2c, a[:, None, None, None], axis=1)[:, 0]  # [B, 4, 4]
  c2w = se3.invert(w2c[:, frames.reshape(-1)]).reshape(b, t, tf, 4, 4)
  rel = w2c_a[:, None, None] @ c2w
  keep = batch["has_camera"].astype(bool) & (n > 0)
  rel = jnp.where(keep[:, None, None, None, None], rel, jnp.eye(4, dtype=rel.dtype))
  K_anchor = jnp.take_along_axis(K, a[:, None, None, None], axis=1)[:, 0]
  K_slot = K[:, frames.reshape(-1)].reshape(b, t, tf, 3, 3)
  K_slot = jnp.where(keep[:, None, None, None, None], K_slot, K_anchor[:, None, None])
  return rel, K_slot, K_anchor


def condition_anchor(latents, cond_mask, temporal_factor: int):
  """The last clean condition frame, repeated over the window, in the pixel autoencoder's latent layout.

  With `model.anchor = "condition_frame"` the DiT's clean-sample prediction is a residual on this anchor, so an
  untrained model predicts "repeat the last condition frame" (the trivial baseline) and training only has to learn
  how the scene moves. Latent frame `n - 1` (n = clean latent frames) holds the last condition video frame at
  temporal offset `ft = tf - 1` (channels ordered `(ft, fy, fx, c)`, `camjax.models.autoencoders.PixelAutoencoder`);
  that group is tiled over `ft` and over the latent frames. Samples without condition frames get a zero anchor.

  Args:
    latents: `[B, t, h, w, C]` clean latents (`C = tf * rest`).
    cond_mask: `[B, t, h, w, 1]` (1 = clean condition latent frame; condition frames come first).
    temporal_factor: the autoencoder's `tf`.

  Returns:
    `[B, t, h, w, C]` anchor latents.
  """
  b, t, h, w, c = latents.shape
  n = jnp.sum(cond_mask[:, :, 0, 0, 0], axis=1).astype(jnp.int32)  # [B]
  last = jnp.take_along_axis(latents, jnp.maximum(n - 1, 0)[:, None, None, None, None], axis=1)  # [B, 1, h, w, C]
  groups = last.reshape(b, 1, h, w, temporal_factor, c // temporal_factor)[..., -1:, :]
  anchor = jnp.broadcast_to(groups, (b, 1, h, w, temporal_factor, c // temporal_factor)).reshape(b, 1, h, w, c)
  return jnp.broadcast_to(anchor, latents.shape) * (n > 0)[:, None, None, None, None].astype(latents.dtype)


class FlowHead(nnx.Module):
  """Per-token image motion of the `flow_warp` anchor: `LN(hidden) [B, N, D] -> [B, t, h, w, tf, 2]` displacements
  (x, y) in pixels of each latent cell (one `spatial_factor`-pixel cell of the pixel autoencoder) for each of the
  `tf` video frames it holds; zero-initialised (an untrained head is the plain "repeat the condition frame" anchor).
  """

  def __init__(self, dim: int, patch_size, temporal_factor: int, *, rngs: nnx.Rngs, scale: float = 8.0):
    self.patch_size, self.temporal_factor, self.scale = tuple(patch_size), int(temporal_factor), float(scale)
    self.norm = LayerNorm(dim, rngs=rngs)
    cells = patch_size[0] * patch_size[1] * patch_size[2]
    self.proj = Dense(dim, cells * temporal_factor * 2, ("embed", "patch"), rngs=rngs,
                      kernel_init=nnx.initializers.zeros_init())

  def __call__(self, hidden: jax.Array, grid) -> jax.Array:
    t, h, w = grid
    pt, ph, pw = self.patch_size
    flow = self.proj(self.norm(hidden.astype(jnp.float32))) * self.scale  # [B, N, cells * tf * 2]
    flow = unpatchify(flow, (t // pt, h // ph, w // pw), self.patch_size)  # [B, t, h, w, tf * 2]
    return flow.reshape(*flow.shape[:-1], self.temporal_factor, 2)


def warp_anchor(anchor, flow, spatial_factor: int, temporal_factor: int):
  """The condition frame of a `condition_anchor` warped by per-cell flow, back in the pixel latent layout.

  Args:
    anchor: `[B, t, h, w, C]` from `condition_anchor` (the same frame in every slot; `C = tf * sf * sf * 3`).
    flow: `[B, t, h, w, tf, 2]` displacements in pixels (x, y) per latent cell and video frame of the slot; upsampled
      bilinearly to every pixel, and each output pixel samples the condition frame at `pixel + flow` (bilinear,
      edge-clamped).
    spatial_factor, temporal_factor: the pixel autoencoder's factors.

  Returns:
    `[B, t, h, w, C]` warped anchor latents.
  """
  b, t, h, w, c = anchor.shape
  sf, tf = spatial_factor, temporal_factor
  frame = einops.rearrange(anchor[:, 0], "b h w (ft fy fx c) -> b ft (h fy) (w fx) c", ft=tf, fy=sf, fx=sf)[:, -1]
  H, W = h * sf, w * sf
  f = einops.rearrange(flow, "b t h w ft two -> b (t ft) h w two")
  f = jax.image.resize(f, (b, t * tf, H, W, 2), "linear")
  xs, ys = warp.pixel_grid(H, W)
  frames = jnp.broadcast_to(frame[:, None], (b, t * tf, *frame.shape[1:]))
  out = warp.sample_bilinear(frames, xs + f[..., 0], ys + f[..., 1])
  out = einops.rearrange(out, "b (t ft) (h fy) (w fx) c -> b t h w (ft fy fx c)", t=t, ft=tf, fy=sf, fx=sf)
  return out.astype(anchor.dtype)


class DisparityHead(nnx.Module):
  """Per-cell disparity of the `depth_warp` anchor: `LN(hidden) [B, N, D] -> [B, t, h, w, tf]` disparities (1 / depth,
  in the cameras' translation unit; metres for procedural scenes) of each latent cell and video frame of the slot,
  `init * exp(head)` with a zero-initialised head (an untrained head puts the whole frame on one plane at
  1 / `init`)."""

  def __init__(self, dim: int, patch_size, temporal_factor: int, *, rngs: nnx.Rngs, init: float = 0.25):
    self.patch_size, self.temporal_factor, self.init = tuple(patch_size), int(temporal_factor), float(init)
    self.norm = LayerNorm(dim, rngs=rngs)
    cells = patch_size[0] * patch_size[1] * patch_size[2]
    self.proj = Dense(dim, cells * temporal_factor, ("embed", "patch"), rngs=rngs,
                      kernel_init=nnx.initializers.zeros_init())

  def __call__(self, hidden: jax.Array, grid) -> jax.Array:
    t, h, w = grid
    pt, ph, pw = self.patch_size
    log_disp = self.proj(self.norm(hidden.astype(jnp.float32)))  # [B, N, cells * tf]
    log_disp = unpatchify(log_disp, (t // pt, h // ph, w // pw), self.patch_size)  # [B, t, h, w, tf]
    return self.init * jnp.exp(jnp.clip(log_disp, -6.0, 6.0))


def reproject_anchor(anchor, disparity, rel, K_slot, K_anchor, spatial_factor: int, temporal_factor: int):
  """The condition frame of a `condition_anchor` reprojected into every slot's camera, in the pixel latent layout.

  Each output pixel `p` (centre `(x + 0.5, y + 0.5)`, REFERENCE.md section 1) of slot `(i, ft)` is unprojected at its
  disparity, `X = K_slot^-1 [p, 1] / disparity`, moved into the anchor camera, `X' = rel X`, projected,
  `p' = K_anchor X' / z'`,
  and the condition frame is sampled there (bilinear, edge-clamped): the image motion a static scene makes between
  the two cameras (`camjax.geometry.warp.reproject`). Points that land behind the anchor camera keep their own pixel.

  Args:
    anchor: `[B, t, h, w, C]` from `condition_anchor` (`C = tf * sf * sf * 3`).
    disparity: `[B, t, h, w, tf]` per cell (`DisparityHead`), upsampled bilinearly to every pixel.
    rel: `[B, t, tf, 4, 4]` slot camera -> anchor camera (`anchor_poses`).
    K_slot: `[B, t, tf, 3, 3]` pixel intrinsics of each slot's frame at the video resolution.
    K_anchor: `[B, 3, 3]` those of the anchor frame.
    spatial_factor, temporal_factor: the pixel autoencoder's factors.

  Returns:
    `[B, t, h, w, C]` reprojected anchor latents.
  """
  b, t, h, w, c = anchor.shape
  sf, tf = spatial_factor, temporal_factor
  H, W, F = h * sf, w * sf, t * tf
  d = einops.rearrange(disparity, "b t h w ft -> b (t ft) h w")
  d = jax.image.resize(d, (b, F, H, W), "linear")
  frame = einops.rearrange(anchor[:, 0], "b h w (ft fy fx c) -> b ft (h fy) (w fx) c", ft=tf, fy=sf, fx=sf)[:, -1]
  frames = jnp.broadcast_to(frame[:, None], (b, F, *frame.shape[1:]))
  out = warp.reproject(frames, d, rel.reshape(b, F, 4, 4), K_slot.reshape(b, F, 3, 3),
                       jnp.broadcast_to(K_anchor[:, None], (b, F, 3, 3)))
  out = einops.rearrange(out, "b (t ft) (h fy) (w fx) c -> b t h w (ft fy fx c)", t=t, ft=tf, fy=sf, fx=sf)
  return out.astype(anchor.dtype)
