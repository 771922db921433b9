"""Classifier-free guidance as a chain over named condition sets, every set evaluated in ONE batched forward pass.

A *condition set* is a mapping of model keyword arguments (`{"text": ..., "text_mask": ...}`); its values are arrays
`[B, ...]`, None, or nested pytrees of arrays (a dict of cross-attention contexts, a `(context, mask)` tuple).
`batched_predictions` concatenates the k sets along the batch axis (`[k B, ...]`, leaf by leaf), calls the model
once and splits the output, so a k-way guided step costs one forward of batch `k B` instead of k forwards of batch
`B`. `chain` combines the k outputs `e_0 .. e_{k-1}` (ordered from least to most conditioned) with k - 1 weights:

  `e = e_0 + sum_{k >= 1} w_k (e_k - e_{k-1})`.

Two sets give plain CFG, `e = e_uncond + w (e_cond - e_uncond)` (`cfg`, `text_cfg`); one set (no weights) is the
conditional prediction. CameraCtrl II eq. 3 is the three-set chain `[null text + null camera, text + null camera,
text + camera]` with weights `[w_text, w_cam]` and the all-zero Plücker map as the null camera (`camera_text_cfg`):

  `e = e(z, 0_text, 0_cam) + w_text (e(z, c, 0_cam) - e(z, 0_text, 0_cam)) + w_cam (e(z, c, s) - e(z, c, 0_cam))`.

Text + image guidance (MotionFlow, DynamiCrafter-style image-to-video) is the chain `[null image + null text, image +
null text, image + text]`. The chain is linear with coefficients summing to 1 on `e_0`, so it commutes with any
affine map of the outputs: guiding eps, v, velocity or x-prediction outputs and converting afterwards (as
`guided_denoiser` does with `objective.sampler_prediction`) gives the same result as converting first.

The camjax DiT call convention is `model_fn(latents [B, T, H, W, C], timesteps [B] (0..1000), **inputs) ->
[B, T, H, W, C]`, e.g. `text [B, L, D]`, `text_mask [B, L]`, `camera [B, T, H, W, 6]`, `cond_mask [B, T, H, W, 1]`.

Raises `DiffusionError` for condition sets that do not fit together (keys, None patterns, pytree structures, leaf
shapes, batch sizes), a weight count other than `len(condition_sets) - 1`, or an output that cannot be split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from camjax.diffusion.errors import DiffusionError


def _is_batched_array(v) -> bool:
  return isinstance(v, (jax.Array, np.ndarray)) and v.ndim > 0


def _is_container(v) -> bool:
  return isinstance(v, (dict, list, tuple))


def _concatenate_condition(name: str, values: list, batch_sizes: dict):
  """Concatenates one condition's values (arrays, None or pytrees, one per set) along axis 0, leaf by leaf."""
  nones = [v is None for v in values]
  if any(nones) and not all(nones):
    raise DiffusionError(f"condition {name!r} is None in sets {[i for i, b in enumerate(nones) if b]} but not in "
                         f"the others; pass None everywhere or an array everywhere")
  if all(nones):
    return None
  structures = [jax.tree.structure(v) for v in values]
  if any(s != structures[0] for s in structures[1:]):
    raise DiffusionError(f"condition {name!r} has different pytree structures across the sets: "
                         f"{[str(s) for s in structures]}")
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(values[0])[0]]
  per_set = [jax.tree.leaves(v) for v in values]
  joined = []
  for j, path in enumerate(paths):
    label = name + jax.tree_util.keystr(path)
    leaves = [jnp.asarray(leaves[j]) for leaves in per_set]
    shapes = [tuple(leaf.shape) for leaf in leaves]
    if len(set(shapes)) != 1:
      raise DiffusionError(f"condition {label!r} has different shapes across the sets: {shapes}")
    if not shapes[0]:
      raise DiffusionError(f"condition {label!r} needs a leading batch axis, got a scalar")
    batch_sizes[label] = shapes[0][0]
    joined.append(jnp.concatenate(leaves, axis=0))
  return jax.tree.unflatten(structures[0], joined)


