r"""Meta-tests a trained model dir, possibly on other data or shots (same ways).

  python tools/evaluate.py --model_dir=runs/reptile_glyphs \
      --gin_param='test/EpisodeSpec.num_shots = 5' --gin_param='Runner.test_tasks = 1000'

T-NAS, Auto-MAML and CAML runs: `--decoded=from_scratch` also retrains each distinct
decoded genotype of the meta-test (CAML: the derived network) with first-order MAML (T-NAS
Sec. 5.2.2, CAML Sec. 4.2; BASE: second order, `FromScratch.algorithm = "maml"`; budget by
FromScratch.* bindings, CAML's from its config) and
meta-tests it on the tasks that decoded to it (model_dir/from_scratch.json, or
from_scratch.<k>.json beside an earlier one);
`--decoded=from_kept_weights` starts that retraining from the search network's meta-weights
of the kept ops instead (CAML Table 3; model_dir/from_kept_weights.json):

  python tools/evaluate.py --model_dir=runs/tnas_glyphs --decoded=from_scratch \
      --gin_param='FromScratch.iterations = 500' --gin_param='Runner.test_tasks = 100'
  python tools/evaluate.py --model_dir=runs/caml_glyphs --decoded=from_kept_weights
"""
# TensorFlow loads in main(), after the flags are parsed: --help answers at once.

import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

from tf_metanas import quiet
from tf_metanas.train import cli
from tf_metanas.train import config_diff

flags.adopt_module_key_flags(cli)  # --help lists the distribution flags too
_GIN_PARAMS = flags.DEFINE_multi_string("gin_param", [], "Bindings over the run's config.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A trained run's model dir.", required=True)
_RESULTS = flags.DEFINE_string(
    "results_name", None, "File in model_dir to write (default: named after the protocol, "
    "eval_<ways>w<shots>s.json, or eval_<ways>w<shots>s.<k>.json beside an earlier one; an "
    "existing file is never overwritten).")
_DECODED = flags.DEFINE_enum(
    "decoded", "kept_weights", ["kept_weights", "from_scratch", "from_kept_weights"],
    "T-NAS / Auto-MAML / CAML: evaluate the decoded networks with the weights they keep, or "
    "also retrained with first-order MAML (FromScratch.algorithm = 'maml': second order) "
    "from scratch or from the kept meta-weights (FromScratch.* bindings set the budget).")


def _given_results_name(model_dir):
  """--results_name, refused if its file exists; None without the flag."""
  if _RESULTS.value and (model_dir / _RESULTS.value).exists():
    raise app.UsageError(f"--results_name={_RESULTS.value}: {model_dir / _RESULTS.value} "
                         f"exists and is never overwritten; give another name")
  return _RESULTS.value


def main(argv):
  # pylint: disable=g-import-not-at-top  (TensorFlow: after the flags, see above)
  quiet.load_tensorflow()
  from tf_metanas import configurables
  from tf_metanas.train import from_scratch
  from tf_metanas.train import runner as runner_lib
  del argv
  config = pathlib.Path(_MODEL_DIR.value) / "operative_config.gin"
  if not config.exists():
    raise app.UsageError(f"{config} not found: --model_dir must be a tools/train.py run")
  predating = config_diff.predating_bindings(config.read_text())
  for binding in predating:
    logging.info("%s predates this binding; the value its run had: %s", config, binding)
  try:
    configurables.parse([str(config)], predating + _GIN_PARAMS.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  strategy = cli.strategy_from_flags()
  try:
    with strategy.scope():
      runner = runner_lib.Runner(model_dir=_MODEL_DIR.value)
    if not runner.restore():
      raise app.UsageError(f"no checkpoint in {_MODEL_DIR.value}")
    spec = runner.samplers[runner.test_split].spec
    protocol = f"eval_{spec.num_ways}w{spec.num_shots}s"
    name = _given_results_name(runner.model_dir) or runner_lib.free_name(
        runner.model_dir, protocol + ".{}.json", first=f"{protocol}.json")  # never over one
    results = runner.test(name, summaries=protocol)
    for line in runner.summary_lines(results):
      logging.info("%s", line)
    logging.info("results: %s; TensorBoard: %s (tensorboard --logdir %s)", runner.results_path,
                 runner.model_dir / protocol, runner.model_dir)
    if _DECODED.value != "kept_weights":
      settings = getattr(runner.learner, "retraining", None)  # CAML's evaluation budget
      with strategy.scope():
        summary = from_scratch.evaluate(runner, results, settings, _DECODED.value)
      logging.info("%s", from_scratch.summary_line(summary))
      logging.info("results: %s", summary["results_path"])
  except runner_lib.RUN_ERRORS as e:
    logging.error("%s", e)
    sys.exit(1)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
