"""Shared fixtures: temporary cache roots, a clear gin config per test, tiny class-structured
datasets, two logical CPU devices."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tf_metanas import distribute  # pylint: disable=g-import-not-at-top
from tf_metanas.data import synthetic  # pylint: disable=g-import-not-at-top

# Two logical CPU devices for MirroredStrategy tests (before TensorFlow initializes them;
# single-device code places everything on the first).
distribute.configure_cpu_devices(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
  """Every test gets its own cache and data roots; nothing touches the user's home."""
  monkeypatch.setenv("TF_METANAS_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("TF_METANAS_DATA", str(tmp_path / "data_root"))


@pytest.fixture(autouse=True)
def _clear_gin():
  """No test sees another's gin bindings (a module fixture's parsed config included)."""
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture
def tiny_splits():
  """Train / val / test prototype stores: 10 / 5 / 5 classes of 20 8x8 grayscale images."""
  return synthetic.prototype_splits()


@pytest.fixture
def tiny_store():
  return synthetic.prototype_store()


@pytest.fixture
def float64():
  """Keras layers and variables in float64, for finite-difference checks."""
  keras.config.set_floatx("float64")
  keras.config.set_dtype_policy("float64")
  yield
  keras.config.set_floatx("float32")
  keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def mirrored():
  """One MirroredStrategy over the two logical CPU devices per test process (strategies made
  in one process number their collective ops from the same key, so they must not mix)."""
  return distribute.make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])


class _Unlabeled:
  """A test sampler whose episodes have no query labels: reading them fails."""

  def __init__(self, sampler):
    self.sampler, self.spec = sampler, sampler.spec

  def episode(self, index):
    episode = dict(self.sampler.episode(index))
    del episode["query_labels"]
    return episode


@pytest.fixture
def without_query_labels(monkeypatch):
  """`without_query_labels(runner)`: the runner's test episodes lose their query labels
  until the test ends; returns the labeled sampler."""
  def strip(runner):
    labeled = runner.samplers["test"]
    monkeypatch.setitem(runner.samplers, "test", _Unlabeled(labeled))
    return labeled
  return strip
