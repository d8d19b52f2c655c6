r"""Meta-tests a trained model dir, possibly on other data or shots (same ways).

  python tools/evaluate.py --model_dir=runs/reptile_glyphs \
      --gin_param='test/EpisodeSpec.num_shots = 5' --gin_param='Runner.test_tasks = 1000'
"""

import pathlib

from absl import app
from absl import flags
from absl import logging

from tf_metanas import configurables
from tf_metanas.train import cli
from tf_metanas.train import runner as runner_lib

_GIN_PARAMS = flags.DEFINE_multi_string("gin_param", [], "Bindings over the run's config.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A trained run's model dir.", required=True)
_RESULTS = flags.DEFINE_string("results_name", "evaluation.json", "File in model_dir to write.")


def main(argv):
  del argv
  config = pathlib.Path(_MODEL_DIR.value) / "operative_config.gin"
  if not config.exists():
    raise app.UsageError(f"{config} not found: --model_dir must be a tools/train.py run")
  try:
    configurables.parse([str(config)], _GIN_PARAMS.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  with cli.strategy_from_flags().scope():
    runner = runner_lib.Runner(model_dir=_MODEL_DIR.value)
  if not runner.restore():
    raise app.UsageError(f"no checkpoint in {_MODEL_DIR.value}")
  results = runner.test(_RESULTS.value)
  for line in runner.summary_lines(results):
    logging.info("%s", line)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
