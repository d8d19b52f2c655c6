"""Decoded architectures retrained from scratch (T-NAS Sec. 5.2.2), evaluated honestly.

After a T-NAS (or Auto-MAML) meta-test, every test task has a decoded genotype. Each
*distinct* genotype is retrained once as a discrete network (the search network's skeleton,
affine BatchNorms) with first-order MAML (`FromScratch.algorithm`: or second order, as
BASE's few-shot table) on the meta-training classes; the checkpoint is
selected by meta-validation accuracy on tasks of the meta-validation classes
(`Runner.select_on_val`); then every test task that decoded to it adapts the selected
weights on its support set and predicts its queries. The queries' labels are read only
after every prediction is made.

Not copied from the authors' code (train_tnas_miniimagenet.py): they retrain once per test
task and report, for each, the best of ~50 checkpoints scored on that test task's own
query set.
"""

import dataclasses
import hashlib
import json

import gin
import numpy as np
from absl import logging

from tf_metanas import checks
from tf_metanas.data import streams as streams_lib
from tf_metanas.meta import inner_loop
from tf_metanas.meta import learner as learner_lib
from tf_metanas.meta import optimizers
from tf_metanas.meta import schedules
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib
from tf_metanas.search import stem as stem_lib
from tf_metanas.train import runner as runner_lib

UNLABELED_KEYS = ("support_images", "support_labels", "query_images")
ALGORITHMS = {"fomaml": "first-order MAML", "maml": "second-order MAML"}
INITS = {"from_scratch": "from scratch",
         "from_kept_weights": "from the search network's kept meta-weights"}


@gin.configurable(module="tf_metanas.train")
@dataclasses.dataclass(frozen=True)
class FromScratch:
  """The retraining budget and protocol of each distinct decoded genotype.

  Defaults are the authors' meta_nas_train.py (the paper's Sec. 5.2.2 says 15,000 tasks for
  20 epochs and an inner learning rate of 0.1): first-order MAML, inner SGD 0.01 for 5
  steps (10 at test), Adam 1e-3, meta-batches of 4 from a pool of 10,000 tasks visited for
  10 epochs (25,000 meta-iterations), checkpoints compared every 500 meta-iterations on 100
  meta-validation tasks. A CPU user lowers `iterations`, `task_pool` and `eval_tasks`.
  `algorithm` "maml" retrains with second-order MAML (BASE's few-shot table, Sec. 5.2),
  "fomaml" first order (T-NAS, CAML). `channels`, `num_cells` and `reduction_cells` scale
  the retrained network (None: the search network's skeleton; BASE's few-shot network has
  1.2M weights).
  """

  iterations: int = 25000
  task_pool: int = 10000
  meta_batch_size: int = 4
  inner_lr: float = 0.01
  inner_steps: int = 5
  test_steps: int = 10
  meta_lr: float = 0.001
  eval_every: int = 500
  eval_tasks: int = 100
  meta_lr_end: float | None = None
  algorithm: str = "fomaml"
  channels: int | None = None
  num_cells: int | None = None
  reduction_cells: tuple | None = None

  def __post_init__(self):
    if self.algorithm not in ALGORITHMS:
      raise checks.ConfigValueError(f"FromScratch.algorithm = {self.algorithm!r}: use one of "
                                    f"{ALGORITHMS}")

  def meta_learning_rate(self):
    """The meta learning rate: constant, or cosine-decayed to `meta_lr_end` over the
    iterations (CAML's evaluation)."""
    if self.meta_lr_end is None:
      return self.meta_lr
    return schedules.Cosine(self.meta_lr, self.meta_lr_end, self.iterations)


