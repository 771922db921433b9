"""View synchronisation: how many points two videos agree on at the same timestamp (Track2View sec. 4).

Track2View scores synchronisation between the source video and the generated target view with GIM-LightGlue matches
between the frames of one timestamp (and CLIP-V similarity). camjax stands in OpenCV for the learned matcher: SIFT
keypoints, Lowe's ratio test, then a RANSAC fundamental matrix; the score of a frame pair is its number of RANSAC
inliers (matches consistent with one epipolar geometry, which is what two synchronised views of one static instant
share). Learned matchers find many more matches on real video, so the absolute counts are not comparable with the
paper's; the comparison that matters is between rows computed the same way on the same frames (the model, its
zeroed-tracks control, copy-the-source, repeat-the-first-frame).

Geometry-consistent matches (`epipolar_matches`, `epipolar_sync_scores`) are camjax's addition, NOT the paper's
protocol. The count above rewards not re-rendering: a copy of the source video matches the source perfectly (every
keypoint matches itself, and identical positions are RANSAC-consistent with a degenerate fundamental matrix), so
"copy the source" outscores a correct target view. When both cameras are known (the held-out pairs of the
Track2View report), a match between source frame t and a candidate target frame t must instead agree with the TRUE
relative camera `w2c_tgt_t @ c2w_src_t`, and must move: camjax counts the ratio-test matches whose candidate
keypoint lies within `max_px` pixels of the image, in the candidate frame, of the source keypoint's viewing ray over
the allowed depths (a segment of the epipolar line `F x_src`, `F = K_tgt^-T [t]_x R K_src^-1`; `ray_distance`), AND
that lie at least `min_shift_px` pixels from the source keypoint's own position (a match that did not move is
what copying the source produces; it cannot show a view change). Properties of this distance:
  * wherever the foot of the perpendicular falls inside the segment, it is the exact point-to-line distance to the
    epipolar line in the candidate frame (the source keypoint is taken as exact: the source is the given video),
    not Sampson's first-order symmetric approximation;
  * it is cheirality-aware: the 3D point must lie in front of both cameras, within `depth_range` along the source
    camera's z axis (w2c units, metres for camjax's data);
  * at zero baseline (identical cameras, pure rotation) the ray's image is one point and the distance is the
    homography transfer error `|x_b - K_b R K_a^-1 x_a|`; with a near bound `depth_range[0] > 0` the transition is
    continuous (once the parallax of the nearest allowed point is below a pixel, the segment is that short and the
    test is the homography's), so no baseline threshold is needed. `fundamental_matrix` is zero there.
What it cannot see: depth. Any source pixel warped along its ray to SOME depth passes (a homography of the source
for one plane, or the depth-warp anchor of `camjax.methods.track2view` at a wrong disparity); PSNR / SSIM, the
matches against the true target view and, given ground-truth depth (procedural pairs), `true_matches` judge depth. Thresholds are in pixels of the frames SIFT sees, i.e. after the
upsampling below (`max_px = min_shift_px = 2` px at 256 px = 0.5 px of a 64-px frame); the intrinsics are scaled
with the frames.

Small frames (the CPU default renders 64 x 64) hold few SIFT keypoints; frames are upsampled (bicubic) so that their
shorter side is at least `min_side` pixels before detection, the same for every row.

Pixel conventions: camjax's continuous pixel coordinates (`camjax.geometry.cameras`: the centre of pixel (x, y) is at
`(x + 0.5, y + 0.5)`); OpenCV keypoints put pixel centres at integers, so 0.5 is added. Upsampling a `W`-wide frame to
`W'` multiplies continuous coordinates by `W' / W` exactly, so `K` is scaled by `diag(W'/W, H'/H, 1)`.
"""

from __future__ import annotations

import collections
import hashlib

import numpy as np

from camjax.errors import CamjaxError


class SyncError(CamjaxError, ValueError):
  """Videos that cannot be compared frame by frame (shape, dtype, frame count), or cameras that cannot be used."""


