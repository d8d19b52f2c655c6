"""Losses and per-task metrics every meta-learner reports."""

import tensorflow as tf

METRICS = ("query_loss", "query_accuracy", "support_loss_first", "support_loss_last")


def cross_entropy(logits, labels):
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def accuracy(logits, labels):
  return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                                tf.float32))


def task_metrics(query_loss, query_accuracy, support_losses):
  """The per-task metrics (METRICS) a meta-iteration averages and reports."""
  return {"query_loss": query_loss, "query_accuracy": query_accuracy,
          "support_loss_first": support_losses[0], "support_loss_last": support_losses[-1]}
