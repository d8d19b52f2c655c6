"""METANAS against numbers: temperatures annealed over the architecture steps, pruning in
every forward and of the meta-architecture, pruned = soft after annealing, warm-up, the
Reptile steps over meta-iterations, the 50+50 protocol, DropPath per op and off at
meta-test, MAML's second order on the architecture, the carried inner Adam state, the
Gumbel normalizer, the pairwise genotype, TensorBoard architecture views, scale-up."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.data import episodes
from tf_metanas.data import synthetic
from tf_metanas.meta import context as context_lib
from tf_metanas.meta import inner_loop
from tf_metanas.meta import optimizers
from tf_metanas.meta import schedules
from tf_metanas.methods import metanas
from tf_metanas.search import FixedNetwork
from tf_metanas.search import Genotype
from tf_metanas.search import SearchNetwork
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import mixed_op as mixed_op_lib
from tf_metanas.search import topology
from tf_metanas.search import visualize

OPS = ("conv_3x3", "max_pool_3x3", "skip_connect")
BOTH = ("weights", "arch")


def _network(num_nodes=2, channels=4, **kwargs):
  net = SearchNetwork(3, channels=channels, num_cells=2, reduction_cells=(1,),
                      num_nodes=num_nodes, op_set=OPS, **kwargs)
  net.build((None, 8, 8, 1))
  return net


def _learner(net=None, algorithm="reptile", train_steps=2, test_steps=(2, 2), arch_lr=0.05,
             weights_optimizer=None, tau_end=0.1, **kwargs):
  keras.utils.set_random_seed(0)
  net = net or _network()
  groups = (inner_loop.ParamGroup("weights", weights_optimizer or optimizers.Adam(beta1=0.0),
                                  0.01),
            inner_loop.ParamGroup("arch", optimizers.Adam(beta1=0.0), arch_lr, 1e-3))
  kwargs.setdefault("meta_learning_rates", {"weights": 1.0, "arch": 0.6})
  return metanas.Metanas(
      net, tau_alpha=metanas.Temperature(1.0, tau_end, "exponential"),
      tau_beta=metanas.Temperature(1.0, tau_end, "linear"), algorithm=algorithm,
      threshold=kwargs.pop("threshold", 0.01),
      inner_groups=groups, train_phases=(inner_loop.Phase(train_steps, BOTH),),
      test_phases=(inner_loop.Phase(test_steps[0], BOTH),
                   inner_loop.Phase(test_steps[1], ("weights",))), **kwargs)


def _batch(learner, num_tasks=2, training=True, seed=0):
  store = synthetic.prototype_store(num_classes=8, per_class=10, size=8)
  spec = learner.episode_spec(episodes.EpisodeSpec(3, 2, 2, 4 if training else None, 1),
                              training)
  return next(iter(episodes.EpisodeSampler(store, spec, seed).dataset(num_tasks)))


def _task(batch, i=0):
  return {k: v[i] for k, v in batch.items()}


def _arch(net):
  return [v.numpy().copy() for v in net.arch_variables]


def _adapted(learner, task, phases=None, meta_training=True, state=None):
  """The trajectory of one task's adaptation, unrolled (the loop-free inner loop)."""
  protocol = learner.protocol(phases, meta_training)
  return learner.adapt_trajectory(task, learner.task_context(task, protocol), first_order=True,
                                  params=learner.meta_parameters(), state=state)


def _context(protocol, step, seed=None):
  """The context of inner step `step` of `protocol` (its support pass), or of the prediction
  after it when `step` is its step count (the query); stateful random draws without a seed."""
  context = context_lib.TaskContext(protocol, seed=seed)
  return context.prediction() if step == protocol.num_steps else context.at(step)


# ---- temperatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "exponential"])
def test_temperature_reaches_its_end_value_at_the_last_architecture_step(kind):
  tau = metanas.Temperature(2.0, 0.05, kind, test_end=0.1)
  values = [float(tau(s, 5)) for s in range(5)]
  assert values[0] == pytest.approx(2.0) and values[-1] == pytest.approx(0.05)
  assert float(tau(5, 5)) == pytest.approx(0.05)  # steps after, and the prediction
  assert all(a > b for a, b in zip(values, values[1:]))
  middle = 2.0 + (0.05 - 2.0) * 0.5 if kind == "linear" else 2.0 * (0.05 / 2.0) ** 0.5
  assert values[2] == pytest.approx(middle, rel=1e-6)
  assert float(tau(tf.constant(4), 5)) == pytest.approx(0.05)  # step as a tensor
  assert float(tau(4, 5, meta_training=False)) == pytest.approx(0.1)  # the meta-test end
  assert float(tau(3, 0)) == pytest.approx(2.0)  # no architecture steps (warm-up): start


