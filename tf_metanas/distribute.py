"""tf.distribute strategies for meta-learning: tasks of a meta-batch split over replicas.

Every MetaLearner runs its meta-iteration under the strategy it was built in
(`tf.distribute.get_strategy()` at construction). The meta-batch of T tasks is cut into
R contiguous slices of T / R tasks, replica r adapting tasks r*T/R .. (r+1)*T/R - 1; each
replica sums its tasks' meta-gradients (or Reptile differences), the sums are all-reduced
and divided by T, so the update is the single-device one up to float summation order.

Strategies (`make_strategy`): "default" (no distribution), "one_device", "mirrored" (all
local GPUs, or the given devices), "multi_worker" (MultiWorkerMirroredStrategy: one process
per machine, the cluster from TF_CONFIG or from `worker_hosts` + `task_index`).
"""

import json
import os

from absl import logging
import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")


class ReplicaError(ValueError):
  """A batch that cannot be split evenly over the replicas."""


def configure_cpu_devices(count):
  """Splits the host CPU into `count` logical devices (e.g. to run MirroredStrategy on a
  machine without GPUs). Must run before TensorFlow initializes its devices."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count)
  except RuntimeError as e:
    if len(tf.config.list_logical_devices("CPU")) != count:
      raise RuntimeError(f"cannot split the CPU into {count} devices after TensorFlow "
                         f"initialized its devices: {e}") from e


def _cluster_resolver(worker_hosts, task_index):
  if worker_hosts:
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": list(worker_hosts)},
         "task": {"type": "worker", "index": int(task_index)}})
  if "TF_CONFIG" not in os.environ:
    raise ValueError("multi_worker needs the cluster: set TF_CONFIG or pass worker_hosts "
                     "(--worker_hosts=host:port,...) and task_index")
  return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def make_strategy(name="default", devices=None, worker_hosts=None, task_index=0):
  """The tf.distribute.Strategy called `name` (one of STRATEGIES).

  Args:
    name: "default", "one_device", "mirrored" or "multi_worker".
    devices: devices of "one_device" (the first) or "mirrored" (default: every GPU, or
      every logical CPU device if there is no GPU).
    worker_hosts: "multi_worker": the workers' host:port, overriding TF_CONFIG.
    task_index: "multi_worker": this process's index in worker_hosts.
  """
  if name not in STRATEGIES:
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy((devices or [local_devices()[0]])[0])
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices or local_devices())
  resolver = _cluster_resolver(worker_hosts, task_index)
  strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  logging.info("multi-worker: %s %d of %d replicas", resolver.task_type, resolver.task_id,
               strategy.num_replicas_in_sync)
  return strategy


def local_devices():
  """Names of this machine's GPUs, or of its logical CPU devices if it has no GPU."""
  gpus = tf.config.list_logical_devices("GPU")
  return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def is_chief(strategy):
  """Whether this process writes checkpoints, summaries and results (single-process
  strategies: always; multi-worker: the chief, or worker 0 if there is no chief)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return (resolver.task_type == "chief" or
          (resolver.task_type == "worker" and resolver.task_id == 0 and
           "chief" not in resolver.cluster_spec().as_dict()))


def task_id(strategy):
  resolver = getattr(strategy, "cluster_resolver", None)
  return int(resolver.task_id or 0) if resolver is not None else 0


def check_divisible(count, strategy, what):
  """Raises ReplicaError unless `count` tasks split evenly over the strategy's replicas."""
  replicas = strategy.num_replicas_in_sync
  if count % replicas:
    raise ReplicaError(f"{what} = {count} tasks cannot be split evenly over {replicas} "
                       f"replicas; use a multiple of {replicas}")


def replica_task_offset(local_tasks):
  """In replica context: the meta-batch index of this replica's first task, when every
  replica holds `local_tasks` contiguous tasks (`split_tasks`); 0 outside replica context."""
  replica = tf.distribute.get_replica_context()
  return (replica.replica_id_in_sync_group if replica else 0) * local_tasks


def split_tasks(strategy, batch, what="the meta-batch"):
  """Distributes a batch of tasks (nested [tasks, ...] tensors): replica r gets the r-th of
  num_replicas contiguous slices (a PerReplica value; the batch itself for one replica)."""
  count = int(tf.nest.flatten(batch)[0].shape[0])
  check_divisible(count, strategy, what)
  local = count // strategy.num_replicas_in_sync

  def slice_for(context):
    start = context.replica_id_in_sync_group * local
    return tf.nest.map_structure(lambda t: t[start:start + local], batch)

  return strategy.experimental_distribute_values_from_function(slice_for)
