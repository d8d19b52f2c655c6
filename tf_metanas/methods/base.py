"""BASE (Shaw et al. 2019): Bayesian meta architecture search by optimization embedding.

The model (Sec. 3): shared weights w and architecture logits a (a normal and a reduction
cell, one categorical over the ops of every edge of a DARTS cell). The task posterior
(Sec. 4, Eq. 7-8) is q(z | a_T) = relaxed categorical of every edge,

  z = softmax((a_T + g) / tau),  g ~ Gumbel(0, 1)           ("gumbel")
  z = softmax(a_T / tau)                                    ("softmax", the paper's ablation)

and q(w) = delta(w_T): the weight posterior is a point estimate (the paper's Gaussian with
its variance taken to 0; no weight noise is drawn), where (w_T, a_T) come from unrolling T
steps of stochastic gradient ascent on the task's ELBO from the shared (w, a) (Eq. 10,
Algorithm 1): each inner step draws fresh Gumbel noise, from the task's stateless seed
(`TaskContext.draw_seed(salt=1 + i)`, the step folded in, as METANAS's "gumbel" normalizer),
so a task draws the same samples on one device, under MirroredStrategy and under XLA.

The task ELBO's negative, per support example (the loss hook, `Prior`):

  L_S(w, a) = CE(S; w, z) + [ lambda/2 * ||w - mu||^2
                              + beta * sum_{cells, edges e} KL(Cat(softmax(a_e)) || Cat(softmax(a0_e))) ] / N

with CE the mean cross-entropy of the step's support batch under the sampled z, N the
task's support size, mu the shared weights the task started from (`weight_mean="meta"`) or
0, a0 the shared architecture (`arch_prior="meta"`) or uniform logits. The KL of the
categoricals stands in for the KL of the relaxed (concrete) distributions, which has no
closed form (a prior of the relaxed posterior would need Monte-Carlo estimates of its
density); it is temperature-free. lambda = 0 is the improper flat weight prior (the MAML
limit the paper notes). The meta-training query loss is CE only (`in_meta_loss=False`), on
a posterior sample if `sample_query` (the ELBO's expectation, one sample).

Meta-update ("meta_update"):
  "maml":    second order through the T unrolled steps (the noise fixed by the seeds):
             Adam on mean_T d L_Q(w_T, a_T) / d(w, a) (the paper's few-shot setting);
  "fomaml":  the same with the inner gradients held constant;
  "reptile": the finite-difference form of Sec. 4 ("summarizing the task-specific
             parameters"): (w, a) <- (w, a) + eps * mean_T ((w_T, a_T) - (w, a)), the exact
             step, eps = the group's meta learning rate (default 1.0: the mean of the
             adapted values; a float or a schedule of the meta-iteration).

Temperature: the paper is silent; `tau` is a float or a schedule of the meta-iteration
(read at `step`, e.g. `schedules.Exponential(1.0, 0.2, iterations)`, our choice for the
Gumbel configs; 1.0 for softmax), the same for every inner step of an iteration.

Adaptation and derivation (Sec. 4 end, Sec. 5.2): a new task runs the inner steps (10 by
default) and takes the most probable architecture of its posterior Cat(softmax(a_T)) within
the cell space, i.e. the DARTS rule (each node's two strongest incoming edges by their
strongest non-"none" op, that op on each; `arch.mixture.darts_logits`): an unconstrained
per-edge argmax would keep "none" and more than two inputs per node. The task predicts with
that network and its kept weights w_T, no noise; the supernet's noise-free prediction
softmax(a_T / tau) and one seeded posterior sample's genotype are reported beside it. The
decoded genotypes are reported as T-NAS's (`decoded_genotypes`), so
`tools/evaluate.py --decoded=from_scratch` retrains them.

The per-node pair space (`search.pair_network.NodePairSearchNetwork`, the authors'
genotypes: two (input, op) pairs per node, with replacement) runs on the same code: the
noise is added to its [slots, edges, ops] logits, its mixture is the block-wise relaxed
sample, the KL runs over each node slot's block, and the most probable architecture is the
argmax pair of every slot (never "none").

Averaged derivation (Sec. 5.2, the paper's ImageNet architecture: "averaging the sampled
architecture distributions for 8 random datasets"): the most probable architecture of the
mean posterior, p_bar = 1/n sum_t Cat(softmax(a_T,t)) over the first `average_tasks`
tasks of an evaluation (`averaged_arch`: log p_bar, per categorical), reported as
"averaged_genotype". It reads the tasks' adapted posteriors only, i.e. their support sets.

TensorBoard (`summarize`): T-NAS's views, i.e. heatmaps of the posterior categoricals
softmax(a_T) (temperature-free) of the meta prior and of `report_tasks` adapted tasks, their
decoded cells, the table of decoded genotypes; plus the genotypes of one posterior sample per
task (Architecture/sampled_genotypes), the share of tasks whose sample is their MAP
architecture, tau, the averaged derivation's cells, and the paper's Figure 3 for the
evaluated tasks (Architecture/posterior_pca: each task's adapted posterior, its
log-probabilities flattened, on the first two principal components, coloured by MAP
genotype, the meta prior as a star). Figure 3's other half, the weights' posteriors, is not
drawn: a task's adapted weights are not kept past its evaluation.

Multi-size multi-task (Sec. 5.1): a network with a head per image shape
(`SearchNetwork.heads`, e.g. {"28x28x1": "conv", "32x32x3": "conv", "84x84x3": "pooled"}:
the strides are chosen so the cells see comparable resolutions, as the paper's 1/2 for 32
and 64 pixels and 1/8 for 224) and `stream_heads` naming each task stream's head
(`TaskStream.source` loads a stream's own dataset). Each meta-iteration adapts one task of
every stream per meta-batch index: the task's head is adapted with the weights (its inner
group copies the weights' optimizer and rate), and `rules.StreamMixture` meta-updates the
shared cells, classifier and architecture from every stream's tasks (the mean) and each
head from its own stream's tasks alone, with its own meta optimizer.
"""

