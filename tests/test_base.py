"""BASE: the posterior's noise and its determinism, the prior terms, the second-order
meta-gradient against finite differences, the Reptile step, a tiny end-to-end run."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas import configurables
from tf_metanas.data import synthetic
from tf_metanas.meta import inner_loop
from tf_metanas.meta import optimizers
from tf_metanas.methods import base
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib
from tf_metanas.train import runner as runner_lib
from tests import random_tasks
from tests.random_tasks import SHOTS, SIZE, WAYS

OPS = ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3")
CHEAP_OPS = ("none", "skip_connect", "avg_pool_3x3")
_task, _tensors = random_tasks.task, random_tasks.tensors


def _supernet(seed=0, ops=OPS, channels=4, stem="pooled"):
  tf.keras.utils.set_random_seed(seed)
  net = network_lib.SearchNetwork(WAYS, channels=channels, num_cells=2, reduction_cells=(1,),
                                  num_nodes=2, op_set=ops, input_k=0, channel_doubling=True,
                                  stem=stem)
  net.build((None, SIZE, SIZE, 1))
  return net


def _batch(seeds, steps=5):
  tasks = [_task(s, steps) for s in seeds]
  return {k: tf.constant(np.stack([t[k] for t in tasks])) for k in tasks[0]}


def _close(got, want, rtol=1e-4, atol=1e-6):
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ---- the posterior ----------------------------------------------------------------------


def test_gumbel_noise_is_fresh_per_step_and_never_on_the_prediction():
  learner = base.Base(_supernet(ops=CHEAP_OPS), tau=0.5)
  softmax = base.Base(learner.model, posterior="softmax", tau=0.5)
  task = _tensors(_task(0))
  params = learner.meta_parameters()
  images = tf.cast(task["support_images"], tf.float32) / 255.0
  train = learner.task_context(task, learner.protocol(meta_training=True))
  test = learner.task_context(task, learner.protocol())
  run = lambda l, c: l.forward(l.model, params, images, c).numpy()
  np.testing.assert_array_equal(run(learner, train.at(1)), run(learner, train.at(1)))
  assert not np.allclose(run(learner, train.at(0)), run(learner, train.at(1)))  # fresh
  assert not np.allclose(run(learner, train.at(0)), run(softmax, train.at(0)))
  other = learner.task_context(task, learner.protocol(meta_training=True), task_index=1)
  assert not np.allclose(run(learner, train.at(0)), run(learner, other.at(0)))
  reseeded = base.Base(learner.model, tau=0.5, seed=1)  # another run seed, other draws
  assert not np.allclose(run(learner, train.at(0)),
                         run(reseeded, reseeded.task_context(task, train.protocol).at(0)))
  # the prediction after adaptation to a new task: the noise-free softmax(a / tau)
  np.testing.assert_array_equal(run(learner, test.prediction()), run(softmax, test.prediction()))
  assert learner.samples(train.prediction()) and not learner.samples(test.prediction())
  assert not base.Base(learner.model, sample_query=False).samples(train.prediction())
  assert not any(softmax.samples(c) for c in (train.at(0), train.prediction()))
  with pytest.raises(ValueError, match="unknown Base.posterior"):
    base.Base(learner.model, posterior="sparsemax")
  with pytest.raises(ValueError, match="Base.meta_update"):
    base.Base(learner.model, algorithm="fomaml")


def test_tau_follows_its_schedule_of_the_meta_iteration():
  from tf_metanas.meta import schedules  # pylint: disable=import-outside-toplevel
  learner = base.Base(_supernet(ops=CHEAP_OPS), tau=schedules.Exponential(1.0, 0.2, 4))
  assert float(learner.temperature()) == pytest.approx(1.0)
  learner.step.assign(2)
  assert float(learner.temperature()) == pytest.approx(0.2 ** 0.5)
  learner.step.assign(9)
  assert float(learner.temperature()) == pytest.approx(0.2)


# ---- the prior ----------------------------------------------------------------------------


def _hand_prior(params, initial, n, lam, beta, zero_mean=False, uniform=False):
  weights = sum(np.sum((np.asarray(w, np.float64) - (0 if zero_mean else np.asarray(m))) ** 2)
                for w, m in zip(params["weights"], initial["weights"]))
  kl = 0.0
  for a, a0 in zip(params["arch"], initial["arch"]):
    a = np.asarray(a, np.float64)
    a0 = np.zeros_like(a) if uniform else np.asarray(a0, np.float64)
    p = np.exp(a - a.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q = np.exp(a0 - a0.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    kl += np.sum(p * (np.log(p) - np.log(q)))
  return (0.5 * lam * weights + beta * kl) / n


@pytest.mark.parametrize("zero_mean, uniform", [(False, False), (True, True)])
def test_the_prior_terms_are_the_hand_formula(zero_mean, uniform):
  lam, beta = 0.3, 2.0
  prior = base.Prior(weight_precision=lam, arch_kl=beta,
                     weight_mean="zero" if zero_mean else "meta",
                     arch_prior="uniform" if uniform else "meta")
  learner = base.Base(_supernet(ops=CHEAP_OPS), prior=prior)
  task = _tensors(_task(1))
  initial = learner.meta_parameters()
  rng = np.random.default_rng(0)
  params = {g: [t + tf.constant(rng.normal(size=t.shape).astype(np.float32) * 0.5)
                for t in ts] for g, ts in initial.items()}
  logits = tf.constant(rng.normal(size=(6, WAYS)).astype(np.float32))
  labels = task["support_labels"]
  context = learner.task_context(task, learner.protocol(meta_training=True))
  ce = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))
  want = ce + _hand_prior(params, initial, WAYS * SHOTS, lam, beta, zero_mean, uniform)
  got = float(learner.loss(logits, labels, params, initial, context.at(0)))
  assert got == pytest.approx(want, rel=1e-5)
  assert want - ce > 1e-2
  # the query loss is the cross-entropy only, unless the prior is in the meta loss
  assert float(learner.loss(logits, labels, params, initial, context.prediction())) == \
      pytest.approx(ce, rel=1e-6)
  in_meta = base.Base(learner.model, prior=base.Prior(lam, prior.weight_mean, beta,
                                                      prior.arch_prior, in_meta_loss=True))
  assert float(in_meta.loss(logits, labels, params, initial, context.prediction())) == \
      pytest.approx(want, rel=1e-5)
  # at the shared parameters the terms vanish (the prior centered there)
  if not zero_mean:
    assert float(learner.loss(logits, labels, initial, initial, context.at(0))) == \
        pytest.approx(ce, rel=1e-6)


# ---- meta-updates ----------------------------------------------------------------------------


def test_second_order_meta_gradient_equals_finite_differences(float64):
  """d L_Q(U^T(w, a)) / d(w, a) through T = 2 Gumbel-sampled steps with both prior terms,
  the noise fixed by the task's seed: directional finite differences."""
  del float64
  net = _supernet(ops=OPS, channels=2)
  learner = base.Base(
      net, tau=0.7, prior=base.Prior(weight_precision=0.5, arch_kl=3.0),
      inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),
                    inner_loop.ParamGroup("arch", optimizers.SGD(), 2.0)),
      train_phases=(inner_loop.Phase(2, ("weights", "arch")),))
  task = _tensors(_task(2, steps=2))
  assert not learner.first_order_now()
  directions = learner.task_directions(task)[0]
  context = learner.task_context(task, learner.protocol(meta_training=True))
  meta = learner.meta_parameters()

  def query_loss(params):
    trajectory = learner.adapt_trajectory(task, context, params=params)[0]
    return float(learner.query(task, trajectory[-1], context.prediction())[0])

  rng = np.random.default_rng(3)
  eps = 1e-6
  for group in ("arch", "weights"):
    direction = [rng.normal(size=t.shape) for t in meta[group]]
    shifted = lambda s, group=group, direction=direction: {
        **meta, group: [t + s * d for t, d in zip(meta[group], direction)]}
    numeric = (query_loss(shifted(eps)) - query_loss(shifted(-eps))) / (2 * eps)
    analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(directions[group], direction))
    assert abs(numeric) > 1e-5
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)
  first_order = base.Base(net, tau=0.7, prior=learner.prior, meta_update="fomaml",
                          inner_groups=tuple(learner.inner_groups.values()),
                          train_phases=learner.train_phases).task_directions(task)[0]
  assert not np.allclose(first_order["arch"][0], directions["arch"][0], rtol=1e-3)


