"""load_dataset: caching, sources, rotations and the errors a user sees first."""

import logging

import numpy as np
import pytest

from tf_metanas import data
from tf_metanas.data import glyphs
from tf_metanas.data import registry
from tf_metanas.data import synthetic
from tests import test_omniglot
from tests import test_prepare_data


@pytest.fixture
def omniglot_dir(tmp_path):
  root = tmp_path / "raw"
  test_omniglot.write_subset(root, "images_background", ["A0", "A1", "A2"], characters=4)
  return root


def test_files_are_read_once_then_cached(omniglot_dir, tmp_path, monkeypatch, caplog):
  caplog.set_level("INFO")
  first = data.load_dataset("omniglot", data_dir=omniglot_dir, cache_dir=tmp_path / "c")
  assert list((tmp_path / "c" / "omniglot").glob("*/train.npz"))
  assert any(r.getMessage().startswith(f"Wrote omniglot to the cache {tmp_path / 'c'}")
             for r in caplog.records)

  def fail(*args):
    raise AssertionError(f"read again: {args}")

  monkeypatch.setattr(registry.omniglot, "read_files", fail)
  second = data.load_dataset("omniglot", data_dir=omniglot_dir, cache_dir=tmp_path / "c")
  assert caplog.records[-1].getMessage().startswith(
      f"Loaded omniglot from the cache {tmp_path / 'c'}")
  for split in data.SPLITS:
    assert second[split].class_names == first[split].class_names
    assert second[split].images.tobytes() == first[split].images.tobytes()


def test_new_files_in_data_dir_invalidate_the_cache(omniglot_dir, tmp_path):
  before = data.load_dataset("omniglot", data_dir=omniglot_dir)
  test_omniglot.write_subset(omniglot_dir, "images_evaluation", ["E0"], characters=4)
  after = data.load_dataset("omniglot", data_dir=omniglot_dir)
  total = lambda splits: sum(s.num_classes for s in splits.values())
  assert (total(before), total(after)) == (12, 16)


def test_rotations_quadruple_every_split(omniglot_dir):
  plain = data.load_dataset("omniglot", data_dir=omniglot_dir)
  rotated = data.load_dataset("omniglot", data_dir=omniglot_dir, rotations=True)
  for split in data.SPLITS:
    assert rotated[split].num_classes == 4 * plain[split].num_classes


def test_glyphs_are_cached_under_their_seed(tmp_path, monkeypatch):
  calls = []

  def tiny_build(seed, version):
    assert version == glyphs.VERSION
    calls.append(seed)
    return synthetic.prototype_splits(seed=seed)

  monkeypatch.setattr(glyphs, "build", tiny_build)
  data.load_dataset("glyphs", seed=3)
  data.load_dataset("glyphs", seed=3)
  data.load_dataset("glyphs", seed=4)
  data.load_dataset("glyphs", seed=3, refresh=True)
  assert calls == [3, 4, 3]


def test_default_data_dir_follows_the_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("TF_METANAS_DATA", str(tmp_path / "mydata"))
  assert registry.default_data_dir("fc100") == tmp_path / "mydata" / "fc100"


