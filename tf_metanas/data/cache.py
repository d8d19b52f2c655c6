"""Where prepared datasets live: a per-user cache directory of `.npz` stores."""

import os
import pathlib

CACHE_ENV = "TF_METANAS_CACHE"


def cache_root(cache_dir=None):
  """Returns the cache root: `cache_dir`, else $TF_METANAS_CACHE, else ~/.cache/tf_metanas."""
  if cache_dir:
    return pathlib.Path(cache_dir).expanduser()
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV]).expanduser()
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
  return pathlib.Path(xdg).expanduser() / "tf_metanas"


def dataset_dir(name, variant, cache_dir=None):
  """The folder holding the prepared splits of one dataset variant."""
  return cache_root(cache_dir) / name / variant
