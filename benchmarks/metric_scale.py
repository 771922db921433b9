"""RealCam-I2V metric scene-scale alignment and metric depth: the figures of docs/realcam.md.

Run: `python benchmarks/metric_scale.py [--scenes 10] [--depth_anything DIR] [--device cuda] [--skip_re10k]`.
Prints one line per figure:

  1. procedural scenes (`camjax.data.curate.validation.render_clip`), cameras rescaled by a random factor, rendered
     depth as the metric depth, pycolmap triangulation with the rescaled cameras: factor error (static scenes and
     scenes with moving objects);
  2. rgbd_slambook2 `kinect_5frames_posed` (real Kinect frames, metric camera-to-world poses): (a) the ground-truth
     poses with their translations divided by a random factor, triangulated, factor from the sensor depth; (b) COLMAP's
     global mapper (intrinsics fixed) on the 5 frames, its scale from the sensor depth vs the Sim(3) fit of its
     camera centres to the ground truth; also CameraCtrl II eq. 2 (`scale.calibrate_clip`) on the same cameras, and
     the error of the aligned sparse SfM depth against the sensor (the only non-sensor depth available here);
  3. the shared RGB-D frames: sensor depth statistics, and with `--depth_anything DIR` Depth Anything V2 metric's
     errors against the sensor (without weights these figures wait);
  4. real RealEstate10K clips (../shared/data/re10k_clips): the triangulation half of the alignment (no metric depth
     exists for them here): points in the reference frame, reprojection error, time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from camjax import depth as dp
from camjax import geometry as g
from camjax.data.curate import metric, scale, validation
from camjax.geometry import se3

DATA = Path(os.environ.get("CAMJAX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TRAJECTORIES = ["truck_right:0.8+tilt_up:6", "dolly_in:1.0+pan_left:10", "orbit_left:20", "truck_left:0.6+dolly_in:0.6",
                "pedestal_up:0.5+pan_right:12", "dolly_out:0.8+tilt_down:8"]


def machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  return f"{cpu}, {os.cpu_count()} cores (load {load:.1f})"


# ------------------------------------------------------------------------------------------- 1. procedural
def procedural(num_scenes: int) -> None:
  for moving in (False, True):
    errors, worst_frame, seconds = [], [], []
    for k in range(num_scenes):
      rng = np.random.default_rng(100 + k)
      traj = TRAJECTORIES[k % len(TRAJECTORIES)]
      clip = validation.render_clip(100 + k, traj, num_frames=8, height=120, width=160, moving=moving)
      s = float(np.exp(rng.uniform(np.log(0.05), np.log(20))))
      start = time.perf_counter()
      try:
        a = metric.align_clip(clip.frames, clip.cameras.scale_translation(1 / s), dp.RenderedDepth.from_clip(clip))
      except Exception as e:  # report and go on: a benchmark prints every scene
        print(f"  procedural scene {100 + k} ({traj}, moving={moving}): failed: {e}")
        continue
      seconds.append(time.perf_counter() - start)
      errors.append(a.factor / s - 1)
      worst_frame.append(np.max(np.abs(np.array(a.frame_factors) / s - 1)))
      print(f"  scene {100 + k} {traj:30s} moving={moving!s:5s} true {s:8.4f}  alpha {a.factor:8.4f}  "
            f"error {100 * errors[-1]:+.2f}%  worst frame {100 * worst_frame[-1]:.2f}%  "
            f"points/frame {int(np.mean(a.num_points))}  reproj {a.mean_reprojection_error:.2f}px")
    if errors:
      print(f"procedural ({'moving objects' if moving else 'static'}, {len(errors)}/{num_scenes} scenes, 8 frames "
            f"160x120): |alpha error| max {100 * np.max(np.abs(errors)):.2f}% "
            f"mean {100 * np.mean(np.abs(errors)):.2f}%; worst single-frame factor {100 * np.max(worst_frame):.2f}%; "
            f"{np.mean(seconds):.1f} s/clip")


# -------------------------------------------------------------------------------------------- 2. slambook2
def kinect_frames(size: tuple[int, int] | None = None):
  """(frames uint8 [5, H, W, 3], sensor depth [5, H, W] metres, ground-truth Cameras), optionally resized."""
  root = DATA / "rgbd_slambook2/kinect_5frames_posed"
  rows = np.loadtxt(root / "pose.txt")
  gt = g.Cameras.from_c2w(se3.make_pose(se3.quaternion_to_matrix(rows[:, 3:7]), rows[:, :3]),
                          g.intrinsics(518.0, 519.0, 325.5, 253.5), height=480, width=640)
  sensor = dp.SensorDepth([root / f"color/{i}.png" for i in range(1, 6)],
                          [root / f"depth/{i}.pgm" for i in range(1, 6)], "mm")
  frames = np.stack([sensor.color(i) for i in range(5)])
  depth = np.stack([sensor.depth(i) for i in range(5)])
  if size is not None:
    h, w = size
    frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
    depth = np.stack([cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST) for d in depth])
    gt = gt.resize(h, w)
  return frames, depth, gt


def sparse_depth_error(a: metric.ClipAlignment, points: metric.SfMPoints, depth: np.ndarray) -> dict:
  """Errors of the aligned SfM depth (alpha z) against the sensor at the reference frame's points."""
  cams = a.cameras.numpy()
  t = a.reference
  uv, z = scale.points_depth(points.frame(t) * a.factor, cams.w2c[t], cams.K[t], *depth.shape[1:])
  gt = depth[t][uv[:, 1].astype(int), uv[:, 0].astype(int)]
  return dp.depth_errors(z, gt)


