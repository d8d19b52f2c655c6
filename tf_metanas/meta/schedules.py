"""Schedules of a meta-iteration step: linear, cosine and exponential annealing from start
to end.

They are Keras LearningRateSchedules, so a meta optimizer can take one as its learning
rate (Reptile's outer step size, MAML++'s cosine meta learning rate).
"""

import math

import gin
import keras
from keras import ops as K


class Annealing(keras.optimizers.schedules.LearningRateSchedule):
  """From `start` at step 0 to `end` at step `steps`, constant after (the base of the
  schedules here; a Runner refuses a run shorter than `steps`)."""

  def __init__(self, start, end, steps):
    self.start, self.end, self.steps = float(start), float(end), int(steps)

  def progress(self, step):
    """min(step / steps, 1)."""
    return K.minimum(K.cast(step, "float32") / max(self.steps, 1), 1.0)

  def get_config(self):
    return {"start": self.start, "end": self.end, "steps": self.steps}


@gin.configurable(module="tf_metanas.meta")
@keras.saving.register_keras_serializable("tf_metanas")
class Linear(Annealing):
  """start + (end - start) * min(step / steps, 1): REPTILE's annealed outer step size."""

  def __call__(self, step):
    return self.start + (self.end - self.start) * self.progress(step)


@gin.configurable(module="tf_metanas.meta")
@keras.saving.register_keras_serializable("tf_metanas")
class Cosine(Annealing):
  """end + (start - end) * (1 + cos(pi * min(step / steps, 1))) / 2 (MAML++ meta lr)."""

  def __call__(self, step):
    return self.end + (self.start - self.end) * 0.5 * (1.0 + K.cos(math.pi * self.progress(step)))


@gin.configurable(module="tf_metanas.meta")
@keras.saving.register_keras_serializable("tf_metanas")
class Exponential(Annealing):
  """start * (end / start) ** min(step / steps, 1): geometric annealing, e.g. of a
  Gumbel-softmax temperature (Jang et al. 2017 anneal tau exponentially; BASE's choice).
  start and end must be positive."""

  def __init__(self, start, end, steps):
    super().__init__(start, end, steps)
    if min(self.start, self.end) <= 0:
      raise ValueError(f"exponential annealing needs positive start and end, got {start}, {end}")

  def __call__(self, step):
    return self.start * (self.end / self.start) ** self.progress(step)
