"""The engine behind every method: same numbers as before it, untouched groups, task
streams against a hand-built reference, per-task seeds on every strategy and under XLA,
structural state (masks = a network without the ops; resume between two changes), traces."""

import json
import pathlib
import re

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas import configurables
from tf_metanas.data import episodes
from tf_metanas.data import streams as streams_lib
from tf_metanas.data import synthetic
from tf_metanas.meta import inner_loop
from tf_metanas.meta import learner as learner_lib
from tf_metanas.meta import optimizers
from tf_metanas.meta import rules
from tf_metanas.meta import schedules
from tf_metanas.methods import metanas
from tf_metanas.search import Conv4
from tf_metanas.search import SearchNetwork
from tf_metanas.train import runner as runner_lib

BOTH = ("weights", "arch")
OPS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3")


def _batches(learner, count=3, tasks=2, batch_size=None, seed=0, stream=None):
  store = synthetic.prototype_store(num_classes=8, per_class=10, size=8)
  spec = learner.episode_spec(episodes.EpisodeSpec(3, 2, 2, batch_size, 1), True)
  sampler = episodes.EpisodeSampler(store, spec, seed, stream=stream)
  return list(sampler.dataset(tasks, num_batches=count))


def _conv4(algorithm, optimizer=None, **kwargs):
  keras.utils.set_random_seed(0)
  net = Conv4(3, filters=2)
  net.build((None, 8, 8, 1))
  return learner_lib.MetaLearner(
      net, algorithm,
      inner_groups=(inner_loop.ParamGroup("weights", optimizer or optimizers.SGD(), 0.1),),
      train_phases=(inner_loop.Phase(2),), test_phases=(inner_loop.Phase(2),), **kwargs)


def _search_network(op_set="S1", drop_path_rate=0.0, channels=4):
  net = SearchNetwork(3, channels=channels, num_cells=2, reduction_cells=(1,), num_nodes=2,
                      op_set=op_set, drop_path_rate=drop_path_rate)
  net.build((None, 8, 8, 1))
  return net


def _metanas(algorithm, op_set="S1", drop_path_rate=0.0, cls=metanas.Metanas, **kwargs):
  keras.utils.set_random_seed(0)
  net = _search_network(op_set, drop_path_rate)
  groups = (inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),
            inner_loop.ParamGroup("arch", optimizers.Adam(beta1=0.0), 0.05, 1e-3))
  kwargs.setdefault("meta_learning_rates", {"weights": 1.0, "arch": 0.6} if algorithm == "reptile"
                    else {"weights": 1e-3, "arch": 1e-3})
  return cls(net, tau_alpha=metanas.Temperature(1.0, 0.1, "exponential"),
             tau_beta=metanas.Temperature(1.0, 0.1, "linear"), algorithm=algorithm,
             threshold=0.01, inner_groups=groups, train_phases=(inner_loop.Phase(2, BOTH),),
             test_phases=(inner_loop.Phase(2, BOTH), inner_loop.Phase(2, ("weights",))),
             **kwargs)


# ---- the same numbers as before the engine ---------------------------------------------------

# Meta-parameters after 3 meta-iterations (1 for METANAS with MAML: second order through
# BatchNorm over 4 images of 2 x 2 pixels amplifies rounding) from the same initial values,
# computed with the MetaLearner before the engine existed (commit 9fae81e, TensorFlow's
# default CPU kernels, the two logical CPU devices of conftest.py): per group the sum, the
# sum of absolute values and the first two entries. All are equal bit for bit here when
# run alone; the METANAS ones vary by ~1e-6 with what ran before in the process, before and
# after the engine alike, and METANAS with MAML by up to 1e-4 next to a parallel test
# worker (hence its own tolerance). The tolerance allows that and another CPU's
# kernels, nothing a change of maths makes. SGD adapts the METANAS weights: an inner Adam
# scales float noise up to +-lr, and with it the cases do not reproduce from run to run.
BEFORE = {
    "fomaml": {
        "weights": (8.55054696269508, 19.48231884611596,
                [0.012649722397327423, -0.014131815172731876]),
    },
    "maml": {
        "weights": (8.55339417650248, 19.474778797506588,
                [0.014974670484662056, -0.012961477041244507]),
    },
    "mamlpp": {
        "weights": (8.415919362800196, 19.600382380886003,
                [-0.008199763484299183, -0.001481176121160388]),
    },
    "metanas_maml": {
        "weights": (6.478873466752702, 338.5640953210823,
                [-0.022041242569684982, 0.19926971197128296]),
        "arch": (0.007710139907430857, 0.6301174327381887,
                [0.011504380963742733, -0.0030426839366555214]),
    },
    "metanas_reptile": {
        "weights": (6.211608444238664, 337.8623443380202,
                [0.001684647984802723, 0.21042126417160034]),
        "arch": (-0.48862604703754187, 3.3993996819481254,
                [-0.0188539270311594, -0.038308992981910706]),
    },
    "reptile": {
        "weights": (9.232281646691263, 28.63187384326011,
                [-0.1773933619260788, 0.15705238282680511]),
    },
}

