"""Track2View as a method: its pair data, LoRA training leaves the base bit-identical, the depth-warp anchor, the pair
report."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from camjax import methods, sharding, train

ROOT = Path(__file__).resolve().parents[1]


def _config(variant="test"):
  spec = importlib.util.spec_from_file_location("track2view", ROOT / "configs" / "track2view.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def test_rendered_pairs_are_keyed_and_reused(tmp_path):
  """The main job's pairs are rendered once into a folder named by what produced them and reused, not re-rendered
  (the main job itself runs in tests/test_train.py's one-step test of every CPU variant)."""
  config = _config()
  method = methods.get("track2view")
  folder = method.prepare_data(config, tmp_path)["main"]
  assert folder.parent == tmp_path / "data" and folder.name.startswith("pairs_3x5f32px_q8_seed0_")
  stamp = (folder / "pairs.json").stat().st_mtime_ns
  assert method.prepare_data(config, tmp_path)["main"] == folder
  assert (folder / "pairs.json").stat().st_mtime_ns == stamp
  config.data.num_queries = 4
  assert method.prepare_data(config, tmp_path)["main"] != folder
  host = next(iter(method.pipeline(config, {"main": folder}, training=True, batch_size=2, start_index=0, seed=0,
                                   process_index=0, process_count=1)))
  assert host["src_frames"].shape == (2, 5, 32, 32, 3) and host["src_xy"].shape == (2, 8, 5, 2)


def test_lora_training_updates_only_lora_and_the_conditioner():
  """`model.lora_rank > 0`: the optimiser holds LoRA + track-conditioner parameters only, and after training steps
  every other DiT parameter is bit-identical."""
  config = _config()
  config.model.update(lora_rank=2, lora_alpha=2.0)
  config.optimizer.update(lr=1e-2, warmup_init_lr=1e-2, weight_decay=0.0)  # only gradients move parameters
  mesh = sharding.make_mesh(dict(config.mesh))
  from camjax.data import pairs  # pylint: disable=import-outside-toplevel
  with sharding.use_mesh(mesh):
    model = methods.build_model(config, mesh)
    names = lambda state: {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(state)}
    trained = names(model.params)
    new = ("tracks/", "disparity_head/")  # the conditioner and the depth-warp anchor's head train fully
    assert trained and all("/lora/" in n or n.startswith(new) for n in trained)
    assert all(any(n.startswith(p) for n in trained) for p in new) and any("/lora/" in n for n in trained)
    assert not any("/lora/" in n or n.startswith(new) for n in names(model.frozen))
    # A pretrained base has a nonzero output layer (camjax's random init zeroes it, which would stop every gradient).
    flat = nnx.to_flat_state(model.frozen)
    for key, var in flat:
      if "/".join(map(str, key)) == "dit/proj_out/kernel":
        var.set_value(jax.random.normal(jax.random.key(1), var.get_value().shape) * 0.02)
    model.frozen = nnx.from_flat_state(flat)
    tx = train.make_optimizer(config)
    state = train.train_state(model, tx, config)
    n_opt = sum(x.size for x in jax.tree.leaves(state["opt_state"]) if hasattr(x, "size") and x.ndim)
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    assert n_opt == 2 * n_params  # Adam's two moments of the trainable parameters, nothing of the frozen base
    frozen_before = jax.tree.map(np.array, state["frozen"])
    params_before = jax.tree.map(np.array, state["params"])
    source = pairs.PairedSyntheticSource(2, seed=0, num_frames=5, height=32, width=32, num_queries=8)
    host = next(iter(pairs.make_pair_pipeline(source, batch_size=2, shuffle=False, num_epochs=1, process_index=0,
                                              process_count=1)))
    batch = train.to_global(methods.host_batch(host, model.tokenizer, model.method, config), mesh)
    step = jax.jit(lambda s, b: train.train_step(s, b, model.static, tx), donate_argnums=(0,))
    for _ in range(3):
      state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
  for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(state["frozen"])):
    np.testing.assert_array_equal(a, np.asarray(b))
  changed = [not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(params_before),
                                                                  jax.tree.leaves(state["params"]))]
  assert all(changed), [k for k, c in zip(sorted(trained), changed) if not c]


