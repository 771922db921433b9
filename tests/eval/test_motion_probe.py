"""The motion-map probe of MotionFlow's Fig. 6 (camjax/eval/motion_probe.py): DIS flow recovers a known shift, the
ridge probe recovers a planted linear features -> flow relation that random features cannot, and the end-to-end report
on the `test` variant's tiny untrained model (built here, no training run; programs compiled with `fast_jit`)."""

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from flax import nnx

from camjax import methods, sharding
from camjax.diffusion import make_objective
from camjax.eval import motion_probe as mp
from camjax.models import WanDiT
from camjax.xla_flags import fast_jit

ROOT = Path(__file__).resolve().parents[2]


def _texture(seed, h, w):
  noise = np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.float32)
  return cv2.GaussianBlur(noise, (0, 0), 1.5)


def test_dis_flow_recovers_a_shift_and_rejects_bad_input():
  base = _texture(0, 80, 96)
  shifts = [(2, -1), (-1, 3)]  # (dx, dy) pixels per frame: frame f+1 is frame f moved by the shift
  frames = [base]
  for dx, dy in shifts:
    frames.append(np.roll(frames[-1], (dy, dx), axis=(0, 1)))
  video = np.stack(frames)
  video = ((video - video.min()) / (video.max() - video.min()) * 255).round().astype(np.uint8)
  flow = mp.dis_flow(video)
  assert flow.shape == (2, 80, 96, 2) and flow.dtype == np.float32
  for f, (dx, dy) in enumerate(shifts):
    inner = flow[f, 16:-16, 16:-16]  # away from the wrapped border
    np.testing.assert_allclose(np.median(inner.reshape(-1, 2), 0), [dx, dy], atol=0.1)
    assert mp.end_point_error(inner, np.broadcast_to(np.float32([dx, dy]), inner.shape)) < 0.3
  with pytest.raises(mp.MotionProbeError, match=r"uint8 \[T >= 2, H, W, 3\]"):
    mp.dis_flow(video.astype(np.float32))
  with pytest.raises(mp.MotionProbeError, match="T >= 2"):
    mp.dis_flow(video[:1])
  with pytest.raises(mp.MotionProbeError, match="unknown preset"):
    mp.dis_flow(video, preset="slow")


def test_probe_recovers_a_planted_linear_relation_and_random_features_do_not():
  rng = np.random.default_rng(1)
  n, p, h, w, c, cell = 4, 6, 4, 4, 8, 4
  features = rng.normal(2.0, 3.0, (n, p, h, w, c))
  A = rng.normal(0, 0.3, (c, cell * cell * 2))
  patches = ((features - 2.0) / 3.0) @ A  # per-token features -> its 4x4 block of flow
  flow = patches.reshape(n, p, h, w, cell, cell, 2).transpose(0, 1, 2, 4, 3, 5, 6).reshape(n, p, h * cell, w * cell, 2)
  flow = flow + rng.normal(0, 0.01, flow.shape)
  scores = mp.probe_scores(features, flow, train_fraction=0.5, random_seeds=2)
  epe = scores["epe"]
  assert set(epe) == set(mp.EPE_KEYS)
  assert scores["num_train_pairs"] == n * 3 and scores["num_test_pairs"] == n * 3 and scores["feature_dim"] == c
  assert epe["motion_maps"] < 0.05 * epe["mean_flow"]  # recovered (the flow's magnitude is ~1 px)
  assert epe["random_features"] > 0.9 * epe["mean_flow"] and epe["random_features"] > 20 * epe["motion_maps"]
  assert epe["zero_flow"] == pytest.approx(scores["test_flow_magnitude"])
  # The control's features have each channel's mean and std of the maps.
  noise = mp.matched_noise(features * np.arange(1, c + 1), np.random.default_rng(0))
  np.testing.assert_allclose(noise.reshape(-1, c).std(0) / (features * np.arange(1, c + 1)).reshape(-1, c).std(0),
                             1.0, atol=0.15)
  # An infinite penalty is the mean-training-flow baseline (per-position intercept), exactly.
  probe = mp.RidgeProbe(lam=1e12).fit(features[:, :3].reshape(-1, h, w, c), flow[:, :3].reshape(-1, *flow.shape[2:]))
  np.testing.assert_allclose(probe.predict(features[:, 3:].reshape(-1, h, w, c)),
                             np.broadcast_to(flow[:, :3].mean((0, 1)), (n * 3, *flow.shape[2:])), atol=1e-6)
  with pytest.raises(mp.MotionProbeError, match="square cells"):
    mp.probe_scores(features, flow[:, :, :, :-4], 0.5)
  with pytest.raises(mp.MotionProbeError, match=">= 2 flow pairs"):
    mp.probe_scores(features[:, :1], flow[:, :1])


