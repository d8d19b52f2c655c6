"""Gumbel noise and the relaxed categorical (Gumbel-softmax) of architecture logits.

BASE (Shaw et al. 2019) and METANAS's "gumbel" normalizer sample architectures as
z = softmax((a + g) / tau), g ~ Gumbel(0, 1) (Jang et al. 2017; Maddison et al. 2017): the
argmax of a + g is distributed as Categorical(softmax(a)) (the Gumbel-max trick), and
z tends to that one-hot sample as tau -> 0. The noise is a function of a stateless seed
only (`stateless.uniform`), so a seed gives the same sample on every device and under XLA.
"""

import numpy as np
import tensorflow as tf

from tf_metanas import stateless

_TINY = np.finfo(np.float32).tiny  # the smallest uniform: -log(-log(tiny)) is finite


def noise(shape, seed, dtype=tf.float32):
  """Gumbel(0, 1) samples -log(-log(U)), U ~ Uniform[tiny, 1).

  Args:
    shape: the shape of the samples.
    seed: a [2] int tensor (stateless draws, the same on every device and under XLA), or
      None for stateful draws of `tf.random.uniform`.
    dtype: of the samples. U is always drawn in float32 (24 random bits) and the logs are
      taken in `dtype`, so float32 samples do not depend on it being passed.

  Returns:
    a `dtype` tensor of `shape`.
  """
  uniform = (tf.random.uniform(shape, minval=_TINY, maxval=1.0) if seed is None
             else stateless.uniform(shape, seed, minval=_TINY, maxval=1.0))
  return -tf.math.log(-tf.math.log(tf.cast(uniform, dtype)))


def relaxed(logits, tau, seed=None, axis=-1):
  """The relaxed categorical softmax((logits + g) / tau) along `axis` (BASE Sec. 3).

  Args:
    logits: unnormalized log-probabilities a.
    tau: the temperature (a float or scalar tensor).
    seed: a [2] int tensor: g = `noise(shape(logits), seed)`; None: g = 0, the plain
      softmax(a / tau) (BASE's "softmax" variant, and the noise-free prediction).
    axis: the categorical's axis.

  Returns:
    probabilities of the shape and dtype of `logits`, summing to 1 along `axis`.
  """
  logits = tf.convert_to_tensor(logits)
  if seed is not None:
    logits = logits + noise(tf.shape(logits), seed, logits.dtype)
  return tf.nn.softmax(logits / tf.cast(tau, logits.dtype), axis=axis)


def categorical_kl(logits, prior_logits, axis=-1):
  """sum KL(Cat(softmax(logits)) || Cat(softmax(prior_logits))) over every categorical.

  BASE's architecture prior term: the KL of the categoricals stands in for that of their
  relaxations (which has no closed form). Both arguments have one shape; `axis` is each
  categorical's axis, every other axis indexes categoricals (edges, slots, nodes).
  """
  log_p = tf.nn.log_softmax(logits, axis)
  log_q = tf.nn.log_softmax(tf.cast(prior_logits, log_p.dtype), axis)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q))