def test_meta_test_temperature_anneals_over_the_architecture_steps_only():
  """The authors' curve at meta-test (50 + 50 steps, t_max 1, t_min 0.1), here 4 + 3:
  linear over the 4 architecture steps, then held for the weights-only steps and the
  prediction."""
  learner = _learner(test_steps=(4, 3))
  learner.tau_alpha = metanas.Temperature(1.0, 0.05, "linear", test_end=0.1)
  protocol = learner.protocol()
  assert protocol.steps_of("arch") == 4 and protocol.num_steps == 7
  curve = [float(learner.tau_alpha(s, protocol.steps_of("arch"), False)) for s in range(8)]
  np.testing.assert_allclose(curve, [1.0, 0.7, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1], rtol=1e-6)
  # the forward uses that curve: step 5's mixture is the end temperature's
  arch = [v.value for v in learner.model.arch_variables]
  mixture = learner.mixture(arch, _context(protocol, 5))
  np.testing.assert_allclose(mixture["normal_ops"],
                             mixture_lib.op_weights(arch[0], 0.1).numpy(), rtol=1e-6)


def test_temperature_rejects_bad_schedules():
  with pytest.raises(ValueError, match="unknown temperature schedule 'cosine'"):
    metanas.Temperature(1.0, 0.1, "cosine")
  with pytest.raises(ValueError, match="must be positive"):
    metanas.Temperature(1.0, 0.0)
  with pytest.raises(ValueError, match="test_end 0.0"):
    metanas.Temperature(1.0, 0.1, test_end=0.0)


