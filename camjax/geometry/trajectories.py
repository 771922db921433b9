"""Camera trajectories: presets a user asks for, SE(3) interpolation/resampling, chaining clips in one global frame.

Every preset returns RELATIVE cameras: frame 0 is the identity pose, so conditioning on them never moves the camera
at frame 0 ("an identity pose still moves the camera" cannot happen). Axes are OpenCV (x right, y down, z forward);
translations are metres, angles degrees in the public arguments.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from camjax.geometry import se3
from camjax.geometry.cameras import Cameras, default_intrinsics
from camjax.geometry.errors import CameraError

# name -> (kind, axis, sign, default magnitude). Rotations in degrees, translations in metres, zoom as a focal factor.
_PRESETS = {
    "static": ("none", None, 0, 0.0),
    "pan_left": ("rotate", 1, -1, 30.0),
    "pan_right": ("rotate", 1, +1, 30.0),
    "tilt_up": ("rotate", 0, +1, 20.0),
    "tilt_down": ("rotate", 0, -1, 20.0),
    "roll_cw": ("rotate", 2, +1, 30.0),
    "roll_ccw": ("rotate", 2, -1, 30.0),
    "dolly_in": ("translate", 2, +1, 1.0),
    "dolly_out": ("translate", 2, -1, 1.0),
    "truck_left": ("translate", 0, -1, 1.0),
    "truck_right": ("translate", 0, +1, 1.0),
    "pedestal_up": ("translate", 1, -1, 0.5),
    "pedestal_down": ("translate", 1, +1, 0.5),
    "orbit_left": ("orbit", 1, +1, 30.0),
    "orbit_right": ("orbit", 1, -1, 30.0),
    "zoom_in": ("zoom", None, +1, 1.5),
    "zoom_out": ("zoom", None, -1, 1.5),
}
PRESETS = tuple(_PRESETS)


def _axis_rotation(axis: int, angle) -> np.ndarray:
  omega = np.zeros(np.shape(angle) + (3,))
  omega[..., axis] = angle
  return se3.so3_exp(omega)


def _single_preset(name: str, alpha: np.ndarray, magnitude: float | None, radius: float):
  """Returns (c2w [T, 4, 4], focal factor [T]) for one named motion at progress `alpha` in [0, 1]."""
  if name not in _PRESETS:
    raise CameraError(f"unknown trajectory preset {name!r}; known: {', '.join(PRESETS)}")
  kind, axis, sign, default = _PRESETS[name]
  mag = default if magnitude is None else float(magnitude)
  if kind == "zoom" and mag <= 0:
    raise CameraError(f"zoom preset {name!r} needs a focal factor above 0, got {mag}")
  T = len(alpha)
  c2w = np.tile(np.eye(4), (T, 1, 1))
  focal = np.ones(T)
  if kind == "rotate":
    c2w[:, :3, :3] = _axis_rotation(axis, np.deg2rad(sign * mag) * alpha)
  elif kind == "translate":
    c2w[:, axis, 3] = sign * mag * alpha
  elif kind == "orbit":
    # Circle around the point `radius` metres ahead, always looking at it: c2w = T(0,0,r) R_y(a) T(0,0,-r).
    R = _axis_rotation(axis, np.deg2rad(sign * mag) * alpha)
    c2w[:, :3, :3] = R
    c2w[:, :3, 3] = np.array([0, 0, radius]) - R @ np.array([0, 0, radius])
  elif kind == "zoom":
    focal = mag ** (sign * alpha)
  return c2w, focal


def preset(name: str, num_frames: int = 25, *, magnitude: float | None = None, radius: float = 2.0,
           height: int = 320, width: int = 576, K=None) -> Cameras:
  """A named camera motion, relative to frame 0 (identity), progressing linearly over `num_frames`.

  Names (see `PRESETS`): static, pan_left/right (yaw), tilt_up/down (pitch), roll_cw/ccw (about the view axis,
  clockwise as seen from behind the camera), dolly_in/out (forward/back), truck_left/right, pedestal_up/down,
  orbit_left/right (around the point `radius` metres ahead, looking at it), zoom_in/out (focal length).
  Compose with '+', optionally giving each part its magnitude after ':', e.g. `"pan_left:45+dolly_in:2"`; the
  parts are applied per frame as `c2w = c2w_a @ c2w_b` (later parts move in the frame of earlier ones).

  Args:
    name: preset name or composition.
    num_frames: T.
    magnitude: total motion at the last frame: degrees for rotations and orbits, metres for translations, focal
      factor for zooms (defaults: pan/orbit/roll 30, tilt 20, dolly/truck 1 m, pedestal 0.5 m, zoom 1.5x).
    radius: orbit radius in metres.
    height, width: image size of the returned cameras.
    K: base intrinsics `[3, 3]` (default: `fx = fy = max(H, W) / 2`, centred).

  Returns:
    `Cameras [T]` with `w2c[0] = I`.

  Raises:
    CameraError: unknown name, bad (non-numeric, NaN, infinite; non-positive zoom) magnitude or frame count.
  """
  if num_frames < 1:
    raise CameraError(f"num_frames must be >= 1, got {num_frames}")
  alpha = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
  c2w = np.tile(np.eye(4), (num_frames, 1, 1))
  focal = np.ones(num_frames)
  parts = [p.strip() for p in name.split("+") if p.strip()]
  if not parts:
    raise CameraError(f"empty trajectory preset {name!r}")
  if magnitude is not None and not math.isfinite(float(magnitude)):
    raise CameraError(f"magnitude must be a finite number, got {magnitude!r} for preset {name!r}")
  for part in parts:
    part_name, _, mag = part.partition(":")
    try:
      part_mag = float(mag) if mag else magnitude
    except ValueError:
      raise CameraError(f"bad magnitude {mag!r} in preset {name!r}") from None
    if part_mag is not None and not math.isfinite(part_mag):
      which = f" (part {part!r})" if len(parts) > 1 else ""
      raise CameraError(f"non-finite magnitude {mag.strip()!r} in preset {name!r}{which}: give a finite number of "
                        "degrees, metres or a focal factor")
    part_c2w, part_focal = _single_preset(part_name.strip(), alpha, part_mag, radius)
    c2w = c2w @ part_c2w
    focal = focal * part_focal
  base = default_intrinsics(height, width) if K is None else np.asarray(K, dtype=np.float64)
  Ks = np.tile(base, (num_frames, 1, 1))
  Ks[:, 0, 0] *= focal
  Ks[:, 1, 1] *= focal
  return Cameras(K=Ks, w2c=se3.invert(c2w), height=height, width=width)


# --------------------------------------------------------------------------------------------- interpolation
def interpolate_poses(c2w_keys, key_times, query_times) -> np.ndarray:
  """Piecewise SE(3) interpolation: slerp of rotations and lerp of camera centres between bracketing keys.

  Args:
    c2w_keys: `[K, 4, 4]` key poses.
    key_times: `[K]` strictly increasing times.
    query_times: `[T]` times, clamped to the key range.

  Returns:
    `[T, 4, 4]` poses.

  Raises:
    CameraError: fewer than one key, times not increasing, mismatched lengths.
  """
  c2w_keys = np.asarray(c2w_keys, dtype=np.float64)
  key_times = np.asarray(key_times, dtype=np.float64)
  query = np.clip(np.asarray(query_times, dtype=np.float64), key_times[0], key_times[-1])
  if c2w_keys.ndim != 3 or len(c2w_keys) != len(key_times) or len(key_times) < 1:
    raise CameraError(f"{len(c2w_keys)} key poses for {len(key_times)} key times")
  if len(key_times) == 1:
    return np.repeat(c2w_keys, len(query), axis=0)
  if np.any(np.diff(key_times) <= 0):
    raise CameraError("key times must be strictly increasing")
  seg = np.clip(np.searchsorted(key_times, query, side="right") - 1, 0, len(key_times) - 2)
  alpha = (query - key_times[seg]) / (key_times[seg + 1] - key_times[seg])
  R = se3.slerp(c2w_keys[seg, :3, :3], c2w_keys[seg + 1, :3, :3], alpha)
  t = (1 - alpha)[:, None] * c2w_keys[seg, :3, 3] + alpha[:, None] * c2w_keys[seg + 1, :3, 3]
  return se3.make_pose(R, t)


def resample(cameras: Cameras, num_frames: int) -> Cameras:
  """Resamples `[T]` cameras to `num_frames` uniformly in time (SE(3) interpolation, intrinsics lerped).

  Timestamps, when present, are interpolated too.
  """
  cams = cameras.numpy()
  if cams.w2c.ndim != 3:
    raise CameraError("resample takes one clip [T, 4, 4]")
  src = np.arange(cams.num_frames, dtype=np.float64)
  dst = np.linspace(0, cams.num_frames - 1, num_frames)
  c2w = interpolate_poses(cams.c2w, src, dst)
  K = np.stack([np.stack([np.interp(dst, src, cams.K[:, i, j]) for j in range(3)], -1) for i in range(3)], -2)
  ts = None if cams.timestamps is None else np.interp(dst, src, cams.timestamps)
  return cams.replace(K=K, w2c=se3.invert(c2w), timestamps=ts)


# ------------------------------------------------------------------------------------------------- chaining
def chain(clips: Sequence[Cameras], anchor: int = -1, drop_anchor: bool = False) -> Cameras:
  """Concatenates consecutive clips of an exploration into ONE global frame (CameraCtrl II sec. 3.4).

  Each clip is given relative to its own first frame (as presets are). Clip i+1 starts where frame `anchor` of
  clip i (in the global frame) is: `c2w_global = c2w_global_anchor @ c2w_rel`. The global reference is the first
  frame of the first clip, which stays the identity.

  Args:
    clips: `Cameras [T_i]` per clip, same image size.
    anchor: frame of the previous clip that the next clip's frame 0 coincides with (default: its last frame).
    drop_anchor: drop each later clip's frame 0 (it duplicates the anchor when `anchor = -1`).

  Returns:
    `Cameras [sum T_i]` in the global frame.
  """
  if not clips:
    raise CameraError("chain needs at least one clip")
  out = [clips[0].numpy().relative(0)]
  for clip in clips[1:]:
    rel = clip.numpy().relative(0)
    anchor_c2w = out[-1].c2w[anchor]
    glob = rel.replace(w2c=se3.invert(anchor_c2w[None] @ rel.c2w))
    out.append(glob.take(np.arange(1, glob.num_frames)) if drop_anchor else glob)
  return Cameras.concatenate(out)
