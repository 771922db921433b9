"""WanVAE (camjax.models.wan_vae): parity with diffusers' `AutoencoderKLWan` (torch, CPU) on a tiny random config,
the causal chunk cache (chunked == whole clip, causality), spatial tiling, the loader's errors, the shape contract and
the sharding rules.

Compile-bound on CPU: every camjax call is jitted once per shape with fast-compile XLA options (`jit`).
"""

import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from flax import nnx  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from camjax import sharding  # noqa: E402
from camjax.models.autoencoders import Autoencoder, AutoencoderError  # noqa: E402
from camjax.models.wan_vae import VAE_RULES, VAEWeightsError, WanVAE, WanVAEConfig  # noqa: E402
from camjax.models.weights import WeightsError  # noqa: E402
from camjax.xla_flags import fast_jit  # noqa: E402

# 4 levels (8x space), time halved twice (4x): the WAN 2.1 layout at width 8 / 16, one residual block per level.
TINY = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
            latents_mean=[0.1, -0.2, 0.3, 0.05], latents_std=[1.5, 0.7, 2.0, 1.1])
B, T, H, W = 2, 9, 16, 24  # 9 frames: the first alone, then two chunks of 4 (the cache is carried twice)
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
  """Torch's spinning worker threads cost ~50x CPU time on these tiny convolutions (2-core machine)."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(torch model, saved folder, camjax VAE loaded from it, mean, std)."""
  torch.manual_seed(0)
  model = diffusers.AutoencoderKLWan(**TINY).eval()
  with torch.no_grad():  # RMSNorm gains start at one: randomise them so a transposed gain cannot pass
    for name, p in model.named_parameters():
      if name.endswith("gamma"):
        p.copy_(1 + 0.3 * torch.randn_like(p))
  path = tmp_path_factory.mktemp("wan_vae") / "tiny"
  model.save_pretrained(path)
  mean, std = np.array(TINY["latents_mean"], np.float32), np.array(TINY["latents_std"], np.float32)
  return model, path, WanVAE.from_diffusers(path), mean, std


_JITS = {}


def run(vae, method, x, **kw):
  """`vae.<method>(x, **kw)` under one fast-compile jit per (model graph, method, options); shapes retrace."""
  graphdef, state = nnx.split(vae)
  key = (graphdef, method, tuple(sorted(kw.items())))
  if key not in _JITS:
    _JITS[key] = fast_jit(lambda s, v: getattr(nnx.merge(graphdef, s), method)(v, **kw))
  return np.asarray(_JITS[key](state, x))


def video(seed=0, t=T, h=H, w=W):
  return np.random.default_rng(seed).uniform(-1, 1, (B, t, h, w, 3)).astype(np.float32)


def latents(seed=1, t=3, h=H // 8, w=W // 8):
  return np.random.default_rng(seed).standard_normal((B, t, h, w, 4)).astype(np.float32)


def torch_encode(model, v, mean, std):
  """diffusers' posterior mean, normalised the WAN way: `(mu - mean) / std`, channels-last."""
  with torch.no_grad():
    mu = model.encode(torch.from_numpy(v).permute(0, 4, 1, 2, 3)).latent_dist.mean
  return (mu.permute(0, 2, 3, 4, 1).numpy() - mean) / std


def torch_decode(model, z, mean, std):
  """diffusers' decode of normalised latents (`z * std + mean`), channels-last, clamped to [-1, 1] by diffusers."""
  with torch.no_grad():
    out = model.decode(torch.from_numpy(z * std + mean).permute(0, 4, 1, 2, 3)).sample
  return out.permute(0, 2, 3, 4, 1).numpy()


@pytest.fixture(scope="module")
def reference(tiny):
  model, _, vae, mean, std = tiny
  v, z = video(), latents()
  return dict(video=v, latents=z, enc=torch_encode(model, v, mean, std), dec=torch_decode(model, z, mean, std),
              my_enc=run(vae, "encode", v), my_dec=run(vae, "decode", z))


def test_encode_matches_diffusers(reference):
  got, want = reference["my_enc"], reference["enc"]
  assert got.shape == want.shape == (B, 3, H // 8, W // 8, 4)
  assert got.dtype == np.float32
  assert np.abs(want).max() > 0.1  # a real signal
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)  # observed ~5e-7


def test_decode_matches_diffusers(reference):
  got, want = reference["my_dec"], reference["dec"]
  assert got.shape == want.shape == (B, T, H, W, 3)
  assert (np.abs(want) < 1).mean() > 0.9  # mostly unclamped: the comparison is not of two saturated maps
  assert np.abs(want).mean() > 0.05
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)  # observed ~2e-6


