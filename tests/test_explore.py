"""CameraCtrl II scene exploration: extension training (condition tokens clean, out of the loss, global reference),
phase 2 continuing a phase-1 run, and the clip-by-clip exploration API / CLI."""

import importlib.util
import json
import re
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax import explore, methods, train
from camjax.conditioning import cameractrl2 as cc2
from camjax.data.pipeline import make_pipeline
from camjax.data.synthetic import SyntheticSource
from camjax.diffusion import FlowMatching
from camjax.geometry import trajectories
from camjax.geometry.errors import CameraError
from camjax.models import WanDiT, preset

ROOT = Path(__file__).resolve().parents[1]


def _config(phase2_steps=2):
  spec = importlib.util.spec_from_file_location("cameractrl2", ROOT / "configs" / "cameractrl2.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("test")
  config.data.render_frames = 13  # longer scenes than the 9-frame window: room for an earlier global reference
  config.phase2.update(steps=phase2_steps, extension_prob=1.0)
  config.train.checkpoint_every = 100  # checkpoints at phase ends only
  return config


def _losses(workdir):
  rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows}


def test_condition_tokens_are_ignored_by_the_loss():
  cfg = preset("toy", in_channels=8, out_channels=8, text_dim=16, num_layers=1, extra_in_channels=1)
  dit = WanDiT.create(cfg, seed=0)
  rng = np.random.default_rng(0)
  b, grid = 2, (4, 4, 4)
  latents = jnp.asarray(rng.standard_normal((b, *grid, 8)), jnp.float32)
  noise = jnp.asarray(rng.standard_normal(latents.shape), jnp.float32)
  text, text_mask = jnp.ones((b, 3, 16)), jnp.ones((b, 3), bool)
  token_map = jnp.asarray(rng.standard_normal((b, 4 * 2 * 2, cfg.dim)), jnp.float32)  # e.g. camera tokens
  cond = cc2.extension_mask(b, grid, jnp.array([2, 1]))  # 2 and 1 clean latent frames
  sigma = jnp.array([0.7, 0.4])
  objective = FlowMatching()

  @jax.jit  # compiled once (eagerly every primitive compiles on its own: slower on CPU)
  def loss(noise):
    return methods.denoising_loss(dit, objective, latents, noise, sigma, text, text_mask, clean_mask=cond,
                                  extra_in=cond, token_map=token_map)

  other = jnp.asarray(rng.standard_normal(latents.shape), jnp.float32)
  on_cond = cond * other + (1 - cond) * noise  # differs from `noise` on condition tokens only
  on_gen = cond * noise + (1 - cond) * other
  np.testing.assert_allclose(loss(on_cond), loss(noise), rtol=1e-6)
  assert abs(float(loss(on_gen)) - float(loss(noise))) > 1e-3
  grad = jax.jit(jax.grad(loss))(noise)
  assert float(jnp.abs(grad * cond).max()) == 0.0 and float(jnp.abs(grad * (1 - cond)).max()) > 0


def test_extension_windows_carry_an_earlier_global_reference():
  source = SyntheticSource(4, seed=3, num_frames=13, height=32, width=32, num_tracks=0)
  ds = make_pipeline(source, num_frames=5, height=32, width=32, batch_size=4, stride=(1, 2), shuffle=False,
                     num_epochs=1, global_reference=8, process_index=0, process_count=1, on_error="raise")
  seen_earlier = False
  for batch in ds:
    for i in range(len(batch["w2c"])):
      start, stride = int(batch["frame_indices"][i][0]), int(batch["stride"][i])
      clip = next(source[j] for j in range(len(source)) if source[j].clip_id == str(batch["clip_id"][i]))
      candidates = [clip.cameras.take(np.array([r, start])).relative(1).w2c[0] for r in range(start, -1, -stride)]
      errors = [np.abs(batch["reference_w2c"][i] - c).max() for c in candidates]
      assert min(errors) < 1e-4  # an earlier frame of the same clip, on the window's stride grid
      seen_earlier |= int(np.argmin(errors)) > 0
  assert seen_earlier


@pytest.fixture(scope="module")
def two_phase_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("explore") / "run"
  summary = train.train_and_evaluate(_config(), workdir)
  return workdir, summary


def test_phase_two_continues_a_phase_one_run(two_phase_run, tmp_path):
  workdir, summary = two_phase_run
  assert summary.end_step == 6 and np.isfinite(summary.last_loss)
  train.train_and_evaluate(_config(phase2_steps=0), tmp_path)  # phase 1 alone ...
  train.train_and_evaluate(_config(), tmp_path)  # ... then phase 2 added to the same workdir
  want, got = _losses(workdir), _losses(tmp_path)
  assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([got[s] for s in range(1, 7)], [want[s] for s in range(1, 7)], rtol=1e-5)


