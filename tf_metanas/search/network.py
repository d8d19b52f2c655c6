"""SearchNetwork (the supernet) and FixedNetwork (a discrete network from a Genotype)."""

import keras
import numpy as np
from keras import layers

from tf_metanas import checks
from tf_metanas import stateless
from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.search import batch_norm
from tf_metanas.search import cell as cell_lib
from tf_metanas.search import functional
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import ops as ops_lib
from tf_metanas.search import stem as stem_lib
from tf_metanas.search import topology


STEMS = stem_lib.KINDS
HEAD_PREFIX = "head_"


class _Network(functional.FunctionalModel):
  """Stem, a stack of cells, global average pooling and a linear classifier.

  Args:
    num_classes: ways of the few-shot tasks.
    channels: C, the channels of each cell's nodes.
    num_cells: cells in the stack.
    reduction_cells: 0-based indices of the reduction cells (METANAS: (1, 3), the second
      and fourth of four).
    channel_doubling: double C at every reduction (DARTS) or keep it constant (METANAS).
    stem_multiplier: the stem has stem_multiplier * C channels.
    drop_path_rate: DropPath probability inside the cells (training only).
    stem: "conv" (DARTS, METANAS: 3x3 conv, BN), "halved" (3x3 conv, BN, 2x2 max-pool)
      or "pooled" (T-NAS's mini-ImageNet stem: 3x3 conv to half the stem's channels, BN,
      2x2 max-pool, ReLU, then 3x3 conv, BN, 2x2 max-pool; BatchNorms affine), which takes
      84-pixel images to 21 before the cells (`search.stem.Stem`).
    heads: None (one stem, part of the weights), or a dict image shape "HxWxC" -> stem
      kind: one stem per input shape (BASE's multi-size heads, e.g. {"28x28x1": "conv",
      "84x84x3": "pooled"}), each its own parameter group "head_HxWxC"; a batch goes
      through the head of its shape; the cells and the classifier are shared.
  """

  def __init__(self, num_classes, channels, num_cells, reduction_cells, channel_doubling,
               stem_multiplier, drop_path_rate, stem="conv", heads=None, **kwargs):
    super().__init__(**kwargs)
    if stem not in STEMS:
      raise ValueError(f"unknown stem {stem!r}; use one of {STEMS}")
    self.num_classes, self.channels, self.num_cells = int(num_classes), int(channels), int(num_cells)
    self.reduction_cells = tuple(int(i) for i in reduction_cells)
    self.channel_doubling, self.stem_multiplier = bool(channel_doubling), int(stem_multiplier)
    self.drop_path_rate, self.stem = float(drop_path_rate), stem
    self.heads = stem_lib.check_heads(heads)
    kinds = self.heads or {None: stem}
    self.stems = [stem_lib.Stem(kind, stem_multiplier * channels) for kind in kinds.values()]
    self._stem_keys = list(kinds)
    self.pool = layers.GlobalAveragePooling2D()
    self.classifier = layers.Dense(num_classes)

  def stem_for(self, shape):
    """The stem of images of shape [(batch,) H, W, C]: the one stem, or the head of that
    shape (ConfigValueError naming the missing head)."""
    if not self.heads:
      return self.stems[0]
    if shape is None:
      raise checks.ConfigValueError(f"this network has a head per image shape "
                                    f"({sorted(self.heads)}): say which image shape")
    key = stem_lib.shape_key(shape)
    if key not in self.heads:
      raise checks.ConfigValueError(
          f"{key} images, but SearchNetwork.heads has heads for {sorted(self.heads)} only: "
          f"add '{key}': one of {stem_lib.KINDS} to SearchNetwork.heads")
    return self.stems[self._stem_keys.index(key)]

  def check_input_shape(self, shape):
    """Raises ConfigValueError unless images of `shape` have a stem."""
    self.stem_for(shape)

  @property
  def head_groups(self):
    """Head parameter group name -> its stem's variables (none without heads)."""
    if not self.heads:
      return {}
    return {HEAD_PREFIX + key: list(stem.trainable_variables)
            for key, stem in zip(self._stem_keys, self.stems)}

  @property
  def weight_variables(self):
    """The shared weights w: trainable variables that are neither architecture variables
    nor in a head."""
    heads = {id(v) for group in self.head_groups.values() for v in group}
    return [v for v in super().weight_variables if id(v) not in heads]

  def head_group(self, shape):
    """The parameter group of the head images of shape [(batch,) H, W, C] go through
    ("head_HxWxC"), or None for a one-stem network."""
    return HEAD_PREFIX + stem_lib.shape_key(shape) if self.heads else None

  def parameter_groups(self):
    """"weights", "arch" (with an architecture) and one "head_HxWxC" per head."""
    return {**super().parameter_groups(), **self.head_groups}

  def _cell_plan(self):
    """(channels, reduction, reduction_prev) for each cell."""
    plan, c, reduction_prev = [], self.channels, False
    for index in range(self.num_cells):
      reduction = index in self.reduction_cells
      if reduction and self.channel_doubling:
        c *= 2
      plan.append((c, reduction, reduction_prev))
      reduction_prev = reduction
    return plan

  def _features(self, images, cell_call, training, seed=None):
    """`cell_call(cell, s0, s1, seed)` with each cell's DropPath seed (cell i folds in i)."""
    x = keras.ops.cast(images, self.compute_dtype)
    s0 = s1 = self.stem_for(images.shape)(x, training=training)
    for index, cell in enumerate(self.cells):
      s0, s1 = s1, cell_call(cell, s0, s1, stateless.fold(seed, index))
    return self.classifier(self.pool(s1))

  def call_options(self, regularize, seed=None):
    """With DropPath on: `drop_path=False` when not regularizing, else the draws' `seed`."""
    if not self.drop_path_rate:
      return {}
    if not regularize:
      return {"drop_path": False}
    return {} if seed is None else {"seed": seed}

  def build(self, input_shape):
    input_shape = tuple(input_shape)
    stem = self.stem_for(input_shape)  # every head is built, the cells from this one's output
    for key, each in zip(self._stem_keys, self.stems):
      each.build(input_shape if key is None else (None,) + stem_lib.parse_key(key))
    shape = stem.compute_output_shape(input_shape)
    s0 = s1 = shape
    for cell in self.cells:
      cell.build(s0, s1)
      s0, s1 = s1, cell.compute_output_shape(s0, s1)
    self.classifier.build((shape[0], s1[-1]))

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes,
            "channels": self.channels, "num_cells": self.num_cells,
            "reduction_cells": self.reduction_cells, "channel_doubling": self.channel_doubling,
            "stem_multiplier": self.stem_multiplier, "drop_path_rate": self.drop_path_rate,
            "stem": self.stem, "heads": self.heads}


