"""Stateless seeds and uniform draws that are the same on every device and under XLA.

TensorFlow's stateless random ops pick their bit generator per device: the same seed gives
other numbers on CPU than under XLA (also with alg="philox"). These draws hash a counter
with the seed using only 32-bit integer arithmetic (the "lowbias32" integer hash of
C. Wellons, applied three times), which every backend computes bit for bit alike; good
enough statistics for DropPath masks and Gumbel noise.
"""

import tensorflow as tf

_GOLDEN = 0x9E3779B9


def fold(seed, *values):
  """`seed` ([2] int) with each of `values` (ints or scalar tensors) folded in: the seed of
  a sub-part (a step, a cell, an edge, an op). None stays None (stateful draws)."""
  if seed is None:
    return None
  seed = tf.convert_to_tensor(seed, tf.int32) if not isinstance(seed, tf.Tensor) else seed
  for value in values:
    seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int32), alg="philox")
  return seed


def _hash(x):
  """lowbias32: a 32-bit integer hash with full avalanche (uint32 in, uint32 out)."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
  x = x * tf.constant(0x7FEB352D, tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
  x = x * tf.constant(0x846CA68B, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def uniform(shape, seed, minval=0.0, maxval=1.0, dtype=tf.float32):
  """Uniform draws in [minval, maxval) of `shape`, a function of the [2] int `seed` only."""
  seed = tf.bitcast(tf.cast(seed, tf.int32), tf.uint32)
  key = _hash(tf.bitwise.bitwise_xor(_hash(seed[0] + tf.constant(_GOLDEN, tf.uint32)), seed[1]))
  count = tf.reduce_prod(tf.cast(shape, tf.int32))
  bits = _hash(_hash(tf.bitwise.bitwise_xor(tf.cast(tf.range(count), tf.uint32), key)) + key)
  fraction = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * 2.0 ** -24
  values = tf.cast(minval + (maxval - minval) * fraction, dtype)
  return tf.reshape(values, shape)