CASES = {
    "maml": lambda: _conv4("maml"),
    "fomaml": lambda: _conv4("fomaml"),
    "reptile": lambda: _conv4("reptile", optimizers.Adam(beta1=0.0), carry_inner_state=True,
                              meta_learning_rates={"weights": schedules.Linear(1.0, 0.0, 10)}),
    "mamlpp": lambda: _conv4(
        "maml", multi_step_loss_iterations=2, learnable_inner_lr=True,
        first_order_iterations=1, per_step_bn_statistics=True, per_step_bn_weights=True,
        meta_gradient_clip=0.01, loss_reduction="sum_over_shots", adapt_batch_norm=False,
        meta_learning_rates={"weights": schedules.Cosine(1e-2, 1e-4, 5)}),
    "metanas_reptile": lambda: _metanas("reptile", warmup_iterations=1, carry_inner_state=True,
                                        train_threshold=0.01, meta_prune_threshold=0.05,
                                        meta_prune_every=2),
    "metanas_maml": lambda: _metanas("maml", meta_optimizer="sgd",
                                     meta_learning_rates={"weights": 0.1, "arch": 0.1}),
}


def _set_weights(net):
  """Initial values from numpy (independent of Keras's random state): 0.1 N(0, 1), BatchNorm
  scales 1 + 0.1 N(0, 1), architecture 1e-3 N(0, 1)."""
  rng = np.random.default_rng(0)
  arch = {id(v) for v in net.arch_variables}
  for v in net.trainable_variables:
    value = (1e-3 if id(v) in arch else 0.1) * rng.standard_normal(v.shape)
    v.assign((1.0 + value) if "gamma" in v.path else value)


def _fingerprint(learner):
  out = {}
  for group, variables in learner.model.parameter_groups().items():
    values = np.concatenate([np.asarray(v.numpy(), np.float32).ravel() for v in variables])
    out[group] = (float(values.astype(np.float64).sum()),
                  float(np.abs(values).astype(np.float64).sum()), values[:4].tolist())
  return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_meta_parameters_are_those_of_the_learner_before_the_engine(case):
  learner = CASES[case]()
  _set_weights(learner.model)
  for batch in _batches(learner, count=1 if case == "metanas_maml" else 3,
                        batch_size=4 if case.startswith("metanas") else None):
    learner.train_step(batch)
  got = _fingerprint(learner)
  assert set(got) == set(BEFORE[case])
  for group, (total, absolute, first) in BEFORE[case].items():
    rtol = 1e-3 if case == "metanas_maml" else 1e-5  # see above: its rounding is amplified
    np.testing.assert_allclose(got[group][0], total, atol=rtol * absolute)
    np.testing.assert_allclose(got[group][1], absolute, rtol=rtol)
    np.testing.assert_allclose(got[group][2][:2], first, rtol=10 * rtol, atol=2e-5)


# ---- untouched groups --------------------------------------------------------------------------


def test_a_group_an_iteration_does_not_touch_keeps_its_value_and_optimizer_slots():
  learner = _metanas("fomaml", warmup_iterations=2)  # Adam meta optimizers on both groups
  batches = _batches(learner, count=3, batch_size=4)
  slots = lambda name: [np.array(v) for v in learner.meta_optimizers[name].variables]
  arch = [np.array(v) for v in learner.meta_variables()["arch"]]
  arch_slots, weight_slots = slots("arch"), slots("weights")
  for batch in batches[:2]:  # warm-up: the architecture is frozen
    learner.train_step(batch)
  for a, b in zip(arch + arch_slots, [np.array(v) for v in learner.meta_variables()["arch"]]
                  + slots("arch")):
    np.testing.assert_array_equal(a, b)  # values, Adam moments, its iteration count
  assert any(not np.array_equal(a, b) for a, b in zip(weight_slots, slots("weights")))
  learner.train_step(batches[2])  # after warm-up it moves
  assert int(learner.meta_optimizers["arch"].iterations.numpy()) == 1
  assert not np.array_equal(arch[0], np.array(learner.meta_variables()["arch"][0]))


