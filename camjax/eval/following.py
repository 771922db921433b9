"""Camera following on procedurally rendered scenes: the number that says camera control works.

For a rendered scene the ground-truth video of ANY trajectory is known (`camjax.data.synthetic`), so a model given
the scene's first frame, caption and cameras can be scored directly: PSNR/SSIM of its video against the rendered
one, and the camera accuracy of its video against the cameras it was asked to follow. Each scene is generated three
times, with the cameras, with a null camera (CameraCtrl II's all-zero Plücker map) and with the REVERSED trajectory
(every motion relative to the first frame inverted: a dolly-in becomes a dolly-out, a pan left a pan right), by a
caller-supplied callable, so the comparison is model-agnostic:

    generate(first_frame uint8 [H, W, 3], cameras Cameras [T], caption str, null_camera bool) -> uint8 [T, H, W, 3]

A camera-conditioned model that follows its cameras scores a higher PSNR/SSIM, a higher SfM success ratio and lower
camera errors than the same model with the null camera. The reversed trajectory is the control that separates
following from image quality: it goes through the same camera pathway (so the same training and the same image
quality), and only a model that follows the trajectory does worse with it than with the true one.

Next to the three modes every table shows the trivial baselines of `camjax.eval.quality` on the same scenes (no
model call, no SfM): the first frame repeated (`repeat_first_frame`) and the scene's mean colour (`mean_colour`).
PSNR/SSIM of every column are on the frames after the condition frames (`skip_frames`, default 1: the I2V first
frame is the true one).

The `ground_truth_video` row (issue #16; on by default, `ground_truth_video=False` skips its SfM) is the same camera
accuracy (same trials, mapper, seeds, protocols, `min_registered`) of the scene's TRUE video against its true
cameras: the SfM floor of the protocol, the error a model that rendered the scene perfectly would get (CameraCtrl
II RotErr 0.05-0.4 degrees on 128x160 rendered clips, docs/evaluation.md). Its PSNR/SSIM would trivially be
100 dB / 1 and are not reported.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from camjax.eval.camera import PROTOCOLS, camera_accuracy, summary
from camjax.eval.errors import EvalError
from camjax.eval.following_modes import MODES  # re-exported: `following.MODES`
from camjax.eval.quality import BASELINES, frame_quality, mean_colour, repeat_first_frame
from camjax.eval.report import GROUND_TRUTH_VIDEO, write_following_report
from camjax.geometry.cameras import Cameras

_BASELINE_VIDEOS = {"repeat_first_frame": repeat_first_frame, "mean_colour": mean_colour}  # from the ground truth


def render_scenes(num_scenes: int, *, seed: int = 0, num_frames: int = 17, height: int = 128, width: int = 160,
                  trajectories: Sequence[str] | None = None) -> list:
  """`num_scenes` procedural clips (`camjax.data.synthetic.SyntheticClip`: frames, cameras, caption), scene seeds
  `seed, seed + 1, ...`; `trajectories[i]` (preset names) fixes scene i's camera path, else it is random."""
  from camjax.data import synthetic

  clips = []
  for i in range(num_scenes):
    traj = None if trajectories is None else [trajectories[i % len(trajectories)]]
    clips.append(synthetic.render_scene(seed + i, num_frames=num_frames, height=height, width=width,
                                        trajectories=traj)[0])
  return clips


def reversed_trajectory(cameras: Cameras) -> Cameras:
  """The inverse motion of `cameras` from their first frame, in the same world frame: relative poses
  `c2w_0^-1 c2w_i` become their inverses, so `c2w'_i = c2w_0 c2w_i^-1 c2w_0` (frame 0 and `K` unchanged)."""
  from camjax.geometry import se3  # pylint: disable=import-outside-toplevel

  cams = cameras.numpy()
  c2w = np.asarray(se3.invert(cams.w2c), np.float64)
  rev = c2w[:1] @ np.asarray(se3.invert(c2w), np.float64) @ c2w[:1]
  return Cameras(K=cams.K, w2c=np.asarray(se3.invert(rev)), height=cams.height, width=cams.width)


