"""Frame quality against a ground-truth video (PSNR, SSIM), the trivial baselines every quality table shows next to
the model (`repeat_first_frame`, `mean_colour`, `copy_source`; `baseline_scores`), and appearance consistency across
the clips of one exploration.

Pixel convention (every function here): `uint8` videos are read as `[0, 255]`; floating videos as `[-1, 1]` when
they hold a negative value, else `[0, 1]` (pass `value_range=(lo, hi)` to say it explicitly, which is safer for a
`[-1, 1]` video that happens to be non-negative). Both inputs are mapped to `[0, 1]` and clipped there before
comparison, so a uint8 video and its `[-1, 1]` float version give the same numbers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from camjax.eval.errors import EvalError

PSNR_MAX_DB = 100.0  # PSNR of identical images (MSE floored at 1e-10 on [0, 1] pixels)


def value_range_of(x, value_range: tuple[float, float] | None = None, name: str = "video") -> tuple[float, float]:
  """The pixel range `(lo, hi)` of `x` under the module's convention (`value_range` when given).

  Raises:
    EvalError: a float video with values far outside `[-1, 1]` (e.g. `[0, 255]` floats) and no `value_range`, or
      pixels neither uint8 nor floating.
  """
  if value_range is not None:
    return value_range
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return (0.0, 255.0)
  if np.issubdtype(x.dtype, np.floating):
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    if lo < -1.05 or hi > 1.05:
      raise EvalError(f"{name}: float pixels span [{lo:.3g}, {hi:.3g}], outside [-1, 1]; pass uint8 frames or "
                      "value_range=(lo, hi)")
    return (-1.0, 1.0) if lo < 0 else (0.0, 1.0)
  raise EvalError(f"{name}: pixels must be uint8 or floating, got {x.dtype}")


def to_unit(x, value_range: tuple[float, float] | None = None, name: str = "video") -> np.ndarray:
  """Maps pixels to float64 `[0, 1]` following the module's convention (see `value_range_of`).

  Raises:
    EvalError: a float video with values far outside `[-1, 1]` (e.g. `[0, 255]` floats) and no `value_range`.
  """
  x = np.asarray(x)
  value_range = value_range_of(x, value_range, name)
  lo, hi = value_range
  if not hi > lo:
    raise EvalError(f"{name}: value_range {value_range} must have hi > lo")
  return np.clip((x.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)


def to_uint8(x, value_range: tuple[float, float] | None = None) -> np.ndarray:
  """Pixels as uint8 `[0, 255]` (module convention; uint8 input is returned unchanged)."""
  x = np.asarray(x)
  return x if x.dtype == np.uint8 else np.round(to_unit(x, value_range) * 255.0).astype(np.uint8)


def _pair(a, b, value_range) -> tuple[np.ndarray, np.ndarray]:
  a, b = np.asarray(a), np.asarray(b)
  if a.shape != b.shape:
    raise EvalError(f"videos differ in shape: {a.shape} vs {b.shape}")
  if a.ndim < 3 or a.shape[-1] not in (1, 3):
    raise EvalError(f"expected images [..., H, W, C] with C in (1, 3), got shape {a.shape}")
  return to_unit(a, value_range, "first video"), to_unit(b, value_range, "second video")


def psnr_per_frame(a, b, value_range: tuple[float, float] | None = None) -> np.ndarray:
  """PSNR in dB of every image `[...]` of `a, b [..., H, W, C]`: `10 log10(1 / MSE)` on `[0, 1]` pixels, capped at
  `PSNR_MAX_DB` for identical images."""
  a, b = _pair(a, b, value_range)
  mse = np.mean((a - b) ** 2, axis=(-3, -2, -1))
  return np.minimum(10.0 * np.log10(1.0 / np.maximum(mse, 1e-10)), PSNR_MAX_DB)


def psnr(a, b, value_range: tuple[float, float] | None = None) -> float:
  """Mean over frames of the per-frame PSNR (dB) of videos `a, b [..., T, H, W, C]` (see the module convention)."""
  return float(np.mean(psnr_per_frame(a, b, value_range)))


def _gaussian_filter(x: np.ndarray, sigma: float) -> np.ndarray:
  from scipy.ndimage import gaussian_filter

  # Blur H and W only (axes -3, -2 of [..., H, W, C]); truncate 3.5 sigma = the 11-tap window for sigma 1.5.
  sig = [0.0] * x.ndim
  sig[-3] = sig[-2] = sigma
  return gaussian_filter(x, sig, mode="reflect", truncate=3.5)


def ssim_per_frame(a, b, value_range: tuple[float, float] | None = None, *, sigma: float = 1.5, k1: float = 0.01,
                   k2: float = 0.03) -> np.ndarray:
  """SSIM of every image of `a, b [..., H, W, C]` (Wang et al. 2004, eq. 13), per channel then averaged.

  Local statistics use a Gaussian window (`sigma` 1.5, 11 taps) with population (co)variances; `C1 = (k1 L)^2`,
  `C2 = (k2 L)^2` with `L = 1` on `[0, 1]` pixels; the SSIM map is averaged over pixels at least 5 (the window
  radius) from the border, as scikit-image's `structural_similarity(gaussian_weights=True)` does.

  Raises:
    EvalError: images smaller than the 11 x 11 window.
  """
  a, b = _pair(a, b, value_range)
  pad = int(3.5 * sigma + 0.5)
  if a.shape[-3] <= 2 * pad or a.shape[-2] <= 2 * pad:
    raise EvalError(f"SSIM needs images larger than {2 * pad + 1}x{2 * pad + 1}, got {a.shape[-3]}x{a.shape[-2]}")
  c1, c2 = k1**2, k2**2
  mu_a, mu_b = _gaussian_filter(a, sigma), _gaussian_filter(b, sigma)
  var_a = _gaussian_filter(a * a, sigma) - mu_a**2
  var_b = _gaussian_filter(b * b, sigma) - mu_b**2
  cov = _gaussian_filter(a * b, sigma) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
  return s[..., pad:-pad, pad:-pad, :].mean(axis=(-3, -2, -1))


def ssim(a, b, value_range: tuple[float, float] | None = None) -> float:
  """Mean over frames of the per-frame SSIM of videos `a, b [..., T, H, W, C]` (see `ssim_per_frame`)."""
  return float(np.mean(ssim_per_frame(a, b, value_range)))


def color_histogram(video, bins: int = 8, value_range: tuple[float, float] | None = None) -> np.ndarray:
  """Normalised joint RGB histogram `[bins**3]` of all pixels of `video [..., H, W, 3]` (sums to 1)."""
  x = to_unit(video, value_range)
  if x.shape[-1] != 3:
    raise EvalError(f"colour histogram needs RGB [..., H, W, 3], got shape {x.shape}")
  q = np.minimum((x * bins).astype(np.int64), bins - 1).reshape(-1, 3)
  hist = np.bincount(q[:, 0] * bins * bins + q[:, 1] * bins + q[:, 2], minlength=bins**3).astype(np.float64)
  return hist / hist.sum()


def appearance_consistency(clips: Sequence[np.ndarray], *, overlap: int = 0, encoder=None, bins: int = 8,
                           value_range: tuple[float, float] | None = None) -> dict[str, float]:
  """Appearance consistency of the clips of one exploration (clip `i + 1` continues clip `i`).

  * `color_hist_intersection`: mean over consecutive pairs of `sum_b min(h_i(b), h_{i+1}(b))` of the joint RGB
    histograms (`bins` per channel) of each whole clip; 1 = identical colour distributions, 0 = disjoint.
  * `overlap_psnr`, `overlap_ssim` (only when `overlap > 0`): PSNR/SSIM between the last `overlap` frames of clip
    `i` and the first `overlap` frames of clip `i + 1`, i.e. how well each continuation reproduces its condition
    frames (CameraCtrl II sec. 3.4 conditions clip `i + 1` on the last frames of clip `i`).
  * `feature_cosine` (only with `encoder`): CameraCtrl II's appearance consistency (sec. 4.2, 5)): each clip's
    feature is the mean of `encoder(frames)` over its frames; the score is the mean cosine similarity over all
    pairs of clips. `encoder` maps `uint8 [T, H, W, 3]` to `[T, D]` features, e.g. a loaded
    `camjax.eval.learned.ClipImageEncoder`.

  Args:
    clips: `N >= 2` videos `[T_i, H, W, 3]` of the same size (uint8 or float, module convention).

  Raises:
    EvalError: fewer than 2 clips, sizes differ, or `overlap` exceeds a clip length.
  """
  clips = [np.asarray(c) for c in clips]
  if len(clips) < 2:
    raise EvalError(f"appearance consistency needs at least 2 clips of one exploration, got {len(clips)}")
  for i, c in enumerate(clips):
    if c.ndim != 4 or c.shape[1:] != clips[0].shape[1:]:
      raise EvalError(f"clip {i} has shape {c.shape}, clip 0 {clips[0].shape}: need [T, H, W, 3] of one size")
    if overlap > len(c):
      raise EvalError(f"overlap {overlap} exceeds the {len(c)} frames of clip {i}")
  hists = [color_histogram(c, bins, value_range) for c in clips]
  out = {"color_hist_intersection": float(np.mean([np.minimum(h0, h1).sum() for h0, h1 in zip(hists, hists[1:])]))}
  if overlap > 0:
    pairs = [(c0[len(c0) - overlap:], c1[:overlap]) for c0, c1 in zip(clips, clips[1:])]
    out["overlap_psnr"] = float(np.mean([psnr(a, b, value_range) for a, b in pairs]))
    out["overlap_ssim"] = float(np.mean([ssim(a, b, value_range) for a, b in pairs]))
  if encoder is not None:
    feats = []
    for c in clips:
      f = np.asarray(encoder(to_uint8(c, value_range)), dtype=np.float64)
      if f.ndim != 2 or len(f) != len(c):
        raise EvalError(f"encoder returned features of shape {f.shape} for {len(c)} frames, expected [T, D]")
      feats.append(f.mean(0))
    feats = np.stack(feats)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)
    sim = feats @ feats.T
    iu = np.triu_indices(len(feats), k=1)
    out["feature_cosine"] = float(sim[iu].mean())
  return out


# ------------------------------------------------------------------------------------------- trivial baselines
# Every quality table shows these next to the model, scored on the same clips (issue 16): a number means little
# until the reader sees what a video that does nothing scores.
BASELINES = ("repeat_first_frame", "mean_colour")  # needs only the ground truth
BASELINE_NAMES = {"model": "model", "repeat_first_frame": "repeat first frame", "mean_colour": "mean colour",
                  "copy_source": "copy the source"}


def _video(video, name: str) -> np.ndarray:
  v = np.asarray(video)
  if v.ndim != 4 or v.shape[0] < 1 or v.shape[-1] not in (1, 3):
    raise EvalError(f"{name}: expected a video [T, H, W, C] with T >= 1 and C in (1, 3), got shape {v.shape}")
  return v


def repeat_first_frame(video) -> np.ndarray:
  """The frozen video: frame 0 of `video [T, H, W, C]` repeated `T` times, `[T, H, W, C]` of the same dtype.

  What an I2V model that ignores its cameras and never moves scores (its first frame is the true one).

  Raises:
    EvalError: `video` is not `[T, H, W, C]`.
  """
  v = _video(video, "video")
  return np.repeat(v[:1], len(v), axis=0)


def mean_colour(video) -> np.ndarray:
  """The structureless video: every pixel of every frame is the mean colour of `video [T, H, W, C]` over all its
  frames and pixels; `[T, H, W, C]`, uint8 (rounded) when `video` is uint8, else `video`'s float dtype.

  Applied to the ground truth this knows the true colour balance and nothing else (no edge, no motion).

  Raises:
    EvalError: `video` is not `[T, H, W, C]`.
  """
  v = _video(video, "video")
  mean = v.astype(np.float64).mean(axis=(0, 1, 2))
  mean = np.round(mean).astype(np.uint8) if v.dtype == np.uint8 else mean.astype(v.dtype)
  return np.broadcast_to(mean, v.shape).copy()


def copy_source(source_video) -> np.ndarray:
  """The video-to-video baseline: the source video itself, unchanged (`[T, H, W, C]` in, the same array out).

  Raises:
    EvalError: `source_video` is not `[T, H, W, C]`.
  """
  return _video(source_video, "source video")


def frames_label(skip_frames: int) -> str:
  """How a table header names the frames that PSNR/SSIM are computed on, e.g. "frames 1..T-1"."""
  return "frames 0..T-1, all" if skip_frames == 0 else f"frames {skip_frames}..T-1"


def frame_quality(video, gt, *, skip_frames: int = 1, value_range: tuple[float, float] | None = None
                  ) -> dict[str, float]:
  """PSNR (dB) and SSIM of `video` against `gt`, both `[T, H, W, C]`, on frames `skip_frames..T-1` only.

  The first `skip_frames` frames are the condition frames (an I2V model's clean first frame is copied from the
  ground truth), which would otherwise lift every score towards 100 dB / 1. Each video is mapped to `[0, 1]` on
  ALL its frames (module convention) before the condition frames are dropped.

  Returns:
    `{"psnr": dB, "ssim": unitless}`, means over the frames scored.

  Raises:
    EvalError: shapes differ, not `[T, H, W, C]`, or `skip_frames` not in `[0, T)`.
  """
  a, b = _video(video, "video"), _video(gt, "ground truth")
  if a.shape != b.shape:
    raise EvalError(f"video shape {a.shape} differs from the ground truth's {b.shape}")
  _check_skip(skip_frames, len(b))
  a, b = to_unit(a, value_range, "video")[skip_frames:], to_unit(b, value_range, "ground truth")[skip_frames:]
  return {"psnr": psnr(a, b, (0.0, 1.0)), "ssim": ssim(a, b, (0.0, 1.0))}


def _check_skip(skip_frames, num_frames: int) -> None:
  if isinstance(skip_frames, bool) or not isinstance(skip_frames, (int, np.integer)) or \
      not 0 <= skip_frames < num_frames:
    raise EvalError(f"skip_frames must be an integer in [0, {num_frames}) for a {num_frames}-frame video (frames "
                    f"after the condition frames are scored), got {skip_frames!r}")


def baseline_scores(gt, generated=None, *, source=None, skip_frames: int = 1,
                    value_range: tuple[float, float] | None = None) -> dict[str, dict[str, float]]:
  """PSNR (dB) and SSIM against the ground truth of the model and of the trivial baselines, on the same frames.

  Every video is scored with `frame_quality` on frames `skip_frames..T-1` (the frames after the condition frames).
  The baselines are built from the ground truth (`repeat_first_frame(gt)`, `mean_colour(gt)`) and, for
  video-to-video, from the source (`copy_source(source)`); they are scored in the ground truth's pixel range.

  Args:
    gt: the ground-truth video `[T, H, W, C]`.
    generated: the model's video `[T, H, W, C]`, or None for the baselines alone.
    source: the source video of a video-to-video task `[T, H, W, C]`, or None.
    skip_frames: condition frames left out of every score (default 1: the I2V first frame).
    value_range: pixel range of every video (module convention when None).

  Returns:
    `{"model": {"psnr", "ssim"}` (only with `generated`), `"repeat_first_frame": {...}, "mean_colour": {...},
    "copy_source": {...}` (only with `source`)`}`.

  Raises:
    EvalError: a video is not `[T, H, W, C]` of the ground truth's shape, or a bad `skip_frames`.
  """
  gt = _video(gt, "ground truth")
  gt_range = value_range_of(gt, value_range, "ground truth")
  out = {}
  if generated is not None:
    out["model"] = frame_quality(generated, gt, skip_frames=skip_frames, value_range=value_range)
  else:
    _check_skip(skip_frames, len(gt))
  # Baselines are built in the ground truth's range: a mean-colour video of a [-1, 1] clip may hold no negative
  # value, which the convention alone would read as [0, 1].
  out["repeat_first_frame"] = frame_quality(repeat_first_frame(gt), gt, skip_frames=skip_frames, value_range=gt_range)
  out["mean_colour"] = frame_quality(mean_colour(gt), gt, skip_frames=skip_frames, value_range=gt_range)
  if source is not None:
    src = copy_source(source)
    out["copy_source"] = frame_quality(to_unit(src, value_range, "source video"), to_unit(gt, gt_range),
                                       skip_frames=skip_frames, value_range=(0.0, 1.0))
  return out