def _gray(frame: np.ndarray, min_side: int) -> np.ndarray:
  import cv2  # pylint: disable=import-outside-toplevel
  img = np.asarray(frame)
  if img.dtype != np.uint8:
    raise SyncError(f"frames must be uint8 RGB, got {img.dtype}")
  if img.ndim != 3 or img.shape[-1] != 3:
    raise SyncError(f"frames must be [H, W, 3] RGB, got shape {img.shape}")
  gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
  side = min(gray.shape)
  if side < min_side:
    s = min_side / side
    gray = cv2.resize(gray, (round(gray.shape[1] * s), round(gray.shape[0] * s)), interpolation=cv2.INTER_CUBIC)
  return gray


# The scores of one frame pair (`sync_scores`, `epipolar_sync_scores`, `true_sync_scores`) share its SIFT matches:
# `_ratio_matches` keeps the last results, keyed by the frames' bytes and the options (deterministic; read-only).
_MATCH_CACHE: collections.OrderedDict = collections.OrderedDict()
_MATCH_CACHE_SIZE = 256


def _frame_key(frame) -> tuple:
  a = np.ascontiguousarray(frame)
  return a.shape, a.dtype.str, hashlib.blake2b(a.tobytes(), digest_size=16).digest()


def _ratio_matches(frame_a, frame_b, ratio: float, min_side: int):
  """SIFT keypoints of both (upsampled) frames and their ratio-test matches (cached per frame pair and options).

  Returns:
    `(pa, pb, scale_a, scale_b)`: float32 `[N, 2]` OpenCV keypoint positions (pixel centres at integers) of the
    upsampled frames, read-only, `N = 0` when a frame has fewer than 2 keypoints; `scale_*` `(sx, sy)` upsampled /
    original size.
  """
  key = (_frame_key(frame_a), _frame_key(frame_b), float(ratio), int(min_side))
  if key in _MATCH_CACHE:
    _MATCH_CACHE.move_to_end(key)
    return _MATCH_CACHE[key]
  out = _compute_ratio_matches(frame_a, frame_b, ratio, min_side)
  for arr in out[:2]:
    arr.setflags(write=False)
  _MATCH_CACHE[key] = out
  while len(_MATCH_CACHE) > _MATCH_CACHE_SIZE:
    _MATCH_CACHE.popitem(last=False)
  return out


def _compute_ratio_matches(frame_a, frame_b, ratio: float, min_side: int):
  import cv2  # pylint: disable=import-outside-toplevel
  ga, gb = _gray(frame_a, min_side), _gray(frame_b, min_side)
  scales = [(g.shape[1] / np.shape(f)[1], g.shape[0] / np.shape(f)[0]) for g, f in ((ga, frame_a), (gb, frame_b))]
  sift = cv2.SIFT_create()
  ka, da = sift.detectAndCompute(ga, None)
  kb, db = sift.detectAndCompute(gb, None)
  empty = np.zeros((0, 2), np.float32)
  if da is None or db is None or len(ka) < 2 or len(kb) < 2:
    return empty, empty, *scales
  pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
  good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
  pa = np.float32([ka[m.queryIdx].pt for m in good]).reshape(-1, 2)
  pb = np.float32([kb[m.trainIdx].pt for m in good]).reshape(-1, 2)
  return pa, pb, *scales


def matched_keypoints(frame_a: np.ndarray, frame_b: np.ndarray, *, ratio: float = 0.75, ransac_px: float = 2.0,
                      min_side: int = 256) -> int:
  """Number of RANSAC-consistent SIFT matches between two `[H, W, 3]` uint8 frames (0 when fewer than 8 matches
  survive the ratio test, the minimum for a fundamental matrix). `ransac_px` is the epipolar distance threshold in
  pixels of the upsampled frames.

  Raises:
    SyncError: a frame that is not uint8 `[H, W, 3]`.
  """
  import cv2  # pylint: disable=import-outside-toplevel
  pa, pb, _, _ = _ratio_matches(frame_a, frame_b, ratio, min_side)
  if len(pa) < 8:
    return 0
  _, inliers = cv2.findFundamentalMat(pa, pb, cv2.FM_RANSAC, ransac_px, 0.999)
  return 0 if inliers is None else int(inliers.sum())


