"""CAML with progressive connection consolidation: the four learners against hand-built
references, the streams, the criteria on hand-made logits, the in-degree rule, what a
consolidation stops computing and updating, the derived network, resuming between two
consolidations, the TensorBoard views and the retrained evaluations."""

import json

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas import configurables
from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.data import synthetic
from tf_metanas.meta import inner_loop
from tf_metanas.methods import caml
from tf_metanas.search import network as network_lib
from tf_metanas.train import from_scratch
from tf_metanas.train import runner as runner_lib
from tests import random_tasks
from tests.random_tasks import SIZE, WAYS

OPS = ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3")
ONE_STEP = (inner_loop.Phase(1, ("weights", "arch")),)


def _supernet(seed=0, ops=OPS):
  tf.keras.utils.set_random_seed(seed)
  net = network_lib.SearchNetwork(WAYS, channels=4, num_cells=2, reduction_cells=(1,),
                                  num_nodes=2, op_set=ops, input_k=0, channel_doubling=True,
                                  stem="pooled", affine=True)
  net.build((None, SIZE, SIZE, 1))
  return net


def _fixed(genotype):
  net = network_lib.FixedNetwork(genotype, WAYS, channels=4, num_cells=2, reduction_cells=(1,),
                                 channel_doubling=True, stem="pooled", affine=True)
  net.build((None, SIZE, SIZE, 1))
  return net


def _task(seed, steps=1):
  return random_tasks.tensors(random_tasks.task(seed, steps))


def _batch(*seeds):
  tasks = [_task(s) for s in seeds]
  return {k: tf.stack([t[k] for t in tasks]) for k in tasks[0]}


def _loss(model, weights, arch, images, labels):
  """The cross-entropy computed on the network directly (not through the learner)."""
  logits = model.functional_call(weights, tf.cast(images, tf.float32) / 255.0, arch=arch,
                                 training=True)
  return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                        from_logits=True))


def _grad(model, weights, arch, images, labels, wrt):
  sources = weights if wrt == "weights" else arch
  with tf.GradientTape() as tape:
    tape.watch(sources)
    loss = _loss(model, weights, arch, images, labels)
  return tape.gradient(loss, sources)


def _values(variables):
  return [v.numpy().copy() for v in variables]


# ---- the four learners -------------------------------------------------------------------

def test_one_caml_iteration_is_algorithm_1_by_hand():
  """Eq. 6-9 with one inner step: phi adapts alone on the "arch" task, Adam (betas 0.5,
  0.999, L2 3e-4) steps phi on the query gradient at the adapted phi; then theta adapts
  alone (BatchNorm scales and shifts kept) from the new phi on the "train" task and Adam
  steps theta on its clipped query gradient. Adam's first step is lr * sign(g)."""
  model = _supernet()
  learner = caml.Caml(model, train_phases=ONE_STEP, consolidation_start=10**6)
  arch_task, train_task = _task(1), _task(2)
  phi, theta = [v.value for v in model.arch_variables], [v.value for v in model.weight_variables]
  adapted_phi = [p - 0.01 * g for p, g in zip(
      phi, _grad(model, theta, phi, arch_task["support_images"], arch_task["support_labels"],
                 "arch"))]
  g_phi = _grad(model, theta, adapted_phi, arch_task["query_images"], arch_task["query_labels"],
                "arch")
  g_phi = [g + 3e-4 * p for g, p in zip(g_phi, phi)]
  want_phi = [p - 1e-3 * np.sign(g) for p, g in zip(phi, g_phi)]
  norms = {id(w) for layer in model._flatten_layers()  # pylint: disable=protected-access
           if isinstance(layer, tf.keras.layers.BatchNormalization)
           for w in (layer.gamma, layer.beta) if w is not None}
  g_support = _grad(model, theta, want_phi, train_task["support_images"],
                    train_task["support_labels"], "weights")
  adapted_theta = [t if id(v) in norms else t - 0.1 * g
                   for v, t, g in zip(model.weight_variables, theta, g_support)]
  g_theta = _grad(model, adapted_theta, want_phi, train_task["query_images"],
                  train_task["query_labels"], "weights")
  want_theta = [t - 1e-3 * np.sign(np.clip(g, -10, 10)) for t, g in zip(theta, g_theta)]
  learner.train_step({"arch": _batch(1), "train": _batch(2)})
  for got, want, g in zip(model.arch_variables, want_phi, g_phi):
    big = np.abs(g.numpy()) > 1e-3  # Adam's epsilon matters only for tiny gradients
    np.testing.assert_allclose(got.numpy()[big], want[big], atol=1e-6)
  for got, want, g in zip(model.weight_variables, want_theta, g_theta):
    big = np.abs(g.numpy()) > 1e-3
    np.testing.assert_allclose(got.numpy()[big], want[big], atol=2e-6)