# ---- task streams --------------------------------------------------------------------------------


def _hand_first_order_maml(net, task, lr):
  """First-order MAML meta-gradients of one task by hand: one joint SGD step on weights
  and arch from the support loss, then the query loss's gradient at the adapted values."""
  w, a = [v.value for v in net.weight_variables], [v.value for v in net.arch_variables]
  images = lambda key: tf.cast(task[key], tf.float32) / 255.0
  loss = lambda w, a, key, labels: tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      task[labels], net.functional_call(w, images(key), arch=a, training=True)))
  with tf.GradientTape() as tape:
    tape.watch(w + a)
    support = loss(w, a, "support_images", "support_labels")
  grads = tape.gradient(support, w + a)
  adapted = [p - lr * g for p, g in zip(w + a, grads)]
  w1, a1 = adapted[:len(w)], adapted[len(w):]
  with tf.GradientTape() as tape:
    tape.watch(w1 + a1)
    query = loss(w1, a1, "query_images", "query_labels")
  grads = tape.gradient(query, w1 + a1)
  return grads[:len(w)], grads[len(w):]


def test_two_streams_update_the_weights_from_one_and_the_architecture_from_the_other():
  keras.utils.set_random_seed(0)
  net = _search_network(OPS)
  groups = (inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),
            inner_loop.ParamGroup("arch", optimizers.SGD(), 0.1))
  learner = learner_lib.MetaLearner(
      net, inner_groups=groups, train_phases=(inner_loop.Phase(1, BOTH),),
      meta_learning_rates={"weights": 0.5, "arch": 0.3}, meta_optimizer="sgd",
      rule=rules.Maml(first_order=True, routes={"weights": "a", "arch": "b"}))
  assert learner.streams() == ("a", "b")
  batch_a = _batches(learner, count=1, tasks=2, seed=1)[0]
  batch_b = _batches(learner, count=1, tasks=2, seed=2)[0]
  w0 = [v.numpy() for v in net.weight_variables]
  a0 = [v.numpy() for v in net.arch_variables]
  per_task = [(_hand_first_order_maml(net, {k: v[i] for k, v in batch_a.items()}, 0.1)[0],
               _hand_first_order_maml(net, {k: v[i] for k, v in batch_b.items()}, 0.1)[1])
              for i in range(2)]
  with pytest.raises(ValueError, match=r"reads task streams \['a', 'b'\]"):
    learner.train_step(batch_a)
  metrics = learner.train_step({"a": batch_a, "b": batch_b})
  assert {"query_loss", "b/query_loss"} <= set(metrics)
  # The meta-updates equal the hand-built ones to float32 rounding, measured over each
  # group's whole update (1e-4 of its size on an AVX-512 Xeon, where single small entries
  # are off by 2e-3 of themselves: BatchNorm over 5 images); a wrong stream, rate or mean
  # is off by O(1).
  for group, (start, variables, rate) in enumerate(((w0, net.weight_variables, 0.5),
                                                   (a0, net.arch_variables, 0.3))):
    expected = [s - rate * (per_task[0][group][i] + per_task[1][group][i]) / 2
                for i, s in enumerate(start)]
    error = np.sqrt(sum(np.sum((v.numpy() - e) ** 2) for v, e in zip(variables, expected)))
    update = np.sqrt(sum(np.sum((e - s) ** 2) for e, s in zip(expected, start)))
    assert error <= 1e-3 * update, (group, error, update)


@pytest.mark.parametrize("by", ["class", "image"])
def test_streams_split_the_meta_train_split_disjointly(by):
  train = synthetic.prototype_store(num_classes=10, per_class=10, size=8)
  halves = [streams_lib.TaskStream(name, part, by).store(train, seed=3)
            for name, part in (("a", (0.0, 0.5)), ("b", (0.5, 1.0)))]
  if by == "class":
    assert halves[0].num_classes == halves[1].num_classes == 5
    assert not set(halves[0].class_names) & set(halves[1].class_names)
  else:
    assert halves[0].class_names == halves[1].class_names == train.class_names
    assert all(n == 5 for half in halves for n in half.images_per_class)
  seen = [{img.tobytes() for img in half.images} for half in halves]
  assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == len({i.tobytes() for i in train.images})
  again = streams_lib.TaskStream("a", (0.0, 0.5), by).store(train, seed=3)
  np.testing.assert_array_equal(again.images, halves[0].images)  # fixed by the run seed


