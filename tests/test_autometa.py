"""Auto-Meta: the block cell space, the surrogate, jobs on the local pool and on Dask, and the
progressive search (fake candidates for its logic, real tools/train.py jobs for its scores)."""

import csv
import dataclasses
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

from tests import fake_candidate
from tf_metanas import configurables
from tf_metanas import jobs
from tf_metanas.methods import autometa
from tf_metanas.methods import surrogate as surrogate_lib
from tf_metanas.search import baselines
from tf_metanas.search import blocks
from tf_metanas.search import ops as ops_lib
from tf_metanas.search import visualize

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "gin_configs/experiments/autometa/glyphs_quick.gin")
TINY = str(ROOT / "gin_configs/debug/tiny.gin")
FAKE = (sys.executable, str(ROOT / "tests" / "fake_candidate.py"))
TWO_OPS = ("full_conv_3x3", "max_pool_3x3")


# ---- the cell space -------------------------------------------------------------------------


def test_expansions_are_exactly_the_legal_cells_one_block_longer():
  # Worked out by hand for two ops. A new block picks an unordered pair, repetition allowed,
  # of n (input, op) choices: n same-choice pairs + n (n - 1) / 2 others.
  #   first block: inputs {0, 1} -> n = 4 -> 4 + 6 = 10 cells
  #   second block: inputs {0, 1, 2} -> n = 6 -> 6 + 15 = 21 expansions of a 1-block cell
  #   third block: inputs {0, .., 3} -> n = 8 -> 8 + 28 = 36 expansions of a 2-block cell
  first = blocks.first_cells(TWO_OPS)
  assert len(first) == 10 and len(set(first)) == 10
  parent = blocks.BlockCell(((("full_conv_3x3", 0), ("max_pool_3x3", 1)),))
  children = blocks.expansions(parent, TWO_OPS)
  assert len(children) == 21 and len(set(children)) == 21
  grandchildren = blocks.expansions(children[7], TWO_OPS)
  assert len(grandchildren) == 36 and len(set(grandchildren)) == 36
  # Every legal second block, enumerated as ordered pairs and folded: the same 21 cells.
  legal = {blocks.BlockCell(parent.blocks + (((o1, i1), (o2, i2)),))
           for i1 in range(3) for i2 in range(3) for o1 in TWO_OPS for o2 in TWO_OPS}
  assert set(children) == legal
  assert all(child.blocks[0] == parent.blocks[0] for child in children)
  # Auto-Meta's five ops: 10 choices -> 55 one-block cells; two cells -> their expansions.
  assert len(blocks.first_cells(ops_lib.OP_SETS["PNAS"])) == 55
  assert len(blocks.expand_all([parent, children[0]], TWO_OPS)) == 21 + 36


def test_a_block_cell_is_an_immutable_json_value_with_a_depth_and_a_picture(tmp_path):
  cell = blocks.BlockCell([[("max_pool_3x3", 1), ("full_conv_3x3", 0)],
                           [("skip_connect", 2), ("full_conv_3x3", 0)],
                           [("full_conv_3x3", 3), ("skip_connect", 1)]])
  # Pairs are unordered: one canonical form, sorted by input.
  assert cell.blocks[0] == (("full_conv_3x3", 0), ("max_pool_3x3", 1))
  assert cell == blocks.BlockCell.from_json(cell.to_json())
  assert cell.depth() == 3  # block 2 reads block 1, which reads block 0
  assert blocks.BlockCell(cell.blocks[:1] + ((("skip_connect", 0), ("skip_connect", 1)),)
                          ).depth() == 1
  assert cell.genotype().normal == cell.genotype().reduce == cell.blocks
  assert cell.summary().startswith("0: full_conv_3x3(0) + max_pool_3x3(1); 1:")
  assert cell.seed() == blocks.BlockCell.from_json(cell.to_json()).seed()
  assert cell.key() != blocks.BlockCell(cell.blocks[:2]).key()
  with pytest.raises(dataclasses.FrozenInstanceError):
    cell.blocks = ()
  with pytest.raises(ValueError, match="block 1 cannot take input 3"):
    blocks.BlockCell([[("skip_connect", 0), ("skip_connect", 1)],
                      [("skip_connect", 3), ("skip_connect", 0)]])
  with pytest.raises(ValueError, match="exactly two"):
    blocks.BlockCell([[("skip_connect", 0)]])
  with pytest.raises(ValueError, match="format version"):
    blocks.BlockCell.from_dict({"blocks": []})
  path = tmp_path / "cells.png"
  path.write_bytes(visualize.figure_to_png(visualize.plot_cells([cell], ["a cell"])))
  assert path.stat().st_size > 5000


