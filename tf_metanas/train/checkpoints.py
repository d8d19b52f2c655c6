"""Restoring a run's newest readable checkpoint, and the leftovers a killed save leaves."""

import pathlib
import shutil

from absl import logging
import tensorflow as tf

# A checkpoint whose files are damaged (truncated, emptied, bit-flipped: TensorFlow's CRCs)
# or missing raises these; a transient error (unavailable, permission, resources) does not
# count: falling back past it would put workers of one run at different checkpoints.
_UNREADABLE_CODES = (tf.errors.DATA_LOSS, tf.errors.NOT_FOUND, tf.errors.OUT_OF_RANGE,
                     tf.errors.UNKNOWN)
# One that is read but holds other objects (another configuration) raises these.
_MISMATCH = (AssertionError, ValueError, tf.errors.InvalidArgumentError)


def _unreadable(error):
  return isinstance(error, IndexError) or (
      isinstance(error, tf.errors.OpError) and error.error_code in _UNREADABLE_CODES)


class CheckpointMismatchError(ValueError):
  """The checkpoint was written by another configuration."""


class CorruptCheckpointError(RuntimeError):
  """No checkpoint of a directory can be read."""


def paths(directory):
  """The directory's checkpoints (CheckpointManager's record), oldest first."""
  state = tf.train.get_checkpoint_state(str(directory))
  return list(state.all_model_checkpoint_paths) if state else []


def restore_newest(checkpoint, directory, mismatch_hint=""):
  """Restores the newest checkpoint of `directory` that can be read, warning about each
  newer one that cannot (and why); returns its path, or None when there is none. Raises
  CorruptCheckpointError when none can be read, CheckpointMismatchError when the newest
  readable one holds other objects than `checkpoint` (`mismatch_hint` says why that may be)."""
  failed = []
  for path in reversed(paths(directory)):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except _MISMATCH as e:
      raise CheckpointMismatchError(
          f"{path} does not fit this configuration: {mismatch_hint}{e}") from e
    except (IndexError, tf.errors.OpError) as e:
      if not _unreadable(e):
        raise
      reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
      logging.warning("Checkpoint %s cannot be read (%s); falling back to the one before it",
                      path, reason)
      failed.append(f"{path}: {reason}")
      continue
    if failed:
      logging.warning("Restored %s: the newer %s could not be read", path,
                      ", ".join(f.split(":")[0] for f in failed))
    return path
  if failed:
    raise CorruptCheckpointError(f"no checkpoint in {directory} can be read: "
                                 + "; ".join(failed)
                                 + ". Start afresh in a new --model_dir")
  return None


def remove_orphans(directory):
  """Removes the `*_temp` directories a save killed midway leaves beside the checkpoints
  (TensorFlow writes a checkpoint's shards there and renames them when done). Call it while
  holding the directory: nothing else may be saving."""
  for orphan in pathlib.Path(directory).glob("*_temp"):
    if orphan.is_dir():
      logging.info("Removing %s, left by a checkpoint save that did not finish", orphan)
      shutil.rmtree(orphan, ignore_errors=True)
