"""T-NAS, T-NAS++ and Auto-MAML: update rules against hand-built references, decoding,
streams, selection on meta-validation and the from-scratch evaluation."""

import json

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas import configurables
from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.data import streams as streams_lib
from tf_metanas.data import synthetic
from tf_metanas.meta import inner_loop
from tf_metanas.meta import optimizers
from tf_metanas.methods import tnas
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib
from tf_metanas.search import topology
from tf_metanas.train import from_scratch
from tf_metanas.train import runner as runner_lib
from tests import random_tasks
from tests.random_tasks import SIZE, WAYS

OPS = ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3")
CHEAP_OPS = ("none", "skip_connect", "avg_pool_3x3")  # where the ops do not matter: fast
_task, _tensors = random_tasks.task, random_tasks.tensors


def _supernet(seed=0, ops=OPS):
  tf.keras.utils.set_random_seed(seed)
  net = network_lib.SearchNetwork(WAYS, channels=4, num_cells=2, reduction_cells=(1,),
                                  num_nodes=2, op_set=ops, input_k=0, channel_doubling=True,
                                  stem="pooled")
  net.build((None, SIZE, SIZE, 1))
  return net


def _loss(model, weights, arch, images, labels):
  """The task loss computed directly on the network (not through the learner)."""
  logits = model.functional_call(weights, tf.cast(images, tf.float32) / 255.0, arch=arch,
                                 training=True)
  return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                        from_logits=True))


def _grads(model, weights, arch, images, labels):
  with tf.GradientTape() as tape:
    tape.watch(weights + arch)
    loss = _loss(model, weights, arch, images, labels)
  grads = tape.gradient(loss, weights + arch)
  return grads[:len(weights)], grads[len(weights):]


def _hand_adapt(model, task, steps, weights_lr, arch_lr):
  """Eq. 7 by hand: both groups step from the same gradient, each with its own rate."""
  weights = [v.value for v in model.weight_variables]
  arch = [v.value for v in model.arch_variables]
  for _ in range(steps):
    g_w, g_a = _grads(model, weights, arch, task["support_images"], task["support_labels"])
    weights = [w - weights_lr * g for w, g in zip(weights, g_w)]
    arch = [a - arch_lr * g for a, g in zip(arch, g_a)]
  return weights, arch


def _close(got, want, rtol=1e-4, atol=1e-6):
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ---- T-NAS ------------------------------------------------------------------------------


def test_the_joint_inner_step_is_two_sgd_steps_from_one_gradient():
  model = _supernet()
  learner = tnas.Tnas(model)
  task = _task(0)
  adapted = learner.adapt(task["support_images"], task["support_labels"],
                          phases=(inner_loop.Phase(2, ("weights", "arch")),))
  weights, arch = _hand_adapt(model, task, 2, 0.01, 30.0)
  _close(adapted.supernet_params["weights"], weights)
  _close(adapted.supernet_params["arch"], arch, rtol=1e-3, atol=1e-5)
  assert not np.allclose(arch[0], model.alpha_normal.numpy())  # theta moved (lr 30)


def test_the_meta_gradient_is_the_query_gradient_at_the_adapted_parameters():
  model = _supernet()
  learner = tnas.Tnas(model)
  task = _task(1)
  directions, _, _, _ = learner.task_directions(_tensors(task))
  weights, arch = _hand_adapt(model, task, 5, 0.01, 30.0)
  g_w, g_a = _grads(model, weights, arch, task["query_images"], task["query_labels"])
  _close(directions["weights"], g_w, rtol=2e-3, atol=1e-6)
  _close(directions["arch"], g_a, rtol=2e-3, atol=1e-6)