def test_low_temperature_makes_mixtures_nearly_one_hot():
  alpha = tf.constant([[0.3, 0.1, -0.2], [0.0, 0.05, 0.2]])
  beta = tf.constant([0.0, 0.1, 0.3, -0.1])  # 2 nodes, k = 2: node 1 has 3 combinations
  soft = mixture_lib.op_weights(alpha, 1.0).numpy()
  assert soft.max() < 0.5
  cold = mixture_lib.op_weights(alpha, 0.01).numpy()
  np.testing.assert_allclose(cold.max(-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(cold.argmax(-1), [0, 2])
  combos = mixture_lib.combination_weights(beta, 2, 2, 0.01).numpy()
  np.testing.assert_allclose(combos, [1.0, 0.0, 1.0, 0.0], atol=1e-6)


# ---- pruning ----------------------------------------------------------------------------------


def test_pruning_removes_exactly_the_ops_and_combinations_at_or_below_the_threshold():
  net = _network()
  rng = np.random.default_rng(3)
  arch = [tf.constant(rng.normal(0, 2, v.shape), tf.float32) for v in net.arch_variables]
  threshold = 0.05
  soft = net.mixture(arch)
  pruned = net.mixture(arch, threshold=threshold)
  for cell in ("normal", "reduce"):
    ops, kept = soft[f"{cell}_ops"].numpy(), pruned[f"{cell}_ops"].numpy()
    np.testing.assert_array_equal(kept, np.where(ops > threshold, ops, 0.0))
    assert (ops < threshold).any() and (ops > threshold).any()  # the case is not trivial
    _, betas = net.arch_dict(arch)
    combos = mixture_lib.combination_weights(betas[cell], 2, 2).numpy()
    expected = np.where(combos > threshold, combos, 0.0) @ topology.combination_to_edges(2, 2)
    np.testing.assert_allclose(pruned[f"{cell}_edges"].numpy(), expected, rtol=1e-6)
  genotype = net.genotype("threshold", arch=arch, threshold=threshold)
  for cell in ("normal", "reduce"):
    edges, ops = pruned[f"{cell}_edges"].numpy(), pruned[f"{cell}_ops"].numpy()
    kept = {(OPS[o], i) for j, node_edges in enumerate(topology.node_edges(2))
            for e, i in node_edges for o in range(len(OPS)) if edges[e] * ops[e, o] > 0}
    assert set(p for node in genotype.cell(cell) for p in node) == kept


def _hand_mixture(arch, tau, threshold):
  """Eq. 5 and 7 in numpy, weights at or below `threshold` zeroed (2 nodes, k = 2)."""
  out = {}
  for c, cell in enumerate(("normal", "reduce")):
    alpha, beta = np.asarray(arch[c], np.float64) / tau, np.asarray(arch[2 + c], np.float64) / tau
    ops = np.exp(alpha - alpha.max(-1, keepdims=True))
    ops /= ops.sum(-1, keepdims=True)
    pairs = np.concatenate([[1.0], np.exp(beta[1:] - beta[1:].max()) /
                            np.exp(beta[1:] - beta[1:].max()).sum()])  # node 1: 3 pairs
    pairs = np.where(pairs > threshold, pairs, 0.0)
    # edges of node 0: inputs 0, 1 (its only pair); node 1: inputs 0, 1, 2 from pairs
    # (0,1), (0,2), (1,2)
    edges = np.array([pairs[0], pairs[0], pairs[1] + pairs[2], pairs[1] + pairs[3],
                      pairs[2] + pairs[3]])
    out[f"{cell}_ops"] = tf.constant(np.where(ops > threshold, ops, 0.0), tf.float32)
    out[f"{cell}_edges"] = tf.constant(edges, tf.float32)
  return out


def test_ops_at_or_below_the_threshold_are_skipped_in_every_meta_training_forward():
  learner = _learner(train_threshold=0.2, tau_end=0.5)
  learner.tau_alpha = learner.tau_beta = metanas.Temperature(1.0, 0.5, "linear")
  net = learner.model
  rng = np.random.default_rng(1)
  for v in net.arch_variables:
    v.assign(rng.normal(0, 1.0, v.shape))
  params = learner.meta_parameters()
  images = tf.random.uniform((6, 8, 8, 1))
  protocol = learner.protocol(meta_training=True)  # 2 steps: tau 1.0 then 0.5
  for step, tau in [(0, 1.0), (1, 0.5), (2, 0.5)]:
    expected = net.functional_call(params["weights"], images, mixture=_hand_mixture(
        params["arch"], tau, 0.2))
    np.testing.assert_allclose(learner.forward(net, params, images, _context(protocol, step)),
                               expected, rtol=1e-5, atol=1e-6)
  unpruned = net.functional_call(params["weights"], images,
                                 mixture=_hand_mixture(params["arch"], 0.5, 0.0))
  assert not np.allclose(learner.forward(net, params, images, _context(protocol, 1)), unpruned,
                         rtol=1e-3, atol=1e-3)  # the pruning changes the network


def test_pruned_network_matches_the_soft_one_after_annealing():
  # The property behind METANAS Table 3: once the temperatures are low, pruning removes
  # only negligible terms, so the task-specific network predicts what the soft one does.
  learner = _learner(tau_end=0.005)
  net = learner.model
  rng = np.random.default_rng(0)
  for v in net.arch_variables:
    v.assign(rng.normal(0, 0.5, v.shape))
  weights, images = [v.value for v in net.weight_variables], tf.random.uniform((6, 8, 8, 1))
  arch = [v.value for v in net.arch_variables]
  soft = net.functional_call(weights, images, mixture=net.mixture(arch, 0.005, 0.005))
  pruned_mixture = net.mixture(arch, 0.005, 0.005, threshold=0.01)
  assert sum(int((pruned_mixture[k].numpy() == 0).sum()) for k in pruned_mixture) > 10
  pruned = learner.final_logits({"weights": weights, "arch": arch}, images)
  np.testing.assert_allclose(pruned, soft, rtol=1e-4, atol=1e-5)
  # At temperature 1 the same pruning changes the network: the check above can fail.
  warm = net.functional_call(weights, images, mixture=net.mixture(arch))
  warm_pruned = net.functional_call(weights, images, mixture=net.mixture(arch, threshold=0.2))
  assert not np.allclose(warm, warm_pruned, rtol=1e-3, atol=1e-3)


def test_pruned_ops_are_not_computed_in_eager_calls():
  net = _network()
  calls = []
  conv = net.cells[0].edges[0].candidates[0]
  original = conv.call
  conv.call = lambda *a, **k: calls.append(1) or original(*a, **k)
  mixture = net.mixture()
  mixture["normal_ops"] = tf.constant(np.array([[0.0, 0.5, 0.5]] * 5, np.float32))
  net(tf.zeros((2, 8, 8, 1)), mixture=mixture, training=True)
  assert not calls
  net(tf.zeros((2, 8, 8, 1)), training=True)
  assert calls


def test_meta_architecture_pruning_removes_weak_ops_for_good_every_n_iterations():
  learner = _learner(meta_prune_threshold=0.05, meta_prune_every=2, tau_end=0.5)
  net = learner.model
  rng = np.random.default_rng(2)
  alphas = [rng.normal(0, 1.0, v.shape).astype(np.float32) for v in net.arch_variables[:2]]
  for v, a in zip(net.arch_variables, alphas):
    v.assign(a)
  learner.prune_meta_architecture()
  for alpha, variable in zip(alphas, (net.alpha_normal, net.alpha_reduce)):
    weights = np.exp(alpha / 0.5) / np.exp(alpha / 0.5).sum(-1, keepdims=True)
    expected = np.where(weights < 0.05, metanas.PRUNED_LOGIT, alpha)
    assert (weights < 0.05).any() and (weights >= 0.05).any()
    np.testing.assert_array_equal(variable.numpy(), expected)
  batch = _batch(learner)
  learner.train_step(batch)
  for beta in _arch(net)[2:]:  # pair logits are never pruned
    np.testing.assert_array_equal(beta <= metanas.PRUNED_LOGIT, False)
  removed = [a <= metanas.PRUNED_LOGIT for a in _arch(net)[:2]]
  for v in net.arch_variables[:2]:  # fresh logits: meta-iteration 2 prunes them again
    v.assign(tf.where(v <= metanas.PRUNED_LOGIT, v, 3.0 * tf.sign(v)))
  learner.train_step(batch)
  for was, alpha in zip(removed, _arch(net)[:2]):
    np.testing.assert_array_equal(alpha[was], metanas.PRUNED_LOGIT)  # removed for good
    assert (alpha <= metanas.PRUNED_LOGIT).sum() > was.sum()  # and more at iteration 2
  assert all(np.isfinite(beta).all() for beta in _arch(net)[2:])
  with pytest.raises(ValueError, match="meta_prune_every > 0"):
    _learner(meta_prune_threshold=0.01)


# ---- meta-training ----------------------------------------------------------------------------


# First-order MAML: the query loss's architecture gradient is there as in second order (the
# warm-up must keep it out of the meta-update alike), at a fraction of the tracing.
@pytest.mark.parametrize("algorithm", ["reptile", "fomaml"])
def test_warmup_keeps_the_architecture_still_then_releases_it(algorithm):
  learner = _learner(algorithm=algorithm, warmup_iterations=2,
                     meta_learning_rates={"weights": 0.01, "arch": 0.01}
                     if algorithm == "fomaml" else None)
  batch, before = _batch(learner), _arch(learner.model)
  weights = learner.model.weight_variables[0].numpy().copy()
  # the summarized state: in warm-up, the near-uniform initial architecture (alpha ~ 1e-3)
  start = learner.training_scalars()
  assert start["warmup"] == 1.0
  assert start["architecture_entropy"] == pytest.approx(
      np.mean([np.log(a.shape[-1]) for a in _categorical_rows(learner.model)]), abs=1e-4)
  for _ in range(2):
    assert learner.in_warmup()
    learner.train_step(batch)
  for a, b in zip(_arch(learner.model), before):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(learner.model.weight_variables[0].numpy(), weights)
  assert not learner.in_warmup() and learner.training_scalars()["warmup"] == 0.0
  assert learner.training_scalars()["architecture_entropy"] == start["architecture_entropy"]
  learner.train_step(batch)
  assert all(not np.array_equal(a, b) for a, b in zip(_arch(learner.model), before))


def _categorical_rows(model):
  """Every categorical of the architecture with a choice, as one row (its length: the
  number of choices)."""
  return [row for c in model.categoricals() for row in np.reshape(c, (-1, c.shape[-1]))
          if c.shape[-1] > 1]


@pytest.mark.parametrize("rates, expected", [
    ({"weights": 1.0, "arch": 0.6}, [(1.0, 0.6)] * 3),  # the paper's constant step sizes
    ({"weights": schedules.Linear(1.0, 0.0, 10), "arch": schedules.Linear(0.6, 0.0, 10)},
     [(1.0, 0.6), (0.9, 0.54), (0.8, 0.48)]),  # one clock: meta-iterations, warm-up included
])
def test_reptile_steps_over_meta_iterations_with_warmup(rates, expected):
  learner = _learner(meta_learning_rates=rates, warmup_iterations=2,
                     weights_optimizer=optimizers.SGD())
  net = learner.model
  for step, (eps_w, eps_a) in enumerate(expected):
    batch = _batch(learner, seed=step)
    meta = {"weights": [v.numpy() for v in net.weight_variables], "arch": _arch(net)}
    warmup = learner.in_warmup()
    phases = learner.training_protocol(warmup).phases
    adapted = [_adapted(learner, _task(batch, i), phases)[0][-1] for i in range(2)]
    learner.train_step(batch)
    now = {"weights": [v.numpy() for v in net.weight_variables], "arch": _arch(net)}
    for name, eps in (("weights", eps_w), ("arch", 0.0 if warmup else eps_a)):
      for k, (new, old) in enumerate(zip(now[name], meta[name])):
        mean_diff = np.mean([np.asarray(a[name][k]) - old for a in adapted], axis=0)
        np.testing.assert_allclose(new - old, eps * mean_diff, rtol=2e-3, atol=1e-7)
    assert np.abs(np.asarray(adapted[0]["arch"][0]) - meta["arch"][0]).max() > 1e-4 or warmup


def test_meta_test_protocol_changes_the_architecture_only_in_its_first_phase():
  learner = _learner(test_steps=(3, 3))
  task = _task(_batch(learner, training=False))
  trajectory = _adapted(learner, task, meta_training=False)[0]
  arch = [[a.numpy() for a in params["arch"]] for params in trajectory]
  weights = [params["weights"][0].numpy() for params in trajectory]
  for s in range(3):
    assert all(not np.array_equal(a, b) for a, b in zip(arch[s], arch[s + 1]))
  for s in range(3, 6):
    assert all(np.array_equal(a, b) for a, b in zip(arch[s], arch[s + 1]))
    assert not np.array_equal(weights[s], weights[s + 1])


def test_alternating_task_learner_updates_both_groups():
  joint, alternating = _learner(), _learner(joint=False)
  task = _task(_batch(joint))
  results = [_adapted(learner, task)[0][-1] for learner in (joint, alternating)]
  for name in BOTH:
    assert not np.allclose(results[0][name][0], results[1][name][0])  # different maths
    assert not np.array_equal(results[1][name][0], alternating.meta_parameters()[name][0])


def test_maml_meta_gradient_on_the_architecture_equals_finite_differences(float64):
  del float64
  net = _network(channels=2, input_k=2)
  learner = _learner(net, algorithm="maml", train_steps=2, arch_lr=0.3,
                     weights_optimizer=optimizers.SGD(),
                     meta_learning_rates={"weights": 0.1, "arch": 0.1})
  task = _task(_batch(learner))
  assert not learner.first_order_now()
  arch_grads = learner.task_directions(task)[0]["arch"]
  assert len(arch_grads) == len(net.arch_variables)
  protocol = learner.protocol(meta_training=True)
  context = learner.task_context(task, protocol)
  assert context.num_steps == 2

  def query_loss(arch):
    params = {"weights": [v.value for v in net.weight_variables], "arch": arch}
    trajectory = learner.adapt_trajectory(task, context, first_order=False, params=params)[0]
    return float(learner.query(task, trajectory[-1], context.prediction())[0])

  eps = 1e-7
  for k, (e, o) in enumerate([(0, 0), (3, 2), (1, 1)]):
    variable = k % 2  # alpha_normal, alpha_reduce
    base = [v.numpy() for v in net.arch_variables]
    plus, minus = [a.copy() for a in base], [a.copy() for a in base]
    plus[variable][e, o] += eps
    minus[variable][e, o] -= eps
    numeric = (query_loss([tf.constant(a) for a in plus]) -
               query_loss([tf.constant(a) for a in minus])) / (2 * eps)
    analytic = float(arch_grads[variable][e, o])
    assert abs(numeric) > 1e-6
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_gumbel_normalizer_draws_fresh_noise_during_adaptation_only():
  learner = _learner(normalizer="gumbel")
  params = learner.meta_parameters()
  images = tf.random.uniform((4, 8, 8, 1))
  protocol = learner.protocol(meta_training=True)
  forward = lambda step, seed=None: learner.forward(learner.model, params, images,
                                                    _context(protocol, step, seed)).numpy()
  adapt_logits = [forward(0) for _ in range(2)]  # stateful draws: fresh at every call
  assert not np.allclose(adapt_logits[0], adapt_logits[1])
  query = [forward(2) for _ in range(2)]
  np.testing.assert_array_equal(query[0], query[1])
  # stateless draws from the tasks' seeds: the same task draws the same noise, another task
  # other noise; never on the prediction
  seeds = [context_lib.task_seed(0, 0, "train", i) for i in range(2)]
  np.testing.assert_array_equal(forward(0, seeds[0]), forward(0, seeds[0]))
  assert not np.allclose(forward(0, seeds[0]), forward(0, seeds[1]))
  np.testing.assert_array_equal(forward(2, seeds[0]), query[0])
  np.testing.assert_array_equal(forward(2, seeds[1]), query[0])
  with pytest.raises(ValueError, match="unknown normalizer 'sparsemax'"):
    _learner(normalizer="sparsemax")


def test_metanas_needs_a_search_network():
  from tf_metanas.search import Conv4  # pylint: disable=import-outside-toplevel
  net = Conv4(3, filters=2)
  net.build((None, 8, 8, 1))
  with pytest.raises(ValueError, match="METANAS searches a SearchNetwork, got Conv4"):
    metanas.Metanas(net)


# ---- DropPath ---------------------------------------------------------------------------------


def test_drop_path_masks_each_non_identity_op_of_a_mixed_op_on_its_own():
  keras.utils.set_random_seed(0)
  mixed = mixed_op_lib.MixedOp(1, ("avg_pool_3x3", "max_pool_3x3", "skip_connect"),
                               drop_path_rate=0.5)
  x = tf.random.normal((200, 4, 4, 1))
  mixed.build(x.shape)
  avg, mx = (mixed.candidates[i](x, training=True) for i in range(2))
  out = mixed(x, tf.constant([1.0, 1.0, 1.0]), training=True).numpy()
  # out = m_avg * 2 avg + m_max * 2 max + x per sample, masks m in {0, 1}
  masks = set()
  for b in range(200):
    fits = [(ma, mm) for ma in (0, 1) for mm in (0, 1)
            if np.allclose(out[b], 2 * ma * avg[b] + 2 * mm * mx[b] + x[b], atol=1e-5)]
    assert len(fits) == 1
    masks.add(fits[0])
  assert masks == {(0, 0), (0, 1), (1, 0), (1, 1)}  # independent masks, identity kept
  np.testing.assert_allclose(mixed(x, tf.constant([1.0, 1.0, 1.0]), training=True,
                                   drop_path=False), avg + mx + x, atol=1e-5)


def test_drop_path_is_on_while_meta_training_and_off_at_meta_test():
  learner = _learner(net=_network(drop_path_rate=0.5))
  params = learner.meta_parameters()
  images = tf.random.uniform((8, 8, 8, 1))
  forward = lambda step, protocol, seed=None: learner.forward(
      learner.model, params, images, _context(protocol, step, seed)).numpy()
  training, test = learner.protocol(meta_training=True), learner.protocol()
  assert not np.allclose(forward(0, training), forward(0, training))
  for step in (0, 3, 4):  # both test phases, and the prediction
    np.testing.assert_array_equal(forward(step, test), forward(step, test))
  np.testing.assert_array_equal(forward(2, training), forward(2, training))  # the query
  # stateless masks from the tasks' seeds: the same for one task, others for another task
  # while meta-training; none at meta-test or on the query
  seeds = [context_lib.task_seed(0, 0, "train", i) for i in range(2)]
  np.testing.assert_array_equal(forward(0, training, seeds[0]), forward(0, training, seeds[0]))
  assert not np.allclose(forward(0, training, seeds[0]), forward(0, training, seeds[1]))
  for step in (0, 3, 4):
    np.testing.assert_array_equal(forward(step, test, seeds[0]), forward(step, test, seeds[1]))
  np.testing.assert_array_equal(forward(2, training, seeds[0]), forward(2, training, seeds[1]))
  regularized = _learner(net=_network(drop_path_rate=0.5), meta_test_regularization=True)
  test = regularized.protocol()
  logits = [regularized.forward(regularized.model, params, images, _context(test, 0))
            for _ in range(2)]
  assert not np.allclose(logits[0], logits[1])  # on at meta-test when asked
  logits = [regularized.forward(regularized.model, params, images, _context(test, 0, seed))
            for seed in seeds]
  assert not np.allclose(logits[0], logits[1])


# ---- the carried inner Adam state ---------------------------------------------------------------


def test_carried_inner_adam_state_matches_a_hand_chained_reference():
  """Two tasks of one meta-batch: the second starts from the first's Adam state (moments
  and step count), the next meta-iteration from the second's; meta-test tasks start from
  the carried state and leave it alone."""
  learner = _learner(carry_inner_state=True)
  fresh = _learner()
  batch = _batch(learner)
  meta = {"weights": [v.numpy() for v in learner.model.weight_variables],
          "arch": _arch(learner.model)}
  state, adapted = None, []
  for i in range(2):  # the reference: the unrolled inner loop, state chained by hand
    trajectory, _, state = _adapted(learner, _task(batch, i), state=state)
    adapted.append(trajectory[-1])
  independent = _adapted(learner, _task(batch, 1))[0][-1]
  assert not np.allclose(independent["weights"][0], adapted[1]["weights"][0])  # it matters
  learner.train_step(batch)
  fresh.train_step(batch)
  for name, eps in (("weights", 1.0), ("arch", 0.6)):
    for k, old in enumerate(meta[name]):
      mean_diff = np.mean([np.asarray(a[name][k]) - old for a in adapted], axis=0)
      new = learner.variables[name][k].numpy()
      np.testing.assert_allclose(new - old, eps * mean_diff, rtol=2e-3, atol=1e-7)
  carried = learner.inner_state
  assert float(carried["weights"][0].numpy()) == 4.0  # Adam's t: 2 tasks x 2 steps
  for v, r in zip(tf.nest.flatten(carried), tf.nest.flatten(state)):
    np.testing.assert_allclose(v.numpy(), r, rtol=1e-3, atol=1e-4 * np.abs(r).max())
  assert not np.allclose(learner.model.weight_variables[0].numpy(),
                         fresh.model.weight_variables[0].numpy())
  # meta-test: every task starts from the carried state, which stays as it was
  before = [v.numpy() for v in tf.nest.flatten(carried)]
  task = _task(_batch(learner, training=False))
  adapted_model = learner.adapt(task["support_images"], task["support_labels"])
  reference = _adapted(learner, {**task, "support_batches": tf.constant(
      episodes.support_batches(np.random.default_rng(0), 6, 6, 4))}, meta_training=False,
      state=learner.carried_state())[0][-1]
  np.testing.assert_allclose(adapted_model.params["weights"][0], reference["weights"][0],
                             rtol=1e-4, atol=1e-7)
  test_batch = _batch(learner, 2, training=False)
  losses = learner.evaluate_batch(test_batch)["loss"].numpy()
  for i in range(2):  # each evaluated task adapted from the carried state
    final = _adapted(learner, _task(test_batch, i), meta_training=False,
                     state=learner.carried_state())[0][-1]
    logits = learner.final_logits(final, tf.cast(test_batch["query_images"][i], tf.float32) / 255)
    want = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        test_batch["query_labels"][i], logits)))
    assert losses[i] == pytest.approx(want, rel=1e-3)
  for b, v in zip(before, tf.nest.flatten(carried)):
    np.testing.assert_array_equal(b, v.numpy())
  assert "inner_state_weights_0" in learner.checkpoint_items()