def test_reptile_moves_the_shared_parameters_by_eps_times_the_mean_adapted_step():
  eps = {"weights": 0.5, "arch": 0.8}
  learner = base.Base(_supernet(ops=CHEAP_OPS), meta_update="reptile", tau=0.5,
                      prior=base.Prior(weight_precision=0.1, arch_kl=1.0),
                      meta_learning_rates=eps,
                      inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), 0.05),
                                    inner_loop.ParamGroup("arch", optimizers.SGD(), 30.0)),
                      train_phases=(inner_loop.Phase(3, ("weights", "arch")),))
  assert learner.algorithm == "reptile"
  batch = _batch((4, 5), steps=3)
  before = {g: [t.numpy() for t in ts] for g, ts in learner.meta_parameters().items()}
  protocol = learner.training_protocol()
  adapted = []
  for i in range(2):
    task = {k: v[i] for k, v in batch.items()}
    final = learner.adapt_task(task, learner.task_context(task, protocol, "train", i))[0]
    adapted.append({g: [t.numpy() for t in ts] for g, ts in final.items()})
  learner.train_step(batch)
  after = learner.meta_parameters()
  for group in ("weights", "arch"):
    want = [b + eps[group] * np.mean([a[group][k] - b for a in adapted], axis=0)
            for k, b in enumerate(before[group])]
    _close(after[group], want, rtol=1e-4, atol=1e-6)
    moved = max(np.abs(np.asarray(a) - b).max() for a, b in zip(after[group], before[group]))
    assert moved > 1e-3


