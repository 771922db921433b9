"""The bilinear reference: against a naive per-point loop, the transpose identity, borders, duplicates, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from camjax.kernels.bilinear.reference import bilinear_sample, bilinear_scatter


def naive_sample(grid, coords):
  B, H, W, C = grid.shape
  out = np.zeros(coords.shape[:2] + (C,))
  for b in range(B):
    for n, (x, y) in enumerate(coords[b]):
      gx, gy = x - 0.5, y - 0.5
      x0, y0 = int(np.floor(gx)), int(np.floor(gy))
      for dx in (0, 1):
        for dy in (0, 1):
          xi, yi = x0 + dx, y0 + dy
          if 0 <= xi < W and 0 <= yi < H:
            w = (1 - abs(gx - xi)) * (1 - abs(gy - yi))
            out[b, n] += w * grid[b, yi, xi]
  return out


def inputs(B=2, H=5, W=7, C=3, N=40, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  grid = rng.normal(size=(B, H, W, C)).astype(dtype)
  coords = np.stack([rng.uniform(-1.5, W + 1.5, (B, N)), rng.uniform(-1.5, H + 1.5, (B, N))], -1).astype(dtype)
  coords[:, :4] = [[0.5, 0.5], [W - 0.5, H - 0.5], [0.0, 2.5], [W, H]]  # centres, border, half outside
  values = rng.normal(size=(B, N, C)).astype(dtype)
  return grid, coords, values


def test_sample_matches_a_naive_loop_and_reads_pixel_centres_exactly():
  grid, coords, _ = inputs()
  np.testing.assert_allclose(np.asarray(bilinear_sample(grid, coords)), naive_sample(grid, coords), atol=1e-5)
  np.testing.assert_allclose(np.asarray(bilinear_sample(grid, coords))[:, 0], grid[:, 0, 0], atol=1e-6)
  # Half a pixel outside the left border: half of the border pixel.
  np.testing.assert_allclose(np.asarray(bilinear_sample(grid, coords))[:, 2], 0.5 * grid[:, 2, 0], atol=1e-6)
  # Far outside: zeros; invalid points: zeros.
  far = bilinear_sample(grid, np.full((2, 1, 2), -3.0, np.float32))
  np.testing.assert_array_equal(np.asarray(far), 0)
  masked = bilinear_sample(grid, coords, valid=np.zeros(coords.shape[:2], bool))
  np.testing.assert_array_equal(np.asarray(masked), 0)


def test_scatter_is_the_transpose_of_sample():
  grid, coords, values = inputs(dtype=np.float64)
  with jax.enable_x64(True):
    lhs = np.sum(np.asarray(bilinear_sample(grid, coords)) * values)
    scattered, _ = bilinear_scatter(values, coords, height=5, width=7, normalize=False)
    rhs = np.sum(grid * np.asarray(scattered))
  assert lhs == pytest.approx(rhs, rel=1e-12)


def test_normalised_scatter_averages_duplicates_in_one_cell():
  values = np.arange(12, dtype=np.float32).reshape(1, 4, 3)
  coords = np.full((1, 4, 2), 2.5, np.float32)  # all four points on the centre of pixel (2, 2)
  grid, weight = bilinear_scatter(values, coords, height=4, width=4)
  np.testing.assert_allclose(np.asarray(grid)[0, 2, 2], values[0].mean(0), atol=1e-6)
  assert float(weight[0, 2, 2]) == pytest.approx(4.0)
  assert float(np.abs(np.asarray(grid)).sum()) == pytest.approx(float(np.abs(values[0].mean(0)).sum()))
  weights = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
  only_first, _ = bilinear_scatter(values, coords, weights, height=4, width=4)
  np.testing.assert_allclose(np.asarray(only_first)[0, 2, 2], values[0, 0], atol=1e-6)


def test_jit_vmap_and_bf16():
  grid, coords, values = inputs()
  out = jax.jit(bilinear_sample)(jnp.asarray(grid, jnp.bfloat16), coords)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), naive_sample(grid, coords), atol=0.05)
  per_example = jax.vmap(lambda g, c: bilinear_sample(g[None], c[None])[0])(grid, coords)
  np.testing.assert_allclose(np.asarray(per_example), naive_sample(grid, coords), atol=1e-5)
  scattered = jax.jit(lambda v, c: bilinear_scatter(v, c, height=5, width=7)[0])(values, coords)
  assert scattered.shape == (2, 5, 7, 3)


def test_gradients_in_float64_wrt_grid_values_and_coordinates():
  grid, coords, values = inputs(N=12, seed=3, dtype=np.float64)
  coords = coords[:, 4:]  # keep away from exact pixel-centre kinks
  with jax.enable_x64(True):
    check_grads(lambda g, c: bilinear_sample(g, c), (grid, coords), order=1, modes=("rev", "fwd"), eps=1e-6)
    check_grads(lambda v, c: bilinear_scatter(v, c, height=5, width=7)[0], (values[:, 4:], coords), order=1,
                modes=("rev",), eps=1e-6)
