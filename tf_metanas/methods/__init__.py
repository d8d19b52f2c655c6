"""Methods built on the meta-learning engine: METANAS, T-NAS (T-NAS++) and Auto-MAML."""

from tf_metanas.methods.metanas import Metanas
from tf_metanas.methods.metanas import Temperature
from tf_metanas.methods.tnas import AutoMaml
from tf_metanas.methods.tnas import Tnas
