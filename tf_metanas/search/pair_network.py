"""BASE's per-node space: each node picks two (input, op) pairs, with replacement.

The BASE authors' genotypes (Shaw et al. 2019; `our_models.py` of
ashaw596/meta_architecture_search) give every intermediate node j exactly two (op, input)
pairs, each any op of the set on any of the node's j + 2 inputs, the two possibly on the
same input. The relaxation here: node j has `SLOTS` = 2 independent categoricals ("slots"),
each over node j's whole (input, op) grid of (j + 2) * K cells, with logits a[s, e, o] on
the cell's edges e of node j and ops o. A relaxed sample of slot s is

  z_s = softmax((a_s + g_s) / tau) over the flattened block of node j,  g ~ Gumbel(0, 1)

(`arch.gumbel.relaxed`; g = 0 for the plain softmax), and node j computes
sum_s sum_(i,o) z_s[i, o] o(x_i) = sum_(i,o) (z_0 + z_1)[i, o] o(x_i): the unchanged
SearchCell with op weights z_0 + z_1 (edge weights 1), so both slots share the supernet's
op weights. Both slots may pick the same pair (weight 2 on that op in the supernet; two
separate ops in the derived FixedCell, which `Genotype` allows).
"""

import keras
import numpy as np
import tensorflow as tf

from tf_metanas.arch import gumbel
from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib
from tf_metanas.search import topology

SLOTS = 2  # (input, op) pairs per node, as the authors' genotypes


def node_blocks(logits, num_nodes):
  """Each node's categoricals: [slots, (j + 2) * num_ops] logits of node j's flattened
  (input, op) grid, from pair logits [slots, num_edges, num_ops]."""
  logits = tf.convert_to_tensor(logits)
  slots = logits.shape[0]
  return [tf.reshape(logits[:, start:stop, :], (slots, -1))
          for start, stop in topology.node_slices(num_nodes)]


def op_weights(logits, num_nodes, tau=1.0, seed=None):
  """The supernet op weights sum_s z_s of pair logits (see the module docstring).

  Args:
    logits: [slots, num_edges, num_ops] pair logits of one cell type.
    num_nodes: intermediate nodes of the cell.
    tau: the relaxation's temperature.
    seed: a [2] int stateless seed of Gumbel noise on every logit (one draw of the
      relaxed posterior), or None for the noise-free softmax(a / tau).

  Returns:
    [num_edges, num_ops] weights; each node's block sums to the number of slots.
  """
  logits = tf.convert_to_tensor(logits)
  if seed is not None:
    logits = logits + gumbel.noise(tf.shape(logits), seed, logits.dtype)
  num_ops = logits.shape[-1]
  parts = [tf.reshape(tf.reduce_sum(gumbel.relaxed(block, tau), axis=0), (-1, num_ops))
           for block in node_blocks(logits, num_nodes)]
  return tf.concat(parts, axis=0)


def pair_mixture(pairs, num_nodes, tau=1.0, seeds=None):
  """The SearchNetwork mixture of pair logits for both cell types.

  Args:
    pairs: dict cell type -> [slots, num_edges, num_ops] pair logits.
    num_nodes: intermediate nodes per cell.
    tau: the relaxation's temperature.
    seeds: None (noise-free) or dict cell type -> [2] int seed of that cell's Gumbel noise.

  Returns:
    dict "<cell type>_ops" -> [num_edges, num_ops] (`op_weights`) and
    "<cell type>_edges" -> ones [num_edges].
  """
  out = {}
  for cell in mixture_lib.CELL_TYPES:
    weights = op_weights(pairs[cell], num_nodes, tau, None if seeds is None else seeds[cell])
    out[f"{cell}_ops"] = weights
    out[f"{cell}_edges"] = tf.ones((topology.num_edges(num_nodes),), weights.dtype)
  return out


def genotype_logits(genotype, op_names, dtype=tf.float32):
  """One-hot pair logits of a two-pairs-per-node `genotype` (0 at slot s's pair of each
  node, mixture.REMOVED_LOGIT elsewhere): their softmax mixture is exactly 1 at every pair
  (2 where both slots pick it) and 0 elsewhere, so a NodePairSearchNetwork run on them
  computes the genotype's network with the supernet's weights; `derive_pairs` inverts it.

  Returns:
    dict cell type -> [slots, num_edges, num_ops] tensor.
  """
  op_names = tuple(op_names)
  out = {}
  for cell in mixture_lib.CELL_TYPES:
    nodes = genotype.cell(cell)
    logits = np.full((SLOTS, topology.num_edges(len(nodes)), len(op_names)),
                     mixture_lib.REMOVED_LOGIT)
    for j, node in enumerate(nodes):
      if len(node) != SLOTS:
        raise ValueError(f"node {j} of the {cell} cell has {len(node)} (op, input) pairs; "
                         f"the pair space needs {SLOTS}")
      for s, (op, i) in enumerate(node):
        logits[s, topology.edge_index(j, i), op_names.index(op)] = 0.0
    out[cell] = tf.constant(logits, dtype)
  return out


