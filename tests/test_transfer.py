"""The transfer measurement: glyphs- and Omniglot-trained Reptile Conv4 meta-tested on
Omniglot characters (a fixture in Omniglot's real layout), on a tiny budget."""

import collections
import json
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from tf_metanas.data import glyphs
from tf_metanas.train import transfer
from tests import test_omniglot

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Tiny and fast: one inner step, few tasks.
_FAST = ("train/Phase.steps = 1", "test/Phase.steps = 1", "Runner.test_batch_size = 2",
         "Runner.log_every = 1")


@pytest.fixture
def omniglot_dir(tmp_path):
  """48 characters of 11 drawers in Omniglot's layout: the 'vinyals' split cuts them
  30 / 5 / 13."""
  root = tmp_path / "omniglot"
  test_omniglot.write_subset(root, "images_background", [f"Back_{i}" for i in range(12)],
                             characters=4, drawers=11)
  return root


@pytest.fixture
def tiny_glyphs(monkeypatch):
  """glyphs.build draws 6 classes per split, 11 drawers each (the real drawing code)."""
  by_split = collections.defaultdict(list)
  for alphabet, chars in glyphs.glyph_classes():
    by_split[glyphs.split_of(alphabet)].append((alphabet, chars))
  few = [c for split in ("train", "val", "test") for c in by_split[split][:6]]
  build = glyphs.build
  monkeypatch.setattr(glyphs, "build", lambda seed, version: build(
      seed, instances=11, version=version, workers=1, classes=few))


def test_glyphs_and_omniglot_trained_models_are_tested_on_omniglot(omniglot_dir, tmp_path,
                                                                   tiny_glyphs):
  report = transfer.measure(tmp_path / "runs", omniglot_dir, ("glyphs_v2", "omniglot"),
                            ways=(5,), iterations=2, tasks=4, source_tasks=2, params=_FAST)
  json.dumps(report)  # a JSON report
  assert set(report["rows"]) == {"glyphs_v2", "omniglot"}
  for source, row in report["rows"].items():
    transferred = row["5w"]["omniglot"]
    assert transferred["num_tasks"] == 4 and transferred["num_ways"] == 5
    assert transferred["meta_iterations"] == 2 and 0 <= transferred["accuracy"] <= 1
    assert row["5w"]["own"]["num_tasks"] == 2
    assert (tmp_path / "runs" / f"{source}_5w" / "omniglot_5w1s.json").exists()
    assert 0 < row["ink"]["ink_fraction"] < 1 and 0 < row["ink"]["mean_pixel"] < 255
  assert report["omniglot_ink"] == report["rows"]["omniglot"]["ink"]
  assert report["rows"]["glyphs_v2"]["ink"]["images"] == 18 * 11
  sheet = np.asarray(Image.open(tmp_path / "runs" / "glyphs_v2_beside_omniglot.png"))
  assert sheet.shape == (2 * 13 * 30, 2 * (2 * 10 * 28 + 8))  # 6 beside 13 test classes
  lines = transfer.table(report)
  assert lines[0].startswith("| trained on |") and len(lines) == 5
  assert "| glyphs_v2 |" in lines[3] and "Omniglot 5-way 1-shot" in lines[0]
  again = transfer.measure(tmp_path / "runs", omniglot_dir, ("omniglot",), ways=(5,),
                           iterations=2, tasks=4, source_tasks=2, params=_FAST)
  assert again["rows"]["omniglot"] == report["rows"]["omniglot"]  # read, not redone


def test_the_binary_writes_the_report_and_logs_the_table(omniglot_dir, tmp_path):
  command = [sys.executable, str(ROOT / "tools" / "transfer.py"),
             f"--omniglot_dir={omniglot_dir}", f"--out_dir={tmp_path / 'runs'}",
             "--sources=omniglot", "--ways=5", "--iterations=1", "--tasks=2",
             "--source_tasks=2"] + [f"--gin_param={p}" for p in _FAST]
  result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "runs" / "transfer.json").read_text())
  assert report["rows"]["omniglot"]["5w"]["omniglot"]["num_tasks"] == 2
  assert "| omniglot | 233" not in result.stderr  # the fixture's ink, not real Omniglot's
  assert "| trained on | mean pixel | ink fraction | Omniglot 5-way 1-shot % |" in result.stderr


def test_unknown_sources_and_ways_are_named(tmp_path):
  with pytest.raises(ValueError, match=r"\['glyphs_v3', '7'\].*glyphs_v1"):
    transfer.measure(tmp_path, tmp_path, ("glyphs_v3",), ways=(7,))