# ---- determinism: one device, two replicas, XLA -------------------------------------------


def _run(strategy=None, train=True, **kwargs):
  """Evaluation outputs of two tasks, then the weights after one meta-iteration on two tasks
  (first order: the same sampled forwards as MAML's, a graph traced in a fraction of the
  time; the second-order graph is checked against finite differences above). The conv stem:
  the pooled stem's max-pool has other second derivatives under XLA, whatever the method."""
  with (strategy or tf.distribute.get_strategy()).scope():
    # SGD meta steps: Adam's division by |g| would blow float32 round-off up on the tiny
    # architecture gradients
    learner = base.Base(_supernet(ops=CHEAP_OPS, channels=2, stem="conv"), tau=0.5,
                        meta_optimizer="sgd", meta_learning_rates={"weights": 0.1, "arch": 10.0},
                        train_phases=(inner_loop.Phase(2, ("weights", "arch")),),
                        test_phases=(inner_loop.Phase(2, ("weights", "arch")),),
                        meta_update="fomaml", **kwargs)
  outputs = learner.evaluate_batch(_batch((6, 7), steps=2))
  outputs = {k: [np.asarray(t) for t in (v if isinstance(v, list) else [v])]
             for k, v in outputs.items()}
  again = learner.evaluate_batch(_batch((6, 7), steps=2))["sample"]
  for a, b in zip(again, outputs["sample"]):
    np.testing.assert_array_equal(a, b)  # the same draws again
  if train:
    learner.train_step(_batch((8, 9), steps=2))
  return outputs, [v.numpy() for v in learner.model.weights]


