"""The one controller of a long run, shared by the search and the retraining.

Shaped like Orbit's Controller: a run is epochs of steps, and a task supplies
what is its own (its step, its schedules, its summaries, its epoch-end work).
The loop runs the steps; keeps the epoch's running sums in a checkpointed
variable (so that a resumed epoch's figures cover all of it); stops on a
non-finite step output; honours stop requests and a stop_at_step; checkpoints
on its cadence and at every epoch's end; reports progress; calls the step
summaries on their cadence; and decides which process writes files (the
chief: every process of a one-machine run).

A task has:
  keys: the names of the outputs of its step (each a sum over the global batch)
  images_per_step: for images/s
  begin_epoch(epoch): the epoch's schedules (learning rate, noise, drop path)
  step(): runs one step; returns {key: float}
  check_step(out, step): optional checks that raise (e.g. loss scales below 1)
  loss(out): the loss that a non-finite stop names
  progress_fields(sums): {name: text} for the progress line
  step_summaries(window, step): the summaries of the steps since the last call (chief only)
  end_epoch(epoch, sums): the epoch's work before its checkpoint (evaluation, log line)
  write_epoch(epoch, sums): the epoch's files and summaries (chief only)
  flush(): writes what the summary writers hold (chief only; before each checkpoint)
"""
import contextlib
import math
import os
import time

import tensorflow as tf

from tfnas.runtime import distribute
from tfnas.runtime import files
from tfnas.runtime import stopping
from tfnas.runtime.errors import UserInputError


def model_dir_lock(model_dir, strategy):
  """files.model_dir_lock for the process that writes model_dir: the chief's (one run per
  model_dir); the other workers of a multi-worker run share the chief's."""
  if distribute.is_chief(strategy):
    return files.model_dir_lock(model_dir)
  return contextlib.nullcontext()


def prepare_model_dir(model_dir, params, resumable, what, strategy):
  """files.prepare_model_dir on the chief. In a multi-worker run every worker first checks
  that all have the same params (a worker started with other flags is refused), then learns
  whether the chief accepted model_dir."""
  workers = distribute.workers(strategy)
  if workers is not None:
    workers.check_same({f"the {section} settings": value for section, value in params.items()},
                       "start every worker with the same flags")
  refused = None
  if workers is None or workers.chief:
    try:
      files.prepare_model_dir(model_dir, params, resumable, what)
    except UserInputError as e:
      refused = e
  if workers is not None and workers.any([int(refused is not None)])[0] and refused is None:
    raise UserInputError(f"the chief refused {model_dir} (its output says why)")
  if refused is not None:
    raise refused


def summary_writers(model_dir, chief):
  """The TensorBoard writers of model_dir's train/ and validation/ runs; on a worker that
  is not the chief, writers that write nothing."""
  return {name: tf.summary.create_file_writer(os.path.join(model_dir, name)) if chief
          else tf.summary.create_noop_writer() for name in ("train", "validation")}


class EpochSums:
  """Running sums of a step's outputs over some steps (an epoch's, or a window's).

  With a `variable` (float64, from `variable()`) the sums are kept in it after every
  step, so that a checkpoint holds them; `resume` starts from its values.
  """

  def __init__(self, keys, variable=None, resume=False, with_steps=True):
    self.keys, self.variable, self.with_steps = tuple(keys), variable, with_steps
    self.sums, self.examples, self.steps = {}, 0, 0
    if resume:
      values = variable.numpy().tolist()
      n = len(self.keys)
      if values[n]:  # examples
        self.sums = dict(zip(self.keys, values[:n]))
        self.examples = int(values[n])
        self.steps = int(values[n + 1]) if with_steps else 0
    # The rate covers the steps run since this object was made.
    self.start, self.timed_examples = time.perf_counter(), 0

  @staticmethod
  def variable(keys, with_steps=True):
    """The checkpointed sums: one value per key, the examples and (with_steps) the steps.
    On the host, outside the replicas (float64 on any device)."""
    with tf.device("CPU:0"):
      return tf.Variable(tf.zeros([len(keys) + 1 + with_steps], tf.float64), trainable=False)

  def add(self, out, examples):
    for k, v in out.items():
      self.sums[k] = self.sums.get(k, 0.0) + v
    self.examples += examples
    self.timed_examples += examples
    self.steps += 1
    if self.variable is not None:
      self.variable.assign([self.sums.get(k, 0.0) for k in self.keys] + [self.examples] +
                           ([self.steps] if self.with_steps else []))

  def per_example(self, key):
    return self.sums.get(key, math.nan) / max(self.examples, 1)

  def per_step(self, key):
    return self.sums.get(key, math.nan) / max(self.steps, 1)

  def seconds(self):
    return max(time.perf_counter() - self.start, 1e-9)

  def examples_per_second(self):
    return self.timed_examples / self.seconds()


