"""Registers the search space with gin: networks, op sets and genotypes are bindable.

  SearchNetwork.op_set = "DARTS"                     # or an explicit tuple of op names
  SearchNetwork.op_set = ("conv_3x3", "skip_connect")
  model/macro.network = @SearchNetwork
"""

import gin

from tf_metanas.search import baselines
from tf_metanas.search import network
from tf_metanas.search import pair_network

_MODULE = "tf_metanas.search"

SearchNetwork = gin.external_configurable(network.SearchNetwork, module=_MODULE)
FixedNetwork = gin.external_configurable(network.FixedNetwork, module=_MODULE)
NodePairSearchNetwork = gin.external_configurable(pair_network.NodePairSearchNetwork,
                                                  module=_MODULE)
Conv4 = gin.external_configurable(baselines.Conv4, module=_MODULE)
reptile_network = gin.external_configurable(baselines.reptile_network, module=_MODULE)
maml_network = gin.external_configurable(baselines.maml_network, module=_MODULE)
mamlpp_network = gin.external_configurable(baselines.mamlpp_network, module=_MODULE)
autometa_network = gin.external_configurable(baselines.autometa_network, module=_MODULE)
gin.constant(f"{_MODULE}.AUTOMETA_GENOTYPE", baselines.AUTOMETA_GENOTYPE)
gin.constant(f"{_MODULE}.BASE_CIFAR_GENOTYPE", baselines.BASE_CIFAR_GENOTYPE)
gin.constant(f"{_MODULE}.BASE_IMAGENET_GENOTYPE", baselines.BASE_IMAGENET_GENOTYPE)
