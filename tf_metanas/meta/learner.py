"""Meta-learners: MAML, first-order MAML, Reptile, and the MAML++ options.

A MetaLearner owns a FunctionalModel and, for each parameter group it adapts ("weights",
"arch"), an inner ParamGroup and a meta optimizer. One meta-iteration adapts every task of
a meta-batch from the meta-parameters and updates them:

  MAML (Finn et al. 2017):   theta <- MetaOpt(theta, mean_T grad_theta L_Q(U^k(theta)))
  first-order MAML:          the same with the inner gradients held constant
  Reptile (Nichol et al.):   theta <- theta + eps_t * mean_T (U^k(theta) - theta),
                             eps_t constant or a schedule of the meta-iteration (REPTILE
                             anneals it linearly: a Linear schedule)

MAML++ (Antoniou et al. 2019) options: multi-step loss with annealed per-step weights,
per-layer per-step learnable inner learning rates (LSLR), derivative-order annealing
(first order for the first `first_order_iterations`), cosine meta learning rate (a Cosine
schedule). All tasks and inner steps of a meta-iteration run in one tf.function, traced
without autograph (the loops are explicit tf.while_loops; conversion only cost trace time).

Distribution: a MetaLearner built inside `strategy.scope()` splits each meta-batch over the
strategy's replicas (`tf_metanas.distribute`): every replica sums the meta-gradients (or
Reptile differences) of its tasks and divides by the meta-batch size; the meta optimizers
all-reduce (sum) these shares, so every replica applies the mean over all tasks to its copy
of the mirrored meta-parameters.
"""

import dataclasses
import functools

import gin
import keras
import numpy as np
import tensorflow as tf

from tf_metanas import distribute
from tf_metanas.data import episodes as episodes_lib
from tf_metanas.meta import inner_loop

ALGORITHMS = ("maml", "fomaml", "reptile")
LOSS_REDUCTIONS = ("mean", "sum_over_shots")
QUERY_BATCHES = ("all", "each_with_support")
METRICS = ("query_loss", "query_accuracy", "support_loss_first", "support_loss_last")


def _variables_of(model, group):
  if group == "weights":
    return model.weight_variables
  if group == "arch":
    return model.arch_variables
  raise ValueError(f"unknown parameter group {group!r}; use 'weights' or 'arch'")


def _batch_norm_affine(model):
  """The BatchNorm scales and shifts among the model's weights."""
  norms = [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
           if isinstance(layer, keras.layers.BatchNormalization)]
  return [w for layer in norms for w in (layer.gamma, layer.beta) if w is not None]


def default_forward(model, params, images, step, protocol):
  """Logits of `model` with the group tensors in `params` (weights, and arch if present).

  Every forward receives the inner step (a scalar, possibly a tensor) and the
  `inner_loop.Protocol` running (meta-training or meta-test phases); the query after
  adaptation is step == protocol.num_steps. Training-only regularization (DropPath) is on
  during the inner steps of protocols that regularize, never on the query, while BatchNorm
  keeps batch statistics (transductive).
  """
  return model.functional_call(params["weights"], images, arch=params.get("arch"),
                               training=True, regularize=regularizes(step, protocol))


def is_query(step, protocol):
  """Whether a forward at `step` is a prediction after adaptation (the query pass): the
  step is the Python int protocol.num_steps. Inner steps, even as tensors, are not."""
  return isinstance(step, int) and step >= protocol.num_steps


def regularizes(step, protocol):
  """Whether training-only regularization (DropPath) is on at `step` of `protocol`."""
  return protocol.regularize and not is_query(step, protocol)


def cross_entropy(logits, labels):
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def accuracy(logits, labels):
  return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                                tf.float32))


def to_float(images):
  """uint8 images to float32 in [0, 1]."""
  return tf.cast(images, tf.float32) / 255.0


def _task_metrics(query_loss, query_accuracy, support_losses):
  """The per-task metrics (METRICS) a meta-iteration averages and reports."""
  return {"query_loss": query_loss, "query_accuracy": query_accuracy,
          "support_loss_first": support_losses[0], "support_loss_last": support_losses[-1]}