import collections
import dataclasses

import gin
import numpy as np
import tensorflow as tf

from tf_metanas import checks
from tf_metanas.arch import gumbel
from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.meta import inner_loop
from tf_metanas.meta import learner as learner_lib
from tf_metanas.meta import losses
from tf_metanas.meta import optimizers
from tf_metanas.meta import rules
from tf_metanas.meta import schedules
from tf_metanas.methods import tnas
from tf_metanas.search import network as network_lib
from tf_metanas.search import pair_network
from tf_metanas.search import stem as stem_lib
from tf_metanas.search import topology
from tf_metanas.search import visualize
from tf_metanas.train import arch_summaries

POSTERIORS = ("gumbel", "softmax")
META_UPDATES = ("maml", "fomaml", "reptile")
WEIGHT_MEANS = ("meta", "zero")
ARCH_PRIORS = ("meta", "uniform")
SAMPLE_SALT = 1000  # the salt (+ i) of the reported posterior sample's noise


@gin.configurable(module="tf_metanas.methods")
@dataclasses.dataclass(frozen=True)
class Prior:
  """The log-prior terms of the task ELBO (see the module docstring), per support example.

  Attributes:
    weight_precision: lambda of the Gaussian weight prior N(mu, 1/lambda) (0: flat).
    weight_mean: "meta" (mu = the shared weights the task starts from) or "zero".
    arch_kl: beta, the weight of the architecture KL (0: none).
    arch_prior: "meta" (the shared logits a0) or "uniform" (logits 0).
    in_meta_loss: add the terms to the meta-training query loss too.
  """

  weight_precision: float = 0.0
  weight_mean: str = "meta"
  arch_kl: float = 1.0
  arch_prior: str = "meta"
  in_meta_loss: bool = False

  def __post_init__(self):
    if self.weight_mean not in WEIGHT_MEANS:
      raise ValueError(f"unknown Prior.weight_mean {self.weight_mean!r}; use one of {WEIGHT_MEANS}")
    if self.arch_prior not in ARCH_PRIORS:
      raise ValueError(f"unknown Prior.arch_prior {self.arch_prior!r}; use one of {ARCH_PRIORS}")
    if self.weight_precision < 0 or self.arch_kl < 0:
      raise ValueError(f"Prior.weight_precision and arch_kl must be >= 0, got "
                       f"{self.weight_precision}, {self.arch_kl}")

  def weight_term(self, weights, initial):
    """lambda/2 * ||w - mu||^2 (summed over every weight tensor)."""
    if not self.weight_precision:
      return 0.0
    means = initial if self.weight_mean == "meta" else [tf.zeros_like(w) for w in weights]
    return 0.5 * self.weight_precision * tf.add_n(
        [tf.reduce_sum(tf.square(w - m)) for w, m in zip(weights, means)])

  def arch_term(self, arch, initial):
    """beta * sum of KL(Cat(a) || Cat(a0)) over the categoricals: the last axis of every
    tensor of `arch` (the cell space: one per edge; the pair space: one per node slot)."""
    if not self.arch_kl:
      return 0.0
    total = 0.0
    for a, a0 in zip(arch, initial):
      prior = a0 if self.arch_prior == "meta" else tf.zeros_like(a)
      log_p, log_q = tf.nn.log_softmax(a, -1), tf.nn.log_softmax(prior, -1)
      total += tf.reduce_sum(tf.exp(log_p) * (log_p - log_q))
    return self.arch_kl * total

  def terms(self, params, initial, support_size):
    """[lambda/2 ||w - mu||^2 + beta KL] / N of parameters `params` (group -> tensors)."""
    value = (self.weight_term(params["weights"], initial["weights"]) +
             self.arch_term(params["arch"], initial["arch"]))
    return value / float(max(support_size, 1))


