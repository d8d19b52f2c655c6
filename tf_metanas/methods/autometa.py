"""Auto-Meta (Kim et al. 2018): progressive architecture search (PNAS) around Reptile, each
candidate scored by its own job.

Stage 1 scores every 1-block cell (`search.blocks`). Stage b > 1 expands the `beam_size` (K)
best-scored cells of stage b - 1 by one block, ranks every expansion with the surrogate
(`methods.surrogate`, trained on every score so far) and scores the K it ranks highest; up
to `max_blocks` (B). The best-scored cell of the whole search is then retrained at the final
budget and meta-tested once.

A candidate's score: its network (`autometa_network` with the cell) meta-trained by the gin
files' configuration (Reptile, Table A1), then its accuracy on meta-*validation* tasks
(`Runner.test_split = "val"`). The paper scores candidates on meta-test tasks and reports
the best cell's accuracy on that same meta-test, which selects the architecture on the test
tasks and leaks them into the result; here the search never sees a test task.

Every candidate is a `jobs.JobSpec` run by an executor (`jobs.LocalExecutor`, Dask): its
seed comes from its cell (`BlockCell.seed`) and it runs deterministically, so a candidate
scores the same wherever it runs. The search keeps everything in search_dir, and a killed
search resumes where it stopped: scored and failed candidates are never run again (a
failed one is recorded with its error, never retried), a candidate killed mid-training
resumes from its checkpoint.

  search_dir/
    .lock                     held by the one search process (`train.lock`)
    search_config.json        what the search was started with (a resume must match)
    stages/stage_<b>.json     the candidates chosen for stage b, with predicted scores
    stages/stage_<b>.csv      the stage's ranked table (also stage_<b>_ranked.json)
    candidates/<key>/         a candidate's model_dir; score.json or failed.json
    final/                    the best cell's final run (results.json: the meta-test)
    events/                   TensorBoard (`train.search_views`)
    search_results.json       best cell, stages, rank correlations, final meta-test
"""

import concurrent.futures as cf
import csv
import json
import math
import pathlib
import time

from absl import logging
import gin

from tf_metanas import checks
from tf_metanas import jobs
from tf_metanas.methods import surrogate as surrogate_lib
from tf_metanas.search import blocks
from tf_metanas.search import ops as ops_lib
from tf_metanas.train import lock
from tf_metanas.train import search_views

_NETWORK = "tf_metanas.search.autometa_network"
_COLUMNS = ("rank", "key", "cell", "blocks", "depth", "predicted", "score", "ci95",
            "parameters", "train_seconds", "status", "error")


class SearchConfigMismatchError(ValueError):
  """A resume with another configuration than the stored search's."""


# Errors that say what is wrong and what would work: tools/search.py logs them and exits 1.
SEARCH_ERRORS = (SearchConfigMismatchError, lock.ModelDirLockedError, checks.ConfigValueError,
                 jobs.JobFailed)


def _check_network():
  """The candidates' gin config must build `autometa_network` (else every candidate would
  train the same network, whatever its cell)."""
  try:
    network = gin.query_parameter("tf_metanas.train.Runner.network")
  except ValueError:
    network = None
  if not str(getattr(network, "selector", "")).endswith("autometa_network"):
    raise checks.ConfigValueError(
        f"Runner.network = {network!r}: an Auto-Meta search trains @autometa_network with "
        f"each candidate's cell; include gin_configs/methods/autometa.gin")


