"""RealCam-I2V's interactive trajectory editor in the browser (`python -m camjax.app`), built on viser.

    python -m camjax.app [--workdir W] [--image photo.jpg --depth depth.png --depth_scale 1000 | --scene SEED]
                         [--port 8080] [--frames 25]

Open the printed address (http://127.0.0.1:PORT). The reference image is lifted into a metric point cloud with its
depth (`camjax.geometry.render.unproject`, statistical outlier removal, subsampled for the browser); the reference
camera sits at the world origin (OpenCV axes: x right, y down, z forward; metres). The camera path is a list of
keyframe poses spread evenly over the video's frames and interpolated in SE(3) (`interpolate_poses`): keyframe 0 is
the reference camera and stays fixed, every other keyframe carries a transform gizmo. A preset (`trajectories.preset`)
replaces the keyframes; "metres" multiplies every camera translation of the path. After each change (debounced) the
path's frusta are redrawn and the preview (RealCam-I2V sec. 3.3: the point cloud rendered along the path with a
z-buffer) is shown as a strip of frames. Generate runs a `generate_fn` on the full-size inputs: RealCam-I2V
(`camjax.realcam.RealCam.from_workdir`, loaded on the first press) with `--workdir`, else the preview render itself,
labelled "no model: preview only". docs/app.md describes the controls.

`App` is the Python API behind the page (tests drive it and the page together).
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence

import numpy as np

from camjax.errors import CamjaxError
from camjax.geometry import render, se3
from camjax.geometry.cameras import default_intrinsics
from camjax.geometry.trajectories import PRESETS, interpolate_poses, preset

__all__ = ["App", "AppError", "GenerateFn", "PresetGenerate", "RealCamGenerate", "frame_strip", "load_inputs",
           "main", "point_cloud", "preset_keyframes", "video_gif"]

log = logging.getLogger(__name__)

# Generate: (image uint8 [H, W, 3], depth float32 [H, W] metres, K [3, 3] pixels, w2c [T, 4, 4] metres) -> uint8
# video [T, H', W', 3].
GenerateFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# Presets the editor offers: every pose preset of `trajectories.PRESETS` (zooms change the focal length, not the
# pose, and keyframes hold poses only) and a few compositions.
EDITOR_PRESETS = tuple(p for p in PRESETS if not p.startswith("zoom")) + (
    "orbit_left+dolly_in", "pan_left+truck_left", "dolly_in+tilt_down", "orbit_right+pedestal_up")
NO_MODEL_LABEL = "no model: preview only"
HELD_OUT_SCENE = 2_000_000  # the first held-out procedural scene (`camjax.eval.following` draws from 2,000,000)


class AppError(CamjaxError, ValueError):
  """Bad input to the trajectory editor: an image / depth / intrinsics of the wrong shape or without valid depth, a
  keyframe index out of range or on the fixed reference camera, a non-rigid pose, an unknown preset, a non-positive
  scale, a generate function that returns no video, a missing optional dependency (viser), or a wait that timed
  out. The message names the argument and what it got."""


# ------------------------------------------------------------------------------------------------ inputs
def _check_inputs(image, depth, K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise AppError(f"image must be [H, W, 3], got {list(image.shape)}")
  if image.dtype != np.uint8:
    if not np.issubdtype(image.dtype, np.floating) or not np.isfinite(image).all():
      raise AppError(f"image must be uint8 or finite floats in [0, 1], got dtype {image.dtype}")
    image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
  depth = np.asarray(depth, np.float32)
  if depth.shape != image.shape[:2]:
    raise AppError(f"depth must be [H, W] = {list(image.shape[:2])} like the image, got {list(depth.shape)}")
  depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
  if not (depth > 0).any():
    raise AppError("depth has no valid pixel (every value is <= 0 or non-finite)")
  K = np.asarray(K, np.float64)
  if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
    raise AppError(f"K must be finite [3, 3] pixel intrinsics with positive focal lengths, got {K.tolist()}")
  return image, depth, K


def load_inputs(image_path=None, depth_path=None, *, depth_scale: str | float = 1000.0, depth_model=None,
                intrinsics: Sequence[float] | None = None, scene: int | None = None, height: int = 240,
                width: int = 320) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The reference image, its metric depth and intrinsics, from files or a procedural scene.

  Exactly one of `image_path` and `scene` (neither: the held-out procedural scene 2,000,000).

  Args:
    image_path: an RGB image file.
    depth_path: its depth map (`camjax.depth.read_depth`: 16-bit PNG / PGM divided by `depth_scale`, or `.npy`
      metres); without it, `depth_model` (a Depth Anything V2 metric folder, `camjax.depth.DepthAnythingMetric`).
    depth_scale: units per metre of the depth file, or a format name of `read_depth` ("tum", "nyu", ...).
    depth_model: folder of a metric depth model, used when `depth_path` is None.
    intrinsics: `(fx, fy, cx, cy)` pixels; default `default_intrinsics(H, W)` (fx = fy = max(H, W) / 2, centred).
    scene: seed of a procedural scene (`camjax.data.synthetic.render_scene`, rendered depth and intrinsics).
    height, width: size of the procedural scene.

  Returns:
    `(image uint8 [H, W, 3], depth float32 [H, W] metres (0 = none), K [3, 3] pixels)`.

  Raises:
    AppError: both or neither of a depth file and model for an image, both an image and a scene, unreadable files,
      a depth map of another size, bad intrinsics.
    camjax.depth.DepthError: unreadable depth file or depth model folder.
  """
  if image_path is not None and scene is not None:
    raise AppError("give either --image or --scene, not both")
  if image_path is None:
    from camjax.data.synthetic import render_scene  # pylint: disable=import-outside-toplevel
    clip = render_scene(HELD_OUT_SCENE if scene is None else int(scene), num_frames=1, height=height, width=width,
                        num_tracks=1)[0]
    return _check_inputs(clip.frames[0], clip.depth[0], clip.cameras.K[0])
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from camjax import depth as depth_lib  # pylint: disable=import-outside-toplevel
  try:
    image = np.asarray(Image.open(image_path).convert("RGB"), np.uint8)
  except OSError as e:
    raise AppError(f"--image {image_path}: cannot read ({e})") from None
  if (depth_path is None) == (depth_model is None):
    raise AppError("an --image needs exactly one of --depth (a depth file) and --depth_model (a metric depth folder)")
  if depth_path is not None:
    try:
      scale = float(depth_scale)
    except ValueError:
      scale = depth_scale  # a format name
    depth = depth_lib.read_depth(depth_path, scale)
  else:
    depth = depth_lib.DepthAnythingMetric(depth_model)(image)
  if depth.shape != image.shape[:2]:
    raise AppError(f"--depth {depth_path}: {list(depth.shape)} does not match the image's {list(image.shape[:2])}")
  if intrinsics is None:
    K = default_intrinsics(*image.shape[:2])
  else:
    if len(intrinsics) != 4:
      raise AppError(f"--intrinsics needs fx,fy,cx,cy, got {list(intrinsics)}")
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
  return _check_inputs(image, depth, K)