def test_episode_i_of_a_stream_depends_only_on_seed_stream_and_i():
  store = synthetic.prototype_store(num_classes=8, per_class=10, size=8)
  spec = episodes.EpisodeSpec(3, 2, 2)
  sampler = lambda stream: episodes.EpisodeSampler(store, spec, 5, stream=stream)
  a, b = streams_lib.stream_id("a"), streams_lib.stream_id("b")
  np.testing.assert_array_equal(sampler(a).episode(7)["support_images"],
                                sampler(a).episode(7)["support_images"])
  resumed = next(iter(sampler(a).dataset(2, start_batch=3, num_batches=1)))
  np.testing.assert_array_equal(resumed["query_images"][1], sampler(a).episode(7)["query_images"])
  assert not np.array_equal(sampler(a).episode(7)["support_images"],
                            sampler(b).episode(7)["support_images"])
  train = streams_lib.TaskStream()  # the one-stream default: the episodes of before
  np.testing.assert_array_equal(
      sampler(train.sampler_stream()).episode(7)["support_images"],
      episodes.EpisodeSampler(store, spec, 5).episode(7)["support_images"])


def test_runner_trains_a_two_stream_rule_and_refuses_a_missing_stream(tmp_path, tiny_splits):
  def learner(model, seed):
    return learner_lib.MetaLearner(
        model, "fomaml", train_phases=(inner_loop.Phase(1),), test_phases=(inner_loop.Phase(1),),
        seed=seed, rule=rules.Maml(first_order=True, routes={"weights": "a"}))

  network = lambda num_classes: Conv4(num_classes, filters=2)
  common = dict(network=network, learner=learner, splits=tiny_splits, num_iterations=2,
                eval_every=0, test_tasks=4, test_batch_size=4, meta_batch_size=2,
                train_spec=episodes.EpisodeSpec(3, 1, 1))
  with pytest.raises(Exception, match=r"reads task stream 'a'.*TaskStream\(name='a'"):
    runner_lib.Runner(model_dir=tmp_path / "missing", **common)
  runner = runner_lib.Runner(model_dir=tmp_path / "ok",
                             streams=(streams_lib.TaskStream("a", (0.0, 0.5)),), **common)
  assert runner.streams["a"].store.num_classes == tiny_splits["train"].num_classes // 2
  results = runner.run()
  assert results["tasks_seen"] == 4 and results["method"] == "fomaml"
  assert json.loads((tmp_path / "ok" / "results.json").read_text())["seed"] == 0


# ---- per-task seeds ----------------------------------------------------------------------------


def _regularized_metanas(jit_compile=False, seed=0):
  return _metanas("reptile", op_set=OPS, drop_path_rate=0.3, normalizer="gumbel",
                  jit_compile=jit_compile, seed=seed)


def _train_two(builder, strategy=None):
  with (strategy or tf.distribute.get_strategy()).scope():
    learner = builder()
  for batch in _batches(learner, count=2, tasks=2, batch_size=4):
    learner.train_step(batch)
  return [v.numpy() for v in learner.model.weights]


