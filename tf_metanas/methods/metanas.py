"""METANAS (Elsken et al. 2020): meta-learning an architecture together with its weights.

Task learner Phi^k (Eq. 3): k steps of DARTS on the support set updating the weights w and
the architecture a = (alpha, beta) on the same data, each with its own Adam (Table 4),
jointly from one forward/backward pass per step (or alternating, `joint=False`).
Meta-learner: Reptile (Eq. 4/9, here with the *mean* over the meta-batch:
a_meta <- a_meta + xi_meta * mean_T (a_T - a_meta), likewise w) or MAML (Eq. 8), both
from `MetaLearner`. During warm-up the architecture is neither adapted nor meta-updated.

Soft pruning (Sec. 4): the op weights softmax(alpha / tau_alpha) (Eq. 5) and the
input-combination weights softmax(beta / tau_beta) (Eq. 7) are normalized with
temperatures annealed over each task's inner steps; after task training, ops and input
combinations whose normalized weight is below a threshold are pruned, giving the
task-specific architecture, which is evaluated without retraining (Alg. 3).
"""

import collections
import dataclasses
import json
import pathlib

import gin
import numpy as np
import tensorflow as tf

from tf_metanas.meta import learner as learner_lib
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib
from tf_metanas.train import arch_summaries

NORMALIZERS = ("softmax", "gumbel")
KINDS = ("linear", "exponential")


@gin.configurable(module="tf_metanas.methods")
@dataclasses.dataclass(frozen=True)
class Temperature:
  """A softmax temperature annealed over the inner steps s = 0..T-1 of each task:

    linear:       tau_s = start + (end - start) * s / (T - 1)
    exponential:  tau_s = start * (end / start) ** (s / (T - 1))

  so the last inner step (and the prediction after it) uses `end`.
  """

  start: float = 1.0
  end: float = 1.0
  kind: str = "linear"

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"unknown temperature schedule {self.kind!r}; use one of {KINDS}")
    if self.start <= 0 or self.end <= 0:
      raise ValueError(f"temperatures must be positive, got start {self.start}, end {self.end}")

  def __call__(self, step, num_steps):
    frac = tf.minimum(tf.cast(step, tf.float32) / max(num_steps - 1, 1), 1.0)
    if self.kind == "linear":
      return self.start + (self.end - self.start) * frac
    return self.start * (self.end / self.start) ** frac


def gumbel_noise(shape):
  """Samples of Gumbel(0, 1): -log(-log(U)), U ~ Uniform(0, 1)."""
  uniform = tf.random.uniform(shape, minval=np.finfo(np.float32).tiny, maxval=1.0)
  return -tf.math.log(-tf.math.log(uniform))


