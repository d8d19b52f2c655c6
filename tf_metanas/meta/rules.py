"""Update rules: what one meta-iteration takes from one task, per parameter group.

An UpdateRule returns, for one task (one task of every stream it reads), a direction for
each parameter group it touches, plus metrics; the Engine averages the directions over the
meta-batch (and the replicas) and hands each group's mean to `meta_gradients`, whose
result that group's meta optimizer applies:

  MAML (Finn et al. 2017):  direction = d L_Q(U^k(theta)) / d theta; optimizer step on it
  first-order MAML:         the same with the inner gradients held constant
  Reptile (Nichol et al.):  direction = U^k(theta) - theta; applied as the exact step
                            theta <- theta + eps * mean direction (SGD on its negative)

Streams: a rule routes each group to a task stream (`routes`, default every group to
"train"): the group's direction comes from an adaptation to that stream's task and, for
MAML, from that task's query loss. Auto-MAML and CAML update the weights from one stream
and the architecture from another.

A rule's `regime(learner, step)` is the part of its behaviour that changes the compiled
graph (MAML++: first order before `first_order_iterations`, the multi-step loss for
`multi_step_loss_iterations`); it is part of the learner's trace key.
"""

import copy
import dataclasses

import gin
import tensorflow as tf

from tf_metanas.meta import losses as losses_lib


def multi_step_weights(num_steps, step, anneal_iterations):
  """MAML++ multi-step loss weights (the official `get_per_step_loss_importance_vector`, with
  meta-iterations for its epochs): with K steps and progress f = step / anneal_iterations,

    w_s = max(1/K - f / K, 0.03 / K)                        for s < K
    w_K = min(1/K + f (K - 1) / K, 1 - (K - 1) 0.03 / K)

  uniform 1/K at first; Maml uses them only while step < anneal_iterations and the last
  step's loss alone after.
  """
  k = float(num_steps)
  frac = tf.cast(step, tf.float32) / max(anneal_iterations, 1)
  floor = 0.03 / k
  others = tf.maximum(1.0 / k - frac / k, floor)
  last = tf.minimum(1.0 / k + frac * (k - 1.0) / k, 1.0 - (k - 1.0) * floor)
  return tf.concat([tf.fill([num_steps - 1], others), [last]], 0)


