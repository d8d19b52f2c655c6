"""Class-indexed image stores and the meta-train/val/test splits built from them."""

import dataclasses
import functools
import hashlib
import os
import pathlib
import tempfile
import time
import zipfile
import zlib

from absl import logging
import numpy as np

from tf_metanas.data import errors

SPLITS = ("train", "val", "test")
CACHE_FILE_MODE = 0o644  # cache files are shared: readable by the group and others
STALE_TMP_SECONDS = 60  # a temporary file untouched this long has no live writer
_TMP_PATTERNS = ("*.npz.tmp", "*.npz.sha256.tmp")  # what `save` leaves if killed


@dataclasses.dataclass(frozen=True, eq=False)
class ImageStore:
  """Images of one class split, indexed by class.

  Attributes:
    images: uint8 array [N, H, W, C].
    labels: int32 array [N], the class index of each image in [0, num_classes).
    class_names: one unique name per class, e.g. "Greek/character01".
    class_groups: one group per class, e.g. the alphabet or the CIFAR superclass.
    random_rotations: episodes rotate each class of a task by a random multiple of 90
      degrees (the MAML code's Omniglot tasks); not stored on disk.
  """

  images: np.ndarray
  labels: np.ndarray
  class_names: tuple
  class_groups: tuple
  random_rotations: bool = False

  def __post_init__(self):
    images, labels = np.asarray(self.images), np.asarray(self.labels, np.int32)
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(f"images must be uint8 NHWC, got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
      raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
    if len(self.class_names) != len(self.class_groups):
      raise ValueError("class_names and class_groups differ in length")
    if len(set(self.class_names)) != len(self.class_names):
      raise ValueError("class names must be unique")
    if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
      raise ValueError("labels out of range of class_names")
    if self.random_rotations and images.shape[1] != images.shape[2]:
      raise ValueError(f"random rotations need square images, got {images.shape[1:3]}")
    object.__setattr__(self, "images", images)
    object.__setattr__(self, "labels", labels)
    object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
    object.__setattr__(self, "class_groups", tuple(str(g) for g in self.class_groups))

  @classmethod
  def from_classes(cls, classes, image_shape=None):
    """Builds a store from an iterable of (name, group, uint8 images [n, H, W, C]); with
    `image_shape` (H, W, C), no classes make an empty store (a split a protocol leaves
    empty, e.g. REPTILE's meta-validation)."""
    names, groups, images, labels = [], [], [], []
    for index, (name, group, class_images) in enumerate(classes):
      names.append(name)
      groups.append(group)
      images.append(np.asarray(class_images, np.uint8))
      labels.append(np.full(len(class_images), index, np.int32))
    if not images and image_shape is not None:
      return cls(np.zeros((0,) + tuple(image_shape), np.uint8), np.zeros(0, np.int32), (), ())
    if not images:
      raise ValueError("a store needs at least one class")
    return cls(np.concatenate(images), np.concatenate(labels), tuple(names), tuple(groups))

  @property
  def num_classes(self):
    return len(self.class_names)

  @property
  def image_shape(self):
    return tuple(self.images.shape[1:])

  @functools.cached_property
  def class_indices(self):
    """For each class, the indices of its images (a list of int arrays)."""
    order = np.argsort(self.labels, kind="stable")
    bounds = np.cumsum(np.bincount(self.labels, minlength=self.num_classes))[:-1]
    return np.split(order, bounds)

  @property
  def images_per_class(self):
    return np.bincount(self.labels, minlength=self.num_classes)

  @property
  def groups(self):
    """The distinct groups, in first-seen order."""
    return tuple(dict.fromkeys(self.class_groups))

  def select_classes(self, class_ids):
    """A new store holding only `class_ids`, relabelled 0..len-1 in the given order."""
    class_ids = list(class_ids)
    return ImageStore.from_classes(
        (self.class_names[c], self.class_groups[c], self.images[self.class_indices[c]])
        for c in class_ids)

  def with_rotations(self, quarter_turns=(1, 2, 3)):
    """Adds each rotation by 90 * t degrees (t in `quarter_turns`) as a new class.

    This is the Omniglot class augmentation of Santoro et al. / Vinyals et al.: the
    result has (1 + len(quarter_turns)) x as many classes, rotated classes named
    "<name>/rot<degrees>".
    """
    classes = []
    for c in range(self.num_classes):
      images = self.images[self.class_indices[c]]
      classes.append((self.class_names[c], self.class_groups[c], images))
      for t in quarter_turns:
        classes.append((f"{self.class_names[c]}/rot{90 * t}", self.class_groups[c],
                        np.rot90(images, k=t, axes=(1, 2))))
    return ImageStore.from_classes(classes)

  def save(self, path):
    """Writes the store as one `.npz` and its SHA-256 beside it as `<path>.sha256`.

    Both files are written atomically (a partial file never replaces a good one) and are
    readable by the group and others (mode 0644), so users can share a cache. The old
    checksum is removed before the new `.npz` is written: a kill at any point leaves
    either a matching pair or a complete `.npz` without a checksum (loaded unverified as
    the stores of older versions are), never a false mismatch.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checksum = checksum_path(path)
    checksum.unlink(missing_ok=True)
    digest = _write_atomically(path, self._write_npz)
    _write_atomically(checksum, lambda f: f.write(f"{digest}  {path.name}\n".encode()))

  def _write_npz(self, f):
    np.savez(f, images=self.images, labels=self.labels,
             class_names=np.array(self.class_names, dtype=str),
             class_groups=np.array(self.class_groups, dtype=str))

  @classmethod
  def load(cls, path):
    """Reads a store written by `save`, checked against its `.sha256` file if there is one.

    A store without a checksum file (written before checksums existed) loads unverified.

    Raises:
      CorruptFileError: the file is truncated, empty, damaged or does not match its
        checksum; the message names it and `.path` holds it.
    """
    path = pathlib.Path(path)
    _verify_checksum(path)
    try:
      with np.load(path, allow_pickle=False) as data:
        return cls(data["images"], data["labels"], tuple(data["class_names"].tolist()),
                   tuple(data["class_groups"].tolist()))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      raise errors.CorruptFileError(
          f"cannot read cached store {path}: {type(e).__name__}: {e}. Delete it and "
          "prepare the dataset again.", path=path) from e


def checksum_path(path):
  """The file holding the SHA-256 of the store at `path`: `<path>.sha256`."""
  path = pathlib.Path(path)
  return path.with_name(path.name + ".sha256")


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _verify_checksum(path):
  """Raises CorruptFileError if `path` has a checksum file that it does not match."""
  checksum = checksum_path(path)
  try:
    expected = checksum.read_text().split()
  except FileNotFoundError:
    return
  except (OSError, UnicodeDecodeError) as e:
    raise errors.CorruptFileError(f"cannot read the checksum file {checksum} of cached store "
                                  f"{path}: {e}", path=path) from e
  try:
    actual = _sha256(path)
  except OSError as e:
    raise errors.CorruptFileError(f"cannot read cached store {path}: {e}", path=path) from e
  if not expected or expected[0] != actual:
    raise errors.CorruptFileError(
        f"cached store {path} is corrupt: its SHA-256 is {actual}, but {checksum} records "
        f"{expected[0] if expected else 'nothing'}", path=path)


def _write_atomically(path, write):
  """Writes `path` through `write(binary file)` into a temporary file, then renames it.

  The temporary file (`<stem>.XXXXXXXX<suffixes>.tmp`, e.g. `train.k2j4.npz.tmp`) gets
  mode 0644 before the rename: `mkstemp` creates 0600, which other users of a shared
  cache cannot read. Returns the SHA-256 (hex) of the file written.
  """
  stem = path.name.split(".")[0]
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{stem}.",
                             suffix="".join(path.suffixes) + ".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.chmod(tmp, CACHE_FILE_MODE)
    digest = _sha256(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return digest


def summarize(store):
  """A one-line description: classes, images, groups, image shape."""
  if not store.num_classes:
    return f"no classes, images {store.image_shape}"
  per_class = store.images_per_class
  return (f"{store.num_classes} classes, {store.images.shape[0]} images "
          f"({per_class.min()}-{per_class.max()} per class), {len(store.groups)} groups, "
          f"images {store.image_shape}")


def check_disjoint(splits):
  """Raises SplitOverlapError if two splits (a dict name -> ImageStore) share a class name."""
  seen = {}
  for split, store in splits.items():
    for name in store.class_names:
      if name in seen:
        raise errors.SplitOverlapError(
            f"class {name!r} is in both split {seen[name]!r} and split {split!r}")
      seen[name] = split


def remove_stale_temporaries(directory, max_age=STALE_TMP_SECONDS):
  """Removes the temporary files that a killed `save` left in `directory`.

  Only `*.npz.tmp` and `*.npz.sha256.tmp` files not modified for `max_age` seconds are
  removed. A live writer keeps its temporary file's modification time fresh as it writes
  and renames it as soon as it is complete, so a file that old has no writer left (on a
  shared cache too, where a writer's process id would mean nothing). Files that vanish or
  cannot be removed (another user's, in a shared cache) are left alone.

  Returns:
    The paths removed.
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  removed, now = [], time.time()
  for pattern in _TMP_PATTERNS:
    for tmp in sorted(directory.glob(pattern)):
      try:
        if now - tmp.stat().st_mtime < max_age:
          continue
        tmp.unlink()
      except OSError as e:
        logging.debug("Leaving %s: %s", tmp, e)
        continue
      logging.info("Removed %s, left behind by an interrupted cache write", tmp)
      removed.append(tmp)
  return removed


def save_splits(splits, directory):
  """Saves each split store as `<directory>/<split>.npz` (see `ImageStore.save`).

  Removes stale temporary files of interrupted writes first (`remove_stale_temporaries`).
  """
  remove_stale_temporaries(directory)
  for split, store in splits.items():
    store.save(pathlib.Path(directory) / f"{split}.npz")


def load_splits(directory):
  """Loads the stores saved by `save_splits`, or None if any split is missing.

  Removes stale temporary files of interrupted writes first (`remove_stale_temporaries`).

  Raises:
    CorruptFileError: a split file is damaged (see `ImageStore.load`).
  """
  remove_stale_temporaries(directory)
  paths = {s: pathlib.Path(directory) / f"{s}.npz" for s in SPLITS}
  if not all(p.exists() for p in paths.values()):
    return None
  return {s: ImageStore.load(p) for s, p in paths.items()}
