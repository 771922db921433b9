"""RealCam-I2V on the paper-scale path (configs/realcam_i2v.py:wan_tiny, wan1_3b's code at toy size): the tiny random
WAN DiT, VAE and umT5 encoder of `camjax.models.tiny` (the `parity` extra writes them); the WAN VAE inside the step
(`autoencoder.kind="wan_vae"`), a frozen module of the generator that encodes the video, the given frames and the
preview and decodes the samples; umT5 embeddings of the captions in the records and of every prompt."""

import os
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from camjax import methods, realcam as rcli, train
from camjax.config_base import load_config
from camjax.errors import TrainingError
from camjax.methods import realcam_i2v as rc
from camjax.models.autoencoders import AutoencoderError, StepVAE
from camjax.models.wan_vae import WanVAE

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("diffusers", reason="writing the tiny WAN folders needs the parity extra (torch, diffusers)")


def _config(name="realcam_i2v", variant="wan_tiny"):
  return load_config(str(ROOT / "configs" / f"{name}.py"), variant)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Tiny models -> the wan_tiny variant trained for 2 steps by the main job, with its samples and evaluation."""
  from camjax.models import tiny  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("realcam_wan_vae")
  tiny.write_tiny_models(root / "models")
  config = _config()
  config.tiny_models = str(root / "models")
  config.data.update(num_scenes=3)
  config.train.update(steps=2, checkpoint_every=2, log_every=1)
  config.sample.update(num=1, steps=2)
  config.eval.update(runs=("shaping",))
  summary = train.train_and_evaluate(config, root / "run")
  assert summary.end_step == 2 and np.isfinite(summary.last_loss)
  return root, config, rcli.RealCam.from_workdir(root / "run")


def _flat(state) -> dict:
  return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(state)}


def test_the_vae_is_frozen_saved_and_samples_are_decoded(run):
  root, config, model = run
  assert config.autoencoder.path == str(root / "models" / "vae")
  params, frozen = _flat(model.weights["params"]), _flat(model.weights["frozen"])
  assert params and not any(k.startswith("vae/") for k in params)  # the optimiser never sees the VAE
  vae = {k[len("vae/"):]: v for k, v in frozen.items() if k.startswith("vae/")}
  folder = _flat(nnx.state(WanVAE.from_diffusers(root / "models" / "vae")))
  assert vae.keys() == folder.keys() and len(vae) > 20
  for k, v in folder.items():  # restored from the checkpoint after two optimiser steps: still the folder's weights
    np.testing.assert_array_equal(vae[k], v, err_msg=k)
  assert isinstance(model.model.static.autoencoder, StepVAE) and methods.make_video_codec(config) is None
  # umT5 text: the records RealCam-I2V wrote carry the embeddings of their captions (the umT5 encoder's, exactly),
  # the generator has no text encoder of its own, and captions without embeddings need the encoder.
  from camjax.data.shards import ShardSource  # pylint: disable=import-outside-toplevel
  assert model.model.static.config.text.kind == "precomputed" and model.model.tokenizer is None
  record = ShardSource(next((root / "run" / "data").glob("realcam_3x9f32px_*")))[0]
  encoder = methods.shared_caption_encoder(config)
  emb, mask = encoder([record.caption])
  assert record.text_embeddings.shape == (int(mask[0].sum()), config.text.width)
  np.testing.assert_allclose(record.text_embeddings, emb[0][:int(mask[0].sum())], atol=1e-6)
  assert methods.shared_caption_encoder(config) is encoder  # one encoder per folder in the process ...
  some_file = next(p for p in Path(config.text.tokenizer_path).iterdir() if p.is_file())
  os.utime(some_file, ns=(some_file.stat().st_atime_ns, some_file.stat().st_mtime_ns + 10**9))
  assert methods.shared_caption_encoder(config) is not encoder  # ... and a new one when its files change
  no_encoder = config.copy_and_resolve_references()
  no_encoder.text.encoder_path = ""
  with pytest.raises(methods.MethodError, match="text.encoder_path is empty"):
    methods.host_batch({"caption": np.array(["a room"])}, None, model.model.method, no_encoder)
  samples = sorted((root / "run" / "samples").glob("step_*/generated_0.mp4"))
  assert samples  # decoded by the step's VAE: videos, not latents
  report = (root / "run" / "eval_realcam" / "report.md").read_text()
  assert "shaping (z_t, eq.)" in report and "nan |" not in report.split("| PSNR in mask (dB) |")[1].split("\n")[0]


def test_the_step_encodes_given_frames_causally_and_gives_them_back(run):
  """Inside the step the generator's VAE encodes: the video latents are WanVAE.encode of the video; the given-frame
  channels of basic mode hold frame 0's latent frame exactly as the whole video's (a causal VAE encodes frame 0
  alone); interpolation's last frame enters only through the extra channels (its latent frame mixes three
  generated frames) and comes back exactly after the pixel-space write-back."""
  _, _, model = run
  T, H, W = model.num_frames, model.height, model.width
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
  last = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
  depth = np.full((H, W), 2.0, np.float32)
  K = np.array([[H, 0, W / 2], [0, H, H / 2], [0, 0, 1.0]])
  kw = dict(latent_shape=model.latent_shape, caption="a test")
  w2c = model.trajectory("dolly_in:0.5")
  host = rc.stack_examples([rc.make_example(video[0], depth, K, w2c, mode="basic", **kw),
                            rc.make_example(video[0], depth, K, w2c, mode="interpolation", last_image=last, **kw)])
  host["frames"] = np.stack([video, np.concatenate([video[:-1], last[None]])])
  batch = methods.host_batch(host, model.model.tokenizer, model.model.method, model.config)
  static = model.model.static

  def cond(w, batch):
    bound = methods.bind_autoencoder(methods.merge(static, w), static)
    return rc.conditions(bound, batch, jax.random.key(0), training=False)

  out = jax.jit(cond)(model.weights, batch)
  vae = WanVAE.from_diffusers(model.config.autoencoder.path)
  frames = np.asarray(batch["frames"], np.float32) / 127.5 - 1.0
  expect = np.asarray(vae.encode(frames))
  given = np.zeros_like(frames)
  given[:, 0], given[1, -1] = frames[:, 0], frames[1, -1]  # basic: frame 0; interpolation: frames 0 and T-1
  expect_given = np.asarray(vae.encode(given))
  np.testing.assert_allclose(np.asarray(out["latents"]), expect, atol=2e-5)
  cond_latents = np.asarray(out["extra_in"])[..., :vae.latent_channels]
  np.testing.assert_allclose(cond_latents, expect_given, atol=2e-5)
  np.testing.assert_allclose(cond_latents[:, 0], expect[:, 0], atol=2e-5)  # causal: frame 0 alone = the video's
  # A random tiny VAE is weakly sensitive to its input, but far above the 2e-5 agreement: the other latent frames
  # of basic mode encode zeros, not the video, and interpolation's last latent frame holds the given last frame.
  assert np.abs(cond_latents[0, 1:] - expect[0, 1:]).max() > 2e-3
  assert np.abs(cond_latents[1, -1] - cond_latents[0, -1]).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(out["clean"])[:, 1:], 0)  # no clean token but latent frame 0

  outs = {paste: model.sample_batch(batch, paste_given=paste) for paste in (True, False)}
  assert outs[True].shape == (2, T, H, W, 3)
  np.testing.assert_array_equal(outs[True][:, 0], np.broadcast_to(video[0], (2, H, W, 3)))
  np.testing.assert_array_equal(outs[True][1, -1], last)
  assert np.abs(outs[False][1, -1].astype(int) - last.astype(int)).mean() > 1  # a lossy random VAE, not a paste


def test_realcam_cli_with_the_step_vae(run, shared_data, tmp_path):
  """`camjax.realcam` on a real RGB-D photo with a wan_vae run: interpolation mode, its given frames back exactly."""
  root, _, model = run
  data = shared_data / "rgbd_open3d"
  code = rcli.main(["--workdir", str(root / "run"), "--image", str(data / "TUM_color.png"), "--depth",
                    str(data / "TUM_depth.png"), "--depth_scale", "5000", "--K", "535.4,539.2,320.1,247.6",
                    "--trajectory", "dolly_in", "--metres", "0.5", "--mode", "interpolation", "--last_image",
                    str(data / "NYU_color.ppm"), "--out", str(tmp_path / "out")])
  assert code == 0
  from camjax.media import read_video  # pylint: disable=import-outside-toplevel
  generated = read_video(tmp_path / "out" / "generated.mp4")
  assert generated.shape == (model.num_frames, model.height, model.width, 3)
  assert np.abs(generated[0].astype(int) - generated[-1].astype(int)).mean() > 10  # two different given photos


def test_wan_vae_named_errors(tmp_path):
  with pytest.raises(AutoencoderError, match="bind_autoencoder"):
    StepVAE(path="/x").encode(np.zeros((1, 5, 16, 16, 3), np.float32))
  config = _config()
  config.tiny_models = str(tmp_path / "missing")
  with pytest.raises(TrainingError, match="not a diffusers AutoencoderKLWan folder"):
    methods.make_autoencoder(config)
  config.autoencoder.path = ""
  with pytest.raises(TrainingError, match="needs autoencoder.path"):
    methods.make_autoencoder(config)
  config = _config()
  config.model.anchor = "depth_warp"
  config.objective.prediction = "sample"
  with pytest.raises(train.ConfigError, match="model.anchor='depth_warp' with autoencoder.kind='wan_vae'"):
    train.validate_config(config)
  config = _config("cameractrl2", "test")
  config.autoencoder.update(kind="wan_vae", path="/x", channels=16)
  with pytest.raises(train.ConfigError, match="autoencoder.kind='wan_vae' .*cameractrl2"):
    train.validate_config(config)
