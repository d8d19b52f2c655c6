"""Runner: the outer loop around a MetaLearner, with everything a run needs in its model_dir.

model_dir/
  .lock                    held while a process trains or meta-tests it (`lock.py`)
  operative_config.gin     the gin bindings in force (a resume with changed safe bindings
                           keeps the one before as operative_config.<step>.gin)
  ckpt-*                   tf.train.CheckpointManager checkpoints: model, meta optimizers,
                           meta step (= the episode sampler's position), inner lrs
  train/, eval/            TensorBoard events: Train/..., Eval/... scalars, the config text
  results.json             final meta-test in one schema for every method (`Runner.test`)

A Runner built inside `strategy.scope()` meta-trains under that tf.distribute strategy.
With several workers (MultiWorkerMirroredStrategy) every worker runs the same Runner on the
same model_dir (a shared filesystem): all sample the same meta-batches and take part in
every step, only the chief writes model_dir; the others write their (identical) checkpoints
to a scratch directory they delete, and restore from the chief's.

Nothing silent, nothing lost: only one process trains or meta-tests a model_dir at a time;
a resume compares the configuration with the stored one before touching anything
(`config_diff`); it falls back past an unreadable checkpoint to the newest readable one,
removes what a killed save left, and drops the events the killed run wrote after its last
checkpoint, which the resumed run writes again; a non-finite loss or meta-parameter stops
the run before it is checkpointed (`divergence`).
"""

import contextlib
import hashlib
import json
import pathlib
import shutil
import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from tf_metanas import checks
from tf_metanas import determinism
from tf_metanas import distribute
from tf_metanas.data import episodes as episodes_lib
from tf_metanas.data import errors
from tf_metanas.data import registry
from tf_metanas.data import streams as streams_lib
from tf_metanas.data import synthetic
from tf_metanas.train import checkpoints
from tf_metanas.train import config_diff
from tf_metanas.train import divergence
from tf_metanas.train import events
from tf_metanas.train import lock
from tf_metanas.train import pace as pace_lib


# Progress lines of an evaluation come at least this often (seconds of `clock`).
PROGRESS_SECONDS = 30.0
clock = time.perf_counter


class ConfigMismatchError(ValueError):
  """A resume with other bindings than the stored run's."""


# Errors that say what is wrong and what would work: the binaries log them and exit 1.
RUN_ERRORS = (divergence.DivergedError, lock.ModelDirLockedError, ConfigMismatchError,
              checkpoints.CorruptCheckpointError, checkpoints.CheckpointMismatchError,
              checks.ConfigValueError, errors.DataError)


def free_name(directory, pattern, first=None):
  """The first of these names whose file is not in `directory`: `first` (if given), then
  `pattern` with k = 1, 2, ... (k = 2, 3, ... after a `first`)."""
  if first and not (directory / first).exists():
    return first
  k = 2 if first else 1
  while (directory / pattern.format(k)).exists():
    k += 1
  return pattern.format(k)


def confidence_interval(accuracies):
  """(mean, half-width of the 95% confidence interval = 1.96 * std / sqrt(n))."""
  accuracies = np.asarray(accuracies, np.float64)
  mean = float(accuracies.mean())
  if accuracies.size < 2:
    return mean, float("nan")
  return mean, float(1.96 * accuracies.std(ddof=1) / np.sqrt(accuracies.size))


@gin.configurable(module="tf_metanas.train")
def load_splits(name="glyphs", synthetic_image_shape=None, synthetic_per_class=20, **kwargs):
  """The dataset's meta-train/val/test stores (gin-bindable `load_dataset` arguments).

  With `synthetic_image_shape` (H, W, C), a small class-structured prototype dataset of
  that shape, `synthetic_per_class` images per class, stands in for the real one (smoke
  tests of a configuration).
  """
  if synthetic_image_shape:
    h, _, c = synthetic_image_shape
    return synthetic.prototype_splits(num_classes=(30, 25, 25), per_class=synthetic_per_class,
                                      size=h, channels=c)
  return registry.load_dataset(name, **kwargs)