def multi_step_weights(num_steps, step, anneal_iterations):
  """MAML++ multi-step loss weights (the official `get_per_step_loss_importance_vector`, with
  meta-iterations for its epochs): with K steps and progress f = step / anneal_iterations,

    w_s = max(1/K - f / K, 0.03 / K)                        for s < K
    w_K = min(1/K + f (K - 1) / K, 1 - (K - 1) 0.03 / K)

  uniform 1/K at first; the learner uses them only while step < anneal_iterations and the
  last step's loss alone after.
  """
  k = float(num_steps)
  frac = tf.cast(step, tf.float32) / max(anneal_iterations, 1)
  floor = 0.03 / k
  others = tf.maximum(1.0 / k - frac / k, floor)
  last = tf.minimum(1.0 / k + frac * (k - 1.0) / k, 1.0 - (k - 1.0) * floor)
  return tf.concat([tf.fill([num_steps - 1], others), [last]], 0)


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
    meta_optimizer: "adam" or "sgd" for MAML-style updates (Reptile always applies its
      exact step, i.e. SGD on theta - mean adapted).
    joint: one backward pass per inner step for all groups (False: alternate groups).
    multi_step_loss_iterations: > 0 enables the MAML++ multi-step loss for this many
      meta-iterations (its weights annealed towards the last step), after which the last
      step's loss alone is used, as the official code does.
    learnable_inner_lr: MAML++ LSLR: per-step, per-tensor inner learning rates meta-learned
      with the weights (MAML / first-order MAML only), used wherever the learner adapts
      (meta-test and `adapt` too; test steps past the meta-trained ones use the last step's).
    first_order_iterations: MAML++ derivative-order annealing: first order before this
      meta-iteration, second order after.
    forward: (model, params, images, step, protocol) -> logits, with protocol an
      `inner_loop.Protocol`; methods plug their parametrization (e.g. temperature-annealed
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
    jit_compile: compile with XLA what each replica computes for its tasks (adaptation and
      meta-gradients, or evaluation); all-reduces and updates stay in TensorFlow. Slower
      on CPU (BENCHMARKS.md); for GPUs.
  """

  def __init__(self, model, algorithm="maml", inner_groups=(inner_loop.ParamGroup(),),
               train_phases=(inner_loop.Phase(5),), test_phases=(inner_loop.Phase(10),),
               meta_learning_rates=None, meta_optimizer="adam", joint=True,
               multi_step_loss_iterations=0, learnable_inner_lr=False,
               first_order_iterations=0, forward=default_forward,
               per_step_bn_statistics=False, per_step_bn_weights=False, transductive=True,
               warmup_iterations=0, warmup_frozen=("arch",), meta_test_regularization=False,
               carry_inner_state=False, loss_reduction="mean", meta_gradient_clip=None,
               adapt_batch_norm=True, query_batches="all", jit_compile=False):
    if algorithm not in ALGORITHMS:
      raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    if algorithm == "reptile" and (learnable_inner_lr or multi_step_loss_iterations or
                                   per_step_bn_statistics or per_step_bn_weights):
      raise ValueError("LSLR, the multi-step loss and per-step BatchNorm statistics and "
                       "weights are MAML++ options: use MAML or first-order MAML")
    if query_batches not in QUERY_BATCHES:
      raise ValueError(f"unknown query_batches {query_batches!r}; use one of {QUERY_BATCHES}")
    if loss_reduction not in LOSS_REDUCTIONS:
      raise ValueError(f"unknown loss_reduction {loss_reduction!r}; use one of {LOSS_REDUCTIONS}")
    if algorithm == "reptile" and not adapt_batch_norm:
      raise ValueError("adapt_batch_norm=False meta-learns BatchNorm parameters from query "
                       "gradients, which Reptile has not: use MAML or first-order MAML")
    if algorithm == "reptile" and meta_gradient_clip:
      raise ValueError("meta_gradient_clip clips MAML meta-gradients; Reptile has none")
    if not transductive and not per_step_bn_statistics:
      raise ValueError("transductive=False needs per_step_bn_statistics=True")
    if (per_step_bn_statistics or per_step_bn_weights) and forward is not default_forward:
      raise ValueError("per-step BatchNorm statistics and weights work with the default "
                       "forward only")
    self.model, self.algorithm, self.joint = model, algorithm, joint
    self.strategy = tf.distribute.get_strategy()
    self.groups = {g.name: g for g in inner_groups}
    self.train_phases, self.test_phases = tuple(train_phases), tuple(test_phases)
    self.multi_step_loss_iterations = int(multi_step_loss_iterations)
    self.first_order_iterations = int(first_order_iterations)
    self.forward, self.transductive = forward, bool(transductive)
    self.warmup_iterations, self.warmup_frozen = int(warmup_iterations), tuple(warmup_frozen)
    rates = meta_learning_rates or {name: 1e-3 for name in self.groups}
    if set(rates) != set(self.groups):
      raise ValueError(f"meta_learning_rates names groups {sorted(rates)} but the inner "
                       f"groups are {sorted(self.groups)}")
    self.variables = {name: _variables_of(model, name) for name in self.groups}
    bn_affine = _batch_norm_affine(model)
    bn_ids = {id(v) for v in bn_affine}
    if per_step_bn_weights:  # meta-learned per step instead of adapted
      self.variables["weights"] = [v for v in self.variables["weights"] if id(v) not in bn_ids]
    for name, variables in self.variables.items():
      if not variables:
        raise ValueError(f"group {name!r} has no variables in {type(model).__name__}")
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="meta_step")
    self.inner_lrs = {}
    if learnable_inner_lr:
      steps = inner_loop.total_steps(self.train_phases)
      self.inner_lrs = {name: [tf.Variable(tf.fill([steps], float(g.learning_rate)),
                                           name=f"inner_lr_{name}_{i}")
                               for i in range(len(self.variables[name]))]
                        for name, g in self.groups.items()}
    self.bn_statistics, self._recorded = [], None
    slots = inner_loop.total_steps(self.train_phases)
    if per_step_bn_statistics:
      self.bn_statistics = [
          tf.Variable(tf.stack([v.value] * slots), trainable=False, name=f"bn_statistics_{i}")
          for i, v in enumerate(model.non_trainable_variables)]
    per_step_affine = bn_affine if per_step_bn_weights else []
    self.bn_weights = [tf.Variable(tf.stack([v.value] * slots), name=f"bn_weights_{i}")
                       for i, v in enumerate(per_step_affine)]
    self._bn_affine_ids = [id(v) for v in per_step_affine]
    if per_step_bn_statistics or per_step_bn_weights:
      self.forward = self._forward_with_step_statistics
    self.meta_optimizers = {}
    for name in self.groups:
      rate = self._meta_rate(rates[name])
      if algorithm == "reptile" or meta_optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=rate)
      elif meta_optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=rate)
      else:
        raise ValueError(f"unknown meta_optimizer {meta_optimizer!r}; use 'adam' or 'sgd'")
      optimizer.build(self._meta_variables(name))
      self.meta_optimizers[name] = optimizer
    self.meta_test_regularization = bool(meta_test_regularization)
    self.loss_reduction, self.meta_gradient_clip = loss_reduction, meta_gradient_clip
    frozen_ids = set() if adapt_batch_norm else bn_ids
    self._frozen = {name: {i for i, v in enumerate(self.variables[name]) if id(v) in frozen_ids}
                    for name in self.groups}
    self.query_batches = query_batches
    self.inner_state = self._state_variables() if carry_inner_state else {}
    self._train_fns, self._adapt_fns = {}, {}
    self.jit_compile = bool(jit_compile)
    self._eval_fn = tf.function(self._evaluate_batch, autograph=False)

  # ---- pieces ---------------------------------------------------------------------------

  def _state_variables(self):
    """Variables holding each group's carried inner-optimizer state (its structure as the
    optimizer's `init` makes it), one copy per replica."""
    params = self._initial_params()
    return {name: tf.nest.map_structure(
        lambda t: tf.Variable(t, trainable=False, name=f"inner_state_{name}",
                              synchronization=tf.VariableSynchronization.ON_READ,
                              aggregation=tf.VariableAggregation.MEAN),
        self.groups[name].optimizer.init(params[name])) for name in self.groups}

  def _carried_state(self):
    """The carried inner-optimizer state as tensors ({} when every task starts fresh)."""
    return tf.nest.map_structure(tf.convert_to_tensor, self.inner_state)

  def _carry(self, state):
    if self.inner_state:
      tf.nest.map_structure(lambda v, t: v.assign(t), self.inner_state, state)

  def protocol(self, phases=None, meta_training=False):
    """The Protocol of an adaptation: meta-training's (with `phases`, default the train
    phases) or adaptation to new tasks (default the test phases)."""
    if phases is None:
      phases = self.train_phases if meta_training else self.test_phases
    return inner_loop.Protocol(tuple(phases), meta_training,
                               meta_training or self.meta_test_regularization)

  def _meta_rate(self, rate):
    """A meta optimizer's learning rate: a float, or a schedule read at the meta step (the
    meta-iterations done, warm-up included). A Keras schedule alone would count its own
    optimizer's updates, which a group frozen during warm-up does not make."""
    if callable(rate):
      return lambda: rate(self.step)
    return rate

  def _step_weights(self, params, slot):
    """The model's weights in `weight_variables` order: the adapted ones from `params`, and
    the BatchNorm scales and shifts of `slot` when they are per step (BNWB)."""
    if not self.bn_weights:
      return params["weights"]
    given = dict(zip(map(id, self.variables["weights"]), params["weights"]))
    given.update((i, tf.gather(v, slot)) for i, v in zip(self._bn_affine_ids, self.bn_weights))
    return [given[id(v)] for v in self.model.weight_variables]

  def _forward_with_step_statistics(self, model, params, images, step, protocol):
    """Default forward with the BatchNorm statistics (BNRS) and scales and shifts (BNWB) of
    inner step `step`, where they are per step (MAML++).

    The support pass of step s uses slot s, a query after s + 1 updates slot s (steps past
    the meta-trained ones use the last slot). While meta-training (`self._recorded` is a
    dict) it normalizes with batch statistics and records each support pass's updated
    statistics; otherwise it normalizes with batch statistics if transductive, else with
    the slot's running statistics.
    """
    query = is_query(step, protocol)
    last = inner_loop.total_steps(self.train_phases) - 1
    slot = tf.clip_by_value(tf.cast(step, tf.int32) - (1 if query else 0), 0, last)
    statistics = ([tf.gather(v, slot) for v in self.bn_statistics] if self.bn_statistics
                  else None)
    recording = self._recorded is not None
    logits, updated = model.functional_call(
        self._step_weights(params, slot), images, arch=params.get("arch"),
        training=recording or self.transductive, non_trainable=statistics,
        return_non_trainable=True, regularize=regularizes(step, protocol))
    if recording and not query:
      self._recorded[step] = updated
    return logits

  def _inner_rates(self):
    """Per-group, per-tensor vectors of per-step inner learning rates: the learnable ones
    (LSLR) or the group's rate, 0 for tensors kept out of the inner loop; None when every
    group simply uses its scalar rate."""
    if not self.inner_lrs and not any(self._frozen.values()):
      return None
    rates = {}
    for name, group in self.groups.items():
      vectors = self.inner_lrs.get(name) or [tf.constant([float(group.learning_rate)])
                                             for _ in self.variables[name]]
      rates[name] = [tf.zeros_like(v) if i in self._frozen[name] else v
                     for i, v in enumerate(vectors)]
    return rates

  def _extra_meta_variables(self, name):
    """Meta-learned but not adapted: a group's learnable inner lrs (and per-step BatchNorm
    scales and shifts for the weights)."""
    return self.inner_lrs.get(name, []) + (self.bn_weights if name == "weights" else [])

  def _meta_variables(self, name):
    return self.variables[name] + self._extra_meta_variables(name)

  def _initial_params(self):
    return {name: [v.value for v in variables] for name, variables in self.variables.items()}

  def _loss(self, logits, labels, task):
    """The training loss of a batch of `task` (see `loss_reduction`)."""
    loss = cross_entropy(logits, labels)
    if self.loss_reduction == "mean":
      return loss
    shots = max(int(task["support_labels"].shape[0]) // int(logits.shape[-1]), 1)
    return loss * (float(labels.shape[0]) / shots)

  def _support_loss(self, task, protocol):
    images, labels, batches = (to_float(task["support_images"]), task["support_labels"],
                               task["support_batches"])

    def loss_fn(params, step):
      index = batches[step]
      logits = self.forward(self.model, params, tf.gather(images, index), step, protocol)
      return self._loss(logits, tf.gather(labels, index), task)

    return loss_fn

  def _query(self, task, params, step, protocol):
    logits = self.forward(self.model, params, to_float(task["query_images"]), step, protocol)
    return (self._loss(logits, task["query_labels"], task),
            accuracy(logits, task["query_labels"]))

  def _adapt(self, task, params, protocol, first_order, learning_rates=None, state=None):
    return inner_loop.adapt(self._support_loss(task, protocol), params, self.groups,
                            protocol.phases, first_order=first_order, joint=self.joint,
                            learning_rates=learning_rates, state=state)

  def in_warmup(self):
    """Whether the next meta-iteration is a warm-up iteration (frozen groups stay put)."""
    return int(self.step.numpy()) < self.warmup_iterations

  def _phases(self, warmup):
    """The meta-training phases, without the frozen groups during warm-up."""
    if not warmup:
      return self.train_phases
    return tuple(dataclasses.replace(p, groups=tuple(g for g in p.groups
                                                     if g not in self.warmup_frozen))
                 for p in self.train_phases)

  # ---- one task -------------------------------------------------------------------------

  def multi_step_loss_now(self):
    """Whether the next meta-iteration uses the MAML++ multi-step loss."""
    return int(self.step.numpy()) < self.multi_step_loss_iterations

  def _maml_task(self, task, first_order, phases, multi_step=False, state=None):
    """Meta-gradient of one task: d L_Q(U^k(theta)) / d theta (and d / d inner lrs)."""
    params = self._initial_params()
    # In _meta_variables order: each group's parameters, then what it meta-learns besides.
    sources = [t for name in self.groups for t in params[name] + self._extra_meta_variables(name)]
    protocol = self.protocol(phases, meta_training=True)
    steps = protocol.num_steps
    self._recorded = {} if self.bn_statistics else None
    with tf.GradientTape() as tape:
      tape.watch(sources)
      trajectory, losses, state = self._adapt(task, params, protocol, first_order,
                                              self._inner_rates(), state)
      if multi_step:
        weights = multi_step_weights(steps, self.step, self.multi_step_loss_iterations)
        query = [self._query(task, trajectory[s + 1], s + 1, protocol.truncated(s + 1))
                 for s in range(steps)]
        loss = tf.add_n([w * q[0] for w, q in zip(tf.unstack(weights), query)])
        acc = query[-1][1]
      else:
        loss, acc = self._query(task, trajectory[-1], steps, protocol)
    grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = [tf.convert_to_tensor(g) for g in grads]  # per-step slices are gathered (sparse)
    metrics = _task_metrics(loss, acc, losses)
    if self.bn_statistics:
      recorded, self._recorded = self._recorded, None
      grads = grads + [tf.stack([recorded[s][i] for s in range(steps)])
                       for i in range(len(self.bn_statistics))]
    return grads, metrics, tf.nest.map_structure(tf.stop_gradient, state)

  def _adapt_loop(self, task, params, protocol, state=None):
    """First-order adaptation in a tf.while_loop (meta-testing, Reptile), with the learned
    per-step inner learning rates if any (steps past the meta-trained ones use the last)."""
    return inner_loop.adapt_loop(self._support_loss(task, protocol), params, self.groups,
                                 protocol.phases, joint=self.joint, state=state,
                                 learning_rates=self._inner_rates())

  def _reptile_task(self, task, phases, unroll=False, state=None):
    """Reptile direction of one task: U^k(theta) - theta."""
    params = self._initial_params()
    protocol = self.protocol(phases, meta_training=True)
    if unroll:
      trajectory, losses, state = self._adapt(task, params, protocol, True, state=state)
      final, state = tf.nest.map_structure(tf.stop_gradient, (trajectory[-1], state))
    else:
      final, losses, state = self._adapt_loop(task, params, protocol, state)
    diffs = [a - p for name in self.groups for a, p in zip(final[name], params[name])]
    loss, acc = self._query(task, final, protocol.num_steps, protocol)
    metrics = _task_metrics(loss, acc, losses)
    return diffs, metrics, state

  # ---- one meta-iteration ---------------------------------------------------------------

  def _zero_accumulator(self):
    directions = [tf.zeros_like(v) for name in self.groups for v in self._meta_variables(name)]
    directions += [tf.zeros_like(v) for v in self.bn_statistics]
    if self.algorithm == "reptile":
      directions = directions[:sum(len(self.variables[n]) for n in self.groups)]
    return directions, {k: tf.constant(0.0) for k in METRICS}

  def _sum_over_tasks(self, body, batch, state):
    """Sum of the (directions, metrics) of body(task, state) over the tasks of a replica's
    batch, in a tf.while_loop that passes the inner-optimizer state from task to task (in
    meta-batch order); returns the sum and the last task's state."""
    num_tasks = batch["support_images"].shape[0]

    def step(i, total, state):
      task = tf.nest.map_structure(lambda t: t[i], batch)
      directions, metrics, final = body(task, state or None)
      total = tf.nest.map_structure(tf.add, total, (directions, metrics))
      return i + 1, total, final if state else state  # {}: every task starts fresh

    _, total, state = tf.while_loop(lambda i, *_: i < num_tasks, step,
                                    (tf.constant(0), self._zero_accumulator(), state))
    return total, state

  def _compiled(self, fn):
    """`fn` compiled with XLA if `jit_compile`: what one replica computes on its device (the
    tasks' adaptation), leaving all-reduces and variable updates to TensorFlow, so XLA
    works under every strategy."""
    if not self.jit_compile:
      return fn
    return tf.function(fn, jit_compile=True, autograph=False)

  def _replica_step(self, batch, body, num_tasks, warmup):
    """One replica's part of a meta-iteration, in replica context: the sum of its tasks'
    meta-gradients (Reptile: adapted - meta), divided by the meta-batch's `num_tasks`, goes
    to the meta optimizers, which all-reduce (sum) it over the replicas and so apply the
    mean over all tasks. Returns the same shares of the metrics and BatchNorm statistics."""
    carried = self._carried_state()
    (directions, metrics), state = self._compiled(
        lambda b, s: self._sum_over_tasks(body, b, s))(batch, carried)
    self._carry(state)
    shares = [d / num_tasks for d in directions]
    start = 0
    for name in self.groups:
      variables = self._meta_variables(name)
      part = shares[start:start + len(variables)]
      start += len(variables)
      if warmup and name in self.warmup_frozen:
        continue
      if self.algorithm == "reptile":
        # theta - eps * (theta - mean adapted) = theta + eps * mean (adapted - theta)
        part = [-d for d in part]
      elif self.meta_gradient_clip:
        part = self._clipped(part, name)
      self.meta_optimizers[name].apply_gradients(zip(part, variables))
    return {k: v / num_tasks for k, v in metrics.items()}, shares[start:]

  def _clipped(self, shares, name):
    """Replica shares of group `name` whose sum (the optimizer's all-reduce) is the mean
    meta-gradient clipped, except for the learnable inner rates (MAML++ clamps the network's
    parameters only): the mean is summed here first, since clipping does not commute with
    it."""
    replicas = self.strategy.num_replicas_in_sync
    if replicas > 1:
      shares = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, shares)
    clip = float(self.meta_gradient_clip)
    rates = {id(v) for v in self.inner_lrs.get(name, [])}
    return [(g if id(v) in rates else tf.clip_by_value(g, -clip, clip)) / replicas
            for g, v in zip(shares, self._meta_variables(name))]

  def task_update(self, task, first_order=None, warmup=False, unroll=False, multi_step=None,
                  state=None):
    """The meta-update direction (meta-gradient, or adapted - meta for Reptile), the
    metrics and the inner optimizers' final state of one meta-training task, which starts
    from `state` (default: fresh). A meta-iteration averages directions and metrics over
    its tasks. `unroll=True` builds every inner step without tf.while_loop: a loop-free
    graph whose operations the TF profiler can count (FLOPs in tools/benchmark.py)."""
    phases = self._phases(warmup)
    if self.algorithm == "reptile":
      return self._reptile_task(task, phases, unroll, state)
    if first_order is None:
      first_order = self.first_order_now()
    if multi_step is None:
      multi_step = self.multi_step_loss_now()
    return self._maml_task(task, first_order, phases, multi_step, state)

  def _train_step(self, batch, first_order, warmup, multi_step):
    body = lambda task, state: self.task_update(task, first_order, warmup,
                                                multi_step=multi_step, state=state)
    local = tf.nest.flatten(self.strategy.experimental_local_results(batch)[0])[0]
    num_tasks = int(local.shape[0]) * self.strategy.num_replicas_in_sync
    with self.strategy.scope():
      shares = self.strategy.run(lambda b: self._replica_step(b, body, num_tasks, warmup),
                                 args=(batch,))
      metrics, statistics = tf.nest.map_structure(
          lambda t: self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), shares)
      for variable, mean_updated in zip(self.bn_statistics, statistics):
        variable.assign(mean_updated)  # the momentum update with the tasks' mean moments
      if self.strategy.num_replicas_in_sync > 1:  # every replica goes on from the mean state
        for variable in tf.nest.flatten(self.inner_state):
          variable.assign(variable.read_value())  # cross-replica: read the mean, set all
      self.step.assign_add(1)
    return metrics

  def first_order_now(self):
    """Whether the next meta-iteration uses first-order gradients."""
    return self.algorithm == "fomaml" or int(self.step.numpy()) < self.first_order_iterations

  def train_step(self, batch):
    """One meta-iteration on a meta-batch (dict of [tasks, ...] tensors); returns metrics.

    The tasks are split over the replicas of the learner's strategy (their number must
    divide the meta-batch). The compiled function is traced once per derivative order,
    warm-up state and multi-step-loss state (a few times in a run).
    """
    first_order = self.first_order_now() if self.algorithm != "reptile" else True
    key = (first_order, self.in_warmup(), self.multi_step_loss_now())
    if key not in self._train_fns:
      self._train_fns[key] = tf.function(
          functools.partial(self._train_step, first_order=first_order, warmup=key[1],
                            multi_step=key[2]),
          autograph=False)
    return self._train_fns[key](distribute.split_tasks(self.strategy, batch))

  # ---- adaptation to new tasks ----------------------------------------------------------

  def final_logits(self, params, images, protocol=None, support_images=None):
    """Logits of a model adapted with `protocol` (default: the test phases) to parameters
    `params`, on new float images: the prediction after adaptation, batched as
    `query_batches` says (each with the float `support_images` if so)."""
    protocol = protocol or self.protocol()
    predict = lambda batch: self.forward(self.model, params, batch, protocol.num_steps, protocol)
    if self.query_batches == "all":
      return predict(images)
    if support_images is None:
      raise ValueError("query_batches='each_with_support' predicts with the support images")
    return tf.map_fn(lambda image: predict(tf.concat([support_images, image[None]], 0))[-1],
                     images)

  def _evaluate_task(self, task, params, protocol):
    """Per-task evaluation outputs after adaptation: query loss and accuracy (methods add
    their own, e.g. the adapted architecture)."""
    logits = self.final_logits(params, to_float(task["query_images"]), protocol,
                               to_float(task["support_images"]))
    return {"loss": cross_entropy(logits, task["query_labels"]),
            "accuracy": accuracy(logits, task["query_labels"])}

  def _evaluate_replica(self, batch):
    params, state, protocol = self._initial_params(), self._carried_state(), self.protocol()

    def one(task):
      final, _, _ = self._adapt_loop(task, params, protocol, state)
      return self._evaluate_task(task, final, protocol)

    return tf.map_fn(one, batch, fn_output_signature=self._evaluate_signature())

  def _evaluate_batch(self, batch):
    """Each replica adapts to its slice of tasks; the outputs are gathered in task order."""
    with self.strategy.scope():
      outputs = self.strategy.run(self._compiled(self._evaluate_replica), args=(batch,))
      return tf.nest.map_structure(lambda t: self.strategy.gather(t, axis=0), outputs)

  def _evaluate_signature(self):
    """tf.TensorSpec of each `_evaluate_task` output of one task."""
    return {"loss": tf.TensorSpec([], tf.float32), "accuracy": tf.TensorSpec([], tf.float32)}

  def evaluate_batch(self, batch):
    """Adapts afresh to each task of `batch` with the test phases; returns a dict of
    per-task outputs ("loss", "accuracy", and what the method adds), each [tasks, ...].
    The tasks are split over the replicas (their number must divide the batch)."""
    return self._eval_fn(distribute.split_tasks(self.strategy, batch, "the evaluation batch"))

  def summarize(self, outputs, step):
    """Method-specific summaries of an evaluation's outputs (numpy, [tasks, ...]), written
    inside the caller's default summary writer; returns extra results for results.json."""
    del outputs, step
    return {}

  def adapt(self, support_images, support_labels, phases=None, inner_batch_size=None, seed=0):
    """Adapts the meta-learned parameters to one new task.

    Args:
      support_images: [N * K, H, W, C] uint8 (or float in [0, 255]) images.
      support_labels: [N * K] int labels in 0..N-1.
      phases: inner-loop phases (default: the test phases).
      inner_batch_size: mini-batch size per step (default: the whole support set).
      seed: seed of the mini-batch order.

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
    if protocol not in self._adapt_fns:  # one compiled adaptation per protocol
      self._adapt_fns[protocol] = tf.function(
          lambda t: self._adapt_loop(t, self._initial_params(), protocol,
                                     self._carried_state())[:2], autograph=False)
    final, losses = self._adapt_fns[protocol](task)
    return AdaptedModel(self, final, losses.numpy().tolist(), protocol, to_float(images))

  def episode_spec(self, spec, training=True):
    """`spec` with as many inner mini-batches as the train (or test) phases take steps."""
    phases = self.train_phases if training else self.test_phases
    return dataclasses.replace(spec, inner_steps=inner_loop.total_steps(phases))

  def checkpoint_items(self):
    """Everything meta-training state consists of, for tf.train.Checkpoint."""
    items = {"model": self.model, "meta_step": self.step}
    items.update({f"meta_optimizer_{n}": o for n, o in self.meta_optimizers.items()})
    for name, lrs in self.inner_lrs.items():
      items.update({f"inner_lr_{name}_{i}": v for i, v in enumerate(lrs)})
    items.update({f"bn_statistics_{i}": v for i, v in enumerate(self.bn_statistics)})
    items.update({f"bn_weights_{i}": v for i, v in enumerate(self.bn_weights)})
    for name, state in self.inner_state.items():
      items.update({f"inner_state_{name}_{i}": v for i, v in enumerate(tf.nest.flatten(state))})
    return items


class AdaptedModel:
  """A meta-learned model adapted to one task: parameters held as tensors."""

  def __init__(self, learner, params, support_losses, protocol, support_images):
    self.learner, self.params, self.support_losses = learner, params, support_losses
    self.protocol, self.support_images = protocol, support_images

  def predict(self, images):
    """Logits for `images` (uint8 or float in [0, 255]); batch statistics in BatchNorm, as
    during adaptation, batched as the learner's `query_batches` says."""
    return self.learner.final_logits(self.params, to_float(tf.convert_to_tensor(images)),
                                     self.protocol, self.support_images)

  def accuracy(self, images, labels):
    return float(accuracy(self.predict(images), tf.convert_to_tensor(labels, tf.int32)))
