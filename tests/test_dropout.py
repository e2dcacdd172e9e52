"""The hash-based dropout: the keep rate, the inverted scale, fresh masks per rng, identity when off."""
import jax
import jax.numpy as jnp
import numpy as np

from e2urec_jax.models.layers import Dropout


def _apply(rate, x, seed, deterministic=False):
  return Dropout(rate).apply({}, x, deterministic, rngs={'dropout': jax.random.key(seed)})


def test_keep_rate_and_scale_match_the_rate():
  x = jnp.ones((64, 4, 128, 128))  # 4M elements: the keep rate is within 0.001 of 0.9
  y = np.asarray(_apply(0.1, x, 0))
  kept = y != 0
  assert abs(kept.mean() - 0.9) < 1e-3
  np.testing.assert_allclose(y[kept], 1 / 0.9, rtol=1e-6)
  assert abs(y.mean() - 1.0) < 2e-3  # inverted dropout keeps the expectation


def test_masks_differ_between_rngs_and_are_uncorrelated():
  x = jnp.ones((1 << 20,))
  a = np.asarray(_apply(0.5, x, 0)) != 0
  b = np.asarray(_apply(0.5, x, 1)) != 0
  assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
  assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01  # neighbours independent too
  np.testing.assert_array_equal(a, np.asarray(_apply(0.5, x, 0)) != 0)  # same rng, same mask


def test_off_and_extreme_rates():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(_apply(0.3, x, 0, deterministic=True), x)
  np.testing.assert_array_equal(_apply(0.0, x, 0), x)
  np.testing.assert_array_equal(_apply(1.0, x, 0), jnp.zeros_like(x))
