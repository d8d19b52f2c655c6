"""The choices the binaries' flags offer, importable without TensorFlow: flag modules read
them, so `--help` answers before TensorFlow loads (the library modules that act on them
import them from here)."""

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")
DATASETS = ("glyphs", "omniglot", "mini_imagenet", "fc100")
GLYPHS_VERSIONS = (1, 2)
GLYPHS_VERSION = 2  # the default
OMNIGLOT_SPLITS = ("lake", "maml", "reptile", "vinyals")
