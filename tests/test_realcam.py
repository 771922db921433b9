"""RealCam-I2V as a method: the `test` variant trains, every mode gives its frames back, noise shaping touches only
masked latents at high noise, metric vs raw scale, and `python -m camjax.realcam` on a real RGB-D photo."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax import methods, realcam as rcli, train
from camjax.config_base import load_config
from camjax.diffusion import SamplerStep, clean_hook
from camjax.methods import realcam_i2v as rc

ROOT = Path(__file__).resolve().parents[1]


def _config(variant="test"):
  return load_config(str(ROOT / "configs" / "realcam_i2v.py"), variant)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The `test` variant trained for one step by the main job (rendered scenes, generic pipeline, checkpoint)."""
  workdir = tmp_path_factory.mktemp("realcam_run")
  config = _config()
  config.train.update(steps=1, checkpoint_every=1)
  config.eval.at_end = False
  summary = train.train_and_evaluate(config, workdir)
  assert summary.end_step == 1 and np.isfinite(summary.last_loss)
  assert (summary.samples[0].parent / "trajectory_0.png").exists()  # held-out samples, with their cameras
  return workdir, rcli.RealCam.from_workdir(workdir)


def _perturbed(model: rcli.RealCam) -> rcli.RealCam:
  """The run with a random output layer, so the sampler's output is far from its anchor (given frames must still
  come back exactly)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  flat = nnx.to_flat_state(model.weights["params"])
  for key, var in flat:
    if "/".join(map(str, key)) == "dit/proj_out/kernel":
      var.set_value(jax.random.normal(jax.random.key(3), var.get_value().shape) * 0.05)
  return rcli.RealCam(model.config, model.mesh, model.model, dict(model.weights, params=nnx.from_flat_state(flat)))


def test_scenes_are_metric_and_scale_randomised(run):
  workdir, model = run
  config = model.config
  folder = next((workdir / "data").glob("realcam_3x9f32px_seed0_*"))
  provenance = json.loads((folder / "camjax_provenance.json").read_text())
  assert provenance["arguments"]["scale_range"] == [0.25, 4.0]
  scales = [rc.scene_scale(s, (0.25, 4.0)) for s in range(200)]
  assert 0.25 <= min(scales) < 0.4 and 2.8 < max(scales) <= 4.0 and rc.scene_scale(7, (0.25, 4.0)) == scales[7]
  # Camera travel scales with the factor; rotations and pixels of frame 0 do not depend on it.
  a = rc.render_scaled_scene(5, num_frames=5, size=16, scale_range=(1, 1), trajectory="dolly_in:1+pan_left:10")
  b = rc.render_scaled_scene(5, num_frames=5, size=16, scale_range=(3, 3), trajectory="dolly_in:1+pan_left:10")
  ca, cb = a.cameras.relative(0).centers, b.cameras.relative(0).centers
  np.testing.assert_allclose(cb, 3 * ca, atol=1e-9)
  np.testing.assert_array_equal(a.frames[0], b.frames[0])
  assert np.abs(a.frames[-1].astype(int) - b.frames[-1].astype(int)).mean() > 5  # the camera went 3x as far
  # Raw scale: every clip normalised to a largest displacement of 1, whatever its metric travel.
  w2c = jnp.asarray(np.stack([a.cameras.w2c, b.cameras.w2c]), jnp.float32)
  raw = np.asarray(rc.normalise_translations(w2c))
  travel = np.linalg.norm(np.linalg.inv(raw)[..., :3, 3], axis=-1).max(axis=1)
  np.testing.assert_allclose(travel, [1.0, 1.0], atol=1e-5)
  np.testing.assert_allclose(raw[0], raw[1], atol=1e-5)  # the 3x longer path is the same raw trajectory
  # Held-out example: the preview's first frame is the image wherever the point cloud covers it.
  ex = rc.held_out_example(config, 0)
  covered = ex["preview_pixel_mask"][0]
  assert covered.mean() > 0.3 and ex["preview_mask"].shape == rc.latent_grid(config)
  close = np.abs(ex["preview"][0].astype(int) - ex["frames"][0].astype(int)).max(-1)[covered] <= 1
  assert close.mean() > 0.9  # edges of 3x3 splats aside (the renderer's 1% depth band gave ~45% here)


def test_every_mode_gives_its_frames_back(run):
  """One batch with the four modes: the given frames come back exactly; without the pixel-space write-back, the
  frames of whole clean latent frames are still exact (clean tokens through a lossless autoencoder) while the last
  frame of interpolation (sharing its latent frame with three generated frames) is not."""
  _, model = run
  model = _perturbed(model)
  config, (T, H, W) = model.config, (model.num_frames, model.height, model.width)
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
  last = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
  depth = np.full((H, W), 2.0, np.float32)
  K = np.array([[H, 0, W / 2], [0, H, H / 2], [0, 0, 1.0]])
  w2c = model.trajectory("dolly_in:0.5")
  kw = dict(latent_shape=model.latent_shape, caption="a test")
  examples = [rc.make_example(video[0], depth, K, w2c, mode="basic", **kw),
              rc.make_example(video[0], depth, K, w2c, mode="interpolation", last_image=last, **kw),
              rc.make_example(video[0], depth, K, w2c, mode="loop", **kw),
              rc.make_example(video[0], depth, K, w2c, mode="continuation", context=video, num_given=5, **kw)]
  host = rc.stack_examples(examples)
  batch = methods.host_batch(host, model.model.tokenizer, model.model.method, config)
  outs = {paste: model.sample_batch(batch, paste_given=paste) for paste in (True, False)}
  out = outs[True]
  assert out.shape == (4, T, H, W, 3)
  for i in range(4):
    np.testing.assert_array_equal(out[i, 0], video[0])
  np.testing.assert_array_equal(out[1, -1], last)  # interpolation
  np.testing.assert_array_equal(out[2, -1], video[0])  # loop: the last frame is the first
  np.testing.assert_array_equal(out[3, :5], video[:5])  # continuation: frames 0..4 (latent frames 0 and 1)
  assert np.abs(out[0, 1:].astype(int) - video[0].astype(int)).mean() > 1  # the rest is generated
  raw = outs[False]
  np.testing.assert_array_equal(raw[:, 0], np.broadcast_to(video[0], raw[:, 0].shape))  # clean latent frame 0
  np.testing.assert_array_equal(raw[3, :5], video[:5])  # clean latent frames 0 and 1
  assert np.abs(raw[1, -1].astype(int) - last.astype(int)).mean() > 1  # not a clean token: only extra channels


def test_noise_shaping_changes_only_masked_latents_at_high_noise(run):
  """The method's shaping (preview encoded, its latent mask) then the clean hook, both variants: at sigma > 0.9
  exactly the latents under the preview mask change (outside the clean first latent frame), below it none do."""
  _, model = run
  static = model.model.static
  config = model.config
  ex = rc.held_out_example(config, 0)
  host = rc.stack_examples([ex])
  batch = jax.tree.map(jnp.asarray, {k: host[k] for k in ("frames", "K", "w2c", "mode", "num_given", "preview",
                                                          "preview_mask")})
  cond = rc.conditions(static, batch, None, training=False)
  clean = np.asarray(cond["clean"])[0, ..., 0] > 0
  assert clean[0].all() and not clean[1:].any()  # basic mode: latent frame 0 is the clean first frame
  t, h, w = rc.latent_grid(config)
  x = jax.random.normal(jax.random.key(1), (1, t, h, w, static.autoencoder.latent_channels))
  identity = lambda x_t, level: x_t
  for target in ("z_t", "x0"):
    denoise, hooks = rc.shaping_inputs(static, batch, identity, target=target, threshold=0.9)
    hooks = [*hooks, clean_hook(cond["latents"], cond["clean"], static.objective)]
    mask = np.asarray(host["preview_mask"])[0] & ~clean
    assert 0 < mask.mean() < 1
    for level, active in ((0.95, True), (0.5, False)):
      step = SamplerStep(index=0, level=jnp.array([level]), x_T=x, rng=jax.random.key(2), final=False)
      y = x
      for hook in hooks:
        y = hook(y, step)
      y = denoise(y, jnp.array([level]))
      changed = np.asarray(jnp.any(y != x, axis=-1))[0] & ~clean  # the clean hook rewrites latent frame 0
      if active:
        np.testing.assert_array_equal(changed, mask)
      else:
        assert not changed.any()
  with pytest.raises(rc.RealCamError, match="preview"):
    rc.shaping_inputs(static, {}, identity)


def test_realcam_cli_on_a_real_rgbd_photo(run, shared_data, tmp_path):
  """`python -m camjax.realcam` on the TUM RGB-D frame of rgbd_open3d with its sensor depth (1/5000 m) and the TUM
  fr3 intrinsics of its MANIFEST."""
  workdir, model = run
  data = shared_data / "rgbd_open3d"
  out = tmp_path / "out"
  args = dict(depth_path=data / "TUM_depth.png", depth_scale=5000, K=rcli.parse_intrinsics("535.4,539.2,320.1,247.6"),
              metres=0.5, rc=model)
  summary = rcli.realcam(workdir, data / "TUM_color.png", "dolly_in+pan_left:10", out, **args)
  names = {p.name for p in out.iterdir()}
  assert names == {"depth.npy", "depth.png", "points.ply", "preview.mp4", "preview_mask.mp4", "generated.mp4",
                   "side_by_side.mp4", "cameras.txt", "frusta.png", "summary.json"}
  assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
  assert abs(summary["max_travel_m"] - 0.5) < 1e-6 and summary["K_source"] == "--K"
  assert 1.0 < summary["depth_median_m"] < 4.0 and summary["preview_mask_fraction"] > 0.2
  header = (out / "points.ply").read_bytes()[:300].split(b"end_header\n")[0].decode()
  assert f"element vertex {summary['points']}" in header and summary["points"] > 100_000
  from camjax.media import read_video  # pylint: disable=import-outside-toplevel
  generated = read_video(out / "generated.mp4")
  assert generated.shape == (model.num_frames, model.height, model.width, 3)
  # The command itself: unknown intrinsics fall back to default_intrinsics; bad inputs are named, exit status 2.
  code = rcli.main(["--workdir", str(workdir), "--image", str(data / "TUM_color.png"), "--trajectory", "dolly_in",
                    "--out", str(tmp_path / "bad"), "--depth", str(data / "TUM_depth.png"), "--mode", "interpolation"])
  assert code == 2 and not (tmp_path / "bad").exists()


def test_named_errors():
  K = np.eye(3)
  image = np.zeros((8, 8, 3), np.uint8)
  w2c = np.tile(np.eye(4), (5, 1, 1))
  with pytest.raises(rc.RealCamError, match="unknown mode"):
    rc.make_example(image, None, K, w2c, latent_shape=(2, 1, 1), mode="zoom", with_preview=False)
  with pytest.raises(rc.RealCamError, match="needs last_image"):
    rc.make_example(image, None, K, w2c, latent_shape=(2, 1, 1), mode="interpolation", with_preview=False)
  with pytest.raises(rc.RealCamError, match="needs context"):
    rc.make_example(image, None, K, w2c, latent_shape=(2, 1, 1), mode="continuation", with_preview=False)
  with pytest.raises(rc.RealCamError, match=r"\[5, 4, 4\]"):
    rc.check_trajectory(np.eye(4), 5)
  bad = w2c.copy()
  bad[2, :3, :3] *= 2
  with pytest.raises(rc.RealCamError, match="frame 2"):
    rc.check_trajectory(bad, 5)
  with pytest.raises(rc.RealCamError, match="no valid pixel"):
    rc.scene_preview(image, np.zeros((8, 8)), K, w2c, (2, 1, 1))
  with pytest.raises(rc.RealCamError, match="uint8"):
    rcli.fit_image(np.zeros((8, 8), np.float32), None, None, 4, 4)
  with pytest.raises(rc.RealCamError, match="fx,fy,cx,cy"):
    rcli.parse_intrinsics("500,500,320")
  with pytest.raises(rc.RealCamError, match="does not translate"):
    rcli.read_trajectory("pan_left", 5, K, 8, 8, metres=1.0)
  with pytest.raises(rc.RealCamError, match="config.json"):
    rcli.RealCam.from_workdir(ROOT / "docs")
  config = _config()
  config.realcam.scale = "sfm"
  config.sample.mode = "zoom"
  problems = " ".join(methods.get("realcam_i2v").validate(config))
  assert "realcam.scale='sfm'" in problems and "sample.mode='zoom'" in problems


def test_camera_errors_are_scored_on_the_first_camera_scenes_only(run, tmp_path):
  """`eval.camera_scenes` bounds the SfM work of a many-scene evaluation: scene 0 gets camera errors, scene 1 none,
  and the means come from the scored scene."""
  _, model = run
  config = model.config.copy_and_resolve_references()
  config.eval.update(runs=("shaping",), camera_runs=("shaping",), camera_scenes=1)
  result = rc.evaluate_scenes(rc.METHOD, model.weights, config, model.mesh, model.model, 2, tmp_path)
  first, second = result["per_scene"]
  assert set(rc.CAMERA_KEYS) <= set(first["shaping"]) and "ground_truth" in first
  assert not set(rc.CAMERA_KEYS) & set(second["shaping"]) and "ground_truth" not in second
  assert result["camera_scenes"] == 1 and set(result["camera"]) == {"shaping", "ground_truth"}
  assert result["camera"]["ground_truth"]["camera_success"] == first["ground_truth"]["camera_success"]
  assert "Scored on the first 1 scenes" in (tmp_path / "report.md").read_text()


def test_paired_difference_is_the_mean_its_standard_error_and_the_wins():
  got = rc.paired_difference([0.5, -0.1, 0.3, float("nan"), 0.1])
  d = np.array([0.5, -0.1, 0.3, 0.1])
  assert got["n"] == 4 and got["wins"] == 3
  assert got["mean"] == pytest.approx(d.mean()) and got["se"] == pytest.approx(d.std(ddof=1) / 2)
  one = rc.paired_difference([1.0])
  assert one["mean"] == 1.0 and np.isnan(one["se"]) and one["wins"] == 1


def test_an_untrained_depth_warp_model_reprojects_its_anchor_frame_on_one_plane():
  """`model.anchor="depth_warp"` before training: every generated frame is the anchor frame (frame 0; the last given
  frame in continuation) shifted as a plane at the initial disparity moves under a trucking camera (an independent
  `np.interp` shift), given frames come back exactly, through 3-set guidance; the loss reaches the disparity head."""
  from camjax import sharding  # pylint: disable=import-outside-toplevel
  config = _config()
  assert config.model.anchor == "depth_warp"
  config.sample.update(w_cam=2.0, steps=2)  # three guidance sets: anchor and poses must repeat per set
  assert methods.get("realcam_i2v").validate(config) == []
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    model = methods.build_model(config, mesh)
  static = model.static
  generator = methods.merge(static, model.weights())
  T, S, f, step_m = 9, 32, 16.0, 0.1
  video = np.random.default_rng(4).integers(0, 255, (T, S, S, 3), dtype=np.uint8)
  w2c = np.eye(4, dtype=np.float32)[None].repeat(T, 0)
  w2c[:, 0, 3] = -step_m * np.arange(T)  # the camera trucks right by 0.1 m per frame
  K = np.broadcast_to(np.array([[f, 0, S / 2], [0, f, S / 2], [0, 0, 1]], np.float32), (3, T, 3, 3))
  modes = np.array([rc.BASIC, rc.INTERPOLATION, rc.CONTINUATION], np.int32)
  batch = dict(frames=jnp.asarray(np.broadcast_to(video, (3, *video.shape))), K=jnp.asarray(K),
               w2c=jnp.asarray(np.broadcast_to(w2c, (3, T, 4, 4))), mode=jnp.asarray(modes),
               num_given=jnp.array([1, 1, 3], jnp.int32), text_ids=jnp.zeros((3, 24), jnp.int32),
               text_mask=jnp.ones((3, 24), bool))
  out = np.asarray(jax.jit(lambda g, b: static.method.sample(g, static, b, jax.random.key(0), shaping=False))(
      generator, batch))
  gt = video.astype(np.float32) / 127.5 - 1

  def shifted(frame, px):  # output column x samples `frame` at x + px (the plane's image motion), edge-clamped
    xs = np.arange(S, dtype=np.float64)
    return np.stack([np.stack([np.interp(xs + px, xs, frame[y, :, ch]) for ch in range(3)], -1) for y in range(S)])

  d = config.model.anchor_disparity
  for row, anchor, given in ((0, 0, [0]), (1, 0, [0, T - 1]), (2, 2, [0, 1, 2])):
    for i in range(T):
      want = gt[i] if i in given else shifted(gt[anchor], f * d * step_m * (i - anchor))
      np.testing.assert_allclose(out[row, i], want, atol=1e-4, err_msg=f"mode {modes[row]}, frame {i}")
  assert np.abs(out[0, -1] - gt[0]).mean() > 0.05  # 3.2 px of motion: not the repeated first frame
  grads = jax.jit(jax.grad(lambda p: static.method.loss(methods.merge(static, dict(model.weights(), params=p)),
                                                         static, batch, jax.random.key(1))))(model.params)
  head = grads["disparity_head"]["proj"]["kernel"]
  assert float(jnp.abs(head.get_value() if hasattr(head, "get_value") else head).max()) > 0
