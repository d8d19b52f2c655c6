"""Genotypes: JSON round trip, derivation rules on hand-made weights, pictures, baselines."""

import json

import numpy as np
import pytest
from PIL import Image

from tf_metanas.search import AUTOMETA_GENOTYPE
from tf_metanas.search import Conv4
from tf_metanas.search import Genotype
from tf_metanas.search import autometa_network
from tf_metanas.search import maml_network
from tf_metanas.search import mamlpp_network
from tf_metanas.search import baselines
from tf_metanas.search import reptile_network
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import ops as ops_lib
from tf_metanas.search import visualize

OPS = ("none", "conv_3x3", "skip_connect")
# Two nodes: node 0 has edges 0, 1 (inputs 0, 1); node 1 has edges 2, 3, 4 (inputs 0, 1, 2).
OP_WEIGHTS = np.array([
    [0.90, 0.06, 0.04],  # strongest op is none: the DARTS rule takes conv_3x3
    [0.20, 0.30, 0.50],
    [0.10, 0.70, 0.20],
    [0.75, 0.05, 0.20],
    [0.30, 0.40, 0.30],
], np.float32)


def _mixture(op_weights=OP_WEIGHTS, edge_weights=None):
  edges = np.ones(len(op_weights), np.float32) if edge_weights is None else edge_weights
  return {"normal_ops": op_weights, "normal_edges": edges,
          "reduce_ops": op_weights[:, [0, 2, 1]], "reduce_edges": edges}


def test_json_round_trip_and_version():
  genotype = Genotype(normal=[[("conv_3x3", 0), ("skip_connect", 1)], [("conv_3x3", 2)]],
                      reduce=[[("skip_connect", 1)], []])
  text = genotype.to_json()
  assert json.loads(text)["format_version"] == genotype_lib.FORMAT_VERSION
  assert Genotype.from_json(text) == genotype
  assert hash(Genotype.from_json(text)) == hash(genotype)
  with pytest.raises(ValueError, match="format version 99"):
    Genotype.from_dict({**json.loads(text), "format_version": 99})


def test_genotype_is_immutable_and_validated():
  genotype = Genotype(normal=[[("conv_3x3", 0)]], reduce=[[("conv_3x3", 1)]])
  with pytest.raises(Exception):
    genotype.normal = ()
  with pytest.raises(ValueError, match="node 0 cannot take input 2"):
    Genotype(normal=[[("conv_3x3", 2)]], reduce=[[]])


def test_darts_rule_top2_inputs_argmax_op_excluding_none():
  genotype = genotype_lib.derive_darts(_mixture(), OPS, num_nodes=2, k=2)
  assert genotype.normal == ((("conv_3x3", 0), ("skip_connect", 1)),
                             (("conv_3x3", 0), ("conv_3x3", 2)))
  # reduce swaps conv and skip columns
  assert genotype.reduce == ((("skip_connect", 0), ("conv_3x3", 1)),
                             (("skip_connect", 0), ("skip_connect", 2)))


def test_darts_rule_ranks_edges_by_edge_weighted_strength():
  edges = np.array([1, 1, 0.1, 1, 1], np.float32)  # input 0 of node 1 down-weighted
  genotype = genotype_lib.derive_darts(_mixture(edge_weights=edges), OPS, 2, k=2)
  assert genotype.normal[1] == (("skip_connect", 1), ("conv_3x3", 2))


def test_consolidated_edges_are_kept_with_their_fixed_op():
  fixed = {"normal": {3: "conv_3x3"}, "reduce": {}}
  genotype = genotype_lib.derive_consolidated(_mixture(), OPS, 2, fixed, k=2)
  assert genotype.normal[1] == (("conv_3x3", 0), ("conv_3x3", 1))
  assert genotype.reduce == genotype_lib.derive_darts(_mixture(), OPS, 2).reduce