def test_the_same_task_draws_the_same_noise_on_one_device_two_replicas_and_xla(mirrored):
  single = _train_two(_regularized_metanas)
  other_seed = _train_two(lambda: _regularized_metanas(seed=1))
  # the draws matter: another seed moves weights by far more than the CPU kernels' rounding
  assert any(not np.allclose(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(single, other_seed))
  replicated = _train_two(_regularized_metanas, mirrored)
  compiled = _train_two(lambda: _regularized_metanas(jit_compile=True))
  for got in (replicated, compiled):  # the same draws, up to that rounding (oneDNN)
    for a, b in zip(got, single):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ---- structural state --------------------------------------------------------------------------


def _copy_without_last_op(full, reduced):
  """Copies `full`'s weights into `reduced` (the same network without the op set's last op)."""
  pairs = [(full.stems[0], reduced.stems[0]),
           (full.classifier, reduced.classifier)]
  for big, small in zip(full.cells, reduced.cells):
    pairs += [(big.preprocess0, small.preprocess0), (big.preprocess1, small.preprocess1)]
    for big_edge, small_edge in zip(big.edges, small.edges):
      pairs += list(zip(big_edge.candidates, small_edge.candidates))
  for big, small in pairs:
    small.set_weights(big.get_weights())
  for big, small in zip(full.arch_variables, reduced.arch_variables):
    small.assign(big[:, :-1] if len(big.shape) == 2 else big)


def test_a_mask_that_removes_an_op_gives_the_network_built_without_it():
  keras.utils.set_random_seed(0)
  full, reduced = _search_network(OPS), _search_network(OPS[:-1])
  for v in full.arch_variables:
    v.assign(tf.random.normal(v.shape))
  _copy_without_last_op(full, reduced)
  learner = _metanas("reptile", op_set=OPS)
  structure = learner.structure
  for cell in ("normal", "reduce"):
    for edge in range(len(full.cells[0].edges)):
      structure.remove(cell, edge, OPS[-1])
  images = tf.random.uniform((4, 8, 8, 1))
  masked = full.mixture(tau_alpha=0.7, tau_beta=0.7, op_masks=structure.op_masks())
  expected = reduced(images, mixture=reduced.mixture(tau_alpha=0.7, tau_beta=0.7), training=True)
  np.testing.assert_allclose(full(images, mixture=masked, training=True), expected, rtol=1e-5,
                             atol=1e-6)
  removed = [v for cell in full.cells for edge in cell.edges
             for v in edge.candidates[-1].trainable_variables]
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(full(images, mixture=masked, training=True))
  assert all(g is None for g in tape.gradient(loss, removed))  # not computed at all


def test_structure_changes_retrace_once_and_unchanged_keys_never():
  learner = _metanas("reptile", op_set=OPS)
  batches = _batches(learner, count=4, batch_size=4)
  for batch in batches[:2]:
    learner.train_step(batch)
  first = learner.plan()
  learner.structure.fix("normal", 0, "skip_connect")
  assert learner.structure.fixed_edges()["normal"] == {0: "skip_connect"}
  for batch in batches[2:]:
    learner.train_step(batch)
  counts = learner.trace_counts()
  assert counts[first] == 1 and counts[learner.plan()] == 1 and len(counts) == 2
  with pytest.raises(ValueError, match="would leave edge 0 of the normal cell with no op"):
    learner.structure.remove("normal", 0, "skip_connect")
  with pytest.raises(ValueError, match="unknown op 'conv_9x9'"):
    learner.structure.fix("normal", 1, "conv_9x9")


class _Consolidating(metanas.Metanas):
  """A method that changes the structure before meta-iterations 1 and 3 (0-based)."""

  def before_iteration(self, step):
    if step == 1:
      self.structure.remove("normal", 0, "sep_conv_3x3")
    if step == 3:
      self.structure.fix("reduce", 1, "max_pool_3x3")


def _consolidating_runner(model_dir, splits, iterations):
  def learner(model, seed):
    groups = (inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),
              inner_loop.ParamGroup("arch", optimizers.SGD(), 0.1))
    return _Consolidating(model, algorithm="reptile", inner_groups=groups, seed=seed,
                          train_phases=(inner_loop.Phase(1, BOTH),),
                          test_phases=(inner_loop.Phase(1, BOTH),),
                          meta_learning_rates={"weights": 1.0, "arch": 1.0})

  network = lambda num_classes: SearchNetwork(num_classes, channels=4, num_cells=2,
                                              reduction_cells=(1,), num_nodes=2, op_set=OPS)
  return runner_lib.Runner(model_dir=model_dir, network=network, learner=learner, splits=splits,
                           num_iterations=iterations, eval_every=0, checkpoint_every=2,
                           meta_batch_size=2, test_tasks=2, test_batch_size=2,
                           train_spec=episodes.EpisodeSpec(3, 1, 1))


