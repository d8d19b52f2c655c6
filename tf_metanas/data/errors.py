"""Errors raised by the data layer; each message says what was expected and what to do."""


class DataError(Exception):
  """Base class of every data-layer error."""


class DatasetNotFoundError(DataError, FileNotFoundError):
  """A dataset's files are missing: the message names them and where to put them."""


class CorruptFileError(DataError, ValueError):
  """A file exists but cannot be read as what it claims to be; the message names its path.

  Attributes:
    path: the file at fault, when the raiser knows it (else None).
  """

  def __init__(self, message, path=None):
    super().__init__(message)
    self.path = path


class EpisodeSpecError(DataError, ValueError):
  """An episode specification that the data cannot satisfy, with the numbers involved."""


class SplitOverlapError(DataError, ValueError):
  """Two class splits of a dataset share a class."""
