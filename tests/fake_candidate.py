"""A stand-in for a candidate's training job (tools/train.py's flags), for the search tests:
writes a results.json whose accuracy is a fixed function of the cell, in milliseconds.

Each run appends "<model_dir name>" to $FAKE_CANDIDATE_LOG. A cell whose first block adds
max_pool_3x3 to itself on input 0 crashes (exit 3), every cell with $FAKE_CANDIDATE_CRASH_ALL; with $FAKE_CANDIDATE_SLEEP seconds the
job sleeps first (a kill can land mid-job).
"""

import json
import os
import pathlib
import sys
import time


def toy_score(blocks):
  """0.2 + 0.1 per full_conv_3x3 + 0.05 per block input from an earlier block + 0.01 per
  unit of input index, at most 0.99 (what the fake 'measures')."""
  convs = sum(op == "full_conv_3x3" for block in blocks for op, _ in block)
  deep = sum(i >= 2 for block in blocks for _, i in block)
  inputs = sum(i for block in blocks for _, i in block)
  return min(0.2 + 0.1 * convs + 0.05 * deep + 0.01 * inputs, 0.99)


def main(argv):
  flags = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
  params = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--gin_param=")]
  model_dir = pathlib.Path(flags["model_dir"])
  with open(os.environ["FAKE_CANDIDATE_LOG"], "a") as log:
    log.write(model_dir.name + "\n")
  time.sleep(float(os.environ.get("FAKE_CANDIDATE_SLEEP", "0")))
  cell = next(p.split("=", 1)[1].strip().strip("'") for p in params if ".cell = " in p)
  blocks = json.loads(cell)["blocks"]
  if (blocks[0] == [["max_pool_3x3", 0], ["max_pool_3x3", 0]]
      or os.environ.get("FAKE_CANDIDATE_CRASH_ALL")):
    print("fake candidate: this cell crashes", file=sys.stderr)
    return 3
  split = "val" if 'Runner.test_split = "val"' in params else "test"
  results = {"accuracy": toy_score(blocks), "ci95": 0.01, "parameters": 1000.0,
             "train_seconds": 0.1, "split": split, "num_ways": 5, "num_shots": 1,
             "num_tasks": 10, "transductive_batch_norm": True, "meta_iterations": 2,
             "protocol": {"split": split}}
  (model_dir / "results.json").write_text(json.dumps(results))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
