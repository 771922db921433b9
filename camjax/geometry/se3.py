"""Rigid-body (SE(3) / SO(3)) helpers on 4x4 homogeneous matrices.

Every function takes NumPy or JAX arrays with arbitrary leading batch dimensions and returns the same kind: NumPy stays
NumPy (host-side data pipelines, readers), JAX stays JAX (jit-able model code). Angles are radians.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def xp_of(*arrays):
  """Returns ``jax.numpy`` if any argument is a JAX array (or tracer), else ``numpy``."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def make_pose(R, t):
  """Builds homogeneous transforms.

  Args:
    R: rotations `[..., 3, 3]`.
    t: translations `[..., 3]`.

  Returns:
    `[..., 4, 4]` matrices `[[R, t], [0, 0, 0, 1]]`.
  """
  xp = xp_of(R, t)
  R = xp.asarray(R)
  t = xp.asarray(t, dtype=R.dtype)
  top = xp.concatenate([R, t[..., :, None]], axis=-1)
  bottom = xp.broadcast_to(xp.asarray([0, 0, 0, 1], dtype=R.dtype), top.shape[:-2] + (1, 4))
  return xp.concatenate([top, bottom], axis=-2)


def invert(T):
  """Inverts rigid transforms `[..., 4, 4]`, e.g. w2c <-> c2w: `(R^-1, -R^-1 t)`.

  The 3x3 block is inverted with a true matrix inverse rather than a transpose, so a pose read from a file (whose
  rotation is orthonormal only to the file's printed precision) converts back to the same numbers.
  """
  xp = xp_of(T)
  R = T[..., :3, :3]
  t = T[..., :3, 3]
  Rinv = xp.linalg.inv(R)
  return make_pose(Rinv, -xp.einsum("...ij,...j->...i", Rinv, t))


def geodesic_angle(R1, R2):
  """Angle of `R1^T R2` in radians, `[..., 3, 3] x [..., 3, 3] -> [...]` (the SO(3) geodesic distance).

  Computed as `atan2(sin, cos)` from the skew and trace parts of `M = R1^T R2`, accurate near 0 and near pi
  (arccos of the trace alone loses half the digits for small angles).
  """
  xp = xp_of(R1, R2)
  M = xp.swapaxes(R1, -1, -2) @ R2
  cos = (M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0) / 2.0
  axis = xp.stack([M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]], -1)
  sin = xp.linalg.norm(axis, axis=-1) / 2.0
  return xp.arctan2(sin, cos)


def so3_exp(omega):
  """Rodrigues: axis-angle vectors `[..., 3]` (radians) -> rotations `[..., 3, 3]`."""
  xp = xp_of(omega)
  omega = xp.asarray(omega)
  theta = xp.linalg.norm(omega, axis=-1)[..., None, None]
  small = theta < 1e-8
  safe = xp.where(small, 1.0, theta)
  k = skew(omega)
  a = xp.where(small, 1.0, xp.sin(safe) / safe)
  b = xp.where(small, 0.5, (1.0 - xp.cos(safe)) / safe**2)
  eye = xp.broadcast_to(xp.eye(3, dtype=omega.dtype), k.shape)
  return eye + a * k + b * (k @ k)


def so3_log(R):
  """Rotations `[..., 3, 3]` -> axis-angle vectors `[..., 3]` (radians), stable near 0 and pi."""
  xp = xp_of(R)
  R = xp.asarray(R)
  q = matrix_to_quaternion(R)  # [..., 4] (x, y, z, w), w >= 0
  v = q[..., :3]
  s = xp.linalg.norm(v, axis=-1, keepdims=True)
  angle = 2.0 * xp.arctan2(s, q[..., 3:4])
  scale = xp.where(s < 1e-12, 2.0, angle / xp.where(s < 1e-12, 1.0, s))
  return v * scale


def skew(v):
  """Cross-product matrices `[..., 3] -> [..., 3, 3]`."""
  xp = xp_of(v)
  x, y, z = v[..., 0], v[..., 1], v[..., 2]
  zero = xp.zeros_like(x)
  return xp.stack([
      xp.stack([zero, -z, y], axis=-1),
      xp.stack([z, zero, -x], axis=-1),
      xp.stack([-y, x, zero], axis=-1),
  ], axis=-2)


def quaternion_to_matrix(q):
  """Unit quaternions `[..., 4]` in (x, y, z, w) order (TUM, scipy) -> rotations `[..., 3, 3]`.

  The quaternion is normalised first; a zero quaternion gives NaN (validate before calling).
  """
  xp = xp_of(q)
  q = xp.asarray(q)
  q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
  x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  return xp.stack([
      xp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
      xp.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
      xp.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
  ], axis=-2)


def matrix_to_quaternion(R):
  """Rotations `[..., 3, 3]` -> unit quaternions `[..., 4]` (x, y, z, w) with w >= 0.

  Uses the numerically stable branch on the largest diagonal term (Shepperd's method).
  """
  xp = xp_of(R)
  R = xp.asarray(R)
  m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
  trace = m00 + m11 + m22
  # Four candidate (unnormalised) quaternions, each well conditioned when its pivot is largest.
  cands = xp.stack([
      xp.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1], 1 + trace], -1),
      xp.stack([1 + m00 - m11 - m22, R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0],
                R[..., 2, 1] - R[..., 1, 2]], -1),
      xp.stack([R[..., 0, 1] + R[..., 1, 0], 1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1],
                R[..., 0, 2] - R[..., 2, 0]], -1),
      xp.stack([R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22,
                R[..., 1, 0] - R[..., 0, 1]], -1),
  ], axis=-2)  # [..., 4, 4]
  pivots = xp.stack([trace, m00, m11, m22], axis=-1)
  best = xp.argmax(pivots, axis=-1)
  q = xp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
  q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
  return q * xp.where(q[..., 3:4] < 0, -1.0, 1.0)


def project_to_so3(M):
  """Nearest rotation (Frobenius) to matrices `[..., 3, 3]` via SVD, with det +1."""
  xp = xp_of(M)
  U, _, Vt = xp.linalg.svd(M)
  d = xp.sign(xp.linalg.det(U @ Vt))
  D = xp.ones(M.shape[:-1], dtype=M.dtype)
  D = xp.concatenate([D[..., :2], d[..., None]], axis=-1)
  return (U * D[..., None, :]) @ Vt


def slerp(R0, R1, alpha):
  """Spherical interpolation of rotations: `R0 exp(alpha log(R0^T R1))`; `alpha` broadcasts against `[...]`."""
  xp = xp_of(R0, R1, alpha)
  alpha = xp.asarray(alpha)
  delta = so3_log(xp.swapaxes(R0, -1, -2) @ R1)
  return R0 @ so3_exp(delta * alpha[..., None])
