"""Omniglot readers on fixtures written in the real layout: PNG folders, zips, TFDS."""

import shutil
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tf_metanas import data
from tf_metanas.data import omniglot


def _png(path, seed):
  """A 105x105 1-bit black-on-white PNG like Omniglot's, with a class-dependent stroke."""
  image = np.ones((105, 105), bool)
  rng = np.random.default_rng(seed)
  row = rng.integers(10, 90)
  image[row:row + 12, 10:95] = False
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).convert("1").save(path)


def write_subset(root, name, alphabets, characters=3, drawers=4, first_drawer=1):
  """Writes <root>/<name>/<Alphabet>/characterNN/NNNN_DD.png."""
  for a, alphabet in enumerate(alphabets):
    for c in range(1, characters + 1):
      for d in range(first_drawer, first_drawer + drawers):
        _png(root / name / alphabet / f"character{c:02d}" / f"{100 * a + c:04d}_{d:02d}.png",
             seed=1000 * a + c)


def zip_folder(folder):
  with zipfile.ZipFile(folder.with_suffix(".zip"), "w") as archive:
    for path in sorted(folder.rglob("*")):
      archive.write(path, path.relative_to(folder.parent).as_posix())
  shutil.rmtree(folder)


@pytest.fixture
def omniglot_dir(tmp_path):
  root = tmp_path / "omniglot"
  write_subset(root, "images_background", [f"Back_{i}" for i in range(7)])
  write_subset(root, "images_evaluation", ["Eval_0", "Eval_1"])
  return root


def test_reads_folders_at_28px(omniglot_dir):
  characters = omniglot.read_files(omniglot_dir)
  assert len(characters) == 9 * 3
  images = characters[("background", "Back_0", "character01")]
  assert images.shape == (4, 28, 28, 1) and images.dtype == np.uint8
  assert images.max() == 255 and images.min() < 64  # white background, dark stroke


def test_zips_read_like_folders(omniglot_dir, tmp_path):
  folders = omniglot.read_files(omniglot_dir)
  zip_folder(omniglot_dir / "images_background")
  zip_folder(omniglot_dir / "images_evaluation")
  assert {p.name for p in omniglot_dir.iterdir()} == {"images_background.zip",
                                                       "images_evaluation.zip"}
  zipped = omniglot.read_files(omniglot_dir)
  assert zipped.keys() == folders.keys()
  for key in folders:
    np.testing.assert_array_equal(zipped[key], folders[key])


def test_small_subsets_merge_and_deduplicate(tmp_path):
  root = tmp_path / "small"
  write_subset(root, "images_background_small1", ["Greek", "Korean"], drawers=4)
  write_subset(root, "images_background_small2", ["Greek", "Latin"], drawers=4)
  write_subset(root, "images_background_small2", ["Greek"], drawers=2, first_drawer=5)
  zip_folder(root / "images_background_small1")
  characters = omniglot.read_files(root)
  assert sorted({a for _, a, _ in characters}) == ["Greek", "Korean", "Latin"]
  assert characters[("background", "Greek", "character01")].shape[0] == 6
  assert characters[("background", "Korean", "character01")].shape[0] == 4


def test_vinyals_split_cuts_characters_in_proportion(omniglot_dir):
  splits = omniglot.split(omniglot.read_files(omniglot_dir), "vinyals")
  sizes = [splits[s].num_classes for s in data.SPLITS]
  assert sizes == [17, 3, 7]  # 27 characters cut 1028 : 172 : 423
  assert splits["train"].class_names[0].count("/") == 1
  again = omniglot.split(omniglot.read_files(omniglot_dir), "vinyals")
  assert all(again[s].class_names == splits[s].class_names for s in data.SPLITS)


@pytest.mark.parametrize("name, sizes", [("vinyals", [1028, 172, 423]),
                                         ("maml", [1100, 100, 423]),
                                         ("reptile", [1200, 0, 423])])
def test_shuffled_splits_have_the_paper_sizes_on_full_omniglot(name, sizes):
  characters = {("background", f"A{i // 20}", f"character{i % 20:02d}"):
                np.zeros((1, 2, 2, 1), np.uint8) for i in range(1623)}
  splits = omniglot.split(characters, name)
  assert [splits[s].num_classes for s in data.SPLITS] == sizes
  vinyals = omniglot.split(characters, "vinyals")  # one shuffle: the same test characters
  assert splits["test"].class_names == vinyals["test"].class_names


def test_lake_split_uses_background_for_training_and_evaluation_for_testing(omniglot_dir):
  splits = omniglot.split(omniglot.read_files(omniglot_dir), "lake", omniglot_dir)
  assert set(splits["test"].groups) == {"Eval_0", "Eval_1"}
  assert set(splits["val"].groups) == {"Back_6"}
  assert set(splits["train"].groups) == {f"Back_{i}" for i in range(6)}


def test_lake_split_without_evaluation_names_what_is_missing(omniglot_dir):
  shutil.rmtree(omniglot_dir / "images_evaluation")
  with pytest.raises(data.DatasetNotFoundError, match=r"images_evaluation\[\.zip\]"):
    omniglot.split(omniglot.read_files(omniglot_dir), "lake", omniglot_dir)


