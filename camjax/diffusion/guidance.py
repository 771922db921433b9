"""Classifier-free guidance with every condition set evaluated in ONE batched forward pass.

The camjax DiT call convention is

  `model_fn(latents [B, T, H, W, C], timesteps [B] (0..1000), text [B, L, D], text_mask [B, L] or None,
            camera [B, T, H, W, 6] or None, cond_mask [B, T, H, W, 1] or None) -> [B, T, H, W, C]`.

Guidance concatenates the condition sets along the batch axis (`[k B, ...]`), calls the model once and splits the
output, so a k-way guided step costs one forward of batch `k B` instead of k forwards of batch `B`.

CameraCtrl II (eq. 3) guides text and camera separately, with the all-zero Plücker map as the null camera:

  `e = e(z, 0_text, 0_cam) + w_text (e(z, c, 0_cam) - e(z, 0_text, 0_cam)) + w_cam (e(z, c, s) - e(z, c, 0_cam))`.

The formulas are linear, so they apply equally to eps-, v- and velocity-predicting models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from camjax.diffusion.objectives import DiffusionError


def _is_batched_array(v) -> bool:
  return isinstance(v, (jax.Array, np.ndarray)) and v.ndim > 0


def batched_predictions(model_fn: Callable, conditions: Sequence[Mapping], **shared) -> list:
  """Evaluates `model_fn` on k condition sets with a single call on the batch-concatenated inputs.

  Args:
    model_fn: the network, called once as `model_fn(**shared_tiled, **conditions_concatenated)`; it must return
      an array (or a pytree of arrays) whose leading axis is the concatenated batch `k B`.
    conditions: k >= 1 dicts of keyword arguments. Every dict has the same keys; each value is an array `[B, ...]`
      (the same shape in every dict) or None, and a key is None in every dict or in none.
    **shared: keyword arguments common to every set (`latents`, `timesteps`, `cond_mask`, ...). Arrays with a
      leading batch axis are repeated k times along axis 0; None, 0-d arrays and non-array values (flags) are passed
      through unchanged.

  Returns:
    A list of k model outputs, each `[B, ...]`, in the order of `conditions`.

  Raises:
    DiffusionError: no conditions; dicts with different keys, different None patterns or different shapes; a key
      both in a condition and in `shared`; inconsistent batch sizes; an output whose leading axis is not `k B`.
  """
  conditions = list(conditions)
  if not conditions:
    raise DiffusionError("batched_predictions needs at least one condition set")
  n = len(conditions)
  keys = set(conditions[0])
  for i, c in enumerate(conditions[1:], 1):
    if set(c) != keys:
      raise DiffusionError(f"condition set {i} has keys {sorted(c)}, but set 0 has {sorted(keys)}")
  overlap = keys & set(shared)
  if overlap:
    raise DiffusionError(f"keys {sorted(overlap)} are given both as conditions and as shared inputs")

  batch_sizes = {}
  concatenated = {}
  for k in sorted(keys):
    values = [c[k] for c in conditions]
    nones = [v is None for v in values]
    if any(nones) and not all(nones):
      raise DiffusionError(f"condition {k!r} is None in sets {[i for i, b in enumerate(nones) if b]} but not in "
                           f"the others; pass None everywhere or an array everywhere")
    if all(nones):
      concatenated[k] = None
      continue
    values = [jnp.asarray(v) for v in values]
    shapes = [tuple(v.shape) for v in values]
    if len(set(shapes)) != 1:
      raise DiffusionError(f"condition {k!r} has different shapes across the sets: {shapes}")
    if not shapes[0]:
      raise DiffusionError(f"condition {k!r} needs a leading batch axis, got a scalar")
    batch_sizes[k] = shapes[0][0]
    concatenated[k] = jnp.concatenate(values, axis=0)

  tiled = {}
  for k, v in shared.items():
    if _is_batched_array(v):
      batch_sizes[k] = v.shape[0]
      tiled[k] = jnp.concatenate([jnp.asarray(v)] * n, axis=0)
    else:
      tiled[k] = v
  if len(set(batch_sizes.values())) > 1:
    raise DiffusionError(f"inconsistent batch sizes (leading axes): {batch_sizes}")

  out = model_fn(**tiled, **concatenated)
  leaves = jax.tree.leaves(out)
  for leaf in leaves:
    if leaf.ndim == 0 or leaf.shape[0] % n:
      raise DiffusionError(f"model output of shape {tuple(leaf.shape)} cannot be split into {n} condition sets")
  if not leaves:
    raise DiffusionError("model_fn returned no arrays")
  b = leaves[0].shape[0] // n
  return [jax.tree.map(lambda o, i=i: o[i * b:(i + 1) * b], out) for i in range(n)]


def cfg(cond, uncond, cfg_scale):
  """Classifier-free guidance, `uncond + s (cond - uncond)` (s = 1: conditional, s = 0: unconditional)."""
  return uncond + cfg_scale * (cond - uncond)


def _match_batch(null, ref, name: str):
  """Broadcasts a batch-1 null condition to `ref`'s batch; returns `null` unchanged otherwise."""
  if null is None or ref is None:
    return null
  null = jnp.asarray(null)
  if null.ndim and null.shape[0] == 1 and ref.shape[0] != 1:
    null = jnp.broadcast_to(null, (ref.shape[0],) + null.shape[1:])
  if null.shape != ref.shape:
    raise DiffusionError(f"{name} of shape {tuple(null.shape)} does not match its condition {tuple(ref.shape)}")
  return null


