"""MixedOp: the weighted sum of every candidate op on one edge (DARTS Eq. 1)."""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tf_metanas import stateless
from tf_metanas.search import drop_path as drop_path_lib
from tf_metanas.search import ops as ops_lib


class OpCache:
  """Outputs of parameter-free ops on one node's output, shared by the edges leaving it.

  (An object rather than a dict: Keras rebuilds container arguments of `Layer.__call__`.)
  """

  def __init__(self):
    self.outputs = {}


def static_mask(mask):
  """A structural op mask as numpy bools (Keras turns numpy call arguments into constant
  tensors), None for none; a mask unknown at trace time cannot decide what is computed."""
  if mask is None:
    return None
  known = static_value(mask)
  if known is None:
    raise ValueError("an op mask must be known at trace time (numpy, as Structure.op_masks "
                     "gives it), not computed in the graph")
  return np.asarray(known, bool)


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
  """sum_o w_o * DropPath(o(x)) over the candidate ops o of one edge.

  DropPath (the METANAS code's MixedOp) drops each op's output with its own per-sample
  mask; identities are never dropped (a stride-2 skip, FactorizedReduce, is).

  Args:
    channels: channels of input and output.
    op_names: the candidate ops (an op set).
    stride: 2 on the input edges of a reduction cell, else 1.
    affine: affine BatchNorms inside the ops.
    drop_path_rate: DropPath probability of each non-identity op.

  Call arguments:
    x: [B, H, W, channels].
    weights: [num_ops] normalized op weights (already multiplied by the edge's
      input-combination weight). When the weights are known at trace time (eager, numpy,
      constants), ops whose weight is exactly zero are not computed. The "none" op (zeros)
      is never computed: its term w * 0 adds nothing to the output or to any gradient
      (the softmax normalization that gives it weight is computed all the same). If no op
      is computed, the call returns None (the cell reads it as zeros).
    training: BatchNorm mode.
    drop_path: DropPath on or off (default: `training`).
    op_mask: optional [num_ops] bools known at trace time (numpy): ops whose entry is False
      are not computed (an architecture's structural state: ops removed or an edge fixed
      to one op).
    seed: optional [2] int stateless seed of this edge's DropPath masks (op i folds in i).
    cache: optional OpCache shared by the edges leaving the same node: outputs of
      parameter-free ops (pooling with a batch-statistics BatchNorm, identity) are computed
      once per node and reused by its other edges, which compute the same function (each
      edge draws its own DropPath masks).
  """

  def __init__(self, channels, op_names, stride=1, affine=False, drop_path_rate=0.0,
               **kwargs):
    super().__init__(**kwargs)
    self.channels, self.op_names = int(channels), tuple(op_names)
    self.stride, self.affine = int(stride), bool(affine)
    self.drop_path_rate = float(drop_path_rate)
    self.candidates = [ops_lib.make_op(name, channels, stride, affine) for name in op_names]
    self.drop_path = drop_path_lib.DropPath(drop_path_rate)

  def build(self, input_shape):
    for op in self.candidates:
      op.build(input_shape)

  def compute_output_shape(self, input_shape):
    return ops_lib.output_shape(input_shape, self.channels, self.stride)

  def call(self, x, weights, training=None, drop_path=None, cache=None, op_mask=None, seed=None):
    known, op_mask = static_value(weights), static_mask(op_mask)
    total, weights = None, tf.unstack(weights)
    drop = training if drop_path is None else drop_path
    for i, (name, op) in enumerate(zip(self.op_names, self.candidates)):
      if ((known is not None and known[i] == 0) or (op_mask is not None and not op_mask[i])
          or name == "none"):  # w * 0 adds nothing to the output or to any gradient
        continue
      out = self._apply(name, op, x, training, cache)
      if not isinstance(op, ops_lib.Identity):
        out = self.drop_path(out, training=drop,
                             seed=stateless.fold(seed, i))
      term = weights[i] * out
      total = term if total is None else total + term
    return total

  @staticmethod
  def _apply(name, op, x, training, cache):
    if cache is None or op.weights:
      return op(x, training=training)
    if name not in cache.outputs:  # the same op name on the same node: the same function
      cache.outputs[name] = op(x, training=training)
    return cache.outputs[name]

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "op_names": self.op_names,
            "stride": self.stride, "affine": self.affine, "drop_path_rate": self.drop_path_rate}
