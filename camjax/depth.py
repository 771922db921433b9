"""Metric depth of a frame (RealCam-I2V sec. 3.2, REFERENCE.md section 4): one interface, three sources.

A `MetricDepth` maps one image `uint8 [H, W, 3]` to its depth `float32 [H, W]` in metres along the camera z axis
(OpenCV axes). **Invalid pixels are 0** (no sensor reading, sky, a prediction that is not positive); never NaN, so
`depth > 0` is the validity mask everywhere in camjax (the curation `DepthSource` uses the same convention).

Sources:
  * `SensorDepth`: RGB-D depth files (TUM 16-bit PNG / 5000, Kinect millimetre PGM / 1000, NYU raw disparity, SUN
    bit-rotated millimetres; see `read_depth`) of known colour frames;
  * `RenderedDepth`: ground truth of procedurally rendered frames (`camjax.data.synthetic`,
    `camjax.data.curate.validation.render_clip`);
  * `DepthAnythingMetric`: Depth Anything V2 (metric) through transformers' `DepthAnythingForDepthEstimation`, read
    from a local folder (torch and transformers: the `parity` extra). Nothing is downloaded.

The two ground-truth sources answer for the frames they were built with (matched by pixel content); any other image
raises `DepthError`.

Also here: `default_intrinsics` (unknown camera of a user image: `fx = fy = max(H, W) / 2`, centred), `unproject`
(depth -> 3D points, the RealCam-I2V point cloud) and `depth_errors` (AbsRel, RMSE, delta < 1.25).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from camjax.errors import CamjaxError, where
from camjax.geometry.cameras import default_intrinsics

__all__ = [
    "DEPTH_FORMATS", "DepthAnythingMetric", "DepthError", "DepthModelNotFoundError", "MetricDepth",
    "NotMetricDepthError", "RenderedDepth", "SensorDepth", "check_metric_checkpoint", "default_intrinsics",
    "depth_errors", "read_depth",
    "unproject",
]


# ------------------------------------------------------------------------------------------------------ errors
class DepthError(CamjaxError, ValueError):
  """Bad input to a depth source or metric: unreadable depth file, unknown format, an image the source has no depth
  for, shapes that disagree.

  Attributes:
    source: the file or folder at fault, when known.
  """

  def __init__(self, message: str, *, source=None, frame: int | None = None):
    self.source = None if source is None else str(source)
    self.frame = frame
    loc = where(self.source, None, frame)
    super().__init__(f"{loc}: {message}" if loc else message)


class DepthModelNotFoundError(DepthError):
  """A depth-model folder is missing, or lacks its `config.json` or its weights (`model.safetensors`,
  `pytorch_model.bin` or a sharded index)."""


class NotMetricDepthError(DepthError):
  """A checkpoint folder that is not a metric Depth Anything model: its `config.json` has another `model_type`, a
  `depth_estimation_type` other than `"metric"`, or no `max_depth` (Depth Anything metric checkpoints have both)."""


# --------------------------------------------------------------------------------------------------- interface
@runtime_checkable
class MetricDepth(Protocol):
  """Metric depth of one frame: `__call__(image uint8 [H, W, 3]) -> float32 [H, W]` metres (camera z), 0 = invalid."""

  def __call__(self, image: np.ndarray) -> np.ndarray:
    ...


def _check_image(image, what: str = "image") -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise DepthError(f"{what} must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  return image


def _finish(depth: np.ndarray) -> np.ndarray:
  """float32 metres with every non-finite or non-positive value set to 0 (the invalid marker)."""
  depth = np.asarray(depth, np.float32)
  return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))


def _resize_nearest(depth: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize `[h, w] -> [height, width]` (depth is never blended across an edge)."""
  if depth.shape == (height, width):
    return depth
  import cv2

  return cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)


# --------------------------------------------------------------------------------------------- RGB-D depth files
def _scaled(divisor: float):
  return lambda raw: raw.astype(np.float32) / divisor


def _nyu(raw: np.ndarray) -> np.ndarray:
  # NYU v2 raw Kinect disparity, stored byte-swapped in the PGM (Open3D RGBDImageFactory.cpp: 351.3 / (1092.5 - d)).
  d = raw.astype(np.uint16).byteswap().astype(np.float64)
  with np.errstate(divide="ignore"):
    z = 351.3 / (1092.5 - d)
  return np.where((d < 2047) & (z > 0), z, 0).astype(np.float32)