def test_the_alternating_second_order_form_is_maml_through_alternating_steps():
  """Eq. 5-6: w steps on the support loss, then theta from the new w, differentiated through
  both (a hand-built inner loop of nested tapes; finite differences are no reference here:
  ReLU and max-pool gradients jump, so the adapted parameters are not smooth in theta)."""
  model = _supernet()
  learner = tnas.Tnas(model, joint=False, algorithm="maml",
                      train_phases=(inner_loop.Phase(2, ("weights", "arch")),),
                      inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),
                                    inner_loop.ParamGroup("arch", optimizers.SGD(), 3.0)))
  task = _task(13, steps=2)
  directions = learner.task_directions(_tensors(task))[0]
  weights0 = [v.value for v in model.weight_variables]
  arch0 = [v.value for v in model.arch_variables]
  images, labels = task["support_images"], task["support_labels"]

  def inner_grad(weights, arch, of_weights):
    with tf.GradientTape() as tape:
      tape.watch(weights if of_weights else arch)
      loss = _loss(model, weights, arch, images, labels)
    return tape.gradient(loss, weights if of_weights else arch)

  with tf.GradientTape() as outer:
    outer.watch(weights0 + arch0)
    weights, arch = weights0, arch0
    for _ in range(2):
      weights = [w - 0.1 * g for w, g in zip(weights, inner_grad(weights, arch, True))]
      arch = [a - 3.0 * g for a, g in zip(arch, inner_grad(weights, arch, False))]
    query = _loss(model, weights, arch, task["query_images"], task["query_labels"])
  want = outer.gradient(query, weights0 + arch0)
  _close(directions["weights"], want[:len(weights0)], rtol=2e-3, atol=1e-6)
  _close(directions["arch"], want[len(weights0):], rtol=2e-3, atol=1e-6)
  first_order = tnas.Tnas(model, joint=False, algorithm="fomaml",
                          train_phases=learner.train_phases, inner_groups=tuple(
                              learner.inner_groups.values())).task_directions(_tensors(task))[0]
  assert not np.allclose(first_order["arch"][0], directions["arch"][0], rtol=1e-2)


def _adam(params, grads_per_step, lr, beta_1, beta_2, eps, weight_decay):
  """torch.optim.Adam with coupled L2 weight decay, by hand."""
  params = [np.asarray(p, np.float64) for p in params]
  m = [np.zeros_like(p) for p in params]
  v = [np.zeros_like(p) for p in params]
  for t, grads in enumerate(grads_per_step, start=1):
    for i, g in enumerate(grads):
      g = np.asarray(g, np.float64) + weight_decay * params[i]
      m[i] = beta_1 * m[i] + (1 - beta_1) * g
      v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
      m_hat, v_hat = m[i] / (1 - beta_1 ** t), v[i] / (1 - beta_2 ** t)
      params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
  return params


def test_the_architecture_meta_adam_has_betas_half_and_weight_decay():
  model = _supernet()
  learner = tnas.Tnas(model, meta_learning_rates={"weights": 1e-3, "arch": 0.05})
  start = [v.numpy() for v in model.arch_variables]
  tasks = [_task(2), _task(3)]
  directions = []
  for task in tasks:  # a meta-batch of one task per meta-iteration
    directions.append(learner.task_directions(_tensors(task))[0]["arch"])
    learner.train_step({k: tf.constant(v[None]) for k, v in task.items()})
  got = [v.numpy() for v in model.arch_variables]
  want = _adam(start, directions, 0.05, 0.5, 0.999, 1e-8, 1e-3)
  # Adam divides by |g|: entries with tiny gradients carry float32 noise of ~1e-5 here
  _close(got, want, rtol=1e-3, atol=5e-5)
  for wrong in (_adam(start, directions, 0.05, 0.9, 0.999, 1e-8, 1e-3),
                _adam(start, directions, 0.05, 0.5, 0.999, 1e-8, 0.0)):
    assert any(not np.allclose(g, w, rtol=1e-3, atol=5e-5) for g, w in zip(got, wrong))


def test_darts_decoding_of_hand_made_weights():
  alpha = np.full((topology.num_edges(2), len(OPS)), -5.0, np.float32)
  # node 0 (inputs 0, 1): edge 0 strongest at "none" (excluded) but also sep_conv; edge 1 pool
  alpha[0] = [9.0, -5.0, -5.0, 1.0]
  alpha[1] = [-5.0, -5.0, 2.0, -5.0]
  # node 1 (inputs 0, 1, 2): skip from input 2 strongest, then pool from input 0
  alpha[2] = [-5.0, -5.0, 1.5, -5.0]
  alpha[3] = [-5.0, 0.5, -5.0, -5.0]
  alpha[4] = [-5.0, 3.0, -5.0, -5.0]
  arch = [tf.constant(alpha), tf.constant(alpha)]
  want = ((("sep_conv_3x3", 0), ("avg_pool_3x3", 1)), (("avg_pool_3x3", 0), ("skip_connect", 2)))
  net = _supernet()
  assert net.genotype("darts", arch=arch) == genotype_lib.Genotype(normal=want, reduce=want)
  logits = mixture_lib.darts_logits(tf.constant(alpha), 2, OPS).numpy()
  chosen = [OPS[i] for i in np.argmax(logits, -1)]
  assert chosen == ["sep_conv_3x3", "avg_pool_3x3", "avg_pool_3x3", "none", "skip_connect"]
  assert set(np.unique(logits)) == {0.0, mixture_lib.REMOVED_LOGIT}


