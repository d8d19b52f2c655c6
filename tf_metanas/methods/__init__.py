"""Methods built on the meta-learning engine: METANAS."""

from tf_metanas.methods.metanas import Metanas
from tf_metanas.methods.metanas import Temperature
