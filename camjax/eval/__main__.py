"""Evaluates generated videos and writes a report (docs/evaluation.md).

    python -m camjax.eval --workdir W [--step N]             # the latest (or step N) W/samples/step_<N>/
    python -m camjax.eval --videos DIR --cameras DIR [--out DIR]  # <stem>.mp4 with RealEstate10K <stem>.txt
    python -m camjax.eval --workdir W --following 8          # camera-conditioned vs null camera on 8 new scenes

Writes report.md, metrics.json, frusta_*.png and strip_*.png into --out (default: <sample dir>/eval). With --videos, a
video without a camera file is listed as skipped (with the reason) in both files and on stdout. PSNR/SSIM against a
ground truth are on the frames after the condition frames (--skip_frames, default 1), next to the trivial baselines
"repeat first frame" and "mean colour" on the same frames.
"""

from __future__ import annotations

import argparse
import logging
import sys

from camjax.eval.camera import ALL_PROTOCOLS, PROTOCOLS
from camjax.errors import CamjaxError


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m camjax.eval", description=__doc__.split("\n\n")[0])
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="main-job workdir; evaluates its latest samples/step_<N>")
  src.add_argument("--videos", help="folder of <stem>.mp4 videos (with --cameras)")
  parser.add_argument("--step", type=int, help="with --workdir: evaluate samples/step_<STEP>")
  parser.add_argument("--cameras", help="folder of RealEstate10K <stem>.txt camera files (with --videos)")
  parser.add_argument("--out", help="report folder (default: <sample dir>/eval)")
  parser.add_argument("--trials", type=int, default=3, help="SfM trials per video (seeds seed, seed+1, ...)")
  parser.add_argument("--mapper", default="global", choices=("global", "incremental"))
  parser.add_argument("--seed", type=int, default=0)
  # cami2v_abs needs the metric depth of frame 0, which this command does not take (camera_accuracy(metric_depth=)).
  parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS),
                      choices=[p for p in ALL_PROTOCOLS if p != "cami2v_abs"],
                      help="camera-error protocols (default: the CameraCtrl II family; also e.g. motionflow)")
  parser.add_argument("--min_registered", type=float, default=1.0,
                      help="fraction of frames SfM must register for a trial to count as a success")
  parser.add_argument("--intrinsics", choices=("frames", "original"),
                      help="camera files' intrinsics are normalised by the frames' size (camjax write_re10k; default "
                      "with --workdir) or by a 16:9 original (RealEstate10K annotations; default with --videos)")
  parser.add_argument("--no_motion", action="store_true", help="skip motion strength (optical flow)")
  parser.add_argument("--skip_frames", type=int, default=1,
                      help="condition frames left out of PSNR/SSIM (default 1: the I2V first frame, copied from the "
                      "ground truth); frames skip_frames..T-1 are scored, for the model and the baselines")
  parser.add_argument("--following", type=int, default=0, metavar="N",
                      help="with --workdir: generate N held-out procedural scenes with the trained model, with its "
                      "cameras and with a null camera, and compare (PSNR/SSIM vs ground truth, camera error)")
  parser.add_argument("--no_ground_truth_video", action="store_true",
                      help="with --following: skip the ground-truth videos' SfM (the camera error's floor)")
  args = parser.parse_args(argv)
  if args.videos and not args.cameras:
    parser.error("--videos needs --cameras")
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  from camjax.eval import report

  opts = dict(trials=args.trials, mapper=args.mapper, seed=args.seed, protocols=tuple(args.protocols),
              motion=not args.no_motion, min_registered=args.min_registered, log_fn=print,
              skip_frames=args.skip_frames)
  if args.intrinsics:
    opts["intrinsics"] = args.intrinsics
  try:
    if args.workdir and args.following:
      return _following(args)
    if args.workdir:
      sample_dir = report.latest_step_dir(args.workdir, args.step)
      result = report.evaluate_dir(sample_dir, args.out, **opts)
      out = args.out or sample_dir / "eval"
    else:
      result = report.evaluate_videos(args.videos, args.cameras, args.out, **opts)
      out = args.out or f"{args.videos}/eval"
  except CamjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  skipped = f", {result['num_skipped']} skipped" if result.get("num_skipped") else ""
  print(f"{result['num_videos']} videos ({result['num_errors']} errors{skipped}); report: {out}/report.md")
  for k, v in result["aggregate"].items():
    print(f"  {k}: {v}")
  return 0


def _following(args) -> int:
  from pathlib import Path  # pylint: disable=import-outside-toplevel

  from camjax.eval import following  # pylint: disable=import-outside-toplevel
  from camjax.explore import Explorer  # pylint: disable=import-outside-toplevel
  explorer = Explorer.from_workdir(args.workdir, args.step, seed=args.seed)
  out = Path(args.out or Path(args.workdir) / "eval_following")
  result = following.run_following(explorer.following_generator(), args.following, out,
                                   num_frames=explorer.num_frames, height=explorer.height, width=explorer.width,
                                   seed=args.seed, trials=args.trials, mapper=args.mapper,
                                   protocols=tuple(args.protocols), min_registered=args.min_registered,
                                   skip_frames=args.skip_frames, ground_truth_video=not args.no_ground_truth_video)
  print(f"camera following on {args.following} scenes; report: {out}/report.md")
  for mode in (*following.MODES, *following.BASELINES, following.GROUND_TRUTH_VIDEO):
    if mode not in result:
      continue
    print(f"  {mode}: " + ", ".join(f"{k} {v:.4g}" for k, v in result[mode].items()))
  c = result["comparison"]
  print(f"  true camera beats reversed on {c['true_beats_reversed']} of {c['num_scenes']} scenes; mean PSNR true - "
        f"reversed {c['psnr_true_minus_reversed']:+.3g} dB, true - null {c['psnr_true_minus_null']:+.3g} dB; beats "
        "repeat first frame: " + ", ".join(f"{k} {'yes' if v else 'no'}"
                                           for k, v in c["model_beats"]["repeat_first_frame"].items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
