"""TensorFlow runtime defaults of the binaries, set before TensorFlow loads.

oneDNN CPU kernels (`TF_ENABLE_ONEDNN_OPTS=1`): TensorFlow turns them on by default only on
some x86 CPUs (recent Intel ones); elsewhere (e.g. the AMD EPYC machines of BENCHMARKS.md)
it uses its Eigen kernels, which run the METANAS supernet 1.4-1.6x slower. The binaries
(`tools/train.py`, `tools/evaluate.py`, `tools/benchmark.py`) therefore default to oneDNN on
every CPU. Set `TF_ENABLE_ONEDNN_OPTS=0` to keep TensorFlow's Eigen kernels: results then
repeat bit for bit between runs, while oneDNN's convolution gradients differ in the last
float32 bits from run to run (about 1e-6 relative). Library users importing `tf_metanas`
from Python keep whatever their environment says: a library does not flip a process-wide
setting behind their back.
"""

import os
import sys

from absl import logging


def use_onednn_by_default():
  """Sets TF_ENABLE_ONEDNN_OPTS=1 unless the environment already sets it.

  Must run before TensorFlow is imported (TensorFlow reads the variable once, at load);
  later it only logs a warning.
  """
  if "tensorflow" in sys.modules:
    logging.warning("TensorFlow is already loaded: TF_ENABLE_ONEDNN_OPTS left as it is")
    return
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
