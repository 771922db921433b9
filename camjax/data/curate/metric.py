"""RealCam-I2V metric scene-scale alignment of training clips (paper sec. 3.2 and 4.1; REFERENCE.md section 4).

Per clip, with the clip's cameras (RealEstate10K annotations or the curation SfM; translation scale arbitrary):
  1. SfM points: COLMAP's point triangulator with the clip's intrinsics and extrinsics held fixed (SIFT features,
     sequential matching, two-view verification) -> `triangulate_clip` (pycolmap);
  2. per scored frame i: metric depth `D_i = f_depth(I_i)` (a `camjax.depth.MetricDepth`), the frame's SfM points
     projected into it, per point `r = D_i(p) / z_i(p)` (metric over SfM camera-z depth), frame factor
     `alpha_i = median(r)` -> `frame_factor`;
  3. the clip's factor `alpha` is the reference frame's factor (its metric depth is the scene the user's trajectory is
     drawn in), and `c_cam^metric = [R, alpha T]` -> `align_clip` (the translations of every camera are multiplied:
     scaling the world about its origin scales every relative pose by the same alpha);
  4. over the dataset: drop clips whose largest frame factor, and separately whose smallest frame factor, lies in the
     lowest or highest 2% -> `keep_by_factor`.

`align_re10k` runs the whole recipe over a folder of RealEstate10K-layout clips and writes the scaled pose files.
`MetricDepthSource` plugs a `MetricDepth` (e.g. `camjax.depth.DepthAnythingMetric`) into the curation pipeline's
`DepthSource` slot.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from camjax import geometry as g
from camjax.data.curate import scale
from camjax.data.curate.errors import CurationError
from camjax.depth import DepthError, MetricDepth


# ----------------------------------------------------------------------------------------------- SfM points
@dataclasses.dataclass(frozen=True)
class SfMPoints:
  """A clip's triangulated points, in the world (and scale) of the cameras they were triangulated with.

  Attributes:
    xyz: `float64 [P, 3]` world points.
    track_length: `int [P]` frames observing each point.
    observations: per frame `t`, `int [n_t]` indices into `xyz` of the points frame t observes.
    mean_reprojection_error: pixels, over every observation.
  """

  xyz: np.ndarray
  track_length: np.ndarray
  observations: tuple[np.ndarray, ...]
  mean_reprojection_error: float

  def frame(self, index: int) -> np.ndarray:
    """The world points `[n, 3]` observed in frame `index`."""
    if not -len(self.observations) <= index < len(self.observations):
      raise CurationError(f"frame {index} out of range for {len(self.observations)} frames")
    return self.xyz[self.observations[index]]


def _pinhole(K: np.ndarray) -> str:
  return f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"


def _reconstruction_with_known_cameras(db_path: Path, cameras: g.Cameras):
  """A pycolmap Reconstruction of the database's rigs, frames and images with the given poses (keypoints as
  2D points), every frame registered: the input of COLMAP's point triangulator."""
  import pycolmap

  db = pycolmap.Database.open(db_path)
  try:
    rec = pycolmap.Reconstruction()
    images = db.read_all_images()
    index = {im.image_id: int(Path(im.name).stem) for im in images}
    for camera in db.read_all_cameras():
      rec.add_camera(camera)
    for rig in db.read_all_rigs():
      rec.add_rig(rig)
    frame_of_image = {im.frame_id: im.image_id for im in images}
    for frame in db.read_all_frames():
      w2c = cameras.w2c[index[frame_of_image[frame.frame_id]]]
      frame.rig_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(w2c[:3, :3]), w2c[:3, 3])
      rec.add_frame(frame)
    for im in images:
      keypoints = db.read_keypoints(im.image_id)
      im.points2D = pycolmap.Point2DList([pycolmap.Point2D(k[:2]) for k in keypoints])
      rec.add_image(im)
    for frame_id in rec.frames:
      rec.register_frame(frame_id)
  finally:
    db.close()
  return rec, index


