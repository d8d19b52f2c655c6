"""BASE's search-space pieces: the relaxed categorical (Gumbel-softmax), the exponential
schedule, the 7x7 ops of the BASE op set, and the per-node (input, op) pair space with its
derivation."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas import stateless
from tf_metanas.arch import gumbel
from tf_metanas.meta import context as context_lib
from tf_metanas.meta import schedules
from tf_metanas.search import BASE_CIFAR_GENOTYPE
from tf_metanas.search import BASE_IMAGENET_GENOTYPE
from tf_metanas.search import FixedNetwork
from tf_metanas.search import Genotype
from tf_metanas.search import NodePairSearchNetwork
from tf_metanas.search import SearchNetwork
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib
from tf_metanas.search import ops as ops_lib
from tf_metanas.search import pair_network
from tf_metanas.search import topology

P = np.array([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
CHI2_5_BOUND = 25.7  # P(chi2 with 5 degrees of freedom > 25.7) ~ 1e-4


def _task_seeds(n, run_seed=0):
  """The learner's seeds of tasks 0..n-1 of meta-iteration 0 (`context.task_seed`), folded
  in one vectorized call (a Python loop of folds takes seconds)."""
  prefix = stateless.fold([run_seed, 0], 0, context_lib.stream_id("train"))
  seeds = tf.vectorized_map(lambda i: stateless.fold(prefix, i), tf.range(n))
  np.testing.assert_array_equal(seeds[n - 1], context_lib.task_seed(run_seed, 0, "train", n - 1))
  return seeds


def _check_frequencies(samples, p):
  """The argmax frequencies f of `samples` [N, K] against Categorical(p).

  Each count is Binomial(N, p_k), so |f_k - p_k| <= 4 sigma_k, sigma_k =
  sqrt(p_k (1 - p_k) / N), fails a correct sampler with probability 6e-5 per class; Pearson's
  statistic sum_k N (f_k - p_k)^2 / p_k is chi-square with K - 1 = 5 degrees of freedom and
  exceeds 25.7 with probability 1e-4. The draws are seeded, so the test is deterministic;
  a biased sampler (e.g. softmax(a / tau) with tau != 1, or uniform noise) fails both.
  Measured: at most 2.1 sigma and chi-square 7.8 (one seed); 2.4 sigma and 7.8 (task seeds).
  """
  n = len(samples)
  freq = np.bincount(np.argmax(samples, axis=-1), minlength=len(p)) / n
  sigma = np.sqrt(p * (1 - p) / n)
  np.testing.assert_array_less(np.abs(freq - p), 4 * sigma)
  assert n * np.sum((freq - p) ** 2 / p) < CHI2_5_BOUND


def test_relaxed_argmax_frequencies_match_softmax_one_seed():
  logits = np.log(P) + 3.0  # softmax is shift invariant
  samples = gumbel.relaxed(np.tile(logits, (20000, 1)), 1.0, seed=[3, 7])
  _check_frequencies(samples.numpy(), P)


def test_relaxed_argmax_frequencies_match_softmax_per_task_seeds():
  logits = tf.constant(np.log(P), tf.float32)
  samples = tf.vectorized_map(lambda seed: gumbel.relaxed(logits, 0.5, seed), _task_seeds(3000))
  _check_frequencies(samples.numpy(), P)


def test_noise_is_a_function_of_its_seed():
  a = gumbel.noise((5, 6), [1, 2]).numpy()
  np.testing.assert_array_equal(a, gumbel.noise((5, 6), tf.constant([1, 2])).numpy())
  assert not np.allclose(a, gumbel.noise((5, 6), [1, 3]).numpy())
  np.testing.assert_array_equal(tf.function(gumbel.noise, jit_compile=True)((5, 6), [1, 2]), a)
  draws = gumbel.noise((200000,), [0, 0]).numpy()  # Gumbel(0, 1): mean gamma, var pi^2 / 6
  assert abs(draws.mean() - np.euler_gamma) < 0.01
  assert abs(draws.var() - np.pi ** 2 / 6) < 0.03
  logits = np.log(P)
  np.testing.assert_array_equal(gumbel.relaxed(logits, 1.0, [4, 4]),
                                gumbel.relaxed(logits, 1.0, [4, 4]))


def test_relaxed_float64_softmax_and_small_temperature():
  logits = tf.constant(np.log(P), tf.float64)
  z = gumbel.relaxed(logits, 1.0, seed=[1, 2])
  assert z.dtype == tf.float64
  g = gumbel.noise((6,), [1, 2], tf.float64)
  np.testing.assert_allclose(z, tf.nn.softmax(logits + g), rtol=1e-12)
  np.testing.assert_allclose(g, gumbel.noise((6,), [1, 2]), rtol=1e-6)
  np.testing.assert_allclose(gumbel.relaxed(logits, 1.0), P, rtol=1e-12)  # no seed: softmax
  np.testing.assert_allclose(gumbel.relaxed(logits, 2.0), tf.nn.softmax(logits / 2), rtol=1e-12)
  cold = gumbel.relaxed(np.tile(np.log(P), (100, 1)), 0.01, seed=[5, 5]).numpy()
  assert np.mean(cold.max(axis=-1) > 0.99) > 0.9  # < 0.99 needs a top-two gap < 0.046
  hot = gumbel.relaxed(np.tile(np.log(P), (100, 1)), 1.0, seed=[5, 5]).numpy()
  np.testing.assert_array_equal(cold.argmax(-1), hot.argmax(-1))  # same noise, same argmax
  assert len(set(cold.argmax(-1))) > 1


# ---- the exponential schedule -------------------------------------------------------------


def test_exponential_schedule_values_config_and_gin():
  schedule = schedules.Exponential(1.0, 0.2, 100)
  for step, value in {0: 1.0, 50: 0.2 ** 0.5, 100: 0.2, 1000: 0.2}.items():
    assert float(schedule(step)) == pytest.approx(value, rel=1e-6)
  assert float(schedule(tf.constant(25, tf.int64))) == pytest.approx(0.2 ** 0.25, rel=1e-6)
  again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
  assert isinstance(again, schedules.Exponential) and again.get_config() == schedule.get_config()
  gin.parse_config("s/tf_metanas.meta.Exponential.start = 2.0\n"
                   "s/tf_metanas.meta.Exponential.end = 0.5\n"
                   "s/tf_metanas.meta.Exponential.steps = 2")
  with gin.config_scope("s"):
    assert float(schedules.Exponential()(1)) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="positive"):
    schedules.Exponential(1.0, 0.0, 10)


# ---- the BASE op set ----------------------------------------------------------------------

C = 4


@pytest.mark.parametrize("name", ["sep_conv_7x7", "conv_7x1_1x7"])
@pytest.mark.parametrize("stride, size, expected", [(1, 8, 8), (2, 8, 4), (2, 7, 4), (1, 5, 5)])
def test_base_ops_output_shape(name, stride, size, expected):
  op = ops_lib.make_op(name, C, stride)
  y = op(np.random.default_rng(0).normal(size=(2, size, size, C)).astype("float32"),
         training=True)
  assert tuple(y.shape) == (2, expected, expected, C)
  assert op.compute_output_shape((2, size, size, C)) == (2, expected, expected, C)


@pytest.mark.parametrize("name, stride, affine, params", [
    ("sep_conv_7x7", 1, False, 2 * (49 * C + C * C)),  # (depthwise 7x7 + pointwise) twice
    ("sep_conv_7x7", 2, True, 2 * (49 * C + C * C) + 2 * 2 * C),  # + two affine BNs
    ("conv_7x1_1x7", 1, False, 2 * 7 * C * C),  # full 1x7 and 7x1 convs
    ("conv_7x1_1x7", 2, True, 2 * 7 * C * C + 2 * C),
])
def test_base_op_parameter_counts_by_hand(name, stride, affine, params):
  op = ops_lib.make_op(name, C, stride, affine)
  op.build((None, 8, 8, C))
  assert sum(int(np.prod(v.shape)) for v in op.trainable_weights) == params


def test_conv_7x1_1x7_is_relu_1x7_7x1_bn_as_the_authors():
  op = ops_lib.make_op("conv_7x1_1x7", C, 2)
  x = np.random.default_rng(1).normal(size=(2, 8, 8, C)).astype("float32")
  y = op(x, training=True)
  first, second = op.convs
  assert (first.kernel.shape, first.strides) == ((1, 7, C, C), (1, 2))
  assert (second.kernel.shape, second.strides) == ((7, 1, C, C), (2, 1))
  h = tf.nn.conv2d(tf.nn.relu(x), first.kernel, (1, 1, 2, 1), "SAME")
  h = tf.nn.conv2d(h, second.kernel, (1, 2, 1, 1), "SAME")
  mean, var = tf.nn.moments(h, axes=(0, 1, 2))
  np.testing.assert_allclose(y, (h - mean) / tf.sqrt(var + 1e-5), atol=1e-4)


def test_base_op_sets():
  assert ops_lib.op_set("BASE") == ops_lib.OP_SETS["DARTS"] + ("sep_conv_7x7", "conv_7x1_1x7")
  assert ops_lib.op_set("BASE_PAIRS") == tuple(o for o in ops_lib.op_set("BASE") if o != "none")


# ---- the per-node (input, op) pair space --------------------------------------------------

NODES = 4


def _pair_net(op_set="BASE", seed=0, **kwargs):
  net = NodePairSearchNetwork(5, channels=4, num_cells=2, reduction_cells=(1,), num_nodes=NODES,
                              op_set=op_set, seed=seed, **kwargs)
  net.build((None, 8, 8, 3))
  return net


def _genotype_arch(net, genotype):
  logits = pair_network.genotype_logits(genotype, net.op_names)
  return [logits["normal"], logits["reduce"]]


def test_pair_network_variables_and_weights_per_node():
  net = _pair_net()
  shape = (2, topology.num_edges(NODES), len(ops_lib.op_set("BASE")))
  assert [tuple(v.shape) for v in net.arch_variables] == [shape, shape]
  assert {id(v) for v in net.arch_variables}.isdisjoint(map(id, net.weight_variables))
  assert len(net.trainable_variables) == len(net.weight_variables) + 2  # no alphas, no betas
  assert tuple(net(tf.zeros((2, 8, 8, 3)), training=True).shape) == (2, 5)
  mixture = net.mixture(tau_alpha=0.5, seeds={"normal": [1, 2], "reduce": [3, 4]})
  for cell in ("normal", "reduce"):
    weights = mixture[f"{cell}_ops"].numpy()
    for start, stop in topology.node_slices(NODES):
      assert weights[start:stop].sum() == pytest.approx(2.0, rel=1e-5)  # two slots
    np.testing.assert_array_equal(mixture[f"{cell}_edges"], np.ones(topology.num_edges(NODES)))
  logits = tf.constant(np.random.default_rng(4).normal(size=shape))  # float64, under XLA
  weights = pair_network.op_weights(logits, NODES, 0.5, [1, 2])
  assert weights.dtype == tf.float64
  compiled = tf.function(lambda a: pair_network.op_weights(a, NODES, 0.5, [1, 2]),
                         jit_compile=True)
  np.testing.assert_allclose(compiled(logits), weights, rtol=1e-12)
  again = NodePairSearchNetwork.from_config(net.get_config())
  assert again.get_config() == net.get_config()
  with pytest.raises(ValueError, match="input_k"):
    NodePairSearchNetwork(5, input_k=2)


def test_derived_pairs_one_per_slot_from_any_logits():
  net = _pair_net()
  rng = np.random.default_rng(0)
  for _ in range(20):
    arch = [rng.normal(size=v.shape).astype("float32") for v in net.arch_variables]
    arch[0][:, :, 0] = 10.0  # "none" is never derived
    genotype = net.genotype(arch=arch)
    for cell in (genotype.normal, genotype.reduce):
      assert len(cell) == NODES
      for j, node in enumerate(cell):
        assert len(node) == 2 and all(0 <= i < j + 2 and op != "none" for op, i in node)
    assert net.genotype(arch=net.decoded_logits(arch)) == genotype


def test_equal_logits_same_pair_frequency_is_the_sum_of_squares():
  """Slots sample with replacement: with equal logits node j's two slots pick the same pair
  with probability sum_pairs p^2 = 1 / ((j + 2) K) and the same input with sum_inputs
  q^2 = 1 / (j + 2), each frequency within 4 sigma (binomial) of it over 4000 draws. A slot
  pair is read off the relaxed mixture at tau = 1e-4: a block maximum near 2 is a shared
  pair (a top-two Gumbel gap below ~1e-3 would blur it: probability ~1e-3 per slot)."""
  op_names, n = ops_lib.op_set("BASE_PAIRS"), 4000
  num_ops = len(op_names)
  logits = tf.zeros((2, topology.num_edges(NODES), num_ops))
  seeds = _task_seeds(n, run_seed=1)
  weights = tf.vectorized_map(
      lambda seed: pair_network.op_weights(logits, NODES, 1e-4, seed), seeds).numpy()
  for j, (start, stop) in enumerate(topology.node_slices(NODES)):
    block = weights[:, start:stop]
    for freq, p in ((np.mean(block.max(axis=(1, 2)) > 1.5), 1 / ((j + 2) * num_ops)),
                    (np.mean(block.sum(axis=2).max(axis=1) > 1.5), 1 / (j + 2))):
      assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n)
  noised = logits + gumbel.noise(tf.shape(logits), seeds[0])  # the Gumbel-max pairs
  picked = np.sum(pair_network.decoded_logits(noised, op_names, NODES) == 0, axis=0)
  np.testing.assert_array_equal(picked, np.round(weights[0]))


@pytest.mark.parametrize("genotype", [BASE_CIFAR_GENOTYPE, BASE_IMAGENET_GENOTYPE],
                         ids=["cifar", "imagenet"])
def test_authors_genotypes_round_trip_and_build(genotype):
  net = _pair_net("BASE_PAIRS")
  arch = _genotype_arch(net, genotype)
  assert genotype_lib.derive_pairs(dict(zip(("normal", "reduce"), arch)), net.op_names,
                                   NODES) == genotype
  assert net.genotype(arch=net.decoded_logits(arch)) == genotype
  fixed = FixedNetwork(genotype, 5, channels=4, num_cells=2, reduction_cells=(1,), affine=False)
  fixed.build((None, 8, 8, 3))
  assert sum(int(np.prod(v.shape)) for v in fixed.weight_variables) == net.count_params_of(genotype)


def test_one_hot_logits_give_weights_one_or_two_and_the_derived_network():
  """A duplicated pair has weight 2 on the supernet's op and is two copies of it in the
  FixedCell: with the kept weights both networks compute the same function."""
  cell = ((("sep_conv_3x3", 0), ("sep_conv_3x3", 0)), (("skip_connect", 2), ("conv_7x1_1x7", 1)),
          (("max_pool_3x3", 3), ("sep_conv_7x7", 0)), (("avg_pool_3x3", 4), ("avg_pool_3x3", 4)))
  genotype = Genotype(normal=cell, reduce=BASE_CIFAR_GENOTYPE.reduce)
  net = _pair_net()
  arch = _genotype_arch(net, genotype)
  for tau in (1.0, 1e-3):
    weights = net.mixture(arch, tau)["normal_ops"].numpy()
    expected = np.zeros_like(weights)
    for j, node in enumerate(cell):
      for op, i in node:
        expected[topology.edge_index(j, i), net.op_names.index(op)] += 1.0
    np.testing.assert_array_equal(weights, expected)
  fixed = FixedNetwork(genotype, 5, channels=4, num_cells=2, reduction_cells=(1,), affine=False)
  fixed.build((None, 8, 8, 3))
  network_lib.copy_kept_weights(net, fixed)
  images = np.random.default_rng(2).normal(size=(4, 8, 8, 3)).astype("float32")
  np.testing.assert_allclose(net(images, mixture=net.mixture(arch), training=True),
                             fixed(images, training=True), atol=1e-4)


def test_categoricals_kl_and_choice_tables_follow_the_space():
  net = _pair_net()
  rng = np.random.default_rng(3)
  arch = [tf.constant(rng.normal(size=v.shape), tf.float32) for v in net.arch_variables]
  blocks = net.categoricals(arch)
  assert [tuple(b.shape) for b in blocks] == 2 * [(2, (j + 2) * 10) for j in range(NODES)]
  prior = [tf.zeros_like(b) for b in blocks]
  kl = sum(float(gumbel.categorical_kl(b, p)) for b, p in zip(blocks, prior))
  by_hand = 0.0
  for block in blocks:
    p = tf.nn.softmax(block).numpy()
    by_hand += np.sum(p * (np.log(p) + np.log(p.shape[-1])))  # KL to uniform
  assert kl == pytest.approx(by_hand, rel=1e-5)
  assert float(gumbel.categorical_kl(blocks[0], blocks[0])) == pytest.approx(0.0, abs=1e-6)
  tables = net.choice_tables(arch)
  assert sorted(tables) == ["normal_slot0", "normal_slot1", "reduce_slot0", "reduce_slot1"]
  start, stop = topology.node_slices(NODES)[2]
  np.testing.assert_allclose(tables["reduce_slot1"][start:stop].ravel(),
                             tf.nn.softmax(blocks[NODES + 2][1]), rtol=1e-5)
  darts = SearchNetwork(5, channels=4, num_cells=2, reduction_cells=(1,), num_nodes=2,
                        op_set="DARTS", input_k=0)
  np.testing.assert_allclose(darts.choice_tables()["normal"].sum(axis=1), 1.0, rtol=1e-5)
  assert len(darts.categoricals()) == 2


def test_pair_space_is_gin_configurable():
  from tf_metanas.search import configurables  # pylint: disable=import-outside-toplevel
  gin.parse_config("tf_metanas.search.NodePairSearchNetwork.num_nodes = 2\n"
                   "tf_metanas.search.FixedNetwork.genotype = "
                   "%tf_metanas.search.BASE_IMAGENET_GENOTYPE")
  assert configurables.NodePairSearchNetwork(5).num_nodes == 2
  assert configurables.FixedNetwork(num_classes=5).genotype == BASE_IMAGENET_GENOTYPE
