"""Candidate ops and MixedOp: shapes, parameter counts, zero-weight skipping, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas.search import mixed_op as mixed_op_lib
from tf_metanas.search import ops as ops_lib

C = 4


def _count(layer):
  return sum(int(np.prod(v.shape)) for v in layer.trainable_weights)


@pytest.mark.parametrize("name", ops_lib.OP_NAMES)
@pytest.mark.parametrize("stride, size, expected", [(1, 8, 8), (2, 8, 4), (2, 7, 4)])
def test_every_op_output_shape(name, stride, size, expected):
  op = ops_lib.make_op(name, C, stride)
  x = np.random.default_rng(0).normal(size=(2, size, size, C)).astype("float32")
  y = op(x, training=True)
  assert tuple(y.shape) == (2, expected, expected, C)
  assert op.compute_output_shape((2, size, size, C)) == (2, expected, expected, C)


@pytest.mark.parametrize("name, stride, affine, params", [
    ("none", 1, False, 0),
    ("skip_connect", 1, False, 0),
    ("skip_connect", 2, False, 2 * (C * C // 2)),  # factorized reduce: two 1x1 convs to C/2
    ("max_pool_3x3", 1, False, 0),
    ("avg_pool_3x3", 2, True, 2 * C),  # affine BN only
    ("conv_3x3", 1, False, 9 * C + C * C),  # METANAS's: depthwise 3x3 + pointwise 1x1
    ("conv_3x3", 2, True, 9 * C + C * C + 2 * C),
    ("full_conv_3x3", 1, False, 9 * C * C),
    ("full_conv_3x3", 2, True, 9 * C * C + 2 * C),
    ("conv_1x5_5x1", 1, False, 2 * 5 * C * C),
    ("sep_conv_3x3", 1, False, 2 * (9 * C + C * C)),  # (depthwise + pointwise) twice
    ("sep_conv_5x5", 2, False, 2 * (25 * C + C * C)),
    ("dil_conv_3x3", 1, False, 9 * C + C * C),
    ("dil_conv_5x5", 2, True, 25 * C + C * C + 2 * C),
])
def test_parameter_counts_by_hand(name, stride, affine, params):
  op = ops_lib.make_op(name, C, stride, affine)
  op.build((None, 8, 8, C))
  assert _count(op) == params


def test_strided_dilated_conv_equals_subsampled_stride_one_conv():
  strided = ops_lib.DilConv(C, stride=2, kernel=3, dilation=2)
  dense = ops_lib.DilConv(C, stride=1, kernel=3, dilation=2)
  strided.build((None, 9, 9, C))
  dense.build((None, 9, 9, C))
  for a, b in zip(dense.weights, strided.weights):
    a.assign(b.value)
  x = np.random.default_rng(1).normal(size=(2, 9, 9, C)).astype("float32")
  full = np.asarray(dense.depthwise(keras.ops.relu(x)))
  np.testing.assert_allclose(np.asarray(strided.depthwise(keras.ops.relu(x)))[:, ::2, ::2],
                             full[:, ::2, ::2], atol=1e-6)


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduce_equals_strided_one_by_one_convolutions(size):
  """DARTS' definition: 1x1 stride-2 "same" convs on relu(x) and relu(x) shifted by one
  pixel, concatenated, batch-normalized (computed here as subsample + stride-1 conv)."""
  op = ops_lib.FactorizedReduce(C, 2)
  x = np.random.default_rng(3).normal(size=(2, size, size, C)).astype("float32")
  y = op(x, training=True)
  relu = tf.nn.relu(x)
  shifted = tf.pad(relu, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:, :]
  conv = lambda z, k: tf.nn.conv2d(z, k, strides=2, padding="SAME")
  z = tf.concat([conv(relu, op.conv_a.kernel), conv(shifted, op.conv_b.kernel)], axis=-1)
  mean, variance = tf.nn.moments(z, (0, 1, 2))
  np.testing.assert_allclose(y, (z - mean) / tf.sqrt(variance + 1e-5), atol=1e-5)


def test_op_sets_are_data_and_validated():
  assert ops_lib.op_set("S1")[0] == "max_pool_3x3" and len(ops_lib.op_set("S1")) == 7
  assert "none" in ops_lib.op_set("DARTS") and len(ops_lib.op_set("DARTS")) == 8
  assert ops_lib.op_set(["conv_3x3", "skip_connect"]) == ("conv_3x3", "skip_connect")
  with pytest.raises(ValueError, match="unknown op 'conv_9x9'"):
    ops_lib.op_set(["conv_9x9"])
  with pytest.raises(ValueError, match="unknown op set 'S9'"):
    ops_lib.op_set("S9")


def test_mixed_op_is_the_weighted_sum_of_its_ops():
  mixed = mixed_op_lib.MixedOp(C, ("conv_3x3", "avg_pool_3x3", "skip_connect"))
  x = np.random.default_rng(2).normal(size=(2, 6, 6, C)).astype("float32")
  weights = np.array([0.2, 0.5, 0.3], np.float32)
  y = mixed(x, weights, training=False)
  expected = sum(w * np.asarray(op(x, training=False))
                 for w, op in zip(weights, mixed.candidates))
  np.testing.assert_allclose(np.asarray(y), expected, atol=1e-5)


def test_mixed_op_weight_gradients_are_the_op_outputs():
  """d<y, v>/dw_o = <o(x), v> and d<y, v>/dx = sum_o w_o d<o(x), v>/dx, with every S1 op."""
  mixed = mixed_op_lib.MixedOp(C, ops_lib.op_set("S1"))
  rng = np.random.default_rng(4)
  x = tf.constant(rng.normal(size=(3, 6, 6, C)).astype("float32"))
  v = tf.constant(rng.normal(size=(3, 6, 6, C)).astype("float32"))
  weights = tf.constant(rng.dirichlet(np.ones(7)).astype("float32"))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([x, weights])
    y = mixed(x, weights, training=True)
    loss = tf.reduce_sum(y * v)
    expected = sum(weights[i] * tf.reduce_sum(op(x, training=True) * v)
                   for i, op in enumerate(mixed.candidates))
  outputs = [tf.reduce_sum(op(x, training=True) * v) for op in mixed.candidates]
  np.testing.assert_allclose(tape.gradient(loss, weights), outputs, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(tape.gradient(loss, x), tape.gradient(expected, x), atol=1e-4)
  for ours, theirs in zip(tape.gradient(loss, mixed.trainable_weights),
                          tape.gradient(expected, mixed.trainable_weights)):
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


class _Counter:
  """Wraps an op's call to count executions."""

  def __init__(self, op):
    self.calls, self._call = 0, op.call

    def counted(*args, **kwargs):
      self.calls += 1
      return self._call(*args, **kwargs)

    op.call = counted


