"""Schedules of a meta-iteration step: constant, linear and cosine annealing.

They are Keras LearningRateSchedules, so a meta optimizer can take one as its learning
rate, and they are plain callables of the step for anything else (Reptile's step size,
temperatures, multi-step loss weights).
"""

import math

import gin
import keras
from keras import ops as K


@gin.configurable(module="tf_metanas.meta")
@keras.saving.register_keras_serializable("tf_metanas")
class Linear(keras.optimizers.schedules.LearningRateSchedule):
  """start + (end - start) * min(step / steps, 1): REPTILE's annealed outer step size."""

  def __init__(self, start, end, steps):
    self.start, self.end, self.steps = float(start), float(end), int(steps)

  def __call__(self, step):
    frac = K.minimum(K.cast(step, "float32") / max(self.steps, 1), 1.0)
    return self.start + (self.end - self.start) * frac

  def get_config(self):
    return {"start": self.start, "end": self.end, "steps": self.steps}


@gin.configurable(module="tf_metanas.meta")
@keras.saving.register_keras_serializable("tf_metanas")
class Cosine(keras.optimizers.schedules.LearningRateSchedule):
  """end + (start - end) * (1 + cos(pi * min(step / steps, 1))) / 2 (MAML++ meta lr)."""

  def __init__(self, start, end, steps):
    self.start, self.end, self.steps = float(start), float(end), int(steps)

  def __call__(self, step):
    frac = K.minimum(K.cast(step, "float32") / max(self.steps, 1), 1.0)
    return self.end + (self.start - self.end) * 0.5 * (1.0 + K.cos(math.pi * frac))

  def get_config(self):
    return {"start": self.start, "end": self.end, "steps": self.steps}


def value_at(schedule, step):
  """A schedule's value at `step`, or the number itself for a constant."""
  return schedule(step) if callable(schedule) else schedule
