"""TaskContext: what every forward and loss of one task knows about where it runs.

A forward is called at inner step s of an adaptation (the support pass of step s), or for
the prediction after s updates (the query pass, `query=True`). The context says which, in
what protocol (phases, meta-training or meta-test, regularized or not), on which task
stream, and carries the task's stateless random seed, from which every random draw of the
task (DropPath masks, Gumbel noise) is derived:

  task seed  = fold(run seed, meta-step, stream, task index)       (`task_seed`)
  draw seed  = fold(task seed, step, query, salt)                   (`TaskContext.draw_seed`)

so the same task draws the same numbers on one device, under MirroredStrategy (the task
index is the task's position in the whole meta-batch, whichever replica adapts it) and
under XLA (stateless ops only).
"""

import dataclasses

from tf_metanas import stateless
from tf_metanas.data.streams import stream_id

EVALUATION_STEP = -1  # the meta-step folded into the seeds of tasks adapted at evaluation


def task_seed(run_seed, meta_step, stream, task_index):
  """The stateless seed of task `task_index` of `stream` at meta-iteration `meta_step`
  (EVALUATION_STEP for tasks adapted to at evaluation) of a run seeded `run_seed`."""
  run_seed = int(run_seed)
  return stateless.fold([run_seed % 2 ** 31, run_seed // 2 ** 31 % 2 ** 31], meta_step, stream_id(stream),
              task_index)


@dataclasses.dataclass(frozen=True)
class TaskContext:
  """Where a forward of one task runs.

  Attributes:
    protocol: the inner_loop.Protocol of the adaptation (phases, meta-training or not,
      whether training-only regularization is on during its inner steps).
    step: the inner step (support pass of step `step`), or the number of updates made
      before a query pass; a Python int or a scalar tensor (inside tf.while_loop).
    query: whether this is the prediction after adaptation.
    stream: the task stream the task comes from ("train" unless a rule reads several).
    seed: the task's [2] int32 stateless seed (`task_seed`), or None: stateful draws.
    support_size: the number of support examples (N * K) of the task.
  """

  protocol: object
  step: object = 0
  query: bool = False
  stream: str = "train"
  seed: object = None
  support_size: int = 0

  @property
  def num_steps(self):
    return self.protocol.num_steps

  @property
  def meta_training(self):
    return self.protocol.meta_training

  @property
  def regularize(self):
    """Whether training-only regularization (DropPath) is on: inner steps of protocols
    that regularize; never the query pass."""
    return self.protocol.regularize and not self.query

  def at(self, step, query=False):
    """The context of inner step `step` (or of the query after `step` updates)."""
    return dataclasses.replace(self, step=step, query=query)

  def after(self, updates):
    """The query pass after the first `updates` inner steps (the protocol truncated to
    them, as a MAML++ multi-step loss predicts after every step)."""
    return dataclasses.replace(self, protocol=self.protocol.truncated(updates), step=updates,
                               query=True)

  def prediction(self):
    """The context of the prediction after the whole adaptation."""
    return self.at(self.num_steps, query=True)

  def draw_seed(self, salt=0):
    """The stateless seed of this step's draws of kind `salt` (None without a task seed)."""
    return stateless.fold(self.seed, self.step, int(self.query), salt)