def _dense_gradients(tape, loss, sources):
  """d loss / d `sources` (a nest of tensors) as dense tensors in the same nest, zeros where
  the loss does not depend on a source (per-step slices are gathered: sparse)."""
  flat = tape.gradient(loss, tf.nest.flatten(sources),
                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return tf.nest.pack_sequence_as(sources, [tf.convert_to_tensor(g) for g in flat])


class UpdateRule:
  """Base: routes, regime and the meta-gradient of a group's mean direction.

  Args:
    routes: group name -> stream its direction comes from (groups not named: "train";
      learner-owned groups such as "inner_lr_weights" follow their base group).
    phases: the inner-loop phases of this rule's adaptations in meta-training (default:
      the learner's train phases); e.g. a CAML stage adapting the architecture alone.
  """

  def __init__(self, routes=None, phases=None):
    self.routes = dict(routes or {})
    self.phases = None if phases is None else tuple(phases)
    self.unroll = False

  def unrolled(self):
    """This rule with every inner loop built step by step, without tf.while_loop: a
    loop-free graph whose operations the TF profiler counts (tools/benchmark.py)."""
    rule = copy.copy(self)
    rule.unroll = True
    return rule

  def protocol(self, learner, plan):
    """The meta-training protocol of this rule's adaptations under `plan`."""
    return learner.training_protocol(plan.warmup, self.phases)

  def exact_step(self, learner, group):
    """Whether `group`'s meta-update is an exact step (Reptile: SGD whatever the meta
    optimizer settings say)."""
    del learner, group
    return False

  def stream_of(self, learner, group):
    return self.routes.get(group, self.routes.get(learner.base_group(group), "train"))

  def streams(self, learner, groups):
    """The streams the directions of `groups` come from, in a fixed order."""
    return tuple(sorted({self.stream_of(learner, g) for g in groups}))

  def regime(self, learner, step):
    """What of this rule changes the compiled graph at meta-step `step` (hashable)."""
    del learner, step
    return ()

  def step_counts(self):
    """Its settings counted in meta-iterations: description -> count (none here)."""
    return {}

  def groups(self, learner):
    """The groups this rule gives directions for (before warm-up freezes any)."""
    return tuple(learner.meta_groups)

  def first_order_at(self, learner, step):
    """Whether its meta-gradients at meta-step `step` ignore second derivatives."""
    del learner, step
    return False

  def stages(self, learner, plan, groups):
    """[(rule, plan, groups)] the engine runs in order within one meta-iteration, each
    stage's meta-update applied before the next stage adapts: one stage here."""
    del learner
    return [(self, plan, tuple(groups))]

  def task_directions(self, learner, tasks, groups, plan, state, task_index):
    """(directions {group: [tensors]}, metrics {name: scalar}, auxiliary {name: [tensors]},
    inner-optimizer state) of one task per stream (`tasks`: stream -> task dict), for the
    `groups` the iteration touches, under `plan` (the learner's IterationPlan: this rule's
    regime, warm-up), starting from inner-optimizer `state` (None: fresh); `task_index` is
    the task's position in the meta-batch (it seeds the task's random draws)."""
    raise NotImplementedError

  def auxiliary(self, learner):
    """Names of the auxiliary state (e.g. per-step BatchNorm statistics) it returns."""
    del learner
    return ()

  def meta_gradients(self, learner, group, mean_directions):
    """What the group's meta optimizer applies, from its mean direction (a replica's share
    of it: the optimizer sums the shares over replicas)."""
    del learner, group
    return mean_directions

  def primary_stream(self, learner):
    """The stream whose metrics keep their plain names (the first group's: the weights'),
    whatever an iteration touches; the others' get a "stream/" prefix."""
    return self.stream_of(learner, self.groups(learner)[0])

  def _metric_name(self, learner, stream, name):
    return name if stream == self.primary_stream(learner) else f"{stream}/{name}"

  def _per_stream(self, learner, tasks, groups, state, task_index, one):
    """Runs `one(task, stream groups, state, context)` per stream and merges the outputs."""
    directions, metrics, auxiliary = {}, {}, {}
    for stream in self.streams(learner, groups):
      mine = [g for g in groups if self.stream_of(learner, g) == stream]
      d, m, a, state = one(tasks[stream], mine, state, stream, task_index)
      directions.update(d)
      auxiliary.update(a)
      metrics.update({self._metric_name(learner, stream, k): v for k, v in m.items()})
    return directions, metrics, auxiliary, state

  def metric_names(self, learner, groups):
    return [self._metric_name(learner, s, k) for s in self.streams(learner, groups)
            for k in losses_lib.METRICS]


@gin.configurable(module="tf_metanas.meta")
class Maml(UpdateRule):
  """MAML meta-gradients, with the MAML++ schedule options.

  Args:
    first_order: first-order MAML (inner gradients held constant).
    first_order_iterations: MAML++ derivative-order annealing: first order before this
      meta-iteration, second order after.
    multi_step_loss_iterations: > 0: the MAML++ multi-step loss (annealed per-step
      weights) for this many meta-iterations, the last step's loss alone after.
    gradient_clip: clip each entry of a group's mean meta-gradient to [-c, c] (the
      official MAML code on mini-ImageNet and MAML++: 10), except learnable inner learning
      rates (groups "inner_lr_*"), which MAML++ does not clamp; None: no clipping.
    clipped_groups: the groups `gradient_clip` applies to (None: every group but the
      "inner_lr_*" ones; CAML's OPML: the weights only).
    routes, phases: see UpdateRule.
  """

  def __init__(self, first_order=False, first_order_iterations=0, multi_step_loss_iterations=0,
               gradient_clip=None, routes=None, phases=None, clipped_groups=None):
    super().__init__(routes, phases)
    self.clipped_groups = None if clipped_groups is None else tuple(clipped_groups)
    self.first_order = bool(first_order)
    self.first_order_iterations = int(first_order_iterations)
    self.multi_step_loss_iterations = int(multi_step_loss_iterations)
    self.gradient_clip = gradient_clip

  def first_order_at(self, learner, step):
    return bool(self.regime(learner, step)[0])

  def regime(self, learner, step):
    """(first order, multi-step loss) at meta-step `step`."""
    del learner
    return (self.first_order or step < self.first_order_iterations,
            step < self.multi_step_loss_iterations)

  def step_counts(self):
    return {name: count for name, count in (
        ("first_order_iterations", self.first_order_iterations),
        ("multi_step_loss_iterations", self.multi_step_loss_iterations)) if count}

  def auxiliary(self, learner):
    return tuple(learner.auxiliary_variables)

  def task_directions(self, learner, tasks, groups, plan, state, task_index):
    first_order, multi_step = plan.regime
    protocol = self.protocol(learner, plan)
    return self._per_stream(
        learner, tasks, groups, state, task_index,
        lambda task, mine, state, stream, index: self._one(
            learner, task, mine, first_order, multi_step, state,
            learner.task_context(task, protocol, stream, index)))

  def _one(self, learner, task, groups, first_order, multi_step, state, context):
    """d L_Q(U^k(theta)) / d theta for `groups` (and d / d the inner lrs, BN weights)."""
    if first_order and not (self.unroll or multi_step or learner.inner_lrs or
                            learner.bn_statistics or learner.bn_weights):
      return self._first_order(learner, task, groups, state, context)
    params = learner.meta_parameters()
    sources = {g: params[g] if g in params else list(learner.meta_groups[g]) for g in groups}
    with tf.GradientTape() as tape:
      tape.watch(tf.nest.flatten(sources))
      trajectory, losses, state = learner.adapt_trajectory(
          task, context, first_order=first_order, params=params, state=state)
      if multi_step:
        steps = context.num_steps
        weights = multi_step_weights(steps, learner.step,
                                                 self.multi_step_loss_iterations)
        query = [learner.query(task, trajectory[s + 1], context.after(s + 1))
                 for s in range(steps)]
        loss = tf.add_n([w * q[0] for w, q in zip(tf.unstack(weights), query)])
        acc = query[-1][1]
      else:
        loss, acc = learner.query(task, trajectory[-1], context.prediction())
    auxiliary = learner.recorded_auxiliary()
    metrics = losses_lib.task_metrics(loss, acc, losses)
    return (_dense_gradients(tape, loss, sources), metrics, auxiliary,
            tf.nest.map_structure(tf.stop_gradient, state))

  def _first_order(self, learner, task, groups, state, context):
    """First-order MAML's direction without unrolling the inner loop: with the inner
    gradients held constant d U^k(theta) / d theta is the identity, so the direction is the
    query gradient at the adapted parameters, adapted in a tf.while_loop (a graph about k
    times smaller to trace: it is traced again for every structure of CAML). Learnable
    inner rates and per-step BatchNorm state need the unrolled steps (`_one`)."""
    final, losses, state = learner.adapt_task(task, context, learner.meta_parameters(), state)
    sources = {g: final[g] if g in final else list(learner.meta_groups[g]) for g in groups}
    with tf.GradientTape() as tape:
      tape.watch(tf.nest.flatten(sources))
      loss, acc = learner.query(task, final, context.prediction())
    metrics = losses_lib.task_metrics(loss, acc, losses)
    return _dense_gradients(tape, loss, sources), metrics, {}, state

  def meta_gradients(self, learner, group, mean_directions):
    clipped = (not group.startswith("inner_lr") if self.clipped_groups is None
               else group in self.clipped_groups)
    if not self.gradient_clip or not clipped:
      return mean_directions
    # The mean is summed over the replicas here first: clipping does not commute with it.
    replicas = learner.strategy.num_replicas_in_sync
    if replicas > 1:
      mean_directions = tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.SUM, mean_directions)
    clip = float(self.gradient_clip)
    return [tf.clip_by_value(g, -clip, clip) / replicas for g in mean_directions]