def test_exploration_extends_clips_in_one_global_frame(two_phase_run, tmp_path):
  workdir, _ = two_phase_run
  explorer = explore.Explorer.from_workdir(workdir)
  T, H, W = explorer.num_frames, explorer.height, explorer.width
  image = np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)
  run = explorer.start("pan_left", image=image, caption="a room")
  assert run.clips[0].window.shape == (T, H, W, 3)
  for spec in ("dolly_in:0.5", "orbit_right"):
    run.extend(spec, cond_frames=5)
  prev, nxt = run.clips[0], run.clips[1]
  np.testing.assert_array_equal(nxt.window[:5], prev.window[-5:])  # condition frames pass through unchanged
  np.testing.assert_allclose(nxt.cameras.w2c[:5], prev.cameras.w2c[-5:], atol=1e-9)
  assert run.video.shape == (T + 2 * (T - 5), H, W, 3)
  cams = run.cameras
  np.testing.assert_allclose(cams.w2c[0], np.eye(4), atol=1e-9)  # the global reference
  rel = trajectories.preset("dolly_in:0.5", T - 5 + 1, height=H, width=W, K=explorer.K)
  want = trajectories.chain([cams.take(np.arange(T)), rel], drop_anchor=True)
  np.testing.assert_allclose(cams.w2c[:2 * T - 5], want.w2c, atol=1e-9)

  evaluation = run.evaluate(trials=1)
  assert len(evaluation["per_clip"]) == 3 and all("success_ratio" in c for c in evaluation["per_clip"])
  assert evaluation["appearance"]["overlap_psnr"] > 60  # identical condition frames
  frozen = evaluation["baselines"]["repeat_first_frame"]  # a video that never moves, next to the model's
  assert len(frozen["per_clip"]) == 3 and frozen["appearance"]["overlap_psnr"] == 100.0
  out = run.save(tmp_path / "out", evaluation=evaluation)
  for name in ("exploration.mp4", "clip_0.mp4", "clip_2.mp4", "trajectory.png", "cameras.json", "evaluation.json"):
    assert (out / name).stat().st_size > 0
  saved = json.loads((out / "cameras.json").read_text())
  assert saved["reference"] == "global" and len(saved["w2c"]) == len(run.video) and len(saved["clips"]) == 3

  with pytest.raises(explore.ExplorationError, match="cond_frames"):
    run.extend("pan_left", cond_frames=4)
  with pytest.raises(explore.ExplorationError, match="unknown trajectory preset"):
    run.extend("fly_to_the_moon")
  bad = rel.replace(w2c=np.where(np.arange(rel.num_frames)[:, None, None] == 2, np.nan, rel.w2c))
  with pytest.raises(explore.ExplorationError, match="frame 2: non-finite"):
    explorer.trajectory(bad, T)  # NaN cameras given directly are refused too


def test_explore_cli_with_per_clip_reference(two_phase_run, tmp_path):
  workdir, _ = two_phase_run
  code = explore.main(["--workdir", str(workdir), "--trajectory", "pan_right", "--trajectory", "truck_left",
                       "--trajectory", "tilt_up", "--reference", "clip", "--out", str(tmp_path / "cli")])
  assert code == 0
  saved = json.loads((tmp_path / "cli" / "cameras.json").read_text())
  assert saved["reference"] == "clip" and [c["trajectory"] for c in saved["clips"]] == ["pan_right", "truck_left",
                                                                                      "tilt_up"]
  assert explore.main(["--workdir", str(tmp_path), "--trajectory", "pan_left", "--out", str(tmp_path / "x")]) == 2


def _cli(workdir, tmp_path, *args, trajectories=("pan_right",)):
  argv = ["--workdir", str(workdir), "--out", str(tmp_path / "out"), *args]
  for spec in trajectories:
    argv += ["--trajectory", spec]
  return explore.main(argv)


@pytest.mark.parametrize("spec", ["pan_left:nan", "dolly_in:inf"])
def test_explore_cli_rejects_non_finite_trajectories_before_writing(two_phase_run, tmp_path, capsys, spec):
  assert _cli(two_phase_run[0], tmp_path, trajectories=("pan_right", spec)) == 2
  err = capsys.readouterr().err
  assert "--trajectory" in err and repr(spec) in err and "non-finite magnitude" in err
  assert list(tmp_path.iterdir()) == []  # nothing generated, nothing written


def test_explore_cli_names_a_missing_trajectory_file(two_phase_run, tmp_path, capsys):
  for spec in ("missing_file.txt", str(tmp_path / "poses" / "cams")):
    assert _cli(two_phase_run[0], tmp_path, trajectories=("pan_right", spec)) == 2
    err = capsys.readouterr().err
    assert f"trajectory file {spec} not found" in err and "unknown" not in err
  assert list(tmp_path.iterdir()) == []


