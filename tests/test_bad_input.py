"""Confusing input gets a clear error naming the binding, flag or file at fault, before any
training (issue 16, points 9-13; the data-layer rows run their readers in test_store,
test_omniglot and test_registry, the device rows in test_distribute)."""

import pathlib

import pytest

from tf_metanas import checks
from tf_metanas import configurables
from tf_metanas.data import synthetic
from tf_metanas.train import runner as runner_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = [str(ROOT / "gin_configs/experiments/baselines/maml_glyphs_5w1s.gin"),
          str(ROOT / "gin_configs/debug/tiny.gin")]


@pytest.mark.parametrize("binding, message", [
    # 9. wrong types
    ('Runner.num_iterations = "abc"', r"Runner.num_iterations = 'abc': expected a whole number"),
    ("Runner.num_iterations = 2.5", r"Runner.num_iterations = 2.5: expected a whole number"),
    ('weights/ParamGroup.learning_rate = "fast"',
     r"weights/ParamGroup.learning_rate = 'fast': expected a finite number"),
    ("weights/ParamGroup.learning_rate = -0.1", r"weights/ParamGroup.learning_rate = -0.1: must"),
    ("Runner.test_batch_size = True", r"Runner.test_batch_size = True: expected a whole number"),
    # 10. zero or negative values
    ("Runner.checkpoint_every = 0", r"Runner.checkpoint_every = 0: must be >= 1"),
    ("Runner.log_every = 0", r"Runner.log_every = 0: must be >= 1"),
    ("Runner.test_tasks = 0", r"Runner.test_tasks = 0: must be >= 1"),
    ("META_BATCH = 0", r"Runner.meta_batch_size = 0: must be >= 1"),
    ("Runner.eval_every = -1", r"Runner.eval_every = -1: must be >= 0 \(0 never meta-validates\)"),
    ("Runner.num_iterations = -5",
     r"Runner.num_iterations = -5: must be >= 0 \(0 meta-tests the initialization untrained\)"),
    ("Runner.eval_tasks = 0", r"Runner.eval_tasks = 0: must be >= 1"),
])
def test_a_bad_value_is_refused_at_construction_naming_its_binding(tmp_path, binding, message):
  configurables.parse(CONFIG, ["Runner.network = @Conv4", "Conv4.filters = 4", binding])
  with pytest.raises(checks.ConfigValueError, match=message):
    runner_lib.Runner(model_dir=tmp_path, splits=synthetic.prototype_splits(size=8))
  assert not tmp_path.exists() or not list(tmp_path.iterdir())


EXPERIMENTS = ROOT / "gin_configs" / "experiments"


@pytest.mark.parametrize("experiment, bindings, message", [
    ("baselines/reptile_glyphs_5w1s", ["ITERATIONS = 100"],
     r"Linear.steps \(the 'weights' meta learning rate\) = 100"),
    ("metanas/quickstart", ["WARMUP = 60"], r"warmup_iterations = 60"),
    ("baselines/mamlpp_mini_imagenet_5w1s", ["FIRST_ORDER_ITERATIONS = 9"],
     r"first_order_iterations = 9"),
    ("base/glyphs_quick", ["ITERATIONS = 80"], r"Exponential.steps \(tau\) = 80"),
    ("caml/glyphs_quick", ["CONSOLIDATION_START = 30"], r"Caml.consolidation_start = 30"),
])
def test_a_run_shorter_than_its_schedules_is_refused_naming_them(tmp_path, experiment, bindings,
                                                                 message):
  """Issue 19.8: shortening a run with Runner.num_iterations alone would leave schedules,
  warm-up or consolidation on the configured length; the Runner refuses and says to set
  ITERATIONS (which the shipped configs derive them from: test_runner builds every
  experiment with ITERATIONS = 2 and checks every schedule follows)."""
  configurables.parse([str(EXPERIMENTS / f"{experiment}.gin"), CONFIG[1]],
                      bindings + ["Runner.num_iterations = 5"])
  shape = (28, 28, 1) if "mini_imagenet" not in experiment else (84, 84, 3)
  splits = synthetic.prototype_splits(size=shape[0], channels=shape[2])
  with pytest.raises(checks.ConfigValueError,
                     match=message + r".*Set the run's length with ITERATIONS = 5"):
    runner_lib.Runner(model_dir=tmp_path, splits=splits)
  assert not tmp_path.exists() or not list(tmp_path.iterdir())