def _dataset_name():
  """The dataset `load_splits` loads under the current gin bindings."""
  try:
    if gin.query_parameter("tf_metanas.train.load_splits.synthetic_image_shape"):
      return "synthetic"
  except ValueError:
    pass
  try:
    return gin.query_parameter("tf_metanas.train.load_splits.name")
  except ValueError:
    return "glyphs"  # load_splits' default


@gin.configurable(module="tf_metanas.train")
class Runner:
  """Meta-trains, meta-validates and meta-tests one MetaLearner.

  Args:
    model_dir: where checkpoints, events, the operative config and results go.
    network: callable num_classes -> FunctionalModel (e.g. @reptile_network).
    learner: callable (model, seed=...) -> MetaLearner (e.g. @MetaLearner with its
      bindings); the seed is the Runner's.
    train_spec: EpisodeSpec of meta-training tasks (inner_steps is set from the learner).
    test_spec: EpisodeSpec of meta-validation / meta-test tasks.
    meta_batch_size: tasks per meta-iteration (a multiple of the number of replicas).
    num_iterations: meta-iterations in all.
    eval_every: meta-iterations between meta-validations (0: never; needed when the
      splits have no meta-validation classes).
    eval_tasks: tasks per meta-validation.
    test_tasks: tasks of the final meta-test (>= 600 by default, as the papers report).
    test_batch_size: tasks adapted per compiled evaluation call (split over the replicas).
    checkpoint_every: meta-iterations between checkpoints.
    log_every: meta-iterations between Train/ summaries and progress lines.
    seed: seeds initialization and the episode samplers.
    splits: dict split -> ImageStore (default: `load_splits()` from gin).
    max_checkpoints: checkpoints kept in model_dir (the oldest are deleted).
    streams: TaskStreams of the meta-train split (default: one stream "train" of all of
      it); the learner's update rule says which it reads.
    dataset: the dataset's name in results.json (default: `load_splits`'s).
    select_on_val: meta-test the checkpoint of the best meta-validation accuracy (kept in
      model_dir/best; the last meta-iteration is always validated) instead of the last
      one: Auto-MAML's choice of its architecture, the checkpoint selection of a
      from-scratch retraining. Needs eval_every > 0.
    test_split: the split of the final evaluation: "test" (the meta-test), or "val" to
      score a configuration on meta-validation tasks (Auto-Meta's candidates: choosing an
      architecture on meta-test tasks would leak them into the reported result).
  """

  def __init__(self, model_dir, network, learner, train_spec=None, test_spec=None,
               meta_batch_size=4, num_iterations=1000, eval_every=500, eval_tasks=100,
               test_tasks=600, test_batch_size=20, checkpoint_every=100, log_every=10, seed=0,
               splits=None, max_checkpoints=3, streams=(streams_lib.TaskStream(),),
               dataset=None, select_on_val=False, test_split="test"):
    self.model_dir = pathlib.Path(model_dir)
    self.meta_batch_size = checks.count("Runner.meta_batch_size", meta_batch_size)
    self.num_iterations = checks.count("Runner.num_iterations", num_iterations, 0,
                                       "meta-tests the initialization untrained")
    self.eval_every = checks.count("Runner.eval_every", eval_every, 0, "never meta-validates")
    self.eval_tasks = checks.count("Runner.eval_tasks", eval_tasks)
    self.test_tasks = checks.count("Runner.test_tasks", test_tasks)
    self.test_batch_size = checks.count("Runner.test_batch_size", test_batch_size)
    self.checkpoint_every = checks.count("Runner.checkpoint_every", checkpoint_every)
    self.log_every = checks.count("Runner.log_every", log_every)
    max_checkpoints = checks.count("Runner.max_checkpoints", max_checkpoints)
    self.seed = checks.count("Runner.seed", seed, 0)
    if test_split not in ("test", "val"):
      raise checks.ConfigValueError(f"Runner.test_split = {test_split!r}: use \"test\" (the "
                                    f"meta-test) or \"val\" (score on meta-validation)")
    self.test_split = test_split
    self.dataset = dataset or ("custom" if splits else _dataset_name())
    splits = splits if splits is not None else load_splits()
    self.splits = splits
    train_spec = train_spec or episodes_lib.EpisodeSpec()
    test_spec = test_spec or train_spec
    if test_spec.num_ways != train_spec.num_ways:
      raise errors.EpisodeSpecError(
          f"meta-test tasks are {test_spec.num_ways}-way but the classifier is meta-trained "
          f"for {train_spec.num_ways} ways; use the same number of ways")
    self.strategy = tf.distribute.get_strategy()
    self.chief = distribute.is_chief(self.strategy)
    distribute.check_divisible(self.meta_batch_size, self.strategy, "Runner.meta_batch_size")
    distribute.check_divisible(self.test_batch_size, self.strategy, "Runner.test_batch_size")
    keras.utils.set_random_seed(seed)
    self.model = network(num_classes=train_spec.num_ways)
    self.model.build((None,) + splits["train"].image_shape)
    self.learner = learner(self.model, seed=seed)
    self._check_run_length()
    test_spec = self.learner.episode_spec(test_spec, training=False)
    # Every spec is checked against its split here, before any training.
    self.streams = self._stream_samplers(streams, splits["train"], train_spec)
    self.samplers = {
        "test": episodes_lib.EpisodeSampler(splits["test"], test_spec, seed + 2, "meta-test"),
    }
    if splits["val"].num_classes:
      self.samplers["val"] = episodes_lib.EpisodeSampler(splits["val"], test_spec, seed + 1,
                                                         "meta-val")
    elif self.eval_every or test_split == "val":
      raise errors.EpisodeSpecError(
          f"Runner.test_split = \"val\" scores on meta-validation tasks, but this dataset "
          f"split has no meta-validation classes: use a split with a val part"
          if test_split == "val" else
          f"Runner.eval_every = {self.eval_every} meta-validates, but this dataset split has "
          f"no meta-validation classes (e.g. Omniglot's 'reptile' split, as REPTILE "
          f"validates on none): set Runner.eval_every = 0 or use a split with a val part")
    self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                     name="train_seconds")
    items = dict(train_seconds=self.train_seconds, **self.learner.checkpoint_items())
    self.select_on_val, self.best = bool(select_on_val), None
    if self.select_on_val:
      if not self.eval_every:
        raise errors.EpisodeSpecError("Runner.select_on_val selects on meta-validation: set "
                                      "Runner.eval_every > 0")
      self.best = {"accuracy": tf.Variable(-1.0, dtype=tf.float64, trainable=False),
                   "step": tf.Variable(-1, dtype=tf.int64, trainable=False)}
      items.update(best_val_accuracy=self.best["accuracy"], best_val_step=self.best["step"])
    self.checkpoint = tf.train.Checkpoint(**items)
    self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.model_dir),
                                              max_to_keep=max_checkpoints)
    self.best_manager = (tf.train.CheckpointManager(self.checkpoint, str(self.model_dir / "best"),
                                                    max_to_keep=1)
                         if self.select_on_val else None)
    self._writers, self._lock = {}, None
    self.results_path = None  # the results file of the last meta-test (or the stored one)

  def _check_run_length(self):
    """Refuses a run shorter than a setting counted in meta-iterations (a schedule, the
    warm-up, ...): shortening a run with Runner.num_iterations alone would leave them on
    the configured length. The method configs derive them from the ITERATIONS macro."""
    longer = {name: count for name, count in self.learner.step_counts().items()
              if count > self.num_iterations}
    if not self.num_iterations or not longer:
      return
    listed = ", ".join(f"{name} = {count}" for name, count in longer.items())
    raise checks.ConfigValueError(
        f"Runner.num_iterations = {self.num_iterations}, but {listed} count more "
        f"meta-iterations than the run, which would stop part-way through them. Set the "
        f"run's length with ITERATIONS = {self.num_iterations} (the method configs derive "
        f"Runner.num_iterations and their schedules from it; METANAS also WARMUP, MAML++ and "
        f"T-NAS++ FIRST_ORDER_ITERATIONS and MULTI_STEP_ITERATIONS, CAML "
        f"CONSOLIDATION_START), or bind these to at most {self.num_iterations}")

  def writer(self, name):
    """The summary writer of model_dir/`name` ("train", "eval"), opened on first use
    (after a resume dropped the events it writes again); a no-op writer off the chief."""
    if name not in self._writers:
      self._writers[name] = (tf.summary.create_file_writer(str(self.model_dir / name))
                             if self.chief else tf.summary.create_noop_writer())
    return self._writers[name]

  @contextlib.contextmanager
  def _holding(self):
    """Holds model_dir's lock (the chief; once, however deeply nested)."""
    if not self.chief or self._lock:
      yield
      return
    with lock.ModelDirLock(self.model_dir) as held:
      self._lock = held
      try:
        yield
      finally:
        self._lock = None
        for writer in self._writers.values():  # nothing writes model_dir once released
          writer.close()
        self._writers = {}

  def _stream_samplers(self, streams, train, train_spec):
    """An EpisodeSampler per stream the learner's rule reads."""
    by_name = {stream.name: stream for stream in streams}
    samplers = {}
    for name in self.learner.streams():
      if name not in by_name:
        raise errors.EpisodeSpecError(
            f"the update rule reads task stream {name!r}, but Runner.streams defines "
            f"{sorted(by_name)}: add a TaskStream(name={name!r}, ...) to Runner.streams")
      stream = by_name[name]
      spec = self.learner.episode_spec(stream.spec or train_spec, training=True)
      if spec.num_ways != train_spec.num_ways:
        raise errors.EpisodeSpecError(
            f"TaskStream {name!r} has {spec.num_ways}-way tasks but the classifier is built "
            f"for {train_spec.num_ways} ways (Runner.train_spec); use the same number of ways")
      store = stream.store(train, self.seed)
      try:
        self.model.check_input_shape(store.image_shape)
      except checks.ConfigValueError as e:
        raise checks.ConfigValueError(f"TaskStream {name!r}: {e}") from e
      samplers[name] = episodes_lib.EpisodeSampler(
          store, spec, self.seed, f"meta-train stream {name!r}", stream.sampler_stream(),
          stream.pool)
    return samplers

  @property
  def parameter_count(self):
    return self.learner.weight_count()

  def _config_changes(self, force_resume):
    """The changes from the stored operative config to this one when resuming: raises
    ConfigMismatchError listing the unsafe ones (unless `force_resume`), before anything
    in model_dir is touched."""
    stored = self.model_dir / "operative_config.gin"
    if not (any(self.model_dir.glob("ckpt-*.index")) and stored.exists()):
      return []
    changes = config_diff.diff(stored.read_text(), gin.operative_config_str())
    unsafe = [str(c) for c in changes if not c.safe]
    if unsafe and not force_resume:
      raise ConfigMismatchError(
          f"{self.model_dir} holds a run of another configuration; resuming it would mix "
          f"the two. Changed: " + "; ".join(unsafe) + ". Only how long it trains and how it "
          f"logs, validates, checkpoints and meta-tests may change on a resume "
          f"({', '.join(sorted(config_diff.SAFE))}). Use a new --model_dir, or "
          f"--force_resume to resume with these changes")
    for change in changes:
      logging.warning("Resuming with a changed binding: %s", change)
    return changes

  def _write_config(self, changes, step):
    """Writes the operative config (the stored one kept as operative_config.<step>.gin when
    the resume changed it)."""
    if not self.chief:
      return
    self.model_dir.mkdir(parents=True, exist_ok=True)
    path, config = self.model_dir / "operative_config.gin", gin.operative_config_str()
    if changes:
      shutil.copyfile(path, self.model_dir / f"operative_config.{step}.gin")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config)
    tmp.replace(path)  # atomically: a kill never leaves a run without its config
    with self.writer("train").as_default():
      tf.summary.text("operative_config", "    " + config.replace("\n", "\n    "), step=step)

  def has_checkpoint(self):
    """Whether model_dir holds a checkpoint to resume from."""
    return tf.train.latest_checkpoint(str(self.model_dir)) is not None

  def restore(self):
    """Restores the newest readable checkpoint, if any; returns the meta step to continue
    from."""
    restored = checkpoints.restore_newest(
        self.checkpoint, self.model_dir,
        "it was written by another configuration or an older tf_metanas (before the engine "
        "of issue 13, with one meta optimizer per group and the run's training time; "
        "METANAS before the authors' conv_3x3; a run without carry_inner_state or "
        "per_step_bn_weights, ...). Use a new --model_dir, or the configuration and version "
        "that wrote it. ")
    if restored:
      logging.info("Restored %s (meta step %d)", restored, int(self.learner.step.numpy()))
    self._restore_best_record()
    return int(self.learner.step.numpy())

  def _restore_best_record(self):
    """The selection's record from model_dir/best when it is newer than the checkpoint's
    (a meta-validation between the last checkpoint and an interruption)."""
    best = self.select_on_val and tf.train.latest_checkpoint(str(self.model_dir / "best"))
    if not best:
      return
    reader = tf.train.load_checkpoint(best)
    key = "{}/.ATTRIBUTES/VARIABLE_VALUE"
    step = int(reader.get_tensor(key.format("best_val_step")))
    if step > int(self.best["step"].numpy()):
      self.best["step"].assign(step)
      self.best["accuracy"].assign(reader.get_tensor(key.format("best_val_accuracy")))

  def save(self, step):
    """Checkpoints meta-training state into model_dir."""
    self._save(self.manager, step)

  def _save(self, manager, step):
    """Checkpoints into `manager`'s directory (chief) or a scratch directory that is deleted
    again (other workers: every worker saves, as tf.distribute expects)."""
    self.learner.at_checkpoint(step)
    if self.chief:
      manager.save(checkpoint_number=step)
      return
    scratch = self.model_dir / f"worker_{distribute.task_id(self.strategy)}_scratch"
    self.checkpoint.write(str(scratch / "ckpt"))
    shutil.rmtree(scratch, ignore_errors=True)

  def evaluate(self, split, num_tasks):
    """Adapts afresh to `num_tasks` tasks of `split`; returns the per-task outputs of
    `MetaLearner.evaluate_batch` as numpy arrays ("loss", "accuracy", ...), [num_tasks, ...]."""
    sampler = self.samplers[split]
    batches = -(-num_tasks // self.test_batch_size)
    outputs, compiled, logged = [], None, clock()
    for index, batch in enumerate(sampler.dataset(self.test_batch_size, num_batches=batches)):
      outputs.append(tf.nest.map_structure(lambda t: t.numpy(), self.learner.evaluate_batch(
          batch, first_task=index * self.test_batch_size, split=split)))
      now = clock()
      compiled = now if compiled is None else compiled  # after the first, traced batch
      per_batch = (now - compiled) / index if index else 0.0  # compiled batches
      # a line whenever the next batch would end more than PROGRESS_SECONDS after the last
      if now - logged + per_batch >= PROGRESS_SECONDS and index + 1 < batches:
        logged, done = now, (index + 1) * self.test_batch_size
        accuracy = float(np.mean(np.concatenate([o["accuracy"] for o in outputs])))
        eta = (f"ETA {per_batch * (batches - index - 1):.0f} s" if index
               else "ETA after the next batch")
        logging.info("meta-%s: %d / %d tasks adapted, accuracy so far %.4f, %s", split, done,
                     num_tasks, accuracy, eta)
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts)[:num_tasks], *outputs)

  def train(self, force_resume=False):
    """Meta-trains from the latest checkpoint (or from scratch) to num_iterations, holding
    model_dir; `force_resume` resumes even with changed unsafe bindings."""
    with self._holding():
      changes = self._config_changes(force_resume)
      if self.chief:  # only the chief writes model_dir
        for directory in (self.model_dir, self.model_dir / "best"):
          checkpoints.remove_orphans(directory)
      start = self.restore()
      if self.chief:
        for name in ("train", "eval"):
          events.purge_after(self.model_dir / name, start)
      self._write_config(changes, start)
      self._train_from(start)

  def _train_from(self, start):
    if start >= self.num_iterations:
      return
    data = {name: iter(sampler.dataset(self.meta_batch_size, start_batch=start,
                                       num_batches=self.num_iterations - start))
            for name, sampler in self.streams.items()}
    logging.info("compiling the meta-iteration (traced once, then run compiled) ...")
    pace, sums, count = pace_lib.Pace(), {}, 0
    for step in range(start + 1, self.num_iterations + 1):
      traces, began = sum(self.learner.trace_counts().values()), clock()
      with self.writer("train").as_default():  # what the learner's hooks write
        metrics = self.learner.train_step({name: next(it) for name, it in data.items()})
      divergence.check_metrics(step, metrics)
      divergence.check_parameters(step, self.learner.meta_groups)
      seconds = clock() - began
      self.train_seconds.assign_add(seconds)
      traced = sum(self.learner.trace_counts().values()) > traces
      if traced:
        logging.info("meta-iteration %d %s in %.1f s", step, "compiled and ran"
                     if step == start + 1 else "compiled a new graph (the warm-up ended, or "
                     "the regime or structure changed) and ran", seconds)
      pace.record(seconds, traced)
      sums = {k: sums.get(k, 0.0) + float(v) for k, v in metrics.items()}
      count += 1
      if step % self.log_every == 0 or step == self.num_iterations:
        self._log_training(step, {k: v / count for k, v in sums.items()}, pace)
        pace.reset()
        sums, count = {}, 0
      last_selection = self.select_on_val and step == self.num_iterations
      if self.eval_every and (step % self.eval_every == 0 or last_selection):
        began = clock()
        self._select(self._log_eval("val", self.eval_tasks, step)["accuracy"], step)
        pace.validation_seconds = clock() - began
      if step % self.checkpoint_every == 0 or step == self.num_iterations:
        self.save(step)

  def _log_training(self, step, means, pace):
    """Train/ summaries of the metrics' means over the meta-iterations since the last log
    (every task of them, not one meta-batch), the learner's `training_scalars` (meta
    learning rates, warm-up, entropy, ...), the compiled steps' rate (`pace`) and a
    progress line with the ETA of meta-training."""
    rate = pace.rate()
    with self.writer("train").as_default():
      for key, value in {**means, **self.learner.training_scalars()}.items():
        tf.summary.scalar(f"Train/{key}", value, step=step)
      if rate:
        tf.summary.scalar("Train/iterations_per_second", rate, step=step)
    if step == self.num_iterations:  # not "ETA 0 s": the meta-test is still ahead
      line = f"meta-training done; the meta-{self.test_split} of {self.test_tasks} tasks follows"
    elif rate:
      validations = (self.num_iterations // self.eval_every - step // self.eval_every
                     if self.eval_every else 0)
      eta = pace.eta(self.num_iterations - step, validations)
      line = f"{rate:.2f} it/s  ETA of meta-training {eta:.0f} s"
    else:
      line = "rate after the next log"
    logging.info("meta-iteration %d/%d  query acc %.3f  loss %.3f (means since the last "
                 "log)  %s", step, self.num_iterations, means["query_accuracy"],
                 means["query_loss"], line)

  def _select(self, accuracy, step):
    """With select_on_val: keeps the checkpoint of the best meta-validation accuracy so far
    (the earliest of equals) in model_dir/best."""
    if not self.select_on_val:
      return
    if accuracy > float(self.best["accuracy"].numpy()):
      self.best["accuracy"].assign(accuracy)
      self.best["step"].assign(step)
      self._save(self.best_manager, step)
    with self.writer("eval").as_default():
      tf.summary.scalar("Eval/selected_val_accuracy", float(self.best["accuracy"].numpy()),
                        step=step)
      tf.summary.scalar("Eval/selected_step", int(self.best["step"].numpy()), step=step)

  def restore_selected(self):
    """With select_on_val, restores the checkpoint the selection keeps; returns
    {"step", "val_accuracy"} of it (None without select_on_val)."""
    if not self.select_on_val:
      return None
    best = tf.train.latest_checkpoint(str(self.model_dir / "best"))
    if not best:
      raise ValueError(f"Runner.select_on_val: no meta-validation has run yet in "
                       f"{self.model_dir} (the first is at meta-iteration {self.eval_every})")
    self.checkpoint.restore(best).assert_existing_objects_matched()
    logging.info("Meta-testing the checkpoint of meta-iteration %d, selected by its "
                 "meta-validation accuracy %.4f (%s)", int(self.best["step"].numpy()),
                 float(self.best["accuracy"].numpy()), best)
    return {"step": int(self.best["step"].numpy()),
            "val_accuracy": float(self.best["accuracy"].numpy()),
            "val_tasks": self.eval_tasks}

  def _log_eval(self, split, num_tasks, step, summaries="eval"):
    """Evaluates, writes Eval/ summaries (and the learner's own) into model_dir/`summaries`;
    returns the results."""
    outputs = self.evaluate(split, num_tasks)
    divergence.check_metrics(step, {"loss": np.mean(outputs["loss"])}, f"meta-{split} at")
    mean, ci = confidence_interval(outputs["accuracy"])
    with self.writer(summaries).as_default():
      tf.summary.scalar(f"Eval/{split}_accuracy", mean, step=step)
      tf.summary.scalar(f"Eval/{split}_accuracy_ci95", ci, step=step)
      tf.summary.scalar(f"Eval/{split}_loss", float(np.mean(outputs["loss"])), step=step)
      method_results = self.learner.summarize(outputs, step)
    self.learner.at_evaluation(split, step, outputs)
    logging.info("meta-%s at %d: accuracy %.4f +- %.4f over %d tasks", split, step, mean, ci,
                 num_tasks)
    return {"accuracy": mean, "ci95": ci,
            "parameters": float(np.mean(self.learner.task_parameter_counts(outputs))),
            "method_results": method_results}

  def protocol(self):
    """The meta-test protocol, as results.json states it: episodes (ways, shots, queries
    per class, inner mini-batch size), inner steps per phase and the groups each adapts,
    whether BatchNorm normalizes with the statistics of the batch evaluated and how the
    queries are batched (all of a task's at once, or each with the support set), the number
    of test tasks."""
    spec, learner = self.samplers[self.test_split].spec, self.learner
    return {"num_ways": spec.num_ways, "num_shots": spec.num_shots,
            "num_queries": spec.num_queries,
            "inner_batch_size": spec.inner_batch_size or spec.support_size,
            "phases": [{"steps": p.steps, "groups": list(p.groups)} for p in learner.test_phases],
            "transductive_batch_norm": learner.transductive,
            "query_batches": learner.query_batches,
            "query_batch_size": (spec.query_size if learner.query_batches == "all"
                                 else spec.support_size + 1),
            "num_tasks": self.test_tasks, "split": self.test_split}

  def test(self, results_name="results.json", summaries="eval"):
    """The final meta-test, holding model_dir (see `_test`); its summaries go to
    model_dir/`summaries`."""
    with self._holding():
      return self._test(results_name, summaries)

  def _test(self, results_name, summaries="eval"):
    """The final meta-test: writes and returns the results, one schema for every method:

      method, dataset, split (of the evaluated tasks: "test", or "val" when
      `test_split` scores on meta-validation), num_ways, num_shots, num_queries, accuracy
      and ci95 (95% CI over tasks), num_tasks, meta_iterations, tasks_seen (meta-training tasks, every stream),
      train_seconds and test_seconds (wall-clock), parameters (the mean over tasks of the
      parameters each task predicts with: task-specific for METANAS), transductive
      BatchNorm or not, seed, deterministic (bit-identical reruns: `determinism`), config_hash (of the operative gin config), protocol (the
      meta-test protocol in full), method_results (the method's own section) and selection
      (the checkpoint meta-tested: the last, or the best on meta-validation), train_streams
      (each meta-training stream's classes and image shape).
    """
    trained, seconds = int(self.learner.step.numpy()), float(self.train_seconds.numpy())
    selection = self.restore_selected()
    step = int(self.learner.step.numpy())
    began = time.perf_counter()
    evaluation = self._log_eval(self.test_split, self.test_tasks, step, summaries)
    spec = self.samplers[self.test_split].spec
    config = gin.operative_config_str()
    results = {
        "method": self.learner.method_name(), "dataset": self.dataset,
        "split": self.test_split,
        "num_ways": spec.num_ways, "num_shots": spec.num_shots,
        "num_queries": spec.num_queries, "accuracy": evaluation["accuracy"],
        "ci95": evaluation["ci95"], "num_tasks": self.test_tasks, "meta_iterations": trained,
        "tasks_seen": trained * self.meta_batch_size * len(self.streams),
        "train_seconds": seconds,
        "test_seconds": time.perf_counter() - began,
        "parameters": evaluation["parameters"],
        "transductive_batch_norm": self.learner.transductive, "seed": self.seed,
        "deterministic": determinism.enabled(),
        "config_hash": hashlib.sha256(config.encode("utf-8")).hexdigest()[:16],
        "protocol": self.protocol(), "method_results": evaluation["method_results"],
        "train_streams": {name: {"classes": sampler.store.num_classes,
                                 "image_shape": list(sampler.store.image_shape)}
                          for name, sampler in self.streams.items()}}
    results["selection"] = ({"by": "meta-validation accuracy", **selection} if selection
                            else {"by": "last checkpoint", "step": trained})
    self.results_path = self.model_dir / results_name
    if self.chief:
      self.results_path.write_text(json.dumps(results, indent=2))
    with self.writer(summaries).as_default():  # a result at one step, which a chart hides
      tf.summary.text(f"Eval/{self.test_split}_results", "\n".join(
          [f"- {line}" for line in self.summary_lines(results)] +
          [f"- results: `{self.results_path}`"]), step=step)
    return results

  def summary_lines(self, results):
    """What a binary prints about `results`: the accuracy with its protocol, then the
    method's own lines (`MetaLearner.report`)."""
    return [f"{results['method']} on {results['dataset']}, {results['num_ways']}-way "
            f"{results['num_shots']}-shot, {results['num_queries']} "
            f"quer{'y' if results['num_queries'] == 1 else 'ies'} per class, "
            f"{results['num_tasks']} "
            f"{'meta-validation' if results.get('split') == 'val' else 'test'} tasks, "
            f"transductive BatchNorm "
            f"{'on' if results['transductive_batch_norm'] else 'off'}: accuracy "
            f"{100 * results['accuracy']:.2f}% +- {100 * results['ci95']:.2f}% (95% CI); "
            f"{results['parameters']:.0f} parameters; {results['meta_iterations']} "
            f"meta-iterations in {results['train_seconds']:.0f} s"
           ] + self.learner.report(results["method_results"])

  def run(self, force_resume=False, retest=False):
    """Meta-trains (see `train`) and meta-tests, holding model_dir throughout.

    Results are never overwritten: a run whose results.json already holds the meta-test of
    its last meta-iteration returns those results without testing again, unless `retest`,
    which meta-tests again into results.retest<k>.json beside them; a run trained on past
    its results (a larger num_iterations) keeps them as results.<their step>.json.
    """
    with self._holding():  # its writers are closed (flushed) when it releases model_dir
      # Read before training: every worker decides alike (training is collective, so the
      # chief moves nothing before the others have read).
      stored = self.stored_results()
      self.train(force_resume)
      step = int(self.learner.step.numpy())
      if stored is None:
        return self.test()
      if stored["meta_iterations"] == step and not retest:
        self.results_path = self.model_dir / "results.json"
        logging.info("%s holds the meta-test of meta-iteration %d already (results.json); "
                     "meta-test again with --retest (tools/train.py) or run(retest=True)",
                     self.model_dir, step)
        return stored
      if stored["meta_iterations"] == step:
        return self.test(free_name(self.model_dir, "results.retest{}.json"))
      if self.chief:
        older = self.model_dir / f"results.{stored['meta_iterations']}.json"
        (self.model_dir / "results.json").replace(older)
        logging.info("results.json of meta-iteration %d kept as %s",
                     stored["meta_iterations"], older)
      return self.test()

  def stored_results(self):
    """model_dir/results.json as a dict, or None when the run has none."""
    path = self.model_dir / "results.json"
    return json.loads(path.read_text()) if path.exists() else None
