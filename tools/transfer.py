r"""Measures how well Reptile Conv4 meta-trained on glyphs (v1, v2) or on Omniglot's own
meta-training split does on real Omniglot characters (tf_metanas.train.transfer), with the
ink statistics of each dataset; writes a JSON report and logs a table.

  python tools/transfer.py --omniglot_dir=~/omniglot --out_dir=runs/transfer \
      --iterations=800        # BENCHMARKS.md's table: 3 sources x 20, 5 ways, 600 tasks
  python tools/transfer.py --omniglot_dir=~/omniglot --out_dir=runs/transfer \
      --sources=glyphs_v2 --ways=5 --iterations=200 --tasks=100

A rerun resumes or reuses the runs under --out_dir and the meta-tests already written.
"""

from tf_metanas import quiet  # pylint: disable=unused-import  (drops log noise)

import json
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

from tf_metanas.data import registry
from tf_metanas.train import runner as runner_lib
from tf_metanas.train import transfer

_OMNIGLOT_DIR = flags.DEFINE_string(
    "omniglot_dir", str(registry.default_data_dir("omniglot")),
    "Omniglot in its original layout (images_background[.zip], images_evaluation[.zip] or "
    "the small background subsets): its meta-test split is where every model is tested.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the runs go.", required=True)
_RESULTS = flags.DEFINE_string("results", None, "The JSON report (default: "
                               "<out_dir>/transfer.json).")
_SOURCES = flags.DEFINE_list("sources", list(transfer.SOURCES),
                             f"Training sources, of {', '.join(transfer.SOURCES)}.")
_WAYS = flags.DEFINE_list("ways", ["20", "5"], "Ways of the 1-shot tasks, of "
                          f"{', '.join(map(str, transfer.CONFIGS))}; one model each.")
_ITERATIONS = flags.DEFINE_integer("iterations", 1000, "Meta-iterations of every training.",
                                   lower_bound=1)
_TASKS = flags.DEFINE_integer("tasks", 600, "Omniglot meta-test tasks per model.",
                              lower_bound=2)
_SOURCE_TASKS = flags.DEFINE_integer("source_tasks", 100, "Meta-test tasks on each source's "
                                     "own meta-test split.", lower_bound=2)
_GIN_PARAMS = flags.DEFINE_multi_string("gin_param", [], "Bindings applied last to every "
                                        "training and meta-test.")


def _ways():
  try:
    return [int(w) for w in _WAYS.value]
  except ValueError as e:
    raise app.UsageError(f"--ways={','.join(_WAYS.value)}: not integers ({e})") from e


def main(argv):
  del argv
  ways = _ways()
  try:
    transfer.check(_SOURCES.value, ways)
  except ValueError as e:
    raise app.UsageError(f"--sources / --ways: {e}") from e
  try:
    report = transfer.measure(
        _OUT_DIR.value, pathlib.Path(_OMNIGLOT_DIR.value).expanduser(), _SOURCES.value,
        ways, _ITERATIONS.value, _TASKS.value, _SOURCE_TASKS.value, _GIN_PARAMS.value)
  except runner_lib.RUN_ERRORS as e:
    logging.error("%s", e)
    sys.exit(1)
  except ValueError as e:  # a bad --gin_param (the message names it)
    raise app.UsageError(str(e)) from e
  path = pathlib.Path(_RESULTS.value or pathlib.Path(_OUT_DIR.value) / "transfer.json")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(report, indent=2))
  for line in transfer.table(report):
    logging.info("%s", line)
  logging.info("report: %s", path)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
