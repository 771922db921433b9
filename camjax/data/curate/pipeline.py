"""The end-to-end, resumable curation run (`python -m camjax.data.curate`): stages 1-6 over a folder of videos.

Every stage caches its per-video / per-clip result under `<out>/work/<stage>/` (written atomically), keyed by the input
file's identity (path, size, modification time) and the options that produced it (`camjax.data.curate.cache`), and
reuses only an entry with the same key, so a crash or a rerun only does the missing work while a rerun with other
options or changed inputs recomputes what they change. Thresholds applied to cached measurements (the camera-motion
and foreground limits) are applied afresh every run. Bad inputs (unreadable video, zero frames, SfM failure, missing
depth) are recorded in the report and never stop the run. The outputs always describe the current run: each is written
to a temporary path and renamed into place, and one the run does not produce (no shards when no clip is kept, no
`balance.png` without balancing) is removed. Outputs:
  `<out>/shards/camjax_clips/<version>/`  the clips (`camjax.data.shards` format; train with data.source="shards",
                                           data.path="<out>/shards")
  `<out>/report.json`, `<out>/summary.txt`  what each stage kept or dropped, why, and per-stage statistics
  `<out>/balance.png`                    trajectory-category histogram before / after balancing
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

from camjax import geometry as g
from camjax.data.curate import balance as balance_lib
from camjax.data.curate import clips as clips_lib
from camjax.data.curate import motion, poses, scale
from camjax.data.curate.cache import StageCache, array_digest, cache_key, file_identity, load_npz, save_npz
from camjax.data.curate.errors import CurationError
from camjax.data.curate.report import Report


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


def _intrinsics(fov_deg: float | None, height: int, width: int):
  if fov_deg is None:
    return None
  f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
  return g.intrinsics(f, f, width / 2, height / 2)


@dataclasses.dataclass(frozen=True)
class _ClipRef:
  """A clip kept by stage 1: ids, the cache key later stages build on, and its cached frames (`.npz`)."""

  video_id: str
  clip_id: str
  key: str
  path: Path
  video_name: str


def run(videos_dir, out_dir, options: CurateOptions = CurateOptions(), *, depth: scale.DepthSource | None = None,
        videos=None, intrinsics: dict | None = None, progress: bool = True) -> Report:
  """Curates every video under `videos_dir` into shards in `out_dir` (see the module docstring).

  Args:
    videos_dir: folder of video files and/or image-sequence folders.
    out_dir: output folder (created; its `work/` cache makes reruns resume).
    options: `CurateOptions`.
    depth: metric-depth source for stage 4 (None: clips keep the SfM scale and `metric_scale` NaN).
    videos: restrict to these file / folder names, stems or video ids (default: all).
    intrinsics: `{video_id: K [3, 3]}` pixel intrinsics at the decoded video's size (overrides `fov_deg`).
    progress: show a tqdm bar per stage.

  Returns:
    The `Report` (also written to `out_dir`).

  Raises:
    CurationError: the videos folder does not exist.
    NoVideosError: it holds no video, or a name of `videos` matches none (everything else is recorded in the report).
  """
  try:
    import pycolmap

    pycolmap.logging.minloglevel = 2  # COLMAP's per-image INFO lines would drown the progress bars
  except ImportError:  # reported per clip by stage 3
    pass
  out_dir = Path(out_dir)
  work = out_dir / "work"
  selected = clips_lib.select_videos(videos_dir, videos)
  report = Report({"videos_dir": str(videos_dir), **options.to_dict(),
                   "depth": type(depth).__name__ if depth is not None else None})
  timing = report.data["timing_s"]

  def timed(stage, fn, *args):
    t0 = time.time()
    result = fn(*args)
    timing[stage] = time.time() - t0
    return result

  refs = timed("clips", _stage_clips, selected, StageCache(work, "clips"), options, report, progress)
  dynamic = timed("motion", _stage_motion, refs, StageCache(work, "motion"), options, report, progress)
  posed = timed("poses", _stage_poses, dynamic, StageCache(work, "poses"), options, intrinsics, report, progress)
  calibrated = timed("scale", _stage_scale, posed, StageCache(work, "scale"), options, depth, report, progress)
  chosen = timed("balance", _stage_balance, calibrated, out_dir, options, report, progress)
  timed("shards", _stage_shards, chosen, out_dir, f"camjax curation of {videos_dir}", report, progress)
  report.finish_videos()
  report.write(out_dir)
  return report


# ------------------------------------------------------------------------------------ 1. shot and clip extraction
def _cut_clips(path: Path, vid: str, options: clips_lib.ClipOptions, folder: Path) -> dict:
  """Stage 1 on one video: the clips' frames go to `folder/<clip_id>.npz`; returns the cached summary."""
  try:
    frames, fps = clips_lib.decode_video(path, options.image_fps)
    kept, dropped = clips_lib.split_clips(frames, fps, vid, options)
  except CurationError as e:
    return {"error": str(e), "kept": [], "dropped": []}
  for c in kept:
    save_npz(folder / f"{c.clip_id}.npz", frames=c.frames, frame_indices=c.frame_indices, fps=c.fps,
             scale_xy=np.asarray(c.scale_xy), video_shape=np.asarray(frames.shape[1:3]))
  return {"error": "", "fps": fps, "num_frames": len(frames), "size": list(frames.shape[1:3]),
          "kept": [{"clip_id": c.clip_id, "frames": [int(c.frame_indices[0]), int(c.frame_indices[-1])], "fps": c.fps}
                   for c in kept], "dropped": dropped}


