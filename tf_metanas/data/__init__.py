"""Few-shot data: class-indexed image stores, readers, the glyph set and episode sampling."""

from tf_metanas.data.cache import cache_root
from tf_metanas.data.contact_sheet import contact_sheet
from tf_metanas.data.episodes import EpisodeSampler
from tf_metanas.data.episodes import EpisodeSpec
from tf_metanas.data.errors import CorruptFileError
from tf_metanas.data.errors import DataError
from tf_metanas.data.errors import DatasetNotFoundError
from tf_metanas.data.errors import EpisodeSpecError
from tf_metanas.data.errors import SplitOverlapError
from tf_metanas.data.registry import DATASETS
from tf_metanas.data.registry import load_dataset
from tf_metanas.data.store import ImageStore
from tf_metanas.data.store import SPLITS
from tf_metanas.data.store import summarize