def test_the_same_task_and_seed_give_the_same_samples_everywhere(mirrored):
  single, weights = _run()
  replicated, compiled = _run(mirrored), _run(jit_compile=True, train=False)
  for got in (replicated[0], compiled[0]):
    for a, b in zip(got["sample"], single["sample"]):
      # a_T + g: the same noise; a_T within float32 round-off of other reduction orders
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    _close(got["arch"], single["arch"], rtol=1e-5, atol=1e-6)
    _close(got["supernet_loss"], single["supernet_loss"], rtol=1e-4, atol=1e-5)
    _close(got["accuracy"], single["accuracy"])
  # meta-training: each task's draws follow its index in the whole meta-batch
  _close(replicated[1], weights, rtol=1e-4, atol=1e-5)
  assert any(not np.allclose(a, b) for a, b in zip(weights, compiled[1]))  # the step moved them
  noise = single["sample"][0] - single["arch"][0]
  assert not np.allclose(noise[0], noise[1])  # each task draws its own


# ---- end to end ----------------------------------------------------------------------------


def test_the_configs_name_their_posteriors(tmp_path):
  splits = synthetic.prototype_splits(num_classes=(10, 6, 6), size=SIZE)
  for config, posterior in (("glyphs_quick", "gumbel"), ("glyphs_quick_softmax", "softmax")):
    gin.clear_config()
    configurables.parse([f"gin_configs/experiments/base/{config}.gin",
                         "gin_configs/debug/tiny.gin"])
    learner = runner_lib.Runner(model_dir=tmp_path / config, splits=splits).learner
    gin.clear_config()
    assert learner.posterior == posterior and learner.algorithm == "maml"
    assert callable(learner.tau) == (posterior == "gumbel")
    assert learner.prior.arch_kl == 1.0
  for config, posterior in (("mini_imagenet_5w5s_gumbel", "gumbel"),
                            ("mini_imagenet_5w5s_softmax", "softmax")):
    gin.clear_config()
    configurables.parse([f"gin_configs/experiments/base/{config}.gin"])
    assert gin.query_parameter("%POSTERIOR") == posterior
    assert gin.query_parameter("%BASE_OPS") == "BASE"
    assert gin.query_parameter("%SHOTS") == 5 and gin.query_parameter("%META_UPDATE") == "maml"
    assert gin.query_parameter("load_splits.name") == "mini_imagenet"
    assert gin.query_parameter("load_splits.val_classes") == 12  # the paper's 64 / 12 / 24
    assert gin.query_parameter("FromScratch.algorithm") == "maml"


def test_a_tiny_base_run_reports_decoded_genotypes(tmp_path):
  gin.clear_config()
  configurables.parse(["gin_configs/experiments/base/glyphs_quick.gin",
                       "gin_configs/debug/tiny.gin"],
                      ["Runner.test_tasks = 4", "Runner.test_batch_size = 2",
                       "Runner.eval_every = 0"])
  splits = synthetic.prototype_splits(num_classes=(10, 6, 6), size=SIZE)
  runner = runner_lib.Runner(model_dir=tmp_path, splits=splits)
  results = runner.run()
  gin.clear_config()
  method = results["method_results"]
  assert results["method"] == "base" and method["posterior"] == "gumbel"
  assert sorted(i for d in method["decoded_genotypes"] for i in d["tasks"]) == [0, 1, 2, 3]
  for entry in method["decoded_genotypes"]:
    genotype = genotype_lib.Genotype.from_dict(entry["genotype"])
    assert all(len(node) == 2 for node in genotype.normal + genotype.reduce)
    assert entry["parameters"] == runner.learner.model.count_params_of(genotype)
  assert 0.0 <= method["supernet_accuracy"] <= 1.0 and 0.0 <= method["sample_is_map"] <= 1.0
  averaged = genotype_lib.Genotype.from_dict(method["averaged_genotype"])
  assert method["averaged_tasks"] == 4 and all(len(n) == 2 for n in averaged.normal)
  tags = {value.tag for path in tmp_path.rglob("events.out.tfevents.*")
          for event in tf.compat.v1.train.summary_iterator(str(path))
          for value in event.summary.value}
  assert {"Architecture/posterior_pca", "Architecture/averaged/genotype"} <= tags
  assert any("distinct genotypes" in line for line in runner.summary_lines(results))


