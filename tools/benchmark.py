r"""Benchmarks: forward+backward time, FLOPs and achieved GFLOP/s of a SearchNetwork next
to a large matmul's GFLOP/s measured in the same run; or, with --gin_file, a whole
configuration's meta-iterations (on synthetic images of its dataset's shape): seconds per
meta-iteration, tasks/s, peak memory, FLOPs per meta-iteration (TF profiler, on a loop-free
graph of one task times the meta-batch), GFLOP/s next to the matmul's, with and without XLA,
over 1..N mirrored replicas (each setting measured in its own process).

  python tools/benchmark.py                     # METANAS supernet, Omniglot 20-way
  python tools/benchmark.py --jit_compile       # the same under XLA
  python tools/benchmark.py --channels=16 --num_nodes=4 --op_set=DARTS --input_k=0
  python tools/benchmark.py --channels=16 --num_cells=2 --reduction_cells=1 --num_nodes=4 \
      --op_set=DARTS --input_k=0 --stem=pooled --channel_doubling --image_shape=84,84,3 \
      --num_classes=5 --batch=80 --per_op   # the T-NAS supernet on a mini-ImageNet task
  python tools/benchmark.py --gin_file=gin_configs/experiments/metanas/omniglot_20w1s.gin \
      --gin_param=Metanas.warmup_iterations=0 --iterations=3 --replicas=1,2 --xla=both \
      --append_to=BENCHMARKS.md
"""

from tf_metanas import quiet  # pylint: disable=unused-import  (drops log noise)

import json
import os
import pathlib
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from tf_metanas import configurables
from tf_metanas import distribute
from tf_metanas.data import registry
from tf_metanas.search import SearchNetwork
from tf_metanas.train import runner as runner_lib

_BATCH = flags.DEFINE_integer("batch", 20, "Images per forward+backward pass.")
_IMAGE = flags.DEFINE_list("image_shape", ["28", "28", "1"], "H, W, C of the inputs.")
_WAYS = flags.DEFINE_integer("num_classes", 20, "Classifier outputs.")
_CHANNELS = flags.DEFINE_integer("channels", 28, "C of the cells.")
_CELLS = flags.DEFINE_integer("num_cells", 4, "Cells.")
_REDUCTIONS = flags.DEFINE_list("reduction_cells", ["1", "3"], "0-based reduction cells.")
_NODES = flags.DEFINE_integer("num_nodes", 3, "Intermediate nodes per cell.")
_OP_SET = flags.DEFINE_string("op_set", "S1", "Op set.")
_INPUT_K = flags.DEFINE_integer("input_k", 2, "Inputs per combination (0: summed inputs).")
_STEM = flags.DEFINE_enum("stem", "conv", ["conv", "pooled"], "Stem (pooled: T-NAS's).")
_DOUBLING = flags.DEFINE_bool("channel_doubling", False, "Double C at reductions (DARTS).")
_ITERATIONS = flags.DEFINE_integer("iterations", 30, "Timed iterations.")
_JIT = flags.DEFINE_bool("jit_compile", False, "Compile the step with XLA.")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Size n of the n x n reference matmul.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the results as JSON here.")
_PER_OP = flags.DEFINE_bool("per_op", False,
                            "Also time each op of the op set alone at the stem's resolution.")
_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Time meta-iterations of this config.")
_GIN_PARAMS = flags.DEFINE_multi_string("gin_param", [], "Gin bindings after the files.")
_REPLICAS = flags.DEFINE_list("replicas", ["1"], "--gin_file: replica counts to measure "
                              "(MirroredStrategy over GPUs, else logical CPU devices).")
_XLA = flags.DEFINE_enum("xla", "off", ["off", "on", "both"],
                         "--gin_file: compile the meta-iteration with XLA, without, or both.")
_APPEND_TO = flags.DEFINE_string("append_to", None, "--gin_file: append a markdown section "
                                 "with the command, machine and results to this file.")


