"""Task streams: named parts of the meta-training split, each with its own episodes.

An update rule may read several streams per meta-iteration (Auto-MAML and CAML update the
weights from one set of tasks and the architecture from another). A stream is a part of
the meta-train split, cut in one of two ways:

  by="class":  the classes, shuffled once per run seed, then the fraction range `part`
               of them (the papers' wording: disjoint class sets);
  by="image":  every class, with the fraction range `part` of each class's images,
               shuffled once per run seed and class (the T-NAS code's split of every
               class's images).

Streams with disjoint ranges of the same cut are disjoint. Episode i of a stream depends
only on (run seed, stream name, i), so a resumed run draws exactly the episodes it would
have drawn.
"""

import dataclasses
import zlib

import gin
import numpy as np

from tf_metanas.data import errors

CUTS = ("class", "image")


def stream_id(stream):
  """A stable integer for a stream name (its CRC-32; the same in every process)."""
  return zlib.crc32(stream.encode("utf-8")) & 0x7FFFFFFF


@gin.configurable(module="tf_metanas.data")
@dataclasses.dataclass(frozen=True)
class TaskStream:
  """A named stream of meta-training tasks.

  Attributes:
    name: the stream's name, as update rules route groups to it ("train" by default).
    part: (start, stop) fractions of the meta-train classes or of each class's images.
    by: "class" or "image" (see the module docstring).
    spec: the stream's EpisodeSpec (None: the Runner's train_spec).
    pool: 0: every meta-training task is new; N > 0: N tasks visited in epochs, each in a
      new order (`EpisodeSampler.pool`; T-NAS: 5,000).
    source: None (the Runner's meta-train split), or a callable returning a dataset's
      splits (e.g. `@fc100/load_splits` with its own scoped bindings): the stream's tasks
      come from that dataset's "train" split (BASE's multi-size multi-task meta-training).
  """

  name: str = "train"
  part: tuple = (0.0, 1.0)
  by: str = "class"
  spec: object = None
  pool: int = 0
  source: object = None

  def __post_init__(self):
    start, stop = self.part
    if self.by not in CUTS:
      raise errors.EpisodeSpecError(f"TaskStream {self.name!r}: unknown by={self.by!r}; "
                                    f"use one of {CUTS}")
    if self.source is not None and not callable(self.source):
      raise errors.EpisodeSpecError(f"TaskStream {self.name!r}: source must be a callable "
                                    f"returning splits (e.g. @fc100/load_splits), got "
                                    f"{self.source!r}")
    if not 0.0 <= start < stop <= 1.0:
      raise errors.EpisodeSpecError(f"TaskStream {self.name!r}: part={self.part} must be "
                                    f"(start, stop) with 0 <= start < stop <= 1")

  def store(self, train, seed):
    """This stream's part of the meta-train ImageStore `train` (or of its source's) for
    run seed `seed`."""
    if self.source is not None:
      train = self.source()["train"]
    if tuple(self.part) == (0.0, 1.0):
      return train
    start, stop = self.part
    if self.by == "class":
      order = np.random.default_rng([int(seed), 7]).permutation(train.num_classes)
      chosen = sorted(order[int(start * train.num_classes):int(stop * train.num_classes)])
      if not chosen:
        raise errors.EpisodeSpecError(f"TaskStream {self.name!r}: part={self.part} of "
                                      f"{train.num_classes} classes is empty")
      part = train.select_classes(chosen)
    else:
      classes = []
      for c, indices in enumerate(train.class_indices):
        order = np.random.default_rng([int(seed), 11, c]).permutation(len(indices))
        mine = np.sort(order[int(start * len(indices)):int(stop * len(indices))])
        classes.append((train.class_names[c], train.class_groups[c], train.images[indices[mine]]))
      part = type(train).from_classes(classes)
    return dataclasses.replace(part, random_rotations=train.random_rotations)

  def sampler_stream(self):
    """The stream id folded into the episode seeds (None for "train": its episodes are
    those of a one-stream run)."""
    return None if self.name == "train" else stream_id(self.name)