def _tile_shared(name: str, value, n: int, batch_sizes: dict):
  """Repeats the batched arrays of a shared input (an array or a dict / list / tuple of them) n times on axis 0."""

  def tile(path, v):
    if not _is_batched_array(v):
      return v
    batch_sizes[name + jax.tree_util.keystr(path)] = v.shape[0]
    return jnp.concatenate([jnp.asarray(v)] * n, axis=0)

  if _is_container(value):
    return jax.tree_util.tree_map_with_path(tile, value, is_leaf=lambda v: not _is_container(v))
  return tile((), value)


def batched_predictions(model_fn: Callable, conditions: Sequence[Mapping], **shared) -> list:
  """Evaluates `model_fn` on k condition sets with a single call on the batch-concatenated inputs.

  Args:
    model_fn: the network, called once as `model_fn(**shared_tiled, **conditions_concatenated)`; it must return
      an array (or a pytree of arrays) whose leading axis is the concatenated batch `k B`.
    conditions: k >= 1 mappings of keyword arguments. Every mapping has the same keys; each value is an array
      `[B, ...]`, None, or a pytree of arrays `[B, ...]` (e.g. a dict of contexts, a `(context, mask)` tuple). A key
      is None in every set or in none, and its values have the same pytree structure and leaf shapes in every set;
      they are concatenated leaf by leaf.
    **shared: keyword arguments common to every set (`latents`, `timesteps`, `cond_mask`, ...). Arrays with a
      leading batch axis, also inside dicts, lists and tuples, are repeated k times along axis 0; None, 0-d arrays
      and non-array values (flags, modules) are passed through unchanged.

  Returns:
    A list of k model outputs, each `[B, ...]`, in the order of `conditions`.

  Raises:
    DiffusionError: no conditions; a set that is not a mapping; sets with different keys, None patterns, pytree
      structures or leaf shapes; a key both in a condition and in `shared`; inconsistent batch sizes; an output
      whose leading axis is not `k B`.
  """
  conditions = list(conditions)
  if not conditions:
    raise DiffusionError("batched_predictions needs at least one condition set")
  for i, c in enumerate(conditions):
    if not isinstance(c, Mapping):
      raise DiffusionError(f"condition set {i} is a {type(c).__name__}, not a mapping of model inputs")
  n = len(conditions)
  keys = set(conditions[0])
  for i, c in enumerate(conditions[1:], 1):
    if set(c) != keys:
      raise DiffusionError(f"condition set {i} has keys {sorted(c)}, but set 0 has {sorted(keys)}")
  overlap = keys & set(shared)
  if overlap:
    raise DiffusionError(f"keys {sorted(overlap)} are given both as conditions and as shared inputs")

  batch_sizes = {}
  concatenated = {k: _concatenate_condition(k, [c[k] for c in conditions], batch_sizes) for k in sorted(keys)}
  tiled = {k: _tile_shared(k, v, n, batch_sizes) for k, v in shared.items()}
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


def _combine(outputs: Sequence, weights: Sequence):
  """`e_0 + sum_{k >= 1} w_k (e_k - e_{k-1})`, leaf by leaf, accumulated left to right."""
  guided = outputs[0]
  for w, prev, cur in zip(weights, outputs[:-1], outputs[1:]):
    guided = jax.tree.map(lambda g, p, c, w=w: g + w * (c - p), guided, prev, cur)
  return guided


def _check_chain(condition_sets: Sequence, weights: Sequence, where: str):
  if not condition_sets:
    raise DiffusionError(f"{where} needs at least one condition set")
  if len(weights) != len(condition_sets) - 1:
    raise DiffusionError(f"{where}: {len(condition_sets)} condition sets need {len(condition_sets) - 1} weights "
                         f"(one per consecutive pair), got {len(weights)}")


