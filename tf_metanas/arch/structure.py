"""Structure: the discrete, checkpointed state of a supernet's architecture.

Which candidate ops each edge may still use, per cell type: a [num_edges, num_ops] mask.
Methods change it between meta-iterations (CAML consolidation fixes an edge to one op and
drops edges; a method may remove an op for good); the mixture reads it, so removed ops
get weight 0 and are not computed, and a dropped edge (no op left) is absent. The mask is part of a meta-learner's trace key: each distinct
structure compiles its own graph, which no longer contains the removed ops.

The masks are tf.Variables in the learner's checkpoint, so a run resumed between two
structure changes rebuilds the structure it had at its checkpoint before it continues.
"""

import numpy as np
import tensorflow as tf

from tf_metanas.arch import mixture as mixture_lib


class Structure:
  """Per cell type, the ops each edge may use (all of them at first).

  Args:
    num_edges: edges per cell.
    op_names: the candidate ops of every edge.
  """

  def __init__(self, num_edges, op_names):
    self.op_names = tuple(op_names)
    self.masks = {cell: tf.Variable(tf.ones([num_edges, len(self.op_names)], tf.bool),
                                    trainable=False, name=f"structure_{cell}")
                  for cell in mixture_lib.CELL_TYPES}
    self._snapshot = None

  def op_masks(self):
    """cell type -> [num_edges, num_ops] numpy bools. Read from the variables when eager
    (the learner reads them before every compiled call: its trace key); inside a trace,
    the values of that last eager read."""
    if tf.executing_eagerly() or self._snapshot is None:
      self._snapshot = {cell: mask.numpy() for cell, mask in self.masks.items()}
    return {cell: mask.copy() for cell, mask in self._snapshot.items()}

  def key(self):
    """A hashable summary of the structure (for trace keys)."""
    return tuple((cell, mask.tobytes()) for cell, mask in self.op_masks().items())

  def is_full(self):
    return all(mask.all() for mask in self.op_masks().values())

  def _op_index(self, op):
    if op not in self.op_names:
      raise ValueError(f"unknown op {op!r}; this structure's ops are {self.op_names}")
    return self.op_names.index(op)

  def remove(self, cell, edge, op):
    """Removes `op` (a name) from `edge` of cell type `cell` for good."""
    mask = self.op_masks()[cell]
    mask[edge, self._op_index(op)] = False
    if not mask[edge].any():
      raise ValueError(f"removing {op!r} would leave edge {edge} of the {cell} cell with "
                       f"no op; fix it to one op instead")
    self.masks[cell].assign(mask)

  def fix(self, cell, edge, op):
    """Fixes `edge` of cell type `cell` to `op` alone (its weight is then 1)."""
    mask = self.op_masks()[cell]
    mask[edge] = False
    mask[edge, self._op_index(op)] = True
    self.masks[cell].assign(mask)

  def drop(self, cell, edge):
    """Drops `edge` of cell type `cell` for good: none of its ops is computed (CAML's
    in-degree rule; the edge is absent from the cell, as a "none" edge)."""
    mask = self.op_masks()[cell]
    mask[edge] = False
    self.masks[cell].assign(mask)

  def free_edges(self, cell):
    """Edge indices of cell type `cell` that still mix several ops."""
    return [int(e) for e, row in enumerate(self.op_masks()[cell]) if row.sum() > 1]

  def dropped_edges(self):
    """cell type -> sorted edge indices with no op left (dropped)."""
    return {cell: [int(e) for e, row in enumerate(mask) if not row.any()]
            for cell, mask in self.op_masks().items()}

  def fixed_edges(self):
    """cell type -> {edge: op name} of the edges left with a single op."""
    return {cell: {int(e): self.op_names[int(np.argmax(row))]
                   for e, row in enumerate(mask) if row.sum() == 1}
            for cell, mask in self.op_masks().items()}

  def masked_alphas(self, arch):
    """Architecture tensors (alphas first, `arch_variables` order) with the removed ops'
    logits at -inf for the softmax, as the mixture sees them (genotypes, heatmaps)."""
    if self.is_full():
      return list(arch)
    masks = self.op_masks()
    alphas = [mixture_lib.masked_logits(alpha, masks[cell])
              for alpha, cell in zip(arch[:2], mixture_lib.CELL_TYPES)]
    return alphas + list(arch[2:])

  def checkpoint_items(self):
    return {f"structure_{cell}": mask for cell, mask in self.masks.items()}
