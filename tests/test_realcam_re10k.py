"""RealCam-I2V's `re10k` variant at toy size: real RealEstate10K clips aligned to metric scale with a (tiny random)
Depth Anything V2 metric checkpoint, trained on, sampled and evaluated on a held-out real clip; the aligned dataset
is cached in the workdir and reused; its factors are `align_re10k`'s; a missing or wrong depth model is named."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from camjax import depth as dp
from camjax import geometry as g
from camjax import train
from camjax.config_base import load_config
from camjax.data.curate.metric import align_re10k
from camjax.data.shards import ShardSource
from camjax.data.sources import re10k_records
from camjax.methods import realcam_i2v as rc

ROOT = Path(__file__).resolve().parents[1]
# Two scenes of the shared clips, their 14-frame videos: the first trains, the second (last by id) is held out.
CLIPS = ("0bf152ef84195293_svd", "0c11dbe781b1c11c_svd")


def _config(variant="re10k"):
  return load_config(str(ROOT / "configs" / "realcam_i2v.py"), variant)


@pytest.fixture(scope="module")
def depth_model(tiny_depth_anything):
  """The folder of the tiny random metric Depth Anything checkpoint (tests/conftest.py)."""
  return tiny_depth_anything[0]


@pytest.fixture(scope="module")
def clips(shared_data, tmp_path_factory):
  """A RealEstate10K-layout folder linking two of the shared clips (pose file + video each)."""
  src = shared_data / "re10k_clips"
  root = tmp_path_factory.mktemp("re10k_two")
  for sub, suffix in (("pose_files", ".txt"), ("videos", ".mp4")):
    (root / sub).mkdir()
    for clip in CLIPS:
      (root / sub / f"{clip}{suffix}").symlink_to(src / sub / f"{clip}{suffix}")
  return root


def _toy(clips, depth_model):
  c = _config()
  c.model.update(num_heads=2, head_dim=16, ffn_dim=64, num_layers=2)
  c.text.update(width=32, max_length=24)
  c.data.update(path=str(clips), num_frames=9, height=32, width=64, stride=(1, 1), batch_size=2)
  c.realcam.depth_model = str(depth_model)
  c.train.update(steps=1, log_every=1, checkpoint_every=1)
  c.optimizer.update(warmup_steps=1)
  c.sample.update(num=1, steps=2)
  c.eval.update(scenes=1, trials=1, runs=("shaping",))  # one of the six sampling runs (each compiles its sampler)
  return c


@pytest.fixture(scope="module")
def run(clips, depth_model, tmp_path_factory):
  """The variant trained for one step by the main job: alignment, samples, held-out evaluation."""
  workdir = tmp_path_factory.mktemp("realcam_re10k")
  config = _toy(clips, depth_model)
  summary = train.train_and_evaluate(config, workdir)
  assert summary.end_step == 1 and np.isfinite(summary.last_loss)
  return workdir, config, summary


def _aligned(workdir) -> Path:
  folders = list((workdir / "data").glob("realcam_re10k_re10k_two*_*"))
  assert len(folders) == 1, folders
  return folders[0]


def test_re10k_variant_trains_samples_and_evaluates_held_out_real_clips(run):
  workdir, config, summary = run
  folder = _aligned(workdir)
  split = {c["clip"]: c["split"] for c in json.loads((folder / "clips.json").read_text())}
  assert split == {CLIPS[0]: "train", CLIPS[1]: "heldout"}
  # Samples: the held-out clip's real first frame, its aligned cameras, side by side with the ground truth.
  sample_dir = summary.samples[0].parent
  assert summary.samples[0].name == "sample_0.mp4" and (sample_dir / "generated_0.mp4").exists()
  (held,) = _records(folder / "heldout")
  metric = held.cameras.take(np.arange(config.data.num_frames)).relative(0)
  conditioned = g.read_re10k(sample_dir / "cameras_0.txt")
  np.testing.assert_allclose(conditioned.w2c, metric.w2c, atol=1e-5)  # the aligned (metric) cameras
  # The evaluation of held-out real clips: every run and baseline scored against the real frames.
  metrics = json.loads((workdir / "eval_realcam" / "metrics.json").read_text())
  assert metrics["data"] == "re10k" and metrics["num_scenes"] == 1 and metrics["clips_too_short"] == []
  row = metrics["per_scene"][0]
  assert row["clip_id"] == f"re10k-{CLIPS[1]}" and 0.1 < row["mask_fraction"] <= 1
  assert metrics["columns"] == ["shaping", *rc.BASELINES]
  for column in metrics["columns"]:
    assert np.isfinite(row[column]["psnr"]) and 0 < row[column]["psnr_mask"] < 60
  # The preview (the real first frame lifted with the depth model's depth, rendered along the clip's cameras) is
  # closer to the real frames inside its mask than their mean colour.
  assert row["preview"]["psnr_mask"] > row["mean_colour"]["psnr_mask"]
  minus = metrics["shaping_minus"]["mean_colour"]  # paired per-scene difference, one scene: no standard error
  assert minus["n"] == 1 and minus["mean"] == pytest.approx(row["shaping"]["psnr_mask"] - row["mean_colour"]["psnr_mask"])
  # CamI2V camera errors of the shaped video and of the real clip (the SfM floor), metric variants included; SfM of
  # 32 x 64 frames may fail (NaN), but every key is there and the success fraction is a fraction.
  assert metrics["camera_runs"] == ["shaping"] and set(metrics["camera"]) == {"shaping", "ground_truth"}
  assert metrics["camera_scenes"] == 1
  assert set(rc.CAMERA_KEYS) <= set(row["ground_truth"]) and 0 <= row["ground_truth"]["camera_success"] <= 1
  report = (workdir / "eval_realcam" / "report.md").read_text()
  assert "TransErr_abs (metric)" in report and "ground-truth video (SfM reference)" in report
  assert "held-out RealEstate10K clips" in report and CLIPS[1] in report
  assert (workdir / "eval_realcam" / "strip_0.png").exists()


def test_factors_are_align_re10k_s_and_scale_the_translations(run, clips, depth_model, tmp_path):
  workdir, _, _ = run
  folder = _aligned(workdir)
  written = {r["clip"]: r for r in json.loads((folder / "alignment" / "metric_scale.json").read_text())}
  assert set(written) == set(CLIPS) and all(r["kept"] for r in written.values())
  # align_re10k itself on the held-out clip alone (the factors are per clip; one triangulation keeps this short)
  one = tmp_path / "one"
  for sub in ("pose_files", "videos"):
    (one / sub).mkdir(parents=True)
    for f in (clips / sub).glob(f"{CLIPS[1]}.*"):
      (one / sub / f.name).symlink_to(f.resolve())
  (direct,) = align_re10k(one, dp.DepthAnythingMetric(depth_model), num_threads=1)
  assert direct["clip"] == CLIPS[1] and direct["kept"]
  assert written[CLIPS[1]]["factor"] == direct["factor"]
  assert written[CLIPS[1]]["frame_factors"] == direct["frame_factors"]
  assert written[CLIPS[0]]["factor"] != pytest.approx(direct["factor"], rel=1e-3)  # another clip, another factor
  # The datasets hold the real frames with every translation multiplied by the clip's factor.
  raw = {r.clip_id: r for r in re10k_records(clips)}
  for split, clip in (("train", CLIPS[0]), ("heldout", CLIPS[1])):
    (record,) = _records(folder / split)
    factor = written[clip]["factor"]
    assert record.clip_id == f"re10k-{clip}" and record.metric_scale == pytest.approx(factor, rel=1e-6)
    original = raw[record.clip_id]
    # (camjax datasets keep cameras at float32 precision)
    np.testing.assert_allclose(record.w2c[:, :3, 3], factor * original.w2c[:, :3, 3], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(record.w2c[:, :3, :3], original.w2c[:, :3, :3], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(record.frames, original.frames)
    assert factor != pytest.approx(1.0)
  (held,) = _records(folder / "heldout")
  np.testing.assert_allclose(held.depth[0], dp.DepthAnythingMetric(depth_model)(held.frames[0]), rtol=1e-6)
  assert not held.depth[1:].any()


def _dataset(folder: Path) -> Path:
  from camjax.data.shards import dataset_dir  # pylint: disable=import-outside-toplevel
  return dataset_dir(folder)


def _records(folder: Path) -> list:
  source = ShardSource(_dataset(folder))
  return [source[i] for i in range(len(source))]


def test_a_second_run_reuses_the_aligned_dataset_and_too_short_clips_are_counted(run, caplog):
  workdir, config, _ = run
  folder = _aligned(workdir)
  stamp = json.loads((folder / "camjax_provenance.json").read_text())["written_at"]
  mtime = (folder / "clips.json").stat().st_mtime_ns
  config = _toy(Path(config.data.path), config.realcam.depth_model)
  config.sample.num = 0  # the run resumes at its last step: nothing to train, sample or evaluate (nothing compiles)
  config.eval.at_end = False
  with caplog.at_level(logging.INFO, logger="camjax.methods.realcam_i2v"):
    summary = train.train_and_evaluate(config, workdir)
  assert summary.start_step == summary.end_step == 1
  assert "reusing the aligned RealEstate10K dataset" in caplog.text
  assert _aligned(workdir) == folder and (folder / "clips.json").stat().st_mtime_ns == mtime
  assert json.loads((folder / "camjax_provenance.json").read_text())["written_at"] == stamp
  # A 17-frame window: the 14-frame clips are too short. Counted and logged, not crashed on; the held-out split
  # then has nothing to sample from, which is named before any training.
  config.data.num_frames = 17
  config.sample.num = 1
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="camjax.methods.realcam_i2v"):
    with pytest.raises(rc.RealCamError, match="no held-out clip has the 17 frames"):
      train.prepare_datasets(config, workdir)
  assert "1 of 1 training clips are shorter than the 17 frames" in caplog.text
  examples, too_short = rc.clip_examples(config, _dataset(folder / "heldout"))
  assert examples == [] and too_short == [f"re10k-{CLIPS[1]}"]


def test_a_missing_or_wrong_depth_model_is_named(clips, depth_model, tmp_path):
  config = _toy(clips, tmp_path / "nowhere")
  with pytest.raises(dp.DepthModelNotFoundError, match=r"folder not found.*--config\.realcam\.depth_model="):
    train.prepare_datasets(config, tmp_path / "run")
  relative = tmp_path / "relative"
  shutil.copytree(depth_model, relative)
  cfg = json.loads((relative / "config.json").read_text())
  (relative / "config.json").write_text(json.dumps(dict(cfg, depth_estimation_type="relative")))
  config.realcam.depth_model = str(relative)
  with pytest.raises(dp.NotMetricDepthError, match=r"relative-depth checkpoint.*--config\.realcam\.depth_model="):
    train.prepare_datasets(config, tmp_path / "run")
  assert not (tmp_path / "run" / "data").exists()  # nothing aligned, nothing written
  # An empty path and other bad combinations are named before anything is built.
  config.realcam.depth_model = ""
  config.realcam.heldout_scenes = 0
  config.eval.runs = ("no_shaping", "scale_x3")
  with pytest.raises(train.ConfigError, match=r"realcam\.depth_model=''.*realcam\.heldout_scenes=0.*eval\.runs="):
    train.validate_config(config)
  default = _config("default")
  default.data.source = "re10k"
  with pytest.raises(train.ConfigError, match=r"realcam\.depth_model is not a field.*realcam_i2v\.py:re10k"):
    train.validate_config(default)
  default.data.source = "shards"
  with pytest.raises(train.ConfigError, match=r"data\.source='shards'.*'re10k'"):
    train.validate_config(default)


def test_umt5_text_puts_caption_embeddings_into_the_aligned_records(run, clips, depth_model, tmp_path):
  """With umT5 text (wan1_3b's path; the tiny random encoder of camjax.models.tiny), the aligned records of both
  splits carry their captions' embeddings, and the dataset is another one than the byte-text run's (keyed by the
  encoder's files)."""
  pytest.importorskip("transformers", reason="writing the tiny umT5 folders needs the parity extra")
  from camjax import methods  # pylint: disable=import-outside-toplevel
  from camjax.models import tiny  # pylint: disable=import-outside-toplevel
  workdir, _, _ = run
  models = tiny.write_tiny_models(tmp_path / "models")
  config = _toy(clips, depth_model)
  config.text.update(kind="precomputed", width=tiny.TEXT_WIDTH, max_length=16,
                     encoder_path=str(models["text_encoder"]), tokenizer_path=str(models["tokenizer"]))
  train.validate_config(config)
  folders = rc.prepare_re10k(config, tmp_path / "run")
  assert _aligned(tmp_path / "run").name != _aligned(workdir).name  # another digest: not the byte-text dataset
  emb, mask = methods.shared_caption_encoder(config)([""])  # RealEstate10K clips have no caption
  for split in ("main", "heldout"):
    (record,) = _records(folders[split])
    n = int(mask[0].sum())
    assert record.caption == "" and record.text_embeddings.shape == (n, tiny.TEXT_WIDTH)
    np.testing.assert_allclose(record.text_embeddings, emb[0][:n], atol=1e-6)
  config.text.encoder_path = ""
  with pytest.raises(train.ConfigError, match="text.encoder_path=''"):
    train.validate_config(config)

