"""tools/train.py: the binary of tf_metanas.train.main (its docstring is this one's --help)."""

from absl import app
from absl import flags
from absl import logging

from tf_metanas.train import cli
from tf_metanas.train import main

__doc__ = main.__doc__  # pylint: disable=redefined-builtin
# --help lists the flags of the module this binary runs and the distribution flags.
flags.adopt_module_key_flags(main)
flags.adopt_module_key_flags(cli)

if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main.main)
