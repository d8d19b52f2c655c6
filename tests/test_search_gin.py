"""The search space is configurable from gin: op sets are data."""

import gin
import pytest

from tf_metanas.search import configurables


def test_op_set_by_name_and_as_a_tuple_of_names():
  gin.parse_config("""
      SearchNetwork.num_classes = 5
      SearchNetwork.op_set = ("conv_3x3", "skip_connect", "max_pool_3x3")
      SearchNetwork.num_nodes = 2
  """)
  net = configurables.SearchNetwork()
  assert net.op_names == ("conv_3x3", "skip_connect", "max_pool_3x3")
  assert tuple(net.alpha_normal.shape) == (5, 3)
  gin.parse_config('SearchNetwork.op_set = "DARTS"')
  assert configurables.SearchNetwork().op_names[0] == "none"


def test_autometa_genotype_constant_builds_a_fixed_network():
  gin.parse_config("""
      FixedNetwork.genotype = %tf_metanas.search.AUTOMETA_GENOTYPE
      FixedNetwork.num_classes = 5
  """)
  assert configurables.FixedNetwork().genotype.num_nodes == 5


def test_bad_op_name_in_gin_names_it():
  gin.parse_config('SearchNetwork.op_set = ("conv_3x3", "conv_11x11")')
  with pytest.raises(ValueError, match="conv_11x11"):
    configurables.SearchNetwork(num_classes=5)