# ---- genotypes --------------------------------------------------------------------------------


def test_pairwise_genotype_takes_the_best_pair_then_the_best_op_on_each_edge():
  # 2 nodes; node 1's pairs are (0, 1), (0, 2), (1, 2); edges: node 0: 0, 1; node 1: 2, 3, 4
  alphas = {"normal": np.array([[0.1, 0.5, 0.2], [0.9, 0.0, 0.1], [0.0, 0.0, 3.0],
                                [5.0, 0.0, 0.0], [0.2, 0.3, 0.1]]),
            "reduce": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0],
                                [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])}
  betas = {"normal": np.array([0.0, 0.1, 0.7, 0.3]),  # node 1: pair (0, 2)
           "reduce": np.array([0.0, 0.1, 0.2, 0.9])}  # node 1: pair (1, 2)
  genotype = genotype_lib.derive_pairwise(alphas, betas, OPS, 2)
  assert genotype.normal == ((("max_pool_3x3", 0), ("conv_3x3", 1)),
                             (("skip_connect", 0), ("max_pool_3x3", 2)))
  assert genotype.reduce == ((("skip_connect", 0), ("max_pool_3x3", 1)),
                             (("max_pool_3x3", 1), ("skip_connect", 2)))
  with_none = genotype_lib.derive_pairwise(alphas, betas, ("none",) + OPS[1:], 2)
  assert with_none.normal[0] == (("max_pool_3x3", 0), ("skip_connect", 1))  # never "none"
  net = _network()
  arch = [tf.constant(alphas["normal"], tf.float32), tf.constant(alphas["reduce"], tf.float32),
          tf.constant(betas["normal"], tf.float32), tf.constant(betas["reduce"], tf.float32)]
  assert net.genotype("pairwise", arch=arch) == genotype
  with pytest.raises(ValueError, match="input_k = 0"):
    _network(input_k=0).genotype("pairwise")