@gin.configurable(module="tf_metanas.methods")
class Metanas(learner_lib.MetaLearner):
  """METANAS on a SearchNetwork: DARTS task learner, Reptile or MAML meta-learner.

  Args:
    model: a built SearchNetwork.
    tau_alpha: Temperature of the op weights (Eq. 5).
    tau_beta: Temperature of the input-combination weights (Eq. 7).
    normalizer: "softmax", or "gumbel": softmax((a + g) / tau) with fresh Gumbel noise g
      at every inner step (never on predictions after adaptation or for pruning).
    threshold: normalized weights below it are pruned after task training.
    report_tasks: adapted tasks whose architecture heatmaps and cells go to TensorBoard.
    **kwargs: MetaLearner arguments (algorithm, inner_groups "weights" and "arch",
      train/test phases, meta learning rates, joint, warmup_iterations, ...).
  """

  def __init__(self, model, tau_alpha=Temperature(), tau_beta=Temperature(),
               normalizer="softmax", threshold=0.01, report_tasks=3, **kwargs):
    if not isinstance(model, network_lib.SearchNetwork):
      raise ValueError(f"METANAS searches a SearchNetwork, got {type(model).__name__}")
    if normalizer not in NORMALIZERS:
      raise ValueError(f"unknown normalizer {normalizer!r}; use one of {NORMALIZERS}")
    self.tau_alpha, self.tau_beta = tau_alpha, tau_beta
    self.normalizer, self.threshold = normalizer, float(threshold)
    self.report_tasks = int(report_tasks)
    super().__init__(model, forward=self._forward, **kwargs)

  # ---- the parametrization -------------------------------------------------------------

  def _arch(self, params):
    if "arch" in params:
      return list(params["arch"])
    return [v.value for v in self.model.arch_variables]

  def mixture(self, arch, step, num_steps, threshold=0.0):
    """Mixture weights of `arch` at inner step `step` of `num_steps` (Eq. 5, 7)."""
    dtype = arch[0].dtype
    return self.model.mixture(arch, tf.cast(self.tau_alpha(step, num_steps), dtype),
                              tf.cast(self.tau_beta(step, num_steps), dtype), threshold)

  def _forward(self, model, params, images, step, num_steps):
    query = learner_lib.is_query(step, num_steps)
    arch = self._arch(params)
    if self.normalizer == "gumbel" and not query:
      arch = [a + gumbel_noise(tf.shape(a)) for a in arch]
    return model.functional_call(params["weights"], images, training=True,
                                 regularize=not query,
                                 mixture=self.mixture(arch, step, num_steps))

  def final_logits(self, params, images, num_steps):
    """Predictions of the task-specific (pruned) architecture with the adapted weights."""
    mixture = self.mixture(self._arch(params), num_steps, num_steps, self.threshold)
    return self.model.functional_call(params["weights"], images, training=True,
                                      regularize=False, mixture=mixture)

  def genotype_of(self, arch):
    """The task-specific genotype of architecture tensors `arch` after task training:
    the METANAS threshold rule at the end temperatures."""
    return self.model.genotype("threshold", arch=[tf.convert_to_tensor(a) for a in arch],
                               threshold=self.threshold, tau_alpha=self.tau_alpha.end,
                               tau_beta=self.tau_beta.end)

  # ---- evaluation -----------------------------------------------------------------------

  def _evaluate_task(self, task, params, num_steps):
    outputs = super()._evaluate_task(task, params, num_steps)
    outputs["arch"] = self._arch(params)
    return outputs

  def _evaluate_signature(self):
    signature = super()._evaluate_signature()
    signature["arch"] = [tf.TensorSpec(v.shape, v.dtype) for v in self.model.arch_variables]
    return signature

  def task_report(self, archs):
    """Genotypes and parameter counts of adapted tasks.

    Args:
      archs: architecture arrays in `arch_variables` order, each [tasks, ...].

    Returns:
      (genotypes, parameter counts, [(genotype, tasks, parameters)] most common first).
    """
    genotypes = [self.genotype_of([a[i] for a in archs]) for i in range(len(archs[0]))]
    counts = [self.model.count_params_of(g) for g in genotypes]
    size = dict(zip(genotypes, counts))
    common = collections.Counter(genotypes).most_common()
    return genotypes, counts, [(g, n, size[g]) for g, n in common]

  def summarize(self, outputs, step):
    """TensorBoard architecture views of an evaluation; returns the METANAS results: the
    distribution of task-specific parameter counts (paper Fig. 5) and the most common
    task-specific genotypes."""
    genotypes, counts, common = self.task_report(outputs["arch"])
    meta_arch = [v.value for v in self.model.arch_variables]
    meta_genotype = self.genotype_of(meta_arch)
    taus = (self.tau_alpha.end, self.tau_beta.end)
    arch_summaries.write_architecture("meta", self.model, meta_arch, *taus, step)
    arch_summaries.write_genotype("meta/genotype", meta_genotype, step)
    for i in range(min(self.report_tasks, len(genotypes))):
      arch_summaries.write_architecture(f"task_{i}", self.model,
                                        [a[i] for a in outputs["arch"]], *taus, step)
      arch_summaries.write_genotype(f"task_{i}/genotype", genotypes[i], step)
    arch_summaries.write_genotype("most_common/genotype", common[0][0], step)
    arch_summaries.write_genotype_table("genotypes", common[:5], len(genotypes), step)
    tf.summary.histogram("Architecture/task_parameters", counts, step=step)
    tf.summary.scalar("Architecture/task_parameters_mean", float(np.mean(counts)), step=step)
    tf.summary.scalar("Architecture/distinct_genotypes", len(common), step=step)
    tf.summary.scalar("Architecture/tau_alpha_end", self.tau_alpha.end, step=step)
    tf.summary.scalar("Architecture/tau_beta_end", self.tau_beta.end, step=step)
    return {
        "task_parameters": {"mean": float(np.mean(counts)), "std": float(np.std(counts)),
                            "min": int(np.min(counts)), "median": float(np.median(counts)),
                            "max": int(np.max(counts))},
        "task_parameter_counts": [int(c) for c in counts],
        "genotypes": [{"tasks": n, "parameters": p, "genotype": g.to_dict()}
                      for g, n, p in common[:5]],
        "meta_genotype": meta_genotype.to_dict(),
    }

  def adapt(self, support_images, support_labels, phases=None, inner_batch_size=None, seed=0):
    """Adapts weights and architecture to one new task (default: the test phases); the
    returned model predicts with the task-specific (pruned) architecture, whose genotype
    is `adapted.genotype`."""
    adapted = super().adapt(support_images, support_labels, phases, inner_batch_size, seed)
    adapted.genotype = self.genotype_of(self._arch(adapted.params))
    adapted.parameter_count = self.model.count_params_of(adapted.genotype)
    return adapted


def most_common_genotype(path):
  """The genotype stored at `path`: a METANAS results.json (its most common task-specific
  genotype) or a genotype JSON file (`Genotype.to_json`)."""
  data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
  if "genotypes" in data:
    data = data["genotypes"][0]["genotype"]
  return genotype_lib.Genotype.from_dict(data)


@gin.configurable(module="tf_metanas.methods")
def scaled_network(num_classes, genotype_file, channels=96, num_cells=5,
                   reduction_cells=(1, 3), drop_path_rate=0.2):
  """METANAS Sec. 5.2: the most common task-specific genotype of a METANAS run, scaled up
  (5 cells with reductions at the second and fourth, C = 96, DropPath 0.2) for retraining
  with Reptile."""
  return network_lib.FixedNetwork(most_common_genotype(genotype_file), num_classes,
                                  channels=channels, num_cells=num_cells,
                                  reduction_cells=reduction_cells,
                                  drop_path_rate=drop_path_rate)
