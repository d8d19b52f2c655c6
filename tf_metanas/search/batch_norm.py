"""BatchNormalization whose batch moments have exact second derivatives.

Keras (TensorFlow backend) computes training-mode moments with `tf.nn.moments`, which
stops the gradient of the mean inside the variance: Var = mean((x - stop_gradient(m))^2).
The first derivative is unchanged (d Var / d m = 0), but the second derivative is not:
d^2 Var / dx_i dx_j becomes 2/N delta_ij instead of 2/N (delta_ij - 1/N). Second-order
MAML differentiates the inner-loop gradient, so with BatchNorm in training mode (as every
MAML / REPTILE network uses it) the Hessian-vector products would be silently wrong. This
layer computes Var = mean((x - m)^2) with the gradient flowing through m.

With `running_statistics=False` (PyTorch's track_running_stats=False) the layer always
normalizes with the batch moments and keeps no moving statistics: what DARTS-style
supernets use in inner loops, as a lean graph (about a third of the ops of the tracking
layer, which matters when a meta-iteration traces hundreds of BatchNorms).
"""

import keras
import tensorflow as tf
from keras import layers
from keras import ops as K


@keras.saving.register_keras_serializable("tf_metanas")
class BatchNorm(layers.BatchNormalization):
  """keras.layers.BatchNormalization with exact (differentiable) batch moments.

  Args:
    running_statistics: keep moving mean/variance (False: always batch statistics, no
      moving variables).
    **kwargs: keras.layers.BatchNormalization arguments.
  """

  def __init__(self, running_statistics=True, **kwargs):
    super().__init__(**kwargs)
    self.running_statistics = bool(running_statistics)

  def build(self, input_shape):
    if self.running_statistics:
      super().build(input_shape)
      return
    shape = (input_shape[self.axis],)
    self.gamma = self.add_weight(shape=shape, name="gamma", initializer=self.gamma_initializer,
                                 regularizer=self.gamma_regularizer,
                                 constraint=self.gamma_constraint) if self.scale else None
    self.beta = self.add_weight(shape=shape, name="beta", initializer=self.beta_initializer,
                                regularizer=self.beta_regularizer,
                                constraint=self.beta_constraint) if self.center else None
    self._reduction_axes = [i for i in range(len(input_shape)) if i != self.axis % len(input_shape)]
    self.built = True

  def call(self, inputs, training=None, mask=None):
    if self.running_statistics or mask is not None:
      return super().call(inputs, training=training, mask=mask)
    x = tf.convert_to_tensor(inputs)
    centered = x - tf.reduce_mean(x, self._reduction_axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(centered), self._reduction_axes, keepdims=True)
    y = centered * tf.math.rsqrt(variance + self.epsilon)
    if self.gamma is not None:
      y = y * tf.cast(self.gamma, y.dtype)
    if self.beta is not None:
      y = y + tf.cast(self.beta, y.dtype)
    return y

  def get_config(self):
    return {**super().get_config(), "running_statistics": self.running_statistics}

  def _moments(self, inputs, mask):
    if mask is not None:
      return super()._moments(inputs, mask)
    mean = K.mean(inputs, axis=self._reduction_axes, keepdims=True)
    variance = K.mean(K.square(inputs - mean), axis=self._reduction_axes, keepdims=True)
    return K.squeeze(mean, self._reduction_axes), K.squeeze(variance, self._reduction_axes)
