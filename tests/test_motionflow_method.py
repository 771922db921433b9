"""MotionFlow as a method: both training stages through the train loop's step (stage 1 leaves the base networks
bit-identical), sampling, the zero-initialised additions leaving the video network unchanged, the WanDiT hooks it needs
(per-layer cross contexts, object attention) and the in-run DINOv2 against transformers.

Every program is compiled with `fast_jit` (no LLVM optimisation): the toy model's programs are compile-bound here.
"""

import dataclasses
import functools
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax import methods, train
from camjax.conditioning.motionflow import SemanticEncoderError, SemanticViT, SemanticViTConfig, load_dinov2
from camjax.data.synthetic import render_scene
from camjax.diffusion import make_objective
from camjax.methods import motionflow as mfm
from camjax.models import WanDiT, preset
from camjax.models.layers import ModelError
from camjax.xla_flags import fast_jit

ROOT = Path(__file__).resolve().parents[1]


def _config(variant="test"):
  spec = importlib.util.spec_from_file_location("motionflow_config", ROOT / "configs" / "motionflow.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def normal(seed, *shape, scale=1.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@functools.cache
def _generator_state(config_json: str):
  """The test variant's generator (graph, state), initialised under one fast-compiled jit (no mesh)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = ml_collections.ConfigDict(__import__("json").loads(config_json))
  method = methods.get(config.method)
  ae = methods.make_autoencoder(config)
  cfg = methods.base.wan_config(config, ae, method)

  def make():
    rngs = nnx.Rngs(config.seed)
    dit = WanDiT(cfg, rngs=rngs)
    text = methods.base._make_text_encoder(config, rngs)  # pylint: disable=protected-access
    with nnx.use_eager_sharding(False):
      return methods.Generator(dit, text, **method.conditioners(config, cfg, rngs))

  graphdef = nnx.split(nnx.eval_shape(make))[0]
  return graphdef, fast_jit(lambda: nnx.state(make()))()


def build(config, proj_out_scale=0.0):
  """A `methods.Model` of `config` (as `build_model` splits it); with `proj_out_scale`, the video DiT's zero-initialised
  output layer is randomised, as a pretrained base's is (a zero one gives every other parameter a zero gradient)."""
  graphdef, state = _generator_state(config.to_json())
  generator = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))
  if proj_out_scale:
    k = generator.dit.proj_out.kernel
    k[...] = jnp.asarray(normal(9, *k[...].shape, scale=proj_out_scale))
  method = methods.get(config.method)
  graphdef, params, frozen = nnx.split(generator, method.trainable(config), ...)
  frozen = frozen if jax.tree.leaves(frozen) else None
  static = methods.Static(graphdef, methods.make_autoencoder(config), make_objective(config.objective), config, method)
  return methods.Model(static, params, frozen, static.autoencoder, generator.text_encoder.tokenizer)


def host_batch(config, model, seeds=(0, 1), reverse=False):
  d = config.data
  clips = [render_scene(s, num_frames=d.num_frames, height=d.height, width=d.width)[0] for s in seeds]
  cams = [c.cameras.numpy() for c in clips]
  if reverse:
    from camjax.eval.following import reversed_trajectory  # pylint: disable=import-outside-toplevel
    cams = [reversed_trajectory(c) for c in cams]
  host = dict(frames=np.stack([c.frames for c in clips]), K=np.stack([np.asarray(c.K) for c in cams]),
              w2c=np.stack([np.asarray(c.w2c) for c in cams]), caption=np.array([c.caption for c in clips]))
  return methods.host_batch(host, model.tokenizer, model.method, config)


def flat(state) -> dict:
  return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(state)}


