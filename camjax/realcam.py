"""RealCam-I2V for users: a trained run, a real photo with metric depth, a trajectory in metres -> 3D preview and video.

    python -m camjax.realcam --workdir W --image photo.jpg [--depth depth.png --depth_scale 1000 | --depth_model DIR]
        [--K fx,fy,cx,cy] --trajectory PRESET_OR_FILE [--mode interpolation --last_image last.jpg] [--metres 1.5]
        --out D

`W` is a RealCam-I2V run (`python -m camjax.main --config=configs/realcam_i2v.py`). The photo is resized to cover
the run's frame size and centre-cropped (its intrinsics and depth moved the same way; nearest-neighbour depth).
Depth: a depth file in units of `--depth_scale` per metre (16-bit PNG / PGM, or `.npy` metres), or Depth Anything V2
metric from a local folder (`--depth_model`). Intrinsics: `--K` in pixels of the photo, else
`camjax.geometry.default_intrinsics` (`fx = fy = max(H, W) / 2`, centred). Trajectory: a preset composition
(`dolly_in`, `orbit_left:20+pedestal_up:0.3`, translations in metres) or a pose file (RealEstate10K `.txt`, NeRF
`transforms.json`; poses taken relative to their first camera, translations read as metres), resampled to the run's
frame count; `--metres` rescales its translations so that the camera ends up at most that far from where it
started. Modes: `basic`, `interpolation` (`--last_image`), `loop`, `continuation` (`--context` video or folder,
`--num_given`).

`D` receives `depth.npy` (metres, the photo's size) and `depth.png`, `points.ply` (the photo lifted with its depth,
binary PLY with colours, metres, camera axes), `preview.mp4` and `preview_mask.mp4` (the point cloud rendered along the
trajectory and the noise-shaping mask), `generated.mp4`, `side_by_side.mp4` (preview | generated), `cameras.txt`
(RealEstate10K format, the run's frame size), `frusta.png` and `summary.json`; it is written beside itself and
renamed into place.

The API the browser editor (`camjax.app`) calls:

    rc = RealCam.from_workdir(W)
    w2c = rc.trajectory("orbit_left:20", metres=1.0)             # [T, 4, 4], frame 0 the photo's camera
    pv = rc.preview(image, depth, K, w2c)                       # camjax.geometry.render.Preview at the run's size
    video = rc.generate(image, depth, K, w2c, mode="basic", shaping=True)   # uint8 [T, H, W, 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camjax.errors import CamjaxError
from camjax.io import replace_dir
from camjax.methods.realcam_i2v import MODES, RealCamError

__all__ = ["RealCam", "RealCamError", "fit_image", "main", "parse_intrinsics", "read_image", "realcam", "write_ply"]


# ----------------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------------


def read_image(path) -> np.ndarray:
  """`uint8 [H, W, 3]` RGB of an image file.

  Raises:
    RealCamError: missing or unreadable.
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  path = Path(path)
  if not path.is_file():
    raise RealCamError(f"image {path}: not found")
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"), np.uint8)
  except (OSError, UnidentifiedImageError) as e:
    raise RealCamError(f"image {path}: not a readable image ({e})") from None


def parse_intrinsics(text: str) -> np.ndarray:
  """`[3, 3]` pixel intrinsics from `"fx,fy,cx,cy"`.

  Raises:
    RealCamError: not four finite numbers with positive focal lengths.
  """
  try:
    fx, fy, cx, cy = (float(v) for v in str(text).split(","))
  except ValueError:
    raise RealCamError(f"--K {text!r}: expected four numbers fx,fy,cx,cy (pixels of the image)") from None
  if not all(np.isfinite([fx, fy, cx, cy])) or fx <= 0 or fy <= 0:
    raise RealCamError(f"--K {text!r}: focal lengths must be positive and every value finite")
  return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)


