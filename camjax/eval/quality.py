"""Frame quality against a ground-truth video (PSNR, SSIM) and appearance consistency across the clips of one
exploration.

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


def to_unit(x, value_range: tuple[float, float] | None = None, name: str = "video") -> np.ndarray:
  """Maps pixels to float64 `[0, 1]` following the module's convention.

  Raises:
    EvalError: a float video with values far outside `[-1, 1]` (e.g. `[0, 255]` floats) and no `value_range`.
  """
  x = np.asarray(x)
  if value_range is None:
    if x.dtype == np.uint8:
      value_range = (0.0, 255.0)
    elif np.issubdtype(x.dtype, np.floating):
      lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
      if lo < -1.05 or hi > 1.05:
        raise EvalError(f"{name}: float pixels span [{lo:.3g}, {hi:.3g}], outside [-1, 1]; pass uint8 frames or "
                        "value_range=(lo, hi)")
      value_range = (-1.0, 1.0) if lo < 0 else (0.0, 1.0)
    else:
      raise EvalError(f"{name}: pixels must be uint8 or floating, got {x.dtype}")
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