def slambook(seeds: int) -> None:
  for size in (None, (240, 320)):
    frames, depth, gt = kinect_frames(size)
    H, W = frames.shape[1:3]
    s = 2.9
    start = time.perf_counter()
    a = metric.align_clip(frames, gt.scale_translation(1 / s), depth, min_points=5)
    print(f"slambook2 kinect {W}x{H}, ground-truth poses / {s}: alpha error {100 * (a.factor / s - 1):+.2f}%, frame "
          f"factors {np.round(100 * (np.array(a.frame_factors) / s - 1), 1).tolist()}% (points {a.num_points}, "
          f"reproj {a.mean_reprojection_error:.2f}px, {time.perf_counter() - start:.1f} s)")
    for seed in range(seeds):
      start = time.perf_counter()
      sfm = g.sfm.estimate_cameras(frames, gt.K[0], mapper="global", seed=seed)
      t_sfm = time.perf_counter() - start
      idx = sfm.frame_indices
      truth = g.umeyama(sfm.cameras.centers, gt.centers[idx]).scale
      points = metric.triangulate_clip(frames[idx], sfm.cameras, seed=seed)
      a = metric.align_clip(frames[idx], sfm.cameras, depth[idx], points=points)
      cc2 = scale.calibrate_clip(frames[idx], sfm.cameras, depth[idx])
      e = sparse_depth_error(a, points, depth[idx])
      per_frame = np.round(100 * (np.array(a.frame_factors) / truth - 1), 1).tolist()
      print(f"slambook2 kinect {W}x{H}, COLMAP global SfM seed {seed} ({len(idx)}/5 frames, reproj "
            f"{sfm.mean_reprojection_error:.2f}px, {t_sfm:.1f} s): RealCam alpha vs Sim(3) scale "
            f"{100 * (a.factor / truth - 1):+.2f}% (frames {per_frame}%,"
            f" points {a.num_points}); CameraCtrl II eq. 2 {100 * (cc2.scale / truth - 1):+.2f}%; aligned sparse SfM "
            f"depth vs sensor: AbsRel {e['abs_rel']:.3f} delta1 {e['delta1']:.3f} ({e['num_pixels']} points)")


