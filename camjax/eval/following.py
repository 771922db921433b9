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
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from camjax.eval.camera import PROTOCOLS, camera_accuracy, summary
from camjax.eval.errors import EvalError
from camjax.eval.quality import psnr, ssim
from camjax.geometry.cameras import Cameras

MODES = ("camera", "null_camera", "reversed_camera")


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
                     min_registered: float = 1.0) -> dict:
  """Scores `generate` on `scenes` with the cameras, a null camera and the reversed cameras (module docstring).

  Args:
    generate: `generate(first_frame, cameras, caption, null_camera) -> uint8 [T, H, W, 3]`.
    scenes: rendered clips with `.frames` (the ground-truth video), `.cameras` and `.caption` (e.g. from
      `render_scenes`, or `camjax.data.synthetic.render_scene`).
    trials, mapper, seed, protocols, min_registered: camera-accuracy settings (see `camera.camera_accuracy`).

  Returns:
    `{"camera": {...}, "null_camera": {...}, "reversed_camera": {...}, "per_scene": [...]}`: for each mode (all
    scored against the scene's true video and cameras) the mean over scenes of `psnr`
    (dB), `ssim`, `success_ratio` and every camera metric (`"cameractrl2/rot_err"`, ...; NaN-skipping means over the
    scenes where SfM succeeded); `per_scene` holds each scene's numbers, the generated videos (`"videos"`), the
    ground truth, its cameras and the best SfM estimate per mode (`"estimated"`), for
    `report.write_following_report`.

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
      acc = camera_accuracy(video, cams, trials=trials, mapper=mapper, seed=seed, protocols=protocols,
                            min_registered=min_registered)
      row[mode] = {"psnr": psnr(video, gt), "ssim": ssim(video, gt), **summary(acc)}
      row["videos"][mode] = video
      row["estimated"][mode] = acc["estimated_cameras"]
    per_scene.append(row)
  out = {"per_scene": per_scene, "num_scenes": len(per_scene)}
  for mode in MODES:
    keys = per_scene[0][mode].keys()
    out[mode] = {}
    for k in keys:
      vals = np.array([r[mode][k] for r in per_scene], dtype=np.float64)
      out[mode][k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
  return out


def run_following(generate: Callable[..., np.ndarray], num_scenes: int, out_dir, *, num_frames: int, height: int,
                  width: int, seed: int = 0, **opts) -> dict:
  """Camera following of a model on `num_scenes` held-out procedural scenes (scene seeds from 2,000,000 + `seed`,
  never used for training), report written to `out_dir` (`report.write_following_report`).

  Args:
    generate: as in `camera_following` (e.g. `camjax.explore.Explorer.following_generator()`).
    num_frames, height, width: the model's window.
    seed: scene and SfM seed.
    **opts: `trials`, `mapper`, `protocols`, `min_registered` of `camera_following`.

  Returns:
    `camera_following`'s result.
  """
  from camjax.eval.report import write_following_report  # pylint: disable=import-outside-toplevel

  scenes = render_scenes(num_scenes, seed=2_000_000 + seed, num_frames=num_frames, height=height, width=width)
  result = camera_following(generate, scenes, seed=seed, **opts)
  write_following_report(out_dir, result)
  return result
