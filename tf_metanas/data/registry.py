"""One entry point for every dataset: read from its source once, then from the `.npz` cache."""

import dataclasses
import hashlib
import os
import pathlib

from absl import logging

from tf_metanas.choices import DATASETS
from tf_metanas.data import cache
from tf_metanas.data import errors
from tf_metanas.data import fc100
from tf_metanas.data import glyphs
from tf_metanas.data import hints
from tf_metanas.data import mini_imagenet
from tf_metanas.data import omniglot
from tf_metanas.data import store as store_lib

IMAGE_SHAPES = {"glyphs": (28, 28, 1), "omniglot": (28, 28, 1), "mini_imagenet": (84, 84, 3),
                "fc100": (32, 32, 3)}  # (H, W, C) of each dataset's images
SOURCES = ("auto", "files", "tfds")
ROTATIONS = ("none", "classes", "train_classes", "per_task")
DATA_ENV = "TF_METANAS_DATA"
_TFDS_NAMES = {"omniglot": "omniglot", "mini_imagenet": "mini_imagenet", "fc100": "cifar100"}


def default_data_dir(name):
  """Where raw files are looked for by default: $TF_METANAS_DATA/<name>, else ~/tf_metanas_data/<name>."""
  root = os.environ.get(DATA_ENV) or os.path.join("~", "tf_metanas_data")
  return pathlib.Path(root).expanduser() / name


def _fingerprint(*parts):
  return hashlib.sha1(repr(parts).encode()).hexdigest()[:10]


def _files_fingerprint(data_dir):
  """Changes when the top-level entries of data_dir change (new zips, other copies)."""
  root = pathlib.Path(data_dir)
  entries = []
  if root.is_dir():
    for path in sorted(root.iterdir()):
      stat = path.stat()
      entries.append((path.name, stat.st_size if path.is_file() else 0, stat.st_mtime_ns))
  return _fingerprint(str(root.resolve()), entries)


def _read_files(name, data_dir, omniglot_split):
  if name == "omniglot":
    return omniglot.split(omniglot.read_files(data_dir), omniglot_split, data_dir)
  if name == "mini_imagenet":
    return mini_imagenet.to_stores(mini_imagenet.read_files(data_dir))
  return fc100.read_files(data_dir)


def _read_tfds(name, tfds_dir, download, omniglot_split, data_dir):
  if name == "omniglot":
    return omniglot.split(omniglot.read_tfds(tfds_dir, download), omniglot_split, tfds_dir)
  if name == "mini_imagenet":
    manual = data_dir if pathlib.Path(data_dir).is_dir() else None
    return mini_imagenet.to_stores(mini_imagenet.read_tfds(tfds_dir, manual, download))
  return fc100.read_tfds(tfds_dir, download)


def _read(name, source, data_dir, tfds_dir, download, omniglot_split):
  """Reads the splits from the requested source; 'auto' tries files, then TFDS."""
  if source == "files":
    return _read_files(name, data_dir, omniglot_split)
  if source == "tfds":
    return _read_tfds(name, tfds_dir, download, omniglot_split, data_dir)
  try:
    return _read_files(name, data_dir, omniglot_split)
  except errors.DatasetNotFoundError as files_error:
    try:
      return _read_tfds(name, tfds_dir, download, omniglot_split, data_dir)
    except errors.DatasetNotFoundError as tfds_error:
      raise errors.DatasetNotFoundError(f"{files_error}\nTFDS: {tfds_error}") from None


def _build(name, source, data_dir, tfds_dir, download, omniglot_split, seed, glyphs_version):
  """The splits built from the raw data (rendered, for glyphs)."""
  if name == "glyphs":
    return glyphs.build(seed, version=glyphs_version)
  return _read(name, source, data_dir, tfds_dir, download, omniglot_split)


def _load_cache(directory, refresh):
  """(splits or None, the CorruptFileError of a damaged cache or None).

  A damaged cache is not an error yet: it is rebuilt from the raw data if that is there.
  """
  if refresh:
    return None, None
  try:
    splits = store_lib.load_splits(directory)
    if splits is not None:
      logging.info("Loaded %s from the cache %s", pathlib.Path(directory).parent.name,
                   directory)
    return splits, None
  except errors.CorruptFileError as e:
    logging.warning("The cached file %s is corrupt; rebuilding it from the raw data. (%s)",
                    e.path, e)
    return None, e


def _rebuild_command(name, data_dir, source, cache_dir, download, tfds_dir, seed,
                     omniglot_split, glyphs_version):
  """The tools/prepare_data.py command that rewrites this variant's cache."""
  cache_root = cache.cache_root(cache_dir)
  if name == "glyphs":
    return hints.prepare_command(name, seed=seed, glyphs_version=glyphs_version,
                                 cache_dir=cache_root, refresh=True)
  return hints.prepare_command(
      name, data_dir=data_dir, source=source, tfds_dir=tfds_dir, download=download,
      omniglot_split=omniglot_split if name == "omniglot" else None, cache_dir=cache_root,
      refresh=True)


def _unrebuildable(corrupt, command, build_error):
  """The CorruptFileError of a damaged cache whose raw data cannot be read either."""
  return errors.CorruptFileError(
      f"the cached file {corrupt.path} is corrupt and the raw data to rebuild it is not "
      f"available. Restore the raw data, then rebuild the cache with `{command}`. "
      f"The cache: {corrupt} The raw data: {build_error}", path=corrupt.path)