def _sun(raw: np.ndarray) -> np.ndarray:
  # SUN RGB-D: millimetres rotated by 3 bits (Open3D: v = (v >> 3) | (v << 13), 16 bits), then / 1000.
  v = raw.astype(np.uint32)
  return ((((v >> 3) | (v << 13)) & 0xFFFF).astype(np.float32) / 1000.0)


DEPTH_FORMATS = {
    "tum": _scaled(5000.0),  # TUM RGB-D 16-bit PNG, 5000 per metre
    "mm": _scaled(1000.0),  # millimetres (Kinect / slambook2 PGM, most RGB-D PNGs)
    "kinect": _scaled(1000.0),
    "nyu": _nyu,
    "sun": _sun,
}


def read_depth(path, depth_format: str | float = "tum") -> np.ndarray:
  """Reads one RGB-D depth map as metres.

  Args:
    path: a 16-bit `.png` / `.pgm` (decoded by `depth_format`) or a `.npy` of metres.
    depth_format: a name of `DEPTH_FORMATS` ("tum": value / 5000; "mm" or "kinect": value / 1000; "nyu": byte-swapped
      Kinect disparity, `351.3 / (1092.5 - d)`; "sun": 3-bit-rotated millimetres) or a number of units per metre.
      The decodings are those of Open3D's `RGBDImageFactory.cpp` and the datasets' MANIFESTs.

  Returns:
    `float32 [H, W]` metres, 0 = invalid (no reading).

  Raises:
    DepthError: missing or unreadable file, unknown format, not a single-channel map.
  """
  path = Path(path)
  if not path.is_file():
    raise DepthError("depth file not found", source=path)
  if path.suffix == ".npy":
    return _finish(np.load(path))
  if isinstance(depth_format, str):
    if depth_format not in DEPTH_FORMATS:
      raise DepthError(f"unknown depth format {depth_format!r}; use one of {sorted(DEPTH_FORMATS)} or a number of "
                       "units per metre", source=path)
    decode = DEPTH_FORMATS[depth_format]
  else:
    if not float(depth_format) > 0:
      raise DepthError(f"depth scale must be a positive number of units per metre, got {depth_format}", source=path)
    decode = _scaled(float(depth_format))
  import cv2

  raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
  if raw is None:
    raise DepthError("cannot read depth map", source=path)
  if raw.ndim != 2:
    raise DepthError(f"depth map must have one channel, got shape {raw.shape}", source=path)
  return _finish(decode(raw))


def _read_color(path) -> np.ndarray:
  import cv2

  bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
  if bgr is None:
    raise DepthError("cannot read colour image", source=path)
  return np.ascontiguousarray(bgr[..., ::-1])


def _digest(image: np.ndarray) -> str:
  image = np.ascontiguousarray(image)
  return hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()


