"""FC100 (Oreshkin et al. 2018): CIFAR-100 split by superclass into 60 / 20 / 20 classes.

Sources, in `data_dir`:
  * "pickle": FC100_{train,val,test}.pickle (MetaOptNet format: {"data": uint8
    [N, 32, 32, 3], "labels": CIFAR-100 fine labels}), through a restricted unpickler.
  * "cifar": the CIFAR-100 python version, cifar-100-python/{train,test} (both are used:
    600 images per class).
  * "tfds": TFDS `cifar100` (train + test).

Classes are named by their CIFAR-100 fine label, grouped by superclass (coarse label).
"""

import pathlib

import numpy as np

from tf_metanas.data import errors
from tf_metanas.data import hints
from tf_metanas.data import safe_pickle
from tf_metanas.data import store as store_lib

IMAGE_SIZE = 32
SPLIT_SUPERCLASSES = {
    "train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
    "val": (8, 11, 13, 16),
    "test": (0, 7, 12, 14),
}
FINE_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")
COARSE_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2")
# The superclass of each CIFAR-100 fine label.
FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13)

EXPECTED = (
    "expected in {data_dir} one of: FC100_train.pickle, FC100_val.pickle, FC100_test.pickle; "
    "the CIFAR-100 python version unpacked as cifar-100-python/ (train, test, meta; from "
    "www.cs.toronto.edu/~kriz/cifar.html). ")


def _split_of_superclass():
  return {c: s for s, coarse in SPLIT_SUPERCLASSES.items() for c in coarse}


def to_stores(images, fine_labels, split_of_fine=None):
  """Groups images by fine label into the FC100 splits.

  Args:
    images: uint8 [N, 32, 32, 3].
    fine_labels: int [N] CIFAR-100 fine labels.
    split_of_fine: optional dict fine label -> split (from FC100 files); by default the
      split of the label's superclass.
  """
  fine_labels = np.asarray(fine_labels, np.int64)
  by_superclass = _split_of_superclass()
  classes = {s: [] for s in store_lib.SPLITS}
  for fine in np.unique(fine_labels):
    coarse = FINE_TO_COARSE[fine]
    split = (split_of_fine or {}).get(int(fine), by_superclass[coarse])
    classes[split].append((FINE_NAMES[fine], COARSE_NAMES[coarse], images[fine_labels == fine]))
  for split, found in classes.items():
    if not found:
      raise errors.DatasetNotFoundError(f"FC100 meta-{split} split has no classes in the data")
  return {s: store_lib.ImageStore.from_classes(c) for s, c in classes.items()}


def _checked(path, data, image_key, label_key):
  try:
    images = np.asarray(data[image_key], np.uint8)
    labels = np.asarray(data[label_key], np.int64)
  except (KeyError, TypeError, ValueError) as e:
    raise errors.CorruptFileError(f"{path}: expected keys {image_key!r}, {label_key!r}: {e}")
  if labels.shape[0] != images.shape[0] or labels.size and not 0 <= labels.min() <= labels.max() < 100:
    raise errors.CorruptFileError(f"{path}: {images.shape[0]} images but labels {labels.shape} "
                                  "not all in 0..99")
  return images, labels


def _read_fc100_pickles(root):
  paths = {s: root / f"FC100_{s}.pickle" for s in store_lib.SPLITS}
  if not all(p.exists() for p in paths.values()):
    return None
  images, labels, split_of_fine = [], [], {}
  for split, path in paths.items():
    split_images, split_labels = _checked(path, safe_pickle.load(path, "latin1"), "data", "labels")
    if split_images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
      raise errors.CorruptFileError(f"{path}: images {split_images.shape}, expected [N, 32, 32, 3]")
    images.append(split_images)
    labels.append(split_labels)
    split_of_fine.update({int(f): split for f in np.unique(split_labels)})
  return np.concatenate(images), np.concatenate(labels), split_of_fine


def _read_cifar_python(root):
  folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
  paths = [folder / "train", folder / "test"]
  if not all(p.is_file() for p in paths):
    return None
  images, labels = [], []
  for path in paths:
    split_images, split_labels = _checked(path, safe_pickle.load(path, "latin1"), "data",
                                          "fine_labels")
    if split_images.ndim != 2 or split_images.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
      raise errors.CorruptFileError(f"{path}: data {split_images.shape}, expected [N, 3072]")
    images.append(split_images.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))
    labels.append(split_labels)
  return np.concatenate(images), np.concatenate(labels), None


def read_files(data_dir):
  """Reads FC100 from FC100 pickles or the CIFAR-100 python folder: dict split -> ImageStore."""
  root = pathlib.Path(data_dir)
  for reader in (_read_fc100_pickles, _read_cifar_python):
    found = reader(root) if root.is_dir() else None
    if found is not None:
      return to_stores(*found)
  raise errors.DatasetNotFoundError("no FC100 data: " + EXPECTED.format(data_dir=data_dir)
                                    + hints.how_to_download("fc100"))


def read_tfds(data_dir=None, download=False):
  """Reads TFDS `cifar100` (train + test) into FC100 splits: dict split -> ImageStore."""
  from tf_metanas.data import tfds_util  # pylint: disable=g-import-not-at-top
  builder = tfds_util.builder("cifar100", data_dir, download)
  images, labels = [], []
  for split in ("train", "test"):
    for example in tfds_util.examples(builder, split):
      images.append(example["image"])
      labels.append(int(example["label"]))
  if not images:
    raise errors.DatasetNotFoundError(f"TFDS cifar100 in {builder.data_dir} has no examples")
  return to_stores(np.stack(images), np.array(labels))
