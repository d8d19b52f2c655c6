"""CAML with progressive connection consolidation (Ding et al. 2022).

Connection-Adaptive Meta-Learning (Algorithm 1) has four learners on a DARTS supernet with
connection parameters phi (the op logits) and weights theta. Per meta-iteration:

  phi tasks (stream "arch"), theta fixed, M steps (Eq. 6):
    phi_i^{m+1} = phi_i^m - alpha_inner grad_phi L(f_{phi_i^m, theta}; T_i^s)
  phi <- MetaOpt_phi(phi, mean_i grad L(f_{phi_i^M, theta}; T_i^q))            (Eq. 7)
  theta tasks (stream "train"), the new phi fixed, M steps (Eq. 8):
    theta_j^{m+1} = theta_j^m - beta_inner grad_theta L(f_{phi, theta_j^m}; T_j^s)
  theta <- MetaOpt_theta(theta, mean_j grad L(f_{phi, theta_j^M}; T_j^q))       (Eq. 9)

with alpha_inner = 0.01, beta_inner = 0.1, M = 5, first order, MetaOpt_phi Adam 1e-3 with
betas (0.5, 0.999) and L2 weight decay 3e-4, MetaOpt_theta Adam 1e-3; each phi/theta stage
is a `rules.Sequential` stage, so theta's stage adapts from the phi just updated. OPML
(Eq. 10, `update_rule="opml"`) adapts and meta-updates both from one backward pass on the
same tasks, as T-NAS. `meta_learner` puts MAML (second order), first-order MAML or Reptile
in every stage (Table 6; MAML++ is MAML with the MetaLearner's MAML++ options).

Progressive connection consolidation (Sec. 3.3): at each decision point, per cell type, the
not-yet-fixed edge with the largest criterion score is fixed to its best non-"none" op; once
a node has `max_in_degree` fixed incoming edges its other incoming edges are dropped. The
structure (`arch.structure.Structure`) records it: a fixed edge computes its op alone at
weight exactly 1 (softmax over one op, as the authors' `selected_idx`: the edge's output
jumps from its mixture to the op's output at the decision), a dropped edge computes nothing,
the dropped ops are not traced, their weights and optimizer slots are no longer updated and
the decided edges' logits are frozen (`frozen_entries`). Once every edge is decided, phi is
no longer adapted or meta-updated and only theta trains. The criteria (`edge_scores`):

  layer_confidence (Eq. 5, the paper's):  S_LC(e) = max_{o != none} softmax(phi_e)_o,
                                           largest first;
  forward  (the authors' shipped `criterion_front`): lowest edge index first;
  backward (`criterion_back`): highest edge index first;
  entropy  (paper only): H(e) = -sum_o p_o log p_o, p = softmax(phi_e) over all ops,
                         smallest first;
  variance (paper only): Var_o(phi_{e,o}), the variance of the edge's logits, largest first.

Schedule as the authors': first decision at the end of epoch 9, then every 5 epochs, an
epoch being 300 meta-iterations (3,000, 4,500, ...; with 4 nodes the cells are fixed after
8 decisions, at 13,500 of 30,000). `consolidation_every = 0` makes every decision at once
at `consolidation_start` ("w/o PCC": one-shot pruning at the end of the search).

Where the paper is silent we follow the authors' code (bansheng/CAML): the first half of
every meta-batch of 4 adapts phi and the second half theta (`caml_streams("batch")`: two
streams of 2 tasks from all meta-train classes; "class" is the paper's split of the
classes); BatchNorm scales and shifts are meta-learned, never adapted in the inner loop;
theta's meta-gradient is clipped to [-10, 10] (they clip on mini-ImageNet only); 5
weights-only steps when adapting to a new task. Not copied: they choose the reported epoch
and the optional top-5 ensemble on the test tasks (their validation reads the test set);
here evaluation is meta-validation for choices and the test tasks once (see
`train.from_scratch` for the retrained evaluations, from scratch and from the kept weights).
"""

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.arch import structure as structure_lib
from tf_metanas.data import streams as streams_lib
from tf_metanas.meta import inner_loop
from tf_metanas.meta import learner as learner_lib
from tf_metanas.meta import optimizers
from tf_metanas.meta import rules
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib
from tf_metanas.search import topology
from tf_metanas.search import visualize
from tf_metanas.train import arch_summaries
from tf_metanas.train import from_scratch

