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

from tf_metanas.meta import optimizers


@gin.configurable(module="tf_metanas.meta")
@dataclasses.dataclass(frozen=True)
class ParamGroup:
  """How one group of parameters is adapted inside a task."""

  name: str = "weights"
  optimizer: object = optimizers.SGD()
  learning_rate: float = 0.01
  weight_decay: float = 0.0


@gin.configurable(module="tf_metanas.meta")
@dataclasses.dataclass(frozen=True)
class Phase:
  """`steps` inner steps during which the groups named in `groups` are updated."""

  steps: int = 5
  groups: tuple = ("weights",)


def total_steps(phases):
  return sum(p.steps for p in phases)


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


def _step(loss_fn, params, state, groups, moving, step, first_order, joint, learning_rates):
  """One inner step: returns (params, state, loss)."""
  passes = [moving] if joint else [[name] for name in moving]
  for names in passes:
    loss, grads = _gradients(loss_fn, params, names, step, first_order)
    params, state = dict(params), dict(state)
    for name in names:
      group = groups[name]
      lr = learning_rates[name][step] if learning_rates and name in learning_rates \
          else group.learning_rate
      params[name], state[name] = group.optimizer.update(
          params[name], grads[name], state[name], lr, group.weight_decay)
  return params, state, loss


def adapt_loop(loss_fn, params, groups, phases, joint=True):
  """First-order inner loop as a tf.while_loop per phase: a small graph for many steps.

  For adaptation that is not differentiated through (meta-testing, Reptile). `loss_fn`
  receives the step as a scalar tensor.

  Returns:
    (final params, losses [total steps]).
  """
  params = {name: list(values) for name, values in params.items()}
  state = {name: groups[name].optimizer.init(params[name]) for name in groups if name in params}
  losses, start = [], 0
  for phase in phases:
    moving = [name for name in groups if name in phase.groups and name in params]

    def body(i, params, state, phase_losses, moving=moving, start=start):
      params, state, loss = _step(loss_fn, params, state, groups, moving, start + i, True,
                                  joint, None)
      return i + 1, params, state, phase_losses.write(i, tf.cast(loss, tf.float32))

    if phase.steps:
      _, params, state, phase_losses = tf.while_loop(
          lambda i, *_: i < phase.steps, body,
          (tf.constant(0), params, state, tf.TensorArray(tf.float32, size=phase.steps)))
      losses.append(phase_losses.stack())
    start += phase.steps
  params = tf.nest.map_structure(tf.stop_gradient, params)
  return params, tf.concat(losses, 0)


def adapt(loss_fn, params, groups, phases, first_order=False, joint=True,
          learning_rates=None):
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
    learning_rates: optional group name -> [steps][tensors] learnable per-step, per-tensor
      learning rates (MAML++ LSLR), replacing the groups' scalar learning rates.

  Returns:
    (trajectory, losses): the parameters before the first and after every step (a list
    of dicts, length total_steps + 1) and the training loss of every step.
  """
  params = {name: list(values) for name, values in params.items()}
  state = {name: groups[name].optimizer.init(params[name]) for name in groups if name in params}
  trajectory, losses, step = [params], [], 0
  for phase in phases:
    moving = [name for name in groups if name in phase.groups and name in params]
    for _ in range(phase.steps):
      params, state, loss = _step(loss_fn, params, state, groups, moving, step, first_order,
                                  joint, learning_rates)
      losses.append(loss)
      trajectory.append(params)
      step += 1
  return trajectory, losses