def triangulate_clip(frames: np.ndarray, cameras: g.Cameras, *, overlap: int = 10, max_error: float = 1.0,
                     two_view_tracks: bool = True, num_threads: int = 1, seed: int = 0, workdir=None) -> SfMPoints:
  """SfM points of a clip with known cameras: COLMAP's point triangulator (RealCam-I2V sec. 4.1: "COLMAP point
  triangulator on each video clip with fixed camera intrinsics and extrinsics").

  SIFT features are extracted with each frame's intrinsics, matched sequentially (`overlap` frames; exhaustive for
  short clips) and verified with a `max_error`-pixel RANSAC (see `camjax.geometry.sfm`); the points are then
  triangulated and refined with every pose and intrinsic held fixed.

  Args:
    frames: `uint8 [T, H, W, 3]`, T >= 2.
    cameras: `Cameras [T]` of those frames (pixel K at H x W; any translation scale).
    overlap: sequential matching window.
    max_error: two-view verification RANSAC threshold, pixels.
    two_view_tracks: keep points seen in only two frames (COLMAP's point_triangulator drops them by default; the
      frame factor is a median, and without them the first frame of a clip keeps few points).
    num_threads: threads for extraction, matching and triangulation (1 = reproducible).
    seed: RANSAC seed.
    workdir: folder for the temporary images and database (default: the system's temporary folder).

  Returns:
    `SfMPoints` (empty when nothing could be triangulated).

  Raises:
    CurationError: frames and cameras disagree, or fewer than 2 frames.
  """
  import mediapy
  import pycolmap

  frames = np.asarray(frames)
  cams = cameras.numpy()
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) < 2:
    raise CurationError(f"triangulate_clip needs uint8 [T >= 2, H, W, 3] frames, got {frames.dtype} {frames.shape}")
  T, H, W = frames.shape[:3]
  if cams.w2c.shape != (T, 4, 4) or (cams.height, cams.width) != (H, W):
    raise CurationError(f"triangulate_clip: {T} frames of {H}x{W} but cameras {cams.w2c.shape[:-2]} of "
                        f"{cams.height}x{cams.width}")
  shared_K = bool(np.allclose(cams.K, cams.K[0], rtol=1e-6, atol=1e-6))
  with tempfile.TemporaryDirectory(dir=workdir) as tmp:
    tmp = Path(tmp)
    (tmp / "images").mkdir()
    for i, frame in enumerate(frames):
      mediapy.write_image(tmp / "images" / f"{i:05d}.png", frame)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    reader.camera_params = _pinhole(cams.K[0])
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = num_threads
    db_path = tmp / "database.db"
    mode = pycolmap.CameraMode.SINGLE if shared_K else pycolmap.CameraMode.PER_IMAGE
    pycolmap.extract_features(db_path, tmp / "images", camera_mode=mode, reader_options=reader,
                              extraction_options=extraction, device=pycolmap.Device.cpu)
    if not shared_K:
      with pycolmap.Database.open(db_path) as db:
        for im in db.read_all_images():
          camera = db.read_camera(im.camera_id)
          camera.params = cams.K[int(Path(im.name).stem)][[0, 1, 0, 1], [0, 1, 2, 2]]
          db.update_camera(camera)
    g.sfm.match_sequential(db_path, overlap=max(1, min(overlap, T - 1)), num_threads=num_threads,
                           max_error=max_error, seed=seed)
    rec, index = _reconstruction_with_known_cameras(db_path, cams)
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = num_threads
    options.random_seed = seed
    options.triangulation.ignore_two_view_tracks = not two_view_tracks
    rec = pycolmap.triangulate_points(rec, db_path, tmp / "images", tmp / "triangulated", options=options)
  return _points_of(rec, index, T)


def _points_of(rec, index: dict[int, int], num_frames: int) -> SfMPoints:
  ids = sorted(rec.points3D)
  row = {pid: k for k, pid in enumerate(ids)}
  xyz = np.array([rec.points3D[pid].xyz for pid in ids], np.float64).reshape(-1, 3)
  track = np.array([rec.points3D[pid].track.length() for pid in ids], np.int64)
  observations = [[] for _ in range(num_frames)]
  for image_id, image in rec.images.items():
    observations[index[image_id]] = sorted({row[p.point3D_id] for p in image.points2D if p.has_point3D()})
  error = float(rec.compute_mean_reprojection_error()) if ids else float("nan")
  return SfMPoints(xyz=xyz, track_length=track, observations=tuple(np.asarray(o, np.int64) for o in observations),
                   mean_reprojection_error=error)


def sfm_points_for_frame(frames: np.ndarray, cameras: g.Cameras, frame: int = 0, **triangulation) -> np.ndarray:
  """The SfM points `[n, 3]` (cameras' world and scale) observed in `frame`: `triangulate_clip(...).frame(frame)`.

  Keyword arguments go to `triangulate_clip`. Raises `CurationError` as `triangulate_clip` does.
  """
  return triangulate_clip(frames, cameras, **triangulation).frame(frame)


