"""The engine's update rules, checked against numbers: optimizers, inner loop, MAML (second
order = finite differences), first-order MAML (= a hand-built reference), Reptile (exact
step), MAML++ options, schedules, one compiled meta-iteration."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas.data import episodes
from tf_metanas.data import synthetic
from tf_metanas.meta import inner_loop
from tf_metanas.meta import learner as learner_lib
from tf_metanas.meta import optimizers
from tf_metanas.meta import rules
from tf_metanas.meta import schedules
from tf_metanas.search import Conv4


def _batch(num_tasks=2, ways=3, shots=2, queries=2, steps=2, batch_size=None, seed=0):
  store = synthetic.prototype_store(num_classes=8, per_class=10, size=8)
  spec = episodes.EpisodeSpec(ways, shots, queries, batch_size, steps)
  return next(iter(episodes.EpisodeSampler(store, spec, seed).dataset(num_tasks)))


def _task(batch, i=0):
  return {k: v[i] for k, v in batch.items()}


def _learner(algorithm="maml", steps=2, lr=0.1, filters=2, optimizer=None, **kwargs):
  keras.utils.set_random_seed(0)
  net = Conv4(3, filters=filters)
  net.build((None, 8, 8, 1))
  optimizer = optimizer or optimizers.SGD()
  return learner_lib.MetaLearner(
      net, algorithm, inner_groups=(inner_loop.ParamGroup("weights", optimizer, lr),),
      train_phases=(inner_loop.Phase(steps),), test_phases=(inner_loop.Phase(steps),),
      **kwargs)


def _plan(regime, warmup=False, structure=()):
  """The IterationPlan (trace key) of a MAML regime (first order, multi-step loss)."""
  return learner_lib.IterationPlan(regime=regime, warmup=warmup, structure=structure)


def _group_variables(learner, name):
  """What a group meta-learns: its variables, then its learnable inner rates (LSLR), then
  for the weights the per-step BatchNorm scales and shifts (BNWB)."""
  groups = learner.meta_variables()
  return (groups[name] + groups.get(f"inner_lr_{name}", []) +
          (groups.get("bn_weights", []) if name == "weights" else []))


# ---- pure optimizers and schedules --------------------------------------------------------


def test_sgd_with_weight_decay():
  params, grads = [tf.constant([1.0, -2.0])], [tf.constant([0.5, 0.5])]
  new, _ = optimizers.SGD().update(params, grads, (), lr=0.1, weight_decay=0.01)
  np.testing.assert_allclose(new[0], [1.0 - 0.1 * (0.5 + 0.01), -2.0 - 0.1 * (0.5 - 0.02)])


def test_adam_matches_its_formula_over_three_steps():
  adam = optimizers.Adam(beta1=0.5, beta2=0.9, epsilon=1e-8)
  p = np.array([1.0, -1.0])
  params, state = [tf.constant(p)], adam.init([tf.constant(p)])
  m = v = np.zeros(2)
  for t, g in enumerate([np.array([0.1, -0.3]), np.array([0.2, 0.1]), np.array([-0.5, 0.4])], 1):
    params, state = adam.update(params, [tf.constant(g)], state, lr=0.01, weight_decay=0.1)
    g = g + 0.1 * p
    m, v = 0.5 * m + 0.5 * g, 0.9 * v + 0.1 * g ** 2
    p = p - 0.01 * (m / (1 - 0.5 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-8)
    np.testing.assert_allclose(params[0], p, rtol=1e-10)


def test_reptile_adam_with_beta1_zero_has_no_momentum():
  adam = optimizers.Adam(beta1=0.0)
  params, state = [tf.constant([0.0])], adam.init([tf.constant([0.0])])
  params, state = adam.update(params, [tf.constant([1.0])], state, lr=0.1)
  _, (_, m, _) = adam.update(params, [tf.constant([-3.0])], state, lr=0.1)
  np.testing.assert_allclose(m[0], [-3.0])


@pytest.mark.parametrize("schedule, points", [
    (schedules.Linear(1.0, 0.0, 100), {0: 1.0, 50: 0.5, 100: 0.0, 500: 0.0}),
    (schedules.Cosine(1e-3, 1e-5, 10), {0: 1e-3, 5: (1e-3 + 1e-5) / 2, 10: 1e-5, 99: 1e-5}),
])
def test_schedules_hit_their_end_values(schedule, points):
  for step, value in points.items():
    assert float(schedule(step)) == pytest.approx(value, rel=1e-6, abs=1e-9)


# ---- inner loop -------------------------------------------------------------------------


def test_inner_loss_falls():
  learner = _learner(steps=8, lr=0.5, filters=8)
  batch = _batch(steps=8)
  task = _task(batch)
  trajectory, losses, _ = learner.adapt_trajectory(
      task, learner.task_context(task, learner.protocol(meta_training=True)), first_order=True,
      params=learner.meta_parameters())
  losses = [float(l) for l in losses]
  assert len(trajectory) == 9
  assert losses[-1] < 0.5 * losses[0]


def test_phases_move_only_their_groups():
  params = {"weights": [tf.constant(1.0)], "arch": [tf.constant(1.0)]}
  groups = {"weights": inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),
            "arch": inner_loop.ParamGroup("arch", optimizers.SGD(), 0.1)}
  loss_fn = lambda p, step: p["weights"][0] ** 2 + p["arch"][0] ** 2
  phases = (inner_loop.Phase(2, ("weights", "arch")), inner_loop.Phase(3, ("weights",)))
  trajectory, _, _ = inner_loop.adapt(loss_fn, params, groups, phases)
  assert float(trajectory[-1]["weights"][0]) == pytest.approx(0.8 ** 5)
  assert float(trajectory[-1]["arch"][0]) == pytest.approx(0.8 ** 2)


def test_alternating_updates_see_the_other_group_moved():
  params = {"weights": [tf.constant(1.0)], "arch": [tf.constant(2.0)]}
  groups = {"arch": inner_loop.ParamGroup("arch", optimizers.SGD(), 0.1),
            "weights": inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1)}
  loss_fn = lambda p, step: p["weights"][0] * p["arch"][0]
  phases = (inner_loop.Phase(1, ("weights", "arch")),)
  joint, _, _ = inner_loop.adapt(loss_fn, params, groups, phases, joint=True)
  alternating, _, _ = inner_loop.adapt(loss_fn, params, groups, phases, joint=False)
  assert float(joint[-1]["weights"][0]) == pytest.approx(1.0 - 0.1 * 2.0)
  # arch first: a = 2 - 0.1 * 1 = 1.9; then weights see it: w = 1 - 0.1 * 1.9
  assert float(alternating[-1]["arch"][0]) == pytest.approx(1.9)
  assert float(alternating[-1]["weights"][0]) == pytest.approx(0.81)


# ---- MAML, first-order MAML, Reptile ------------------------------------------------------


def _query_loss_after_adaptation(learner, task, values):
  """L_Q(U^k(theta)) with theta = values, computed without the learner's meta-gradient."""
  params = {"weights": values}
  protocol = learner.protocol(meta_training=True)
  context = learner.task_context(task, protocol)
  trajectory, _, _ = learner.adapt_trajectory(task, context, first_order=False, params=params)
  return learner.query(task, trajectory[-1], context.prediction())[0]


