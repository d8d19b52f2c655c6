"""Engine: one meta-iteration of any update rule, on any strategy.

The engine owns what every method shares:
  - distribution: each stream's meta-batch is split over the strategy's replicas
    (`tf_metanas.distribute`); replica r adapts tasks r*T/R .. (r+1)*T/R - 1;
  - the loop over a replica's tasks (a tf.while_loop that carries the inner optimizers'
    state from task to task when the learner carries it);
  - accumulation keyed by group name: the rule's per-task directions are summed and divided
    by the meta-batch size T; each group's meta optimizer all-reduces (sums) the replicas'
    shares, so every replica applies the mean over all tasks;
  - stages: a rule may update its groups in stages (`UpdateRule.stages`), each applied
    before the next adapts, all in one compiled meta-iteration;
  - applying the meta-updates of the groups the iteration touches (with each group's
    MetaOptimizer settings: betas, coupled L2 weight decay): a group the iteration
    does not touch (frozen in warm-up) is not applied, so its value and its optimizer's
    slots stay exactly as they were; likewise the variables the structure has dropped
    (`MetaLearner.frozen_entries`: a CAML edge's dropped ops), and entries it froze
    within a variable (a consolidated edge's architecture logits) keep their values;
  - auxiliary state (per-step BatchNorm statistics): the mean over tasks is assigned;
  - one compiled function per trace key (`MetaLearner.plan()`: the rule's regime, warm-up,
    the architecture's structure), traced once and reused while the key holds.
"""

import dataclasses
import functools

import keras
import tensorflow as tf

from tf_metanas import distribute
from tf_metanas.meta import optimizers


