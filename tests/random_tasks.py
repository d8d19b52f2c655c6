"""Few-shot tasks of random images at one small size, for the methods' unit tests."""

import numpy as np
import tensorflow as tf

WAYS, SHOTS, QUERIES, SIZE = 3, 2, 2, 12


def task(seed, steps=5, shape=(SIZE, SIZE, 1)):
  """A task as numpy arrays with an episode's keys: WAYS x SHOTS support and WAYS x QUERIES
  query uint8 images of `shape` (SIZE x SIZE x 1), and `steps` inner batches of the whole
  support."""
  rng = np.random.default_rng(seed)
  support = WAYS * SHOTS
  return {"support_images": rng.integers(0, 256, (support,) + tuple(shape), dtype=np.uint8),
          "support_labels": np.repeat(np.arange(WAYS, dtype=np.int32), SHOTS),
          "query_images": rng.integers(0, 256, (WAYS * QUERIES,) + tuple(shape), dtype=np.uint8),
          "query_labels": np.repeat(np.arange(WAYS, dtype=np.int32), QUERIES),
          "support_batches": np.tile(np.arange(support, dtype=np.int32), (steps, 1))}


def tensors(arrays):
  return {k: tf.constant(v) for k, v in arrays.items()}
