"""METANAS (Elsken et al. 2020): meta-learning an architecture together with its weights.

Task learner Phi^k (Eq. 3): k steps of DARTS on the support set updating the weights w and
the architecture a = (alpha, beta) on the same data, each with its own Adam (Table 4),
jointly from one forward/backward pass per step (or alternating, `joint=False`).
Meta-learner: Reptile (Eq. 4/9, here with the *mean* over the meta-batch:
a_meta <- a_meta + xi_meta * mean_T (a_T - a_meta), likewise w) or MAML (Eq. 8), both
from `MetaLearner`. During warm-up the architecture is neither adapted nor meta-updated.

Soft pruning (Sec. 4): the op weights softmax(alpha / tau_alpha) (Eq. 5) and the
input-combination weights softmax(beta / tau_beta) (Eq. 7) are normalized with
temperatures annealed over each task's architecture-adaptation steps; after task training,
ops and input combinations whose normalized weight is at or below a threshold are pruned,
giving the task-specific architecture, which is evaluated without retraining (Alg. 3).

Where the paper is silent we follow the authors' code (boschresearch/metanas):
  - temperatures fall linearly over the steps that adapt the architecture and hold their
    end value for the weights-only steps and the prediction; during warm-up they stay at
    their start value (`Darts.step`, `SoftMax`);
  - ops and input combinations whose weight is at or below a threshold are skipped in
    every forward, during meta-training (`alpha_prune_threshold` 0.01) and at meta-test
    (0.05 in their meta-testing scripts; the paper gives "e.g. >= 0.01");
  - every `meta_prune_every` meta-iterations, the meta-architecture's op logits whose
    weight at the end temperature is below `meta_prune_threshold` are set to -1e9 for good
    (`prune_alphas`, after every evaluation, i.e. every 2,500 meta-iterations);
  - the genotype scaled up in Sec. 5.2 is the pairwise one (`parse_pairwise`: the strongest
    input pair per node, the strongest op on each of its two edges).
"""

import collections
import dataclasses
import json
import pathlib

import gin
import numpy as np
import tensorflow as tf

from tf_metanas.arch import gumbel
from tf_metanas.arch import structure as structure_lib
from tf_metanas.meta import learner as learner_lib
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib
from tf_metanas.train import arch_summaries

NORMALIZERS = ("softmax", "gumbel")
PRUNED_LOGIT = -1e9  # the authors' -10e8: exp(PRUNED_LOGIT / tau) is exactly 0
KINDS = ("linear", "exponential")


@gin.configurable(module="tf_metanas.methods")
@dataclasses.dataclass(frozen=True)
class Temperature:
  """A softmax temperature annealed over the A architecture-adaptation steps s = 0..A-1 of
  each task (the authors' `SoftMax` with `linear` annealing):

    linear:       tau_s = start + (end - start) * min(s / (A - 1), 1)
    exponential:  tau_s = start * (end / start) ** min(s / (A - 1), 1)

  so the last architecture step, every weights-only step after it and the prediction use
  `end` (with a single architecture step, that step uses `start` and the steps after it
  `end`); with no architecture steps (warm-up) it stays at `start`. `test_end` (default
  `end`) is the end value when adapting to new tasks (meta-test): the authors' Omniglot
  scripts meta-train to 0.05 and meta-test to 0.1.
  """

  start: float = 1.0
  end: float = 1.0
  kind: str = "linear"
  test_end: float | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"unknown temperature schedule {self.kind!r}; use one of {KINDS}")
    if min(self.start, self.end, self.final(False)) <= 0:
      raise ValueError(f"temperatures must be positive, got start {self.start}, end "
                       f"{self.end}, test_end {self.test_end}")

  def final(self, meta_training=True):
    """The end value of meta-training, or of adaptation to new tasks."""
    return self.end if meta_training or self.test_end is None else self.test_end

  def __call__(self, step, arch_steps, meta_training=True):
    if not arch_steps:
      return tf.constant(self.start)
    end = self.final(meta_training)
    frac = tf.minimum(tf.cast(step, tf.float32) / max(arch_steps - 1, 1), 1.0)
    if self.kind == "linear":
      return self.start + (end - self.start) * frac
    return self.start * (end / self.start) ** frac


gumbel_noise = gumbel.noise  # moved to tf_metanas.arch.gumbel