# ----------------------------------------------------------------------------------------- 3. RGB-D frames
def rgbd_frames():
  """(name, colour path, depth path, depth format) of every shared real RGB-D frame."""
  o3d, book = DATA / "rgbd_open3d", DATA / "rgbd_slambook2"
  out = [("open3d TUM", o3d / "TUM_color.png", o3d / "TUM_depth.png", "tum"),
         ("open3d NYU", o3d / "NYU_color.ppm", o3d / "NYU_depth.pgm", "nyu"),
         ("open3d SUN", o3d / "SUN_color.jpg", o3d / "SUN_depth.png", "sun")]
  desk = book / "tum_fr1_desk_pair"
  out += [(f"slambook2 TUM fr1_desk {i}", desk / f"{i}.png", desk / f"{i}_depth.png", "tum") for i in (1, 2)]
  out += [(f"slambook2 kinect {i}", book / f"kinect_5frames_posed/color/{i}.png",
           book / f"kinect_5frames_posed/depth/{i}.pgm", "mm") for i in range(1, 6)]
  return out


def rgbd(depth_anything: str | None, device: str) -> None:
  model = dp.DepthAnythingMetric(depth_anything, device=device) if depth_anything else None
  totals = []
  for name, color, depth_path, fmt in rgbd_frames():
    sensor = dp.SensorDepth([color], [depth_path], fmt)
    d = sensor.depth(0)
    valid = d[d > 0]
    line = (f"rgbd {name:26s} {d.shape[1]}x{d.shape[0]} sensor: valid {100 * valid.size / d.size:.0f}%, "
            f"median {np.median(valid):.2f} m, range {np.percentile(valid, 1):.2f}-{np.percentile(valid, 99):.2f} m")
    if model is not None:
      start = time.perf_counter()
      pred = model(sensor.color(0))
      e = dp.depth_errors(pred, d)
      totals.append(e)
      line += (f"; Depth Anything V2 metric: AbsRel {e['abs_rel']:.3f} RMSE {e['rmse']:.3f} m delta1 "
               f"{e['delta1']:.3f} ({time.perf_counter() - start:.2f} s)")
    print(line)
  if model is None:
    print("rgbd: learned metric depth (Depth Anything V2 metric) figures wait for weights: pass --depth_anything DIR")
  else:
    print(f"rgbd mean over {len(totals)} frames: AbsRel {np.mean([e['abs_rel'] for e in totals]):.3f} RMSE "
          f"{np.mean([e['rmse'] for e in totals]):.3f} m delta1 {np.mean([e['delta1'] for e in totals]):.3f}")


# ---------------------------------------------------------------------------------------------- 4. RE10K
def re10k() -> None:
  from camjax.data.sources import re10k_records

  for record in re10k_records(DATA / "re10k_clips"):
    cams = g.Cameras.create(record.w2c, record.K, height=record.height, width=record.width)
    start = time.perf_counter()
    points = metric.triangulate_clip(record.frames, cams)
    ref = points.frame(0)
    uv, z = scale.points_depth(ref, cams.w2c[0], cams.K[0], record.height, record.width)
    print(f"re10k {record.clip_id:28s} {len(record.frames):2d} frames {record.width}x{record.height}: "
          f"{len(points.xyz)} points, {len(z)} in frame 0 (SfM depth {np.percentile(z, 10):.2f}-"
          f"{np.percentile(z, 90):.2f}), reproj {points.mean_reprojection_error:.2f}px, "
          f"{time.perf_counter() - start:.1f} s")
  print("re10k: the factors of these clips wait for a metric depth model (no depth exists for them here)")


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--scenes", type=int, default=10)
  p.add_argument("--seeds", type=int, default=3, help="SfM seeds on the slambook2 frames")
  p.add_argument("--depth_anything", default=None, help="local Depth Anything V2 metric checkpoint folder")
  p.add_argument("--device", default="cpu")
  p.add_argument("--skip_re10k", action="store_true")
  args = p.parse_args(argv)
  print(f"machine: {machine()}")
  procedural(args.scenes)
  slambook(args.seeds)
  rgbd(args.depth_anything, args.device)
  if not args.skip_re10k:
    re10k()


if __name__ == "__main__":
  np.set_printoptions(precision=4)
  main()