@keras.saving.register_keras_serializable("tf_metanas")
class SearchNetwork(_Network):
  """The DARTS / METANAS supernet: every cell edge is a MixedOp.

  Args (besides those of the stack, see `_Network`):
    num_nodes: intermediate nodes per cell (METANAS 3, DARTS 4).
    op_set: op set name ("S1", "DARTS", "PNAS") or a tuple of op names.
    input_k: inputs per combination for METANAS Eq. 7 input weights (2 in the paper), or
      0 to sum every input (DARTS) without input weights.
    running_statistics: BatchNorms keep moving statistics (False, the default: always
      batch statistics, as the inner loops use them; a much smaller graph).
    affine: affine BatchNorms in the cells' ops and preprocessing (False: DARTS, METANAS,
      T-NAS; True: the CAML authors' supernet, built on MAML++'s meta BatchNorm).

  Architecture variables: alpha_normal / alpha_reduce [num_edges, num_ops] and, with
  input_k > 0, beta_normal / beta_reduce [num_combinations], all initialized to 1e-3 * N(0, 1)
  as in DARTS.

  Call arguments:
    images: [B, H, W, C] (any numeric dtype; cast to the compute dtype).
    mixture: dict of normalized weights (`tf_metanas.arch.mixture.mixture`); None uses
      softmax of the architecture variables at temperature 1, with `op_masks`.
    op_masks: with mixture None, a structure's op masks (see `mixture`).
    training: BatchNorm and DropPath mode.
    drop_path: DropPath on or off (default: `training`).
    seed: optional [2] int stateless seed of the DropPath masks (default: stateful draws).

  Example:
    net = SearchNetwork(num_classes=5)
    net.build((None, 28, 28, 1))
    logits = net(images, training=True)
  """

  def __init__(self, num_classes, channels=28, num_cells=4, reduction_cells=(1, 3),
               num_nodes=3, op_set="S1", input_k=2, channel_doubling=False, stem_multiplier=3,
               drop_path_rate=0.0, seed=None, running_statistics=False, affine=False,
               **kwargs):
    super().__init__(num_classes, channels, num_cells, reduction_cells, channel_doubling,
                     stem_multiplier, drop_path_rate, **kwargs)
    self.num_nodes, self.input_k, self.seed = int(num_nodes), int(input_k), seed
    self.affine = bool(affine)
    self.running_statistics = bool(running_statistics)
    self.op_set = op_set if isinstance(op_set, str) else tuple(op_set)
    self.op_names = ops_lib.op_set(op_set)
    self.cells = [cell_lib.SearchCell(c, num_nodes, self.op_names, reduction, reduction_prev,
                                      affine=self.affine, drop_path_rate=drop_path_rate)
                  for c, reduction, reduction_prev in self._cell_plan()]
    for layer in self._flatten_layers(include_self=False):
      if isinstance(layer, batch_norm.BatchNorm):
        layer.running_statistics = self.running_statistics
    self._add_arch_variables(keras.initializers.RandomNormal(stddev=1e-3, seed=seed))

  def _add_arch_variables(self, init):
    """Creates the architecture variables (subclasses with another space override it)."""
    shape = (topology.num_edges(self.num_nodes), len(self.op_names))
    self.alpha_normal = self.add_weight(shape=shape, initializer=init, name="alpha_normal")
    self.alpha_reduce = self.add_weight(shape=shape, initializer=init, name="alpha_reduce")
    if self.input_k:
      size = (topology.num_combinations(self.num_nodes, self.input_k),)
      self.beta_normal = self.add_weight(shape=size, initializer=init, name="beta_normal")
      self.beta_reduce = self.add_weight(shape=size, initializer=init, name="beta_reduce")

  @property
  def arch_variables(self):
    """The architecture variables a: alphas, then betas (when input_k > 0)."""
    alphas = [self.alpha_normal, self.alpha_reduce]
    return alphas + ([self.beta_normal, self.beta_reduce] if self.input_k else [])

  def arch_dict(self, arch=None):
    """(alphas, betas) dicts keyed by cell type, from tensors in `arch_variables` order."""
    arch = [keras.ops.convert_to_tensor(v) for v in self.arch_variables] if arch is None else arch
    alphas = dict(zip(mixture_lib.CELL_TYPES, arch[:2]))
    betas = dict(zip(mixture_lib.CELL_TYPES, arch[2:])) if self.input_k else None
    return alphas, betas

  def categoricals(self, arch=None):
    """The architecture's categoricals as logits whose last axis is one categorical: the
    op logits of every edge ([num_edges, num_ops] per cell type) and, with input_k > 0,
    each node's combination logits (for a KL prior or choice tables)."""
    alphas, betas = self.arch_dict(arch)
    out = list(alphas.values())
    for beta in (betas or {}).values():
      out += [beta[start:stop] for start, stop in
              topology.combination_segments(self.num_nodes, self.input_k)]
    return out

  def choice_tables(self, arch=None):
    """Choice probabilities for display: dict cell type -> [num_edges, num_ops] numpy,
    softmax(alpha) of every edge (temperature-free)."""
    alphas, _ = self.arch_dict(arch)
    return {cell: mixture_lib.op_weights(alpha).numpy() for cell, alpha in alphas.items()}

  def mixture(self, arch=None, tau_alpha=1.0, tau_beta=1.0, threshold=0.0, op_masks=None):
    """Softmax mixture weights with temperatures (Eq. 5, 7) from `arch` or the variables;
    `threshold` > 0 prunes the weights below it (METANAS task-specific architecture);
    `op_masks` (cell type -> [num_edges, num_ops] numpy bools, a `Structure`'s) removes
    the ops that are False: the softmax runs over the others, which are not computed."""
    alphas, betas = self.arch_dict(arch)
    return mixture_lib.mixture(alphas, betas, self.num_nodes, max(self.input_k, 1),
                               tau_alpha, tau_beta, threshold, op_masks)

  def call(self, images, mixture=None, training=None, drop_path=None, seed=None,
           op_masks=None):
    mixture = self.mixture(op_masks=op_masks) if mixture is None else mixture

    def cell_call(cell, s0, s1, cell_seed):
      kind = "reduce" if cell.reduction else "normal"
      return cell(s0, s1, mixture[f"{kind}_ops"], mixture[f"{kind}_edges"], training=training,
                  drop_path=drop_path, op_mask=mixture.get(f"{kind}_mask"), seed=cell_seed)

    return self._features(images, cell_call, training, seed)

  def genotype(self, rule="darts", arch=None, k=2, threshold=0.01, tau_alpha=1.0,
               tau_beta=1.0):
    """The genotype of an architecture by the DARTS ("darts"), the METANAS threshold
    ("threshold") or the METANAS authors' pairwise ("pairwise") rule.

    Args:
      rule: "darts" (top-k inputs, argmax op), "threshold" (METANAS pruning) or
        "pairwise" (the strongest input pair, the strongest op on each of its edges; needs
        input_k = 2).
      arch: architecture tensors in `arch_variables` order (e.g. a task's adapted ones);
        None for the variables.
      k: inputs kept per node by the DARTS rule.
      threshold: the METANAS pruning threshold on normalized weights.
      tau_alpha, tau_beta: the softmax temperatures the weights are normalized with.
    """
    if rule == "pairwise":
      if self.input_k != 2:
        raise ValueError(f"the pairwise genotype rule needs input pairs (input_k = 2), "
                         f"this SearchNetwork has input_k = {self.input_k}")
      alphas, betas = self.arch_dict(arch)
      return genotype_lib.derive_pairwise(alphas, betas, self.op_names, self.num_nodes)
    mixture = self.mixture(arch, tau_alpha=tau_alpha, tau_beta=tau_beta)
    if rule == "darts":
      return genotype_lib.derive_darts(mixture, self.op_names, self.num_nodes, k)
    if rule != "threshold":
      raise ValueError(f"unknown genotype rule {rule!r}; use 'darts', 'threshold' or "
                       f"'pairwise'")
    combos = None
    if self.input_k:
      _, betas = self.arch_dict(arch)
      combos = {c: mixture_lib.combination_weights(betas[c], self.num_nodes, self.input_k,
                                                   tau_beta) for c in betas}
    return genotype_lib.derive_threshold(mixture, combos, self.op_names, self.num_nodes,
                                         self.input_k or 2, threshold)

  def count_params_of(self, genotype):
    """Trainable weights the pruned network keeps: stem, cell preprocessing, the ops that
    `genotype` keeps on each edge, and the classifier (architecture variables excluded)."""
    count = lambda layer: sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
    total = count(self.stems[0]) + count(self.classifier)
    for cell in self.cells:
      total += count(cell.preprocess0) + count(cell.preprocess1)
      for j, node in enumerate(genotype.reduce if cell.reduction else genotype.normal):
        for op, i in node:
          mixed = cell.edges[topology.edge_index(j, i)]
          total += count(mixed.candidates[self.op_names.index(op)])
    return total

  def get_config(self):
    return {**super().get_config(), "num_nodes": self.num_nodes, "op_set": self.op_set,
            "input_k": self.input_k, "seed": self.seed,
            "running_statistics": self.running_statistics, "affine": self.affine}


