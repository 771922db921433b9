"""Track2View dual-view track conditioner: shapes, zero init, scatter footprint, masking, kernel parity, disparity
normalisation, augmentations and frame subsampling (toy sizes)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax import sharding
from camjax.conditioning.tracks import (TrackConditioner, TrackConditionerConfig, TrackError, augment_tracks,
                                        drop_source_frames, fourier_features, joint_disparity, subsample_tracks,
                                        video_to_token_coords)

B, N, T, H, W, D = 2, 7, 3, 4, 5, 16
CONFIG = TrackConditionerConfig(dim=D, num_fourier=3, mlp_hidden=32, num_layers=1, num_heads=2)
COT = jax.random.normal(jax.random.key(2), (2, B, T * H * W, D))  # cotangent of the stacked (source, target) maps


def make_inputs(seed=0):
  """Tokens, positions (some on the border and half outside), depths, validity with a dead track and a dropped
  source frame of sample 0."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(B, T, H, W, D)).astype(np.float32)
  p_src = np.stack([rng.uniform(-0.4, W + 0.4, (B, N, T)), rng.uniform(-0.4, H + 0.4, (B, N, T))], -1)
  p_tgt = np.stack([rng.uniform(-0.4, W + 0.4, (B, N, T)), rng.uniform(-0.4, H + 0.4, (B, N, T))], -1)
  p_tgt[0, 0, 0] = [0.5, 0.5]  # on a cell centre
  d_src, d_tgt = rng.uniform(1.0, 6.0, (B, N, T)), rng.uniform(1.0, 6.0, (B, N, T))
  v_src, v_tgt = rng.uniform(size=(B, N, T)) < 0.75, rng.uniform(size=(B, N, T)) < 0.6
  v_src[0, 1, :] = False  # never seen in the source, seen in the target
  v_tgt[0, 1, :] = True
  v_src[1, 2, :] = v_tgt[1, 2, :] = False  # a dead track
  v_src[0, :, 2] = False  # a dropped source frame
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return dict(z_src=f32(z), p_src=f32(p_src), p_tgt=f32(p_tgt), d_src=f32(d_src), d_tgt=f32(d_tgt),
              v_src=jnp.asarray(v_src), v_tgt=jnp.asarray(v_tgt))


def call(params, graphdef, inputs, **kernel):
  model = nnx.merge(graphdef, params)
  return model(inputs["z_src"], inputs["p_src"], inputs["p_tgt"], inputs["d_src"], inputs["d_tgt"], inputs["v_src"],
               inputs["v_tgt"], **kernel)


