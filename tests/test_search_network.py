"""Cells and networks: shapes, variable sets, Eq. 7, functional calls, second-order gradients,
parameter counts of pruned networks, serialization."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.search import Conv4
from tf_metanas.search import FixedNetwork
from tf_metanas.search import Genotype
from tf_metanas.search import SearchNetwork
from tf_metanas.search import cell as cell_lib
from tf_metanas.search import topology

TINY = dict(num_classes=3, channels=2, num_cells=2, reduction_cells=(1,), num_nodes=2,
            op_set=("conv_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"), input_k=2,
            stem_multiplier=1, seed=0)


def _count(variables):
  return sum(int(np.prod(v.shape)) for v in variables)


def _images(n=4, size=8, channels=1, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, size, size, channels)).astype("float32")


def test_metanas_supernet_shapes_and_variable_sets():
  net = SearchNetwork(num_classes=20)
  net.build((None, 28, 28, 1))
  assert net(_images(20, 28), training=True).shape == (20, 20)
  shapes = [tuple(v.shape) for v in net.arch_variables]
  assert shapes == [(9, 7), (9, 7), (10,), (10,)]  # 3 nodes: 2+3+4 edges, 1+3+6 pairs
  weights, arch = net.weight_variables, net.arch_variables
  assert {id(v) for v in weights}.isdisjoint(id(v) for v in arch)
  assert len(weights) + len(arch) == len(net.trainable_variables)


def test_darts_network_doubles_channels_at_reductions():
  net = SearchNetwork(num_classes=5, channels=4, num_cells=5, reduction_cells=(1, 3),
                      num_nodes=4, op_set="DARTS", input_k=0, channel_doubling=True)
  net.build((None, 16, 16, 3))
  assert [c.channels for c in net.cells] == [4, 8, 8, 16, 16]
  assert [c.reduction_prev for c in net.cells] == [False, False, True, False, True]
  assert len(net.arch_variables) == 2 and tuple(net.alpha_normal.shape) == (14, 8)
  assert net(_images(2, 16, 3)).shape == (2, 5)


def test_tiny_network_parameter_count_by_hand():
  net = SearchNetwork(num_classes=3, channels=2, num_cells=1, reduction_cells=(), num_nodes=1,
                      op_set=("conv_3x3", "skip_connect"), input_k=0, stem_multiplier=1)
  net.build((None, 8, 8, 1))
  stem = 3 * 3 * 1 * 2 + 2 * 2       # conv + affine BN
  preprocess = 2 * (1 * 1 * 2 * 2)  # two ReLU-1x1 conv-BN (BN not affine)
  edges = 2 * (3 * 3 * 2 + 2 * 2)   # conv_3x3 (depthwise + pointwise) on both edges
  classifier = 2 * 3 + 3            # one node of 2 channels -> 3 ways
  assert _count(net.weight_variables) == stem + preprocess + edges + classifier


def test_edge_weights_fold_eq7_exactly():
  """Node j = sum_combos softmax(beta)[c] * sum_{i in c} MixedOp_ij(x_i) (METANAS Eq. 7)."""
  num_nodes, k, ops = 3, 2, ("conv_3x3", "avg_pool_3x3", "skip_connect")
  cell = cell_lib.SearchCell(3, num_nodes, ops, reduction=False, reduction_prev=False)
  cell.build((None, 6, 6, 5), (None, 6, 6, 5))
  rng = np.random.default_rng(0)
  alpha = rng.normal(size=(topology.num_edges(num_nodes), len(ops))).astype("float32")
  beta = rng.normal(size=(topology.num_combinations(num_nodes, k),)).astype("float32")
  op_w = np.asarray(mixture_lib.op_weights(alpha))
  edge_w = np.asarray(mixture_lib.edge_weights(beta, num_nodes, k))
  s0, s1 = _images(2, 6, 5, 1), _images(2, 6, 5, 2)
  out = np.asarray(cell(s0, s1, op_w, edge_w, training=False))

  states = [np.asarray(cell.preprocess0(s0, training=False)),
            np.asarray(cell.preprocess1(s1, training=False))]
  segments = topology.combination_segments(num_nodes, k)
  for j, combos in enumerate(topology.input_combinations(num_nodes, k)):
    logits = beta[segments[j][0]:segments[j][1]]
    combo_w = np.exp(logits) / np.exp(logits).sum()
    mixed = {i: np.asarray(cell.edges[topology.edge_index(j, i)](
        states[i], op_w[topology.edge_index(j, i)], training=False))
             for i in range(topology.num_inputs(j))}
    states.append(sum(w * sum(mixed[i] for i in combo) for w, combo in zip(combo_w, combos)))
  np.testing.assert_allclose(out, np.concatenate(states[2:], axis=-1), rtol=1e-4, atol=1e-5)


def test_mean_entropy_of_categoricals_by_hand():
  uniform4 = np.zeros((2, 4), np.float32)                    # 2 rows of log 4
  decided = np.array([[0.0, -1e9, -1e9]], np.float32)        # 1 row of 0 (removed logits)
  coin = np.array([0.0, np.log(3.0)], np.float32)            # p = (1/4, 3/4)
  h_coin = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
  single = np.zeros((1,), np.float32)                        # no choice: left out
  expected = (2 * np.log(4) + 0 + h_coin) / 4
  assert float(mixture_lib.mean_entropy([uniform4, decided, single, coin])) == pytest.approx(
      expected, rel=1e-6)


def test_temperature_sharpens_op_weights():
  alpha = np.array([[0.3, 0.1, -0.2]], np.float32)
  soft = np.asarray(mixture_lib.op_weights(alpha, 1.0))
  np.testing.assert_allclose(soft, np.exp(alpha) / np.exp(alpha).sum(), rtol=1e-6)
  sharp = np.asarray(mixture_lib.op_weights(alpha, 0.01))
  np.testing.assert_allclose(sharp, [[1.0, 0.0, 0.0]], atol=1e-6)


def test_functional_call_matches_call_and_leaves_variables_alone():
  net = SearchNetwork(**TINY)
  net.build((None, 8, 8, 1))
  x = _images()
  before = [np.array(v) for v in net.variables]
  weights = [v.value for v in net.weight_variables]
  expected = net(x, training=False)
  np.testing.assert_allclose(net.functional_call(weights, x, training=False), expected,
                             atol=1e-6)
  shifted = [w + 0.1 for w in weights]
  assert not np.allclose(net.functional_call(shifted, x, training=False), expected)
  for b, v in zip(before, net.variables):
    np.testing.assert_array_equal(b, np.array(v))


def test_second_order_meta_gradient_matches_finite_differences(float64):
  """d/d(w, a) of L_query(theta - lr * grad L_support(theta)), theta = (w, a).

  ReLU and pooling kinks make finite differences unreliable where a perturbation crosses
  one; a fixed initialization and a small step in float64 keep clear of them."""
  keras.utils.set_random_seed(1234)
  net = SearchNetwork(**TINY)
  net.build((None, 8, 8, 1))
  rng = np.random.default_rng(0)
  xs, xq = rng.uniform(size=(6, 8, 8, 1)), rng.uniform(size=(6, 8, 8, 1))
  ys, yq = np.arange(6) % 3, (np.arange(6) + 1) % 3
  n_w, lr = len(net.weight_variables), 0.1

  def loss(theta, x, y):
    logits = net.functional_call(theta[:n_w], x, arch=theta[n_w:], training=True)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

  def meta_loss(theta):
    with tf.GradientTape() as inner:
      inner.watch(theta)
      support = loss(theta, xs, ys)
    grads = inner.gradient(support, theta)
    return loss([t - lr * g for t, g in zip(theta, grads)], xq, yq)

  theta = [tf.constant(np.array(v)) for v in net.weight_variables + net.arch_variables]
  with tf.GradientTape() as outer:
    outer.watch(theta)
    value = meta_loss(theta)
  meta_grad = outer.gradient(value, theta)
  assert all(g is not None for g in meta_grad)
  assert all(np.abs(g).max() > 0 for g in meta_grad[:n_w])  # reaches every initial weight
  for seed in range(3):
    d = [tf.constant(np.random.default_rng(seed).normal(size=t.shape)) for t in theta]
    eps = 1e-7
    plus = meta_loss([t + eps * u for t, u in zip(theta, d)])
    minus = meta_loss([t - eps * u for t, u in zip(theta, d)])
    numeric = float(plus - minus) / (2 * eps)
    analytic = sum(float(tf.reduce_sum(g * u)) for g, u in zip(meta_grad, d))
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_first_order_part_differs_from_second_order(float64):
  """The Hessian term matters: dropping it (stop_gradient on the inner gradient) changes
  the meta-gradient, so the second-order test above could fail."""
  keras.utils.set_random_seed(1234)
  net = SearchNetwork(**TINY)
  net.build((None, 8, 8, 1))
  x, y = np.random.default_rng(1).uniform(size=(6, 8, 8, 1)), np.arange(6) % 3
  theta = [tf.constant(np.array(v)) for v in net.weight_variables]

  def meta_grad(stop):
    with tf.GradientTape() as outer:
      outer.watch(theta)
      with tf.GradientTape() as inner:
        inner.watch(theta)
        ls = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            y, net.functional_call(theta, x)))
      grads = inner.gradient(ls, theta)
      grads = [tf.stop_gradient(g) for g in grads] if stop else grads
      adapted = [t - 0.1 * g for t, g in zip(theta, grads)]
      lq = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          y, net.functional_call(adapted, x)))
    return outer.gradient(lq, theta)

  second, first = meta_grad(False), meta_grad(True)
  assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(second, first)) > 1e-6


def _random_arch(net, seed):
  rng = np.random.default_rng(seed)
  for v in net.arch_variables:
    v.assign(rng.normal(scale=2.0, size=v.shape).astype("float32"))


@pytest.mark.parametrize("config", [
    dict(num_classes=5, channels=6, num_cells=4, reduction_cells=(1, 3), num_nodes=3,
         op_set="S1", input_k=2),
    dict(num_classes=5, channels=4, num_cells=3, reduction_cells=(1, 2), num_nodes=4,
         op_set="DARTS", input_k=0, channel_doubling=True),
])
@pytest.mark.parametrize("rule", ["darts", "threshold"])
def test_pruned_parameter_count_equals_fixed_network(config, rule):
  net = SearchNetwork(**config)
  net.build((None, 16, 16, 1))
  for seed in range(3):
    _random_arch(net, seed)
    genotype = net.genotype(rule, threshold=0.05, tau_alpha=0.5, tau_beta=0.5)
    fixed = FixedNetwork(genotype, affine=False, **{k: v for k, v in config.items()
                                                    if k not in ("op_set", "input_k",
                                                                 "num_nodes")})
    fixed.build((None, 16, 16, 1))
    assert _count(fixed.weight_variables) == net.count_params_of(genotype)
    assert fixed(_images(2, 16)).shape == (2, 5)


def test_genotype_of_given_architecture_tensors():
  net = SearchNetwork(**TINY)
  net.build((None, 8, 8, 1))
  _random_arch(net, 0)
  arch = [np.array(v) for v in net.arch_variables]
  from_variables = net.genotype("threshold", threshold=0.05, tau_alpha=0.5, tau_beta=0.5)
  _random_arch(net, 1)
  assert net.genotype("threshold", arch=arch, threshold=0.05, tau_alpha=0.5,
                      tau_beta=0.5) == from_variables
  from_tensors = net.genotype("darts", arch=arch)
  for v, a in zip(net.arch_variables, arch):
    v.assign(a)
  assert net.genotype("darts") == from_tensors


def test_pruned_network_skips_pruned_ops():
  net = SearchNetwork(**TINY)
  net.build((None, 8, 8, 1))
  calls = {}
  for c, cell in enumerate(net.cells):
    for e, mixed in enumerate(cell.edges):
      for o, op in enumerate(mixed.candidates):
        original = op.call

        def counted(*args, key=(c, e, o), original=original, **kwargs):
          calls[key] = calls.get(key, 0) + 1
          return original(*args, **kwargs)

        op.call = counted
  mixture = {k: np.array(v) for k, v in net.mixture().items()}
  mixture["normal_ops"][:, 1:] = 0.0  # normal cell: only conv_3x3 survives
  mixture["reduce_edges"][topology.edge_index(1, 2)] = 0.0  # a pruned input edge
  net(_images(), mixture=mixture)
  normal_cell, reduce_cell = 0, 1
  assert all(o == 0 for (c, _, o) in calls if c == normal_cell)
  assert len([k for k in calls if k[0] == normal_cell]) == topology.num_edges(2)
  assert not [k for k in calls if k[0] == reduce_cell and k[1] == topology.edge_index(1, 2)]


@pytest.mark.parametrize("make", [
    lambda: SearchNetwork(**TINY),
    lambda: FixedNetwork(Genotype(normal=[[("conv_3x3", 0), ("skip_connect", 1)],
                                          [("sep_conv_3x3", 2)]],
                                  reduce=[[("avg_pool_3x3", 1)], [("conv_3x3", 0)]]),
                         num_classes=3, channels=2, num_cells=2, reduction_cells=(1,),
                         stem_multiplier=1),
    lambda: Conv4(3, filters=4),
])
def test_networks_save_and_load_with_identical_outputs(make, tmp_path):
  net = make()
  net.build((None, 8, 8, 1))
  x = _images()
  for v in net.non_trainable_variables:  # non-trivial BN statistics
    v.assign(v + 0.5)
  path = tmp_path / "net.keras"
  net.save(path)
  loaded = keras.saving.load_model(path)
  np.testing.assert_array_equal(np.asarray(loaded(x, training=False)),
                                np.asarray(net(x, training=False)))
  assert loaded.get_config() == net.get_config()


def test_cells_serialize():
  search = cell_lib.SearchCell(4, 3, ("conv_3x3", "none"), True, False)
  assert cell_lib.SearchCell.from_config(search.get_config()).get_config() == search.get_config()
  fixed = cell_lib.FixedCell(4, [[("conv_3x3", 0)], [("skip_connect", 2)]], False, True,
                             drop_path_rate=0.2)
  clone = cell_lib.FixedCell.from_config(fixed.get_config())
  assert clone.nodes == fixed.nodes and clone.drop_path_rate == 0.2


def test_drop_path_only_in_training():
  fixed = FixedNetwork(Genotype([[("conv_3x3", 0)]], [[("conv_3x3", 1)]]), num_classes=2,
                       channels=2, num_cells=2, reduction_cells=(1,), drop_path_rate=0.5)
  fixed.build((None, 8, 8, 1))
  x = _images(16)
  np.testing.assert_array_equal(fixed(x, training=False), fixed(x, training=False))
  a, b = fixed(x, training=True), fixed(x, training=True)
  assert not np.allclose(a, b)


def test_drop_path_draws_new_masks_in_compiled_functional_calls():
  # A Keras SeedGenerator would be a frozen input of stateless_call: the same mask forever.
  fixed = FixedNetwork(Genotype([[("conv_3x3", 0)]], [[("conv_3x3", 1)]]), num_classes=2,
                       channels=2, num_cells=2, reduction_cells=(1,), drop_path_rate=0.5)
  fixed.build((None, 8, 8, 1))
  weights, x = [v.value for v in fixed.weight_variables], _images(16)
  call = tf.function(lambda x: fixed.functional_call(weights, x, training=True))
  assert not np.allclose(call(x), call(x))


def test_input_combinations_enumerate_k_subsets():
  combos = topology.input_combinations(3, 2)
  assert combos == (((0, 1),), tuple(itertools.combinations(range(3), 2)),
                    tuple(itertools.combinations(range(4), 2)))
  matrix = topology.combination_to_edges(3, 2)
  assert matrix.shape == (10, 9) and (matrix.sum(1) == 2).all()
