"""Auto-Meta's cell space (Kim et al. 2018, after PNAS, Liu et al. 2018): cells of blocks.

A cell has up to B blocks. Block b (0-based) takes two inputs, each through an op of the op
set, and adds them; an input is one of the cell's two inputs (0: the cell two back, 1: the
cell one back) or an earlier block (i >= 2 is block i - 2). A BlockCell is an immutable
value: JSON in and out, a compact one-line form, a picture (`search.visualize.draw_cell`),
and a `Genotype` whose nodes are the blocks, the same cell for the normal and the reduction
position (PNAS uses one cell, at stride 2 where it reduces), so that `FixedNetwork` builds
it. As FixedCell does, the cell's output concatenates every block (PNAS concatenates the
blocks no other block reads; the authors' code is not public).

The two (input, op) pairs of a block are unordered (addition commutes): a block is stored
with its pairs sorted, so each cell has one form and `expansions` lists each cell once.
"""

import dataclasses
import hashlib
import itertools

from tf_metanas.search import genotype as genotype_lib

FORMAT_VERSION = genotype_lib.FORMAT_VERSION


def _canonical_block(block):
  pairs = tuple(sorted((int(i), str(op)) for op, i in block))
  if len(pairs) != 2:
    raise ValueError(f"a block adds exactly two (op, input) pairs, got {block!r}")
  return tuple((op, i) for i, op in pairs)


@dataclasses.dataclass(frozen=True)
class BlockCell(genotype_lib.JsonValue):
  """blocks: for each block, two (op name, input index) pairs (see the module docstring)."""

  blocks: tuple
  KIND = "block cell"

  def __post_init__(self):
    blocks = tuple(_canonical_block(block) for block in self.blocks)
    if not blocks:
      raise ValueError("a cell has at least one block")
    for b, block in enumerate(blocks):
      for op, i in block:
        if not 0 <= i < b + 2:
          raise ValueError(f"block {b} cannot take input {i}: its inputs are 0, 1 (the cell "
                           f"inputs) and 2..{b + 1} (earlier blocks); op {op}")
    object.__setattr__(self, "blocks", blocks)

  @property
  def num_blocks(self):
    return len(self.blocks)

  def depth(self):
    """The longest chain of blocks from a cell input to the output (the paper's Fig. 2 "Dx")."""
    depths = []
    for block in self.blocks:
      depths.append(1 + max(depths[i - 2] if i >= 2 else 0 for _, i in block))
    return max(depths)

  def genotype(self):
    """The Genotype of this cell in both the normal and the reduction position."""
    return genotype_lib.Genotype(normal=self.blocks, reduce=self.blocks)

  def summary(self):
    """One line: `b: op(input) + op(input)` per block, blocks separated by `; `."""
    return "; ".join(f"{b}: " + " + ".join(f"{op}({i})" for op, i in block)
                      for b, block in enumerate(self.blocks))

  def to_dict(self):
    return {"format_version": FORMAT_VERSION,
            "blocks": [[list(pair) for pair in block] for block in self.blocks]}

  @classmethod
  def _from_fields(cls, data):
    return cls(data["blocks"])

  def key(self):
    """A short stable name (12 hex digits of the SHA-256 of the JSON): the candidate's
    directory."""
    return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:12]

  def seed(self):
    """The candidate's seed, from its JSON alone: the same cell trains the same everywhere."""
    return int(hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:8], 16) % (2 ** 31)


def _blocks_with_inputs(num_inputs, op_names):
  """Every unordered pair (with repetition) of (op, input) choices over `num_inputs` inputs:
  n (n + 1) / 2 blocks for n = num_inputs * len(op_names)."""
  choices = [(op, i) for i in range(num_inputs) for op in op_names]
  return [(a, b) for a, b in itertools.combinations_with_replacement(choices, 2)]


def first_cells(op_names):
  """Every 1-block cell: n (n + 1) / 2 of them, n = 2 * len(op_names) (55 for Auto-Meta's
  five ops)."""
  return [BlockCell((block,)) for block in _blocks_with_inputs(2, tuple(op_names))]


def expansions(cell, op_names):
  """Every (b + 1)-block cell that adds one block to the b-block `cell`: the new block takes
  any two (op, input) choices over the b + 2 inputs, unordered, n (n + 1) / 2 cells for
  n = (b + 2) * len(op_names)."""
  return [BlockCell(cell.blocks + (block,))
          for block in _blocks_with_inputs(cell.num_blocks + 2, tuple(op_names))]


def expand_all(cells, op_names):
  """The expansions of every cell in `cells`, in order (distinct cells have distinct
  expansions: a child's first blocks are its parent)."""
  return [child for cell in cells for child in expansions(cell, op_names)]
