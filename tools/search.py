r"""Runs (or resumes) an Auto-Meta search: flags -> gin -> ProgressiveSearch on an executor.

  python tools/search.py --gin_file=gin_configs/experiments/autometa/glyphs_quick.gin \
      --search_dir=runs/autometa_glyphs                      # local pool, one job per core
  python tools/search.py ... --workers=1                     # one candidate at a time
  python tools/search.py ... --executor=dask --scheduler=tcp://host:8786 [--dask_gpus]

Each candidate is a tools/train.py run of the same gin files with its cell, seed and
meta-validation scoring bound (search_dir/candidates/<key>/); the search's tables, ranking
and TensorBoard views go to search_dir (see tf_metanas.methods.autometa). A killed search
resumes where it stopped when run again with the same flags.
"""
# TensorFlow loads in main(), after the flags are parsed: --help answers at once.

import sys

from absl import app
from absl import flags
from absl import logging

from tf_metanas import jobs
from tf_metanas import quiet

_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin files, parsed in order; every "
                                       "candidate runs with the same files.")
_GIN_PARAMS = flags.DEFINE_multi_string("gin_param", [], "Gin bindings, after the files "
                                        "(passed to every candidate too).")
_SEARCH_DIR = flags.DEFINE_string("search_dir", None, "Where the search keeps everything.",
                                  required=True)
_EXECUTOR = flags.DEFINE_enum("executor", "local", ["local", "dask"], "Where candidates run: "
                              "a local pool of worker processes, or a Dask cluster.")
_WORKERS = flags.DEFINE_integer("workers", None, "--executor=local: candidates at a time "
                                "(default: the cores divided by ProgressiveSearch."
                                "threads_per_job).")
_SCHEDULER = flags.DEFINE_string("scheduler", None, "--executor=dask: the scheduler's "
                                 "address, e.g. tcp://host:8786.")
_DASK_GPUS = flags.DEFINE_bool("dask_gpus", False, "--executor=dask: each candidate takes "
                               "one GPU=1 resource (workers started with --resources GPU=1).")


def _executor(threads_per_job):
  """(executor, client or None) from the flags."""
  if _EXECUTOR.value == "dask":
    if not _SCHEDULER.value:
      raise app.UsageError("--executor=dask needs --scheduler=tcp://host:8786 (the address "
                           "`dask scheduler` prints)")
    client, executor = jobs.dask_executor(_SCHEDULER.value,
                                          {"GPU": 1} if _DASK_GPUS.value else None)
    return executor, client
  if _SCHEDULER.value or _DASK_GPUS.value:
    raise app.UsageError("--scheduler and --dask_gpus apply to --executor=dask only")
  return jobs.LocalExecutor(_WORKERS.value, threads_per_job), None


def main(argv):
  # pylint: disable=g-import-not-at-top  (TensorFlow: after the flags, see above)
  quiet.load_tensorflow()
  from tf_metanas import configurables
  from tf_metanas.methods import autometa
  del argv
  try:
    configurables.parse(_GIN_FILES.value, _GIN_PARAMS.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  search = autometa.ProgressiveSearch(_SEARCH_DIR.value, gin_files=_GIN_FILES.value,
                                      gin_params=_GIN_PARAMS.value)
  executor, client = _executor(search.threads_per_job)
  try:
    summary = search.run(executor)
  except autometa.SEARCH_ERRORS as e:
    logging.error("%s", e)
    sys.exit(1)
  finally:
    executor.shutdown(wait=False)
    if client is not None:
      client.close()
  logging.info("best cell (stage %d, meta-val score %.4f): %s", summary["best_stage"],
               summary["best_score"], summary["best_summary"])
  for stage in summary["stages"]:
    logging.info("stage %d: %d scored, %d failed, best %s, surrogate rank correlation %s",
                 stage["stage"], stage["scored"], stage["failed"],
                 "-" if stage["best_score"] is None else f"{stage['best_score']:.4f}",
                 "-" if stage["spearman"] is None else f"{stage['spearman']:.3f}")
  final = summary.get("final")
  if final:
    logging.info("final: %s", " ".join(_summary_line(final)))
  logging.info("results: %s/search_results.json; TensorBoard: tensorboard --logdir %s",
               _SEARCH_DIR.value, _SEARCH_DIR.value)


def _summary_line(results):
  return [f"{results['num_ways']}-way {results['num_shots']}-shot, {results['num_tasks']} test "
          f"tasks, transductive BatchNorm {'on' if results['transductive_batch_norm'] else 'off'}:",
          f"accuracy {100 * results['accuracy']:.2f}% +- {100 * results['ci95']:.2f}%,",
          f"{results['parameters']:.0f} weights, {results['meta_iterations']} meta-iterations"]


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
