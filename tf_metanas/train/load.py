"""A trained run's learner, for adapting to new tasks from Python, without its dataset.

  learner = tf_metanas.load("runs/quickstart")
  adapted = learner.adapt(support_images, support_labels)   # a new N-way task
  logits = adapted.predict(query_images)

`load` reads the run's operative_config.gin and builds its network and learner as the
Runner does, then restores the newest readable checkpoint (for a run that selects on
meta-validation, `Runner.select_on_val`, the selected one in model_dir/best, which its
meta-test used). It loads no dataset and writes nothing into model_dir.
"""

import inspect
import json
import pathlib

import gin
import keras
import tensorflow as tf

from tf_metanas import configurables
from tf_metanas.data import registry
from tf_metanas.train import checkpoints
from tf_metanas.train import runner as runner_lib

_DEFAULTS = inspect.signature(runner_lib.Runner).parameters


def _runner_binding(name):
  """Runner argument `name` as the run's config binds it (a bound reference resolved: an
  instance for `@x()`, the configured callable for `@x`), else the Runner's default."""
  try:
    value = gin.query_parameter(f"tf_metanas.train.Runner.{name}")
  except ValueError:
    return _DEFAULTS[name].default
  if isinstance(value, gin.config.ConfigurableReference):
    return value.scoped_configurable_fn() if value.evaluate else value.scoped_configurable_fn
  return value


def _image_shape(model_dir):
  """(H, W, C): the run's results.json (its first meta-training stream), else its dataset's."""
  results = model_dir / "results.json"
  if results.exists():
    streams = json.loads(results.read_text()).get("train_streams") or {}
    if streams:
      return tuple(next(iter(streams.values()))["image_shape"])
  try:
    synthetic = gin.query_parameter("tf_metanas.train.load_splits.synthetic_image_shape")
  except ValueError:
    synthetic = None
  if synthetic:
    return tuple(synthetic)
  try:
    name = gin.query_parameter("tf_metanas.train.load_splits.name")
  except ValueError:
    name = "glyphs"
  if name not in registry.IMAGE_SHAPES:
    raise ValueError(f"{model_dir}: the image shape of dataset {name!r} is not known; pass "
                     f"load(..., image_shape=(H, W, C))")
  return registry.IMAGE_SHAPES[name]


def load(model_dir, image_shape=None):
  """The meta-learned learner of a tools/train.py run (module docstring).

  The run's configuration replaces this process's gin config.

  Args:
    model_dir: the run's model_dir.
    image_shape: (H, W, C) of the run's images (default: from its results or its dataset).

  Returns:
    The restored MetaLearner (or the method's subclass): `adapt(...)` and `predict`.

  Raises:
    FileNotFoundError: model_dir holds no run configuration or no checkpoint (a run is never
      loaded with random weights).
  """
  model_dir = pathlib.Path(model_dir).expanduser()
  config = model_dir / "operative_config.gin"
  if not config.exists():
    raise FileNotFoundError(f"{config} not found: {model_dir} is not a tools/train.py run")
  gin.clear_config()
  configurables.parse([str(config)])
  directory = model_dir / "best" if _runner_binding("select_on_val") else model_dir
  if not checkpoints.paths(directory):
    raise FileNotFoundError(f"no checkpoint in {directory}: the run has not saved its "
                            f"meta-learned parameters yet (Runner.checkpoint_every)")
  seed = _runner_binding("seed")
  keras.utils.set_random_seed(seed)
  model = _runner_binding("network")(num_classes=_runner_binding("train_spec").num_ways)
  model.build((None,) + tuple(image_shape or _image_shape(model_dir)))
  learner = _runner_binding("learner")(model, seed=seed)
  checkpoint = tf.train.Checkpoint(**learner.checkpoint_items())
  checkpoints.restore_newest(checkpoint, directory)
  return learner