# ---- the per-node pair space ----------------------------------------------------------------


def test_the_pair_space_samples_slots_and_derives_two_pairs_per_node():
  from tf_metanas.search import pair_network  # pylint: disable=import-outside-toplevel
  from tf_metanas.search import topology  # pylint: disable=import-outside-toplevel
  tf.keras.utils.set_random_seed(0)
  ops = ("skip_connect", "avg_pool_3x3")
  net = pair_network.NodePairSearchNetwork(WAYS, channels=2, num_cells=2, reduction_cells=(1,),
                                           num_nodes=2, op_set=ops, channel_doubling=True,
                                           stem="conv")
  net.build((None, SIZE, SIZE, 1))
  learner = base.Base(net, tau=0.5, prior=base.Prior(arch_kl=2.0),
                      test_phases=(inner_loop.Phase(2, ("weights", "arch")),),
                      inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), 0.01),
                                    inner_loop.ParamGroup("arch", optimizers.SGD(), 30.0)))
  task = _tensors(_task(12, steps=2))
  initial = learner.meta_parameters()
  rng = np.random.default_rng(1)
  arch = [a + tf.constant(rng.normal(size=a.shape).astype(np.float32)) for a in initial["arch"]]
  # the KL runs over each node slot's (input, op) block
  kl = 0.0
  for a, a0 in zip(arch, initial["arch"]):
    for start, stop in topology.node_slices(2):
      for s in range(2):
        p = tf.nn.softmax(tf.reshape(a[s, start:stop], [-1])).numpy().astype(np.float64)
        q = tf.nn.softmax(tf.reshape(a0[s, start:stop], [-1])).numpy().astype(np.float64)
        kl += np.sum(p * np.log(p / q))
  logits = tf.zeros((6, WAYS))
  context = learner.task_context(task, learner.protocol(meta_training=True)).at(0)
  got = learner.loss(logits, task["support_labels"], {**initial, "arch": arch}, initial, context)
  assert float(got) == pytest.approx(np.log(WAYS) + 2.0 * kl / (WAYS * SHOTS), rel=1e-5)
  outputs = learner.evaluate_batch(_batch((13, 14), steps=2))
  genotypes = learner.task_genotypes([a.numpy() for a in outputs["arch"]])
  for genotype in genotypes + learner.task_genotypes([a.numpy() for a in outputs["sample"]]):
    assert all(len(node) == 2 and all(i < j + 2 for _, i in node)
               for nodes in (genotype.normal, genotype.reduce) for j, node in enumerate(nodes))
  # the decoded prediction is the derived network: op weight 1 (2) at each (twice) chosen pair
  decoded = learner.decoded({"arch": [a[0] for a in outputs["arch"]]})["arch"]
  mixture = net.mixture(decoded)
  for cell in ("normal", "reduce"):
    want = np.zeros((topology.num_edges(2), len(ops)))
    for j, node in enumerate(genotypes[0].cell(cell)):
      for op, i in node:
        want[topology.edge_index(j, i), ops.index(op)] += 1.0
    np.testing.assert_array_equal(mixture[f"{cell}_ops"].numpy(), want)
  # the averaged derivation: the mean over tasks of each slot's block categorical
  archs = [a.numpy().astype(np.float64) for a in outputs["arch"]]
  averaged = learner.averaged_arch(archs)
  for k, a in enumerate(archs):
    for start, stop in topology.node_slices(2):
      for s in range(2):
        want = np.mean([_softmax(a[t, s, start:stop].ravel()) for t in range(2)], axis=0)
        got = np.exp(averaged[k].numpy()[s, start:stop].ravel())
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_the_posterior_pca_projects_on_the_directions_of_largest_variance():
  from tf_metanas.search import visualize  # pylint: disable=import-outside-toplevel
  direction = np.array([3.0, 4.0, 0.0]) / 5.0
  offsets = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
  bend = 1e-3 * np.array([0.0, 0.0, 1.0]) * offsets[::-1, None] ** 2  # a little off the line
  points = 7.0 + offsets[:, None] * direction + bend
  projected, explained = visualize.pca_projection(points)
  np.testing.assert_allclose(np.abs(projected[:, 0]), np.abs(offsets), atol=1e-3)
  assert explained[0] > 0.999 and explained.sum() <= 1.0 + 1e-12


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_the_averaged_derivation_takes_the_mean_posterior_of_the_first_tasks():
  learner = base.Base(_supernet(ops=CHEAP_OPS), average_tasks=2)
  rng = np.random.default_rng(0)
  archs = [rng.normal(0, 3, (3,) + tuple(v.shape)) for v in learner.model.arch_variables]
  averaged = learner.averaged_arch(archs)  # tasks 0 and 1 only
  for got, a in zip(averaged, archs):
    np.testing.assert_allclose(np.exp(got.numpy()), (_softmax(a[0]) + _softmax(a[1])) / 2,
                               rtol=1e-6)
  # the mean of the probabilities, not of the logits: on every edge task 0 puts 0.98 on
  # "avg_pool_3x3", task 1 0.6 on "skip_connect" and 0.001 on "avg_pool_3x3"; the mean
  # probability picks avg_pool (0.49 against 0.305), a mean of the logits would pick skip
  confident, weak = np.log([0.01, 0.01, 0.98]), np.log([0.399, 0.6, 0.001])
  archs = [np.stack([np.tile(confident, (n, 1)), np.tile(weak, (n, 1))])
           for n in (int(v.shape[0]) for v in learner.model.arch_variables)]
  genotype = learner.genotype_of(learner.averaged_arch(archs))
  assert {op for node in genotype.normal + genotype.reduce for op, _ in node} == {"avg_pool_3x3"}


