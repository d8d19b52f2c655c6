"""Everything gin files may name, registered in one import (no other side effects)."""

import os
import pathlib

import gin

from tf_metanas.data import episodes
from tf_metanas.meta import inner_loop  # pylint: disable=unused-import
from tf_metanas.meta import learner  # pylint: disable=unused-import
from tf_metanas.meta import optimizers  # pylint: disable=unused-import
from tf_metanas.meta import schedules  # pylint: disable=unused-import
from tf_metanas.methods import autometa  # pylint: disable=unused-import
from tf_metanas.methods import base  # pylint: disable=unused-import
from tf_metanas.methods import caml  # pylint: disable=unused-import
from tf_metanas.methods import metanas  # pylint: disable=unused-import
from tf_metanas.methods import tnas  # pylint: disable=unused-import
from tf_metanas.search import configurables  # pylint: disable=unused-import
from tf_metanas.train import from_scratch  # pylint: disable=unused-import
from tf_metanas.train import runner  # pylint: disable=unused-import

EpisodeSpec = gin.external_configurable(episodes.EpisodeSpec, module="tf_metanas.data")


# `include 'gin_configs/...'` resolves against the working directory and the repository.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def with_dataset(gin_files, dataset=None):
  """`gin_files` followed by gin_configs/datasets/<dataset>.gin (when `dataset` is given),
  which binds every dataset-specific setting: the last dataset decides them all."""
  return list(gin_files) + ([str(REPO_ROOT / "gin_configs" / "datasets" / f"{dataset}.gin")]
                            if dataset else [])


def parse(gin_files=(), gin_params=()):
  """Parses gin files then bindings; a bad file or binding raises ValueError naming it."""
  for root in (os.getcwd(), str(REPO_ROOT)):
    if root not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
      gin.add_config_file_search_path(root)
  for path in gin_files:
    try:
      gin.parse_config_file(path)
    except (IOError, OSError) as e:
      raise ValueError(f"cannot read gin file {path}: {e}") from e
    except Exception as e:  # gin raises several types; all mean a bad file.
      raise ValueError(f"bad gin file {path}: {e}") from e
  for binding in gin_params:
    try:
      gin.parse_config(binding)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"bad gin binding {binding!r}: {e}") from e