class _KnownFrames:
  """Depth of a fixed set of frames, looked up by the image's pixel content (shape and bytes)."""

  def _index(self, images: Sequence[np.ndarray]) -> None:
    self._lookup: dict[str, int] = {}
    for i, image in enumerate(images):
      self._lookup.setdefault(_digest(_check_image(image, f"frame {i}")), i)

  def frame_index(self, image) -> int:
    """The index of `image` among the known frames; raises `DepthError` when it is not one of them."""
    image = _check_image(image)
    index = self._lookup.get(_digest(image))
    if index is None:
      raise DepthError(f"{type(self).__name__} has no depth for this {image.shape[1]}x{image.shape[0]} image: it is "
                       f"not one of its {len(self._lookup)} frames (ground-truth sources answer only for their own "
                       "frames, pixel for pixel)")
    return index

  def __call__(self, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return _resize_nearest(self.depth(self.frame_index(image)), *image.shape[:2])

  def depth(self, index: int) -> np.ndarray:
    raise NotImplementedError


class SensorDepth(_KnownFrames):
  """Ground-truth depth from RGB-D files, as a `MetricDepth` over the colour frames it was given.

  `SensorDepth(color_paths, depth_paths, depth_format)` reads the colour images once (to recognise them) and each
  depth map when asked; a depth map of another size than its colour image is resized (nearest neighbour).

  Args:
    color_paths: colour images (any format OpenCV reads), in the same order as `depth_paths`.
    depth_paths: their depth maps (see `read_depth`).
    depth_format: see `read_depth` ("tum" for TUM RGB-D, "mm" for the slambook2 Kinect frames, "nyu", "sun").

  Raises:
    DepthError: different counts, a missing or unreadable file, an unknown format.
  """

  def __init__(self, color_paths: Sequence, depth_paths: Sequence, depth_format: str | float = "tum"):
    if len(color_paths) != len(depth_paths) or not len(color_paths):
      raise DepthError(f"SensorDepth needs as many depth maps as colour images (at least one), got "
                       f"{len(depth_paths)} and {len(color_paths)}")
    self.color_paths = [Path(p) for p in color_paths]
    self.depth_paths = [Path(p) for p in depth_paths]
    self.depth_format = depth_format
    for p in self.depth_paths:
      if not p.is_file():
        raise DepthError("depth file not found", source=p)
    self._index([_read_color(p) for p in self.color_paths])

  def __len__(self) -> int:
    return len(self.color_paths)

  def color(self, index: int) -> np.ndarray:
    """The colour frame `uint8 [H, W, 3]` (RGB) of entry `index`."""
    return _read_color(self.color_paths[index])

  def depth(self, index: int) -> np.ndarray:
    """The sensor depth `float32 [h, w]` metres of entry `index` (0 = no reading)."""
    return read_depth(self.depth_paths[index], self.depth_format)


class RenderedDepth(_KnownFrames):
  """Ground-truth depth of rendered frames, as a `MetricDepth`.

  Args:
    frames: `uint8 [T, H, W, 3]` (e.g. `SyntheticClip.frames`, `GroundTruthClip.frames`).
    depth: `float [T, H, W]` camera-z metres, 0 = sky (the renderer's convention).

  Raises:
    DepthError: shapes disagree.
  """

  def __init__(self, frames: np.ndarray, depth: np.ndarray):
    frames, depth = np.asarray(frames), np.asarray(depth)
    if frames.ndim != 4 or depth.shape != frames.shape[:3]:
      raise DepthError(f"RenderedDepth needs frames [T, H, W, 3] and depth [T, H, W], got {frames.shape} and "
                       f"{depth.shape}")
    self._depth = _finish(depth)
    self._index(list(frames))

  @classmethod
  def from_clip(cls, clip) -> "RenderedDepth":
    """From anything with `.frames` and `.depth` (`SyntheticClip`, `GroundTruthClip`)."""
    return cls(clip.frames, clip.depth)

  def __len__(self) -> int:
    return len(self._depth)

  def depth(self, index: int) -> np.ndarray:
    return self._depth[index]


# ----------------------------------------------------------------------------------------------- Depth Anything
_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Depth Anything V2's preprocessor_config.json (DPTImageProcessor): 518 px lower side, multiple of 14, ImageNet stats.
_DEFAULT_PREPROCESSOR = {"size": {"height": 518, "width": 518}, "keep_aspect_ratio": True, "ensure_multiple_of": 14,
                         "rescale_factor": 1 / 255, "image_mean": [0.485, 0.456, 0.406],
                         "image_std": [0.229, 0.224, 0.225]}


def _read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise DepthModelNotFoundError(f"cannot read {path.name} ({e})", source=path) from None


def check_metric_checkpoint(path) -> dict:
  """Checks that `path` is a local metric Depth Anything checkpoint and returns its `config.json`.

  Raises:
    DepthModelNotFoundError: no such folder, no `config.json`, or no weights file.
    NotMetricDepthError: `model_type` is not "depth_anything", `depth_estimation_type` is not "metric", or the
      config has no `max_depth`.
  """
  path = Path(path)
  if not path.is_dir():
    raise DepthModelNotFoundError("depth-model folder not found (nothing is downloaded: give a local folder holding a "
                                  "Depth Anything V2 metric checkpoint saved with save_pretrained)", source=path)
  config_file = path / "config.json"
  if not config_file.is_file():
    raise DepthModelNotFoundError("no config.json in the depth-model folder", source=path)
  config = _read_json(config_file)
  if config.get("model_type") != "depth_anything":
    raise NotMetricDepthError(f"model_type is {config.get('model_type')!r}, not 'depth_anything'", source=config_file)
  if config.get("depth_estimation_type") != "metric":
    raise NotMetricDepthError(f"depth_estimation_type is {config.get('depth_estimation_type')!r}: a relative-depth "
                              "checkpoint; use a metric one (e.g. Depth-Anything-V2-Metric-Indoor/Outdoor)",
                              source=config_file)
  if not isinstance(config.get("max_depth"), (int, float)) or not config["max_depth"] > 0:
    raise NotMetricDepthError(f"config has no positive max_depth (got {config.get('max_depth')!r}); Depth Anything "
                              "metric checkpoints give it (20 indoor, 80 outdoor)", source=config_file)
  if not any((path / name).is_file() for name in _WEIGHT_FILES):
    raise DepthModelNotFoundError(f"no weights in the depth-model folder (looked for {', '.join(_WEIGHT_FILES)})",
                                  source=path)
  return config


def _constrain_to_multiple(value: float, multiple: int) -> int:
  x = int(round(value / multiple) * multiple)
  return x if x >= multiple else int(np.ceil(value / multiple) * multiple)


class DepthAnythingMetric:
  """Depth Anything V2 (metric) as a `MetricDepth`: RealCam-I2V's depth predictor (paper sec. 3.2 and 4.1, Large
  Indoor), run with transformers' `DepthAnythingForDepthEstimation` from a local checkpoint folder.

  Preprocessing follows the checkpoint's `preprocessor_config.json` (`DPTImageProcessor`; Depth Anything V2's values
  when the file is absent): resize with aspect ratio kept so the side that changes least reaches `size`, each side
  rounded to a multiple of `ensure_multiple_of` (14), bicubic (PIL); scale by 1/255; normalise by `image_mean` /
  `image_std`. The head predicts `sigmoid(.) * max_depth` metres at the input size; the prediction is resized back to
  `[H, W]` bicubically (as `post_process_depth_estimation`), and non-positive values are set to 0 (invalid).

  Args:
    path: local folder with `config.json`, weights and optionally `preprocessor_config.json`.
    device: torch device ("cpu", "cuda", ...).
    dtype: torch dtype name of the model ("float32", "float16", "bfloat16").

  Raises:
    DepthModelNotFoundError: the folder, its config or its weights are missing.
    NotMetricDepthError: the checkpoint is not a metric Depth Anything model (see `check_metric_checkpoint`).
  """

  def __init__(self, path, device: str = "cpu", dtype: str = "float32"):
    import torch
    from transformers import AutoConfig, DepthAnythingForDepthEstimation

    self.path = Path(path)
    check_metric_checkpoint(self.path)
    try:
      self.config = AutoConfig.from_pretrained(self.path)
    except Exception as e:  # transformers raises several types on a malformed config
      raise NotMetricDepthError(f"transformers cannot read config.json ({type(e).__name__}: {e})",
                                source=self.path / "config.json") from None
    self.max_depth = float(self.config.max_depth)
    pre = dict(_DEFAULT_PREPROCESSOR)
    if (self.path / "preprocessor_config.json").is_file():
      pre.update(_read_json(self.path / "preprocessor_config.json"))
    self.input_side = (int(pre["size"]["height"]), int(pre["size"]["width"]))
    self.keep_aspect_ratio = bool(pre["keep_aspect_ratio"])
    self.multiple = int(pre["ensure_multiple_of"] or 1)
    self.rescale = float(pre["rescale_factor"])
    self.mean = np.asarray(pre["image_mean"], np.float32)
    self.std = np.asarray(pre["image_std"], np.float32)
    self.device = torch.device(device)
    self.dtype = getattr(torch, dtype)
    try:
      model = DepthAnythingForDepthEstimation.from_pretrained(self.path, dtype=self.dtype)
    except Exception as e:  # corrupt or mismatched weights
      raise DepthModelNotFoundError(f"cannot load the weights ({type(e).__name__}: {e})", source=self.path) from None
    self.model = model.to(self.device).eval()

  def input_size(self, height: int, width: int) -> tuple[int, int]:
    """`(h, w)` the model sees for an `height x width` image (transformers' DPT `get_resize_output_image_size`)."""
    out_h, out_w = self.input_side
    sh, sw = out_h / height, out_w / width
    if self.keep_aspect_ratio:
      if abs(1 - sw) < abs(1 - sh):
        sh = sw
      else:
        sw = sh
    return _constrain_to_multiple(sh * height, self.multiple), _constrain_to_multiple(sw * width, self.multiple)

  def preprocess(self, image: np.ndarray) -> np.ndarray:
    """`uint8 [H, W, 3]` -> normalised `float32 [1, 3, h, w]` model input."""
    from PIL import Image

    image = _check_image(image)
    h, w = self.input_size(*image.shape[:2])
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    x = (resized * self.rescale - self.mean) / self.std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """Metric depth `float32 [H, W]` metres of `image uint8 [H, W, 3]` (0 where the prediction is not positive)."""
    import torch

    image = _check_image(image)
    x = torch.from_numpy(self.preprocess(image)).to(self.device, self.dtype)
    with torch.inference_mode():
      pred = self.model(pixel_values=x).predicted_depth  # [1, h, w] metres
      pred = torch.nn.functional.interpolate(pred[:, None].float(), size=image.shape[:2], mode="bicubic",
                                             align_corners=False)[0, 0]
    return _finish(pred.cpu().numpy())


# ------------------------------------------------------------------------------------------ geometry and metrics
def unproject(depth, K, c2w=None) -> np.ndarray:
  """Back-projects a depth map to 3D points (the RealCam-I2V point cloud of a reference frame).

  `X = c2w (z K^-1 [x + 0.5, y + 0.5, 1]^T)` for pixel (x, y) with camera-z depth z (camjax pixel centres, OpenCV axes).

  Args:
    depth: `[H, W]` camera-z depth (metres for metric depth), 0 or non-finite = invalid.
    K: `[3, 3]` pixel intrinsics of the depth map (`default_intrinsics(H, W)` for an unknown camera).
    c2w: optional `[4, 4]` camera-to-world pose; None gives camera coordinates.

  Returns:
    `float64 [H, W, 3]` points; NaN at invalid pixels (so they cannot pass silently as the camera centre).

  Raises:
    DepthError: wrong shapes.
  """
  depth = np.asarray(depth, np.float64)
  K = np.asarray(K, np.float64)
  if depth.ndim != 2 or K.shape != (3, 3):
    raise DepthError(f"unproject needs depth [H, W] and K [3, 3], got {depth.shape} and {K.shape}")
  H, W = depth.shape
  ys, xs = np.mgrid[0:H, 0:W]
  pix = np.stack([xs + 0.5, ys + 0.5, np.ones((H, W))], -1)
  points = (pix @ np.linalg.inv(K).T) * depth[..., None]
  if c2w is not None:
    c2w = np.asarray(c2w, np.float64)
    if c2w.shape != (4, 4):
      raise DepthError(f"c2w must be [4, 4], got {c2w.shape}")
    points = points @ c2w[:3, :3].T + c2w[:3, 3]
  valid = np.isfinite(depth) & (depth > 0)
  return np.where(valid[..., None], points, np.nan)


def depth_errors(pred, gt, *, min_depth: float = 1e-3, max_depth: float | None = None) -> dict[str, float]:
  """Standard monocular-depth errors of `pred` against `gt` (Eigen et al. 2014; Depth Anything's evaluation).

  On pixels where both are valid (finite, `gt` in `[min_depth, max_depth]`, `pred > 0`):
  `abs_rel = mean(|p - g| / g)`, `rmse = sqrt(mean((p - g)^2))` (metres), `delta1 = mean(max(p/g, g/p) < 1.25)`.

  Args:
    pred, gt: `[H, W]` (or any equal shapes) depths in metres, 0 / NaN = invalid.
    min_depth, max_depth: the ground-truth range evaluated (metres).

  Returns:
    dict with `abs_rel`, `rmse`, `delta1`, `num_pixels` (evaluated) and `coverage` (the fraction of valid ground-truth
    pixels where `pred` is valid too).

  Raises:
    DepthError: shapes differ, or no pixel is valid in both.
  """
  p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  if p.shape != g.shape:
    raise DepthError(f"depth_errors: prediction {p.shape} and ground truth {g.shape} differ in shape")
  gt_ok = np.isfinite(g) & (g >= min_depth)
  if max_depth is not None:
    gt_ok &= g <= max_depth
  ok = gt_ok & np.isfinite(p) & (p > 0)
  if not ok.any():
    raise DepthError("depth_errors: no pixel has both a valid prediction and valid ground truth")
  p, g = p[ok], g[ok]
  return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
          "delta1": float(np.mean(np.maximum(p / g, g / p) < 1.25)), "num_pixels": int(ok.sum()),
          "coverage": float(ok.sum() / gt_ok.sum())}