# ---- multi-size heads ---------------------------------------------------------------------

SHAPES = {"a": (SIZE, SIZE, 1), "b": (SIZE + 2, SIZE + 2, 3)}
UNUSED = "16x16x1"  # a head no stream feeds


def _headed(**kwargs):
  tf.keras.utils.set_random_seed(0)
  heads = {"x".join(map(str, shape)): kind for shape, kind in
           zip(SHAPES.values(), ("conv", "halved"))}
  net = network_lib.SearchNetwork(WAYS, channels=2, num_cells=2, reduction_cells=(1,),
                                  num_nodes=2, op_set=CHEAP_OPS, input_k=0,
                                  heads={**heads, UNUSED: "conv"})
  net.build((None, SIZE, SIZE, 1))
  return base.Base(net, posterior="softmax", tau=0.5, stream_heads=dict(zip(SHAPES, heads)),
                   train_phases=(inner_loop.Phase(2, ("weights", "arch")),), **kwargs)


def _streams_batch(seeds):
  out = {}
  for offset, (stream, shape) in enumerate(SHAPES.items()):
    tasks = [_task(10 * offset + s, 2, shape) for s in seeds]
    out[stream] = {k: tf.constant(np.stack([t[k] for t in tasks])) for k in tasks[0]}
  return out


def _head(shape):
  return network_lib.HEAD_PREFIX + "x".join(map(str, shape))


def test_each_image_size_goes_through_its_own_head_only():
  learner = _headed()
  model = learner.model
  for stream, shape in SHAPES.items():
    images = tf.constant(_task(1, 1, shape)["support_images"], tf.float32)
    groups = model.parameter_groups()
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
    grads = tape.gradient(logits, groups)
    for name, tensors in grads.items():
      used = any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in tensors)
      assert used == (not name.startswith("head_") or name == _head(shape)), (stream, name)


