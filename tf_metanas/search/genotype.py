"""Genotype: a discrete cell architecture as an immutable value, and the rules deriving it.

A genotype lists, for the normal and the reduction cell, each intermediate node's
(op, input) pairs; inputs 0 and 1 are the cell inputs, i >= 2 is intermediate node i - 2.
Several ops on the same input are allowed (METANAS threshold pruning keeps them).
"""

import dataclasses
import json

import numpy as np

from tf_metanas.search import topology

FORMAT_VERSION = 1
# Op names in `Genotype.compact`.
SHORT_NAMES = {"none": "none", "skip_connect": "id", "max_pool_3x3": "mp3",
               "avg_pool_3x3": "ap3", "conv_3x3": "c3", "full_conv_3x3": "fc3",
               "conv_1x5_5x1": "c15", "conv_7x1_1x7": "c17", "sep_conv_3x3": "sep3",
               "sep_conv_5x5": "sep5", "sep_conv_7x7": "sep7", "dil_conv_3x3": "dil3",
               "dil_conv_5x5": "dil5"}


def _freeze(nodes):
  return tuple(tuple((str(op), int(i)) for op, i in node) for node in nodes)


class JsonValue:
  """JSON in and out, format-versioned, for an immutable value with `to_dict()` (which holds
  "format_version") and `_from_fields(data)`; `KIND` names it in errors."""

  KIND = "value"

  def to_json(self):
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, data):
    version = data.get("format_version")
    if version != FORMAT_VERSION:
      raise ValueError(f"{cls.KIND} format version {version!r}; this library reads "
                       f"version {FORMAT_VERSION}")
    return cls._from_fields(data)

  @classmethod
  def from_json(cls, text):
    return cls.from_dict(json.loads(text))


def _compact_node(node):
  """`op(input)+op(input)` with short op names, `-` for a node without ops."""
  return "+".join(f"{SHORT_NAMES.get(op, op)}({i})" for op, i in node) or "-"


@dataclasses.dataclass(frozen=True)
class Genotype(JsonValue):
  """normal, reduce: for each intermediate node, a tuple of (op name, input index) pairs."""

  normal: tuple
  reduce: tuple
  KIND = "genotype"

  def __post_init__(self):
    object.__setattr__(self, "normal", _freeze(self.normal))
    object.__setattr__(self, "reduce", _freeze(self.reduce))
    for cell in (self.normal, self.reduce):
      for j, node in enumerate(cell):
        for op, i in node:
          if not 0 <= i < topology.num_inputs(j):
            raise ValueError(f"node {j} cannot take input {i} (inputs 0..{j + 1}); op {op}")

  @property
  def num_nodes(self):
    return len(self.normal)

  def cell(self, cell_type):
    return self.normal if cell_type == "normal" else self.reduce

  def compact(self):
    """One short line: each cell's nodes as `op(input)+op(input)` with short op names
    (`SHORT_NAMES`: sep3 = sep_conv_3x3, id = skip_connect, ...), nodes separated by spaces,
    `-` for a node without ops: `normal: sep3(0)+id(1) mp3(2)  reduce: ...`."""
    def cell(nodes):
      return " ".join(_compact_node(node) for node in nodes)
    return f"normal: {cell(self.normal)}  reduce: {cell(self.reduce)}"

  def compact_table(self):
    """A markdown table of the compact form, one row per node, normal and reduction cell
    side by side (readable where a node keeps many ops)."""
    rows = ["| node | normal | reduce |", "|---|---|---|"]
    rows += [f"| {j} | `{_compact_node(n)}` | `{_compact_node(r)}` |"
             for j, (n, r) in enumerate(zip(self.normal, self.reduce))]
    return "\n".join(rows)

  def to_dict(self):
    return {"format_version": FORMAT_VERSION,
            "normal": [[list(p) for p in node] for node in self.normal],
            "reduce": [[list(p) for p in node] for node in self.reduce]}

  def summary(self):
    """One line: each cell's nodes as `j: op(input), ...` (inputs 0, 1 are the cell inputs,
    i >= 2 is node i - 2)."""
    def cell(nodes):
      return " | ".join(f"{j}: " + ", ".join(f"{op}({i})" for op, i in node)
                        for j, node in enumerate(nodes))
    return f"normal [{cell(self.normal)}]  reduce [{cell(self.reduce)}]"

  @classmethod
  def _from_fields(cls, data):
    return cls(data["normal"], data["reduce"])


def _darts_cell(op_weights, edge_weights, op_names, num_nodes, k, fixed, dropped=()):
  nodes = []
  for edges in topology.node_edges(num_nodes):
    candidates = []
    for e, i in edges:
      if e in dropped:
        continue
      if e in fixed:
        candidates.append((np.inf, fixed[e], i))
        continue
      weights = op_weights[e] * edge_weights[e]
      order = [o for o in np.argsort(-weights, kind="stable") if op_names[o] != "none"]
      candidates.append((weights[order[0]], op_names[order[0]], i))
    candidates.sort(key=lambda c: (-c[0], c[2]))
    nodes.append(tuple(sorted(((op, i) for _, op, i in candidates[:k]), key=lambda p: p[1])))
  return tuple(nodes)


def derive_darts(mixture, op_names, num_nodes, k=2):
  """The DARTS rule: per node, the k incoming edges with the strongest non-"none" op, each
  with its argmax non-"none" op (Liu et al. 2019, Sec. 2.4).

  Args:
    mixture: dict "<cell>_ops" [num_edges, num_ops] and "<cell>_edges" [num_edges]
      (see tf_metanas.arch.mixture); edge weights scale the op weights.
    op_names: the op set.
    num_nodes: intermediate nodes per cell.
    k: incoming edges kept per node.
  """
  return derive_consolidated(mixture, op_names, num_nodes, fixed={}, k=k)


