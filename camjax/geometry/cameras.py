"""`Cameras`: per-frame pinhole cameras in OpenCV axes, and the operations users get wrong elsewhere.

Conventions (REFERENCE.md section 1), enforced everywhere in camjax:
  * axes are OpenCV: x right, y down, z forward (readers convert at the border);
  * `w2c` maps world points to camera coordinates, `c2w = inv(w2c)`; the camera centre is `c2w[:3, 3]`;
  * `K` is in pixels of an image of `height x width`, continuous pixel coordinates with pixel (x, y) covering
    `[x, x + 1) x [y, y + 1)`, so the centre of pixel (x, y) is `(x + 0.5, y + 0.5)`;
  * relative poses to a reference camera: `rel_c2w_i = w2c_ref @ c2w_i`, so the reference becomes the identity.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.struct
import numpy as np

from camjax.geometry import se3
from camjax.geometry.errors import CameraError

ROTATION_TOLERANCE = 1e-4  # max |R^T R - I| and |det R - 1| accepted (REFERENCE.md section 1)


def intrinsics(fx, fy, cx, cy):
  """Pixel intrinsic matrices `[..., 3, 3]` from broadcastable `fx, fy, cx, cy` (pixels)."""
  xp = se3.xp_of(fx, fy, cx, cy)
  fx, fy, cx, cy = xp.broadcast_arrays(*(xp.asarray(v, dtype=xp.float64 if xp is np else None) for v in
                                         (fx, fy, cx, cy)))
  zero, one = xp.zeros_like(fx), xp.ones_like(fx)
  return xp.stack([
      xp.stack([fx, zero, cx], -1),
      xp.stack([zero, fy, cy], -1),
      xp.stack([zero, zero, one], -1),
  ], -2)


def default_intrinsics(height: int, width: int) -> np.ndarray:
  """Intrinsics for an image whose camera is unknown (RealCam-I2V app): `fx = fy = max(H, W) / 2`, centred."""
  f = 0.5 * max(height, width)
  return intrinsics(f, f, width / 2.0, height / 2.0)


def validate_poses(w2c, K=None, *, source=None, lines: Sequence[int] | None = None,
                   tolerance: float = ROTATION_TOLERANCE) -> None:
  """Checks `w2c [T, 4, 4]` (and `K [T, 3, 3]`) frame by frame; raises `CameraError` at the first bad frame.

  Checks: finite values; bottom row `[0, 0, 0, 1]`; rotation orthonormal (`max |R^T R - I| < tolerance`) with
  `det R = +1` (a reflection means a left-handed convention slipped through); positive focal lengths and a
  `[0, 0, 1]` last row of K.

  Args:
    w2c: world-to-camera matrices `[T, 4, 4]` (leading batch dims are flattened; frames count along the last).
    K: optional pixel intrinsics `[T, 3, 3]`.
    source: file (or other origin) named in the error.
    lines: the 1-based line of `source` for each frame, named in the error.
    tolerance: rotation tolerance.

  Raises:
    CameraError: naming the source, line and frame at fault.
  """
  w2c = np.asarray(w2c, dtype=np.float64).reshape(-1, 4, 4)
  Ks = None if K is None else np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)

  def fail(message, frame):
    line = None if lines is None else lines[frame]
    raise CameraError(message, source=source, line=line, frame=frame)

  if w2c.shape[0] == 0:
    raise CameraError("no camera frames", source=source)
  if Ks is not None and Ks.shape[0] != w2c.shape[0]:
    raise CameraError(f"{Ks.shape[0]} intrinsics for {w2c.shape[0]} poses", source=source)
  finite = np.isfinite(w2c).all(axis=(1, 2))
  if Ks is not None:
    finite &= np.isfinite(Ks).all(axis=(1, 2))
  R = w2c[:, :3, :3]
  ortho = np.abs(np.swapaxes(R, 1, 2) @ R - np.eye(3)).max(axis=(1, 2))
  det = np.linalg.det(R)
  bottom = np.abs(w2c[:, 3] - np.array([0, 0, 0, 1.0])).max(axis=1)
  for i in range(w2c.shape[0]):
    if not finite[i]:
      fail("non-finite value (NaN or inf) in the camera", i)
    if bottom[i] > 1e-6:
      fail(f"last row of the pose is {w2c[i, 3].tolist()}, expected [0, 0, 0, 1]", i)
    if ortho[i] > tolerance:
      fail(f"rotation is not orthonormal (max |R^T R - I| = {ortho[i]:.3g} > {tolerance:g})", i)
    if abs(det[i] - 1.0) > tolerance:
      fail(f"rotation has det {det[i]:+.4f}, expected +1 (a left-handed / reflected convention?)", i)
    if Ks is not None:
      k = Ks[i]
      if k[0, 0] <= 0 or k[1, 1] <= 0:
        fail(f"focal lengths must be positive, got fx={k[0, 0]:g} fy={k[1, 1]:g}", i)
      if np.abs(k[2] - np.array([0, 0, 1.0])).max() > 1e-9:
        fail(f"last row of K is {k[2].tolist()}, expected [0, 0, 1]", i)


@flax.struct.dataclass
class Cameras:
  """Per-frame pinhole cameras (a JAX pytree; NumPy or JAX leaves).

  Attributes:
    K: pixel intrinsics `[..., T, 3, 3]` for an image of `height x width` pixels.
    w2c: world-to-camera poses `[..., T, 4, 4]`, OpenCV axes. Units of the translation are those of the source
      (metres for TUM/KITTI/metric-scaled data; arbitrary for SfM/RealEstate10K).
    height: image height in pixels (static pytree metadata, shared by every frame and batch element).
    width: image width in pixels (static).
    timestamps: optional per-frame times in seconds `[..., T]`.
  """

  K: Any
  w2c: Any
  height: int = flax.struct.field(pytree_node=False)
  width: int = flax.struct.field(pytree_node=False)
  timestamps: Any = None

  # ----------------------------------------------------------------- construction and views
  @classmethod
  def create(cls, w2c, K=None, *, height: int, width: int, timestamps=None) -> "Cameras":
    """Builds cameras from `w2c [..., T, 4, 4]` (or `[..., T, 3, 4]`); `K` broadcasts (default: unknown-camera K)."""
    xp = se3.xp_of(w2c, K)
    w2c = xp.asarray(w2c)
    if w2c.shape[-2:] == (3, 4):
      w2c = se3.make_pose(w2c[..., :3], w2c[..., 3])
    if w2c.ndim < 3 or w2c.shape[-2:] != (4, 4):
      raise CameraError(f"w2c must be [..., T, 4, 4], got shape {tuple(w2c.shape)}")
    if K is None:
      K = default_intrinsics(height, width).astype(w2c.dtype)
    K = xp.broadcast_to(xp.asarray(K, dtype=w2c.dtype), w2c.shape[:-2] + (3, 3))
    return cls(K=K, w2c=w2c, height=int(height), width=int(width), timestamps=timestamps)

  @classmethod
  def from_c2w(cls, c2w, K=None, *, height: int, width: int, timestamps=None) -> "Cameras":
    """Builds cameras from camera-to-world poses `[..., T, 4, 4]` (OpenCV axes)."""
    c2w = c2w if se3.xp_of(c2w) is not np else np.asarray(c2w)
    return cls.create(se3.invert(c2w), K, height=height, width=width, timestamps=timestamps)

  @property
  def c2w(self):
    """Camera-to-world poses `[..., T, 4, 4]`."""
    return se3.invert(self.w2c)

  @property
  def centers(self):
    """Camera centres in world coordinates `[..., T, 3]`."""
    return self.c2w[..., :3, 3]

  @property
  def num_frames(self) -> int:
    return self.w2c.shape[-3]

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return tuple(self.w2c.shape[:-3])

  @property
  def image_size(self) -> tuple[int, int]:
    """`(height, width)` in pixels."""
    return (self.height, self.width)

  def __len__(self) -> int:
    return self.num_frames

  def numpy(self) -> "Cameras":
    """A copy with NumPy float64 leaves."""
    ts = None if self.timestamps is None else np.asarray(self.timestamps, np.float64)
    return self.replace(K=np.asarray(self.K, np.float64), w2c=np.asarray(self.w2c, np.float64), timestamps=ts)

  def validate(self, source=None, lines: Sequence[int] | None = None) -> "Cameras":
    """Raises `CameraError` naming the frame (and `source`/line) of the first invalid camera; returns self.

    See `validate_poses` for the checks. Leading batch dimensions are flattened into the frame index.
    """
    validate_poses(self.w2c, self.K, source=source, lines=lines)
    return self

  # ------------------------------------------------------------------------- poses
  def relative(self, reference: int | Any = 0) -> "Cameras":
    """Poses relative to a reference camera, which becomes the identity: `rel_c2w_i = w2c_ref @ c2w_i`.

    Args:
      reference: a frame index of these cameras (default the first frame), or an explicit reference `w2c`
        `[..., 4, 4]` (e.g. the first frame of the first clip of a multi-clip exploration, CameraCtrl II sec. 3.4,
        so that every clip shares ONE global frame).

    Returns:
      Cameras whose `w2c_i = w2c_i @ c2w_ref` (intrinsics unchanged).
    """
    xp = se3.xp_of(self.w2c)
    if isinstance(reference, (int, np.integer)):
      if not -self.num_frames <= reference < self.num_frames:
        raise CameraError(f"reference frame {reference} out of range for {self.num_frames} frames")
      ref_w2c = self.w2c[..., reference, :, :]
    else:
      ref_w2c = xp.asarray(reference, dtype=self.w2c.dtype)
      if ref_w2c.shape[-2:] != (4, 4):
        raise CameraError(f"reference pose must be a [..., 4, 4] w2c, got shape {tuple(ref_w2c.shape)}")
    return self.replace(w2c=self.w2c @ se3.invert(ref_w2c)[..., None, :, :])

  def scale_translation(self, scale) -> "Cameras":
    """Multiplies every translation by `scale` (scalar or `[...]`): `t <- s t` (CameraCtrl II eq. 2, RealCam-I2V)."""
    xp = se3.xp_of(self.w2c, scale)
    scale = xp.asarray(scale, dtype=self.w2c.dtype)[..., None, None]
    return self.replace(w2c=se3.make_pose(self.w2c[..., :3, :3], self.w2c[..., :3, 3] * scale))

  # ---------------------------------------------------------------------- frames
  def take(self, indices) -> "Cameras":
    """Frames at `indices` (along the frame axis)."""
    xp = se3.xp_of(self.w2c)
    idx = xp.asarray(indices)
    ts = None if self.timestamps is None else xp.take(self.timestamps, idx, axis=-1)
    return self.replace(K=xp.take(self.K, idx, axis=-3), w2c=xp.take(self.w2c, idx, axis=-3), timestamps=ts)

  def subsample(self, stride: int = 1, start: int = 0, num_frames: int | None = None) -> "Cameras":
    """Temporal subsampling: frames `start, start + stride, ...` (at most `num_frames` of them).

    Raises:
      CameraError: when fewer than `num_frames` frames are available.
    """
    if stride < 1 or start < 0:
      raise CameraError(f"subsample needs stride >= 1 and start >= 0, got stride={stride} start={start}")
    indices = np.arange(start, self.num_frames, stride)
    if num_frames is not None:
      if len(indices) < num_frames:
        raise CameraError(f"asked for {num_frames} frames with stride {stride} from frame {start}, "
                          f"only {len(indices)} of {self.num_frames} available")
      indices = indices[:num_frames]
    return self.take(indices)

  def __getitem__(self, index) -> "Cameras":
    """Indexes the leading (batch) dimensions, e.g. `cams[0]` of a `[B, T]` batch."""
    if self.w2c.ndim <= 3:
      raise CameraError("Cameras without a batch dimension: use take() / subsample() for frames")
    ts = None if self.timestamps is None else self.timestamps[index]
    return self.replace(K=self.K[index], w2c=self.w2c[index], timestamps=ts)

  @staticmethod
  def concatenate(cameras: Sequence["Cameras"]) -> "Cameras":
    """Concatenates along the frame axis; every element must share the image size."""
    first = cameras[0]
    for c in cameras[1:]:
      if c.image_size != first.image_size:
        raise CameraError(f"cannot concatenate cameras of image size {c.image_size} and {first.image_size}")
    xp = se3.xp_of(*(c.w2c for c in cameras))
    has_ts = all(c.timestamps is not None for c in cameras)
    return first.replace(K=xp.concatenate([c.K for c in cameras], axis=-3),
                         w2c=xp.concatenate([c.w2c for c in cameras], axis=-3),
                         timestamps=xp.concatenate([c.timestamps for c in cameras], -1) if has_ts else None)

  @staticmethod
  def stack(cameras: Sequence["Cameras"]) -> "Cameras":
    """Stacks clips of equal length into a batch `[B, T, ...]`."""
    first = cameras[0]
    for c in cameras[1:]:
      if c.image_size != first.image_size or c.num_frames != first.num_frames:
        raise CameraError("stack needs equal image sizes and frame counts")
    xp = se3.xp_of(*(c.w2c for c in cameras))
    has_ts = all(c.timestamps is not None for c in cameras)
    return first.replace(K=xp.stack([c.K for c in cameras]), w2c=xp.stack([c.w2c for c in cameras]),
                         timestamps=xp.stack([c.timestamps for c in cameras]) if has_ts else None)

  # -------------------------------------------------------------------- image size
  def resize(self, height: int, width: int) -> "Cameras":
    """Intrinsics after resizing the image to `height x width` (anisotropic if the aspect changes)."""
    xp = se3.xp_of(self.K)
    s = xp.asarray([width / self.width, height / self.height, 1.0], dtype=self.K.dtype)
    return self.replace(K=self.K * s[:, None], height=int(height), width=int(width))

  def crop(self, top: float, left: float, height: int, width: int) -> "Cameras":
    """Intrinsics after cropping the window starting at pixel `(top, left)` of size `height x width`."""
    xp = se3.xp_of(self.K)
    shift = xp.asarray([[0, 0, left], [0, 0, top], [0, 0, 0]], dtype=self.K.dtype)
    return self.replace(K=self.K - shift, height=int(height), width=int(width))

  def center_crop(self, height: int, width: int) -> "Cameras":
    """Intrinsics after a centred crop to `height x width` (offsets may be half pixels, as in the image op)."""
    if height > self.height + 1e-6 or width > self.width + 1e-6:
      raise CameraError(f"cannot centre-crop {self.height}x{self.width} to a larger {height}x{width}")
    return self.crop((self.height - height) / 2.0, (self.width - width) / 2.0, height, width)

  def resize_center_crop(self, height: int, width: int) -> "Cameras":
    """Aspect-preserving resize to cover `height x width`, then centre crop (CameraCtrl's `rescale_fxy` semantics).

    For RealEstate10K poses of a 16:9 original shown at 576x320 this gives exactly `fx_px = fx * 576`,
    `fy_px = fy * 324`, `cy_px = cy * 324 - 2` (REFERENCE.md section 1).
    """
    scale = max(height / self.height, width / self.width)
    resized = self.resize(self.height * scale, self.width * scale)
    # Keep the float size for the crop offsets, then store integer sizes.
    resized = resized.replace(height=self.height * scale, width=self.width * scale)
    return resized.center_crop(height, width)