def _camera(K, w2c, what: str) -> tuple[np.ndarray, np.ndarray]:
  """One camera as float64 `K [3, 3]`, `w2c [4, 4]`, checked (`camjax.geometry.cameras.validate_poses`)."""
  from camjax.geometry.cameras import validate_poses  # pylint: disable=import-outside-toplevel
  from camjax.geometry.errors import CameraError  # pylint: disable=import-outside-toplevel
  K, w2c = np.asarray(K, np.float64), np.asarray(w2c, np.float64)
  if K.shape != (3, 3) or w2c.shape != (4, 4):
    raise SyncError(f"{what}: expected K [3, 3] and w2c [4, 4], got {K.shape} and {w2c.shape}")
  try:
    validate_poses(w2c[None], K[None])
  except CameraError as e:
    raise SyncError(f"{what}: {e}") from e
  return K, w2c


def relative_pose(w2c_a, w2c_b) -> tuple[np.ndarray, np.ndarray]:
  """`R [3, 3]`, `t [3]` mapping camera-a coordinates to camera-b coordinates (`w2c_b @ inv(w2c_a)`), float64.
  A baseline at rounding level (`|t| <= 1e-9 max(1, |t_a|, |t_b|)`, the w2c translations) is returned as exactly 0."""
  w2c_a, w2c_b = np.asarray(w2c_a, np.float64), np.asarray(w2c_b, np.float64)
  rel = w2c_b @ np.linalg.inv(w2c_a)
  t = rel[:3, 3]
  if np.linalg.norm(t) <= 1e-9 * max(1.0, np.linalg.norm(w2c_a[:3, 3]), np.linalg.norm(w2c_b[:3, 3])):
    t = np.zeros(3)
  return rel[:3, :3], t


def fundamental_matrix(K_a, w2c_a, K_b, w2c_b) -> np.ndarray:
  """The fundamental matrix of two known cameras, `F = K_b^-T [t]_x R K_a^-1` (Hartley & Zisserman eq. 9.2 with
  `P_a = K_a [I | 0]`, `P_b = K_b [R | t]`), so that `x_b^T F x_a = 0` for the pixels `x_a`, `x_b` (homogeneous,
  continuous coordinates of the images `K_a`, `K_b` refer to) of one 3D point. Not normalised: it is exactly zero
  at zero baseline (the epipolar geometry is undefined; use `ray_distance`, which becomes the homography transfer).

  Args:
    K_a, K_b: pixel intrinsics `[3, 3]`; w2c_a, w2c_b: world-to-camera `[4, 4]` (OpenCV axes).

  Raises:
    SyncError: a camera of the wrong shape, non-finite, not rigid, or with a bad K.
  """
  from camjax.geometry.se3 import skew  # pylint: disable=import-outside-toplevel
  K_a, w2c_a = _camera(K_a, w2c_a, "camera a")
  K_b, w2c_b = _camera(K_b, w2c_b, "camera b")
  R, t = relative_pose(w2c_a, w2c_b)
  return np.linalg.inv(K_b).T @ skew(t) @ R @ np.linalg.inv(K_a)


def _scaled(K: np.ndarray, scale) -> np.ndarray:
  return np.diag([scale[0], scale[1], 1.0]) @ K