CRITERIA = ("layer_confidence", "forward", "backward", "entropy", "variance")
UPDATE_RULES = ("caml", "opml")
META_LEARNERS = ("fomaml", "maml", "reptile")
SPLIT_MODES = ("batch", "class")

# The authors' meta optimizers (few_shot_learning_system_pruning.py): PyTorch's epsilon.
WEIGHTS_META_ADAM = optimizers.MetaOptimizer(epsilon=1e-8)
ARCH_META_ADAM = optimizers.MetaOptimizer(beta_1=0.5, beta_2=0.999, epsilon=1e-8,
                                          weight_decay=3e-4)
# The evaluation of Sec. 4.2 (the authors' train_imagenet configs): first-order MAML,
# inner SGD 0.01 x 5 steps (5 at test), Adam 1e-3 cosine-decayed to 1e-4, 100 epochs of
# 500 meta-iterations of 4 tasks, every task new; the checkpoint chosen on meta-validation.
RETRAINING = from_scratch.FromScratch(iterations=50000, task_pool=0, meta_batch_size=4,
                                      inner_lr=0.01, inner_steps=5, test_steps=5,
                                      meta_lr=1e-3, meta_lr_end=1e-4, eval_every=500,
                                      eval_tasks=100)


def _softmax(logits):
  z = np.exp(logits - logits.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def edge_scores(alpha, op_names, criterion="layer_confidence"):
  """Per edge of op logits `alpha` [num_edges, num_ops], the score of `criterion` (see the
  module docstring); the free edge with the largest score is consolidated first."""
  alpha = np.asarray(alpha, np.float64)
  if criterion == "layer_confidence":
    real = np.array([name != "none" for name in op_names])
    return _softmax(alpha)[:, real].max(-1)
  if criterion == "forward":
    return -np.arange(len(alpha), dtype=np.float64)
  if criterion == "backward":
    return np.arange(len(alpha), dtype=np.float64)
  if criterion == "entropy":
    p = _softmax(alpha)
    return np.sum(p * np.log(np.maximum(p, np.finfo(np.float64).tiny)), -1)  # -H(e)
  if criterion == "variance":
    return alpha.var(-1)
  raise ValueError(f"unknown consolidation criterion {criterion!r}; use one of {CRITERIA}")


def choose_edge(alpha, free, op_names, criterion="layer_confidence"):
  """(edge, op): the free edge (from the list `free`) `criterion` picks (ties: the lowest
  index) and its best non-"none" op by logit."""
  scores = edge_scores(alpha, op_names, criterion)
  edge = free[int(np.argmax(scores[free]))]
  logits = np.where([n != "none" for n in op_names], np.asarray(alpha)[edge], -np.inf)
  return edge, op_names[int(np.argmax(logits))]


@gin.configurable(module="tf_metanas.methods")
def caml_streams(split_mode="batch", pool=0, arch_stream="arch", update_rule="caml"):
  """The two task streams of CAML: "train" (theta's tasks) and `arch_stream` (phi's).

  split_mode "batch" (the authors' code): both from every meta-train class, each drawing
  its own tasks (a meta-batch of 2 + 2 is the authors' meta-batch of 4 cut in halves);
  "class" (the paper): disjoint halves of the meta-train classes (split-weights and
  split-arch). `pool`: TaskStream.pool of both. With `update_rule` "opml" (Eq. 10: one
  joint pass over meta-training tasks, which reads only "train") "train" has every
  meta-train class whatever the split.
  """
  if split_mode not in SPLIT_MODES:
    raise ValueError(f"caml_streams.split_mode = {split_mode!r}; use one of {SPLIT_MODES}")
  whole = split_mode == "batch" or update_rule == "opml"
  halves = ((0.0, 1.0), (0.0, 1.0)) if whole else ((0.0, 0.5), (0.5, 1.0))
  return (streams_lib.TaskStream("train", halves[0], "class", pool=pool),
          streams_lib.TaskStream(arch_stream, halves[1], "class", pool=pool))


def _stage_rule(meta_learner, phases, routes, clip, first_order_iterations,
                multi_step_loss_iterations, clipped_groups=None):
  if meta_learner == "reptile":
    return rules.Reptile(routes=routes, phases=phases)
  return rules.Maml(meta_learner == "fomaml", first_order_iterations,
                    multi_step_loss_iterations, clip, routes, phases, clipped_groups)


def _rule(update_rule, meta_learner, train_phases, arch_stream, weights_clip, fo_iterations,
          ms_iterations):
  """CAML: phi's stage (its tasks, phi alone adapting), then theta's; OPML: one rule."""
  if update_rule == "opml":
    return _stage_rule(meta_learner, None, None, weights_clip, fo_iterations, ms_iterations,
                       clipped_groups=("weights",))
  only = lambda group: tuple(inner_loop.Phase(p.steps, (group,)) for p in train_phases)
  return rules.Sequential((
      (_stage_rule(meta_learner, only("arch"), {"arch": arch_stream}, None, fo_iterations,
                   ms_iterations), ("arch",)),
      (_stage_rule(meta_learner, only("weights"), None, weights_clip, fo_iterations,
                   ms_iterations), ("weights",))))


def _check_arguments(model, update_rule, meta_learner, criterion, kwargs):
  if not isinstance(model, network_lib.SearchNetwork) or model.input_k:
    raise ValueError("CAML searches a DARTS SearchNetwork whose nodes sum their inputs "
                     "(SearchNetwork.input_k = 0)")
  for name, value, allowed in (("update_rule", update_rule, UPDATE_RULES),
                               ("meta_learner", meta_learner, META_LEARNERS),
                               ("criterion", criterion, CRITERIA)):
    if value not in allowed:
      raise ValueError(f"Caml.{name} = {value!r}; use one of {allowed}")
  for name in ("rule", "algorithm"):
    if name in kwargs:
      raise ValueError(f"Caml builds its update rule from Caml.update_rule and "
                       f"Caml.meta_learner; drop Caml.{name}")


@gin.configurable(module="tf_metanas.methods")
class Caml(learner_lib.MetaLearner):
  """CAML (or OPML) with progressive connection consolidation on a DARTS SearchNetwork.

  Without arguments, the paper's CAML+PCC: inner SGD 0.1 on theta and 0.01 on phi, 5
  steps (5 weights-only steps at test), first order, BatchNorm parameters not adapted,
  Adam 1e-3 on theta (clipped to +-10) and on phi (betas (0.5, 0.999), L2 3e-4), layer
  confidence, decisions at meta-iterations 3,000 + 1,500 k.

  Args:
    model: a built SearchNetwork (input_k = 0).
    update_rule: "caml" (two backward passes, alternating) or "opml" (Eq. 10).
    meta_learner: "fomaml", "maml" (second order) or "reptile" in every stage.
    arch_stream: the task stream of phi's stage ("caml_streams").
    weights_clip: clip theta's mean meta-gradient to [-c, c]; None: no clipping.
    first_order_iterations, multi_step_loss_iterations: the MAML++ schedules of every
      stage (see rules.Maml).
    criterion: which free edge a decision fixes (CRITERIA).
    consolidation_start: the meta-iteration after which the first decision is made.
    consolidation_every: meta-iterations between decisions; 0: all at once at the start.
    edges_per_decision: edges fixed per cell type at each decision.
    max_in_degree: fixed incoming edges after which a node's other edges are dropped.
    retraining: the FromScratch budget `tools/evaluate.py --decoded=...` retrains the
      derived network with (default: the paper's evaluation, RETRAINING).
    **kwargs: MetaLearner arguments over these defaults (MAML++: learnable_inner_lr,
      per_step_bn_statistics, ...).
  """

  def __init__(self, model, update_rule="caml", meta_learner="fomaml", arch_stream="arch",
               weights_clip=10.0, first_order_iterations=0, multi_step_loss_iterations=0,
               criterion="layer_confidence", consolidation_start=3000,
               consolidation_every=1500, edges_per_decision=1, max_in_degree=2,
               retraining=RETRAINING, **kwargs):
    _check_arguments(model, update_rule, meta_learner, criterion, kwargs)
    if meta_learner == "reptile" and (multi_step_loss_iterations or first_order_iterations):
      raise ValueError("the multi-step loss and derivative-order annealing are MAML++ "
                       "options: Caml.meta_learner = 'maml' or 'fomaml'")
    if edges_per_decision < 1 or max_in_degree < 1 or consolidation_every < 0:
      raise ValueError(f"Caml needs edges_per_decision >= 1, max_in_degree >= 1 and "
                       f"consolidation_every >= 0, got {edges_per_decision}, "
                       f"{max_in_degree}, {consolidation_every}")
    self.update_rule, self.meta_learner, self.criterion = update_rule, meta_learner, criterion
    self.consolidation_start = int(consolidation_start)
    self.consolidation_every = int(consolidation_every)
    self.edges_per_decision, self.max_in_degree = int(edges_per_decision), int(max_in_degree)
    self.retraining = retraining
    train_phases = tuple(kwargs.pop("train_phases",
                                    (inner_loop.Phase(5, ("weights", "arch")),)))
    reptile = meta_learner == "reptile"
    defaults = dict(
        inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),
                      inner_loop.ParamGroup("arch", optimizers.SGD(), 0.01)),
        test_phases=(inner_loop.Phase(5, ("weights",)),),
        meta_learning_rates={"weights": 1.0, "arch": 1.0} if reptile else
        {"weights": 1e-3, "arch": 1e-3},
        meta_optimizer={"weights": WEIGHTS_META_ADAM, "arch": ARCH_META_ADAM},
        adapt_batch_norm=reptile)
    super().__init__(model, rule=_rule(update_rule, meta_learner, train_phases, arch_stream,
                                       weights_clip, first_order_iterations,
                                       multi_step_loss_iterations),
                     train_phases=train_phases, **{**defaults, **kwargs})
    num_edges = topology.num_edges(model.num_nodes)
    self.structure = structure_lib.Structure(num_edges, model.op_names)
    self.decided_at = {cell: tf.Variable(tf.fill([num_edges], tf.constant(-1, tf.int64)),
                                         trainable=False, name=f"decided_at_{cell}")
                       for cell in mixture_lib.CELL_TYPES}
    self._op_of = {id(v): ("reduce" if cell.reduction else "normal", e, o)
                   for cell in model.cells for e, mixed in enumerate(cell.edges)
                   for o, op in enumerate(mixed.candidates) for v in op.trainable_weights}

  # ---- structure --------------------------------------------------------------------------

  def structure_key(self):
    return self.structure.key()

  def call_options(self):
    return {} if self.structure.is_full() else {"op_masks": self.structure.op_masks()}

  def consolidated(self):
    """Whether every edge of both cell types is fixed or dropped."""
    return not any(self.structure.free_edges(c) for c in mixture_lib.CELL_TYPES)

  def touched_groups(self, plan):
    """Once every edge is decided, phi (and what belongs to it) is no longer updated."""
    groups = super().touched_groups(plan)
    if self.consolidated():
      groups = tuple(g for g in groups if self.base_group(g) != "arch")
    return groups

  def frozen_entries(self, group):
    """The weights of dropped ops (and their learnable inner rates), and the logits of
    decided edges."""
    masks, base = self.structure.op_masks(), self.base_group(group)
    variables = self.meta_groups[group]
    if base == "weights" and group in ("weights", "inner_lr_weights"):
      out = []
      for weight, variable in zip(self.variables["weights"], variables):
        where = self._op_of.get(id(weight))
        dropped = where is not None and not masks[where[0]][where[1], where[2]]
        out.append(np.ones(variable.shape, bool) if dropped else None)
      return out
    if group == "arch":
      return [np.broadcast_to((masks[cell].sum(-1) <= 1)[:, None], v.shape).copy()
              for cell, v in zip(mixture_lib.CELL_TYPES, variables)]
    if base == "arch" and self.consolidated():
      return [np.ones(v.shape, bool) for v in variables]
    return super().frozen_entries(group)

  def step_counts(self):
    """The MetaLearner's, and the first consolidation decision (a shorter run would never
    consolidate)."""
    return {**super().step_counts(), "Caml.consolidation_start": self.consolidation_start}

  def _decision_due(self, step):
    if step < self.consolidation_start or self.consolidated():
      return False
    every = self.consolidation_every
    return (step == self.consolidation_start if every == 0
            else (step - self.consolidation_start) % every == 0)

  def before_iteration(self, step):
    """Before the first meta-iteration: the views of the full supernet (the start of the
    computed ops and parameters)."""
    if step == 0:
      self.write_consolidation(0)

  def after_iteration(self, step):
    """Consolidates at the decision points (after meta-iteration `step`)."""
    if self._decision_due(step):
      self.consolidate(step, until_done=self.consolidation_every == 0)

  def consolidate(self, step, until_done=False):
    """One decision (or, with `until_done`, every remaining one) per cell type at `step`;
    returns the decisions made [{"step", "cell", "edge", "op"}] (op None: dropped)."""
    made = []
    for cell, alpha in zip(mixture_lib.CELL_TYPES, self.model.arch_variables):
      count = 0
      while self.structure.free_edges(cell) and (until_done or count < self.edges_per_decision):
        edge, op = choose_edge(alpha.numpy(), self.structure.free_edges(cell),
                               self.model.op_names, self.criterion)
        self.structure.fix(cell, edge, op)
        made.append({"step": step, "cell": cell, "edge": edge, "op": op})
        made.extend({"step": step, "cell": cell, "edge": e, "op": None}
                    for e in self._drop_beyond_in_degree(cell))
        count += 1
    for cell, variable in self.decided_at.items():
      at = variable.numpy()
      at[[d["edge"] for d in made if d["cell"] == cell]] = step
      variable.assign(at)
    for decision in made:
      logging.info("consolidation at meta-iteration %d: %s cell edge %s %s", step,
                   decision["cell"], visualize.edge_names(self.model.num_nodes)[decision["edge"]],
                   f"fixed to {decision['op']}" if decision["op"] else "dropped")
    self.write_consolidation(step)
    return made

  def _drop_beyond_in_degree(self, cell):
    """Drops the free incoming edges of the nodes with max_in_degree fixed ones (the
    authors' `check_edges`); returns them."""
    masks, dropped = self.structure.op_masks()[cell], []
    for edges in topology.node_edges(self.model.num_nodes):
      if sum(masks[e].sum() == 1 for e, _ in edges) >= self.max_in_degree:
        for e, _ in edges:
          if masks[e].sum() > 1:
            self.structure.drop(cell, e)
            dropped.append(e)
    return dropped

  def decisions(self):
    """Every decision so far, [{"step", "cell", "edge", "op"}] ordered by step."""
    fixed = self.structure.fixed_edges()
    out = [{"step": int(at), "cell": cell, "edge": e, "op": fixed[cell].get(e)}
           for cell, variable in self.decided_at.items()
           for e, at in enumerate(variable.numpy()) if at >= 0]
    return sorted(out, key=lambda d: (d["step"], d["cell"] != "normal", d["edge"]))

  # ---- the derived network ----------------------------------------------------------------

  def genotype(self):
    """The derived genotype: the fixed edges, and for nodes not yet complete the DARTS rule
    over their free edges (the whole network once consolidated)."""
    masks = self.structure.op_masks()
    mixture = self.model.mixture(op_masks=masks)
    return genotype_lib.derive_consolidated(
        mixture, self.model.op_names, self.model.num_nodes, self.structure.fixed_edges(),
        k=self.max_in_degree, dropped=self.structure.dropped_edges())

  def computed_genotype(self):
    """Every op the network still computes, as a genotype (several ops per edge while
    edges are free): what `computed_parameters` counts."""
    masks, names = self.structure.op_masks(), self.model.op_names
    return genotype_lib.Genotype(**{
        cell: tuple(tuple((names[o], i) for e, i in edges for o in np.flatnonzero(masks[cell][e])
                          if names[o] != "none")
                    for edges in topology.node_edges(self.model.num_nodes))
        for cell in mixture_lib.CELL_TYPES})

  def computed_ops(self):
    """The ops the network computes (each cell counted, "none" never computed)."""
    genotype = self.computed_genotype()
    return sum(len(p) for cell in self.model.cells
               for p in (genotype.reduce if cell.reduction else genotype.normal))

  def computed_parameters(self):
    """The weights the network computes with (architecture logits excluded)."""
    return self.model.count_params_of(self.computed_genotype())

  def task_parameter_counts(self, outputs):
    return [self.computed_parameters()] * len(outputs["accuracy"])

  # ---- views and results --------------------------------------------------------------------

  def write_consolidation(self, step):
    """TensorBoard: the timeline of decisions, the computed ops and parameters, the
    heatmaps with fixed edges outlined and dropped edges hatched."""
    figure = visualize.plot_consolidation(self.decisions(), self.model.num_nodes,
                                          self.model.op_names, step)
    arch_summaries.write_image("Architecture/consolidation", figure, step)
    tf.summary.scalar("Architecture/computed_ops", self.computed_ops(), step=step)
    tf.summary.scalar("Architecture/computed_parameters", self.computed_parameters(), step=step)
    tf.summary.scalar("Architecture/fixed_edges",
                      sum(len(f) for f in self.structure.fixed_edges().values()), step=step)
    masks = self.structure.op_masks()
    mixture = self.model.mixture(op_masks=masks)
    fixed, dropped = self.structure.fixed_edges(), self.structure.dropped_edges()
    for cell in mixture_lib.CELL_TYPES:
      marks = {e: self.model.op_names.index(op) for e, op in fixed[cell].items()}
      marks.update({e: None for e in dropped[cell]})
      figure = visualize.plot_weights(
          np.asarray(mixture[f"{cell}_ops"]) * masks[cell],
          visualize.edge_names(self.model.num_nodes), self.model.op_names,
          f"{cell} cell op weights (fixed: red, dropped: hatched)", xlabel="op",
          ylabel="edge", marks=marks)
      arch_summaries.write_image(f"Architecture/meta/op_weights_{cell}", figure, step)

  def summarize(self, outputs, step):
    """The consolidation views and the method's results: the decisions, the derived
    genotype (what `from_scratch` retrains: for all test tasks), the computed network."""
    self.write_consolidation(step)
    genotype = self.genotype()
    arch_summaries.write_genotype("derived/genotype", genotype, step)
    parameters = self.model.count_params_of(genotype)
    return {
        "update_rule": self.update_rule, "meta_learner": self.meta_learner,
        "criterion": self.criterion,
        "consolidation": {"start": self.consolidation_start, "every": self.consolidation_every,
                          "edges_per_decision": self.edges_per_decision,
                          "max_in_degree": self.max_in_degree},
        "consolidated": self.consolidated(),
        "prediction": "the supernet as consolidated, kept weights (no retraining)",
        "decisions": self.decisions(), "computed_ops": self.computed_ops(),
        "computed_parameters": self.computed_parameters(), "genotype": genotype.to_dict(),
        "decoded_genotypes": [{"genotype": genotype.to_dict(),
                               "tasks": list(range(len(outputs["accuracy"]))),
                               "parameters": parameters}]}

  def method_name(self):
    suffix = {"fomaml": "", "maml": "+maml", "reptile": "+reptile"}[self.meta_learner]
    plus = "++" if super().method_name().endswith("++") else ""
    return f"{self.update_rule}{suffix}{plus}"

  def report(self, results):
    fixed = sum(d["op"] is not None for d in results["decisions"])
    state = "fully consolidated" if results["consolidated"] else "consolidated so far"
    return [f"{state} by {results['criterion']}: {fixed} edges fixed, "
            f"{len(results['decisions']) - fixed} dropped; "
            f"{results['computed_ops']} ops and {results['computed_parameters']} weights "
            f"computed; derived genotype: "
            f"{genotype_lib.Genotype.from_dict(results['genotype']).compact()}"]

  def adapt(self, support_images, support_labels, phases=None, inner_batch_size=None, seed=0):
    """Adapts the weights of the network as consolidated to one new task;
    `adapted.genotype` is the derived genotype, `adapted.parameter_count` the weights
    the network computes with."""
    adapted = super().adapt(support_images, support_labels, phases, inner_batch_size, seed)
    adapted.genotype, adapted.parameter_count = self.genotype(), self.computed_parameters()
    return adapted

  def checkpoint_items(self):
    items = {**super().checkpoint_items(), **self.structure.checkpoint_items()}
    items.update({f"decided_at_{cell}": v for cell, v in self.decided_at.items()})
    return items
