"""MetaLearner: the front door of every meta-learning method.

A MetaLearner is a *task learner* (how one task adapts the model: parameter groups, inner
optimizers and phases, forward and loss) plus an *update rule* (`tf_metanas.meta.rules`:
MAML, first-order MAML, Reptile, ...) run by an *engine* (`tf_metanas.meta.engine`:
distribution, the task loop, accumulation by group, meta-updates, compiled functions):

  MAML (Finn et al. 2017):   theta <- MetaOpt(theta, mean_T grad_theta L_Q(U^k(theta)))
  first-order MAML:          the same with the inner gradients held constant
  Reptile (Nichol et al.):   theta <- theta + eps_t * mean_T (U^k(theta) - theta),
                             eps_t constant or a schedule of the meta-iteration (REPTILE
                             anneals it linearly: a Linear schedule)

MAML++ (Antoniou et al. 2019) options are composable parts: the multi-step loss and
derivative-order annealing belong to the Maml rule; learnable per-layer per-step inner
learning rates (LSLR) are ordinary meta-learned groups ("inner_lr_weights", ...); per-step
BatchNorm weights (BNWB) are the group "bn_weights"; per-step BatchNorm statistics (BNRS)
are auxiliary state the rule averages over tasks.

Parameter groups are open: the model names its groups (`parameter_groups()`: "weights",
"arch", ...), the learner adapts those named by its inner ParamGroups and meta-learns them
and the groups it owns; any method may add more.

Every forward and loss receives a `TaskContext` (inner step, query or not, protocol, task
stream, the task's stateless seed), so random draws (DropPath, Gumbel noise) are the same
for the same task on one device, under MirroredStrategy and under XLA.
"""

import dataclasses

import gin
import keras
import numpy as np
import tensorflow as tf

from tf_metanas import distribute
from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.data import episodes as episodes_lib
from tf_metanas.meta import context as context_lib
from tf_metanas.meta import engine as engine_lib
from tf_metanas.meta import inner_loop
from tf_metanas.meta import losses
from tf_metanas.meta import rules as rules_lib
from tf_metanas.meta import schedules

ALGORITHMS = ("maml", "fomaml", "reptile")
LOSS_REDUCTIONS = ("mean", "sum_over_shots")
QUERY_BATCHES = ("all", "each_with_support")

# Kept importable from here: the per-task metrics and helpers methods use.
METRICS = losses.METRICS
cross_entropy, accuracy = losses.cross_entropy, losses.accuracy
multi_step_weights = rules_lib.multi_step_weights


def _batch_norm_affine(model):
  """The BatchNorm scales and shifts among the model's weights."""
  norms = [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
           if isinstance(layer, keras.layers.BatchNormalization)]
  return [w for layer in norms for w in (layer.gamma, layer.beta) if w is not None]


def default_forward(model, params, images, context, **call_options):
  """Logits of `model` with the group tensors in `params` (weights, arch and any other
  group of the model's `parameter_groups()`) standing in for their variables.

  Training-only regularization (DropPath) is on during the inner steps of protocols that
  regularize, never on the query pass, with draws from the context's stateless seed;
  BatchNorm keeps batch statistics (transductive). `call_options` go to the model's call
  (a learner's `call_options()`, e.g. a structure's op masks).
  """
  return model.functional_call(None, images, training=True, regularize=context.regularize,
                               seed=context.draw_seed(), groups=params, **call_options)


def _check_rule(rule, algorithm, first_order_iterations, multi_step_loss_iterations, clip):
  """A `rule` replaces `algorithm` and the MAML++ schedule arguments: given together, they
  must agree, or one would be silently ignored."""
  kind = ("reptile" if isinstance(rules_lib.innermost(rule), rules_lib.Reptile) else
          "fomaml" if getattr(rule, "first_order", False) else "maml")
  if algorithm is not None and algorithm != kind:
    raise ValueError(f"MetaLearner.algorithm = {algorithm!r} but MetaLearner.rule is a "
                     f"{kind} rule ({type(rule).__name__}); drop the algorithm or pass a "
                     f"rule of that kind")
  given = {"first_order_iterations": first_order_iterations,
           "multi_step_loss_iterations": multi_step_loss_iterations,
           "meta_gradient_clip": clip}
  given = [name for name, value in given.items() if value]
  if given:
    raise ValueError(f"MetaLearner.{given[0]} is set but MetaLearner.rule is given: set it on "
                     f"the rule (e.g. Maml.{given[0].replace('meta_', '')})")