def _stage_clips(selected: dict, cache: StageCache, options: CurateOptions, report: Report,
                 progress: bool) -> list[_ClipRef]:
  refs = []
  for path, vid in _progress(list(selected.items()), "1/6 clips", progress):
    report.video(vid, path)
    identity = file_identity(path)
    key = cache_key("clips", input=identity, video_id=vid, options=options.clips)
    result = cache.load_json(key)
    if result is None:
      result = _cut_clips(path, vid, options.clips, cache.path(key, ""))
      cache.save_json(key, {**result, "input": identity})
    if result["error"]:
      report.drop_video(vid, "clips", result["error"], path)
      continue
    for d in result["dropped"]:
      report.drop_clip(vid, d["clip_id"], "clips", d["reason"], {k: v for k, v in d.items() if k != "reason"})
    for c in result["kept"]:
      report.keep_clip(vid, c["clip_id"], "clips", {"video_frames": c["frames"], "fps": c["fps"],
                                                    "video_size": result["size"], "video_fps": result["fps"]})
      refs.append(_ClipRef(vid, c["clip_id"], cache_key("clip", clips=key, clip_id=c["clip_id"]),
                           cache.path(key, "") / f"{c['clip_id']}.npz", path.name))
  return refs


# ------------------------------------------------------------------------------------ 2. dynamic-video selection
def _motion_reason(m: dict, options: CurateOptions) -> str:
  """Why stage 2 drops a clip with measurements `m` under the current thresholds ("" when it is kept)."""
  if m["camera_motion_px"] < options.min_camera_motion:
    return f"static camera (background flow {m['camera_motion_px']:.2f} px/frame < {options.min_camera_motion})"
  if m["foreground_fraction"] > options.max_foreground:
    return f"moving objects cover {m['foreground_fraction']:.0%} of the frame (> {options.max_foreground:.0%})"
  return ""


def _stage_motion(refs: list[_ClipRef], cache: StageCache, options: CurateOptions, report: Report,
                  progress: bool) -> list[_ClipRef]:
  dynamic = []
  for ref in _progress(refs, "2/6 motion", progress):
    key = cache_key("motion", clip=ref.key)
    m = cache.load_json(key)
    if m is None:
      frames = load_npz(ref.path)["frames"]
      flow = motion.optical_flow(frames)
      mask = motion.foreground_mask(frames, flow)
      m = {"camera_motion_px": motion.camera_movement_score(frames, flow, mask),
           "foreground_fraction": float(mask.mean())}
      cache.save_json(key, m)
    stats = {"camera_motion_px": m["camera_motion_px"], "foreground_fraction": m["foreground_fraction"]}
    reason = _motion_reason(m, options)
    if reason:
      report.drop_clip(ref.video_id, ref.clip_id, "motion", reason, stats)
    else:
      report.keep_clip(ref.video_id, ref.clip_id, "motion", stats)
      dynamic.append(ref)
  return dynamic


# -------------------------------------------------------------------------------------------- 3. camera estimation
def _stage_poses(dynamic: list[_ClipRef], cache: StageCache, options: CurateOptions, intrinsics: dict | None,
                 report: Report, progress: bool) -> list[tuple[_ClipRef, str, dict]]:
  posed = []
  for ref in _progress(dynamic, "3/6 poses", progress):
    known = intrinsics.get(ref.video_id) if intrinsics else None
    known = None if known is None else np.asarray(known, np.float64)
    key = cache_key("poses", clip=ref.key, options=options.poses, fov_deg=options.fov_deg, K=known)
    p = cache.load_npz(key)
    if p is None:
      clip = load_npz(ref.path)
      H, W = clip["frames"].shape[1:3]
      K = np.diag([*clip["scale_xy"], 1.0]) @ known if known is not None else _intrinsics(options.fov_deg, H, W)
      r = poses.estimate_clip_cameras(clip["frames"], K, options.poses)
      p = {"kept": r.kept, "reason": r.reason, "frame_indices": r.frame_indices, "registered": r.registered,
           "reprojection_error": r.reprojection_error}
      if r.cameras is not None:
        p.update(w2c=r.cameras.w2c, K=r.cameras.K)
      cache.save_npz(key, **p)
      p = cache.load_npz(key)
    stats = {"registered": float(p["registered"]), "reprojection_error_px": float(p["reprojection_error"]),
             "num_frames": int(len(p["frame_indices"]))}
    if bool(p["kept"]):
      report.keep_clip(ref.video_id, ref.clip_id, "poses", stats)
      posed.append((ref, key, p))
    else:
      report.drop_clip(ref.video_id, ref.clip_id, "poses", str(p["reason"]), stats)
  return posed