def derive_consolidated(mixture, op_names, num_nodes, fixed, k=2, dropped=None):
  """DARTS rule with consolidated edges (CAML PCC): edges in `fixed` keep their fixed op and
  rank above every free edge; `dropped` edges are absent.

  Args:
    fixed: dict cell type -> {edge index: op name} of the consolidated edges.
    dropped: dict cell type -> edge indices dropped (no op left), or None.
  """
  dropped = dropped or {}
  return Genotype(**{cell: _darts_cell(np.asarray(mixture[f"{cell}_ops"]),
                                       np.asarray(mixture[f"{cell}_edges"]), tuple(op_names),
                                       num_nodes, k, dict(fixed.get(cell, {})),
                                       set(dropped.get(cell, ())))
                     for cell in ("normal", "reduce")})


def _threshold_cell(op_weights, combination_weights, op_names, num_nodes, k, threshold):
  nodes = []
  for j, (edges, combos) in enumerate(zip(topology.node_edges(num_nodes),
                                          topology.input_combinations(num_nodes, k))):
    if combination_weights is None:
      kept_inputs = set(range(topology.num_inputs(j)))
    else:
      start, stop = topology.combination_segments(num_nodes, k)[j]
      kept_inputs = {i for combo, w in zip(combos, combination_weights[start:stop])
                     if w > threshold for i in combo}
    pairs = []
    for e, i in edges:
      if i in kept_inputs:
        pairs.extend((op_names[o], i) for o in range(len(op_names))
                     if op_weights[e, o] > threshold and op_names[o] != "none")
    nodes.append(tuple(pairs))
  return tuple(nodes)


def derive_threshold(mixture, combination_weights, op_names, num_nodes, k=2, threshold=0.01):
  """The METANAS pruning rule (Sec. 4): keep every input combination whose normalized weight
  is above the threshold and, on the inputs those combinations use, every op whose
  normalized weight is above it; prune the rest (weights at the threshold are pruned, as
  the authors' code). Several ops per edge may survive.

  Args:
    mixture: dict "<cell>_ops" [num_edges, num_ops] (normalized, Eq. 5).
    combination_weights: dict cell type -> normalized combination weights (Eq. 7), flat over
      nodes as `tf_metanas.arch.mixture.combination_weights` returns them; None when node
      inputs are summed (every input kept).
  """
  return Genotype(**{
      cell: _threshold_cell(
          np.asarray(mixture[f"{cell}_ops"]),
          None if combination_weights is None else np.asarray(combination_weights[cell]),
          tuple(op_names), num_nodes, k, threshold)
      for cell in ("normal", "reduce")})


def _pairwise_cell(alpha, beta, op_names, num_nodes):
  nodes = []
  allowed = np.array([name != "none" for name in op_names])
  for j, (start, stop) in enumerate(topology.combination_segments(num_nodes, 2)):
    pair = topology.input_combinations(num_nodes, 2)[j][int(np.argmax(beta[start:stop]))]
    nodes.append(tuple(
        (op_names[int(np.argmax(np.where(allowed, alpha[topology.edge_index(j, i)], -np.inf)))], i)
        for i in pair))
  return tuple(nodes)


def derive_pairwise(alphas, betas, op_names, num_nodes):
  """The METANAS authors' pairwise rule (`parse_pairwise`), the genotype they scale up
  (Sec. 5.2): per node, the input pair with the largest combination logit beta, then on
  each of its two edges the op with the largest logit alpha (never "none"): two ops per
  node. Logits, not weights: the argmaxes do not depend on the temperatures.

  Args:
    alphas: dict cell type -> op logits [num_edges, num_ops].
    betas: dict cell type -> pair logits [num_combinations] (k = 2).
  """
  return Genotype(**{cell: _pairwise_cell(np.asarray(alphas[cell]), np.asarray(betas[cell]),
                                          tuple(op_names), num_nodes)
                     for cell in ("normal", "reduce")})


def _pairs_cell(logits, op_names, num_nodes):
  allowed = np.array([name != "none" for name in op_names])
  nodes = []
  for start, stop in topology.node_slices(num_nodes):
    block = np.where(allowed, logits[:, start:stop, :], -np.inf)  # [slots, inputs, ops]
    block = block.reshape(len(block), -1)
    flat = np.argmax(block, axis=-1)  # ties: the lower input, then the earlier op
    nodes.append(tuple((op_names[f % len(op_names)], int(f // len(op_names))) for f in flat))
  return tuple(nodes)


def derive_pairs(logits, op_names, num_nodes):
  """The most probable architecture of the per-node (input, op) pair space (BASE, Shaw et
  al. 2019; the genotypes of the authors' our_models.py): per node and slot, the argmax of
  the slot's categorical over the node's (input, op) grid, never "none"; slots in order,
  one pair each (two slots may pick the same pair: sampling with replacement). Logits, not
  probabilities: the argmax does not depend on the temperature.

  Args:
    logits: dict cell type -> pair logits [slots, num_edges, num_ops] (see
      `search.pair_network`).
    op_names: the op set.
    num_nodes: intermediate nodes per cell.
  """
  return Genotype(**{cell: _pairs_cell(np.asarray(logits[cell]), tuple(op_names), num_nodes)
                     for cell in ("normal", "reduce")})