def decoded_logits(logits, op_names, num_nodes):
  """The most probable architecture of pair logits [slots, num_edges, num_ops] as one-hot
  logits (0 at each slot's argmax pair of each node, never "none"; REMOVED_LOGIT elsewhere),
  traceable: the supernet run on them is the derived network with its kept weights.
  `genotype.derive_pairs` is the same rule in numpy (exact ties aside: tf.argmax does not
  promise the first)."""
  logits = tf.convert_to_tensor(logits)
  allowed = tf.constant([name != "none" for name in op_names])
  masked = tf.where(allowed, logits, tf.constant(-np.inf, logits.dtype))
  chosen = [tf.one_hot(tf.argmax(block, axis=-1), block.shape[-1], dtype=logits.dtype)
            for block in node_blocks(masked, num_nodes)]
  chosen = tf.concat([tf.reshape(c, (c.shape[0], -1, len(op_names))) for c in chosen], axis=1)
  return tf.where(chosen > 0.5, tf.zeros_like(logits),
                  tf.constant(mixture_lib.REMOVED_LOGIT, logits.dtype))


@keras.saving.register_keras_serializable("tf_metanas")
class NodePairSearchNetwork(network_lib.SearchNetwork):
  """The SearchNetwork of the per-node pair space (module docstring): the same cells and
  MixedOps, architecture variables pair_normal / pair_reduce [SLOTS, num_edges, num_ops]
  (DARTS' 1e-3 * N(0, 1) initialization), and inputs summed with edge weights 1.

  Args: those of SearchNetwork except input_k (op_set default "BASE").

  Call arguments: those of SearchNetwork; `mixture` None uses the noise-free mixture of the
  variables at temperature 1.
  """

  def __init__(self, num_classes, op_set="BASE", **kwargs):
    if kwargs.pop("input_k", 0):
      raise ValueError("the pair space has no input-combination weights (input_k = 0)")
    super().__init__(num_classes, op_set=op_set, input_k=0, **kwargs)

  def _add_arch_variables(self, init):
    shape = (SLOTS, topology.num_edges(self.num_nodes), len(self.op_names))
    self.pair_normal = self.add_weight(shape=shape, initializer=init, name="pair_normal")
    self.pair_reduce = self.add_weight(shape=shape, initializer=init, name="pair_reduce")

  @property
  def arch_variables(self):
    return [self.pair_normal, self.pair_reduce]

  def arch_dict(self, arch=None):
    """dict cell type -> pair logits, from tensors in `arch_variables` order."""
    arch = [keras.ops.convert_to_tensor(v) for v in self.arch_variables] if arch is None else arch
    return dict(zip(mixture_lib.CELL_TYPES, arch))

  def categoricals(self, arch=None):
    """Each node's slot categoricals ([slots, (j + 2) * num_ops] logits, `node_blocks`) of
    both cell types."""
    return [block for logits in self.arch_dict(arch).values()
            for block in node_blocks(logits, self.num_nodes)]

  def mixture(self, arch=None, tau_alpha=1.0, tau_beta=1.0, threshold=0.0, op_masks=None,
              seeds=None):
    """`pair_mixture` of `arch` or the variables at temperature `tau_alpha`;
    `seeds` (cell type -> [2] int seed) adds Gumbel noise. No pruning, no op masks."""
    del tau_beta  # no input-combination weights
    if threshold or op_masks is not None:
      raise ValueError("the pair space supports neither pruning thresholds nor op masks")
    return pair_mixture(self.arch_dict(arch), self.num_nodes, tau_alpha, seeds)

  def genotype(self, rule="pairs", arch=None, **unused):
    """The most probable architecture (`genotype.derive_pairs`: the argmax pair of every
    slot); "pairs" is the only rule."""
    del unused
    if rule != "pairs":
      raise ValueError(f"the pair space derives genotypes by the 'pairs' rule, got {rule!r}")
    return genotype_lib.derive_pairs(self.arch_dict(arch), self.op_names, self.num_nodes)

  def decoded_logits(self, arch=None):
    """`decoded_logits` (module function) of both cell types, in `arch_variables` order."""
    return [decoded_logits(logits, self.op_names, self.num_nodes)
            for logits in self.arch_dict(arch).values()]

  def choice_tables(self, arch=None):
    """Choice probabilities for display: dict "<cell type>_slot<s>" -> [num_edges, num_ops]
    numpy, slot s's categorical of every node (softmax of its block, temperature-free;
    each node's block sums to 1)."""
    tables = {}
    for cell, logits in self.arch_dict(arch).items():
      for s in range(SLOTS):
        tables[f"{cell}_slot{s}"] = op_weights(logits[s:s + 1], self.num_nodes).numpy()
    return tables

  def get_config(self):
    config = super().get_config()
    del config["input_k"]
    return config
