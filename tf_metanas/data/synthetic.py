"""A tiny class-structured dataset for tests and smoke runs: one prototype per class plus noise.

Each class has a random prototype image; its instances are the prototype with pixel noise.
Classes are easy to tell apart, so a meta-learner that works beats chance by far within a
few meta-iterations, and one that does not, does not.
"""

import numpy as np

from tf_metanas.data import store as store_lib


def prototype_store(num_classes=10, per_class=20, size=8, channels=1, noise=24.0, seed=0,
                    prefix="c"):
  """An ImageStore of `num_classes` prototype classes (uint8 images [size, size, channels])."""
  rng = np.random.default_rng(seed)
  classes = []
  for c in range(num_classes):
    prototype = rng.uniform(0, 255, size=(size, size, channels))
    images = prototype + rng.normal(0, noise, size=(per_class, size, size, channels))
    classes.append((f"{prefix}{c:03d}", f"{prefix}group{c % 3}",
                    np.clip(images, 0, 255).astype(np.uint8)))
  return store_lib.ImageStore.from_classes(classes)


def prototype_splits(num_classes=(10, 5, 5), per_class=20, size=8, channels=1, noise=24.0,
                     seed=0):
  """Train / val / test prototype stores with disjoint classes."""
  return {split: prototype_store(n, per_class, size, channels, noise, seed + i, prefix=split)
          for i, (split, n) in enumerate(zip(store_lib.SPLITS, num_classes))}
