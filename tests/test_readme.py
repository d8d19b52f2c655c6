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
    ("search", {"gin_file", "search_dir", "executor", "workers", "scheduler"}),
    ("prepare_data", {"dataset", "glyphs_version", "omniglot_split", "contact_sheets"})])
def test_help_answers_without_loading_tensorflow(binary, flags):
  """Issue 19.4: --help is complete and fast: TensorFlow loads after flag parsing (the
  flags' choices come from tf_metanas.choices, which the library modules use too)."""
  from tf_metanas import choices  # pylint: disable=g-import-not-at-top
  from tf_metanas.data import glyphs, omniglot  # pylint: disable=g-import-not-at-top
  assert set(choices.OMNIGLOT_SPLITS) == set(omniglot.SPLIT_SIZES) | {"lake"}
  assert choices.GLYPHS_VERSIONS == glyphs.VERSIONS
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


def test_tensorflow_startup_drops_its_native_noise_only_and_keeps_the_order():
  """Issue 19.3: the lines TensorFlow's C++ side prints before its logging starts, dropped
  while the binaries load it; what else reaches stderr in that window passes, in order."""
  noise = ["WARNING: All log messages before absl::InitializeLog() is called are written to "
           "STDERR", "I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine",
           "E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
           "I0000 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use ...",
           "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
           "TensorFlow with the appropriate compiler flags."]
  onednn = "I0000 port.cc:153] oneDNN custom operations are on. You may see ..."
  code = ("import os, sys\nfrom tf_metanas import quiet\n"
          "os.write(2, b'before\\n')\n"
          "with quiet.tensorflow_startup():\n"
          f"  os.write(2, {(chr(10).join([noise[0], onednn, noise[1], 'E0000 a real error']) + chr(10)).encode()!r})\n"
          f"  os.write(2, {(chr(10).join(noise[2:] + [onednn, 'partial ']) ).encode()!r})\n"
          "  print('python line', file=sys.stderr)\n"
          "os.write(2, b'after: ' + " + repr(noise[2].encode()) + " + b'\\n')\n"
          "quiet.load_tensorflow()\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  lines = result.stderr.splitlines()
  assert lines[:5] == ["before", onednn, "E0000 a real error", "partial python line",
                       f"after: {noise[2]}"]  # outside the window nothing is dropped
  # the real TensorFlow: its startup noise is gone (a CPU-only machine prints every one)
  assert not any(n.split("] ")[-1][:30] in line for n in noise for line in lines[5:])
