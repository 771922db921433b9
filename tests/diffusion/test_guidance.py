"""Classifier-free guidance: one batched forward, CameraCtrl II eq. 3, and the glue to the samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax import diffusion as d

B, T, H, W, C, L, D = 2, 3, 4, 4, 5, 6, 8


def _inputs(seed=0):
  rs = np.random.default_rng(seed)
  normal = lambda *shape: rs.standard_normal(shape).astype(np.float32)
  return dict(
      latents=normal(B, T, H, W, C),
      timesteps=np.array([250.0, 900.0], np.float32),
      text=normal(B, L, D),
      null_text=normal(B, L, D) * 0.1,
      camera=normal(B, T, H, W, 6),
      text_mask=(np.arange(L)[None] < np.array([[4], [6]])).astype(np.float32),
  )


class CountingModel:
  """A small random nonlinear DiT stand-in with the camjax call convention; counts its calls."""

  def __init__(self, seed=1):
    rs = np.random.default_rng(100 + seed)
    self.w_lat = rs.standard_normal((C, C)).astype(np.float32) / np.sqrt(C)
    self.w_txt = rs.standard_normal((D, C)).astype(np.float32) / np.sqrt(D)
    self.w_cam = rs.standard_normal((6, C)).astype(np.float32) / np.sqrt(6)
    self.calls = 0
    self.last = None

  def __call__(self, latents, timesteps, text, text_mask=None, camera=None, cond_mask=None):
    self.calls += 1
    self.last = dict(latents=latents, timesteps=timesteps, text=text, text_mask=text_mask, camera=camera,
                     cond_mask=cond_mask)
    m = jnp.ones(text.shape[:2]) if text_mask is None else text_mask
    pooled = jnp.sum(text * m[..., None], 1) / jnp.maximum(jnp.sum(m, 1, keepdims=True), 1.0)
    h = latents @ self.w_lat + (pooled @ self.w_txt)[:, None, None, None, :]
    h = h + jnp.sin(timesteps / 300.0)[:, None, None, None, None]
    if camera is not None:
      h = h * (1.0 + jnp.tanh(camera @ self.w_cam))
    if cond_mask is not None:
      h = h * (1.0 - cond_mask)
    return jnp.tanh(h) + 0.1 * latents**2


def test_camera_text_cfg_is_eq3_in_one_forward():
  inp = _inputs()
  model = CountingModel()
  mask = inp.pop("text_mask")
  guided = jax.jit(lambda kw, m: d.camera_text_cfg(model, text_mask=m, null_text_mask=m, w_text=7.5, w_cam=8.0,
                                                    **kw))(inp, mask)
  assert model.calls == 1
  seen = model.last
  assert seen["latents"].shape == (3 * B, T, H, W, C) and seen["camera"].shape == (3 * B, T, H, W, 6)
  # Reference: three separate forwards.
  ref_model = jax.jit(CountingModel())
  lat, ts = inp["latents"], inp["timesteps"]
  zero_cam = jnp.zeros_like(inp["camera"])
  e_u = ref_model(lat, ts, inp["null_text"], mask, zero_cam)
  e_t = ref_model(lat, ts, inp["text"], mask, zero_cam)
  e_c = ref_model(lat, ts, inp["text"], mask, inp["camera"])
  expected = e_u + 7.5 * (e_t - e_u) + 8.0 * (e_c - e_t)
  np.testing.assert_allclose(guided, expected, atol=1e-5)
  assert not np.allclose(e_c, e_t, atol=1e-3)  # the camera branch matters


def test_camera_text_cfg_branch_order_and_null_camera():
  inp = _inputs(1)
  del inp["text_mask"]
  seen = {}

  def recording_model(**kwargs):  # eager, so the recorded inputs are concrete
    seen.update(kwargs)
    return kwargs["latents"]

  out = d.camera_text_cfg(recording_model, **inp)
  np.testing.assert_allclose(out, inp["latents"], atol=1e-5)  # equal branches: eq. 3 returns the common value
  np.testing.assert_array_equal(seen["camera"][:2 * B], 0.0)  # the all-zero Plücker map is the null camera
  np.testing.assert_array_equal(seen["camera"][2 * B:], inp["camera"])
  np.testing.assert_array_equal(seen["text"][:B], inp["null_text"])
  np.testing.assert_array_equal(seen["text"][B:2 * B], inp["text"])
  np.testing.assert_array_equal(seen["text"][2 * B:], inp["text"])
  np.testing.assert_array_equal(seen["latents"][B:2 * B], inp["latents"])
  assert seen["text_mask"] is None and "cond_mask" not in seen
  with pytest.raises(d.DiffusionError):
    d.camera_text_cfg(recording_model, **{**inp, "camera": None})


def test_text_cfg_matches_two_forwards():
  inp = _inputs(2)
  model = CountingModel()
  cond_mask = jnp.zeros((B, T, H, W, 1)).at[:, 0].set(1.0)
  null_single = inp["null_text"][:1]  # a single null embedding is broadcast over the batch
  guided = jax.jit(lambda kw: d.text_cfg(model, text=kw["text"], null_text=null_single, cfg_scale=5.0,
                                         text_mask=kw["text_mask"], latents=kw["latents"],
                                         timesteps=kw["timesteps"], camera=kw["camera"], cond_mask=cond_mask))(inp)
  assert model.calls == 1
  ref = jax.jit(CountingModel())
  null = jnp.broadcast_to(null_single, inp["text"].shape)
  args = (inp["latents"], inp["timesteps"])
  e_u = ref(*args, null, jnp.ones((B, L)), inp["camera"], cond_mask)  # missing null mask = all tokens valid
  e_c = ref(*args, inp["text"], inp["text_mask"], inp["camera"], cond_mask)
  np.testing.assert_allclose(guided, e_u + 5.0 * (e_c - e_u), atol=1e-5)
  np.testing.assert_allclose(d.cfg(e_c, e_u, 1.0), e_c, atol=1e-6)
  np.testing.assert_allclose(d.cfg(e_c, e_u, 0.0), e_u)


def test_batched_predictions_splits_in_order_and_validates():
  model = CountingModel()
  inp = _inputs(3)
  conds = [{"text": inp["text"], "camera": None}, {"text": inp["null_text"], "camera": None}]
  outs = jax.jit(lambda kw: d.batched_predictions(model, conds, latents=kw["latents"],
                                                  timesteps=kw["timesteps"]))(inp)
  assert model.calls == 1 and len(outs) == 2 and outs[0].shape == (B, T, H, W, C)
  np.testing.assert_allclose(outs[1], jax.jit(model)(inp["latents"], inp["timesteps"], inp["null_text"]), atol=1e-6)
  cases = [
      ([{"text": inp["text"], "camera": None}, {"text": inp["text"], "camera": inp["camera"]}], "None"),
      ([{"text": inp["text"]}, {"text": inp["text"], "camera": inp["camera"]}], "keys"),
      ([{"text": inp["text"]}, {"text": inp["text"][:, :3]}], "shapes"),
      ([{"text": inp["text"]}, {"text": inp["text"]}], "batch"),  # latents of another batch size below
      ([], "at least one"),
  ]
  for conditions, message in cases:
    lat = inp["latents"][:1] if message == "batch" else inp["latents"]
    with pytest.raises(d.DiffusionError, match=message):
      d.batched_predictions(model, conditions, latents=lat, timesteps=inp["timesteps"])
  with pytest.raises(d.DiffusionError, match="both"):
    d.batched_predictions(model, [{"text": inp["text"]}], text=inp["text"])


def _camera_text_sets(inp, null_camera=None):
  """CameraCtrl II eq. 3 as condition sets: [null text + null camera, text + null camera, text + camera]."""
  null_camera = jnp.zeros_like(inp["camera"]) if null_camera is None else null_camera
  null = {"text": inp["null_text"], "text_mask": inp["text_mask"], "camera": null_camera}
  return [null, {**null, "text": inp["text"]}, {**null, "text": inp["text"], "camera": inp["camera"]}]


def test_guided_denoiser_drives_euler_with_one_forward_per_step():
  inp = _inputs(4)
  model = CountingModel()
  obj = d.FlowMatching()
  sets = _camera_text_sets(inp)
  denoise = d.guided_denoiser(model, obj, sets, [3.0, 2.0])
  sigma = np.array([0.3, 0.8], np.float32)
  direct = jax.jit(lambda kw: d.camera_text_cfg(
      CountingModel(), text=kw["text"], null_text=kw["null_text"], camera=kw["camera"], text_mask=kw["text_mask"],
      null_text_mask=kw["text_mask"], w_text=3.0, w_cam=2.0, latents=kw["latents"],
      timesteps=np.array([300.0, 800.0], np.float32)))(inp)
  timesteps_seen = []
  probe = d.guided_denoiser(lambda **kw: (timesteps_seen.append(kw["timesteps"]), model(**kw))[1], obj, sets,
                            [3.0, 2.0])
  np.testing.assert_allclose(jax.jit(probe)(inp["latents"], sigma), direct, atol=1e-6)
  assert timesteps_seen[0].shape == (3 * B,)  # sigma * 1000, repeated for the three condition sets
  np.testing.assert_allclose(jax.jit(lambda s: obj.model_timesteps(s))(sigma), [300.0, 800.0], rtol=1e-6)
  model.calls = 0
  out = jax.jit(lambda x: d.euler(denoise, x, steps=4, shift=12.0))(inp["latents"])
  assert model.calls == 1  # traced once; each step is a single batched forward
  assert out.shape == inp["latents"].shape and np.all(np.isfinite(np.asarray(out)))
  # Text-only model: a two-set chain, camera None shared by both branches.
  text_only = d.guided_denoiser(model, obj, [{"text": inp["null_text"]}, {"text": inp["text"]}], [7.5], camera=None)
  jax.jit(text_only)(inp["latents"], sigma)
  assert model.last["camera"] is None and model.last["latents"].shape[0] == 2 * B
  # One set, no weights: the plain conditional prediction.
  plain = d.guided_denoiser(model, obj, [{"text": inp["text"]}])
  np.testing.assert_allclose(jax.jit(plain)(inp["latents"], sigma),
                             jax.jit(CountingModel())(inp["latents"], sigma * 1000.0, inp["text"]), atol=1e-6)
  for bad in (dict(weights=[1.0]), dict(latents=inp["latents"])):
    with pytest.raises(d.DiffusionError):
      d.guided_denoiser(model, obj, [{"text": inp["text"]}], **bad)


def test_guided_denoiser_converts_after_guidance_for_each_objective():
  """x-prediction flow: guidance on the network's x_0, then the velocity `(x_t - x_0) / sigma`; DDPM: unchanged."""
  inp = _inputs(5)
  model = CountingModel()
  sets = _camera_text_sets(inp)
  sigma = np.array([0.3, 0.8], np.float32)
  x = inp["latents"]
  for obj, level, timesteps in [(d.FlowMatching(prediction="sample"), sigma, sigma * 1000.0),
                                (d.FlowMatching(), sigma, sigma * 1000.0),
                                (d.DDPM(prediction="v"), np.array([250.0, 900.0], np.float32), [250.0, 900.0])]:
    got = jax.jit(d.guided_denoiser(model, obj, sets, [3.0, 2.0]))(x, level)
    guided = jax.jit(lambda: d.chain(model, sets, [3.0, 2.0], latents=x,
                                     timesteps=np.asarray(timesteps, np.float32)))()
    if obj.kind == "flow" and obj.prediction == "sample":
      expected = (x - guided) / sigma[:, None, None, None, None]
    else:
      expected = guided
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------- chain


