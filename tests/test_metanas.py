"""METANAS against numbers: annealed temperatures, pruning, pruned = soft after annealing,
warm-up, the Reptile step on the architecture, the 50+50 protocol, MAML's second order on
the architecture, the Gumbel normalizer, TensorBoard architecture views, scale-up."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.data import episodes
from tf_metanas.data import synthetic
from tf_metanas.meta import inner_loop
from tf_metanas.meta import optimizers
from tf_metanas.methods import metanas
from tf_metanas.search import Genotype
from tf_metanas.search import SearchNetwork
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


# ---- temperatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "exponential"])
def test_temperature_reaches_its_end_value_at_the_last_inner_step(kind):
  tau = metanas.Temperature(2.0, 0.05, kind)
  values = [float(tau(s, 5)) for s in range(5)]
  assert values[0] == pytest.approx(2.0) and values[-1] == pytest.approx(0.05)
  assert float(tau(5, 5)) == pytest.approx(0.05)  # the prediction after adaptation
  assert all(a > b for a, b in zip(values, values[1:]))
  middle = 2.0 + (0.05 - 2.0) * 0.5 if kind == "linear" else 2.0 * (0.05 / 2.0) ** 0.5
  assert values[2] == pytest.approx(middle, rel=1e-6)
  assert float(tau(tf.constant(4), 5)) == pytest.approx(0.05)  # step as a tensor


def test_temperature_rejects_bad_schedules():
  with pytest.raises(ValueError, match="unknown temperature schedule 'cosine'"):
    metanas.Temperature(1.0, 0.1, "cosine")
  with pytest.raises(ValueError, match="must be positive"):
    metanas.Temperature(1.0, 0.0)


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


def test_pruning_removes_exactly_the_ops_and_combinations_below_the_threshold():
  net = _network()
  rng = np.random.default_rng(3)
  arch = [tf.constant(rng.normal(0, 2, v.shape), tf.float32) for v in net.arch_variables]
  threshold = 0.05
  soft = net.mixture(arch)
  pruned = net.mixture(arch, threshold=threshold)
  for cell in ("normal", "reduce"):
    ops, kept = soft[f"{cell}_ops"].numpy(), pruned[f"{cell}_ops"].numpy()
    np.testing.assert_array_equal(kept, np.where(ops >= threshold, ops, 0.0))
    assert (ops < threshold).any() and (ops >= threshold).any()  # the case is not trivial
    _, betas = net.arch_dict(arch)
    combos = mixture_lib.combination_weights(betas[cell], 2, 2).numpy()
    expected = np.where(combos >= threshold, combos, 0.0) @ topology.combination_to_edges(2, 2)
    np.testing.assert_allclose(pruned[f"{cell}_edges"].numpy(), expected, rtol=1e-6)
  genotype = net.genotype("threshold", arch=arch, threshold=threshold)
  for cell in ("normal", "reduce"):
    edges, ops = pruned[f"{cell}_edges"].numpy(), pruned[f"{cell}_ops"].numpy()
    kept = {(OPS[o], i) for j, node_edges in enumerate(topology.node_edges(2))
            for e, i in node_edges for o in range(len(OPS)) if edges[e] * ops[e, o] > 0}
    assert set(p for node in genotype.cell(cell) for p in node) == kept


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
  soft = net.functional_call(weights, images, mixture=learner.mixture(arch, 4, 4))
  pruned_mixture = learner.mixture(arch, 4, 4, threshold=0.01)
  assert sum(int((pruned_mixture[k].numpy() == 0).sum()) for k in pruned_mixture) > 10
  pruned = learner.final_logits({"weights": weights, "arch": arch}, images, 4)
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


# ---- meta-training ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["reptile", "maml"])
def test_warmup_keeps_the_architecture_still_then_releases_it(algorithm):
  learner = _learner(algorithm=algorithm, warmup_iterations=2,
                     meta_learning_rates={"weights": 0.01, "arch": 0.01} if algorithm == "maml"
                     else None)
  batch, before = _batch(learner), _arch(learner.model)
  weights = learner.model.weight_variables[0].numpy().copy()
  for _ in range(2):
    assert learner.in_warmup()
    learner.train_step(batch)
  for a, b in zip(_arch(learner.model), before):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(learner.model.weight_variables[0].numpy(), weights)
  assert not learner.in_warmup()
  learner.train_step(batch)
  assert all(not np.array_equal(a, b) for a, b in zip(_arch(learner.model), before))


def test_reptile_moves_the_architecture_by_exactly_its_step_times_the_mean_difference():
  learner = _learner()
  batch, meta = _batch(learner), _arch(learner.model)
  adapt = tf.function(lambda t: learner._adapt_loop(t, learner._initial_params(),
                                                    learner.train_phases)[0]["arch"],
                      autograph=False)
  adapted = [[a.numpy() for a in adapt(_task(batch, i))] for i in range(2)]
  learner.train_step(batch)
  for k, (new, old) in enumerate(zip(_arch(learner.model), meta)):
    mean_diff = np.mean([adapted[i][k] - old for i in range(2)], axis=0)
    assert np.abs(mean_diff).max() > 1e-4
    np.testing.assert_allclose(new - old, 0.6 * mean_diff, rtol=1e-4, atol=1e-8)


def test_meta_test_protocol_changes_the_architecture_only_in_its_first_phase():
  learner = _learner(test_steps=(3, 3))
  task = _task(_batch(learner, training=False))
  trajectory, _ = learner._adapt(task, learner._initial_params(), learner.test_phases,
                                 first_order=True)
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
  results = []
  for learner in (joint, alternating):
    trajectory, _ = learner._adapt(task, learner._initial_params(), learner.train_phases,
                                   first_order=True)
    results.append(trajectory[-1])
  for name in BOTH:
    assert not np.allclose(results[0][name][0], results[1][name][0])  # different maths
    assert not np.array_equal(results[1][name][0], alternating._initial_params()[name][0])


def test_maml_meta_gradient_on_the_architecture_equals_finite_differences(float64):
  del float64
  net = _network(channels=2, input_k=2)
  learner = _learner(net, algorithm="maml", train_steps=2, arch_lr=0.3,
                     weights_optimizer=optimizers.SGD(),
                     meta_learning_rates={"weights": 0.1, "arch": 0.1})
  task = _task(_batch(learner))
  grads, _ = learner._maml_task(task, first_order=False, phases=learner.train_phases)
  arch_grads = grads[len(net.weight_variables):]

  def query_loss(arch):
    params = {"weights": [v.value for v in net.weight_variables], "arch": arch}
    trajectory, _ = learner._adapt(task, params, learner.train_phases, first_order=False)
    return float(learner._query(task, trajectory[-1], 2, 2)[0])

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
  params = learner._initial_params()
  images = tf.random.uniform((4, 8, 8, 1))
  adapt_logits = [learner.forward(learner.model, params, images, 0, 2) for _ in range(2)]
  assert not np.allclose(adapt_logits[0], adapt_logits[1])
  query = [learner.forward(learner.model, params, images, 2, 2) for _ in range(2)]
  np.testing.assert_array_equal(query[0], query[1])
  with pytest.raises(ValueError, match="unknown normalizer 'sparsemax'"):
    _learner(normalizer="sparsemax")


def test_metanas_needs_a_search_network():
  from tf_metanas.search import Conv4  # pylint: disable=import-outside-toplevel
  net = Conv4(3, filters=2)
  net.build((None, 8, 8, 1))
  with pytest.raises(ValueError, match="METANAS searches a SearchNetwork, got Conv4"):
    metanas.Metanas(net)


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
  assert len(counts) == 3 and sum(g["tasks"] for g in results["genotypes"]) <= 3
  genotype = Genotype.from_dict(results["genotypes"][0]["genotype"])
  assert results["genotypes"][0]["parameters"] == learner.model.count_params_of(genotype)
  assert results["task_parameters"]["min"] <= results["task_parameters"]["mean"]
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
    expected = ((1.2 + 0.38 * rows) * 90, (1.6 + 0.95 * cols) * 90)  # figure size x dpi
    assert np.abs(np.subtract(image.shape[:2], expected)).max() <= 1
    assert image.std() > 10  # a picture, not a blank
  for tag in ("Architecture/task_parameters", "Architecture/genotypes",
              "Architecture/most_common/genotype", "Architecture/task_0/genotype",
              "Architecture/tau_alpha_end"):
    assert tag in images


def test_heatmap_axes_name_edges_ops_and_combinations():
  assert visualize.edge_names(2) == ["c_{k-2} -> 0", "c_{k-1} -> 0", "c_{k-2} -> 1",
                                     "c_{k-1} -> 1", "0 -> 1"]
  assert visualize.combination_names(2, 2) == [
      "node 0: c_{k-2} + c_{k-1}", "node 1: c_{k-2} + c_{k-1}", "node 1: c_{k-2} + 0",
      "node 1: c_{k-1} + 0"]


def test_adapted_model_predicts_with_its_task_specific_architecture():
  learner = _learner()
  task = _task(_batch(learner, training=False))
  adapted = learner.adapt(task["support_images"], task["support_labels"])
  assert adapted.parameter_count == learner.model.count_params_of(adapted.genotype)
  logits = adapted.predict(task["query_images"])
  np.testing.assert_allclose(
      logits, learner.final_logits(adapted.params, tf.cast(task["query_images"], tf.float32)
                                   / 255.0, 4), rtol=1e-5)
  assert 0.0 <= adapted.accuracy(task["query_images"], task["query_labels"]) <= 1.0


def test_scaled_network_reads_the_most_common_genotype_of_a_results_file(tmp_path):
  genotype = Genotype([[("conv_3x3", 0)], [("skip_connect", 2), ("max_pool_3x3", 1)]],
                      [[("conv_3x3", 1)], [("conv_3x3", 2)]])
  results = tmp_path / "results.json"
  results.write_text(json.dumps({"genotypes": [{"tasks": 3, "genotype": genotype.to_dict()}]}))
  net = metanas.scaled_network(5, str(results), channels=8)
  assert net.genotype == genotype and net.num_cells == 5 and net.drop_path_rate == 0.2
  plain = tmp_path / "genotype.json"
  plain.write_text(genotype.to_json())
  assert metanas.most_common_genotype(plain) == genotype
