"""TensorBoard events of a resumed run: each step once."""

import os
import pathlib

from absl import logging
import tensorflow as tf


def purge_after(log_dir, step):
  """Drops the events of steps after `step` from the event files in `log_dir`: a run
  resumed from its checkpoint at `step` writes those steps again. Each file is rewritten
  atomically, and only when it has such events. Call it before a writer opens `log_dir`."""
  for path in sorted(pathlib.Path(log_dir).glob("events.out.tfevents.*")):
    records, truncated = _read(path)
    kept = [r for r in records if tf.compat.v1.Event.FromString(r).step <= step]
    if len(kept) == len(records) and not truncated:
      continue
    tmp = path.with_name("purging.tmp")  # no "tfevents" in it: TensorBoard skips it
    with tf.io.TFRecordWriter(str(tmp)) as writer:
      for record in kept:
        writer.write(record)
    os.replace(tmp, path)
    logging.info("%s: dropped %d events after step %d (the resumed run writes them again)",
                 path, len(records) - len(kept), step)


def _read(path):
  """(records, whether the file ends in a partial record: a writer killed midway)."""
  records = []
  try:
    for record in tf.data.TFRecordDataset(str(path)):
      records.append(record.numpy())
  except tf.errors.DataLossError:
    return records, True
  return records, False
