"""BatchNorm: exact second derivatives of training-mode normalization (and why it exists)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas.search import batch_norm


def _hessian_vector(layer, x, v):
  """d/dx <d f / dx, v> for f = sum(BN(x)^3), by nested tapes."""
  with tf.GradientTape() as outer:
    outer.watch(x)
    with tf.GradientTape() as inner:
      inner.watch(x)
      f = tf.reduce_sum(layer(x, training=True) ** 3)
    g = inner.gradient(f, x)
    gv = tf.reduce_sum(g * v)
  return outer.gradient(gv, x)


def _numeric_hessian_vector(layer, x, v, eps=1e-6):
  def grad(z):
    with tf.GradientTape() as tape:
      tape.watch(z)
      f = tf.reduce_sum(layer(z, training=True) ** 3)
    return tape.gradient(f, z)
  return (grad(x + eps * v) - grad(x - eps * v)) / (2 * eps)


@pytest.fixture
def inputs():
  rng = np.random.default_rng(0)
  return (tf.constant(rng.normal(size=(5, 3, 3, 2))), tf.constant(rng.normal(size=(5, 3, 3, 2))))


def test_second_derivative_matches_finite_differences(inputs):
  x, v = inputs
  layer = batch_norm.BatchNorm(dtype="float64")
  np.testing.assert_allclose(_hessian_vector(layer, x, v), _numeric_hessian_vector(layer, x, v),
                             rtol=1e-5, atol=1e-6)


def test_keras_batch_normalization_second_derivative_is_wrong(inputs):
  """The reason BatchNorm exists: if Keras fixes tf.nn.moments this test tells us."""
  x, v = inputs
  layer = keras.layers.BatchNormalization(dtype="float64")
  assert not np.allclose(_hessian_vector(layer, x, v), _numeric_hessian_vector(layer, x, v),
                         rtol=1e-3, atol=1e-4)


def test_forward_equals_keras_batch_normalization(inputs):
  x, _ = inputs
  ours, theirs = batch_norm.BatchNorm(dtype="float64"), keras.layers.BatchNormalization(dtype="float64")
  np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), atol=1e-12)
  np.testing.assert_allclose(ours.moving_variance, theirs.moving_variance, atol=1e-12)


def test_lean_second_derivative_matches_finite_differences(inputs):
  """The lean graph of the running_statistics=False path (what supernets use) too."""
  x, v = inputs
  layer = batch_norm.BatchNorm(running_statistics=False, dtype="float64")
  hv = _hessian_vector(layer, x, v)
  np.testing.assert_allclose(hv, _numeric_hessian_vector(layer, x, v), rtol=1e-5, atol=1e-6)
  assert np.abs(hv).max() > 1e-2