def test_threshold_rule_keeps_ops_and_combinations_above_threshold():
  # node 1 combinations: (0,1), (0,2), (1,2)
  combos = {"normal": np.array([1.0, 0.0, 0.985, 0.015], np.float32),
            "reduce": np.array([1.0, 0.97, 0.03, 0.0], np.float32)}
  genotype = genotype_lib.derive_threshold(_mixture(), combos, OPS, 2, k=2, threshold=0.05)
  assert genotype.normal == (
      (("conv_3x3", 0), ("conv_3x3", 1), ("skip_connect", 1)),
      (("conv_3x3", 0), ("skip_connect", 0), ("conv_3x3", 2), ("skip_connect", 2)))
  # reduce: conv/skip weights swapped; only combination (0, 1) survives; a weight of
  # exactly 0.05 is pruned (kept: above the threshold, as the authors' code)
  assert genotype.reduce[1] == (("conv_3x3", 0), ("skip_connect", 0), ("conv_3x3", 1))


def test_threshold_rule_without_input_weights_keeps_every_input():
  genotype = genotype_lib.derive_threshold(_mixture(), None, OPS, 2, threshold=0.45)
  assert genotype.normal == ((("skip_connect", 1),), (("conv_3x3", 0),))
  at_threshold = genotype_lib.derive_threshold(_mixture(), None, OPS, 2, threshold=0.5)
  assert at_threshold.normal == ((), (("conv_3x3", 0),))  # skip_connect's 0.5 is pruned


def test_picture_is_written(tmp_path):
  path = visualize.plot_genotype(AUTOMETA_GENOTYPE, tmp_path / "cells" / "g.png", "Auto-Meta")
  del path
  image = Image.open(tmp_path / "cells" / "g.png")
  assert image.width > 300 and image.height > 300


def test_a_cell_with_many_ops_per_edge_is_drawn_one_arrow_per_edge_with_its_ops_listed():
  ops = ("max_pool_3x3", "skip_connect", "conv_3x3")
  dense = Genotype(normal=(tuple((op, i) for op in ops for i in (0, 1)),
                           (("conv_3x3", 0), ("conv_3x3", 2))),
                   reduce=((("skip_connect", 0), ("conv_3x3", 1)), (("conv_3x3", 2),)))
  fig = visualize.plot_genotype(dense)
  normal, reduce = fig.axes
  arrows = lambda ax: [t for t in ax.texts if getattr(t, "arrow_patch", None)]  # annotations
  # normal: 3 ops on each input of node 0 -> 4 edges, each one arrow, plus 2 to c_{k}
  assert len(arrows(normal)) == 4 + 2
  listing = [t.get_text() for t in normal.texts if "->" in t.get_text()][0]
  assert "c_{k-2} -> 0: mp3 id c3" in listing and "0 -> 1: c3" in listing
  assert sorted(t.get_text() for t in normal.texts if t.get_text() in ("1", "3")) == [
      "1", "1", "1", "3", "3"]  # counts on the edges (and node 1's label)
  # reduce: at most one op per edge: one coloured arrow per op, as before
  assert len(arrows(reduce)) == 3 + 2 and not any("->" in t.get_text() for t in reduce.texts)


