"""Command-line flags the training binaries share: which tf.distribute strategy to run under.

  --strategy=mirrored                         every local GPU (or --devices=...)
  --strategy=mirrored --cpu_devices=2         two replicas on a CPU-only machine
  --strategy=multi_worker                     the cluster in TF_CONFIG, or
  --strategy=multi_worker --worker_hosts=host1:port,host2:port --task_index=0
"""

from absl import flags

from tf_metanas import distribute

_STRATEGY = flags.DEFINE_enum("strategy", "default", distribute.STRATEGIES,
                              "tf.distribute strategy: the meta-batch's tasks are split over "
                              "its replicas.")
_DEVICES = flags.DEFINE_list("devices", None, "Devices of one_device / mirrored (default: "
                             "every GPU, else every logical CPU device).")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Split the host CPU into this many "
                                    "logical devices (mirrored replicas without GPUs).")
_WORKER_HOSTS = flags.DEFINE_list("worker_hosts", None, "multi_worker: every worker's "
                                  "host:port, the same list on each (overrides TF_CONFIG).")
_TASK_INDEX = flags.DEFINE_integer("task_index", 0, "multi_worker: this worker's index in "
                                   "--worker_hosts (0 is the chief).")


def strategy_from_flags():
  """The tf.distribute.Strategy the flags ask for (call before any other TensorFlow work)."""
  if _CPU_DEVICES.value > 1:
    distribute.configure_cpu_devices(_CPU_DEVICES.value)
  return distribute.make_strategy(_STRATEGY.value, devices=_DEVICES.value,
                                  worker_hosts=_WORKER_HOSTS.value, task_index=_TASK_INDEX.value)