def test_first_order_directions_without_unrolling_are_the_unrolled_ones():
  """First-order MAML adapts in a tf.while_loop and differentiates at the adapted
  parameters; unrolled, the inner gradients are held constant: the same directions."""
  learner = caml.Caml(_supernet(), consolidation_start=10**6)
  tasks = {"arch": _task(1, steps=5), "train": _task(2, steps=5)}
  loop, unrolled = (learner.task_directions(tasks, unroll=u)[0] for u in (False, True))
  for group in ("arch", "weights"):
    for a, b in zip(loop[group], unrolled[group]):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7)


def test_each_inner_loop_moves_its_group_only():
  learner = caml.Caml(_supernet(), consolidation_start=10**6)
  plan = learner.plan()
  for (rule, (group,)), other in zip(learner.rule.parts, ("weights", "arch")):
    task = _task(3, steps=5)
    protocol = rule.protocol(learner, plan)
    trajectory, _, _ = learner.adapt_trajectory(task, learner.task_context(task, protocol))
    for step in trajectory[1:]:
      for a, b in zip(step[other], trajectory[0][other]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
      assert any(not np.array_equal(a.numpy(), b.numpy())
                 for a, b in zip(step[group], trajectory[0][group]))


def test_each_meta_update_reads_its_own_stream_only():
  learner = caml.Caml(_supernet(), consolidation_start=10**6, train_phases=ONE_STEP)
  directions = lambda arch, train: learner.task_directions({"arch": _task(arch),
                                                            "train": _task(train)})[0]
  base, other_train, other_arch = directions(1, 2), directions(1, 3), directions(4, 2)
  same = lambda a, b: all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b))
  assert same(base["arch"], other_train["arch"]) and not same(base["weights"], other_train["weights"])
  assert same(base["weights"], other_arch["weights"]) and not same(base["arch"], other_arch["arch"])


def test_only_the_weights_meta_gradient_is_clipped_at_10():
  for update_rule in ("caml", "opml"):
    learner = caml.Caml(_supernet(), update_rule=update_rule)
    big = [tf.constant([50.0, -50.0, 3.0])]
    np.testing.assert_array_equal(learner.rule.meta_gradients(learner, "weights", big)[0],
                                  [10.0, -10.0, 3.0])
    np.testing.assert_array_equal(learner.rule.meta_gradients(learner, "arch", big)[0],
                                  [50.0, -50.0, 3.0])


def test_opml_adapts_both_groups_from_one_pass_on_the_same_tasks():
  learner = caml.Caml(_supernet(), update_rule="opml", train_phases=ONE_STEP)
  assert learner.streams() == ("train",) and learner.method_name() == "opml"
  task = _task(5)
  model = learner.model
  phi, theta = [v.value for v in model.arch_variables], [v.value for v in model.weight_variables]
  trajectory, _, _ = learner.adapt_trajectory(task, learner.task_context(
      task, learner.training_protocol()))
  g_phi = _grad(model, theta, phi, task["support_images"], task["support_labels"], "arch")
  for got, p, g in zip(trajectory[1]["arch"], phi, g_phi):
    np.testing.assert_allclose(got.numpy(), (p - 0.01 * g).numpy(), rtol=1e-5, atol=1e-7)


