"""Camera estimation of a frame sequence with pycolmap (the `curate` extra): known intrinsics held fixed, sequential
matching, global (GLOMAP) or incremental mapping.

Measured on real RealEstate10K clips (REFERENCE.md section 4, STACK.md): with intrinsics fixed the global mapper
is reliable, while the incremental mapper can silently converge to a wrong trajectory; with one thread and a fixed
seed runs are reproducible.

Two-view verification uses a 1-pixel RANSAC threshold (`max_error`) instead of COLMAP's 4 pixels. At the sizes of
generated videos (a few hundred pixels) a 4-pixel tolerance lets a homography explain more than 80% of the matches
of a short-baseline pair (floor + far wall), COLMAP then labels the pair planar and decomposes the homography, whose
twin solution puts the translation along the plane normal: a forward dolly came out as a 10 degree pitch with an
upward translation, identically with both mappers (docs/evaluation.md).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from camjax.geometry.cameras import Cameras
from camjax.geometry.errors import CameraError
from camjax.geometry.formats import read_colmap


@dataclasses.dataclass(frozen=True)
class SfMResult:
  """Cameras of the registered frames (`frame_indices` into the input) and the mean reprojection error (pixels);
  `frame_points[i]`: `float64 [N_i, 3]` the 3D points (SfM world and scale) observed in input frame `i` (registered
  frames only; e.g. to give the reconstruction a metric scale from one frame's metric depth)."""

  cameras: Cameras
  frame_indices: np.ndarray
  num_frames: int
  mean_reprojection_error: float
  frame_points: dict = dataclasses.field(default_factory=dict)

  @property
  def success_ratio(self) -> float:
    return len(self.frame_indices) / self.num_frames


def match_sequential(db, *, overlap: int, num_threads: int, max_error: float, seed: int) -> None:
  """COLMAP sequential matching of the images in database `db` (each with the next `overlap`), two-view geometry
  verified by a seeded RANSAC with `max_error` pixels, on the CPU."""
  import pycolmap  # pylint: disable=import-outside-toplevel
  pairing = pycolmap.SequentialPairingOptions()
  pairing.overlap = overlap
  matching = pycolmap.FeatureMatchingOptions()
  matching.num_threads = num_threads
  verification = pycolmap.TwoViewGeometryOptions()
  verification.ransac.max_error = float(max_error)
  verification.ransac.random_seed = int(seed)
  verification.ransac.num_threads = num_threads
  pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing,
                            verification_options=verification, device=pycolmap.Device.cpu)


def estimate_cameras(frames: np.ndarray, K=None, *, mapper: str = "global", seed: int = 0, num_threads: int = 1,
                     overlap: int = 10, max_error: float = 1.0, workdir=None) -> SfMResult:
  """Estimates per-frame cameras of a video.

  Args:
    frames: `uint8 [T, H, W, 3]`.
    K: pixel intrinsics `[3, 3]` of the frames, held fixed (None: COLMAP estimates a shared pinhole camera).
    mapper: "global" (GLOMAP, default) or "incremental".
    seed: random seed of the mapper.
    num_threads: threads for extraction, matching and mapping (1 = reproducible).
    overlap: sequential matching window in frames.
    max_error: RANSAC inlier threshold of the two-view verification, pixels (COLMAP's default is 4; see the module
      docstring). The verification RANSAC is seeded with `seed`.
    workdir: folder for the images and database (default: a temporary folder, removed afterwards).

  Returns:
    `SfMResult` of the largest reconstruction (world frame and scale arbitrary).

  Raises:
    CameraError: no reconstruction could be made, or bad arguments.
  """
  import mediapy
  import pycolmap

  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise CameraError(f"estimate_cameras needs uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
  if mapper not in ("global", "incremental"):
    raise CameraError(f"unknown mapper {mapper!r}: use 'global' or 'incremental'")
  if not max_error > 0:
    raise CameraError(f"max_error must be a positive number of pixels, got {max_error}")
  with tempfile.TemporaryDirectory(dir=workdir) as tmp:
    tmp = Path(tmp)
    (tmp / "images").mkdir()
    for i, frame in enumerate(frames):
      mediapy.write_image(tmp / "images" / f"{i:05d}.png", frame)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    if K is not None:
      K = np.asarray(K, dtype=np.float64)
      reader.camera_params = f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = num_threads
    db = tmp / "database.db"
    pycolmap.extract_features(db, tmp / "images", camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                              extraction_options=extraction, device=pycolmap.Device.cpu)
    match_sequential(db, overlap=overlap, num_threads=num_threads, max_error=max_error, seed=seed)
    fixed = K is not None
    if mapper == "global":
      options = pycolmap.GlobalPipelineOptions()
      options.num_threads = num_threads
      options.random_seed = seed
      options.mapper.num_threads = num_threads
      options.mapper.random_seed = seed
      options.mapper.bundle_adjustment.refine_focal_length = not fixed
      options.mapper.bundle_adjustment.refine_extra_params = False
      recs = pycolmap.global_mapping(db, tmp / "images", tmp / "sparse", options)
    else:
      options = pycolmap.IncrementalPipelineOptions()
      options.num_threads = num_threads
      options.random_seed = seed
      options.ba_refine_focal_length = not fixed
      options.ba_refine_principal_point = False
      options.ba_refine_extra_params = False
      recs = pycolmap.incremental_mapping(db, tmp / "images", tmp / "sparse", options)
  if not recs:
    raise CameraError(f"SfM registered no frame ({len(frames)} frames, {mapper} mapper)")
  rec = max(recs.values(), key=lambda r: r.num_reg_images())
  cams, names = read_colmap(rec, with_names=True)
  return SfMResult(cameras=cams, frame_indices=np.array([int(Path(n).stem) for n in names]),
                   num_frames=len(frames), mean_reprojection_error=float(rec.compute_mean_reprojection_error()),
                   frame_points=observed_points(rec))


def observed_points(rec) -> dict[int, np.ndarray]:
  """`{frame index (the image name's stem): float64 [N, 3] world points it observes}` of a `pycolmap.Reconstruction`'s
  registered images (`[0, 3]` for an image without triangulated observations)."""
  out = {}
  for image in rec.images.values():
    if not image.has_pose:
      continue
    ids = [p.point3D_id for p in image.points2D if p.has_point3D()]
    out[int(Path(image.name).stem)] = np.array([rec.points3D[i].xyz for i in ids], np.float64).reshape(-1, 3)
  return out
