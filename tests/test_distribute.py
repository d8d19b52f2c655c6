"""tf.distribute: MirroredStrategy over 2 logical CPU devices gives the single-device meta-
iterations and evaluations (MAML, Reptile, METANAS); uneven splits fail clearly; checkpoints
cross strategies; 2 local MultiWorkerMirroredStrategy workers agree with one process."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metanas import configurables
from tf_metanas import distribute
from tf_metanas.data import episodes
from tf_metanas.data import synthetic
from tf_metanas.meta import inner_loop
from tf_metanas.meta import learner as learner_lib
from tf_metanas.meta import optimizers
from tf_metanas.methods import metanas
from tf_metanas.search import Conv4
from tf_metanas.search import SearchNetwork
from tf_metanas.train import cli
from tf_metanas.train import runner as runner_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOTH = ("weights", "arch")


# SGD everywhere but on the architecture: Adam normalizes the float-noise gradients of conv
# biases followed by BatchNorm (mathematically 0) to +-lr, so rounding would show.


def _conv4_learner(algorithm, **kwargs):
  keras.utils.set_random_seed(0)
  net = Conv4(3, filters=4)
  net.build((None, 8, 8, 1))
  return learner_lib.MetaLearner(
      net, algorithm, inner_groups=(inner_loop.ParamGroup("weights", optimizers.SGD(), 0.1),),
      train_phases=(inner_loop.Phase(2),), test_phases=(inner_loop.Phase(3),),
      meta_learning_rates={"weights": 0.5 if algorithm == "reptile" else 0.1},
      meta_optimizer="sgd", **kwargs)


def _metanas_learner(algorithm="reptile"):
  keras.utils.set_random_seed(0)
  net = SearchNetwork(3, channels=4, num_cells=2, reduction_cells=(1,), num_nodes=2,
                      op_set=("conv_3x3", "max_pool_3x3", "skip_connect"))
  net.build((None, 8, 8, 1))
  groups = (inner_loop.ParamGroup("weights", optimizers.SGD(), 0.05),
            inner_loop.ParamGroup("arch", optimizers.Adam(beta1=0.0), 0.05, 1e-3))
  return metanas.Metanas(
      net, tau_alpha=metanas.Temperature(1.0, 0.1, "exponential"),
      tau_beta=metanas.Temperature(1.0, 0.1, "linear"), algorithm=algorithm,
      inner_groups=groups, train_phases=(inner_loop.Phase(2, BOTH),),
      test_phases=(inner_loop.Phase(2, BOTH), inner_loop.Phase(1, ("weights",))),
      meta_learning_rates={"weights": 1.0, "arch": 0.6} if algorithm == "reptile"
      else {"weights": 0.1, "arch": 0.1}, meta_optimizer="sgd")


BUILDERS = {
    "maml": lambda: _conv4_learner("maml"),
    "maml_xla": lambda: _conv4_learner("maml", jit_compile=True),
    "maml_clipped": lambda: _conv4_learner("maml", meta_gradient_clip=0.01),
    "reptile": lambda: _conv4_learner("reptile"),
    "metanas_reptile": lambda: _metanas_learner("reptile"),
    # Two groups through first-order MAML (second order over replicas: "maml", on Conv4).
    "metanas_fomaml": lambda: _metanas_learner("fomaml"),
}


def _batches(learner, num_tasks=4, count=2, training=True):
  store = synthetic.prototype_store(num_classes=8, per_class=10, size=8)
  spec = learner.episode_spec(episodes.EpisodeSpec(3, 2, 2, 4 if training else None, 1),
                              training)
  return list(episodes.EpisodeSampler(store, spec, 0).dataset(num_tasks, num_batches=count))


def _values(learner):
  variables = learner.model.weights + [v for o in learner.meta_optimizers.values()
                                       for v in o.variables]
  return [np.array(v.numpy()) for v in variables]


def _train(builder, strategy):
  with strategy.scope():
    learner = builder()
  metrics = [learner.train_step(batch) for batch in _batches(learner)]
  return learner, _values(learner), [{k: float(v) for k, v in m.items()} for m in metrics]


@pytest.mark.parametrize("method", sorted(BUILDERS))
def test_mirrored_over_two_devices_equals_one_device(method, mirrored):
  initial = _values(BUILDERS[method]())
  single, single_values, single_metrics = _train(BUILDERS[method], tf.distribute.get_strategy())
  learner, values, metrics = _train(BUILDERS[method], mirrored)
  assert learner.strategy.num_replicas_in_sync == 2
  assert int(learner.step.numpy()) == int(single.step.numpy()) == 2
  assert any(not np.allclose(a, b) for a, b in zip(single_values, initial))
  for got, want, start in zip(values, single_values, initial):
    # The updates agree to float32 rounding (second order: ~2e-5 of their size, 2.4e-4 with
    # XLA on an AVX-512 Xeon's kernels; biases before BatchNorm get ~1e-7 rounding noise
    # where the exact gradient is 0). Another split of the tasks is off by O(1).
    update = np.linalg.norm(want - start)
    assert np.linalg.norm(got - want) <= 1e-3 * update + 1e-6
  for m, s in zip(metrics, single_metrics):
    assert m == pytest.approx(s, rel=1e-5, abs=1e-6)


def test_one_device_strategy_on_the_second_device_equals_the_default():
  _, want, _ = _train(BUILDERS["reptile"], tf.distribute.get_strategy())
  learner, got, _ = _train(BUILDERS["reptile"],
                           distribute.make_strategy("one_device", devices=["/cpu:1"]))
  assert learner.model.weights[0].value.device.endswith("CPU:1")
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mirrored_evaluation_keeps_the_task_order(mirrored):
  single = _metanas_learner()
  with mirrored.scope():
    learner = _metanas_learner()
  batch = _batches(single, num_tasks=4, count=1, training=False)[0]
  expected, got = single.evaluate_batch(batch), learner.evaluate_batch(batch)
  tf.nest.assert_same_structure(got, expected)
  for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(expected)):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
  assert len(set(np.round(expected["loss"].numpy(), 5))) == 4  # distinct tasks, in order


def test_a_meta_batch_that_does_not_split_over_the_replicas_fails_clearly(mirrored):
  with mirrored.scope():
    learner = _conv4_learner("reptile")
  batch = _batches(learner, num_tasks=3, count=1)[0]
  with pytest.raises(distribute.ReplicaError, match="3 tasks cannot be split evenly over 2"):
    learner.train_step(batch)


def test_a_runner_refuses_batches_it_cannot_split_before_training(tmp_path, mirrored):
  gin.clear_config()
  configurables.parse([str(ROOT / "gin_configs/experiments/baselines/reptile_glyphs_5w1s.gin"),
                       str(ROOT / "gin_configs/debug/tiny.gin")],
                      ["META_BATCH = 3", "Runner.network = @Conv4"])
  try:
    with mirrored.scope(), pytest.raises(distribute.ReplicaError,
                                         match="Runner.meta_batch_size = 3 tasks"):
      runner_lib.Runner(model_dir=tmp_path, splits=synthetic.prototype_splits())
  finally:
    gin.clear_config()
  assert not list(tmp_path.iterdir())


def test_a_mirrored_checkpoint_restores_under_the_default_strategy(tmp_path, mirrored):
  with mirrored.scope():
    trained = _conv4_learner("maml")
  for batch in _batches(trained):
    trained.train_step(batch)
  path = tf.train.Checkpoint(**trained.checkpoint_items()).save(str(tmp_path / "ckpt"))
  fresh = _conv4_learner("maml")
  tf.train.Checkpoint(**fresh.checkpoint_items()).restore(path).assert_consumed()
  for a, b in zip(_values(fresh), _values(trained)):
    np.testing.assert_array_equal(a, b)
  assert int(fresh.step.numpy()) == 2


def test_make_strategy_names_and_errors(monkeypatch, mirrored):
  assert distribute.make_strategy("default") is tf.distribute.get_strategy()
  one = distribute.make_strategy("one_device", devices=["/cpu:1"])
  assert isinstance(one, tf.distribute.OneDeviceStrategy)
  assert mirrored.num_replicas_in_sync == 2
  with pytest.raises(ValueError, match="unknown strategy 'tpu'"):
    distribute.make_strategy("tpu")
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="set TF_CONFIG or pass worker_hosts"):
    distribute.make_strategy("multi_worker")
  assert distribute.is_chief(tf.distribute.get_strategy())


# ---- device and flag checks ----------------------------------------------------------------


@pytest.mark.parametrize("devices", [["/cpu:1"], ["cpu:0", "/cpu"], ["/device:CPU:1"],
                                     ["/job:localhost/replica:0/task:0/device:CPU:0"]])
def test_devices_the_process_has_are_accepted(devices):
  distribute.check_devices(devices)  # conftest: /cpu:0 and /cpu:1


@pytest.mark.parametrize("name, devices, message", [
    ("one_device", ["/cpu:5"], r"--devices=/cpu:5: this process has no device '/cpu:5'; its "
     r"logical devices are /cpu:0, /cpu:1; --cpu_devices=N splits"),
    ("mirrored", ["/cpu:0", "/cpu:2"], r"--devices=/cpu:0,/cpu:2: .* no device '/cpu:2'"),
    ("mirrored", ["bogus"], r"--devices=bogus: not a device name"),
])
def test_make_strategy_refuses_devices_the_process_does_not_have(name, devices, message):
  with pytest.raises(distribute.DeviceError, match=message):
    distribute.make_strategy(name, devices=devices)


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="has a GPU")
def test_make_strategy_names_the_missing_gpu():
  with pytest.raises(distribute.DeviceError, match=r"no device '/gpu:0'; its logical devices "
                     r"are /cpu:0, /cpu:1; TensorFlow sees no GPU .* --cpu_devices=N"):
    distribute.make_strategy("mirrored", devices=["/gpu:0"])


@pytest.mark.parametrize("flag_values, message", [
    (("default", None, ["a:1", "b:2"], None), r"--worker_hosts only applies to "
     r"--strategy=multi_worker, not --strategy=default"),
    (("one_device", None, None, 0), r"--task_index only applies to --strategy=multi_worker, "
     r"not --strategy=one_device"),
    (("mirrored", None, ["a:1"], 1), r"--worker_hosts and --task_index only apply to "
     r"--strategy=multi_worker"),
    (("default", ["/cpu:0"], None, None), r"--devices only applies to "
     r"--strategy=one_device or mirrored, not --strategy=default"),
    (("multi_worker", ["/cpu:0"], ["a:1"], None), r"--devices only applies"),
    (("one_device", ["/cpu:0", "/cpu:1"], None, None), r"--strategy=one_device runs on one "
     r"device, --devices names 2: .* --strategy=mirrored"),
    (("multi_worker", None, None, 1), r"--task_index needs --worker_hosts"),
    (("multi_worker", None, ["a:1", "b:2"], 2), r"--task_index=2 is not an index of the 2 "
     r"--worker_hosts: pass 0 .. 1"),
])
def test_flags_that_do_not_go_together_are_named(flag_values, message):
  with pytest.raises(ValueError, match=message):
    cli.check_flags(*flag_values)


@pytest.mark.parametrize("flag_values", [
    ("default", None, None, None), ("one_device", ["/gpu:3"], None, None),
    ("mirrored", ["/cpu:0", "/cpu:1"], None, None), ("multi_worker", None, None, None),
    ("multi_worker", None, ["a:1", "b:2"], 1)])
def test_flags_that_go_together_pass(flag_values):
  cli.check_flags(*flag_values)


def test_train_binary_names_a_missing_device_cleanly(tmp_path):
  run = subprocess.run(_train_command(tmp_path, "--strategy=one_device", "--devices=/cpu:5"),
                       env=_env(), capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 1
  assert "--devices=/cpu:5: this process has no device '/cpu:5'" in run.stderr
  assert "its logical devices are /cpu:0;" in run.stderr and "Traceback" not in run.stderr
  assert not (tmp_path / "operative_config.gin").exists()


# ---- the binaries under strategies --------------------------------------------------------


def _train_command(model_dir, *flags):
  params = ("Runner.network = @Conv4", "Conv4.filters = 4", "Runner.num_iterations = 3",
            "Runner.test_tasks = 4", "MetaLearner.meta_optimizer = 'sgd'",
            "load_splits.synthetic_image_shape = (8, 8, 1)")
  return ([sys.executable, str(ROOT / "tools" / "train.py"), f"--model_dir={model_dir}",
           f"--gin_file={ROOT / 'gin_configs/experiments/baselines/maml_glyphs_5w1s.gin'}",
           f"--gin_file={ROOT / 'gin_configs/debug/tiny.gin'}"] +
          [f"--gin_param={p}" for p in params] + list(flags))


def _env():
  return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _checkpoint(model_dir):
  reader = tf.train.load_checkpoint(str(model_dir))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.startswith(("meta_optimizer", "meta_step"))}


def _assert_same_run(model_dir, reference, iterations=3):
  got, want = _checkpoint(model_dir), _checkpoint(reference)
  assert got.keys() == want.keys() and len(want) > 10
  for name, value in want.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
  results = [json.loads((d / "results.json").read_text()) for d in (model_dir, reference)]
  assert results[0]["meta_iterations"] == results[1]["meta_iterations"] == iterations
  assert results[0]["accuracy"] == pytest.approx(results[1]["accuracy"], abs=1e-6)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("single")
  subprocess.run(_train_command(model_dir), env=_env(), check=True, timeout=300,
                 capture_output=True)
  return model_dir


@pytest.mark.slow
def test_train_binary_mirrored_over_two_cpu_devices_matches_one_device(tmp_path, reference_run):
  run = subprocess.run(_train_command(tmp_path, "--strategy=mirrored", "--cpu_devices=2"),
                       env=_env(), capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "device:CPU:1" in run.stderr  # the strategy's replicas, as TensorFlow logs them
  _assert_same_run(tmp_path, reference_run)


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _run_workers(model_dir, logs, *flags):
  """Runs tools/train.py as 2 MultiWorkerMirroredStrategy workers on 127.0.0.1 (free ports,
  bounded time, killed if still running); returns their outputs."""
  hosts = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
  env = {k: v for k, v in _env().items() if k != "TF_CONFIG"}
  paths = [logs / f"worker_{i}.log" for i in range(2)]
  files = [open(path, "w") for path in paths]  # pylint: disable=consider-using-with
  workers = [subprocess.Popen(
      _train_command(model_dir, "--strategy=multi_worker", f"--worker_hosts={hosts}",
                     f"--task_index={i}", *flags), env=env, stdout=files[i],
      stderr=subprocess.STDOUT) for i in range(2)]
  try:
    codes = [w.wait(timeout=300) for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
        w.wait()
    for f in files:
      f.close()
  output = [path.read_text() for path in paths]
  assert codes == [0, 0], output[0][-3000:] + output[1][-3000:]
  return output


@pytest.mark.slow
def test_two_local_workers_agree_with_one_process_and_resume(tmp_path, reference_run):
  output = _run_workers(tmp_path / "run", tmp_path)
  assert "multi-worker: worker 1 of 2 replicas" in output[1]
  _assert_same_run(tmp_path / "run", reference_run)
  assert not list((tmp_path / "run").glob("worker_*"))  # worker 1's scratch is gone

  # Both workers restore the chief's checkpoint and go on, as one process does.
  more = "--gin_param=Runner.num_iterations = 4"
  output = _run_workers(tmp_path / "run", tmp_path, more)
  assert all("Restored" in o and "ckpt-3" in o for o in output)
  single = tmp_path / "single"
  shutil.copytree(reference_run, single)
  subprocess.run(_train_command(single, more), env=_env(), check=True, timeout=300,
                 capture_output=True)
  _assert_same_run(tmp_path / "run", single, iterations=4)


def test_each_replica_carries_the_inner_adam_state_over_its_tasks(mirrored):
  """With the inner state carried, replica r adapts its slice of the meta-batch in order,
  starting from the shared state: what one device carries over that slice alone; then every
  replica goes on from the mean of the replicas' states."""
  def build():
    keras.utils.set_random_seed(0)
    net = Conv4(3, filters=4)
    net.build((None, 8, 8, 1))
    return learner_lib.MetaLearner(
        net, "reptile", inner_groups=(inner_loop.ParamGroup("weights", optimizers.Adam(), 0.01),),
        train_phases=(inner_loop.Phase(2),), test_phases=(inner_loop.Phase(3),),
        meta_learning_rates={"weights": 1.0}, carry_inner_state=True)

  batch = _batches(build(), num_tasks=4, count=1)[0]
  with mirrored.scope():
    learner = build()
  learner.train_step(batch)
  alone = []
  for tasks in (slice(0, 2), slice(2, 4)):
    single = build()
    single.train_step({k: v[tasks] for k, v in batch.items()})
    alone.append([v.numpy() for v in tf.nest.flatten(single.inner_state)])
  assert not np.allclose(alone[0][1], alone[1][1])  # the replicas' states differed
  for k, variable in enumerate(tf.nest.flatten(learner.inner_state)):
    want = (alone[0][k] + alone[1][k]) / 2
    for got in mirrored.experimental_local_results(variable):
      np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  t = mirrored.experimental_local_results(learner.inner_state["weights"][0])
  assert [float(v) for v in t] == [4.0, 4.0]  # 2 tasks x 2 steps on each replica