def ray_distance(x_a, x_b, K_a, w2c_a, K_b, w2c_b, *, depth_range=(0.0, np.inf)) -> np.ndarray:
  """Distance in pixels of image b from each `x_b` to the image in camera b of the viewing ray of `x_a` in camera a,
  restricted to points in front of both cameras with source depth in `depth_range`.

  With inverse depth `rho = 1 / z` (z along camera a's optical axis) the ray point projects to `a + rho b` (homogeneous)
  with `a = K_b R K_a^-1 x_a` (its vanishing point, z = inf) and `b = K_b t` (the epipole, z -> 0); camera b's depth
  is `z (a_z + rho b_z) > 0`. The allowed `rho` form an interval whose image is a segment of the epipolar line
  `F x_a`, and the distance is the point-to-segment distance (the point-to-line distance wherever the foot of the
  perpendicular falls inside). At zero baseline (`t = 0`) the segment is the point `K_b R K_a^-1 x_a`: the
  homography transfer error. Infinite where no allowed depth is in front of camera b.

  Args:
    x_a, x_b: `[N, 2]` continuous pixel coordinates (camjax convention) of the images `K_a`, `K_b` refer to.
    K_a, w2c_a, K_b, w2c_b: the two cameras, `[3, 3]` pixels and `[4, 4]` world-to-camera.
    depth_range: `(near, far)` source depths allowed, w2c units (`0 <= near < far`, `far` may be inf).

  Returns:
    float64 `[N]` distances in pixels of image b (inf where no allowed point is in front of camera b).

  Raises:
    SyncError: bad cameras, `[N, 2]` shapes that differ, or a bad `depth_range`.
  """
  x_a, x_b = np.asarray(x_a, np.float64), np.asarray(x_b, np.float64)
  if x_a.ndim != 2 or x_a.shape[-1] != 2 or x_a.shape != x_b.shape:
    raise SyncError(f"ray_distance: x_a and x_b must both be [N, 2], got {x_a.shape} and {x_b.shape}")
  near, far = _depth_range(depth_range)
  K_a, w2c_a = _camera(K_a, w2c_a, "camera a")
  K_b, w2c_b = _camera(K_b, w2c_b, "camera b")
  R, t = relative_pose(w2c_a, w2c_b)
  a = np.concatenate([x_a, np.ones_like(x_a[:, :1])], -1) @ (K_b @ R @ np.linalg.inv(K_a)).T  # [N, 3]
  b = K_b @ t  # [3]
  lo = np.full(len(a), 0.0 if np.isinf(far) else 1.0 / far)
  hi = np.full(len(a), 1e12 if near == 0 else 1.0 / near)  # rho -> inf: the epipole (or far along the line)
  # In front of camera b: a_z + rho b_z >= eps (a strictly positive margin keeps the endpoints finite).
  eps = 1e-9 * np.linalg.norm(a, axis=-1)
  if b[2] > 0:
    lo = np.maximum(lo, (eps - a[:, 2]) / b[2])
  elif b[2] < 0:
    hi = np.minimum(hi, (eps - a[:, 2]) / b[2])
  valid = (lo <= hi) & ((b[2] != 0) | (a[:, 2] >= eps))

  def point(rho):
    den = np.where(valid, a[:, 2] + rho * b[2], 1.0)
    return (a[:, :2] + rho[:, None] * b[:2]) / den[:, None]

  p0, p1 = point(lo), point(hi)
  v = p1 - p0
  length2 = np.einsum("ni,ni->n", v, v)
  s = np.einsum("ni,ni->n", x_b - p0, v) / np.where(length2 > 0, length2, 1.0)
  s = np.where(length2 > 0, np.clip(s, 0.0, 1.0), 0.0)
  dist = np.linalg.norm(x_b - (p0 + s[:, None] * v), axis=-1)
  return np.where(valid & np.isfinite(dist), dist, np.inf)


def _depth_range(depth_range) -> tuple[float, float]:
  try:
    near, far = (float(v) for v in depth_range)
  except (TypeError, ValueError) as e:
    raise SyncError(f"depth_range must be (near, far), got {depth_range!r}") from e
  if not (np.isfinite(near) and 0 <= near < far and not np.isnan(far)):
    raise SyncError(f"depth_range must satisfy 0 <= near < far (far may be inf), got {depth_range!r}")
  return near, far


