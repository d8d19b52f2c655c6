"""The README starts with the two commands, CI runs the second one verbatim, the flags the
README gives the training binary exist, and its Python blocks run."""

import pathlib
import re
import subprocess
import sys

import gin
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands():
  block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
  return block.strip().splitlines()


def test_readme_starts_with_exactly_two_commands():
  text = (ROOT / "README.md").read_text()
  assert text.index("```bash") < text.index("\n## ")
  commands = _commands()
  assert len(commands) == 2
  assert "tools/train.py --gin_file=gin_configs/experiments/metanas/quickstart.gin" in commands[0]
  assert (ROOT / "gin_configs" / "experiments" / "metanas" / "quickstart.gin").exists()
  assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
  ci = (ROOT / ".ci" / "run").read_text().splitlines()
  assert _commands()[1] in ci


def test_flags_the_readme_gives_tools_train_exist():
  text = (ROOT / "README.md").read_text()
  blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
  used = set(re.findall(r" --(\w+)=", "\n".join(b for b in blocks if "tools/train.py" in b)))
  assert {"strategy", "worker_hosts", "task_index", "cpu_devices", "devices"} <= used
  helpfull = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--helpfull"],
                            capture_output=True, text=True, timeout=120, check=False).stdout
  for flag in used:
    assert f"--{flag}:" in helpfull, flag
  shown = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--help"],
                         capture_output=True, text=True, timeout=120, check=False)
  help_text = shown.stdout
  for flag in used | {"gin_file", "gin_param", "model_dir", "deterministic", "retest",
                      "dataset"}:  # --help, not only --helpfull, lists them
    assert f"--{flag}:" in help_text or f"--[no]{flag}:" in help_text, flag


@pytest.mark.parametrize("binary, flags", [
    ("train", {"gin_file", "model_dir", "strategy", "cpu_devices", "deterministic", "dataset"}),
    ("evaluate", {"model_dir", "gin_param", "decoded", "strategy", "devices"}),
    ("search", {"gin_file", "search_dir", "executor", "workers", "scheduler"})])
def test_help_answers_without_loading_tensorflow(binary, flags):
  """Issue 19.4: --help is complete and fast: TensorFlow loads after flag parsing."""
  shown = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "tools" / f"{binary}.py"),
                          "--help"], capture_output=True, text=True, timeout=60, check=False)
  imported = {line.rsplit("|", 1)[-1].strip() for line in shown.stderr.splitlines()
              if line.startswith("import time:")}
  assert "absl.flags" in imported and "tensorflow" not in imported
  for flag in flags:
    assert f"--{flag}:" in shown.stdout or f"--[no]{flag}:" in shown.stdout, flag


# What the README's Python blocks do at full size, made tiny: each must still be in the text.
_TINY = {"dataset(32, num_batches=300)": "dataset(2, num_batches=1)",
         "SearchNetwork(num_classes=20)": "SearchNetwork(num_classes=20, channels=4)"}


def _python_blocks():
  return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.fixture
def quickstart_run(tmp_path):
  """A run of the quickstart config in tmp_path/runs/quickstart, tiny and checkpointed at
  meta-iteration 0 (what a block does with it does not depend on its training)."""
  from tf_metanas import configurables  # pylint: disable=g-import-not-at-top
  from tf_metanas.train import runner as runner_lib  # pylint: disable=g-import-not-at-top
  configurables.parse([str(ROOT / "gin_configs/experiments/metanas/quickstart.gin"),
                       str(ROOT / "gin_configs/debug/tiny.gin")],
                      ["load_splits.synthetic_image_shape = (28, 28, 1)",
                       "Runner.num_iterations = 0"])
  runner = runner_lib.Runner(model_dir=tmp_path / "runs" / "quickstart")
  runner.train()  # writes its configuration
  runner.save(0)
  gin.clear_config()
  return tmp_path


def test_every_python_block_of_the_readme_runs_as_written(quickstart_run, monkeypatch):
  from tf_metanas import data  # pylint: disable=g-import-not-at-top
  from tf_metanas.data import synthetic  # pylint: disable=g-import-not-at-top
  # Every dataset the blocks load: prototype images of Omniglot's shape, no download.
  monkeypatch.setattr(data, "load_dataset", lambda *a, **k: synthetic.prototype_splits(
      num_classes=(30, 25, 25), size=28))
  monkeypatch.chdir(quickstart_run)  # runs/quickstart is the tiny run
  blocks = _python_blocks()
  assert len(blocks) >= 5
  text = "\n".join(blocks)
  for full in _TINY:
    assert full in text, f"the README no longer says {full!r}: update _TINY"
  for index, block in enumerate(blocks):
    for full, tiny in _TINY.items():
      block = block.replace(full, tiny)
    exec(compile(block, f"README python block {index + 1}", "exec"), {})  # pylint: disable=exec-used


def test_the_binaries_drop_the_checkpoint_sharding_noise_and_keep_the_rest():
  code = ("from tf_metanas import quiet\nfrom absl import logging\n"
          "logging.set_verbosity(logging.INFO)\n"
          "logging.info('Sharding callback duration: 59 microseconds')\n"
          "logging.info('meta-iteration 1 compiled')\nlogging.warning('a real warning')\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
  assert "Sharding callback" not in result.stderr
  assert "meta-iteration 1 compiled" in result.stderr and "a real warning" in result.stderr
