"""Bit-identical reruns and resumes on CPU: op determinism on TensorFlow's Eigen kernels.

TensorFlow turns oneDNN's CPU kernels on by itself on recent x86 CPUs (it then logs "oneDNN
custom operations are on"), and oneDNN's convolution gradients differ in the last float32
bits from call to call. `enable()` turns on `tf.config.experimental.enable_op_determinism()`
(deterministic kernels, tf.data in order) and makes sure oneDNN is off. TensorFlow reads
TF_ENABLE_ONEDNN_OPTS once, when it loads, so a process that loaded TensorFlow with oneDNN
on cannot turn it off: `enable(reexec=True)` (the binaries' --deterministic) then replaces
the process with a fresh run of its own command line with TF_ENABLE_ONEDNN_OPTS=0
(os.execv: same pid, same arguments and interpreter options); from Python, set the variable
before importing TensorFlow.
"""

import os
import sys

from absl import logging

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# Set in the environment of the re-executed process, so that it never re-executes again.
_REEXEC_MARK = "TF_METANAS_DETERMINISTIC_REEXEC"


def onednn_enabled():
  """Whether this process's TensorFlow runs oneDNN's CPU kernels (as it decided on load)."""
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):  # TensorFlow moved it: trust the variable
    return os.environ.get(ONEDNN_VARIABLE) != "0"


def _op_determinism_enabled():
  """Whether tf.config.experimental.enable_op_determinism() is in effect."""
  try:
    from tensorflow.python.framework import config  # pylint: disable=g-import-not-at-top
    return bool(config.is_op_determinism_enabled())
  except (ImportError, AttributeError):
    return os.environ.get("TF_DETERMINISTIC_OPS", "0").lower() in ("1", "true")


def enabled():
  """Whether reruns are bit-identical: op determinism on and oneDNN off."""
  return _op_determinism_enabled() and not onednn_enabled()


def _reexec_without_onednn():
  """Replaces this process with its own command line run with TF_ENABLE_ONEDNN_OPTS=0."""
  if os.environ.get(_REEXEC_MARK):
    raise RuntimeError(f"--deterministic: oneDNN is still on after restarting with "
                       f"{ONEDNN_VARIABLE}=0; this TensorFlow ignores the variable")
  logging.info("--deterministic: TensorFlow loaded with oneDNN on; restarting the process "
               "with %s=0", ONEDNN_VARIABLE)
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os.environ[ONEDNN_VARIABLE] = "0"
  os.environ[_REEXEC_MARK] = "1"
  os.execv(sys.executable, sys.orig_argv)


def enable(reexec=False):
  """Makes this process's TensorFlow computations bit-identical from run to run.

  Call before any other TensorFlow work. Turns on op determinism and checks that oneDNN is
  off; TF_ENABLE_ONEDNN_OPTS=0 is also set for child processes.

  Args:
    reexec: if oneDNN is on, restart the process (os.execv of its own command line) with
      TF_ENABLE_ONEDNN_OPTS=0 instead of failing: for binaries, whose state is their
      command line.

  Raises:
    RuntimeError: oneDNN is on and `reexec` is False.
  """
  if onednn_enabled():
    if not reexec:
      raise RuntimeError(f"determinism needs oneDNN off, and TensorFlow loaded with it on: "
                         f"set {ONEDNN_VARIABLE}=0 before importing TensorFlow (the "
                         "binaries' --deterministic restarts themselves with it)")
    _reexec_without_onednn()
  os.environ[ONEDNN_VARIABLE] = "0"
  # Imported here: `tf_metanas.jobs` reads this module's constants without TensorFlow.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.experimental.enable_op_determinism()
  logging.info("deterministic: op determinism on, oneDNN off (%s=0)", ONEDNN_VARIABLE)