# ------------------------------------------------------------------------------------------------ frame factor
def point_ratios(metric_depth, sfm_points, w2c, K) -> np.ndarray:
  """Per SfM point `metric depth / SfM depth`: each point is projected into the frame (`scale.points_depth`) and the
  metric depth is read at the pixel it falls in (nearest; no mixing across depth edges).

  Args:
    metric_depth: `[H, W]` metres, 0 = invalid.
    sfm_points: `[N, 3]` world points (SfM scale).
    w2c: `[4, 4]` the frame's camera (same world); K: `[3, 3]` pixel intrinsics at H x W.

  Returns:
    `float64 [n]` ratios of the points in front of the camera, inside the image and on valid metric depth.
  """
  metric_depth = np.asarray(metric_depth, np.float64)
  if metric_depth.ndim != 2:
    raise CurationError(f"metric depth must be [H, W], got shape {metric_depth.shape}")
  H, W = metric_depth.shape
  uv, z = scale.points_depth(np.asarray(sfm_points, np.float64).reshape(-1, 3), w2c, K, H, W)
  m = metric_depth[uv[:, 1].astype(np.int64), uv[:, 0].astype(np.int64)] if len(z) else np.zeros(0)
  ok = np.isfinite(m) & (m > 0)
  return m[ok] / z[ok]


def frame_factor(metric_depth, sfm_points, w2c, K, *, min_points: int = 20) -> float:
  """RealCam-I2V frame-level factor: the median over the frame's SfM points of `metric depth / SfM depth`.

  Args:
    metric_depth: `[H, W]` metres (0 = invalid); sfm_points: `[N, 3]`; w2c: `[4, 4]`; K: `[3, 3]` (see
      `point_ratios`).
    min_points: fewer usable points raise.

  Returns:
    The factor (metres per SfM unit).

  Raises:
    CurationError: fewer than `min_points` points project onto valid metric depth.
  """
  r = point_ratios(metric_depth, sfm_points, w2c, K)
  if len(r) < min_points:
    raise CurationError(f"only {len(r)} SfM points land on valid metric depth (need {min_points})")
  return float(np.median(r))


# -------------------------------------------------------------------------------------------------- one clip
@dataclasses.dataclass
class ClipAlignment:
  """One clip's metric alignment.

  Attributes:
    factor: alpha, the reference frame's factor (metres per SfM unit).
    reference: the reference frame.
    frames: the frames that got a factor; frame_factors: their factors; num_points: the points behind each.
    cameras: the input cameras with every translation multiplied by alpha (`.relative(reference)` is the paper's
      `c_cam^metric`).
    mean_reprojection_error: of the triangulated points, pixels.
  """

  factor: float
  reference: int
  frames: list[int]
  frame_factors: list[float]
  num_points: list[int]
  cameras: g.Cameras
  mean_reprojection_error: float

  def stats(self) -> dict:
    return {"factor": self.factor, "reference": self.reference, "frames": self.frames,
            "frame_factors": [round(f, 6) for f in self.frame_factors], "num_points": self.num_points,
            "mean_reprojection_error": round(self.mean_reprojection_error, 4)}


def _depth_of(depth, frames: np.ndarray, t: int) -> np.ndarray:
  if isinstance(depth, np.ndarray):
    if depth.shape != frames.shape[:3]:
      raise CurationError(f"metric depth {depth.shape} does not match frames {frames.shape[:3]}")
    return depth[t]
  return np.asarray(depth(frames[t]), np.float64)


