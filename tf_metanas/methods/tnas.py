"""T-NAS, T-NAS++ and Auto-MAML (Lian et al. 2020): meta-learning a DARTS architecture.

T-NAS (Algorithm 1). The base-searcher adapts the weights w and the architecture theta of
a DARTS supernet to a task's support set with one backward pass per inner step (Eq. 7):

  w_{m+1} = w_m - alpha * grad_w L_S(w_m, theta_m),  theta_{m+1} = theta_m - beta * grad_theta L_S(w_m, theta_m)

for M = 5 steps (10 when adapting to a new task; alpha = 0.1 in the paper's Sec. 5.2.1,
0.01 in the authors' code; beta = 30). The meta-searcher is first order (Eq. 8): the
query-loss gradients at (w_M, theta_M), averaged over the meta-batch (the paper sums, the
authors' code divides the sum by the meta-batch size), step Adam 1e-3 on w and Adam 1e-3
with betas (0.5, 0.999) and L2 weight decay 1e-3 on theta (the authors' `meta.py`). The
alternating, second-order form (Eq. 5-6) is `joint=False` with `algorithm="maml"`.

Adaptation and decoding (Algorithm 2): a new task adapts w and theta, and its genotype is
decoded by the DARTS rule (`arch.mixture.darts_logits`, `search.genotype.derive_darts`).
Each task predicts with its decoded network and the adapted weights it keeps ("kept
weights"); the supernet's own prediction is reported beside it. Retraining each distinct
decoded genotype from scratch (Sec. 5.2.2) is `tf_metanas.train.from_scratch`.

T-NAS++: T-NAS with the MAML++ options of `MetaLearner` (gin_configs/methods/tnaspp.gin).

Auto-MAML (Algorithm 3): one architecture for all tasks, never adapted in the inner loop.
The meta-training data is split 1:1 into two task streams; per meta-iteration the
architecture step comes first (the authors' code; first order: the query-loss gradient of
theta at the weights after 5 inner steps on a split-2 task), then the weights step on
split-1 tasks from the new architecture (`rules.Sequential`). Not copied from the authors'
code: their architecture gradient back-propagates through the restored meta-weights while
its activations come from the adapted ones, and accumulates the support-loss gradients and
the earlier tasks' gradients again (theta's gradient is never cleared); here it is the
gradient at the adapted weights. The architecture is chosen by meta-validation accuracy on
meta-validation classes (`Runner.select_on_val`), never on the tasks it trained on or on
test tasks.
"""

import collections

import gin
import numpy as np
import tensorflow as tf

from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.meta import inner_loop
from tf_metanas.meta import learner as learner_lib
from tf_metanas.meta import optimizers
from tf_metanas.meta import rules
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib
from tf_metanas.train import arch_summaries
from tf_metanas.train import runner as runner_lib

# The authors' meta optimizers (meta.py): PyTorch's Adam epsilon; theta as DARTS's.
WEIGHTS_META_ADAM = optimizers.MetaOptimizer(epsilon=1e-8)
ARCH_META_ADAM = optimizers.MetaOptimizer(beta_1=0.5, beta_2=0.999, epsilon=1e-8,
                                          weight_decay=1e-3)


def _check_supernet(model):
  if not isinstance(model, network_lib.SearchNetwork):
    raise ValueError(f"T-NAS searches a SearchNetwork, got {type(model).__name__}")
  if model.input_k:
    raise ValueError(f"T-NAS searches a DARTS supernet whose nodes sum their inputs: "
                     f"SearchNetwork.input_k = 0, got {model.input_k}")
  if "none" not in model.op_names:
    raise ValueError(f"T-NAS decodes with the DARTS rule, which needs the 'none' op; the op "
                     f"set is {model.op_names} (use op_set = 'DARTS')")


def _with_defaults(kwargs, **defaults):
  """`kwargs` over `defaults`; a given `rule` replaces the default algorithm."""
  if "rule" in kwargs:
    defaults.pop("algorithm", None)
  return {**defaults, **kwargs}


