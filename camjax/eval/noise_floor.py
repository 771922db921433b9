"""Noise floor of the camera-accuracy protocol on REAL videos: each RealEstate10K clip against its own cameras, and
against another clip's cameras (cyclic swap), so the numbers of a generated video can be read against them.

    python -m camjax.eval.noise_floor --root ../shared/data/re10k_clips --trials 5 --repeats 3 --out nf.json

Each repeat `r` estimates every clip's cameras `trials` times (seeds `100 r + k`), scores the SAME estimates against
the clip's own cameras and against clip `i + 1`'s, and averages the trials with outlier rejection (see
`camjax.eval.camera`). SfM holds the clip's own intrinsics fixed in both cases, so the swap changes only the
trajectory. The spread across repeats is the run-to-run spread documented in docs/evaluation.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from camjax.eval.camera import METRIC_KEYS, PROTOCOLS, estimate_trials, score_trials
from camjax.eval.errors import EvalError
from camjax.io import atomic_write


def noise_floor(root, *, suffix: str = "_svdxt", trials: int = 5, repeats: int = 3, mapper: str = "global",
                max_clips: int | None = None, log=print) -> dict:
  """Runs the noise-floor experiment (module docstring); returns `{"own": [...], "swapped": [...], "clips": [...]}`
  with one `score_trials` summary per repeat and clip, and `aggregate` means/spreads.

  Raises:
    EvalError: fewer than 2 clips with frames and the given file-name suffix under `root`.
  """
  from camjax.data.sources import re10k_records

  root = Path(root) / "pose_files" if (Path(root) / "pose_files").is_dir() else Path(root)
  clips = [r for r in re10k_records(root) if r.clip_id.endswith(suffix)][:max_clips]
  if len(clips) < 2:
    raise EvalError(f"{root}: need at least 2 RealEstate10K clips ending in {suffix!r} with videos, found {len(clips)}")
  cams = [r.cameras for r in clips]
  rows = {"own": [], "swapped": []}
  for rep in range(repeats):
    for i, rec in enumerate(clips):
      t0 = time.time()
      runs = estimate_trials(np.asarray(rec.frames), cams[i].K[0], trials=trials, mapper=mapper, seed=100 * rep)
      other = (i + 1) % len(clips)
      for kind, gt in (("own", cams[i]), ("swapped", cams[other])):
        res = score_trials(runs, gt)
        res = {k: v for k, v in res.items() if k not in ("estimated_cameras", "frame_indices")}
        res.update(clip=rec.clip_id, cameras_of=clips[other if kind == "swapped" else i].clip_id, repeat=rep)
        rows[kind].append(res)
      own = rows["own"][-1]
      log(f"repeat {rep} {rec.clip_id}: {time.time() - t0:.1f}s success {own['success_ratio']:.2f} "
          f"cameractrl2 rot {own['cameractrl2']['rot_err']:.3f} deg, swapped "
          f"{rows['swapped'][-1]['cameractrl2']['rot_err']:.3f} deg")
  return {"clips": [c.clip_id for c in clips], "trials": trials, "repeats": repeats, "mapper": mapper, **rows,
          "aggregate": {kind: aggregate(rows[kind], repeats) for kind in rows}}


def aggregate(rows: list[dict], repeats: int) -> dict:
  """Per metric: mean over clips of each repeat, then `mean`, `std` (run-to-run, over repeats), and `trial_std`
  (mean over clips and repeats of the within-run standard deviation across trials)."""
  out = {"success_ratio": _spread([[r["success_ratio"] for r in rows if r["repeat"] == k] for k in range(repeats)])}
  for p in PROTOCOLS:
    for m in METRIC_KEYS[p]:
      per_rep = [[r[p][m] for r in rows if r["repeat"] == k] for k in range(repeats)]
      stat = _spread(per_rep)
      stat["trial_std"] = float(np.nanmean([r[p][f"{m}_std"] for r in rows]))
      stat["per_clip"] = {c: float(np.nanmean([r[p][m] for r in rows if r["clip"] == c]))
                          for c in dict.fromkeys(r["clip"] for r in rows)}
      out[f"{p}/{m}"] = stat
  return out


def _spread(per_rep: list[list[float]]) -> dict:
  means = np.array([np.nanmean(v) for v in per_rep])
  return {"mean": float(means.mean()), "std": float(means.std()), "per_repeat": means.tolist()}


def markdown(result: dict) -> str:
  """A Markdown table of `noise_floor`'s aggregate: own vs swapped cameras, mean +- run-to-run std."""
  agg = result["aggregate"]
  lines = ["| metric | own cameras | swapped cameras |", "|---|---|---|"]
  for key in agg["own"]:
    o, s = agg["own"][key], agg["swapped"][key]
    lines.append(f"| {key} | {o['mean']:.4g} ± {o['std']:.2g} | {s['mean']:.4g} ± {s['std']:.2g} |")
  return "\n".join(lines)


def main(argv=None) -> None:
  import argparse

  parser = argparse.ArgumentParser(prog="python -m camjax.eval.noise_floor", description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", required=True, help="RealEstate10K folder (pose_files/ + videos/)")
  parser.add_argument("--suffix", default="_svdxt", help="use clips whose id ends with this")
  parser.add_argument("--trials", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--mapper", default="global", choices=("global", "incremental"))
  parser.add_argument("--max_clips", type=int)
  parser.add_argument("--out", help="write the full result as JSON here")
  args = parser.parse_args(argv)
  result = noise_floor(args.root, suffix=args.suffix, trials=args.trials, repeats=args.repeats, mapper=args.mapper,
                       max_clips=args.max_clips)
  if args.out:
    with atomic_write(args.out) as f:
      json.dump(result, f, indent=1)
  print(markdown(result))


if __name__ == "__main__":
  main()
