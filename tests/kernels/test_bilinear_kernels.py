"""Every bilinear implementation against the plain-jnp reference: forward values and `jax.grad` w.r.t. every input.

One suite (`Suite`) is run per implementation (tokamax / jax Pallas style): "xla", and the Pallas kernels in interpret
mode on CPU ("pallas_triton" with `interpret=True`, "pallas_tpu" with `pltpu.InterpretParams`). The inputs cover odd
sizes, N and C not multiples of the blocks, points on pixel centres, on the border, half and far outside the grid,
many points in one cell, validity masks, per-point weights vs None, and normalize True / False.

The Triton scatter does one `atomic_add` per (track, corner) with a scalar row index, which interpret mode executes in
order, so duplicates are exact there too; `test_compiled_triton_atomics_with_heavy_duplicates` runs the compiled
kernel on a GPU (skipped elsewhere). Lowering tests check that the kernels at Track2View sizes lower to Triton IR for
CUDA and to Mosaic for TPU without either device.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax.kernels.bilinear import BilinearError, bilinear_sample, bilinear_scatter, reference
from camjax.kernels.bilinear import pallas_tpu, pallas_triton

H, W, C, B = 5, 7, 3, 2


def make_inputs(N=150, seed=0, dtype=np.float32):
  """Grid, coords (with the special cases), values, a validity mask and per-point weights."""
  rng = np.random.default_rng(seed)
  grid = rng.normal(size=(B, H, W, C)).astype(dtype)
  coords = np.stack([rng.uniform(-1.5, W + 1.5, (B, N)), rng.uniform(-1.5, H + 1.5, (B, N))], -1)
  special = [[0.5, 0.5], [W - 0.5, H - 0.5], [0.0, 2.5], [W, H], [0.0, 0.0], [W + 0.2, 1.3],  # centres, borders
             [-3.0, 2.0], [3.0, H + 4.0],  # far outside
             [2.3, 1.7], [2.3, 1.7], [2.3, 1.7], [2.3, 1.7], [2.31, 1.62], [2.4, 1.9], [2.2, 1.55]]  # one cell
  coords[:, :len(special)] = special
  crowd = min(30, N - len(special))
  coords[:, len(special):len(special) + crowd] = rng.uniform([3.0, 2.0], [4.0, 3.0], (B, crowd, 2))  # a crowded cell
  values = rng.normal(size=(B, N, C)).astype(dtype)
  valid = rng.uniform(size=(B, N)) > 0.2
  weights = (rng.uniform(0.2, 1.5, size=(B, N)) * valid).astype(dtype)
  return grid, coords.astype(dtype), values, valid, weights


def assert_close(actual, expected, atol, what):
  np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), atol=atol,
                             rtol=atol, err_msg=what)


class Suite:
  implementation = "xla"
  options: dict = {}

  def sample(self, *args, **kw):
    return bilinear_sample(*args, implementation=self.implementation, **self.options, **kw)

  def scatter(self, *args, **kw):
    return bilinear_scatter(*args, implementation=self.implementation, **self.options, **kw)

  def test_sample_values_and_grads_wrt_grid_and_coords(self):
    grid, coords, _, valid, _ = make_inputs()
    cot = np.random.default_rng(1).normal(size=coords.shape[:2] + (C,)).astype(np.float32)

    def loss(fn):
      return lambda g, c: jnp.sum(fn(g, c, valid) * cot)

    value, grads = jax.jit(jax.value_and_grad(loss(self.sample), argnums=(0, 1)))(grid, coords)
    ref_value, ref_grads = jax.value_and_grad(loss(reference.bilinear_sample), argnums=(0, 1))(grid, coords)
    assert_close(value, ref_value, 1e-4, "loss")
    assert_close(grads[0], ref_grads[0], 1e-4, "d grid")
    assert_close(grads[1], ref_grads[1], 1e-4, "d coords")
    out = jax.jit(self.sample)(grid, coords, valid)
    assert_close(out, reference.bilinear_sample(grid, coords, valid), 1e-5, "sample")
    assert float(np.abs(np.asarray(grads[1])).max()) > 0  # the coordinate gradient is really there

  @pytest.mark.parametrize("use_weights,normalize", [(True, True), (False, False)])
  def test_scatter_values_and_grads_wrt_values_coords_and_weights(self, use_weights, normalize):
    _, coords, values, _, weights = make_inputs(seed=2)
    weights = weights if use_weights else None
    cot = np.random.default_rng(3).normal(size=(B, H, W, C)).astype(np.float32)
    cot_w = np.random.default_rng(4).normal(size=(B, H, W)).astype(np.float32)

    def loss(fn):
      def f(v, c, wts):
        grid, weight_map = fn(v, c, wts, height=H, width=W, normalize=normalize)
        return jnp.sum(grid * cot) + jnp.sum(weight_map * cot_w)
      return f

    argnums = (0, 1, 2) if use_weights else (0, 1)
    value, grads = jax.jit(jax.value_and_grad(loss(self.scatter), argnums=argnums))(values, coords, weights)
    ref_value, ref_grads = jax.value_and_grad(loss(reference.bilinear_scatter), argnums=argnums)(
        values, coords, weights)
    assert_close(value, ref_value, 1e-4, "loss")
    for name, g, r in zip(("d values", "d coords", "d weights"), grads, ref_grads):
      assert_close(g, r, 1e-4, name)
    grid, weight_map = jax.jit(lambda v, c, w: self.scatter(v, c, w, height=H, width=W, normalize=normalize))(
        values, coords, weights)
    ref_grid, ref_map = reference.bilinear_scatter(values, coords, weights, height=H, width=W, normalize=normalize)
    assert_close(grid, ref_grid, 1e-5, "scatter")
    assert_close(weight_map, ref_map, 1e-5, "weight map")
    assert float(np.asarray(ref_map).max()) > 8  # the crowded cell really collected many contributions

  def test_bfloat16_and_vmap(self):
    grid, coords, values, valid, weights = make_inputs(N=40, seed=5)
    g16, v16 = jnp.asarray(grid, jnp.bfloat16), jnp.asarray(values, jnp.bfloat16)
    out = jax.jit(self.sample)(g16, coords, valid)
    assert out.dtype == jnp.bfloat16
    assert_close(out, reference.bilinear_sample(grid, coords, valid), 3e-2, "bf16 sample")
    scattered, weight_map = jax.jit(lambda v, c, w: self.scatter(v, c, w, height=H, width=W))(v16, coords, weights)
    assert scattered.dtype == jnp.bfloat16 and weight_map.dtype == jnp.float32
    assert_close(scattered, reference.bilinear_scatter(values, coords, weights, height=H, width=W)[0], 3e-2,
                 "bf16 scatter")
    per_example = jax.jit(jax.vmap(lambda g, c, m: self.sample(g[None], c[None], m[None])[0]))(grid, coords, valid)
    assert_close(per_example, reference.bilinear_sample(grid, coords, valid), 1e-5, "vmap sample")


class TestXla(Suite):
  implementation = "xla"


class TestPallasTritonInterpret(Suite):
  implementation = "pallas_triton"
  options = dict(interpret=True, block_n=32, block_c=2)  # N=150 -> 5 blocks (padded); C=3 -> 2 blocks (padded)


class TestPallasTpuInterpret(Suite):
  implementation = "pallas_tpu"
  options = dict(interpret=True, block_m=16)  # N=150 -> 2 blocks of 128; M=35 -> 3 blocks of 16; C padded to 128


def test_default_implementation_and_named_errors():
  from camjax.kernels.bilinear import default_implementation
  assert default_implementation("cpu") == "xla"
  assert default_implementation("gpu") == "pallas_triton"
  assert default_implementation("tpu") == "pallas_tpu"
  grid, coords, values, valid, _ = make_inputs(N=20)
  with pytest.raises(BilinearError, match="unknown implementation"):
    bilinear_sample(grid, coords, implementation="cuda")
  with pytest.raises(BilinearError, match="coords must be"):
    bilinear_sample(grid, coords[..., :1])
  with pytest.raises(BilinearError, match="valid must be"):
    bilinear_sample(grid, coords, valid[:, :2])
  with pytest.raises(BilinearError, match="grid must be"):
    bilinear_sample(grid[0], coords)
  with pytest.raises(BilinearError, match="unknown block sizes"):
    bilinear_sample(grid, coords, implementation="pallas_triton", block_m=16)
  with pytest.raises(BilinearError, match="height and width"):
    bilinear_scatter(values, coords, height=0, width=W)
  with pytest.raises(BilinearError, match="weights must be"):
    bilinear_scatter(values, coords, valid[:, :1], height=H, width=W)


@pytest.mark.parametrize("module,platform,marker", [(pallas_triton, "cuda", "xla.gpu.triton"),
                                                    (pallas_tpu, "tpu", "tpu_custom_call")])
def test_kernels_lower_for_their_device_at_track2view_sizes(module, platform, marker):
  """Lowering (not compiling) needs no device: it checks block shapes, power-of-two loads, and that every op used in
  the kernels has a Triton / Mosaic lowering at B x T = 2 frames, N = 1152, grid 60 x 104, C = 1536, bf16."""
  M, N, Cb = 60 * 104, 1152, 1536
  table = jax.ShapeDtypeStruct((2, M, Cb), jnp.bfloat16)
  tracks = jax.ShapeDtypeStruct((2, N, Cb), jnp.bfloat16)
  idx = jax.ShapeDtypeStruct((2, N, 4), jnp.int32)
  w = jax.ShapeDtypeStruct((2, N, 4), jnp.float32)
  for fn, args in [(lambda t, i, w: module.gather(t, i, w, jnp.bfloat16), (table, idx, w)),
                   (lambda v, i, w: module.scatter(v, i, w, M), (tracks, idx, w)),
                   (lambda t, i, u: module.corner_dot(t, i, u), (table, idx, tracks))]:
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
    assert text.count(marker) == 1


@pytest.mark.parametrize("implementation,platform", [("pallas_triton", "cuda"), ("pallas_tpu", "tpu")])
def test_compiled_kernels_inside_shard_map_lower_with_grads(implementation, platform):
  """The compiled (non-interpreted) path inside `shard_map` with `check_vma=True`, features sharded over the batch
  and coordinates replicated: forward + `jax.grad` lower for the kernel's device (over an abstract 2-way mesh)."""
  mesh = jax.sharding.AbstractMesh((2,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
  P = jax.sharding.PartitionSpec

  def step(g, c):
    out = bilinear_sample(g, c, implementation=implementation, interpret=False)
    back, _ = bilinear_scatter(out, c, height=60, width=104, implementation=implementation, interpret=False)
    return out, back

  def loss(g, c):
    out, back = jax.shard_map(step, mesh=mesh, in_specs=(P("batch"), P()), out_specs=(P("batch"), P("batch")))(g, c)
    return jnp.sum(out.astype(jnp.float32)) + jnp.sum(back.astype(jnp.float32))

  g = jax.ShapeDtypeStruct((4, 60, 104, 256), jnp.bfloat16)
  c = jax.ShapeDtypeStruct((2, 1152, 2), jnp.float32)
  with jax.sharding.use_abstract_mesh(mesh):
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(g, c).lower(lowering_platforms=(platform,)).as_text()
  assert text.count("custom_call") >= 5  # sample, scatter and the backward kernels


def test_inside_shard_map_over_the_batch_axis():
  """Two fake CPU devices in a fresh process (the device count is fixed when jax starts): each shard runs on its
  local frames and values and gradients match the reference on the whole batch. Interpret mode needs
  `check_vma=False` (JAX's HLO interpreter does not track varying mesh axes); the compiled path is checked above."""
  script = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      from jax.sharding import AxisType, PartitionSpec as P
      from camjax.kernels.bilinear import bilinear_sample, bilinear_scatter, reference
      assert jax.device_count() == 2
      mesh = jax.make_mesh((2,), ("batch",), axis_types=(AxisType.Auto,))
      rng = np.random.default_rng(0)
      grid = rng.normal(size=(4, 5, 7, 3)).astype(np.float32)
      coords = np.stack([rng.uniform(-1, 8, (4, 9)), rng.uniform(-1, 6, (4, 9))], -1).astype(np.float32)

      def loss(sample, scatter, sharded):
        def step(g, c):
          out = sample(g, c)
          return out, scatter(out, c, height=5, width=7)[0]
        if sharded:
          step = jax.shard_map(step, mesh=mesh, in_specs=(P("batch"), P("batch")), out_specs=(P("batch"), P("batch")),
                               check_vma=sharded == "xla")
        def f(g, c):
          out, back = step(g, c)
          return jnp.sum(out * jnp.cos(out)) + jnp.sum(back ** 2)
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

      ref = loss(reference.bilinear_sample, reference.bilinear_scatter, None)(grid, coords)
      for impl, kw in (("xla", {}), ("pallas_triton", dict(interpret=True, block_n=4, block_c=2))):
        sample = lambda g, c: bilinear_sample(g, c, implementation=impl, **kw)
        scatter = lambda v, c, **a: bilinear_scatter(v, c, implementation=impl, **kw, **a)
        got = loss(sample, scatter, impl)(grid, coords)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
          np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)
      print("SHARD_MAP_OK")
  """)
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
  assert "SHARD_MAP_OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="compiled Triton atomics need a GPU (CPU interpret mode "
                    "runs the same kernel code in order, see the suite above)")
def test_compiled_triton_atomics_with_heavy_duplicates():
  rng = np.random.default_rng(0)
  Bg, Hg, Wg, Cg, Ng = 3, 12, 20, 96, 2000
  values = rng.normal(size=(Bg, Ng, Cg)).astype(np.float32)
  coords = np.stack([rng.uniform(-1, Wg + 1, (Bg, Ng)), rng.uniform(-1, Hg + 1, (Bg, Ng))], -1).astype(np.float32)
  coords[:, : Ng // 2] = [5.5, 4.5]  # half of all tracks on one pixel centre
  coords[:, Ng // 2: 3 * Ng // 4] = rng.uniform([7.0, 2.0], [8.0, 3.0], (Bg, Ng // 4, 2))  # a quarter in one cell
  weights = (rng.uniform(size=(Bg, Ng)) > 0.1).astype(np.float32)

  def loss(fn, v, c, w):
    grid, weight_map = fn(v, c, w, height=Hg, width=Wg)
    return jnp.sum(grid * jnp.cos(grid)) + jnp.sum(weight_map)

  run = lambda v, c, w: bilinear_scatter(v, c, w, height=Hg, width=Wg, implementation="pallas_triton")
  grid, weight_map = jax.jit(run)(values, coords, weights)
  ref_grid, ref_map = reference.bilinear_scatter(values, coords, weights, height=Hg, width=Wg)
  assert_close(grid, ref_grid, 1e-4, "scatter")
  assert_close(weight_map, ref_map, 1e-3, "weight map")
  grads = jax.jit(jax.grad(lambda v, c, w: loss(lambda *a, **k: bilinear_scatter(
      *a, implementation="pallas_triton", **k), v, c, w), argnums=(0, 1, 2)))(values, coords, weights)
  ref_grads = jax.grad(lambda v, c, w: loss(reference.bilinear_scatter, v, c, w), argnums=(0, 1, 2))(
      values, coords, weights)
  for name, g, r in zip(("d values", "d coords", "d weights"), grads, ref_grads):
    assert_close(g, r, 1e-3, name)
  grid_in = rng.normal(size=(Bg, Hg, Wg, Cg)).astype(np.float32)
  g_sample = jax.jit(jax.grad(lambda g, c: jnp.sum(jnp.sin(bilinear_sample(g, c, implementation="pallas_triton"))),
                              argnums=(0, 1)))(grid_in, coords)
  r_sample = jax.grad(lambda g, c: jnp.sum(jnp.sin(reference.bilinear_sample(g, c))), argnums=(0, 1))(grid_in, coords)
  assert_close(g_sample[0], r_sample[0], 1e-3, "d grid (duplicate-heavy atomic transpose)")
  assert_close(g_sample[1], r_sample[1], 1e-3, "d coords")