def test_pair_features_take_both_frames_of_a_pair():
  maps = np.arange(5, dtype=np.float32).reshape(1, 5, 1, 1, 1) * np.ones((1, 5, 2, 2, 3))
  out = mp.pair_features(maps, 5)
  assert out.shape == (1, 4, 2, 2, 6)
  np.testing.assert_array_equal(out[0, :, 0, 0, [0, 3]].T, [[0, 1], [1, 2], [2, 3], [3, 4]])
  causal = mp.pair_features(maps[:, :3], 9, temporal_factor=4)  # frames 1..4 -> latent 1, 5..8 -> latent 2
  np.testing.assert_array_equal(causal[0, :, 0, 0, 0], [0, 1, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(causal[0, :, 0, 0, 3], [1, 1, 1, 1, 2, 2, 2, 2])
  with pytest.raises(mp.MotionProbeError, match="do not fit 6 frames"):
    mp.pair_features(maps, 6)


def _tiny_run():
  """The `test` variant (5 frames) as `(config, mesh, model, weights)`: an untrained model, its state initialised
  under one fast-compiled jit."""
  spec = importlib.util.spec_from_file_location("motionflow_config", ROOT / "configs" / "motionflow.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("test")
  config.data.num_frames = 5  # 4 flow pairs: 2 train (the penalty chosen on the 2nd), 2 test
  method = methods.get(config.method)
  ae = methods.make_autoencoder(config)
  cfg = methods.base.wan_config(config, ae, method)

  def make():
    rngs = nnx.Rngs(config.seed)
    text = methods.base._make_text_encoder(config, rngs)  # pylint: disable=protected-access
    with nnx.use_eager_sharding(False):
      return methods.Generator(WanDiT(cfg, rngs=rngs), text, **method.conditioners(config, cfg, rngs))

  graphdef = nnx.split(nnx.eval_shape(make))[0]
  generator = nnx.merge(graphdef, fast_jit(lambda: nnx.state(make()))())
  graphdef, params, frozen = nnx.split(generator, method.trainable(config), ...)
  frozen = frozen if len(nnx.to_flat_state(frozen)) else None
  static = methods.Static(graphdef, ae, make_objective(config.objective), config, method)
  model = methods.Model(static, params, frozen, ae, generator.text_encoder.tokenizer)
  return config, sharding.make_mesh(dict(config.mesh)), model, model.weights()


def test_probe_report_end_to_end_on_the_tiny_untrained_model(tmp_path):
  run = _tiny_run()
  config = run[0]
  with pytest.raises(mp.MotionProbeError, match="outside the sampler's 2 steps"):
    mp.probe_report(run, 2, tmp_path / "bad", step=2)
  with pytest.raises(mp.MotionProbeError, match="pass out_dir"):
    mp.probe_report(run, 2, None)
  metrics = mp.probe_report(run, 2, tmp_path / "probe", random_seeds=2, jit=fast_jit)
  out = tmp_path / "probe"
  written = json.loads((out / "metrics.json").read_text())
  assert set(written["epe"]) == set(mp.EPE_KEYS)
  assert all(np.isfinite(v) and v >= 0 for v in written["epe"].values())
  assert written["epe"]["zero_flow"] == pytest.approx(written["test_flow_magnitude"])
  assert written["epe"] == pytest.approx(metrics["epe"])
  truth = written["epe_ground_truth_flow"]  # the probe against the true videos' flow
  assert set(truth) == set(mp.EPE_KEYS) and truth["zero_flow"] == pytest.approx(written["ground_truth_flow_magnitude"])
  # Maps of the last DDIM step (timestep 0 of "leading" spacing over 1000), on the 4x4 token grid of 16x16 frames.
  assert (written["step"], written["timestep"]) == (1, 0.0)
  assert written["map_grid"] == [5, 4, 4] and written["token_cell_pixels"] == 4
  assert written["map_channels"] % int(config.model.num_heads * config.model.head_dim) == 0
  assert written["num_train_pairs"] == 4 and written["num_test_pairs"] == 4
  report = (out / "report.md").read_text()
  for key in mp.EPE_KEYS:
    assert f"{written['epe'][key]:.4f}" in report
  image = cv2.imread(str(out / "probe.png"))
  assert image is not None and image.shape[0] >= 2 * 96 and image.shape[1] >= 5 * 96  # 2 test pairs x 5 tiles
