"""Inner-loop optimizers as pure functions of (params, grads, state).

Nothing here touches a variable, so an inner loop built from them can be differentiated
end to end (second-order MAML) and run for many tasks from the same meta-parameters.
Weight decay is L2 added to the gradient (g + wd * p), as torch.optim's `weight_decay`.
"""

import dataclasses

import gin
import tensorflow as tf


def _lr_for(lr, index):
  """A scalar learning rate, or the index-th entry of a per-tensor list (LSLR)."""
  return lr[index] if isinstance(lr, (list, tuple)) else lr


@gin.configurable(module="tf_metanas.meta")
@dataclasses.dataclass(frozen=True)
class SGD:
  """p <- p - lr * (g + wd * p)."""

  def init(self, params):
    del params
    return ()

  def update(self, params, grads, state, lr, weight_decay=0.0):
    new = [p - _lr_for(lr, i) * (g + weight_decay * p)
           for i, (p, g) in enumerate(zip(params, grads))]
    return new, state


@gin.configurable(module="tf_metanas.meta")
@dataclasses.dataclass(frozen=True)
class Adam:
  """Adam (Kingma & Ba 2015) with bias correction; REPTILE uses beta1 = 0.

  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
  p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
  """

  beta1: float = 0.9
  beta2: float = 0.999
  epsilon: float = 1e-8

  def init(self, params):
    zeros = [tf.zeros_like(p) for p in params]
    dtype = params[0].dtype if params else tf.float32
    return (tf.constant(0.0, dtype), zeros, list(zeros))

  def update(self, params, grads, state, lr, weight_decay=0.0):
    t, m, v = state
    t = t + 1.0
    # The bias corrections are scalars: computed once, not per tensor (a smaller graph).
    m_scale = 1.0 / (1.0 - self.beta1 ** t)
    v_scale = 1.0 / (1.0 - self.beta2 ** t)
    new_params, new_m, new_v = [], [], []
    for i, (p, g, mi, vi) in enumerate(zip(params, grads, m, v)):
      if weight_decay:
        g = g + weight_decay * p
      # beta1 = 0 (REPTILE, METANAS): m = g exactly, without the dead multiply-adds.
      mi = g if self.beta1 == 0 else self.beta1 * mi + (1.0 - self.beta1) * g
      vi = self.beta2 * vi + (1.0 - self.beta2) * tf.square(g)
      step = _lr_for(lr, i) * (mi * m_scale) / (tf.sqrt(vi * v_scale) + self.epsilon)
      new_params.append(p - step)
      new_m.append(mi)
      new_v.append(vi)
    return new_params, (t, new_m, new_v)
