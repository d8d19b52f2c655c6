"""Softmax mixture weights with temperature (METANAS Eq. 5 and Eq. 7).

A *mixture* is what a SearchNetwork consumes: for each cell type ("normal", "reduce") the
op weights [num_edges, num_ops] and the edge weights [num_edges] (the input-combination
weights folded onto edges; ones when node inputs are simply summed, as in DARTS).
"""

from keras import ops as K

from tf_metanas.search import topology

CELL_TYPES = ("normal", "reduce")
REMOVED_LOGIT = -1e9  # exp(REMOVED_LOGIT / tau - max) is exactly 0 in float32


def op_weights(alpha, tau=1.0):
  """Eq. 5: softmax(alpha / tau) over the ops of every edge. alpha: [num_edges, num_ops]."""
  return K.softmax(alpha / tau, axis=-1)


def prune(weights, threshold):
  """METANAS pruning (Sec. 4): normalized weights at or below `threshold` become exactly 0
  (the authors' code keeps w > threshold); the kept ones keep their value (no
  renormalization, so the pruned network is the soft one without its negligible terms)."""
  if not threshold:
    return weights
  return K.where(weights > threshold, weights, K.zeros_like(weights))


def mean_entropy(categoricals):
  """The mean, over every categorical (each row of each logits tensor's last axis), of its
  entropy H = -sum_i p_i log p_i with p = softmax(logits), in nats: log K for a uniform
  choice among K, 0 for a decided one (removed logits count as probability 0). Categoricals
  of one choice (a node with a single input combination) decide nothing and are left out."""
  rows = [K.reshape(-K.sum(K.softmax(c, axis=-1) * K.log_softmax(c, axis=-1), axis=-1), [-1])
          for c in categoricals if c.shape[-1] > 1]
  return K.mean(K.concatenate(rows))


def combination_weights(beta, num_nodes, k, tau=1.0):
  """Eq. 7: per node, softmax(beta / tau) over that node's k-input combinations."""
  parts = [K.softmax(beta[start:stop] / tau) if stop - start > 1 else K.ones_like(beta[start:stop])
           for start, stop in topology.combination_segments(num_nodes, k)]
  return K.concatenate(parts, axis=0)


def edge_weights(beta, num_nodes, k, tau=1.0, threshold=0.0):
  """Eq. 7 folded onto edges: the weight of edge (i, j) is the sum over node j's
  combinations containing input i of their softmax weight (after pruning at `threshold`)."""
  matrix = K.convert_to_tensor(topology.combination_to_edges(num_nodes, k), beta.dtype)
  combos = prune(combination_weights(beta, num_nodes, k, tau), threshold)
  return K.matmul(combos[None, :], matrix)[0]


def masked_logits(alpha, mask):
  """`alpha` with the entries whose `mask` is False at -inf for the softmax (a logit so low
  that their weight is exactly 0 and the others share the whole mass)."""
  return K.where(K.convert_to_tensor(mask), alpha, K.full_like(alpha, REMOVED_LOGIT))


def mixture(alphas, betas, num_nodes, k, tau_alpha=1.0, tau_beta=1.0, threshold=0.0,
            op_masks=None):
  """The mixture for both cell types.

  Args:
    alphas: dict cell type -> op logits [num_edges, num_ops].
    betas: dict cell type -> combination logits [num_combinations], or None (summed inputs).
    num_nodes, k: the cell's intermediate nodes and inputs per combination.
    tau_alpha, tau_beta: softmax temperatures.
    threshold: > 0 prunes op and combination weights at or below it (the task-specific
      architecture of METANAS; ops that are exactly 0 are then not computed when the
      weights are known at trace time).
    op_masks: optional dict cell type -> [num_edges, num_ops] numpy bools (structural
      state): ops that are False get weight 0, the softmax runs over the others, and the
      network does not compute them.

  Returns:
    dict "<cell type>_ops" -> [num_edges, num_ops], "<cell type>_edges" -> [num_edges],
    and with op_masks "<cell type>_mask" -> the cell type's mask.
  """
  out = {}
  for cell in CELL_TYPES:
    alpha = alphas[cell]
    if op_masks is not None:
      out[f"{cell}_mask"] = op_masks[cell]
      alpha = masked_logits(alpha, op_masks[cell])
    out[f"{cell}_ops"] = prune(op_weights(alpha, tau_alpha), threshold)
    if betas is None:
      out[f"{cell}_edges"] = K.ones((topology.num_edges(num_nodes),), alphas[cell].dtype)
    else:
      out[f"{cell}_edges"] = edge_weights(betas[cell], num_nodes, k, tau_beta, threshold)
  return out


def darts_logits(alpha, num_nodes, op_names, k=2):
  """The DARTS-decoded cell of op logits `alpha` [num_edges, num_ops] (Liu et al. 2019,
  Sec. 2.4; T-NAS Algorithm 2) as logits whose softmax is its one-hot mixture.

  The op weights are softmax(alpha) over every op ("none" included, as the DARTS and T-NAS
  code); each edge's strength is its largest non-"none" weight; each node keeps its k
  strongest incoming edges (ties: the lower input first), each with its argmax non-"none"
  op; every other edge gets the "none" op, i.e. it is absent. The result is 0 at the chosen
  op and REMOVED_LOGIT elsewhere, so a SearchNetwork run on it computes the decoded network
  exactly with the supernet's weights (the "kept weights" evaluation). Differentiable nowhere
  (a selection); `search.genotype.derive_darts` is the same rule in numpy.
  """
  names = list(op_names)
  if "none" not in names:
    raise ValueError(f"DARTS decoding drops edges with the 'none' op, which the op set "
                     f"{names} lacks")
  none = names.index("none")
  weights = op_weights(alpha)
  is_none = K.convert_to_tensor([n == "none" for n in names])
  masked = K.where(is_none[None, :], K.full_like(weights, -1.0), weights)
  best, strength = K.argmax(masked, axis=-1), K.max(masked, axis=-1)
  kept = K.zeros_like(strength)
  for edges in topology.node_edges(num_nodes):
    index = [e for e, _ in edges]
    top = K.top_k(K.take(strength, index), min(k, len(index)))[1]
    chosen = K.sum(K.one_hot(top, len(index), dtype=strength.dtype), axis=0)
    kept = kept + K.scatter(K.convert_to_tensor([[e] for e in index]), chosen,
                            (topology.num_edges(num_nodes),))
  num_ops = len(names)
  target = (kept[:, None] * K.one_hot(best, num_ops, dtype=alpha.dtype)
            + (1.0 - kept[:, None]) * K.one_hot(K.full_like(best, none), num_ops,
                                                dtype=alpha.dtype))
  return K.where(target > 0.5, K.zeros_like(alpha), K.full_like(alpha, REMOVED_LOGIT))