def _resize_inputs(image: np.ndarray, depth: np.ndarray, K: np.ndarray, max_side: int):
  """Brings the longer side to `max_side` (never up): image by area, depth nearest (no mixing across edges), K
  scaled per axis."""
  height, width = depth.shape
  scale = max_side / max(height, width)
  if scale >= 1:
    return image, depth, K
  import cv2  # pylint: disable=import-outside-toplevel
  h, w = max(1, round(height * scale)), max(1, round(width * scale))
  small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
  small_depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
  K = K.copy()
  K[0] *= w / width
  K[1] *= h / height
  return small, small_depth, K


def point_cloud(image, depth, K, *, max_points: int | None = 60_000, seed: int = 0):
  """The reference image's metric point cloud in its camera frame (RealCam-I2V sec. 3.3).

  `render.unproject` (pixel centres), `render.remove_outliers` (k = 11 other points, 3 std, Open3D's rule as
  RealCam-I2V calls it), then a uniform random subsample of `max_points` (fixed `seed`) to keep the browser fast.

  Args:
    image: `uint8 [H, W, 3]`.
    depth: `[H, W]` camera-space z in metres (<= 0: none).
    K: `[3, 3]` pixels.
    max_points: points kept at most; None keeps all.
    seed: subsample seed.

  Returns:
    `(points float32 [N, 3] metres, colors uint8 [N, 3])`.

  Raises:
    AppError: no valid depth.
    RenderError: shapes, as `render.unproject`.
  """
  points, colors = render.unproject(image, depth, K, np.eye(4))
  if points.shape[0] == 0:
    raise AppError("point_cloud: the depth map has no valid pixel")
  keep = render.remove_outliers(points)
  points, colors = points[keep], colors[keep]
  if max_points is not None and points.shape[0] > max_points:
    pick = np.sort(np.random.default_rng(seed).choice(points.shape[0], max_points, replace=False))
    points, colors = points[pick], colors[pick]
  return points, np.clip(np.round(colors), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ pictures
def _to_uint8(video) -> np.ndarray:
  video = np.asarray(video)
  if video.dtype == np.uint8:
    return video
  return np.round(np.clip(np.nan_to_num(video.astype(np.float32)), 0.0, 1.0) * 255).astype(np.uint8)


def frame_strip(video, num: int = 5, *, gap: int = 2, max_width: int = 800) -> np.ndarray:
  """Frames of a video side by side (the first, the last and evenly spaced ones between), white gaps between.

  Args:
    video: `[T, H, W, 3]` uint8, or floats in [0, 1].
    num: frames shown (fewer when `T < num`).
    gap: white pixels between frames.
    max_width: the strip is shrunk (area) to at most this width.

  Returns:
    `uint8 [H', W', 3]`.

  Raises:
    AppError: not a `[T, H, W, 3]` video with `T >= 1`.
  """
  video = _to_uint8(video)
  if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < 1:
    raise AppError(f"frame_strip needs a video [T, H, W, 3], got {list(video.shape)}")
  frames, height, width = video.shape[:3]
  picks = np.unique(np.round(np.linspace(0, frames - 1, min(num, frames))).astype(int))
  strip = np.full((height, len(picks) * (width + gap) - gap, 3), 255, np.uint8)
  for i, t in enumerate(picks):
    strip[:, i * (width + gap):i * (width + gap) + width] = video[t]
  if strip.shape[1] > max_width:
    import cv2  # pylint: disable=import-outside-toplevel
    h = max(1, round(strip.shape[0] * max_width / strip.shape[1]))
    strip = cv2.resize(strip, (max_width, h), interpolation=cv2.INTER_AREA)
  return strip


def video_gif(video, fps: float = 8.0, max_width: int = 384) -> bytes:
  """An animated, looping GIF of a video (PIL), shrunk to at most `max_width` pixels wide.

  Args:
    video: `[T, H, W, 3]` uint8, or floats in [0, 1].
    fps: frames per second.
    max_width: width limit in pixels.

  Returns:
    The GIF file's bytes.

  Raises:
    AppError: not a `[T, H, W, 3]` video.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  video = _to_uint8(video)
  if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < 1:
    raise AppError(f"video_gif needs a video [T, H, W, 3], got {list(video.shape)}")
  images = [Image.fromarray(f) for f in video]
  if video.shape[2] > max_width:
    size = (max_width, max(1, round(video.shape[1] * max_width / video.shape[2])))
    images = [im.resize(size, Image.Resampling.BOX) for im in images]
  out = io.BytesIO()
  images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
  return out.getvalue()


# ------------------------------------------------------------------------------------------------ generate
class PresetGenerate:
  """The generate function without a model: the preview render of the full-size inputs (`render.preview`, splat
  radius 1, RealCam-I2V's outlier removal), as uint8 frames; uncovered pixels are black. Its output is labelled
  "no model: preview only" in the page."""

  label = NO_MODEL_LABEL

  def __call__(self, image, depth, K, w2c) -> np.ndarray:
    """`(image [H, W, 3], depth [H, W] metres, K [3, 3], w2c [T, 4, 4]) -> uint8 [T, H, W, 3]`."""
    image = np.asarray(image, np.float32) / (255.0 if np.asarray(image).dtype == np.uint8 else 1.0)
    video = render.preview(image, depth, K, np.eye(4), w2c).video
    return _to_uint8(np.asarray(video))


class RealCamGenerate:
  """RealCam-I2V from a trained run: `camjax.realcam.RealCam.from_workdir(workdir)`, loaded on the first call
  (so the page opens at once), then `generate(image, depth, K, w2c, mode="basic", shaping=True)` (basic mode: the
  reference image is frame 0; scene-constrained noise shaping on)."""

  def __init__(self, workdir):
    self.workdir = workdir
    self.label = f"RealCam-I2V ({workdir})"
    self._model = None
    self._lock = threading.Lock()

  def __call__(self, image, depth, K, w2c) -> np.ndarray:
    """`(image uint8 [H, W, 3], depth [H, W] metres, K [3, 3], w2c [T, 4, 4] metres) -> uint8 [T, H, W, 3]`."""
    with self._lock:
      if self._model is None:
        from camjax import realcam  # pylint: disable=import-outside-toplevel  # heavy, and only with a workdir
        self._model = realcam.RealCam.from_workdir(self.workdir)
    return _to_uint8(np.asarray(self._model.generate(image, depth, K, w2c, mode="basic", shaping=True)))


# ------------------------------------------------------------------------------------------------ keyframes
def _rigid(w2c, what: str) -> np.ndarray:
  w2c = np.asarray(w2c, np.float64)
  if w2c.shape != (4, 4) or not np.isfinite(w2c).all():
    raise AppError(f"{what} must be a finite [4, 4] w2c pose, got shape {list(w2c.shape)}")
  R = w2c[:3, :3]
  if (not np.allclose(R.T @ R, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0
      or not np.allclose(w2c[3], [0, 0, 0, 1], atol=1e-6)):
    raise AppError(f"{what} is not a rigid transform (rotation not orthonormal with det +1, or last row not "
                   f"[0, 0, 0, 1]): {w2c.round(4).tolist()}")
  return w2c


def _default_magnitude(part: str) -> float:
  """The default magnitude of one preset part (degrees or metres), read off its last pose."""
  c2w = preset(part, 2).c2w[-1]
  angle = np.degrees(se3.geodesic_angle(np.eye(3), c2w[:3, :3]))
  return float(angle) if angle > 1e-9 else float(np.linalg.norm(c2w[:3, 3]))


def _scaled_name(name: str, strength: float) -> str:
  """`name` with every part's magnitude set to `strength` x its default ("pan_left+dolly_in", 2 ->
  "pan_left:60+dolly_in:2"); parts that give their own magnitude are scaled too."""
  parts = []
  for part in (p.strip() for p in name.split("+") if p.strip()):
    base, _, mag = part.partition(":")
    magnitude = float(mag) if mag else _default_magnitude(base.strip())
    parts.append(f"{base.strip()}:{magnitude * strength:.6g}")
  return "+".join(parts)


def preset_keyframes(name: str, num_keyframes: int, num_frames: int, *, strength: float = 1.0,
                     radius: float = 2.0) -> np.ndarray:
  """Keyframes of a preset: its poses at `num_keyframes` frames spread evenly over `num_frames`.

  Args:
    name: a preset or a '+' composition (`trajectories.preset`; zooms change no pose).
    num_keyframes: keyframes (>= 2; the first is the identity).
    num_frames: frames of the video the preset spans.
    strength: multiplies every part's default magnitude (degrees for rotations and orbits, metres for translations).
    radius: orbit radius in metres (the editor passes the median depth of the reference: the orbit circles it).

  Returns:
    `c2w [num_keyframes, 4, 4]`, metres.

  Raises:
    AppError: an unknown preset, `num_keyframes < 2`, `num_frames < num_keyframes` or a negative strength.
  """
  if num_keyframes < 2 or num_frames < num_keyframes:
    raise AppError(f"preset keyframes need 2 <= num_keyframes <= num_frames, got {num_keyframes} keyframes for "
                   f"{num_frames} frames")
  if not strength >= 0:
    raise AppError(f"preset strength must be >= 0, got {strength}")
  from camjax.geometry.errors import CameraError  # pylint: disable=import-outside-toplevel
  try:
    cams = preset(_scaled_name(name, strength), num_frames, radius=radius)
  except (CameraError, ValueError) as e:
    raise AppError(f"preset {name!r}: {e}") from None
  frames = np.round(np.linspace(0, num_frames - 1, num_keyframes)).astype(int)
  return np.asarray(cams.c2w)[frames]


class _Keyframes:
  """The path's state: keyframe poses (c2w, metres before the "metres" factor), spread evenly over the frames.

  Keyframe 0 is the reference camera (identity). The effective pose of keyframe i has its translation multiplied by
  `metres`; the path is `interpolate_poses` (slerp + lerp of centres) of the effective poses."""

  def __init__(self, num_frames: int):
    self.num_frames = num_frames
    self.base = np.eye(4)[None]  # [N, 4, 4] c2w
    self.metres = 1.0

  def __len__(self) -> int:
    return len(self.base)

  def c2w(self) -> np.ndarray:
    c2w = self.base.copy()
    c2w[:, :3, 3] *= self.metres
    return c2w

  def set_c2w(self, index: int, c2w: np.ndarray) -> None:
    c2w = np.array(c2w, np.float64)
    c2w[:3, 3] /= self.metres
    self.base[index] = c2w

  def times(self) -> np.ndarray:
    return np.linspace(0.0, self.num_frames - 1, len(self.base)) if len(self.base) > 1 else np.zeros(1)

  def trajectory_c2w(self) -> np.ndarray:
    return interpolate_poses(self.c2w(), self.times(), np.arange(self.num_frames, dtype=np.float64))


def _wxyz(R: np.ndarray) -> np.ndarray:
  """Rotation `[..., 3, 3]` -> viser's (w, x, y, z) quaternion."""
  return np.roll(se3.matrix_to_quaternion(np.asarray(R, np.float64)), 1, axis=-1)


def _rotation(wxyz) -> np.ndarray:
  return se3.quaternion_to_matrix(np.roll(np.asarray(wxyz, np.float64), -1, axis=-1))


# ------------------------------------------------------------------------------------------------ the app
class App:
  """The trajectory editor: state, preview worker and (after `start`) the viser page.

  Every method is thread-safe (the page's callbacks run on viser's thread pool). Poses are OpenCV world-to-camera
  matrices in the reference camera's frame (the reference camera is the identity), translations in metres.

  Args:
    image: `[H, W, 3]` reference image, uint8 or floats in [0, 1].
    depth: `[H, W]` its metric depth (camera-space z, metres; <= 0 = none).
    K: `[3, 3]` its pixel intrinsics.
    generate_fn: `(image uint8 [H, W, 3], depth float32 [H, W], K [3, 3], w2c [T, 4, 4]) -> video [T, H', W', 3]`
      (uint8, or floats in [0, 1]); None: `PresetGenerate` (the preview render, "no model: preview only"). A
      `label` attribute, when present, is shown above the result.
    num_frames: T, frames of the path (and of the generated video).
    preset_name: the preset the keyframes start from.
    num_keyframes: keyframes a preset is cut into at the start (>= 2).
    preview_max_side: the preview is rendered with the inputs shrunk to this longer side (pixels).
    max_points: points sent to the browser.
    debounce_s: quiet time after the last change before the preview renders (a gizmo drag sends many updates).
    fps: frame rate of the result GIF.

  Raises:
    AppError: bad inputs (shapes, no valid depth), an unknown preset, `num_frames < 2`.
  """

  def __init__(self, image, depth, K, generate_fn: GenerateFn | None = None, num_frames: int = 25, *,
               preset_name: str = "dolly_in", num_keyframes: int = 3, preview_max_side: int = 256,
               max_points: int = 60_000, debounce_s: float = 0.15, fps: float = 8.0):
    self.image, self.depth, self.K = _check_inputs(image, depth, K)
    if int(num_frames) != num_frames or num_frames < 2:
      raise AppError(f"num_frames must be an integer >= 2, got {num_frames}")
    self.num_frames = int(num_frames)
    self.generate_fn = PresetGenerate() if generate_fn is None else generate_fn
    self.generate_label = getattr(self.generate_fn, "label", getattr(self.generate_fn, "__name__", "generate_fn"))
    self.debounce_s, self.fps, self.max_points = float(debounce_s), float(fps), max_points
    self.scene_depth = float(np.median(self.depth[self.depth > 0]))  # metres: sizes frusta, orbit radius
    self._lock = threading.RLock()
    self._cond = threading.Condition(self._lock)
    self._keys = _Keyframes(self.num_frames)
    self._preset, self._strength = preset_name, 1.0
    self._keys.base = preset_keyframes(preset_name, num_keyframes, self.num_frames, radius=self.scene_depth)
    # The preview renders a smaller copy whose point cloud is cleaned once (the cloud never changes).
    small = _resize_inputs(self.image, self.depth, self.K, preview_max_side)
    self._preview_points, colors = point_cloud(*small, max_points=None)
    self._preview_colors = colors.astype(np.float32) / 255.0
    self._preview_K, self._preview_size = small[2], small[1].shape
    self._requested, self._rendered = 0, 0  # preview versions: asked for / shown
    self._last_change, self._last_change_what = 0.0, "start"
    self._strip: np.ndarray | None = None
    self._preview_video: np.ndarray | None = None
    self._coverage = float("nan")
    self._result: np.ndarray | None = None
    self._status = "ready"
    self._server = None
    self._gui: dict = {}
    self._gizmos: list = []
    self._path_frusta: list = []
    self._worker: threading.Thread | None = None
    self._stopping = False
    self._generating = threading.Lock()

  # ------------------------------------------------------------------------------------------- state (public)
  @property
  def keyframes(self) -> np.ndarray:
    """`w2c [N, 4, 4]` of the keyframes (metres, the "metres" factor applied); keyframe 0 is the identity."""
    with self._lock:
      return se3.invert(self._keys.c2w())

  @property
  def trajectory(self) -> np.ndarray:
    """`w2c [T, 4, 4]` of the interpolated path (what the preview renders and Generate receives)."""
    with self._lock:
      return se3.invert(self._keys.trajectory_c2w())

  @property
  def metres(self) -> float:
    """The factor every translation of the path is multiplied by."""
    with self._lock:
      return self._keys.metres

  @property
  def status(self) -> str:
    with self._lock:
      return self._status

  @property
  def preview_version(self) -> int:
    """How many previews have been rendered (grows by one per finished render)."""
    with self._lock:
      return self._rendered

  @property
  def result(self) -> np.ndarray | None:
    """The last generated video `uint8 [T, H', W', 3]`, or None."""
    with self._lock:
      return self._result

  @property
  def server(self):
    """The `viser.ViserServer` while started, else None (its `get_clients()` give each browser's viewer camera)."""
    return self._server

  @property
  def url(self) -> str:
    if self._server is None:
      raise AppError("the app is not started: call start(port) first")
    return f"http://{self._server.get_host()}:{self._server.get_port()}"

  def set_keyframe(self, index: int, w2c) -> None:
    """Moves keyframe `index` (1..N-1) to the pose `w2c [4, 4]` (metres, as shown) and moves its gizmo.

    Raises:
      AppError: index 0 (the reference camera is fixed) or out of range; not a rigid `[4, 4]` pose.
    """
    w2c = _rigid(w2c, f"keyframe {index}")
    with self._lock:
      index = self._index(index)
      self._keys.set_c2w(index, se3.invert(w2c))
      self._show_gizmo_poses()
    self._changed(f"keyframe {index} moved")

  def add_keyframe(self, w2c=None) -> int:
    """Appends a keyframe (default: the last keyframe moved forward along its view axis by a fifth of the scene's
    median depth) and returns its index. The keyframes stay evenly spread over the frames."""
    with self._lock:
      if w2c is None:
        c2w = self._keys.c2w()[-1].copy()
        c2w[:3, 3] += c2w[:3, 2] * 0.2 * self.scene_depth
      else:
        c2w = se3.invert(_rigid(w2c, "new keyframe"))
      self._keys.base = np.concatenate([self._keys.base, self._keys.base[-1:]])
      self._keys.set_c2w(len(self._keys) - 1, c2w)
      index = len(self._keys) - 1
      self._rebuild_gizmos()
    self._changed(f"keyframe {index} added")
    return index

  def remove_keyframe(self, index: int = -1) -> None:
    """Removes keyframe `index` (default the last; never the reference camera).

    Raises:
      AppError: only the reference keyframe is left, or a bad index.
    """
    with self._lock:
      if len(self._keys) < 2:
        raise AppError("only the reference keyframe is left: it cannot be removed")
      index = self._index(index)
      self._keys.base = np.delete(self._keys.base, index, axis=0)
      self._rebuild_gizmos()
    self._changed(f"keyframe {index} removed")

  def apply_preset(self, name: str, strength: float | None = None) -> None:
    """Replaces the keyframes by `name`'s poses (as many keyframes as now, at least 2), each part at `strength` x
    its default magnitude (default: the current strength). Orbits circle the reference's median depth.

    Raises:
      AppError: an unknown preset or a negative strength.
    """
    with self._lock:
      strength = self._strength if strength is None else float(strength)
      self._keys.base = preset_keyframes(name, max(2, len(self._keys)), self.num_frames, strength=strength,
                                         radius=self.scene_depth / self._keys.metres)
      self._preset, self._strength = name, strength
      self._rebuild_gizmos()
    self._changed(f"preset {name} x{strength:g}")

  def set_metres(self, metres: float) -> None:
    """Sets the factor every translation of the path is multiplied by (> 0).

    Raises:
      AppError: not a positive finite number.
    """
    metres = float(metres)
    if not (np.isfinite(metres) and metres > 0):
      raise AppError(f"metres must be a positive finite number, got {metres}")
    with self._lock:
      self._keys.metres = metres
      self._show_gizmo_poses()
    self._changed(f"metres x{metres:g}")

  def preview_image(self, timeout: float = 60.0) -> np.ndarray:
    """The preview strip shown in the page, `uint8 [h, w, 3]`, once it reflects every change made so far.

    Raises:
      AppError: the preview did not catch up within `timeout` seconds (or the app is stopped).
    """
    self.wait_preview(timeout)
    with self._lock:
      return self._strip.copy()

  def preview_video(self, timeout: float = 60.0) -> np.ndarray:
    """The whole preview `float32 [T, h, w, 3]` in [0, 1] at the preview size (black where nothing lands)."""
    self.wait_preview(timeout)
    with self._lock:
      return self._preview_video.copy()

  def wait_preview(self, timeout: float = 60.0) -> None:
    """Blocks until the preview reflects every change made so far (renders it here when the app is not started).

    Raises:
      AppError: not done within `timeout` seconds.
    """
    if self._worker is None:  # not started: render synchronously
      with self._lock:
        if self._strip is None or self._rendered < self._requested:
          self._render_preview(self._requested)
      return
    deadline = time.monotonic() + timeout
    with self._cond:
      target = self._requested
      while self._rendered < target:
        left = deadline - time.monotonic()
        if left <= 0 or self._stopping:
          raise AppError(f"the preview did not update within {timeout} s (version {self._rendered} of {target})")
        self._cond.wait(min(left, 0.5))

  def generate(self) -> np.ndarray:
    """Runs `generate_fn` on the full-size inputs and the current path, shows the result in the page and returns
    it (`uint8 [T, H', W', 3]`).

    Raises:
      AppError: the function returned no `[T, H, W, 3]` video, or a generation is already running.
      Whatever `generate_fn` raises (also shown in the status line).
    """
    if not self._generating.acquire(blocking=False):
      raise AppError("a generation is already running")
    try:
      w2c = self.trajectory
      self._set_status(f"generating {self.num_frames} frames with {self.generate_label} ...")
      start = time.monotonic()
      try:
        video = _to_uint8(self.generate_fn(self.image, self.depth, self.K, w2c))
      except Exception as e:
        self._set_status(f"generate failed: {type(e).__name__}: {e}")
        raise
      if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < 1:
        self._set_status(f"generate failed: generate_fn returned shape {list(video.shape)}")
        raise AppError(f"generate_fn must return a video [T, H, W, 3], got {list(video.shape)}")
      with self._lock:
        self._result = video
      self._show_result(video)
      self._set_status(f"generated {video.shape[0]} frames in {time.monotonic() - start:.1f} s "
                       f"({self.generate_label})")
      return video
    finally:
      self._generating.release()

  # ------------------------------------------------------------------------------------------- server
  def start(self, port: int = 8080, host: str = "127.0.0.1") -> "App":
    """Starts the viser server on `host:port` (viser moves to the next free port when it is taken: see `url`) and
    the preview worker, and draws the scene and the panel.

    Raises:
      AppError: viser is not installed (`pip install -e ".[app]"`) or the app is already started.
    """
    if self._server is not None:
      raise AppError("the app is already started")
    try:
      import viser  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise AppError('the trajectory editor needs viser: pip install -e ".[app]"') from None
    self._server = viser.ViserServer(host=host, port=port, verbose=False, label="camjax: RealCam-I2V")
    try:
      self._build_scene()
      self._build_gui()
      self._stopping = False
      self._worker = threading.Thread(target=self._preview_loop, name="camjax-app-preview", daemon=True)
      self._worker.start()
      self._changed("started")
    except BaseException:
      self.stop()
      raise
    return self

  def stop(self) -> None:
    """Stops the preview worker and the server (idempotent)."""
    with self._cond:
      self._stopping = True
      self._cond.notify_all()
    if self._worker is not None:
      self._worker.join(timeout=30)
      self._worker = None
    if self._server is not None:
      server, self._server = self._server, None
      server.stop()
    self._gizmos, self._path_frusta, self._gui = [], [], {}

  def __enter__(self) -> "App":
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  # ------------------------------------------------------------------------------------------- internals
  def _index(self, index: int) -> int:
    n = len(self._keys)
    if int(index) != index or not -n <= index < n:
      raise AppError(f"keyframe index {index} out of range for {n} keyframes")
    index = int(index) % n
    if index == 0:
      raise AppError("keyframe 0 is the reference camera (the input image) and stays fixed")
    return index

  def _set_status(self, text: str) -> None:
    with self._lock:
      self._status = text
      if "status" in self._gui:
        self._gui["status"].content = f"**Status:** {text}"

  def _changed(self, what: str) -> None:
    """A change of the path: ask the worker (debounced) for new frusta and a new preview."""
    with self._cond:
      self._requested += 1
      self._last_change = time.monotonic()
      self._last_change_what = what
      self._cond.notify_all()
    self._set_status(f"{what}: rendering the preview ...")

  def _preview_loop(self) -> None:
    while True:
      with self._cond:
        while self._rendered >= self._requested and not self._stopping:
          self._cond.wait()
        if self._stopping:
          return
        while not self._stopping and time.monotonic() - self._last_change < self.debounce_s:
          self._cond.wait(self.debounce_s - (time.monotonic() - self._last_change))
        target = self._requested
      try:
        self._draw_path()
        self._render_preview(target)
      except Exception as e:  # pylint: disable=broad-except  # shown to the user; the worker keeps serving
        log.error("preview failed:\n%s", traceback.format_exc())
        with self._cond:
          self._rendered = target
          self._cond.notify_all()
        self._set_status(f"preview failed: {type(e).__name__}: {e}")

  def _render_preview(self, target: int) -> None:
    """Renders the preview of the current path (z-buffer splat, RealCam-I2V's k = 5 coverage) and publishes it."""
    w2c = self.trajectory
    height, width = self._preview_size
    video, _, covered = render.render_points(self._preview_points, self._preview_colors, self._preview_K, w2c,
                                             height, width, radius=1)
    mask = np.asarray(render.coverage_mask(covered, 5))
    video = np.asarray(video)
    strip = frame_strip(video)
    with self._cond:
      self._preview_video, self._strip = video, strip
      self._coverage = float(mask[-1].mean())
      self._rendered = max(self._rendered, target)
      text = (f"{len(self._keys)} keyframes, metres x{self._keys.metres:g}; last frame: "
              f"{100 * self._coverage:.0f}% of pixels in the noise-shaping mask (5x5 covered)")
      self._cond.notify_all()
    if "preview" in self._gui:
      self._gui["preview"].image = strip
      self._gui["preview_info"].content = text
    self._set_status(f"{self._last_change_what}: preview updated")

  # ------------------------------------------------------------------------------------------- the page
  def _frustum_geometry(self) -> tuple[float, float]:
    height, width = self.depth.shape
    return 2 * np.arctan(height / (2 * self.K[1, 1])), width / height  # vertical fov (rad), aspect

  def _build_scene(self) -> None:
    scene, d = self._server.scene, self.scene_depth
    scene.set_up_direction("-y")  # OpenCV: y points down
    points, colors = point_cloud(self.image, self.depth, self.K, max_points=self.max_points)
    spacing = np.sqrt(self.depth.size / max(1, points.shape[0]))  # pixels between shown points
    scene.add_point_cloud("/cloud", points, colors, point_size=float(1.5 * spacing * d / self.K[0, 0]),
                          precision="float32", point_shading="flat")
    fov, aspect = self._frustum_geometry()
    scene.add_camera_frustum("/reference", fov=fov, aspect=aspect, scale=0.15 * d, color=(40, 90, 220),
                             image=self.image, thickness=0.004 * d)
    self._server.initial_camera.position = (-0.7 * d, -0.8 * d, -0.8 * d)  # behind, above and left of the input
    self._server.initial_camera.look_at = (0.0, 0.0, 0.7 * d)
    self._server.initial_camera.up = (0.0, -1.0, 0.0)
    self._path_frusta = [
        scene.add_camera_frustum(f"/path/frame_{t:03d}", fov=fov, aspect=aspect, scale=0.05 * d,
                                 color=(150, 150, 150), thickness=0.002 * d) for t in range(self.num_frames)]
    self._rebuild_gizmos()
    self._draw_path()

  def _rebuild_gizmos(self) -> None:
    """One transform gizmo (with an orange frustum) per keyframe but the reference; called under the lock."""
    if self._server is None:
      return
    for gizmo in self._gizmos:
      gizmo.remove()
    self._gizmos = []
    fov, aspect = self._frustum_geometry()
    d = self.scene_depth
    c2w = self._keys.c2w()
    for i in range(1, len(self._keys)):
      gizmo = self._server.scene.add_transform_controls(
          f"/keyframes/k{i}", scale=0.15 * d, wxyz=_wxyz(c2w[i, :3, :3]), position=c2w[i, :3, 3])
      self._server.scene.add_camera_frustum(f"/keyframes/k{i}/frustum", fov=fov, aspect=aspect, scale=0.12 * d,
                                            color=(240, 120, 20), thickness=0.004 * d)
      self._server.scene.add_label(f"/keyframes/k{i}/label", f"key {i}")
      gizmo.on_update(self._gizmo_callback(i, gizmo))
      self._gizmos.append(gizmo)
    if "count" in self._gui:
      self._gui["count"].content = f"{len(self._keys)} keyframes (key 0 = the input camera, fixed)"

  def _gizmo_callback(self, index: int, gizmo):
    """The page moved keyframe `index`'s gizmo: take its pose (ignored once the gizmo has been replaced)."""
    def on_update(_) -> None:
      c2w = se3.make_pose(_rotation(gizmo.wxyz), np.asarray(gizmo.position, np.float64))
      with self._lock:
        if index - 1 >= len(self._gizmos) or self._gizmos[index - 1] is not gizmo:
          return  # removed (add / remove keyframe, preset) while its update was in flight
        self._keys.set_c2w(index, c2w)
      self._changed(f"keyframe {index} moved")
    return on_update

  def _show_gizmo_poses(self) -> None:
    """Moves the gizmos to the keyframes (after a change made here, not in the page); called under the lock."""
    c2w = self._keys.c2w()
    for i, gizmo in enumerate(self._gizmos, start=1):
      gizmo.wxyz, gizmo.position = _wxyz(c2w[i, :3, :3]), c2w[i, :3, 3]

  def _draw_path(self) -> None:
    """Moves the frame frusta onto the interpolated path and redraws its centre line."""
    if self._server is None:
      return
    with self._lock:
      c2w = self._keys.trajectory_c2w()
    wxyz = _wxyz(c2w[:, :3, :3])
    for t, frustum in enumerate(self._path_frusta):
      frustum.wxyz, frustum.position = wxyz[t], c2w[t, :3, 3]
    centres = c2w[:, :3, 3]
    if len(centres) > 1:
      segments = np.stack([centres[:-1], centres[1:]], axis=1).astype(np.float32)
      self._server.scene.add_line_segments("/path/line", segments, colors=(240, 120, 20),
                                           thickness=0.003 * self.scene_depth)

  def _build_gui(self) -> None:
    gui, g = self._server.gui, self._gui
    g["status"] = gui.add_markdown(f"**Status:** {self._status}")
    with gui.add_folder("Trajectory"):
      g["preset"] = gui.add_dropdown("Preset", options=EDITOR_PRESETS if self._preset in EDITOR_PRESETS
                                     else (self._preset,) + EDITOR_PRESETS, initial_value=self._preset)
      g["strength"] = gui.add_slider("Magnitude", min=0.0, max=3.0, step=0.05, initial_value=self._strength,
                                     hint="x the preset's default (30 deg pans and orbits, 20 deg tilts, 1 m dolly "
                                          "and truck, 0.5 m pedestal)")
      g["metres"] = gui.add_slider("Metres", min=0.1, max=5.0, step=0.05, initial_value=self._keys.metres,
                                   hint="multiplies every camera translation of the path")
      g["add"] = gui.add_button("Add keyframe")
      g["remove"] = gui.add_button("Remove keyframe")
      g["count"] = gui.add_markdown(f"{len(self._keys)} keyframes (key 0 = the input camera, fixed)")
    with gui.add_folder("Preview"):
      g["preview"] = gui.add_image(np.zeros((8, 40, 3), np.uint8), label="Preview (frames 0 ... T-1)",
                                   format="png")
      g["preview_info"] = gui.add_markdown("rendering ...")
    with gui.add_folder("Generate"):
      g["generate"] = gui.add_button("Generate")
      g["result_label"] = gui.add_markdown(f"Result: {self.generate_label}")
      g["result"] = gui.add_html("")
    g["preset"].on_update(lambda _: self._guarded(lambda: self.apply_preset(g["preset"].value)))
    g["strength"].on_update(lambda _: self._guarded(lambda: self.apply_preset(self._preset, g["strength"].value)))
    g["metres"].on_update(lambda _: self._guarded(lambda: self.set_metres(g["metres"].value)))
    g["add"].on_click(lambda _: self._guarded(self.add_keyframe))
    g["remove"].on_click(lambda _: self._guarded(self.remove_keyframe))
    g["generate"].on_click(lambda _: self._guarded(self._generate_from_page))

  def _guarded(self, action: Callable[[], object]) -> None:
    """Runs a page action; an error goes to the status line instead of viser's log."""
    try:
      action()
    except Exception as e:  # pylint: disable=broad-except  # reported in the page
      log.warning("page action failed: %s", traceback.format_exc())
      self._set_status(f"{type(e).__name__}: {e}")

  def _generate_from_page(self) -> None:
    button = self._gui.get("generate")
    if button is not None:
      button.disabled = True
    try:
      self.generate()
    finally:
      if button is not None:
        button.disabled = False

  def _show_result(self, video: np.ndarray) -> None:
    if "result" not in self._gui:
      return
    gif = base64.b64encode(video_gif(video, self.fps)).decode("ascii")
    self._gui["result_label"].content = f"**Result** ({self.generate_label}): {video.shape[0]} frames"
    self._gui["result"].content = (f'<img src="data:image/gif;base64,{gif}" alt="generated video" '
                                   'style="width: 100%; image-rendering: pixelated;"/>')


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m camjax.app", description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", help="a RealCam-I2V run (python -m camjax.main --config=configs/realcam_i2v.py); "
                                   "without it Generate shows the preview render (no model: preview only)")
  p.add_argument("--image", help="the reference photo (RGB)")
  p.add_argument("--depth", help="its depth map: 16-bit PNG / PGM (see --depth_scale) or .npy metres")
  p.add_argument("--depth_scale", default="1000", help="depth units per metre (1000: mm, 5000: TUM) or a "
                                                       "camjax.depth format name (tum, nyu, sun, mm)")
  p.add_argument("--depth_model", help="a Depth Anything V2 metric folder, for an --image without --depth")
  p.add_argument("--intrinsics", help="fx,fy,cx,cy in pixels (default fx = fy = max(H, W) / 2, centred)")
  p.add_argument("--scene", type=int, help=f"a procedural scene seed instead of an image (default without --image: "
                                           f"the held-out scene {HELD_OUT_SCENE})")
  p.add_argument("--height", type=int, default=240, help="procedural scene height")
  p.add_argument("--width", type=int, default=320, help="procedural scene width")
  p.add_argument("--frames", type=int, default=25, help="frames of the path and the video")
  p.add_argument("--preset", default="dolly_in", help="preset the keyframes start from")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=8080)
  args = p.parse_args(argv)
  try:
    intrinsics = None if args.intrinsics is None else [float(v) for v in args.intrinsics.split(",")]
    image, depth, K = load_inputs(args.image, args.depth, depth_scale=args.depth_scale, depth_model=args.depth_model,
                                  intrinsics=intrinsics, scene=args.scene, height=args.height, width=args.width)
    generate_fn = RealCamGenerate(args.workdir) if args.workdir else None
    app = App(image, depth, K, generate_fn, args.frames, preset_name=args.preset)
  except (CamjaxError, ValueError) as e:
    print(f"error: {e}")
    return 2
  app.start(args.port, args.host)
  print(f"trajectory editor at {app.url} (Ctrl-C to stop)", flush=True)
  try:
    while True:
      time.sleep(1.0)
  except KeyboardInterrupt:
    pass
  finally:
    app.stop()
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
