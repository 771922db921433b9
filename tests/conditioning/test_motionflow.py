"""MotionFlow's building blocks on the WAN DiT: trajectory encoder, eq. 4 (decoupled cross-attention) and its WanDiT
cross-stream form, reference attention as WanDiT's extra_kv, semantic encoder / input, object attention, and "every
new module starts at zero".

The WanDiT equivalences run a toy DiT (2 layers, width 64) through one jitted forward per call signature.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax.conditioning.motionflow import (DecoupledCrossAttention, MotionFlowError, ObjectAttention,
                                            SemanticEncoder, SemanticEncoderError, SemanticInput, TrajectoryEncoder,
                                            TrajectoryEncoderConfig, decoupled_attention, layer_scales, per_layer,
                                            reference_kv, reference_positions, tie_cross_stream)
from camjax.models import WanDiT, preset
from camjax.models.layers import attention, layer_norm
from camjax.models.wan import Attention, grid_positions, rope_angles, timestep_embedding
from camjax.xla_flags import fast_jit

B, T, H, W, C = 2, 2, 4, 6, 4  # latents [B, T, H, W, C]; DiT tokens on a (2, 2, 3) grid
GRID = (T, H // 2, W // 2)
N = T * (H // 2) * (W // 2)
CAM = 8  # camera feature width (the stream's context_dim)
CONFIG = preset("toy", in_channels=C, out_channels=C, text_dim=16, cross_streams=(("camera", CAM),), extra_kv=True)
D, HEADS = CONFIG.dim, CONFIG.num_heads


def normal(seed, *shape, scale=1.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def jit_init(make):
  """`make()` (a module with its seeded parameters) initialised under one jit: eager initialisation compiles every
  initialiser op separately."""
  def made():
    with nnx.use_eager_sharding(False):  # as every camjax module builds (a WAN Attention alone does not switch it off)
      return make()

  return nnx.merge(nnx.split(nnx.eval_shape(made))[0], fast_jit(lambda: nnx.state(made()))())


@functools.partial(fast_jit, static_argnums=(0, 1))
def _method(graphdef, method, state, args, kw):
  return getattr(nnx.merge(graphdef, state), method)(*args, **kw)


def call(module, *args, method="__call__", **kw):
  """`module.method(*args, **kw)` under jit (eager NNX calls compile op by op)."""
  graphdef, state = nnx.split(module)
  return _method(graphdef, method, state, args, kw)


# ---------------------------------------------------------------------------------------------------- toy WanDiT
@functools.cache
def _dit_state():
  return fast_jit(lambda: nnx.state(WanDiT(CONFIG, rngs=nnx.Rngs(0))))()


def dit():
  """A fresh toy DiT (own Variables); proj_out randomised (WAN zero-initialises it) so outputs depend on tokens."""
  graphdef = nnx.split(nnx.eval_shape(lambda: WanDiT(CONFIG, rngs=nnx.Rngs(0))))[0]
  model = nnx.merge(graphdef, jax.tree.map(lambda x: x, _dit_state()))
  model.proj_out.kernel[...] = jnp.asarray(normal(9, *model.proj_out.kernel.shape, scale=0.05))
  return model


@functools.partial(fast_jit, static_argnums=0, static_argnames="return_hidden")
def _apply(graphdef, state, args, kw, return_hidden=False):
  return nnx.merge(graphdef, state)(*args, **kw, return_hidden=return_hidden)


def run(model, *args, return_hidden=False, **kw):
  return _apply(*nnx.split(model), args, kw, return_hidden=return_hidden)


def inputs(seed=0, width=W):
  return (normal(seed, B, T, H, width, C), np.array([300.0, 850.0], np.float32), normal(seed + 1, B, 5, 16))


def layer(model, l):
  """Block `l` of the stacked (scanned) blocks, as `WanDiT._run_blocks` sees it."""
  graphdef, state = nnx.split(model.blocks)
  return nnx.merge(graphdef, jax.tree.map(lambda a: a[l], state))


# ---------------------------------------------------------------------------------------------- trajectory encoder
ENC = TrajectoryEncoderConfig(out_dim=CAM, width=32, num_scales=2, blocks_per_scale=1, mlp_hidden=48, num_heads=2,
                              patch_size=(1, 2, 2))


@functools.cache
def encoder(config=ENC):
  """A seeded trajectory encoder per config (initialised once; arrays are immutable, so sharing them is safe)."""
  return jit_init(lambda: TrajectoryEncoder(config, rngs=nnx.Rngs(0)))


@functools.partial(fast_jit, static_argnums=0)
def _encode(graphdef, state, plucker):
  return nnx.merge(graphdef, state)(plucker)


def encode(module, plucker):
  return _encode(*nnx.split(module), plucker)


def test_trajectory_encoder_gives_one_feature_per_scale_on_the_dit_token_grid():
  plucker = normal(1, B, T, H, W, 6)
  features = encode(encoder(), plucker)
  assert len(features) == 2 and all(f.shape == (B, N, CAM) for f in features)
  assert float(jnp.abs(features[0] - features[1]).max()) > 1e-2  # deeper scale, other features
  # Pixel-resolution map with the VAE factor in the patch: the same token grid.
  pixel = nnx.eval_shape(lambda: TrajectoryEncoder(ENC.replace(patch_size=(1, 16, 16)), rngs=nnx.Rngs(0)))
  assert pixel.token_grid((B, T, 16 * H // 2, 16 * W // 2, 6)) == GRID
  # A scale per group of DiT layers.
  np.testing.assert_array_equal(np.bincount(layer_scales(30, 4)), [8, 7, 8, 7])
  np.testing.assert_array_equal(layer_scales(2, 2), [0, 1])
  stacked = per_layer(features, 4)
  assert stacked.shape == (4, B, N, CAM)
  np.testing.assert_array_equal(stacked[1], features[0])
  np.testing.assert_array_equal(stacked[2], features[1])


@pytest.mark.parametrize("scope", ["frame", "video"])
def test_trajectory_encoder_attention_scope(scope):
  """"frame": a token sees only its own frame (the paper's per-image self-attention); "video": the whole clip."""
  enc = encoder(ENC.replace(attention_scope=scope))
  plucker = normal(2, B, T, H, W, 6)
  changed = plucker.copy()
  changed[:, 1] += 1.0  # change the camera of frame 1 only
  a, b = encode(enc, plucker), encode(enc, changed)
  per_frame = N // T
  frame0 = max(float(jnp.abs(x[:, :per_frame] - y[:, :per_frame]).max()) for x, y in zip(a, b))
  frame1 = min(float(jnp.abs(x[:, per_frame:] - y[:, per_frame:]).max()) for x, y in zip(a, b))
  assert frame1 > 1e-2
  assert (frame0 < 1e-6) if scope == "frame" else (frame0 > 1e-3)


def test_trajectory_encoder_bad_inputs():
  with pytest.raises(MotionFlowError, match=r"\[B, T, H, W, 6\]"):
    encoder()(jnp.zeros((B, T, H, W, 3)))
  with pytest.raises(MotionFlowError, match="not divisible"):
    encoder()(jnp.zeros((B, T, H, W + 1, 6)))
  with pytest.raises(MotionFlowError, match="attention_scope"):
    ENC.replace(attention_scope="time").validate()
  with pytest.raises(MotionFlowError, match="heads"):
    ENC.replace(num_heads=3).validate()
  with pytest.raises(MotionFlowError, match="3 encoder scales cannot feed 2"):
    per_layer([jnp.zeros((1, 2, 3))] * 3, 2)


# ----------------------------------------------------------------------------------------------------------- eq. 4
def _decoupled(seed=0, dim=32, heads=2, camera_dim=8):
  return jit_init(lambda: DecoupledCrossAttention(dim, heads, dim, camera_dim, rngs=nnx.Rngs(seed)))


def test_decoupled_cross_attention_at_lambda_zero_is_the_image_attention_exactly():
  m = _decoupled()
  m.to_v_camera.kernel[...] = jnp.asarray(normal(3, 8, 32))  # a camera term that is not zero
  x, image, camera = normal(4, B, 7, 32), normal(5, B, 5, 32), normal(6, B, 6, 8)
  wan = jit_init(lambda: Attention(32, 2, eps=1e-6, implementation="xla", rngs=nnx.Rngs(1), dtype=jnp.float32,
                                   param_dtype=jnp.float32))
  for name in ("to_q", "to_k", "to_v", "to_out"):
    getattr(wan, name).kernel[...] = getattr(m, name).kernel[...]
    getattr(wan, name).bias[...] = getattr(m, name).bias[...]
  wan.norm_q.scale[...], wan.norm_k.scale[...] = m.norm_q.scale[...], m.norm_k.scale[...]
  image_only = call(wan, x, image)
  lambdas = jnp.asarray([0.0, 1.0, 0.5])
  out0, out1, out_half = (call(m, x, image, camera, lam) for lam in lambdas)
  np.testing.assert_array_equal(out0, image_only)
  np.testing.assert_array_equal(call(m, x, image, None), image_only)
  # Linear in lambda (one shared output projection), per example with a [B] lambda.
  assert float(jnp.abs(out1 - out0).max()) > 1e-2
  np.testing.assert_allclose(out_half, out0 + 0.5 * (out1 - out0), atol=1e-5)
  per_example = call(m, x, image, camera, jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(per_example[0], out0[0], atol=1e-6)
  np.testing.assert_allclose(per_example[1], out1[1], atol=1e-6)
  with pytest.raises(MotionFlowError, match="lambda_c"):
    call(m, x, image, camera, jnp.ones(3))


def test_decoupled_cross_attention_starts_at_zero_and_learns_the_camera_values_first():
  m = _decoupled()
  x, image, camera = normal(4, B, 7, 32), normal(5, B, 5, 32), normal(6, B, 6, 8)
  np.testing.assert_array_equal(call(m, x, image, camera, jnp.float32(3.0)), call(m, x, image, None))
  graphdef, params = nnx.split(m, nnx.Param)
  cot = jnp.asarray(normal(7, B, 7, 32))
  grads = fast_jit(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x, image, camera, 1.0) * cot)))(params)
  assert float(jnp.abs(grads["to_v_camera"]["kernel"][...]).max()) > 1e-3  # one zero on the path: it moves at once
  assert float(jnp.abs(grads["to_k_camera"]["kernel"][...]).max()) == 0.0  # (keys follow once the values moved)


