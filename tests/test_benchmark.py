"""tools/benchmark.py end to end on tiny settings: its JSON and its BENCHMARKS.md section."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(args, tmp_path, **env):
  """tools/benchmark.py with `args` (and `env`); returns what it wrote to --output."""
  output = tmp_path / "result.json"
  run = subprocess.run([sys.executable, str(_ROOT / "tools" / "benchmark.py"), *args,
                        f"--output={output}"], cwd=_ROOT, env={**os.environ, **env},
                       capture_output=True, text=True, timeout=600, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  return json.loads(output.read_text())


@pytest.mark.slow
def test_meta_iterations_over_replicas_to_json_and_markdown(tmp_path):
  report = tmp_path / "BENCHMARKS.md"
  results = _run(["--gin_file=gin_configs/experiments/baselines/reptile_glyphs_5w1s.gin",
                  "--gin_param=META_BATCH=2", "--iterations=1", "--replicas=1,2",
                  "--matmul_size=256", f"--append_to={report}"], tmp_path,
                 TF_NUM_INTRAOP_THREADS="1")
  assert [(r["replicas"], r["xla"]) for r in results] == [(1, False), (2, False)]
  for r in results:
    assert r["seconds_per_meta_iteration"] > 0 and r["flops_per_meta_iteration"] > 1e8
    assert r["gflops_per_s"] == pytest.approx(
        r["flops_per_meta_iteration"] / r["seconds_per_meta_iteration"] / 1e9)
    assert r["tasks_per_second"] == pytest.approx(2 / r["seconds_per_meta_iteration"])
    assert r["matmul_gflops_per_s"] > 0 and r["peak_memory_bytes"] > 0
    assert r["environment"] == {"TF_NUM_INTRAOP_THREADS": "1"}
  lines = report.read_text().splitlines()
  command = next(line for line in lines if line.startswith("Command: "))
  assert command.startswith("Command: `TF_NUM_INTRAOP_THREADS=1 python tools/benchmark.py ")
  assert "Environment: TF_NUM_INTRAOP_THREADS=1" in lines
  rows = [line for line in lines if line.startswith("| 1 | off") or line.startswith("| 2 | off")]
  assert len(rows) == 2 and rows[0].endswith("| 1.00x |")


@pytest.mark.slow
def test_supernet_forward_backward(tmp_path):
  result = _run(["--channels=4", "--num_cells=2", "--reduction_cells=1", "--num_nodes=2",
                 "--batch=4", "--iterations=2", "--matmul_size=128", "--per_op"], tmp_path)
  assert result["seconds"] > 0 and result["flops"] > 1e6
  assert result["gflops_per_s"] == pytest.approx(result["flops"] / result["seconds"] / 1e9)
  assert set(result["per_op_ms"]) == {"max_pool_3x3", "avg_pool_3x3", "skip_connect",
                                      "conv_1x5_5x1", "conv_3x3", "sep_conv_3x3",
                                      "dil_conv_3x3"}
