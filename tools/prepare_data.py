r"""Prepares a few-shot dataset into the cache, prints a summary and writes a contact sheet.

  python tools/prepare_data.py --dataset=glyphs
  python tools/prepare_data.py --dataset=glyphs --glyphs_version=1   # the printed glyphs
  python tools/prepare_data.py --dataset=omniglot --data_dir=/path/with/images_background.zip
  python tools/prepare_data.py --dataset=fc100 --source=tfds --download
"""

# TensorFlow loads in main(), after the flags are parsed: --help answers at once.

import pathlib

from absl import app
from absl import flags
from absl import logging

from tf_metanas import choices
from tf_metanas import quiet

_DATASET = flags.DEFINE_enum("dataset", "glyphs", choices.DATASETS, "Dataset to prepare.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the raw files.")
_SOURCE = flags.DEFINE_enum("source", "auto", ["auto", "files", "tfds"], "Where to read from.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Cache root (default ~/.cache/tf_metanas).")
_TFDS_DIR = flags.DEFINE_string("tfds_dir", None, "TFDS data directory.")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Allow TFDS to download the dataset.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the glyph drawers.")
_GLYPHS_VERSION = flags.DEFINE_enum(
    "glyphs_version", str(choices.GLYPHS_VERSION), [str(v) for v in choices.GLYPHS_VERSIONS],
    "glyphs: 2 draws handwritten strokes with Omniglot's ink; 1 the printed characters of "
    "results measured before version 2.")
_OMNIGLOT_SPLIT = flags.DEFINE_enum("omniglot_split", "vinyals",
                                    choices.OMNIGLOT_SPLITS,
                                    "Omniglot class split.")
_REFRESH = flags.DEFINE_bool("refresh", False, "Rebuild even if cached.")
_SHEETS = flags.DEFINE_string("contact_sheets", None, "Folder of the contact sheets, one PNG "
                              "per split named after dataset, split and Omniglot class split "
                              "or glyphs version (default: the cache root).")


def main(argv):
  del argv
  quiet.load_tensorflow()
  from tf_metanas import data  # pylint: disable=g-import-not-at-top  (TensorFlow)
  try:
    splits = data.load_dataset(
        _DATASET.value, data_dir=_DATA_DIR.value, source=_SOURCE.value,
        cache_dir=_CACHE_DIR.value, download=_DOWNLOAD.value, tfds_dir=_TFDS_DIR.value,
        seed=_SEED.value, omniglot_split=_OMNIGLOT_SPLIT.value, refresh=_REFRESH.value,
        glyphs_version=int(_GLYPHS_VERSION.value))
  except data.DataError as e:
    logging.error("%s", e)
    raise SystemExit(1) from None
  for split, store in splits.items():
    logging.info("%s %-5s: %s", _DATASET.value, split, data.summarize(store))
  folder = pathlib.Path(_SHEETS.value or data.cache_root(_CACHE_DIR.value))
  variant = {"omniglot": f"_{_OMNIGLOT_SPLIT.value}",
             "glyphs": f"_v{_GLYPHS_VERSION.value}"}.get(_DATASET.value, "")
  for split, store in splits.items():
    if store.num_classes:
      sheet = folder / f"{_DATASET.value}{variant}_{split}_contact_sheet.png"
      logging.info("Contact sheet of %s classes: %s", split, data.contact_sheet(store, sheet))


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