# ---------------------------------------------------------------------------------------------------- the method
def test_configs_phases_and_validation():
  config = _config("test")
  phases = methods.training_phases(config)
  assert [(p.start, p.end) for p in phases] == [(0, 1), (1, 2)]
  assert phases[0].config.train.stage == 1 and phases[1].config.train.stage == 2
  # Stage 2's own rate (`phase2.lr`): each phase's warm-up starts from its own optimizer fields.
  paper = _config("wan1_3b")
  lr = train.lr_schedule(paper)
  stage2 = paper.train.steps
  assert float(lr(0)) == pytest.approx(paper.optimizer.warmup_init_lr)
  assert float(lr(stage2 - 1)) == pytest.approx(1e-4, rel=1e-3)  # stage 1 ends at its end_lr (1e-4)
  assert float(lr(stage2)) == pytest.approx(1e-6) and float(lr(stage2 + 100)) == pytest.approx(1e-5)
  assert float(lr(paper.train.steps + paper.phase2.steps - 1)) == pytest.approx(1e-5, rel=1e-3)
  method = methods.get("motionflow")
  for variant in ("default", "test", "no_reference", "no_semantic", "re10k", "wan1_3b"):
    assert method.validate(_config(variant)) == [], variant
  config.optimizer.weight_decay = 0.01
  config.reference.input = "noise"
  config.trajectory.num_scales = 3
  bad = " ".join(method.validate(config))
  config.phase2.lr = -1.0
  bad = " ".join(method.validate(config))
  assert "optimizer.weight_decay=0.01" in bad and "reference.input='noise'" in bad and "trajectory.num_scales=3" in bad
  assert "phase2.lr=-1.0" in bad
  assert _config("no_reference").reference.enabled is False and _config("no_semantic").semantic.enabled is False
  with pytest.raises(ValueError, match="unknown motionflow variant"):
    _config("nope")


def test_both_stages_train_through_the_train_step_stage1_keeps_the_bases_bit_identical_and_it_samples():
  """The test variant (`train.freeze_bases`): stage 1 (three steps) moves only the new modules (the base networks are
  bit-identical, through the train loop's own step), stage 2 (one step) moves the bases too; then DDIM with the text +
  image guidance chain samples a video whose first frame is the reference image."""
  config = _config("test")
  config.train.steps = 3
  config.optimizer.update(lr=1e-2, warmup_init_lr=1e-2)
  model = build(config, proj_out_scale=0.05)
  assert model.frozen is None  # everything is in the optimiser; stage 1 freezes inside the loss
  tx = train.make_optimizer(config)
  state = train.train_state(model, tx, config)
  batch = host_batch(config, model)
  before = flat(state["params"])
  base_names = set(flat(nnx.state(methods.merge(model.static, model.weights()), mfm.base_modules())))
  new_names = set(before) - base_names
  assert {n for n in new_names if n.startswith("dit/")} == {
      n for n in before if n.startswith("dit/") and ("extra_kv_gate" in n or "object_attention" in n)}
  assert any(n.startswith("reference/") and "/cross/" in n for n in new_names)
  assert not any(n.startswith("text_encoder/") for n in new_names)

  losses = []
  for phase in methods.training_phases(config):
    static = dataclasses.replace(model.static, config=phase.config)
    step = fast_jit(functools.partial(train.train_step, static=static, tx=tx))
    for _ in range(phase.end - phase.start):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    if phase.config.train.stage == 1:
      after = flat(state["params"])
      for name in base_names:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
      moved = {n for n in new_names if not np.array_equal(after[n], before[n])}
      # The zero gates move at step 1, the reference network's camera gate at step 2 (behind the open extra-kv gate),
      # the trajectory encoder at step 3 (behind both).
      assert {"dit/blocks/extra_kv_gate", "dit/blocks/object_attention/gate", "semantic_input/proj/kernel",
              "reference/blocks/cross/camera/gate"} <= moved
      assert any(n.startswith("trajectory/") for n in moved) and any(n.startswith("semantic/") for n in moved)
  after = flat(state["params"])
  for prefix in ("dit/blocks/attn1/", "reference/blocks/attn1/", "text_encoder/"):  # stage 2 moves the bases
    assert any(not np.array_equal(after[n], before[n]) for n in base_names if n.startswith(prefix)), prefix
  assert len(losses) == 4 and np.all(np.isfinite(losses))

  weights = {"params": state["params"]}
  video = np.asarray(fast_jit(methods.sample_fn(model.static))(weights, batch, jax.random.key(0)))
  d = config.data
  assert video.shape == (2, d.num_frames, d.height, d.width, 3) and np.isfinite(video).all()
  np.testing.assert_allclose(video[:, 0], batch["frames"][:, 0] / 127.5 - 1, atol=1e-5)  # the reference frame
  assert np.abs(video[:, 1:]).max() <= 1.0