@gin.configurable(module="tf_metanas.meta")
class Reptile(UpdateRule):
  """Reptile: the direction of a task is its adapted parameters minus the meta-parameters,
  adapted first order in a tf.while_loop (or unrolled); groups step by eps * the mean."""

  def groups(self, learner):
    return tuple(learner.inner_groups)

  def first_order_at(self, learner, step):
    del learner, step
    return True

  def __init__(self, routes=None, unroll=False, phases=None):
    """`unroll=True`: see `unrolled`."""
    super().__init__(routes, phases)
    self.unroll = bool(unroll)

  def exact_step(self, learner, group):
    del learner, group
    return True

  def task_directions(self, learner, tasks, groups, plan, state, task_index):
    protocol = self.protocol(learner, plan)
    return self._per_stream(
        learner, tasks, groups, state, task_index,
        lambda task, mine, state, stream, index: self._one(
            learner, task, mine, state, learner.task_context(task, protocol, stream, index)))

  def _one(self, learner, task, groups, state, context):
    params = learner.meta_parameters()
    if self.unroll:
      trajectory, losses, state = learner.adapt_trajectory(task, context, True, params, state)
      final, state = tf.nest.map_structure(tf.stop_gradient, (trajectory[-1], state))
    else:
      final, losses, state = learner.adapt_task(task, context, params, state)
    directions = {g: [a - p for a, p in zip(final[g], params[g])] for g in groups}
    loss, acc = learner.query(task, final, context.prediction())
    return directions, losses_lib.task_metrics(loss, acc, losses), {}, state

  def meta_gradients(self, learner, group, mean_directions):
    # theta - eps * (theta - mean adapted) = theta + eps * mean (adapted - theta)
    del learner, group
    return [-d for d in mean_directions]