def test_in_graph_decoding_is_the_numpy_rule():
  rng = np.random.default_rng(0)
  names = network_lib.SearchNetwork(5, op_set="DARTS", input_k=0, num_nodes=4).op_names
  for trial in range(20):
    alphas = {c: tf.constant(rng.normal(size=(14, 8)).astype(np.float32) * (1e-3 if trial % 2 else 1))
              for c in mixture_lib.CELL_TYPES}
    want = genotype_lib.derive_darts(mixture_lib.mixture(alphas, None, 4, 1), names, 4)
    got = {}
    for cell, alpha in alphas.items():
      chosen = np.argmax(mixture_lib.darts_logits(alpha, 4, names).numpy(), -1)
      got[cell] = tuple(tuple((names[chosen[e]], i) for e, i in edges if names[chosen[e]] != "none")
                        for edges in topology.node_edges(4))
    assert genotype_lib.Genotype(**got) == want


def test_decoded_prediction_uses_the_kept_ops_only():
  model = _supernet()
  learner = tnas.Tnas(model)
  task = _task(4)
  adapted = learner.adapt(task["support_images"], task["support_labels"])
  kept, dropped = set(), set()
  for cell in model.cells:
    nodes = adapted.genotype.reduce if cell.reduction else adapted.genotype.normal
    for j, edges in enumerate(topology.node_edges(2)):
      for e, i in edges:
        for name, op in zip(OPS, cell.edges[e].candidates):
          ids = {id(v) for v in op.trainable_weights}
          (kept if (name, i) in nodes[j] else dropped).update(ids)
  assert kept and dropped
  images = tf.cast(task["query_images"], tf.float32) / 255.0

  def logits_with_noise_on(ids):
    weights = [w + 1.0 if id(v) in ids else w
               for v, w in zip(model.weight_variables, adapted.params["weights"])]
    return learner.final_logits({**adapted.params, "weights": weights}, images,
                                adapted.protocol).numpy()

  base = adapted.predict(task["query_images"]).numpy()
  np.testing.assert_allclose(logits_with_noise_on(dropped), base, rtol=1e-5, atol=1e-5)
  assert not np.allclose(logits_with_noise_on(kept), base, atol=1e-3)
  assert adapted.parameter_count == model.count_params_of(adapted.genotype)


def test_adapted_architectures_differ_across_tasks_that_differ():
  learner = tnas.Tnas(_supernet())
  batch = {k: tf.constant(np.stack([_task(5, 10)[k], _task(6, 10)[k], _task(5, 10)[k]]))
           for k in _task(5)}
  outputs = learner.evaluate_batch(batch)
  arch = outputs["arch"][0].numpy()
  assert not np.allclose(arch[0], arch[1])
  np.testing.assert_allclose(arch[0], arch[2], rtol=1e-5, atol=1e-6)
  assert {"supernet_accuracy", "accuracy"} <= set(outputs)


def test_tnas_checks_its_supernet():
  with pytest.raises(ValueError, match="input_k = 0"):
    tnas.Tnas(network_lib.SearchNetwork(3, op_set=OPS, input_k=2))
  with pytest.raises(ValueError, match="'none' op"):
    tnas.Tnas(network_lib.SearchNetwork(3, op_set=("skip_connect", "avg_pool_3x3"), input_k=0))


# ---- Auto-MAML --------------------------------------------------------------------------