def test_a_run_resumed_between_two_structure_changes_reproduces_the_uninterrupted_one(
    tmp_path, tiny_splits):
  straight = _consolidating_runner(tmp_path / "straight", tiny_splits, 4)
  straight.train()
  _consolidating_runner(tmp_path / "resumed", tiny_splits, 2).train()  # stops after change 1
  resumed = _consolidating_runner(tmp_path / "resumed", tiny_splits, 4)
  resumed.train()
  masks = [r.learner.structure.op_masks() for r in (straight, resumed)]
  assert not masks[0]["normal"][0, OPS.index("sep_conv_3x3")]
  assert masks[0]["reduce"][1].tolist() == [True, False, False]
  for cell in masks[0]:
    np.testing.assert_array_equal(masks[0][cell], masks[1][cell])
  for a, b in zip(straight.model.weights, resumed.model.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_the_readme_two_stream_bindings_build_a_runner(tmp_path, tiny_splits):
  readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
  block = re.search(r"```\n(MetaLearner.rule = .*?)```", readme, re.S).group(1)
  gin.clear_config()
  try:
    configurables.parse(["gin_configs/experiments/metanas/quickstart.gin",
                         "gin_configs/debug/tiny.gin"], block.strip().splitlines())
    runner = runner_lib.Runner(model_dir=tmp_path, splits=tiny_splits, eval_every=0)
  finally:
    gin.clear_config()
  assert runner.learner.streams() == ("arch_tasks", "weights_tasks")
  names = [set(runner.streams[s].store.class_names) for s in ("weights_tasks", "arch_tasks")]
  assert names[0] and names[1] and not names[0] & names[1]
  assert names[0] | names[1] == set(tiny_splits["train"].class_names)


# ---- open parameter groups ---------------------------------------------------------------------


class _StemmedConv4(Conv4):
  """Conv4 whose first two weight tensors are a group of their own, "stem"."""

  def parameter_groups(self):
    return {"weights": self.weight_variables[2:], "stem": self.weight_variables[:2]}


def test_any_group_the_model_names_is_adapted_and_meta_learned_by_name():
  keras.utils.set_random_seed(0)
  net = _StemmedConv4(3, filters=2)
  net.build((None, 8, 8, 1))
  groups = (inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),
            inner_loop.ParamGroup("stem", optimizers.SGD(), 0.1))
  headed = learner_lib.MetaLearner(net, "maml", inner_groups=groups,
                                   train_phases=(inner_loop.Phase(2, ("weights", "stem")),),
                                   meta_learning_rates={"weights": 1e-3, "stem": 1e-2})
  plain = _conv4("maml")  # the same network and seed, one group
  batch = _batches(plain, count=1)[0]
  task = {k: v[0] for k, v in batch.items()}
  split, whole = headed.task_directions(task)[0], plain.task_directions(task)[0]["weights"]
  by_variable = dict(zip(map(id, net.weight_variables), whole))
  assert set(split) == {"weights", "stem"} and len(split["stem"]) == 2
  for name, variables in net.parameter_groups().items():
    for got, v in zip(split[name], variables):
      np.testing.assert_allclose(got, by_variable[id(v)].numpy(), rtol=1e-5, atol=1e-7)
  stem_before = [v.numpy() for v in net.weight_variables[:2]]
  headed.train_step(batch)
  assert set(headed.meta_optimizers) == {"weights", "stem"}
  assert headed.meta_optimizers["stem"].learning_rate.numpy() == pytest.approx(1e-2)
  assert all(not np.array_equal(a, v.numpy())
             for a, v in zip(stem_before, net.weight_variables[:2]))


def test_adapt_takes_each_task_s_own_shots():
  learner = _conv4("maml", loss_reduction="sum_over_shots")
  fresh = _conv4("maml", loss_reduction="sum_over_shots")
  five = synthetic.prototype_store(num_classes=3, per_class=6, size=8)
  labels = five.labels
  learner.adapt(five.images, labels)  # 6 shots first: the compiled adaptation is reused
  one = np.concatenate([np.flatnonzero(labels == c)[:1] for c in range(3)])
  np.testing.assert_allclose(learner.adapt(five.images[one], labels[one]).support_losses,
                             fresh.adapt(five.images[one], labels[one]).support_losses,
                             rtol=1e-6)


def test_a_rule_must_agree_with_the_algorithm_and_carry_its_own_schedule():
  with pytest.raises(ValueError, match="algorithm = 'reptile' but MetaLearner.rule is a maml"):
    _conv4("reptile", rule=rules.Maml())
  with pytest.raises(ValueError, match="meta_gradient_clip is set but MetaLearner.rule"):
    _conv4(None, rule=rules.Maml(), meta_gradient_clip=10.0)
  with pytest.raises(ValueError, match=r"warmup_frozen names \['arhc'\]"):
    _conv4("maml", warmup_iterations=1, warmup_frozen=("arhc",))
  assert _conv4(None, rule=rules.Reptile()).algorithm == "reptile"