def _forwards(static, weights, batch, timesteps, noise):
  """(video network with every MotionFlow input, the bare video DiT) on the same noisy latents."""
  model = methods.merge(static, weights)
  c = static.config
  cond = mfm.conditions(model, static, batch)
  x = static.objective.add_noise(cond.latents, noise, timesteps)
  x = cond.cond_mask * cond.latents + (1 - cond.cond_mask) * x
  text = methods.text_states(model, batch)
  full = mfm.video_forward(model, c, x, timesteps.astype(jnp.float32), text, batch["text_mask"],
                           cond_mask=cond.cond_mask, camera=cond.camera, image=cond.image)
  bare = model.dit(x, timesteps.astype(jnp.float32), text, batch["text_mask"], extra_in=cond.cond_mask)
  return full, bare


def _open_gates(weights):
  """The weights with every zero-initialised gate of the video and reference networks set to 1."""
  state = nnx.to_flat_state(weights["params"])
  for key, var in state:
    name = "/".join(map(str, key))
    if name.endswith("extra_kv_gate") or name.endswith("object_attention/gate") or "/cross/camera/gate" in name:
      var.set_value(jnp.ones_like(var.get_value()))
    if name == "semantic_input/proj/kernel":
      var.set_value(jnp.asarray(normal(3, *var.get_value().shape, scale=0.1)))
  return {"params": nnx.from_flat_state(state)}


@pytest.mark.parametrize("variant", ["test", "no_reference"])
def test_zero_initialised_additions_leave_the_video_network_unchanged_until_their_gates_open(variant):
  config = _config("test")
  if variant == "no_reference":
    config.reference.enabled = False
  model = build(config, proj_out_scale=0.05)
  batch = host_batch(config, model)
  reverse = host_batch(config, model, reverse=True)
  t, noise = jnp.array([100, 700]), jnp.asarray(normal(5, 2, 3, 8, 8, 12))
  forwards = fast_jit(functools.partial(_forwards, model.static))
  full, bare = forwards(model.weights(), batch, t, noise)
  assert float(jnp.abs(bare).max()) > 1e-3
  np.testing.assert_allclose(full, bare, atol=1e-6, rtol=0)
  # Opened gates: the trajectory reaches the output (true and reversed cameras differ), the base output changes.
  opened = _open_gates(model.weights())
  full_true, bare2 = forwards(opened, batch, t, noise)
  full_rev, _ = forwards(opened, reverse, t, noise)
  np.testing.assert_allclose(bare2, bare, atol=1e-6)
  assert float(jnp.abs(full_true - bare).max()) > 1e-3
  assert float(jnp.abs(full_true - full_rev).max()) > 1e-4


# ---------------------------------------------------------------------------------------------------- WanDiT hooks
B, T, H, W, C = 2, 2, 4, 6, 4
LAYERS = 3


@functools.partial(fast_jit, static_argnums=(0,))
def _run(graphdef, state, args, kw):
  return nnx.merge(graphdef, state)(*args, **kw)


def _dit(**overrides):
  cfg = preset("toy", in_channels=C, out_channels=C, text_dim=16, num_layers=LAYERS, cross_streams=(("camera", 8),),
               object_attention_dim=12, **overrides)
  graphdef = nnx.split(nnx.eval_shape(lambda: WanDiT(cfg, rngs=nnx.Rngs(0))))[0]
  model = nnx.merge(graphdef, fast_jit(lambda: nnx.state(WanDiT(cfg, rngs=nnx.Rngs(0))))())
  model.proj_out.kernel[...] = jnp.asarray(normal(9, *model.proj_out.kernel.shape, scale=0.05))
  model.blocks.cross["camera"].gate[...] = jnp.asarray(normal(8, LAYERS, cfg.dim))
  return model


