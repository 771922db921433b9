"""Broadcasting helpers shared by the objectives and the samplers: per-example scalars and masks against `[B, ...]`.

They live below both modules (objectives import the samplers for `sample`), so neither imports the other for them.
"""

from __future__ import annotations

import jax.numpy as jnp

from camjax.diffusion.errors import DiffusionError


def per_example(v, x):
  """Reshapes per-example scalars `[B]` (or a scalar) to `[B, 1, ..., 1]` so they broadcast against `x [B, ...]`.

  Raises:
    DiffusionError: `v` is neither a scalar nor `[B]` with `B = x.shape[0]`.
  """
  v = jnp.asarray(v)
  if v.ndim == 0:
    return v
  if v.ndim != 1 or v.shape[0] != x.shape[0]:
    raise DiffusionError(f"expected per-example values of shape [{x.shape[0]}] (or a scalar) for an array of shape "
                         f"{tuple(x.shape)}, got shape {tuple(v.shape)}")
  return v.reshape(v.shape + (1,) * (x.ndim - 1))


def align_mask(mask, x, where: str):
  """Aligns a mask with the leading axes of `x [B, ...]` (appending trailing singleton axes) as float32.

  `[B, T, H, W]` and `[B, T, H, W, 1]` both become `[B, T, H, W, 1]` for `x [B, T, H, W, C]`.

  Raises:
    DiffusionError: the mask has more axes than `x` or does not broadcast to it (`where` names the caller).
  """
  mask = jnp.asarray(mask, dtype=jnp.float32)
  if mask.ndim > x.ndim:
    raise DiffusionError(f"{where}: mask of shape {tuple(mask.shape)} has more axes than the array "
                         f"{tuple(x.shape)}")
  mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
  if any(m not in (1, n) for m, n in zip(mask.shape, x.shape)):
    raise DiffusionError(f"{where}: mask of shape {tuple(mask.shape)} does not broadcast to the array "
                         f"{tuple(x.shape)} (masks are aligned with the leading axes)")
  return mask