class Loop:
  """Runs a task's epochs from the step its checkpoint reached.

  Args:
    model_dir: named in the stop messages.
    epochs, steps_per_epoch: the run's shape.
    global_step, epoch: the task's step and epoch variables (checkpointed).
    sums: the EpochSums.variable of the task's keys (checkpointed).
    checkpointer: a checkpointing.Checkpointer of the task's checkpoint (restored already).
    progress: a progress.Progress.
    summary_every_steps: the cadence of the task's step summaries (0: none).
    batch_size: examples of one step (global).
    stop_at_step: stop with a checkpoint after this global step (run() returns None).
    strategy: the run's tf.distribute strategy; its process writes files and summaries if
      it is the chief (distribute.is_chief; `chief`): the tasks ask the loop.
    with_steps: whether `sums` counts the steps (EpochSums).
  """

  def __init__(self, *, model_dir, epochs, steps_per_epoch, global_step, epoch, sums,
               checkpointer, progress, batch_size, strategy, summary_every_steps=0,
               stop_at_step=None, with_steps=True):
    self.model_dir, self.epochs, self.steps_per_epoch = model_dir, epochs, steps_per_epoch
    self.global_step, self.epoch, self.sums = global_step, epoch, sums
    self.checkpointer, self.progress, self.batch_size = checkpointer, progress, batch_size
    self.summary_every_steps, self.stop_at_step = summary_every_steps, stop_at_step
    self.chief = distribute.is_chief(strategy)
    self.multi_worker = distribute.workers(strategy) is not None
    self.with_steps = with_steps

  def step_number(self):
    return int(self.global_step.numpy())

  def run(self, task):
    """Runs the epochs left. Returns the last epoch's EpochSums (from the checkpoint when no
    step was left), or None when stopped at stop_at_step."""
    start_step = self.step_number()
    # What the summaries wrote reaches the disk with each checkpoint.
    self.checkpointer.before_save = lambda: self._flush(task)
    sums = None
    try:
      for epoch in range(start_step // self.steps_per_epoch, self.epochs):
        sums = self._run_epoch(task, epoch, start_step)
        if sums is None:
          return None
    except stopping.Stopped:
      self._flush(task)  # what was logged before the stop
      raise
    self._flush(task)
    return sums or EpochSums(task.keys, self.sums, resume=True, with_steps=self.with_steps)

  def _run_epoch(self, task, epoch, start_step):
    task.begin_epoch(epoch)
    self.progress.begin_epoch(epoch)
    first = max(start_step - epoch * self.steps_per_epoch, 0)
    # Resumed within the epoch: its first steps' sums come from the checkpoint.
    sums = EpochSums(task.keys, self.sums, resume=first > 0, with_steps=self.with_steps)
    window = EpochSums(task.keys)
    for step_in_epoch in range(first, self.steps_per_epoch):
      out = self._step(task)
      step = self.step_number()
      if not all(math.isfinite(v) for v in out.values()):
        raise FloatingPointError(f"the loss became {task.loss(out)} at step {step}; the last "
                                 f"checkpoint in {self.model_dir} is kept")
      task.check_step(out, step)
      sums.add(out, self.batch_size)
      window.add(out, self.batch_size)
      self.progress.step(step_in_epoch, step, task.progress_fields(sums))
      last = step_in_epoch + 1 == self.steps_per_epoch
      if self.summary_every_steps and (step % self.summary_every_steps == 0 or last
                                       or step == self.stop_at_step):
        if self.chief:
          task.step_summaries(window, step)
        window = EpochSums(task.keys)
      if step == self.stop_at_step:
        self.checkpointer.save()
        self.progress.end_epoch()
        return None
      self.checkpointer.after_step(save=not last)  # the epoch's end writes its own checkpoint
    self.progress.end_epoch()
    task.end_epoch(epoch, sums)
    self.epoch.assign(epoch + 1)
    if self.chief:
      task.write_epoch(epoch, sums)
    # The checkpoint last (the summary writers flushed before it): a stop after it loses nothing, so it may end the process.
    self.checkpointer.save()
    self.checkpointer.after_step()
    return sums

  def _step(self, task):
    try:
      return {k: float(v) for k, v in task.step().items()}
    except distribute.COLLECTIVE_FAILURES as e:
      if not self.multi_worker:
        raise
      raise distribute.WorkerLost(distribute.lost_line(e)) from None

  def _flush(self, task):
    if self.chief:
      task.flush()
