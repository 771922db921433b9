"""Parity of camjax's WAN 2.1 DiT with diffusers' `WanTransformer3DModel` (torch, CPU) on the same weights."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from camjax.conditioning import cameractrl2  # noqa: E402
from camjax.models import WanDiT, layers, wan  # noqa: E402
from camjax.models.weights import WeightsError  # noqa: E402

TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
            text_dim=16, freq_dim=32, ffn_dim=40, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=1e-6, rope_max_seq_len=64)


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory):
  torch.manual_seed(0)
  model = diffusers.WanTransformer3DModel(**TINY).eval()
  with torch.no_grad():  # proj_out starts at zero in WAN; randomise every tensor so parity is not trivial
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.3)
  path = tmp_path_factory.mktemp("wan") / "tiny"
  model.save_pretrained(path)
  return model, path


def _inputs(seed=0, b=2, t=3, h=6, w=8, c=4, l=5):
  rng = np.random.default_rng(seed)
  latents = rng.standard_normal((b, t, h, w, c)).astype(np.float32)
  timesteps = np.array([37.0, 912.5][:b], np.float32)
  text = rng.standard_normal((b, l, TINY["text_dim"])).astype(np.float32)
  return latents, timesteps, text


def _torch_forward(model, latents, timesteps, text):
  with torch.no_grad():
    out = model(torch.from_numpy(latents).permute(0, 4, 1, 2, 3), torch.from_numpy(timesteps),
                torch.from_numpy(text), return_dict=False)[0]
  return out.permute(0, 2, 3, 4, 1).numpy()


@pytest.mark.parametrize("scan_layers", [True, False])
def test_t2v_parity_fp32(tiny_wan, scan_layers):
  torch_model, path = tiny_wan
  model = WanDiT.from_diffusers(path, camera=False, scan_layers=scan_layers)
  latents, timesteps, text = _inputs()
  expected = _torch_forward(torch_model, latents, timesteps, text)
  got = np.asarray(jax.jit(lambda *a: model(*a))(jnp.asarray(latents), jnp.asarray(timesteps), jnp.asarray(text)))
  assert np.abs(expected).max() > 0.1  # a real signal, not two zero maps
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_camjax_extras_start_at_wan(tiny_wan):
  """Camera patchify and the condition-mask channel load zero-initialised: outputs equal plain WAN."""
  torch_model, path = tiny_wan
  model = WanDiT.from_diffusers(path, camera=True, cond_mask=True)
  latents, timesteps, text = _inputs(1)
  expected = _torch_forward(torch_model, latents, timesteps, text)
  camera = np.random.default_rng(2).standard_normal(latents.shape[:-1] + (6,)).astype(np.float32)
  cond_mask = np.ones(latents.shape[:-1] + (1,), np.float32)
  got = np.asarray(model(jnp.asarray(latents), jnp.asarray(timesteps), jnp.asarray(text), camera=jnp.asarray(camera),
                         cond_mask=jnp.asarray(cond_mask)))
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_load_runs_the_initialiser_only_for_camjax_parameters(tiny_wan, monkeypatch):
  """Loading never materialises the random initialisation of a parameter the checkpoint provides.

  Every parameter initialiser outside the camera patchify (the one camjax-only parameter here) is poisoned with a
  callback that fails if it ever executes: building the whole model and then overwriting it (twice the parameter
  memory) would run them all, while building it abstractly runs none. The camera patchify is still initialised.
  """
  inside_camera = []
  poisoned = []

  def boom(x):
    raise AssertionError("the random initialiser of a checkpoint parameter ran")

  def spy_param(rngs, init, shape, names, dtype=jnp.float32):
    if inside_camera:
      return layers_param(rngs, init, shape, names, dtype)
    poisoned.append(tuple(shape))

    def poisoned_init(key, shape, dtype):
      value = init(key, shape, dtype)
      return value + jax.pure_callback(boom, jax.ShapeDtypeStruct(shape, dtype), value, vmap_method="sequential")

    return layers_param(rngs, poisoned_init, shape, names, dtype)

  def spy_camera_init(self, *args, **kw):
    inside_camera.append(True)
    try:
      camera_init(self, *args, **kw)
    finally:
      inside_camera.pop()

  layers_param, camera_init = layers.param, cameractrl2.CameraPatchify.__init__
  monkeypatch.setattr(layers, "param", spy_param)
  monkeypatch.setattr(wan, "param", spy_param)
  monkeypatch.setattr(cameractrl2.CameraPatchify, "__init__", spy_camera_init)

  torch_model, path = tiny_wan
  model = WanDiT.from_diffusers(path, camera=True, cond_mask=True)
  assert len(poisoned) > 20  # every WAN parameter went through the poisoned initialiser
  np.testing.assert_array_equal(model.camera_patchify.proj.kernel[...], 0)
  latents, timesteps, text = _inputs(3)
  camera = np.random.default_rng(4).standard_normal(latents.shape[:-1] + (6,)).astype(np.float32)
  got = jax.jit(lambda *a: model(*a))(jnp.asarray(latents), jnp.asarray(timesteps), jnp.asarray(text),
                                      None, jnp.asarray(camera))
  np.testing.assert_allclose(np.asarray(got), _torch_forward(torch_model, latents, timesteps, text), atol=1e-5, rtol=0)


def test_bf16_checkpoint_loads(tiny_wan, tmp_path):
  torch_model, _ = tiny_wan
  path = tmp_path / "bf16"
  torch_model.to(torch.bfloat16).save_pretrained(path)
  torch_model.to(torch.float32)
  model = WanDiT.from_diffusers(path, camera=False)
  sd = {k: v.float().numpy() for k, v in torch_model.to(torch.bfloat16).state_dict().items()}
  torch_model.to(torch.float32)
  got = np.asarray(model.blocks.attn1.to_q.kernel[...])[1]
  np.testing.assert_array_equal(got, sd["blocks.1.attn1.to_q.weight"].T)


def test_mismatched_checkpoint_is_refused(tiny_wan, tmp_path):
  _, path = tiny_wan
  cfg = json.loads((path / "config.json").read_text())
  bad = tmp_path / "bad"
  bad.mkdir()
  cfg["num_layers"] = 3  # the weights only hold 2 blocks
  (bad / "config.json").write_text(json.dumps(cfg))
  (bad / "diffusion_pytorch_model.safetensors").symlink_to(path / "diffusion_pytorch_model.safetensors")
  with pytest.raises(WeightsError, match="missing blocks.2"):
    WanDiT.from_diffusers(bad)
  with pytest.raises(WeightsError, match="config.json"):
    WanDiT.from_diffusers(tmp_path)