def test_missing_data_names_the_expected_files(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    omniglot.read_files(tmp_path / "nowhere")
  message = str(info.value)
  for expected in ("images_background", "images_evaluation", "characterNN/*.png",
                   "brendenlake/omniglot", str(tmp_path / "nowhere"), "--download"):
    assert expected in message


def test_corrupt_png_is_reported_with_its_path(omniglot_dir):
  bad = omniglot_dir / "images_background" / "Back_0" / "character01" / "0001_01.png"
  bad.write_bytes(b"garbage")
  with pytest.raises(data.CorruptFileError, match="0001_01.png"):
    omniglot.read_files(omniglot_dir)


def test_corrupt_zip_is_reported_with_its_path(tmp_path):
  (tmp_path / "images_background.zip").write_bytes(b"not a zip")
  with pytest.raises(data.CorruptFileError, match="images_background.zip"):
    omniglot.read_files(tmp_path)


def _flip_a_byte_of_member(zip_path, member):
  """Flips one bit in the stored bytes of `member`, as a bad disk or download would."""
  with zipfile.ZipFile(zip_path) as archive:
    info = archive.getinfo(member)
  raw = bytearray(zip_path.read_bytes())
  header = info.header_offset  # local header: 30 bytes, then the name and the extra field
  name_length, extra_length = (int.from_bytes(raw[header + i:header + i + 2], "little")
                               for i in (26, 28))
  start = header + 30 + name_length + extra_length
  raw[start + info.compress_size // 2] ^= 0x01
  zip_path.write_bytes(bytes(raw))


def test_bit_flipped_zip_member_names_the_zip_the_member_and_what_to_do(omniglot_dir):
  zip_folder(omniglot_dir / "images_background")
  zip_path = omniglot_dir / "images_background.zip"
  member = "images_background/Back_2/character03/0203_02.png"
  _flip_a_byte_of_member(zip_path, member)
  with pytest.raises(data.CorruptFileError) as info:
    omniglot.read_files(omniglot_dir)
  message = str(info.value)
  assert str(zip_path) in message and member in message and "CRC" in message
  assert "Download images_background.zip again" in message and "extract" in message
  assert info.value.path == zip_path


def test_missing_data_suggests_only_commands_the_tools_accept(tmp_path):
  from tests import test_prepare_data  # pylint: disable=g-import-not-at-top
  with pytest.raises(data.DatasetNotFoundError) as info:
    omniglot.read_files(tmp_path / "nowhere")
  message = str(info.value)
  assert "--gin_param='load_splits.source = \"tfds\"'" in message
  assert "--gin_param='load_splits.download = True'" in message
  assert "python tools/prepare_data.py --dataset=omniglot --source=tfds --download" in message
  test_prepare_data.check_suggested_commands(message)


def test_unprepared_tfds_suggests_only_commands_the_tools_accept(tmp_path):
  from tests import test_prepare_data  # pylint: disable=g-import-not-at-top
  with pytest.raises(data.DatasetNotFoundError) as info:
    omniglot.read_tfds(data_dir=tmp_path / "tfds")
  message = str(info.value)
  assert "--gin_param='load_splits.download = True'" in message and "--tfds_dir" in message
  test_prepare_data.check_suggested_commands(message)


def test_lake_split_without_evaluation_suggests_real_commands(omniglot_dir):
  from tests import test_prepare_data  # pylint: disable=g-import-not-at-top
  shutil.rmtree(omniglot_dir / "images_evaluation")
  with pytest.raises(data.DatasetNotFoundError) as info:
    omniglot.split(omniglot.read_files(omniglot_dir), "lake", omniglot_dir)
  assert "--omniglot_split=vinyals" in str(info.value)
  test_prepare_data.check_suggested_commands(str(info.value))


def _mock_omniglot(alphabets=4, characters=5, drawers=6):
  """A TFDS as_dataset replacement yielding class-structured Omniglot examples."""

  def as_dataset(self, split, **kwargs):
    del kwargs
    offset = 0 if split == "train" else alphabets

    def examples():
      for a in range(alphabets):
        for c in range(characters):
          for d in range(drawers):
            image = np.full((105, 105, 3), 255, np.uint8)
            image[10 * c:10 * c + 8] = 10 * d
            yield {"image": image, "alphabet": a + offset, "alphabet_char_id": c,
                   "label": (a + offset) * characters + c}

    return tf.data.Dataset.from_generator(
        examples, output_signature=self.info.features.get_tensor_spec())

  return as_dataset


def test_tfds_reader_groups_examples_into_characters(tmp_path):
  with tfds.testing.mock_data(as_dataset_fn=_mock_omniglot()):
    characters = omniglot.read_tfds(data_dir=tmp_path)
  assert len(characters) == 2 * 4 * 5
  assert {s for s, _, _ in characters} == {"background", "evaluation"}
  images = next(iter(characters.values()))
  assert images.shape == (6, 28, 28, 1)
  splits = omniglot.split(characters, "lake")
  assert splits["test"].num_classes == 20 and splits["test"].images_per_class.min() == 6


def test_tfds_reader_without_prepared_data_says_how_to_get_it(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="download"):
    omniglot.read_tfds(data_dir=tmp_path / "tfds")


def test_lake_split_holds_out_five_of_thirty_background_alphabets():
  keys = [("background", f"B{a:02d}", "character01") for a in range(30)]
  keys += [("evaluation", f"E{a:02d}", "character01") for a in range(20)]
  parts = omniglot._lake(keys, "")
  assert [len(parts[s]) for s in data.SPLITS] == [25, 5, 20]
