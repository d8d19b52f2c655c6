"""The functional inner loop: k optimizer steps on fast weights held as tensors.

A task learner updates parameter *groups* (network weights, architecture, ...), each with
its own pure optimizer, learning rate and weight decay, in *phases* that say which groups
move (METANAS meta-testing: 50 steps of weights and architecture, then 50 of weights only).
Second order by default: the returned parameters are differentiable functions of the
initial ones through every step. `first_order=True` stops the gradient of the inner
gradients (first-order MAML, Reptile).
"""

import dataclasses

import gin
import tensorflow as tf

from tf_metanas import checks
from tf_metanas.meta import optimizers


@gin.configurable(module="tf_metanas.meta")
@dataclasses.dataclass(frozen=True)
class ParamGroup:
  """How one group of parameters is adapted inside a task."""

  name: str = "weights"
  optimizer: object = optimizers.SGD()
  learning_rate: float = 0.01
  weight_decay: float = 0.0

  def __post_init__(self):
    checks.number(f"{self.name}/ParamGroup.learning_rate", self.learning_rate)
    checks.number(f"{self.name}/ParamGroup.weight_decay", self.weight_decay)


@gin.configurable(module="tf_metanas.meta")
@dataclasses.dataclass(frozen=True)
class Phase:
  """`steps` inner steps during which the groups named in `groups` are updated."""

  steps: int = 5
  groups: tuple = ("weights",)


def total_steps(phases):
  return sum(p.steps for p in phases)


@dataclasses.dataclass(frozen=True)
class Protocol:
  """What a forward runs in: the inner-loop phases of the adaptation, whether it is
  meta-training (False: adaptation to a new task, meta-test), and whether training-only
  regularization (DropPath) is on during its inner steps (never on the query after)."""

  phases: tuple
  meta_training: bool = True
  regularize: bool = True

  @property
  def num_steps(self):
    return total_steps(self.phases)

  def truncated(self, steps):
    """The protocol of its first `steps` inner steps (a query after them is a query)."""
    phases, left = [], steps
    for phase in self.phases:
      if left > 0:
        phases.append(dataclasses.replace(phase, steps=min(phase.steps, left)))
      left -= phase.steps
    return dataclasses.replace(self, phases=tuple(phases))

  def steps_of(self, group):
    """The number of inner steps that update `group`."""
    return sum(p.steps for p in self.phases if group in p.groups)


def init_state(groups, params, state=None):
  """The optimizer state of every group in `params`: `state` where given (carried from
  earlier tasks), else fresh."""
  state = state or {}
  return {name: state[name] if name in state else groups[name].optimizer.init(params[name])
          for name in groups if name in params}


def _gradients(loss_fn, params, names, step, first_order):
  sources = [t for name in names for t in params[name]]
  with tf.GradientTape() as tape:
    tape.watch(sources)
    loss = loss_fn(params, step)
  grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  if first_order:
    grads = [tf.stop_gradient(g) for g in grads]
  split, start = {}, 0
  for name in names:
    split[name] = grads[start:start + len(params[name])]
    start += len(params[name])
  return loss, split


def step_rates(rates, step):
  """Per-tensor learning rates of inner step `step` (a Python int or a tensor) from
  per-tensor vectors of per-step rates (MAML++ LSLR); steps past the last rate use it."""
  return [tf.gather(r, tf.minimum(step, tf.shape(r)[0] - 1)) for r in rates]


def _step(loss_fn, params, state, groups, moving, step, first_order, joint, learning_rates):
  """One inner step: returns (params, state, loss)."""
  passes = [moving] if joint else [[name] for name in moving]
  for names in passes:
    loss, grads = _gradients(loss_fn, params, names, step, first_order)
    params, state = dict(params), dict(state)
    for name in names:
      group = groups[name]
      lr = (step_rates(learning_rates[name], step) if learning_rates and name in learning_rates
            else group.learning_rate)
      params[name], state[name] = group.optimizer.update(
          params[name], grads[name], state[name], lr, group.weight_decay)
  return params, state, loss


def adapt_loop(loss_fn, params, groups, phases, joint=True, state=None, learning_rates=None):
  """First-order inner loop as a tf.while_loop per phase: a small graph for many steps.

  For adaptation that is not differentiated through (meta-testing, Reptile). `loss_fn`
  receives the step as a scalar tensor; `state` is the optimizers' initial state per group
  (default: fresh); `learning_rates` as in `adapt`.

  Returns:
    (final params, losses [total steps], final optimizer state per group).
  """
  params = {name: list(values) for name, values in params.items()}
  state = init_state(groups, params, state)
  losses, start = [], 0
  for phase in phases:
    moving = [name for name in groups if name in phase.groups and name in params]

    def body(i, params, state, phase_losses, moving=moving, start=start):
      params, state, loss = _step(loss_fn, params, state, groups, moving, start + i, True,
                                  joint, learning_rates)
      return i + 1, params, state, phase_losses.write(i, tf.cast(loss, tf.float32))

    if phase.steps:
      _, params, state, phase_losses = tf.while_loop(
          lambda i, *_: i < phase.steps, body,
          (tf.constant(0), params, state, tf.TensorArray(tf.float32, size=phase.steps)))
      losses.append(phase_losses.stack())
    start += phase.steps
  params, state = tf.nest.map_structure(tf.stop_gradient, (params, state))
  return params, tf.concat(losses, 0), state


def adapt(loss_fn, params, groups, phases, first_order=False, joint=True,
          learning_rates=None, state=None):
  """Runs the inner loop.

  Args:
    loss_fn: (params, step) -> scalar training loss of step `step` (e.g. on that step's
      support mini-batch). `params` maps group name -> list of tensors.
    params: initial parameters, group name -> list of tensors.
    groups: group name -> ParamGroup.
    phases: sequence of Phase.
    first_order: stop gradients through the inner gradients.
    joint: one forward/backward pass per step for all moving groups (as METANAS and T-NAS
      allow); False: one pass per group in turn, each seeing the groups updated before it.
    learning_rates: optional group name -> per-tensor vectors [steps] of learnable
      per-step learning rates (MAML++ LSLR), replacing the groups' scalar learning rates;
      steps past the last one use the last rate.
    state: the optimizers' initial state per group (default: fresh).

  Returns:
    (trajectory, losses, state): the parameters before the first and after every step (a
    list of dicts, length total_steps + 1), the training loss of every step and the
    optimizers' final state.
  """
  params = {name: list(values) for name, values in params.items()}
  state = init_state(groups, params, state)
  trajectory, losses, step = [params], [], 0
  for phase in phases:
    moving = [name for name in groups if name in phase.groups and name in params]
    for _ in range(phase.steps):
      params, state, loss = _step(loss_fn, params, state, groups, moving, step, first_order,
                                  joint, learning_rates)
      losses.append(loss)
      trajectory.append(params)
      step += 1
  return trajectory, losses, state