@pytest.fixture(scope="module")
def model():
  return TrackConditioner(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def trained():
  """A model with random output projections (as after training), split: `(graphdef, params)`."""
  graphdef, params = nnx.split(TrackConditioner(CONFIG, rngs=nnx.Rngs(0)))
  keys = iter(jax.random.split(jax.random.key(1), 2))
  for name in ("source_out", "target_out"):
    params[name]["kernel"].set_value(jax.random.normal(next(keys), (D, D)) * 0.3)
  return graphdef, params


@functools.lru_cache(maxsize=None)
def _jitted(graphdef, what, kernel_items):
  """One compiled function per (model structure, purpose, kernel options), shared by the tests."""
  kernel = {k: dict(v) if isinstance(v, tuple) else v for k, v in kernel_items}
  if what == "maps":
    return jax.jit(lambda p, x: call(p, graphdef, x, **kernel))

  def loss(p, x, cot):  # value, maps, d/d params and d/d z_src
    maps = call(p, graphdef, x, **kernel)
    return jnp.sum(jnp.stack(maps) * cot), maps

  grad = jax.value_and_grad(lambda p, z, x, cot: loss(p, {**x, "z_src": z}, cot), argnums=(0, 1), has_aux=True)
  return jax.jit(grad)


def _key(kernel):
  return tuple(sorted((k, tuple(sorted(v.items())) if isinstance(v, dict) else v) for k, v in kernel.items()))


def run(trained, inputs, **kernel):
  graphdef, params = trained
  return _jitted(graphdef, "maps", _key(kernel))(params, inputs)


def value_and_grads(trained, inputs, cot, **kernel):
  """`((loss, maps), (d params, d z_src))` of `sum(stack(maps) * cot)`."""
  graphdef, params = trained
  return _jitted(graphdef, "grad", _key(kernel))(params, inputs["z_src"], inputs, cot)


def footprint(p, v):
  """`[B, T, H, W]` accumulated bilinear weight of the valid points, computed cell by cell (independent of the
  kernels): `(1 - |dx|)(1 - |dy|)` for cell centres within one cell of a point."""
  p, v = np.asarray(p, np.float64), np.asarray(v)
  cy, cx = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
  dx = np.abs(p[..., 0][..., None, None] - cx)  # [B, N, T, H, W]
  dy = np.abs(p[..., 1][..., None, None] - cy)
  w = np.clip(1 - dx, 0, None) * np.clip(1 - dy, 0, None) * v[..., None, None]
  return w.sum(axis=1)


def test_shapes_zero_init_and_gradients_reach_the_output_projections(model):
  inputs = make_inputs()
  (_, maps), (grads, _) = value_and_grads(nnx.split(model), inputs, COT)
  assert maps.source.shape == maps.target.shape == (B, T * H * W, D)
  assert maps.concatenated().shape == (B, 2 * T * H * W, D)
  assert float(jnp.abs(maps.source).max()) == 0.0 and float(jnp.abs(maps.target).max()) == 0.0
  for name in ("source_out", "target_out"):
    assert float(jnp.abs(grads[name]["kernel"][...]).max()) > 1e-3, name
  # With zero output projections nothing upstream moves yet.
  assert float(jnp.abs(grads["position_proj"]["kernel"][...]).max()) == 0.0


def test_parameters_carry_known_logical_names(model):
  known = {name for name, _ in sharding.PARAM_RULES}
  params = nnx.state(model, nnx.Param)
  leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  assert len(leaves) > 10
  for leaf in leaves:
    names = sharding.variable_names(leaf)
    assert names is not None and len(names) == leaf.ndim
    assert set(names) - {None} <= known, names


def test_maps_are_nonzero_exactly_on_the_bilinear_footprint_of_valid_tracks(trained):
  inputs = make_inputs()
  (_, maps), (_, grad) = value_and_grads(trained, inputs, COT)
  for got, p, v in ((maps.target, inputs["p_tgt"], inputs["v_tgt"]), (maps.source, inputs["p_src"], inputs["v_src"])):
    weight = footprint(p, v)  # [B, T, H, W]
    nonzero = np.abs(np.asarray(got)).reshape(B, T, H, W, D).max(-1) > 0
    assert not np.any(nonzero & (weight == 0)), "a cell no valid track reaches is nonzero"
    assert np.all(nonzero[weight > 1e-4]), "a reached cell is zero"
    assert 0 < nonzero.sum() < nonzero.size
  # The dropped source frame of sample 0 gives an empty source map but a full target frame.
  assert float(jnp.abs(maps.source.reshape(B, T, H * W, D)[0, 2]).max()) == 0.0
  assert float(jnp.abs(maps.target.reshape(B, T, H * W, D)[0, 2]).max()) > 0.0

  # z_src is read only around valid source points: its gradient lives on their footprint.
  read = np.abs(np.asarray(grad)).max(-1) > 0
  weight = footprint(inputs["p_src"], inputs["v_src"])
  assert not np.any(read & (weight == 0)) and np.all(read[weight > 1e-4])


def test_inputs_at_invalid_entries_do_not_change_the_outputs(trained):
  inputs = make_inputs()
  maps = run(trained, inputs)
  bad = dict(inputs)
  for view in ("src", "tgt"):
    invalid = ~inputs[f"v_{view}"]
    bad[f"p_{view}"] = jnp.where(invalid[..., None], jnp.nan, inputs[f"p_{view}"])
    bad[f"d_{view}"] = jnp.where(invalid, jnp.where(jnp.arange(T) % 2 == 0, jnp.nan, -3.0), inputs[f"d_{view}"])
  bad["z_src"] = inputs["z_src"].at[0, 2].set(1e6)  # the dropped source frame of sample 0
  got = run(trained, bad)
  for a, b in zip(got, maps):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Gradients too (NaN there must not leak into a backward pass through where / the kernels).
  with_bad, with_good = value_and_grads(trained, bad, COT), value_and_grads(trained, inputs, COT)
  for a, b in zip(jax.tree.leaves(with_bad), jax.tree.leaves(with_good)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # ... while a valid entry does (the test can fail).
  moved = run(trained, {**inputs, "p_src": inputs["p_src"].at[0, 0].add(0.3), "z_src": inputs["z_src"] * 1.5})
  assert float(jnp.abs(moved.target - maps.target).max()) > 1e-4


def test_hidden_source_frames_are_zeroed_and_masked_out_of_the_temporal_attention(trained):
  """Sample 0 sees no track at source frame 2, so (with frame 2's depths far away, leaving the disparity scale to
  frames 0-1) its maps on frames 0-1 must equal those of the same clip cut to frames 0-1: frame 2 is no key."""
  graphdef, params = trained
  inputs = make_inputs()
  inputs = {**inputs, "d_src": inputs["d_src"].at[:, :, 2].set(100.0), "d_tgt": inputs["d_tgt"].at[:, :, 2].set(100.0)}
  full = run(trained, inputs)
  cut = run(trained, {k: v[:, :2] if k == "z_src" else v[:, :, :2] for k, v in inputs.items()})
  for a, b in zip(full, cut):
    a = np.asarray(a).reshape(B, T, H * W, D)[0, :2]
    np.testing.assert_allclose(a, np.asarray(b).reshape(B, 2, H * W, D)[0], rtol=1e-5, atol=1e-6)
    assert np.abs(a).max() > 0
  # Step 1 output is exactly zero where the source is invalid.
  feats = nnx.merge(graphdef, params)._source_features(inputs["z_src"], inputs["p_src"], inputs["v_src"],
                                                       dict(implementation="xla"))
  assert np.all(np.asarray(feats)[~np.asarray(inputs["v_src"])] == 0)
  assert np.all(np.abs(np.asarray(feats)[np.asarray(inputs["v_src"])]).max(-1) > 0)


def test_all_invalid_tracks_give_zero_maps_and_finite_gradients(trained):
  inputs = make_inputs()
  inputs = {**inputs, "v_src": jnp.zeros((B, N, T), bool), "v_tgt": jnp.zeros((B, N, T), bool)}
  (_, maps), grads = value_and_grads(trained, inputs, COT)
  assert np.all(np.asarray(maps.source) == 0) and np.all(np.asarray(maps.target) == 0)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # Only the source view dead: the target map is finite and nonzero, and so are the gradients.
  (_, maps), grads = value_and_grads(trained, {**inputs, "v_tgt": make_inputs()["v_tgt"]}, COT)
  assert np.all(np.isfinite(maps.target)) and float(jnp.abs(maps.target).max()) > 0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("implementation,blocks", [("pallas_triton", dict(block_n=4, block_c=8)),
                                                   ("pallas_tpu", dict(block_m=16))])
def test_pallas_kernels_in_interpret_mode_match_xla_with_gradients(trained, implementation, blocks):
  inputs = make_inputs(seed=3)
  (ref_value, ref_maps), (ref_dp, ref_dz) = value_and_grads(trained, inputs, COT, implementation="xla")
  (value, maps), (dp, dz) = value_and_grads(trained, inputs, COT, implementation=implementation, interpret=True,
                                            blocks=blocks)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5)
  for a, b in zip(maps, ref_maps):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dz, ref_dz, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(ref_dz).max()) > 0
  flat, ref_flat = jax.tree.leaves(dp), jax.tree.leaves(ref_dp)
  assert len(flat) == len(ref_flat) > 10
  for g, r in zip(flat, ref_flat):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(ref_dp["position_proj"]["kernel"][...]).max()) > 0  # the sample path is differentiated