@pytest.mark.parametrize("name, expected", [
    ("omniglot", "images_background"),
    ("mini_imagenet", "mini-imagenet-cache-{train,val,test}.pkl"),
    ("fc100", "FC100_train.pickle"),
])
def test_missing_dataset_names_files_place_and_tfds(name, expected, tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.load_dataset(name, tfds_dir=tmp_path / "tfds")
  message = str(info.value)
  assert expected in message
  assert str(registry.default_data_dir(name)) in message
  assert "TFDS" in message
  test_prepare_data.check_suggested_commands(message)


def test_unknown_names_are_rejected():
  with pytest.raises(ValueError, match="unknown dataset 'cifar'.*glyphs"):
    data.load_dataset("cifar")
  with pytest.raises(ValueError, match="unknown source 'web'"):
    data.load_dataset("fc100", source="web")


def test_rotation_protocols_of_maml_and_reptile(omniglot_dir):
  plain = data.load_dataset("omniglot", data_dir=omniglot_dir, omniglot_split="maml")
  reptile = data.load_dataset("omniglot", data_dir=omniglot_dir, omniglot_split="maml",
                              rotations="train_classes")
  assert reptile["train"].num_classes == 4 * plain["train"].num_classes
  for split in ("val", "test"):  # REPTILE tests on unrotated characters
    assert reptile[split].class_names == plain[split].class_names
  maml = data.load_dataset("omniglot", data_dir=omniglot_dir, omniglot_split="maml",
                           rotations="per_task")
  for split in data.SPLITS:  # same classes, rotated inside each task
    assert maml[split].class_names == plain[split].class_names
    assert maml[split].random_rotations
  no_val = data.load_dataset("omniglot", data_dir=omniglot_dir, omniglot_split="reptile",
                             rotations="train_classes")
  assert no_val["val"].num_classes == 0 and no_val["val"].image_shape == (28, 28, 1)
  cached = data.load_dataset("omniglot", data_dir=omniglot_dir, omniglot_split="reptile")
  assert cached["val"].num_classes == 0  # the empty split survives the cache
  assert no_val["train"].num_classes == 4 * cached["train"].num_classes
  with pytest.raises(ValueError, match=r"unknown rotations 'some'.*load_splits.rotations"):
    data.load_dataset("omniglot", data_dir=omniglot_dir, rotations="some")


def _cache_file(cache_dir, name, split):
  (path,) = (cache_dir / name).glob(f"*/{split}.npz")
  return path


def _flip_a_bit(path):
  damaged = bytearray(path.read_bytes())
  damaged[len(damaged) // 2] ^= 0x01
  path.write_bytes(bytes(damaged))


def test_corrupt_cache_is_rebuilt_from_the_raw_files_with_a_warning(omniglot_dir, tmp_path,
                                                                   caplog):
  first = data.load_dataset("omniglot", data_dir=omniglot_dir, cache_dir=tmp_path / "c")
  train = _cache_file(tmp_path / "c", "omniglot", "train")
  train.write_bytes(train.read_bytes()[:100])  # truncated
  with caplog.at_level(logging.WARNING):
    again = data.load_dataset("omniglot", data_dir=omniglot_dir, cache_dir=tmp_path / "c")
  assert any(r.levelno == logging.WARNING and str(train) in r.getMessage()
             for r in caplog.records), caplog.text
  assert again["train"].class_names == first["train"].class_names
  assert data.ImageStore.load(train).images.tobytes() == first["train"].images.tobytes()


def test_corrupt_cache_without_raw_data_names_the_file_and_the_rebuild_command(omniglot_dir,
                                                                              tmp_path):
  data.load_dataset("omniglot", data_dir=omniglot_dir, cache_dir=tmp_path / "c")
  val = _cache_file(tmp_path / "c", "omniglot", "val")
  _flip_a_bit(val)
  for png in omniglot_dir.rglob("*.png"):  # the images are gone, their folders stay
    png.unlink()
  with pytest.raises(data.CorruptFileError) as info:
    data.load_dataset("omniglot", data_dir=omniglot_dir, cache_dir=tmp_path / "c")
  message = str(info.value)
  assert info.value.path == val and f"the cached file {val} is corrupt" in message
  commands = test_prepare_data.check_suggested_commands(message)
  assert ["python", "tools/prepare_data.py", "--dataset=omniglot", f"--data_dir={omniglot_dir}",
          "--source=auto", "--omniglot_split=vinyals", f"--cache_dir={tmp_path / 'c'}",
          "--refresh"] in commands


def test_corrupt_glyph_cache_is_rendered_again(tmp_path, monkeypatch):
  calls = []

  def tiny_build(seed, version):
    assert version == glyphs.VERSION
    calls.append(seed)
    return synthetic.prototype_splits(seed=seed)

  monkeypatch.setattr(glyphs, "build", tiny_build)
  data.load_dataset("glyphs", cache_dir=tmp_path / "c")
  (tmp_path / "c" / "glyphs").joinpath(f"v{glyphs.VERSION}-seed0", "test.npz").write_bytes(b"")
  assert data.load_dataset("glyphs", cache_dir=tmp_path / "c")["test"].num_classes == 5
  assert calls == [0, 0]


def test_val_classes_moves_the_rest_of_meta_validation_to_meta_test(omniglot_dir):
  full = synthetic.prototype_splits(num_classes=(6, 5, 4), per_class=3, size=8)
  cut = registry.move_val_classes(full, 3)
  assert cut["train"] is full["train"]
  assert cut["val"].class_names == full["val"].class_names[:3]
  assert cut["test"].class_names == full["test"].class_names + full["val"].class_names[3:]
  np.testing.assert_array_equal(cut["test"].images[cut["test"].class_indices[-1]],
                                full["val"].images[full["val"].class_indices[4]])
  loaded = registry.load_dataset("omniglot", data_dir=omniglot_dir, val_classes=1)
  assert loaded["val"].num_classes == 1
  with pytest.raises(data.EpisodeSpecError, match="load_splits.val_classes = 99"):
    registry.load_dataset("omniglot", data_dir=omniglot_dir, val_classes=99)


def test_each_glyphs_version_has_its_own_cache_and_build(tmp_path, monkeypatch):
  calls = []

  def tiny_build(seed, version):
    calls.append(version)
    return synthetic.prototype_splits(seed=version)

  monkeypatch.setattr(glyphs, "build", tiny_build)
  v1 = data.load_dataset("glyphs", cache_dir=tmp_path / "c", glyphs_version=1)
  v2 = data.load_dataset("glyphs", cache_dir=tmp_path / "c")
  assert data.load_dataset("glyphs", cache_dir=tmp_path / "c", glyphs_version=1)[
      "train"].images.tobytes() == v1["train"].images.tobytes()
  assert calls == [1, 2]
  assert v1["train"].images.tobytes() != v2["train"].images.tobytes()
  assert sorted(p.name for p in (tmp_path / "c" / "glyphs").iterdir()) == ["v1-seed0",
                                                                           "v2-seed0"]


def test_the_corrupt_glyph_cache_command_rebuilds_the_same_version(tmp_path, monkeypatch):
  monkeypatch.setattr(glyphs, "build", lambda seed, version: synthetic.prototype_splits())
  data.load_dataset("glyphs", cache_dir=tmp_path / "c", glyphs_version=1)
  (tmp_path / "c" / "glyphs" / "v1-seed0" / "val.npz").write_bytes(b"")

  def missing(seed, version):
    raise data.DatasetNotFoundError("no fonts")

  monkeypatch.setattr(glyphs, "build", missing)
  with pytest.raises(data.CorruptFileError) as info:
    data.load_dataset("glyphs", cache_dir=tmp_path / "c", glyphs_version=1)
  assert ["python", "tools/prepare_data.py", "--dataset=glyphs", "--seed=0",
          "--glyphs_version=1", f"--cache_dir={tmp_path / 'c'}", "--refresh"] in (
              test_prepare_data.check_suggested_commands(str(info.value)))


@pytest.mark.parametrize("version", [3, "1", True])
def test_a_bad_glyphs_version_names_the_binding_and_the_versions(version):
  with pytest.raises(ValueError, match=r"load_splits\.glyphs_version = .*versions 1, 2"):
    data.load_dataset("glyphs", glyphs_version=version)