@gin.configurable(module="tf_metanas.methods")
class Tnas(learner_lib.MetaLearner):
  """T-NAS on a DARTS SearchNetwork (input_k = 0, an op set with "none").

  Without arguments, the paper's T-NAS: inner SGD on w (0.01, the authors' code) and on
  theta (30), one backward pass per step, 5 steps (10 at meta-test), first-order meta
  gradients, Adam 1e-3 for w and Adam 1e-3 (betas (0.5, 0.999), L2 1e-3) for theta.

  Args:
    model: a built SearchNetwork.
    report_tasks: adapted tasks whose architecture views go to TensorBoard.
    **kwargs: MetaLearner arguments over those defaults (T-NAS++: the MAML++ options).
  """

  def __init__(self, model, report_tasks=3, **kwargs):
    _check_supernet(model)
    self.report_tasks = int(report_tasks)
    super().__init__(model, **_with_defaults(
        kwargs, algorithm="fomaml",
        inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), 0.01),
                      inner_loop.ParamGroup("arch", optimizers.SGD(), 30.0)),
        train_phases=(inner_loop.Phase(5, ("weights", "arch")),),
        test_phases=(inner_loop.Phase(10, ("weights", "arch")),),
        meta_learning_rates={"weights": 1e-3, "arch": 1e-3},
        meta_optimizer={"weights": WEIGHTS_META_ADAM, "arch": ARCH_META_ADAM}))

  # ---- decoding -------------------------------------------------------------------------

  def decoded(self, params):
    """`params` with the architecture replaced by its DARTS-decoded one-hot logits: the
    decoded network with the weights it keeps (Algorithm 2)."""
    arch = [mixture_lib.darts_logits(a, self.model.num_nodes, self.model.op_names)
            for a in params["arch"]]
    return {**params, "arch": arch}

  def genotype_of(self, arch):
    """The DARTS-decoded genotype of architecture tensors `arch` (top-2 incoming edges by
    their strongest non-"none" op weight, that op on each)."""
    return self.model.genotype("darts", arch=[tf.convert_to_tensor(a) for a in arch])

  def task_genotypes(self, archs):
    """The decoded genotype of every task of an evaluation (`archs`: [tasks, ...] each)."""
    return [self.genotype_of([a[i] for a in archs]) for i in range(len(archs[0]))]

  # ---- evaluation -----------------------------------------------------------------------

  def evaluate_task(self, task, params, context):
    """The decoded network with its kept weights ("loss", "accuracy"), the supernet's
    prediction ("supernet_loss", "supernet_accuracy") and the adapted architecture."""
    supernet = super().evaluate_task(task, params, context)
    outputs = super().evaluate_task(task, self.decoded(params), context)
    outputs.update(supernet_loss=supernet["loss"], supernet_accuracy=supernet["accuracy"],
                   arch=list(params["arch"]))
    return outputs

  def evaluate_signature(self):
    signature = super().evaluate_signature()
    signature.update(supernet_loss=tf.TensorSpec([], tf.float32),
                     supernet_accuracy=tf.TensorSpec([], tf.float32),
                     arch=[tf.TensorSpec(v.shape, v.dtype) for v in self.model.arch_variables])
    return signature

  def task_parameter_counts(self, outputs):
    """The weights of each task's decoded network."""
    return [self.model.count_params_of(g) for g in self.task_genotypes(outputs["arch"])]

  def method_name(self):
    return "tnas++" if super().method_name().endswith("++") else "tnas"

  def summarize(self, outputs, step):
    """TensorBoard views (the meta-architecture beside adapted task architectures, as the
    paper's Fig. 2 and 5; the number of distinct decoded genotypes); returns the method's
    results: every distinct decoded genotype with the test tasks that decoded to it (what
    `from_scratch` retrains), the supernet's accuracy, the meta-architecture's genotype."""
    genotypes = self.task_genotypes(outputs["arch"])
    tasks_of = collections.defaultdict(list)
    for index, genotype in enumerate(genotypes):
      tasks_of[genotype].append(index)
    parameters = {g: self.model.count_params_of(g) for g in tasks_of}  # once per genotype
    common = sorted(((g, len(t), parameters[g]) for g, t in tasks_of.items()),
                    key=lambda row: -row[1])
    counts = [parameters[g] for g in genotypes]
    meta_arch = [v.value for v in self.model.arch_variables]
    task_archs = [[a[i] for a in outputs["arch"]]
                  for i in range(min(self.report_tasks, len(genotypes)))]
    arch_summaries.write_adaptation(self.model, meta_arch, self.genotype_of(meta_arch),
                                    task_archs, genotypes, common, counts, (1.0, 1.0),
                                    self.report_tasks, step)
    supernet, ci = runner_lib.confidence_interval(outputs["supernet_accuracy"])
    tf.summary.scalar("Architecture/supernet_accuracy", supernet, step=step)
    return {
        "decoding": "darts", "prediction": "decoded network, kept weights",
        "supernet_accuracy": supernet, "supernet_ci95": ci,
        "distinct_genotypes": len(common),
        "task_parameters": {"mean": float(np.mean(counts)), "min": int(np.min(counts)),
                            "max": int(np.max(counts))},
        "meta_genotype": self.genotype_of(meta_arch).to_dict(),
        "decoded_genotypes": [{"genotype": g.to_dict(), "tasks": tasks_of[g], "parameters": p}
                              for g, _, p in common]}

  def report(self, results):
    """The supernet's accuracy, the number of distinct decoded genotypes and the most common
    one when tasks share it."""
    decoded = results["decoded_genotypes"]
    tasks = sum(len(d["tasks"]) for d in decoded)
    lines = [f"decoded networks (kept weights) of {results['distinct_genotypes']} distinct "
             f"genotypes over {tasks} tasks; supernet accuracy "
             f"{100 * results['supernet_accuracy']:.2f}% +- {100 * results['supernet_ci95']:.2f}%"]
    if len(decoded[0]["tasks"]) > 1:
      lines.append(f"most common decoded genotype ({len(decoded[0]['tasks'])} tasks, "
                   f"{decoded[0]['parameters']} parameters): "
                   f"{genotype_lib.Genotype.from_dict(decoded[0]['genotype']).compact()}")
    return lines

  def adapt(self, support_images, support_labels, phases=None, inner_batch_size=None, seed=0):
    """Adapts weights and architecture to one new task and decodes its genotype
    (Algorithm 2): the returned model predicts with the decoded network and its kept
    weights; `adapted.genotype`, `adapted.parameter_count`, `adapted.supernet_params`."""
    adapted = super().adapt(support_images, support_labels, phases, inner_batch_size, seed)
    adapted.supernet_params = adapted.params
    adapted.genotype = self.genotype_of(adapted.params["arch"])
    adapted.parameter_count = self.model.count_params_of(adapted.genotype)
    adapted.params = self.decoded(adapted.params)
    return adapted


