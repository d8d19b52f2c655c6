"""DropPath: drop a whole path for a sample with probability `rate` (Larsson et al. 2017)."""

import keras
import tensorflow as tf
from keras import layers
from keras import ops as K

from tf_metanas import stateless


@keras.saving.register_keras_serializable("tf_metanas")
class DropPath(layers.Layer):
  """x * Bernoulli(1 - rate) / (1 - rate), one draw per sample, only when training.

  Call with `seed` (a [2] int tensor, e.g. a task's `TaskContext.draw_seed` with this
  op's position folded in) for a stateless draw (`tf_metanas.stateless`): the same seed
  gives the same mask on any device and under XLA (what the meta-learners pass). Without it the mask comes from
  TensorFlow's stateful random op, not a Keras SeedGenerator: inside `stateless_call` a
  SeedGenerator's state is an input that is never advanced, so every call would reuse one
  mask forever; the op draws afresh at every execution and is reproducible under
  `keras.utils.set_random_seed`.
  """

  def __init__(self, rate=0.0, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.rate, self.seed = float(rate), seed

  def call(self, x, training=None, seed=None):
    if not training or self.rate <= 0:
      return x
    keep = 1.0 - self.rate
    shape = (K.shape(x)[0],) + (1,) * (len(x.shape) - 1)
    uniform = (tf.random.uniform(shape, seed=self.seed) if seed is None
               else stateless.uniform(shape, seed, dtype=x.dtype))
    mask = K.cast(uniform < keep, x.dtype)
    return x * mask / keep

  def get_config(self):
    return {**super().get_config(), "rate": self.rate, "seed": self.seed}
