"""--deterministic: tools/train.py reruns and resumes to bit-identical checkpoints with oneDNN
off, restarting itself when TensorFlow loaded with oneDNN on; determinism.enable's refusals."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_metanas import determinism

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The quickstart's supernet shrunk to seconds, with ops whose gradients oneDNN computes
# differently from run to run on this machine's CPU (pools, 1x5 + 5x1 convolutions: two
# runs without --deterministic differ in 86 of 111 variables by up to 7e-7).
_PARAMS = ("load_splits.synthetic_image_shape = (8, 8, 1)", "Runner.num_iterations = 3",
           "Runner.eval_every = 0", "Runner.test_tasks = 2",
           "SearchNetwork.op_set = ('max_pool_3x3', 'avg_pool_3x3', 'conv_1x5_5x1')")


def _train(model_dir):
  command = [sys.executable, str(ROOT / "tools" / "train.py"), f"--model_dir={model_dir}",
             f"--gin_file={ROOT / 'gin_configs/experiments/metanas/quickstart.gin'}",
             f"--gin_file={ROOT / 'gin_configs/debug/tiny.gin'}", "--deterministic"]
  env = {k: v for k, v in os.environ.items() if k != "TF_DETERMINISTIC_OPS"}
  env.update(TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="1")  # oneDNN on: must restart
  run = subprocess.run(command + [f"--gin_param={p}" for p in _PARAMS], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  return run.stderr


def _variables(model_dir):
  """Every checkpointed variable but the wall-clock training time."""
  reader = tf.train.load_checkpoint(str(model_dir))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if "train_seconds" not in name}


def _rewind_to_first_checkpoint(source, target):
  """A copy of a finished run as if killed after its first checkpoint."""
  shutil.copytree(source, target)
  for path in target.glob("ckpt-[23].*"):
    path.unlink()
  (target / "results.json").unlink()
  (target / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n'
                                     'all_model_checkpoint_paths: "ckpt-1"\n')


@pytest.mark.slow
def test_deterministic_reruns_and_resumes_are_bit_identical(tmp_path):
  first, second, resumed = tmp_path / "first", tmp_path / "second", tmp_path / "resumed"
  log = _train(first)
  assert "restarting the process with TF_ENABLE_ONEDNN_OPTS=0" in log
  assert "deterministic: op determinism on, oneDNN off" in log
  _train(second)
  _rewind_to_first_checkpoint(first, resumed)
  assert "Restored" in _train(resumed)
  want = _variables(first)
  assert len(want) > 100
  for run in (second, resumed):
    got = _variables(run)
    assert got.keys() == want.keys()
    for name, value in want.items():
      np.testing.assert_array_equal(got[name], value, err_msg=f"{run.name}: {name}")
  accuracies = [json.loads((d / "results.json").read_text())["accuracy"]
                for d in (first, second, resumed)]
  assert accuracies[0] == accuracies[1] == accuracies[2]


def test_enable_without_reexec_refuses_onednn(monkeypatch):
  monkeypatch.setattr(determinism, "onednn_enabled", lambda: True)
  with pytest.raises(RuntimeError, match="set TF_ENABLE_ONEDNN_OPTS=0 before importing"):
    determinism.enable()


def test_enable_restarts_at_most_once(monkeypatch):
  monkeypatch.setattr(determinism, "onednn_enabled", lambda: True)
  monkeypatch.setenv("TF_METANAS_DETERMINISTIC_REEXEC", "1")
  monkeypatch.setattr(os, "execv", lambda *args: pytest.fail("re-executed twice"))
  with pytest.raises(RuntimeError, match="oneDNN is still on after restarting"):
    determinism.enable(reexec=True)


def test_enabled_needs_op_determinism_and_onednn_off(monkeypatch):
  monkeypatch.setattr(determinism, "_op_determinism_enabled", lambda: True)
  monkeypatch.setattr(determinism, "onednn_enabled", lambda: False)
  assert determinism.enabled()
  monkeypatch.setattr(determinism, "onednn_enabled", lambda: True)
  assert not determinism.enabled()