def _with_heads(model, stream_heads, settings, meta_update):
  """MetaLearner settings for a network with heads: an inner group per head (the weights'
  optimizer and rate), adapted wherever the weights are, its meta learning rate the
  weights', and a StreamMixture giving each stream its head."""
  heads = dict(getattr(model, "heads", None) or {})
  if not heads or not stream_heads:
    raise checks.ConfigValueError(
        "Base.stream_heads (task stream -> image shape 'HxWxC') and SearchNetwork.heads "
        "(image shape -> stem kind) go together: set both, or neither")
  own = {}
  for stream, key in stream_heads.items():
    key = stem_lib.shape_key(stem_lib.parse_key(key))
    if key not in heads:
      raise checks.ConfigValueError(f"Base.stream_heads[{stream!r}] = {key!r}, but "
                                    f"SearchNetwork.heads has {sorted(heads)}")
    own[stream] = (network_lib.HEAD_PREFIX + key,)
  names = list(model.head_groups)
  groups = {g.name: g for g in settings["inner_groups"]}
  weights = groups["weights"]
  inner = tuple(groups.values()) + tuple(dataclasses.replace(weights, name=n) for n in names)
  widen = lambda phases: tuple(
      dataclasses.replace(p, groups=tuple(p.groups) + tuple(names)) if "weights" in p.groups
      else p for p in phases)
  rates = dict(settings["meta_learning_rates"])
  rates.update({n: rates["weights"] for n in names if n not in rates})
  return {**settings, "inner_groups": inner, "train_phases": widen(settings["train_phases"]),
          "test_phases": widen(settings["test_phases"]), "meta_learning_rates": rates,
          "rule": rules.StreamMixture(rules.from_algorithm(meta_update), own)}


def _temperature_value(tau, step):
  return tau(step) if callable(tau) else tau


