r"""Meta-trains and meta-tests a configuration: flags -> gin -> Runner.

  python tools/train.py --gin_file=gin_configs/experiments/baselines/reptile_glyphs_5w1s.gin \
      --model_dir=runs/reptile_glyphs
  python tools/train.py ... --strategy=mirrored                 # every local GPU
  python tools/train.py ... --strategy=multi_worker --worker_hosts=h1:2222,h2:2222 \
      --task_index=0                                            # on h1; --task_index=1 on h2
"""

from absl import app
from absl import flags
from absl import logging
import gin

from tf_metanas import configurables
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.train import cli
from tf_metanas.train import runner as runner_lib

_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin files, parsed in order.")
_GIN_PARAMS = flags.DEFINE_multi_string("gin_param", [], "Gin bindings, after the files.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Where the run's files go.", required=True)


def main(argv):
  del argv
  try:
    configurables.parse(_GIN_FILES.value, _GIN_PARAMS.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  with cli.strategy_from_flags().scope():
    runner = runner_lib.Runner(model_dir=_MODEL_DIR.value)
  gin.finalize()
  results = runner.run()
  logging.info("meta-test accuracy %.2f%% +- %.2f%% (95%% CI, %d tasks), %d parameters",
               100 * results["accuracy"], 100 * results["ci95"], results["num_tasks"],
               results["parameters"])
  if "task_genotypes" in results:  # architecture search: the task-specific architectures
    sizes = results["task_parameters"]
    logging.info("task-specific parameters: mean %.0f, min %d, max %d", sizes["mean"],
                 sizes["min"], sizes["max"])
    for kind, key in (("task-specific", "task_genotypes"), ("pairwise (to scale up)", "genotypes")):
      common = results[key][0]
      logging.info("most common %s genotype (%d of %d tasks, %d parameters): %s", kind,
                   common["tasks"], results["num_tasks"], common["parameters"],
                   genotype_lib.Genotype.from_dict(common["genotype"]).summary())
  logging.info("results: %s/results.json; TensorBoard: tensorboard --logdir %s",
               _MODEL_DIR.value, _MODEL_DIR.value)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