@keras.saving.register_keras_serializable("tf_metanas")
class FixedNetwork(_Network):
  """The discrete network of a Genotype: the task-specific (pruned) network, or a scaled-up
  one for retraining (METANAS Sec. 5.2: 5 cells, C = 96, DropPath 0.2).

  Args (besides those of the stack):
    genotype: a Genotype (or its dict form).
    affine: affine BatchNorms in the cells (False matches the supernet's parameter count).
  """

  def __init__(self, genotype, num_classes, channels=28, num_cells=4, reduction_cells=(1, 3),
               channel_doubling=False, stem_multiplier=3, drop_path_rate=0.0, affine=True,
               **kwargs):
    super().__init__(num_classes, channels, num_cells, reduction_cells, channel_doubling,
                     stem_multiplier, drop_path_rate, **kwargs)
    if isinstance(genotype, dict):
      genotype = genotype_lib.Genotype.from_dict(genotype)
    self.genotype, self.affine = genotype, bool(affine)
    self.cells = [cell_lib.FixedCell(c, genotype.reduce if reduction else genotype.normal,
                                     reduction, reduction_prev, affine, drop_path_rate)
                  for c, reduction, reduction_prev in self._cell_plan()]

  def call(self, images, training=None, drop_path=None, seed=None):
    """Logits; `drop_path` turns DropPath on or off (default: `training`); `seed`: optional
    [2] int stateless seed of the DropPath masks."""
    return self._features(
        images, lambda cell, s0, s1, cell_seed: cell(s0, s1, training=training,
                                                     drop_path=drop_path, seed=cell_seed),
        training, seed)

  def get_config(self):
    return {**super().get_config(), "genotype": self.genotype.to_dict(), "affine": self.affine}