def _reference_block(block, x, context, modulation, rope, camera, lambda_c, parallel):
  """A WanBlock written out with MotionFlow's camera cross-attention.

  parallel=True: eq. 4 (`decoupled_attention`): ONE query, from the block's tokens, for the image (text) and the camera
  term, summed before the shared output projection. parallel=False: the camera term's query is taken from the tokens
  AFTER the text cross-attention's residual (what WanBlock does today: cross streams run after `attn2`)."""
  mod = block.scale_shift_table[...] + modulation
  shift, scale, gate, c_shift, c_scale, c_gate = [mod[:, i][:, None] for i in range(6)]
  ln = lambda a: layer_norm(a, CONFIG.eps)
  heads = lambda a: a.reshape(*a.shape[:-1], HEADS, -1)
  flat = lambda a: a.reshape(*a.shape[:2], -1)
  x = x + block.attn1(ln(x) * (1 + scale) + shift, rope=rope) * gate
  attn2, stream = block.attn2, block.cross["camera"].attn
  query = lambda a: heads(attn2.norm_q(attn2.to_q(block.norm2(a))))
  k_i, v_i = heads(attn2.norm_k(attn2.to_k(context))), heads(attn2.to_v(context))
  k_c, v_c = heads(stream.norm_k(stream.to_k(camera))), heads(stream.to_v(camera))
  if parallel:
    x = x + attn2.to_out(flat(decoupled_attention(query(x), k_i, v_i, k_c, v_c, lambda_c)))
  else:
    x = x + attn2.to_out(flat(attention(query(x), k_i, v_i)))
    x = x + lambda_c * flat(attention(query(x), k_c, v_c)) @ attn2.to_out.kernel[...]
  return x + block.ffn(ln(x) * (1 + c_scale) + c_shift) * c_gate