# ------------------------------------------------------------------------------------------ 4. scale calibration
def _stage_scale(posed: list, cache: StageCache, options: CurateOptions, depth: scale.DepthSource | None,
                 report: Report, progress: bool) -> list[dict]:
  calibrated = []
  for ref, pose_key, p in _progress(posed, "4/6 scale", progress):
    vid, cid = ref.video_id, ref.clip_id
    clip = load_npz(ref.path)
    idx = p["frame_indices"]
    frames = clip["frames"][idx]
    H, W = frames.shape[1:3]
    cams = g.Cameras(K=p["K"], w2c=p["w2c"], height=H, width=W)
    metric_depth = None
    if depth is not None:
      try:
        metric_depth = depth(vid, clip["frame_indices"][idx], frames)
      except CurationError as e:
        report.drop_clip(vid, cid, "scale", f"depth source failed: {e}")
        continue
    if metric_depth is not None:
      metric_depth = np.asarray(metric_depth, np.float32)
    key = cache_key("scale", poses=pose_key, num_keyframes=options.num_keyframes,
                    depth=None if metric_depth is None else array_digest(metric_depth))
    s = cache.load_json(key)
    if s is None:
      s = _calibrate(frames, cams, metric_depth, options)
      cache.save_json(key, s)
    if s["reason"]:
      report.drop_clip(vid, cid, "scale", s["reason"], s)
      continue
    report.keep_clip(vid, cid, "scale", s)
    factor = s["scale"]
    if factor is not None:
      cams = cams.scale_translation(factor)
    calibrated.append({"video_id": vid, "clip_id": cid, "video_name": ref.video_name, "frames": frames,
                       "cameras": cams, "fps": float(clip["fps"]),
                       "metric_scale": float("nan") if factor is None else float(factor), "depth": metric_depth,
                       "video_frames": clip["frame_indices"][idx]})
  return calibrated


def _calibrate(frames: np.ndarray, cams: g.Cameras, metric_depth: np.ndarray | None, options: CurateOptions) -> dict:
  if metric_depth is None:
    return {"scale": None, "reason": "", "note": "no metric depth for this video: SfM scale kept"}
  try:
    return {**scale.calibrate_clip(frames, cams, metric_depth, num_keyframes=options.num_keyframes).stats(),
            "reason": ""}
  except CurationError as e:
    return {"scale": None, "reason": f"scale calibration failed: {e}"}


# --------------------------------------------------------------------------------------- 5. trajectory balancing
def _stage_balance(calibrated: list[dict], out_dir: Path, options: CurateOptions, report: Report,
                   progress: bool) -> list[dict]:
  """Prunes over-represented trajectory categories; writes `balance.png`, or removes a stale one when not run."""
  png = out_dir / "balance.png"
  if not (options.balance and calibrated):
    png.unlink(missing_ok=True)
    return calibrated
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
                       f"over-represented and this trajectory's importance ({a.importance:.2f}) is among the lowest",
                       stats)
  balance_lib.plot_histogram(result.before, result.after, png)
  report.data["balance"] = {"before": result.before, "after": result.after,
                            "uniformity_before": balance_lib.uniformity(result.before),
                            "uniformity_after": balance_lib.uniformity(result.after), "histogram": png.name}
  return selected


# ----------------------------------------------------------------------------------------------------- 6. shards
def _stage_shards(selected: list[dict], out_dir: Path, description: str, report: Report, progress: bool) -> None:
  """Writes the shards to `shards.tmp` and swaps them in for `shards`; removes stale shards when no clip is kept."""
  records = []
  for c in _progress(selected, "6/6 shards", progress):
    records.append(clip_record(c))
    report.keep_clip(c["video_id"], c["clip_id"], "shards", {"num_frames": len(c["frames"])})
  final = out_dir / "shards"
  if not records:
    _replace_dir(None, final)
    return
  from camjax.data.shards import write_shards

  tmp = out_dir / "shards.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  ds = write_shards(records, tmp, description=description)
  _replace_dir(tmp, final)
  report.data["output"] = {"shards": str(final), "dataset": str(final / ds.relative_to(tmp)), "num_clips": len(records)}


def _replace_dir(new: Path | None, final: Path) -> None:
  """Renames the complete folder `new` to `final` (None: removes `final`); the previous `final` is first renamed
  aside, so `final` is never a mix of old and new."""
  old = final.with_name(final.name + ".old")
  shutil.rmtree(old, ignore_errors=True)
  if final.exists():
    final.rename(old)
  if new is not None:
    new.rename(final)
  shutil.rmtree(old, ignore_errors=True)


def clip_record(c: dict):
  """The `ClipRecord` of a curated clip (provenance: source = "curate:<video file>", scene_id = video id)."""
  from camjax.data.records import ClipRecord

  name = c.get("video_name") or c["video_id"]
  cams = c["cameras"]
  return ClipRecord(clip_id=c["clip_id"], K=cams.K, w2c=cams.w2c, height=cams.height, width=cams.width,
                    frames=c["frames"], fps=c["fps"], caption="", has_camera=True, depth=c["depth"],
                    metric_scale=c["metric_scale"], source=f"curate:{name}", scene_id=c["video_id"])