@gin.configurable(module="tf_metanas.methods")
class ProgressiveSearch:
  """The search (module docstring).

  Args:
    search_dir: where the search keeps everything (a path every worker can write).
    gin_files: the candidates' gin files (the search binary passes its own --gin_file), made
      absolute where they exist from here; others resolve against the repository.
    gin_params: bindings after them (the binary's --gin_param).
    op_set: the blocks' ops (a name of `search.ops.OP_SETS`, default Auto-Meta's "PNAS",
      or a tuple of op names).
    max_blocks: B (5).
    beam_size: K, the cells kept and scored per stage (100).
    score_bindings: extra bindings of the scoring jobs (e.g. fewer test tasks).
    final_bindings: extra bindings of the final job (e.g. the paper's budget).
    threads_per_job: each job's threads (`JobSpec.threads`).
    surrogate: callable (op_names, max_blocks) -> `Surrogate`.
    job_command: the jobs' program (default: `python -m tf_metanas.train.main`).
    run_final: retrain and meta-test the best cell at the end.
  """

  def __init__(self, search_dir, gin_files=(), gin_params=(), op_set="PNAS", max_blocks=5,
               beam_size=100, score_bindings=(), final_bindings=(), threads_per_job=1,
               surrogate=surrogate_lib.Surrogate, job_command=None, run_final=True):
    # Absolute paths: a job may run in another working directory (a Dask worker).
    self.search_dir = pathlib.Path(search_dir).absolute()
    self.gin_files = tuple(str(pathlib.Path(f).absolute()) if pathlib.Path(f).exists() else f
                           for f in gin_files)
    self.gin_params = tuple(gin_params)
    self.op_names = ops_lib.op_set(op_set)
    self.max_blocks = checks.count("ProgressiveSearch.max_blocks", max_blocks)
    self.beam_size = checks.count("ProgressiveSearch.beam_size", beam_size)
    self.score_bindings, self.final_bindings = tuple(score_bindings), tuple(final_bindings)
    self.threads_per_job = checks.count("ProgressiveSearch.threads_per_job", threads_per_job)
    self.surrogate = surrogate(op_names=self.op_names, max_blocks=self.max_blocks)
    self.job_command = tuple(job_command) if job_command else None
    self.run_final = bool(run_final)
    self.jobs_run = 0  # jobs this process submitted (resumes skip the scored ones)

  def config(self):
    """What a resume must match."""
    return {"gin_files": list(self.gin_files), "gin_params": list(self.gin_params),
            "op_names": list(self.op_names), "max_blocks": self.max_blocks,
            "beam_size": self.beam_size, "score_bindings": list(self.score_bindings),
            "final_bindings": list(self.final_bindings),
            "threads_per_job": self.threads_per_job}

  def _check_config(self):
    path = self.search_dir / "search_config.json"
    if path.exists():
      stored = json.loads(path.read_text())
      changed = sorted(k for k in set(stored) | set(self.config())
                       if stored.get(k) != self.config().get(k))
      if changed:
        raise SearchConfigMismatchError(
            f"{self.search_dir} holds a search of another configuration (changed: "
            f"{', '.join(changed)}; stored in {path}); resuming would mix the two. Use a "
            f"new --search_dir, or the stored configuration")
    else:
      path.write_text(json.dumps(self.config(), indent=2))

  def spec(self, cell, final=False):
    """The job of `cell`: scoring on meta-validation, or the final meta-test."""
    bindings = self.final_bindings if final else self.score_bindings
    model_dir = self.search_dir / ("final" if final else f"candidates/{cell.key()}")
    own = (f"{_NETWORK}.cell = '{cell.to_json()}'", f"Runner.seed = {cell.seed()}",
           f"Runner.test_split = \"{'test' if final else 'val'}\"")
    return jobs.JobSpec(name=f"{'final' if final else 'candidate'} {cell.key()}",
                        model_dir=str(model_dir), gin_files=self.gin_files,
                        gin_params=bindings + self.gin_params + own,
                        threads=self.threads_per_job, command=self.job_command)

  def run(self, executor):
    """Runs (or resumes) the search on `executor` (a concurrent.futures executor); returns
    search_results.json's content."""
    _check_network()
    self.search_dir.mkdir(parents=True, exist_ok=True)
    with lock.ModelDirLock(self.search_dir):
      self._check_config()
      views = search_views.SearchViews(self.search_dir / "events")
      try:
        return self._search(executor, views)
      finally:
        views.close()

  def _search(self, executor, views):
    records, stages = {}, []
    for stage in range(1, self.max_blocks + 1):
      chosen = self._choose(stage, stages, records)
      if not chosen:
        logging.warning("stage %d: every candidate of stage %d failed, nothing to expand; the "
                        "search ends here", stage, stage - 1)
        break
      self._score(executor, stage, chosen, records)
      rows = self._rank(chosen, records)
      self._write_table(stage, rows)
      stages.append(self._stage_summary(stage, rows))
      views.write_stage(stage, rows, stages, self.beam_size)
      logging.info("stage %d/%d done: %d scored, %d failed, best %s, rank correlation %s",
                   stage, self.max_blocks, stages[-1]["scored"], stages[-1]["failed"],
                   _format(stages[-1]["best_score"]), _format(stages[-1]["spearman"]))
    best = max((r for r in records.values() if r["status"] == "ok"),
               key=lambda r: (r["score"], r["key"]), default=None)
    if best is None:
      raise jobs.JobFailed(f"every candidate of the search failed; see the failed.json of "
                           f"each in {self.search_dir / 'candidates'}")
    cell = blocks.BlockCell.from_dict(best["cell"])
    summary = {"best_cell": best["cell"], "best_summary": best["summary"],
               "best_score": best["score"], "best_stage": best["stage"],
               "best_genotype": cell.genotype().to_dict(), "score_split": "val",
               "stages": stages}
    if self.run_final:
      summary["final"] = self._final(executor, cell)
    summary["jobs_run"] = self.jobs_run
    views.write_final(summary)
    (self.search_dir / "search_results.json").write_text(json.dumps(summary, indent=2))
    return summary

  def _choose(self, stage, stages, records):
    """The candidates of `stage` ([(cell, predicted or None)]), stored in stage_<b>.json the
    first time so that a resume scores the same ones."""
    path = self.search_dir / "stages" / f"stage_{stage}.json"
    if path.exists():
      stored = json.loads(path.read_text())
      return [(blocks.BlockCell.from_dict(c["cell"]), c["predicted"]) for c in stored]
    if stage == 1:
      chosen = [(cell, None) for cell in blocks.first_cells(self.op_names)]
    else:
      kept = [blocks.BlockCell.from_dict(r["cell"]) for r in stages[-1]["ranked"]
              if r["status"] == "ok"][:self.beam_size]
      if not kept:
        return []
      expanded = blocks.expand_all(kept, self.op_names)
      scored = [r for r in records.values() if r["status"] == "ok"]
      loss = self.surrogate.fit([blocks.BlockCell.from_dict(r["cell"]) for r in scored],
                                [r["score"] for r in scored])
      predicted = self.surrogate.predict(expanded)
      order = sorted(range(len(expanded)), key=lambda k: (-predicted[k], expanded[k].key()))
      chosen = [(expanded[k], float(predicted[k])) for k in order[:self.beam_size]]
      logging.info("stage %d: %d expansions of %d cells ranked by the surrogate (trained on "
                   "%d scores, L1 %.4f); scoring the top %d", stage, len(expanded), len(kept),
                   len(scored), loss, len(chosen))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"cell": c.to_dict(), "key": c.key(), "predicted": p}
                                for c, p in chosen], indent=2))
    return chosen

  def _score(self, executor, stage, chosen, records):
    """Scores the stage's candidates that have no record yet, in parallel; records each."""
    pending = {}
    for cell, predicted in chosen:
      record = self._stored_record(cell)
      if record is None:
        pending[executor.submit(jobs.run_job, self.spec(cell))] = (cell, predicted)
        self.jobs_run += 1
      else:
        records[cell.key()] = {**record, "predicted": predicted}
    done, began = len(chosen) - len(pending), time.perf_counter()
    if not pending:
      return
    logging.info("stage %d/%d: scoring %d candidates (%d already scored)", stage,
                 self.max_blocks, len(pending), done)
    for finished, future in enumerate(cf.as_completed(pending), start=1):
      cell, predicted = pending[future]
      record = self._record(cell, stage, future)
      records[cell.key()] = {**record, "predicted": predicted}
      best = max((r["score"] for r in records.values() if r["status"] == "ok"),
                 default=float("nan"))
      eta = (time.perf_counter() - began) / finished * (len(pending) - finished)
      logging.info("stage %d/%d: %d/%d candidates done  %s  %s  best so far %.4f  stage "
                   "ETA %.0f s", stage, self.max_blocks, done + finished, len(chosen),
                   cell.key(), ("score %.4f" % record["score"]) if record["status"] == "ok"
                   else "FAILED", best, eta)

  def _stored_record(self, cell):
    directory = self.search_dir / "candidates" / cell.key()
    for name in ("score.json", "failed.json"):
      if (directory / name).exists():
        return json.loads((directory / name).read_text())
    return None

  def _record(self, cell, stage, future):
    """The candidate's record from its finished job, written to score.json (scored) or
    failed.json (the job's error)."""
    base = {"key": cell.key(), "cell": cell.to_dict(), "summary": cell.summary(),
            "blocks": cell.num_blocks, "depth": cell.depth(), "stage": stage}
    try:
      results = future.result()
      record = {**base, "status": "ok", "score": results["accuracy"], "ci95": results["ci95"],
                "parameters": results["parameters"],
                "train_seconds": results["train_seconds"], "protocol": results["protocol"]}
      name = "score.json"
    except Exception as e:  # pylint: disable=broad-except
      # A failed candidate (crash, NaN, bad binding) is recorded, never retried.
      logging.warning("candidate %s (%s) failed: %s", cell.key(), cell.summary(), e)
      record = {**base, "status": "failed", "error": str(e)}
      name = "failed.json"
    directory = self.search_dir / "candidates" / cell.key()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(record, indent=2))
    return record

  def _rank(self, chosen, records):
    """The stage's records, scored ones by score (best first), then the failed ones."""
    rows = [records[cell.key()] for cell, _ in chosen]
    rows.sort(key=lambda r: (r["status"] != "ok", -r.get("score", 0.0), r["key"]))
    return [{**r, "rank": k + 1} for k, r in enumerate(rows)]

  def _write_table(self, stage, rows):
    directory = self.search_dir / "stages"
    (directory / f"stage_{stage}_ranked.json").write_text(json.dumps(rows, indent=2))
    with open(directory / f"stage_{stage}.csv", "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=_COLUMNS, extrasaction="ignore")
      writer.writeheader()
      for row in rows:
        writer.writerow({**row, "cell": row["summary"]})

  def _stage_summary(self, stage, rows):
    """The stage in search_results.json: counts, best score, the surrogate's Spearman rank
    correlation between predicted and measured scores (stages > 1; None where it is not
    defined: stage 1, or scores all equal), the ranking."""
    scored = [r for r in rows if r["status"] == "ok"]
    correlation = (surrogate_lib.spearman([r["predicted"] for r in scored],
                                          [r["score"] for r in scored]) if stage > 1
                   else float("nan"))
    return {"stage": stage, "candidates": len(rows), "scored": len(scored),
            "failed": len(rows) - len(scored),
            "best_score": max((r["score"] for r in scored), default=None),
            "spearman": None if math.isnan(correlation) else correlation,
            "ranked": [{k: r.get(k) for k in ("rank", "key", "cell", "summary", "depth",
                                              "predicted", "score", "status")} for r in rows]}

  def _final(self, executor, cell):
    """The best cell retrained at the final budget and meta-tested (final/results.json)."""
    results_path = self.search_dir / "final" / "results.json"
    if results_path.exists():
      return json.loads(results_path.read_text())
    logging.info("final: retraining the best cell %s (%s) and meta-testing it", cell.key(),
                 cell.summary())
    self.jobs_run += 1
    return executor.submit(jobs.run_job, self.spec(cell, final=True)).result()


def _format(value):
  return "-" if value is None else f"{value:.4f}"
