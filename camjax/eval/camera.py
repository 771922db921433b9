"""Camera accuracy of a video: estimate its cameras with pycolmap in several seeded trials, compare each with the
conditioning (ground-truth) cameras under every protocol of `camjax.geometry.metrics`, drop outlier trials, and
report the mean and spread.

Protocol (docs/evaluation.md):
  * SfM: `camjax.geometry.sfm.estimate_cameras` with the conditioning intrinsics `K[0]` held fixed, sequential
    matching, the global (GLOMAP, default) or incremental mapper, one thread (bit-reproducible), trial `k` seeded
    with `seed + k`.
  * A trial SUCCEEDS when the reconstruction registers at least `min_registered` of the frames (default all). A trial
    that raises or registers fewer frames is a failure; it never raises. `success_ratio` = successful / trials is
    CameraCtrl II's "geometric consistency" (sec. 4.2, 4)) for one video.
  * Errors of a successful trial are computed on its registered frames, for each protocol:
    `cami2v` (RotErr SUMMED radians, TransErr, CamMC; REFERENCE.md section 4), `cameractrl2` (Sim(3)-aligned MEANS,
    RotErr degrees; section 3), `track2view` (mean degrees, scale from the first two frames; section 5), and with
    the metric depth of frame 0 `cami2v_abs` (RealCam-I2V's TransErr_abs / CamMC_abs, below).
  * `cami2v_abs` (RealCam-I2V's metric variants, REFERENCE.md section 4: both trajectories normalised by the GT's
    scale, so a video that moves the right directions by the wrong distance is penalised): the reconstruction is
    given metres first, the paper's way, from the metric depth of the reference frame (frame 0; for RealCam-I2V the
    given image, whose metric depth the method has): the median over the 3D points frame 0 observes of
    `metric depth / SfM depth` (`metric_scale`, the curation's `frame_factor`), then `metrics.cami2v_errors(...,
    metric=True)`. Undefined (NaN, with a note) when frame 0 is not registered or observes fewer than 20 points on
    valid depth.
  * Outlier trials: with at least 3 successful trials, a trial whose rotation error (the first protocol in
    `OUTLIER_KEYS` that was asked for) lies more than `outlier_k` robust standard deviations from the trials'
    median (1.4826 MAD, floored at 10% of the median) is dropped; means and standard deviations are over the kept
    trials (`np.std`, ddof 0).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from camjax.geometry import metrics
from camjax.geometry.cameras import Cameras
from camjax.geometry.errors import CameraError
from camjax.eval.errors import EvalError
from camjax.eval.motionflow import motionflow_errors

# The protocols every report computes by default; `ALL_PROTOCOLS` adds MotionFlow's (appendix A: summed, translations
# not normalised), whose translation error is only meaningful between two estimates of one SfM (real vs generated
# video, `camjax.eval.motionflow.compare_estimates`), not against the conditioning cameras' scale: ask for it by name.
PROTOCOLS = ("cami2v", "cameractrl2", "track2view")
ALL_PROTOCOLS = PROTOCOLS + ("motionflow", "cami2v_abs")
METRIC_KEYS = {"cami2v": ("rot_err", "trans_err", "cammc"), "cameractrl2": ("rot_err", "trans_err"),
               "track2view": ("rot_err", "trans_err"), "motionflow": ("rot_err", "trans_err"),
               "cami2v_abs": ("trans_err", "cammc")}
UNITS = {("cami2v", "rot_err"): "rad, summed", ("cami2v", "trans_err"): "summed", ("cami2v", "cammc"): "summed",
         ("cameractrl2", "rot_err"): "deg, mean", ("cameractrl2", "trans_err"): "GT units, mean",
         ("track2view", "rot_err"): "deg, mean", ("track2view", "trans_err"): "GT units, mean",
         ("motionflow", "rot_err"): "rad, summed", ("motionflow", "trans_err"): "summed, not normalised",
         ("cami2v_abs", "trans_err"): "summed, GT-normalised, metric", ("cami2v_abs", "cammc"): "summed, metric"}
OUTLIER_KEYS = (("cameractrl2", "rot_err"), ("track2view", "rot_err"), ("cami2v", "rot_err"), ("motionflow", "rot_err"))
_PROTOCOL_FNS = {"cami2v": metrics.cami2v_errors, "cameractrl2": metrics.cameractrl2_errors,
                 "track2view": metrics.track2view_errors, "motionflow": motionflow_errors}


@dataclasses.dataclass
class Trial:
  """One SfM run: `result` is a `camjax.geometry.sfm.SfMResult`, or None when the run failed (`error` says why)."""

  seed: int
  result: object | None
  error: str | None = None

  @property
  def num_registered(self) -> int:
    return 0 if self.result is None else len(self.result.frame_indices)


def _silence_pycolmap() -> None:
  import pycolmap

  pycolmap.logging.minloglevel = 2  # warnings and above only: COLMAP logs every image otherwise


def check_inputs(frames, cameras: Cameras) -> tuple[np.ndarray, Cameras]:
  """Validates `frames uint8 [T, H, W, 3]` against `cameras [T]` of the same image size; returns numpy copies.

  Raises:
    EvalError: wrong dtype/shape, frame and camera counts differ, or the cameras describe another image size.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise EvalError(f"camera accuracy needs uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
  if not isinstance(cameras, Cameras):
    raise EvalError(f"cameras must be camjax.geometry.Cameras, got {type(cameras).__name__}")
  cameras = cameras.numpy()
  if cameras.w2c.ndim != 3:
    raise EvalError(f"cameras must be one trajectory [T, 4, 4], got w2c of shape {cameras.w2c.shape}")
  if cameras.num_frames != len(frames):
    raise EvalError(f"{len(frames)} frames but {cameras.num_frames} cameras")
  if cameras.image_size != frames.shape[1:3]:
    raise EvalError(f"cameras describe {cameras.height}x{cameras.width} images, frames are "
                    f"{frames.shape[1]}x{frames.shape[2]} (resize the cameras with Cameras.resize)")
  return frames, cameras


def estimate_trials(frames, K, *, trials: int = 3, mapper: str = "global", seed: int = 0, num_threads: int = 1,
                    overlap: int = 10, max_error: float = 1.0) -> list[Trial]:
  """Runs `trials` SfM estimations of `frames uint8 [T, H, W, 3]` with pixel intrinsics `K [3, 3]` held fixed,
  seeds `seed, seed + 1, ...` (`camjax.geometry.sfm.estimate_cameras`, two-view RANSAC threshold `max_error`
  pixels). A run that fails is kept as a `Trial` with `result=None`; nothing is raised."""
  from camjax.geometry import sfm

  if trials < 1:
    raise EvalError(f"trials must be >= 1, got {trials}")
  if mapper not in ("global", "incremental"):
    raise EvalError(f"unknown mapper {mapper!r}: use 'global' or 'incremental'")
  _silence_pycolmap()
  out = []
  for k in range(trials):
    try:
      result = sfm.estimate_cameras(frames, K, mapper=mapper, seed=seed + k, num_threads=num_threads,
                                    overlap=overlap, max_error=max_error)
      out.append(Trial(seed=seed + k, result=result))
    except Exception as e:  # noqa: BLE001 -- pycolmap raises RuntimeError/ValueError; a failed trial is data
      out.append(Trial(seed=seed + k, result=None, error=f"{type(e).__name__}: {e}"))
  return out


def metric_scale(result, depth, K, *, frame: int = 0, min_points: int = 20) -> float:
  """Metres per SfM unit of a reconstruction, from the metric depth of one of its frames (RealCam-I2V's frame factor):
  the median over the 3D points `frame` observes of `depth / SfM depth` (`camjax.data.curate.metric.frame_factor`).

  Args:
    result: a `camjax.geometry.sfm.SfMResult` (with `frame_points`).
    depth: `[H, W]` metric depth of that frame, metres (0 or non-finite = invalid); K: `[3, 3]` its pixel intrinsics.

  Raises:
    CameraError: the frame is not registered, or fewer than `min_points` of its points land on valid depth.
  """
  from camjax.data.curate.errors import CurationError  # pylint: disable=import-outside-toplevel
  from camjax.data.curate.metric import frame_factor  # pylint: disable=import-outside-toplevel
  where = np.flatnonzero(np.asarray(result.frame_indices) == frame)
  if not len(where) or frame not in result.frame_points:
    raise CameraError(f"metric scale: frame {frame} is not registered")
  w2c = np.asarray(result.cameras.numpy().w2c[where[0]], np.float64)
  try:
    return frame_factor(np.nan_to_num(np.asarray(depth, np.float64)), result.frame_points[frame], w2c, K,
                        min_points=min_points)
  except CurationError as e:
    raise CameraError(f"metric scale from frame {frame}: {e}") from None


def _metric_errors(result, gt: Cameras, depth, K) -> dict[str, float]:
  """`cami2v_abs` of one trial (see the module docstring)."""
  est = result.cameras.numpy().scale_translation(metric_scale(result, depth, K))
  errs = metrics.cami2v_errors(est, gt, metric=True)
  return {k: float(errs[k]) for k in METRIC_KEYS["cami2v_abs"]}


def _protocol_errors(est: Cameras, gt: Cameras, protocol: str) -> tuple[dict[str, float], str | None]:
  try:
    errs = _PROTOCOL_FNS[protocol](est, gt)
    return {k: float(errs[k]) for k in METRIC_KEYS[protocol]}, None
  except CameraError as e:  # e.g. a pure rotation has no translation to normalise by
    return {k: float("nan") for k in METRIC_KEYS[protocol]}, str(e)


def reject_outliers(values: Sequence[float], k: float = 3.0, rel_floor: float = 0.1) -> np.ndarray:
  """Boolean keep-mask of `values`: with 3 or more finite values, drop those farther than `k` robust standard
  deviations (`1.4826 * MAD`, floored at `rel_floor * |median|`) from the median. NaN values are dropped."""
  x = np.asarray(values, dtype=np.float64)
  keep = np.isfinite(x)
  if keep.sum() < 3:
    return keep
  med = np.median(x[keep])
  sigma = max(1.4826 * np.median(np.abs(x[keep] - med)), rel_floor * abs(med), 1e-12)
  return keep & (np.abs(x - med) <= k * sigma)


def score_trials(trials: Sequence[Trial], cameras: Cameras, *, protocols: Sequence[str] = PROTOCOLS,
                 min_registered: float = 1.0, outlier_k: float = 3.0, metric_depth=None) -> dict:
  """Scores SfM trials against `cameras [T]` (see the module docstring for the protocol); with `metric_depth`
  (`[H, W]` metres of frame 0) also `cami2v_abs`.

  Returns:
    A dict with `trials`, `successful_trials`, `kept_trials`, `success_ratio`, `registered_ratio` (mean over trials
    of registered / T), per protocol `{metric: mean, metric + "_std": std}` (NaN when no trial succeeded),
    `per_trial` (seed, success, registered, reprojection error in pixels, error message, outlier flag, metrics),
    `best_trial` (index of the kept trial with the lowest reprojection error, or None), `estimated_cameras`
    (its `Cameras`, registered frames only) and `frame_indices` (of those frames).
  """
  protocols = _with_metric(protocols, metric_depth)
  cameras = cameras.numpy()
  T = cameras.num_frames
  per_trial = []
  for trial in trials:
    row = {"seed": trial.seed, "registered": trial.num_registered, "success": False, "outlier": False,
           "reprojection_error": None, "error": trial.error}
    if trial.result is not None:
      row["reprojection_error"] = trial.result.mean_reprojection_error
      if trial.num_registered >= min_registered * T and trial.num_registered >= 2:
        row["success"] = True
        gt = cameras.take(trial.result.frame_indices)
        for p in protocols:
          if p == "cami2v_abs":
            try:
              row[p], note = _metric_errors(trial.result, gt, metric_depth, cameras.K[0]), None
            except CameraError as e:
              row[p], note = {k: float("nan") for k in METRIC_KEYS[p]}, str(e)
          else:
            row[p], note = _protocol_errors(trial.result.cameras, gt, p)
          if note:
            row[f"{p}_note"] = note
      elif row["error"] is None:
        row["error"] = f"registered {trial.num_registered} of {T} frames (< {min_registered:.0%})"
    per_trial.append(row)

  ok = [i for i, r in enumerate(per_trial) if r["success"]]
  keep = np.zeros(len(per_trial), bool)
  keep[ok] = True
  key = next(((p, m) for p, m in OUTLIER_KEYS if p in protocols), None)
  if key is not None and ok:
    mask = reject_outliers([per_trial[i][key[0]][key[1]] for i in ok], k=outlier_k)
    if mask.any():  # all-NaN (protocol undefined for this trajectory): keep every successful trial
      keep[ok] = mask
  for i in ok:
    per_trial[i]["outlier"] = not keep[i]
  kept = np.flatnonzero(keep)

  out = {"trials": len(trials), "successful_trials": len(ok), "kept_trials": int(len(kept)),
         "success_ratio": len(ok) / max(len(trials), 1),
         "registered_ratio": float(np.mean([r["registered"] / T for r in per_trial])) if per_trial else 0.0}
  for p in protocols:
    out[p] = {}
    for m in METRIC_KEYS[p]:
      vals = np.array([per_trial[i][p][m] for i in kept], dtype=np.float64)
      vals = vals[np.isfinite(vals)]
      out[p][m] = float(vals.mean()) if len(vals) else float("nan")
      out[p][f"{m}_std"] = float(vals.std()) if len(vals) else float("nan")
  best = min(kept, key=lambda i: per_trial[i]["reprojection_error"], default=None)
  out["per_trial"] = per_trial
  out["best_trial"] = None if best is None else int(best)
  out["estimated_cameras"] = None if best is None else trials[best].result.cameras
  out["frame_indices"] = None if best is None else np.asarray(trials[best].result.frame_indices)
  return out


def _with_metric(protocols: Sequence[str], metric_depth) -> tuple[str, ...]:
  """The protocols, checked, with `cami2v_abs` added when `metric_depth` is given."""
  protocols = tuple(protocols)
  unknown = [p for p in protocols if p not in ALL_PROTOCOLS]
  if unknown:
    raise EvalError(f"unknown protocols {unknown}: choose from {ALL_PROTOCOLS}")
  if metric_depth is None:
    if "cami2v_abs" in protocols:
      raise EvalError("protocol 'cami2v_abs' needs metric_depth (the metric depth of frame 0)")
    return protocols
  if np.ndim(metric_depth) != 2:
    raise EvalError(f"metric_depth must be [H, W] metres of frame 0, got shape {np.shape(metric_depth)}")
  return protocols if "cami2v_abs" in protocols else (*protocols, "cami2v_abs")


def camera_accuracy(frames, cameras: Cameras, *, trials: int = 3, mapper: str = "global", seed: int = 0,
                    protocols: Sequence[str] = PROTOCOLS, min_registered: float = 1.0, outlier_k: float = 3.0,
                    num_threads: int = 1, overlap: int = 10, max_error: float = 1.0, metric_depth=None) -> dict:
  """Camera accuracy of a video against its conditioning cameras, over several SfM trials.

  Args:
    frames: `uint8 [T, H, W, 3]` (a generated video, or a real one for the noise floor).
    cameras: `Cameras [T]` of the same `H x W`: the conditioning / ground-truth cameras; `K[0]` (pixels) is held
      fixed in SfM.
    trials: SfM runs, seeded `seed, seed + 1, ...`.
    mapper: "global" (GLOMAP; reliable on real clips, STACK.md) or "incremental".
    seed: first seed.
    protocols: any of "cami2v", "cameractrl2", "track2view".
    min_registered: fraction of frames a reconstruction must register for the trial to succeed.
    outlier_k: outlier threshold in robust standard deviations.
    num_threads: pycolmap threads (1 = bit-reproducible).
    overlap: sequential-matching window in frames.
    max_error: two-view verification RANSAC threshold, pixels (1; COLMAP's 4 mislabels short-baseline pairs as
      planar, `camjax.geometry.sfm`).
    metric_depth: `[H, W]` metric depth of frame 0 (metres, 0 = invalid): adds `cami2v_abs` (module docstring).

  Returns:
    See `score_trials`. Never raises on a failed SfM run (it counts as a failure).

  Raises:
    EvalError: frames and cameras disagree (count, image size), bad dtype, unknown protocol or mapper.
  """
  frames, cameras = check_inputs(frames, cameras)
  protocols = _with_metric(protocols, metric_depth)
  if metric_depth is not None and np.shape(metric_depth) != frames.shape[1:3]:
    raise EvalError(f"metric_depth must be [H, W] = {frames.shape[1:3]} of the frames, got {np.shape(metric_depth)}")
  runs = estimate_trials(frames, cameras.K[0], trials=trials, mapper=mapper, seed=seed, num_threads=num_threads,
                         overlap=overlap, max_error=max_error)
  return score_trials(runs, cameras, protocols=protocols, min_registered=min_registered, outlier_k=outlier_k,
                      metric_depth=metric_depth)


def summary(result: dict) -> dict[str, float]:
  """Flat `{"cameractrl2/rot_err": mean, ...}` of a `camera_accuracy` result (for tables and metrics.json)."""
  flat = {"success_ratio": result["success_ratio"], "registered_ratio": result["registered_ratio"]}
  for p in ALL_PROTOCOLS:
    if p in result:
      for m, v in result[p].items():
        flat[f"{p}/{m}"] = v
  return flat
