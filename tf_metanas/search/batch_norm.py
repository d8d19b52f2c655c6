"""BatchNormalization whose batch moments have exact second derivatives.

Keras (TensorFlow backend) computes training-mode moments with `tf.nn.moments`, which
stops the gradient of the mean inside the variance: Var = mean((x - stop_gradient(m))^2).
The first derivative is unchanged (d Var / d m = 0), but the second derivative is not:
d^2 Var / dx_i dx_j becomes 2/N delta_ij instead of 2/N (delta_ij - 1/N). Second-order
MAML differentiates the inner-loop gradient, so with BatchNorm in training mode (as every
MAML / REPTILE network uses it) the Hessian-vector products would be silently wrong. This
layer computes Var = mean((x - m)^2) with the gradient flowing through m.
"""

import keras
from keras import layers
from keras import ops as K


@keras.saving.register_keras_serializable("tf_metanas")
class BatchNorm(layers.BatchNormalization):
  """keras.layers.BatchNormalization with exact (differentiable) batch moments."""

  def _moments(self, inputs, mask):
    if mask is not None:
      return super()._moments(inputs, mask)
    mean = K.mean(inputs, axis=self._reduction_axes, keepdims=True)
    variance = K.mean(K.square(inputs - mean), axis=self._reduction_axes, keepdims=True)
    return K.squeeze(mean, self._reduction_axes), K.squeeze(variance, self._reduction_axes)
