"""Inner-loop optimizers as pure functions of (params, grads, state), and the meta
optimizers' settings.

Nothing here touches a variable, so an inner loop built from them can be differentiated
end to end (second-order MAML) and run for many tasks from the same meta-parameters.
Weight decay is L2 added to the gradient (g + wd * p), as torch.optim's `weight_decay`.
"""

import dataclasses

import gin
import keras
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


META_KINDS = ("adam", "sgd")


@gin.configurable(module="tf_metanas.meta")
@dataclasses.dataclass(frozen=True)
class MetaOptimizer:
  """How one meta group's variables are updated from its meta-gradient g (a Keras
  optimizer, with torch.optim's coupled L2 weight decay: it sees g + weight_decay * p).

    adam:  Keras Adam with beta_1, beta_2, epsilon (T-NAS's architecture: betas
           (0.5, 0.999), weight decay 1e-3, as DARTS's architecture optimizer)
    sgd:   p <- p - lr * (g + weight_decay * p)

  The defaults are Keras's Adam (epsilon 1e-7; PyTorch's is 1e-8).
  """

  kind: str = "adam"
  beta_1: float = 0.9
  beta_2: float = 0.999
  epsilon: float = 1e-7
  weight_decay: float = 0.0

  def __post_init__(self):
    if self.kind not in META_KINDS:
      raise ValueError(f"unknown MetaOptimizer.kind {self.kind!r}; use one of {META_KINDS}")

  def build(self, learning_rate):
    """The Keras optimizer (without the weight decay, which `gradients` adds)."""
    if self.kind == "sgd":
      return keras.optimizers.SGD(learning_rate=learning_rate)
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=self.beta_1,
                                 beta_2=self.beta_2, epsilon=self.epsilon)

  def gradients(self, gradients, variables, share=1.0):
    """`gradients` with `share` of the L2 term added (a replica's share of the mean)."""
    if not self.weight_decay:
      return list(gradients)
    return [g + (self.weight_decay * share) * v for g, v in zip(gradients, variables)]


def meta_optimizer_of(spec, group):
  """The MetaOptimizer of `group` from a MetaLearner's `meta_optimizer`: "adam" / "sgd",
  a MetaOptimizer for every group, or a dict group -> either (groups not named: Adam)."""
  if isinstance(spec, dict):
    spec = spec.get(group, "adam")
  if isinstance(spec, str):
    if spec not in META_KINDS:
      raise ValueError(f"unknown meta_optimizer {spec!r} for group {group!r}; use one of "
                       f"{META_KINDS} or a MetaOptimizer")
    return MetaOptimizer(kind=spec)
  if not isinstance(spec, MetaOptimizer):
    raise ValueError(f"meta_optimizer of group {group!r} must be 'adam', 'sgd' or a "
                     f"MetaOptimizer, got {spec!r}")
  return spec