def test_pair_report_has_the_camera_error_of_every_video(tmp_path):
  """Issue #18: the end-of-run pair report gives Track2View RotErr / TransErr against the target trajectory of the
  target view, the zeroed-tracks control, copy-the-source and the true target view (the SfM floor), in metrics.json
  and report.md; each is finite or undefined with its reason (SfM on the untrained model's 32x32 frames may fail).
  `eval.camera_errors = False` leaves them out."""
  import json  # pylint: disable=import-outside-toplevel

  from camjax.methods import track2view  # pylint: disable=import-outside-toplevel
  config = _config()
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    model = methods.build_model(config, mesh)
    weights = {"params": model.params, **({"frozen": model.frozen} if model.frozen is not None else {})}
    result = track2view.evaluate_pairs(model.static.method, weights, config, mesh, model, 1, tmp_path)
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert saved["camera_settings"] == {"trials": 1, "mapper": "global", "seed": 0, "min_registered": 1.0}
  report = (tmp_path / "report.md").read_text()
  assert "## Camera error against the target trajectory (Track2View protocol)" in report
  assert ("| metric | Track2View | tracks zeroed (control) | copy the source | true target view (SfM floor) |"
          in report)
  for c in track2view.CAMERA_COLUMNS:
    agg, pair, pair_json = result["aggregate"][c], result["per_pair"][0][c], saved["per_pair"][0][c]
    assert set(track2view.CAMERA_KEYS) <= set(agg) and 0.0 <= agg["success_ratio"] <= 1.0
    for k in ("track2view/rot_err", "track2view/trans_err"):
      if np.isfinite(pair[k]):
        assert pair[k] >= 0 and pair_json[k] == pair[k]
      else:  # undefined: NaN here, null in metrics.json, and the report says why
        assert pair_json[k] is None and pair["camera_note"] and pair_json["camera_note"] == pair["camera_note"]
        assert f"| 0 | {track2view.NAMES[c]} | " in report
  ratios = " | ".join(f"{result['aggregate'][c]['success_ratio']:.4g}" for c in track2view.CAMERA_COLUMNS)
  assert f"| SfM success ratio | {ratios} |" in report
  # The switch: scoring the same videos without camera options adds no camera field, and the report no section.
  ex = _held_out_pair(config)
  videos = {m: np.asarray(ex["tgt_frames"]) for m in track2view.MODES}
  row = {"pair": 0, **track2view.score_pair(ex, videos, track2view.camera_options(config, camera_errors=False))}
  assert "true_target" not in row and "success_ratio" not in row["tracks"]
  config.eval.camera_errors = False
  assert track2view.camera_options(config) is None
  off = track2view.aggregate_pairs([row])
  track2view.write_pair_report(tmp_path, {**off, "camera_settings": None}, seed=0)
  assert "Camera error" not in (tmp_path / "report.md").read_text()
  assert "success_ratio" not in json.dumps(off["aggregate"])


def _held_out_pair(config, size=None, num_frames=None):
  from camjax.data.pairs import paired_example  # pylint: disable=import-outside-toplevel
  d = config.data
  size = size or int(d.render_size)
  return paired_example(3_000_000 + int(config.seed), num_frames=num_frames or int(d.num_frames), height=size,
                        width=size, num_queries=int(d.num_queries))


def test_target_camera_error_tells_the_target_view_from_the_source():
  """On a 64x64, 17-frame held-out pair (the default config's size) SfM of the true target view recovers the target
  trajectory (the SfM floor, well below a degree), while the source video, which moves along the other camera,
  is several times worse against the target trajectory: the metric sees the view change."""
  from camjax.methods import track2view  # pylint: disable=import-outside-toplevel
  ex = _held_out_pair(_config(), size=64, num_frames=17)
  opts = dict(trials=1, mapper="global", seed=0, min_registered=1.0)
  floor = track2view.target_camera_errors(ex["tgt_frames"], ex, **opts)
  source = track2view.target_camera_errors(ex["src_frames"], ex, **opts)
  assert floor["success_ratio"] == source["success_ratio"] == 1.0 and floor["camera_note"] is None
  assert 0.0 < floor["track2view/rot_err"] < 1.0 and np.isfinite(floor["track2view/trans_err"])
  assert source["track2view/rot_err"] > 3 * floor["track2view/rot_err"]
  assert source["track2view/trans_err"] > 3 * floor["track2view/trans_err"]


