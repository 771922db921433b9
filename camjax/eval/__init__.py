"""camjax.eval: the evaluation protocol (docs/evaluation.md) and `python -m camjax.eval`.

  * `camera_accuracy` — pycolmap SfM in several seeded trials, outlier rejection, RotErr/TransErr/CamMC under the
    CamI2V (summed radians), CameraCtrl II (aligned means, degrees) and Track2View protocols, SfM success ratio.
  * `motion_strength` — CameraCtrl II's mean foreground flow magnitude.
  * `psnr`, `ssim`, `appearance_consistency` — frame quality and consistency across the clips of one exploration.
  * `repeat_first_frame`, `mean_colour`, `copy_source`, `baseline_scores` — the trivial baselines every quality
    table shows next to the model, scored (`frame_quality`) on the frames after the condition frames.
  * `learned` — FVD / FID / CLIP / LPIPS networks from local TorchScript files (`LearnedMetric.from_file`).
  * `camera_following` — camera-conditioned vs null- and reversed-camera generation on procedurally rendered
    scenes, next to the trivial baselines.
  * `evaluate_dir`, `evaluate_videos`, `write_report` — a folder of videos -> report.md + metrics.json + figures.
"""

from camjax.eval.camera import PROTOCOLS, camera_accuracy, estimate_trials, reject_outliers, score_trials, summary
from camjax.eval.errors import EvalError
from camjax.eval.following import camera_following, render_scenes
from camjax.eval.learned import (LPIPS, ClipImageEncoder, I3DFeatures, InceptionFeatures, LearnedMetric,
                                 frechet_distance)
from camjax.eval.motion import motion_stats, motion_strength
from camjax.eval.quality import (BASELINES, appearance_consistency, baseline_scores, color_histogram, copy_source,
                                 frame_quality, mean_colour, psnr, repeat_first_frame, ssim)
from camjax.eval.report import (Sample, evaluate_dir, evaluate_samples, evaluate_videos, find_samples,
                                latest_step_dir, write_following_report, write_report)

__all__ = [
    "BASELINES", "ClipImageEncoder", "EvalError", "I3DFeatures", "InceptionFeatures", "LPIPS", "LearnedMetric",
    "PROTOCOLS", "Sample", "appearance_consistency", "baseline_scores", "camera_accuracy", "camera_following",
    "color_histogram", "copy_source", "estimate_trials", "evaluate_dir", "evaluate_samples", "evaluate_videos",
    "find_samples", "frame_quality", "frechet_distance", "latest_step_dir", "mean_colour", "motion_stats",
    "motion_strength", "psnr", "reject_outliers", "render_scenes", "repeat_first_frame", "score_trials", "ssim",
    "summary", "write_following_report", "write_report",
]