@gin.configurable(module="tf_metanas.meta")
class Sequential(UpdateRule):
  """Rules applied one after the other within a meta-iteration, each to its own groups:
  stage i adapts from the meta-parameters stages < i have just updated (Auto-MAML,
  Algorithm 3: the architecture step first, then the weights step from the new
  architecture).

  Args:
    stages: ((rule, group names), ...) in order; every group in at most one stage.
  """

  def __init__(self, stages):
    super().__init__()
    self.parts = tuple((rule, tuple(names)) for rule, names in stages)
    seen = [g for _, names in self.parts for g in names]
    if len(seen) != len(set(seen)) or not seen:
      raise ValueError(f"Sequential.stages must name each group once, got {seen}")

  def _owner(self, learner, group):
    """The stage index of `group` (a learner-owned group follows its base group), or None."""
    for index, (_, names) in enumerate(self.parts):
      if group in names or learner.base_group(group) in names:
        return index
    return None

  def _split(self, learner, groups):
    """[(stage index, rule, its groups among `groups`)] of the stages with any."""
    out = []
    for index, (rule, _) in enumerate(self.parts):
      mine = tuple(g for g in groups if self._owner(learner, g) == index)
      if mine:
        out.append((index, rule, mine))
    return out

  def groups(self, learner):
    return tuple(g for g in learner.meta_groups if self._owner(learner, g) is not None
                 and g in self.parts[self._owner(learner, g)][0].groups(learner))

  def stream_of(self, learner, group):
    return self.parts[self._owner(learner, group)][0].stream_of(learner, group)

  @property
  def first_order(self):
    """Whether every stage is first order (its algorithm's name: "fomaml")."""
    return all(getattr(rule, "first_order", False) for rule, _ in self.parts)

  def first_order_at(self, learner, step):
    return all(rule.first_order_at(learner, step) for rule, _ in self.parts)

  def regime(self, learner, step):
    return tuple(rule.regime(learner, step) for rule, _ in self.parts)

  def step_counts(self):
    return {f"{name} (stage {index})": count for index, (rule, _) in enumerate(self.parts)
            for name, count in rule.step_counts().items()}

  def auxiliary(self, learner):
    return tuple(dict.fromkeys(a for rule, _ in self.parts for a in rule.auxiliary(learner)))

  def stages(self, learner, plan, groups):
    return [(rule, dataclasses.replace(plan, regime=plan.regime[index]), mine)
            for index, rule, mine in self._split(learner, groups)]

  def task_directions(self, learner, tasks, groups, plan, state, task_index):
    """Every stage's directions from the same meta-parameters, as `learner.task_directions`
    reports them. The engine instead applies each stage before the next one adapts, so a
    meta-iteration's later stages start from the updated groups."""
    directions, metrics, auxiliary = {}, {}, {}
    for rule, stage_plan, mine in self.stages(learner, plan, groups):
      d, m, a, state = rule.task_directions(learner, tasks, mine, stage_plan, state, task_index)
      directions.update(d)
      metrics.update(m)
      auxiliary.update(a)
    return directions, metrics, auxiliary, state

  def metric_names(self, learner, groups):
    return [n for _, rule, mine in self._split(learner, groups)
            for n in rule.metric_names(learner, mine)]

  def meta_gradients(self, learner, group, mean_directions):
    return self.parts[self._owner(learner, group)][0].meta_gradients(
        learner, group, mean_directions)

  def unrolled(self):
    rule = copy.copy(self)
    rule.parts = tuple((stage.unrolled(), names) for stage, names in self.parts)
    return rule

  def exact_step(self, learner, group):
    owner = self._owner(learner, group)
    return owner is not None and self.parts[owner][0].exact_step(learner, group)


