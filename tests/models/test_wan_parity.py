"""Parity of camjax's WAN 2.1 DiT with diffusers' `WanTransformer3DModel` (torch, CPU) on the same weights.

Compile-bound on CPU: the camjax forwards compile with fast-compile XLA options (`jit`).
"""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from flax import nnx  # noqa: E402

from camjax.models import WanDiT, layers, lora, wan  # noqa: E402
from camjax.models.weights import WeightsError, load_diffusers  # noqa: E402
from camjax.xla_flags import fast_jit


jit = fast_jit  # small, compile-bound test programs: camjax.xla_flags.fast_compile_options

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
  model = load_diffusers(path, scan_layers=scan_layers)
  latents, timesteps, text = _inputs()
  expected = _torch_forward(torch_model, latents, timesteps, text)
  got = np.asarray(jit(lambda *a: model(*a))(jnp.asarray(latents), jnp.asarray(timesteps), jnp.asarray(text)))
  assert np.abs(expected).max() > 0.1  # a real signal, not two zero maps
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


EXTRAS = dict(extra_in_channels=1, cross_streams=(("cam", 6),), extra_kv=True, lora_rank=2)


def _extra_inputs(latents, model, seed):
  rng = np.random.default_rng(seed)
  b, t, h, w, _ = latents.shape
  n, d = t * (h // 2) * (w // 2), model.config.dim
  return dict(extra_in=jnp.asarray(rng.standard_normal((b, t, h, w, 1)), jnp.float32),
              cross={"cam": jnp.asarray(rng.standard_normal((b, 4, 6)), jnp.float32)},
              extra_kv=jnp.asarray(rng.standard_normal((model.config.num_layers, b, 7, d)), jnp.float32),
              token_map=jnp.zeros((b, n, d)))


@pytest.mark.parametrize("overrides", [dict(extra_in_channels=1, lora_rank=2), EXTRAS], ids=["extra_in+lora", "all"])
def test_camjax_extras_start_at_wan(tiny_wan, overrides, caplog):
  """Every camjax extension loads zero-initialised: with its inputs given, the output still equals plain WAN's."""
  torch_model, path = tiny_wan
  with caplog.at_level(logging.INFO, logger="camjax.models.weights"):
    model = load_diffusers(path, seed=3, **overrides)
  assert "blocks.attn1.to_q.lora.a" in caplog.text  # camjax-only parameters are listed
  latents, timesteps, text = _inputs(1)
  expected = _torch_forward(torch_model, latents, timesteps, text)
  inputs = _extra_inputs(latents, model, 2)
  if "cross_streams" not in overrides:
    inputs = dict(extra_in=inputs["extra_in"])
  got = np.asarray(jit(lambda *a, **kw: model(*a, **kw))(jnp.asarray(latents), jnp.asarray(timesteps),
                                                          jnp.asarray(text), **inputs))
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
  # camjax-only parameters take the values the model's own seeded initialiser gives them (that parameter alone,
  # under jit: eager initialisation compiles every op separately).
  fresh = jax.jit(lambda: WanDiT(model.config, rngs=nnx.Rngs(3)).blocks.ffn.proj_in.lora.a[...])()
  np.testing.assert_array_equal(model.blocks.ffn.proj_in.lora.a[...], fresh)
  np.testing.assert_array_equal(model.blocks.ffn.proj_in.lora.b[...], 0)
  kernel = np.asarray(model.patch_embedding.proj.kernel[...]).reshape(1, 2, 2, 5, -1)
  np.testing.assert_array_equal(kernel[:, :, :, 4], 0)  # the extra channel's rows are zero-padded
  assert np.abs(kernel[:, :, :, :4]).min() > 0


def test_load_runs_the_initialiser_only_for_camjax_parameters(tiny_wan, monkeypatch):
  """Loading never materialises the random initialisation of a parameter the checkpoint provides.

  Every parameter initialiser outside camjax's extensions (the `_add_extras` of the model and of each block) is
  poisoned with a callback that fails if it ever executes: building the whole model and then overwriting it (twice
  the parameter memory) would run them all, while building it abstractly runs none. The extensions are initialised.
  """
  inside_extras = []

  def boom(x):
    raise AssertionError("the random initialiser of a checkpoint parameter ran")

  def spy_param(rngs, init, shape, names, dtype=jnp.float32, kind=nnx.Param):
    if inside_extras:
      return layers_param(rngs, init, shape, names, dtype, kind)
    poisoned.append(tuple(shape))

    def poisoned_init(key, shape, dtype):
      value = init(key, shape, dtype)
      return value + jax.pure_callback(boom, jax.ShapeDtypeStruct(shape, dtype), value, vmap_method="sequential")

    return layers_param(rngs, poisoned_init, shape, names, dtype, kind)

  def spy_extras(original):
    def add_extras(self, *args, **kw):
      inside_extras.append(True)
      try:
        original(self, *args, **kw)
      finally:
        inside_extras.pop()
    return add_extras

  poisoned = []
  layers_param = layers.param
  for module in (layers, wan, lora):
    monkeypatch.setattr(module, "param", spy_param)
  for cls in (wan.WanDiT, wan.WanBlock):
    monkeypatch.setattr(cls, "_add_extras", spy_extras(cls._add_extras))

  torch_model, path = tiny_wan
  model = load_diffusers(path, **EXTRAS)
  assert len(poisoned) > 20  # every WAN parameter went through the poisoned initialiser
  np.testing.assert_array_equal(model.blocks.extra_kv_gate[...], 0)
  np.testing.assert_array_equal(model.blocks.cross["cam"].gate[...], 0)
  assert np.abs(np.asarray(model.blocks.attn2.to_v.lora.a[...])).min() > 0
  latents, timesteps, text = _inputs(3)
  got = jit(lambda *a, **kw: model(*a, **kw))(jnp.asarray(latents), jnp.asarray(timesteps), jnp.asarray(text),
                                              **_extra_inputs(latents, model, 4))
  np.testing.assert_allclose(np.asarray(got), _torch_forward(torch_model, latents, timesteps, text), atol=1e-5, rtol=0)


def test_bf16_checkpoint_loads(tiny_wan, tmp_path):
  torch_model, _ = tiny_wan
  path = tmp_path / "bf16"
  torch_model.to(torch.bfloat16).save_pretrained(path)
  torch_model.to(torch.float32)
  model = load_diffusers(path)
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
    load_diffusers(bad, lora_rank=2)  # camjax-only parameters do not excuse a missing WAN one
  with pytest.raises(WeightsError, match="config.json"):
    load_diffusers(tmp_path)