def align_clip(frames: np.ndarray, cameras: g.Cameras, depth: MetricDepth | np.ndarray, *, reference: int = 0,
               score_frames: Sequence[int] | None = None, points: SfMPoints | None = None, min_points: int = 20,
               **triangulation) -> ClipAlignment:
  """RealCam-I2V relative-to-metric alignment of one clip (paper sec. 3.2, eq. `c_cam^metric = [R, alpha T]`).

  Args:
    frames: `uint8 [T, H, W, 3]`.
    cameras: `Cameras [T]` (relative scale; RealEstate10K or curation SfM).
    depth: a `MetricDepth` called on each scored frame, or `float [T, H, W]` metres (0 = invalid).
    reference: the frame whose factor scales the clip (the first frame, as the conditioning poses are relative to it).
    score_frames: frames that get a factor for the dataset filter (default: every frame; the reference is always
      scored). Frames with fewer than `min_points` usable points are skipped, except the reference.
    points: precomputed `SfMPoints` of these cameras (default: `triangulate_clip(frames, cameras, **triangulation)`).
    min_points: see `frame_factor`.

  Returns:
    `ClipAlignment`.

  Raises:
    CurationError: bad shapes, or the reference frame has fewer than `min_points` usable SfM points.
  """
  frames = np.asarray(frames)
  T = len(frames)
  if not -T <= reference < T:
    raise CurationError(f"reference frame {reference} out of range for {T} frames")
  reference %= T
  if points is None:
    points = triangulate_clip(frames, cameras, **triangulation)
  if len(points.observations) != T:
    raise CurationError(f"SfM points cover {len(points.observations)} frames, the clip has {T}")
  cams = cameras.numpy()
  order = [reference] + [t for t in (range(T) if score_frames is None else score_frames) if t % T != reference]
  scored, factors, counts = [], [], []
  for t in order:
    t = int(t) % T
    r = point_ratios(_depth_of(depth, frames, t), points.frame(t), cams.w2c[t], cams.K[t])
    if len(r) < min_points:
      if t == reference:
        raise CurationError(f"only {len(r)} SfM points of the reference frame land on valid metric depth (need "
                            f"{min_points}; {len(points.xyz)} points triangulated in the clip)", frame=t)
      continue
    scored.append(t)
    factors.append(float(np.median(r)))
    counts.append(int(len(r)))
  alpha = factors[0]
  return ClipAlignment(factor=alpha, reference=reference, frames=scored, frame_factors=factors, num_points=counts,
                       cameras=cameras.scale_translation(alpha), mean_reprojection_error=points.mean_reprojection_error)


def keep_by_factor(clips: Sequence[ClipAlignment | Sequence[float]], quantile: float = 0.02) -> np.ndarray:
  """RealCam-I2V dataset filter (paper sec. 4.1): sort the clips by their largest frame factor and drop the first and
  last `quantile` (2%); do the same, separately, with their smallest frame factor; keep what survives both.

  The cut is by rank: `floor(quantile * (N - 1))` clips at each end of each ordering (numpy's "lower" / "higher"
  quantiles; ties are kept together). Unlike `scale.realcam_keep` (interpolated quantiles, which always drop each
  extreme of a dataset of two or more clips), a dataset of fewer than `1 / quantile + 1` clips loses nothing.

  Args:
    clips: per clip, a `ClipAlignment` or its frame factors.
    quantile: fraction cut at each end, in [0, 0.5).

  Returns:
    `bool [num_clips]`, True = keep.

  Raises:
    CurationError: a clip without a finite positive factor, or a quantile outside [0, 0.5).
  """
  if not 0 <= quantile < 0.5:
    raise CurationError(f"quantile must be in [0, 0.5), got {quantile}")
  factors = [np.asarray(c.frame_factors if isinstance(c, ClipAlignment) else c, np.float64) for c in clips]
  for k, f in enumerate(factors):
    if f.size == 0 or not (np.isfinite(f).all() and (f > 0).all()):
      raise CurationError(f"clip {k} has no frame factor or a non-finite / non-positive one: {f.tolist()}")
  keep = np.ones(len(factors), bool)
  if not factors:
    return keep
  for v in (np.array([f.max() for f in factors]), np.array([f.min() for f in factors])):
    lo = np.quantile(v, quantile, method="lower")
    hi = np.quantile(v, 1 - quantile, method="higher")
    keep &= (v >= lo) & (v <= hi)
  return keep


# ---------------------------------------------------------------------------------------- curation adapters
@dataclasses.dataclass
class MetricDepthSource:
  """A `MetricDepth` (e.g. `camjax.depth.DepthAnythingMetric`) as the curation pipeline's `DepthSource`: called on
  each frame of the clip, `float32 [T, H, W]` metres; a `DepthError` becomes a `CurationError` naming the video and
  frame (the pipeline then drops the clip and reports why)."""

  model: MetricDepth

  def __call__(self, video_id, frame_indices, frames):
    out = []
    for t, frame in enumerate(frames):
      try:
        out.append(np.asarray(self.model(np.asarray(frame)), np.float32))
      except DepthError as e:  # the pipeline records a CurationError of the depth source and drops the clip
        raise CurationError(f"metric depth failed: {e}", source=video_id, frame=int(frame_indices[t])) from None
    return np.stack(out)


def _re10k_pose_files(root: Path) -> dict[str, Path]:
  from camjax.data.sources import re10k_pose_files  # pylint: disable=import-outside-toplevel
  return {p.stem: p for p in re10k_pose_files(root)}


