"""ImageStore: construction, class indexing, rotations, the .npz cache, split checks."""

import os
import stat
import tempfile
import time

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


def _truncated(raw):
  return raw[:len(raw) // 2]


def _bit_flipped(raw):
  flipped = bytearray(raw)
  flipped[len(raw) // 2] ^= 0x01
  return bytes(flipped)


@pytest.mark.parametrize("damage", [_truncated, lambda raw: b"", _bit_flipped],
                         ids=["truncated", "empty", "bit_flipped"])
def test_damaged_cache_file_raises_corrupt_file_error_naming_it(tmp_path, damage):
  path = tmp_path / "s.npz"
  _store().save(path)
  path.write_bytes(damage(path.read_bytes()))
  with pytest.raises(data.CorruptFileError, match="s.npz") as info:
    data.ImageStore.load(path)
  assert info.value.path == path


def test_a_readable_npz_that_does_not_match_its_checksum_is_corrupt(tmp_path):
  path, other = tmp_path / "s.npz", tmp_path / "other.npz"
  _store().save(path)
  assert store_lib.checksum_path(path).read_text().split() == [store_lib._sha256(path),
                                                               "s.npz"]
  _store().select_classes([1]).save(other)
  os.replace(other, path)  # a complete npz, but not the one the checksum was written for
  with pytest.raises(data.CorruptFileError, match=r"s\.npz is corrupt.*s\.npz\.sha256"):
    data.ImageStore.load(path)


def test_a_store_without_checksum_file_still_loads(tmp_path):
  path = tmp_path / "s.npz"
  _store().save(path)
  store_lib.checksum_path(path).unlink()  # as written by versions before checksums
  assert data.ImageStore.load(path).class_names == ("a", "b")


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_cache_files_are_readable_by_the_group(tmp_path, umask):
  path = tmp_path / "s.npz"
  old_umask = os.umask(umask)
  try:
    _store().save(path)
  finally:
    os.umask(old_umask)
  for written in (path, store_lib.checksum_path(path)):
    mode = stat.S_IMODE(written.stat().st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IRUSR, f"{written}: {oct(mode)}"


def _leftover(directory, age_seconds):
  """A temporary file as a `save` killed mid-write leaves it: half an npz, from mkstemp."""
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
  with os.fdopen(fd, "wb") as f:
    f.write(_truncated((directory / "train.npz").read_bytes()))
  past = time.time() - age_seconds
  os.utime(tmp, (past, past))
  return tmp


def test_stale_temporary_files_are_removed_when_splits_are_loaded_or_saved(tmp_path,
                                                                           tiny_splits):
  store_lib.save_splits(tiny_splits, tmp_path)
  stale, fresh = _leftover(tmp_path, 120), _leftover(tmp_path, 0)
  assert set(store_lib.load_splits(tmp_path)) == set(data.SPLITS)
  assert not os.path.exists(stale)
  assert os.path.exists(fresh)  # maybe still being written
  stale = _leftover(tmp_path, 120)
  store_lib.save_splits(tiny_splits, tmp_path)
  assert not os.path.exists(stale) and os.path.exists(fresh)


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