def _timed(fn, iterations):
  """Median seconds per call of fn() (results fetched to host), after two warm-up calls."""
  for _ in range(2):
    tf.nest.map_structure(lambda t: t.numpy(), fn())
  times = []
  for _ in range(iterations):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _flops(concrete_function):
  """Floating-point operations of one call, counted by the TF profiler on its graph."""
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  graph = concrete_function.graph
  return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def matmul_gflops(n, iterations):
  a = tf.random.normal((n, n))
  b = tf.random.normal((n, n))
  step = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
  return 2 * n ** 3 / _timed(step, iterations) / 1e9


def network_benchmark(network, images, labels, iterations, jit_compile):
  """Seconds, FLOPs and GFLOP/s of loss + gradients w.r.t. weights and architecture."""
  variables = network.weight_variables + network.arch_variables

  def step(x, y):
    with tf.GradientTape() as tape:
      logits = network(x, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    return tape.gradient(loss, variables)

  compiled = tf.function(step, jit_compile=jit_compile)
  flops = _flops(tf.function(step).get_concrete_function(images, labels))
  seconds = _timed(lambda: compiled(images, labels), iterations)
  return {"seconds": seconds, "flops": flops, "gflops_per_s": flops / seconds / 1e9}


def op_benchmark(op_names, shape, iterations):
  """Milliseconds of forward+backward of each op alone on a [batch, H, W, C] input."""
  from tf_metanas.search import ops as ops_lib  # pylint: disable=g-import-not-at-top
  x = tf.constant(np.random.default_rng(0).uniform(size=shape).astype("float32"))
  result = {}
  for name in op_names:
    op = ops_lib.make_op(name, shape[-1])
    op.build(shape)

    def step(op=op):
      with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(op(x, training=True) ** 2)
      return tape.gradient(loss, [x] + op.trainable_variables,
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)  # "none"

    result[name] = 1e3 * _timed(tf.function(step), iterations)
  return result


def _strategy(replicas):
  """The default strategy for one replica, else MirroredStrategy over the first `replicas`
  GPUs (or logical CPU devices split off the host CPU when there is no GPU)."""
  if replicas == 1:
    return tf.distribute.get_strategy()
  if not tf.config.list_physical_devices("GPU"):
    distribute.configure_cpu_devices(replicas)
  devices = distribute.local_devices()
  if len(devices) < replicas:
    raise app.UsageError(f"{replicas} replicas asked for, {len(devices)} devices found")
  return distribute.make_strategy("mirrored", devices=devices[:replicas])


def _peak_memory_bytes():
  """Peak GPU memory of the first GPU, else the process's peak resident memory."""
  if tf.config.list_physical_devices("GPU"):
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def meta_iteration_benchmark(gin_files, gin_params, iterations, replicas=1, xla=False):
  """Seconds per meta-iteration (median, after the first call, which traces), tasks/s,
  peak memory, FLOPs per meta-iteration and GFLOP/s of a config, on synthetic images of
  its dataset's shape, under `replicas` mirrored replicas, with or without XLA."""
  strategy = _strategy(replicas)
  configurables.parse(gin_files, gin_params)
  shape = registry.IMAGE_SHAPES[gin.query_parameter("load_splits.name")]
  learner_name = gin.query_parameter("Runner.learner").selector
  configurables.parse([], [f"load_splits.synthetic_image_shape = {shape}",
                           f"{learner_name}.jit_compile = {xla}"])
  with tempfile.TemporaryDirectory() as model_dir, strategy.scope():
    runner = runner_lib.Runner(model_dir=model_dir)
  learner, batch_size = runner.learner, runner.meta_batch_size
  streams = {name: iter(sampler.dataset(batch_size)) for name, sampler in runner.streams.items()}
  data = iter(lambda: {name: next(stream) for name, stream in streams.items()}, None)
  batch = next(data)
  task = tf.nest.map_structure(lambda t: t[0], batch)  # one task of every stream
  plan = learner.plan()
  task_fn = tf.function(lambda t: learner.task_directions(t, unroll=True, plan=plan),
                        autograph=False)
  flops = batch_size * _flops(task_fn.get_concrete_function(task))
  start = time.perf_counter()
  learner.train_step(batch)
  first = time.perf_counter() - start
  times = []
  for _ in range(iterations):
    batch = next(data)
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), learner.train_step(batch))
    times.append(time.perf_counter() - start)
  seconds = float(np.median(times))
  return {"config": gin_files, "bindings": gin_params, "replicas": replicas, "xla": xla,
          "seconds_per_meta_iteration": seconds,
          "tasks_per_second": batch_size * len(streams) / seconds,
          "all_seconds": times, "first_call_seconds": first,
          "flops_per_meta_iteration": flops, "gflops_per_s": flops / seconds / 1e9,
          "peak_memory_bytes": _peak_memory_bytes(), "parameters": runner.parameter_count,
          "meta_batch_size": batch_size, "warmup": plan.warmup,
          "first_order": learner.first_order_now(),
          "environment": _environment()}


