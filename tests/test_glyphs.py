"""The embedded glyph dataset: classes, alphabets, determinism, splits."""

import collections

import numpy as np
import pytest

from tf_metanas import data
from tf_metanas.data import glyphs


@pytest.fixture(scope="module")
def classes():
  return glyphs.glyph_classes()


def test_at_least_1500_classes_in_at_least_10_alphabets(classes):
  per_alphabet = collections.Counter(alphabet for alphabet, _ in classes)
  assert len(classes) >= 1500
  assert len(per_alphabet) >= 10
  assert all(per_alphabet[a] > 0 for a, _ in glyphs.ALPHABETS)


def test_look_alikes_are_merged_into_one_class(classes):
  members = {chars: alphabet for alphabet, chars in classes}
  latin_a = next(chars for chars in members if "A" in chars)
  assert "\u0391" in latin_a and "\u0410" in latin_a  # Greek Alpha, Cyrillic A
  assert members[latin_a] == "Latin"
  all_chars = [c for chars in members for c in chars]
  assert len(all_chars) == len(set(all_chars))
  assert "B" not in latin_a and "\u0394" not in latin_a  # distinct letters stay apart


def test_every_split_gets_whole_alphabets(classes):
  split_alphabets = collections.defaultdict(set)
  for alphabet, _ in classes:
    split_alphabets[glyphs.split_of(alphabet)].add(alphabet)
  assert set(split_alphabets) == set(data.SPLITS)
  assert not split_alphabets["train"] & split_alphabets["test"]
  assert not split_alphabets["val"] & (split_alphabets["train"] | split_alphabets["test"])


def test_same_seed_is_byte_identical_other_seed_differs(classes):
  chars = classes[3][1]
  a = glyphs.render_class(chars, seed=0, index=3)
  b = glyphs.render_class(chars, seed=0, index=3)
  c = glyphs.render_class(chars, seed=1, index=3)
  assert a.shape == (20, 28, 28, 1) and a.dtype == np.uint8
  assert a.tobytes() == b.tobytes()
  assert a.tobytes() != c.tobytes()


def test_instances_vary_and_look_like_omniglot(classes):
  images = glyphs.render_class(classes[0][1], seed=0, index=0).astype(np.float32)
  assert len({im.tobytes() for im in images}) == 20
  corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1], 0]
  assert (corners == 255).all()  # white background
  assert (images.min(axis=(1, 2, 3)) < 100).all()  # dark strokes in every image
  ink = (images < 128).mean(axis=(1, 2, 3))
  assert ((ink > 0.02) & (ink < 0.6)).all()


@pytest.mark.slow
def test_full_build_is_deterministic_and_split_by_alphabet(tmp_path):
  first = data.load_dataset("glyphs", cache_dir=tmp_path / "a")
  second = glyphs.build(seed=0)
  for split in data.SPLITS:
    assert first[split].images.tobytes() == second[split].images.tobytes()
    assert first[split].class_names == second[split].class_names
  assert sum(first[s].num_classes for s in data.SPLITS) >= 1500
  groups = [set(first[s].groups) for s in data.SPLITS]
  assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
  assert (tmp_path / "a" / "glyphs" / f"v{glyphs.VERSION}-seed0" / "train.npz").exists()