def test_the_autometa_network_stacks_n_cells_a_reduction_and_n_cells():
  cell = blocks.BlockCell([[("full_conv_3x3", 0), ("skip_connect", 1)]])
  small = baselines.autometa_network(5, cell=cell.to_json(), filters=10, unroll=1)
  small.build((None, 28, 28, 1))
  assert [c.reduction for c in small.cells] == [False, True, False]
  assert [c.channels for c in small.cells] == [10, 10, 10]
  assert small.cells[0].nodes == cell.blocks and small.stems[0].channels == 10
  large = baselines.autometa_network(5, cell=cell, filters=12, unroll=1, scale_rate=2)
  large.build((None, 28, 28, 1))
  assert [c.channels for c in large.cells] == [12, 24, 24]
  assert small(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 5)
  with pytest.raises(ValueError, match="scale rate is 1 or 2"):
    baselines.autometa_network(5, scale_rate=3)


# ---- the surrogate ----------------------------------------------------------------------------


def test_spearman_matches_hand_values():
  assert surrogate_lib.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  # Ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): r = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10).
  assert surrogate_lib.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / np.sqrt(10))
  assert np.isnan(surrogate_lib.spearman([1, 1], [1, 2]))


def test_the_surrogate_learns_a_toy_ranking():
  # A toy score that depends on the ops and wiring of every block (the fake candidate's);
  # 120 random cells of 1-3 blocks over Auto-Meta's five ops, 80 to train, 40 held out. A
  # predictor that has learned nothing ranks the held-out cells at random: Spearman ~ 0
  # with standard deviation 1 / sqrt(39) = 0.16, so 0.8 is 5 of them above chance.
  rng = np.random.default_rng(0)
  ops = ops_lib.OP_SETS["PNAS"]
  cells = set()
  while len(cells) < 120:
    picked = []
    for b in range(rng.integers(1, 4)):
      picked.append(tuple((ops[rng.integers(len(ops))], int(rng.integers(b + 2)))
                          for _ in range(2)))
    cells.add(blocks.BlockCell(tuple(picked)))
  cells = sorted(cells, key=lambda c: c.key())
  scores = [fake_candidate.toy_score([[list(p) for p in block] for block in c.blocks])
            for c in cells]
  surrogate = surrogate_lib.Surrogate(ops, max_blocks=3, seed=0)
  surrogate.fit(cells[:80], scores[:80])
  assert surrogate_lib.spearman(surrogate.predict(cells[80:]), scores[80:]) > 0.8
  with pytest.raises(ValueError, match="at most 3 blocks"):
    surrogate.encode([blocks.BlockCell(cells[0].blocks * 4)])


# ---- jobs and the local pool ------------------------------------------------------------------


_ENV_JOB = ("import json, os, sys, time; time.sleep(0.5); "
            "d = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--model_dir=')][0]; "
            "keys = ('CUDA_VISIBLE_DEVICES', 'TF_NUM_INTRAOP_THREADS', 'OMP_NUM_THREADS', "
            "'TF_ENABLE_ONEDNN_OPTS'); "
            "open(os.path.join(d, 'results.json'), 'w').write(json.dumps("
            "{k: os.environ.get(k) for k in keys} | {'end': time.time()}))")


def test_the_pool_gives_each_job_its_device_and_the_spec_its_threads(tmp_path):
  specs = [jobs.JobSpec(f"job {k}", str(tmp_path / str(k)), threads=3,
                        command=(sys.executable, "-c", _ENV_JOB)) for k in range(4)]
  began = time.time()
  with jobs.LocalExecutor(devices=[0, 1]) as executor:
    assert executor.workers == 2
    seen = [f.result() for f in [executor.submit(jobs.run_job, spec) for spec in specs]]
  assert {s["TF_NUM_INTRAOP_THREADS"] for s in seen} == {"3"} == {s["OMP_NUM_THREADS"] for s in seen}
  assert {s["TF_ENABLE_ONEDNN_OPTS"] for s in seen} == {"0"}  # deterministic by default
  assert sorted(s["CUDA_VISIBLE_DEVICES"] for s in seen) == ["0", "0", "1", "1"]
  assert max(s["end"] for s in seen) - began < 4 * 0.5  # two at a time, not one by one
  assert jobs.LocalExecutor(threads_per_job=1).workers == (os.cpu_count() or 1)
  with pytest.raises(ValueError, match="one worker per device"):
    jobs.LocalExecutor(workers=3, devices=[0, 1])


def test_a_job_without_results_fails_naming_its_log(tmp_path):
  spec = jobs.JobSpec("quiet", str(tmp_path), command=(sys.executable, "-c", "print('hi')"))
  with pytest.raises(jobs.JobFailed, match=r"exited 0 without writing .*results.json(.|\n)*hi"):
    jobs.run_job(spec)


# ---- the search, with fake candidates ---------------------------------------------------------


