"""Command-line flags the training binaries share: which tf.distribute strategy to run under,
and whether reruns must be bit-identical.

  --strategy=mirrored                         every local GPU (or --devices=...)
  --strategy=mirrored --cpu_devices=2         two replicas on a CPU-only machine
  --strategy=multi_worker                     the cluster in TF_CONFIG, or
  --strategy=multi_worker --worker_hosts=host1:port,host2:port --task_index=0
  --deterministic                             op determinism, oneDNN off (restarts once)
"""

from absl import app
from absl import flags

from tf_metanas import choices
from tf_metanas import determinism

_STRATEGY = flags.DEFINE_enum("strategy", "default", choices.STRATEGIES,
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
_DETERMINISTIC = flags.DEFINE_bool(
    "deterministic", False, "Bit-identical reruns and resumes: TensorFlow's op determinism "
    "and its Eigen CPU kernels (oneDNN off: if TensorFlow turned oneDNN on, the process "
    "restarts itself once with TF_ENABLE_ONEDNN_OPTS=0). Slower on CPUs where TensorFlow "
    "uses oneDNN.")


def check_flags(strategy, devices=None, worker_hosts=None, task_index=None):
  """Raises ValueError naming the flag at fault when the distribution flags do not go
  together (the devices themselves are checked by distribute.make_strategy).

  Args:
    strategy: --strategy.
    devices: --devices (None if not given).
    worker_hosts: --worker_hosts (None if not given).
    task_index: --task_index (None if not given).
  """
  if strategy != "multi_worker":
    given = [f for f, v in (("--worker_hosts", worker_hosts), ("--task_index", task_index))
             if v is not None]
    if given:
      verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
      raise ValueError(f"{' and '.join(given)} only {verb} to --strategy=multi_worker, not "
                       f"--strategy={strategy}: pass --strategy=multi_worker, or drop {them}")
  if devices and strategy not in ("one_device", "mirrored"):
    raise ValueError(f"--devices only applies to --strategy=one_device or mirrored, not "
                     f"--strategy={strategy}")
  if strategy == "one_device" and devices and len(devices) > 1:
    raise ValueError(f"--strategy=one_device runs on one device, --devices names "
                     f"{len(devices)}: pass one, or --strategy=mirrored for several")
  if strategy == "multi_worker":
    _check_worker_flags(worker_hosts, task_index)


def _check_worker_flags(worker_hosts, task_index):
  """--task_index needs --worker_hosts and must index it."""
  if task_index is None:
    return
  if not worker_hosts:
    raise ValueError("--task_index needs --worker_hosts=host:port,...; with TF_CONFIG the "
                     "index is its task.index: drop --task_index")
  if not 0 <= task_index < len(worker_hosts):
    raise ValueError(f"--task_index={task_index} is not an index of the {len(worker_hosts)} "
                     f"--worker_hosts: pass 0 .. {len(worker_hosts) - 1}")


def _given(flag_holder):
  """The flag's value if given on the command line, else None."""
  return flag_holder.value if flags.FLAGS[flag_holder.name].present else None


def strategy_from_flags():
  """The tf.distribute.Strategy the flags ask for (call before any other TensorFlow work);
  with --deterministic, first turns determinism on (which may restart the process).

  Raises:
    app.UsageError: flags that do not go together, or devices this process does not have.
  """
  from tf_metanas import distribute  # pylint: disable=g-import-not-at-top  (TensorFlow)
  try:
    check_flags(_STRATEGY.value, _DEVICES.value, _WORKER_HOSTS.value, _given(_TASK_INDEX))
    if _DETERMINISTIC.value:
      determinism.enable(reexec=True)
    if _CPU_DEVICES.value > 1:
      distribute.configure_cpu_devices(_CPU_DEVICES.value)
    return distribute.make_strategy(_STRATEGY.value, devices=_DEVICES.value,
                                    worker_hosts=_WORKER_HOSTS.value,
                                    task_index=_TASK_INDEX.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
