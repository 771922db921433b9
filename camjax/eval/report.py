"""Evaluation of a folder of generated videos and its report (`report.md`, `metrics.json`, frusta plots, strips).

Sample folder layout written by the main job (`<workdir>/samples/step_<N>/`), per sample `i`:
`generated_<i>.mp4` (the generated video), `cameras_<i>.txt` (its conditioning cameras, RealEstate10K format),
optional `ground_truth_<i>.mp4` and `caption_<i>.txt`. `evaluate_videos` takes any folder of mp4s plus a folder of
RealEstate10K camera files with the same stems instead; a video without a camera file is listed as skipped (with the
reason) in report.md and metrics.json.

Every output file is written atomically into the out dir (default `<sample dir>/eval`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from camjax.eval.camera import PROTOCOLS, UNITS, camera_accuracy, summary
from camjax.eval.errors import EvalError
from camjax.eval.following_modes import MODE_NAMES, MODES
from camjax.eval.quality import BASELINE_NAMES, BASELINES, baseline_scores, frames_label
from camjax.io import atomic_write

log = logging.getLogger(__name__)

TABLE_COLUMNS = (  # (key in a video's metrics, header)
    ("success_ratio", "SfM success"), ("cameractrl2/rot_err", "RotErr° (CC2)"),
    ("cameractrl2/trans_err", "TransErr (CC2)"), ("cami2v/rot_err", "RotErr rad Σ (CamI2V)"),
    ("cami2v/trans_err", "TransErr Σ (CamI2V)"), ("cami2v/cammc", "CamMC Σ (CamI2V)"),
    ("track2view/rot_err", "RotErr° (T2V)"), ("track2view/trans_err", "TransErr (T2V)"),
    ("motion_strength", "motion px/frame"), ("psnr", "PSNR dB"), ("ssim", "SSIM"),
    *((f"{b}/{m}", f"{BASELINE_NAMES[b]} {h}") for b in BASELINES for m, h in (("psnr", "PSNR dB"), ("ssim", "SSIM"))))
# Columns scored against the ground truth on the frames after the condition frames (their headers say which).
QUALITY_KEYS = ("psnr", "ssim", *(f"{b}/{m}" for b in BASELINES for m in ("psnr", "ssim")))


@dataclasses.dataclass(frozen=True)
class Sample:
  """One video to evaluate and its companions (paths may be None)."""

  name: str
  video: Path
  cameras: Path | None = None
  ground_truth: Path | None = None
  caption: str = ""


# ------------------------------------------------------------------------------------------------ discovery
def latest_step_dir(workdir, step: int | None = None) -> Path:
  """`<workdir>/samples/step_<step>` (default: the highest step present).

  Raises:
    EvalError: no samples folder / no such step.
  """
  samples = Path(workdir) / "samples"
  steps = {}
  if samples.is_dir():
    for d in samples.iterdir():
      m = re.fullmatch(r"step_(\d+)", d.name)
      if m and d.is_dir():
        steps[int(m.group(1))] = d
  if not steps:
    raise EvalError(f"{samples}: no step_<N> sample folders (the main job writes them)")
  if step is None:
    return steps[max(steps)]
  if step not in steps:
    raise EvalError(f"{samples}: no step_{step} (have steps {sorted(steps)})")
  return steps[step]


def find_samples(sample_dir) -> list[Sample]:
  """Samples `generated_<i>.mp4` of `sample_dir`, in index order, with their cameras/ground truth/caption files.

  Raises:
    EvalError: the folder has no `generated_<i>.mp4`.
  """
  d = Path(sample_dir)
  found = []
  for video in d.glob("generated_*.mp4"):
    m = re.fullmatch(r"generated_(.+)", video.stem)
    i = m.group(1)
    cams, gt, cap = d / f"cameras_{i}.txt", d / f"ground_truth_{i}.mp4", d / f"caption_{i}.txt"
    found.append((int(i) if i.isdigit() else math.inf, i, Sample(
        name=f"sample_{i}", video=video, cameras=cams if cams.is_file() else None,
        ground_truth=gt if gt.is_file() else None, caption=cap.read_text().strip() if cap.is_file() else "")))
  if not found:
    raise EvalError(f"{d}: no generated_<i>.mp4 samples")
  return [s for _, _, s in sorted(found, key=lambda x: (x[0], x[1]))]


def pair_videos(videos_dir, cameras_dir) -> tuple[list[Sample], list[dict]]:
  """Samples for every `<stem>.mp4` of `videos_dir` with a camera file `<stem>.txt` in `cameras_dir`.

  Returns:
    `(samples, skipped)`: `skipped` has `{"name", "video", "reason"}` for each video without a camera file.

  Raises:
    EvalError: no video has a matching camera file (the message lists a few stems of each side).
  """
  videos = sorted(Path(videos_dir).glob("*.mp4"))
  cams = {p.stem: p for p in Path(cameras_dir).glob("*.txt")}
  samples = [Sample(name=v.stem, video=v, cameras=cams[v.stem]) for v in videos if v.stem in cams]
  skipped = [{"name": v.stem, "video": str(v), "reason": f"no camera file {Path(cameras_dir) / (v.stem + '.txt')}"}
             for v in videos if v.stem not in cams]
  if not samples:
    raise EvalError(f"no video of {videos_dir} ({[v.stem for v in videos[:3]]}...) has a camera file with the same "
                    f"stem in {cameras_dir} ({sorted(cams)[:3]}...)")
  return samples, skipped


# ----------------------------------------------------------------------------------------------- evaluation
def read_cameras(path, image_size: tuple[int, int], normalised_by: str = "frames"):
  """Reads a RealEstate10K camera file for frames of `image_size = (H, W)`.

  Args:
    normalised_by: "frames" when the file's intrinsics are normalised by the frames' own size (what
      `camjax.geometry.write_re10k` writes, so the main job's `cameras_<i>.txt`); "original" for RealEstate10K
      annotations of a 16:9 original shown resized and centre-cropped (`read_re10k`'s aspect fix).
  """
  from camjax.geometry.formats import read_re10k

  if normalised_by == "frames":
    return read_re10k(path, image_size=image_size, original_size=image_size)
  if normalised_by == "original":
    return read_re10k(path, image_size=image_size)
  raise EvalError(f"normalised_by must be 'frames' or 'original', got {normalised_by!r}")


def evaluate_sample(sample: Sample, *, trials: int = 3, mapper: str = "global", seed: int = 0,
                    protocols: Sequence[str] = PROTOCOLS, motion: bool = True, min_registered: float = 1.0,
                    intrinsics: str = "frames", skip_frames: int = 1) -> dict:
  """Metrics of one sample: camera accuracy (when it has cameras), motion strength, PSNR/SSIM vs ground truth.

  `intrinsics` says how the camera file's intrinsics are normalised (see `read_cameras`). With a ground truth,
  `psnr` (dB) and `ssim` score the generated video on frames `skip_frames..T-1` (after the condition frames, which
  are copied from the ground truth), and `repeat_first_frame/psnr`, `repeat_first_frame/ssim`, `mean_colour/psnr`,
  `mean_colour/ssim` score the trivial baselines on the same frames (`quality.baseline_scores`).

  Returns:
    `{"name", "caption", "num_frames", "metrics": {flat numbers}, "camera": camera_accuracy result or None,
    "frames", "ground_truth_frames", "gt_cameras"}` (arrays are dropped before metrics.json).

  Raises:
    EvalError / MediaError / CameraError: unreadable video or camera file, or frames and cameras disagree.
  """
  from camjax.media import read_video

  frames = read_video(sample.video)
  row = {"name": sample.name, "caption": sample.caption, "video": str(sample.video), "num_frames": len(frames),
         "metrics": {}, "camera": None, "frames": frames, "ground_truth_frames": None, "gt_cameras": None}
  if sample.cameras is not None:
    cams = read_cameras(sample.cameras, frames.shape[1:3], intrinsics)
    if cams.num_frames != len(frames):
      raise EvalError(f"{sample.video}: {len(frames)} frames but {cams.num_frames} cameras in {sample.cameras}")
    acc = camera_accuracy(frames, cams, trials=trials, mapper=mapper, seed=seed, protocols=protocols,
                          min_registered=min_registered)
    row["camera"], row["gt_cameras"] = acc, cams
    row["metrics"].update(summary(acc))
  if motion:
    from camjax.eval.motion import motion_stats

    row["metrics"].update(motion_stats(frames))
  if sample.ground_truth is not None:
    gt = read_video(sample.ground_truth)
    if gt.shape != frames.shape:
      raise EvalError(f"{sample.ground_truth}: shape {gt.shape} differs from the generated video's {frames.shape}")
    row["ground_truth_frames"] = gt
    scores = baseline_scores(gt, frames, skip_frames=skip_frames)
    row["metrics"].update(scores.pop("model"))
    row["metrics"].update({f"{b}/{m}": v for b, s in scores.items() for m, v in s.items()})
  return row


def evaluate_samples(samples: Sequence[Sample], out_dir, *, title: str = "camjax evaluation", log_fn=None,
                     skipped: Sequence[dict] = (), **opts) -> dict:
  """Evaluates `samples` (`evaluate_sample` options in `opts`), writes the report into `out_dir`, returns the
  JSON-able result (`settings`, `aggregate`, `videos`, `skipped`). A sample that cannot be evaluated gets an `error`
  row; `skipped` (`{"name", "video", "reason"}`, videos left out before evaluation) is reported as given.

  With ground truths, `baselines` holds the mean PSNR (dB) / SSIM over those videos of the model and of each
  trivial baseline, e.g. `result["baselines"]["repeat_first_frame"]["psnr"]`, all on frames `skip_frames..T-1`
  (`quality_frames` names them)."""
  log_fn = log_fn or log.info
  opts.setdefault("skip_frames", 1)
  for s in skipped:
    log_fn(f"{s['name']}: skipped ({s['reason']})")
  rows = []
  for s in samples:
    t0 = time.time()
    try:
      row = evaluate_sample(s, **opts)
    except Exception as e:  # noqa: BLE001 -- one bad sample must not lose the others; the report shows the error
      from camjax.errors import CamjaxError

      if not isinstance(e, CamjaxError):
        raise
      row = {"name": s.name, "caption": s.caption, "video": str(s.video), "metrics": {}, "error": str(e)}
    log_fn(f"{s.name}: {time.time() - t0:.1f}s " + ", ".join(f"{k}={v:.4g}" for k, v in row["metrics"].items()
                                                             if k in dict(TABLE_COLUMNS)))
    rows.append(row)
  settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
  result = {"title": title, "settings": settings, "aggregate": aggregate([r["metrics"] for r in rows]),
            "num_videos": len(rows), "num_errors": sum("error" in r for r in rows), "videos": rows,
            "num_skipped": len(skipped), "skipped": [dict(s) for s in skipped],
            "quality_frames": frames_label(opts["skip_frames"]),
            "num_with_ground_truth": sum("psnr" in r["metrics"] for r in rows),
            "baselines": baseline_means([r["metrics"] for r in rows])}
  return write_report(out_dir, result)


def baseline_means(metrics: Sequence[dict]) -> dict[str, dict[str, float]]:
  """`{"model" | baseline: {"psnr", "ssim"}}`: means over the videos scored against a ground truth (those with a
  `psnr`); `{}` when none was."""
  scored = [m for m in metrics if "psnr" in m]
  if not scored:
    return {}
  out = {"model": {k: float(np.mean([m[k] for m in scored])) for k in ("psnr", "ssim")}}
  for b in BASELINES:
    out[b] = {k: float(np.mean([m[f"{b}/{k}"] for m in scored])) for k in ("psnr", "ssim")}
  return out


def aggregate(metrics: Sequence[dict]) -> dict[str, float]:
  """Mean over videos of every metric, skipping NaN (a metric undefined for a video); `success_ratio` averages
  every video with cameras (CameraCtrl II's geometric consistency over the set)."""
  keys = list(dict.fromkeys(k for m in metrics for k in m))
  out = {}
  for k in keys:
    vals = np.array([m[k] for m in metrics if k in m], dtype=np.float64)
    out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
  return out


def evaluate_dir(sample_dir, out_dir=None, **opts) -> dict:
  """Evaluates a main-job sample folder (`generated_<i>.mp4` ...; see the module docstring) and writes
  `report.md`, `metrics.json`, frusta plots and sample strips into `out_dir` (default `<sample_dir>/eval`).

  Args:
    sample_dir: e.g. `<workdir>/samples/step_<N>`.
    out_dir: report folder.
    **opts: `trials`, `mapper`, `seed`, `protocols`, `motion`, `min_registered`, `intrinsics` (default "frames":
      the main job writes its cameras with `write_re10k` at the sample size; see `evaluate_sample`).

  Returns:
    The result written to metrics.json.
  """
  sample_dir = Path(sample_dir)
  return evaluate_samples(find_samples(sample_dir), Path(out_dir) if out_dir else sample_dir / "eval",
                          title=f"camjax evaluation of {sample_dir}", **opts)


def evaluate_videos(videos_dir, cameras_dir, out_dir=None, **opts) -> dict:
  """Like `evaluate_dir` for arbitrary `<stem>.mp4` videos with RealEstate10K `<stem>.txt` cameras (default out dir:
  `<videos_dir>/eval`). Intrinsics default to `intrinsics="original"` (RealEstate10K annotations of a 16:9
  original); pass `intrinsics="frames"` for files written by `write_re10k` at the videos' size."""
  opts.setdefault("intrinsics", "original")
  out = Path(out_dir) if out_dir else Path(videos_dir) / "eval"
  samples, skipped = pair_videos(videos_dir, cameras_dir)
  return evaluate_samples(samples, out, title=f"camjax evaluation of {videos_dir}", skipped=skipped, **opts)


# ---------------------------------------------------------------------------------------------- report files
def write_png(path, image: np.ndarray) -> None:
  """Writes `uint8 [H, W, 3]` as PNG, atomically."""
  from PIL import Image

  with atomic_write(path, "wb") as f:
    Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG")


def strip(videos: Sequence[np.ndarray], num: int = 5, gap: int = 4) -> np.ndarray:
  """A sample strip `uint8 [rows * H + gaps, num * W + gaps, 3]`: `num` evenly spaced frames of each video
  `[T, H, W, 3]` (one row per video, e.g. generated over ground truth), on white."""
  videos = [np.asarray(v) for v in videos if v is not None]
  H, W = videos[0].shape[1:3]
  canvas = np.full((len(videos) * (H + gap) - gap, num * (W + gap) - gap, 3), 255, np.uint8)
  for r, v in enumerate(videos):
    for c, t in enumerate(np.linspace(0, len(v) - 1, num).round().astype(int)):
      canvas[r * (H + gap):r * (H + gap) + H, c * (W + gap):c * (W + gap) + W] = v[t, :H, :W]
  return canvas


def aligned_estimate(estimated, gt):
  """The estimated cameras mapped into the GT frame by the orientation-fitted similarity (`align_orientations`),
  for plotting GT vs estimated (`gt` restricted to the same frames)."""
  from camjax.geometry.align import align_orientations
  from camjax.geometry.cameras import Cameras

  sim = align_orientations(estimated.c2w, gt.c2w)
  return Cameras.from_c2w(sim.apply_c2w(estimated.c2w), estimated.K, height=estimated.height, width=estimated.width)


def _fmt(v) -> str:
  if v is None:
    return "–"
  if isinstance(v, float):
    return "–" if not math.isfinite(v) else f"{v:.4g}"
  return str(v)


def table_cell(text, limit: int = 300) -> str:
  """Free text (an error message, a name, a caption) as ONE markdown table cell: whitespace runs and newlines
  collapsed to one space, cut to about `limit` characters keeping its start and its end (where an ffmpeg or SfM
  message says what failed), `|` escaped."""
  text = " ".join(str(text).split())
  if len(text) > limit:
    head = limit // 2
    text = text[:head].rstrip() + " … " + text[len(text) - (limit - head - 3):].lstrip()
  return text.replace("|", "\\|")


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def jsonable(x):
  """A JSON-safe copy of a result: numpy scalars / small arrays to Python, NaN / inf to None, objects dropped."""
  if isinstance(x, dict):
    return {k: jsonable(v) for k, v in x.items() if not isinstance(v, np.ndarray) or v.size <= 64}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, (str, int, float, bool)) or x is None:
    return x
  return None  # Cameras and other objects stay out of metrics.json


def quality_table(baselines: dict | None, frames: str, num_videos: int | None = None) -> list[str]:
  """Markdown lines of the model-vs-trivial-baselines table (rows: model, then `baselines`' other entries, e.g.
  `baseline_means`'s); no lines when `baselines` is empty."""
  if not baselines:
    return []
  over = f"; mean over {num_videos} video{'s' * (num_videos != 1)} with a ground truth" if num_videos else ""
  lines = ["", f"## Frame quality against the ground truth ({frames}{over})", "",
           f"| video | PSNR dB ({frames}) | SSIM ({frames}) |", "|---|---|---|"]
  for name, scores in baselines.items():
    label = BASELINE_NAMES.get(name, name)
    lines.append(f"| {label if name == 'model' else 'baseline: ' + label} | {_fmt(scores['psnr'])} | "
                 f"{_fmt(scores['ssim'])} |")
  return lines


def write_report(out_dir, result: dict) -> dict:
  """Writes `report.md`, `metrics.json`, `frusta_<name>.png` (GT vs estimated cameras) and `strip_<name>.png`
  (generated frames, ground truth below when known) for `evaluate_samples`' result; returns the JSON-able result.

  report.md: settings, the aggregate table, the model-vs-baselines table (with ground truths: model, repeat first
  frame, mean colour; PSNR/SSIM on `quality_frames`), the per-video table (the baselines' PSNR/SSIM columns next to
  the model's), skipped videos, then strips and frusta per sample."""
  from camjax.geometry.plot import plot_trajectories

  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  lines = [f"# {result['title']}", "", "Settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items()),
           "", "Protocol and metric definitions: docs/evaluation.md. CamI2V errors are SUMS over frames (radians); "
           "CameraCtrl II and Track2View errors are MEANS (degrees). `–` = undefined (SfM failed, or the protocol "
           "needs camera translation).", "", "## Aggregate (mean over videos)", "", "| metric | value |", "|---|---|"]
  frames = result.get("quality_frames", frames_label(1))
  for k, v in result["aggregate"].items():
    lines.append(f"| {k}{f' ({frames})' if k in QUALITY_KEYS else ''} | {_fmt(v)} |")
  lines += quality_table(result.get("baselines"), frames, result.get("num_with_ground_truth"))
  present = [(k, h) for k, h in TABLE_COLUMNS if any(k in r["metrics"] for r in result["videos"])]
  headers = [f"{h} ({frames})" if k in ("psnr", "ssim") else h for k, h in present] or ["result"]  # error cell
  lines += ["", "## Per video", ""]
  if any(k in QUALITY_KEYS for k, _ in present):
    lines += [f"PSNR and SSIM columns (the model's and the baselines') are against the ground truth on {frames}, "
              "after the condition frames.", ""]
  lines += ["| video | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
  for r in result["videos"]:
    if "error" in r:
      lines.append(f"| {table_cell(r['name'])} | error: {table_cell(r['error'])} |" + " |" * (len(headers) - 1))
    else:
      lines.append(f"| {table_cell(r['name'])} | " + " | ".join(_fmt(r["metrics"].get(k)) for k, _ in present)
                   + " |")
  if result.get("skipped"):
    lines += ["", "## Skipped (not evaluated)", "", "| video | reason |", "|---|---|"]
    lines += [f"| {table_cell(s['name'])} | {table_cell(s['reason'])} |" for s in result["skipped"]]
  lines += ["", "## Samples", ""]
  for r in result["videos"]:
    if "error" in r or r.get("frames") is None:
      continue
    name = _safe(r["name"])
    lines.append(f"### {table_cell(r['name'])}" + (f": {table_cell(r['caption'])}" if r.get("caption") else ""))
    lines.append("")
    write_png(out_dir / f"strip_{name}.png", strip([r["frames"], r.get("ground_truth_frames")]))
    below = " (top: generated, bottom: ground truth)" if r.get("ground_truth_frames") is not None else ""
    lines.append(f"![frames of {r['name']}{below}](strip_{name}.png)")
    acc = r.get("camera")
    if acc is not None and acc.get("estimated_cameras") is not None:
      gt = r["gt_cameras"].take(acc["frame_indices"])
      est = aligned_estimate(acc["estimated_cameras"], gt)
      plot_trajectories({"conditioning (GT)": gt, "estimated (SfM, aligned)": est}, out_dir / f"frusta_{name}.png",
                        every=max(1, gt.num_frames // 8), title=r["name"])
      lines.append(f"![cameras of {r['name']}](frusta_{name}.png)")
    elif acc is not None:
      lines.append(f"SfM failed in all {acc['trials']} trials: "
                   + table_cell("; ".join(str(t["error"]) for t in acc["per_trial"] if t["error"]), 400))
    lines.append("")
  json_result = jsonable({k: v for k, v in result.items() if k != "videos"})
  json_result["videos"] = [jsonable({k: v for k, v in r.items() if k not in ("frames", "ground_truth_frames")})
                           for r in result["videos"]]
  json_result["units"] = {f"{p}/{m}": u for (p, m), u in UNITS.items()}
  with atomic_write(out_dir / "metrics.json") as f:
    json.dump(json_result, f, indent=1)
  with atomic_write(out_dir / "report.md") as f:
    f.write("\n".join(lines) + "\n")
  return json_result


_SCENE_CONTROLS = ("true_beats_reversed", "psnr_true_minus_reversed", "psnr_true_minus_null")
# The SfM-floor row of `following.camera_following` (issue #16): the camera accuracy of each scene's true video
# against its true cameras, under the same protocol as the generated videos. Defined here (following imports report,
# never the reverse).
GROUND_TRUTH_VIDEO = "ground_truth_video"
GROUND_TRUTH_NAME = "ground-truth video (SfM floor)"


def write_following_report(out_dir, result: dict, title: str = "Camera following on procedural scenes") -> dict:
  """Report of `following.camera_following`: a table of its modes (camera-conditioned, null camera, reversed
  camera) next to the trivial baselines (repeat first frame, mean colour) and, when the result has it, the
  ground-truth video's camera accuracy (`GROUND_TRUTH_VIDEO`, the last column: the SfM floor; `–` for its
  PSNR/SSIM, which would trivially be 100 dB / 1), the controls (true vs reversed and null camera per scene, model
  vs baselines, model vs the SfM floor), per-scene rows, strips (ground truth, then one row per mode and baseline)
  and frusta (conditioning cameras, the camera-conditioned video's SfM estimate and the ground-truth video's);
  writes `report.md` and `metrics.json` into `out_dir`."""
  from camjax.geometry.plot import plot_trajectories

  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  modes = tuple(m for m in MODES if m in result)
  cols = modes + tuple(b for b in (*BASELINES, GROUND_TRUTH_VIDEO) if b in result)
  names = {**MODE_NAMES, **{b: f"baseline: {BASELINE_NAMES[b]}" for b in BASELINES},
           GROUND_TRUTH_VIDEO: GROUND_TRUTH_NAME}
  frames = frames_label(result.get("skip_frames", 1))
  keys = list(result["camera"])
  label = {"psnr": f"PSNR dB ({frames})", "ssim": f"SSIM ({frames})"}
  lines = [f"# {title}", "", f"{result['num_scenes']} procedurally rendered scenes; the same model generates each "
           "with its cameras, with a null camera and with the reversed trajectory; every video is scored against "
           "the scene's true video and cameras (docs/evaluation.md). The baselines are built from the true video "
           "without a model (no SfM run on them: `–`)."
           + (f" The {GROUND_TRUTH_NAME} column is the same SfM protocol run on the scene's true video against its "
              "true cameras: the camera error of a perfect video (no PSNR/SSIM: `–`)." if GROUND_TRUTH_VIDEO in cols
              else ""), "",
           "| metric | " + " | ".join(names[m] for m in cols) + " |", "|---" * (len(cols) + 1) + "|"]
  lines += [f"| {label.get(k, k)} | " + " | ".join(_fmt(result[m].get(k)) for m in cols) + " |" for k in keys]
  lines += _following_controls(result, frames)
  lines += ["", "## Scenes", ""]
  for r in result["per_scene"]:
    i = r["scene"]
    lines.append(f"### scene {i} ({table_cell(r.get('trajectory', ''))}): {table_cell(r['caption'])}")
    lines.append("")
    lines.append("| mode | " + " | ".join(label.get(k, k) for k in keys) + " |")
    lines.append("|---" * (len(keys) + 1) + "|")
    for m in cols:
      if m in r:
        lines.append(f"| {m} | " + " | ".join(_fmt(r[m].get(k)) for k in keys) + " |")
    if "psnr_true_minus_reversed" in r:
      lines.append(f"\nPSNR true − reversed camera: {_signed(r['psnr_true_minus_reversed'])} dB (true beats "
                   f"reversed: {'yes' if r['true_beats_reversed'] else 'no'}); true − null camera: "
                   f"{_signed(r['psnr_true_minus_null'])} dB.")
    gt_frames = r.get("ground_truth")
    shown = [m for m in cols if r["videos"].get(m) is not None]
    videos = ([gt_frames] if gt_frames is not None else []) + [r["videos"][m] for m in shown]
    write_png(out_dir / f"strip_scene{i}.png", strip(videos))
    rows = (["ground truth"] if gt_frames is not None else []) + [names[m] for m in shown]
    lines.append(f"\n![scene {i}: rows = {', '.join(rows)}](strip_scene{i}.png)")
    est = r.get("estimated", {}).get("camera")
    if est is not None and r.get("cameras") is not None:
      gt = r["cameras"]
      if est.num_frames == gt.num_frames:
        paths = {"conditioning (GT)": gt, "estimated (aligned)": aligned_estimate(est, gt)}
        floor = r["estimated"].get(GROUND_TRUTH_VIDEO)
        if floor is not None and floor.num_frames == gt.num_frames:
          paths["ground-truth video, estimated (aligned)"] = aligned_estimate(floor, gt)
        plot_trajectories(paths, out_dir / f"frusta_scene{i}.png", every=max(1, gt.num_frames // 8))
        lines.append(f"![scene {i} cameras](frusta_scene{i}.png)")
    lines.append("")
  per_scene_keys = ("scene", "caption", "trajectory", *cols, *_SCENE_CONTROLS)
  json_result = jsonable({**{m: result[m] for m in cols}, "num_scenes": result["num_scenes"],
                          **{k: result[k] for k in ("skip_frames", "comparison") if k in result},
                          "per_scene": [{k: r[k] for k in per_scene_keys if k in r} for r in result["per_scene"]]})
  with atomic_write(out_dir / "metrics.json") as f:
    json.dump(json_result, f, indent=1)
  with atomic_write(out_dir / "report.md") as f:
    f.write("\n".join(lines) + "\n")
  return json_result


def _signed(v: float) -> str:
  return "–" if v is None or not math.isfinite(v) else f"{v:+.3g}"


def _following_controls(result: dict, frames: str) -> list[str]:
  """The "Controls" section of the following report: true vs reversed / null camera, model vs baselines, and a
  per-scene table of the PSNR differences (no lines when the result has no `comparison`)."""
  c = result.get("comparison")
  if not c:
    return []
  lines = ["", f"## Controls (PSNR/SSIM on {frames})", "", "| control | value |", "|---|---|",
           f"| scenes where the true camera beats the reversed one (PSNR) | {c['true_beats_reversed']} of "
           f"{c['num_scenes']} |",
           f"| mean PSNR true − reversed camera (dB) | {_signed(c['psnr_true_minus_reversed'])} |",
           f"| mean PSNR true − null camera (dB) | {_signed(c['psnr_true_minus_null'])} |"]
  for b, beats in c["model_beats"].items():
    for k, unit in (("psnr", " dB"), ("ssim", "")):
      lines.append(f"| camera-conditioned beats {BASELINE_NAMES[b]} in mean {k.upper()} | "
                   f"{'yes' if beats[k] else 'no'} ({_fmt(result['camera'][k])} vs {_fmt(result[b][k])}{unit}) |")
  floor = result.get(GROUND_TRUTH_VIDEO, {})
  headers = dict(TABLE_COLUMNS)
  for k in ("success_ratio", *(k for k in result["camera"] if k.endswith("/rot_err") and k in floor)):
    if k in floor:
      lines.append(f"| camera-conditioned vs {GROUND_TRUTH_NAME}: {headers.get(k, k)} | "
                   f"{_fmt(result['camera'][k])} vs {_fmt(floor[k])} |")
  lines += ["", "| scene | trajectory | PSNR dB camera | PSNR dB reversed | true − reversed dB | true beats reversed "
            "| PSNR dB null | true − null dB | PSNR dB repeat first frame |", "|---" * 9 + "|"]
  for r in result["per_scene"]:
    lines.append(f"| {r['scene']} | {table_cell(r.get('trajectory', ''))} | {_fmt(r['camera']['psnr'])} | "
                 f"{_fmt(r['reversed_camera']['psnr'])} | {_signed(r['psnr_true_minus_reversed'])} | "
                 f"{'yes' if r['true_beats_reversed'] else 'no'} | {_fmt(r['null_camera']['psnr'])} | "
                 f"{_signed(r['psnr_true_minus_null'])} | {_fmt(r['repeat_first_frame']['psnr'])} |")
  return lines