def test_automaml_routes_architecture_and_weights_to_their_streams():
  learner = tnas.AutoMaml(_supernet())
  a, b, c = (_tensors(_task(s)) for s in (7, 8, 9))
  base = learner.task_directions({"train": a, "arch": b})[0]
  other_arch_task = learner.task_directions({"train": a, "arch": c})[0]
  other_train_task = learner.task_directions({"train": c, "arch": b})[0]
  _close(other_arch_task["weights"], base["weights"], rtol=1e-5, atol=1e-7)
  _close(other_train_task["arch"], base["arch"], rtol=1e-5, atol=1e-7)
  assert not np.allclose(other_arch_task["arch"][0], base["arch"][0])
  assert not np.allclose(other_train_task["weights"][0], base["weights"][0])


def test_automaml_architecture_gradient_is_taken_at_the_adapted_weights():
  model = _supernet()
  learner = tnas.AutoMaml(model)
  task = _task(10)
  got = learner.task_directions({"train": _tensors(task), "arch": _tensors(task)})[0]["arch"]
  weights, arch = _hand_adapt(model, task, 5, 0.01, 0.0)  # theta is not adapted
  _, at_adapted = _grads(model, weights, arch, task["query_images"], task["query_labels"])
  _close(got, at_adapted, rtol=2e-3, atol=1e-7)
  _, at_meta = _grads(model, [v.value for v in model.weight_variables], arch,
                      task["query_images"], task["query_labels"])
  assert not np.allclose(got[0], at_meta[0], rtol=1e-2)


def test_automaml_takes_the_architecture_step_before_the_weights_step():
  model = _supernet(ops=CHEAP_OPS)
  learner = tnas.AutoMaml(model, meta_optimizer="sgd",
                          meta_learning_rates={"weights": 0.1, "arch": 50.0})
  a, b = _tensors(_task(11)), _tensors(_task(12))
  w0 = [v.numpy() for v in model.weight_variables]
  a0 = [v.numpy() for v in model.arch_variables]
  first = learner.task_directions({"train": a, "arch": b})[0]
  a1 = [x - 50.0 * d for x, d in zip(a0, first["arch"])]
  for variable, value in zip(model.arch_variables, a1):
    variable.assign(value)
  after = learner.task_directions({"train": a, "arch": b})[0]["weights"]
  for variable, value in zip(model.arch_variables, a0):
    variable.assign(value)
  learner.train_step({"train": {k: v[None] for k, v in a.items()},
                      "arch": {k: v[None] for k, v in b.items()}})
  _close([v.numpy() for v in model.arch_variables], a1, rtol=1e-4, atol=2e-5)
  want = [w - 0.1 * d for w, d in zip(w0, after)]
  _close([v.numpy() for v in model.weight_variables], want, rtol=1e-4, atol=1e-6)
  stale = [w - 0.1 * d for w, d in zip(w0, first["weights"])]
  assert any(not np.allclose(g.numpy(), s, rtol=1e-4, atol=1e-6)
             for g, s in zip(model.weight_variables, stale))


def _automaml_step(strategy):
  with strategy.scope():
    model = _supernet(ops=CHEAP_OPS)
    learner = tnas.AutoMaml(model)
  batch = {stream: {k: tf.constant(np.stack([_task(s)[k], _task(s + 1)[k]])) for k in _task(0)}
           for stream, s in (("train", 20), ("arch", 30))}
  learner.train_step(batch)
  return [v.numpy() for v in model.weight_variables + model.arch_variables]


def test_automaml_stages_and_weight_decay_are_the_same_on_two_replicas(mirrored):
  one = _automaml_step(tf.distribute.get_strategy())
  two = _automaml_step(mirrored)
  _close(two, one, rtol=1e-4, atol=1e-5)


def test_the_configs_build_the_papers_meta_optimizers(tmp_path):
  splits = synthetic.prototype_splits(num_classes=(10, 6, 6), size=SIZE)
  for config, arch_lr in (("tnas/glyphs_quick", 1e-3), ("automaml/glyphs_quick", 3e-4)):
    gin.clear_config()
    configurables.parse([f"gin_configs/experiments/{config}.gin"], ["CHANNELS = 4"])
    learner = runner_lib.Runner(model_dir=tmp_path / config, splits=splits).learner
    gin.clear_config()
    arch, weights = learner.meta_optimizers["arch"], learner.meta_optimizers["weights"]
    assert (arch.beta_1, arch.beta_2, arch.epsilon) == (0.5, 0.999, 1e-8)
    assert float(arch.learning_rate) == pytest.approx(arch_lr)
    assert learner.engine.meta_settings["arch"].weight_decay == 1e-3
    assert (weights.beta_1, learner.engine.meta_settings["weights"].weight_decay) == (0.9, 0.0)
    assert float(weights.learning_rate) == pytest.approx(1e-3)
    assert learner.inner_groups["weights"].learning_rate == 0.01


