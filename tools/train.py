"""tools/train.py: the binary of tf_metanas.train.main (its docstring is this one's --help)."""

from absl import app
from absl import logging

from tf_metanas.train import main

__doc__ = main.__doc__  # pylint: disable=redefined-builtin

if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main.main)
