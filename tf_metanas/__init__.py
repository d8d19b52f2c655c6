"""tf_metanas: meta-learning neural architectures and their weights for few-shot learning."""

__version__ = "0.1.0"


def load(model_dir, image_shape=None):
  """A trained run's restored learner, for `adapt(...).predict(...)` on new tasks, with no
  dataset loaded and nothing written (`tf_metanas.train.load.load`)."""
  from tf_metanas.train import load as load_lib  # pylint: disable=g-import-not-at-top
  return load_lib.load(model_dir, image_shape)
