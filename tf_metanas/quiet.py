"""A quieter console for the binaries.

- absl's log drops the "Sharding callback duration" line TensorFlow's checkpointing logs at
  every save (on import).
- `tensorflow_startup()`: while TensorFlow loads and looks for devices, the lines its C++
  side prints before its logging is initialized (so TF_CPP_MIN_LOG_LEVEL cannot quiet them)
  and that ask nothing of the user are dropped from the process's stderr: the "before
  absl::InitializeLog()" notice and the banner that TensorFlow's two libraries each print,
  "Could not find cuda drivers" and the error-level "failed call to cuInit" of a CPU-only
  machine, the note on CPU instructions TensorFlow was not built with. The first "oneDNN
  custom operations are on" stays (it says why results differ in the last digits and how to
  turn it off); its repeat goes. Everything else passes, in order, and outside that window
  stderr is untouched.
"""

import contextlib
import logging
import os
import re
import sys
import threading

from absl import logging as absl_logging

_NOISE = ("Sharding callback duration",)

# Native startup lines dropped by tensorflow_startup (matched anywhere in the line).
_STARTUP_NOISE = re.compile(
    rb"All log messages before absl::InitializeLog\(\) is called|"
    rb"Could not find cuda drivers on your machine|failed call to cuInit|"
    rb"cpu_feature_guard\.cc.*This TensorFlow binary is optimized|"
    rb"^To enable the following instructions: .*rebuild TensorFlow")
_ONCE = re.compile(rb"oneDNN custom operations are on")


class _DropNoise(logging.Filter):

  def filter(self, record):
    return not str(record.msg).startswith(_NOISE)


absl_logging.get_absl_logger().addFilter(_DropNoise())


def _copy_lines(source, target):
  """Copies the lines read from fd `source` to fd `target`, without the startup noise and
  with the oneDNN notice once, until `source` ends."""
  seen_once, pending = False, b""
  with os.fdopen(source, "rb", buffering=0) as reader:
    while chunk := reader.read(65536):
      *lines, pending = (pending + chunk).split(b"\n")
      for line in lines:
        once = bool(_ONCE.search(line))
        if not _STARTUP_NOISE.search(line) and not (once and seen_once):
          os.write(target, line + b"\n")
        seen_once |= once
  if pending:
    os.write(target, pending)


@contextlib.contextmanager
def tensorflow_startup():
  """Drops TensorFlow's native startup noise (see the module docstring) from stderr while
  the block runs: import TensorFlow and touch its devices inside it. The filtered stream is
  restored and drained when the block ends, however it ends."""
  sys.stderr.flush()
  original = os.dup(2)
  reader, writer = os.pipe()
  os.dup2(writer, 2)
  os.close(writer)
  copier = threading.Thread(target=_copy_lines, args=(reader, original), daemon=True)
  copier.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(original, 2)  # closes the pipe's last writer: the copier reads its end
    copier.join()
    os.close(original)


def load_tensorflow():
  """Imports TensorFlow and finds its devices inside `tensorflow_startup()` (the binaries
  call it first in main(), after flag parsing); returns the module."""
  with tensorflow_startup():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()
  return tf
