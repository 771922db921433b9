"""Accuracy of the real-video tracking stage (`camjax.data.tracks`) against ground truth; the figures of docs/tracks.md.

Run: `python benchmarks/tracks.py [--shared ../shared/data] [--seeds 8]`. CPU only, about a minute on 2 cores.

1. Procedural scenes (`camjax.data.synthetic`, exact ground truth): LK tracks vs the ground-truth 2D tracks of the
   same surface points (median / p90 end-point error over frames where the point is visible and LK keeps it), the
   fraction of tracks surviving the forward-backward check vs the fraction truly visible at the last frame, the lifted
   3D points (rendered depth) vs the ground-truth points, and the lifted depth vs the ground-truth depth.
2. Procedural pairs (`camjax.data.pairs`): `tracks.paired_tracks` on the two rendered views (rendered depth as the
   depth source) from the SAME queries as the ground-truth construction, target / source pixels vs the ground truth.
3. Real RGB-D (`rgbd_slambook2/kinect_5frames_posed`: 5 real Kinect frames, metric depth, metric poses), full
   640x480: (a) reprojection error of lifted points into later frames vs the LK tracks, (b) depth error of those
   reprojections vs the sensor depth there, (c) FB survival; and the same reprojection check on SIFT matches (the
   floor the data itself sets: pose, depth and calibration errors).
4. Real RealEstate10K clips (`re10k_clips`, 25 frames 576x320, static scenes, no depth): tracks triangulated with the
   given cameras; reprojection error over the observations and held out (triangulated from frames 0-12, reprojected
   into the LK tracks of frames 13-24), fraction triangulated, survival.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np

from camjax import geometry as g
from camjax.data import pairs, synthetic
from camjax.data import tracks as tr

DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def pct(values, q) -> float:
  values = np.asarray(values)
  return float(np.percentile(values, q)) if values.size else float("nan")


def med(values) -> float:
  return pct(values, 50)


def gt_tracks_of_queries(scene, clip, queries):
  """Ground-truth world tracks `[N, T, 3]` of queries `(0, x, y)` at pixel centres of frame 0, their visibility, and
  whether each lies on an object (True) or on the static room (False)."""
  H, W = clip.cameras.image_size
  first = synthetic.render_frame(scene, 0.0, clip.cameras.K[0], clip.cameras.w2c[0], H, W)
  xi, yi = (queries[:, 1] - 0.5).astype(int), (queries[:, 2] - 0.5).astype(int)
  times = np.arange(clip.cameras.num_frames) / clip.fps
  surface = first.surface[yi, xi]
  points = synthetic.track_points(scene, surface, first.local[yi, xi], times)
  return points, synthetic.visibility(points, clip.cameras, clip.depth), surface >= synthetic.FIRST_OBJECT


def procedural_single(seeds, height, width, num_frames, num_queries, config):
  epe, on_object, survive, visible_last, err3d, depth_rel, hidden, seconds = [], [], [], [], [], [], [], 0.0
  for seed in seeds:
    clip, = synthetic.render_scene(seed, num_frames=num_frames, height=height, width=width, num_tracks=0)
    scene = synthetic.random_scene(np.random.default_rng(seed))
    start = time.perf_counter()
    vt = tr.track_video(clip.frames, clip.cameras, clip.depth, num_queries=num_queries, query_frames=(0,),
                        config=config)
    seconds += time.perf_counter() - start
    points, visible, obj = gt_tracks_of_queries(scene, clip, np.concatenate([vt.query_frame[:, None], vt.xy[:, 0]], 1))
    gt_xy, gt_z = pairs.project(points, clip.cameras)
    both = vt.tracked & visible
    epe.append(np.linalg.norm(vt.xy - gt_xy, axis=-1)[both])
    on_object.append(np.broadcast_to(obj[:, None], both.shape)[both])
    survive.append(vt.tracked[:, -1].mean())
    hidden.append((vt.tracked & ~visible).sum() / vt.tracked.sum())
    visible_last.append(visible[:, -1].mean())
    lifted = vt.valid & visible
    err3d.append(np.linalg.norm(vt.points_world - points, axis=-1)[lifted])
    depth_rel.append(np.abs(vt.depth - gt_z)[lifted] / gt_z[lifted])
  epe, on_object = np.concatenate(epe), np.concatenate(on_object)
  err3d, depth_rel = np.concatenate(err3d), np.concatenate(depth_rel)
  print(f"procedural {len(seeds)} scenes {height}x{width}x{num_frames}, <= {num_queries} feature queries on frame 0:")
  for name, m in (("all", np.ones_like(on_object)), ("room (static)", ~on_object), ("objects", on_object)):
    e = epe[m]
    print(f"  LK vs GT 2D, {name}: median {np.median(e):.3f} px, mean {e.mean():.3f}, p90 {pct(e, 90):.2f}, "
          f"> 3 px {np.mean(e > 3):.3f} (n={e.size})")
  print(f"  FB survival at the last frame {np.mean(survive):.2f} (GT visible {np.mean(visible_last):.2f}); tracked "
        f"entries the ground truth says are hidden or outside: {100 * np.mean(hidden):.1f} %")
  print(f"  lifted (rendered depth) vs GT 3D: median {1e3 * np.median(err3d):.1f} mm, "
        f"p90 {1e3 * pct(err3d, 90):.1f} mm; depth error median {100 * np.median(depth_rel):.2f} %, "
        f"p90 {100 * pct(depth_rel, 90):.2f} %")
  print(f"  track_video time {seconds / len(seeds):.2f} s per clip")


def procedural_pairs(seeds, height, width, num_frames, num_queries, config):
  tgt, src, frac = [], [], []
  for seed in seeds:
    pair = pairs.render_pair(seed, num_frames=num_frames, height=height, width=width)
    gt = pairs.paired_tracks(pair, num_queries, np.random.default_rng(seed))
    n = np.arange(gt.num_queries)
    queries = np.concatenate([gt.query_frame[:, None], gt.src_xy[n, gt.query_source_frame]], 1)
    mine = tr.paired_tracks(tr.View(pair.src.frames, pair.src.cameras, pair.src.depth),
                            tr.View(pair.tgt.frames, pair.tgt.cameras, pair.tgt.depth), queries=queries,
                            config=config)
    m = mine.tgt_valid & gt.tgt_valid
    tgt.append(np.linalg.norm(mine.tgt_xy - gt.tgt_xy, axis=-1)[m])
    ms = mine.src_valid & gt.src_valid
    src.append(np.linalg.norm(mine.src_xy - gt.src_xy, axis=-1)[ms])
    frac.append((m.sum() / gt.tgt_valid.sum(), ms.sum() / gt.src_valid.sum()))
  tgt, src, frac = np.concatenate(tgt), np.concatenate(src), np.mean(frac, 0)
  print(f"procedural pairs {len(seeds)} scenes {height}x{width}x{num_frames}, "
        f"the GT construction's {num_queries} queries:")
  print(f"  target px vs GT: median {np.median(tgt):.3f}, p90 {pct(tgt, 90):.2f} (valid in both: {frac[0]:.2f} of GT)")
  print(f"  source px vs GT: median {np.median(src):.3f}, p90 {pct(src, 90):.2f} (valid in both: {frac[1]:.2f} of GT)")


def load_kinect(shared: Path):
  import cv2

  from camjax.data.curate.scale import DepthFolder
  from camjax.geometry import se3

  d = shared / "rgbd_slambook2" / "kinect_5frames_posed"
  frames = np.stack([cv2.imread(str(d / "color" / f"{i}.png"))[..., ::-1] for i in range(1, 6)])
  depth = DepthFolder(d, scale=1000.0)("depth", np.arange(5), frames)
  rows = np.loadtxt(d / "pose.txt")  # tx ty tz qx qy qz qw, camera-to-world, metres
  cams = g.Cameras.from_c2w(se3.make_pose(se3.quaternion_to_matrix(rows[:, 3:7]), rows[:, :3]),
                            g.intrinsics(518.0, 519.0, 325.5, 253.5), height=480, width=640)
  return frames, depth, cams


def sift_floor(frames, depth, cams):
  """Reprojection error of SIFT matches (ratio 0.7) between consecutive frames after lifting with the sensor depth."""
  import cv2

  sift = cv2.SIFT_create(4000)
  out = []
  for i in range(len(frames) - 1):
    ka, da = sift.detectAndCompute(cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY), None)
    kb, db = sift.detectAndCompute(cv2.cvtColor(frames[i + 1], cv2.COLOR_RGB2GRAY), None)
    good = [m for m, n in cv2.BFMatcher().knnMatch(da, db, k=2) if m.distance < 0.7 * n.distance]
    T = len(frames)
    xy = np.zeros((len(good), T, 2))
    valid = np.zeros((len(good), T), bool)
    xy[:, i] = np.float64([ka[m.queryIdx].pt for m in good]) + 0.5
    xy[:, i + 1] = np.float64([kb[m.trainIdx].pt for m in good]) + 0.5
    valid[:, i] = valid[:, i + 1] = True
    vt = tr.VideoTracks(xy=xy, tracked=valid, depth=np.zeros(valid.shape), points_world=np.zeros(xy.shape + (1,)),
                        valid=valid, query_frame=np.full(len(good), i))
    lifted = tr.lift_tracks(xy, valid & (np.arange(T) == i), depth, cams.K, cams.w2c)
    vt = dataclasses.replace(vt, points_world=lifted.points_world, valid=lifted.valid, depth=lifted.depth)
    out.append(np.median(tr.static_lifting_errors(vt, cams, depth)["reprojection_px"]))
  return out


def rgbd(shared: Path, config):
  frames, depth, cams = load_kinect(shared)
  print("real RGB-D rgbd_slambook2/kinect_5frames_posed, 5 frames 640x480 (Kinect depth, metric poses):")
  for prior in ("none", "homography"):
    cfg = dataclasses.replace(config, prior=prior)
    start = time.perf_counter()
    vt = tr.track_video(frames, cams, depth, num_queries=600, query_frames=(0,), config=cfg)
    seconds = time.perf_counter() - start
    e = tr.static_lifting_errors(vt, cams, depth)
    line = []
    for k in range(1, 5):
      r, d = e["reprojection_px"][e["offset"] == k], e["depth_rel"][e["depth_offset"] == k]
      line.append(f"+{k}: {med(r):.2f} px / {100 * med(d):.1f} % (n={r.size})")
    r, d = e["reprojection_px"], e["depth_rel"]
    print(f"  prior={prior}: {vt.num_tracks} queries; (c) FB survival per frame "
          f"{np.round(vt.tracked.mean(0), 2).tolist()}, lifted {np.round(vt.valid.mean(0), 2).tolist()}; "
          f"{seconds:.1f} s")
    print(f"    (a) reprojection into later frames median {med(r):.2f} px, p90 {pct(r, 90):.2f} (n={r.size}); "
          f"(b) depth error median {100 * med(d):.2f} %, p90 {100 * pct(d, 90):.1f} % (n={d.size})")
    print("    by frame offset: " + "; ".join(line))
  # How far the frames are apart: the sensor depth of frame 0 projected into frame k with the poses.
  ys, xs = np.mgrid[4:480:16, 4:640:16]
  xy = np.stack([xs + 0.5, ys + 0.5], -1).reshape(-1, 1, 2).repeat(5, 1)
  v = np.zeros(xy.shape[:2], bool)
  v[:, 0] = True
  lifted = tr.lift_tracks(xy, v, depth, cams.K, cams.w2c)
  ok = lifted.valid[:, 0]
  proj, _ = pairs.project(np.repeat(lifted.points_world[ok, :1].astype(np.float64), 5, 1), cams.numpy())
  gt_flow = [np.median(np.linalg.norm(proj[:, k] - xy[ok, 0], axis=-1)) for k in range(1, 5)]
  print(f"  frame 0 -> k motion from depth + poses: {np.round(gt_flow, 0).tolist()} px (a keyframe set, not a video)")
  print(f"  data floor, SIFT matches of consecutive frames, median reprojection: "
        f"{np.round(sift_floor(frames, depth, cams), 2).tolist()} px")


def re10k(shared: Path, config):
  from camjax import media

  d = shared / "re10k_clips"
  print("real RealEstate10K clips (re10k_clips/*_svdxt, 25 frames 576x320), no depth: triangulated with the cameras:")
  for video in sorted((d / "videos").glob("*_svdxt.mp4")):
    frames = media.read_video(video)
    cams = g.read_re10k(d / "pose_files" / f"{video.stem}.txt", image_size=frames.shape[1:3])
    start = time.perf_counter()
    vt = tr.track_video(frames, cams, None, num_queries=512, query_frames=(0,), config=config)
    seconds = time.perf_counter() - start
    xy, _ = pairs.project(vt.points_world.astype(np.float64), cams.numpy())
    e = np.linalg.norm(xy - vt.xy, axis=-1)[vt.valid]
    # Held out: triangulate from frames 0-12 only, reproject into frames 13-24 where LK still tracks the point.
    half = np.arange(vt.num_frames) <= 12
    X, ok = tr.triangulate_tracks(vt.xy, vt.tracked & half, cams.K, cams.w2c, config=config)
    xy_h, z_h = pairs.project(np.repeat(X[:, None], vt.num_frames, 1), cams.numpy())
    later = ok[:, None] & vt.tracked & ~half & (z_h > 0)
    e_h = np.linalg.norm(xy_h - vt.xy, axis=-1)[later]
    print(f"  {video.stem}: {vt.num_tracks} queries, FB survival at frame 24 {vt.tracked[:, -1].mean():.2f}, "
          f"triangulated {vt.valid.any(1).mean():.2f}, reprojection median {np.median(e):.2f} px, "
          f"p90 {pct(e, 90):.2f}; held out (frames 0-12 -> 13-24) median {np.median(e_h):.2f} px, "
          f"p90 {pct(e_h, 90):.2f} (n={e_h.size}); {seconds:.1f} s")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shared", type=Path, default=Path(os.environ.get("CAMJAX_SHARED_DATA", DEFAULT_SHARED)))
  parser.add_argument("--seeds", type=int, default=8)
  args = parser.parse_args()
  import cv2

  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, OpenCV {cv2.__version__}")
  config = tr.DEFAULT_CONFIG
  print(f"config: {config}")
  seeds = list(range(args.seeds))
  procedural_single(seeds, 128, 160, 9, 300, config)
  procedural_single(seeds[:4], 256, 320, 17, 600, config)
  procedural_pairs(seeds, 128, 160, 9, 200, config)
  if (args.shared / "rgbd_slambook2").is_dir():
    rgbd(args.shared, config)
  else:
    print(f"no shared data at {args.shared}: real RGB-D figures skipped")
  if (args.shared / "re10k_clips").is_dir():
    re10k(args.shared, config)


if __name__ == "__main__":
  main()
