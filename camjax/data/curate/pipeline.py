"""The end-to-end, resumable curation run (`python -m camjax.data.curate`): stages 1-6 over a folder of videos.

Every stage caches its per-video / per-clip result under `<out>/work/<stage>/` (written atomically) and skips what is
already there, so a crash or a rerun only does the missing work. Bad inputs (unreadable video, zero frames, SfM
failure, missing depth) are recorded in the report and never stop the run. Outputs:
  `<out>/shards/camjax_clips/<version>/`  the clips (`camjax.data.shards` format; train with data.source="shards",
                                           data.path="<out>/shards")
  `<out>/report.json`, `<out>/summary.txt`  what each stage kept or dropped, why, and per-stage statistics
  `<out>/balance.png`                    trajectory-category histogram before / after balancing
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from camjax import geometry as g
from camjax.data.curate import balance as balance_lib
from camjax.data.curate import clips as clips_lib
from camjax.data.curate import motion, poses, scale
from camjax.data.curate.errors import CurationError
from camjax.data.curate.report import Report
from camjax.io import atomic_write


@dataclasses.dataclass(frozen=True)
class CurateOptions:
  """Options of a curation run (stage options plus the thresholds between stages).

  Attributes:
    clips: stage 1 options.
    min_camera_motion: stage 2 threshold, mean background flow in pixels per frame at the clip's size.
    max_foreground: stage 2: clips whose moving-object pixels exceed this fraction are dropped (the camera motion
      would be estimated from too little background).
    poses: stage 3 options.
    fov_deg: known horizontal field of view of every video, degrees (None: COLMAP estimates the focal length).
    num_keyframes: stage 4 keyframes per clip.
    balance: run stage 5 (trajectory balancing).
    balance_target: per-category cap (None: the mean count of the non-empty categories).
    min_translation: stage 5: paths shorter than this (metres when calibrated) are "static".
  """

  clips: clips_lib.ClipOptions = clips_lib.ClipOptions()
  min_camera_motion: float = 0.5
  max_foreground: float = 0.6
  poses: poses.PoseOptions = poses.PoseOptions()
  fov_deg: float | None = None
  num_keyframes: int = 4
  balance: bool = True
  balance_target: int | None = None
  min_translation: float = 0.05

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _progress(iterable, desc: str, enabled: bool):
  if not enabled:
    return iterable
  from tqdm.auto import tqdm

  return tqdm(iterable, desc=desc, unit="item", leave=True)


def _save_npz(path: Path, **arrays) -> None:
  with atomic_write(path, "wb") as f:
    np.savez_compressed(f, **arrays)


def _save_json(path: Path, obj) -> None:
  from camjax.data.curate.report import _jsonable

  with atomic_write(path) as f:
    json.dump(_jsonable(obj), f)


def _load_json(path: Path):
  return json.loads(path.read_text())


def _intrinsics(fov_deg: float | None, height: int, width: int):
  if fov_deg is None:
    return None
  f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
  return g.intrinsics(f, f, width / 2, height / 2)


def run(videos_dir, out_dir, options: CurateOptions = CurateOptions(), *, depth: scale.DepthSource | None = None,
        videos=None, intrinsics: dict | None = None, progress: bool = True) -> Report:
  """Curates every video under `videos_dir` into shards in `out_dir` (see the module docstring).

  Args:
    videos_dir: folder of video files and/or image-sequence folders.
    out_dir: output folder (created; its `work/` cache makes reruns resume).
    options: `CurateOptions`.
    depth: metric-depth source for stage 4 (None: clips keep the SfM scale and `metric_scale` NaN).
    videos: restrict to these file / folder names (default: all).
    intrinsics: `{video_id: K [3, 3]}` pixel intrinsics at the decoded video's size (overrides `fov_deg`).
    progress: show a tqdm bar per stage.

  Returns:
    The `Report` (also written to `out_dir`).

  Raises:
    CurationError: the videos folder does not exist (everything else is recorded in the report).
  """
  try:
    import pycolmap

    pycolmap.logging.minloglevel = 2  # COLMAP's per-image INFO lines would drown the progress bars
  except ImportError:  # reported per clip by stage 3
    pass
  out_dir = Path(out_dir)
  work = out_dir / "work"
  paths = clips_lib.list_videos(videos_dir)
  if videos is not None:
    wanted = set(videos)
    paths = [p for p in paths if p.name in wanted or clips_lib.video_id_of(p) in wanted]
  report = Report({"videos_dir": str(videos_dir), **options.to_dict(),
                   "depth": type(depth).__name__ if depth is not None else None})
  timing = report.data["timing_s"]

  # ------------------------------------------------------------------------------ 1. shot and clip extraction
  t0 = time.time()
  clip_ids: list[tuple[str, str]] = []  # (video_id, clip_id)
  for path in _progress(paths, "1/6 clips", progress):
    vid = clips_lib.video_id_of(path)
    report.video(vid, path)
    marker = work / "clips" / f"{vid}.json"
    if not marker.is_file():
      try:
        frames, fps = clips_lib.decode_video(path, options.clips.image_fps)
        kept, dropped = clips_lib.split_clips(frames, fps, vid, options.clips)
        for c in kept:
          _save_npz(work / "clips" / f"{c.clip_id}.npz", frames=c.frames, frame_indices=c.frame_indices,
                    fps=c.fps, scale_xy=np.asarray(c.scale_xy), video_shape=np.asarray(frames.shape[1:3]))
        result = {"error": "", "fps": fps, "num_frames": len(frames), "size": list(frames.shape[1:3]),
                  "kept": [{"clip_id": c.clip_id, "frames": [int(c.frame_indices[0]), int(c.frame_indices[-1])],
                            "fps": c.fps} for c in kept], "dropped": dropped}
      except CurationError as e:
        result = {"error": str(e), "kept": [], "dropped": []}
      _save_json(marker, result)
    result = _load_json(marker)
    if result["error"]:
      report.drop_video(vid, "clips", result["error"], path)
      continue
    for d in result["dropped"]:
      report.drop_clip(vid, d["clip_id"], "clips", d["reason"], {k: v for k, v in d.items() if k != "reason"})
    for c in result["kept"]:
      report.keep_clip(vid, c["clip_id"], "clips", {"video_frames": c["frames"], "fps": c["fps"],
                                                    "video_size": result["size"], "video_fps": result["fps"]})
      clip_ids.append((vid, c["clip_id"]))
  timing["clips"] = time.time() - t0

  def load_clip(clip_id):
    with np.load(work / "clips" / f"{clip_id}.npz") as z:
      return {k: z[k] for k in z.files}

  # ------------------------------------------------------------------------------ 2. dynamic-video selection
  t0 = time.time()
  dynamic = []
  for vid, cid in _progress(clip_ids, "2/6 motion", progress):
    cache = work / "motion" / f"{cid}.json"
    if not cache.is_file():
      frames = load_clip(cid)["frames"]
      flow = motion.optical_flow(frames)
      mask = motion.foreground_mask(frames, flow)
      score = motion.camera_movement_score(frames, flow, mask)
      fg = float(mask.mean())
      reason = ""
      if score < options.min_camera_motion:
        reason = f"static camera (background flow {score:.2f} px/frame < {options.min_camera_motion})"
      elif fg > options.max_foreground:
        reason = f"moving objects cover {fg:.0%} of the frame (> {options.max_foreground:.0%})"
      _save_json(cache, {"camera_motion_px": score, "foreground_fraction": fg, "reason": reason})
    m = _load_json(cache)
    stats = {"camera_motion_px": m["camera_motion_px"], "foreground_fraction": m["foreground_fraction"]}
    if m["reason"]:
      report.drop_clip(vid, cid, "motion", m["reason"], stats)
    else:
      report.keep_clip(vid, cid, "motion", stats)
      dynamic.append((vid, cid))
  timing["motion"] = time.time() - t0

  # ------------------------------------------------------------------------------------ 3. camera estimation
  t0 = time.time()
  posed = []
  for vid, cid in _progress(dynamic, "3/6 poses", progress):
    cache = work / "poses" / f"{cid}.npz"
    if not cache.is_file():
      clip = load_clip(cid)
      frames = clip["frames"]
      H, W = frames.shape[1:3]
      if intrinsics and vid in intrinsics:
        sx, sy = clip["scale_xy"]
        K = np.diag([sx, sy, 1.0]) @ np.asarray(intrinsics[vid], np.float64)
      else:
        K = _intrinsics(options.fov_deg, H, W)
      r = poses.estimate_clip_cameras(frames, K, options.poses)
      arrays = {"kept": r.kept, "reason": r.reason, "frame_indices": r.frame_indices, "registered": r.registered,
                "reprojection_error": r.reprojection_error}
      if r.cameras is not None:
        arrays.update(w2c=r.cameras.w2c, K=r.cameras.K)
      _save_npz(cache, **arrays)
    with np.load(cache) as z:
      p = {k: z[k] for k in z.files}
    stats = {"registered": float(p["registered"]), "reprojection_error_px": float(p["reprojection_error"]),
             "num_frames": int(len(p["frame_indices"]))}
    if bool(p["kept"]):
      report.keep_clip(vid, cid, "poses", stats)
      posed.append((vid, cid, p))
    else:
      report.drop_clip(vid, cid, "poses", str(p["reason"]), stats)
  timing["poses"] = time.time() - t0

  # ---------------------------------------------------------------------------------- 4. scale calibration
  t0 = time.time()
  calibrated = []
  for vid, cid, p in _progress(posed, "4/6 scale", progress):
    clip = load_clip(cid)
    idx = p["frame_indices"]
    frames = clip["frames"][idx]
    H, W = frames.shape[1:3]
    cams = g.Cameras(K=p["K"], w2c=p["w2c"], height=H, width=W)
    cache = work / "scale" / f"{cid}.json"
    metric_depth = None
    if depth is not None:
      try:
        metric_depth = depth(vid, clip["frame_indices"][idx], frames)
      except CurationError as e:
        report.drop_clip(vid, cid, "scale", f"depth source failed: {e}")
        continue
    if not cache.is_file():
      if metric_depth is None:
        result = {"scale": None, "reason": "", "note": "no metric depth for this video: SfM scale kept"}
      else:
        try:
          result = {**scale.calibrate_clip(frames, cams, metric_depth, num_keyframes=options.num_keyframes).stats(),
                    "reason": ""}
        except CurationError as e:
          result = {"scale": None, "reason": f"scale calibration failed: {e}"}
      _save_json(cache, result)
    s = _load_json(cache)
    if s["reason"]:
      report.drop_clip(vid, cid, "scale", s["reason"], s)
      continue
    report.keep_clip(vid, cid, "scale", s)
    factor = s["scale"]
    if factor is not None:
      cams = cams.scale_translation(factor)
    calibrated.append({"video_id": vid, "clip_id": cid, "frames": frames, "cameras": cams, "fps": float(clip["fps"]),
                       "metric_scale": float("nan") if factor is None else float(factor),
                       "depth": None if metric_depth is None else np.asarray(metric_depth, np.float32),
                       "video_frames": clip["frame_indices"][idx]})
  timing["scale"] = time.time() - t0

  # ------------------------------------------------------------------------------- 5. trajectory balancing
  t0 = time.time()
  selected = calibrated
  if options.balance and calibrated:
    for _ in _progress([0], "5/6 balance", progress):
      result = balance_lib.balance_trajectories([c["cameras"] for c in calibrated], options.balance_target,
                                                min_translation=options.min_translation)
    keep = set(result.keep.tolist())
    selected = []
    for i, c in enumerate(calibrated):
      a = result.analyses[i]
      stats = {"category": "/".join(a.category), "importance": a.importance}
      if i in keep:
        report.keep_clip(c["video_id"], c["clip_id"], "balance", stats)
        selected.append(c)
      else:
        report.drop_clip(c["video_id"], c["clip_id"], "balance", f"pruned: category {'/'.join(a.category)} is "
                         f"over-represented and this trajectory's importance ({a.importance:.2f}) is among the "
                         "lowest", stats)
    balance_lib.plot_histogram(result.before, result.after, out_dir / "balance.png")
    report.data["balance"] = {"before": result.before, "after": result.after,
                              "uniformity_before": balance_lib.uniformity(result.before),
                              "uniformity_after": balance_lib.uniformity(result.after), "histogram": "balance.png"}
  timing["balance"] = time.time() - t0

  # ------------------------------------------------------------------------------------------ 6. shards
  t0 = time.time()
  records = []
  for c in _progress(selected, "6/6 shards", progress):
    records.append(clip_record(c, paths))
    report.keep_clip(c["video_id"], c["clip_id"], "shards", {"num_frames": len(c["frames"])})
  if records:
    tmp, final = out_dir / "shards.tmp", out_dir / "shards"
    shutil.rmtree(tmp, ignore_errors=True)
    from camjax.data.shards import write_shards

    ds = write_shards(records, tmp, description=f"camjax curation of {videos_dir}")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    report.data["output"] = {"shards": str(final), "dataset": str(final / ds.relative_to(tmp)),
                             "num_clips": len(records)}
  timing["shards"] = time.time() - t0
  report.finish_videos()
  report.write(out_dir)
  return report


def clip_record(c: dict, paths):
  """The `ClipRecord` of a curated clip (provenance: source = "curate:<video file>", scene_id = video id)."""
  from camjax.data.records import ClipRecord

  name = next((p.name for p in paths if clips_lib.video_id_of(p) == c["video_id"]), c["video_id"])
  cams = c["cameras"]
  return ClipRecord(clip_id=c["clip_id"], K=cams.K, w2c=cams.w2c, height=cams.height, width=cams.width,
                    frames=c["frames"], fps=c["fps"], caption="", has_camera=True, depth=c["depth"],
                    metric_scale=c["metric_scale"], source=f"curate:{name}", scene_id=c["video_id"])
