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

from tf_metanas.choices import STRATEGIES


class ReplicaError(ValueError):
  """A batch that cannot be split evenly over the replicas."""


class DeviceError(ValueError):
  """Devices asked for (`--devices`) that this process does not have."""


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
      every logical CPU device if there is no GPU); each must exist in this process.
    worker_hosts: "multi_worker": the workers' host:port, overriding TF_CONFIG.
    task_index: "multi_worker": this process's index in worker_hosts.

  Raises:
    ValueError: an unknown strategy, or "multi_worker" without a cluster.
    DeviceError: a device this process does not have.
  """
  if name not in STRATEGIES:
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
  if name == "default":
    return tf.distribute.get_strategy()
  if devices:
    check_devices(devices)
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy((devices or [local_devices()[0]])[0])
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices or _default_mirrored_devices())
  resolver = _cluster_resolver(worker_hosts, task_index)
  strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  logging.info("multi-worker: %s %d of %d replicas", resolver.task_type, resolver.task_id,
               strategy.num_replicas_in_sync)
  return strategy


def _short_name(device):
  """"/job:localhost/replica:0/task:0/device:CPU:1" -> "/cpu:1" (as --devices takes it)."""
  spec = tf.DeviceSpec.from_string(device)
  return f"/{spec.device_type.lower()}:{spec.device_index}"


def _device_key(device):
  """(type, index) of a device name, e.g. ("CPU", 5) for "/cpu:5"; index None for "/cpu"."""
  try:
    spec = tf.DeviceSpec.from_string(device)
  except ValueError as e:
    raise DeviceError(f"--devices={device}: not a device name (expected e.g. /gpu:0 or "
                      f"/cpu:1): {e}") from e
  if not spec.device_type:
    raise DeviceError(f"--devices={device}: names no device type (expected e.g. /gpu:0 or "
                      "/cpu:1)")
  return spec.device_type.upper(), spec.device_index


def _missing_device_hint(device_type, existing_types):
  """What would give the process devices of `device_type`."""
  if device_type == "GPU" and "GPU" not in existing_types:
    return ("TensorFlow sees no GPU (no CUDA driver, or TensorFlow without CUDA: pip install "
            "-e '.[gpu]'); to run replicas on the CPU drop --devices and pass "
            "--strategy=mirrored --cpu_devices=N")
  if device_type == "CPU":
    return "--cpu_devices=N splits the host CPU into N logical devices /cpu:0 .. /cpu:N-1"
  return "pass devices of the list above"


def check_devices(devices):
  """Raises DeviceError unless every device of `devices` exists in this process (its
  logical devices, tf.config.list_logical_devices), naming the ones that do."""
  existing = [d.name for d in tf.config.list_logical_devices()]
  keys = {_device_key(name) for name in existing}
  for device in devices:
    device_type, index = _device_key(device)
    if (device_type, index) in keys or (index is None and
                                        any(t == device_type for t, _ in keys)):
      continue
    names = ", ".join(_short_name(name) for name in existing)
    hint = _missing_device_hint(device_type, {t for t, _ in keys})
    raise DeviceError(f"--devices={','.join(devices)}: this process has no device "
                      f"{device!r}; its logical devices are {names}; {hint}")


def _default_mirrored_devices():
  """Every GPU, else every logical CPU device, warning when that is a single replica."""
  devices = local_devices()
  if tf.config.list_logical_devices("GPU"):
    return devices
  if len(devices) == 1:
    logging.warning("--strategy=mirrored: TensorFlow sees no GPU and one CPU device, so this "
                    "runs ONE replica on %s; --cpu_devices=N splits the host CPU into N "
                    "replicas", _short_name(devices[0]))
  else:
    logging.info("--strategy=mirrored: no GPU; %d replicas on the logical CPU devices %s",
                 len(devices), ", ".join(_short_name(d) for d in devices))
  return devices


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