def test_caml_with_reptile_steps_to_the_adapted_parameters():
  """Reptile in both stages with eps = 1 and one task per stream: phi becomes the phi its
  task adapted to, theta the theta its task adapted to from the new phi."""
  model = _supernet()
  learner = caml.Caml(model, meta_learner="reptile", train_phases=ONE_STEP,
                      consolidation_start=10**6)
  assert learner.method_name() == "caml+reptile"
  arch_task, train_task = _task(1), _task(2)
  phi, theta = [v.value for v in model.arch_variables], [v.value for v in model.weight_variables]
  want_phi = [p - 0.01 * g for p, g in zip(phi, _grad(
      model, theta, phi, arch_task["support_images"], arch_task["support_labels"], "arch"))]
  want_theta = [t - 0.1 * g for t, g in zip(theta, _grad(
      model, theta, want_phi, train_task["support_images"], train_task["support_labels"],
      "weights"))]
  learner.train_step({"arch": _batch(1), "train": _batch(2)})
  for got, want in zip(list(model.arch_variables) + list(model.weight_variables),
                       want_phi + want_theta):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def test_caml_checks_its_arguments():
  with pytest.raises(ValueError, match="criterion"):
    caml.Caml(_supernet(), criterion="largest")
  with pytest.raises(ValueError, match="drop Caml.algorithm"):
    caml.Caml(_supernet(), algorithm="maml")
  with pytest.raises(ValueError, match="MAML\\+\\+"):
    caml.Caml(_supernet(), meta_learner="reptile", multi_step_loss_iterations=10)


def test_the_split_modes():
  batch = caml.caml_streams("batch")
  assert [s.name for s in batch] == ["train", "arch"] and all(s.part == (0.0, 1.0) for s in batch)
  splits = synthetic.prototype_splits(num_classes=(10, 4, 4), size=SIZE)
  train, arch = (s.store(splits["train"], seed=0) for s in caml.caml_streams("class"))
  assert not set(train.class_names) & set(arch.class_names)
  assert len(train.class_names) + len(arch.class_names) == 10
  opml = caml.caml_streams("class", update_rule="opml")[0].store(splits["train"], seed=0)
  assert len(opml.class_names) == 10  # Eq. 10 reads "train" alone: all of meta-train
  with pytest.raises(ValueError, match="split_mode"):
    caml.caml_streams("tasks")


# ---- consolidation -----------------------------------------------------------------------

# Hand-made logits of the 5 edges of a 2-node cell over OPS, each criterion's pick known:
# S_LC (max non-none softmax): edge 2 (0.87); entropy (smallest): edge 1 ("none" at 0.97);
# variance of the logits (largest): edge 3 (16); forward: edge 0; backward: edge 4.
LOGITS = np.array([[0.0, 0.0, 0.0, 0.0],
                   [5.0, 1.0, 0.0, 0.0],
                   [0.0, 3.0, 0.0, 0.0],
                   [-4.0, 4.0, 4.0, -4.0],
                   [0.0, 0.0, 0.0, 1.0]], np.float32)


@pytest.mark.parametrize("criterion, edge, op", [
    ("layer_confidence", 2, "skip_connect"), ("entropy", 1, "skip_connect"),
    ("variance", 3, "skip_connect"), ("forward", 0, "skip_connect"),
    ("backward", 4, "sep_conv_3x3")])
def test_each_criterion_picks_the_expected_edge(criterion, edge, op):
  assert caml.choose_edge(LOGITS, [0, 1, 2, 3, 4], OPS, criterion) == (edge, op)


def test_layer_confidence_values_and_free_edges_only():
  np.testing.assert_allclose(caml.edge_scores(LOGITS, OPS)[[0, 2]],
                             [0.25, np.e ** 3 / (np.e ** 3 + 3)], rtol=1e-6)
  assert caml.choose_edge(LOGITS, [0, 1, 3, 4], OPS) == (3, "skip_connect")  # 0.5 > 0.475


