"""ImageStore: construction, class indexing, rotations, the .npz cache, split checks."""

import numpy as np
import pytest

from tf_metanas import data
from tf_metanas.data import store as store_lib
from tf_metanas.data import synthetic


def _store():
  images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4, 1)
  return data.ImageStore(images, np.array([1, 0, 1, 0, 1]), ("a", "b"), ("g1", "g2"))


def test_class_indices_group_images_by_label():
  store = _store()
  assert [list(i) for i in store.class_indices] == [[1, 3], [0, 2, 4]]
  assert list(store.images_per_class) == [2, 3]
  assert store.groups == ("g1", "g2")


def test_select_classes_relabels_in_given_order():
  store = _store().select_classes([1])
  assert store.class_names == ("b",)
  assert list(store.labels) == [0, 0, 0]


def test_rotations_add_three_rotated_classes_per_class():
  store = synthetic.prototype_store(num_classes=3, per_class=4)
  rotated = store.with_rotations()
  assert rotated.num_classes == 4 * store.num_classes
  assert rotated.images.shape[0] == 4 * store.images.shape[0]
  name = store.class_names[1]
  original = store.images[store.class_indices[1]]
  for k, degrees in enumerate((0, 90, 180, 270)):
    rotated_name = name if degrees == 0 else f"{name}/rot{degrees}"
    c = rotated.class_names.index(rotated_name)
    np.testing.assert_array_equal(rotated.images[rotated.class_indices[c]],
                                  np.rot90(original, k=k, axes=(1, 2)))
    assert rotated.class_groups[c] == store.class_groups[1]


def test_save_and_load_round_trip(tmp_path):
  store = _store()
  store.save(tmp_path / "s.npz")
  loaded = data.ImageStore.load(tmp_path / "s.npz")
  np.testing.assert_array_equal(loaded.images, store.images)
  np.testing.assert_array_equal(loaded.labels, store.labels)
  assert loaded.class_names == store.class_names and loaded.class_groups == store.class_groups
  assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_cache_file_names_its_path(tmp_path):
  path = tmp_path / "bad.npz"
  path.write_bytes(b"not a zip")
  with pytest.raises(data.CorruptFileError, match="bad.npz"):
    data.ImageStore.load(path)


def test_load_splits_needs_every_split(tmp_path):
  store_lib.save_splits({"train": _store(), "val": _store()}, tmp_path)
  assert store_lib.load_splits(tmp_path) is None
  store_lib.save_splits({"test": _store()}, tmp_path)
  assert set(store_lib.load_splits(tmp_path)) == set(data.SPLITS)


def test_overlapping_splits_are_refused(tiny_splits):
  store_lib.check_disjoint(tiny_splits)
  with pytest.raises(data.SplitOverlapError, match="'train'.*'test'"):
    store_lib.check_disjoint({"train": tiny_splits["train"], "test": tiny_splits["train"]})


def test_invalid_arrays_are_rejected():
  with pytest.raises(ValueError, match="uint8"):
    data.ImageStore(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2), ("a",), ("g",))
  with pytest.raises(ValueError, match="out of range"):
    data.ImageStore(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1]), ("a",), ("g",))


def test_prototype_fixture_is_class_structured(tiny_store):
  """Instances are closer to their own class mean than to any other (the fixture's point)."""
  images = tiny_store.images.reshape(tiny_store.images.shape[0], -1).astype(np.float64)
  means = np.stack([images[i].mean(0) for i in tiny_store.class_indices])
  nearest = np.argmin(((images[:, None] - means[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(nearest, tiny_store.labels)