def test_autometa_and_reptile_networks():
  assert AUTOMETA_GENOTYPE.num_nodes == 5
  net = autometa_network(5)
  net.build((None, 28, 28, 1))
  assert net(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 5)
  reptile = reptile_network(5)
  reptile.build((None, 28, 28, 1))
  # 4 x (3x3 conv + bias + BN gamma/beta), 64 filters; 2x2x64 flattened -> 5 ways
  assert sum(int(np.prod(v.shape)) for v in reptile.weight_variables) == (
      (9 * 1 * 64 + 64 + 128) + 3 * (9 * 64 * 64 + 64 + 128) + (256 * 5 + 5))
  mini = reptile_network(5, "mini_imagenet")
  mini.build((None, 84, 84, 3))
  assert mini.classifier.kernel.shape == (6 * 6 * 32, 5)
  # MAML: Omniglot averages the 2x2x64 maps into the classifier; mini-ImageNet pools with
  # VALID padding, 84 -> 42 -> 21 -> 10 -> 5
  maml = maml_network(5)
  maml.build((None, 28, 28, 1))
  assert maml(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 5)
  assert sum(int(np.prod(v.shape)) for v in maml.weight_variables) == (  # BN: shifts only
      (9 * 1 * 64 + 64 + 64) + 3 * (9 * 64 * 64 + 64 + 64) + (64 * 5 + 5))
  assert maml.norms[0].epsilon == 1e-3
  assert 0.8 < np.std(maml.classifier.kernel.numpy()) < 1.2  # N(0, 1), as cbfinn's w5
  maml_mini = maml_network(5, "mini_imagenet")
  maml_mini.build((None, 84, 84, 3))
  assert maml_mini.classifier.kernel.shape == (5 * 5 * 32, 5)
  mamlpp = mamlpp_network(5)
  mamlpp.build((None, 84, 84, 3))
  assert mamlpp.classifier.kernel.shape == (5 * 5 * 48, 5) and mamlpp.activation == "leaky_relu"
  x = np.random.default_rng(0).normal(size=(4, 84, 84, 3)).astype(np.float32)
  relu = Conv4(5, filters=48, downsample="pool", pool_padding="valid")
  relu.build((None, 84, 84, 3))
  relu.set_weights(mamlpp.get_weights())
  plain = Conv4(5, filters=48, downsample="pool", pool_padding="valid", activation="leaky_relu")
  plain.build((None, 84, 84, 3))
  plain.set_weights(mamlpp.get_weights())
  standardized = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(mamlpp(x, training=True), plain(standardized, training=True),
                             rtol=1e-4, atol=1e-5)  # ImageNet mean / std on the inputs
  assert not np.allclose(relu(standardized, training=True),
                         plain(standardized, training=True))  # leaky differs
  leaky = baselines.ACTIVATIONS["leaky_relu"](np.array([-2.0, 3.0], np.float32))
  np.testing.assert_allclose(leaky, [-0.02, 3.0])  # PyTorch's default slope, 0.01


def test_summary_lists_each_node_on_one_line():
  genotype = Genotype([[("conv_3x3", 0)], [("skip_connect", 2), ("max_pool_3x3", 1)]],
                      [[("conv_3x3", 1)], [("avg_pool_3x3", 0)]])
  assert genotype.summary() == ("normal [0: conv_3x3(0) | 1: skip_connect(2), max_pool_3x3(1)]"
                                "  reduce [0: conv_3x3(1) | 1: avg_pool_3x3(0)]")
  assert genotype.compact() == "normal: c3(0) id(2)+mp3(1)  reduce: c3(1) ap3(0)"
  assert Genotype([[]], [[("sep_conv_7x7", 0)]]).compact() == "normal: -  reduce: sep7(0)"
  assert genotype.compact_table().splitlines() == [
      "| node | normal | reduce |", "|---|---|---|", "| 0 | `c3(0)` | `c3(1)` |",
      "| 1 | `id(2)+mp3(1)` | `ap3(0)` |"]
  assert set(genotype_lib.SHORT_NAMES) == set(ops_lib.OP_NAMES)  # every op has a short name


def test_the_genotype_table_is_markdown_in_compact_form():
  from tf_metanas.train import arch_summaries  # pylint: disable=g-import-not-at-top
  genotype = Genotype([[("conv_3x3", 0)]], [[("max_pool_3x3", 1)]])
  assert arch_summaries.genotype_table([(genotype, 3, 1234)], 4).splitlines() == [
      "| tasks | share | parameters | genotype |", "|---|---|---|---|",
      "| 3 | 75.0% | 1234 | `normal: c3(0)  reduce: mp3(1)` |"]
