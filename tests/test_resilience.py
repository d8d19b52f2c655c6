"""Nothing silent, nothing lost: divergence stops a run, one process per model_dir, resumes
compare configurations, unreadable checkpoints fall back, a kill leaves nothing behind that
the resumed run would double or trip over."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas import configurables
from tf_metanas.data import synthetic
from tf_metanas.train import checkpoints
from tf_metanas.train import config_diff
from tf_metanas.train import divergence
from tf_metanas.train import lock
from tf_metanas.train import runner as runner_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = [str(ROOT / "gin_configs/experiments/baselines/maml_glyphs_5w1s.gin"),
          str(ROOT / "gin_configs/debug/tiny.gin")]
TINY = ["Runner.network = @Conv4", "Conv4.filters = 4", "Runner.eval_every = 0",
        "Runner.test_tasks = 2"]


def _runner(model_dir, *params):
  gin.clear_config()
  configurables.parse(CONFIG, TINY + list(params))
  return runner_lib.Runner(model_dir=model_dir,
                           splits=synthetic.prototype_splits(num_classes=(12, 6, 6), size=8))


def _steps(log_dir, tag):
  """The steps of `tag`'s events in log_dir, in file order."""
  steps = []
  for path in sorted(pathlib.Path(log_dir).glob("events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(str(path)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      steps += [event.step for value in event.summary.value if value.tag == tag]
  return steps


# ---- 1. divergence ----------------------------------------------------------------------


def test_a_diverging_run_stops_at_its_first_non_finite_step_and_keeps_its_checkpoint(tmp_path):
  _runner(tmp_path, "Runner.num_iterations = 2").train()
  kept = {p.name: p.read_bytes() for p in tmp_path.glob("ckpt-2.*")}
  runner = _runner(tmp_path, "Runner.num_iterations = 9", "INNER_LR = 1e30")
  with pytest.raises(divergence.DivergedError, match=r"meta-iteration \d+: .* the run diverged. "
                     r"Lower the inner learning rates \(<group>/ParamGroup.learning_rate\)"
                     ) as diverged:
    runner.run(force_resume=True)
  step = int(re.match(r"meta-iteration (\d+)", str(diverged.value)).group(1))
  assert step > 2 and int(runner.learner.step.numpy()) == step
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith(f"ckpt-{step - 1}")  # every step
  assert {p.name: p.read_bytes() for p in tmp_path.glob("ckpt-2.*")} == kept
  assert not (tmp_path / "results.json").exists()


def test_a_non_finite_meta_parameter_is_named(tmp_path):
  runner = _runner(tmp_path)
  variable = runner.learner.meta_groups["weights"][0]
  variable.assign(tf.fill(variable.shape, np.inf))
  with pytest.raises(divergence.DivergedError, match=r"meta-iteration 7: .*'weights'.*"
                     + variable.name):
    divergence.check_parameters(7, runner.learner.meta_groups)


def test_the_binary_exits_non_zero_on_divergence(tmp_path):
  command = [sys.executable, str(ROOT / "tools/train.py"), f"--model_dir={tmp_path}",
             *[f"--gin_file={f}" for f in CONFIG],
             "--gin_param=load_splits.synthetic_image_shape = (8, 8, 1)",
             *[f"--gin_param={p}" for p in TINY + ["INNER_LR = 1e30"]]]
  result = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1
  assert re.search(r"meta-iteration \d+: .* the run diverged", result.stderr)
  assert "Traceback" not in result.stderr and not (tmp_path / "results.json").exists()


# ---- 2. one process per model_dir -------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import sys, time
    from tf_metanas.train import lock
    with lock.ModelDirLock(sys.argv[1]):
      print("holding", flush=True)
      time.sleep(600)
""")


def test_a_second_process_on_a_model_dir_is_refused_until_the_first_dies(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "holding"
    runner = _runner(tmp_path)
    with pytest.raises(lock.ModelDirLockedError,
                       match=rf"in use by process {holder.pid} on host {socket.gethostname()}"):
      runner.run()
    assert not list(tmp_path.glob("ckpt-*")) and not (tmp_path / "results.json").exists()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert runner.run()["num_tasks"] == 2  # the dead holder's lock is taken over
  assert not json.loads((tmp_path / ".lock").read_text() or "{}")  # released


# ---- 3. resuming with another configuration ---------------------------------------------


def test_a_resume_with_another_configuration_is_refused_before_touching_anything(tmp_path):
  _runner(tmp_path).run()
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
  with pytest.raises(runner_lib.ConfigMismatchError,
                     match=r"Changed: .*WAYS: 5 -> 3.*--force_resume"):
    _runner(tmp_path, "WAYS = 3").train()
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_resume_with_safe_changes_says_what_changed_and_keeps_the_old_config(tmp_path, caplog):
  _runner(tmp_path).train()
  stored = (tmp_path / "operative_config.gin").read_text()
  runner = _runner(tmp_path, "Runner.num_iterations = 3", "Runner.test_tasks = 4")
  runner.train()
  assert int(runner.learner.step.numpy()) == 3
  assert "Runner.num_iterations: 2 -> 3" in caplog.text
  assert (tmp_path / "operative_config.2.gin").read_text() == stored
  assert "Runner.num_iterations = 3" in (tmp_path / "operative_config.gin").read_text()


def test_force_resume_resumes_with_unsafe_changes(tmp_path):
  _runner(tmp_path).train()
  runner = _runner(tmp_path, "Runner.num_iterations = 3", "Runner.seed = 1")
  with pytest.raises(runner_lib.ConfigMismatchError, match="Runner.seed: 0 -> 1"):
    runner.train()
  runner.train(force_resume=True)
  assert int(runner.learner.step.numpy()) == 3


# ---- 4. unreadable checkpoints ----------------------------------------------------------


def test_an_unreadable_latest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
  _runner(tmp_path, "Runner.num_iterations = 3").train()
  data = next(tmp_path.glob("ckpt-3.data-*"))
  data.write_bytes(data.read_bytes()[:100])  # truncated
  runner = _runner(tmp_path, "Runner.num_iterations = 3")
  assert runner.restore() == 2
  assert "ckpt-3 cannot be read" in caplog.text
  for path in tmp_path.glob("ckpt-*.index"):
    path.write_bytes(b"")
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=r"no checkpoint in .* can be read: .*ckpt-3: .*ckpt-1"):
    _runner(tmp_path, "Runner.num_iterations = 3").restore()


# ---- 6, 7, 14. a kill during meta-validation --------------------------------------------

_KILLED_IN_VALIDATION = textwrap.dedent("""
    import os, signal, sys
    from tf_metanas import configurables
    from tf_metanas.data import synthetic
    from tf_metanas.train import runner as runner_lib
    configurables.parse(sys.argv[2:-1], sys.argv[-1].split(";"))
    runner = runner_lib.Runner(model_dir=sys.argv[1],
                               splits=synthetic.prototype_splits(num_classes=(12, 6, 6), size=8))
    def killed(split, num_tasks):
      for name in ("train", "eval"):
        runner.writer(name).flush()  # what a long run would have on disk
      os.kill(os.getpid(), signal.SIGKILL)
    runner.evaluate = killed
    runner.run()
""")


def test_a_run_killed_in_meta_validation_validates_again_and_logs_each_step_once(tmp_path):
  params = TINY + ["Runner.num_iterations = 4", "Runner.checkpoint_every = 2",
                   "Runner.eval_every = 3"]
  killed = subprocess.run([sys.executable, "-c", _KILLED_IN_VALIDATION, str(tmp_path), *CONFIG,
                           ";".join(params)], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          capture_output=True, text=True, timeout=300, check=False)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert _steps(tmp_path / "train", "Train/query_loss") == [1, 2, 3]
  (tmp_path / "ckpt-3_temp").mkdir()  # what a kill inside a save leaves
  (tmp_path / "ckpt-3_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
  runner = _runner(tmp_path, "Runner.num_iterations = 4", "Runner.checkpoint_every = 2",
                   "Runner.eval_every = 3")
  runner.run()
  assert _steps(tmp_path / "train", "Train/query_loss") == [1, 2, 3, 4]
  assert _steps(tmp_path / "eval", "Eval/val_accuracy") == [3]
  assert not (tmp_path / "ckpt-3_temp").exists()


def test_a_transient_error_is_not_a_reason_to_fall_back(tmp_path):
  """Falling back past a checkpoint that a worker could not reach for a moment would put
  the workers of one run at different checkpoints: only damaged or missing files count."""
  _runner(tmp_path).train()

  class Unreachable:
    def restore(self, path):
      raise tf.errors.UnavailableError(None, None, f"{path}: the file system is busy")

  with pytest.raises(tf.errors.UnavailableError):
    checkpoints.restore_newest(Unreachable(), tmp_path)


def test_a_resume_whose_newest_checkpoint_lost_its_index_still_compares_configs(tmp_path):
  _runner(tmp_path, "Runner.num_iterations = 3").train()
  (tmp_path / "ckpt-3.index").unlink()
  stored = (tmp_path / "operative_config.gin").read_bytes()
  with pytest.raises(runner_lib.ConfigMismatchError, match="WAYS: 5 -> 3"):
    _runner(tmp_path, "Runner.num_iterations = 3", "WAYS = 3").train()
  assert (tmp_path / "operative_config.gin").read_bytes() == stored
  runner = _runner(tmp_path, "Runner.num_iterations = 3")
  assert runner.restore() == 2  # NotFound: the one before it


def test_a_glyphs_run_stored_before_glyphs_v2_resumes_and_evaluates_as_v1():
  """A stored config without load_splits.glyphs_version predates glyphs v2: its run drew
  glyphs v1, so a resume under today's default (2) is a change (refused), and
  tools/evaluate.py binds version 1 from `predating_bindings`."""
  stored = "load_splits.name = 'glyphs'\nload_splits.seed = 0\n"
  now = stored + "load_splits.glyphs_version = 2\n"
  changes = config_diff.diff(stored, now)
  assert [str(c) for c in changes] == ["load_splits.glyphs_version: 1 -> 2"]
  assert not changes[0].safe
  assert config_diff.predating_bindings(stored) == ["load_splits.glyphs_version = 1"]
  assert config_diff.diff(now, now) == [] and config_diff.predating_bindings(now) == []
  omniglot = "load_splits.name = 'omniglot'\n"  # the setting means nothing there
  assert config_diff.diff(omniglot, omniglot + "load_splits.glyphs_version = 2\n") == []
