"""Runner and binaries: meta-training beats chance, checkpoints resume exactly after SIGKILL,
TensorBoard events hold the expected tags, results and configs land in the model dir, every
shipped gin file parses and runs tiny, bad gin input is named."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import tf_metanas
from tf_metanas import configurables
from tf_metanas import data
from tf_metanas import search
from tf_metanas.data import registry
from tf_metanas.data import synthetic
from tf_metanas.meta import inner_loop
from tf_metanas.train import pace as pace_lib
from tf_metanas.train import runner as runner_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "gin_configs" / "experiments").rglob("*.gin"))
# Every experiment is built tiny (parsed with tiny.gin on synthetic images of its dataset's
# shape, its Runner constructed: network, learner, episode samplers and every value check).
# One experiment per distinct training path also *runs* tiny (meta-trains, meta-validates,
# meta-tests): per method, each set of method options, update rule, op set or network kind;
# the variants of a run experiment in dataset, shape, ways, shots, numbers or criterion
# (checked on hand-made logits in test_caml) are built only. Runs elsewhere: base/glyphs_quick
# (test_base), autometa/glyphs_quick (test_autometa, as real candidate jobs; the other
# Auto-Meta configs differ from it in dataset and numbers).
RUNS = {
    "automaml/fc100_5w1s",
    "base/mini_imagenet_5w5s_gumbel",  # the BASE op set at 84 pixels
    "base/multi_size_quick",  # heads per image shape, two streams
    "baselines/maml_omniglot_5w1s", "baselines/maml_mini_imagenet_5w1s",
    "baselines/mamlpp_mini_imagenet_5w1s", "baselines/reptile_omniglot_5w1s",
    "baselines/reptile_mini_imagenet_5w1s",
    "caml/glyphs_quick", "caml/glyphs_quick_no_pcc", "caml/s1_mini_imagenet_5w1s",
    "ablations/table3_opml_pcc", "ablations/table6_mamlpp_5w1s", "ablations/table6_reptile_5w1s",
    "metanas/quickstart", "metanas/scaleup_omniglot_20w1s",
    "tnas/glyphs_quick", "tnas/tnaspp_glyphs_quick"}


def _experiment_id(path):
  return f"{path.parent.name}/{path.stem}"


RUN_TINY = [p for p in EXPERIMENTS if _experiment_id(p) in RUNS]
TINY = ROOT / "gin_configs" / "debug" / "tiny.gin"


def _parse(*files, params=()):
  configurables.parse([str(f) for f in files], params)


def test_confidence_interval():
  mean, ci = runner_lib.confidence_interval([0.2, 0.4, 0.6, 0.8])
  assert mean == pytest.approx(0.5)
  assert ci == pytest.approx(1.96 * np.std([0.2, 0.4, 0.6, 0.8], ddof=1) / 2)


def test_a_dataset_file_decides_every_dataset_setting_whatever_came_before():
  datasets = sorted((ROOT / "gin_configs" / "datasets").glob("*.gin"))
  bound = [set(re.findall(r"^(load_splits\.\w+) =", p.read_text(), re.M)) for p in datasets]
  assert all(b == bound[0] for b in bound) and len(bound[0]) >= 6
  omniglot = ROOT / "gin_configs/experiments/baselines/reptile_omniglot_5w1s.gin"
  _parse(*configurables.with_dataset([omniglot], "glyphs"))  # --dataset=glyphs
  assert gin.query_parameter("load_splits.name") == "glyphs"
  assert gin.query_parameter("load_splits.rotations") is False
  assert gin.query_parameter("load_splits.omniglot_split") == "vinyals"
  assert gin.query_parameter("load_splits.glyphs_version") == 2
  gin.clear_config()
  _parse(omniglot, ROOT / "gin_configs/datasets/mini_imagenet.gin")  # or the include
  assert gin.query_parameter("reptile_network.dataset") == "mini_imagenet"
  assert gin.query_parameter("load_splits.rotations") is False


def test_meta_test_default_is_600_tasks():
  _parse(ROOT / "gin_configs" / "experiments" / "baselines" / "maml_glyphs_5w1s.gin")
  assert gin.query_parameter("Runner.test_tasks") == 600


def _tiny_runner(model_dir, algorithm_file="maml.gin", params=(), splits=None):
  _parse(ROOT / "gin_configs" / "base" / "runner.gin",
         ROOT / "gin_configs" / "methods" / algorithm_file, TINY, params=params)
  splits = splits or synthetic.prototype_splits(num_classes=(12, 6, 6), size=8)
  return runner_lib.Runner(model_dir=model_dir, splits=splits)


def test_meta_training_on_prototypes_beats_chance_by_far(tmp_path):
  runner = _tiny_runner(tmp_path, params=[
      "Runner.num_iterations = 60", "Runner.test_tasks = 40", "Runner.test_batch_size = 20",
      "Runner.eval_every = 0", "INNER_LR = 0.08", "train/Phase.steps = 2",  # x 5 ways
      "TRAIN_QUERIES = 5", "TEST_QUERIES = 5",
      "test/Phase.steps = 3", "META_BATCH = 4", "Runner.network = @Conv4",
      "Conv4.filters = 16"])
  results = runner.run()
  assert results["accuracy"] > 0.6  # chance is 0.2
  assert results["num_tasks"] == 40 and results["parameters"] == runner.parameter_count
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["accuracy"] == results["accuracy"] and saved["ci95"] > 0
  assert "Runner.num_iterations = 60" in (tmp_path / "operative_config.gin").read_text()


def _tags(directory):
  tags = set()
  for path in pathlib.Path(directory).glob("events.out.tfevents.*"):
    for record in tf.data.TFRecordDataset(str(path)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      tags.update(v.tag for v in event.summary.value)
  return tags


def test_event_files_hold_train_and_eval_scalars_and_the_config(tmp_path):
  _tiny_runner(tmp_path).run()
  train_tags, eval_tags = _tags(tmp_path / "train"), _tags(tmp_path / "eval")
  for key in ("query_loss", "query_accuracy", "support_loss_first", "support_loss_last",
              "iterations_per_second"):
    assert f"Train/{key}" in train_tags
  assert "operative_config" in train_tags
  assert {"Eval/val_accuracy", "Eval/val_accuracy_ci95", "Eval/test_accuracy"} <= eval_tags
  accumulator = event_accumulator.EventAccumulator(str(tmp_path / "train"))
  accumulator.Reload()
  assert [e.step for e in accumulator.Tensors("Train/query_accuracy")] == [1, 2]
  # the meta-test's result, written at one step (a one-point chart shows no line), as text
  evals = event_accumulator.EventAccumulator(str(tmp_path / "eval"))
  evals.Reload()
  text = tf.make_ndarray(evals.Tensors("Eval/test_results")[0].tensor_proto).item().decode()
  results = json.loads((tmp_path / "results.json").read_text())
  assert f"accuracy {100 * results['accuracy']:.2f}% +- {100 * results['ci95']:.2f}%" in text
  assert f"results: `{tmp_path / 'results.json'}`" in text


def test_test_split_val_scores_on_meta_validation_and_never_reads_the_meta_test(
    tmp_path, without_query_labels):
  runner = _tiny_runner(tmp_path, params=['Runner.test_split = "val"', "Runner.eval_every = 0"])
  without_query_labels(runner)  # reading a meta-test query label would fail
  results = runner.run()
  assert results["split"] == "val" and results["protocol"]["split"] == "val"
  assert json.loads((tmp_path / "results.json").read_text())["split"] == "val"
  assert "meta-validation tasks" in runner.summary_lines(results)[0]
  assert "Eval/val_accuracy" in _tags(tmp_path / "eval")
  with pytest.raises(runner_lib.checks.ConfigValueError, match="Runner.test_split = 'train'"):
    _tiny_runner(tmp_path / "bad", params=['Runner.test_split = "train"'])
  no_val = synthetic.prototype_splits(num_classes=(12, 6, 6), size=8)
  no_val["val"] = data.ImageStore.from_classes([], image_shape=(8, 8, 1))
  with pytest.raises(data.EpisodeSpecError, match="test_split = \"val\".*no meta-validation"):
    _tiny_runner(tmp_path / "none", params=['Runner.test_split = "val"',
                                            "Runner.eval_every = 0"], splits=no_val)


def test_a_finished_run_returns_its_stored_results_and_never_overwrites_them(
    tmp_path, without_query_labels):
  first = _tiny_runner(tmp_path).run()
  stored = (tmp_path / "results.json").read_bytes()
  gin.clear_config()
  again = _tiny_runner(tmp_path)
  without_query_labels(again)  # a meta-test would read query labels: none happens
  assert again.run() == first and again.results_path == tmp_path / "results.json"
  gin.clear_config()
  retested = _tiny_runner(tmp_path).run(retest=True)
  assert (tmp_path / "results.json").read_bytes() == stored
  assert json.loads((tmp_path / "results.retest1.json").read_text()) == retested
  gin.clear_config()
  longer = _tiny_runner(tmp_path, params=["Runner.num_iterations = 3"]).run()
  assert longer["meta_iterations"] == 3
  assert (tmp_path / "results.2.json").read_bytes() == stored  # kept, under its step
  assert json.loads((tmp_path / "results.json").read_text())["meta_iterations"] == 3


def test_load_restores_a_run_for_adaptation_without_data_or_writing(tmp_path, monkeypatch):
  runner = _tiny_runner(tmp_path, params=["Runner.num_iterations = 3"])
  runner.run()
  episode = runner.samplers["test"].episode(0)
  want = runner.learner.adapt(episode["support_images"], episode["support_labels"]).predict(
      episode["query_images"])
  before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
  monkeypatch.setattr(registry, "load_dataset", lambda *a, **k: pytest.fail("loaded data"))
  learner = tf_metanas.load(tmp_path)  # its image shape from results.json
  assert int(learner.step.numpy()) == 3
  got = learner.adapt(episode["support_images"], episode["support_labels"]).predict(
      episode["query_images"])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
  with pytest.raises(FileNotFoundError, match="not a tools/train.py run"):
    tf_metanas.load(tmp_path / "nothing")
  (tmp_path / "fresh").mkdir()
  (tmp_path / "fresh" / "operative_config.gin").write_bytes(
      (tmp_path / "operative_config.gin").read_bytes())
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*fresh"):
    tf_metanas.load(tmp_path / "fresh")


def _scalars(directory, tag):
  accumulator = event_accumulator.EventAccumulator(str(directory))
  accumulator.Reload()
  return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)}


def test_training_summaries_are_means_over_every_meta_iteration_since_the_last_log(tmp_path,
                                                                                   caplog):
  caplog.set_level("INFO")
  for log_every in (1, 2):  # second order from meta-iteration 3: a new graph traced there
    gin.clear_config()
    _tiny_runner(tmp_path / str(log_every), params=[
        "Runner.num_iterations = 4", f"Runner.log_every = {log_every}",
        "Runner.eval_every = 0", "MetaLearner.first_order_iterations = 2"]).train()
  for tag in ("Train/query_accuracy", "Train/query_loss"):
    each, means = _scalars(tmp_path / "1" / "train", tag), _scalars(tmp_path / "2" / "train", tag)
    assert sorted(means) == [2, 4]
    for step in (2, 4):
      assert means[step] == pytest.approx((each[step - 1] + each[step]) / 2, rel=1e-5)
  rates = _scalars(tmp_path / "2" / "train", "Train/iterations_per_second")
  assert sorted(rates) == [2, 4]  # compiled steps only: 1 and 3 traced, 2 and 4 counted
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("meta-iter")]
  lines = lines[max(i for i, line in enumerate(lines) if line.startswith("meta-iteration 1 ")):]
  assert lines[0].startswith("meta-iteration 1 compiled and ran in")
  assert "it/s  ETA of meta-training" in lines[1]
  assert lines[2].startswith("meta-iteration 3 compiled a new graph (the warm-up ended, or the "
                             "regime or structure changed) and ran in")
  assert lines[-1].endswith("meta-training done; the meta-test of 4 tasks follows")


def test_the_pace_counts_compiled_meta_iterations_and_adds_the_validations_left():
  pace = pace_lib.Pace()
  assert pace.rate() is None and pace.eta(10, 0) is None
  for seconds, traced in ((25.0, True), (0.5, False), (1.5, False), (20.0, True), (1.0, False)):
    pace.record(seconds, traced)
  assert pace.rate() == pytest.approx(3 / 3.0)  # 3 compiled meta-iterations in 3 s
  pace.validation_seconds = 7.0
  assert pace.eta(10, 2) == pytest.approx(10 / 1.0 + 2 * 7.0)
  pace.reset()
  assert pace.rate() is None


def test_the_meta_test_reports_progress_every_30_seconds_with_accuracy_and_eta(
    tmp_path, monkeypatch, caplog):
  runner = _tiny_runner(tmp_path, params=["Runner.test_tasks = 8", "Runner.test_batch_size = 2"])
  ticks = iter(range(0, 1000, 20))  # a fake clock: 20 s per reading
  monkeypatch.setattr(runner_lib, "clock", lambda: float(next(ticks)))
  caplog.set_level("INFO")
  outputs = runner.evaluate("test", 8)
  lines = [r.getMessage() for r in caplog.records if "tasks adapted" in r.getMessage()]
  # Readings: 0 at the start, then 20, 40, 60, 80 after batches 1-4 (the first traces). A
  # line comes when the next batch, at the compiled batches' pace, would end 30 s or more
  # after the last line (or the start), never after the last batch: after batch 1 no (20 s,
  # no pace yet), after batch 2 (40 s), after batch 3 (20 s + 20 s per batch).
  assert [line.split(",")[0] for line in lines] == ["meta-test: 4 / 8 tasks adapted",
                                                     "meta-test: 6 / 8 tasks adapted"]
  so_far = np.mean(outputs["accuracy"][:4])
  assert f"accuracy so far {so_far:.4f}, ETA 40 s" in lines[0]  # 20 s per batch, 2 to go
  assert lines[1].endswith("ETA 20 s")


def test_the_meta_learning_rates_are_summarized_as_the_schedules_give_them(tmp_path):
  # Reptile's step size anneals linearly from 1 to 0 over ITERATIONS = 4 meta-iterations:
  # after meta-iteration s the next step is 1 - s / 4.
  _tiny_runner(tmp_path, algorithm_file="reptile.gin", params=[
      "ITERATIONS = 4", "Runner.num_iterations = 4", "INNER_BATCH = 5", "Runner.log_every = 1",
      "Runner.eval_every = 0"]).train()
  rates = _scalars(tmp_path / "train", "Train/meta_learning_rate/weights")
  assert rates == pytest.approx({1: 0.75, 2: 0.5, 3: 0.25, 4: 0.0})


def test_impossible_episode_spec_fails_before_training(tmp_path):
  splits = synthetic.prototype_splits(num_classes=(12, 3, 6), size=8)
  with pytest.raises(data.EpisodeSpecError, match="5-way .* meta-val has only 3"):
    _tiny_runner(tmp_path, splits=splits)
  assert not (tmp_path / "train").exists() or not list((tmp_path / "train").iterdir())


def test_meta_test_ways_must_match_meta_training(tmp_path):
  with pytest.raises(data.EpisodeSpecError, match="10-way but the classifier .* 5 ways"):
    _tiny_runner(tmp_path, params=["test/EpisodeSpec.num_ways = 10"])


# ---- binaries ---------------------------------------------------------------------------


def _train_command(model_dir, *params):
  command = [sys.executable, str(ROOT / "tools" / "train.py"), f"--model_dir={model_dir}",
             f"--gin_file={ROOT / 'gin_configs/experiments/baselines/maml_glyphs_5w1s.gin'}",
             f"--gin_file={TINY}", "--gin_param=load_splits.synthetic_image_shape = (8, 8, 1)"]
  return command + [f"--gin_param={p}" for p in params]


def _env():
  return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_DETERMINISTIC_OPS": "1"}


def _final_weights(model_dir):
  reader = tf.train.load_checkpoint(str(model_dir))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if "model" in name or "optimizer" in name or "meta_step" in name}


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights(tmp_path):
  params = ("Runner.num_iterations = 12", "Runner.eval_every = 0", "Runner.test_tasks = 2",
            "META_BATCH = 2", "Runner.network = @Conv4", "Conv4.filters = 4",
            "Runner.log_every = 1")
  reference = subprocess.run(_train_command(tmp_path / "reference", *params), env=_env(),
                             capture_output=True, text=True, timeout=600, check=False)
  assert reference.returncode == 0, reference.stderr[-3000:]

  interrupted = tmp_path / "interrupted"
  process = subprocess.Popen(_train_command(interrupted, *params), env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (interrupted / "ckpt-5.index").exists() and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert (interrupted / "ckpt-5.index").exists()
  assert not (interrupted / "results.json").exists()
  resumed = subprocess.run(_train_command(interrupted, *params), env=_env(),
                           capture_output=True, text=True, timeout=600, check=False)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Restored" in resumed.stderr
  expected, actual = _final_weights(tmp_path / "reference"), _final_weights(interrupted)
  assert expected.keys() == actual.keys() and len(expected) > 10
  for name, value in expected.items():
    np.testing.assert_array_equal(actual[name], value, err_msg=name)


def test_splits_without_meta_validation_need_eval_every_zero(tmp_path):
  splits = synthetic.prototype_splits(num_classes=(12, 6, 6), size=8)
  splits["val"] = data.ImageStore.from_classes([], splits["val"].image_shape)
  with pytest.raises(data.EpisodeSpecError, match="Runner.eval_every = 1.*eval_every = 0"):
    _tiny_runner(tmp_path, splits=splits)
  runner = _tiny_runner(tmp_path, params=["Runner.eval_every = 0"], splits=splits)
  assert runner.run()["num_tasks"] == 4


def test_a_checkpoint_of_another_configuration_is_refused_clearly(tmp_path):
  shots = "TRAIN_SHOTS = 2"
  _tiny_runner(tmp_path, "reptile.gin", [shots, "MetaLearner.carry_inner_state = False"]).train()
  runner = _tiny_runner(tmp_path, "reptile.gin", [shots])  # carries the inner Adam state
  with pytest.raises(ValueError, match="does not fit this configuration.*new --model_dir"):
    runner.restore()


@pytest.mark.slow
def test_evaluate_binary_meta_tests_a_trained_dir_with_other_shots(tmp_path):
  trained = subprocess.run(_train_command(tmp_path, "Runner.network = @Conv4",
                                          "Conv4.filters = 4"),
                           env=_env(), capture_output=True, text=True, timeout=600, check=False)
  assert trained.returncode == 0, trained.stderr[-3000:]
  trained_events = {p: p.read_bytes() for p in (tmp_path / "eval").iterdir()}
  command = [sys.executable, str(ROOT / "tools" / "evaluate.py"), f"--model_dir={tmp_path}",
             "--gin_param=test/EpisodeSpec.num_shots = 3", "--gin_param=Runner.test_tasks = 6"]
  for name in ("eval_5w3s.json", "eval_5w3s.2.json"):  # the protocol names its files
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((tmp_path / name).read_text())
    assert evaluation["num_shots"] == 3 and evaluation["num_tasks"] == 6
    assert f"results: {tmp_path / name}; TensorBoard: {tmp_path / 'eval_5w3s'}" in result.stderr
  assert "Eval/test_accuracy" in _tags(tmp_path / "eval_5w3s")
  # The training run's own Eval/ summaries and results are untouched.
  assert {p: p.read_bytes() for p in (tmp_path / "eval").iterdir()} == trained_events
  assert json.loads((tmp_path / "results.json").read_text())["num_shots"] == 1
  refused = subprocess.run(command + ["--results_name=results.json"], env=_env(),
                           capture_output=True, text=True, timeout=600, check=False)
  assert refused.returncode != 0 and "never overwritten" in refused.stderr


@pytest.mark.parametrize("params, message", [
    (["Runner.num_iterationz = 3"], "Runner.num_iterationz = 3"),
    (["Runner.network = @NoSuchNetwork"], "NoSuchNetwork"),
])
def test_bad_gin_binding_is_named(tmp_path, params, message):
  result = subprocess.run(_train_command(tmp_path, *params), env=_env(), capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode != 0
  assert message in result.stderr


def test_bad_gin_file_is_named(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("Runner.num_iterations = = 3\n")
  with pytest.raises(ValueError, match="bad gin file .*bad.gin"):
    configurables.parse([str(bad)])
  with pytest.raises(ValueError, match="cannot read gin file .*missing.gin"):
    configurables.parse([str(tmp_path / "missing.gin")])


# ---- every shipped config ---------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "gin_configs").rglob("*.gin")),
                         ids=lambda p: str(p.relative_to(ROOT / "gin_configs")))
def test_every_gin_file_parses(path):
  if "debug" in path.parts or path.parent.name in ("datasets", "methods"):
    _parse(ROOT / "gin_configs" / "base" / "runner.gin", path)
  else:
    _parse(path)


RESULT_KEYS = ("method", "dataset", "num_ways", "num_shots", "num_queries", "accuracy", "ci95",
               "num_tasks", "meta_iterations", "tasks_seen", "train_seconds", "test_seconds",
               "parameters", "transductive_batch_norm", "seed", "deterministic", "config_hash",
               "protocol", "method_results", "selection", "train_streams", "split")


def _tiny_experiment(path, model_dir):
  """The Runner of experiment `path` with tiny.gin on synthetic images of its shape."""
  _parse(path)
  shape = registry.IMAGE_SHAPES[gin.query_parameter("load_splits.name")]
  # 50 images per class: Auto-MAML's by-image halves hold 10 shots + 15 queries
  params = [f"load_splits.synthetic_image_shape = {shape}", "load_splits.synthetic_per_class = 50"]
  if "GENOTYPE" in path.read_text():  # METANAS scale-up: the genotype of an earlier run
    genotype = model_dir / "genotype.json"
    genotype.write_text(search.AUTOMETA_GENOTYPE.to_json())
    params.append(f"GENOTYPE = '{genotype}'")
  _parse(TINY, params=params)
  return runner_lib.Runner(model_dir=model_dir)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_experiment_id)
def test_every_experiment_builds_tiny(path, tmp_path):
  runner = _tiny_experiment(path, tmp_path)
  assert runner.parameter_count > 0 and runner.learner.model is runner.model
  # tiny.gin's ITERATIONS = 2 sets the run's length and every schedule follows it (issue 19.8)
  assert runner.num_iterations == 2
  schedules = {n: c for n, c in runner.learner.step_counts().items() if ".steps" in n}
  assert all(count == 2 for count in schedules.values()), schedules


@pytest.mark.slow
@pytest.mark.parametrize("path", RUN_TINY, ids=_experiment_id)
def test_every_training_path_runs_tiny(path, tmp_path):
  runner = _tiny_experiment(path, tmp_path)
  results = runner.run()
  assert 0.0 <= results["accuracy"] <= 1.0 and (tmp_path / "ckpt-2.index").exists()
  saved = json.loads((tmp_path / "results.json").read_text())
  assert set(saved) == set(RESULT_KEYS)  # one schema for every method
  assert saved["num_tasks"] == 4 and saved["meta_iterations"] == 2 and saved["parameters"] > 0
  assert set(saved["train_streams"]) == set(runner.streams)
  if gin.query_parameter("Runner.learner").selector == "Metanas":
    method = saved["method_results"]
    assert saved["method"] == "metanas"
    assert len(method["task_parameter_counts"]) == 4 and method["genotypes"][0]["tasks"] >= 1
    assert saved["parameters"] == pytest.approx(np.mean(method["task_parameter_counts"]))
  if gin.query_parameter("Runner.learner").selector == "Caml":  # one decision at iteration 2
    method = saved["method_results"]
    assert {d["step"] for d in method["decisions"]} == {2}
    assert saved["parameters"] == method["computed_parameters"]


@pytest.mark.parametrize("name, train_queries, test_queries, test_batch", [
    ("maml_omniglot_5w1s", 1, 1, 5), ("maml_omniglot_5w5s", 5, 5, 25),
    ("maml_omniglot_20w1s", 1, 1, 20), ("maml_omniglot_20w5s", 5, 5, 100),
    ("maml_mini_imagenet_5w1s", 15, 1, 5), ("maml_mini_imagenet_5w5s", 15, 5, 25),
    ("mamlpp_mini_imagenet_5w1s", 15, 15, 5), ("reptile_omniglot_5w1s", 1, 1, 5),
    ("reptile_omniglot_20w1s", 1, 1, 10), ("reptile_omniglot_5w5s", 1, 1, 5),
    ("reptile_omniglot_20w5s", 1, 1, 10), ("reptile_mini_imagenet_5w1s", 1, 1, 5),
    ("reptile_mini_imagenet_5w5s", 1, 1, 15)])
def test_baseline_episodes_are_the_official_codes(name, train_queries, test_queries, test_batch):
  _parse(ROOT / "gin_configs" / "experiments" / "baselines" / f"{name}.gin")
  with gin.config_scope("train"):
    train = configurables.EpisodeSpec()
  with gin.config_scope("test"):
    test = configurables.EpisodeSpec()
  assert (train.num_queries, test.num_queries, test.batch_size) == (
      train_queries, test_queries, test_batch)


def test_reptile_20_way_values_are_its_readmes():
  _parse(ROOT / "gin_configs" / "experiments" / "baselines" / "reptile_omniglot_20w1s.gin")
  with gin.config_scope("weights"):
    assert inner_loop.ParamGroup().learning_rate == 0.0005
  assert gin.query_parameter("%ITERATIONS") == 200000  # Runner.num_iterations = %ITERATIONS
  assert gin.query_parameter("MetaLearner.carry_inner_state")
