"""N-way K-shot episodes sampled from an ImageStore, as numpy arrays or a tf.data pipeline.

Episode `i` of a sampler depends only on (seed, i): the pipeline is reproducible, can start
at any meta-batch (exact resume), and parallel sampling does not change the result.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tf_metanas.data import errors

EPISODE_KEYS = ("support_images", "support_labels", "query_images", "query_labels",
                "support_batches")


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """The shape of one few-shot task.

  Attributes:
    num_ways: classes per task (N); labels are 0..N-1 in a random order per task.
    num_shots: support images per class (K).
    num_queries: query images per class (Q).
    inner_batch_size: size of the inner-loop mini-batches drawn from the support set
      (None: the whole support set every step).
    inner_steps: number of inner mini-batches to draw per task (0: none). METANAS trains
      with 15 shots (75 support images for 5 ways) and inner batches of 20.
  """

  num_ways: int = 5
  num_shots: int = 1
  num_queries: int = 15
  inner_batch_size: int | None = None
  inner_steps: int = 0

  def __post_init__(self):
    for field in ("num_ways", "num_shots"):
      if getattr(self, field) < 1:
        raise errors.EpisodeSpecError(f"{field} must be >= 1, got {getattr(self, field)}")
    if self.num_queries < 0 or self.inner_steps < 0:
      raise errors.EpisodeSpecError(
          f"num_queries and inner_steps must be >= 0, got {self.num_queries}, {self.inner_steps}")
    if self.inner_batch_size is not None and not 1 <= self.inner_batch_size <= self.support_size:
      raise errors.EpisodeSpecError(
          f"inner_batch_size {self.inner_batch_size} must be in 1..{self.support_size} "
          f"(the {self.num_ways}-way {self.num_shots}-shot support set)")

  @property
  def support_size(self):
    return self.num_ways * self.num_shots

  @property
  def query_size(self):
    return self.num_ways * self.num_queries

  @property
  def batch_size(self):
    """Images per inner mini-batch."""
    return self.inner_batch_size or self.support_size


def support_batches(rng, support_size, batch_size, steps):
  """Indices [steps, batch_size] into the support set, epoch by epoch without replacement.

  Like a shuffling data loader: each pass over the support set is a fresh permutation, and
  batches run on across pass boundaries.
  """
  needed = steps * batch_size
  passes = -(-needed // support_size) if needed else 0
  order = np.concatenate([rng.permutation(support_size) for _ in range(passes)] or
                         [np.zeros(0, np.int64)])
  return order[:needed].reshape(steps, batch_size).astype(np.int32)


POOL_SALT = 0x9001  # keys a pool's epoch orders apart from its episodes


class EpisodeSampler:
  """Samples episodes of one spec from one class split.

  Args:
    store: the ImageStore of the split.
    spec: an EpisodeSpec.
    seed: the sampler's seed; episode i uses np.random.default_rng([seed, i]), or
      np.random.default_rng([seed, stream, i]) with a `stream` id.
    name: the split's name, for error messages.
    stream: optional int id of a task stream (`TaskStream.sampler_stream`).
    pool: 0 (default): every index is a new task. N > 0: a pool of N tasks (episodes
      0..N-1) visited in epochs, each epoch in its own order (T-NAS: 10 epochs of the same
      5,000 tasks, as the authors' dataset drawn once and shuffled every epoch).

  Raises:
    EpisodeSpecError: the split has fewer classes than ways, or a class has fewer images
      than shots + queries.
  """

  def __init__(self, store, spec, seed=0, name="split", stream=None, pool=0):
    self.store, self.spec, self.seed, self.name = store, spec, int(seed), name
    self.pool = int(pool)
    if self.pool < 0:
      raise errors.EpisodeSpecError(f"{name}: a task pool of {pool} tasks; use 0 (every "
                                    f"task new) or a positive number")
    self._key = [self.seed] if stream is None else [self.seed, int(stream)]
    if spec.num_ways > store.num_classes:
      raise errors.EpisodeSpecError(
          f"{spec.num_ways}-way episodes need at least {spec.num_ways} classes, but {name} "
          f"has only {store.num_classes}")
    per_class = store.images_per_class
    smallest = int(np.argmin(per_class))
    needed = spec.num_shots + spec.num_queries
    if per_class[smallest] < needed:
      raise errors.EpisodeSpecError(
          f"{spec.num_shots} shots + {spec.num_queries} queries = {needed} images per class, "
          f"but class {store.class_names[smallest]!r} of {name} has only {per_class[smallest]}")
    self._class_indices = store.class_indices

  def pooled(self, index):
    """The pool task that index `index` visits (itself without a pool)."""
    if not self.pool:
      return int(index)
    epoch, position = divmod(int(index), self.pool)
    return int(np.random.default_rng(self._key + [POOL_SALT, epoch]).permutation(self.pool)[position])

  def episode(self, index):
    """Episode `index` as a dict of numpy arrays (see EPISODE_KEYS)."""
    spec = self.spec
    rng = np.random.default_rng(self._key + [self.pooled(index)])
    classes = rng.choice(self.store.num_classes, spec.num_ways, replace=False)
    support, query = [], []
    for c in classes:
      picked = rng.choice(self._class_indices[c], spec.num_shots + spec.num_queries,
                          replace=False)
      support.append(picked[:spec.num_shots])
      query.append(picked[spec.num_shots:])
    turns = rng.integers(4, size=spec.num_ways) if self.store.random_rotations else None
    support_order = rng.permutation(spec.support_size)
    query_order = rng.permutation(spec.query_size)
    support_labels = np.repeat(np.arange(spec.num_ways, dtype=np.int32), spec.num_shots)
    query_labels = np.repeat(np.arange(spec.num_ways, dtype=np.int32), spec.num_queries)
    return {
        "support_images": self._images(np.concatenate(support), support_labels, turns,
                                       support_order),
        "support_labels": support_labels[support_order],
        "query_images": self._images(np.concatenate(query), query_labels, turns, query_order),
        "query_labels": query_labels[query_order],
        "support_batches": support_batches(rng, spec.support_size, spec.batch_size,
                                           spec.inner_steps),
    }

  def _images(self, index, labels, turns, order):
    """The images at `index` (grouped by task class, `labels`), each class rotated by its
    `turns` quarter turns when the store asks for random rotations, in `order`."""
    images = self.store.images[index]
    if turns is not None:
      images = np.stack([np.rot90(image, k=turns[label], axes=(0, 1))
                         for image, label in zip(images, labels)])
    return images[order]

  def _shapes(self):
    spec, image = self.spec, self.store.image_shape
    return {
        "support_images": (spec.support_size,) + image,
        "support_labels": (spec.support_size,),
        "query_images": (spec.query_size,) + image,
        "query_labels": (spec.query_size,),
        "support_batches": (spec.inner_steps, spec.batch_size),
    }

  def _tf_episode(self, index):
    dtypes = (tf.uint8, tf.int32, tf.uint8, tf.int32, tf.int32)
    values = tf.numpy_function(
        lambda i: tuple(self.episode(i)[k] for k in EPISODE_KEYS), [index], dtypes,
        stateful=False)
    shapes = self._shapes()
    return {k: tf.ensure_shape(v, shapes[k]) for k, v in zip(EPISODE_KEYS, values)}

  def dataset(self, meta_batch_size, start_batch=0, num_batches=None):
    """Meta-batches of episodes as a prefetched tf.data pipeline.

    Args:
      meta_batch_size: tasks per meta-batch (leading dimension of every tensor).
      start_batch: index of the first meta-batch (resume from a checkpoint's position).
      num_batches: how many meta-batches; None for an endless stream.

    Returns:
      A tf.data.Dataset of dicts keyed by EPISODE_KEYS; meta-batch b holds episodes
      b * meta_batch_size ... (b + 1) * meta_batch_size - 1.
    """
    first = start_batch * meta_batch_size
    if num_batches is None:
      indices = tf.data.Dataset.counter(first)
    else:
      indices = tf.data.Dataset.range(first, first + num_batches * meta_batch_size)
    episodes = indices.map(self._tf_episode, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True)
    return episodes.batch(meta_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