@functools.partial(fast_jit, static_argnums=(0, 7))
def _reference_layers(graphdef, state, latents, timesteps, text, camera, hidden, parallel, lambda_c):
  """Every layer of the reference block on the DiT's own input of that layer (its patch embedding, then `hidden`)."""
  model = nnx.merge(graphdef, state)
  temb = model.time_embedder(timestep_embedding(timesteps, CONFIG.freq_dim))
  modulation = model.time_proj(jax.nn.silu(temb)).reshape(B, 6, D)
  context = model.text_embedder(text)
  rope = rope_angles(GRID, CONFIG.head_dim)
  camera = model.cross_embedders["camera"](camera)
  block_inputs = [model.patch_embedding(latents)] + [hidden[l] for l in range(CONFIG.num_layers - 1)]
  return [_reference_block(layer(model, l), x, context, modulation, rope, camera, lambda_c, parallel)
          for l, x in enumerate(block_inputs)]


def _tied_camera_dit():
  model = dit()
  # Move the DiT's norm2 affine off identity so that folding it into the stream's query is exercised.
  model.blocks.norm2.scale[...] = jnp.asarray(1 + normal(11, *model.blocks.norm2.scale.shape, scale=0.2))
  model.blocks.norm2.bias[...] = jnp.asarray(normal(12, *model.blocks.norm2.bias.shape, scale=0.2))
  tie_cross_stream(model.blocks, "camera")
  return model


