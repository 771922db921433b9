"""Paper-scale code path at toy size: WAN weights from a diffusers folder, records with precomputed VAE latents and
text embeddings (the `wan1_3b` / `wan14b` variants)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from camjax import train  # noqa: E402
from camjax.data.pipeline import make_pipeline  # noqa: E402
from camjax.data.records import ClipRecord, RecordError  # noqa: E402
from camjax.data.shards import ShardSource, write_shards  # noqa: E402
from camjax.geometry import trajectories  # noqa: E402
from camjax.geometry.formats import read_re10k  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T, H, W, C, D = 5, 32, 32, 16, 24  # 5 frames -> 2 latent frames of 4x4x16 (WAN VAE factors 4, 8)
TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=C, out_channels=C,
            text_dim=D, freq_dim=32, ffn_dim=40, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=1e-6, rope_max_seq_len=64)
MOTIONS = ("pan_left", "dolly_in", "orbit_right", "tilt_up")


def _records(text_lengths=(3, 12, 7, 1)):
  rng = np.random.default_rng(0)
  out = []
  for i, (motion, length) in enumerate(zip(MOTIONS, text_lengths)):
    cams = trajectories.preset(motion, T, height=H, width=W)
    out.append(ClipRecord(
        clip_id=f"clip{i}", K=cams.K, w2c=cams.w2c, height=H, width=W, caption=f"scene {i}", source="test",
        latents=rng.standard_normal((1 + (T - 1) // 4, H // 8, W // 8, C)).astype(np.float32),
        text_embeddings=rng.standard_normal((length, D)).astype(np.float32)))
  return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return write_shards(_records(), tmp_path_factory.mktemp("shards") / "latents", description="precomputed test")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  torch.manual_seed(0)
  path = tmp_path_factory.mktemp("wan") / "tiny"
  diffusers.WanTransformer3DModel(**TINY).save_pretrained(path)
  return path


def _config(dataset, pretrained):
  spec = importlib.util.spec_from_file_location("cameractrl2", ROOT / "configs" / "cameractrl2.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("wan1_3b")  # the paper-scale variant, shrunk: same code path
  config.model.update(pretrained=str(pretrained), num_heads=2, head_dim=12, ffn_dim=40, num_layers=2,
                      dtype="float32", remat="none", attention="xla")
  config.text.update(width=D, max_length=8)
  # The unlabeled stream of joint training is a dataset of its own (here the same records; their cameras are ignored).
  config.data.update(path=str(dataset), num_frames=T, height=H, width=W, stride=(1, 1), batch_size=2, worker_count=0,
                     unlabeled_path=str(dataset))
  config.optimizer.update(warmup_steps=1)
  config.train.update(steps=2, log_every=1, checkpoint_every=2)
  config.sample.update(every=0, num=1, steps=2)
  config.phase2.steps = 0  # phase 2 reads records at 384x640 (`phase2.path`)
  return config


def test_pipeline_yields_latents_and_padded_text(dataset):
  ds = make_pipeline(ShardSource(dataset), num_frames=T, height=H, width=W, batch_size=4, shuffle=False,
                     num_epochs=1, text_length=8, process_index=0, process_count=1, on_error="raise")
  batch = next(iter(ds))
  assert "frames" not in batch
  assert batch["latents"].shape == (4, 2, 4, 4, C)
  assert batch["text_embeddings"].shape == (4, 8, D)
  records = {r.clip_id: r for r in _records()}  # shards store records in their own order
  for i, clip_id in enumerate(batch["clip_id"]):
    record = records[str(clip_id)]
    n = min(len(record.text_embeddings), 8)  # truncated to 8 tokens
    assert batch["text_mask"][i].sum() == n and batch["text_mask"][i, :n].all()
    np.testing.assert_allclose(batch["text_embeddings"][i, :n], record.text_embeddings[:n])
    assert not batch["text_embeddings"][i, n:].any()
    np.testing.assert_allclose(batch["latents"][i], record.latents)
  np.testing.assert_allclose(batch["w2c"][:, 0], np.broadcast_to(np.eye(4), (4, 4, 4)), atol=1e-6)


def test_latent_records_get_a_global_reference_from_their_clip(dataset):
  """Clip extension's global reference with precomputed latents: a frame of the clip (0..range), posed in the
  window's frame, not always the identity (which would silently be Table 5's per-clip ablation)."""
  records = {r.clip_id: r for r in _records()}
  seen_other = False
  for seed in range(4):
    ds = make_pipeline(ShardSource(dataset), num_frames=T, height=H, width=W, batch_size=4, seed=seed, num_epochs=1,
                       global_reference=8, process_index=0, process_count=1, on_error="raise")
    batch = next(iter(ds))
    for i, clip_id in enumerate(batch["clip_id"]):
      cams = records[str(clip_id)]
      candidates = [(np.asarray(cams.w2c[r]) @ np.linalg.inv(np.asarray(cams.w2c[0]))) for r in range(T)]
      errors = [np.abs(batch["reference_w2c"][i] - c).max() for c in candidates]
      assert min(errors) < 1e-4, errors
      seen_other |= int(np.argmin(errors)) != 0
  assert seen_other


def test_pipeline_refuses_latents_at_another_size(dataset):
  for num_frames, size in ((9, H), (T, 64)):
    ds = make_pipeline(ShardSource(dataset), num_frames=num_frames, height=size, width=size, batch_size=1,
                       shuffle=False, num_epochs=1, process_index=0, process_count=1, on_error="raise")
    with pytest.raises(RecordError, match="precomputed latents cover the whole clip"):
      next(iter(ds))


def test_wan_variant_trains_on_precomputed_records_from_pretrained_weights(dataset, pretrained, tmp_path):
  config = _config(dataset, pretrained)
  summary = train.train_and_evaluate(config, tmp_path)
  assert summary.end_step == 2 and np.isfinite(summary.first_loss) and np.isfinite(summary.last_loss)
  latents = np.load(summary.samples[0])
  assert summary.samples[0].name == "latents_0.npy" and latents.shape == (2, 4, 4, C) and np.isfinite(latents).all()
  caption = (summary.samples[0].parent / "caption_0.txt").read_text().strip()
  assert caption.startswith("scene ")
  cams = read_re10k(summary.samples[0].parent / "cameras_0.txt", image_size=(H, W))
  expected = trajectories.preset(MOTIONS[int(caption.split()[1])], T, height=H, width=W)
  np.testing.assert_allclose(cams.w2c, expected.w2c, atol=1e-5)  # the cameras the sample was conditioned on


def test_pretrained_model_must_match_the_config(dataset, pretrained):
  config = _config(dataset, pretrained)
  config.text.width = D + 8
  from camjax import methods, sharding  # pylint: disable=import-outside-toplevel
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh), pytest.raises(train.TrainingError, match="text_dim is 24 but the config needs 32"):
    methods.build_model(config, mesh)