def epipolar_matches(frame_a: np.ndarray, frame_b: np.ndarray, K_a, w2c_a, K_b, w2c_b, *, ratio: float = 0.75,
                     max_px: float = 2.0, min_shift_px: float = 2.0, depth_range=(0.0, np.inf),
                     min_side: int = 256) -> int:
  """Number of SIFT ratio-test matches between two `[H, W, 3]` uint8 frames that agree with the KNOWN relative
  camera and move (camjax's addition, see the module docstring): `ray_distance < max_px` and
  `|x_b - x_a| >= min_shift_px`, both in pixels of the upsampled frame b (`x_a` taken to frame b's upsampled grid
  when the sizes differ). No ratio-test match (e.g. a frame without keypoints) -> 0.

  Args:
    frame_a, frame_b: uint8 `[H, W, 3]` frames (sizes may differ); `K_a`, `K_b` are for their ORIGINAL sizes and are
      scaled with the upsampling (`min_side`).
    K_a, w2c_a, K_b, w2c_b: pixel intrinsics `[3, 3]`, world-to-camera `[4, 4]` (OpenCV axes) of the two frames.
    max_px: distance to the ray's image, pixels of the upsampled frame b.
    min_shift_px: a match must move by at least this (pixels of the upsampled frame b); 0 counts every consistent
      match, including those that copying frame a produces.
    depth_range: `(near, far)` source depths allowed (w2c units), see `ray_distance`.

  Raises:
    SyncError: a frame that is not uint8 `[H, W, 3]`, bad cameras, non-positive `max_px`, negative `min_shift_px`,
      or a bad `depth_range`.
  """
  if not max_px > 0 or not min_shift_px >= 0:
    raise SyncError(f"max_px must be > 0 and min_shift_px >= 0, got {max_px} and {min_shift_px}")
  _depth_range(depth_range)
  K_a, w2c_a = _camera(K_a, w2c_a, "camera a")
  K_b, w2c_b = _camera(K_b, w2c_b, "camera b")
  pa, pb, scale_a, scale_b = _ratio_matches(frame_a, frame_b, ratio, min_side)
  if not len(pa):
    return 0
  xa, xb = pa.astype(np.float64) + 0.5, pb.astype(np.float64) + 0.5  # OpenCV -> camjax pixel coordinates
  dist = ray_distance(xa, xb, _scaled(K_a, scale_a), w2c_a, _scaled(K_b, scale_b), w2c_b, depth_range=depth_range)
  size_a, size_b = np.shape(frame_a)[1::-1], np.shape(frame_b)[1::-1]  # (W, H)
  to_b = np.array([scale_b[i] * size_b[i] / (scale_a[i] * size_a[i]) for i in range(2)])
  shift = np.linalg.norm(xb - xa * to_b, axis=-1)
  return int(np.sum((dist < max_px) & (shift >= min_shift_px)))


