"""An exclusive lock on a model_dir, so that two runs never write one run's files.

The lock is an advisory `fcntl.flock` on `model_dir/.lock`, which names its holder (PID,
host, start time). The kernel releases it when the holder exits, however it exits (a
SIGKILL included), so a lock is never stale; a holder record left by a dead process is
reported when the next run takes the lock over.
"""

import fcntl
import json
import os
import pathlib
import socket
import time

from absl import logging


class ModelDirLockedError(RuntimeError):
  """Another live process holds the model_dir."""


class ModelDirLock:
  """`with ModelDirLock(model_dir):` holds model_dir for this process, or raises
  ModelDirLockedError naming the process that does."""

  def __init__(self, model_dir):
    self.path = pathlib.Path(model_dir) / ".lock"
    self._fd = None

  def __enter__(self):
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read(fd)
      os.close(fd)
      raise ModelDirLockedError(
          f"{self.path.parent} is in use by process {holder.get('pid', '?')} on host "
          f"{holder.get('host', '?')} (since {holder.get('since', '?')}): two runs on one "
          f"model_dir would mix their checkpoints and results. Wait for it to end, or use "
          f"another --model_dir") from None
    previous = _read(fd)
    if previous:
      logging.warning("%s: taking over the lock of process %s on %s, which ended without "
                      "releasing it (killed?)", self.path, previous.get("pid"),
                      previous.get("host"))
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc):
    os.ftruncate(self._fd, 0)  # an empty record: released cleanly
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None


def _read(fd):
  """The holder record in the lock file ({} when empty or unreadable)."""
  try:
    return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (ValueError, UnicodeDecodeError):
    return {}