def _scene_fields(scene, index: int) -> tuple[np.ndarray, Cameras, str]:
  frames = getattr(scene, "frames", None)
  cams = getattr(scene, "cameras", None)
  if frames is None or not isinstance(cams, Cameras):
    raise EvalError(f"scene {index}: needs .frames uint8 [T, H, W, 3] and .cameras (Cameras), got "
                    f"{type(scene).__name__}")
  return np.asarray(frames), cams.numpy(), str(getattr(scene, "caption", ""))


def camera_following(generate: Callable[..., np.ndarray], scenes: Sequence, *, trials: int = 3,
                     mapper: str = "global", seed: int = 0, protocols: Sequence[str] = PROTOCOLS,
                     min_registered: float = 1.0, skip_frames: int = 1, ground_truth_video: bool = True) -> dict:
  """Scores `generate` on `scenes` with the cameras, a null camera and the reversed cameras, next to the trivial
  baselines and the ground-truth video's SfM floor (module docstring).

  Args:
    generate: `generate(first_frame, cameras, caption, null_camera) -> uint8 [T, H, W, 3]`.
    scenes: rendered clips with `.frames` (the ground-truth video), `.cameras` and `.caption` (e.g. from
      `render_scenes`, or `camjax.data.synthetic.render_scene`).
    trials, mapper, seed, protocols, min_registered: camera-accuracy settings (see `camera.camera_accuracy`).
    skip_frames: condition frames left out of PSNR/SSIM (frames `skip_frames..T-1` are scored).
    ground_truth_video: also score the scenes' true videos' camera accuracy (the `"ground_truth_video"` row; one more
      `camera_accuracy` per scene, about a third more SfM time).

  Returns:
    `{"camera": {...}, "null_camera": {...}, "reversed_camera": {...}, "repeat_first_frame": {...},
    "mean_colour": {...}, "ground_truth_video": {...}, "comparison": {...}, "num_scenes", "skip_frames",
    "per_scene": [...]}`: for each mode (all scored against the scene's true video and cameras) the mean over scenes
    of `psnr` (dB), `ssim`, `success_ratio` and every camera metric (`"cameractrl2/rot_err"`, ...; NaN-skipping
    means over the scenes where SfM succeeded); for each baseline the mean `psnr` and `ssim` only (no SfM); for
    `"ground_truth_video"` (only with `ground_truth_video`) the mean `success_ratio`, `registered_ratio` and every
    camera metric of the true video (no PSNR/SSIM). `comparison` (see `compare`):
    `true_beats_reversed` (number of scenes), mean `psnr_true_minus_reversed` / `psnr_true_minus_null` (dB) and
    `model_beats[baseline]["psnr" | "ssim"]` (bools). `per_scene` holds each scene's numbers (with its
    `true_beats_reversed`, `psnr_true_minus_reversed`, `psnr_true_minus_null`), the videos (`"videos"`, modes and
    baselines), the ground truth, its cameras and the best SfM estimate per mode and of the ground-truth video
    (`"estimated"`), for `report.write_following_report`.

  Raises:
    EvalError: a scene lacks frames/cameras, or `generate` returns a video of the wrong shape or dtype.
  """
  if not scenes:
    raise EvalError("camera_following needs at least one scene")
  per_scene = []
  for i, scene in enumerate(scenes):
    gt, cams, caption = _scene_fields(scene, i)
    row = {"scene": i, "caption": caption, "trajectory": getattr(scene, "trajectory", ""), "videos": {},
           "ground_truth": gt, "cameras": cams, "estimated": {}}
    for mode in MODES:
      asked = reversed_trajectory(cams) if mode == "reversed_camera" else cams
      video = np.asarray(generate(gt[0], asked, caption, null_camera=mode == "null_camera"))
      if video.shape != gt.shape or video.dtype != np.uint8:
        raise EvalError(f"scene {i} ({mode}): generate returned {video.dtype} {video.shape}, expected uint8 "
                        f"{gt.shape}")
      quality = frame_quality(video, gt, skip_frames=skip_frames)
      acc = camera_accuracy(video, cams, trials=trials, mapper=mapper, seed=seed, protocols=protocols,
                            min_registered=min_registered)
      row[mode] = {**quality, **summary(acc)}
      row["videos"][mode] = video
      row["estimated"][mode] = acc["estimated_cameras"]
    if ground_truth_video:  # the SfM floor: the same protocol on the true video
      acc = camera_accuracy(gt, cams, trials=trials, mapper=mapper, seed=seed, protocols=protocols,
                            min_registered=min_registered)
      row[GROUND_TRUTH_VIDEO] = summary(acc)
      row["estimated"][GROUND_TRUTH_VIDEO] = acc["estimated_cameras"]
    for name, make in _BASELINE_VIDEOS.items():
      row["videos"][name] = make(gt)
      row[name] = frame_quality(row["videos"][name], gt, skip_frames=skip_frames)
    row["psnr_true_minus_reversed"] = row["camera"]["psnr"] - row["reversed_camera"]["psnr"]
    row["psnr_true_minus_null"] = row["camera"]["psnr"] - row["null_camera"]["psnr"]
    row["true_beats_reversed"] = bool(row["psnr_true_minus_reversed"] > 0)
    per_scene.append(row)
  out = {"per_scene": per_scene, "num_scenes": len(per_scene), "skip_frames": skip_frames}
  for mode in (*MODES, *BASELINES, *((GROUND_TRUTH_VIDEO,) if ground_truth_video else ())):
    out[mode] = {}
    for k in per_scene[0][mode]:
      vals = np.array([r[mode][k] for r in per_scene], dtype=np.float64)
      out[mode][k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
  out["comparison"] = compare(out)
  return out


def compare(result: dict) -> dict:
  """The controls of a `camera_following` result: does the model follow the trajectory, and does it beat a video
  that does nothing?

  Returns:
    `{"num_scenes", "true_beats_reversed"` (scenes where the true camera's PSNR is above the reversed camera's),
    `"psnr_true_minus_reversed", "psnr_true_minus_null"` (means over scenes, dB), `"model_beats": {baseline:
    {"psnr": bool, "ssim": bool}}` (the camera-conditioned mean above the baseline's mean)`}`.
  """
  rows = result["per_scene"]
  return {
      "num_scenes": len(rows),
      "true_beats_reversed": int(sum(r["true_beats_reversed"] for r in rows)),
      "psnr_true_minus_reversed": float(np.mean([r["psnr_true_minus_reversed"] for r in rows])),
      "psnr_true_minus_null": float(np.mean([r["psnr_true_minus_null"] for r in rows])),
      "model_beats": {b: {k: bool(result["camera"][k] > result[b][k]) for k in ("psnr", "ssim")}
                      for b in BASELINES},
  }


def run_following(generate: Callable[..., np.ndarray], num_scenes: int, out_dir, *, num_frames: int, height: int,
                  width: int, seed: int = 0, **opts) -> dict:
  """Camera following of a model on `num_scenes` held-out procedural scenes (scene seeds from 2,000,000 + `seed`,
  never used for training), report written to `out_dir` (`report.write_following_report`).

  Args:
    generate: as in `camera_following` (e.g. `camjax.explore.Explorer.following_generator()`).
    num_frames, height, width: the model's window.
    seed: scene and SfM seed.
    **opts: `trials`, `mapper`, `protocols`, `min_registered`, `skip_frames`, `ground_truth_video` (default True: the
      ground-truth video's SfM floor) of `camera_following`.

  Returns:
    `camera_following`'s result.
  """
  scenes = render_scenes(num_scenes, seed=2_000_000 + seed, num_frames=num_frames, height=height, width=width)
  result = camera_following(generate, scenes, seed=seed, **opts)
  write_following_report(out_dir, result)
  return result