@pytest.fixture
def fake_log(tmp_path, monkeypatch):
  log = tmp_path / "jobs_run.txt"
  log.touch()
  monkeypatch.setenv("FAKE_CANDIDATE_LOG", str(log))
  return log


def _search(search_dir, **kwargs):
  configurables.parse([QUICK])
  settings = dict(gin_files=(QUICK,), op_set=TWO_OPS, max_blocks=2, beam_size=3,
                  job_command=FAKE, score_bindings=())
  settings.update(kwargs)
  return autometa.ProgressiveSearch(search_dir, **settings)


def test_a_search_ranks_expands_records_failures_and_writes_its_views(tmp_path, fake_log):
  search_dir = tmp_path / "search"
  with jobs.LocalExecutor(workers=2) as executor:
    summary = _search(search_dir).run(executor)
  # Stage 1: all 10 one-block cells (one crashes); stage 2: the 3 best expanded (63 cells),
  # the surrogate's top 3 scored; then the final job.
  stage1, stage2 = summary["stages"]
  assert (stage1["candidates"], stage1["scored"], stage1["failed"]) == (10, 9, 1)
  assert (stage2["candidates"], stage2["failed"]) == (3, 0)
  assert summary["jobs_run"] == 10 + 3 + 1 == len(fake_log.read_text().split())
  failed = [r for r in stage1["ranked"] if r["status"] == "failed"]
  assert failed[0]["rank"] == 10  # failed candidates rank last
  record = json.loads((search_dir / "candidates" / failed[0]["key"] / "failed.json").read_text())
  assert "exited with code 3" in record["error"] and "this cell crashes" in record["error"]
  # Rankings follow the measured scores; the best cell is the best of all stages.
  for stage in (stage1, stage2):
    scores = [r["score"] for r in stage["ranked"] if r["status"] == "ok"]
    assert scores == sorted(scores, reverse=True)
  assert summary["best_score"] == max(stage1["best_score"], stage2["best_score"])
  best = blocks.BlockCell.from_dict(summary["best_cell"])
  assert summary["best_score"] == pytest.approx(
      fake_candidate.toy_score([[list(p) for p in b] for b in best.blocks]))
  # Stage 2 expands stage 1's three best cells.
  kept = {json.dumps(r["cell"]["blocks"]) for r in stage1["ranked"][:3]}
  for row in stage2["ranked"]:
    assert json.dumps(row["cell"]["blocks"][:1]) in kept and row["predicted"] is not None
  assert summary["final"]["split"] == "test"
  # The rank correlation of the surrogate's predictions with the scores of the cells it chose.
  chosen = json.loads((search_dir / "stages" / "stage_2.json").read_text())
  assert stage2["spearman"] == pytest.approx(surrogate_lib.spearman(
      [c["predicted"] for c in chosen],
      [fake_candidate.toy_score(c["cell"]["blocks"]) for c in chosen]))
  assert stage2["spearman"] > 0
  with open(search_dir / "stages" / "stage_1.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["rank"] for r in rows] == [str(k) for k in range(1, 11)]
  assert rows[-1]["status"] == "failed" and rows[0]["cell"].startswith("0: ")
  assert json.loads((search_dir / "search_results.json").read_text()) == summary
  tags = {}
  for path in (search_dir / "events").glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  assert {"Search/scores", "Search/best_score", "Search/depth_distribution",
          "Search/best_cells", "Search/stage_table", "Search/final"} <= set(tags)
  assert tags["Search/scores"] == [1, 2] and tags["Search/spearman"] == [2]


def test_a_search_whose_candidates_all_fail_says_so_and_keeps_their_errors(
    tmp_path, fake_log, monkeypatch):
  monkeypatch.setenv("FAKE_CANDIDATE_CRASH_ALL", "1")
  with jobs.LocalExecutor(workers=2) as executor:
    with pytest.raises(jobs.JobFailed, match="every candidate of the search failed"):
      _search(tmp_path / "search").run(executor)
  assert len(list((tmp_path / "search" / "candidates").glob("*/failed.json"))) == 10
  assert not (tmp_path / "search" / "stages" / "stage_2.json").exists()
  assert len(fake_log.read_text().split()) == 10  # stage 1 only, nothing retried


def test_a_resumed_search_with_another_configuration_is_refused(tmp_path, fake_log):
  search_dir = tmp_path / "search"
  with jobs.LocalExecutor(workers=2) as executor:
    _search(search_dir, max_blocks=1, run_final=False).run(executor)
    with pytest.raises(autometa.SearchConfigMismatchError, match="beam_size"):
      _search(search_dir, max_blocks=1, beam_size=5, run_final=False).run(executor)


def test_a_search_of_another_network_is_refused(tmp_path):
  configurables.parse([str(ROOT / "gin_configs/experiments/baselines/reptile_glyphs_5w1s.gin")])
  search = autometa.ProgressiveSearch(tmp_path, op_set=TWO_OPS, job_command=FAKE)
  with pytest.raises(autometa.checks.ConfigValueError, match="autometa_network"):
    search.run(jobs.LocalExecutor(workers=1))


def test_a_killed_search_resumes_without_rerunning_scored_candidates(tmp_path, fake_log,
                                                                      monkeypatch):
  monkeypatch.setenv("FAKE_CANDIDATE_SLEEP", "0.4")
  search_dir = tmp_path / "search"
  command = [sys.executable, str(ROOT / "tools" / "search.py"), f"--gin_file={QUICK}",
             f"--search_dir={search_dir}", "--workers=2",
             f"--gin_param=ProgressiveSearch.op_set = {TWO_OPS!r}",
             "--gin_param=ProgressiveSearch.max_blocks = 2",
             "--gin_param=ProgressiveSearch.beam_size = 3",
             f"--gin_param=ProgressiveSearch.job_command = {list(FAKE)!r}"]
  process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  candidates = search_dir / "candidates"
  deadline = time.time() + 120
  while len(list(candidates.glob("*/score.json"))) < 4 and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  scored_before = {p.parent.name for p in candidates.glob("*/score.json")}
  assert 4 <= len(scored_before) < 10
  runs_before = len(fake_log.read_text().split())
  time.sleep(1.0)  # jobs the kill orphaned would log here: there are none (they died with it)
  assert len(fake_log.read_text().split()) == runs_before
  resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  after = fake_log.read_text().split()[runs_before:]
  assert not scored_before & set(after)  # no scored candidate trained again
  summary = json.loads((search_dir / "search_results.json").read_text())
  assert summary["jobs_run"] == len(after)
  assert [s["candidates"] for s in summary["stages"]] == [10, 3]
  assert "best cell" in resumed.stderr and "surrogate rank correlation" in resumed.stderr
  assert re.search(r"stage 2/2: 3/3 candidates done .* best so far 0\.\d+ +stage ETA \d+ s",
                   resumed.stderr)


# ---- real candidates: the same scores sequentially, in the pool and on Dask ---------------


REAL_PARAMS = ("load_splits.synthetic_image_shape = (8, 8, 1)", "FILTERS = 4")


def _real_cells():
  return [blocks.BlockCell([[("skip_connect", 0), ("skip_connect", 1)]]),
          blocks.BlockCell([[("full_conv_3x3", 0), ("skip_connect", 1)]])]


def test_candidates_score_the_same_sequentially_in_the_pool_and_on_dask(tmp_path):
  distributed = pytest.importorskip("dask.distributed")
  configurables.parse([QUICK, TINY], REAL_PARAMS)
  search = autometa.ProgressiveSearch(tmp_path / "pool", gin_files=(QUICK, TINY),
                                      gin_params=REAL_PARAMS, op_set=("skip_connect",),
                                      max_blocks=1, beam_size=3, score_bindings=(),
                                      run_final=False)
  with jobs.LocalExecutor(workers=2) as executor:  # a real search: 3 one-block cells
    summary = search.run(executor)
  pooled = {r["key"]: r["score"] for r in summary["stages"][0]["ranked"]}
  assert len(pooled) == 3 and all(0.0 <= s <= 1.0 for s in pooled.values())
  cells = blocks.first_cells(("skip_connect",))[:2]
  gin.clear_config()

  def spec(cell, where):
    own = autometa.ProgressiveSearch(tmp_path / where, gin_files=(QUICK, TINY),
                                     gin_params=REAL_PARAMS, score_bindings=())
    return own.spec(cell)

  sequential = [jobs.run_job(spec(cell, "sequential"))["accuracy"] for cell in cells]
  with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                dashboard_address=None) as cluster:
    client, executor = jobs.dask_executor(cluster)
    with client:
      futures = [executor.submit(jobs.run_job, spec(cell, "dask")) for cell in cells]
      on_dask = [f.result()["accuracy"] for f in futures]
  assert sequential == on_dask == [pooled[cell.key()] for cell in cells]
  results = json.loads((tmp_path / "dask" / "candidates" / cells[0].key() /
                        "results.json").read_text())
  assert results["split"] == "val" and results["seed"] == cells[0].seed()
  assert results["deterministic"]
  # The real search wrote its ranked table and its views.
  with open(tmp_path / "pool" / "stages" / "stage_1.csv") as f:
    assert len(list(csv.DictReader(f))) == 3
  assert list((tmp_path / "pool" / "events").glob("events.out.tfevents.*"))
  # A candidate whose loss diverges fails with the Runner's reason.
  diverging = spec(cells[0], "nan")
  diverging = dataclasses.replace(diverging,
                                  gin_params=diverging.gin_params + ("INNER_LR = 1e30",))
  with pytest.raises(jobs.JobFailed, match="exited with code 1(.|\n)*diverged"):
    jobs.run_job(diverging)