@gin.configurable(module="tf_metanas.methods")
class Metanas(learner_lib.MetaLearner):
  """METANAS on a SearchNetwork: DARTS task learner, Reptile or MAML meta-learner.

  Args:
    model: a built SearchNetwork.
    tau_alpha: Temperature of the op weights (Eq. 5).
    tau_beta: Temperature of the input-combination weights (Eq. 7).
    normalizer: "softmax", or "gumbel": softmax((a + g) / tau) with fresh Gumbel noise g
      at every inner step, drawn from the task's stateless seed (never on predictions
      after adaptation or for pruning).
    threshold: adapting to a new task, op and combination weights at or below it are
      skipped in every forward; what survives after the last step is the task-specific
      architecture (its genotype and parameter count).
    train_threshold: the same skipping during meta-training (0: off).
    meta_prune_threshold: op logits of the meta-architecture whose weight at the end
      temperature is below it are set to -1e9 (removed for good) every `meta_prune_every`
      meta-iterations (0: never).
    meta_prune_every: meta-iterations between those prunings.
    report_tasks: adapted tasks whose architecture heatmaps and cells go to TensorBoard.
    **kwargs: MetaLearner arguments (algorithm, inner_groups "weights" and "arch",
      train/test phases, meta learning rates, joint, warmup_iterations, ...).
  """

  def __init__(self, model, tau_alpha=Temperature(), tau_beta=Temperature(),
               normalizer="softmax", threshold=0.01, train_threshold=0.0,
               meta_prune_threshold=0.0, meta_prune_every=0, report_tasks=3, **kwargs):
    if not isinstance(model, network_lib.SearchNetwork):
      raise ValueError(f"METANAS searches a SearchNetwork, got {type(model).__name__}")
    if normalizer not in NORMALIZERS:
      raise ValueError(f"unknown normalizer {normalizer!r}; use one of {NORMALIZERS}")
    if meta_prune_threshold and meta_prune_every <= 0:
      raise ValueError(f"Metanas.meta_prune_threshold = {meta_prune_threshold} needs "
                       f"Metanas.meta_prune_every > 0, got {meta_prune_every}")
    self.tau_alpha, self.tau_beta = tau_alpha, tau_beta
    self.normalizer, self.threshold = normalizer, float(threshold)
    self.train_threshold = float(train_threshold)
    self.meta_prune_threshold, self.meta_prune_every = float(meta_prune_threshold), int(meta_prune_every)
    self.report_tasks, self._last_report = int(report_tasks), None
    super().__init__(model, forward=self._forward, **kwargs)
    self.structure = structure_lib.Structure(len(model.cells[0].edges), model.op_names)

  # ---- the parametrization -------------------------------------------------------------

  def _arch(self, params):
    if "arch" in params:
      return list(params["arch"])
    return [v.value for v in self.model.arch_variables]

  def mixture(self, arch, context):
    """Mixture weights of `arch` in `context` (its step of its protocol; Eq. 5, 7), with the
    weights at or below the protocol's threshold skipped and the ops the structure has
    removed not computed."""
    dtype, meta_training = arch[0].dtype, context.meta_training
    arch_steps = context.protocol.steps_of("arch")
    return self.model.mixture(
        arch, tf.cast(self.tau_alpha(context.step, arch_steps, meta_training), dtype),
        tf.cast(self.tau_beta(context.step, arch_steps, meta_training), dtype),
        self.train_threshold if meta_training else self.threshold,
        None if self.structure.is_full() else self.structure.op_masks())

  def _forward(self, model, params, images, context):
    arch = self._arch(params)
    if self.normalizer == "gumbel" and not context.query:
      arch = [a + gumbel.noise(tf.shape(a), None if context.seed is None
                               else context.draw_seed(salt=1 + i), a.dtype)
              for i, a in enumerate(arch)]
    return model.functional_call(params["weights"], images, training=True,
                                 regularize=context.regularize, seed=context.draw_seed(),
                                 mixture=self.mixture(arch, context))

  def structure_key(self):
    """The ops the structure keeps: part of the trace key (removed ops are not traced)."""
    return self.structure.key()

  def prediction_temperatures(self, protocol=None):
    """(tau_alpha, tau_beta) of the prediction after adapting with `protocol` (default: the
    test phases): the end values, or the start ones if no step adapts the architecture."""
    protocol = protocol or self.protocol()
    return tuple(float(tau(protocol.num_steps, protocol.steps_of("arch"), protocol.meta_training))
                 for tau in (self.tau_alpha, self.tau_beta))

  def genotype_of(self, arch, protocol=None):
    """The task-specific genotype of architecture tensors `arch` after adaptation to a new
    task with `protocol` (default: the test phases): the METANAS threshold rule at the
    temperatures the prediction uses, i.e. the architecture that predicts."""
    tau_alpha, tau_beta = self.prediction_temperatures(protocol)
    arch = self.structure.masked_alphas([tf.convert_to_tensor(a) for a in arch])
    return self.model.genotype("threshold", arch=arch,
                               threshold=self.threshold, tau_alpha=tau_alpha, tau_beta=tau_beta)

  def pairwise_genotype_of(self, arch):
    """The genotype scaled up in Sec. 5.2: two ops per node by the authors' pairwise rule."""
    arch = self.structure.masked_alphas([tf.convert_to_tensor(a) for a in arch])
    return self.model.genotype("pairwise", arch=arch)

  # ---- meta-training ----------------------------------------------------------------------

  def checkpoint_items(self):
    return {**super().checkpoint_items(), **self.structure.checkpoint_items()}

  def after_iteration(self, step):
    """Every `meta_prune_every` meta-iterations, meta-architecture pruning."""
    if self.meta_prune_threshold and step % self.meta_prune_every == 0:
      self.prune_meta_architecture()

  def prune_meta_architecture(self):
    """Sets the op logits whose weight softmax(alpha / tau_end) is below
    `meta_prune_threshold` to -1e9: those ops are gone from the meta-architecture for good
    (the input-combination logits are kept, as the authors' `prune_alphas`). Returns the
    number of op entries removed so far."""
    removed = 0
    for alpha in (self.model.alpha_normal, self.model.alpha_reduce):
      weights = tf.nn.softmax(alpha / self.tau_alpha.end, axis=-1)
      alpha.assign(tf.where(weights < self.meta_prune_threshold, PRUNED_LOGIT, alpha))
      removed += int(tf.reduce_sum(tf.cast(alpha <= PRUNED_LOGIT, tf.int32)))
    return removed

  # ---- evaluation -----------------------------------------------------------------------

  def evaluate_task(self, task, params, context):
    outputs = super().evaluate_task(task, params, context)
    outputs["arch"] = self._arch(params)
    return outputs

  def evaluate_signature(self):
    signature = super().evaluate_signature()
    signature["arch"] = [tf.TensorSpec(v.shape, v.dtype) for v in self.model.arch_variables]
    return signature

  def method_name(self):
    return "metanas"

  def task_parameter_counts(self, outputs):
    """The parameters of each task's task-specific (pruned) architecture."""
    return self.task_report(outputs["arch"])[1]

  def report(self, results):
    """Lines: the task-specific parameter counts; how many distinct task-specific genotypes
    the tasks pruned to (the most common one only when tasks share it); the headline
    architecture, the most common pairwise genotype (two ops per node: what Sec. 5.2 scales
    up), in `Genotype.compact` form."""
    sizes, lines = results["task_parameters"], []
    lines.append(f"task-specific parameters: mean {sizes['mean']:.0f}, min {sizes['min']}, "
                 f"max {sizes['max']}")
    tasks = len(results["task_parameter_counts"])
    compact = lambda entry: genotype_lib.Genotype.from_dict(entry["genotype"]).compact()
    common = results["task_genotypes"][0]
    line = (f"task-specific genotypes: {results['distinct_task_genotypes']} distinct over "
            f"{tasks} tasks")
    if common["tasks"] > 1:
      line += (f"; the most common ({common['tasks']} tasks, {common['parameters']} "
               f"parameters): {compact(common)}")
    lines.append(line)
    pairwise = results["genotypes"][0]
    lines.append(f"architecture (most common pairwise genotype, {pairwise['tasks']} of {tasks} "
                 f"tasks, {results['distinct_genotypes']} distinct; to scale up): "
                 f"{compact(pairwise)}")
    return lines

  def task_report(self, archs):
    """Genotypes and parameter counts of adapted tasks.

    Args:
      archs: architecture arrays in `arch_variables` order, each [tasks, ...].

    Returns:
      (task-specific genotypes, their parameter counts, [(genotype, tasks, parameters)] of
      the task-specific genotypes most common first, the same of the pairwise genotypes).
    """
    if self._last_report and self._last_report[0] is archs:  # summarize, then the counts
      return self._last_report[1]
    tasks = [[a[i] for a in archs] for i in range(len(archs[0]))]
    genotypes = [self.genotype_of(arch) for arch in tasks]
    counts = [self.model.count_params_of(g) for g in genotypes]
    report = (genotypes, counts, self._most_common(genotypes),
              self._most_common([self.pairwise_genotype_of(arch) for arch in tasks]))
    self._last_report = (archs, report)
    return report

  def _most_common(self, genotypes):
    return [(g, n, self.model.count_params_of(g))
            for g, n in collections.Counter(genotypes).most_common()]

  def summarize(self, outputs, step):
    """TensorBoard architecture views of an evaluation; returns the METANAS results: the
    distribution of task-specific parameter counts (paper Fig. 5), the most common
    task-specific genotypes and the most common pairwise genotypes (what Sec. 5.2 scales
    up; `parameters` counts them in the supernet)."""
    genotypes, counts, common, pairwise = self.task_report(outputs["arch"])
    meta_arch = self.structure.masked_alphas([v.value for v in self.model.arch_variables])
    meta_genotype = self.genotype_of(meta_arch)
    test_taus = self.prediction_temperatures()
    task_archs = [self.structure.masked_alphas([a[i] for a in outputs["arch"]])
                  for i in range(min(self.report_tasks, len(genotypes)))]
    arch_summaries.write_adaptation(self.model, meta_arch, meta_genotype, task_archs,
                                    genotypes, common, counts, test_taus, self.report_tasks,
                                    step)
    arch_summaries.write_genotype("most_common_pairwise/genotype", pairwise[0][0], step)
    arch_summaries.write_genotype_table("pairwise_genotypes", pairwise[:5], len(genotypes), step)
    tf.summary.scalar("Architecture/tau_alpha_end", test_taus[0], step=step)
    tf.summary.scalar("Architecture/tau_beta_end", test_taus[1], step=step)
    as_dicts = lambda rows: [{"tasks": n, "parameters": p, "genotype": g.to_dict()}
                             for g, n, p in rows[:5]]
    return {
        "task_parameters": {"mean": float(np.mean(counts)), "std": float(np.std(counts)),
                            "min": int(np.min(counts)), "median": float(np.median(counts)),
                            "max": int(np.max(counts))},
        "task_parameter_counts": [int(c) for c in counts],
        "task_genotypes": as_dicts(common),
        "distinct_task_genotypes": len(common),
        "genotypes": as_dicts(pairwise),
        "distinct_genotypes": len(pairwise),
        "genotype_rule": "pairwise",
        "meta_genotype": meta_genotype.to_dict(),
        "meta_pairwise_genotype": self.pairwise_genotype_of(meta_arch).to_dict(),
    }

  def adapt(self, support_images, support_labels, phases=None, inner_batch_size=None, seed=0):
    """Adapts weights and architecture to one new task (default: the test phases); the
    returned model predicts with the task-specific (pruned) architecture, whose genotype
    is `adapted.genotype`."""
    adapted = super().adapt(support_images, support_labels, phases, inner_batch_size, seed)
    adapted.genotype = self.genotype_of(self._arch(adapted.params), adapted.protocol)
    adapted.parameter_count = self.model.count_params_of(adapted.genotype)
    return adapted