def _leaf_layers(layer):
  return [l for l in layer._flatten_layers(include_self=True)  # pylint: disable=protected-access
          if not l._layers]  # pylint: disable=protected-access


def _copy_layer(source, target):
  """Copies `source`'s weights into the same-structured `target`, by leaf layer and name;
  a target weight the source lacks (an affine BatchNorm's scale and shift where the source
  has none) keeps its initial value (1 and 0: the same function)."""
  sources, targets = _leaf_layers(source), _leaf_layers(target)
  if [type(l) for l in sources] != [type(l) for l in targets]:
    raise ValueError(f"cannot copy {type(source).__name__} weights into "
                     f"{type(target).__name__}: their layers differ")
  for src, dst in zip(sources, targets):
    given = {v.name: v for v in src.trainable_weights}
    for variable in dst.trainable_weights:
      if variable.name in given:
        variable.assign(given[variable.name])


def copy_kept_weights(search, fixed, image_shape=None):
  """Initializes FixedNetwork `fixed` from SearchNetwork `search`'s weights: the stem, the
  cells' preprocessing, the classifier and, for every (op, input) of node j of `fixed`'s
  genotype, the weights of that op on edge (input, j) of the search cell (CAML: "train
  from kept weights"). The skeletons (channels, cells, stem) must match; a search network
  with heads gives the stem of its head of `image_shape` ([H, W, C])."""
  if fixed.heads:
    raise ValueError("copy_kept_weights makes a one-stem network; build the FixedNetwork "
                     "without heads (its stem is copied from the search network's head of "
                     "its image shape)")
  _copy_layer(search.stem_for(image_shape), fixed.stems[0])
  _copy_layer(search.classifier, fixed.classifier)
  if len(search.cells) != len(fixed.cells):
    raise ValueError(f"cannot copy weights of {len(search.cells)} cells into "
                     f"{len(fixed.cells)}")
  for search_cell, fixed_cell in zip(search.cells, fixed.cells):
    _copy_layer(search_cell.preprocess0, fixed_cell.preprocess0)
    _copy_layer(search_cell.preprocess1, fixed_cell.preprocess1)
    for j, (node, ops) in enumerate(zip(fixed_cell.nodes, fixed_cell.node_ops)):
      for (name, i), op in zip(node, ops):
        mixed = search_cell.edges[topology.edge_index(j, i)]
        _copy_layer(mixed.candidates[search.op_names.index(name)], op)
