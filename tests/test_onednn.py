"""The search networks under oneDNN's CPU kernels (TF_ENABLE_ONEDNN_OPTS=1, TensorFlow's
default on recent Intel CPUs and the README's METANAS recipe): they run, and compute what
TensorFlow's Eigen kernels compute. Each setting needs its own process (TensorFlow reads the
variable once, when it loads)."""

import os
import subprocess
import sys

import numpy as np
import pytest

# Forward + backward of a search network whose reduction cell holds FactorizedReduce (its
# 1x1 stride-2 filter gradient corrupted the heap under oneDNN in TF 2.21, 8x8 inputs, one
# thread per op), five times (the corruption surfaced on a later call), then the gradients
# of the last call, with fixed weights and inputs.
_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
from tf_metanas.search import SearchNetwork
net = SearchNetwork(5, channels=4, num_cells=2, reduction_cells=(1,), num_nodes=2, seed=0)
net.build((None, 8, 8, 3))
rng = np.random.default_rng(0)
for v in net.trainable_variables:
  v.assign(rng.normal(scale=0.3, size=v.shape).astype("float32"))
x = tf.constant(rng.normal(size=(10, 8, 8, 3)).astype("float32"))
for _ in range(5):
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(net(x, training=True) ** 2)
  grads = tape.gradient(loss, net.trainable_variables)
np.savez(sys.argv[1], *[g.numpy() for g in grads])
"""


def _gradients(tmp_path, onednn):
  env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_NUM_INTRAOP_THREADS": "1"}
  out = tmp_path / f"grads_{onednn}.npz"
  run = subprocess.run([sys.executable, "-c", _SCRIPT, str(out)], env=env, capture_output=True,
                       text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  with np.load(out) as grads:
    return [grads[k] for k in sorted(grads.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.slow
def test_search_network_under_onednn_runs_and_matches_eigen(tmp_path):
  onednn, eigen = _gradients(tmp_path, "1"), _gradients(tmp_path, "0")
  assert len(onednn) == len(eigen) > 10
  for a, b in zip(onednn, eigen):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())