def test_chunked_equals_whole_clip(tiny, reference):
  vae = tiny[2]
  np.testing.assert_allclose(run(vae, "encode", reference["video"], chunked=False), reference["my_enc"], atol=1e-5)
  np.testing.assert_allclose(run(vae, "decode", reference["latents"], chunked=False), reference["my_dec"], atol=1e-5)


def test_causal_in_time(tiny, reference):
  """Later frames never change earlier latents (encode) or earlier frames (decode)."""
  vae = tiny[2]
  v = reference["video"].copy()
  v[:, 5:] = -v[:, 5:]  # frames 5..8 feed latent frame 2 only
  enc = run(vae, "encode", v)
  np.testing.assert_array_equal(enc[:, :2], reference["my_enc"][:, :2])
  assert np.abs(enc[:, 2] - reference["my_enc"][:, 2]).max() > 1e-3
  z = reference["latents"].copy()
  z[:, 2] += 1.0  # latent frame 2 decodes to frames 5..8
  dec = run(vae, "decode", z)
  np.testing.assert_array_equal(dec[:, :5], reference["my_dec"][:, :5])
  assert np.abs(dec[:, 5:] - reference["my_dec"][:, 5:]).max() > 1e-3


@pytest.fixture(scope="module")
def tiled(tiny):
  """A smooth 1 x 5 x 48 x 64 clip and 1 x 2 x 6 x 8 latents: camjax untiled, diffusers untiled and tiled (32 px
  tiles, stride 16 = camjax `tile=32, tile_overlap=16`)."""
  model, _, vae, mean, std = tiny
  rng = np.random.default_rng(3)
  yy, xx = np.meshgrid(np.linspace(0, 1, 48), np.linspace(0, 1, 64), indexing="ij")
  waves = [np.sin(2 * np.pi * (a * xx + b * yy) + c) for a, b, c in rng.uniform(0, 2, (15, 3))]
  v = (0.8 * np.stack(waves).reshape(5, 3, 48, 64).transpose(0, 2, 3, 1)[None]).astype(np.float32)
  z = rng.standard_normal((1, 2, 6, 8, 4)).astype(np.float32)
  out = dict(video=v, latents=z, enc=run(vae, "encode", v), dec=run(vae, "decode", z))
  model.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                      tile_sample_stride_width=16)
  try:
    out.update(ref_enc=torch_encode(model, v, mean, std), ref_dec=torch_decode(model, z, mean, std))
  finally:
    model.disable_tiling()
  out.update(ref_enc_untiled=torch_encode(model, v, mean, std), ref_dec_untiled=torch_decode(model, z, mean, std))
  return out


def test_tile_covering_the_frame_equals_untiled(tiny, tiled):
  vae = tiny[2]
  np.testing.assert_allclose(run(vae, "encode", tiled["video"], tile=(64, 64)), tiled["enc"], atol=1e-6)
  np.testing.assert_allclose(run(vae, "decode", tiled["latents"], tile=(48, 80)), tiled["dec"], atol=1e-6)