def _check_image(image, what: str) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
    raise RealCamError(f"{what} must be uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
  return image


def fit_image(image, depth, K, height: int, width: int):
  """Resizes an image (and its depth and intrinsics) to cover `height x width` with its aspect kept, and crops the
  centre, as the training pipeline does (`camjax.data.pipeline.cover_crop`).

  Args:
    image: `uint8 [H, W, 3]`.
    depth: `[H, W]` metres or None.
    K: `[3, 3]` pixel intrinsics of `image`, or None for `default_intrinsics(H, W)`.
    height, width: the run's frame size.

  Returns:
    `(image uint8 [height, width, 3], depth float32 [height, width] or None, K [3, 3] at the new size)`.

  Raises:
    RealCamError: an image that is not `uint8 [H, W, 3]`, a depth map of another size, a `K` that is not `[3, 3]`.
  """
  from camjax.data.pipeline import cover_crop, resize_frames  # pylint: disable=import-outside-toplevel
  from camjax.geometry.cameras import Cameras, default_intrinsics  # pylint: disable=import-outside-toplevel
  image = _check_image(image, "image")
  H, W = image.shape[:2]
  K = default_intrinsics(H, W) if K is None else np.asarray(K, np.float64)
  if K.shape != (3, 3) or not np.isfinite(K).all():
    raise RealCamError(f"K must be a finite [3, 3] pixel matrix, got {list(K.shape)}")
  if depth is not None:
    depth = np.asarray(depth, np.float32)
    if depth.shape != (H, W):
      raise RealCamError(f"depth must be [H, W] = [{H}, {W}] like the image, got {list(depth.shape)}")
  rh, rw, top, left = cover_crop(H, W, height, width)
  cams = Cameras(K=K[None], w2c=np.eye(4)[None], height=H, width=W).resize(rh, rw).crop(top, left, height, width)
  out = resize_frames(image[None], rh, rw)[0, top:top + height, left:left + width]
  if depth is not None:
    from PIL import Image  # pylint: disable=import-outside-toplevel
    depth = resize_frames(depth[None, ..., None], rh, rw, resample=Image.NEAREST)[0, top:top + height,
                                                                                  left:left + width, 0]
  return np.ascontiguousarray(out), depth, np.asarray(cams.K[0], np.float64)


def _pose_file(spec) -> Path | None:
  """The pose file a trajectory argument names, or None for a preset (`camjax.explore.pose_file`)."""
  from camjax.explore import ExplorationError, pose_file  # pylint: disable=import-outside-toplevel
  try:
    return pose_file(spec)
  except ExplorationError as e:
    raise RealCamError(f"--trajectory {spec!r}: {e}") from None


def read_trajectory(spec: str, num_frames: int, K, height: int, width: int, metres: float | None = None) -> np.ndarray:
  """`[T, 4, 4]` world-to-camera poses, frame 0 the identity (the photo's camera), translations in metres.

  Args:
    spec: a preset composition (`camjax.geometry.preset`) or a pose file (RealEstate10K `.txt`, NeRF `.json`).
    num_frames: T (pose files are resampled to it).
    K: `[3, 3]` intrinsics (presets' zooms act on them; unused otherwise).
    height, width: frame size.
    metres: when given, translations are rescaled so the largest camera displacement from frame 0 is `metres`.

  Raises:
    RealCamError: an unknown preset, an unreadable pose file, a non-positive `metres`, or `metres` for a
      trajectory that does not translate.
  """
  from camjax.geometry import CameraError, formats, se3, trajectories  # pylint: disable=import-outside-toplevel
  path = _pose_file(spec)
  try:
    if path is None:
      cams = trajectories.preset(str(spec), num_frames, height=height, width=width, K=K)
    else:
      cams = formats.read_nerf_transforms(path) if path.suffix == ".json" else formats.read_re10k(
          path, image_size=(height, width))
      cams = cams.relative(0)
      if cams.num_frames != num_frames:
        cams = trajectories.resample(cams, num_frames)
  except CameraError as e:
    raise RealCamError(f"--trajectory {spec!r}: {e}") from None
  w2c = np.asarray(cams.relative(0).w2c, np.float64)
  if metres is not None:
    if not float(metres) > 0:
      raise RealCamError(f"--metres must be positive, got {metres}")
    travel = float(np.linalg.norm(se3.invert(w2c)[:, :3, 3], axis=-1).max())
    if travel < 1e-9:
      raise RealCamError(f"--metres {metres}: trajectory {spec!r} does not translate (a pure rotation or zoom), so "
                         "there is no distance to scale")
    w2c[:, :3, 3] *= float(metres) / travel
  return w2c


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RealCam:
  """A trained RealCam-I2V run for inference (`from_workdir`): previews and videos of user images.

  Attributes:
    config: the run's config; mesh, model (`camjax.methods.Model`), weights (`{params[, frozen]}`, EMA when kept).
  """

  config: Any
  mesh: Any
  model: Any
  weights: dict
  _fns: dict = dataclasses.field(default_factory=dict, repr=False)

  @classmethod
  def from_workdir(cls, workdir, step: int | None = None) -> "RealCam":
    """Loads the newest (or `step`) checkpoint of a RealCam-I2V run.

    Raises:
      RealCamError: `workdir` is not a trained run, or is a run of another method.
    """
    from camjax import methods  # pylint: disable=import-outside-toplevel
    try:
      config, mesh, model, weights = methods.load_run(workdir, step)
    except methods.RunNotFoundError as e:
      raise RealCamError(str(e)) from None
    if config.method != "realcam_i2v":
      raise RealCamError(f"{workdir} is a {config.method!r} run; RealCam needs configs/realcam_i2v.py")
    return cls(config, mesh, model, weights)

  @property
  def num_frames(self) -> int:
    return int(self.config.data.num_frames)

  @property
  def height(self) -> int:
    return int(self.config.data.height)

  @property
  def width(self) -> int:
    return int(self.config.data.width)

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    from camjax.methods.realcam_i2v import latent_grid  # pylint: disable=import-outside-toplevel
    return latent_grid(self.config)

  def trajectory(self, spec: str, metres: float | None = None, K=None) -> np.ndarray:
    """`[T, 4, 4]` poses of a preset or pose file for this run (`read_trajectory`); `K` (at the run's size) for
    zoom presets."""
    from camjax.geometry import default_intrinsics  # pylint: disable=import-outside-toplevel
    K = default_intrinsics(self.height, self.width) if K is None else K
    return read_trajectory(spec, self.num_frames, K, self.height, self.width, metres)

  def _trajectory(self, trajectory_w2c) -> np.ndarray:
    """`[T, 4, 4]` of the run's frame count (SE(3)-resampled when another count is given)."""
    from camjax.geometry import Cameras, trajectories  # pylint: disable=import-outside-toplevel
    w2c = np.asarray(trajectory_w2c, np.float64)
    if w2c.ndim != 3 or w2c.shape[1:] != (4, 4) or len(w2c) < 1:
      raise RealCamError(f"trajectory_w2c must be [N, 4, 4] world-to-camera poses (metres), got {list(w2c.shape)}")
    if len(w2c) == self.num_frames:
      return w2c
    if len(w2c) == 1:
      return np.repeat(w2c, self.num_frames, axis=0)
    cams = Cameras(K=np.tile(np.eye(3), (len(w2c), 1, 1)), w2c=w2c, height=self.height, width=self.width)
    return np.asarray(trajectories.resample(cams, self.num_frames).w2c, np.float64)

  def preview(self, image, depth, K, trajectory_w2c):
    """The point-cloud preview of a trajectory (RealCam-I2V sec. 3.3).

    Args:
      image: `uint8 [H, W, 3]` photo (any size: fitted to the run's size, `fit_image`).
      depth: `[H, W]` its metric depth (camera z, metres; 0 = none).
      K: `[3, 3]` pixel intrinsics of the photo, or None (`default_intrinsics`).
      trajectory_w2c: `[N, 4, 4]` world-to-camera poses in metres, `w2c[0]` the photo's camera (resampled to the
        run's T when N differs).

    Returns:
      `camjax.geometry.render.Preview` at the run's size: `video [T, H, W, 3]` float in [0, 1], `mask [T, H, W]`,
      `latent_mask [t, h, w]`.

    Raises:
      RealCamError: inputs of the wrong shape, a depth map without a valid pixel, invalid poses.
    """
    from camjax.methods.realcam_i2v import check_trajectory, scene_preview  # pylint: disable=import-outside-toplevel
    if depth is None:
      raise RealCamError("preview needs the photo's metric depth")
    image, depth, K = fit_image(image, depth, K, self.height, self.width)
    w2c = check_trajectory(self._trajectory(trajectory_w2c), self.num_frames)
    return scene_preview(image, depth, K, w2c, self.latent_shape)

  def generate(self, image, depth, K, trajectory_w2c, mode: str = "basic", shaping: bool = True, *,
               last_image=None, context=None, num_given: int | None = None, caption: str = "", seed: int = 0,
               target: str | None = None, threshold: float | None = None, preview=None) -> np.ndarray:
    """Generates a video along a metric trajectory.

    Args:
      image, depth, K, trajectory_w2c: as in `preview` (`depth` may be None when `shaping` is False).
      mode: "basic", "interpolation" (needs `last_image`), "loop" (the last frame is the first), "continuation"
        (needs `context`: `uint8 [T', H', W', 3]` frames whose first `num_given` are given; its frame 0 replaces
        `image`).
      shaping: scene-constrained noise shaping with the preview.
      last_image: `uint8 [H', W', 3]` last frame (interpolation; fitted like `image`).
      context, num_given: continuation's given frames.
      caption: text prompt.
      seed: sampler seed.
      target, threshold: noise-shaping variant ("z_t" the paper's equation, "x0" Fig. 6) and level threshold;
        default the run's `sample.shaping_target` / `sample.shaping_threshold`.
      preview: a `Preview` already rendered by `preview(...)` for these inputs (skips rendering it again).

    Returns:
      `uint8 [T, H, W, 3]` at the run's size; the given frames are the (fitted) given images exactly.

    Raises:
      RealCamError: an unknown mode, a mode without its inputs, inputs of the wrong shape, no depth with shaping.
    """
    from camjax import methods  # pylint: disable=import-outside-toplevel
    from camjax.methods import realcam_i2v as rc  # pylint: disable=import-outside-toplevel
    if mode not in MODES:
      raise RealCamError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if shaping and depth is None:
      raise RealCamError("noise shaping needs the photo's metric depth (or pass shaping=False)")
    H, W = self.height, self.width
    if mode == "continuation":
      if context is None:
        raise RealCamError("mode 'continuation' needs context frames (uint8 [T', H, W, 3]) and num_given")
      ctx = np.asarray(context)
      if ctx.ndim != 4:
        raise RealCamError(f"context must be uint8 [T', H, W, 3], got {list(ctx.shape)}")
      image = ctx[0]
      context = np.stack([fit_image(f, None, K, H, W)[0] for f in ctx])
    image, depth, K = fit_image(image, depth, K, H, W)
    if last_image is not None:
      last_image = fit_image(last_image, None, None, H, W)[0]
    w2c = rc.check_trajectory(self._trajectory(trajectory_w2c), self.num_frames)
    example = rc.make_example(image, depth, K, w2c, latent_shape=self.latent_shape, mode=mode, last_image=last_image,
                              context=context, num_given=int(num_given or 1), caption=caption,
                              with_preview=shaping, preview=preview if shaping else None)
    batch = methods.host_batch({k: np.asarray(v)[None] for k, v in example.items()}, self.model.tokenizer,
                               self.model.method, self.config)
    return self.sample_batch(batch, seed=seed, shaping=shaping, target=target, threshold=threshold)[0]

  def sample_batch(self, batch: dict, *, seed: int = 0, shaping: bool | None = None, target: str | None = None,
                   threshold: float | None = None, paste_given: bool = True) -> np.ndarray:
    """`uint8 [B, T, H, W, 3]` videos of a device-ready batch (`methods.host_batch` of `rc.stack_examples`), sampled
    with the run's sampler (`RealCamI2V.sample`: `shaping` / `target` / `threshold` default to the config's;
    `paste_given=False` leaves the given frames as the model decoded them)."""
    import jax  # pylint: disable=import-outside-toplevel

    from camjax import methods  # pylint: disable=import-outside-toplevel
    video = methods.generate(self.weights, self._sampler(shaping, target, threshold, paste_given), batch, self.mesh,
                             jax.random.key(int(seed)))
    return np.round((np.asarray(video, np.float32) + 1) * 127.5).clip(0, 255).astype(np.uint8)

  def _sampler(self, shaping: bool | None, target, threshold, paste_given: bool = True):
    """The jitted sampler for one set of static options (cached)."""
    import jax  # pylint: disable=import-outside-toplevel

    from camjax.methods import merge  # pylint: disable=import-outside-toplevel
    key = (None if shaping is None else bool(shaping), target, None if threshold is None else float(threshold),
           bool(paste_given))
    if key not in self._fns:
      static, method = self.model.static, self.model.method
      opts = dict(shaping=key[0], target=target, threshold=key[2], paste_given=key[3])
      self._fns[key] = jax.jit(lambda w, batch, rng: method.sample(merge(static, w), static, batch, rng, **opts))
    return self._fns[key]


# ----------------------------------------------------------------------------------------------------------------------
# Outputs and the command
# ----------------------------------------------------------------------------------------------------------------------


def write_ply(path, points, colors) -> None:
  """Binary little-endian PLY of `points [N, 3]` (float32) with `colors [N, 3]` (uint8, or float in [0, 1])."""
  points = np.asarray(points, np.float32).reshape(-1, 3)
  colors = np.asarray(colors)
  if colors.dtype != np.uint8:
    colors = np.round(np.clip(colors, 0, 1) * 255).astype(np.uint8)
  rows = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
  rows["x"], rows["y"], rows["z"] = points.T
  rows["r"], rows["g"], rows["b"] = colors.reshape(-1, 3).T
  header = ("ply\nformat binary_little_endian 1.0\n"
            f"element vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
  with open(path, "wb") as f:
    f.write(header.encode("ascii"))
    f.write(rows.tobytes())


_OUTPUTS = re.compile(r"depth\.(npy|png)|points\.ply|(preview|preview_mask|generated|side_by_side)\.mp4|"
                      r"cameras\.txt|frusta\.png|summary\.json")


def _check_out(out: Path) -> None:
  if out.exists() and not out.is_dir():
    raise RealCamError(f"--out {out} exists and is not a folder")
  if out.is_dir():
    foreign = sorted(p.name for p in out.iterdir() if not _OUTPUTS.fullmatch(p.name))
    if foreign:
      raise RealCamError(f"--out {out} holds files camjax.realcam does not write ({', '.join(foreign[:5])}): choose "
                         "a new or empty folder")


def _write_video(path: Path, video: np.ndarray, fps: float = 8.0) -> None:
  import mediapy  # pylint: disable=import-outside-toplevel

  from camjax import media  # pylint: disable=import-outside-toplevel
  media._setup_ffmpeg()  # pylint: disable=protected-access
  mediapy.write_video(path, video, fps=fps)


def _depth_png(depth: np.ndarray) -> np.ndarray:
  """`uint8 [H, W, 3]` colour-mapped depth (turbo, near = blue; black where invalid)."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  valid = depth > 0
  lo, hi = (np.percentile(depth[valid], [1, 99]) if valid.any() else (0.0, 1.0))
  x = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
  rgb = (colormaps["turbo"](x)[..., :3] * 255).astype(np.uint8)
  rgb[~valid] = 0
  return rgb


def _read_frames(path) -> np.ndarray:
  """`uint8 [T, H, W, 3]` of a video file or a folder of images."""
  path = Path(path)
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
      raise RealCamError(f"--context {path}: no .png / .jpg frames")
    return np.stack([read_image(p) for p in files])
  from camjax.media import MediaError, read_video  # pylint: disable=import-outside-toplevel
  try:
    return np.asarray(read_video(path), np.uint8)[..., :3]
  except MediaError as e:
    raise RealCamError(f"--context: {e}") from None


def realcam(workdir, image_path, trajectory: str, out, *, depth_path=None, depth_scale: float = 1000.0,
            depth_model=None, K=None, mode: str = "basic", last_image=None, context=None, num_given: int | None = None,
            metres: float | None = None, shaping: bool = True, caption: str = "", seed: int = 0,
            step: int | None = None, rc: RealCam | None = None) -> dict:
  """The whole command (module docstring); returns the summary written to `out/summary.json`.

  Raises:
    RealCamError, camjax.depth.DepthError: bad inputs, named.
  """
  from camjax import depth as depth_lib  # pylint: disable=import-outside-toplevel
  from camjax.eval.report import write_png  # pylint: disable=import-outside-toplevel
  from camjax.geometry import (Cameras, default_intrinsics,  # pylint: disable=import-outside-toplevel
                               plot_trajectories, render, write_re10k)
  out = Path(out)
  _check_out(out)
  if mode not in MODES:
    raise RealCamError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
  if (depth_path is None) == (depth_model is None):
    raise RealCamError("give the photo's metric depth: exactly one of --depth FILE or --depth_model DIR")
  if mode == "interpolation" and last_image is None:
    raise RealCamError("--mode interpolation needs --last_image")
  if mode == "continuation" and context is None:
    raise RealCamError("--mode continuation needs --context (a video or a folder of frames) and --num_given")
  photo = read_image(image_path)
  H0, W0 = photo.shape[:2]
  K_known = K is not None
  K_photo = np.asarray(K, np.float64) if K_known else default_intrinsics(H0, W0)
  if depth_path is not None:
    depth = depth_lib.read_depth(depth_path, float(depth_scale))  # a .npy is read as metres
  else:
    depth = depth_lib.DepthAnythingMetric(depth_model)(photo)
  if depth.shape != (H0, W0):
    raise RealCamError(f"--depth {depth_path}: {depth.shape[1]}x{depth.shape[0]} pixels, the image {W0}x{H0}")
  if not (depth > 0).any():
    raise RealCamError(f"--depth {depth_path or depth_model}: no valid pixel (check --depth_scale)")
  last = read_image(last_image) if last_image is not None else None
  ctx = _read_frames(context) if context is not None else None
  rc = rc or RealCam.from_workdir(workdir, step)
  H, W, T = rc.height, rc.width, rc.num_frames
  _, _, K_model = fit_image(photo, None, K_photo, H, W)
  w2c = read_trajectory(trajectory, T, K_model, H, W, metres)
  pv = rc.preview(photo, depth, K_photo, w2c)
  video = rc.generate(photo, depth, K_photo, w2c, mode=mode, shaping=shaping, last_image=last, context=ctx,
                      num_given=num_given, caption=caption, seed=seed, preview=pv)
  preview_u8 = np.round(np.asarray(pv.video) * 255).clip(0, 255).astype(np.uint8)
  points, colors = render.unproject(photo, depth, K_photo, np.eye(4))
  cams = Cameras(K=np.tile(K_model, (T, 1, 1)), w2c=w2c, height=H, width=W)
  travel = float(np.linalg.norm(cams.centers, axis=-1).max())
  tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    tmp.mkdir(parents=True)
    np.save(tmp / "depth.npy", depth.astype(np.float32))
    write_png(tmp / "depth.png", _depth_png(depth))
    write_ply(tmp / "points.ply", points, colors.astype(np.uint8))
    _write_video(tmp / "preview.mp4", preview_u8)
    _write_video(tmp / "preview_mask.mp4", np.repeat(np.asarray(pv.mask, np.uint8)[..., None] * 255, 3, axis=-1))
    _write_video(tmp / "generated.mp4", video)
    _write_video(tmp / "side_by_side.mp4", np.concatenate([preview_u8, video], axis=2))
    write_re10k(tmp / "cameras.txt", cams)
    plot_trajectories(cams, tmp / "frusta.png", title=f"{trajectory} ({travel:.2f} m)")
    summary = {"workdir": str(Path(workdir).resolve()), "image": str(image_path), "image_size": [H0, W0],
               "depth": str(depth_path or depth_model), "depth_valid_fraction": float((depth > 0).mean()),
               "depth_median_m": float(np.median(depth[depth > 0])), "K": K_photo.tolist(),
               "K_source": "--K" if K_known else "default_intrinsics (fx = fy = max(H, W) / 2, centred)",
               "trajectory": trajectory, "metres": metres, "max_travel_m": travel, "mode": mode, "shaping": shaping,
               "frames": T, "size": [H, W], "points": int(len(points)),
               "preview_mask_fraction": float(np.asarray(pv.mask).mean()),
               "latent_mask_fraction": float(np.asarray(pv.latent_mask).mean()), "seed": seed}
    (tmp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    replace_dir(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m camjax.realcam", description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a RealCam-I2V run folder")
  p.add_argument("--image", required=True, help="the photo (first frame)")
  p.add_argument("--depth", default=None, help="its metric depth: 16-bit PNG / PGM (see --depth_scale) or .npy metres")
  p.add_argument("--depth_scale", type=float, default=1000.0, help="depth units per metre (1000: mm; TUM: 5000)")
  p.add_argument("--depth_model", default=None, help="Depth Anything V2 metric checkpoint folder (instead of --depth)")
  p.add_argument("--K", default=None, help="fx,fy,cx,cy in pixels of the photo (default: fx = fy = max(H, W) / 2)")
  p.add_argument("--trajectory", required=True, help="preset (e.g. dolly_in, orbit_left:20) or pose file")
  p.add_argument("--metres", type=float, default=None, help="rescale translations: largest displacement in metres")
  p.add_argument("--mode", default="basic", choices=MODES)
  p.add_argument("--last_image", default=None, help="the last frame (interpolation)")
  p.add_argument("--context", default=None, help="frames to continue: video file or folder (continuation)")
  p.add_argument("--num_given", type=int, default=None, help="frames of --context given (continuation)")
  p.add_argument("--no_shaping", action="store_true", help="sample without scene-constrained noise shaping")
  p.add_argument("--caption", default="")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--step", type=int, default=None)
  p.add_argument("--out", required=True, help="output folder")
  args = p.parse_args(argv)
  try:
    summary = realcam(args.workdir, args.image, args.trajectory, args.out, depth_path=args.depth,
                      depth_scale=args.depth_scale, depth_model=args.depth_model,
                      K=parse_intrinsics(args.K) if args.K else None, mode=args.mode, last_image=args.last_image,
                      context=args.context, num_given=args.num_given, metres=args.metres,
                      shaping=not args.no_shaping, caption=args.caption, seed=args.seed, step=args.step)
  except CamjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.out}: {summary['frames']} frames at {summary['size'][0]}x{summary['size'][1]}, mode "
        f"{summary['mode']}, {summary['points']} points, camera travel {summary['max_travel_m']:.2f} m, preview "
        f"covers {summary['preview_mask_fraction']:.0%}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