def test_two_fixed_edges_drop_the_other_inputs_of_their_node():
  """Node 1 has edges 2, 3, 4: S_LC fixes 2 then 3, and 4 is dropped."""
  learner = caml.Caml(_supernet())
  learner.model.alpha_normal.assign(LOGITS)
  learner.consolidate(step=7)
  assert learner.structure.fixed_edges()["normal"] == {2: "skip_connect"}
  made = learner.consolidate(step=9)
  assert [(d["cell"], d["edge"], d["op"]) for d in made if d["cell"] == "normal"] == [
      ("normal", 3, "skip_connect"), ("normal", 4, None)]
  assert learner.structure.dropped_edges()["normal"] == [4]
  assert learner.structure.free_edges("normal") == [0, 1]
  assert learner.genotype().normal[1] == (("skip_connect", 0), ("skip_connect", 1))
  assert [d["step"] for d in learner.decisions() if d["cell"] == "normal"] == [7, 9, 9]


def _count(graph, op_type):
  return sum(op.type == op_type for op in graph.get_operations())


def test_a_fixed_edge_computes_its_op_alone_as_the_network_fixed_by_hand():
  model = _supernet()
  learner = caml.Caml(model)
  images = tf.random.uniform((6, SIZE, SIZE, 1))
  forward = lambda masks: tf.function(lambda x: model(x, training=True, op_masks=masks))
  full = forward(learner.structure.op_masks()).get_concrete_function(images).graph
  learner.structure.fix("normal", 0, "skip_connect")
  masks = learner.structure.op_masks()
  fixed = forward(masks).get_concrete_function(images).graph
  # sep_conv_3x3 is two depthwise convolutions: one edge fewer computes it
  assert _count(full, "DepthwiseConv2dNative") - _count(fixed, "DepthwiseConv2dNative") == 2
  alpha = model.alpha_normal.numpy()
  alpha[0] = [mixture_lib.REMOVED_LOGIT, 0.0, mixture_lib.REMOVED_LOGIT, mixture_lib.REMOVED_LOGIT]
  by_hand = model.functional_call(None, images, arch=[tf.constant(alpha), model.alpha_reduce.value])
  np.testing.assert_allclose(model(images, training=True, op_masks=masks).numpy(),
                             by_hand.numpy(), rtol=1e-5, atol=1e-6)


def _slots(optimizer, variable):
  key = variable.path.replace("/", "_")
  return [v.numpy().copy() for v in optimizer.variables if key in v.path]


def test_after_a_consolidation_dropped_ops_and_decided_logits_stay_put():
  model = _supernet()
  learner = caml.Caml(model, train_phases=ONE_STEP, criterion="forward")
  alpha = model.alpha_normal.numpy()
  alpha[0] = [0.0, 2.0, 0.0, 0.0]  # edge 0 to skip_connect: its sep_conv_3x3 is dropped
  model.alpha_normal.assign(alpha)
  batch = {"arch": _batch(1), "train": _batch(2)}
  learner.train_step(batch)  # the optimizers' slots are no longer zero
  learner.consolidate(step=1)
  dropped = model.cells[0].edges[0].candidates[OPS.index("sep_conv_3x3")].trainable_weights
  kept = model.cells[0].edges[0].candidates[OPS.index("skip_connect")]
  free_op = model.cells[0].edges[2].candidates[OPS.index("sep_conv_3x3")].trainable_weights
  weights_adam = learner.meta_optimizers["weights"]
  before = ([v.numpy().copy() for v in dropped], [_slots(weights_adam, v) for v in dropped],
            model.alpha_normal.numpy().copy(), [v.numpy().copy() for v in free_op])
  assert not kept.trainable_weights  # a parameter-free op; the dropped op has weights
  for seed in (3, 5):
    learner.train_step({"arch": _batch(seed), "train": _batch(seed + 1)})
  for value, variable in zip(before[0], dropped):
    np.testing.assert_array_equal(variable.numpy(), value)
  for slots, variable in zip(before[1], dropped):
    assert slots and all(np.array_equal(a, b) for a, b in zip(slots, _slots(weights_adam, variable)))
  after = model.alpha_normal.numpy()
  decided = [d["edge"] for d in learner.decisions() if d["cell"] == "normal"]
  np.testing.assert_array_equal(after[decided], before[2][decided])
  assert not np.array_equal(np.delete(after, decided, 0), np.delete(before[2], decided, 0))
  assert any(not np.array_equal(v.numpy(), b) for v, b in zip(free_op, before[3]))