def _set(seed, image=True):
  """A condition set with a pytree value: a dict of contexts and a (context, mask) tuple."""
  rs = np.random.default_rng(200 + seed)
  ctx = {"text": rs.standard_normal((B, L, D)).astype(np.float32)}
  if image:
    ctx["image"] = rs.standard_normal((B, 2, D)).astype(np.float32)
  return {"contexts": ctx, "extra": (rs.standard_normal((B, 3)).astype(np.float32), np.ones((B, 3), np.float32))}


class PytreeModel:
  """A nonlinear stand-in taking nested conditions; returns a dict output to check pytree outputs too."""

  def __init__(self):
    self.calls = 0

  def __call__(self, latents, timesteps, contexts, extra):
    self.calls += 1
    pooled = sum(jnp.mean(v, axis=1) for v in contexts.values())  # [B', D]
    ex, ex_mask = extra
    s = jnp.sum(pooled[:, :C], -1) + jnp.sum(ex * ex_mask, -1) + jnp.sin(timesteps / 300.0)
    return {"out": jnp.tanh(latents * s[:, None, None, None, None]), "aux": s}


@pytest.mark.parametrize("k", [2, 3, 4])
def test_chain_is_the_per_set_formula_in_one_forward(k):
  inp = _inputs(6)
  sets = [_set(i) for i in range(k)]
  weights = [1.5, -0.5, 3.0][:k - 1]
  model = PytreeModel()
  got = jax.jit(lambda: d.chain(model, sets, weights, latents=inp["latents"], timesteps=inp["timesteps"]))()
  assert model.calls == 1
  ref = jax.jit(PytreeModel())
  e = [ref(inp["latents"], inp["timesteps"], **c) for c in sets]
  for name in ("out", "aux"):
    expected = e[0][name] + sum(w * (e[j + 1][name] - e[j][name]) for j, w in enumerate(weights))
    np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(d.DiffusionError, match="weights"):
    d.chain(model, sets, weights + [1.0], latents=inp["latents"], timesteps=inp["timesteps"])