def _text_sets(text, null_text, text_mask, null_text_mask):
  """Returns (text, null_text, text_mask, null_text_mask) with batch-1 nulls broadcast and masks paired.

  When only one of the masks is given, the other is all ones (every token valid), since a None mask means "no
  padding" in the DiT convention.
  """
  text = jnp.asarray(text)
  null_text = _match_batch(null_text, text, "null_text")
  if text_mask is not None and null_text_mask is None:
    text_mask = jnp.asarray(text_mask)
    null_text_mask = jnp.ones(null_text.shape[:2], dtype=text_mask.dtype)
  elif text_mask is None and null_text_mask is not None:
    null_text_mask = _match_batch(null_text_mask, jnp.ones(null_text.shape[:2]), "null_text_mask")
    text_mask = jnp.ones(text.shape[:2], dtype=null_text_mask.dtype)
  elif text_mask is not None:
    text_mask = jnp.asarray(text_mask)
    null_text_mask = _match_batch(null_text_mask, text_mask, "null_text_mask")
  return text, null_text, text_mask, null_text_mask


def text_cfg(model_fn: Callable, *, text, null_text, cfg_scale, text_mask=None, null_text_mask=None, **shared):
  """Text classifier-free guidance from one forward of batch `2 B`: `e(z, null) + s (e(z, c) - e(z, null))`.

  Args:
    model_fn: the network (camjax DiT call convention, see the module docstring).
    text: text embeddings `[B, L, D]`.
    null_text: the unconditional ("") embedding, `[B, L, D]` or `[1, L, D]` (broadcast).
    cfg_scale: guidance scale `s`.
    text_mask: `[B, L]` token validity of `text`, or None (all valid).
    null_text_mask: `[B, L]` / `[1, L]` validity of `null_text`, or None (all valid).
    **shared: the other model inputs, common to both branches (`latents`, `timesteps`, `camera`, `cond_mask`).

  Returns:
    The guided prediction `[B, ...]`.

  Raises:
    DiffusionError: shapes that do not match (see `batched_predictions`).
  """
  text, null_text, text_mask, null_text_mask = _text_sets(text, null_text, text_mask, null_text_mask)
  uncond, cond = batched_predictions(model_fn, [
      {"text": null_text, "text_mask": null_text_mask},
      {"text": text, "text_mask": text_mask},
  ], **shared)
  return cfg(cond, uncond, cfg_scale)