def test_an_untrained_depth_warp_model_reprojects_the_source_on_one_plane_and_learns_disparity():
  """`model.anchor="depth_warp"` (the default): before training, the sampled target view (two guidance sets, the
  anchor tiled over them) is the source video reprojected into the target cameras at the initial disparity (one
  plane); the loss reaches the disparity head; velocity prediction is refused."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from camjax.methods import track2view  # pylint: disable=import-outside-toplevel
  config = _config()
  assert config.model.anchor == "depth_warp" and track2view.METHOD.validate(config) == []
  mesh = sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    model = methods.build_model(config, mesh)
  static = model.static
  ex = _held_out_pair(config)
  host = {k: np.asarray(ex[k])[None] for k in track2view.PAIR_KEYS}
  host["caption"] = np.array([str(ex["caption"])])
  batch = {k: jnp.asarray(v) for k, v in methods.host_batch(host, model.tokenizer, model.method, config).items()}
  sample = jax.jit(lambda w: track2view.METHOD.sample(methods.merge(static, w), static, batch, jax.random.key(0)))
  video = np.asarray(sample(model.weights()))
  ae = static.autoencoder
  anchor = track2view.source_anchor(static, batch)
  t, h, w = ae.latent_shape(*ex["src_frames"].shape[:3])[:3]
  plane = jnp.full((1, t, h, w, ae.temporal_factor), config.model.anchor_disparity)
  expected = np.asarray(ae.decode(track2view.warp_source(anchor, plane, ae.spatial_factor, ae.temporal_factor)))
  np.testing.assert_allclose(video, expected, atol=1e-4)
  source = ex["src_frames"][None].astype(np.float32) / 127.5 - 1
  np.testing.assert_allclose(video[:, 0], source[:, 0], atol=1e-4)  # frame 0 is shared by the two cameras
  assert np.abs(video[:, 1:] - source[:, 1:]).mean() > 0.02  # the target camera moves away from the source
  # The gradient of the loss w.r.t. the (zero-initialised) disparity head.
  params = model.params

  def loss(head):
    p = jax.tree.map(lambda x: x, params)
    p["disparity_head"] = head
    return track2view.METHOD.loss(methods.merge(static, dict(model.weights(), params=p)), static, batch,
                                  jax.random.key(1))

  grads = jax.jit(jax.grad(loss))(params["disparity_head"])
  kernel = grads["proj"]["kernel"]
  kernel = np.asarray(kernel.get_value() if hasattr(kernel, "get_value") else kernel)
  assert np.all(np.isfinite(kernel)) and np.abs(kernel).max() > 0
  config.objective.prediction = "velocity"
  assert "model.anchor='depth_warp'" in track2view.METHOD.validate(config)[0]


def test_pair_scores_and_report_carry_clip_v_with_a_clip_encoder(tmp_path):
  """With a CLIP encoder (here a stand-in with the TorchScript CLIP's call convention) every column and the true
  target view get CLIP-V against the source, the aggregate averages it and the report shows its row."""
  from camjax.methods import track2view  # pylint: disable=import-outside-toplevel
  ex = _held_out_pair(_config(), size=16, num_frames=5)

  def encoder(frames):
    f = np.asarray(frames, np.float64).mean(axis=(1, 2)) + 1.0
    return f / np.linalg.norm(f, axis=-1, keepdims=True)

  videos = {"tracks": np.asarray(ex["tgt_frames"]), "zero_tracks": np.zeros_like(ex["tgt_frames"])}
  row = {"pair": 0, **track2view.score_pair(ex, videos, None, clip=encoder)}
  assert row["copy_source"]["clip_v"] == pytest.approx(1.0)  # the source itself
  assert row["tracks"]["clip_v"] == pytest.approx(row["true_target_clip_v"])  # the "model" is the true target
  result = track2view.aggregate_pairs([row])
  assert result["aggregate"]["true_target"]["clip_v"] == pytest.approx(row["true_target_clip_v"])
  track2view.write_pair_report(tmp_path, result, seed=0)
  assert "| CLIP-V vs source |" in (tmp_path / "report.md").read_text()