def _consolidated_steps(strategy):
  """Two CAML meta-iterations around a consolidation (2 + 2 tasks) under `strategy`."""
  with strategy.scope():
    model = _supernet(ops=OPS[:3])  # cheap ops: what matters here is the frozen rows
    learner = caml.Caml(model, train_phases=ONE_STEP, consolidation_start=1,
                        consolidation_every=1)
  for seed in (1, 5):
    learner.train_step({"arch": _batch(seed, seed + 1), "train": _batch(seed + 2, seed + 3)})
  return learner, [v.numpy() for v in model.weight_variables + model.arch_variables]


def test_consolidation_and_its_frozen_logits_are_the_same_on_two_replicas(mirrored):
  learner, one = _consolidated_steps(tf.distribute.get_strategy())
  mirrored_learner, two = _consolidated_steps(mirrored)
  assert mirrored_learner.decisions() == learner.decisions() != []
  for a, b in zip(two, one):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_consolidated_supernet_is_the_fixed_network_of_its_genotype():
  model = _supernet()
  learner = caml.Caml(model, train_phases=ONE_STEP)
  learner.consolidate(step=1, until_done=True)
  assert learner.consolidated() and learner.touched_groups(learner.plan()) == ("weights",)
  genotype = learner.genotype()
  assert all(len(node) == 2 for node in genotype.normal + genotype.reduce)
  assert learner.computed_genotype() == genotype
  fixed = _fixed(genotype)
  assert learner.computed_parameters() == sum(int(np.prod(v.shape))
                                              for v in fixed.trainable_weights)
  network_lib.copy_kept_weights(model, fixed)
  images = tf.random.uniform((6, SIZE, SIZE, 1))
  np.testing.assert_allclose(fixed(images, training=True).numpy(),
                             model(images, training=True,
                                   op_masks=learner.structure.op_masks()).numpy(),
                             rtol=1e-5, atol=1e-5)
  phi = _values(model.arch_variables)
  learner.train_step({"arch": _batch(1), "train": _batch(2)})  # weights only now
  assert all(np.array_equal(a, v.numpy()) for a, v in zip(phi, model.arch_variables))


# ---- a real run --------------------------------------------------------------------------

RUN = ["gin_configs/experiments/caml/glyphs_quick.gin", "gin_configs/debug/tiny.gin"]
RUN_PARAMS = ["ITERATIONS = 4", "Runner.num_iterations = 4", "CONSOLIDATION_START = 1",
              "CONSOLIDATION_EVERY = 2", "Caml.edges_per_decision = 2", "Runner.eval_every = 0",
              "Runner.test_tasks = 4", "Runner.test_batch_size = 2",
              "Runner.checkpoint_every = 2"]


def _runner(model_dir, params=()):
  gin.clear_config()
  configurables.parse(RUN, RUN_PARAMS + list(params))
  splits = synthetic.prototype_splits(num_classes=(10, 6, 6), size=SIZE)
  return runner_lib.Runner(model_dir=model_dir, splits=splits)


@pytest.fixture(name="caml_run", scope="module")
def _caml_run(tmp_path_factory):
  """A tiny CAML run on prototype images: decisions after meta-iterations 1 and 3 (two
  edges per cell type each: a 2-node cell is then fully consolidated), meta-tested."""
  model_dir = tmp_path_factory.mktemp("caml")
  runner = _runner(model_dir)
  results = runner.run()
  yield runner, results
  gin.clear_config()