def align_re10k(root, depth: MetricDepth, *, out=None, quantile: float = 0.02, reference: int = 0,
                score_frames: Sequence[int] | None = None, min_points: int = 20, **triangulation) -> list[dict]:
  """RealCam-I2V alignment of every RealEstate10K-layout clip under `root` (layouts of `camjax.data.sources`:
  `pose_files/<id>.txt` + `videos/<id>.mp4`, `<id>.txt` beside `<id>.mp4` or beside a frame folder `<id>/`).

  Each clip is aligned with `align_clip` (cameras from the pose file at the frames' size), then the dataset filter
  `keep_by_factor` runs over the clips that aligned. With `out`, every kept clip's pose file is written to
  `<out>/<id>.txt` with its translations multiplied by the clip's factor (same format, URL and timestamps; the
  intrinsics untouched), and `<out>/metric_scale.json` lists every clip's factors and fate.

  Args:
    root: folder of clips.
    depth: the metric depth model (`camjax.depth.MetricDepth`).
    out: output folder (None: nothing is written).
    quantile, reference, score_frames, min_points: see `keep_by_factor` and `align_clip`; other keyword arguments go
      to `triangulate_clip`.

  Returns:
    Per clip: `{"clip", "kept", "reason", **ClipAlignment.stats()}` (a clip that could not be aligned has `kept`
    False and the reason).

  Raises:
    RecordError / CameraError: no pose file, malformed pose files, frame/camera count mismatch (from the reader).
  """
  from camjax.data.sources import re10k_records

  root = Path(root)
  pose_files = _re10k_pose_files(root)
  rows, aligned = [], []
  for record in re10k_records(root):
    stem = record.clip_id.removeprefix("re10k-")
    cams = g.Cameras.create(record.w2c, record.K, height=record.height, width=record.width)
    try:
      a = align_clip(record.frames, cams, depth, reference=reference, score_frames=score_frames,
                     min_points=min_points, **triangulation)
    except (CurationError, DepthError) as e:
      rows.append({"clip": stem, "kept": False, "reason": f"alignment failed: {e}"})
      continue
    rows.append({"clip": stem, "kept": True, "reason": "", **a.stats()})
    aligned.append(len(rows) - 1)
  keep = keep_by_factor([rows[i]["frame_factors"] for i in aligned], quantile) if aligned else []
  for i, k in zip(aligned, keep):
    if not k:
      rows[i].update(kept=False, reason=f"frame factors in the outer {quantile:.0%} of the dataset")
  if out is not None:
    _write_aligned(Path(out), pose_files, rows)
  return rows


def _write_aligned(out: Path, pose_files: dict[str, Path], rows: list[dict]) -> None:
  from camjax.data.sources import re10k_url  # pylint: disable=import-outside-toplevel
  out.mkdir(parents=True, exist_ok=True)
  for row in rows:
    if not row["kept"]:
      continue
    src = pose_files[row["clip"]]
    cams = g.read_re10k(src)  # at the original size, so write_re10k reproduces the normalised intrinsics
    url = re10k_url(src)
    g.write_re10k(out / src.name, cams.scale_translation(row["factor"]), url=url,
                  with_timestamps=cams.timestamps is not None)
  (out / "metric_scale.json").write_text(json.dumps(rows, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
  """`python -m camjax.data.curate.metric --root DIR --depth_model DIR --out DIR`: `align_re10k` with Depth Anything
  V2 metric from a local folder; prints one line per clip."""
  import argparse
  import sys

  from camjax.depth import DepthAnythingMetric
  from camjax.errors import CamjaxError

  p = argparse.ArgumentParser(prog="python -m camjax.data.curate.metric", description=main.__doc__)
  p.add_argument("--root", required=True, help="folder of RealEstate10K-layout clips")
  p.add_argument("--depth_model", required=True, help="local Depth Anything V2 metric checkpoint folder")
  p.add_argument("--device", default="cpu", help="torch device of the depth model")
  p.add_argument("--out", required=True, help="folder for the scaled pose files and metric_scale.json")
  p.add_argument("--quantile", type=float, default=0.02)
  p.add_argument("--num_threads", type=int, default=1)
  args = p.parse_args(argv)
  try:
    rows = align_re10k(args.root, DepthAnythingMetric(args.depth_model, device=args.device), out=args.out,
                       quantile=args.quantile, num_threads=args.num_threads)
  except CamjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for r in rows:
    print(f"{r['clip']}: " + (f"factor {r['factor']:.4g}" if "factor" in r else "") + ("" if r["kept"] else
                                                                                       f" dropped ({r['reason']})"))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
