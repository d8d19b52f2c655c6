"""mini-ImageNet (Vinyals et al. 2016, Ravi & Larochelle 2017 splits: 64 / 16 / 20 classes).

Any one of these layouts in `data_dir` (checked in this order):

  * pickles: mini-imagenet-cache-{train,val,test}.pkl (`validation` also accepted for val),
    each a dict {"image_data": uint8 [N, 84, 84, 3], "class_dict": {wnid: [indices]}};
    read through a restricted unpickler (numpy arrays and containers only).
  * Ravi & Larochelle CSVs: train.csv, val.csv, test.csv ("filename,label" rows) with the
    JPEGs in images/.
  * folders: train/<wnid>/*.jpg, val/<wnid>/*.jpg, test/<wnid>/*.jpg.

Images are resized to 84x84 RGB.
"""

import csv
import pathlib

import numpy as np
from absl import logging

from tf_metanas.data import errors
from tf_metanas.data import images as images_lib
from tf_metanas.data import safe_pickle
from tf_metanas.data import store as store_lib

IMAGE_SIZE = 84
GROUP = "mini-ImageNet"
CLASSES_PER_SPLIT = {"train": 64, "val": 16, "test": 20}
_SPLIT_FILE_NAMES = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG")

EXPECTED = (
    "expected in {data_dir} one of: mini-imagenet-cache-{{train,val,test}}.pkl; "
    "train.csv, val.csv, test.csv and images/; or folders train/<wnid>/, val/<wnid>/, "
    "test/<wnid>/ of JPEGs. mini-ImageNet cannot be downloaded automatically (ImageNet's "
    "terms): build it from ImageNet with the Ravi & Larochelle split files, or obtain the "
    "pickles of Ren et al. 2018, and put them there.")


def _first_existing(root, pattern, split):
  for name in _SPLIT_FILE_NAMES[split]:
    path = root / pattern.format(name)
    if path.exists():
      return path
  return None


def _read_pickles(root):
  paths = {s: _first_existing(root, "mini-imagenet-cache-{}.pkl", s) for s in store_lib.SPLITS}
  if not all(paths.values()):
    return None
  result = {}
  for split, path in paths.items():
    data = safe_pickle.load(path)
    try:
      image_data, class_dict = np.asarray(data["image_data"]), data["class_dict"]
      result[split] = [(wnid, image_data[np.asarray(idx, np.int64)])
                       for wnid, idx in sorted(class_dict.items())]
    except (KeyError, TypeError, IndexError) as e:
      raise errors.CorruptFileError(
          f"{path}: expected a dict with 'image_data' [N, 84, 84, 3] and 'class_dict' "
          f"{{wnid: indices}}: {e}") from e
  return result


def _read_image(path):
  return images_lib.decode(path.read_bytes(), path, IMAGE_SIZE, "RGB")


def _read_csvs(root):
  paths = {s: _first_existing(root, "{}.csv", s) for s in store_lib.SPLITS}
  if not all(paths.values()) or not (root / "images").is_dir():
    return None
  result = {}
  for split, path in paths.items():
    by_class = {}
    with open(path, newline="") as f:
      for row in csv.DictReader(f):
        if "filename" not in row or "label" not in row:
          raise errors.CorruptFileError(f"{path}: expected the header 'filename,label'")
        image_path = root / "images" / row["filename"]
        if not image_path.exists():
          raise errors.DatasetNotFoundError(f"{path} lists {image_path}, which is missing")
        by_class.setdefault(row["label"], []).append(_read_image(image_path))
    result[split] = [(wnid, np.stack(images)) for wnid, images in sorted(by_class.items())]
  return result


def _read_folders(root):
  paths = {s: _first_existing(root, "{}", s) for s in store_lib.SPLITS}
  if not all(p and p.is_dir() for p in paths.values()):
    return None
  result = {}
  for split, path in paths.items():
    classes = []
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir()):
      files = sorted(f for f in class_dir.iterdir() if f.suffix in _IMAGE_SUFFIXES)
      if files:
        classes.append((class_dir.name, np.stack([_read_image(f) for f in files])))
    result[split] = classes
  return result


def read_files(data_dir):
  """Reads mini-ImageNet from any supported layout.

  Returns:
    A dict split -> [(wnid, uint8 images [n, 84, 84, 3])], wnids sorted.

  Raises:
    DatasetNotFoundError: none of the layouts is complete in data_dir.
    CorruptFileError: an unreadable pickle, CSV row or image, named by its path.
  """
  root = pathlib.Path(data_dir)
  for reader in (_read_pickles, _read_csvs, _read_folders):
    result = reader(root) if root.is_dir() else None
    if result is not None:
      for split, classes in result.items():
        if len(classes) != CLASSES_PER_SPLIT[split]:
          logging.warning("mini-ImageNet %s split has %d classes (the standard split has %d)",
                          split, len(classes), CLASSES_PER_SPLIT[split])
      return result
  raise errors.DatasetNotFoundError("no mini-ImageNet data: " + EXPECTED.format(data_dir=data_dir))


def to_stores(classes_by_split):
  """dict split -> [(wnid, images)] to dict split -> ImageStore."""
  return {split: store_lib.ImageStore.from_classes((wnid, GROUP, images)
                                                   for wnid, images in classes)
          for split, classes in classes_by_split.items()}


def read_tfds(data_dir=None, manual_dir=None, download=False):
  """Reads mini-ImageNet through the package's TFDS builder (`mini_imagenet`).

  The builder prepares itself from `manual_dir` (any layout `read_files` accepts) when
  given; otherwise it must already be prepared in `data_dir`.
  """
  from tf_metanas.data import mini_imagenet_tfds  # pylint: disable=g-import-not-at-top,unused-import
  from tf_metanas.data import tfds_util  # pylint: disable=g-import-not-at-top
  builder = tfds_util.builder("mini_imagenet", data_dir, download, manual_dir=manual_dir)
  result = {}
  for split, tfds_split in (("train", "train"), ("val", "validation"), ("test", "test")):
    by_class = {}
    for example in tfds_util.examples(builder, tfds_split):
      by_class.setdefault(example["label"].decode(), []).append(example["image"])
    result[split] = [(wnid, np.stack(images)) for wnid, images in sorted(by_class.items())]
  return result
