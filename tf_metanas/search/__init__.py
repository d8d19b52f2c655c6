"""The search space: candidate ops, mixed ops, cells, networks and genotypes."""

from tf_metanas.search.genotype import Genotype
from tf_metanas.search.network import FixedNetwork
from tf_metanas.search.network import SearchNetwork
from tf_metanas.search.pair_network import NodePairSearchNetwork
from tf_metanas.search.ops import OP_SETS
from tf_metanas.search.baselines import AUTOMETA_GENOTYPE
from tf_metanas.search.baselines import BASE_CIFAR_GENOTYPE
from tf_metanas.search.baselines import BASE_IMAGENET_GENOTYPE
from tf_metanas.search.baselines import Conv4
from tf_metanas.search.baselines import autometa_network
from tf_metanas.search.baselines import maml_network
from tf_metanas.search.baselines import mamlpp_network
from tf_metanas.search.baselines import reptile_network