def _measure_in_child(replicas, xla):
  """Runs one (replicas, XLA) measurement in a fresh process (devices are configured once
  per process, and peak memory is per process); returns its result, or a record of its
  failure (the last lines of its output) so that the other settings still get reported."""
  with tempfile.TemporaryDirectory() as scratch:
    output = pathlib.Path(scratch) / "result.json"
    command = [sys.executable, __file__, f"--iterations={_ITERATIONS.value}",
               f"--matmul_size={_MATMUL.value}", f"--replicas={replicas}",
               f"--xla={'on' if xla else 'off'}", f"--output={output}"]
    command += [f"--gin_file={f}" for f in _GIN_FILES.value]
    command += [f"--gin_param={p}" for p in _GIN_PARAMS.value]
    logging.info("measuring %d replica(s), XLA %s", replicas, "on" if xla else "off")
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    if run.returncode:
      error = [line for line in run.stderr.splitlines() if line.strip()][-1:]
      logging.error("%d replica(s), XLA %s failed:\n%s", replicas, "on" if xla else "off",
                    run.stderr[-5000:])
      return {"config": _GIN_FILES.value, "replicas": replicas, "xla": xla,
              "failed": error[0][:300] if error else f"exit status {run.returncode}"}
    return json.loads(output.read_text())[0]


def _environment():
  """The environment variables that change TensorFlow's CPU speed, as set."""
  return {k: os.environ[k] for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                                     "TF_ENABLE_ONEDNN_OPTS") if k in os.environ}


def _machine():
  cpu = next((line.split(":", 1)[1].strip() for line in
              pathlib.Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")), platform.processor())
  memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
  gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
          for g in tf.config.list_physical_devices("GPU")]
  return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB" +
          (f", GPUs: {', '.join(gpus)}" if gpus else ", no GPU") +
          f"; TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
          f"{platform.python_version()}")


def markdown_report(results, command):
  """A BENCHMARKS.md section: command, machine, versions, one row per measurement."""
  base = {r["replicas"]: r["seconds_per_meta_iteration"] for r in results
          if not r["xla"] and "failed" not in r}
  lines = [f"### `{' '.join(results[0]['config'])}` ({time.strftime('%Y-%m-%d')})", "",
           f"Command: `{command}`", f"Machine: {_machine()}",
           "Environment: " + (", ".join(f"{k}={v}" for k, v in _environment().items())
                              or "TensorFlow's defaults"), "",
           "| replicas | XLA | s / meta-iteration | tasks / s | first call (s) | peak memory "
           "(GiB) | GFLOP / meta-iteration | GFLOP/s | matmul GFLOP/s | of matmul | speed-up "
           "vs 1 replica |", "|---" * 11 + "|"]
  for r in results:
    if "failed" in r:
      lines.append(f"| {r['replicas']} | {'on' if r['xla'] else 'off'} | failed: "
                   f"`{r['failed']}` |" + " |" * 8)
      continue
    speedup = base.get(1, float("nan")) / r["seconds_per_meta_iteration"]
    lines.append(
        f"| {r['replicas']} | {'on' if r['xla'] else 'off'} | "
        f"{r['seconds_per_meta_iteration']:.3f} | {r['tasks_per_second']:.2f} | "
        f"{r['first_call_seconds']:.1f} | {r['peak_memory_bytes'] / 2 ** 30:.2f} | "
        f"{r['flops_per_meta_iteration'] / 1e9:.1f} | {r['gflops_per_s']:.1f} | "
        f"{r['matmul_gflops_per_s']:.1f} | {r['gflops_per_s'] / r['matmul_gflops_per_s']:.0%}"
        f" | {speedup:.2f}x |")
  return "\n".join(lines) + "\n"