def test_maml_meta_gradient_matches_finite_differences(float64):
  learner = _learner("maml", steps=2, lr=0.3)
  task = _task(_batch())
  assert not learner.first_order_now()
  grads = learner.task_directions(task)[0]["weights"]
  theta = [tf.constant(np.array(v)) for v in learner.variables["weights"]]
  assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)  # reaches every weight
  for seed in range(3):
    d = [tf.constant(np.random.default_rng(seed).normal(size=t.shape)) for t in theta]
    eps = 1e-7
    plus = _query_loss_after_adaptation(learner, task, [t + eps * u for t, u in zip(theta, d)])
    minus = _query_loss_after_adaptation(learner, task, [t - eps * u for t, u in zip(theta, d)])
    numeric = float(plus - minus) / (2 * eps)
    analytic = sum(float(tf.reduce_sum(tf.cast(g, tf.float64) * u)) for g, u in zip(grads, d))
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_first_order_maml_equals_hand_built_reference():
  learner = _learner("fomaml", steps=1, lr=0.3)
  task = _task(_batch(steps=1))
  assert learner.first_order_now()
  grads = learner.task_directions(task)[0]["weights"]

  net = learner.model
  w = [v.value for v in net.weight_variables]
  x_s = tf.gather(learner_lib.to_float(task["support_images"]), task["support_batches"][0])
  y_s = tf.gather(task["support_labels"], task["support_batches"][0])
  with tf.GradientTape() as tape:
    tape.watch(w)
    support = learner_lib.cross_entropy(net.functional_call(w, x_s), y_s)
  adapted = [p - 0.3 * g for p, g in zip(w, tape.gradient(support, w))]
  with tf.GradientTape() as tape:
    tape.watch(adapted)
    query = learner_lib.cross_entropy(
        net.functional_call(adapted, learner_lib.to_float(task["query_images"])),
        task["query_labels"])
  reference = tape.gradient(query, adapted)
  for g, r in zip(grads, reference):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7)