@pytest.mark.parametrize("by", ["image", "class"])
def test_the_two_halves_of_the_split_are_disjoint(by):
  train = synthetic.prototype_splits(num_classes=(8, 4, 4), size=8)["train"]
  halves = [streams_lib.TaskStream(name, part, by=by).store(train, seed=3)
            for name, part in (("train", (0.0, 0.5)), ("arch", (0.5, 1.0)))]
  images = [{img.tobytes() for img in half.images} for half in halves]
  assert not images[0] & images[1]
  assert len(images[0]) + len(images[1]) == len({img.tobytes() for img in train.images})
  classes = [set(half.class_names) for half in halves]
  assert (classes[0] == classes[1]) if by == "image" else not classes[0] & classes[1]


def test_automaml_refuses_an_adapted_architecture():
  with pytest.raises(ValueError, match="no phase"):
    tnas.AutoMaml(_supernet(), train_phases=(inner_loop.Phase(5, ("weights", "arch")),))


# ---- the task pool ----------------------------------------------------------------------


def test_a_task_pool_visits_its_tasks_once_per_epoch_in_new_orders():
  from tf_metanas.data import episodes
  store = synthetic.prototype_splits(num_classes=(8, 4, 4), size=8)["train"]
  sampler = episodes.EpisodeSampler(store, episodes.EpisodeSpec(num_ways=3), seed=1, pool=5)
  epochs = [[sampler.pooled(i) for i in range(5 * e, 5 * e + 5)] for e in range(3)]
  assert all(sorted(epoch) == list(range(5)) for epoch in epochs)
  assert len({tuple(e) for e in epochs}) > 1
  fresh = episodes.EpisodeSampler(store, episodes.EpisodeSpec(num_ways=3), seed=1)
  np.testing.assert_array_equal(sampler.episode(7)["query_images"],
                                fresh.episode(sampler.pooled(7))["query_images"])


# ---- end to end: configs, selection, from scratch ---------------------------------------


@pytest.fixture(name="tiny_tnas_run", scope="module")
def _tiny_tnas_run(tmp_path_factory):
  """One tiny T-NAS run on prototype images, meta-tested: shared by the tests below."""
  model_dir = tmp_path_factory.mktemp("tnas")
  gin.clear_config()
  configurables.parse(["gin_configs/experiments/tnas/glyphs_quick.gin",
                       "gin_configs/debug/tiny.gin"],
                      ["Runner.test_tasks = 4", "Runner.test_batch_size = 2"])
  splits = synthetic.prototype_splits(num_classes=(10, 6, 6), size=SIZE)
  runner = runner_lib.Runner(model_dir=model_dir, splits=splits)
  results = runner.run()
  yield runner, results
  gin.clear_config()


def test_a_tiny_tnas_run_reports_decoded_genotypes(tiny_tnas_run):
  runner, results = tiny_tnas_run
  method = results["method_results"]
  assert results["method"] == "tnas" and method["decoding"] == "darts"
  assert sorted(i for d in method["decoded_genotypes"] for i in d["tasks"]) == [0, 1, 2, 3]
  assert method["distinct_genotypes"] == len(method["decoded_genotypes"])
  assert 0.0 <= method["supernet_accuracy"] <= 1.0
  assert any("distinct genotypes" in line for line in runner.summary_lines(results))


def test_from_scratch_predicts_without_query_labels(tiny_tnas_run, without_query_labels):
  runner, results = tiny_tnas_run
  labeled = without_query_labels(runner)
  settings = from_scratch.FromScratch(iterations=1, task_pool=0, eval_every=1, eval_tasks=2,
                                      inner_steps=1, test_steps=2, meta_batch_size=2)
  logits, per_genotype = from_scratch.predict_decoded(runner, results, settings)
  assert sorted(logits) == [0, 1, 2, 3]
  assert all(l.shape == (labeled.spec.query_size, labeled.spec.num_ways) for l in logits.values())
  assert sum(len(g["tasks"]) for g in per_genotype) == 4


