"""Real-data ingest: RealEstate10K, NeRF `transforms.json` and COLMAP folders -> camjax clip records -> shards.

    python -m camjax.data.sources re10k --root ../shared/data/re10k_clips --out DIR
    python -m camjax.data.sources nerf --transforms fox/transforms.json --out DIR --size 480 270
    python -m camjax.data.sources colmap --sparse sparse/0 --images images --out DIR

RealEstate10K layouts: `pose_files/<id>.txt` + `videos/<id>.mp4` (as in ../shared/data/re10k_clips), `<id>.txt`
beside `<id>.mp4`, or `<id>.txt` beside a folder `<id>/` of frames (the standard download layout: one image per
timestamp, sorted by name). Videos are decoded with mediapy (ffmpeg from imageio-ffmpeg). Pose files without frames
are reported and skipped; a frame/camera count mismatch raises `RecordError`.

The CLI writes a provenance file with the dataset (its arguments and a listing of the input files: relative path,
size, mtime): a re-run with the same arguments and unchanged inputs reuses the dataset, any other refuses and names
what differs unless given `--overwrite` (which replaces the dataset atomically).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from camjax import geometry as g
from camjax.data.pipeline import resize_frames
from camjax.data.records import ClipRecord, RecordError
from camjax.media import read_video

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _read_images(paths) -> np.ndarray:
  import mediapy

  frames = []
  for p in paths:
    try:
      frames.append(np.asarray(mediapy.read_image(str(p)))[..., :3])
    except Exception as e:  # PIL raises several types on corrupt images
      raise RecordError(Path(p).stem, f"cannot read image {p} ({e})") from None
  if len({f.shape for f in frames}) != 1:
    raise RecordError(Path(paths[0]).parent.name, "images have different sizes")
  return np.stack(frames).astype(np.uint8)


def _find_frames(pose_file: Path) -> np.ndarray | None:
  stem, root = pose_file.stem, pose_file.parent
  for video in (root.parent / "videos" / f"{stem}.mp4", root / f"{stem}.mp4", root / "videos" / f"{stem}.mp4"):
    if video.is_file():
      return read_video(video)
  for folder in (root / stem, root.parent / "frames" / stem):
    if folder.is_dir():
      images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
      if images:
        return _read_images(images)
  return None


def _is_number(token: str) -> bool:
  try:
    float(token)
  except ValueError:
    return False
  return True


def is_re10k_pose_file(path) -> bool:
  """Whether a `.txt` file is a RealEstate10K pose file rather than other text shipped beside the clips (a
  LICENSE.txt, a README.txt): its first content line is a URL, or one of its first 20 content lines is a pose row
  (18 or 19 tokens, the first a number). A pose file with garbled rows still counts (the reader then names the bad
  line); an unreadable file counts too (the reader then raises)."""
  try:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
      lines = [line.strip() for _, line in zip(range(200), f)]
  except OSError:
    return True
  content = [line for line in lines if line and not line.startswith("#")][:20]
  if content and content[0].lower().startswith(("http://", "https://")):
    return True
  return any(len(tokens) in (18, 19) and _is_number(tokens[0]) for tokens in (line.split() for line in content))


def re10k_url(path) -> str | None:
  """The URL line of a RealEstate10K pose file (its first line when that is not a pose row), or None."""
  lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
  first = lines[0].strip() if lines else ""
  return None if not first or _is_number(first.split()[0]) else first


def re10k_pose_files(root) -> list[Path]:
  """Sorted RealEstate10K pose files under `root` (`*.txt` that `is_re10k_pose_file`; other text files are logged
  and skipped)."""
  out = []
  for path in sorted(Path(root).rglob("*.txt")):
    if is_re10k_pose_file(path):
      out.append(path)
    else:
      log.info("%s: not a RealEstate10K pose file (no URL line, no pose row), skipped", path)
  return out


def re10k_records(root, *, fps: float = 8.0) -> Iterator[ClipRecord]:
  """Records of every RealEstate10K pose file under `root` that has frames (see the module docstring).

  Cameras follow the aspect fix for the frames' size (`read_re10k(path, image_size=frames' H, W)`).

  Raises:
    RecordError: frames and cameras disagree in count; CameraError: a malformed pose file.
  """
  root = Path(root)
  pose_files = re10k_pose_files(root)
  if not pose_files:
    raise RecordError(str(root), "no RealEstate10K pose files (*.txt with a URL line or pose rows) found")
  for pose_file in pose_files:
    frames = _find_frames(pose_file)
    if frames is None:
      log.warning("%s: no video or frame folder, skipped", pose_file)
      continue
    cams = g.read_re10k(pose_file, image_size=frames.shape[1:3])
    if len(frames) != cams.num_frames:
      raise RecordError(pose_file.stem, f"{len(frames)} frames but {cams.num_frames} cameras in {pose_file}")
    url = re10k_url(pose_file) or ""
    yield ClipRecord(clip_id=f"re10k-{pose_file.stem}", source=f"re10k:{url}" if url.startswith("http") else "re10k",
                     scene_id=pose_file.stem.split("_")[0], frames=frames, K=cams.K, w2c=cams.w2c,
                     height=cams.height, width=cams.width, fps=fps, has_camera=True)


def _resized(frames: np.ndarray, cams: g.Cameras, size) -> tuple[np.ndarray, g.Cameras]:
  if size is None:
    return frames, cams
  height, width = size
  return resize_frames(frames, height, width), cams.resize(height, width)


def nerf_records(transforms, *, size: tuple[int, int] | None = None, fps: float = 1.0) -> Iterator[ClipRecord]:
  """One record from a NeRF `transforms.json` and its images (OpenGL poses converted to OpenCV).

  Args:
    transforms: the JSON file; `file_path`s are relative to its folder.
    size: optional `(height, width)` to resize to (intrinsics follow).
  """
  transforms = Path(transforms)
  cams, paths = g.read_nerf_transforms(transforms, with_file_paths=True)
  files = []
  for p in paths:
    f = transforms.parent / p
    if not f.suffix and not f.exists():
      f = next((f.with_suffix(s) for s in IMAGE_SUFFIXES if f.with_suffix(s).exists()), f)
    files.append(f)
  frames = _read_images(files)
  if frames.shape[1:3] != cams.image_size:
    raise RecordError(transforms.parent.name, f"images are {frames.shape[1:3]}, transforms.json says {cams.image_size}")
  frames, cams = _resized(frames, cams, size)
  yield ClipRecord(clip_id=f"nerf-{transforms.parent.name}", source=f"nerf:{transforms}", scene_id=transforms.parent.name,
                   frames=frames, K=cams.K, w2c=cams.w2c, height=cams.height, width=cams.width, fps=fps)


def colmap_records(sparse, images, *, size: tuple[int, int] | None = None, fps: float = 1.0) -> Iterator[ClipRecord]:
  """One record from a COLMAP sparse model and its image folder (registered images, sorted by name)."""
  cams, names = g.read_colmap(sparse, with_names=True)
  frames = _read_images([Path(images) / n for n in names])
  if frames.shape[1:3] != cams.image_size:
    raise RecordError(Path(sparse).name, f"images are {frames.shape[1:3]}, the model says {cams.image_size}")
  frames, cams = _resized(frames, cams, size)
  yield ClipRecord(clip_id=f"colmap-{Path(images).resolve().parent.name}", source=f"colmap:{sparse}",
                   scene_id=Path(images).resolve().parent.name, frames=frames, K=cams.K, w2c=cams.w2c,
                   height=cams.height, width=cams.width, fps=fps)


def re10k_provenance(root, *, fps: float = 8.0) -> dict:
  """The provenance of a RealEstate10K ingest (`shards.make_provenance`): the resolved root, `fps` and a listing
  (relative path, size, mtime) of every file under the root.

  Raises:
    DataError: `root` does not exist.
  """
  from camjax.data.shards import input_listing, make_provenance

  return make_provenance("camjax.data.sources re10k", dict(root=str(Path(root).resolve()), fps=float(fps)),
                         input_listing(root))


def ingest_provenance(args) -> dict:
  """The provenance of the CLI's ingest `args` (the parsed arguments of `main`)."""
  from camjax.data.shards import input_listing, make_provenance

  if args.kind == "re10k":
    return re10k_provenance(args.root, fps=args.fps)
  size = list(args.size) if args.size else None
  if args.kind == "nerf":
    transforms = Path(args.transforms).resolve()
    return make_provenance("camjax.data.sources nerf", dict(transforms=str(transforms), size=size),
                           input_listing(transforms.parent))
  return make_provenance("camjax.data.sources colmap", dict(sparse=str(Path(args.sparse).resolve()),
                                                            images=str(Path(args.images).resolve()), size=size),
                         input_listing(args.sparse, args.images))


def main(argv=None) -> None:
  """The CLI (see the module docstring). Exits with status 1 and what differs when `--out` holds a dataset made from
  other arguments or input files (without `--overwrite`), or with the error on bad input (missing folder, corrupt
  clip or pose file)."""
  import argparse

  from camjax.data.shards import build_dataset
  from camjax.errors import CamjaxError

  parser = argparse.ArgumentParser(prog="python -m camjax.data.sources", description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="kind", required=True)
  p = sub.add_parser("re10k")
  p.add_argument("--root", required=True)
  p.add_argument("--fps", type=float, default=8.0)
  p = sub.add_parser("nerf")
  p.add_argument("--transforms", required=True)
  p.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"))
  p = sub.add_parser("colmap")
  p.add_argument("--sparse", required=True)
  p.add_argument("--images", required=True)
  p.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"))
  for p in sub.choices.values():
    p.add_argument("--out", required=True, help="dataset root folder (TFDS data_dir)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset at --out made from other arguments or input files (atomically)")
  args = parser.parse_args(argv)
  if args.kind == "re10k":
    records = lambda: re10k_records(args.root, fps=args.fps)  # noqa: E731
  elif args.kind == "nerf":
    records = lambda: nerf_records(args.transforms, size=args.size)  # noqa: E731
  else:
    records = lambda: colmap_records(args.sparse, args.images, size=args.size)  # noqa: E731
  try:
    path, reused = build_dataset(records, args.out, ingest_provenance(args), overwrite=args.overwrite,
                                 description=f"camjax ingest ({args.kind})")
  except CamjaxError as e:  # a stale dataset, a missing input, a corrupt clip or pose file
    parser.exit(1, f"{parser.prog}: error: {e}\n")
  print(f"reusing {path}: made from the same arguments and input files" if reused else f"wrote {path}")


if __name__ == "__main__":
  main()