def test_explore_cli_names_a_bad_image(two_phase_run, tmp_path, capsys):
  missing, text = tmp_path / "missing.png", tmp_path / "notes.png"
  text.write_text("not an image")
  assert _cli(two_phase_run[0], tmp_path, "--image", str(missing)) == 2
  assert f"--image {missing}: file not found" in capsys.readouterr().err
  assert _cli(two_phase_run[0], tmp_path, "--image", str(text)) == 2
  assert f"--image {text}: not a readable image" in capsys.readouterr().err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.png"]


def test_explore_cli_lists_the_checkpoint_steps_there_are(two_phase_run, tmp_path, capsys):
  workdir, summary = two_phase_run
  assert _cli(workdir, tmp_path, "--step", "99") == 2
  err = capsys.readouterr().err
  assert "step 99 (--step)" in err and re.search(rf"available steps: .*\b{summary.end_step}\b", err)


def _stub_exploration(num_clips=2, T=3, H=8, W=8):
  """An Exploration of random frames along a preset, without a model (enough for `save`)."""
  cams = trajectories.preset("pan_left", T, height=H, width=W)
  stub = types.SimpleNamespace(reference="global", height=H, width=W, K=np.asarray(cams.K[0]))
  frames = np.random.default_rng(0).integers(0, 255, (T, H, W, 3), dtype=np.uint8)
  clips = [explore.Clip(frames, cams, 1 if i else 0, "pan_left") for i in range(num_clips)]
  return explore.Exploration(stub, "a room", clips)


def test_save_is_all_or_nothing(tmp_path, monkeypatch):
  out = tmp_path / "out"
  run = _stub_exploration()
  from camjax.geometry import plot

  def broken_plot(*args, **kwargs):
    raise RuntimeError("matplotlib failed")

  with monkeypatch.context() as m:  # a failure after the videos are written leaves no folder, no temp files
    m.setattr(plot, "plot_trajectories", broken_plot)
    with pytest.raises(RuntimeError, match="matplotlib"):
      run.save(out)
  assert list(tmp_path.iterdir()) == []

  run.save(out)
  assert sorted(p.name for p in out.iterdir()) == ["cameras.json", "clip_0.mp4", "clip_1.mp4", "exploration.mp4",
                                                   "trajectory.png"]
  _stub_exploration(num_clips=1).save(out)  # a previous exploration is replaced whole
  assert not (out / "clip_1.mp4").exists() and len(json.loads((out / "cameras.json").read_text())["clips"]) == 1
  assert [p.name for p in tmp_path.iterdir()] == ["out"]
  (out / "notes.txt").write_text("mine")
  with pytest.raises(explore.ExplorationError, match="notes.txt"):
    run.save(out)  # a folder holding other files is not replaced
  assert (out / "notes.txt").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_evaluate_shows_a_frozen_video_baseline(monkeypatch):
  from camjax import eval as ev

  calls = []

  def no_sfm(frames, cameras, **kwargs):  # records the windows; SfM is tested in tests/eval
    calls.append(np.asarray(frames))
    return {"success_ratio": 0.0, "registered_ratio": 0.0}

  monkeypatch.setattr(ev, "camera_accuracy", no_sfm)
  run = _stub_exploration(num_clips=3, T=4, H=16, W=16)
  evaluation = run.evaluate(trials=1)
  model, frozen = evaluation["appearance"], evaluation["baselines"]["repeat_first_frame"]["appearance"]
  assert model["overlap_psnr"] < 100.0  # the stub's random windows do not continue each other
  assert frozen == {"color_hist_intersection": pytest.approx(1.0), "overlap_psnr": 100.0,
                    "overlap_ssim": pytest.approx(1.0)}
  assert len(calls) == 6 and all((w == run.video[0]).all() for w in calls[3:])  # same windows, frozen
  assert [w.shape for w in calls[3:]] == [c.window.shape for c in run.clips]
  assert evaluation["baselines"]["repeat_first_frame"]["per_clip"] == [{"success_ratio": 0.0,
                                                                        "registered_ratio": 0.0}] * 3


def test_presets_refuse_non_finite_magnitudes():
  for spec in ("pan_left:nan", "dolly_in:inf", "pan_left:10+dolly_in:-inf"):
    with pytest.raises(explore.ExplorationError, match=f"non-finite magnitude .* in preset {re.escape(repr(spec))}"):
      explore.check_trajectory(spec)
  with pytest.raises(CameraError, match="finite number"):
    trajectories.preset("pan_left", 5, magnitude=float("nan"))
  assert explore.pose_file("dolly_in:0.5") is None and explore.pose_file("orbit_right+pan_left:1.5") is None