def network_for(search_network, genotype, num_classes, image_shape=None, settings=None):
  """The discrete network of `genotype` on the skeleton of `search_network` (stem, cells,
  channels; those `settings` scale replaced), with affine BatchNorms as the authors'
  retraining network; a search network with heads lends the stem kind of its head of
  `image_shape` ([H, W, C])."""
  stem = (search_network.heads[stem_lib.shape_key(image_shape)] if search_network.heads
          else search_network.stem)
  scale = lambda name: (getattr(settings, name, None) if getattr(settings, name, None)
                        is not None else getattr(search_network, name))
  return network_lib.FixedNetwork(
      genotype, num_classes, channels=scale("channels"), num_cells=scale("num_cells"),
      reduction_cells=scale("reduction_cells"),
      channel_doubling=search_network.channel_doubling,
      stem_multiplier=search_network.stem_multiplier, stem=stem, affine=True)


def learner_for(settings, model, seed=0):
  """(First-order) MAML with the settings' inner and meta learning rates."""
  return learner_lib.MetaLearner(
      model, algorithm=settings.algorithm,
      inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), settings.inner_lr),),
      train_phases=(inner_loop.Phase(settings.inner_steps),),
      test_phases=(inner_loop.Phase(settings.test_steps),),
      meta_learning_rates={"weights": settings.meta_learning_rate()},
      meta_optimizer=optimizers.MetaOptimizer(epsilon=1e-8), seed=seed)


def predict_queries(learner, tasks, inner_batch_size=None):
  """Query logits of each task (`tasks`: (index, dict) pairs holding only UNLABELED_KEYS)
  after adapting the learner to its support set (seeded by the task's index)."""
  out = []
  for index, task in tasks:
    adapted = learner.adapt(task["support_images"], task["support_labels"],
                            inner_batch_size=inner_batch_size, seed=index)
    out.append(np.asarray(adapted.predict(task["query_images"])))
  return out


def directory_name(genotype):
  """The retraining directory of `genotype`: a hash of its JSON, so a rerun with other
  test tasks finds (and resumes) each genotype's own retraining."""
  return "genotype_" + hashlib.sha256(genotype.to_json().encode("utf-8")).hexdigest()[:16]


