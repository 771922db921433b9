"""Trajectory alignment: Umeyama Sim(3)/SE(3), orientation-fitted alignment, timestamp association."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from camjax.geometry import se3
from camjax.geometry.errors import CameraError


class Similarity(NamedTuple):
  """`dst ≈ scale * R @ src + t`."""

  scale: float
  R: np.ndarray  # [3, 3]
  t: np.ndarray  # [3]

  def apply_points(self, points) -> np.ndarray:
    """Transforms points `[N, 3]`."""
    return self.scale * np.asarray(points) @ self.R.T + self.t

  def apply_c2w(self, c2w) -> np.ndarray:
    """Transforms camera-to-world poses `[N, 4, 4]` (rotations rotated, centres transformed)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return se3.make_pose(self.R @ c2w[:, :3, :3], self.apply_points(c2w[:, :3, 3]))


def _check_points(src, dst):
  src = np.asarray(src, dtype=np.float64)
  dst = np.asarray(dst, dtype=np.float64)
  if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
    raise CameraError(f"alignment needs two [N, 3] point sets of equal shape, got {src.shape} and {dst.shape}")
  if not (np.isfinite(src).all() and np.isfinite(dst).all()):
    raise CameraError("alignment input contains NaN or inf")
  return src, dst


def umeyama(src, dst, with_scale: bool = True) -> Similarity:
  """Least-squares similarity (or rigid) transform mapping `src` onto `dst` (Umeyama 1991, eqs. 34-43).

  Args:
    src: `[N, 3]` points (e.g. estimated camera centres).
    dst: `[N, 3]` corresponding points (e.g. ground-truth centres).
    with_scale: fit the scale (Sim(3)); False gives SE(3) with scale 1.

  Returns:
    `Similarity(scale, R, t)` minimising `sum |dst - (s R src + t)|^2`.

  Raises:
    CameraError: shapes differ, fewer than 3 points, degenerate (all points identical) input.
  """
  src, dst = _check_points(src, dst)
  n = len(src)
  if n < 2 or (with_scale and n < 3 and np.allclose(src[0], src[-1])):
    raise CameraError(f"umeyama needs at least 3 points, got {n}")
  mu_s, mu_d = src.mean(0), dst.mean(0)
  xs, xd = src - mu_s, dst - mu_d
  var_s = (xs**2).sum() / n
  if var_s <= 1e-300:
    raise CameraError("umeyama: source points are all identical (degenerate)")
  cov = xd.T @ xs / n
  U, D, Vt = np.linalg.svd(cov)
  S = np.eye(3)
  if np.linalg.det(U) * np.linalg.det(Vt) < 0:
    S[2, 2] = -1
  R = U @ S @ Vt
  scale = float(np.trace(np.diag(D) @ S) / var_s) if with_scale else 1.0
  t = mu_d - scale * R @ mu_s
  return Similarity(scale, R, t)


def align_orientations(src_c2w, dst_c2w, with_scale: bool = True) -> Similarity:
  """Similarity whose rotation is fitted to the camera ORIENTATIONS, then scale/translation to the centres.

  `R = argmin sum |R R_src_i - R_dst_i|_F^2` (the SO(3) projection of `sum R_dst_i R_src_i^T`), then
  `s, t = argmin sum |s R c_src_i + t - c_dst_i|^2` over `s >= 0`. Unlike centre-only Umeyama, this is well posed on
  near-straight trajectories, where the roll about the direction of travel is unconstrained by positions
  (REFERENCE.md section 4: centre-only alignment has a ~1.5 degree rotation floor there).

  Args:
    src_c2w, dst_c2w: `[N, 4, 4]` camera-to-world poses.
    with_scale: fit the scale.
  """
  src_c2w = np.asarray(src_c2w, dtype=np.float64)
  dst_c2w = np.asarray(dst_c2w, dtype=np.float64)
  src, dst = _check_points(src_c2w[:, :3, 3], dst_c2w[:, :3, 3])
  M = np.einsum("nij,nkj->ik", dst_c2w[:, :3, :3], src_c2w[:, :3, :3])
  R = se3.project_to_so3(M)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  xs, xd = (src - mu_s) @ R.T, dst - mu_d
  denom = (xs**2).sum()
  # The least-squares scale is negative when the estimate runs backwards; a similarity has s >= 0 (a negative
  # s is a point reflection, which would make a reversed trajectory align perfectly), and the objective is a
  # parabola in s, so the constrained optimum is max(s, 0).
  scale = max(float((xs * xd).sum() / denom), 0.0) if (with_scale and denom > 1e-300) else 1.0
  return Similarity(scale, R, mu_d - scale * R @ mu_s)


def associate(timestamps_a, timestamps_b, max_diff: float = 0.01, offset_b: float = 0.0):
  """Matches two timestamp sequences (TUM-style association): each stamp of `a` pairs with its nearest stamp of `b`
  (after adding `offset_b`) when they differ by less than `max_diff` seconds; each stamp of `b` is used at most once.

  Returns:
    `(index_a, index_b)`: int arrays of matched indices, increasing in `a`.

  Raises:
    CameraError: no pair matches.
  """
  a = np.asarray(timestamps_a, dtype=np.float64)
  b = np.asarray(timestamps_b, dtype=np.float64) + offset_b
  order = np.argsort(b)
  bs = b[order]
  pos = np.clip(np.searchsorted(bs, a), 1, len(bs) - 1) if len(bs) > 1 else np.zeros(len(a), int)
  left, right = bs[pos - 1] if len(bs) > 1 else bs[pos], bs[pos]
  nearest = np.where(np.abs(a - left) <= np.abs(a - right), pos - 1, pos) if len(bs) > 1 else pos
  diff = np.abs(a - bs[nearest])
  keep = diff < max_diff
  idx_a, idx_b = np.nonzero(keep)[0], order[nearest[keep]]
  # Unique use of b: keep the closest a for each b.
  best = {}
  for ia, ib in zip(idx_a, idx_b):
    if ib not in best or abs(a[ia] - b[ib]) < abs(a[best[ib]] - b[ib]):
      best[ib] = ia
  pairs = sorted((ia, ib) for ib, ia in best.items())
  if not pairs:
    raise CameraError(f"no timestamps match within {max_diff} s")
  ia, ib = map(np.asarray, zip(*pairs))
  return ia, ib
