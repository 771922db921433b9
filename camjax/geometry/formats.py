"""Readers and writers of camera files; every reader returns OpenCV `w2c`, pixel `K` and the image size.

REFERENCE.md section 1 gives each layout. Each reader validates every frame and raises `CameraError` naming the file,
line, frame and field of the first problem (wrong column count, non-numeric token or JSON field, NaN, non-orthonormal
rotation, non-positive focal or image size, empty file). Text files are read as UTF-8 with an optional byte-order mark;
`#` lines are comments. Writers write to a temporary file and rename it, so a failed write leaves nothing half-written.
"""

from __future__ import annotations

import glob
import json
import numbers
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from camjax.geometry import se3
from camjax.geometry.cameras import Cameras, intrinsics, validate_poses
from camjax.geometry.errors import CameraError
from camjax.io import atomic_write

# Nominal size of a RealEstate10K original (16:9 YouTube video). Intrinsics are normalised, so only the aspect matters.
RE10K_ORIGINAL_SIZE = (720, 1280)
# OpenCV <-> OpenGL camera axes: flip y and z (right-multiplied on c2w).
_GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


# ------------------------------------------------------------------------------------------------ helpers
def _read_text(path) -> list[str]:
  """The lines of a UTF-8 text file; a leading byte-order mark (Windows editors write one) is dropped."""
  path = Path(path)
  if not path.is_file():
    raise CameraError("camera file not found", source=path)
  try:
    return path.read_text(encoding="utf-8-sig").splitlines()
  except UnicodeDecodeError as e:
    raise CameraError(f"not a UTF-8 text file ({e}); save it as UTF-8", source=path) from None


def _parse_rows(path, lines: list[str], columns: Sequence[int], first_line: int = 1,
                comment: str = "#") -> tuple[np.ndarray, list[int]]:
  """Parses whitespace/comma separated numeric rows; returns `[N, C]` float64 and the 1-based line of each row."""
  rows, line_numbers = [], []
  ncols = None
  for i, raw in enumerate(lines[first_line - 1:], start=first_line):
    text = raw.strip()
    if not text or text.startswith(comment):
      continue
    tokens = text.replace(",", " ").split()
    if len(tokens) not in columns or (ncols is not None and len(tokens) != ncols):
      expected = ncols if ncols is not None else " or ".join(map(str, columns))
      raise CameraError(f"expected {expected} numbers per line, found {len(tokens)}", source=path, line=i,
                        frame=len(rows))
    ncols = len(tokens)
    try:
      values = [float(t) for t in tokens]
    except ValueError:
      bad = next(t for t in tokens if not _is_float(t))
      raise CameraError(f"not a number: {bad!r}", source=path, line=i, frame=len(rows)) from None
    if not np.all(np.isfinite(values)):
      raise CameraError("non-finite value (NaN or inf)", source=path, line=i, frame=len(rows))
    rows.append(values)
    line_numbers.append(i)
  if not rows:
    raise CameraError("no camera frames in file (empty?)", source=path)
  return np.asarray(rows, dtype=np.float64), line_numbers


def _is_float(token: str) -> bool:
  try:
    float(token)
    return True
  except ValueError:
    return False


