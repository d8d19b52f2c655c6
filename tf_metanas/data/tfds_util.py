"""Opening TFDS datasets without surprise downloads."""

import tensorflow_datasets as tfds

from tf_metanas.data import errors
from tf_metanas.data import hints


def builder(name, data_dir=None, download=False, manual_dir=None):
  """A TFDS builder for `name`, prepared only if `download` is True.

  Args:
    name: registered TFDS name, e.g. "omniglot", "cifar100".
    data_dir: TFDS data directory (default: TFDS's own, usually ~/tensorflow_datasets).
    download: let TFDS download and prepare the dataset if it is not there yet.
    manual_dir: the folder with manually downloaded files, for builders that need one.
  """
  result = tfds.builder(name, data_dir=data_dir)
  if download or manual_dir:
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    result.download_and_prepare(download_config=config)
  return result


def examples(dataset_builder, split):
  """Iterates the numpy examples of one split; an unprepared dataset is a clear error."""
  try:
    dataset = dataset_builder.as_dataset(split=split)
  except AssertionError as e:
    raise errors.DatasetNotFoundError(
        f"TFDS dataset {dataset_builder.name!r} is not prepared in "
        f"{dataset_builder.data_dir}. " + hints.how_to_prepare_tfds(dataset_builder.name)
    ) from e
  return tfds.as_numpy(dataset)
