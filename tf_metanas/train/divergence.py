"""Stopping a run at the first non-finite loss or meta-update, before it is checkpointed."""

import numpy as np
import tensorflow as tf


class DivergedError(FloatingPointError):
  """A meta-iteration produced a non-finite loss or meta-parameter."""


_KNOBS = ("the inner learning rates (<group>/ParamGroup.learning_rate), the meta learning "
          "rates (the method's meta_learning_rates, or MetaOptimizer / the meta optimizer's "
          "learning_rate), or clip the meta-gradient (MetaLearner.meta_gradient_clip); to "
          "resume this model_dir with them, pass --force_resume")


def check_metrics(step, metrics, what="meta-iteration"):
  """Raises DivergedError naming the first non-finite metric of `metrics` (name -> scalar)."""
  for name, value in metrics.items():
    value = np.asarray(value)
    if not np.all(np.isfinite(value)):
      raise DivergedError(
          f"{what} {step}: {name} is {value.ravel()[0]}: the run diverged. Lower {_KNOBS}. "
          f"The last checkpoint before it is kept; nothing after it was saved")


@tf.function(autograph=False)
def _all_finite(variables):
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])


def check_parameters(step, groups):
  """Raises DivergedError naming the first meta-parameter (group, variable) that the
  meta-update of `step` made non-finite; `groups`: group name -> [variable]."""
  if bool(_all_finite([v for vs in groups.values() for v in vs])):
    return
  for name, variables in groups.items():
    for variable in variables:
      if not np.all(np.isfinite(variable.numpy())):
        raise DivergedError(
            f"meta-iteration {step}: the meta-update made {name!r} parameter "
            f"{variable.name} non-finite: the run diverged. Lower {_KNOBS}. The last "
            f"checkpoint before it is kept; nothing after it was saved")
