"""The `wan_tiny` variant end to end: the paper-scale path (WAN DiT from a diffusers folder, WAN-VAE latents and umT5
embeddings precomputed into records, samples decoded by the JAX VAE, exploration with the VAE and umT5) from raw
frames to decoded mp4s, on tiny random models written by `python -m camjax.models.tiny`.

Compile-bound on CPU: the module runs with `jax_disable_most_optimizations` (restored afterwards).
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import jax  # noqa: E402

from camjax import explore, media, train  # noqa: E402
from camjax.data import precompute, synthetic  # noqa: E402
from camjax.data.shards import ShardSource  # noqa: E402
from camjax.errors import TrainingError  # noqa: E402
from camjax.methods import base  # noqa: E402
from camjax.models import tiny  # noqa: E402
from camjax.models.autoencoders import PrecomputedLatents  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T, H, W = 9, 32, 32  # 9 frames -> 3 latent frames of 4x4x16


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def _config(variant="wan_tiny"):
  spec = importlib.util.spec_from_file_location("cameractrl2", ROOT / "configs" / "cameractrl2.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _read(path) -> np.ndarray:
  import mediapy  # pylint: disable=import-outside-toplevel
  media._setup_ffmpeg()  # pylint: disable=protected-access
  return np.asarray(mediapy.read_video(str(path)))


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
  """Setup step -> procedural frames -> precompute -> the main job (2 steps, clip extension on, samples decoded)."""
  root = tmp_path_factory.mktemp("wan_tiny")
  assert tiny.main(["--out", str(root / "models")]) == 0
  frames = synthetic.write_dataset(root / "frames", 2, resolution=W, frames=T, tracks=0, progress=False)
  precompute.main(["--data", str(frames), "--out", str(root / "latents"), "--vae", str(root / "models" / "vae"),
                   "--text_encoder", str(root / "models" / "text_encoder"), "--tokenizer",
                   str(root / "models" / "tokenizer"), "--num_frames", str(T), "--height", str(H), "--width", str(W)])
  config = _config()
  config.tiny_models = str(root / "models")  # one field moves every model folder ...
  config.data.path = str(root / "latents")  # ... and one both datasets
  config.train.update(steps=2, checkpoint_every=2, log_every=1, extension_prob=0.5)  # global reference in phase 1
  config.phase2.steps = 0  # (a second train-step compile; phase 2 is phase 1 with extension_prob)
  config.data.batch_size = 2
  config.sample.update(num=1, steps=2)
  summary = train.train_and_evaluate(config, root / "run")
  return root, config, summary


def test_config_points_every_folder_at_tiny_models():
  config = _config()
  config.tiny_models = "/m"
  config.data.path = "/d"
  assert config.model.pretrained == "/m/transformer" and config.autoencoder.path == "/m/vae"
  assert (config.text.encoder_path, config.text.tokenizer_path) == ("/m/text_encoder", "/m/tokenizer")
  assert config.data.unlabeled_path == "/d"
  # The train step closes over shapes only: the VAE is a host-side codec, never part of the jitted step.
  ae = base.make_autoencoder(config)
  assert isinstance(ae, PrecomputedLatents) and not ae.can_decode
  with pytest.raises(TrainingError, match="autoencoder.path"):
    base.make_video_codec(config)  # no VAE at /m/vae: refused when the run starts, not after training
  pixel = _config("test")
  pixel.autoencoder.path = "/m/vae"
  with pytest.raises(TrainingError, match="kind='precomputed'"):
    base.make_autoencoder(pixel)


def test_setup_step_names_the_missing_extra(monkeypatch, tmp_path):
  monkeypatch.setitem(__import__("sys").modules, "diffusers", None)  # as if not installed
  with pytest.raises(tiny.MissingParityExtraError, match=r"diffusers.*parity"):
    tiny.write_tiny_models(tmp_path / "models")


def test_records_carry_latents_and_umt5_embeddings(latent_run):
  root, config, _ = latent_run
  records = ShardSource(root / "latents")
  assert len(records) == 2
  r = records[0]
  assert r.frames is None and r.latents.shape == (3, H // 8, W // 8, tiny.LATENT_CHANNELS)
  assert r.text_embeddings.ndim == 2 and r.text_embeddings.shape[1] == config.text.width
  assert 1 < len(r.text_embeddings) <= config.text.max_length and np.isfinite(r.text_embeddings).all()


def test_main_job_writes_decoded_mp4s_and_evaluates_them(latent_run):
  root, config, summary = latent_run
  assert summary.end_step == 2 and np.isfinite(summary.last_loss)
  out = summary.samples[0].parent
  assert summary.samples[0].name == "sample_0.mp4" and not list(out.glob("latents_*.npy"))
  generated, truth, side = (_read(out / f"{n}_0.mp4") for n in ("generated", "ground_truth", "sample"))
  assert generated.shape == truth.shape == (T, H, W, 3) and side.shape == (T, H, 2 * W, 3)
  assert generated.std() > 1 and truth.std() > 1  # real pictures, not a constant
  assert np.abs(generated.astype(float) - truth.astype(float)).mean() > 1  # the sample, not a copy of the record
  metrics = json.loads((out / "eval" / "metrics.json").read_text())
  assert metrics["num_videos"] == 1 and "psnr" in metrics["aggregate"]


def test_exploration_encodes_samples_and_decodes_windows(latent_run, tmp_path):
  root, _, _ = latent_run
  explorer = explore.Explorer.from_workdir(root / "run")
  assert explorer.codec is not None and explorer.captions is not None
  image = synthetic.render_scene(5, num_frames=1, height=H, width=W, num_tracks=0)[0].frames[0]
  run = explorer.start("pan_left", image=image, caption="a red box bouncing on a grey tiled floor")
  clip = run.extend("dolly_in", cond_frames=5)
  assert run.video.shape == (T + T - 5, H, W, 3) and run.video.std() > 1
  # Global reference: the second window is posed in the exploration's frame (its first pose is not the identity).
  assert not np.allclose(clip.cameras.w2c[0], np.eye(4), atol=1e-3)
  out = run.save(tmp_path / "explore")
  assert _read(out / "exploration.mp4").shape == (T + T - 5, H, W, 3)
  emb, mask = explorer.captions(["a red box bouncing on a grey tiled floor", ""])
  assert emb.shape == (2, 128, tiny.TEXT_WIDTH) and mask[0].sum() > mask[1].sum() >= 1
  assert not emb[0, mask[0].sum():].any()  # WAN's text handling: zeros after the last real token
