r"""Benchmarks: forward+backward time, FLOPs and achieved GFLOP/s of a SearchNetwork next
to a large matmul's GFLOP/s measured in the same run; or, with --gin_file, seconds per
meta-iteration of a whole configuration (on synthetic images of its dataset's shape).

  python tools/benchmark.py                     # METANAS supernet, Omniglot 20-way
  python tools/benchmark.py --jit_compile       # the same under XLA
  python tools/benchmark.py --channels=16 --num_nodes=4 --op_set=DARTS --input_k=0
  python tools/benchmark.py --gin_file=gin_configs/experiments/metanas/omniglot_20w1s.gin \
      --gin_param=Metanas.warmup_iterations=0 --iterations=3
"""

import json
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import gin
import numpy as np
import tensorflow as tf

from tf_metanas import configurables
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
_ITERATIONS = flags.DEFINE_integer("iterations", 30, "Timed iterations.")
_JIT = flags.DEFINE_bool("jit_compile", False, "Compile the step with XLA.")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Size n of the n x n reference matmul.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the results as JSON here.")
_PER_OP = flags.DEFINE_bool("per_op", False,
                            "Also time each op of the op set alone at the stem's resolution.")
_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Time meta-iterations of this config.")
_GIN_PARAMS = flags.DEFINE_multi_string("gin_param", [], "Gin bindings after the files.")


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
      return tape.gradient(loss, [x] + op.trainable_variables)

    result[name] = 1e3 * _timed(tf.function(step), iterations)
  return result


def meta_iteration_benchmark(gin_files, gin_params, iterations):
  """Seconds per meta-iteration (median, after the first call, which traces) of a config."""
  configurables.parse(gin_files, gin_params)
  shape = registry.IMAGE_SHAPES[gin.query_parameter("load_splits.name")]
  configurables.parse([], [f"load_splits.synthetic_image_shape = {shape}"])
  with tempfile.TemporaryDirectory() as model_dir:
    runner = runner_lib.Runner(model_dir=model_dir)
    data = iter(runner.samplers["train"].dataset(runner.meta_batch_size))
    start = time.perf_counter()
    runner.learner.train_step(next(data))
    first = time.perf_counter() - start
    times = []
    for _ in range(iterations):
      batch = next(data)
      start = time.perf_counter()
      tf.nest.map_structure(lambda t: t.numpy(), runner.learner.train_step(batch))
      times.append(time.perf_counter() - start)
  seconds = float(np.median(times))
  return {"config": gin_files, "bindings": gin_params, "seconds_per_meta_iteration": seconds,
          "tasks_per_second": runner.meta_batch_size / seconds, "all_seconds": times,
          "first_call_seconds": first, "parameters": runner.parameter_count,
          "meta_batch_size": runner.meta_batch_size,
          "threads": tf.config.threading.get_intra_op_parallelism_threads()}


def main(argv):
  del argv
  if _GIN_FILES.value:
    result = meta_iteration_benchmark(_GIN_FILES.value, _GIN_PARAMS.value, _ITERATIONS.value)
    logging.info("%.2f s per meta-iteration (%.2f tasks/s; first call, tracing included, "
                 "%.1f s)", result["seconds_per_meta_iteration"], result["tasks_per_second"],
                 result["first_call_seconds"])
    logging.info("result: %s", json.dumps(result))
    if _OUTPUT.value:
      with open(_OUTPUT.value, "w") as f:
        json.dump(result, f, indent=2)
    return
  shape = tuple(int(s) for s in _IMAGE.value)
  network = SearchNetwork(num_classes=_WAYS.value, channels=_CHANNELS.value,
                          num_cells=_CELLS.value,
                          reduction_cells=tuple(int(r) for r in _REDUCTIONS.value),
                          num_nodes=_NODES.value, op_set=_OP_SET.value, input_k=_INPUT_K.value)
  network.build((None,) + shape)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(size=(_BATCH.value,) + shape).astype("float32"))
  labels = tf.constant(rng.integers(0, _WAYS.value, size=_BATCH.value).astype("int32"))
  result = network_benchmark(network, images, labels, _ITERATIONS.value, _JIT.value)
  result["matmul_gflops_per_s"] = matmul_gflops(_MATMUL.value, _ITERATIONS.value)
  if _PER_OP.value:
    result["per_op_ms"] = op_benchmark(network.op_names, (_BATCH.value,) + shape[:2] +
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
