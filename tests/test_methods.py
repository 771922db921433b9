"""The method interface: registry, phases as config overrides, host batches, the trainable split, CameraCtrl II's
condition anchor."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax import methods
from camjax.conditioning import cameractrl2 as cc2
from camjax.methods import cameractrl2 as m_cc2
from camjax.models.autoencoders import PixelAutoencoder

ROOT = Path(__file__).resolve().parents[1]


def _config(variant="test"):
  spec = importlib.util.spec_from_file_location("cameractrl2", ROOT / "configs" / "cameractrl2.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def test_registry_names_the_registered_methods():
  assert methods.get("cameractrl2") is m_cc2.METHOD
  with pytest.raises(methods.MethodError, match=r"unknown method 'nope' .* registered: cameractrl2"):
    methods.get("nope")


def test_phases_are_config_overrides():
  config = _config("default")
  phases = methods.training_phases(config)
  assert [(p.start, p.end) for p in phases] == [(0, 300), (300, 400)]
  assert phases[0].config is config  # phase 1 runs with the config itself
  p2 = phases[1].config
  assert p2.data.num_frames == 13 and p2.train.extension_prob == 0.5 and p2.data.height == config.data.height
  assert config.data.num_frames == 17 and config.train.extension_prob == 0.0  # the run's config is not changed
  config.phase2.steps = 0
  assert len(methods.training_phases(config)) == 1
  with pytest.raises(methods.MethodError, match="no field 'nope'"):
    methods.apply_overrides(config, {"data.nope": 1})
  with pytest.raises(methods.MethodError, match="no section 'nope'"):
    methods.apply_overrides(config, {"nope.x": 1})
  assert methods.apply_overrides(config, {"seed": 5}).seed == 5


def test_host_batch_reads_the_method_keys_and_names_a_missing_one():
  config = _config()
  method = methods.get(config.method)
  batch = dict(frames=np.zeros((1, 9, 32, 32, 3), np.uint8), caption=np.array(["a"]),
               K=np.eye(3)[None, None].repeat(9, 1),
               w2c=np.eye(4)[None, None].repeat(9, 1), has_camera=np.array([True]), num_cond=np.array([1], np.int64),
               unused=np.zeros(1))
  from camjax.models.tokenizers import ByteTokenizer  # pylint: disable=import-outside-toplevel
  out = methods.host_batch(batch, ByteTokenizer(8), method, config)
  assert set(out) == {"frames", "text_ids", "text_mask", "K", "w2c", "has_camera", "num_cond"}
  assert out["K"].dtype == np.float32 and out["num_cond"].dtype == np.int32 and out["has_camera"].dtype == bool
  del batch["w2c"]
  with pytest.raises(methods.MethodError, match=r"needs batch keys \['w2c'\]"):
    methods.host_batch(batch, ByteTokenizer(8), method, config)


class _Frozen(methods.Method):
  """A method that trains the camera conditioner only (the split a LoRA method uses)."""

  name = "frozen_test"

  def conditioners(self, config, dit_config, rngs):
    return m_cc2.METHOD.conditioners(config, dit_config, rngs)

  def dit_options(self, config):
    return m_cc2.METHOD.dit_options(config)

  def trainable(self, config):
    return nnx.All(nnx.Param, nnx.PathContains("camera"))


def test_the_trainable_filter_splits_params_from_frozen():
  from camjax import sharding  # pylint: disable=import-outside-toplevel
  config = _config()
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    everything = methods.build_model(config, mesh)
    split = methods.build_model(config, mesh, method=_Frozen())
  assert everything.frozen is None
  names = lambda state: {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(state)}
  assert names(split.params) == {"camera/proj/kernel"}
  assert names(split.params) | names(split.frozen) == names(everything.params)
  generator = methods.merge(split.static, split.weights())
  assert generator.camera is not None and generator.dit is not None


@pytest.mark.parametrize("num_cond", [0, 1, 2])
def test_condition_anchor_is_the_last_condition_frame_repeated(num_cond):
  """The anchor equals the latents of a video that repeats the last condition video frame (the trivial baseline),
  and zero without condition frames."""
  ae = PixelAutoencoder(temporal_factor=4, spatial_factor=4)
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.uniform(-1, 1, (2, 13, 8, 8, 3)), jnp.float32)
  latents = ae.encode(video)
  mask = cc2.extension_mask(2, latents.shape[1:4], num_cond)
  anchor = m_cc2.condition_anchor(latents, mask, 4)
  if num_cond == 0:
    assert float(jnp.abs(anchor).max()) == 0.0
    return
  last = 0 if num_cond == 1 else 4 * (num_cond - 1)  # latent frame k holds video frames 4k-3 .. 4k
  expected = ae.encode(jnp.broadcast_to(video[:, last:last + 1], video.shape))
  np.testing.assert_array_equal(np.asarray(anchor), np.asarray(expected))


def test_an_anchored_untrained_model_predicts_the_condition_frame():
  """With `model.anchor`, the zero-initialised output layer makes the untrained model's clean-sample prediction the
  repeated condition frame exactly (the model starts at the "repeat the first frame" baseline)."""
  from camjax import sharding  # pylint: disable=import-outside-toplevel
  config = _config()
  config.model.anchor = "condition_frame"
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    model = methods.build_model(config, mesh)
  static = model.static
  sample = jax.jit(lambda w, b, key: m_cc2.METHOD.sample(methods.merge(static, w), static, b, key))
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 255, (1, 9, 32, 32, 3), dtype=np.uint8)
  frames[:, 1:] = 0  # only the first frame is given
  K = np.array([[16.0, 0, 16], [0, 16, 16], [0, 0, 1]], np.float32)
  batch = dict(frames=jnp.asarray(frames), K=jnp.asarray(np.broadcast_to(K, (1, 9, 3, 3))),
               w2c=jnp.asarray(np.eye(4)[None, None].repeat(9, 1), jnp.float32), has_camera=jnp.array([True]),
               num_cond=jnp.array([1]), text_ids=jnp.zeros((1, 24), jnp.int32), text_mask=jnp.ones((1, 24), bool))
  video = sample(model.weights(), batch, jax.random.key(0))
  expected = np.broadcast_to(frames[:, :1], frames.shape).astype(np.float32) / 127.5 - 1
  np.testing.assert_allclose(np.asarray(video), expected, atol=1e-5)
  with pytest.raises(cc2.ConditioningError, match=r"must be \[B, T, 3, 3\]"):  # one K for the clip: named, not NaN
    sample(model.weights(), dict(batch, K=batch["K"][:, 0]), jax.random.key(0))
  assert m_cc2.METHOD.validate(config) == []
  config.objective.prediction = "velocity"
  assert "model.anchor='condition_frame'" in m_cc2.METHOD.validate(config)[0]


def test_an_untrained_depth_warp_model_reprojects_the_condition_frame_on_one_plane_and_learns_disparity():
  """`model.anchor="depth_warp"`: before training the prediction is the condition frame reprojected through the camera
  at the initial disparity (one plane); the null camera gives the repeated frame; the loss reaches the disparity
  head."""
  from camjax import sharding  # pylint: disable=import-outside-toplevel
  config = _config()
  config.model.anchor = "depth_warp"
  config.train.i2v_prob = 1.0  # the loss below needs a condition frame to warp
  assert m_cc2.METHOD.validate(config) == []
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    model = methods.build_model(config, mesh)
  static = model.static
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 255, (1, 9, 32, 32, 3), dtype=np.uint8)
  K = np.broadcast_to(np.array([[16.0, 0, 16], [0, 16, 16], [0, 0, 1]], np.float32), (1, 9, 3, 3))
  w2c = np.eye(4, dtype=np.float32)[None, None].repeat(9, 1)
  w2c[0, :, 0, 3] = -0.1 * np.arange(9)  # the camera trucks right by 0.1 m per frame
  batch = dict(frames=jnp.asarray(frames), K=jnp.asarray(K), w2c=jnp.asarray(w2c), has_camera=jnp.array([True]),
               num_cond=jnp.array([1]), text_ids=jnp.zeros((1, 24), jnp.int32), text_mask=jnp.ones((1, 24), bool))
  # Jitted as the main job does (eagerly, each of ~900 primitives compiles on its own: the suite is compile-bound).
  sample = jax.jit(lambda w, b, key: m_cc2.METHOD.sample(methods.merge(static, w), static, b, key))
  video = np.asarray(sample(model.weights(), batch, jax.random.key(0)))
  ae = static.autoencoder
  latents = ae.encode(jnp.asarray(frames, jnp.float32) / 127.5 - 1)
  mask = cc2.extension_mask(1, latents.shape[1:4], 1)
  anchor = m_cc2.condition_anchor(latents, mask, 4)
  poses = m_cc2.anchor_poses(static, batch, mask)
  plane = jnp.full((*latents.shape[:4], 4), config.model.anchor_disparity)
  expected = np.asarray(ae.decode(m_cc2.reproject_anchor(anchor, plane, *poses, ae.spatial_factor, 4)))
  np.testing.assert_allclose(video, expected, atol=1e-4)
  first = np.broadcast_to(frames[:, :1], frames.shape).astype(np.float32) / 127.5 - 1
  assert np.abs(video[:, -1] - first[:, -1]).mean() > 0.05  # 0.8 m at 4 m: a 3-pixel shift
  # 16 px * 0.8 m * 0.25 / m = 3.2 px to the left in the last frame: column x samples the first frame at x + 3.2
  np.testing.assert_allclose(video[0, -1, :, 8:20], expected[0, -1, :, 8:20], atol=1e-4)
  still = np.asarray(sample(model.weights(), dict(batch, has_camera=jnp.array([False])), jax.random.key(0)))
  np.testing.assert_allclose(still, first, atol=1e-5)
  grads = jax.jit(jax.grad(lambda p, b, key: m_cc2.METHOD.loss(methods.merge(static, dict(model.weights(), params=p)),
                                                               static, b, key)))(model.params, batch, jax.random.key(1))
  head = grads["disparity_head"]["proj"]["kernel"]
  assert float(jnp.abs(head.get_value() if hasattr(head, "get_value") else head).max()) > 0


def test_warp_anchor_is_the_anchor_at_zero_flow_and_shifts_by_whole_pixels():
  from camjax.conditioning.anchor import condition_anchor, warp_anchor
  from camjax.models.autoencoders import PixelAutoencoder
  ae = PixelAutoencoder(temporal_factor=4, spatial_factor=8)
  rng = np.random.default_rng(0)
  video = rng.uniform(-1, 1, (1, 9, 32, 32, 3)).astype(np.float32)
  latents = ae.encode(video)
  cond = np.zeros((*latents.shape[:4], 1), np.float32)
  cond[:, 0] = 1
  anchor = condition_anchor(latents, cond, 4)
  flow = np.zeros((*latents.shape[:4], 4, 2), np.float32)
  np.testing.assert_allclose(warp_anchor(anchor, flow, 8, 4), anchor, atol=1e-6)
  flow[..., 0] = 3.0  # every pixel samples 3 pixels to its right
  frames = np.asarray(ae.decode(warp_anchor(anchor, flow, 8, 4)))
  first = video[0, 0]
  np.testing.assert_allclose(frames[0, 5, :, :-3], first[:, 3:], atol=1e-5)
  np.testing.assert_allclose(frames[0, 5, :, -3:], np.repeat(first[:, -1:], 3, axis=1), atol=1e-5)


def test_reproject_anchor_with_true_depth_predicts_the_rendered_frames_and_is_the_anchor_at_identity():
  """`depth_warp`'s geometry: the condition frame reprojected with the renderer's own depth and cameras matches the
  later frames of a rendered clip far better than repeating it; identity poses give the anchor back."""
  from camjax.data.synthetic import render_scene
  from camjax.geometry import se3
  from camjax.conditioning.anchor import condition_anchor, reproject_anchor
  from camjax.models.autoencoders import PixelAutoencoder
  tf = 4
  ae = PixelAutoencoder(temporal_factor=tf, spatial_factor=1)
  clip = render_scene(5, num_frames=9, height=48, width=48, trajectories=["truck_right"])[0]
  video = clip.frames.astype(np.float32)[None] / 127.5 - 1
  latents = np.asarray(ae.encode(video))  # [1, 3, 48, 48, 12]
  t = latents.shape[1]
  cond = np.zeros((1, t, 48, 48, 1), np.float32)
  cond[:, 0] = 1
  anchor = condition_anchor(latents, cond, tf)
  frames = np.maximum(np.arange(t)[:, None] * tf + np.arange(tf)[None] - (tf - 1), 0)  # [t, tf] video frame per slot
  depth = clip.depth[frames]  # [t, tf, H, W]
  disparity = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0).transpose(0, 2, 3, 1)[None].astype(np.float32)
  w2c = np.asarray(clip.cameras.w2c)
  rel = (w2c[0] @ np.asarray(se3.invert(w2c[frames.reshape(-1)])))[None].reshape(1, t, tf, 4, 4)
  K = np.asarray(clip.cameras.K)
  K_slot, K_anchor = K[frames.reshape(-1)].reshape(1, t, tf, 3, 3), K[:1]
  eye = np.broadcast_to(np.eye(4, dtype=np.float32), rel.shape)
  np.testing.assert_allclose(reproject_anchor(anchor, disparity, eye, K_slot, K_anchor, 1, tf), anchor, atol=1e-4)
  out = np.asarray(ae.decode(reproject_anchor(anchor, disparity, rel.astype(np.float32), K_slot, K_anchor, 1, tf)))[0]

  def psnr(a, b):
    return float(10 * np.log10(4.0 / np.mean((a - b) ** 2)))

  gt = video[0]
  warped = np.mean([psnr(out[i], gt[i]) for i in range(5, 9)])
  repeat = np.mean([psnr(gt[0], gt[i]) for i in range(5, 9)])
  assert warped > repeat + 3.0, (warped, repeat)  # 23.9 vs 18.7 dB (a truck: the motion depends on depth)
  # A single plane at the scene's median depth reprojects worse than the true depth.
  plane = np.full_like(disparity, 1.0 / np.median(clip.depth[clip.depth > 0]))
  flat = np.asarray(ae.decode(reproject_anchor(anchor, plane, rel.astype(np.float32), K_slot, K_anchor, 1, tf)))[0]
  assert np.mean([psnr(flat[i], gt[i]) for i in range(5, 9)]) < warped - 0.5
  # The reversed motion is worse than not moving at all.
  back = np.asarray(ae.decode(reproject_anchor(anchor, disparity, np.linalg.inv(rel).astype(np.float32), K_slot,
                                               K_anchor, 1, tf)))
  assert np.mean([psnr(back[0, i], gt[i]) for i in range(5, 9)]) < repeat