def test_zero_weight_ops_are_not_executed():
  mixed = mixed_op_lib.MixedOp(C, ops_lib.op_set("S1"))
  x = np.ones((1, 6, 6, C), np.float32)
  mixed(x, np.full(7, 1 / 7, np.float32))
  counters = [_Counter(op) for op in mixed.candidates]
  weights = np.array([0, 0.4, 0, 0, 0.6, 0, 0], np.float32)
  y = mixed(x, weights)
  assert [c.calls for c in counters] == [0, 1, 0, 0, 1, 0, 0]
  expected = 0.4 * np.asarray(mixed.candidates[1](x)) + 0.6 * np.asarray(mixed.candidates[4](x))
  np.testing.assert_allclose(np.asarray(y), expected, atol=1e-5)
  assert mixed(x, np.zeros(7, np.float32)) is None


@pytest.mark.parametrize("name", ops_lib.OP_NAMES)
def test_ops_serialize(name):
  op = ops_lib.make_op(name, C, 2, True)
  clone = op.__class__.from_config(op.get_config())
  assert clone.get_config() == op.get_config()
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(op))
  assert type(restored) is type(op) and restored.stride == 2 and restored.affine


def test_mixed_op_serializes():
  mixed = mixed_op_lib.MixedOp(C, ("conv_3x3", "none"), stride=2)
  clone = mixed_op_lib.MixedOp.from_config(mixed.get_config())
  assert clone.op_names == ("conv_3x3", "none") and clone.stride == 2
  assert [type(o) for o in clone.candidates] == [type(o) for o in mixed.candidates]
