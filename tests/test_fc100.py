"""FC100 readers: FC100 pickles, CIFAR-100 python batches, TFDS cifar100 (mocked)."""

import collections
import pickle

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_metanas import data
from tf_metanas.data import fc100

PER_CLASS = 3


def _cifar_arrays():
  """PER_CLASS images of every fine label; pixel (0, 0) holds the label, (0, 1) the instance."""
  labels = np.repeat(np.arange(100), PER_CLASS)
  images = np.zeros((labels.size, 32, 32, 3), np.uint8)
  images[:, 0, 0, 0] = labels
  images[:, 0, 1, 1] = np.tile(np.arange(PER_CLASS), 100)
  images[:, 5:, :, 2] = 77
  return images, labels


def _check(stores):
  for split, superclasses in fc100.SPLIT_SUPERCLASSES.items():
    store = stores[split]
    assert store.num_classes == 5 * len(superclasses)
    assert set(store.groups) == {fc100.COARSE_NAMES[c] for c in superclasses}
    assert store.image_shape == (32, 32, 3)
    for c, name in enumerate(store.class_names):
      fine = fc100.FINE_NAMES.index(name)
      images = store.images[store.class_indices[c]]
      assert (images[:, 0, 0, 0] == fine).all() and images.shape[0] == PER_CLASS
      assert fc100.COARSE_NAMES[fc100.FINE_TO_COARSE[fine]] == store.class_groups[c]
      assert (images[:, 5:, :, 2] == 77).all()


def test_superclass_table_has_five_classes_each_and_splits_are_60_20_20():
  counts = collections.Counter(fc100.FINE_TO_COARSE)
  assert len(fc100.FINE_TO_COARSE) == 100 and set(counts.values()) == {5}
  assert len(fc100.FINE_NAMES) == 100 and len(fc100.COARSE_NAMES) == 20
  all_superclasses = sorted(sum(fc100.SPLIT_SUPERCLASSES.values(), ()))
  assert all_superclasses == list(range(20))


def test_cifar100_python_batches(tmp_path):
  images, labels = _cifar_arrays()
  folder = tmp_path / "cifar-100-python"
  folder.mkdir()
  chw = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
  halves = {"train": slice(0, None, 2), "test": slice(1, None, 2)}
  for name, part in halves.items():
    with open(folder / name, "wb") as f:  # the official files are Python 2 pickles
      pickle.dump({"data": chw[part], "fine_labels": labels[part].tolist(),
                   "coarse_labels": [fc100.FINE_TO_COARSE[l] for l in labels[part]]}, f,
                  protocol=2)
  _check(fc100.read_files(tmp_path))


def test_fc100_pickles(tmp_path):
  images, labels = _cifar_arrays()
  split_of = {f: s for s, cs in fc100.SPLIT_SUPERCLASSES.items()
              for f in range(100) if fc100.FINE_TO_COARSE[f] in cs}
  for split in data.SPLITS:
    mask = np.array([split_of[l] == split for l in labels])
    with open(tmp_path / f"FC100_{split}.pickle", "wb") as f:
      pickle.dump({"data": images[mask], "labels": labels[mask].tolist()}, f, protocol=2)
  _check(fc100.read_files(tmp_path))


def test_fc100_pickle_with_wrong_keys_names_the_file(tmp_path):
  for split in data.SPLITS:
    with open(tmp_path / f"FC100_{split}.pickle", "wb") as f:
      pickle.dump({"images": np.zeros((1, 32, 32, 3), np.uint8)}, f)
  with pytest.raises(data.CorruptFileError, match=r"FC100_train.pickle: expected keys 'data'"):
    fc100.read_files(tmp_path)


def test_missing_data_names_every_source(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    fc100.read_files(tmp_path)
  for expected in ("FC100_train.pickle", "cifar-100-python/", "tfds", str(tmp_path)):
    assert expected in str(info.value)


def test_tfds_cifar100_reader(tmp_path):
  images, labels = _cifar_arrays()

  def as_dataset(self, split, **kwargs):
    del kwargs
    part = slice(0, None, 2) if split == "train" else slice(1, None, 2)
    examples = {"image": images[part], "label": labels[part],
                "coarse_label": np.array([fc100.FINE_TO_COARSE[l] for l in labels[part]]),
                "id": np.array([f"id{i}" for i in range(len(labels[part]))])}
    return tf.data.Dataset.from_tensor_slices(examples)

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    stores = fc100.read_tfds(data_dir=tmp_path)
  _check(stores)