def chain(model_fn: Callable, condition_sets: Sequence[Mapping], weights: Sequence, **shared):
  """Chained classifier-free guidance, `e_0 + sum_{k >= 1} w_k (e_k - e_{k-1})`, from one batched forward.

  Args:
    model_fn: the network (see `batched_predictions`).
    condition_sets: k >= 1 condition sets, from least to most conditioned (see `batched_predictions`).
    weights: k - 1 guidance weights (Python numbers or scalar arrays); `w_k` scales `e_k - e_{k-1}`.
    **shared: the model inputs common to every set (`latents`, `timesteps`, ...).

  Returns:
    The guided prediction `[B, ...]` (a pytree if the model returns one); `e_0` for a single set.

  Raises:
    DiffusionError: `len(weights) != len(condition_sets) - 1`, or as `batched_predictions`.
  """
  condition_sets, weights = list(condition_sets), list(weights)
  _check_chain(condition_sets, weights, "chain")
  return _combine(batched_predictions(model_fn, condition_sets, **shared), weights)


def cfg(cond, uncond, cfg_scale):
  """Classifier-free guidance, `uncond + s (cond - uncond)` (s = 1: conditional, s = 0: unconditional): the
  two-set `chain` applied to outputs already computed."""
  return _combine([uncond, cond], [cfg_scale])


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
  return chain(model_fn, [
      {"text": null_text, "text_mask": null_text_mask},
      {"text": text, "text_mask": text_mask},
  ], [cfg_scale], **shared)


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
  return chain(model_fn, [
      {"text": null_text, "text_mask": null_text_mask, "camera": null_camera},
      {"text": text, "text_mask": text_mask, "camera": null_camera},
      {"text": text, "text_mask": text_mask, "camera": camera},
  ], [w_text, w_cam], **shared)


def guided_denoiser(model_fn: Callable, objective, condition_sets: Sequence[Mapping], weights: Sequence = (),
                    **shared) -> Callable:
  """Wraps a network and its guidance chain into the `denoise(x_t, level)` closure the samplers expect.

  The closure calls, through `chain` (one batched forward per call),

    `model_fn(latents=x_t, timesteps=objective.model_timesteps(level), **shared, **condition_sets[k])`

  and returns `objective.sampler_prediction(x_t, guided, level)`: the velocity for `FlowMatching` (x-prediction
  networks are converted after guidance), the eps / v prediction unchanged for `DDPM`. `model_fn` returns the raw
  network output. One condition set and no weights give the plain conditional prediction.

  Args:
    model_fn: the network (camjax DiT call convention, see the module docstring).
    objective: a `FlowMatching` or `DDPM` (anything with `model_timesteps` and `sampler_prediction`).
    condition_sets: k >= 1 condition sets, least to most conditioned (see `batched_predictions`).
    weights: k - 1 guidance weights (see `chain`).
    **shared: further model inputs common to every set, e.g. `cond_mask`.

  Returns:
    `denoise(x_t [B, ...], level [B]) -> [B, ...]`, for `objective.sample`, `euler` (flow) or `ddim` (DDPM).

  Raises:
    DiffusionError: a weight count other than k - 1, `latents` or `timesteps` among the inputs (the closure passes
      them), or, when called, as `chain`.
  """
  condition_sets, weights = list(condition_sets), list(weights)
  _check_chain(condition_sets, weights, "guided_denoiser")
  for name in ("latents", "timesteps"):
    if name in shared or any(isinstance(c, Mapping) and name in c for c in condition_sets):
      raise DiffusionError(f"guided_denoiser passes {name!r} to the model itself; do not give it as an input")

  def denoise(x_t, level):
    guided = chain(model_fn, condition_sets, weights, latents=x_t, timesteps=objective.model_timesteps(level),
                   **shared)
    return objective.sampler_prediction(x_t, guided, level)

  return denoise