def to_float(images):
  """uint8 images to float32 in [0, 1]."""
  return tf.cast(images, tf.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class IterationPlan:
  """What a meta-iteration's compiled graph depends on (its trace key): the update rule's
  regime (e.g. first order or not), warm-up, and the structure of the architecture."""

  regime: tuple = ()
  warmup: bool = False
  structure: tuple = ()


@gin.configurable(module="tf_metanas.meta")
class MetaLearner:
  """Meta-learns the initial parameters (weights, architecture) of a FunctionalModel.

  Args:
    model: a built FunctionalModel (SearchNetwork, FixedNetwork, Conv4, ...).
    algorithm: "maml" (second order), "fomaml" or "reptile".
    inner_groups: the ParamGroups adapted in the inner loop (default: weights, SGD 0.01).
    train_phases: inner-loop phases during meta-training.
    test_phases: inner-loop phases when adapting to a new task (meta-test protocol).
    meta_learning_rates: group name -> float or schedule: the meta optimizer's learning
      rate (MAML: Adam) or Reptile's outer step size eps. Schedules are evaluated at the
      meta-iteration (`step`), the same clock for every group.
    meta_optimizer: "adam" or "sgd" for MAML-style updates, a `MetaOptimizer` (betas,
      epsilon, coupled L2 weight decay), or a dict group -> either (groups not named:
      Adam); Reptile always applies its exact step, i.e. SGD on theta - mean adapted.
    joint: one backward pass per inner step for all groups (False: alternate groups).
    multi_step_loss_iterations: > 0 enables the MAML++ multi-step loss for this many
      meta-iterations (its weights annealed towards the last step), after which the last
      step's loss alone is used, as the official code does.
    learnable_inner_lr: MAML++ LSLR: per-step, per-tensor inner learning rates meta-learned
      with the weights (MAML / first-order MAML only), used wherever the learner adapts
      (meta-test and `adapt` too; test steps past the meta-trained ones use the last step's).
    first_order_iterations: MAML++ derivative-order annealing: first order before this
      meta-iteration, second order after.
    forward: (model, params, images, context) -> logits, with context a
      `context.TaskContext`; methods plug their parametrization (e.g. temperature-annealed
      mixtures) in here.
    per_step_bn_statistics: MAML++ per-step BatchNorm running statistics: one copy of the
      model's moving statistics per inner step s (the support pass of step s and the query
      after its update use slot s, as the official code), each updated from the support
      batch moments of that step during meta-training (the official code also updates them
      from its target batches, which its always-transductive normalization never reads)
      (MAML / first-order MAML; with the default forward only). Normalization still uses
      batch statistics unless `transductive` is False.
    per_step_bn_weights: MAML++ per-step BatchNorm weights and biases (BNWB): one copy of
      every BatchNorm scale and shift per inner step, in the same slots, meta-learned with
      the weights and not adapted in the inner loop (MAML / first-order MAML; with the
      default forward only). They replace the model's own BatchNorm scales and shifts,
      which stay at their initial values.
    transductive: normalize with the batch statistics of whatever batch is evaluated (MAML
      and REPTILE's protocol). False needs per_step_bn_statistics: adaptation and query
      predictions then normalize with the running statistics of their inner step.
    adapt_batch_norm: False keeps the BatchNorm scales and shifts out of the inner loop:
      only meta-learned (the official MAML code, whose BatchNorm shifts are not among its
      fast weights). MAML / first-order MAML.
    query_batches: how predictions after adaptation are batched (with batch statistics in
      BatchNorm): "all" queries of a task in one batch (transductive: MAML, REPTILE's
      --transductive), or "each_with_support": every query in a batch with the whole
      support set, its own prediction taken (REPTILE's non-transductive evaluation).
    warmup_iterations: for the first this many meta-iterations the groups in
      `warmup_frozen` are neither adapted in the inner loop nor meta-updated (METANAS
      App. A.2: no architecture adaptation for the first half of meta-training).
    warmup_frozen: the groups frozen during warm-up.
    meta_test_regularization: DropPath (training-only regularization) during adaptation to
      new tasks too (False, as the METANAS code's `use_drop_path_in_meta_testing`).
    carry_inner_state: the inner optimizers' state (Adam moments and step count) carries
      from task to task in meta-batch order and across meta-iterations, only the
      parameters being reset, as the METANAS and REPTILE code (their inner optimizers are
      made once per run); every new task (meta-validation, meta-test, `adapt`) starts from
      the carried state without changing it. Checkpointed. Under several replicas each
      replica carries the state over its share of a meta-batch's tasks, and at the end of
      the meta-iteration every replica takes the mean of their states (so one state is
      checkpointed, evaluated from and resumed from). False: every task starts fresh.
    loss_reduction: "mean" cross-entropy over a batch, or "sum_over_shots": its sum divided
      by the shots K (the official MAML code's `xent / update_batch_size`: N times the mean
      on a full N-way K-shot support set, so its inner step sizes mean what they do there);
      for the support and the query losses.
    meta_gradient_clip: clip each meta-gradient entry (the mean over the meta-batch) to
      [-c, c] before the meta optimizer (the official MAML code on mini-ImageNet and
      MAML++: 10); None: no clipping. MAML / first-order MAML.
    rule: an UpdateRule (`tf_metanas.meta.rules`) replacing `algorithm`,
      `first_order_iterations`, `multi_step_loss_iterations` and `meta_gradient_clip`
      (e.g. a Maml rule routing groups to task streams).
    loss: (logits, labels, params, initial_params, context) -> scalar training loss of a
      batch, replacing the cross-entropy of `loss_reduction` (regularizers: priors on
      `params`, distances to `initial_params`, ...); for support and query batches.
    seed: the run seed from which every task's stateless random draws derive (the Runner
      passes its own).
    jit_compile: compile with XLA what each replica computes for its tasks (adaptation and
      meta-gradients, or evaluation); all-reduces and updates stay in TensorFlow. Slower
      on CPU (BENCHMARKS.md); for GPUs.
  """

  def __init__(self, model, algorithm=None, inner_groups=(inner_loop.ParamGroup(),),
               train_phases=(inner_loop.Phase(5),), test_phases=(inner_loop.Phase(10),),
               meta_learning_rates=None, meta_optimizer="adam", joint=True,
               multi_step_loss_iterations=0, learnable_inner_lr=False,
               first_order_iterations=0, forward=default_forward,
               per_step_bn_statistics=False, per_step_bn_weights=False, transductive=True,
               warmup_iterations=0, warmup_frozen=("arch",), meta_test_regularization=False,
               carry_inner_state=False, loss_reduction="mean", meta_gradient_clip=None,
               adapt_batch_norm=True, query_batches="all", rule=None, loss=None, seed=0,
               jit_compile=False):
    if rule is not None:
      _check_rule(rule, algorithm, first_order_iterations, multi_step_loss_iterations,
                  meta_gradient_clip)
    algorithm = algorithm or "maml"
    if algorithm not in ALGORITHMS:
      raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    rule = rule or rules_lib.from_algorithm(algorithm, first_order_iterations,
                                            multi_step_loss_iterations, meta_gradient_clip)
    reptile = isinstance(rules_lib.innermost(rule), rules_lib.Reptile)
    if reptile and (learnable_inner_lr or per_step_bn_statistics or per_step_bn_weights or
                    multi_step_loss_iterations):
      raise ValueError("LSLR, the multi-step loss and per-step BatchNorm statistics and "
                       "weights are MAML++ options: use MAML or first-order MAML")
    if query_batches not in QUERY_BATCHES:
      raise ValueError(f"unknown query_batches {query_batches!r}; use one of {QUERY_BATCHES}")
    if loss_reduction not in LOSS_REDUCTIONS:
      raise ValueError(f"unknown loss_reduction {loss_reduction!r}; use one of {LOSS_REDUCTIONS}")
    if reptile and not adapt_batch_norm:
      raise ValueError("adapt_batch_norm=False meta-learns BatchNorm parameters from query "
                       "gradients, which Reptile has not: use MAML or first-order MAML")
    if reptile and meta_gradient_clip:
      raise ValueError("meta_gradient_clip clips MAML meta-gradients; Reptile has none")
    if not transductive and not per_step_bn_statistics:
      raise ValueError("transductive=False needs per_step_bn_statistics=True")
    if (per_step_bn_statistics or per_step_bn_weights) and forward is not default_forward:
      raise ValueError("per-step BatchNorm statistics and weights work with the default "
                       "forward only")
    self.model, self.rule, self.joint = model, rule, joint
    self.algorithm = ("reptile" if reptile else
                      "fomaml" if getattr(rule, "first_order", False) else "maml")
    self.strategy = tf.distribute.get_strategy()
    self.inner_groups = {g.name: g for g in inner_groups}
    self.groups = self.inner_groups  # the name the MetaLearner had for them
    self.train_phases, self.test_phases = tuple(train_phases), tuple(test_phases)
    self.forward, self.transductive = forward, bool(transductive)
    self.warmup_iterations, self.warmup_frozen = int(warmup_iterations), tuple(warmup_frozen)
    self.seed, self.loss_hook = int(seed), loss
    self.variables = self._model_groups(model)
    bn_affine = _batch_norm_affine(model)
    bn_ids = {id(v) for v in bn_affine}
    if per_step_bn_weights:  # meta-learned per step instead of adapted
      self.variables["weights"] = [v for v in self.variables["weights"] if id(v) not in bn_ids]
    slots = inner_loop.total_steps(self.train_phases)
    self.meta_groups, self._base = dict(self.variables), {}
    if learnable_inner_lr:
      for name, group in self.inner_groups.items():
        self._add_group(f"inner_lr_{name}", name, [
            tf.Variable(tf.fill([slots], float(group.learning_rate)), name=f"inner_lr_{name}_{i}")
            for i in range(len(self.variables[name]))])
    per_step_affine = bn_affine if per_step_bn_weights else []
    if per_step_affine:
      self._add_group("bn_weights", "weights", [
          tf.Variable(tf.stack([v.value] * slots), name=f"bn_weights_{i}")
          for i, v in enumerate(per_step_affine)])
    self._bn_affine_ids = [id(v) for v in per_step_affine]
    self.auxiliary_variables, self._recorded = {}, None
    if per_step_bn_statistics:
      self.auxiliary_variables["bn_statistics"] = [
          tf.Variable(tf.stack([v.value] * slots), trainable=False, name=f"bn_statistics_{i}")
          for i, v in enumerate(model.non_trainable_variables)]
    if per_step_bn_statistics or per_step_bn_weights:
      self.forward = self._forward_with_step_statistics
    elif forward is default_forward:
      self.forward = lambda m, p, i, c: default_forward(m, p, i, c, **self.call_options())
    rates = dict(meta_learning_rates or {name: 1e-3 for name in self.inner_groups})
    if not set(self.inner_groups) <= set(rates) <= set(self.meta_groups):
      raise ValueError(f"meta_learning_rates names groups {sorted(rates)} but the inner "
                       f"groups are {sorted(self.inner_groups)}")
    for name in self.meta_groups:  # learner-owned groups: their base group's rate
      rates.setdefault(name, rates[self.base_group(name)])
    unknown = [name for name in self.warmup_frozen
               if self.warmup_iterations and name not in self.meta_groups]
    if unknown:
      raise ValueError(f"MetaLearner.warmup_frozen names {unknown}, which are not meta-learned "
                       f"groups; the groups are {sorted(self.meta_groups)}")
    self.meta_test_regularization = bool(meta_test_regularization)
    self.loss_reduction = loss_reduction
    frozen_ids = set() if adapt_batch_norm else bn_ids
    self._frozen = {name: {i for i, v in enumerate(self.variables[name]) if id(v) in frozen_ids}
                    for name in self.inner_groups}
    self.query_batches = query_batches
    self.engine = engine_lib.Engine(
        self, rates, meta_optimizer, jit_compile=jit_compile,
        sgd_only=tuple(g for g in self.meta_groups if rule.exact_step(self, g)))
    self.inner_state = self._state_variables() if carry_inner_state else {}
    self._adapt_fns, self._eval_fns = {}, {}

  # ---- groups ---------------------------------------------------------------------------

  def _model_groups(self, model):
    available = model.parameter_groups()
    missing = [name for name in self.inner_groups if not available.get(name)]
    if missing:
      raise ValueError(f"inner groups {missing} have no variables in {type(model).__name__}, "
                       f"whose parameter groups are {sorted(available)}")
    heads = [name for name in getattr(model, "head_groups", {}) if name not in self.inner_groups]
    if heads:
      raise ValueError(f"the network's heads {heads} are in no inner group, so nothing would "
                       f"train them: add a ParamGroup for each (BASE: Base.stream_heads)")
    return {name: list(available[name]) for name in self.inner_groups}

  def _add_group(self, name, base, variables):
    self.meta_groups[name], self._base[name] = variables, base

  def base_group(self, name):
    """The inner group a meta-learned group belongs to ("inner_lr_weights" -> "weights")."""
    return self._base.get(name, name)

  def touched_groups(self, plan):
    """The meta groups an iteration under `plan` updates: the rule's, without those frozen
    during warm-up (and what belongs to them)."""
    frozen = self.warmup_frozen if plan.warmup else ()
    return tuple(g for g in self.rule.groups(self)
                 if g not in frozen and self.base_group(g) not in frozen)

  @property
  def inner_lrs(self):
    """Inner group -> its learnable per-step inner learning rates (LSLR), if any."""
    return {name: self.meta_groups[f"inner_lr_{name}"] for name in self.inner_groups
            if f"inner_lr_{name}" in self.meta_groups}

  @property
  def bn_weights(self):
    return self.meta_groups.get("bn_weights", [])

  @property
  def bn_statistics(self):
    return self.auxiliary_variables.get("bn_statistics", [])

  @property
  def step(self):
    """The meta-iterations done (a tf.Variable, checkpointed)."""
    return self.engine.step

  @property
  def meta_optimizers(self):
    return self.engine.meta_optimizers

  def meta_variables(self):
    """Meta group -> its variables (what the meta optimizers update)."""
    return dict(self.meta_groups)

  def meta_parameters(self):
    """The current meta-parameters of the inner groups, group -> tensors: where every task
    starts its adaptation."""
    return {name: [v.value for v in variables] for name, variables in self.variables.items()}

  # ---- carried inner-optimizer state ------------------------------------------------------

  def _state_variables(self):
    """Variables holding each group's carried inner-optimizer state (its structure as the
    optimizer's `init` makes it), one copy per replica."""
    params = self.meta_parameters()
    return {name: tf.nest.map_structure(
        lambda t: tf.Variable(t, trainable=False, name=f"inner_state_{name}",
                              synchronization=tf.VariableSynchronization.ON_READ,
                              aggregation=tf.VariableAggregation.MEAN),
        self.inner_groups[name].optimizer.init(params[name])) for name in self.inner_groups}

  def carried_state(self):
    """The carried inner-optimizer state as tensors ({} when every task starts fresh)."""
    return tf.nest.map_structure(tf.convert_to_tensor, self.inner_state)

  def carry(self, state):
    """Stores `state` as the carried inner-optimizer state (if the learner carries it)."""
    if self.inner_state:
      tf.nest.map_structure(lambda v, t: v.assign(t), self.inner_state, state)

  # ---- protocols and contexts -------------------------------------------------------------

  def protocol(self, phases=None, meta_training=False):
    """The Protocol of an adaptation: meta-training's (with `phases`, default the train
    phases) or adaptation to new tasks (default the test phases)."""
    if phases is None:
      phases = self.train_phases if meta_training else self.test_phases
    return inner_loop.Protocol(tuple(phases), meta_training,
                               meta_training or self.meta_test_regularization)

  def training_protocol(self, warmup=False, phases=None):
    """The meta-training protocol of `phases` (default: the train phases); during warm-up
    without the frozen groups' steps."""
    phases = self.train_phases if phases is None else tuple(phases)
    if warmup:
      phases = tuple(dataclasses.replace(p, groups=tuple(g for g in p.groups
                                                         if g not in self.warmup_frozen))
                     for p in phases)
    return self.protocol(phases, meta_training=True)

  def task_context(self, task, protocol, stream="train", task_index=0, meta_step=None):
    """The TaskContext of inner step 0 of `task` (a dict of one task's tensors) adapted with
    `protocol`: its seed folds in the run seed, `meta_step` (default: the current one, or
    EVALUATION_STEP for adaptation to new tasks), `stream` and `task_index`."""
    if meta_step is None:
      meta_step = self.step if protocol.meta_training else context_lib.EVALUATION_STEP
    return context_lib.TaskContext(
        protocol, stream=stream, support_size=int(task["support_labels"].shape[0]),
        seed=context_lib.task_seed(self.seed, meta_step, stream, task_index))

  def in_warmup(self):
    """Whether the next meta-iteration is a warm-up iteration (frozen groups stay put)."""
    return int(self.step.numpy()) < self.warmup_iterations

  def structure_key(self):
    """The architecture's structural state, for the trace key (none here)."""
    return ()

  def call_options(self):
    """Keyword arguments of the model's call in the default forwards, read at trace time
    (e.g. a structure's op masks; none here)."""
    return {}

  def training_scalars(self):
    """The learner's state the Runner summarizes beside the Train/ metrics at every log:
    each group's meta learning rate for the next meta-iteration (Reptile: its step size),
    each inner group's inner learning rate (MAML++ LSLR: the mean of the learned per-step,
    per-tensor rates), whether it warms up (1, then 0 from the meta-iteration the warm-up
    ends), the model's weight count, and for a search network the mean entropy of its
    architecture's categoricals (`mixture.mean_entropy`: how undecided the
    meta-architecture is)."""
    scalars = {f"meta_learning_rate/{group}":
               float(keras.ops.convert_to_numpy(optimizer.learning_rate))  # any strategy
               for group, optimizer in self.meta_optimizers.items()}
    learned = self.inner_lrs
    for name, group in self.inner_groups.items():
      scalars[f"inner_learning_rate/{name}"] = (
          float(np.mean(np.concatenate([keras.ops.convert_to_numpy(v).ravel()
                                        for v in learned[name]])))
          if name in learned else float(group.learning_rate))
    if self.warmup_iterations:
      scalars["warmup"] = float(self.in_warmup())
    scalars["parameters"] = float(self.weight_count())
    if hasattr(self.model, "categoricals"):
      scalars["architecture_entropy"] = float(mixture_lib.mean_entropy(
          [keras.ops.convert_to_tensor(c) for c in self.model.categoricals()]))
    return scalars

  def step_counts(self):
    """Its settings counted in meta-iterations, which a run should reach: description ->
    count (annealing schedules of meta learning rates, the warm-up, MAML++'s first-order and
    multi-step-loss iterations; methods add theirs). The Runner refuses a run shorter than
    any of them: it would stop an anneal or a warm-up part-way."""
    counts = {f"{type(rate).__name__}.steps (the {group!r} meta learning rate)": rate.steps
              for group, rate in self.engine.rates.items()
              if isinstance(rate, schedules.Annealing)}
    if self.warmup_iterations:
      counts["warmup_iterations"] = self.warmup_iterations
    return {**counts, **self.rule.step_counts()}

  def frozen_entries(self, group):
    """Per variable of meta group `group`: None, or numpy bools of the entries the
    structure has frozen (all True: the variable is dropped, neither meta-updated nor its
    optimizer slots moved; some: those entries keep their values). Static for a structure
    (part of the trace key). Nothing is frozen here."""
    return [None] * len(self.meta_groups[group])

  def plan(self):
    """The IterationPlan (trace key) of the next meta-iteration."""
    step = int(self.step.numpy())
    return IterationPlan(self.rule.regime(self, step), step < self.warmup_iterations,
                         self.structure_key())

  def first_order_now(self):
    """Whether the next meta-iteration uses first-order gradients (Reptile always; a Maml
    rule by its regime; staged rules when every stage does)."""
    return self.rule.first_order_at(self, int(self.step.numpy()))

  def multi_step_loss_now(self):
    """Whether the next meta-iteration uses the MAML++ multi-step loss."""
    return (isinstance(rules_lib.innermost(self.rule), rules_lib.Maml) and
            bool(self.plan().regime[1]))

  # ---- forward and loss -------------------------------------------------------------------

  def _step_weights(self, params, slot):
    """The model's weights in `weight_variables` order: the adapted ones of every group in
    `params`, and the BatchNorm scales and shifts of `slot` when they are per step (BNWB)."""
    given = {}
    for name, tensors in params.items():
      if name != "arch":
        given.update(zip(map(id, self.variables[name]), tensors))
    given.update((i, tf.gather(v, slot)) for i, v in zip(self._bn_affine_ids, self.bn_weights))
    return [given.get(id(v), v.value) for v in self.model.weight_variables]

  def _forward_with_step_statistics(self, model, params, images, context):
    """Default forward with the BatchNorm statistics (BNRS) and scales and shifts (BNWB) of
    inner step `context.step`, where they are per step (MAML++).

    The support pass of step s uses slot s, a query after s + 1 updates slot s (steps past
    the meta-trained ones use the last slot). While a meta-training adaptation records
    (`adapt_trajectory`) it normalizes with batch statistics and records each support
    pass's updated statistics; otherwise it normalizes with batch statistics if
    transductive, else with the slot's running statistics.
    """
    last = inner_loop.total_steps(self.train_phases) - 1
    slot = tf.clip_by_value(tf.cast(context.step, tf.int32) - (1 if context.query else 0), 0,
                            last)
    statistics = [tf.gather(v, slot) for v in self.bn_statistics] or None
    recording = self._recorded is not None
    logits, updated = model.functional_call(
        self._step_weights(params, slot), images, arch=params.get("arch"),
        training=recording or self.transductive, non_trainable=statistics,
        return_non_trainable=True, regularize=context.regularize, seed=context.draw_seed(),
        **self.call_options())
    if recording and not context.query:
      self._recorded[context.step] = updated
    return logits

  def loss(self, logits, labels, params, initial_params, context):
    """The training loss of a batch: the `loss` hook's, else the cross-entropy reduced as
    `loss_reduction` says."""
    if self.loss_hook is not None:
      return self.loss_hook(logits, labels, params, initial_params, context)
    loss = losses.cross_entropy(logits, labels)
    if self.loss_reduction == "mean":
      return loss
    shots = max(context.support_size // int(logits.shape[-1]), 1)
    return loss * (float(labels.shape[0]) / shots)

  def _support_loss(self, task, context, initial):
    images, labels, batches = (to_float(task["support_images"]), task["support_labels"],
                               task["support_batches"])

    def loss_fn(params, step):
      index = batches[step]
      at = context.at(step)
      logits = self.forward(self.model, params, tf.gather(images, index), at)
      return self.loss(logits, tf.gather(labels, index), params, initial, at)

    return loss_fn

  def query(self, task, params, context, initial_params=None):
    """(loss, accuracy) of the query set of `task` predicted with `params` in `context`
    (a query context: `TaskContext.prediction()` or `.after(s)`)."""
    logits = self.forward(self.model, params, to_float(task["query_images"]), context)
    initial = self.meta_parameters() if initial_params is None else initial_params
    return (self.loss(logits, task["query_labels"], params, initial, context),
            losses.accuracy(logits, task["query_labels"]))

  # ---- adaptation -----------------------------------------------------------------------

  def inner_rates(self):
    """Per-group, per-tensor vectors of per-step inner learning rates: the learnable ones
    (LSLR) or the group's rate, 0 for tensors kept out of the inner loop; None when every
    group simply uses its scalar rate."""
    if not self.inner_lrs and not any(self._frozen.values()):
      return None
    rates = {}
    for name, group in self.inner_groups.items():
      vectors = self.inner_lrs.get(name) or [tf.constant([float(group.learning_rate)])
                                             for _ in self.variables[name]]
      rates[name] = [tf.zeros_like(v) if i in self._frozen[name] else v
                     for i, v in enumerate(vectors)]
    return rates

  def _task_context(self, task, context):
    return context if context is not None else self.task_context(task, self.protocol())

  def adapt_trajectory(self, task, context=None, first_order=False, params=None, state=None):
    """Adapts to `task` step by step, every step in the graph (differentiable: MAML).

    Args:
      task: one task's tensors (support images, labels, per-step mini-batches).
      context: the TaskContext (default: adaptation to a new task with the test phases).
      first_order: stop gradients through the inner gradients.
      params: initial parameters (default: the meta-parameters).
      state: initial inner-optimizer state (default: fresh).

    Returns:
      (trajectory, losses, state): the parameters before the first and after every step,
      the support loss of every step and the inner optimizers' final state. In meta-training
      with per-step BatchNorm statistics, the support passes' statistics are recorded
      until `recorded_auxiliary()` takes them.
    """
    context = self._task_context(task, context)
    params = self.meta_parameters() if params is None else params
    self._recorded = {} if self.bn_statistics and context.meta_training else None
    return inner_loop.adapt(self._support_loss(task, context, params), params,
                            self.inner_groups, context.protocol.phases,
                            first_order=first_order, joint=self.joint,
                            learning_rates=self.inner_rates(), state=state)

  def recorded_auxiliary(self):
    """The auxiliary state recorded since `adapt_trajectory` (per-step BatchNorm
    statistics, [steps, ...] per variable), and stops recording."""
    recorded, self._recorded = self._recorded, None
    if not recorded:
      return {}
    return {"bn_statistics": [tf.stack([recorded[s][i] for s in sorted(recorded)])
                              for i in range(len(self.bn_statistics))]}

  def adapt_task(self, task, context=None, params=None, state=None):
    """First-order adaptation to `task` in a tf.while_loop (meta-testing, Reptile), with
    the learned per-step inner learning rates if any (steps past the meta-trained ones use
    the last). Arguments as `adapt_trajectory`; returns (final params, losses, state)."""
    context = self._task_context(task, context)
    params = self.meta_parameters() if params is None else params
    return inner_loop.adapt_loop(self._support_loss(task, context, params), params,
                                 self.inner_groups, context.protocol.phases, joint=self.joint,
                                 state=state, learning_rates=self.inner_rates())

  # ---- meta-training ----------------------------------------------------------------------

  def task_directions(self, tasks, state=None, task_index=0, unroll=False, plan=None):
    """The update rule's per-group directions (meta-gradients, or adapted - meta for
    Reptile), metrics, auxiliary state and final inner-optimizer state of one task (a dict
    of one task's tensors, or stream -> task), at the next meta-iteration's plan.
    `unroll=True` builds the inner steps without tf.while_loop (a loop-free graph whose
    operations the TF profiler counts: tools/benchmark.py). Inside a tf.function,
    pass the `plan()` read outside it."""
    if "support_images" in tasks:
      tasks = {stream: tasks for stream in self.streams()}
    rule = self.rule
    if unroll:
      rule = rule.unrolled()
    plan = plan or self.plan()
    return rule.task_directions(self, tasks, self.touched_groups(plan), plan, state, task_index)

  def streams(self):
    """The task streams the rule reads."""
    return self.rule.streams(self, self.rule.groups(self))

  def before_iteration(self, step):
    """Hook: before meta-iteration `step` (0-based); methods change structure here."""

  def after_iteration(self, step):
    """Hook: after meta-iteration `step` (the count done, 1-based)."""

  def at_evaluation(self, split, step, outputs):
    """Hook: after an evaluation of `split` at `step` (outputs as `evaluate_batch`)."""

  def at_checkpoint(self, step):
    """Hook: before the Runner checkpoints at `step`."""

  def train_step(self, batch):
    """One meta-iteration on a meta-batch (dict of [tasks, ...] tensors, or stream -> such
    a meta-batch when the rule reads several streams); returns the mean metrics.

    The tasks are split over the replicas of the learner's strategy (their number must
    divide the meta-batch). The compiled function is traced once per IterationPlan (a few
    times in a run).
    """
    batches = batch if "support_images" not in batch else {"train": batch}
    missing = set(self.streams()) - set(batches)
    if missing:
      raise ValueError(f"the update rule reads task streams {sorted(self.streams())}; "
                       f"got meta-batches of {sorted(batches)}")
    sizes = {s: int(tf.nest.flatten(batches[s])[0].shape[0]) for s in self.streams()}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"every task stream's meta-batch needs the same number of tasks, got "
                       f"{sizes}")
    step = int(self.step.numpy())
    self.before_iteration(step)
    metrics = self.engine.train_step({s: batches[s] for s in self.streams()})
    self.after_iteration(step + 1)
    return metrics

  def trace_counts(self):
    """IterationPlan -> how many times its meta-iteration was traced."""
    return self.engine.trace_counts()

  # ---- adaptation to new tasks ----------------------------------------------------------

  def final_logits(self, params, images, protocol=None, support_images=None, seed=None):
    """Logits of a model adapted with `protocol` (default: the test phases) to parameters
    `params`, on new float images: the prediction after adaptation, batched as
    `query_batches` says (each with the float `support_images` if so)."""
    protocol = protocol or self.protocol()
    context = context_lib.TaskContext(protocol, seed=seed).prediction()
    predict = lambda batch: self.forward(self.model, params, batch, context)
    if self.query_batches == "all":
      return predict(images)
    if support_images is None:
      raise ValueError("query_batches='each_with_support' predicts with the support images")
    return tf.map_fn(lambda image: predict(tf.concat([support_images, image[None]], 0))[-1],
                     images)

  def evaluate_task(self, task, params, context):
    """Per-task evaluation outputs after adaptation: query loss and accuracy (methods add
    their own, e.g. the adapted architecture)."""
    logits = self.final_logits(params, to_float(task["query_images"]), context.protocol,
                               to_float(task["support_images"]), context.seed)
    return {"loss": losses.cross_entropy(logits, task["query_labels"]),
            "accuracy": losses.accuracy(logits, task["query_labels"])}

  def _evaluate_replica(self, batch, first_task, split):
    params, state, protocol = self.meta_parameters(), self.carried_state(), self.protocol()
    num_tasks = int(batch["support_images"].shape[0])
    offset = first_task + distribute.replica_task_offset(num_tasks)

    def one(args):
      index, task = args
      context = self.task_context(task, protocol, split, offset + index)
      final, _, _ = self.adapt_task(task, context, params, state)
      return self.evaluate_task(task, final, context)

    return tf.map_fn(one, (tf.range(num_tasks), batch),
                     fn_output_signature=self.evaluate_signature())

  def _evaluate_batch(self, batch, first_task, split):
    """Each replica adapts to its slice of tasks; the outputs are gathered in task order."""
    with self.strategy.scope():
      outputs = self.strategy.run(
          self.engine.compiled(lambda b, f: self._evaluate_replica(b, f, split)),
          args=(batch, first_task))
      return tf.nest.map_structure(lambda t: self.strategy.gather(t, axis=0), outputs)

  def evaluate_signature(self):
    """tf.TensorSpec of each `evaluate_task` output of one task."""
    return {"loss": tf.TensorSpec([], tf.float32), "accuracy": tf.TensorSpec([], tf.float32)}

  def evaluate_batch(self, batch, first_task=0, split="evaluation"):
    """Adapts afresh to each task of `batch` with the test phases; returns a dict of
    per-task outputs ("loss", "accuracy", and what the method adds), each [tasks, ...].
    The tasks are split over the replicas (their number must divide the batch). Task i of
    the batch is task `first_task + i` of `split`, which seeds its random draws."""
    key = (self.structure_key(), split)
    if key not in self._eval_fns:  # one compiled evaluation per structure and split
      self._eval_fns[key] = tf.function(
          lambda b, f: self._evaluate_batch(b, f, split), autograph=False)
    return self._eval_fns[key](
        distribute.split_tasks(self.strategy, batch, "the evaluation batch"),
        tf.constant(first_task, tf.int32))

  def summarize(self, outputs, step):
    """Method-specific summaries of an evaluation's outputs (numpy, [tasks, ...]), written
    inside the caller's default summary writer; returns the method's results section."""
    del outputs, step
    return {}

  def weight_count(self):
    """The number of the model's weights (its weight variables' entries)."""
    return int(sum(np.prod(v.shape) for v in self.model.weight_variables))

  def task_parameter_counts(self, outputs):
    """The parameter count each evaluated task predicts with (numpy outputs of an
    evaluation): the model's weights, the same for every task here."""
    return [self.weight_count()] * len(outputs["accuracy"])

  def method_name(self):
    """The method's name in results.json: the algorithm, "++" with MAML++ options."""
    plus = bool(self.inner_lrs or self.bn_weights or self.bn_statistics or
                getattr(self.rule, "multi_step_loss_iterations", 0))
    return self.algorithm + ("++" if plus else "")

  def report(self, results):
    """Lines a binary prints about the method's results section (none here)."""
    del results
    return []

  def adapt(self, support_images, support_labels, phases=None, inner_batch_size=None, seed=0):
    """Adapts the meta-learned parameters to one new task.

    Args:
      support_images: [N * K, H, W, C] uint8 (or float in [0, 255]) images.
      support_labels: [N * K] int labels in 0..N-1.
      phases: inner-loop phases (default: the test phases).
      inner_batch_size: mini-batch size per step (default: the whole support set).
      seed: seed of the mini-batch order and of the task's random draws.

    Returns:
      An AdaptedModel whose `predict(images)` gives logits.
    """
    protocol = self.protocol(phases or None)
    images = tf.convert_to_tensor(support_images)
    size = int(images.shape[0])
    task = {"support_images": images,
            "support_labels": tf.convert_to_tensor(support_labels, tf.int32),
            "support_batches": tf.constant(episodes_lib.support_batches(
                np.random.default_rng(seed), size, inner_batch_size or size,
                protocol.num_steps))}
    context = self.task_context(task, protocol, "adapt", seed)
    key = (protocol, self.structure_key())
    if key not in self._adapt_fns:  # one compiled adaptation per protocol and structure
      self._adapt_fns[key] = tf.function(
          lambda t, s: self.adapt_task(
              t, dataclasses.replace(self.task_context(t, protocol, "adapt"), seed=s),
              state=self.carried_state())[:2], autograph=False)
    final, losses_ = self._adapt_fns[key](task, context.seed)
    return AdaptedModel(self, final, losses_.numpy().tolist(), context, to_float(images))

  def compiled_adaptations(self):
    """How many adaptation functions `adapt` has compiled (one per protocol and structure)."""
    return len(self._adapt_fns)

  def episode_spec(self, spec, training=True):
    """`spec` with as many inner mini-batches as the train (or test) phases take steps."""
    phases = self.train_phases if training else self.test_phases
    return dataclasses.replace(spec, inner_steps=inner_loop.total_steps(phases))

  def checkpoint_items(self):
    """Everything meta-training state consists of, for tf.train.Checkpoint."""
    items = {"model": self.model, "meta_step": self.step}
    items.update({f"meta_optimizer_{n}": o for n, o in self.meta_optimizers.items()})
    for name, variables in self.meta_groups.items():
      if name not in self.variables:  # learner-owned groups
        items.update({f"{name}_{i}": v for i, v in enumerate(variables)})
    for name, variables in self.auxiliary_variables.items():
      items.update({f"{name}_{i}": v for i, v in enumerate(variables)})
    for name, state in self.inner_state.items():
      items.update({f"inner_state_{name}_{i}": v for i, v in enumerate(tf.nest.flatten(state))})
    return items


class AdaptedModel:
  """A meta-learned model adapted to one task: parameters held as tensors."""

  def __init__(self, learner, params, support_losses, context, support_images):
    self.learner, self.params, self.support_losses = learner, params, support_losses
    self.context, self.protocol, self.support_images = context, context.protocol, support_images

  def predict(self, images):
    """Logits for `images` (uint8 or float in [0, 255]); batch statistics in BatchNorm, as
    during adaptation, batched as the learner's `query_batches` says."""
    return self.learner.final_logits(self.params, to_float(tf.convert_to_tensor(images)),
                                     self.protocol, self.support_images, self.context.seed)

  def accuracy(self, images, labels):
    return float(accuracy(self.predict(images), tf.convert_to_tensor(labels, tf.int32)))
