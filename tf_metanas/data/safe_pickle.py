"""A restricted unpickler for dataset pickles of unknown origin.

Only numpy arrays, dtypes and plain Python containers can be rebuilt; any other global
(which is how a malicious pickle runs code) is refused with the file's path.
"""

import pickle

from tf_metanas.data import errors

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "bytes"), ("builtins", "bytearray"), ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class _RestrictedUnpickler(pickle.Unpickler):

  def __init__(self, file, path, **kwargs):
    super().__init__(file, **kwargs)
    self._path = path

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return super().find_class(module, name)
    raise errors.CorruptFileError(
        f"{self._path}: refusing to unpickle {module}.{name}; dataset pickles may only "
        "contain numpy arrays and plain containers")


def load(path, encoding="ASCII"):
  """Unpickles `path` allowing only numpy arrays and builtin containers.

  Args:
    path: the pickle file.
    encoding: passed to pickle for Python 2 pickles ("latin1" for CIFAR / FC100).

  Raises:
    CorruptFileError: the file is truncated, not a pickle, or holds other objects.
  """
  try:
    with open(path, "rb") as f:
      return _RestrictedUnpickler(f, path, encoding=encoding).load()
  except errors.CorruptFileError:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
          ImportError, IndexError, KeyError) as e:
    raise errors.CorruptFileError(f"{path} is not a readable pickle: {e}") from e