def test_wandit_per_layer_cross_contexts_are_scanned_with_the_layers():
  model = _dit()
  args = (normal(0, B, T, H, W, C), np.array([300.0, 850.0], np.float32), normal(1, B, 5, 16))
  ctx = normal(2, LAYERS, B, 7, 8)
  mask = np.array([[True] * 7, [True] * 5 + [False] * 2])
  run = lambda m, **kw: _run(*nnx.split(m), args, kw)
  shared = run(model, cross={"camera": (ctx[1], mask)})
  stacked = run(model, cross={"camera": (np.broadcast_to(ctx[1], ctx.shape), mask)})
  np.testing.assert_allclose(stacked, shared, atol=1e-6)
  per_layer = run(model, cross={"camera": (ctx, mask)}, cross_scale={"camera": 0.5})
  assert float(jnp.abs(per_layer - shared).max()) > 1e-4
  looped = _dit(scan_layers=False)  # same seed, same weights: the Python loop indexes the layers the same way
  np.testing.assert_allclose(run(looped, cross={"camera": (ctx, mask)}, cross_scale={"camera": 0.5}), per_layer,
                             atol=2e-5)
  with pytest.raises(ModelError, match=r"per layer \[num_layers, B, Lc, context_dim\]"):
    run(model, cross={"camera": ctx[:2]})


def test_wandit_object_attention_starts_at_identity_and_multiplies_each_block_output():
  model = _dit()
  args = (normal(0, B, T, H, W, C), np.array([300.0, 850.0], np.float32), normal(1, B, 5, 16))
  sem = normal(3, B, 6, 12)
  run = lambda m, **kw: _run(*nnx.split(m), args, kw)
  base = run(model)
  np.testing.assert_allclose(run(model, semantic=sem), base, atol=1e-6, rtol=0)  # zero gates (two programs)
  model.blocks.object_attention.gate[...] = jnp.asarray(normal(4, LAYERS, model.config.dim, scale=0.5))
  gated = run(model, semantic=sem)
  assert float(jnp.abs(gated - base).max()) > 1e-3
  masked = run(model, semantic=sem, semantic_mask=np.array([[True] * 6, [True] * 3 + [False] * 3]))
  np.testing.assert_allclose(masked[0], gated[0], atol=1e-6)
  assert float(jnp.abs(masked[1] - gated[1]).max()) > 1e-5
  with pytest.raises(ModelError, match="semantic must be"):
    run(model, semantic=sem[..., :5])
  with pytest.raises(ModelError, match="object_attention_dim"):
    preset("toy", object_attention_dim=3)  # not divisible by the 2 heads


# ---------------------------------------------------------------------------------------------------- DINOv2
def test_semantic_vit_loads_dinov2_and_matches_transformers(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                     patch_size=4, image_size=16, layerscale_value=0.5)
  reference = transformers.Dinov2Model(config).eval()
  reference.save_pretrained(tmp_path / "dino")
  for resolution in ((16, 16), (8, 12)):  # the checkpoint's grid, and one its position table is interpolated to
    cfg = SemanticViTConfig.from_dinov2(tmp_path / "dino", resolution)
    assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.mlp_dim, cfg.patch_size) == (32, 2, 2, 64, 4)
    vit = load_dinov2(SemanticViT(cfg, rngs=nnx.Rngs(0)), tmp_path / "dino")
    images = np.random.default_rng(1).uniform(-1, 1, (2, *resolution, 3)).astype(np.float32)
    graphdef, state = nnx.split(vit)
    got = np.asarray(fast_jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, images))
    x = ((images + 1) / 2 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    with torch.no_grad():
      want = reference(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)))
    np.testing.assert_allclose(got, want.last_hidden_state[:, 1:].numpy(), atol=2e-5)
  with pytest.raises(SemanticEncoderError, match="module was built as"):
    load_dinov2(SemanticViT(cfg.replace(num_layers=1), rngs=nnx.Rngs(0)), tmp_path / "dino")
  with pytest.raises(SemanticEncoderError, match="config.json missing"):
    SemanticViTConfig.from_dinov2(tmp_path / "absent")