@gin.configurable(module="tf_metanas.methods")
class Base(tnas.Tnas):
  """BASE on a DARTS SearchNetwork (input_k = 0, an op set with "none"), or on the per-node
  pair space (`search.pair_network.NodePairSearchNetwork`: two (input, op) slots per node,
  each one categorical over the node's block; its most probable architecture is the argmax
  pair of every slot, never "none").

  Without arguments: the Gumbel posterior at tau = 1, priors beta = 1 (KL to the shared
  architecture) and lambda = 0, inner SGD on w (0.01) and a (0.1) jointly from one backward
  pass per step, T = 5 steps in meta-training and 10 when adapting to a new task (our
  choices: the paper gives no numbers), second-order MAML with Adam 1e-3 on both groups
  (Reptile: the exact step eps = 1.0, the mean of the adapted values).

  Args:
    model: a built SearchNetwork (DARTS cell space) or NodePairSearchNetwork.
    posterior: "gumbel" or "softmax".
    tau: the temperature, a float or a schedule of the meta-iteration.
    sample_query: the meta-training query pass also draws a posterior sample (Gumbel);
      never the prediction after adaptation to a new task.
    prior: the `Prior` terms of the inner (and optionally the meta) loss.
    meta_update: "maml" (second order), "fomaml" or "reptile".
    report_tasks: adapted tasks whose posterior heatmaps go to TensorBoard.
    average_tasks: tasks whose posteriors the averaged derivation averages (the paper: 8).
    stream_heads: multi-size: task stream name -> the image shape "HxWxC" of its head in
      the network's `heads` (see the module docstring); None: one stream, "train".
    **kwargs: MetaLearner arguments over the defaults (inner_groups, train_phases,
      test_phases, meta_learning_rates, meta_optimizer, jit_compile, seed, ...).
  """

  def __init__(self, model, posterior="gumbel", tau=1.0, sample_query=True, prior=Prior(),
               meta_update="maml", report_tasks=3, average_tasks=8, stream_heads=None,
               **kwargs):
    if posterior not in POSTERIORS:
      raise ValueError(f"unknown Base.posterior {posterior!r}; use one of {POSTERIORS}")
    if meta_update not in META_UPDATES:
      raise ValueError(f"unknown Base.meta_update {meta_update!r}; use one of {META_UPDATES}")
    for name in ("algorithm", "rule", "forward", "loss"):
      if kwargs.get(name) is not None:
        raise ValueError(f"Base sets MetaLearner.{name} itself (use Base.meta_update, "
                         f"Base.prior)")
      kwargs.pop(name, None)
    if not callable(tau) and float(tau) <= 0:
      raise ValueError(f"Base.tau must be positive, got {tau}")
    self.posterior, self.tau, self.sample_query = posterior, tau, bool(sample_query)
    self.prior, self.meta_update = prior, meta_update
    reptile = meta_update == "reptile"
    rate = 1.0 if reptile else 1e-3
    defaults = dict(
        inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), 0.01),
                      inner_loop.ParamGroup("arch", optimizers.SGD(), 0.1)),
        train_phases=(inner_loop.Phase(5, ("weights", "arch")),),
        test_phases=(inner_loop.Phase(10, ("weights", "arch")),),
        meta_learning_rates={"weights": rate, "arch": rate},
        meta_optimizer="sgd" if reptile else "adam")
    self.pairs = isinstance(model, pair_network.NodePairSearchNetwork)
    if not self.pairs:
      tnas._check_supernet(model)  # pylint: disable=protected-access
    elif not isinstance(model, network_lib.SearchNetwork):
      raise ValueError(f"BASE searches a SearchNetwork, got {type(model).__name__}")
    self.report_tasks = int(report_tasks)
    self.average_tasks = checks.count("Base.average_tasks", average_tasks)
    settings = {**defaults, **kwargs, "forward": self._forward, "loss": self._loss}
    if getattr(model, "heads", None) or stream_heads:
      settings = _with_heads(model, stream_heads, settings, meta_update)
    else:
      settings["algorithm"] = meta_update
    # T-NAS's views and decoding, not its defaults or its checks (the pair space)
    init = learner_lib.MetaLearner.__init__  # pylint: disable=non-parent-init-called
    init(self, model, **settings)

  # ---- the posterior --------------------------------------------------------------------

  def temperature(self, dtype=tf.float32):
    """tau at the current meta-iteration."""
    return tf.cast(_temperature_value(self.tau, self.step), dtype)

  def training_scalars(self):
    """The MetaLearner's, and the temperature tau of the next meta-iteration."""
    return {**super().training_scalars(), "tau": float(self.temperature())}

  def step_counts(self):
    """The MetaLearner's, and tau's annealing schedule."""
    counts = super().step_counts()
    if isinstance(self.tau, schedules.Annealing):
      counts[f"{type(self.tau).__name__}.steps (tau)"] = self.tau.steps
    return counts

  def samples(self, context):
    """Whether a forward in `context` draws a posterior sample: every inner step with the
    Gumbel posterior, the meta-training query if `sample_query`, never a prediction after
    adaptation to a new task."""
    if self.posterior != "gumbel":
      return False
    return not context.query or (self.sample_query and context.meta_training)

  def noised(self, arch, context, salt=1):
    """a + g, g ~ Gumbel(0, 1) drawn from the context's seed (salt + i for tensor i)."""
    return [a + gumbel.noise(tf.shape(a), context.draw_seed(salt=salt + i), a.dtype)
            for i, a in enumerate(arch)]

  def _arch(self, params):
    if "arch" in params:
      return list(params["arch"])
    return [v.value for v in self.model.arch_variables]

  def _forward(self, model, params, images, context):
    arch = self._arch(params)
    if self.samples(context):
      arch = self.noised(arch, context)
    mixture = model.mixture(arch, self.temperature(arch[0].dtype))
    return model.functional_call(None, images, training=True, regularize=context.regularize,
                                 seed=context.draw_seed(), groups=params, mixture=mixture)

  def categoricals(self, arch):
    """The architecture's categoricals, each along the last axis: the edges' op logits
    (cell space) or the node slots' (input, op) blocks (pair space)."""
    if self.pairs:
      return self.model.categoricals(arch)
    return list(arch)

  def _loss(self, logits, labels, params, initial_params, context):
    """Mean cross-entropy, plus the prior terms on support batches (and on the query with
    `in_meta_loss`)."""
    loss = losses.cross_entropy(logits, labels)
    if context.query and not self.prior.in_meta_loss:
      return loss
    full = {"weights": params.get("weights", initial_params["weights"]),
            "arch": self.categoricals(self._arch(params))}
    initial = {"weights": initial_params["weights"],
               "arch": self.categoricals(self._arch(initial_params))}
    return loss + tf.cast(self.prior.terms(full, initial, context.support_size), loss.dtype)

  # ---- derivation -----------------------------------------------------------------------

  def decoded(self, params):
    """`params` with the architecture replaced by the one-hot logits of its most probable
    architecture (DARTS rule, or every slot's argmax pair): the derived network with the
    weights it keeps."""
    arch = self._arch(params)
    if self.pairs:
      decoded = self.model.decoded_logits(arch)
    else:
      decoded = [mixture_lib.darts_logits(a, self.model.num_nodes, self.model.op_names)
                 for a in arch]
    return {**params, "arch": decoded}

  def log_probabilities(self, arch):
    """log Cat(softmax(a)) of every categorical, in the layout of `arch`: per edge (cell
    space), per node slot's (input, op) block (pair space)."""
    if not self.pairs:
      return [tf.nn.log_softmax(a, -1) for a in arch]
    out = []
    for a in arch:
      blocks = [a[:, start:stop, :] for start, stop in topology.node_slices(self.model.num_nodes)]
      out.append(tf.concat([b - tf.reduce_logsumexp(b, axis=[1, 2], keepdims=True)
                            for b in blocks], axis=1))
    return out

  def averaged_arch(self, archs):
    """log p_bar: the mean posterior categoricals of the first `average_tasks` tasks of
    `archs` (per architecture tensor [tasks, ...]), in the architecture's layout."""
    n = min(self.average_tasks, int(archs[0].shape[0]))
    per_task = [self.log_probabilities([tf.convert_to_tensor(a[t]) for a in archs])
                for t in range(n)]
    return [tf.reduce_logsumexp(tf.stack([p[k] for p in per_task]), 0) - np.log(n)
            for k in range(len(archs))]

  def posterior_points(self, archs):
    """Each task's adapted posterior as one point: its log-probabilities of every
    categorical, flattened ([tasks, d]; per-categorical shifts of the logits removed)."""
    return np.stack([np.concatenate([p.numpy().ravel() for p in self.log_probabilities(
        [tf.convert_to_tensor(a[t]) for a in archs])]) for t in range(len(archs[0]))])

  def posterior_pca(self, archs, genotypes, title=None):
    """The paper's Figure 3 for one evaluation: the tasks' adapted posteriors on their first
    two principal components, coloured by MAP genotype (the 5 most common, then "other"),
    the meta prior softmax(a) as a star."""
    points = self.posterior_points(archs)
    ranked = [g for g, _ in collections.Counter(genotypes).most_common(5)]
    groups, other = collections.defaultdict(list), "other genotypes"
    for point, genotype in zip(points, genotypes):
      name = (f"MAP genotype {ranked.index(genotype) + 1}" if genotype in ranked and
              genotypes.count(genotype) > 1 else other)
      groups[name].append(point)
    prior = self.posterior_points([v.numpy()[None] for v in self.model.arch_variables])[0]
    return visualize.plot_pca(
        dict(sorted(groups.items())),
        title or f"adapted architecture posteriors of {len(points)} tasks (PCA)",
        {"meta prior": prior}, muted=(other,))

  def genotype_of(self, arch):
    """The most probable architecture's genotype of architecture tensors `arch`."""
    arch = [tf.convert_to_tensor(a) for a in arch]
    return self.model.genotype("pairs" if self.pairs else "darts", arch=arch)

  # ---- evaluation -----------------------------------------------------------------------

  def evaluate_task(self, task, params, context):
    """T-NAS's outputs (the MAP network with kept weights, the supernet, the adapted
    logits a_T) and "sample": a_T + g, one seeded Gumbel-max sample of the posterior
    categorical (its DARTS decoding is a sampled architecture)."""
    outputs = super().evaluate_task(task, params, context)
    outputs["sample"] = self.noised(self._arch(params), context.prediction(), SAMPLE_SALT)
    return outputs

  def evaluate_signature(self):
    signature = super().evaluate_signature()
    signature["sample"] = [tf.TensorSpec(v.shape, v.dtype) for v in self.model.arch_variables]
    return signature

  def method_name(self):
    return "base"

  def summarize(self, outputs, step):
    """T-NAS's views and results (posterior heatmaps softmax(a_T) of the meta prior and of
    `report_tasks` tasks, decoded genotypes) plus the sampled architectures' genotypes and
    the temperature."""
    results = super().summarize(outputs, step)
    samples = self.task_genotypes(outputs["sample"])
    counts = collections.Counter(samples).most_common()
    arch_summaries.write_genotype_table(
        "sampled_genotypes", [(g, n, self.model.count_params_of(g)) for g, n in counts[:5]],
        len(samples), step)
    arch_summaries.write_genotype("sampled/genotype", counts[0][0], step)
    tau = float(self.temperature())
    tf.summary.scalar("Architecture/tau", tau, step=step)
    map_genotypes = self.task_genotypes(outputs["arch"])
    agree = float(np.mean([s == m for s, m in zip(samples, map_genotypes)]))
    tf.summary.scalar("Architecture/sample_is_map", agree, step=step)
    averaged = self.genotype_of(self.averaged_arch(outputs["arch"]))
    arch_summaries.write_genotype("averaged/genotype", averaged, step)
    arch_summaries.write_image("Architecture/posterior_pca",
                               self.posterior_pca(outputs["arch"], map_genotypes), step)
    results.update(
        decoding=("pairs" if self.pairs else "darts") +
        " (most probable architecture of the adapted posterior)",
        posterior=self.posterior, tau=tau, meta_update=self.meta_update,
        distinct_sampled_genotypes=len(counts), sample_is_map=agree,
        averaged_genotype=averaged.to_dict(),
        averaged_tasks=min(self.average_tasks, len(map_genotypes)))
    return results
