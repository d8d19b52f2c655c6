"""tools/prepare_data.py end to end, as a user runs it; the commands error messages suggest."""

import ast
import inspect
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest
from PIL import Image

from tf_metanas import data
from tf_metanas.data import omniglot
from tf_metanas.data import registry
from tests import test_omniglot

TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"
TOOL = TOOLS / "prepare_data.py"
# Valid values of the enum flags of tools/prepare_data.py (load_dataset's arguments).
_ENUMS = {"dataset": registry.DATASETS, "source": registry.SOURCES,
          "omniglot_split": tuple(omniglot.SPLIT_SIZES) + ("lake",)}


def _run(*args):
  return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                        timeout=300, check=False)


# Binaries whose flags live in the module they run (tools/train.py runs tf_metanas.train.main).
_SOURCES = {"train": TOOLS.parent / "tf_metanas" / "train" / "main.py"}


def defined_flags(tool):
  """The names of the flags `tools/<tool>.py` defines, read from its source (not imported)."""
  names = set()
  source = _SOURCES.get(tool, TOOLS / f"{tool}.py")
  for node in ast.walk(ast.parse(source.read_text())):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("DEFINE_") and node.args
        and isinstance(node.args[0], ast.Constant)):
      names.add(node.args[0].value)
  return names


def _check_binding(binding):
  """A `--gin_param` of tools/train.py: gin parses it and load_dataset takes the argument."""
  from tf_metanas.train import runner  # pylint: disable=g-import-not-at-top,unused-import
  gin.parse_config(binding)
  match = re.fullmatch(r"load_splits\.(\w+) = .+", binding)
  assert match, binding
  assert match[1] in inspect.signature(registry.load_dataset).parameters, binding
  value = gin.query_parameter(f"tf_metanas.train.load_splits.{match[1]}")
  assert value in _ENUMS.get(match[1], (value,)), binding


def _check_flags(tool, args):
  for arg in args:
    name, _, value = arg.removeprefix("--").partition("=")
    assert arg.startswith("--") and name in defined_flags(tool), f"{tool}.py: {arg}"
    assert not value or value in _ENUMS.get(name, (value,)), f"{tool}.py: {arg}"
    if tool == "train":
      assert name == "gin_param", arg
      _check_binding(value)


def check_suggested_commands(message):
  """Asserts that the `backquoted` commands of `message` use only real flags and bindings.

  `python tools/prepare_data.py ...` must use flags (and enum values) that tool defines;
  a bare `--gin_param=...` (for tools/train.py) must be a gin binding of `load_splits` to
  an argument of `load_dataset`.

  Returns:
    The commands, split into words.
  """
  commands = [shlex.split(c) for c in re.findall(r"`([^`]+)`", message)]
  assert commands, f"no command in: {message}"
  for words in commands:
    if words[:2] in (["python", "tools/prepare_data.py"], ["python", "tools/train.py"]):
      _check_flags(pathlib.Path(words[1]).stem, words[2:])
    else:
      _check_flags("train", words)
  return commands


def test_prepares_omniglot_says_what_it_found_and_writes_a_contact_sheet_per_split(tmp_path):
  test_omniglot.write_subset(tmp_path / "raw", "images_background_small1", ["A0", "A1"],
                             characters=5)
  sheets = tmp_path / "sheets"
  result = _run("--dataset=omniglot", f"--data_dir={tmp_path / 'raw'}",
                f"--cache_dir={tmp_path / 'cache'}", f"--contact_sheets={sheets}",
                "--omniglot_split=vinyals")
  assert result.returncode == 0, result.stderr
  assert ("reading images_background_small1; not found: images_evaluation[.zip] (the splits "
          "are cut from what was found)") in result.stderr
  assert "omniglot train: 6 classes, 24 images (4-4 per class), 2 groups, images (28, 28, 1)" \
      in result.stderr
  assert "omniglot val  : 1 classes" in result.stderr
  for split in ("train", "val", "test"):
    image = np.asarray(Image.open(sheets / f"omniglot_vinyals_{split}_contact_sheet.png"))
    assert image.shape[0] >= 28 and image.shape[1] >= 4 * 28


def test_missing_data_exits_with_the_explanation(tmp_path):
  result = _run("--dataset=fc100", f"--data_dir={tmp_path / 'none'}",
                f"--tfds_dir={tmp_path / 'tfds'}", f"--cache_dir={tmp_path / 'cache'}")
  assert result.returncode != 0
  assert "FC100_train.pickle" in result.stderr and "cifar-100-python/" in result.stderr


def test_the_rebuild_command_of_a_corrupt_cache_repairs_it(tmp_path):
  raw, cache_dir = tmp_path / "raw", tmp_path / "cache"
  test_omniglot.write_subset(raw, "images_background", ["A0", "A1"], characters=5)
  data.load_dataset("omniglot", data_dir=raw, cache_dir=cache_dir)
  (train,) = cache_dir.glob("omniglot/*/train.npz")
  damaged = bytearray(train.read_bytes())
  damaged[len(damaged) // 2] ^= 0x01
  train.write_bytes(bytes(damaged))
  pngs = sorted(raw.rglob("*.png"))
  away = tmp_path / "away"
  for i, png in enumerate(pngs):  # the raw data is gone, its folders stay
    away.mkdir(exist_ok=True)
    shutil.move(png, away / f"{i}.png")
  with pytest.raises(data.CorruptFileError, match="train.npz") as info:
    data.load_dataset("omniglot", data_dir=raw, cache_dir=cache_dir)
  (command,) = [words for words in check_suggested_commands(str(info.value))
                if words[1:2] == ["tools/prepare_data.py"] and "--refresh" in words]
  for i, png in enumerate(pngs):
    shutil.move(away / f"{i}.png", png)
  result = _run(*command[2:])
  assert result.returncode == 0, result.stderr
  assert data.ImageStore.load(train).num_classes == 6
  data.load_dataset("omniglot", data_dir=raw, cache_dir=cache_dir)