def _camera_layers(parallel):
  """(the tied DiT's per-layer outputs, the reference block's, the reference block's without the camera term)."""
  model = _tied_camera_dit()
  latents, timesteps, text = inputs(0)
  camera = normal(20, B, 9, CAM)
  lambda_c = 0.7
  _, hidden = run(model, latents, timesteps, text, cross={"camera": camera}, cross_scale={"camera": lambda_c},
                  return_hidden=True)
  args = (latents, timesteps, text, camera, hidden, parallel)
  return hidden, _reference_layers(*nnx.split(model), *args, lambda_c), _reference_layers(*nnx.split(model), *args, 0.0)


def test_eq4_is_wandit_text_cross_attention_plus_a_tied_camera_stream():
  hidden, want, without = _camera_layers(parallel=True)
  for l in range(CONFIG.num_layers):
    assert float(jnp.abs(want[l] - without[l]).max()) > 1e-2  # the camera term is really there
    np.testing.assert_allclose(hidden[l], want[l], atol=2e-5, rtol=1e-5, err_msg=f"layer {l}")


def _halves(a):
  """`[..., T * h * 2w, D]` tokens of a width-concatenated grid -> (left `[..., T h w, D]`, right)."""
  t, h, w = GRID
  a = a.reshape(*a.shape[:-2], t, h, 2 * w, a.shape[-1])
  flat = lambda b: b.reshape(*b.shape[:-4], t * h * w, b.shape[-1])
  return flat(a[..., :w, :]), flat(a[..., w:, :])