def test_disparity_is_normalised_jointly_over_both_views(trained):
  inputs = make_inputs()
  maps = run(trained, inputs)
  scaled = run(trained, {**inputs, "d_src": inputs["d_src"] * 3.7, "d_tgt": inputs["d_tgt"] * 3.7})
  for a, b in zip(scaled, maps):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  # Scaling ONE view changes the relative scale: per-view normalisation would leave the target map unchanged.
  closer = run(trained, {**inputs, "d_tgt": inputs["d_tgt"] * 0.25})
  assert float(jnp.abs(closer.target - maps.target).max()) > 1e-3
  disp_src, disp_tgt = joint_disparity(inputs["d_src"], inputs["d_tgt"], inputs["v_src"], inputs["v_tgt"])
  top = jnp.maximum(disp_src.max(axis=(1, 2)), disp_tgt.max(axis=(1, 2)))
  np.testing.assert_allclose(top, 1.0, rtol=1e-6)
  assert float(disp_src.min()) >= 0 and np.all(np.asarray(disp_tgt)[~np.asarray(inputs["v_tgt"])] == 0)


def test_fourier_features_layout():
  u = jnp.array([[0.25, -0.5]])
  f = fourier_features(u, 3)
  assert f.shape == (1, 12)
  np.testing.assert_allclose(f[0, :6], [np.sin(np.pi * 0.25), np.sin(np.pi * 0.5), np.sin(np.pi), np.cos(np.pi * 0.25),
                                        np.cos(np.pi * 0.5), np.cos(np.pi)], atol=1e-6)