def test_small_tiles_stay_close_to_untiled(tiny, tiled):
  """Tiles see zero padding at their borders, so they differ from the untiled result. camjax's linear blend must do
  no worse than diffusers' own tiling with the same tiles (32 px, overlap 16 px) on the same weights.

  Observed on this random tiny VAE (its receptive field spans most of a 32 px tile): encode max abs diff ~0.35, mean
  ~0.045 (diffusers ~0.31 / ~0.050) on latents of mean magnitude ~0.2; decode max ~0.74, mean ~0.09 (diffusers
  ~0.74 / ~0.10) on pixels of mean magnitude ~0.2. A trained VAE's tiles agree far better; the bound here is the
  reference's.
  """
  vae = tiny[2]
  enc = run(vae, "encode", tiled["video"], tile=32, tile_overlap=16)
  dec = run(vae, "decode", tiled["latents"], tile=32, tile_overlap=16)
  for name, got, want, ref, ref_untiled in (("encode", enc, tiled["enc"], tiled["ref_enc"], tiled["ref_enc_untiled"]),
                                            ("decode", dec, tiled["dec"], tiled["ref_dec"], tiled["ref_dec_untiled"])):
    assert got.shape == want.shape
    diff, ref_diff = np.abs(got - want), np.abs(ref - ref_untiled)
    assert diff.max() > 1e-3  # really tiled
    assert diff.mean() < 1.2 * ref_diff.mean() and diff.max() < 1.5 * ref_diff.max(), (
        name, diff.mean(), ref_diff.mean(), diff.max(), ref_diff.max())
    assert diff.mean() < 0.6 * np.abs(want).mean(), name


def test_protocol_and_shapes(tiny):
  vae = tiny[2]
  assert isinstance(vae, Autoencoder)
  assert (vae.temporal_factor, vae.spatial_factor, vae.latent_channels, vae.can_decode) == (4, 8, 4, True)
  assert vae.latent_shape(81, 480, 832) == (21, 60, 104, 4)
  assert vae.video_frames(21) == 81
  wan = WanVAEConfig()  # the released WAN 2.1 VAE
  assert (wan.temporal_factor, wan.spatial_factor, wan.z_dim) == (4, 8, 16)


def test_create_random_vae(tiny):
  """`WanVAE.create` builds the same graph as the loaded one (the encode below reuses its compiled program)."""
  config = tiny[2].config
  vae = WanVAE.create(config, seed=1)
  assert np.all(np.asarray(vae.decoder.norm_out.gamma[...]) == 1.0)
  kernel = np.asarray(vae.encoder.down_blocks[0].conv1.kernel[...])  # [3, 3, 3, 8, 8]: fan_in 216
  assert abs(kernel.std() * np.sqrt(216) - 1) < 0.2
  enc = run(vae, "encode", video())
  assert enc.shape == (B, 3, H // 8, W // 8, 4) and np.isfinite(enc).all()
  with pytest.raises(AutoencoderError, match="latents_mean has 16 entries, z_dim is 4"):
    WanVAEConfig(z_dim=4).validate()
  with pytest.raises(AutoencoderError, match="temporal_downsample"):
    WanVAEConfig(dim_mult=(1, 2)).validate()


def test_bad_shapes_and_tiles_raise(tiny):
  vae = tiny[2]
  with pytest.raises(AutoencoderError, match="1 \\+ 4k"):
    vae.encode(video(t=6))
  with pytest.raises(AutoencoderError, match="height 12 px"):
    vae.encode(video(h=12))
  with pytest.raises(AutoencoderError, match="expected \\[B, t >= 1, h, w, 4\\]"):
    vae.decode(np.zeros((1, 2, 2, 2, 16), np.float32))
  with pytest.raises(AutoencoderError, match="multiples of the spatial factor 8"):
    vae.encode(video(), tile=12)
  with pytest.raises(AutoencoderError, match="expected ints or \\(height, width\\) int pairs"):
    vae.encode(video(), tile=(16.0, 16))
  with pytest.raises(AutoencoderError, match="overlap < tile"):
    vae.decode(latents(), tile=16, tile_overlap=16)


def test_sharded_checkpoint_loads_the_same(tiny, tmp_path):
  model, path, vae, _, _ = tiny
  model.save_pretrained(tmp_path, max_shard_size="40KB")
  with open(tmp_path / "diffusion_pytorch_model.safetensors.index.json") as f:
    assert len(set(json.load(f)["weight_map"].values())) > 1
  sharded = WanVAE.from_diffusers(tmp_path)
  a, b = nnx.to_flat_state(nnx.state(vae)), nnx.to_flat_state(nnx.state(sharded))
  assert [p for p, _ in a] == [p for p, _ in b]
  for (p, x), (_, y) in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x.get_value()), np.asarray(y.get_value()), err_msg=str(p))


