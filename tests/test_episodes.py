"""Episode sampling: shapes, labels, disjointness, determinism, tf.data, bad specs."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tf_metanas import data
from tf_metanas.data import episodes as episodes_lib
from tf_metanas.data import synthetic


def _indexed_store(num_classes=12, per_class=10):
  """Every image holds its own index (two bytes) so episodes can be traced to images."""
  index = np.arange(num_classes * per_class)
  images = np.zeros((index.size, 2, 2, 1), np.uint8)
  images[:, 0, 0, 0], images[:, 0, 1, 0] = index // 256, index % 256
  return data.ImageStore(images, index // per_class, tuple(f"c{i}" for i in range(num_classes)),
                         ("g",) * num_classes)


def _image_ids(images):
  return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 1, 0]


def test_episode_shapes_and_labels():
  spec = data.EpisodeSpec(num_ways=5, num_shots=2, num_queries=3)
  episode = data.EpisodeSampler(_indexed_store(), spec, seed=1).episode(0)
  assert episode["support_images"].shape == (10, 2, 2, 1)
  assert episode["query_images"].shape == (15, 2, 2, 1)
  assert sorted(episode["support_labels"]) == sorted(list(range(5)) * 2)
  assert sorted(episode["query_labels"]) == sorted(list(range(5)) * 3)


def test_labels_are_consistent_within_a_task_and_shuffled_across_tasks():
  store, per_class = _indexed_store(), 10
  sampler = data.EpisodeSampler(store, data.EpisodeSpec(5, 2, 3), seed=0)
  mappings = set()
  for i in range(20):
    episode = sampler.episode(i)
    mapping = {}
    for part in ("support", "query"):
      classes = _image_ids(episode[f"{part}_images"]) // per_class
      for c, label in zip(classes, episode[f"{part}_labels"]):
        assert mapping.setdefault(label, c) == c
    assert len(set(mapping.values())) == 5
    mappings.add(tuple(sorted(mapping.items())))
  assert len(mappings) == 20


def test_support_and_query_never_share_an_image():
  sampler = data.EpisodeSampler(_indexed_store(), data.EpisodeSpec(5, 4, 6), seed=3)
  for i in range(50):
    episode = sampler.episode(i)
    support, query = _image_ids(episode["support_images"]), _image_ids(episode["query_images"])
    assert len(set(support)) == support.size and len(set(query)) == query.size
    assert not set(support) & set(query)


def test_same_seed_same_tasks_other_seed_other_tasks():
  store, spec = _indexed_store(), data.EpisodeSpec(5, 1, 2)
  a = data.EpisodeSampler(store, spec, seed=7).episode(4)
  b = data.EpisodeSampler(store, spec, seed=7).episode(4)
  c = data.EpisodeSampler(store, spec, seed=8).episode(4)
  for key in episodes_lib.EPISODE_KEYS:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(_image_ids(a["support_images"]), _image_ids(c["support_images"]))


def test_every_class_and_image_gets_used():
  store = _indexed_store(num_classes=6, per_class=5)
  sampler = data.EpisodeSampler(store, data.EpisodeSpec(3, 1, 1), seed=0)
  seen = set()
  for i in range(300):
    episode = sampler.episode(i)
    seen |= set(_image_ids(episode["support_images"])) | set(_image_ids(episode["query_images"]))
  assert seen == set(range(30))


def test_tf_dataset_matches_numpy_episodes_and_resumes():
  store, spec = _indexed_store(), data.EpisodeSpec(4, 2, 1, inner_batch_size=3, inner_steps=4)
  sampler = data.EpisodeSampler(store, spec, seed=5)
  batches = list(sampler.dataset(meta_batch_size=3, num_batches=4).as_numpy_iterator())
  assert len(batches) == 4
  assert batches[0]["support_images"].shape == (3, 8, 2, 2, 1)
  assert batches[0]["support_batches"].shape == (3, 4, 3)
  for b, batch in enumerate(batches):
    for t in range(3):
      expected = sampler.episode(b * 3 + t)
      for key in episodes_lib.EPISODE_KEYS:
        np.testing.assert_array_equal(batch[key][t], expected[key])
  resumed = next(iter(sampler.dataset(meta_batch_size=3, start_batch=2).as_numpy_iterator()))
  for key in episodes_lib.EPISODE_KEYS:
    np.testing.assert_array_equal(resumed[key], batches[2][key])


def test_tf_dataset_has_static_shapes():
  sampler = data.EpisodeSampler(_indexed_store(), data.EpisodeSpec(5, 1, 2), seed=0)
  spec = sampler.dataset(meta_batch_size=2).element_spec
  assert spec["support_images"].shape == tf.TensorShape([2, 5, 2, 2, 1])
  assert spec["query_labels"].shape == tf.TensorShape([2, 10])


def test_support_batches_are_passes_without_replacement():
  rng = np.random.default_rng(0)
  batches = episodes_lib.support_batches(rng, support_size=75, batch_size=20, steps=8)
  flat = batches.ravel()
  assert batches.shape == (8, 20)
  for start in range(0, 150, 75):
    assert sorted(flat[start:start + 75]) == list(range(75))
  assert len(set(flat[150:])) == 10


def test_inner_batches_default_to_the_whole_support_set():
  sampler = data.EpisodeSampler(_indexed_store(), data.EpisodeSpec(5, 3, 1, inner_steps=2))
  batches = sampler.episode(0)["support_batches"]
  assert batches.shape == (2, 15)
  assert all(sorted(row) == list(range(15)) for row in batches)


def test_meta_train_and_meta_test_shots_can_differ(tiny_splits):
  train = data.EpisodeSampler(tiny_splits["train"], data.EpisodeSpec(5, 15, 2), name="train")
  test = data.EpisodeSampler(tiny_splits["test"], data.EpisodeSpec(5, 1, 15), name="test")
  assert train.episode(0)["support_images"].shape[0] == 75
  assert test.episode(0)["support_images"].shape[0] == 5


def test_more_ways_than_classes_fails_with_the_numbers():
  with pytest.raises(data.EpisodeSpecError, match=r"20-way .* 20 classes, but val has only 12"):
    data.EpisodeSampler(_indexed_store(), data.EpisodeSpec(20, 1, 1), name="val")


def test_too_few_images_per_class_fails_with_the_numbers():
  with pytest.raises(data.EpisodeSpecError,
                     match=r"5 shots \+ 15 queries = 20 images per class, but class 'c0' .* only 10"):
    data.EpisodeSampler(_indexed_store(), data.EpisodeSpec(5, 5, 15))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_ways=0), "num_ways must be >= 1"),
    (dict(num_shots=0), "num_shots must be >= 1"),
    (dict(num_queries=-1), "num_queries"),
    (dict(num_ways=5, num_shots=1, inner_batch_size=20), r"inner_batch_size 20 must be in 1..5"),
])
def test_impossible_specs_fail_at_construction(kwargs, message):
  with pytest.raises(data.EpisodeSpecError, match=message):
    data.EpisodeSpec(**kwargs)


def test_random_rotations_turn_each_class_of_a_task_as_a_whole():
  """The MAML protocol: every class of a task rotated by one random multiple of 90 degrees
  (support and query alike), so a task never holds two rotations of one character."""
  store = synthetic.prototype_store(num_classes=8, per_class=10, size=8)
  rotating = dataclasses.replace(store, random_rotations=True)
  spec = episodes_lib.EpisodeSpec(4, 2, 3)
  sampler = episodes_lib.EpisodeSampler(rotating, spec, seed=5)

  def turns(image):
    """The quarter turns k (and source classes) with rot90(store image, k) == image."""
    return {(k, int(store.labels[i])) for k in range(4) for i in np.flatnonzero(
        (store.images == np.rot90(image, -k, (0, 1))).all(axis=(1, 2, 3)))}

  used = set()
  for index in range(10):
    episode = sampler.episode(index)
    per_class = {}
    for key in ("support", "query"):
      for image, label in zip(episode[f"{key}_images"], episode[f"{key}_labels"]):
        found = turns(image)
        per_class.setdefault(int(label), []).append(found)
    for label, found in per_class.items():
      common = set.intersection(*found)  # one turn of one source class fits all its images
      assert common, (index, label)
      used |= {k for k, _ in common}
    sources = [{c for _, c in set.intersection(*found)} for found in per_class.values()]
    assert all(len(s) == 1 for s in sources) and len(set.union(*sources)) == 4
  assert used == {0, 1, 2, 3}
  with pytest.raises(ValueError, match="square images"):
    dataclasses.replace(synthetic.prototype_store(num_classes=2, per_class=2, size=8),
                        images=np.zeros((4, 8, 6, 1), np.uint8), random_rotations=True)