def test_augment_tracks_keeps_half_to_all_of_the_valid_tracks():
  rng = np.random.default_rng(0)
  valid = jnp.asarray(rng.uniform(size=(256, 40, T)) < 0.5)
  out = np.asarray(augment_tracks(jax.random.key(0), valid))
  valid = np.asarray(valid)
  assert out.shape == valid.shape and not np.any(out & ~valid)
  kept_track = out.any(-1)
  np.testing.assert_array_equal(out, valid & kept_track[..., None])  # a kept track keeps all its frames
  fraction = kept_track.sum(-1) / valid.any(-1).sum(-1)
  assert fraction.min() >= 0.5 and fraction.max() <= 1.0
  assert fraction.min() < 0.55 and fraction.max() > 0.95  # the whole range is used
  # Stacked views lose the same tracks.
  v2 = jnp.stack([jnp.asarray(valid), jnp.asarray(rng.uniform(size=valid.shape) < 0.5)], -1)
  both = np.asarray(augment_tracks(jax.random.key(1), v2))
  np.testing.assert_array_equal(both.any((-1, -2)), both[..., 0].any(-1) | both[..., 1].any(-1))
  gone = ~both.any((-1, -2)) & np.asarray(v2).any((-1, -2))
  assert gone.any() and not both[gone].any()
  with pytest.raises(TrackError, match="keep_min"):
    augment_tracks(jax.random.key(0), valid, keep_min=0.8, keep_max=0.5)


def test_drop_source_frames_drops_up_to_half():
  keep = np.asarray(drop_source_frames(jax.random.key(0), 21, batch=512))
  assert keep.shape == (512, 21) and keep.dtype == bool
  dropped = (~keep).sum(-1)
  assert dropped.min() == 0 and dropped.max() == 10
  assert len(np.unique(np.argmin(keep, -1)[dropped > 0])) > 10  # different frames are dropped
  assert np.asarray(drop_source_frames(jax.random.key(0), 7, max_fraction=0.0, batch=4)).all()


def test_subsample_tracks_picks_every_temporal_factor_th_frame():
  p = jnp.arange(2 * 3 * 9 * 2, dtype=jnp.float32).reshape(2, 3, 9, 2)
  v = jnp.arange(2 * 3 * 9).reshape(2, 3, 9) % 2 == 0
  out = subsample_tracks({"p": p, "v": v}, 4)
  np.testing.assert_array_equal(out["p"], p[:, :, [0, 4, 8]])
  np.testing.assert_array_equal(out["v"], v[:, :, [0, 4, 8]])
  np.testing.assert_array_equal(subsample_tracks(p, 1), p)
  with pytest.raises(TrackError, match="1 \\+ 4k"):
    subsample_tracks(p[:, :, :8], 4)
  with pytest.raises(TrackError, match="different frame counts"):
    subsample_tracks({"p": p, "v": v[:, :, :5]}, 4)


def test_video_to_token_coords_maps_patch_centres_to_cell_centres():
  # A 64 x 80 video on a 4 x 5 token grid (16 pixels per token): the centre of token (1, 2) is video pixel (40, 24).
  got = video_to_token_coords(jnp.array([[40.0, 24.0], [0.0, 0.0], [80.0, 64.0]]), (64, 80), (4, 5))
  np.testing.assert_allclose(got, [[2.5, 1.5], [0, 0], [5, 4]])


def test_bad_inputs_raise(model):
  x = make_inputs()
  with pytest.raises(TrackError, match="v_tgt"):
    model(x["z_src"], x["p_src"], x["p_tgt"], x["d_src"], x["d_tgt"], x["v_src"], x["v_tgt"][:, :, :2])
  with pytest.raises(TrackError, match="z_src"):
    model(x["z_src"][..., :8], x["p_src"], x["p_tgt"], x["d_src"], x["d_tgt"], x["v_src"], x["v_tgt"])
  with pytest.raises(TrackError, match="num_heads"):
    TrackConditioner(CONFIG.replace(num_heads=3), rngs=nnx.Rngs(0))