def test_a_run_resumed_between_two_consolidations_is_the_uninterrupted_run(caml_run, tmp_path):
  runner, _ = caml_run
  _runner(tmp_path, ["Runner.num_iterations = 2"]).train()  # checkpoint at 2: one decision
  resumed = _runner(tmp_path)
  resumed.train()
  want, got = runner.learner.checkpoint_items(), resumed.learner.checkpoint_items()
  for key in ("model", "structure_normal", "structure_reduce", "decided_at_normal"):
    items = (want[key].variables, got[key].variables) if key == "model" else ([want[key]], [got[key]])
    for a, b in zip(*items):
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=key)


def test_a_run_reports_its_decisions_and_derived_network(caml_run):
  runner, results = caml_run
  method = results["method_results"]
  assert results["method"] == "caml" and method["consolidated"]
  assert sorted({d["step"] for d in method["decisions"]}) == [1, 3]
  assert results["parameters"] == method["computed_parameters"]
  assert method["decoded_genotypes"][0]["tasks"] == [0, 1, 2, 3]
  assert any("fully consolidated" in line for line in runner.summary_lines(results))


def test_tensorboard_shows_the_timeline_and_the_shrinking_network(caml_run):
  runner, _ = caml_run
  values = {}
  for path in (runner.model_dir / "train").glob("events.out.tfevents.*"):
    for record in tf.data.TFRecordDataset(str(path)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        values.setdefault(value.tag, []).append((event.step, value))
  for tag in ("Architecture/consolidation", "Architecture/meta/op_weights_normal"):
    step, value = values[tag][-1]
    image = tf.image.decode_png(tf.make_ndarray(value.tensor)[2]).numpy()
    assert step == 3 and image.shape[0] > 200 and image.std() > 10  # a picture
  ops = [(step, float(tf.make_ndarray(v.tensor))) for step, v in values["Architecture/computed_ops"]]
  assert [step for step, _ in ops] == [0, 1, 3] and ops[0][1] > ops[1][1] > ops[2][1]


def test_retraining_from_kept_weights_predicts_without_query_labels(caml_run, monkeypatch,
                                                                    without_query_labels):
  runner, results = caml_run
  settings = from_scratch.FromScratch(iterations=1, task_pool=0, eval_every=1, eval_tasks=2,
                                      inner_steps=1, test_steps=2, meta_batch_size=2,
                                      meta_lr_end=1e-4)
  labeled = without_query_labels(runner)
  logits, per_genotype = from_scratch.predict_decoded(runner, results, settings,
                                                      "from_kept_weights")
  monkeypatch.setitem(runner.samplers, "test", labeled)
  assert sorted(logits) == [0, 1, 2, 3] and len(per_genotype) == 1
  retrained = runner.model_dir / "from_kept_weights"
  assert len(list(retrained.iterdir())) == 1
  summary = from_scratch.evaluate(runner, results, settings, "from_kept_weights")
  saved = json.loads((runner.model_dir / "from_kept_weights.json").read_text())
  assert saved["accuracy"] == summary["accuracy"] and "kept meta-weights" in saved["evaluation"]


def test_the_evaluation_meta_learning_rate_decays_by_a_cosine_to_its_end():
  """Sec. 4.2: Adam 1e-3 cosine-decayed to 1e-4 over the retraining."""
  settings = from_scratch.FromScratch(iterations=100, meta_lr=1e-3, meta_lr_end=1e-4)
  rate = settings.meta_learning_rate()
  np.testing.assert_allclose([float(rate(s)) for s in (0, 50, 100, 200)],
                             [1e-3, 1e-4 + 0.5 * 9e-4, 1e-4, 1e-4], rtol=1e-6)
  assert from_scratch.FromScratch(meta_lr=1e-3).meta_learning_rate() == 1e-3
  learner = from_scratch.learner_for(settings, _fixed(caml.Caml(_supernet()).genotype()))
  learner.step.assign(50)
  np.testing.assert_allclose(float(learner.meta_optimizers["weights"].learning_rate), 5.5e-4,
                             rtol=1e-6)