def test_maml_and_first_order_maml_differ():
  learner = _learner("maml", steps=1, lr=0.3)
  first_order = _learner("fomaml", steps=1, lr=0.3)  # the same initial weights (seed 0)
  for a, b in zip(learner.variables["weights"], first_order.variables["weights"]):
    np.testing.assert_array_equal(np.array(a), np.array(b))
  task = _task(_batch(steps=1))
  assert not learner.first_order_now() and first_order.first_order_now()
  second = learner.task_directions(task)[0]["weights"]
  first = first_order.task_directions(task)[0]["weights"]
  assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(second, first)) > 1e-6


def test_reptile_step_moves_meta_weights_by_eps_times_mean_difference():
  """Inner SGD here: with Adam, the conv biases (which BatchNorm makes irrelevant, so their
  gradients are float noise) would move by +-lr on the noise's sign, which differs between
  this eager reference and the compiled step."""
  learner = _learner("reptile", steps=3, lr=0.1,
                     meta_learning_rates={"weights": schedules.Linear(0.5, 0.1, 10)})
  for step, eps in enumerate([0.5, 0.46]):
    batch = _batch(num_tasks=3, steps=3, seed=step)
    before = [np.array(v) for v in learner.variables["weights"]]
    adapted = []
    for i in range(3):
      protocol = learner.protocol(meta_training=True)
      task = _task(batch, i)
      context = learner.task_context(task, protocol)
      trajectory, _, _ = learner.adapt_trajectory(task, context, first_order=True,
                                                  params=learner.meta_parameters())
      looped, _, _ = learner.adapt_task(task, context, learner.meta_parameters())
      for a, b in zip(trajectory[-1]["weights"], looped["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # unrolled == while_loop
      adapted.append([np.array(a) for a in trajectory[-1]["weights"]])
    learner.train_step(batch)
    for k, v in enumerate(learner.variables["weights"]):
      mean_adapted = np.mean([a[k] for a in adapted], axis=0)
      expected = before[k] + eps * (mean_adapted - before[k])
      np.testing.assert_allclose(np.array(v), expected, rtol=1e-5, atol=1e-6)
    moved = max(np.abs(np.array(v) - b).max() for v, b in zip(learner.variables["weights"], before))
    assert moved > 1e-3  # it really moved


def test_maml_meta_update_applies_the_mean_meta_gradient():
  learner = _learner("maml", steps=1, lr=0.3, meta_optimizer="sgd",
                     meta_learning_rates={"weights": 0.1})
  batch = _batch(num_tasks=2, steps=1)
  before = [np.array(v) for v in learner.variables["weights"]]
  assert not learner.first_order_now()
  per_task = [learner.task_directions(_task(batch, i))[0]["weights"] for i in range(2)]
  learner.train_step(batch)
  for k, v in enumerate(learner.variables["weights"]):
    mean_grad = (np.array(per_task[0][k]) + np.array(per_task[1][k])) / 2
    np.testing.assert_allclose(np.array(v), before[k] - 0.1 * mean_grad, rtol=1e-4, atol=1e-6)


def test_one_compiled_meta_iteration_does_not_retrace():
  learner = _learner("maml", steps=2)
  for seed in range(4):
    learner.train_step(_batch(seed=seed))
  assert learner.trace_counts()[_plan((False, False))] == 1
  assert int(learner.step.numpy()) == 4


def test_maml_overfits_one_episode():
  learner = _learner("maml", steps=2, lr=0.5, filters=8,
                     meta_learning_rates={"weights": 0.01})
  batch = _batch(num_tasks=1, ways=3, shots=1, queries=3, steps=2)
  for _ in range(40):
    metrics = learner.train_step(batch)
  assert float(metrics["query_accuracy"]) == 1.0


# ---- MAML++ options -----------------------------------------------------------------------


def test_multi_step_loss_weights_anneal_to_the_last_step():
  start = learner_lib.multi_step_weights(5, 0, 100).numpy()
  end = learner_lib.multi_step_weights(5, 100, 100).numpy()
  np.testing.assert_allclose(start, [0.2] * 5, rtol=1e-6)
  np.testing.assert_allclose(end, [0.006] * 4 + [1 - 4 * 0.006], rtol=1e-5)
  middle = learner_lib.multi_step_weights(5, 50, 100).numpy()  # the official clipped rates
  np.testing.assert_allclose(middle, [0.1] * 4 + [0.6], rtol=1e-5)
  assert end.sum() == pytest.approx(1.0)


def test_learnable_inner_learning_rates_are_meta_learned():
  learner = _learner("maml", steps=2, learnable_inner_lr=True, multi_step_loss_iterations=10)
  assert len(learner.inner_lrs["weights"]) == len(learner.variables["weights"])
  before = [np.array(v) for v in learner.inner_lrs["weights"]]
  learner.train_step(_batch())
  after = [np.array(v) for v in learner.inner_lrs["weights"]]
  assert all(b.shape == (2,) for b in before)
  assert any(not np.allclose(a, b) for a, b in zip(after, before))


def test_derivative_order_annealing_switches_to_second_order():
  learner = _learner("maml", steps=1, first_order_iterations=2)
  orders = []
  for seed in range(3):
    orders.append(learner.first_order_now())
    learner.train_step(_batch(steps=1, seed=seed))
  assert orders == [True, True, False]
  assert set(learner.trace_counts()) == {_plan((True, False)), _plan((False, False))}


def test_reptile_rejects_options_that_need_query_gradients():
  with pytest.raises(ValueError, match="LSLR"):
    _learner("reptile", learnable_inner_lr=True)


def test_meta_learning_rates_must_name_the_inner_groups():
  with pytest.raises(ValueError, match=r"names groups \['arch'\] but the inner groups are \['weights'\]"):
    _learner("maml", meta_learning_rates={"arch": 0.1})


# ---- adaptation API ------------------------------------------------------------------------


def test_adapt_returns_a_model_that_predicts_the_new_task():
  learner = _learner("maml", steps=10, lr=0.5, filters=8)
  task = _task(_batch(num_tasks=1, ways=3, shots=3, queries=5, steps=10))
  before = [np.array(v) for v in learner.model.variables]
  adapted = learner.adapt(task["support_images"], task["support_labels"])
  for b, v in zip(before, learner.model.variables):  # meta-parameters untouched
    np.testing.assert_array_equal(b, np.array(v))
  assert adapted.support_losses[-1] < adapted.support_losses[0]
  assert adapted.predict(task["query_images"]).shape == (15, 3)
  assert adapted.accuracy(task["query_images"], task["query_labels"]) >= 0.8
  again = learner.adapt(task["support_images"], task["support_labels"])  # reuses the trace
  np.testing.assert_allclose(again.support_losses, adapted.support_losses, rtol=1e-6)
  assert learner.compiled_adaptations() == 1


def test_per_step_bn_statistics_track_each_steps_batch_moments():
  learner = _learner("maml", steps=2, lr=0.3, per_step_bn_statistics=True)
  net = learner.model
  assert [tuple(v.shape) for v in learner.bn_statistics[:2]] == [(2, 2), (2, 2)]  # a slot a step
  batch = _batch(num_tasks=2, steps=2)
  initial_mean = np.array(learner.bn_statistics[0])  # first BatchNorm's moving mean, per slot
  w = [v.value for v in net.weight_variables]
  expected_slot0 = []
  for i in range(2):  # step 0 sees the meta weights on the first support mini-batch
    task = _task(batch, i)
    x = tf.gather(learner_lib.to_float(task["support_images"]), task["support_batches"][0])
    expected_slot0.append(np.mean(np.array(tf.nn.conv2d(x, w[0], 2, "SAME") + w[1]), (0, 1, 2)))
  learner.train_step(batch)
  after = np.array(learner.bn_statistics[0])
  np.testing.assert_allclose(after[0], 0.9 * initial_mean[0] + 0.1 * np.mean(expected_slot0, 0),
                             rtol=1e-4, atol=1e-6)
  assert not np.allclose(after[1], after[0])
  assert "bn_statistics_0" in learner.checkpoint_items()


def test_non_transductive_evaluation_uses_the_step_statistics():
  batch = _batch(num_tasks=2, steps=2)
  learners = {t: _learner("maml", steps=2, filters=8, per_step_bn_statistics=True,
                          transductive=t) for t in (True, False)}
  losses = {}
  for transductive, learner in learners.items():
    learner.train_step(batch)  # running statistics of real batch moments
    losses[transductive] = learner.evaluate_batch(batch)["loss"].numpy()
    for v in learner.bn_statistics[0::2]:  # shift every moving mean
      v.assign(v - 0.5)
  assert not np.allclose(losses[True], losses[False])
  np.testing.assert_allclose(learners[True].evaluate_batch(batch)["loss"].numpy(), losses[True],
                             rtol=1e-5)  # batch statistics: running ones are not read
  assert not np.allclose(learners[False].evaluate_batch(batch)["loss"].numpy(), losses[False])
  with pytest.raises(ValueError, match="transductive=False needs per_step_bn_statistics"):
    _learner("maml", transductive=False)


def test_two_groups_with_learnable_inner_rates_update_in_order():
  """Weights and architecture, each with LSLR: every meta variable gets its own gradient."""
  from tf_metanas.search import SearchNetwork  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  net = SearchNetwork(num_classes=3, channels=2, num_cells=2, reduction_cells=(1,), num_nodes=2,
                      op_set=("conv_3x3", "skip_connect"), stem_multiplier=1)
  net.build((None, 8, 8, 1))
  groups = (inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),
            inner_loop.ParamGroup("arch", optimizers.Adam(), 0.01, weight_decay=1e-3))
  learner = learner_lib.MetaLearner(
      net, "maml", inner_groups=groups, train_phases=(inner_loop.Phase(2, ("weights", "arch")),),
      learnable_inner_lr=True, meta_learning_rates={"weights": 1e-3, "arch": 1e-3})
  before = {n: [np.array(v) for v in _group_variables(learner, n)] for n in learner.groups}
  learner.train_step(_batch(steps=2))
  for name in learner.groups:
    after = [np.array(v) for v in _group_variables(learner, name)]
    assert [a.shape for a in after] == [b.shape for b in before[name]]
    assert any(not np.allclose(a, b) for a, b in zip(after, before[name]))
  arch_lrs_before = before["arch"][len(learner.variables["arch"]):]
  assert len(arch_lrs_before) == len(learner.inner_lrs["arch"]) == 4
  assert any(not np.allclose(np.array(v), b)
             for v, b in zip(learner.inner_lrs["arch"], arch_lrs_before))


def test_unrolled_reptile_task_equals_the_while_loop_one():
  learner = _learner("reptile", steps=3)
  unrolling = _learner("reptile", steps=3, rule=rules.Reptile(unroll=True))  # same weights
  task = _task(_batch(steps=3))
  looped, looped_metrics = learner.task_directions(task)[:2]
  # In a graph (as tools/benchmark.py profiles it): the plan is read eagerly, outside.
  plan = unrolling.plan()
  unrolled, unrolled_metrics = tf.function(
      lambda t: unrolling.rule.task_directions(unrolling, {"train": t},
                                               unrolling.touched_groups(plan), plan, None, 0)[:2],
      autograph=False)(task)
  assert set(looped) == set(unrolled) == {"weights"}
  for a, b in zip(looped["weights"], unrolled["weights"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for key, value in looped_metrics.items():
    assert float(unrolled_metrics[key]) == pytest.approx(float(value), rel=1e-5)


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_xla_compiled_meta_iterations_equal_the_graph_ones(algorithm):
  batch = _batch(num_tasks=2)
  results = []
  for jit in (False, True):
    learner = _learner(algorithm, meta_optimizer="sgd", jit_compile=jit)
    metrics = learner.train_step(batch)
    results.append(([v.numpy() for v in learner.model.trainable_variables],
                    float(metrics["query_loss"]),
                    learner.evaluate_batch(batch)["loss"].numpy()))
  (graph, graph_loss, graph_eval), (xla, xla_loss, xla_eval) = results
  for a, b in zip(graph, xla):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert xla_loss == pytest.approx(graph_loss, rel=1e-5)
  np.testing.assert_allclose(xla_eval, graph_eval, rtol=1e-4)


def test_multi_step_loss_is_used_for_its_iterations_then_the_last_step_alone():
  msl = _learner("maml", steps=2, lr=0.3, multi_step_loss_iterations=1,
                 meta_learning_rates={"weights": 0.0})
  plain = _learner("maml", steps=2, lr=0.3, meta_learning_rates={"weights": 0.0})
  task = _task(_batch(steps=2))
  assert not msl.first_order_now() and not plain.first_order_now()
  during = msl.task_directions(task)[0]["weights"]
  reference = plain.task_directions(task)[0]["weights"]
  assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(during, reference)) > 1e-5
  assert msl.multi_step_loss_now()
  msl.train_step(_batch(steps=2))  # a meta learning rate of 0: the parameters stay put
  assert not msl.multi_step_loss_now()
  assert not msl.first_order_now()
  after = msl.task_directions(task)[0]["weights"]
  for a, b in zip(after, reference):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_per_step_bn_weights_are_meta_learned_per_step_and_not_adapted(float64):
  """The official slots: the support pass of step s and the query after s + 1 updates use
  slot s (2 steps: support 0, support 1, query: slots 0, 1, 1)."""
  del float64
  learner = _learner("maml", steps=2, lr=0.3, per_step_bn_weights=True)
  net = learner.model
  gammas = [v for v in net.weight_variables if "gamma" in v.path]
  assert len(learner.bn_weights) == 8 and learner.bn_weights[0].shape == (2, 2)  # 2 slots
  assert not {id(v) for v in gammas} & {id(v) for v in learner.variables["weights"]}
  rng = np.random.default_rng(0)
  for v in learner.bn_weights:  # distinct scales and shifts per step
    v.assign(v + rng.normal(0, 0.3, v.shape))
  task = _task(_batch(steps=2))
  assert not learner.first_order_now()
  bn_grads = learner.task_directions(task)[0]["bn_weights"]

  def query_loss():
    """MAML by hand: two SGD steps on the support batches with the slot-0 then slot-1
    scales and shifts, then the query with the slot-1 ones."""
    def weights(slot, adapted):
      values = dict(zip(map(id, learner.variables["weights"]), adapted))
      values.update((id(v), bn[slot]) for v, bn in
                    zip([w for w in net.weight_variables if id(w) not in values],
                        learner.bn_weights))
      return [values[id(v)] for v in net.weight_variables]
    params = [v.value for v in learner.variables["weights"]]
    for step in range(2):
      index = task["support_batches"][step]
      x = tf.gather(learner_lib.to_float(task["support_images"]), index)
      y = tf.gather(task["support_labels"], index)
      with tf.GradientTape() as tape:
        tape.watch(params)
        loss = learner_lib.cross_entropy(net.functional_call(weights(step, params), x), y)
      params = [p - 0.3 * g for p, g in zip(params, tape.gradient(loss, params))]
    logits = net.functional_call(weights(1, params), learner_lib.to_float(task["query_images"]))
    return float(learner_lib.cross_entropy(logits, task["query_labels"]))

  eps = 1e-6
  for index, slot in [(0, 0), (0, 1), (3, 1)]:  # a gamma at both slots, a beta
    variable = learner.bn_weights[index]
    value = variable.numpy()
    numeric = []
    for sign in (1, -1):
      moved = value.copy()
      moved[slot, 1] += sign * eps
      variable.assign(moved)
      numeric.append(query_loss())
    variable.assign(value)
    expected = (numeric[0] - numeric[1]) / (2 * eps)
    assert abs(expected) > 1e-6
    assert float(bn_grads[index][slot, 1]) == pytest.approx(expected, rel=1e-4, abs=1e-8)
  assert "bn_weights_0" in learner.checkpoint_items()


def test_learned_inner_rates_are_used_at_test():
  """A learner whose per-step rates were set by hand adapts exactly as a hand-built SGD loop
  with those rates (the step past the meta-trained two reuses the last)."""
  learner = _learner("maml", steps=2, learnable_inner_lr=True)
  learner.test_phases = (inner_loop.Phase(3),)
  rng = np.random.default_rng(0)
  rates = [rng.uniform(0.05, 0.5, (2,)).astype(np.float32) for _ in learner.inner_lrs["weights"]]
  for variable, value in zip(learner.inner_lrs["weights"], rates):
    variable.assign(value)
  # the Train/ curve of the learned rates: their mean over steps and tensors
  assert learner.training_scalars()["inner_learning_rate/weights"] == pytest.approx(
      np.mean(rates), rel=1e-6)
  task = _task(_batch(num_tasks=1, steps=3))
  adapted = learner.adapt(task["support_images"], task["support_labels"])
  params = [v.value for v in learner.variables["weights"]]
  images = learner_lib.to_float(task["support_images"])
  for step in range(3):
    with tf.GradientTape() as tape:
      tape.watch(params)
      logits = learner.model.functional_call(params, images)
      loss = learner_lib.cross_entropy(logits, task["support_labels"])
    grads = tape.gradient(loss, params)
    params = [p - r[min(step, 1)] * g for p, r, g in zip(params, rates, grads)]
  for got, want in zip(adapted.params["weights"], params):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  flat = _learner("maml", steps=2)  # the initial 0.1 everywhere: a different result
  assert flat.training_scalars()["inner_learning_rate/weights"] == pytest.approx(0.1)
  flat.test_phases = learner.test_phases
  other = flat.adapt(task["support_images"], task["support_labels"])
  assert not np.allclose(other.params["weights"][0], params[0], atol=1e-4)


def test_sum_over_shots_loss_is_n_times_the_mean_on_a_full_support_set():
  """cbfinn's xent / K over a 3-way 2-shot support set: one SGD step at lr a equals the mean
  loss's step at lr 3 a."""
  task = _task(_batch(num_tasks=1, ways=3, shots=2, steps=1))
  adapted = {}
  for reduction, lr in (("sum_over_shots", 0.1), ("mean", 0.3)):
    learner = _learner("maml", steps=1, lr=lr, loss_reduction=reduction)
    learner.test_phases = (inner_loop.Phase(1),)
    adapted[reduction] = learner.adapt(task["support_images"], task["support_labels"]).params
  for a, b in zip(adapted["sum_over_shots"]["weights"], adapted["mean"]["weights"]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  once = _learner("maml", steps=1, lr=0.1)  # the same lr with the mean: a smaller step
  once.test_phases = (inner_loop.Phase(1),)
  other = once.adapt(task["support_images"], task["support_labels"]).params["weights"]
  assert not np.allclose(other[0], adapted["mean"]["weights"][0], atol=1e-5)
  # inner mini-batches of 3 of the 6 support images: sum / K = 3/2 x the mean
  half = {}
  for reduction, lr in (("sum_over_shots", 0.2), ("mean", 0.3)):
    learner = _learner("maml", steps=1, lr=lr, loss_reduction=reduction)
    half[reduction] = learner.adapt(task["support_images"], task["support_labels"],
                                    phases=(inner_loop.Phase(2),), inner_batch_size=3).params
  np.testing.assert_allclose(half["sum_over_shots"]["weights"][0], half["mean"]["weights"][0],
                             rtol=1e-4, atol=1e-6)
  # the query loss: 5 queries per class at K = 1, sum / K = 15 x the mean (the same
  # adaptation: lr 0.1 on the sum is lr 0.3 on the mean for a 3-way 1-shot support set)
  one_shot = _task(_batch(num_tasks=1, ways=3, shots=1, queries=5, steps=1))
  metrics = {reduction: _learner("maml", steps=1, lr=lr, loss_reduction=reduction).task_directions(
      one_shot)[1] for reduction, lr in (("sum_over_shots", 0.1), ("mean", 0.3))}
  assert float(metrics["sum_over_shots"]["query_loss"]) == pytest.approx(
      15 * float(metrics["mean"]["query_loss"]), rel=1e-4)
  with pytest.raises(ValueError, match="unknown loss_reduction 'sum'"):
    _learner("maml", loss_reduction="sum")


def test_meta_gradients_are_clipped_after_the_mean_over_tasks():
  learner = _learner("maml", steps=1, lr=0.3, meta_optimizer="sgd", meta_gradient_clip=0.01,
                     meta_learning_rates={"weights": 1.0})
  batch = _batch(num_tasks=2, steps=1)
  before = [np.array(v) for v in learner.variables["weights"]]
  assert not learner.first_order_now()
  grads = [learner.task_directions(_task(batch, i))[0]["weights"] for i in range(2)]
  learner.train_step(batch)
  clipped = 0
  for k, v in enumerate(learner.variables["weights"]):
    mean = (np.array(grads[0][k]) + np.array(grads[1][k])) / 2
    clipped += int((np.abs(mean) > 0.01).sum())
    np.testing.assert_allclose(np.array(v), before[k] - np.clip(mean, -0.01, 0.01),
                               rtol=1e-4, atol=1e-6)
  assert clipped > 10  # the clip bites
  with pytest.raises(ValueError, match="Reptile has none"):
    _learner("reptile", meta_gradient_clip=10.0)


def test_each_query_can_be_predicted_in_a_batch_with_the_support_set():
  """REPTILE's non-transductive evaluation: query i's logits are the last row of the
  network's output on [support set, query i]."""
  task = _task(_batch(num_tasks=1, ways=3, shots=2, queries=2, steps=2))
  learners = {mode: _learner("reptile", steps=2, query_batches=mode)
              for mode in ("all", "each_with_support")}
  adapted = {mode: l.adapt(task["support_images"], task["support_labels"])
             for mode, l in learners.items()}
  params = adapted["each_with_support"].params["weights"]
  support = learner_lib.to_float(task["support_images"])
  queries = learner_lib.to_float(task["query_images"])
  expected = np.stack([learners["all"].model.functional_call(
      params, tf.concat([support, queries[i:i + 1]], 0))[-1] for i in range(6)])
  got = adapted["each_with_support"].predict(task["query_images"])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  transductive = adapted["all"].predict(task["query_images"])
  assert not np.allclose(transductive, got, atol=1e-4)  # other batch statistics
  outputs = learners["each_with_support"].evaluate_batch(_batch(num_tasks=2, queries=2))
  assert outputs["accuracy"].shape == (2,)
  with pytest.raises(ValueError, match="unknown query_batches 'one'"):
    _learner("reptile", query_batches="one")


def test_batch_norm_kept_out_of_the_inner_loop_is_still_meta_learned():
  learner = _learner("maml", steps=2, lr=0.3, adapt_batch_norm=False)
  task = _task(_batch(num_tasks=1, steps=2))
  adapted = learner.adapt(task["support_images"], task["support_labels"])
  moved = {}
  for variable, value in zip(learner.variables["weights"], adapted.params["weights"]):
    moved[variable.path] = not np.allclose(np.array(variable), np.array(value))
  norms = [path for path in moved if "batch_norm" in path]
  assert len(norms) == 8 and not any(moved[p] for p in norms)  # gammas, betas: not adapted
  assert sum(moved.values()) >= 8  # kernels, biases, classifier: adapted
  assert not learner.first_order_now()
  grads = learner.task_directions(task)[0]["weights"]
  for variable, grad in zip(learner.variables["weights"], grads):
    if "beta" in variable.path:
      assert np.abs(np.array(grad)).max() > 1e-6  # meta-learned from the query loss
  with pytest.raises(ValueError, match="Reptile has not"):
    _learner("reptile", adapt_batch_norm=False)