def _load_json(path):
  path = Path(path)
  if not path.is_file():
    raise CameraError("camera file not found", source=path)
  try:
    return json.loads(path.read_text(encoding="utf-8-sig"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CameraError(f"malformed JSON ({e})", source=path) from None


def _require(mapping, key, path, frame=None):
  if not isinstance(mapping, dict) or key not in mapping:
    raise CameraError(f"missing field {key!r}", source=path, frame=frame)
  return mapping[key]


def _as_matrix(value, shape, what, path, frame=None) -> np.ndarray:
  try:
    m = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    raise CameraError(f"{what} is not numeric", source=path, frame=frame) from None
  if m.shape != shape:
    raise CameraError(f"{what} has shape {m.shape}, expected {shape}", source=path, frame=frame)
  return m


def _number(mapping, key, path, frame=None, default=None) -> float:
  """A finite JSON number field (not a string, null or bool); `default` when absent, if given.

  Raises:
    CameraError: the field is missing (and has no default), not a number, or NaN/inf; naming file, frame and field.
  """
  if key not in mapping:
    if default is None:
      raise CameraError(f"missing field {key!r}", source=path, frame=frame)
    return default
  value = mapping[key]
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    try:
      shown = json.dumps(value)
    except (TypeError, ValueError):
      shown = repr(value)
    raise CameraError(f"field {key!r} must be a JSON number, got {shown}; write it as a plain number",
                      source=path, frame=frame)
  try:
    value = float(value)
  except OverflowError:
    value = float("inf")
  if not np.isfinite(value):
    raise CameraError(f"field {key!r} is not finite ({value}); write a finite number", source=path, frame=frame)
  return value


def _image_size(image_size, path, what: str = "image_size") -> tuple[int, int]:
  """Checks a `(height, width)` argument in pixels: two positive whole numbers; returns them as ints.

  Raises:
    CameraError: naming the argument and the file being read.
  """
  try:
    h, w = image_size
  except (TypeError, ValueError):
    raise CameraError(f"{what} must be (height, width) in pixels, got {image_size!r}", source=path) from None
  for v in (h, w):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v <= 0 or v != int(v):
      raise CameraError(f"{what} must be two positive whole pixel counts (height, width), got {image_size!r}; "
                        "pass the size of the frames the cameras describe", source=path)
  return int(h), int(w)


def _check_K(K, num_frames: int, path):
  """Checks an intrinsics argument: pixel `K [3, 3]` or `[T, 3, 3]`, finite, `fx, fy > 0`, last row `[0, 0, 1]`.

  Returns `K` unchanged (None stays None: the reader's default).

  Raises:
    CameraError: naming the argument, the frame of a per-frame K, and the file being read.
  """
  if K is None:
    return None
  hint = "pass pixel intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0"
  try:
    k = np.asarray(K, dtype=np.float64)
  except (TypeError, ValueError):
    raise CameraError(f"argument K is not numeric; {hint}", source=path) from None
  if k.shape not in ((3, 3), (num_frames, 3, 3)):
    raise CameraError(f"argument K has shape {k.shape}, expected (3, 3) or ({num_frames}, 3, 3); {hint}", source=path)
  for i, ki in enumerate(k.reshape(-1, 3, 3)):
    frame = i if k.ndim == 3 else None
    if not np.all(np.isfinite(ki)):
      raise CameraError(f"argument K has a non-finite value (NaN or inf); {hint}", source=path, frame=frame)
    if ki[0, 0] <= 0 or ki[1, 1] <= 0:
      raise CameraError(f"argument K has focal lengths fx={ki[0, 0]:g} fy={ki[1, 1]:g}; {hint}", source=path,
                        frame=frame)
    if np.abs(ki[2] - np.array([0, 0, 1.0])).max() > 1e-9:
      raise CameraError(f"argument K has last row {ki[2].tolist()}; {hint}", source=path, frame=frame)
  return K


def _fmt(values) -> str:
  return " ".join(f"{v:.9g}" for v in values)


# ----------------------------------------------------------------------------------------- RealEstate10K
def read_re10k(path, image_size: tuple[int, int] | None = None,
               original_size: tuple[int, int] = RE10K_ORIGINAL_SIZE) -> Cameras:
  """Reads a RealEstate10K camera file (with or without the URL line and the timestamp column).

  Rows are `[timestamp_us] fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3` with fx, cx normalised by
  the image width and fy, cy by the height, and a row-major 3x4 world-to-camera matrix in OpenCV axes (translation
  scale arbitrary per clip). Blank lines, `#` comment lines and a UTF-8 byte-order mark are skipped; the URL line
  is the first other line when it is not a pose row (its first token is not a number and it has not 18/19 tokens).

  Args:
    path: the `.txt` file.
    image_size: `(height, width)` the frames are shown at. When given, intrinsics follow an aspect-preserving resize
      of the original plus a centre crop (CameraCtrl `rescale_fxy`; e.g. 576x320 gives `fy_px = fy * 324`,
      `cy_px = cy * 324 - 2`). When None, the cameras describe the original at `original_size`.
    original_size: `(height, width)` of the original video; only its aspect matters (default 16:9).

  Returns:
    `Cameras` with `K [T, 3, 3]` (pixels), `w2c [T, 4, 4]`, and timestamps in seconds when the file has them.

  Raises:
    CameraError: missing/empty file, wrong column count, non-numeric or NaN values, invalid rotation or focal,
      non-positive `image_size` / `original_size`.
  """
  h0, w0 = _image_size(original_size, path, "original_size")
  if image_size is not None:
    image_size = _image_size(image_size, path)
  lines = _read_text(path)
  rows, line_numbers = _parse_rows(path, lines, columns=(18, 19), first_line=_re10k_first_row(lines))
  timestamps = None
  if rows.shape[1] == 19:
    timestamps, rows = rows[:, 0] * 1e-6, rows[:, 1:]
  K = intrinsics(rows[:, 0] * w0, rows[:, 1] * h0, rows[:, 2] * w0, rows[:, 3] * h0)
  m = rows[:, 6:].reshape(-1, 3, 4)
  w2c = se3.make_pose(m[..., :3], m[..., 3])
  validate_poses(w2c, K, source=path, lines=line_numbers)
  cams = Cameras(K=K, w2c=w2c, height=h0, width=w0, timestamps=timestamps)
  if image_size is not None:
    cams = cams.resize_center_crop(*image_size)
  return cams


def _re10k_first_row(lines: list[str]) -> int:
  """1-based line where the pose rows of a RealEstate10K file start: after blank/`#` lines and the URL line.

  A frame whose first token is garbled still has 18/19 tokens, so it is parsed (and reported) rather than taken
  for the URL.
  """
  for i, raw in enumerate(lines, start=1):
    tokens = raw.replace(",", " ").split()
    if not tokens or tokens[0].startswith("#"):
      continue
    if not _is_float(tokens[0]) and len(tokens) not in (18, 19):
      return i + 1
    return i
  return len(lines) + 1


def write_re10k(path, cameras: Cameras, url: str | None = None, with_timestamps: bool | None = None) -> None:
  """Writes `[T]` cameras as a RealEstate10K txt (intrinsics normalised by this image size, w2c rows).

  Args:
    path: output file.
    cameras: unbatched cameras.
    url: written as the first line when given.
    with_timestamps: write the microsecond timestamp column (default: when `url` is given or the cameras have
      timestamps; frames without timestamps get their index at 30 fps).
  """
  cams = cameras.numpy()
  if cams.w2c.ndim != 3:
    raise CameraError(f"write_re10k takes one clip [T, 4, 4], got w2c of shape {cams.w2c.shape}")
  cams.validate()
  if with_timestamps is None:
    with_timestamps = url is not None or cams.timestamps is not None
  ts = cams.timestamps if cams.timestamps is not None else np.arange(cams.num_frames) / 30.0
  with atomic_write(path) as f:
    if url is not None:
      f.write(url.strip() + "\n")
    for i in range(cams.num_frames):
      k = cams.K[i]
      row = [k[0, 0] / cams.width, k[1, 1] / cams.height, k[0, 2] / cams.width, k[1, 2] / cams.height, 0.0, 0.0]
      row += cams.w2c[i, :3].reshape(-1).tolist()
      prefix = f"{int(round(ts[i] * 1e6))} " if with_timestamps else ""
      f.write(prefix + _fmt(row) + "\n")


# ------------------------------------------------------------------------------------------ NeRF / OpenGL
def read_nerf_transforms(path, with_file_paths: bool = False):
  """Reads a NeRF / instant-ngp `transforms.json` (4x4 camera-to-world in OpenGL axes: y up, looking down -z).

  Intrinsics come from `fl_x fl_y cx cy w h` (per frame or global), or from `camera_angle_x` (+ `camera_angle_y`)
  with `w h`. Distortion coefficients (k1 k2 p1 p2) are not applied.

  Args:
    path: the JSON file.
    with_file_paths: also return each frame's `file_path` (as written, relative to the file's folder).

  Returns:
    `Cameras` in OpenCV axes (y and z flipped: `c2w_cv = c2w_gl @ diag(1, -1, -1, 1)`), or `(cameras, paths)`.

  Raises:
    CameraError: missing file or field, malformed JSON, a field that is not a finite number (naming file, frame
      and field), non-positive image size, invalid pose or intrinsics (naming the frame).
  """
  data = _load_json(path)
  frames = _require(data, "frames", path)
  if not isinstance(frames, list) or not frames:
    raise CameraError("'frames' must be a non-empty list of frame objects", source=path)
  Ks, c2ws, paths, sizes = [], [], [], set()
  for i, fr in enumerate(frames):
    cam = {**data, **fr} if isinstance(fr, dict) else None
    if cam is None:
      raise CameraError("frame entry is not an object", source=path, frame=i)
    if "w" not in cam or "h" not in cam:
      raise CameraError("image size 'w'/'h' missing", source=path, frame=i)
    w, h = _number(cam, "w", path, i), _number(cam, "h", path, i)
    if round(w) < 1 or round(h) < 1:
      raise CameraError(f"image size w={w:g} h={h:g} must be positive pixel counts; fix 'w'/'h'", source=path,
                        frame=i)
    if "fl_x" in cam:
      fx = _number(cam, "fl_x", path, i)
      fy = _number(cam, "fl_y", path, i, default=fx)
    elif "camera_angle_x" in cam:
      fx = 0.5 * w / np.tan(0.5 * _number(cam, "camera_angle_x", path, i))
      fy = 0.5 * h / np.tan(0.5 * _number(cam, "camera_angle_y", path, i)) if "camera_angle_y" in cam else fx
    else:
      raise CameraError("no focal length ('fl_x' or 'camera_angle_x')", source=path, frame=i)
    cx, cy = _number(cam, "cx", path, i, default=w / 2), _number(cam, "cy", path, i, default=h / 2)
    Ks.append(intrinsics(fx, fy, cx, cy))
    c2ws.append(_as_matrix(_require(fr, "transform_matrix", path, i), (4, 4), "transform_matrix", path, i))
    paths.append(fr.get("file_path"))
    sizes.add((int(round(h)), int(round(w))))
  if len(sizes) != 1:
    raise CameraError(f"frames have different image sizes {sorted(sizes)}", source=path)
  c2w_cv = np.stack(c2ws) @ _GL_FLIP
  validate_poses(c2w_cv, np.stack(Ks), source=path)
  (h, w), = sizes
  cams = Cameras(K=np.stack(Ks), w2c=se3.invert(c2w_cv), height=h, width=w)
  return (cams, paths) if with_file_paths else cams


def write_nerf_transforms(path, cameras: Cameras, file_paths: Sequence[str] | None = None) -> None:
  """Writes `[T]` cameras as a NeRF `transforms.json` (OpenGL c2w, per-frame `fl_x fl_y cx cy`, global `w h`)."""
  cams = cameras.numpy().validate()
  if cams.w2c.ndim != 3:
    raise CameraError(f"write_nerf_transforms takes one clip [T, 4, 4], got {cams.w2c.shape}")
  if file_paths is not None and len(file_paths) != cams.num_frames:
    raise CameraError(f"{len(file_paths)} file paths for {cams.num_frames} cameras")
  c2w_gl = cams.c2w @ _GL_FLIP
  frames = []
  for i in range(cams.num_frames):
    k = cams.K[i]
    frame = {"fl_x": k[0, 0], "fl_y": k[1, 1], "cx": k[0, 2], "cy": k[1, 2],
             "transform_matrix": c2w_gl[i].tolist()}
    if file_paths is not None:
      frame["file_path"] = file_paths[i]
    frames.append(frame)
  with atomic_write(path) as f:
    json.dump({"w": cams.width, "h": cams.height, "frames": frames}, f, indent=1)


# ---------------------------------------------------------------------------------------- COLMAP / pycolmap
def read_colmap(reconstruction, with_names: bool = False):
  """Reads registered images of a COLMAP reconstruction (a folder in binary or text format, or a
  `pycolmap.Reconstruction`), sorted by image name.

  `image.cam_from_world()` is already world-to-camera in OpenCV axes; K is `camera.calibration_matrix()` (pinhole
  part; distortion is not applied). All images must share one image size.

  Returns:
    `Cameras [T]`, or `(cameras, names)` with `with_names`.

  Raises:
    CameraError: missing folder, no registered image, mixed image sizes.
  """
  import pycolmap  # the `curate` extra

  if not isinstance(reconstruction, pycolmap.Reconstruction):
    folder = Path(reconstruction)
    if not folder.is_dir():
      raise CameraError("COLMAP reconstruction folder not found", source=folder)
    try:
      reconstruction = pycolmap.Reconstruction(str(folder))
    except Exception as e:  # pycolmap raises plain RuntimeErrors/ValueErrors on malformed files
      raise CameraError(f"cannot read COLMAP reconstruction ({e})", source=folder) from None
    source = folder
  else:
    source = "pycolmap.Reconstruction"
  images = sorted((im for im in reconstruction.images.values() if im.has_pose), key=lambda im: im.name)
  if not images:
    raise CameraError("no registered image in the reconstruction", source=source)
  Ks, w2cs, sizes = [], [], set()
  for im in images:
    cam = reconstruction.cameras[im.camera_id]
    Ks.append(np.asarray(cam.calibration_matrix(), dtype=np.float64))
    m = np.asarray(im.cam_from_world().matrix(), dtype=np.float64)
    w2cs.append(se3.make_pose(m[:, :3], m[:, 3]))
    sizes.add((int(cam.height), int(cam.width)))
  if len(sizes) != 1:
    raise CameraError(f"images have different sizes {sorted(sizes)}", source=source)
  K, w2c = np.stack(Ks), np.stack(w2cs)
  validate_poses(w2c, K, source=source)
  (h, w), = sizes
  cams = Cameras(K=K, w2c=w2c, height=h, width=w)
  return (cams, [im.name for im in images]) if with_names else cams


# -------------------------------------------------------------------------------------------- TUM / KITTI
TUM_DEFAULT_SIZE = (480, 640)
TUM_DEFAULT_K = intrinsics(525.0, 525.0, 319.5, 239.5)  # TUM RGB-D "ROS default" calibration
KITTI_DEFAULT_SIZE = (376, 1241)
KITTI_DEFAULT_K = intrinsics(718.856, 718.856, 607.1928, 185.2157)  # KITTI odometry seq 00-02, cam0


def read_tum(path, K=None, image_size: tuple[int, int] = TUM_DEFAULT_SIZE) -> Cameras:
  """Reads a TUM trajectory: `timestamp tx ty tz qx qy qz qw` per line, camera-to-world, metres; `#` comments.

  Args:
    path: the file.
    K: intrinsics (default: TUM's ROS default 525/525/319.5/239.5 for 640x480).
    image_size: `(height, width)`.

  Returns:
    `Cameras [T]` with timestamps (seconds); translations in metres.

  Raises:
    CameraError: wrong column count, non-numeric/NaN, quaternion far from unit norm (> 1%), empty file, a `K`
      that is not a finite pixel matrix with positive focals, non-positive `image_size`.
  """
  image_size = _image_size(image_size, path)
  rows, line_numbers = _parse_rows(path, _read_text(path), columns=(8,))
  K = _check_K(K, len(rows), path)
  q = rows[:, 4:8]
  norms = np.linalg.norm(q, axis=-1)
  for i in np.nonzero(np.abs(norms - 1.0) > 1e-2)[0]:
    raise CameraError(f"quaternion norm {norms[i]:.4g} is not 1", source=path, line=line_numbers[i], frame=int(i))
  c2w = se3.make_pose(se3.quaternion_to_matrix(q), rows[:, 1:4])
  validate_poses(c2w, source=path, lines=line_numbers)
  return Cameras.from_c2w(c2w, TUM_DEFAULT_K if K is None else K, height=image_size[0], width=image_size[1],
                          timestamps=rows[:, 0])


def write_tum(path, cameras: Cameras) -> None:
  """Writes `[T]` cameras as a TUM trajectory (c2w position + quaternion x y z w; timestamps or frame indices)."""
  cams = cameras.numpy().validate()
  c2w = cams.c2w
  q = se3.matrix_to_quaternion(c2w[:, :3, :3])
  ts = cams.timestamps if cams.timestamps is not None else np.arange(cams.num_frames, dtype=np.float64)
  with atomic_write(path) as f:
    f.write("# timestamp tx ty tz qx qy qz qw\n")
    for i in range(cams.num_frames):
      f.write(f"{ts[i]:.6f} " + " ".join(f"{v:.9f}" for v in [*c2w[i, :3, 3], *q[i]]) + "\n")


def read_kitti(path, K=None, image_size: tuple[int, int] = KITTI_DEFAULT_SIZE) -> Cameras:
  """Reads a KITTI odometry pose file: 12 numbers per line, a row-major 3x4 camera-to-world (cam0), metres.

  Args:
    path: the file.
    K: intrinsics (default: KITTI odometry seq 00-02 cam0).
    image_size: `(height, width)`.

  Raises:
    CameraError: wrong column count, non-numeric/NaN, non-orthonormal rotation, empty file, a `K` that is not a
      finite pixel matrix with positive focals, non-positive `image_size`.
  """
  image_size = _image_size(image_size, path)
  rows, line_numbers = _parse_rows(path, _read_text(path), columns=(12,))
  K = _check_K(K, len(rows), path)
  m = rows.reshape(-1, 3, 4)
  c2w = se3.make_pose(m[..., :3], m[..., 3])
  validate_poses(c2w, source=path, lines=line_numbers)
  return Cameras.from_c2w(c2w, KITTI_DEFAULT_K if K is None else K, height=image_size[0], width=image_size[1])


def write_kitti(path, cameras: Cameras) -> None:
  """Writes `[T]` cameras as a KITTI pose file (row-major 3x4 c2w)."""
  cams = cameras.numpy().validate()
  with atomic_write(path) as f:
    for c2w in cams.c2w:
      f.write(_fmt(c2w[:3].reshape(-1)) + "\n")


# ------------------------------------------------------------------------------------------ Nerfies / DyCheck
def read_nerfies(path, pattern: str = "*.json") -> Cameras:
  """Reads Nerfies / DyCheck camera JSONs: one file, a folder (files matching `pattern`, sorted), or a list.

  Each JSON: `orientation` = 3x3 world-to-camera rotation, `position` = camera centre in world, `focal_length`,
  `pixel_aspect_ratio` (fy = f * ratio), `principal_point`, `image_size` [W, H]. OpenCV axes. Distortion not applied.

  Example: `read_nerfies("dycheck/paper-windmill/camera", pattern="0_*.json")` reads the moving training camera.

  Raises:
    CameraError: no file, missing field, malformed JSON, a field that is not numeric, an `image_size` that is not
      two positive whole pixel counts, invalid rotation or focal (naming file, frame and field).
  """
  if isinstance(path, (list, tuple)):
    files = [Path(p) for p in path]
  elif Path(path).is_dir():
    files = sorted(Path(p) for p in glob.glob(os.path.join(path, pattern)))
  else:
    files = [Path(path)]
  if not files:
    raise CameraError(f"no camera JSON matching {pattern!r}", source=path)
  Ks, w2cs, sizes = [], [], set()
  for i, f in enumerate(files):
    d = _load_json(f)
    R = _as_matrix(_require(d, "orientation", f, i), (3, 3), "orientation", f, i)
    c = _as_matrix(_require(d, "position", f, i), (3,), "position", f, i)
    focal = _number(d, "focal_length", f, i)
    pp = _as_matrix(_require(d, "principal_point", f, i), (2,), "principal_point", f, i)
    size = _as_matrix(_require(d, "image_size", f, i), (2,), "image_size", f, i)
    if not (np.all(np.isfinite(size)) and np.all(size > 0) and np.all(size == np.round(size))):
      raise CameraError(f"field 'image_size' must be [width, height] in positive whole pixels, got {size.tolist()}",
                        source=f, frame=i)
    Ks.append(intrinsics(focal, focal * _number(d, "pixel_aspect_ratio", f, i, default=1.0), pp[0], pp[1]))
    w2cs.append(se3.make_pose(R, -R @ c))
    validate_poses(w2cs[-1], Ks[-1], source=f)
    sizes.add((int(size[1]), int(size[0])))
  if len(sizes) != 1:
    raise CameraError(f"cameras have different image sizes {sorted(sizes)}", source=path)
  (h, w), = sizes
  return Cameras(K=np.stack(Ks), w2c=np.stack(w2cs), height=h, width=w)


# ------------------------------------------------------------------------------------------------ MotionCtrl
def read_motionctrl(path, image_size: tuple[int, int], K=None) -> Cameras:
  """Reads a MotionCtrl camera JSON: a list of T rows of 12 numbers, each a row-major 3x4 world-to-camera.

  Args:
    path: the JSON file.
    image_size: `(height, width)` of the video the poses drive.
    K: intrinsics (default: `fx = fy = max(H, W) / 2`, centred).

  Raises:
    CameraError: missing file, malformed JSON, a row without 12 numbers, invalid rotation, a `K` that is not a
      finite pixel matrix with positive focals, non-positive `image_size`.
  """
  image_size = _image_size(image_size, path)
  data = _load_json(path)
  if not isinstance(data, list) or not data:
    raise CameraError("expected a non-empty list of 12-number rows", source=path)
  rows = []
  for i, row in enumerate(data):
    rows.append(_as_matrix(row, (12,), "pose row", path, i))
  m = np.stack(rows).reshape(-1, 3, 4)
  w2c = se3.make_pose(m[..., :3], m[..., 3])
  validate_poses(w2c, source=path)
  return Cameras.create(w2c, _check_K(K, len(w2c), path), height=image_size[0], width=image_size[1])


def write_motionctrl(path, cameras: Cameras) -> None:
  """Writes `[T]` cameras as a MotionCtrl JSON (T rows of the row-major 3x4 w2c)."""
  cams = cameras.numpy().validate()
  with atomic_write(path) as f:
    json.dump([w[:3].reshape(-1).tolist() for w in cams.w2c], f)


# ------------------------------------------------------------------------------------ ReCamMaster MultiCamVideo
def unreal_to_opencv_c2w(matrix) -> np.ndarray:
  """One Unreal row-vector 4x4 (rows = forward/right/up axes, last row = position in cm) -> OpenCV-axes c2w in the
  (left-handed) Unreal world, metres: transpose, reorder columns `[1, 2, 0, 3]`, negate column 1, translation / 100.

  The result has `det R = -1` because the Unreal world is left-handed; only products `inv(c2w_ref) @ c2w` of two
  such poses are proper rigid transforms.
  """
  m = np.asarray(matrix, dtype=np.float64).T
  m = m[:, [1, 2, 0, 3]]
  m[:, 1] *= -1
  m[:3, 3] /= 100.0
  return m


def _parse_unreal_matrix(text, path, frame) -> np.ndarray:
  try:
    values = [float(v) for v in str(text).replace("[", " ").replace("]", " ").replace(",", " ").split()]
  except ValueError:
    raise CameraError(f"malformed matrix string {text!r}", source=path, frame=frame) from None
  if len(values) != 16 or not np.all(np.isfinite(values)):
    raise CameraError(f"expected 16 finite numbers, got {text!r}", source=path, frame=frame)
  return np.asarray(values).reshape(4, 4)


def read_multicam(path, camera: str, image_size: tuple[int, int], K=None, *, reference_camera: str | None = None,
                  reference_frame: int = 0, absolute: bool = False) -> Cameras:
  """Reads one camera of a ReCamMaster MultiCamVideo JSON (`{"frameK": {"camNN": "[..] [..] [..] [x y z 1]"}}`),
  RELATIVE to a reference camera of the same file (default: this camera's first frame).

  The Unreal world is left-handed: absolute poses would have `det R = -1` and are refused. Relative poses
  `rel_c2w_i = inv(c2w_ref) @ c2w_i` are proper OpenCV rigid transforms in metres.

  Args:
    path: the JSON file.
    camera: camera key, e.g. `"cam01"`.
    image_size: `(height, width)` of the videos.
    K: intrinsics (default: `fx = fy = max(H, W) / 2`).
    reference_camera: camera whose `reference_frame` becomes the identity (default: `camera`).
    reference_frame: frame index of the reference camera.
    absolute: must stay False; True raises (there is no right-handed absolute pose in this format).

  Raises:
    CameraError: asked for absolute poses, a frame key without exactly one frame number or two keys with the same
      number, missing camera/frame, malformed or singular matrix, result not a proper rotation, a `K` that is not a
      finite pixel matrix with positive focals, non-positive `image_size`.
  """
  if absolute:
    raise CameraError("MultiCamVideo poses live in Unreal's left-handed world: only poses relative to a camera of "
                      "the same file are valid (det R = -1 otherwise)", source=path)
  image_size = _image_size(image_size, path)
  data = _load_json(path)
  if not isinstance(data, dict) or not data:
    raise CameraError("expected an object of frames", source=path)
  keys = _multicam_frame_order(data, path)

  def pose(cam, index):
    index %= len(keys)
    entry = data[keys[index]]
    if not isinstance(entry, dict) or cam not in entry:
      raise CameraError(f"camera {cam!r} missing in {keys[index]!r}", source=path, frame=index)
    c2w = unreal_to_opencv_c2w(_parse_unreal_matrix(entry[cam], path, index))
    if np.abs(c2w[3] - np.array([0, 0, 0, 1.0])).max() > 1e-6:
      raise CameraError(f"camera {cam!r} in {keys[index]!r}: the last column of the matrix is "
                        f"{c2w[3].tolist()}, expected [0, 0, 0, 1]", source=path, frame=index)
    return c2w

  ref_cam = camera if reference_camera is None else reference_camera
  if not -len(keys) <= reference_frame < len(keys):
    raise CameraError(f"reference frame {reference_frame} out of range ({len(keys)} frames)", source=path)
  try:
    ref_inv = np.linalg.inv(pose(ref_cam, reference_frame))
  except np.linalg.LinAlgError:
    raise CameraError(f"reference camera {ref_cam!r} has a singular pose matrix; pick another reference",
                      source=path, frame=reference_frame % len(keys)) from None
  rel_c2w = np.stack([ref_inv @ pose(camera, i) for i in range(len(keys))])
  validate_poses(rel_c2w, source=path)  # c2w is rigid iff w2c is; checked before any inverse
  return Cameras.from_c2w(rel_c2w, _check_K(K, len(keys), path), height=image_size[0], width=image_size[1])


def _multicam_frame_order(data: dict, path) -> list[str]:
  """Frame keys (`"frame0"`, `"frame1"`, ...) in frame-number order.

  Raises:
    CameraError: a key without exactly one run of digits, or two keys with the same number (naming the keys).
  """
  by_number = {}
  for key in data:
    match = re.fullmatch(r"\D*(\d+)\D*", key)
    if match is None:
      raise CameraError(f"frame key {key!r} has no single frame number; name frames 'frame0', 'frame1', ... or "
                        "remove that entry", source=path)
    number = int(match.group(1))
    if number in by_number:
      raise CameraError(f"frame keys {by_number[number]!r} and {key!r} both give frame number {number}; keep one",
                        source=path)
    by_number[number] = key
  return [by_number[n] for n in sorted(by_number)]