def test_reference_attention_side_by_side_is_wandit_extra_kv_at_gate_one():
  """The paper's reference attention, literally: latents of the video and of the reference concatenated along the
  width, one DiT run over the (t, h, 2w) grid (every layer self-attends over both halves), video half kept. A
  video-only run whose extra_kv are the reference half's per-layer inputs (`reference_kv(first=...)`) with every
  extra-kv gate at 1 gives the same video half, layer by layer."""
  model = dit()
  model.blocks.extra_kv_gate[...] = jnp.ones_like(model.blocks.extra_kv_gate[...])
  video, timesteps, text = inputs(0)
  ref = normal(30, B, T, H, W, C)
  joint_out, joint_hidden = run(model, np.concatenate([video, ref], axis=3), timesteps, text, return_hidden=True)
  hidden_video, hidden_ref = _halves(joint_hidden)
  first = model.patch_embedding(jnp.asarray(ref))
  kv = reference_kv(hidden_ref, GRID, first=first, layout="side_by_side")
  assert kv.states.shape == (CONFIG.num_layers, B, N, D)
  out, hidden = run(model, video, timesteps, text, extra_kv=kv.states, extra_kv_rope=kv.positions,
                    return_hidden=True)
  np.testing.assert_allclose(hidden, hidden_video, atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(out, joint_out[:, :, :, :W], atol=2e-5, rtol=1e-5)
  alone = run(model, video, timesteps, text)
  assert float(jnp.abs(alone - out).max()) > 1e-3  # the reference half matters
  # The "aligned" layout puts the map on the video's own positions instead: another result.
  aligned = reference_kv(hidden_ref, GRID, first=first, layout="aligned")
  assert float(jnp.abs(run(model, video, timesteps, text, extra_kv=aligned.states,
                           extra_kv_rope=aligned.positions) - out).max()) > 1e-4


def test_reference_kv_folds_frames_maps_layers_and_places_the_map():
  t, h, w = GRID
  hidden = jnp.asarray(normal(40, 3, B * t, h * w, 5))  # an image twin run frame by frame
  kv = reference_kv(hidden, GRID, per_frame=True, num_layers=6)
  assert kv.states.shape == (6, B, t * h * w, 5)
  np.testing.assert_array_equal(kv.states[0, 1, h * w:2 * h * w], hidden[0, 1 * t + 1])  # sample 1, frame 1
  np.testing.assert_array_equal(kv.states[5], kv.states[4])  # layers 4, 5 <- reference layer 2
  np.testing.assert_array_equal(kv.states[4, 0, :h * w], hidden[2, 0])
  first = jnp.asarray(normal(41, B * t, h * w, 5))
  shifted = reference_kv(hidden, GRID, per_frame=True, first=first)
  np.testing.assert_array_equal(shifted.states[0, 0, :h * w], first[0])
  np.testing.assert_array_equal(shifted.states[2], reference_kv(hidden, GRID, per_frame=True).states[1])
  pos = reference_positions(GRID)
  np.testing.assert_array_equal(pos[:, 2], grid_positions(GRID)[:, 2] + w)
  np.testing.assert_array_equal(pos[:, :2], grid_positions(GRID)[:, :2])
  with pytest.raises(MotionFlowError, match="hidden must be"):
    reference_kv(hidden, GRID)
  with pytest.raises(MotionFlowError, match="first must be"):
    reference_kv(hidden, GRID, per_frame=True, first=first[:, :2])
  with pytest.raises(MotionFlowError, match="layout"):
    reference_positions(GRID, "stacked")


# ------------------------------------------------------------------------------------------ semantic and object
def test_object_attention_starts_at_identity_and_its_mask_is_the_attention_weighted_saliency():
  m = jit_init(lambda: ObjectAttention(32, 12, 2, rngs=nnx.Rngs(0)))
  h, sem = normal(50, B, 7, 32), normal(51, B, 5, 12)
  np.testing.assert_array_equal(call(m, h, sem), h)
  mask = np.asarray(call(m, h, sem, method="mask"))
  assert mask.shape == (B, 7, 1) and (mask > 0).all() and (mask < 1).all()

  # The mask written out in NumPy from the module's weights.
  def dense(layer, a):
    return a @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])

  def rms(a, scale):
    return a / np.sqrt((a**2).mean(-1, keepdims=True) + 1e-6) * np.asarray(scale[...])

  x = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
  q = rms(dense(m.to_q, x), m.norm_q.scale).reshape(B, 7, 2, 16)
  k = rms(dense(m.to_k, sem), m.norm_k.scale).reshape(B, 5, 2, 16)
  logits = np.einsum("bnhd,bphd->bhnp", q, k) / 4.0
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  saliency = 1 / (1 + np.exp(-dense(m.to_score, sem)))  # [B, P, heads]
  want = np.einsum("bhnp,bph->bnh", p, saliency).mean(-1, keepdims=True)
  np.testing.assert_allclose(mask, want, atol=1e-5)
  # With a gate the block output is scaled by (1 + gate * mask), per channel.
  m.gate[...] = jnp.asarray(normal(52, 32))
  np.testing.assert_allclose(call(m, h, sem), h * (1 + np.asarray(m.gate[...]) * want), atol=1e-5)
  # Masked semantic tokens are ignored: same as giving only the kept ones.
  keep = np.array([[True, True, False, True, False]] * B)
  np.testing.assert_allclose(call(m, h, sem, jnp.asarray(keep), method="mask"),
                             call(m, h, sem[:, keep[0]], method="mask"), atol=1e-6)


def test_semantic_input_is_zero_at_init_and_a_resized_projection_repeated_over_frames():
  m = jit_init(lambda: SemanticInput(12, 32, rngs=nnx.Rngs(0)))
  feats = normal(60, B, 4 * 6, 12)
  assert float(jnp.abs(m(feats, (4, 6), (3, 4, 6))).max()) == 0.0
  m.proj.kernel[...] = jnp.asarray(normal(61, 12, 32))
  out = np.asarray(m(feats, (4, 6), (3, 4, 6)))
  assert out.shape == (B, 3 * 24, 32)
  np.testing.assert_allclose(out[:, :24], feats @ np.asarray(m.proj.kernel[...]), atol=1e-5)  # same grid: no resize
  np.testing.assert_array_equal(out[:, 24:48], out[:, :24])  # every frame the same
  # Other token grids: bilinear resize, antialiased when shrinking (torch's interpolate as the independent reference).
  torch = pytest.importorskip("torch")
  for size in ((2, 3), (6, 9)):
    grid = torch.from_numpy(feats.reshape(B, 4, 6, 12)).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=size, mode="bilinear", align_corners=False, antialias=True)
    want = resized.permute(0, 2, 3, 1).reshape(B, -1, 12).numpy() @ np.asarray(m.proj.kernel[...])
    np.testing.assert_allclose(m(feats, (4, 6), (1, *size)), want, atol=1e-5)
  assert float(jnp.abs(m(np.zeros_like(feats), (4, 6), (3, 4, 6))).max()) == 0.0  # bias-free
  with pytest.raises(MotionFlowError, match="hp \\* wp"):
    m(feats, (4, 5), (3, 4, 6))