# ---- meta-test report and TensorBoard views ---------------------------------------------------


def test_evaluation_reports_task_architectures_and_writes_heatmaps(tmp_path):
  learner = _learner(report_tasks=1)
  learner.train_step(_batch(learner))
  outputs = tf.nest.map_structure(lambda t: t.numpy(),
                                  learner.evaluate_batch(_batch(learner, 3, training=False)))
  assert outputs["accuracy"].shape == (3,) and outputs["arch"][0].shape == (3, 5, 3)
  with tf.summary.create_file_writer(str(tmp_path)).as_default():
    results = learner.summarize(outputs, step=7)
  counts = results["task_parameter_counts"]
  for i, count in enumerate(counts):  # each task's architecture, built as a network
    genotype = learner.genotype_of([a[i] for a in outputs["arch"]])
    assert count == _fixed_count(genotype)
  for key in ("task_genotypes", "genotypes"):
    assert sum(g["tasks"] for g in results[key]) == 3
    for entry in results[key]:
      assert entry["parameters"] == _fixed_count(Genotype.from_dict(entry["genotype"]))
  for entry in results["genotypes"]:  # pairwise: two ops on two inputs per node
    genotype = Genotype.from_dict(entry["genotype"])
    assert all(len(node) == 2 for node in genotype.normal + genotype.reduce)
  images = {}
  for path in tmp_path.glob("events.out.tfevents.*"):
    for record in tf.data.TFRecordDataset(str(path)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        images[value.tag] = (event.step, value)
  for tag, rows in [("Architecture/meta/op_weights_normal", 5),
                    ("Architecture/task_0/op_weights_reduce", 5),
                    ("Architecture/meta/input_weights", 4)]:
    step, value = images[tag]
    assert step == 7
    png = tf.make_ndarray(value.tensor)[2]  # [width, height, PNG bytes]
    image = tf.image.decode_png(png).numpy()
    cols = 3 if "op_weights" in tag else 2
    expected = ((1.5 + 0.38 * rows) * 90, max(1.6 + 0.95 * cols, 4.8) * 90)  # size x dpi
    assert np.abs(np.subtract(image.shape[:2], expected)).max() <= 1
    assert image.std() > 10  # a picture, not a blank
  for tag in ("Architecture/task_parameters", "Architecture/task_genotypes",
              "Architecture/most_common/genotype", "Architecture/task_0/genotype",
              "Architecture/most_common_pairwise/genotype", "Architecture/pairwise_genotypes",
              "Architecture/tau_alpha_end"):
    assert tag in images
  # each genotype also as text: its compact form, a row per node (no JSON walls)
  pairwise = Genotype.from_dict(results["genotypes"][0]["genotype"])
  text = tf.make_ndarray(images["Architecture/most_common_pairwise/genotype_compact"][1].tensor)
  assert text.item().decode() == pairwise.compact_table()


def test_heatmap_axes_name_edges_ops_and_combinations():
  assert visualize.edge_names(2) == ["c_{k-2} -> 0", "c_{k-1} -> 0", "c_{k-2} -> 1",
                                     "c_{k-1} -> 1", "0 -> 1"]
  assert visualize.combination_names(2, 2) == [
      "node 0: c_{k-2} + c_{k-1}", "node 1: c_{k-2} + c_{k-1}", "node 1: c_{k-2} + 0",
      "node 1: c_{k-1} + 0"]


def _fixed_count(genotype):
  """Weights of the discrete network of `genotype` at the test network's size (BatchNorms
  without scale and shift, as in the supernet)."""
  net = FixedNetwork(genotype, 3, channels=4, num_cells=2, reduction_cells=(1,), affine=False)
  net.build((None, 8, 8, 1))
  return sum(int(np.prod(v.shape)) for v in net.weight_variables)


def test_adapted_model_predicts_with_its_task_specific_architecture():
  learner = _learner(threshold=0.2)
  task = _task(_batch(learner, training=False))
  adapted = learner.adapt(task["support_images"], task["support_labels"])
  assert adapted.parameter_count == _fixed_count(adapted.genotype)
  assert adapted.parameter_count < _fixed_count(Genotype(  # something was pruned
      [[(op, i) for op in OPS for i in range(j + 2)] for j in range(2)],
      [[(op, i) for op in OPS for i in range(j + 2)] for j in range(2)]))
  images = tf.cast(task["query_images"], tf.float32) / 255.0
  expected = learner.model.functional_call(  # Eq. 5, 7 at the end temperature, pruned at 0.2
      adapted.params["weights"], images, mixture=_hand_mixture(adapted.params["arch"], 0.1, 0.2))
  np.testing.assert_allclose(adapted.predict(task["query_images"]), expected, rtol=1e-5,
                             atol=1e-6)
  # weights only: the architecture is not adapted and the prediction (and so the reported
  # genotype) uses the start temperature, 1.0
  rng = np.random.default_rng(0)
  for v in learner.model.arch_variables:
    v.assign(rng.normal(0, 0.3, v.shape))
  frozen = learner.adapt(task["support_images"], task["support_labels"],
                         phases=(inner_loop.Phase(2, ("weights",)),))
  arch = frozen.params["arch"]
  assert frozen.genotype == learner.model.genotype("threshold", arch=arch, threshold=0.2)
  assert frozen.genotype != learner.model.genotype("threshold", arch=arch, threshold=0.2,
                                                   tau_alpha=0.1, tau_beta=0.1)


# The authors' two published genotypes (their utils/genotypes.py), scaled up in Sec. 5.2.
METANAS_OG_V2 = Genotype(
    normal=[[("dil_conv_3x3", 0), ("sep_conv_3x3", 1)], [("avg_pool_3x3", 0), ("sep_conv_3x3", 1)],
            [("conv_1x5_5x1", 0), ("conv_3x3", 2)]],
    reduce=[[("skip_connect", 0), ("sep_conv_3x3", 1)], [("conv_3x3", 0), ("dil_conv_3x3", 1)],
            [("dil_conv_3x3", 0), ("conv_1x5_5x1", 2)]])
METANAS_IN_V2 = Genotype(
    normal=[[("conv_1x5_5x1", 0), ("conv_3x3", 1)], [("conv_3x3", 0), ("sep_conv_3x3", 2)],
            [("dil_conv_3x3", 1), ("conv_1x5_5x1", 3)]],
    reduce=[[("sep_conv_3x3", 0), ("conv_3x3", 1)], [("conv_3x3", 0), ("sep_conv_3x3", 2)],
            [("conv_3x3", 0), ("dil_conv_3x3", 1)]])


@pytest.mark.parametrize("genotype, ways, shape", [(METANAS_OG_V2, 20, (28, 28, 1)),
                                                   (METANAS_IN_V2, 5, (84, 84, 3))])
def test_scaled_up_published_genotypes_have_the_papers_size(tmp_path, genotype, ways, shape):
  """METANAS Sec. 5.2 / Table 2: the scaled-up networks (5 cells, C = 96) have about 1.1
  million weights; with a full 3x3 convolution as conv_3x3 they had 1.4-2.0 million."""
  path = tmp_path / "genotype.json"
  path.write_text(genotype.to_json())
  net = metanas.scaled_network(ways, str(path))
  net.build((None,) + shape)
  count = sum(int(np.prod(v.shape)) for v in net.weight_variables)
  assert 1.0e6 < count < 1.2e6, count


def test_scaled_network_reads_the_most_common_genotype_of_a_results_file(tmp_path):
  genotype = Genotype([[("conv_3x3", 0)], [("skip_connect", 2), ("max_pool_3x3", 1)]],
                      [[("conv_3x3", 1)], [("conv_3x3", 2)]])
  results = tmp_path / "results.json"
  old = {"genotypes": [{"tasks": 3, "genotype": genotype.to_dict()}]}
  results.write_text(json.dumps(old))  # an older version's: task-specific genotypes
  with pytest.raises(ValueError, match="older METANAS version.*tools/evaluate.py"):
    metanas.most_common_genotype(results)
  results.write_text(json.dumps({**old, "genotype_rule": "pairwise"}))
  net = metanas.scaled_network(5, str(results), channels=8)
  assert net.genotype == genotype and net.num_cells == 5 and net.drop_path_rate == 0.2
  plain = tmp_path / "genotype.json"
  plain.write_text(genotype.to_json())
  assert metanas.most_common_genotype(plain) == genotype


def test_the_report_counts_distinct_genotypes_and_names_a_shared_one_only():
  g = genotype_lib.Genotype([[("conv_3x3", 0)]], [[("max_pool_3x3", 1)]])
  entry = lambda tasks: {"tasks": tasks, "parameters": 123, "genotype": g.to_dict()}
  results = {"task_parameters": {"mean": 100.0, "min": 90, "max": 110},
             "task_parameter_counts": [100] * 4, "task_genotypes": [entry(1)],
             "distinct_task_genotypes": 4, "genotypes": [entry(3)], "distinct_genotypes": 2}
  lines = _learner().report(results)
  assert lines[1] == "task-specific genotypes: 4 distinct over 4 tasks"
  assert lines[2] == ("architecture (most common pairwise genotype, 3 of 4 tasks, 2 distinct; "
                      "to scale up): normal: c3(0)  reduce: mp3(1)")
  results.update(task_genotypes=[entry(2)], distinct_task_genotypes=3)
  assert _learner().report(results)[1] == (
      "task-specific genotypes: 3 distinct over 4 tasks; the most common (2 tasks, 123 "
      "parameters): normal: c3(0)  reduce: mp3(1)")