def innermost(rule):
  """The rule a StreamMixture applies per stream (any other rule itself)."""
  while isinstance(rule, StreamMixture):
    rule = rule.rule
  return rule


def from_algorithm(algorithm, first_order_iterations=0, multi_step_loss_iterations=0,
                   gradient_clip=None):
    """The rule of a MetaLearner `algorithm` name ("maml", "fomaml", "reptile")."""
    if algorithm == "reptile":
      return Reptile()
    return Maml(algorithm == "fomaml", first_order_iterations, multi_step_loss_iterations,
                gradient_clip)


@gin.configurable(module="tf_metanas.meta")
class StreamMixture(UpdateRule):
  """One meta-network meta-trained on a mixture of task streams (BASE Sec. 5.1: tasks of
  several image sizes, each size with its own featurization head). Every meta-batch index
  has one task of every stream s; `rule` (Maml or Reptile) gives each stream's task its
  directions d_s for the shared groups and the groups s owns; then

    shared group:         d = 1/S * sum_s d_s      (every stream's tasks move it)
    group owned by s:     d = d_s                  (only s's tasks move it: its head)

  so, averaged over the meta-batch, a shared group steps on the mean over all S x T tasks
  and a head on the mean over its stream's T tasks. Groups of the network's heads that no
  stream owns are not touched (their values and optimizer slots stay as they are).

  Args:
    rule: the per-stream UpdateRule (its routes are replaced: each stream's adaptation
      reads that stream's task).
    own: stream name -> the groups it owns (e.g. {"glyphs": ["head_28x28x1"]}); the
      streams the rule reads are its keys.
  """

  def __init__(self, rule, own):
    super().__init__()
    if not own:
      raise ValueError("StreamMixture.own must name at least one stream")
    self.rule = rule
    self.own = {str(stream): tuple(groups) for stream, groups in own.items()}
    owned = [g for groups in self.own.values() for g in groups]
    if len(owned) != len(set(owned)):
      raise ValueError(f"StreamMixture.own gives a group to two streams: {self.own}")

  @property
  def first_order(self):
    return getattr(self.rule, "first_order", False)

  def owner(self, learner, group):
    """The stream owning `group` (or its base group), None for a shared group."""
    for stream, groups in self.own.items():
      if group in groups or learner.base_group(group) in groups:
        return stream
    return None

  def groups(self, learner):
    heads = set(getattr(learner.model, "head_groups", {}))
    missing = [g for groups in self.own.values() for g in groups if g not in learner.meta_groups]
    if missing:
      raise ValueError(f"StreamMixture.own names groups {missing} the learner does not "
                       f"meta-learn; its groups are {sorted(learner.meta_groups)}")
    return tuple(g for g in self.rule.groups(learner)
                 if self.owner(learner, g) or learner.base_group(g) not in heads)

  def streams(self, learner, groups):
    del learner, groups
    return tuple(sorted(self.own))

  def stream_of(self, learner, group):
    return self.owner(learner, group) or self.streams(learner, ())[0]

  def primary_stream(self, learner):
    return None  # the plain metric names are the means over the streams

  def protocol(self, learner, plan):
    return self.rule.protocol(learner, plan)

  def exact_step(self, learner, group):
    return self.rule.exact_step(learner, group)

  def regime(self, learner, step):
    return self.rule.regime(learner, step)

  def step_counts(self):
    return self.rule.step_counts()

  def first_order_at(self, learner, step):
    return self.rule.first_order_at(learner, step)

  def auxiliary(self, learner):
    return self.rule.auxiliary(learner)

  def meta_gradients(self, learner, group, mean_directions):
    return self.rule.meta_gradients(learner, group, mean_directions)

  def unrolled(self):
    mixture = copy.copy(self)
    mixture.rule = self.rule.unrolled()
    return mixture

  def _routed(self, stream, groups):
    rule = copy.copy(self.rule)
    rule.routes = {g: stream for g in groups}
    return rule

  def _check_head(self, learner, stream, task, groups):
    """A stream's images must go through a head it owns (or the network's one stem)."""
    head_group = getattr(learner.model, "head_group", lambda shape: None)
    key = head_group(task["support_images"].shape)
    if key is not None and key not in groups:
      raise ValueError(f"task stream {stream!r} gives images of the head group {key!r}, but "
                       f"StreamMixture.own gives {stream!r} the groups "
                       f"{self.own[stream]}: give it {key!r} (Base.stream_heads)")

  def task_directions(self, learner, tasks, groups, plan, state, task_index):
    streams = self.streams(learner, groups)
    shared = [g for g in groups if self.owner(learner, g) is None]
    share = 1.0 / len(streams)
    directions = {g: None for g in groups}
    metrics, auxiliary = {}, {}
    for stream in streams:
      mine = shared + [g for g in groups if self.owner(learner, g) == stream]
      self._check_head(learner, stream, tasks[stream], mine)
      d, m, a, state = self._routed(stream, mine).task_directions(
          learner, {stream: tasks[stream]}, mine, plan, state, task_index)
      for g in mine:
        scaled = [share * t for t in d[g]] if g in shared else list(d[g])
        directions[g] = scaled if directions[g] is None else [
            x + y for x, y in zip(directions[g], scaled)]
      for name, value in m.items():
        metrics[f"{stream}/{name}"] = value
        metrics[name] = metrics.get(name, 0.0) + share * value
      for name, tensors in a.items():
        scaled = [share * t for t in tensors]
        auxiliary[name] = (scaled if name not in auxiliary else
                           [x + y for x, y in zip(auxiliary[name], scaled)])
    return directions, metrics, auxiliary, state

  def metric_names(self, learner, groups):
    names = self.rule.metric_names(learner, groups)
    return names + [f"{s}/{k}" for s in self.streams(learner, groups) for k in names]