@gin.configurable(module="tf_metanas.methods")
class AutoMaml(Tnas):
  """Auto-MAML (Algorithm 3): one meta-learned architecture, weights adapted per task.

  Without arguments, the authors' Auto-MAML: inner SGD 0.01 on w for 5 steps (10 at
  meta-test), theta never adapted; the architecture step first (first order, its own
  stream of tasks), Adam 3e-4 (betas (0.5, 0.999), L2 1e-3); then the weights step on the
  "train" stream, Adam 1e-3, first order as their `meta_auto_maml.py` (the paper says MAML:
  `weights_first_order=False`).

  Args:
    model: a built SearchNetwork (DARTS).
    arch_stream: the task stream of the architecture step (split 2).
    weights_first_order: first-order MAML for the weights step.
    **kwargs: Tnas / MetaLearner arguments over these defaults.
  """

  def __init__(self, model, arch_stream="arch", weights_first_order=True, **kwargs):
    if arch_stream == "train":
      raise ValueError("AutoMaml.arch_stream must be a stream of its own (the other half of "
                       "the split), not the weights' 'train' stream")
    routes = {"arch": arch_stream}
    rule = rules.Sequential(((rules.Maml(first_order=True, routes=routes), ("arch",)),
                             (rules.Maml(first_order=weights_first_order, routes=routes),
                              ("weights",))))
    kwargs.setdefault("algorithm", None)  # not T-NAS's (a Tnas.algorithm binding reaches here)
    super().__init__(model, **_with_defaults(
        kwargs, rule=rule,
        inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), 0.01),
                      inner_loop.ParamGroup("arch", optimizers.SGD(), 0.0)),
        train_phases=(inner_loop.Phase(5, ("weights",)),),
        test_phases=(inner_loop.Phase(10, ("weights",)),),
        meta_learning_rates={"weights": 1e-3, "arch": 3e-4}))
    moving = {g for phases in (self.train_phases, self.test_phases) for p in phases
              for g in p.groups}
    if "arch" in moving:
      raise ValueError("Auto-MAML shares one architecture across tasks: no phase of "
                       "AutoMaml.train_phases / test_phases may adapt 'arch'")

  def method_name(self):
    return "auto-maml"

  def report(self, results):
    decoded = results["decoded_genotypes"][0]
    return [f"the architecture (decoded, {decoded['parameters']} parameters): "
            f"{genotype_lib.Genotype.from_dict(decoded['genotype']).summary()}; supernet "
            f"accuracy {100 * results['supernet_accuracy']:.2f}% +- "
            f"{100 * results['supernet_ci95']:.2f}%"]
