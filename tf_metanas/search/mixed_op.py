"""MixedOp: the weighted sum of every candidate op on one edge (DARTS Eq. 1)."""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tf_metanas.search import ops as ops_lib


def static_value(tensor):
  """The value of `tensor` if known without running a graph (eager, constant), else None."""
  if isinstance(tensor, np.ndarray):
    return tensor
  try:
    return tf.get_static_value(tensor)
  except TypeError:
    return None


@keras.saving.register_keras_serializable("tf_metanas")
class MixedOp(layers.Layer):
  """sum_o w_o * o(x) over the candidate ops o of one edge.

  Args:
    channels: channels of input and output.
    op_names: the candidate ops (an op set).
    stride: 2 on the input edges of a reduction cell, else 1.
    affine: affine BatchNorms inside the ops.

  Call arguments:
    x: [B, H, W, channels].
    weights: [num_ops] normalized op weights (already multiplied by the edge's
      input-combination weight). When the weights are known at trace time (eager, numpy,
      constants), ops whose weight is exactly zero are not computed; if all are zero the
      call returns None.
    training: BatchNorm mode.
  """

  def __init__(self, channels, op_names, stride=1, affine=False, **kwargs):
    super().__init__(**kwargs)
    self.channels, self.op_names = int(channels), tuple(op_names)
    self.stride, self.affine = int(stride), bool(affine)
    self.candidates = [ops_lib.make_op(name, channels, stride, affine) for name in op_names]

  def build(self, input_shape):
    for op in self.candidates:
      op.build(input_shape)

  def compute_output_shape(self, input_shape):
    return ops_lib.output_shape(input_shape, self.channels, self.stride)

  def call(self, x, weights, training=None):
    known = static_value(weights)
    total = None
    for i, op in enumerate(self.candidates):
      if known is not None and known[i] == 0:
        continue
      term = weights[i] * op(x, training=training)
      total = term if total is None else total + term
    return total

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "op_names": self.op_names,
            "stride": self.stride, "affine": self.affine}
