"""Stage 6 bookkeeping: which stage kept or dropped each video and clip and why, per-stage statistics, written as
`report.json` and a short `summary.txt` (both atomically).

`report.json`:
    {"config": {...}, "stages": {stage: {"kept": n, "dropped": n}}, "timing_s": {stage: seconds},
     "videos": {video_id: {"path": str, "status": "kept" | "dropped", "stage": last stage reached, "reason": str,
                           "clips": {clip_id: {"status": ..., "stage": ..., "reason": ..., "stats": {stage: {...}}}}}},
     "balance": {...}, "output": {...}}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from camjax.io import atomic_write

STAGES = ("clips", "motion", "poses", "scale", "balance", "shards")


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    x = float(x)
    return x if np.isfinite(x) else None
  if isinstance(x, (np.bool_,)):
    return bool(x)
  return x


class Report:
  """Accumulates per-video and per-clip decisions of the curation stages."""

  def __init__(self, config: dict | None = None):
    self.data = {"config": _jsonable(config or {}), "stages": {s: {"kept": 0, "dropped": 0} for s in STAGES},
                 "timing_s": {}, "videos": {}, "balance": {}, "output": {}}

  # -------------------------------------------------------------------------------------------- recording
  def video(self, video_id: str, path=None) -> dict:
    v = self.data["videos"].setdefault(video_id, {"path": str(path) if path else "", "status": "pending",
                                                  "stage": "", "reason": "", "clips": {}})
    return v

  def drop_video(self, video_id: str, stage: str, reason: str, path=None) -> None:
    v = self.video(video_id, path)
    v.update(status="dropped", stage=stage, reason=reason)
    self.data["stages"][stage]["dropped"] += 1

  def clip(self, video_id: str, clip_id: str) -> dict:
    return self.video(video_id)["clips"].setdefault(clip_id, {"status": "pending", "stage": "", "reason": "",
                                                              "stats": {}})

  def keep_clip(self, video_id: str, clip_id: str, stage: str, stats: dict | None = None) -> None:
    c = self.clip(video_id, clip_id)
    c.update(status="kept", stage=stage, reason="")
    if stats:
      c["stats"][stage] = _jsonable(stats)
    self.data["stages"][stage]["kept"] += 1

  def drop_clip(self, video_id: str, clip_id: str, stage: str, reason: str, stats: dict | None = None) -> None:
    c = self.clip(video_id, clip_id)
    c.update(status="dropped", stage=stage, reason=reason)
    if stats:
      c["stats"][stage] = _jsonable(stats)
    self.data["stages"][stage]["dropped"] += 1

  def finish_videos(self) -> None:
    """Sets each video's status from its clips: kept when any clip reached the shards."""
    for v in self.data["videos"].values():
      if v["status"] == "dropped":
        continue
      clips = v["clips"].values()
      if any(c["status"] == "kept" and c["stage"] == "shards" for c in clips):
        v.update(status="kept", stage="shards", reason="")
      else:
        dropped = [c for c in clips if c["status"] == "dropped"]
        v["status"] = "dropped"
        v["stage"] = dropped[-1]["stage"] if dropped else "clips"
        v["reason"] = "; ".join(f"{cid}: {c['reason']}" for cid, c in v["clips"].items()
                                if c["status"] == "dropped") or "no clip"

  # ---------------------------------------------------------------------------------------------- output
  def summary(self) -> str:
    d = self.data
    lines = ["camjax curation summary", ""]
    lines.append("stage      kept  dropped  seconds")
    for s in STAGES:
      st = d["stages"][s]
      lines.append(f"{s:<9} {st['kept']:>5}  {st['dropped']:>7}  {d['timing_s'].get(s, 0.0):>7.1f}")
    lines.append("")
    for vid, v in d["videos"].items():
      kept = [cid for cid, c in v["clips"].items() if c["status"] == "kept" and c["stage"] == "shards"]
      lines.append(f"{vid}: {v['status']} ({len(kept)} clip(s) written)" +
                   (f" at {v['stage']}: {v['reason']}" if v["status"] == "dropped" else ""))
    if d["output"]:
      lines += ["", f"shards: {d['output'].get('shards', '')} ({d['output'].get('num_clips', 0)} clips)"]
    return "\n".join(lines) + "\n"

  def write(self, out_dir) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    with atomic_write(out_dir / "report.json") as f:
      json.dump(_jsonable(self.data), f, indent=1)
    with atomic_write(out_dir / "summary.txt") as f:
      f.write(self.summary())
    return out_dir / "report.json", out_dir / "summary.txt"
