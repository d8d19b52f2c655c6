"""Jobs: a training run as a value, run as its own process, and the executors that run many.

A `JobSpec` names gin files, bindings and a model_dir; `run_job(spec)` runs it as a fresh
process (`python -m tf_metanas.train.main`, the binary tools/train.py), which writes its
results.json (`Runner.test`'s schema) before it exits, and returns those results. A fresh
process per job isolates what a job leaves behind: TensorFlow's graphs and memory, and a
crash (a segfault fails that job, not the pool). A job that exits non-zero, or without
results.json, raises JobFailed with the tail of its log (model_dir/job.log).

Executors are `concurrent.futures.Executor`s: `executor.submit(run_job, spec)` returns a
`concurrent.futures.Future`, the same for every executor, so code that runs jobs does not
know where they run:

- `LocalExecutor(workers)`: a pool of job slots on this machine. Each running job is its own
  process; a slot is one device (CUDA_VISIBLE_DEVICES) or one share of the CPU cores.
- Dask distributed (`pip install -e '.[dask]'`): `dask_executor("tcp://host:8786")` returns
  a `Client.get_executor()` of a running cluster, whose workers run the same `run_job`.

Same results everywhere: a job's thread counts are part of its spec (`threads`: TensorFlow's
intra- and inter-op threads, OpenMP's), never the executor's, and with `deterministic` the
job runs with op determinism and oneDNN off (`tf_metanas.determinism`), so a spec scores
the same run alone, in the pool or on a cluster.
"""

import concurrent.futures as cf
import ctypes
import dataclasses
import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading

from tf_metanas import determinism

LOG_NAME = "job.log"
_LOG_TAIL_LINES = 30


class JobFailed(RuntimeError):
  """A job exited non-zero or without its results."""


@dataclasses.dataclass(frozen=True)
class JobSpec:
  """A training run: tools/train.py's flags as a value.

  Attributes:
    name: what progress lines and errors call the job.
    model_dir: the run's --model_dir (a path every worker of the executor can write).
    gin_files: --gin_file values, parsed in order.
    gin_params: --gin_param bindings, after the files.
    threads: intra-op, inter-op and OpenMP threads of the job (None: TensorFlow's default,
      every core); part of the spec so that its results do not depend on where it runs.
    deterministic: --deterministic (op determinism, oneDNN off).
    command: the program and its first arguments (default: this interpreter running
      `-m tf_metanas.train.main`, resolved where the job runs).
  """

  name: str
  model_dir: str
  gin_files: tuple = ()
  gin_params: tuple = ()
  threads: int | None = 1
  deterministic: bool = True
  command: tuple | None = None

  def argv(self):
    command = list(self.command or (sys.executable, "-m", "tf_metanas.train.main"))
    return (command + [f"--gin_file={f}" for f in self.gin_files]
            + [f"--gin_param={p}" for p in self.gin_params]
            + [f"--model_dir={self.model_dir}"]
            + (["--deterministic"] if self.deterministic else []))

  def environment(self):
    """The job's environment: this process's, with the slot's device, the thread counts and,
    when deterministic, oneDNN off."""
    env = dict(os.environ)
    env.update(getattr(_SLOT, "env", {}))
    if self.threads:
      for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        env[name] = str(self.threads)
    if self.deterministic:
      env[determinism.ONEDNN_VARIABLE] = "0"
    return env


# prctl, resolved before any fork: the child calls it with no imports or allocation.
_PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG, _SIGKILL = 1, int(signal.SIGKILL)


def _die_with_parent():
  """In the child before exec: the kernel kills the job when the thread that started it
  dies (a killed search leaves no orphan job holding its candidate's model_dir)."""
  _PRCTL(_PR_SET_PDEATHSIG, _SIGKILL)