def camera_text_cfg(model_fn: Callable, *, text, null_text, camera, w_text=7.5, w_cam=8.0, text_mask=None,
                    null_text_mask=None, null_camera=None, **shared):
  """CameraCtrl II's decoupled text + camera guidance (eq. 3) from one forward of batch `3 B`.

  `e = e(z, 0_text, 0_cam) + w_text (e(z, c, 0_cam) - e(z, 0_text, 0_cam)) + w_cam (e(z, c, s) - e(z, c, 0_cam))`.

  Args:
    model_fn: the network (camjax DiT call convention, see the module docstring).
    text: text embeddings `[B, L, D]`.
    null_text: the unconditional embedding, `[B, L, D]` or `[1, L, D]`.
    camera: camera condition, e.g. Plücker maps `[B, T, H, W, 6]`.
    w_text: text guidance weight (CameraCtrl II: 7.5).
    w_cam: camera guidance weight (CameraCtrl II: 8.0).
    text_mask: `[B, L]` validity of `text`, or None.
    null_text_mask: validity of `null_text`, or None.
    null_camera: the null camera; defaults to `zeros_like(camera)` (the all-zero Plücker map). `[1, ...]` is
      broadcast.
    **shared: the other model inputs (`latents`, `timesteps`, `cond_mask`).

  Returns:
    The guided prediction `[B, ...]`.

  Raises:
    DiffusionError: `camera` is None (use `text_cfg`) or shapes that do not match.
  """
  if camera is None:
    raise DiffusionError("camera_text_cfg needs a camera; use text_cfg for text-only guidance")
  camera = jnp.asarray(camera)
  null_camera = jnp.zeros_like(camera) if null_camera is None else _match_batch(null_camera, camera, "null_camera")
  text, null_text, text_mask, null_text_mask = _text_sets(text, null_text, text_mask, null_text_mask)
  e_uncond, e_text, e_full = batched_predictions(model_fn, [
      {"text": null_text, "text_mask": null_text_mask, "camera": null_camera},
      {"text": text, "text_mask": text_mask, "camera": null_camera},
      {"text": text, "text_mask": text_mask, "camera": camera},
  ], **shared)
  return e_uncond + w_text * (e_text - e_uncond) + w_cam * (e_full - e_text)


def guided_denoiser(model_fn: Callable, objective, *, text, null_text, camera=None, w_text=7.5, w_cam=8.0,
                    text_mask=None, null_text_mask=None, null_camera=None, **shared):
  """Wraps a DiT and its guidance into the `denoise(x_t, t)` closure the samplers expect.

  The closure calls the model with `latents=x_t` and `timesteps=objective.model_timesteps(t)` (sigma * 1000 for
  `FlowMatching`, the step index for `DDPM`) and combines the branches with

  - `camera_text_cfg` when `camera` is given and `w_cam` is not None (CameraCtrl II, one forward of `3 B`);
  - `text_cfg` with scale `w_text` otherwise; the model then gets `camera` (possibly None) in both branches.

  Args:
    model_fn: the network (camjax DiT call convention).
    objective: a `FlowMatching` or `DDPM`, for `model_timesteps`.
    text, null_text, text_mask, null_text_mask, null_camera: as in `camera_text_cfg`.
    camera: camera condition `[B, T, H, W, 6]`, or None for a text-only model.
    w_text: text guidance weight.
    w_cam: camera guidance weight, or None for no separate camera guidance.
    **shared: further fixed model inputs, e.g. `cond_mask`.

  Returns:
    `denoise(x_t [B, ...], t [B]) -> [B, ...]`, usable with `euler` (flow matching) or `ddim` (DDPM).
  """

  def denoise(x_t, t):
    timesteps = objective.model_timesteps(t)
    if camera is not None and w_cam is not None:
      return camera_text_cfg(model_fn, text=text, null_text=null_text, camera=camera, w_text=w_text, w_cam=w_cam,
                             text_mask=text_mask, null_text_mask=null_text_mask, null_camera=null_camera,
                             latents=x_t, timesteps=timesteps, **shared)
    return text_cfg(model_fn, text=text, null_text=null_text, cfg_scale=w_text, text_mask=text_mask,
                    null_text_mask=null_text_mask, latents=x_t, timesteps=timesteps, camera=camera, **shared)

  return denoise
