"""Omniglot (Lake et al. 2015) from its original folders or zips, or from TFDS `omniglot`.

Original layout, as published by its authors (python/ folder of the Omniglot repository):

  <data_dir>/images_background/<Alphabet>/characterNN/NNNN_DD.png   (30 alphabets, 964 chars)
  <data_dir>/images_evaluation/<Alphabet>/characterNN/NNNN_DD.png   (20 alphabets, 659 chars)

each folder possibly still zipped (`images_background.zip`), and the small background
subsets `images_background_small{1,2}` (folders or zips) are read the same way. A character
found in several sources is one class; identical files are read once.

Splits:
  * "vinyals": characters (not alphabets) shuffled with a fixed seed and cut
    1028 / 172 / 423 of 1623 (the sizes of Vinyals et al. 2016 with the validation part
    of Snell et al. 2017; same proportions on a subset).
  * "maml": the same, cut 1100 / 100 / 423 (the official MAML code: 1,200 characters for
    meta-training, 100 of them held out for meta-validation, the other 423 for meta-test).
  * "reptile": the same, cut 1200 / 0 / 423 (the official REPTILE code: no
    meta-validation split; runs on it must set Runner.eval_every = 0).
  * "lake": background alphabets for meta-training (the last sixth of them in sorted
    order, 5 of 30, held out for validation) and evaluation alphabets for meta-testing.
"""

import pathlib
import re
import zipfile
import zlib

from absl import logging
import numpy as np

from tf_metanas.data import errors
from tf_metanas.data import hints
from tf_metanas.data import images as images_lib
from tf_metanas.data import store as store_lib

IMAGE_SIZE = 28
SPLIT_SIZES = {"vinyals": (1028, 172, 423), "maml": (1100, 100, 423),
               "reptile": (1200, 0, 423)}  # with "lake": choices.OMNIGLOT_SPLITS
SUBSETS = ("background", "evaluation")
_SOURCE_RE = re.compile(r"^images_(background|evaluation)(_small\d+)?(\.zip)?$")
_MEMBER_RE = re.compile(r"^(?:[^/]+/)?([^/]+)/(character\d+)/([^/]+\.png)$")

HOW_TO_GET = (
    "Get images_background.zip and images_evaluation.zip from the python/ folder of "
    "github.com/brendenlake/omniglot and put them (zipped or unzipped) in {data_dir}.")


def _how_to_get(data_dir):
  """Where to get the files, and how to let TFDS download them instead."""
  return HOW_TO_GET.format(data_dir=data_dir) + " " + hints.how_to_download("omniglot")


def _sources(data_dir):
  """The subset folders and zips in data_dir: [(subset, path)], sorted by name."""
  root = pathlib.Path(data_dir)
  found = []
  if root.is_dir():
    for path in sorted(root.iterdir()):
      match = _SOURCE_RE.match(path.name)
      if match and (path.is_dir() or path.suffix == ".zip"):
        found.append((match.group(1), path))
  return found


def _folder_members(path):
  for png in sorted(path.glob("*/character*/*.png")):
    yield png.relative_to(path).as_posix(), png, png.read_bytes


def _zip_members(path):
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise errors.CorruptFileError(f"{path} is not a readable zip file: {e}", path=path) from e
  with archive:
    for name in sorted(archive.namelist()):
      if _MEMBER_RE.match(name):
        yield name, f"{path}:{name}", lambda name=name: _read_member(archive, path, name)


def _read_member(archive, path, name):
  """The bytes of member `name` of the zip at `path`; a damaged member is CorruptFileError."""
  try:
    return archive.read(name)
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
    raise errors.CorruptFileError(
        f"member {name} of {path} is damaged ({type(e).__name__}: {e}). Download "
        f"{path.name} again from the python/ folder of github.com/brendenlake/omniglot, or "
        f"extract a good copy into {path.with_suffix('')} and remove the zip.",
        path=path) from e


