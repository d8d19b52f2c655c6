"""How well what a network meta-learns on a dataset carries over to real Omniglot characters.

The embedded glyphs exist so that a run needs no download; they are only useful if what is
meta-learned on them transfers to real few-shot character problems. `measure` answers that
with one fixed training budget for every row:

  * each training source (glyphs version 1, glyphs version 2, and, as the comparison row,
    the Omniglot data's own meta-training split) meta-trains a Conv4 with Reptile, one
    model per number of ways, with the existing baseline configurations (`CONFIGS`) and
    the Runner: only the dataset and the number of meta-iterations change;
  * every model is meta-tested on the same real Omniglot characters: the meta-test split
    of the Omniglot folder ('vinyals' split, unrotated), which the Omniglot row never
    trained on. Models are never selected on these tasks (no meta-validation: the last
    meta-iteration is tested), as tools/evaluate.py meta-tests a trained run on other data;
  * the ink statistics of every source (mean pixel, fraction of pixels below 128, over all
    of its images) stand beside the accuracies, and a contact sheet of each glyphs
    version's meta-test characters beside Omniglot's (`<out_dir>/<source>_beside_omniglot.png`)
    shows the resemblance.

Runs are ordinary model dirs (`<out_dir>/<source>_<ways>w`): a rerun resumes or reuses
them, and a meta-test already written (`omniglot_<ways>w1s.json`) is read, not repeated.
"""

import json
import os
import pathlib
import platform

from absl import logging
import gin
import numpy as np

from tf_metanas import configurables
from tf_metanas import data as data_lib
from tf_metanas.data import registry
from tf_metanas.train import runner as runner_lib

# Training source -> (dataset, its load_dataset settings over the dataset's gin file).
SOURCES = {
    "glyphs_v1": ("glyphs", {"glyphs_version": 1}),
    "glyphs_v2": ("glyphs", {"glyphs_version": 2}),
    "omniglot": ("omniglot", {}),
}
# The REPTILE code's Omniglot augmentation: rotations as new classes in meta-training.
_TRAIN_ROTATIONS = {"omniglot": "train_classes"}
# Reptile Conv4 configuration per number of ways (the dataset and budget are replaced).
CONFIGS = {
    20: "gin_configs/experiments/baselines/reptile_omniglot_20w1s.gin",
    5: "gin_configs/experiments/baselines/reptile_glyphs_5w1s.gin",
}
INK_LEVEL = 128  # a pixel below this is ink


def _bindings(**settings):
  """`load_splits.<name> = <value>` for each setting (JSON literals read as gin's)."""
  return [f"load_splits.{name} = {json.dumps(value)}" for name, value in settings.items()]


def _omniglot_bindings(omniglot_dir):
  """The Omniglot folder, 'vinyals' split, no validation classes moved."""
  return _bindings(data_dir=str(omniglot_dir), omniglot_split="vinyals") + [
      "load_splits.val_classes = None"]


def train_bindings(source, iterations, source_tasks, omniglot_dir):
  """The bindings, after the configuration and the source's dataset file, of one training:
  the source's settings, the budget, no meta-validation (no selection), and
  `source_tasks` meta-test tasks on the source's own meta-test split."""
  dataset, settings = SOURCES[source]
  data = _omniglot_bindings(omniglot_dir) if dataset == "omniglot" else []
  if source in _TRAIN_ROTATIONS:
    settings = {**settings, "rotations": _TRAIN_ROTATIONS[source]}
  return data + _bindings(**settings) + [
      f"ITERATIONS = {iterations}",
      "Runner.eval_every = 0", f"Runner.checkpoint_every = {max(1, iterations // 4)}",
      f"Runner.test_tasks = {source_tasks}"]


def test_bindings(omniglot_dir, tasks):
  """The bindings, after a trained run's config and the Omniglot dataset file, of its
  meta-test on real Omniglot characters: the unrotated meta-test split of omniglot_dir."""
  return _omniglot_bindings(omniglot_dir) + [
      "load_splits.rotations = False", f"Runner.test_tasks = {tasks}"]


def _parse(gin_files, params):
  gin.clear_config()
  configurables.parse(gin_files, params)


def train(model_dir, source, ways, bindings, params=()):
  """Meta-trains (or resumes, or reads the finished) run of `source` at `ways`; returns its
  results on the source's own meta-test split."""
  dataset, _ = SOURCES[source]
  _parse(configurables.with_dataset([CONFIGS[ways]], dataset), list(bindings) + list(params))
  runner = runner_lib.Runner(model_dir=model_dir)
  results = runner.run()
  for line in runner.summary_lines(results):
    logging.info("%s: %s", source, line)
  return results


def meta_test_on_omniglot(model_dir, bindings, params=()):
  """The trained run in model_dir meta-tested on real Omniglot characters (its own
  protocol, the Omniglot dataset file and `bindings` over its stored config), written to
  model_dir/omniglot_<ways>w<shots>s.json; an existing file is read instead."""
  config = str(pathlib.Path(model_dir) / "operative_config.gin")
  _parse(configurables.with_dataset([config], "omniglot"), list(bindings) + list(params))
  runner = runner_lib.Runner(model_dir=model_dir)
  spec = runner.samplers[runner.test_split].spec
  name = f"omniglot_{spec.num_ways}w{spec.num_shots}s"
  path = runner.model_dir / f"{name}.json"
  if path.exists():
    logging.info("%s exists: its meta-test is read, not repeated", path)
    return json.loads(path.read_text())
  runner.restore()
  return runner.test(path.name, summaries=name)