def _copy_config(src, dst, **changes):
  os.makedirs(dst, exist_ok=True)
  with open(src / "config.json") as f:
    cfg = json.load(f)
  cfg.update(changes)
  with open(dst / "config.json", "w") as f:
    json.dump(cfg, f)


def test_loader_errors_name_what_is_missing(tiny, tmp_path):
  _, path, _, _, _ = tiny
  with pytest.raises(VAEWeightsError, match="no such folder"):
    WanVAE.from_diffusers(tmp_path / "absent")
  no_config = tmp_path / "no_config"
  no_config.mkdir()
  with pytest.raises(VAEWeightsError, match="no config.json"):
    WanVAE.from_diffusers(no_config)
  no_weights = tmp_path / "no_weights"
  _copy_config(path, no_weights)
  with pytest.raises(VAEWeightsError, match="no weights"):
    WanVAE.from_diffusers(no_weights)
  other = tmp_path / "other"
  _copy_config(path, other, _class_name="AutoencoderKL")
  with pytest.raises(VAEWeightsError, match="'AutoencoderKL', not an 'AutoencoderKLWan'"):
    WanVAE.from_diffusers(other)
  wan22 = tmp_path / "wan22"
  _copy_config(path, wan22, is_residual=True)
  with pytest.raises(WeightsError, match="WAN 2.2"):  # VAEWeightsError is a WeightsError
    WanVAE.from_diffusers(wan22)

  tensors = load_file(path / "diffusion_pytorch_model.safetensors")
  del tensors["decoder.conv_out.bias"]
  tensors["encoder.conv_in.weight"] = tensors["encoder.conv_in.weight"][:4]
  tensors["extra.weight"] = np.zeros(2, np.float32)
  broken = tmp_path / "broken"
  _copy_config(path, broken)
  save_file(tensors, broken / "diffusion_pytorch_model.safetensors")
  with pytest.raises(VAEWeightsError) as e:
    WanVAE.from_diffusers(broken)
  msg = str(e.value)
  assert "missing decoder.conv_out.bias" in msg
  assert "encoder.conv_in.weight: checkpoint shape (4, 3, 3, 3, 3)" in msg
  assert "unexpected tensors ['extra.weight']" in msg


def test_sharding_rules(tiny):
  vae = tiny[2]
  mesh = jax.sharding.AbstractMesh((1, 2, 2, 1), sharding.MESH_AXES)
  specs = {".".join(map(str, p)): s for p, s in nnx.to_flat_state(sharding.param_specs(nnx.state(vae), mesh,
                                                                                        VAE_RULES))}
  assert specs["encoder.conv_in.kernel"] == P(None, None, None, None, "fsdp")  # RGB in, channels out
  assert specs["encoder.down_blocks.0.conv1.bias"] == P("fsdp")
  assert specs["encoder.conv_out.kernel"] == P(None, None, None, None, None)  # 2 z_dim channels: replicated
  assert specs["decoder.conv_out.kernel"] == P(None, None, None, None, None)  # RGB out
  assert specs["decoder.mid_block.attentions.0.to_qkv.kernel"] == P(None, None, None, "fsdp")
  assert specs["decoder.norm_out.gamma"] == P(None)
  act = sharding.logical_to_spec(("vae_batch", "vae_frames", "vae_height", "vae_width", "vae_channels"),
                                 VAE_RULES.activations, dict(mesh.shape))
  assert act == P("fsdp", None, None, None, None)  # batch only (module docstring: rows over context miscompiled)