def _depth_at(depth: np.ndarray, x: np.ndarray, edge_tol: float) -> np.ndarray:
  """Depth `[N]` of the pixels holding continuous points `x [N, 2]` (camjax coordinates of `depth`'s grid); NaN
  outside the image, where a value of the 3x3 neighbourhood is not finite and positive, or where those depths spread
  by more than `edge_tol` of their minimum (a depth edge, where the keypoint's surface is ambiguous)."""
  h, w = depth.shape
  ix, iy = np.floor(x[:, 0]).astype(np.int64), np.floor(x[:, 1]).astype(np.int64)
  inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
  pad = np.pad(np.where(np.isfinite(depth) & (depth > 0), depth, np.nan), 1, mode="edge")
  cx, cy = np.clip(ix, 0, w - 1) + 1, np.clip(iy, 0, h - 1) + 1
  patch = np.stack([pad[cy + dy, cx + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], -1)  # [N, 9]
  with np.errstate(invalid="ignore"):
    lo, hi = patch.min(-1), patch.max(-1)
    ok = inside & np.isfinite(lo) & np.isfinite(hi) & (hi - lo <= edge_tol * lo)
  return np.where(ok, patch[:, 4], np.nan)


def _depth_map(depth, frame, name: str) -> np.ndarray:
  depth = np.asarray(depth, np.float64)
  if depth.shape != np.shape(frame)[:2]:
    raise SyncError(f"{name} must be [H, W] of its frame {np.shape(frame)[:2]}, got {depth.shape}")
  return depth


def true_matches(frame_a: np.ndarray, frame_b: np.ndarray, depth_a, K_a, w2c_a, K_b, w2c_b, *, depth_b=None,
                 ratio: float = 0.75, max_px: float = 4.0, min_shift_px: float = 4.0, edge_tol: float = 0.25,
                 occlusion_tol: float = 0.05, min_side: int = 256) -> int:
  """Number of SIFT ratio-test matches between two `[H, W, 3]` uint8 frames that land on the TRUE correspondence of
  the frame-a keypoint (camjax's addition, NOT the paper's protocol; it needs ground-truth depth, so procedural
  pairs only): the keypoint is lifted with `depth_a` at its pixel, moved into camera b with the known relative pose
  and projected; the match counts when its frame-b keypoint lies within `max_px` of that point, the point truly moved
  by at least `min_shift_px` (copying frame a cannot score) and, with `depth_b`, is visible in frame b (its depth
  there within `occlusion_tol` of the projected depth). Unlike `epipolar_matches` this judges depth: a source pixel
  moved along its ray to a wrong depth lands off its true correspondence. Keypoints on a depth edge (the 3x3
  depths spread by more than `edge_tol` of their minimum) are left out: their surface is ambiguous (25% keeps a
  64-px floor seen at a grazing angle, whose depth changes by up to ~20% over 3 pixels, and drops the jumps between
  an object and the wall behind it). Pixels as in `epipolar_matches` (of the upsampled frame b).

  Args:
    frame_a, frame_b: uint8 `[H, W, 3]` frames (sizes may differ); `K_a`, `K_b` for their ORIGINAL sizes.
    depth_a: `[H_a, W_a]` camera-space z of frame a (w2c units, metres for camjax's data); `depth_b` likewise for
      frame b's true view (optional: without it occluded points count when matched at their hidden position).
    K_a, w2c_a, K_b, w2c_b: pixel intrinsics `[3, 3]`, world-to-camera `[4, 4]` (OpenCV axes).
    max_px, min_shift_px: pixels of the upsampled frame b (4 px at 256 px = 1 px of a 64-px frame).

  Raises:
    SyncError: a frame that is not uint8 `[H, W, 3]`, a depth map not of its frame's size, bad cameras, or
      non-positive thresholds.
  """
  if not (max_px > 0 and min_shift_px >= 0 and edge_tol >= 0 and occlusion_tol > 0):
    raise SyncError(f"true_matches: max_px and occlusion_tol must be > 0, min_shift_px and edge_tol >= 0, got "
                    f"{max_px}, {occlusion_tol}, {min_shift_px}, {edge_tol}")
  depth_a = _depth_map(depth_a, frame_a, "depth_a")
  depth_b = None if depth_b is None else _depth_map(depth_b, frame_b, "depth_b")
  K_a, w2c_a = _camera(K_a, w2c_a, "camera a")
  K_b, w2c_b = _camera(K_b, w2c_b, "camera b")
  pa, pb, scale_a, scale_b = _ratio_matches(frame_a, frame_b, ratio, min_side)
  if not len(pa):
    return 0
  sa, sb = np.asarray(scale_a, np.float64), np.asarray(scale_b, np.float64)
  xa = (pa.astype(np.float64) + 0.5) / sa  # original frame-a pixels, camjax coordinates
  xb = pb.astype(np.float64) + 0.5  # upsampled frame-b pixels
  z = _depth_at(depth_a, xa, edge_tol)
  R, t = relative_pose(w2c_a, w2c_b)
  rays = np.concatenate([xa, np.ones_like(xa[:, :1])], -1) @ np.linalg.inv(K_a).T
  cam_b = (np.nan_to_num(z)[:, None] * rays) @ R.T + t
  front = np.isfinite(z) & (cam_b[:, 2] > 1e-9 * np.maximum(np.nan_to_num(z), 1.0))
  proj = cam_b @ K_b.T
  true_b = proj[:, :2] / np.where(front, proj[:, 2], 1.0)[:, None]  # original frame-b pixels
  ok = front.copy()
  if depth_b is not None:
    # No spread test on the target side (the projected depth decides), but a pixel next to one without a surface
    # (the sky) has no depth here either, so such points are not counted.
    zb = _depth_at(depth_b, true_b, np.inf)
    with np.errstate(invalid="ignore"):
      ok &= np.isfinite(zb) & (np.abs(zb - cam_b[:, 2]) <= occlusion_tol * cam_b[:, 2])
  else:
    h, w = np.shape(frame_b)[:2]
    ok &= (true_b[:, 0] >= 0) & (true_b[:, 0] < w) & (true_b[:, 1] >= 0) & (true_b[:, 1] < h)
  size_a, size_b = np.asarray(np.shape(frame_a)[1::-1], np.float64), np.asarray(np.shape(frame_b)[1::-1], np.float64)
  moved = np.linalg.norm((true_b - xa * size_b / size_a) * sb, axis=-1) >= min_shift_px
  close = np.linalg.norm(xb - true_b * sb, axis=-1) < max_px
  return int(np.sum(ok & moved & close))


def _synchronised(source, generated, skip_frames: int) -> tuple[np.ndarray, np.ndarray]:
  a, b = np.asarray(source), np.asarray(generated)
  if a.ndim != 4 or b.ndim != 4 or a.shape[-1] != 3 or b.shape[-1] != 3:
    raise SyncError(f"videos must be [T, H, W, 3], got {a.shape} and {b.shape}")
  if a.shape[0] != b.shape[0]:
    raise SyncError(f"videos must have the same frame count to compare timestamps, got {a.shape[0]} and "
                    f"{b.shape[0]}")
  if not 0 <= skip_frames < a.shape[0]:
    raise SyncError(f"skip_frames={skip_frames} leaves no frame of {a.shape[0]}")
  return a, b


def sync_scores(source, generated, *, skip_frames: int = 1, **opts) -> dict[str, float]:
  """Per-timestamp matched keypoints between two synchronised videos `[T, H, W, 3]` uint8 (same `T`; sizes may
  differ), on frames `skip_frames..T-1`.

  Returns:
    `{"matches": mean inliers per frame, "matches_per_frame": list}`.

  Raises:
    SyncError: different frame counts, wrong rank, or nothing left after `skip_frames`.
  """
  a, b = _synchronised(source, generated, skip_frames)
  per = [matched_keypoints(a[t], b[t], **opts) for t in range(skip_frames, a.shape[0])]
  return {"matches": float(np.mean(per)), "matches_per_frame": per}


def epipolar_sync_scores(source, generated, K_src, w2c_src, K_gen, w2c_gen, *, skip_frames: int = 1,
                         **opts) -> dict[str, float]:
  """Per-timestamp geometry-consistent moving matches (`epipolar_matches`; camjax's addition, not the paper's
  protocol) between a source video and a candidate video that should show the same instants from other known
  cameras, on frames `skip_frames..T-1`.

  Args:
    source, generated: uint8 `[T, H, W, 3]` (same `T`; sizes may differ).
    K_src, w2c_src: the source cameras, `[T, 3, 3]` pixels of the source frames, `[T, 4, 4]` world-to-camera.
    K_gen, w2c_gen: the cameras the candidate should have been seen from (the target cameras), same shapes, K for
      the candidate's frame size.
    **opts: of `epipolar_matches` (`max_px`, `min_shift_px`, `depth_range`, `ratio`, `min_side`).

  Returns:
    `{"matches_geo": mean count per frame, "matches_geo_per_frame": list}`.

  Raises:
    SyncError: as `sync_scores`, cameras of the wrong shape or frame count, or a bad camera (naming its frame).
  """
  a, b = _synchronised(source, generated, skip_frames)
  cams = _frame_cameras(a.shape[0], K_src, w2c_src, K_gen, w2c_gen)
  per = _per_frame(range(skip_frames, a.shape[0]), lambda t: epipolar_matches(a[t], b[t], *(c[t] for c in cams),
                                                                               **opts))
  return {"matches_geo": float(np.mean(per)), "matches_geo_per_frame": per}


def _frame_cameras(num_frames: int, K_src, w2c_src, K_gen, w2c_gen) -> list[np.ndarray]:
  """The per-frame cameras of two synchronised videos as float64, shapes checked (`SyncError` naming the array)."""
  cams = [np.asarray(c, np.float64) for c in (K_src, w2c_src, K_gen, w2c_gen)]
  for c, shape, name in zip(cams, ((3, 3), (4, 4)) * 2, ("K_src", "w2c_src", "K_gen", "w2c_gen")):
    if c.shape != (num_frames, *shape):
      raise SyncError(f"{name} must be [{num_frames}, {shape[0]}, {shape[1]}] for {num_frames} frames, got {c.shape}")
  return cams


def _per_frame(frames, score) -> list:
  """`[score(t) for t in frames]`, a `SyncError` re-raised naming its frame."""
  per = []
  for t in frames:
    try:
      per.append(score(t))
    except SyncError as e:
      raise SyncError(f"frame {t}: {e}") from e
  return per


def clip_v(source, generated, encoder, *, skip_frames: int = 1) -> float:
  """CLIP-V (Track2View sec. 4, after ReCamMaster): the mean cosine similarity of CLIP image embeddings of the source
  and the generated frame at the same timestamp, over frames `skip_frames..T-1` of two synchronised videos
  `[T, H, W, 3]` uint8 (sizes may differ).

  Args:
    encoder: maps `uint8 [N, H, W, 3]` to L2-normalised `[N, D]`, e.g. `camjax.eval.learned.load("clip", path)` (a
      local OpenAI CLIP TorchScript archive; camjax downloads nothing).

  Raises:
    SyncError: as `sync_scores` (shapes, frame counts, `skip_frames`).
  """
  a, b = _synchronised(source, generated, skip_frames)
  fa, fb = np.asarray(encoder(a[skip_frames:])), np.asarray(encoder(b[skip_frames:]))
  return float(np.mean(np.sum(fa * fb, axis=-1)))


def true_sync_scores(source, generated, depth_src, K_src, w2c_src, K_gen, w2c_gen, *, depth_gen=None,
                     skip_frames: int = 1, **opts) -> dict[str, float]:
  """Per-timestamp matches at the ground-truth correspondence (`true_matches`; camjax's addition, not the paper's
  protocol) between a source video and a candidate video that should show the same instants from other known
  cameras, on frames `skip_frames..T-1`.

  Args:
    source, generated: uint8 `[T, H, W, 3]` (same `T`; sizes may differ).
    depth_src: `[T, H, W]` ground-truth camera-space z of the source frames.
    K_src, w2c_src, K_gen, w2c_gen: as `epipolar_sync_scores`.
    depth_gen: optional `[T, H', W']` ground-truth depth of the TRUE target view (visibility).
    **opts: of `true_matches` (`max_px`, `min_shift_px`, `edge_tol`, `occlusion_tol`, `ratio`, `min_side`).

  Returns:
    `{"matches_true": mean count per frame, "matches_true_per_frame": list}`.

  Raises:
    SyncError: as `epipolar_sync_scores`, or depth maps of the wrong shape (naming the frame).
  """
  a, b = _synchronised(source, generated, skip_frames)
  cams = _frame_cameras(a.shape[0], K_src, w2c_src, K_gen, w2c_gen)
  depth_src = np.asarray(depth_src)
  depth_gen = None if depth_gen is None else np.asarray(depth_gen)
  if depth_src.shape[:1] != a.shape[:1] or (depth_gen is not None and depth_gen.shape[:1] != a.shape[:1]):
    raise SyncError(f"depth maps must have {a.shape[0]} frames, got {depth_src.shape} and "
                    f"{None if depth_gen is None else depth_gen.shape}")
  per = _per_frame(range(skip_frames, a.shape[0]), lambda t: true_matches(
      a[t], b[t], depth_src[t], *(c[t] for c in cams), depth_b=None if depth_gen is None else depth_gen[t], **opts))
  return {"matches_true": float(np.mean(per)), "matches_true_per_frame": per}