def _save_tiny(tmp_path, kind):
  import transformers

  if kind == "dinov2":
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, patch_size=4, image_size=16)
    model = transformers.Dinov2Model(config)
  else:
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    patch_size=4, image_size=16)
    model = transformers.ViTModel(config, add_pooling_layer=False)
  folder = tmp_path / kind
  model.save_pretrained(folder)
  return folder, model.eval()


@pytest.mark.parametrize("kind", ["dinov2", "vit"])
def test_semantic_encoder_loads_a_local_folder_and_returns_patch_tokens(tmp_path, kind):
  torch = pytest.importorskip("torch")
  folder, model = _save_tiny(tmp_path, kind)
  semantic_encoder = SemanticEncoder(folder, resolution=(16, 24))
  images = np.random.default_rng(70).uniform(-1, 1, (B, 16, 24, 3)).astype(np.float32)
  feats = semantic_encoder(images)
  assert feats.grid == (4, 6) and feats.tokens.shape == (B, 24, 32) and feats.cls.shape == (B, 32)
  # Written out: [-1, 1] -> [0, 1], ImageNet normalisation, NCHW; class token dropped.
  x = ((images + 1) / 2 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  kw = {"interpolate_pos_encoding": True} if kind == "vit" else {}
  with torch.no_grad():
    want = model(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)), **kw).last_hidden_state
  np.testing.assert_allclose(feats.tokens, want[:, 1:].numpy(), atol=1e-5)
  np.testing.assert_allclose(feats.cls, want[:, 0].numpy(), atol=1e-5)
  # uint8 input and a resize to the encoder's resolution.
  small = semantic_encoder(((images[:, ::2, ::2] + 1) * 127.5).astype(np.uint8))
  assert small.tokens.shape == (B, 24, 32)


def test_semantic_encoder_errors(tmp_path):
  with pytest.raises(SemanticEncoderError, match="config.json missing"):
    SemanticEncoder(tmp_path / "absent")
  (tmp_path / "bert").mkdir()
  (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(SemanticEncoderError, match="'bert' model"):
    SemanticEncoder(tmp_path / "bert")
  folder, _ = _save_tiny(tmp_path, "dinov2")
  with pytest.raises(SemanticEncoderError, match="multiple of the patch size 4"):
    SemanticEncoder(folder, resolution=(16, 18))


# ----------------------------------------------------------------------------------------------- zero at step 0
def test_every_motionflow_input_leaves_a_fresh_wandit_unchanged():
  """Camera features through the cross stream, reference states through extra_kv, the semantic token map: a fresh
  DiT (zero gates) and a fresh SemanticInput (zero projection) compute exactly the base model. (That each of these
  WanDiT inputs learns from there is tests/models/test_wan.py's.)"""
  model = dit()
  video, timesteps, text = inputs(0)
  camera = encode(encoder(ENC.replace(num_scales=1)), normal(80, B, T, H, W, 6))[0]
  kv = reference_kv(jnp.asarray(normal(81, CONFIG.num_layers, B, N, D)), GRID)
  semantic = jit_init(lambda: SemanticInput(12, D, rngs=nnx.Rngs(2)))
  token_map = semantic(normal(82, B, 6, 12), (2, 3), GRID)
  assert float(jnp.abs(camera).max()) > 0.1 and float(jnp.abs(token_map).max()) == 0.0
  base = run(model, video, timesteps, text)
  got = run(model, video, timesteps, text, cross={"camera": camera}, cross_scale={"camera": 1.5},
            extra_kv=kv.states, extra_kv_rope=kv.positions, token_map=token_map)
  np.testing.assert_allclose(got, base, atol=1e-6, rtol=0)
