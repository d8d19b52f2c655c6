"""tools/prepare_data.py end to end, as a user runs it."""

import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

from tests import test_omniglot

TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "prepare_data.py"


def _run(*args):
  return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                        timeout=300, check=False)


def test_prepares_omniglot_prints_a_summary_and_writes_a_contact_sheet(tmp_path):
  test_omniglot.write_subset(tmp_path / "raw", "images_background", ["A0", "A1"], characters=5)
  sheet = tmp_path / "sheet.png"
  result = _run("--dataset=omniglot", f"--data_dir={tmp_path / 'raw'}",
                f"--cache_dir={tmp_path / 'cache'}", f"--contact_sheet={sheet}")
  assert result.returncode == 0, result.stderr
  assert "omniglot train: 6 classes, 24 images (4-4 per class), 2 groups, images (28, 28, 1)" \
      in result.stderr
  assert "omniglot val  : 1 classes" in result.stderr
  image = np.asarray(Image.open(sheet))
  assert image.shape[0] > 28 and image.shape[1] >= 4 * 28


def test_missing_data_exits_with_the_explanation(tmp_path):
  result = _run("--dataset=fc100", f"--data_dir={tmp_path / 'none'}",
                f"--tfds_dir={tmp_path / 'tfds'}", f"--cache_dir={tmp_path / 'cache'}")
  assert result.returncode != 0
  assert "FC100_train.pickle" in result.stderr and "cifar-100-python/" in result.stderr
