"""Cells: the supernet's SearchCell and the discrete FixedCell built from a genotype."""

import keras
import tensorflow as tf
from keras import layers
from keras import ops as K

from tf_metanas import stateless
from tf_metanas.search import drop_path as drop_path_lib
from tf_metanas.search import mixed_op as mixed_op_lib
from tf_metanas.search import ops as ops_lib
from tf_metanas.search import topology


class _Cell(layers.Layer):
  """What every cell shares: preprocessing of its two inputs and the concat of its nodes.

  The input from two cells back is reduced with a FactorizedReduce when the previous cell
  was a reduction cell; both inputs are mapped to `channels` with ReLU-1x1 conv-BN. The
  output concatenates the intermediate nodes: [B, H', W', num_nodes * channels].
  DropPath (`drop_path_rate`) applies to op outputs, never to identities.
  """

  def __init__(self, channels, num_nodes, reduction, reduction_prev, affine=False,
               drop_path_rate=0.0, **kwargs):
    super().__init__(**kwargs)
    self.channels, self.num_nodes = int(channels), int(num_nodes)
    self.reduction, self.reduction_prev = bool(reduction), bool(reduction_prev)
    self.affine, self.drop_path_rate = bool(affine), float(drop_path_rate)
    self.preprocess0 = (ops_lib.FactorizedReduce(channels, 2, affine) if reduction_prev
                        else ops_lib.ReLUConvBN(channels, 1, affine, kernel=1))
    self.preprocess1 = ops_lib.ReLUConvBN(channels, 1, affine, kernel=1)

  def stride(self, input_index):
    return 2 if self.reduction and input_index < 2 else 1

  def _build_inputs(self, s0_shape, s1_shape):
    self.preprocess0.build(s0_shape)
    self.preprocess1.build(s1_shape)
    return self.preprocess1.compute_output_shape(s1_shape)

  def _states(self, s0, s1, training):
    return [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]

  def _zeros(self, states):
    stride = 2 if self.reduction else 1
    return K.zeros_like(states[1][:, ::stride, ::stride, :])

  def compute_output_shape(self, s0_shape, s1_shape=None):
    shape = ops_lib.output_shape(s1_shape or s0_shape, self.channels,
                                 2 if self.reduction else 1)
    return shape[:3] + (self.num_nodes * self.channels,)

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "num_nodes": self.num_nodes,
            "reduction": self.reduction, "reduction_prev": self.reduction_prev,
            "affine": self.affine, "drop_path_rate": self.drop_path_rate}


@keras.saving.register_keras_serializable("tf_metanas")
class SearchCell(_Cell):
  """A DARTS cell whose every edge is a MixedOp over `op_names`.

  Node j = sum_i e_ij * MixedOp_ij(x_i) where e_ij is the edge weight: 1 for summed inputs
  (DARTS), or the METANAS Eq. 7 input-combination weights folded onto edges (the sum of
  the weights of node j's combinations that contain input i). Each edge's MixedOp is thus
  computed once however many combinations use it. DropPath acts inside each MixedOp, on
  every non-identity op with its own mask (the METANAS code), not on whole edges.

  Call arguments:
    s0, s1: outputs of the cells two back and one back.
    op_weights: [num_edges, num_ops] normalized op weights.
    edge_weights: [num_edges] edge weights.
    training: BatchNorm and DropPath mode.
    drop_path: DropPath on or off (default: `training`).
    op_mask: optional [num_edges, num_ops] numpy bools: ops that are False are not
      computed (structural state).
    seed: optional [2] int stateless seed of the cell's DropPath masks.
  """

  def __init__(self, channels, num_nodes, op_names, reduction, reduction_prev, affine=False,
               drop_path_rate=0.0, **kwargs):
    super().__init__(channels, num_nodes, reduction, reduction_prev, affine, drop_path_rate,
                     **kwargs)
    self.op_names = tuple(op_names)
    self.edges = [mixed_op_lib.MixedOp(channels, op_names, self.stride(i), affine,
                                       drop_path_rate)
                  for j in range(num_nodes) for i in range(topology.num_inputs(j))]

  def build(self, s0_shape, s1_shape=None):
    shape = self._build_inputs(s0_shape, s1_shape or s0_shape)
    reduced = self.compute_output_shape(shape)[:3] + (self.channels,)
    for edges in topology.node_edges(self.num_nodes):
      for e, i in edges:
        self.edges[e].build(shape if i < 2 else reduced)

  def call(self, s0, s1, op_weights, edge_weights, training=None, drop_path=None,
           op_mask=None, seed=None):
    states = self._states(s0, s1, training)
    op_mask = mixed_op_lib.static_mask(op_mask)
    caches = [mixed_op_lib.OpCache() for _ in range(self.num_nodes + 2)]
    op_weights = tf.unstack(op_weights * edge_weights[:, None])
    for edges in topology.node_edges(self.num_nodes):
      node = None
      for e, i in edges:
        out = self.edges[e](states[i], op_weights[e], training=training, drop_path=drop_path,
                            cache=caches[i], op_mask=None if op_mask is None else op_mask[e],
                            seed=stateless.fold(seed, e))
        if out is not None:
          node = out if node is None else node + out
      states.append(self._zeros(states) if node is None else node)
    return K.concatenate(states[2:], axis=-1)

  def get_config(self):
    return {**super().get_config(), "op_names": self.op_names}


@keras.saving.register_keras_serializable("tf_metanas")
class FixedCell(_Cell):
  """A discrete cell: node j = sum of its genotype ops (op, input) applied to their inputs.

  Args:
    nodes: for each intermediate node, a tuple of (op name, input index) pairs (a
      Genotype's `normal` or `reduce`); a node with no pairs outputs zeros.

  DropPath is applied to every op output except identities, as in DARTS.
  """

  def __init__(self, channels, nodes, reduction, reduction_prev, affine=True,
               drop_path_rate=0.0, **kwargs):
    nodes = tuple(tuple((str(op), int(i)) for op, i in node) for node in nodes)
    super().__init__(channels, len(nodes), reduction, reduction_prev, affine, drop_path_rate,
                     **kwargs)
    self.nodes = nodes
    self.drop_path = drop_path_lib.DropPath(drop_path_rate)
    self.node_ops = [[ops_lib.make_op(op, channels, self.stride(i), affine) for op, i in node]
                     for node in nodes]

  def build(self, s0_shape, s1_shape=None):
    shape = self._build_inputs(s0_shape, s1_shape or s0_shape)
    reduced = self.compute_output_shape(shape)[:3] + (self.channels,)
    for node, node_ops in zip(self.nodes, self.node_ops):
      for (_, i), op in zip(node, node_ops):
        op.build(shape if i < 2 else reduced)

  def call(self, s0, s1, training=None, drop_path=None, seed=None):
    """`seed`: optional [2] int stateless seed of the cell's DropPath masks."""
    states, index = self._states(s0, s1, training), 0
    for node, node_ops in zip(self.nodes, self.node_ops):
      total = None
      for (_, i), op in zip(node, node_ops):
        out = op(states[i], training=training)
        if not isinstance(op, ops_lib.Identity):
          out = self.drop_path(out, training=training if drop_path is None else drop_path,
                               seed=stateless.fold(seed, index))
        index += 1
        total = out if total is None else total + out
      states.append(self._zeros(states) if total is None else total)
    return K.concatenate(states[2:], axis=-1)

  def get_config(self):
    config = super().get_config()
    del config["num_nodes"]
    return {**config, "nodes": [[list(pair) for pair in node] for node in self.nodes]}