class Engine:
  """Meta-optimizers and compiled meta-iterations of a MetaLearner.

  Args:
    learner: the MetaLearner (its groups, rule, task learner).
    rates: group name -> float or schedule (read at the meta-step) of every meta group.
    meta_optimizer: "adam", "sgd", a MetaOptimizer, or a dict group -> either (see
      `optimizers.meta_optimizer_of`).
    sgd_only: the groups that use SGD whatever `meta_optimizer` says (those whose rule's
      step is exact: Reptile).
    jit_compile: compile what a replica computes for its tasks with XLA.
  """

  def __init__(self, learner, rates, meta_optimizer="adam", sgd_only=(), jit_compile=False):
    self.learner, self.jit_compile = learner, bool(jit_compile)
    self.strategy = tf.distribute.get_strategy()
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="meta_step")
    self.meta_optimizers, self.meta_settings, self.rates = {}, {}, dict(rates)
    for name, variables in learner.meta_groups.items():
      settings = optimizers.meta_optimizer_of(meta_optimizer, name)
      if name in sgd_only:
        settings = dataclasses.replace(settings, kind="sgd")
      optimizer = settings.build(self._rate(rates[name]))
      optimizer.build(variables)
      self.meta_optimizers[name], self.meta_settings[name] = optimizer, settings
    self._train_fns = {}

  def _rate(self, rate):
    """A float, or a schedule read at the meta step (the meta-iterations done, warm-up
    included: a Keras schedule alone would count its own optimizer's updates, which a
    group frozen during warm-up does not make)."""
    if callable(rate):
      return lambda: rate(self.step)
    return rate

  def compiled(self, fn):
    """`fn` compiled with XLA if `jit_compile`: what one replica computes on its device,
    leaving all-reduces and variable updates to TensorFlow (so XLA works under every
    strategy)."""
    if not self.jit_compile:
      return fn
    return tf.function(fn, jit_compile=True, autograph=False)

  def trace_counts(self):
    """Trace key -> how many times its meta-iteration function was traced."""
    return {key: fn.experimental_get_tracing_count() for key, fn in self._train_fns.items()}

  # ---- one meta-iteration ---------------------------------------------------------------

  def train_step(self, batches):
    """One meta-iteration on `batches` (stream -> meta-batch of [tasks, ...] tensors)."""
    plan = self.learner.plan()
    if plan not in self._train_fns:
      self._train_fns[plan] = tf.function(functools.partial(self._train_step, plan=plan),
                                          autograph=False)
    split = {stream: distribute.split_tasks(self.strategy, batch, f"the {stream!r} meta-batch")
             for stream, batch in batches.items()}
    return self._train_fns[plan](split)

  def _train_step(self, batches, plan):
    local = tf.nest.flatten(self.strategy.experimental_local_results(batches)[0])[0]
    num_tasks = int(local.shape[0]) * self.strategy.num_replicas_in_sync
    metrics = {}
    with self.strategy.scope():
      # Stages run in order: a later stage adapts from the meta-parameters an earlier one
      # updated (Auto-MAML: the architecture step, then the weights step).
      for rule, stage_plan, groups in self.learner.rule.stages(
          self.learner, plan, self.learner.touched_groups(plan)):
        frozen = self._partly_frozen(groups)
        before = [tf.identity(variable.value) for variable, _ in frozen]
        shares = self.strategy.run(
            lambda b, r=rule, p=stage_plan, g=groups: self._replica_step(b, r, p, g, num_tasks),
            args=(batches,))
        stage_metrics, auxiliary = tf.nest.map_structure(
            lambda t: self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), shares)
        metrics.update(stage_metrics)
        for (variable, mask), value in zip(frozen, before):
          variable.assign(tf.where(mask, value, variable.value))
        for name, means in auxiliary.items():
          for variable, mean in zip(self.learner.auxiliary_variables[name], means):
            variable.assign(mean)
        if self.strategy.num_replicas_in_sync > 1:  # every replica goes on from the mean state
          for variable in tf.nest.flatten(self.learner.inner_state):
            variable.assign(variable.read_value())  # cross-replica: read the mean, set all
      self.step.assign_add(1)
    return metrics

  def _replica_step(self, batches, rule, plan, groups, num_tasks):
    """One replica's part of one stage, in replica context: its tasks' summed directions
    divided by the meta-batch size go through the rule (and the group's L2 weight decay) to
    the meta optimizers (which all-reduce them). Returns the same shares of the metrics and
    of the auxiliary state."""
    learner = self.learner
    (directions, metrics, auxiliary), state = self.compiled(
        lambda b, s: self._sum_over_tasks(b, s, rule, plan, groups))(
            batches, learner.carried_state())
    learner.carry(state)
    share = lambda t: t / num_tasks
    replica_share = 1.0 / self.strategy.num_replicas_in_sync
    for name in groups:
      variables = learner.meta_groups[name]
      gradients = rule.meta_gradients(learner, name, [share(d) for d in directions[name]])
      gradients = self.meta_settings[name].gradients(gradients, variables, replica_share)
      updated = [(g, v) for g, v, mask in zip(gradients, variables, learner.frozen_entries(name))
                 if mask is None or not mask.all()]
      if updated:
        self.meta_optimizers[name].apply_gradients(updated)
    return tf.nest.map_structure(share, (metrics, auxiliary))

  def _partly_frozen(self, groups):
    """[(variable, mask)] of the variables of `groups` of which the structure froze some
    entries (mask True) but not all: the optimizer updates them whole, and the engine puts
    the frozen entries back (their optimizer slots move, but are never read again)."""
    return [(variable, tf.constant(mask))
            for name in groups
            for variable, mask in zip(self.learner.meta_groups[name],
                                      self.learner.frozen_entries(name))
            if mask is not None and mask.any() and not mask.all()]

  def _zeros(self, rule, groups):
    learner = self.learner
    return ({g: [tf.zeros_like(v) for v in learner.meta_groups[g]] for g in groups},
            {k: tf.constant(0.0) for k in rule.metric_names(learner, groups)},
            {a: [tf.zeros_like(v) for v in learner.auxiliary_variables[a]]
             for a in rule.auxiliary(learner)})

  def _sum_over_tasks(self, batches, state, rule, plan, groups):
    """The sum over a replica's tasks of the rule's (directions, metrics, auxiliary), in a
    tf.while_loop passing the inner-optimizer state from task to task (meta-batch order);
    returns it and the last task's state. Task i of the replica is task offset + i of the
    meta-batch, which seeds its random draws."""
    num_tasks = int(tf.nest.flatten(batches)[0].shape[0])
    offset = distribute.replica_task_offset(num_tasks)

    def body(i, total, state):
      tasks = tf.nest.map_structure(lambda t: t[i], batches)
      directions, metrics, auxiliary, final = rule.task_directions(
          self.learner, tasks, groups, plan, state or None, offset + i)
      total = tf.nest.map_structure(tf.add, total, (directions, metrics, auxiliary))
      return i + 1, total, final if state else state  # {}: every task starts fresh

    _, total, state = tf.while_loop(lambda i, *_: i < num_tasks, body,
                                    (tf.constant(0), self._zeros(rule, groups), state))
    return total, state