def test_depth_warp_anchor_adds_the_reprojected_first_frame_and_trains_its_disparity_head():
  """`model.anchor="depth_warp"` (the CPU default): the network's x_0 prediction is its output plus the first frame
  reprojected through the trajectory at the disparity head's depth (a plane before training); the loss reaches the
  head; validation names the objective it needs."""
  config = _config("test")
  config.model.anchor = "depth_warp"
  config.objective.prediction = "sample"
  method = methods.get("motionflow")
  assert method.validate(config) == []
  model = build(config)
  static = model.static
  batch = host_batch(config, model)
  ae = static.autoencoder

  @jax.jit  # one compiled program instead of ~900 eager ones (the suite is compile-bound)
  def forwards(weights, batch):
    generator = methods.merge(static, weights)
    cond = mfm.conditions(generator, static, batch)
    anchor, poses = cond.warp
    timesteps = jnp.array([500.0, 500.0])
    text = methods.text_states(generator, batch)
    kwargs = dict(cond_mask=cond.cond_mask, camera=cond.camera, image=cond.image)
    plain = mfm.video_forward(generator, config, cond.latents, timesteps, text, batch["text_mask"], **kwargs)
    warped = mfm.video_forward(generator, config, cond.latents, timesteps, text, batch["text_mask"], warp=cond.warp,
                               autoencoder=ae, **kwargs)
    plane = jnp.full((*anchor.shape[:4], ae.temporal_factor), config.model.anchor_disparity)
    return warped - plain, m_reproject(anchor, plane, poses, ae), anchor

  added, expected, anchor = forwards(model.weights(), batch)
  np.testing.assert_allclose(np.asarray(added), np.asarray(expected), atol=1e-5)
  assert float(jnp.abs(expected[:, -1] - anchor[:, -1]).mean()) > 1e-3  # the trajectory moves the first frame
  grads = jax.jit(jax.grad(lambda p, b, key: method.loss(methods.merge(static, dict(model.weights(), params=p)),
                                                         static, b, key)))(model.params, batch, jax.random.key(1))
  head = grads["disparity_head"]["proj"]["kernel"]
  assert float(jnp.abs(head.get_value() if hasattr(head, "get_value") else head).max()) > 0
  config.objective.prediction = "eps"
  assert "model.anchor='depth_warp'" in " ".join(method.validate(config))


def m_reproject(anchor, disparity, poses, ae):
  from camjax.conditioning.anchor import reproject_anchor  # pylint: disable=import-outside-toplevel
  return reproject_anchor(anchor, disparity, *poses, ae.spatial_factor, ae.temporal_factor)


def test_lpips_scores_every_report_column_with_a_local_torchscript_lpips(tmp_path):
  """LPIPS in the MotionFlow report when `eval.lpips` names local weights: every column (true, reversed, both trivial
  baselines) scored against the true video on frames 1..T-1, through `camjax.eval.learned`."""
  torch = pytest.importorskip("torch")
  from camjax.eval import learned  # pylint: disable=import-outside-toplevel

  class Lpips(torch.nn.Module):
    def forward(self, a, b):
      return ((a - b) ** 2).mean(dim=(1, 2, 3), keepdim=True)

  path = tmp_path / "lpips.pt"
  torch.jit.script(Lpips()).save(str(path))
  metric = learned.load("lpips", path)
  rng = np.random.default_rng(0)
  gt = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
  scores = mfm.lpips_scores(metric, gt, gt, gt[::-1])
  assert set(scores) == {"true", "reversed", "repeat_first_frame", "mean_colour"}
  assert scores["true"] == pytest.approx(0.0, abs=1e-7)
  assert scores["reversed"] > 0 and scores["repeat_first_frame"] > 0 and scores["mean_colour"] > 0
