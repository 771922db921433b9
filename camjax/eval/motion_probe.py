"""Do MotionFlow's reference motion maps carry optical flow? The probe of the paper's Fig. 6 (papers/001, sec. 4.4).

    python -m camjax.eval.motion_probe --workdir W [--scenes 8] [--out D] [--step -1]

The paper decodes its reference motion maps (RMMs), sees salient motion in them, and checks the reading with a toy
experiment: optical flow estimated on one generated video, a shallow decoder (3 deconvolutions + 2 convolutions, L1,
Adam, 1k epochs) trained on the first 12 (RMM, flow) pairs and shown the last 2. camjax makes that a measurement with
controls:

* Flow: OpenCV DIS (`dis_flow`, preset MEDIUM: the paper's flow, "de Armas, 2019", is OpenCV's optical flow; DIS is
  OpenCV's dense one, 0.22 px EPE on camjax's synthetic check) between consecutive GENERATED frames, `[T-1, H, W, 2]`
  pixels (x right, y down), flow `f` taking frame `f` to frame `f + 1`.
* Maps: `camjax.methods.motionflow.reference_maps` (the video DiT's reference-attention inputs `[layers, B, t h w, D]`;
  video layers that share a reference layer are kept once) of the conditional set (image + text) at ONE sampling
  step, `step` (default -1: the last DDIM step, the lowest noise level, where the latent is closest to the frames the
  flow is measured on). The sampler's own `x_t` at that step is captured by a hook (`_CapturingObjective`), so the
  maps are exactly those the video network read there, for `reference.input="video"` as well as for `"image"` (where
  they depend on the step's timestep only). The report names the step's timestep.
* Pairing: flow `f` (frame `f` -> `f + 1`) gets the maps of both its frames, concatenated along channels
  (`[h', w', 2 C]` per token): the maps are per frame, the flow is a difference of frames. Video frame `f` is latent
  frame `ceil(f / temporal_factor)` (camjax's causal autoencoders).
* Probe (`RidgeProbe`): the light decoder is a closed-form ridge regression, each token's features -> the flow of its
  `cell x cell` pixel block (a linear transposed convolution with kernel = stride = the token's pixel size, weights
  shared over positions), features z-scored per channel on the training pairs, and a per-position intercept (features
  and flow centred per token position on the training pairs). With an infinite penalty it is exactly the "mean
  training flow" baseline, so any gain over that baseline comes from the features. Ridge rather than the paper's
  nonlinear decoder: it is deterministic, fits in milliseconds on a CPU, and cannot be under-trained; the penalty is
  chosen on the last training pair of every clip from a grid (then refit on all training pairs). A linear probe
  bounds what the maps hold from below.
* Split: the first `train_fraction` (half) of each clip's flow pairs train, the remaining pairs test (the paper:
  first 12 train, last 2 test, one video); clips are pooled. Error: end-point error (EPE, mean pixel distance between
  predicted and DIS flow) on the test pairs.
* Control: the same probe on random features of the same shape with each channel's mean and std matched to the
  motion maps' (over all pairs): "noise-level-matched" random features, `random_seeds` draws averaged. Baselines:
  zero flow and the per-pixel mean training flow.

`probe_report` also fits the probe to DIS flow of the scenes' TRUE videos (`epe_ground_truth_flow`): maps can encode
the requested camera motion while the samples do not show it. It writes `report.md`, `metrics.json` (`epe`:
motion_maps / random_features / zero_flow / mean_flow) and
`probe.png` (one scene's test pairs: frame f, frame f+1, DIS flow, maps probe, random-features probe; flow colours:
hue = direction, brightness = magnitude, one scale per figure).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from camjax.eval.errors import EvalError

log = logging.getLogger("camjax.eval.motion_probe")

DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}  # cv2.DISOPTICAL_FLOW_PRESET_*
# Ridge penalties tried, in units of the mean squared (z-scored) feature norm per sample.
LAMBDAS = tuple(10.0 ** k for k in range(-4, 4))
DEFAULT_LAMBDA = 1.0
EPE_KEYS = ("motion_maps", "random_features", "zero_flow", "mean_flow")
PROBE_SEED = 5_000_000


class MotionProbeError(EvalError):
  """Bad input to the motion-map probe: a video / flow / feature array of the wrong shape or dtype, too few pairs to
  split, a run whose method has no reference maps or whose autoencoder cannot decode frames."""


# ----------------------------------------------------------------------------------------------------------------------
# Optical flow
# ----------------------------------------------------------------------------------------------------------------------


def dis_flow(video, preset: str = "medium") -> np.ndarray:
  """OpenCV DIS optical flow between consecutive frames (Kroeger et al. 2016; `cv2.DISOpticalFlow_create`).

  Args:
    video: uint8 `[T, H, W, 3]` RGB frames, `T >= 2`.
    preset: "ultrafast" | "fast" | "medium" (`cv2.DISOPTICAL_FLOW_PRESET_*`; MEDIUM by default).

  Returns:
    float32 `[T-1, H, W, 2]`: flow `f` in pixels (x right, y down) with `frame_f(p) ~ frame_{f+1}(p + flow_f(p))`.

  Raises:
    MotionProbeError: not uint8, not `[T, H, W, 3]`, fewer than 2 frames, or an unknown preset.
  """
  import cv2  # pylint: disable=import-outside-toplevel

  video = np.asarray(video)
  if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < 2:
    raise MotionProbeError(f"dis_flow: video must be uint8 [T >= 2, H, W, 3], got {video.dtype} {video.shape}")
  if preset not in DIS_PRESETS:
    raise MotionProbeError(f"dis_flow: unknown preset {preset!r}, one of {sorted(DIS_PRESETS)}")
  dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
  gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in video]
  return np.stack([dis.calc(a, b, None) for a, b in zip(gray[:-1], gray[1:])]).astype(np.float32)


def end_point_error(pred, flow) -> float:
  """Mean end-point error in pixels: the mean over pixels of `||pred - flow||_2`, both `[..., 2]`.

  Raises:
    MotionProbeError: shapes differ or the last axis is not 2.
  """
  pred, flow = np.asarray(pred, np.float64), np.asarray(flow, np.float64)
  if pred.shape != flow.shape or flow.shape[-1] != 2:
    raise MotionProbeError(f"end_point_error: pred {pred.shape} and flow {flow.shape} must match, [..., 2]")
  return float(np.linalg.norm(pred - flow, axis=-1).mean())


# ----------------------------------------------------------------------------------------------------------------------
# The probe
# ----------------------------------------------------------------------------------------------------------------------


def _check_pairs(features, flow, where: str) -> tuple[np.ndarray, np.ndarray, int]:
  features, flow = np.asarray(features, np.float64), np.asarray(flow, np.float64)
  if features.ndim != 5 or flow.ndim != 5 or flow.shape[-1] != 2 or features.shape[:2] != flow.shape[:2]:
    raise MotionProbeError(f"{where}: features must be [N, P, h, w, C] and flow [N, P, H, W, 2] with the same N, P; "
                           f"got {features.shape} and {flow.shape}")
  (h, w), (H, W) = features.shape[2:4], flow.shape[2:4]
  if H % h or W % w or H // h != W // w:
    raise MotionProbeError(f"{where}: the flow's {H}x{W} pixels must be square cells of the {h}x{w} feature grid")
  return features, flow, H // h


def _patches(flow: np.ndarray, cell: int) -> np.ndarray:
  """`[M, H, W, 2]` -> `[M, h, w, cell cell 2]` (the flow of each token's pixel block)."""
  m, H, W, _ = flow.shape
  x = flow.reshape(m, H // cell, cell, W // cell, cell, 2).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(m, H // cell, W // cell, cell * cell * 2)


def _unpatch(patches: np.ndarray, cell: int) -> np.ndarray:
  m, h, w, _ = patches.shape
  return patches.reshape(m, h, w, cell, cell, 2).transpose(0, 1, 3, 2, 4, 5).reshape(m, h * cell, w * cell, 2)


@dataclasses.dataclass
class RidgeProbe:
  """A linear flow decoder fitted in closed form: per token, z-scored features `[C]` -> the flow of its `cell x cell`
  pixel block `[cell cell 2]` (weights shared over positions: a transposed convolution with kernel = stride = cell),
  plus a per-position intercept. Ridge penalty `lam` times the mean squared feature norm. See the module docstring.

  Attributes (after `fit`): cell, mean / std (per channel), feature_mean `[h, w, C]`, flow_mean `[h, w, cell cell 2]`
  (both per position, of the z-scored features / the flow), weights `[C, cell cell 2]`, lam.
  """

  lam: float = DEFAULT_LAMBDA
  cell: int = 0
  mean: Any = None
  std: Any = None
  feature_mean: Any = None
  flow_mean: Any = None
  weights: Any = None

  def _z(self, features: np.ndarray) -> np.ndarray:
    return (features - self.mean) / self.std - self.feature_mean

  def fit(self, features, flow) -> "RidgeProbe":
    """Fits on `features [M, h, w, C]` and `flow [M, H, W, 2]` (pixels; `H = cell h`, `W = cell w`).

    Raises:
      MotionProbeError: shapes that do not fit.
    """
    features, flow, self.cell = _check_pairs(features[None], flow[None], "RidgeProbe.fit")
    features, flow = features[0], flow[0]
    c = features.shape[-1]
    self.mean = features.reshape(-1, c).mean(0)
    self.std = features.reshape(-1, c).std(0) + 1e-8
    self.feature_mean = ((features - self.mean) / self.std).mean(0)
    y = _patches(flow, self.cell)
    self.flow_mean = y.mean(0)
    x = self._z(features).reshape(-1, c)
    y = (y - self.flow_mean).reshape(x.shape[0], -1)
    scale = float((x ** 2).sum(1).mean()) or 1.0
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    self.weights = vt.T @ ((s / (s ** 2 + self.lam * scale))[:, None] * (u.T @ y))
    return self

  def predict(self, features) -> np.ndarray:
    """`features [M, h, w, C]` -> flow `[M, H, W, 2]` pixels.

    Raises:
      MotionProbeError: called before `fit`, or features of another grid / width.
    """
    if self.weights is None:
      raise MotionProbeError("RidgeProbe.predict before fit")
    features = np.asarray(features, np.float64)
    if features.ndim != 4 or features.shape[1:] != self.feature_mean.shape:
      raise MotionProbeError(f"RidgeProbe.predict: features must be [M, {', '.join(map(str, self.feature_mean.shape))}]"
                             f", got {features.shape}")
    return _unpatch(self._z(features) @ self.weights + self.flow_mean, self.cell).astype(np.float32)


def split_pairs(num_pairs: int, train_fraction: float = 0.5) -> int:
  """How many of a clip's first flow pairs train (at least 1, leaving at least 1 to test).

  Raises:
    MotionProbeError: fewer than 2 pairs, or a fraction outside (0, 1).
  """
  if num_pairs < 2 or not 0.0 < train_fraction < 1.0:
    raise MotionProbeError(f"split_pairs: need >= 2 flow pairs per clip and 0 < train_fraction < 1, got {num_pairs} "
                           f"pairs and {train_fraction}")
  return min(max(int(round(num_pairs * train_fraction)), 1), num_pairs - 1)


def fit_probe(features, flow, num_train: int, lambdas=LAMBDAS) -> RidgeProbe:
  """A `RidgeProbe` on the first `num_train` pairs of every clip (`features [N, P, h, w, C]`, `flow [N, P, H, W, 2]`),
  its penalty chosen from `lambdas` by EPE on pair `num_train - 1` of every clip after fitting on the pairs before it,
  then refit on all `num_train` pairs (with one training pair per clip: `DEFAULT_LAMBDA`).

  Raises:
    MotionProbeError: shapes that do not fit.
  """
  features, flow, _ = _check_pairs(features, flow, "fit_probe")
  flat = lambda a: a.reshape(-1, *a.shape[2:])
  lam = DEFAULT_LAMBDA
  if num_train >= 2:
    fit_x, fit_y = flat(features[:, :num_train - 1]), flat(flow[:, :num_train - 1])
    val_x, val_y = flat(features[:, num_train - 1:num_train]), flat(flow[:, num_train - 1:num_train])
    errors = {l: end_point_error(RidgeProbe(l).fit(fit_x, fit_y).predict(val_x), val_y) for l in lambdas}
    lam = min(errors, key=errors.get)
  return RidgeProbe(lam).fit(flat(features[:, :num_train]), flat(flow[:, :num_train]))


def matched_noise(features, rng: np.random.Generator) -> np.ndarray:
  """Random features of the shape of `features [..., C]`, Gaussian with each channel's mean and std (over all other
  axes) equal to the features' own: the noise-level-matched control."""
  features = np.asarray(features, np.float64)
  c = features.shape[-1]
  flat = features.reshape(-1, c)
  return rng.standard_normal(features.shape) * flat.std(0) + flat.mean(0)


def probe_scores(features, flow, train_fraction: float = 0.5, random_seeds: int = 3, seed: int = 0) -> dict:
  """The probe on the motion maps, its noise-level-matched control and the trivial baselines.

  Args:
    features: `[N, P, h, w, C]` per-pair features (N clips, P flow pairs each).
    flow: `[N, P, H, W, 2]` flow in pixels (`H, W` multiples of `h, w` with square cells).
    train_fraction: the first `split_pairs(P, train_fraction)` pairs of every clip train, the rest test.
    random_seeds: draws of random features (their EPEs averaged), from `default_rng(PROBE_SEED + seed)`.

  Returns:
    `{"epe": {motion_maps, random_features, zero_flow, mean_flow} (pixels, test pairs), "epe_random_draws",
    "lambda": {motion_maps, random_features (per draw)}, "num_train_pairs", "num_test_pairs", "feature_dim",
    "test_flow_magnitude" (mean |flow| px), "probe": the maps' RidgeProbe, "predictions": {motion_maps, random_features
    (first draw)} [N, P_test, H, W, 2]}`.

  Raises:
    MotionProbeError: shapes that do not fit, fewer than 2 pairs per clip.
  """
  features, flow, _ = _check_pairs(features, flow, "probe_scores")
  k = split_pairs(flow.shape[1], train_fraction)
  test = flow[:, k:]
  flat = lambda a: a.reshape(-1, *a.shape[2:])
  n, p_test = test.shape[:2]

  def run(x):
    probe = fit_probe(x, flow, k)
    pred = probe.predict(flat(x[:, k:])).reshape(test.shape)
    return probe, pred, end_point_error(pred, test)

  probe, pred_maps, epe_maps = run(features)
  rng = np.random.default_rng(PROBE_SEED + int(seed))  # a stream of its own (not a data seed)
  draws = [run(matched_noise(features, rng)) for _ in range(max(int(random_seeds), 1))]
  mean_flow = flow[:, :k].mean((0, 1))
  epe = {"motion_maps": epe_maps, "random_features": float(np.mean([d[2] for d in draws])),
         "zero_flow": end_point_error(np.zeros_like(test), test),
         "mean_flow": end_point_error(np.broadcast_to(mean_flow, test.shape), test)}
  return {"epe": epe, "epe_random_draws": [d[2] for d in draws],
          "lambda": {"motion_maps": probe.lam, "random_features": [d[0].lam for d in draws]},
          "num_train_pairs": int(n * k), "num_test_pairs": int(n * p_test), "feature_dim": int(features.shape[-1]),
          "test_flow_magnitude": float(np.linalg.norm(test, axis=-1).mean()), "probe": probe,
          "predictions": {"motion_maps": pred_maps, "random_features": draws[0][1]}}


def pair_features(maps, num_frames: int, temporal_factor: int = 1) -> np.ndarray:
  """Per-flow-pair features from per-latent-frame maps: pair `f` (frame f -> f + 1) gets the maps of latent frames
  `ceil(f / tf)` and `ceil((f + 1) / tf)` concatenated along channels.

  Args:
    maps: `[N, t, h, w, C]`; num_frames: the video's `T` (`t = 1 + (T - 1) / tf`).

  Returns:
    `[N, T-1, h, w, 2 C]`.

  Raises:
    MotionProbeError: `t` does not match `T` and `tf`.
  """
  maps = np.asarray(maps)
  tf = int(temporal_factor)
  if maps.ndim != 5 or tf < 1 or (num_frames - 1) % tf or maps.shape[1] != 1 + (num_frames - 1) // tf:
    raise MotionProbeError(f"pair_features: maps [N, t, h, w, C] {maps.shape} do not fit {num_frames} frames at "
                           f"temporal factor {temporal_factor} (t = 1 + (T - 1) / tf)")
  latent = (np.arange(num_frames) + tf - 1) // tf
  return np.concatenate([maps[:, latent[:-1]], maps[:, latent[1:]]], axis=-1)


# ----------------------------------------------------------------------------------------------------------------------
# Maps during generation
# ----------------------------------------------------------------------------------------------------------------------


class _CapturingObjective:
  """The run's objective with one extra sampler hook that copies the sampler's `x` and level at step `index` (the
  state the `denoise` call of that step receives, after the method's own hooks) to the host; all else delegates."""

  def __init__(self, objective, index: int, store: dict):
    self._objective, self._index, self._store = objective, int(index), store

  def __getattr__(self, name):
    return getattr(self._objective, name)

  def _keep(self, x, level, index):
    if int(index) == self._index:
      self._store["x_t"], self._store["level"] = np.asarray(x), np.asarray(level)

  def sample(self, denoise, x_T, *, steps: int, hooks=(), **options):
    def capture(x, step):
      if not step.final:
        jax.debug.callback(self._keep, x, step.level, step.index)
      return x

    return self._objective.sample(denoise, x_T, steps=steps, hooks=(*hooks, capture), **options)


def _maps_fn(static):
  """`f(weights, batch, rng)` -> `[B, layers, t', h', w', D]` (batch first, for `generate`; the DiT token grid):
  `reference_maps` of the batch's conditional set at the batch's captured `x_t` and `level`."""
  from camjax.methods import merge  # pylint: disable=import-outside-toplevel
  from camjax.methods import motionflow as mfm  # pylint: disable=import-outside-toplevel

  def fn(weights, batch, rng):
    del rng
    model = merge(static, weights)
    cond = mfm.conditions(model, static, batch)
    x_t = batch["x_t"].astype(cond.latents.dtype)
    pt, ph, pw = model.dit.config.patch_size
    _, t, h, w, _ = x_t.shape
    timesteps = static.objective.model_timesteps(batch["level"])
    grid = (t // pt, h // ph, w // pw)
    states = mfm.reference_maps(model, static.config, x_t, timesteps, cond.camera, cond.image, grid).states
    states = states.reshape(states.shape[0], states.shape[1], *grid, states.shape[-1]).astype(jnp.float32)
    return jnp.swapaxes(states, 0, 1)

  return fn


def _unique_layers(states: np.ndarray) -> np.ndarray:
  keep = [i for i in range(len(states)) if not any(np.array_equal(states[i], states[j]) for j in range(i))]
  return states[keep]


def generate_with_maps(config, mesh, model, weights, scenes: list[dict], step: int = -1, seed: int = 0,
                       jit=jax.jit) -> dict:
  """Generates each scene's video (the method's own sampler, true trajectory, I2V from the true first frame) and the
  reference maps at sampling step `step` (`jit`: the compiler wrapper, e.g. `camjax.xla_flags.fast_jit` in tests).

  Returns:
    `{"videos": uint8 [N, T, H, W, 3], "maps": float32 [N, t, h', w', layers' D] (layers' = distinct layers),
    "step": the step index, "level": the sampler level there (the DDPM timestep or the flow sigma),
    "timestep": the network's timestep input there}`.

  Raises:
    MotionProbeError: a method without `reference_maps` (not MotionFlow), an autoencoder that cannot decode frames,
      a step outside the sampler's steps.
  """
  from camjax import sharding  # pylint: disable=import-outside-toplevel
  from camjax.methods import generate, host_batch, merge, to_uint8  # pylint: disable=import-outside-toplevel

  static = model.static
  if static.method.name != "motionflow":
    raise MotionProbeError(f"the motion-map probe reads MotionFlow's reference maps; this run is {static.method.name}")
  if not getattr(static.autoencoder, "can_decode", True):
    raise MotionProbeError("the run's autoencoder cannot decode frames (precomputed latents): DIS flow needs pixels")
  steps = int(config.sample.steps)
  index = step % steps if -steps <= step < steps else None
  if index is None:
    raise MotionProbeError(f"step={step} outside the sampler's {steps} steps (0 .. {steps - 1}, or negative from "
                           "the end)")
  store: dict = {}
  capturing = dataclasses.replace(static, objective=_CapturingObjective(static.objective, index, store))
  host = {"frames": np.stack([s["frames"] for s in scenes]),
          "K": np.stack([np.asarray(s["cameras"].K) for s in scenes]),
          "w2c": np.stack([np.asarray(s["cameras"].w2c) for s in scenes]),
          "caption": np.array([s["caption"] for s in scenes])}
  batch = host_batch(host, model.tokenizer, static.method, config)
  sample = jit(lambda w, batch, rng: static.method.sample(merge(capturing, w), capturing, batch, rng))
  with sharding.use_mesh(mesh):
    videos = to_uint8(generate(weights, sample, batch, mesh, jax.random.key(int(config.seed) + 11 + int(seed))))
    n = len(scenes)
    if "x_t" not in store:
      raise MotionProbeError(f"the sampler never reached step {index} (config.sample.steps={steps}): no maps captured")
    batch = dict(batch, x_t=store["x_t"][:n].astype(np.float32), level=store["level"][:n].astype(np.float32))
    states = generate(weights, jit(_maps_fn(static)), batch, mesh, jax.random.key(0))
  states = _unique_layers(np.swapaxes(np.asarray(states, np.float32), 0, 1))  # [layers', N, t', h', w', D]
  maps = states.transpose(1, 2, 3, 4, 0, 5)
  maps = maps.reshape(*maps.shape[:4], -1)
  level = float(np.asarray(batch["level"])[0])
  return {"videos": videos, "maps": maps, "step": index, "level": level,
          "timestep": float(np.asarray(static.objective.model_timesteps(level)))}


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def flow_to_rgb(flow, max_magnitude: float | None = None) -> np.ndarray:
  """`[..., H, W, 2]` flow (pixels) -> uint8 `[..., H, W, 3]`: hue = direction, brightness = magnitude /
  `max_magnitude` (default: the largest magnitude in `flow`), full saturation."""
  import cv2  # pylint: disable=import-outside-toplevel

  flow = np.asarray(flow, np.float32)
  mag = np.linalg.norm(flow, axis=-1)
  top = float(max_magnitude or mag.max() or 1.0)
  hue = (np.arctan2(flow[..., 1], flow[..., 0]) % (2 * np.pi)) / (2 * np.pi) * 179
  hsv = np.stack([hue, np.full_like(hue, 255), np.clip(mag / top, 0, 1) * 255], -1).astype(np.uint8)
  flat = hsv.reshape(-1, *hsv.shape[-3:])
  return np.stack([cv2.cvtColor(f, cv2.COLOR_HSV2RGB) for f in flat]).reshape(hsv.shape)


def probe_figure(video, flow, predictions: dict, num_train: int, min_size: int = 96, gap: int = 4) -> np.ndarray:
  """uint8 `[rows, cols, 3]`: one row per test pair `f` of one clip: frame f | frame f+1 | DIS flow | each prediction
  (`{name: [P_test, H, W, 2]}`), flow colours on one scale (the row set's largest DIS magnitude); images enlarged by
  an integer factor (nearest) to at least `min_size` pixels high."""
  video, flow = np.asarray(video), np.asarray(flow)
  test = flow[num_train:]
  top = float(np.linalg.norm(test, axis=-1).max() or 1.0)
  rows = []
  for i, f in enumerate(range(num_train, len(flow))):
    tiles = [video[f], video[f + 1], flow_to_rgb(test[i], top)]
    tiles += [flow_to_rgb(p[i], top) for p in predictions.values()]
    rows.append(tiles)
  H, W = video.shape[1:3]
  k = max(1, -(-min_size // H))
  canvas = np.full((len(rows) * (H * k + gap) - gap, len(rows[0]) * (W * k + gap) - gap, 3), 255, np.uint8)
  for r, tiles in enumerate(rows):
    for c, tile in enumerate(tiles):
      big = np.repeat(np.repeat(tile, k, 0), k, 1)
      canvas[r * (H * k + gap):r * (H * k + gap) + H * k, c * (W * k + gap):c * (W * k + gap) + W * k] = big
  return canvas


def _load(workdir_or_run):
  """`(config, mesh, model, weights, workdir or None)` from a workdir or a `load_run`-style tuple."""
  if isinstance(workdir_or_run, (str, Path)):
    from camjax.methods import load_run  # pylint: disable=import-outside-toplevel
    return (*load_run(workdir_or_run), Path(workdir_or_run))
  if isinstance(workdir_or_run, tuple) and len(workdir_or_run) == 4:
    return (*workdir_or_run, None)
  raise MotionProbeError("probe_report takes a workdir or the (config, mesh, model, weights) of "
                         f"camjax.methods.load_run, got {type(workdir_or_run).__name__}")


def probe_report(workdir_or_run, num_scenes: int = 8, out_dir=None, *, step: int = -1, train_fraction: float = 0.5,
                 random_seeds: int = 3, seed: int = 0, jit=jax.jit) -> dict:
  """The Fig. 6 probe on a MotionFlow run: held-out procedural scenes (`motionflow.eval_scenes`), generation with the
  true trajectory, reference maps at sampling step `step`, DIS flow on the generated frames, the ridge probe on the
  maps vs noise-level-matched random features vs zero / mean flow (module docstring) -> `out_dir` (default
  `<workdir>/motion_probe`): report.md, metrics.json, probe.png.

  Args:
    workdir_or_run: a `python -m camjax.main` workdir of a MotionFlow run, or `(config, mesh, model, weights)` as
      `camjax.methods.load_run` returns them (a model built without a run).
    num_scenes: held-out scenes (clips pooled for the probe).
    step: sampling step whose maps are probed (0 .. steps - 1, negative from the end; -1 the last, lowest noise).
    train_fraction, random_seeds, seed: as in `probe_scores` (`seed` also shifts the sampling key).
    jit: the compiler wrapper of the sampler and the maps (`jax.jit`; `camjax.xla_flags.fast_jit` in tests).

  Returns:
    metrics: `{"epe": {motion_maps, random_features, zero_flow, mean_flow}, "epe_ground_truth_flow": the same four
    against DIS flow of the scenes' true videos, ...}` as written to metrics.json.

  Raises:
    MotionProbeError: no out_dir without a workdir, too few frames, or as `generate_with_maps` / `probe_scores`.
    camjax.methods.RunNotFoundError: no run in the workdir.
  """
  from camjax.eval.report import jsonable, write_png  # pylint: disable=import-outside-toplevel
  from camjax.io import atomic_write  # pylint: disable=import-outside-toplevel
  from camjax.methods import motionflow as mfm  # pylint: disable=import-outside-toplevel

  config, mesh, model, weights, workdir = _load(workdir_or_run)
  if out_dir is None:
    if workdir is None:
      raise MotionProbeError("probe_report: pass out_dir when giving a model rather than a workdir")
    out_dir = workdir / "motion_probe"
  out_dir = Path(out_dir)
  if int(num_scenes) < 1:
    raise MotionProbeError(f"probe_report: num_scenes must be >= 1, got {num_scenes}")
  scenes = mfm.eval_scenes(config, int(num_scenes))
  gen = generate_with_maps(config, mesh, model, weights, scenes, step=step, seed=seed, jit=jit)
  flows = np.stack([dis_flow(v) for v in gen["videos"]])
  features = pair_features(gen["maps"], flows.shape[1] + 1, int(model.static.autoencoder.temporal_factor))
  scores = probe_scores(features, flows, train_fraction, random_seeds, seed)
  # The same probe against the flow of the scenes' TRUE videos (what the trajectory should have produced): a model
  # whose samples ignore the camera can still have maps that encode it.
  truth = probe_scores(features, np.stack([dis_flow(s["frames"]) for s in scenes]), train_fraction, random_seeds, seed)
  k = split_pairs(flows.shape[1], train_fraction)
  out_dir.mkdir(parents=True, exist_ok=True)
  preds = {name: p[0] for name, p in scores.pop("predictions").items()}
  write_png(out_dir / "probe.png", probe_figure(gen["videos"][0], flows[0], preds, k))
  probe = scores.pop("probe")
  metrics = {**scores, "variant": str(config.get("variant", "")), "workdir": str(workdir) if workdir else None,
             "num_scenes": int(num_scenes), "scene_seeds": f"{mfm.EVAL_SEED} + {config.seed} + i",
             "num_frames": int(gen["videos"].shape[1]), "frame_size": list(gen["videos"].shape[2:4]),
             "map_grid": list(gen["maps"].shape[1:4]), "map_channels": int(gen["maps"].shape[-1]),
             "token_cell_pixels": int(probe.cell), "train_pairs_per_clip": k,
             "step": gen["step"], "sampler_steps": int(config.sample.steps), "level": gen["level"],
             "timestep": gen["timestep"], "reference_input": str(config.reference.input),
             "reference_enabled": bool(config.reference.enabled), "dis_preset": "medium",
             "epe_ground_truth_flow": truth["epe"], "ground_truth_flow_magnitude": truth["test_flow_magnitude"],
             "maps_beat_random": bool(scores["epe"]["motion_maps"] < scores["epe"]["random_features"]),
             "maps_beat_mean_flow": bool(scores["epe"]["motion_maps"] < scores["epe"]["mean_flow"])}
  with atomic_write(out_dir / "metrics.json") as f:
    json.dump(jsonable(metrics), f, indent=2)
  with atomic_write(out_dir / "report.md") as f:
    f.write(_report_text(metrics))
  log.info("motion-map probe EPE (px) %s -> %s", metrics["epe"], out_dir)
  return metrics


def _report_text(m: dict) -> str:
  e = m["epe"]
  names = {"motion_maps": "probe on motion maps", "random_features": "probe on matched random features",
           "zero_flow": "zero flow", "mean_flow": "mean training flow"}
  yes = lambda v: "yes" if v else "no"
  maps = ("the reference network's per-layer outputs" if m["reference_enabled"] else
          "the trajectory encoder's features (no reference network: the Table 4 ablation)")
  lines = [
      f"# MotionFlow motion-map probe (paper Fig. 6){' — ' + m['variant'] if m['variant'] else ''}", "",
      f"{m['num_scenes']} held-out procedural scenes (seeds {m['scene_seeds']}), {m['num_frames']} generated frames "
      f"at {m['frame_size'][0]}x{m['frame_size'][1]} each (true trajectory, I2V from the true first frame). Flow: "
      f"OpenCV DIS ({m['dis_preset']}) between consecutive generated frames. Maps: `reference_maps` ({maps}, "
      f"reference input `{m['reference_input']}`) at sampling step {m['step']} of {m['sampler_steps']} (network "
      f"timestep {m['timestep']:g}), a {m['map_grid'][1]}x{m['map_grid'][2]} token grid of {m['map_channels']} "
      f"channels per frame; flow pair f gets the maps of frames f and f+1.", "",
      f"Probe: ridge regression, each token's features -> the flow of its {m['token_cell_pixels']}x"
      f"{m['token_cell_pixels']}-pixel block, per-position intercept, penalty chosen on the last training pair. "
      f"Trained on the first {m['train_pairs_per_clip']} flow pairs of every clip ({m['num_train_pairs']} pairs), "
      f"tested on the rest ({m['num_test_pairs']} pairs, mean |flow| {m['test_flow_magnitude']:.3f} px).", "",
      "| end-point error (px, test pairs) | " + " | ".join(names[k] for k in EPE_KEYS) + " |",
      "|---" * (len(EPE_KEYS) + 1) + "|",
      "| EPE | " + " | ".join(f"{e[k]:.4f}" for k in EPE_KEYS) + " |", "",
      f"Maps beat matched random features: {yes(m['maps_beat_random'])} (random draws: "
      + ", ".join(f"{v:.4f}" for v in m["epe_random_draws"]) + f"). Maps beat the mean training flow: "
      f"{yes(m['maps_beat_mean_flow'])}. Ridge penalty (x mean squared feature norm): maps "
      f"{m['lambda']['motion_maps']:g}, random "
      + ", ".join(f"{v:g}" for v in m["lambda"]["random_features"]) + ".", "",
      "The same probe against DIS flow of the scenes' true videos (the motion the trajectory asks for; mean |flow| "
      f"{m['ground_truth_flow_magnitude']:.3f} px):", "",
      "| end-point error (px, test pairs) | " + " | ".join(names[k] for k in EPE_KEYS) + " |",
      "|---" * (len(EPE_KEYS) + 1) + "|",
      "| EPE, true-video flow | " + " | ".join(f"{m['epe_ground_truth_flow'][k]:.4f}" for k in EPE_KEYS) + " |", "",
      "![probe](probe.png)", "",
      "Figure, one row per test pair of scene 0: frame f | frame f+1 | DIS flow | probe on motion maps | probe on "
      "random features (hue = direction, brightness = magnitude, one scale: the largest DIS magnitude).", ""]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m camjax.eval.motion_probe", description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a MotionFlow `python -m camjax.main` workdir")
  parser.add_argument("--scenes", type=int, default=8, help="held-out procedural scenes (default 8)")
  parser.add_argument("--out", help="report folder (default: <workdir>/motion_probe)")
  parser.add_argument("--step", type=int, default=-1, help="sampling step whose maps are probed (-1: the last)")
  parser.add_argument("--train_fraction", type=float, default=0.5, help="first flow pairs of a clip that train")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  from camjax.errors import CamjaxError  # pylint: disable=import-outside-toplevel
  try:
    metrics = probe_report(args.workdir, args.scenes, args.out, step=args.step, train_fraction=args.train_fraction)
  except CamjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(metrics["epe"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
