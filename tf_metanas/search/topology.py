"""The wiring of a DARTS-style cell: edges, input nodes and input combinations.

Node j (0-based, n intermediate nodes) takes inputs from the two cell inputs and every
earlier intermediate node: input indices 0 .. j + 1, where 0 and 1 are the cell inputs and
i >= 2 is intermediate node i - 2. Edges are numbered node by node, inputs in order.
"""

import functools
import itertools

import numpy as np


def num_inputs(node):
  return node + 2


def num_edges(num_nodes):
  return sum(num_inputs(j) for j in range(num_nodes))


def edge_index(node, input_index):
  """The global index of the edge from input `input_index` into `node`."""
  return sum(num_inputs(j) for j in range(node)) + input_index


def node_edges(num_nodes):
  """For each node, the list of (edge index, input index)."""
  return [[(edge_index(j, i), i) for i in range(num_inputs(j))] for j in range(num_nodes)]


def node_slices(num_nodes):
  """[(start, stop)] of each node's incoming edges (contiguous in the edge order)."""
  return [(edge_index(j, 0), edge_index(j, num_inputs(j))) for j in range(num_nodes)]


@functools.lru_cache(maxsize=None)
def input_combinations(num_nodes, k):
  """For each node, its k-subsets of inputs (METANAS Eq. 7); all inputs if it has <= k."""
  return tuple(
      tuple(itertools.combinations(range(num_inputs(j)), min(k, num_inputs(j))))
      for j in range(num_nodes))


def num_combinations(num_nodes, k):
  return sum(len(c) for c in input_combinations(num_nodes, k))


@functools.lru_cache(maxsize=None)
def combination_to_edges(num_nodes, k):
  """A 0/1 matrix [num_combinations, num_edges]: which edges each combination sums.

  With combination weights w (per node, summing to one), the weight of edge (i, j) is the
  total weight of node j's combinations that contain i: w @ M. This lets Eq. 7 be computed
  with one MixedOp evaluation per edge.
  """
  matrix = np.zeros((num_combinations(num_nodes, k), num_edges(num_nodes)), np.float32)
  row = 0
  for j, combos in enumerate(input_combinations(num_nodes, k)):
    for combo in combos:
      for i in combo:
        matrix[row, edge_index(j, i)] = 1.0
      row += 1
  return matrix


def combination_segments(num_nodes, k):
  """[(start, stop)] of each node's combinations in the flat combination vector."""
  segments, start = [], 0
  for combos in input_combinations(num_nodes, k):
    segments.append((start, start + len(combos)))
    start += len(combos)
  return segments
