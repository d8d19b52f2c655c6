"""FunctionalModel: a Keras model with explicit weight / architecture variable sets and a
functional call on tensors, the interface every meta-learner uses."""

import keras


class FunctionalModel(keras.Model):
  """Base of every network the meta-learners adapt.

  `weight_variables` (w) and `arch_variables` (a) are disjoint, explicit variable sets;
  `functional_call` runs the network on tensors standing in for them, so inner loops hold
  fast weights as tensors and never assign variables.
  """

  @property
  def arch_variables(self):
    """The architecture variables (none for a fixed network)."""
    return []

  @property
  def weight_variables(self):
    """The network weights w: trainable variables that are not architecture variables."""
    arch = {id(v) for v in self.arch_variables}
    return [v for v in self.trainable_variables if id(v) not in arch]

  def parameter_groups(self):
    """The model's parameter groups, name -> variables: "weights" (w) and, for a network
    with an architecture, "arch" (a). Meta-learners adapt and meta-learn groups by name."""
    groups = {"weights": self.weight_variables}
    if self.arch_variables:
      groups["arch"] = self.arch_variables
    return groups

  def check_input_shape(self, shape):
    """Raises ConfigValueError unless the network takes images of `shape` (any here)."""
    del shape

  def call_options(self, regularize, seed=None):
    """Extra `call` arguments for training-only regularization: off when not
    `regularize`, else drawn from the stateless `seed` (none here: no such regularization)."""
    del regularize, seed
    return {}

  def functional_call(self, weights, images, arch=None, training=True, non_trainable=None,
                      return_non_trainable=False, regularize=True, seed=None, groups=None,
                      **call_kwargs):
    """The network applied with `weights` (and `arch`) given as tensors: no variable changes.

    Args:
      weights: tensors in the order of `weight_variables`, or None to use the variables.
      images: input batch.
      arch: tensors in the order of `arch_variables`, or None to use the variables.
      training: BatchNorm with batch statistics (True, as in MAML/REPTILE inner loops).
      non_trainable: tensors for `non_trainable_variables` (BatchNorm moving statistics),
        or None to use the variables.
      return_non_trainable: also return the updated non-trainable values (the moving
        statistics after this call in training mode).
      regularize: False turns training-only regularization (DropPath) off while BatchNorm
        still follows `training`: predictions after adaptation.
      seed: optional [2] int stateless seed of training-only regularization's random draws
        (a `TaskContext.draw_seed`); None: stateful draws.
      groups: optional dict group name -> tensors in the order of that group of
        `parameter_groups()`, standing in for its variables (after `weights` and `arch`).
      **call_kwargs: forwarded to `call` (e.g. `mixture`).

    Returns:
      The logits (and the updated non-trainable values). Gradients flow to `weights` and
      `arch` at any order (Keras 3 `stateless_call`), so inner loops can differentiate
      through their own updates.
    """
    given = {} if weights is None else dict(zip(map(id, self.weight_variables), weights))
    if arch is not None:
      given.update(zip(map(id, self.arch_variables), arch))
    for name, tensors in (groups or {}).items():
      given.update(zip(map(id, self.parameter_groups()[name]), tensors))
    trainable = [given.get(id(v), v.value) for v in self.trainable_variables]
    if non_trainable is None:
      non_trainable = [v.value for v in self.non_trainable_variables]
    call_kwargs.update(self.call_options(regularize, seed))
    logits, updated = self.stateless_call(trainable, list(non_trainable), images,
                                          training=training, **call_kwargs)
    return (logits, updated) if return_non_trainable else logits