def run_job(spec):
  """Runs `spec` as its own process (its output appended to model_dir/job.log); returns its
  results.json as a dict.

  Raises:
    JobFailed: the process exited non-zero (the log's last lines say why: a diverged loss,
      a bad binding, a crash) or wrote no results.json.
  """
  model_dir = pathlib.Path(spec.model_dir)
  model_dir.mkdir(parents=True, exist_ok=True)
  log_path = model_dir / LOG_NAME
  with open(log_path, "ab") as log:
    process = subprocess.run(spec.argv(), stdout=log, stderr=subprocess.STDOUT,
                             env=spec.environment(), check=False,
                             preexec_fn=_die_with_parent if _PRCTL else None)
  if process.returncode != 0:
    reason = (f"killed by signal {-process.returncode}" if process.returncode < 0
              else f"exited with code {process.returncode}")
    raise JobFailed(f"job {spec.name} {reason}; the end of {log_path}:\n{_tail(log_path)}")
  results = model_dir / "results.json"
  if not results.exists():
    raise JobFailed(f"job {spec.name} exited 0 without writing {results}; the end of "
                    f"{log_path}:\n{_tail(log_path)}")
  return json.loads(results.read_text())


def _tail(path):
  lines = path.read_text(errors="replace").splitlines()
  return "\n".join(lines[-_LOG_TAIL_LINES:])


_SLOT = threading.local()


class LocalExecutor(cf.Executor):
  """Runs jobs on this machine, `workers` at a time (each job its own process).

  Args:
    workers: job slots (default: one per GPU of `devices`, else the cores divided by
      `threads_per_job`, at least 1). One worker runs the jobs one after the other.
    threads_per_job: the threads each job uses (its JobSpec.threads): the default number of
      workers does not oversubscribe the cores.
    devices: GPU indices; slot k runs its jobs with CUDA_VISIBLE_DEVICES = devices[k].
  """

  def __init__(self, workers=None, threads_per_job=1, devices=None):
    if devices:
      envs = [{"CUDA_VISIBLE_DEVICES": str(d)} for d in devices]
    else:
      workers = workers or max(1, (os.cpu_count() or 1) // max(1, threads_per_job))
      envs = [{} for _ in range(workers)]
    if workers and len(envs) != workers:
      raise ValueError(f"workers = {workers} but {len(envs)} devices: one worker per device")
    self.workers = len(envs)
    self._slots = queue.Queue()
    for env in envs:
      self._slots.put(env)
    self._pool = cf.ThreadPoolExecutor(max_workers=self.workers,
                                       thread_name_prefix="tf_metanas_job")

  def _in_slot(self, fn, args, kwargs):
    env = self._slots.get()
    _SLOT.env = env
    try:
      return fn(*args, **kwargs)
    finally:
      _SLOT.env = {}
      self._slots.put(env)

  def submit(self, fn, /, *args, **kwargs):
    return self._pool.submit(self._in_slot, fn, args, kwargs)

  def shutdown(self, wait=True, *, cancel_futures=False):
    self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def dask_executor(scheduler, resources=None):
  """A concurrent.futures executor on the Dask cluster at `scheduler` (an address such as
  "tcp://host:8786", or a `distributed.LocalCluster`).

  Every worker must have tf_metanas installed and see the gin files and model_dirs at the
  paths the specs give (a shared filesystem, or the same checkout on every machine).

  Args:
    scheduler: the scheduler's address or a cluster object.
    resources: Dask resources each job takes, e.g. {"GPU": 1} for workers started with
      `dask worker --resources GPU=1` (one job per GPU at a time).

  Returns:
    (client, executor): close the client when done.

  Raises:
    ImportError: Dask distributed is not installed, naming the extra that installs it.
  """
  try:
    from dask import distributed  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the Dask executor needs Dask distributed: pip install -e '.[dask]' "
                      "(or pip install 'dask[distributed]')") from e
  client = distributed.Client(scheduler)
  kwargs = {"pure": False}  # a resubmitted job runs again
  if resources:
    kwargs["resources"] = dict(resources)
  return client, client.get_executor(**kwargs)
