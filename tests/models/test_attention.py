"""`xla_attention`'s hand-written VJP against
autodiff of `jax.nn.dot_product_attention` (the "reference" implementation), and the flat `matmul` of `Dense`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax.models.layers import ModelError, attention, matmul


def _inputs(dtype, n=24, s=10):
  ks = jax.random.split(jax.random.key(0), 4)
  q = 3.0 * jax.random.normal(ks[0], (2, n, 3, 8))  # large logits: the softmax shift matters
  k = jax.random.normal(ks[1], (2, s, 3, 8))
  v = jax.random.normal(ks[2], (2, s, 3, 8))
  mask = jax.random.bernoulli(ks[3], 0.6, (2, s)).at[1].set(False)  # sample 1: every key masked
  return q.astype(dtype), k.astype(dtype), v.astype(dtype), mask


def _value_and_grads(impl, q, k, v, mask):
  loss = lambda q, k, v: jnp.sum(jnp.sin(attention(q, k, v, mask, impl).astype(jnp.float32)))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("masked", [False, True])
def test_xla_attention_matches_reference_float32(masked):
  q, k, v, mask = _inputs(jnp.float32)
  mask = mask if masked else None
  np.testing.assert_allclose(attention(q, k, v, mask), attention(q, k, v, mask, "reference"), atol=2e-6)
  (la, ga), (lb, gb) = _value_and_grads("xla", q, k, v, mask), _value_and_grads("reference", q, k, v, mask)
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  for a, b in zip(ga, gb):
    np.testing.assert_allclose(a, b, atol=3e-5)


def test_xla_attention_bfloat16_as_accurate_as_reference():
  q, k, v, mask = _inputs(jnp.bfloat16)
  truth = _value_and_grads("reference", *(a.astype(jnp.float32) for a in (q, k, v)), mask)[1]
  for impl in ("xla", "reference"):
    grads = _value_and_grads(impl, q, k, v, mask)[1]
    for g, t in zip(grads, truth):
      assert g.dtype == jnp.bfloat16
      assert float(jnp.linalg.norm(g.astype(jnp.float32) - t) / jnp.linalg.norm(t)) < 2e-2, impl


def test_unknown_attention_implementation_raises():
  q, k, v, _ = _inputs(jnp.float32)
  with pytest.raises(ModelError, match="flash"):
    attention(q, k, v, implementation="flash")


def test_matmul_flattens_leading_axes():
  x = jax.random.normal(jax.random.key(1), (2, 5, 7))
  w = jax.random.normal(jax.random.key(2), (7, 3, 4))
  np.testing.assert_allclose(matmul(x, w), jnp.einsum("bnc,cjo->bnjo", x, w), atol=1e-5)
  assert matmul(x, w[:, 0, :]).shape == (2, 5, 4)