def test_reptile_moves_each_head_by_its_streams_step_and_the_shared_groups_by_the_mean():
  eps = 0.5
  learner = _headed(meta_update="reptile", meta_learning_rates={"weights": eps, "arch": eps})
  batch = _streams_batch((4, 5))
  before = {g: [t.numpy() for t in ts] for g, ts in learner.meta_parameters().items()}
  protocol = learner.training_protocol()
  adapted = {stream: [] for stream in SHAPES}  # each task adapted alone, in its stream
  for stream in SHAPES:
    for i in range(2):
      task = {k: v[i] for k, v in batch[stream].items()}
      final = learner.adapt_task(task, learner.task_context(task, protocol, stream, i))[0]
      adapted[stream].append({g: [t.numpy() for t in ts] for g, ts in final.items()})
  learner.train_step(batch)
  after = learner.meta_parameters()
  step = lambda stream, group, k: np.mean([a[group][k] - before[group][k]
                                           for a in adapted[stream]], axis=0)
  for group in ("weights", "arch"):
    want = [b + eps * 0.5 * (step("a", group, k) + step("b", group, k))
            for k, b in enumerate(before[group])]
    _close(after[group], want, rtol=1e-4, atol=1e-6)
  for stream, shape in SHAPES.items():
    group = _head(shape)
    want = [b + eps * step(stream, group, k) for k, b in enumerate(before[group])]
    _close(after[group], want, rtol=1e-4, atol=1e-6)
    assert max(np.abs(np.asarray(a) - b).max() for a, b in zip(after[group], before[group])) > 1e-4
  for a, b in zip(after["head_" + UNUSED], before["head_" + UNUSED]):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_maml_leaves_a_head_no_stream_feeds_and_its_optimizer_slots_untouched():
  learner = _headed(meta_update="maml")
  unused = learner.engine.meta_optimizers["head_" + UNUSED]
  before = {g: [v.numpy() for v in vs] for g, vs in learner.meta_groups.items()}
  slots = [v.numpy() for v in unused.variables]
  learner.train_step(_streams_batch((4, 5)))
  for group, values in before.items():
    moved = any(not np.array_equal(v.numpy(), b)
                for v, b in zip(learner.meta_groups[group], values))
    assert moved == (group != "head_" + UNUSED), group
  assert int(unused.iterations.numpy()) == 0 and len(slots) > 2  # Adam's m and v
  for v, b in zip(unused.variables, slots):
    np.testing.assert_array_equal(v.numpy(), b)
  for stream, shape in SHAPES.items():
    assert int(learner.engine.meta_optimizers[_head(shape)].iterations.numpy()) == 1, stream


def test_heads_and_streams_must_agree_and_a_misrouted_stream_is_named():
  net = _headed().model
  with pytest.raises(ValueError, match="Base.stream_heads"):
    base.Base(net)
  with pytest.raises(ValueError, match=r"SearchNetwork.heads has"):
    base.Base(net, stream_heads={"a": "20x20x1"})
  learner = _headed()
  batch = _streams_batch((1,))
  batch["a"], batch["b"] = batch["b"], batch["a"]
  with pytest.raises(ValueError, match=r"stream 'a' gives images of the head group 'head_14x14x3'.*head_12x12x1"):
    learner.train_step(batch)
  splits = synthetic.prototype_splits(num_classes=(10, 6, 6), size=28)
  configurables.parse(["gin_configs/experiments/base/multi_size_quick.gin",
                       "gin_configs/debug/tiny.gin"],
                      ["second/load_splits.synthetic_image_shape = (20, 20, 3)"])
  with pytest.raises(ValueError, match=r"TaskStream 'second': 20x20x3 images.*heads"):
    runner_lib.Runner(model_dir="/nonexistent/never-written", splits=splits)