def test_batched_predictions_concatenates_pytrees_leafwise_and_validates():
  inp = _inputs(7)
  seen = {}

  def recording(**kw):
    seen.update(kw)
    return kw["latents"]

  sets = [_set(0), _set(1)]
  shared_ctx = {"pos": np.ones((B, 4), np.float32), "flag": True}
  d.batched_predictions(recording, sets, latents=inp["latents"], timesteps=inp["timesteps"], shared_ctx=shared_ctx)
  for j, c in enumerate(sets):
    np.testing.assert_array_equal(seen["contexts"]["image"][j * B:(j + 1) * B], c["contexts"]["image"])
    np.testing.assert_array_equal(seen["extra"][0][j * B:(j + 1) * B], c["extra"][0])
  assert isinstance(seen["extra"], tuple) and seen["shared_ctx"]["pos"].shape == (2 * B, 4)
  assert seen["shared_ctx"]["flag"] is True
  other = _set(2)
  cases = [
      ([sets[0], _set(1, image=False)], "structure"),
      ([sets[0], {**other, "extra": (other["extra"][0], None)}], "structure"),
      ([sets[0], {**other, "contexts": {**other["contexts"], "image": np.zeros((B, 3, D), np.float32)}}],
       r"contexts\['image'\].*shapes"),
      ([sets[0], {**other, "extra": (np.zeros((B, 3), np.float32), np.float32(1.0))}], "shapes"),
      ([sets[0], sets[0]["extra"]], "mapping"),
  ]
  for conditions, message in cases:
    with pytest.raises(d.DiffusionError, match=message):
      d.batched_predictions(recording, conditions, latents=inp["latents"], timesteps=inp["timesteps"])
  with pytest.raises(d.DiffusionError, match="batch"):
    d.batched_predictions(recording, sets, latents=inp["latents"][:1])