def read_files(data_dir, size=IMAGE_SIZE):
  """Reads every character of the original layout under data_dir.

  Returns:
    A dict (subset, alphabet, character) -> uint8 images [n, size, size, 1].

  Raises:
    DatasetNotFoundError: no images_background / images_evaluation folder or zip.
    CorruptFileError: a zip or PNG that cannot be read (named by its path).
  """
  sources = _sources(data_dir)
  if not sources:
    raise errors.DatasetNotFoundError(
        f"no Omniglot data in {data_dir}: expected folders or zips named "
        f"images_background[.zip] and images_evaluation[.zip] (or "
        f"images_background_small1/2), each holding <Alphabet>/characterNN/*.png. "
        + _how_to_get(data_dir))
  missing = [f"images_{s}[.zip]" for s in SUBSETS if s not in {subset for subset, _ in sources}]
  logging.info("Omniglot in %s: reading %s%s", data_dir, ", ".join(p.name for _, p in sources),
               f"; not found: {', '.join(missing)} (the splits are cut from what was found)"
               if missing else "")
  characters, decoded = {}, 0
  for subset, path in sources:
    members = _zip_members(path) if path.suffix == ".zip" else _folder_members(path)
    for name, where, read in members:
      match = _MEMBER_RE.match(name)
      if not match:
        continue
      alphabet, character, filename = match.groups()
      files = characters.setdefault((subset, alphabet, character), {})
      if filename not in files:
        files[filename] = images_lib.decode(read(), where, size, "L")
        decoded += 1
        if decoded % 5000 == 0:
          logging.info("Omniglot: %d images decoded (%s)", decoded, path.name)
  return {key: np.stack([files[f] for f in sorted(files)])
          for key, files in sorted(characters.items())}


def read_tfds(data_dir=None, download=False, size=IMAGE_SIZE):
  """Reads TFDS `omniglot` (train = background, test = evaluation) into the same dict.

  Nothing is downloaded unless `download` is True.
  """
  from tf_metanas.data import tfds_util  # pylint: disable=g-import-not-at-top
  builder = tfds_util.builder("omniglot", data_dir, download)
  alphabet_names = builder.info.features["alphabet"]
  characters = {}
  for subset, split in (("background", "train"), ("evaluation", "test")):
    for example in tfds_util.examples(builder, split):
      alphabet = alphabet_names.int2str(int(example["alphabet"]))
      character = f"character{int(example['alphabet_char_id']) + 1:02d}"
      image = images_lib.resize_array(example["image"][..., :1], size)
      characters.setdefault((subset, alphabet, character), []).append(image)
  return {key: np.stack(images) for key, images in sorted(characters.items())}


def _shuffled(keys, sizes):
  """Characters shuffled with a fixed seed and cut in the proportions of `sizes`."""
  order = np.random.default_rng(0).permutation(len(keys))
  total = sum(sizes)
  n_train = round(len(keys) * sizes[0] / total)
  n_val = round(len(keys) * sizes[1] / total)
  cuts = np.split(order, [n_train, n_train + n_val])
  return {split: [keys[i] for i in sorted(part)] for split, part in zip(store_lib.SPLITS, cuts)}


def _lake(keys, data_dir):
  background = sorted({a for s, a, _ in keys if s == "background"})
  if not background or not any(s == "evaluation" for s, _, _ in keys):
    missing = "images_background" if not background else "images_evaluation"
    raise errors.DatasetNotFoundError(
        f"the 'lake' split needs both the background and the evaluation alphabets, but "
        f"{missing}[.zip] was not found in {data_dir}. Use the 'vinyals' split for a subset "
        f"(`{hints.prepare_command('omniglot', omniglot_split='vinyals')}` or "
        f"`{hints.gin_params(omniglot_split='vinyals')}`), or get the missing files. "
        + _how_to_get(data_dir))
  num_val = max(1, round(len(background) / 6)) if len(background) > 1 else 0
  val_alphabets = set(background[len(background) - num_val:])

  def split_of(key):
    subset, alphabet, _ = key
    if subset == "evaluation":
      return "test"
    return "val" if alphabet in val_alphabets else "train"

  return {s: [k for k in keys if split_of(k) == s] for s in store_lib.SPLITS}


def split(characters, split_name="vinyals", data_dir=""):
  """Splits the characters read by `read_files` / `read_tfds` into class stores.

  Returns:
    A dict split -> ImageStore; classes named "<Alphabet>/characterNN", grouped by alphabet.
  """
  keys = list(characters)
  if split_name in SPLIT_SIZES:
    parts = _shuffled(keys, SPLIT_SIZES[split_name])
  elif split_name == "lake":
    parts = _lake(keys, data_dir)
  else:
    raise ValueError(f"unknown Omniglot split {split_name!r}; use one of "
                     f"{sorted(SPLIT_SIZES) + ['lake']}")
  intended_empty = {"val"} if SPLIT_SIZES.get(split_name, (1, 1, 1))[1] == 0 else set()
  for name, part in parts.items():
    if not part and name not in intended_empty:
      raise errors.DatasetNotFoundError(
          f"Omniglot split {split_name!r} leaves meta-{name} empty with the "
          f"{len(keys)} characters found in {data_dir}. " + _how_to_get(data_dir))
  image_shape = next(iter(characters.values())).shape[1:]
  return {name: store_lib.ImageStore.from_classes(
      ((f"{a}/{c}", a, characters[(s, a, c)]) for s, a, c in part), image_shape)
          for name, part in parts.items()}
