"""A quieter log for the binaries: the "Sharding callback duration" line TensorFlow's
checkpointing logs at every save is dropped from absl's log.

What stays, and why: TensorFlow 2.21 prints its banner (twice), "Could not find cuda
drivers" and the error-level "failed call to cuInit" of a CPU-only machine before its C++
logging is initialized, when TF_CPP_MIN_LOG_LEVEL is not consulted yet; hiding them would
mean filtering the process's stderr, which would hide real errors too.
"""

import logging

from absl import logging as absl_logging

_NOISE = ("Sharding callback duration",)


class _DropNoise(logging.Filter):

  def filter(self, record):
    return not str(record.msg).startswith(_NOISE)


absl_logging.get_absl_logger().addFilter(_DropNoise())