def test_from_scratch_retrains_each_distinct_genotype_once(tiny_tnas_run):
  runner, results = tiny_tnas_run
  settings = from_scratch.FromScratch(iterations=2, task_pool=0, eval_every=1, eval_tasks=2,
                                      inner_steps=1, test_steps=2, meta_batch_size=2)
  summary = from_scratch.evaluate(runner, results, settings)
  decoded = results["method_results"]["decoded_genotypes"]
  assert summary["distinct_genotypes"] == len(decoded) and summary["num_tasks"] == 4
  names = {from_scratch.directory_name(genotype_lib.Genotype.from_dict(d["genotype"]))
           for d in decoded}
  assert {p.name for p in (runner.model_dir / "from_scratch").iterdir()} == names
  for entry in summary["genotypes"]:  # the checkpoint each keeps was chosen on meta-val
    assert entry["selection"]["val_tasks"] == 2
    assert entry["protocol"]["phases"] == [{"steps": 2, "groups": ["weights"]}]
  saved = json.loads((runner.model_dir / "from_scratch.json").read_text())
  assert saved["accuracy"] == summary["accuracy"] and saved["budget"]["iterations"] == 2
  assert summary["results_path"] == str(runner.model_dir / "from_scratch.json")
  again = from_scratch.evaluate(runner, results, settings)  # written beside, never over
  assert again["results_path"] == str(runner.model_dir / "from_scratch.2.json")
  assert json.loads((runner.model_dir / "from_scratch.json").read_text()) == saved


def test_from_scratch_scales_the_network_and_can_retrain_second_order(tiny_tnas_run):
  runner, results = tiny_tnas_run
  genotype = genotype_lib.Genotype.from_dict(
      results["method_results"]["decoded_genotypes"][0]["genotype"])
  settings = from_scratch.FromScratch(algorithm="maml", channels=6, num_cells=3,
                                      reduction_cells=(1,))
  net = from_scratch.network_for(runner.model, genotype, 5, settings=settings)
  assert (net.channels, net.num_cells, net.reduction_cells) == (6, 3, (1,))
  same = from_scratch.network_for(runner.model, genotype, 5)
  assert (same.channels, same.num_cells) == (runner.model.channels, runner.model.num_cells)
  net.build((None,) + runner.splits["train"].image_shape)
  assert from_scratch.learner_for(settings, net).algorithm == "maml"
  assert from_scratch.learner_for(from_scratch.FromScratch(), net).algorithm == "fomaml"
  with pytest.raises(ValueError, match="FromScratch.algorithm = 'reptile'"):
    from_scratch.FromScratch(algorithm="reptile")
  with pytest.raises(ValueError, match="FromScratch.channels, FromScratch.num_cells"):
    from_scratch.retrain(runner, genotype, settings, "from_kept_weights")


def test_select_on_val_meta_tests_the_best_validated_checkpoint(tmp_path):
  gin.clear_config()
  configurables.parse(["gin_configs/experiments/automaml/glyphs_quick.gin",
                       "gin_configs/debug/tiny.gin"],
                      ["Runner.num_iterations = 3", "Runner.eval_every = 2",
                       "Runner.test_tasks = 2",
                       "Runner.test_batch_size = 2"])
  splits = synthetic.prototype_splits(num_classes=(10, 6, 6), size=SIZE)
  runner = runner_lib.Runner(model_dir=tmp_path, splits=splits)
  results = runner.run()
  gin.clear_config()
  selection = results["selection"]
  assert results["method"] == "auto-maml" and results["meta_iterations"] == 3
  assert results["method_results"]["distinct_genotypes"] == 1  # one architecture
  validated = _scalars(tmp_path / "eval", "Eval/val_accuracy")
  assert sorted(validated) == [2, 3]  # every eval_every, and the last meta-iteration
  best = max(validated, key=lambda step: (validated[step], -step))  # the earliest of equals
  assert selection["step"] == best and selection["val_accuracy"] == pytest.approx(validated[best])
  assert int(runner.learner.step.numpy()) == best  # what was meta-tested
  assert _scalars(tmp_path / "eval", "Eval/test_accuracy") == {best: pytest.approx(
      results["accuracy"])}


def _scalars(directory, tag):
  """step -> value of a scalar tag in the TensorBoard event files of `directory`."""
  values = {}
  for path in directory.glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values
