"""Track2View re-rendering of a real video along a new camera trajectory (`python -m camjax.rerender`).

    python -m camjax.rerender --workdir W --video SRC.mp4 --cameras SRC_POSES.txt --trajectory orbit_left:20 --out D

`W` is a Track2View run (`python -m camjax.main --config=configs/track2view.py`). The source video and its cameras
(RealEstate10K `.txt`, NeRF `transforms.json`, TUM / KITTI by extension) are cut to the run's window (`--start`,
`--stride`), resized and centre-cropped to its size (intrinsics moved the same way). Then:

1. 3D tracks of the source (`camjax.data.tracks.track_video`: OpenCV LK with a forward-backward check, lifted with
   `--depth` maps when given, else triangulated with the source cameras: a static scene).
2. Target cameras: `--trajectory` (a preset or a pose file) relative to the source's first camera, so both views share
   frame 0, as in training. Preset translations are in units of the scene: they are scaled by the median depth of
   the source's tracks in frame 0 divided by 2 (a preset orbit then circles the median depth point), unless
   `--metres_per_unit` gives the scale.
3. Target tracks: the source 3D tracks reprojected with the target cameras (`camjax.data.pairs.target_tracks_from_source`;
   no occlusion knowledge, as at training time).
4. The trained model generates the target view; `D` receives `source.mp4`, `generated.mp4`, `side_by_side.mp4`
   (source | generated), `target_cameras.txt` and `source_cameras.txt` (RealEstate10K format), `frusta.png` (both
   trajectories), `tracks.npz` (the conditioning tracks) and `summary.json`. `D` is written beside itself and
   renamed into place, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from camjax.errors import CamjaxError
from camjax.io import replace_dir


class RerenderError(CamjaxError):
  """A re-rendering request that cannot run: missing or unreadable video / cameras, a clip shorter than the window,
  a run that is not Track2View, an output folder that is not ours."""


def read_video(path) -> np.ndarray:
  """`uint8 [T, H, W, 3]` frames of a video file or a folder of images (sorted by name).

  Raises:
    RerenderError: missing, empty or unreadable.
  """
  path = Path(path)
  if not path.exists():
    raise RerenderError(f"--video {path}: not found")
  try:
    if path.is_dir():
      from PIL import Image  # pylint: disable=import-outside-toplevel
      files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
      frames = np.stack([np.asarray(Image.open(p).convert("RGB"), np.uint8) for p in files]) if files else None
    else:
      import mediapy  # pylint: disable=import-outside-toplevel

      from camjax import media  # pylint: disable=import-outside-toplevel
      media._setup_ffmpeg()  # pylint: disable=protected-access
      frames = np.asarray(mediapy.read_video(str(path)), np.uint8)[..., :3]
  except (OSError, ValueError, RuntimeError) as e:
    raise RerenderError(f"--video {path}: not a readable video or image folder ({e})") from None
  if frames is None or frames.ndim != 4 or len(frames) == 0:
    raise RerenderError(f"--video {path}: no frames")
  return frames


def read_cameras(path, image_size: tuple[int, int]):
  """Source cameras from a pose file (by extension as `camjax.explore`: `.json` NeRF, `.tum`, `.kitti`, else
  RealEstate10K), with intrinsics for `image_size = (H, W)`.

  Raises:
    RerenderError: missing file or invalid poses.
  """
  from camjax.geometry import formats  # pylint: disable=import-outside-toplevel
  from camjax.geometry.errors import CameraError  # pylint: disable=import-outside-toplevel
  path = Path(path)
  if not path.is_file():
    raise RerenderError(f"--cameras {path}: not found")
  try:
    if path.suffix == ".json":
      cams = formats.read_nerf_transforms(path)
      return cams.resize(*image_size) if (cams.height, cams.width) != tuple(image_size) else cams
    if path.suffix in (".tum", ".kitti"):
      raise RerenderError(f"--cameras {path}: TUM / KITTI files carry no intrinsics; use RealEstate10K or NeRF")
    return formats.read_re10k(path, image_size=image_size)
  except CameraError as e:
    raise RerenderError(f"--cameras {path}: {e}") from None


def source_window(frames: np.ndarray, cameras, *, num_frames: int, height: int, width: int, start: int = 0,
                  stride: int = 1):
  """`(frames uint8 [T, height, width, 3], Cameras [T])`: frames `start, start + stride, ...` resized to cover the
  size and centre-cropped, as the training pipeline does.

  Raises:
    RerenderError: frames and cameras disagree in count, or the clip is too short for the window.
  """
  from camjax.data.pipeline import resize_center_crop_window  # pylint: disable=import-outside-toplevel
  from camjax.data.records import ClipRecord  # pylint: disable=import-outside-toplevel
  if len(frames) != cameras.num_frames:
    raise RerenderError(f"the video has {len(frames)} frames but the pose file {cameras.num_frames} cameras")
  indices = start + stride * np.arange(num_frames)
  if indices[-1] >= len(frames):
    raise RerenderError(f"the clip has {len(frames)} frames; the run's window needs {num_frames} frames every "
                        f"{stride} from frame {start} (frame {indices[-1]})")
  record = ClipRecord(clip_id="source", K=cameras.K, w2c=cameras.w2c, height=cameras.height, width=cameras.width,
                      frames=frames)
  out = resize_center_crop_window(record, indices, height, width)
  return out["frames"], out["cameras"]


def target_cameras(trajectory: str, source, *, scale: float):
  """`Cameras [T]` of the target view in the source's world: `trajectory` relative to the source's first camera
  (shared frame 0), translations multiplied by `scale` (scene units per preset metre), the source's intrinsics.

  Raises:
    RerenderError: an unknown preset or unreadable pose file.
  """
  from camjax.explore import ExplorationError, pose_file  # pylint: disable=import-outside-toplevel
  from camjax.geometry import trajectories  # pylint: disable=import-outside-toplevel
  from camjax.geometry.errors import CameraError  # pylint: disable=import-outside-toplevel
  T = source.num_frames
  try:
    path = pose_file(trajectory)
    if path is None:
      rel = trajectories.preset(trajectory, T, height=source.height, width=source.width, K=source.K[0])
    else:
      rel = read_cameras(path, (source.height, source.width)).relative(0)
      if rel.num_frames != T:
        rel = trajectories.resample(rel, T)
  except (CameraError, ExplorationError) as e:
    raise RerenderError(f"--trajectory {trajectory!r}: {e}") from None
  w2c_rel = np.array(rel.w2c, np.float64)
  w2c_rel[:, :3, 3] *= scale
  w2c = w2c_rel @ np.asarray(source.w2c[0], np.float64)
  return source.replace(w2c=w2c)


def rerender(workdir, video, cameras, trajectory: str, out, *, start: int = 0, stride: int = 1, depth=None,
             metres_per_unit: float | None = None, caption: str = "", num_queries: int | None = None, seed: int = 0,
             step: int | None = None) -> dict:
  """The whole command (module docstring); returns the summary written to `out/summary.json`.

  Raises:
    RerenderError, camjax.data.tracks.TrackingError, camjax.methods.MethodError: bad inputs, named.
  """
  import jax  # pylint: disable=import-outside-toplevel

  from camjax import methods  # pylint: disable=import-outside-toplevel
  from camjax.data import tracks as trk  # pylint: disable=import-outside-toplevel
  from camjax.data.pairs import target_tracks_from_source  # pylint: disable=import-outside-toplevel
  from camjax.explore import check_out_dir  # pylint: disable=import-outside-toplevel
  from camjax.geometry.formats import write_re10k  # pylint: disable=import-outside-toplevel
  from camjax.geometry.plot import plot_trajectories  # pylint: disable=import-outside-toplevel

  out = Path(out)
  check_out_dir(out)
  config, mesh, model, weights = checkpoints_load(workdir, step)
  if "src_frames" not in model.method.batch_keys(config)[0]:
    raise RerenderError(f"{workdir} is a {config.method!r} run; re-rendering needs a Track2View run "
                        "(configs/track2view.py)")
  d = config.data
  T, H, W = int(d.num_frames), int(d.height), int(d.width)
  frames = read_video(video)
  src_frames, src_cams = source_window(frames, read_cameras(cameras, frames.shape[1:3]), num_frames=T, height=H,
                                       width=W, start=start, stride=stride)
  n = int(num_queries or d.num_queries)
  depth_maps = None if depth is None else np.load(depth)[start:start + stride * T:stride]
  tracks = trk.track_video(src_frames, src_cams, depth_maps, num_queries=n)
  src_depth0 = tracks.depth[:, 0][tracks.valid[:, 0]]
  if metres_per_unit is None:
    all_depth = tracks.depth[tracks.valid]
    median = float(np.median(src_depth0 if len(src_depth0) else all_depth)) if all_depth.size else 2.0
    scale = median / 2.0
  else:
    scale = 1.0 / float(metres_per_unit)
  tgt_cams = target_cameras(trajectory, src_cams, scale=scale)
  # Everything relative to the shared first camera, as the training pairs are (`paired_example(reference="first")`).
  ref = np.asarray(src_cams.w2c[0], np.float64)
  src_rel, tgt_rel = src_cams.relative(ref), tgt_cams.relative(ref)
  points = tracks.points_world.astype(np.float64) @ ref[:3, :3].T + ref[:3, 3]
  tgt_xy, tgt_depth, tgt_valid = target_tracks_from_source(points, tracks.valid, tgt_rel)
  host = {"src_frames": src_frames, "tgt_frames": np.zeros_like(src_frames),
          "src_K": src_rel.K, "src_w2c": src_rel.w2c, "tgt_K": tgt_rel.K, "tgt_w2c": tgt_rel.w2c,
          "src_xy": tracks.xy, "tgt_xy": tgt_xy, "src_depth": tracks.depth, "tgt_depth": tgt_depth,
          "src_valid": tracks.valid & tracks.tracked, "tgt_valid": tgt_valid}
  host = {k: np.asarray(v, np.float32 if np.asarray(v).dtype.kind == "f" else np.asarray(v).dtype)[None]
          for k, v in host.items()}
  host["caption"] = np.array([caption])
  batch = methods.host_batch(host, model.tokenizer, model.method, config)
  static = model.static
  fn = jax.jit(lambda w, batch, rng: static.method.sample(methods.merge(static, w), static, batch, rng))
  video_out = methods.generate(weights, fn, batch, mesh, jax.random.key(seed))[0]
  generated = np.round((np.asarray(video_out, np.float32) + 1) * 127.5).clip(0, 255).astype(np.uint8)

  tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    tmp.mkdir(parents=True)
    _write_video(tmp / "source.mp4", src_frames)
    _write_video(tmp / "generated.mp4", generated)
    _write_video(tmp / "side_by_side.mp4", np.concatenate([src_frames, generated], axis=2))
    write_re10k(tmp / "source_cameras.txt", src_cams)
    write_re10k(tmp / "target_cameras.txt", tgt_cams)
    plot_trajectories({"source": src_cams, "target": tgt_cams}, tmp / "frusta.png",
                      title=f"re-rendering along {trajectory}")
    np.savez(tmp / "tracks.npz", **{k: v[0] for k, v in host.items() if k.endswith(("_xy", "_depth", "_valid"))})
    summary = {"workdir": str(Path(workdir).resolve()), "video": str(video), "cameras": str(cameras),
               "trajectory": trajectory, "frames": T, "size": [H, W], "start": start, "stride": stride,
               "tracks": n, "source_valid_fraction": float(host["src_valid"].mean()),
               "target_valid_fraction": float(host["tgt_valid"].mean()), "scene_units_per_preset_metre": scale,
               "depth": "maps" if depth is not None else "triangulated (static scene)"}
    (tmp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    replace_dir(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return summary


def checkpoints_load(workdir, step):
  """`(config, mesh, model, weights)` of a trained run (`camjax.methods.load_run`), as a `RerenderError` when it is
  not one."""
  from camjax import methods  # pylint: disable=import-outside-toplevel
  try:
    return methods.load_run(workdir, step)
  except methods.RunNotFoundError as e:
    raise RerenderError(str(e)) from None


def _write_video(path: Path, video: np.ndarray) -> None:
  import mediapy  # pylint: disable=import-outside-toplevel

  from camjax import media  # pylint: disable=import-outside-toplevel
  media._setup_ffmpeg()  # pylint: disable=protected-access
  mediapy.write_video(path, video, fps=8.0)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m camjax.rerender", description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a Track2View run folder")
  p.add_argument("--video", required=True, help="source video file or folder of frames")
  p.add_argument("--cameras", required=True, help="source pose file (RealEstate10K .txt or NeRF transforms.json)")
  p.add_argument("--trajectory", required=True, help="target trajectory: a preset (e.g. orbit_left:20) or a pose file")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--start", type=int, default=0)
  p.add_argument("--stride", type=int, default=1)
  p.add_argument("--depth", default=None, help="optional .npy [T, H, W] metric depth of the source video's frames")
  p.add_argument("--metres_per_unit", type=float, default=None,
                 help="metres per scene unit for preset translations (default: from the tracks' median depth)")
  p.add_argument("--caption", default="")
  p.add_argument("--num_queries", type=int, default=None)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--step", type=int, default=None)
  args = p.parse_args(argv)
  try:
    summary = rerender(args.workdir, args.video, args.cameras, args.trajectory, args.out, start=args.start,
                       stride=args.stride, depth=args.depth, metres_per_unit=args.metres_per_unit,
                       caption=args.caption, num_queries=args.num_queries, seed=args.seed, step=args.step)
  except CamjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.out}: {summary['frames']} frames at {summary['size'][0]}x{summary['size'][1]}, "
        f"{summary['tracks']} tracks ({summary['depth']}), target tracks valid {summary['target_valid_fraction']:.0%}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