def ink_statistics(splits):
  """Mean pixel (0 = black) and the fraction of pixels below INK_LEVEL over every image
  of every split."""
  images = np.concatenate([store.images.ravel() for store in splits.values()])
  return {"mean_pixel": float(images.mean()),
          "ink_fraction": float((images < INK_LEVEL).mean()),
          "images": int(sum(store.images.shape[0] for store in splits.values()))}


def _source_splits(source, omniglot_dir):
  """A training source's dataset, unrotated."""
  dataset, settings = SOURCES[source]
  data_dir = omniglot_dir if dataset == "omniglot" else None
  return registry.load_dataset(dataset, data_dir=data_dir, **settings)


def _row(source, ways, out_dir, omniglot_dir, budget, params):
  """Trains and meta-tests one source at `ways`: {"own": results, "omniglot": results}."""
  model_dir = pathlib.Path(out_dir) / f"{source}_{ways}w"
  own = train(model_dir, source, ways, train_bindings(
      source, budget["iterations"], budget["source_tasks"], omniglot_dir), params)
  transfer = meta_test_on_omniglot(model_dir, test_bindings(omniglot_dir, budget["tasks"]),
                                   params)
  keep = ("accuracy", "ci95", "num_tasks", "num_ways", "num_shots", "meta_iterations",
          "train_seconds", "test_seconds")
  return {"model_dir": str(model_dir), "own": {k: own[k] for k in keep},
          "omniglot": {k: transfer[k] for k in keep}}


def check(sources, ways):
  """Raises ValueError naming the sources or ways that `measure` does not know."""
  unknown = [s for s in sources if s not in SOURCES] + [str(w) for w in ways
                                                         if w not in CONFIGS]
  if unknown:
    raise ValueError(f"unknown sources or ways {unknown}: sources are {list(SOURCES)}, "
                     f"ways {list(CONFIGS)}")


def measure(out_dir, omniglot_dir, sources=tuple(SOURCES), ways=(20, 5), iterations=1000,
            tasks=600, source_tasks=100, params=()):
  """The transfer table: every source trained at every number of ways, meta-tested on real
  Omniglot characters, with the sources' ink statistics.

  Args:
    out_dir: where the runs go (one model dir per source and ways).
    omniglot_dir: an Omniglot folder in its original layout (images_background[.zip], ...).
    sources: keys of SOURCES.
    ways: numbers of ways (keys of CONFIGS); every model is meta-tested 1-shot.
    iterations: meta-iterations of every training (the budget).
    tasks: meta-test tasks on Omniglot per model (95% CI over them).
    source_tasks: meta-test tasks on the source's own meta-test split (for reference).
    params: extra gin bindings applied last to every training and meta-test.

  Returns:
    A dict: "budget", "machine", "omniglot_ink", and "rows": {source: {"ink": ...,
    "<ways>w": {"own": ..., "omniglot": ...}}}.
  """
  check(sources, ways)
  budget = {"iterations": iterations, "tasks": tasks, "source_tasks": source_tasks,
            "configs": {w: CONFIGS[w] for w in ways}, "params": list(params)}
  omniglot = _source_splits("omniglot", omniglot_dir)
  report = {"budget": budget, "machine": _machine(), "omniglot_dir": str(omniglot_dir),
            "omniglot_ink": ink_statistics(omniglot), "rows": {}}
  for source in sources:
    splits = omniglot if source == "omniglot" else _source_splits(source, omniglot_dir)
    row = {"ink": ink_statistics(splits)}
    if source != "omniglot":
      sheet = pathlib.Path(out_dir) / f"{source}_beside_omniglot.png"
      logging.info("%s beside Omniglot: %s", source, data_lib.contact_sheet(
          splits["test"], sheet, beside=omniglot["test"]))
    for w in ways:
      row[f"{w}w"] = _row(source, w, out_dir, omniglot_dir, budget, params)
    report["rows"][source] = row
  gin.clear_config()
  return report


def _machine():
  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpu_count": os.cpu_count()}


def _accuracy(result):
  return f"{100 * result['accuracy']:.2f} +- {100 * result['ci95']:.2f}"


def table(report):
  """The report as markdown table lines: ink and Omniglot accuracies per source."""
  ways = [k for k in next(iter(report["rows"].values()), {}) if k.endswith("w")]
  head = (["trained on", "mean pixel", "ink fraction"]
          + [f"Omniglot {w[:-1]}-way 1-shot %" for w in ways]
          + [f"own test {w[:-1]}-way %" for w in ways] + ["train s"])
  ink = report["omniglot_ink"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
           f"| (real Omniglot, every character) | {ink['mean_pixel']:.1f} | "
           f"{ink['ink_fraction']:.3f} |" + " |" * (len(head) - 3)]
  for source, row in report["rows"].items():
    cells = [source, f"{row['ink']['mean_pixel']:.1f}", f"{row['ink']['ink_fraction']:.3f}"]
    cells += [_accuracy(row[w]["omniglot"]) for w in ways]
    cells += [_accuracy(row[w]["own"]) for w in ways]
    cells.append(" / ".join(f"{row[w]['own']['train_seconds']:.0f}" for w in ways))
    lines.append("| " + " | ".join(cells) + " |")
  return lines