def _meta_iteration_main():
  """--gin_file mode: one measurement per (replicas, XLA) setting, each in a child process
  unless a single one is asked for; optionally appended to BENCHMARKS.md."""
  settings = [(int(r), x) for r in _REPLICAS.value
              for x in {"off": [False], "on": [True], "both": [False, True]}[_XLA.value]]
  if len(settings) == 1:
    results = [meta_iteration_benchmark(_GIN_FILES.value, _GIN_PARAMS.value,
                                        _ITERATIONS.value, *settings[0])]
    results[0]["matmul_gflops_per_s"] = matmul_gflops(_MATMUL.value, _ITERATIONS.value)
  else:
    results = [_measure_in_child(r, x) for r, x in settings]
  for r in (r for r in results if "failed" not in r):
    logging.info("%d replica(s), XLA %s: %.2f s per meta-iteration (%.2f tasks/s; first call "
                 "%.1f s), %.1f GFLOP, %.1f GFLOP/s (matmul %.1f), peak memory %.2f GiB",
                 r["replicas"], "on" if r["xla"] else "off", r["seconds_per_meta_iteration"],
                 r["tasks_per_second"], r["first_call_seconds"],
                 r["flops_per_meta_iteration"] / 1e9, r["gflops_per_s"],
                 r["matmul_gflops_per_s"], r["peak_memory_bytes"] / 2 ** 30)
  if _OUTPUT.value:
    pathlib.Path(_OUTPUT.value).write_text(json.dumps(results, indent=2))
  if _APPEND_TO.value:
    command = " ".join([f"{k}={v}" for k, v in _environment().items()] +
                     ["python tools/benchmark.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    with open(_APPEND_TO.value, "a") as f:
      f.write("\n" + markdown_report(results, command))


def main(argv):
  del argv
  if _GIN_FILES.value:
    _meta_iteration_main()
    return
  shape = tuple(int(s) for s in _IMAGE.value)
  network = SearchNetwork(num_classes=_WAYS.value, channels=_CHANNELS.value,
                          num_cells=_CELLS.value,
                          reduction_cells=tuple(int(r) for r in _REDUCTIONS.value),
                          num_nodes=_NODES.value, op_set=_OP_SET.value, input_k=_INPUT_K.value,
                          stem=_STEM.value, channel_doubling=_DOUBLING.value)
  network.build((None,) + shape)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(size=(_BATCH.value,) + shape).astype("float32"))
  labels = tf.constant(rng.integers(0, _WAYS.value, size=_BATCH.value).astype("int32"))
  result = network_benchmark(network, images, labels, _ITERATIONS.value, _JIT.value)
  result["matmul_gflops_per_s"] = matmul_gflops(_MATMUL.value, _ITERATIONS.value)
  if _PER_OP.value:
    cells_hw = shape[:2] if _STEM.value == "conv" else tuple(-(-s // 4) for s in shape[:2])
    result["per_op_ms"] = op_benchmark(network.op_names, (_BATCH.value,) + cells_hw +
                                       (_CHANNELS.value,), _ITERATIONS.value)
    logging.info("per op (forward+backward, ms): %s", result["per_op_ms"])
  result["parameters"] = int(sum(np.prod(v.shape) for v in network.weight_variables))
  result.update(batch=_BATCH.value, image_shape=shape, jit_compile=_JIT.value,
                device=tf.config.list_logical_devices()[-1].device_type,
                threads=tf.config.threading.get_intra_op_parallelism_threads())
  logging.info("forward+backward %.1f ms, %.3f GFLOP, %.2f GFLOP/s (matmul %.1f GFLOP/s), "
               "%d weights", 1e3 * result["seconds"], result["flops"] / 1e9,
               result["gflops_per_s"], result["matmul_gflops_per_s"], result["parameters"])
  logging.info("result: %s", json.dumps(result))
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
