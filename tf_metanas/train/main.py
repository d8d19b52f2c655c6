r"""Meta-trains and meta-tests a configuration: flags -> gin -> Runner. The binary
tools/train.py; also `python -m tf_metanas.train.main` wherever tf_metanas is installed (how
Auto-Meta's candidate jobs run, `tf_metanas.jobs`).

  python tools/train.py --gin_file=gin_configs/experiments/baselines/reptile_glyphs_5w1s.gin \
      --model_dir=runs/reptile_glyphs
  python tools/train.py ... --strategy=mirrored                 # every local GPU
  python tools/train.py ... --strategy=multi_worker --worker_hosts=h1:2222,h2:2222 \
      --task_index=0                                            # on h1; --task_index=1 on h2

A run that cannot go on safely (diverged, its model_dir held by another process, resumed
with another configuration, no readable checkpoint, a bad value) logs why and what would
work, and exits 1.
"""
# TensorFlow loads in main(), after the flags are parsed: --help answers at once.

import sys

from absl import app
from absl import flags
from absl import logging

from tf_metanas import choices
from tf_metanas import quiet
from tf_metanas.train import cli

_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin files, parsed in order.")
_GIN_PARAMS = flags.DEFINE_multi_string("gin_param", [], "Gin bindings, after the files.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Where the run's files go.", required=True)
_DATASET = flags.DEFINE_enum(
    "dataset", None, choices.DATASETS, "Train on this dataset instead: its "
    "gin_configs/datasets/<name>.gin after the --gin_file files (it binds every "
    "dataset-specific setting).")


_FORCE_RESUME = flags.DEFINE_bool(
    "force_resume", False, "Resume a model_dir whose stored configuration differs from this "
    "one in bindings beyond the safe ones (iterations, logging, validation, checkpoint and "
    "meta-test cadence); without it such a resume is refused, listing them.")


_RETEST = flags.DEFINE_bool(
    "retest", False, "A finished run prints its stored results; --retest meta-tests it again "
    "into results.retest<k>.json beside them (results.json is never overwritten).")


def main(argv):
  # pylint: disable=g-import-not-at-top  (TensorFlow: after the flags, see above)
  quiet.load_tensorflow()
  import gin
  from tf_metanas import configurables
  from tf_metanas.train import runner as runner_lib
  del argv
  try:
    configurables.parse(configurables.with_dataset(_GIN_FILES.value, _DATASET.value),
                        _GIN_PARAMS.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  try:
    with cli.strategy_from_flags().scope():
      runner = runner_lib.Runner(model_dir=_MODEL_DIR.value)
    gin.finalize()
    results = runner.run(force_resume=_FORCE_RESUME.value, retest=_RETEST.value)
  except runner_lib.RUN_ERRORS as e:
    logging.error("%s", e)
    sys.exit(1)
  for line in runner.summary_lines(results):
    logging.info("%s", line)
  logging.info("results: %s; TensorBoard: tensorboard --logdir %s", runner.results_path,
               _MODEL_DIR.value)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