def move_val_classes(splits, keep):
  """`splits` with meta-validation cut to its first `keep` classes and the rest of them
  appended to meta-test (their images unchanged; the splits stay disjoint)."""
  val, test = splits["val"], splits["test"]
  if not 1 <= int(keep) <= val.num_classes:
    raise errors.EpisodeSpecError(f"load_splits.val_classes = {keep}: the meta-validation "
                                  f"split has {val.num_classes} classes (keep 1 to all)")
  each = lambda store, classes: [(store.class_names[c], store.class_groups[c],
                                  store.images[store.class_indices[c]]) for c in classes]
  moved = each(test, range(test.num_classes)) + each(val, range(int(keep), val.num_classes))
  return {**splits, "val": val.select_classes(list(range(int(keep)))),
          "test": type(test).from_classes(moved)}


def load_dataset(name, data_dir=None, source="auto", cache_dir=None, download=False,
                 tfds_dir=None, seed=0, omniglot_split="vinyals", rotations=False,
                 refresh=False, val_classes=None, glyphs_version=glyphs.VERSION):
  """Loads the meta-train / meta-val / meta-test class splits of a dataset.

  The first call reads the source and writes `<cache>/<name>/<variant>/{train,val,test}.npz`;
  later calls read the cache. A corrupt cache file (truncated, damaged, not matching its
  `.sha256`) is rebuilt from the raw data, with a warning naming it. Nothing is downloaded
  unless `download` is True.

  Args:
    name: "glyphs", "omniglot", "mini_imagenet" or "fc100".
    data_dir: folder with the raw files (default: `default_data_dir(name)`).
    source: "files", "tfds", or "auto" (files if present, else an already prepared TFDS).
    cache_dir: cache root (default: `cache.cache_root()`).
    download: allow TFDS to download (Omniglot, CIFAR-100).
    tfds_dir: TFDS data directory (default: TFDS's).
    seed: the glyph drawers' seed.
    omniglot_split: "vinyals" or "lake".
    rotations: Omniglot / glyphs rotation protocol, one of ROTATIONS: "none" (or False);
      "classes" (or True): 90/180/270-degree rotations as new classes in every split;
      "train_classes": as new classes in meta-train only (the REPTILE code; meta-val and
      meta-test unrotated); "per_task": every class of a task rotated by a random multiple
      of 90 degrees, in every split (the MAML code), so a task never holds two rotations
      of one character.
    refresh: ignore and overwrite the cache.
    val_classes: keep only the first this many meta-validation classes (in class-name
      order) and move the others to meta-test (BASE's mini-ImageNet split of 64 / 12 / 24
      classes: `val_classes = 12` on the standard 64 / 16 / 20); None: the split as built.
    glyphs_version: which glyphs to draw, one of `glyphs.VERSIONS`: 2 (the default,
      handwritten strokes with Omniglot's ink) or 1 (the printed characters of earlier
      results); each version has its own cache.

  Returns:
    A dict "train" / "val" / "test" -> ImageStore with disjoint classes.

  Raises:
    DatasetNotFoundError: the raw data is missing (the message says where to put it).
    CorruptFileError: a raw file is damaged, or a cache file is and the raw data to
      rebuild it is missing (the message names the file and the rebuild command).
  """
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
  rotations = {False: "none", True: "classes"}.get(rotations, rotations)
  if rotations not in ROTATIONS:
    raise ValueError(f"unknown rotations {rotations!r} (load_splits.rotations); use one of "
                     f"{ROTATIONS}")
  if source not in SOURCES:
    raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
  glyphs.check_version(glyphs_version)
  data_dir = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir(name)
  if name == "glyphs":
    variant = f"v{glyphs_version}-seed{seed}"
  else:
    variant = f"{omniglot_split}-" if name == "omniglot" else ""
    tfds_key = str(tfds_dir) if tfds_dir else None  # a str and a Path: the same cache
    variant += f"{source}-{_files_fingerprint(data_dir)}-{_fingerprint(tfds_key)}"
  directory = cache.dataset_dir(name, variant, cache_dir)
  splits, corrupt = _load_cache(directory, refresh)
  if splits is None:
    logging.info("Preparing %s into %s", name, directory)
    try:
      splits = _build(name, source, data_dir, tfds_dir, download, omniglot_split, seed,
                      glyphs_version)
    except errors.DataError as e:
      if corrupt is None:
        raise
      command = _rebuild_command(name, data_dir, source, cache_dir, download, tfds_dir, seed,
                                 omniglot_split, glyphs_version)
      raise _unrebuildable(corrupt, command, e) from e
    store_lib.check_disjoint(splits)
    store_lib.save_splits(splits, directory)
    logging.info("Wrote %s to the cache %s", name, directory)
  if val_classes is not None:
    splits = move_val_classes(splits, val_classes)
  if rotations == "per_task":
    return {s: dataclasses.replace(store, random_rotations=True) for s, store in splits.items()}
  rotated = {"classes": set(splits), "train_classes": {"train"}}.get(rotations, set())
  return {s: store.with_rotations() if s in rotated else store for s, store in splits.items()}