def retrain(runner, genotype, settings, init="from_scratch"):
  """Meta-trains `genotype` in model_dir/<init>/<directory_name> (resumable), from random
  weights ("from_scratch") or from the search network's meta-weights of the ops the
  genotype keeps ("from_kept_weights", CAML Table 3), and returns its Runner with the
  checkpoint selected on meta-validation restored and the selection ({"step",
  "val_accuracy", "val_tasks"})."""
  if init not in INITS:
    raise ValueError(f"unknown initialization {init!r}; use one of {INITS}")
  scaled = [f"FromScratch.{name}" for name in ("channels", "num_cells", "reduction_cells")
            if getattr(settings, name) is not None]
  if init == "from_kept_weights" and scaled:
    raise checks.ConfigValueError(f"{', '.join(scaled)} rescale the network, whose weights "
                                  f"then cannot come from the search network's: unset them "
                                  f"for --decoded=from_kept_weights")
  stream = "train" if "train" in runner.streams else sorted(runner.streams)[0]
  image_shape = runner.splits["train"].image_shape
  train_spec = runner.streams[stream].spec
  retrainer = runner_lib.Runner(
      model_dir=runner.model_dir / init / directory_name(genotype),
      network=lambda num_classes: network_for(runner.model, genotype, num_classes,
                                              image_shape, settings),
      learner=lambda model, seed: learner_for(settings, model, seed),
      train_spec=train_spec, test_spec=runner.samplers["test"].spec,
      meta_batch_size=settings.meta_batch_size, num_iterations=settings.iterations,
      eval_every=settings.eval_every, eval_tasks=settings.eval_tasks, test_tasks=runner.test_tasks,
      checkpoint_every=settings.eval_every, log_every=max(settings.iterations // 20, 1),
      seed=runner.seed, splits=runner.splits, dataset=runner.dataset, select_on_val=True,
      streams=(streams_lib.TaskStream(pool=settings.task_pool),))
  if init == "from_kept_weights" and not retrainer.has_checkpoint():
    network_lib.copy_kept_weights(runner.model, retrainer.model, image_shape)
  retrainer.train()
  return retrainer, retrainer.restore_selected()


def predict_decoded(runner, results, settings, init="from_scratch"):
  """Retrains each distinct decoded genotype of `results` (a T-NAS / Auto-MAML meta-test's
  "decoded_genotypes", CAML's derived genotype) once and predicts the queries of the test
  tasks that decoded to it, from episodes stripped to UNLABELED_KEYS. Returns ({task
  index: query logits}, one entry per genotype with its selection and retraining
  protocol)."""
  decoded = results["method_results"].get("decoded_genotypes")
  if not decoded:
    raise ValueError(f"{runner.model_dir}: the results hold no decoded genotypes; "
                     f"--decoded={init} evaluates T-NAS, Auto-MAML and CAML runs")
  sampler = runner.samplers["test"]
  logits, per_genotype = {}, []
  for number, entry in enumerate(decoded):
    genotype = genotype_lib.Genotype.from_dict(entry["genotype"])
    logging.info("%s: genotype %d of %d (%d test tasks): %s", init, number + 1,
                 len(decoded), len(entry["tasks"]), genotype.summary())
    retrainer, selection = retrain(runner, genotype, settings, init)
    tasks = [(i, {k: sampler.episode(i)[k] for k in UNLABELED_KEYS}) for i in entry["tasks"]]
    logits.update(zip(entry["tasks"], predict_queries(retrainer.learner, tasks,
                                                      sampler.spec.inner_batch_size)))
    per_genotype.append({"genotype": entry["genotype"], "tasks": entry["tasks"],
                         "parameters": retrainer.parameter_count, "selection": selection,
                         "protocol": dict(retrainer.protocol(), num_tasks=len(tasks))})
  return logits, per_genotype


def evaluate(runner, results, settings=None, init="from_scratch"):
  """`predict_decoded`, then (only then) the queries' labels: writes model_dir/<init>.json
  (or <init>.<k>.json beside an earlier one: never over it) and returns it, its path
  under "results_path"."""
  settings = settings or FromScratch()
  logits, per_genotype = predict_decoded(runner, results, settings, init)
  sampler = runner.samplers["test"]
  spec = sampler.spec
  accuracies = [float(np.mean(np.argmax(logits[i], -1) == sampler.episode(i)["query_labels"]))
                for i in sorted(logits)]
  mean, ci = runner_lib.confidence_interval(accuracies)
  protocol = dict(per_genotype[0]["protocol"], num_tasks=len(accuracies))
  summary = {
      "method": results["method"], "evaluation": f"decoded genotypes retrained {INITS[init]}",
      "dataset": results["dataset"], "num_ways": spec.num_ways, "num_shots": spec.num_shots,
      "num_queries": spec.num_queries, "accuracy": mean, "ci95": ci,
      "num_tasks": len(accuracies), "distinct_genotypes": len(per_genotype),
      "parameters": float(np.mean([g["parameters"] for g in per_genotype
                                   for _ in g["tasks"]])),
      "budget": dataclasses.asdict(settings), "protocol": protocol,
      "task_accuracies": accuracies, "genotypes": per_genotype}
  path = runner.model_dir / runner_lib.free_name(runner.model_dir, init + ".{}.json",
                                                 first=f"{init}.json")
  if runner.chief:
    path.write_text(json.dumps(summary, indent=2))
  return dict(summary, results_path=str(path))


def summary_line(summary):
  """What a binary prints about a from-scratch evaluation."""
  budget = summary["budget"]
  return (f"{summary['method']} {summary['evaluation']} "
          f"({summary['distinct_genotypes']} distinct, each {budget['iterations']} "
          f"meta-iterations of {ALGORITHMS[budget.get('algorithm', 'fomaml')]}, checkpoint "
          f"chosen on {budget['eval_tasks']} meta-validation tasks), {summary['num_ways']}-way "
          f"{summary['num_shots']}-shot, {summary['num_tasks']} test tasks: accuracy "
          f"{100 * summary['accuracy']:.2f}% +- {100 * summary['ci95']:.2f}% (95% CI); "
          f"{summary['parameters']:.0f} parameters")
