"""`python -m camjax.data.curate --videos DIR --out DIR [--depth DIR | --depth_model WEIGHTS]`: CameraCtrl II data
curation of a folder of videos into training shards (see camjax/data/curate/pipeline.py and docs/curation.md)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from camjax.data.curate import clips as clips_lib
from camjax.data.curate import pipeline, poses, scale
from camjax.errors import CamjaxError


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m camjax.data.curate", description=__doc__)
  p.add_argument("--videos", required=True, help="folder of video files and/or image-sequence folders")
  p.add_argument("--out", required=True, help="output folder (a rerun into it reuses only the work done with the "
                 "same inputs and options)")
  depth = p.add_mutually_exclusive_group()
  depth.add_argument("--depth", help="RGB-D depth maps: <DIR>/<video>.npy [T,H,W] metres or <DIR>/<video>/ frames")
  depth.add_argument("--depth_model", help="local Depth Anything V2 metric checkpoint folder (transformers format; "
                     "needs torch + transformers: the `parity` extra)")
  p.add_argument("--depth_device", default="cpu", help="torch device of --depth_model")
  p.add_argument("--depth_scale", type=float, default=1000.0, help="16-bit PNG depth units per metre (TUM: 5000)")
  p.add_argument("--only", nargs="*", help="curate only these videos (file or folder names, stems or ids; a name "
                 "matching no video is an error)")
  p.add_argument("--clip_length", type=int, default=16)
  p.add_argument("--target_fps", type=float, default=10.0, help="subsample videos to about this rate (0: keep all)")
  p.add_argument("--max_side", type=int, default=256, help="resize the longer side to at most this (pixels)")
  p.add_argument("--max_clips", type=int, default=2, help="clips per video (0: all)")
  p.add_argument("--min_camera_motion", type=float, default=0.5, help="pixels/frame of background flow")
  p.add_argument("--fov_deg", type=float, default=None, help="known horizontal field of view (default: estimated)")
  p.add_argument("--mapper", choices=("global", "incremental"), default="global")
  p.add_argument("--min_registered", type=float, default=0.8)
  p.add_argument("--max_reprojection_error", type=float, default=2.0)
  p.add_argument("--num_threads", type=int, default=1)
  p.add_argument("--no_balance", action="store_true", help="skip trajectory balancing")
  p.add_argument("--no_progress", action="store_true")
  return p.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> pipeline.CurateOptions:
  return pipeline.CurateOptions(
      clips=dataclasses.replace(clips_lib.ClipOptions(), clip_length=args.clip_length,
                                target_fps=args.target_fps or None, max_side=args.max_side or None,
                                max_clips=args.max_clips or None),
      min_camera_motion=args.min_camera_motion, fov_deg=args.fov_deg,
      poses=poses.PoseOptions(mapper=args.mapper, min_registered=args.min_registered,
                              max_reprojection_error=args.max_reprojection_error, num_threads=args.num_threads),
      balance=not args.no_balance)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    depth = None
    if args.depth:
      depth = scale.DepthFolder(args.depth, scale=args.depth_scale)
    elif args.depth_model:
      from camjax.data.curate.metric import MetricDepthSource  # pylint: disable=import-outside-toplevel
      from camjax.depth import DepthAnythingMetric  # pylint: disable=import-outside-toplevel
      depth = MetricDepthSource(DepthAnythingMetric(args.depth_model, device=args.depth_device))
    report = pipeline.run(args.videos, args.out, options_from_args(args), depth=depth, videos=args.only,
                          progress=not args.no_progress)
  except CamjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(report.summary())
  return 0


if __name__ == "__main__":
  sys.exit(main())
