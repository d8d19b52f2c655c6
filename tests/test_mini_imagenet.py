"""mini-ImageNet readers: cache pickles, Ravi CSVs + JPEGs, folders, and the TFDS builder."""

import csv
import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tf_metanas import data
from tf_metanas.data import mini_imagenet

CLASSES = {"train": ["n01", "n02", "n03"], "val": ["n04", "n05"], "test": ["n06", "n07"]}
PER_CLASS = 4


def _image(wnid, i, size=100):
  """A JPEG-friendly image: a flat colour per class, brightness per instance."""
  color = np.array([int(wnid[1:]) * 30, 200 - i * 20, 90], np.uint8)
  return np.broadcast_to(color, (size, size, 3)).copy()


def _write_pickles(root, val_name="val"):
  for split, wnids in CLASSES.items():
    images = np.stack([_image(w, i, 84) for w in wnids for i in range(PER_CLASS)])
    class_dict = {w: list(range(k * PER_CLASS, (k + 1) * PER_CLASS)) for k, w in enumerate(wnids)}
    name = val_name if split == "val" else split
    with open(root / f"mini-imagenet-cache-{name}.pkl", "wb") as f:
      pickle.dump({"image_data": images, "class_dict": class_dict}, f)


def _write_csvs(root):
  (root / "images").mkdir(parents=True)
  for split, wnids in CLASSES.items():
    with open(root / f"{split}.csv", "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["filename", "label"])
      for w in wnids:
        for i in range(PER_CLASS):
          name = f"{w}{i:08d}.jpg"
          Image.fromarray(_image(w, i)).save(root / "images" / name, quality=95)
          writer.writerow([name, w])


def _write_folders(root):
  for split, wnids in CLASSES.items():
    for w in wnids:
      (root / split / w).mkdir(parents=True)
      for i in range(PER_CLASS):
        Image.fromarray(_image(w, i)).save(root / split / w / f"{i}.jpg", quality=95)


def _check(classes_by_split, exact):
  for split, wnids in CLASSES.items():
    assert [w for w, _ in classes_by_split[split]] == wnids
    for w, images in classes_by_split[split]:
      assert images.shape == (PER_CLASS, 84, 84, 3) and images.dtype == np.uint8
      expected = np.stack([_image(w, i, 84) for i in range(PER_CLASS)])
      tolerance = 0 if exact else 4
      assert np.abs(images.astype(int) - expected).max() <= tolerance


@pytest.mark.parametrize("val_name", ["val", "validation"])
def test_pickles(tmp_path, val_name):
  _write_pickles(tmp_path, val_name)
  _check(mini_imagenet.read_files(tmp_path), exact=True)


def test_ravi_csvs_and_jpegs(tmp_path):
  _write_csvs(tmp_path)
  _check(mini_imagenet.read_files(tmp_path), exact=False)


def test_class_folders(tmp_path):
  _write_folders(tmp_path)
  _check(mini_imagenet.read_files(tmp_path), exact=False)


def test_stores_have_disjoint_splits(tmp_path):
  _write_pickles(tmp_path)
  stores = mini_imagenet.to_stores(mini_imagenet.read_files(tmp_path))
  assert [stores[s].num_classes for s in data.SPLITS] == [3, 2, 2]
  assert stores["val"].class_names == ("n04", "n05")


class _Exploit:

  def __reduce__(self):
    return (os.system, ("echo pwned",))


def test_malicious_pickle_is_refused(tmp_path):
  _write_pickles(tmp_path)
  with open(tmp_path / "mini-imagenet-cache-test.pkl", "wb") as f:
    pickle.dump({"image_data": _Exploit(), "class_dict": {}}, f)
  with pytest.raises(data.CorruptFileError, match=r"mini-imagenet-cache-test.pkl.*posix.system"):
    mini_imagenet.read_files(tmp_path)


def test_truncated_pickle_names_its_path(tmp_path):
  _write_pickles(tmp_path)
  path = tmp_path / "mini-imagenet-cache-train.pkl"
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(data.CorruptFileError, match="mini-imagenet-cache-train.pkl"):
    mini_imagenet.read_files(tmp_path)


def test_csv_naming_a_missing_image_says_which(tmp_path):
  _write_csvs(tmp_path)
  os.remove(tmp_path / "images" / "n0100000001.jpg")
  with pytest.raises(data.DatasetNotFoundError, match=r"train.csv lists .*n0100000001.jpg"):
    mini_imagenet.read_files(tmp_path)


def test_corrupt_jpeg_names_its_path(tmp_path):
  _write_folders(tmp_path)
  (tmp_path / "val" / "n04" / "0.jpg").write_bytes(b"\xff\xd8broken")
  with pytest.raises(data.CorruptFileError, match=r"val/n04/0.jpg"):
    mini_imagenet.read_files(tmp_path)


def test_missing_data_names_every_layout(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    mini_imagenet.read_files(tmp_path)
  for expected in ("mini-imagenet-cache-{train,val,test}.pkl", "train.csv", "images/",
                   "train/<wnid>/", str(tmp_path)):
    assert expected in str(info.value)


def test_tfds_builder_prepares_from_manual_dir(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  _write_pickles(manual)
  classes = mini_imagenet.read_tfds(data_dir=tmp_path / "tfds", manual_dir=manual)
  # TFDS shuffles examples: restore instance order (brightness falls with the instance).
  classes = {split: [(w, images[np.argsort(-images[:, 0, 0, 1].astype(int))])
                     for w, images in found] for split, found in classes.items()}
  _check(classes, exact=True)
  again = mini_imagenet.read_tfds(data_dir=tmp_path / "tfds")  # prepared: no manual_dir needed
  assert [w for w, _ in again["test"]] == CLASSES["test"]


def test_tfds_builder_has_manual_download_instructions():
  from tf_metanas.data import mini_imagenet_tfds  # pylint: disable=g-import-not-at-top
  assert "manual_dir" in mini_imagenet_tfds.MiniImagenet.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert "mini_imagenet" in tfds.list_builders(with_community_datasets=False)