def most_common_genotype(path):
  """The genotype stored at `path`: a METANAS results.json (its most common pairwise
  genotype, two ops per node, what Sec. 5.2 scales up) or a genotype JSON file
  (`Genotype.to_json`)."""
  data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
  data = data.get("method_results", data)
  if "genotypes" in data:
    if data.get("genotype_rule") != "pairwise":
      raise ValueError(
          f"{path} is the results file of an older METANAS version, whose 'genotypes' are "
          f"task-specific (threshold rule) genotypes, not the pairwise ones Sec. 5.2 scales "
          f"up: evaluate that run again with tools/evaluate.py, or pass a genotype JSON file")
    data = data["genotypes"][0]["genotype"]
  return genotype_lib.Genotype.from_dict(data)


@gin.configurable(module="tf_metanas.methods")
def scaled_network(num_classes, genotype_file, channels=96, num_cells=5,
                   reduction_cells=(1, 3), drop_path_rate=0.2):
  """METANAS Sec. 5.2: the most common pairwise genotype of a METANAS run, scaled up
  (5 cells with reductions at the second and fourth, C = 96, DropPath 0.2) for retraining
  with Reptile."""
  return network_lib.FixedNetwork(most_common_genotype(genotype_file), num_classes,
                                  channels=channels, num_cells=num_cells,
                                  reduction_cells=reduction_cells,
                                  drop_path_rate=drop_path_rate)
