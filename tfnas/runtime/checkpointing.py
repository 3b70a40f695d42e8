"""Checkpoints that survive faults: save intervals, stopping on request, restore with fallback.

A long run on a shared cluster is killed (SIGKILL), preempted (SIGTERM) or
runs out of disk. The loops of the search and of the training use this module
so that running the same command again continues where the last checkpoint
left off:
- checkpoints are written every N steps and/or every T seconds, and at every
  epoch's end;
- a stop request (stopping.StopRequest: the tools set one on SIGTERM and
  SIGINT) is honoured after the step in flight: a checkpoint is written, then
  stopping.Stopped is raised;
- restoring tries the newest checkpoint first and falls back, with a warning,
  to older ones when it cannot be read (a half-written or corrupt file); it
  first removes what a killed save left half-written (TensorFlow's ckpt-N_temp/
  folders, the manager's checkpoint.tmp* files), which only the run that holds
  the model_dir lock (files.model_dir_lock) may do;
- a checkpoint is never written from weights that are not finite;
- in a multi-worker run the workers save and stop at the same steps, the chief's
  checkpoints are the ones that count, and every worker restores from them.
"""
import glob
import os
import re
import shutil
import time

from absl import logging
import tensorflow as tf

from tfnas.runtime.errors import RunError
from tfnas.runtime.errors import first_line
from tfnas.runtime.stopping import Stopped


class Checkpointer:
  """A tf.train.CheckpointManager with an interval, a finiteness check and a safe restore.

  Args:
    checkpoint: the tf.train.Checkpoint to save and restore.
    directory: where the checkpoints go (ckpt-<step>.*).
    step_counter: the global step variable (names the checkpoints).
    max_to_keep: how many checkpoints are kept.
    every_steps: save when this many steps passed since the last save (0: off).
    every_secs: save when this many seconds passed since the last save (0: off).
    variables: what must be finite before a save (default: none is checked).
    stop_request: a stopping.StopRequest honoured by after_step(); its
      unsaved_steps tells a signal handler whether stopping at once would lose a step.
    workers: the distribute.Workers of a multi-worker run (None: one process). Every
      worker saves (TensorFlow's multi-worker convention: a save may read variables
      collectively), but only the chief into `directory`: the others write into a
      scratch folder in it and remove it at once. After every step the workers agree on
      saving and stopping (one worker's stop request, say the chief's SIGTERM, stops them
      all with a checkpoint); so a signal never ends a worker at once, which would leave
      the others waiting.

  `before_save`, if set, is called before each save: what must reach the disk with the
  checkpoint (the run loop flushes the summary writers, so a stop that ends the process at
  once after a save loses no TensorBoard event of the steps it keeps).
  """

  def __init__(self, checkpoint, directory, step_counter, max_to_keep=3, every_steps=0,
               every_secs=0.0, variables=None, stop_request=None, workers=None):
    self.checkpoint, self.directory, self.step_counter = checkpoint, directory, step_counter
    self.every_steps, self.every_secs = every_steps, every_secs
    self.variables = variables
    self.stop_request = stop_request
    self.workers = workers
    self.before_save = None
    # Where this process saves: the chief's (or the only process's) saves are the run's.
    self.scratch = None
    if workers is not None and not workers.chief:
      self.scratch = os.path.join(directory, workers.scratch_name)
    self.manager = tf.train.CheckpointManager(checkpoint, self.scratch or directory,
                                              max_to_keep=max_to_keep,
                                              step_counter=step_counter)
    self._saved_step, self._saved_time = None, time.monotonic()
    self._mark_unsaved(False)

  def _step(self):
    return int(self.step_counter.numpy())

  def candidates(self):
    """Checkpoint prefixes, newest first: the manager's list and any ckpt-N.index on disk.

    The disk is read too, so a lost or garbled `checkpoint` state file does not
    make the run start again from scratch.
    """
    prefixes = set() if self.scratch else set(self.manager.checkpoints)
    prefixes.update(p[:-len(".index")] for p in glob.glob(os.path.join(self.directory,
                                                                       "ckpt-*.index")))

    def number(prefix):
      match = re.search(r"-(\d+)$", prefix)
      return int(match.group(1)) if match else -1

    return sorted(prefixes, key=number, reverse=True)

  def remove_unfinished(self):
    """Removes the files of saves that never finished; returns their paths."""
    paths = sorted(glob.glob(os.path.join(self.directory, "ckpt-*_temp")) +
                   glob.glob(os.path.join(self.directory, "checkpoint.tmp*")))
    for path in paths:
      logging.info("Removing %s, left by a save that did not finish", path)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        try:
          os.remove(path)
        except OSError:
          pass  # in the way of nothing: the next save writes other names
    return paths

  def restore(self):
    """Restores the newest readable checkpoint; returns its path, or None if there is none.

    In a multi-worker run the workers then compare the steps they restored: workers whose
    model_dir is not one shared folder are refused (UserInputError, on every worker).
    """
    path = self._restore_newest()
    if self.workers is not None:
      self.workers.check_same({"the step it resumes from": self._step()},
                              "every worker's --model_dir must be the chief's folder (a shared "
                              "file system)")
    return path

  def _restore_newest(self):
    if self.scratch is None:  # the chief's folder is the chief's to tidy
      self.remove_unfinished()
    candidates = self.candidates()
    problems = []
    for path in candidates:
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      # The reader fails in many ways on a damaged file (OpError, IndexError, ...).
      except Exception as e:  # pylint: disable=broad-except
        problems.append(first_line(e))
        logging.warning("Checkpoint %s cannot be read (%s); trying the previous one", path,
                        problems[-1])
        continue
      self._saved_step, self._saved_time = self._step(), time.monotonic()
      return path
    if candidates:
      raise RunError(f"none of the {len(candidates)} checkpoints in {self.directory} can be "
                     f"read (newest: {problems[0]}); move them away to start again")
    return None

  def due(self):
    """Whether the interval since the last save has passed."""
    step = self._step()
    if step == self._saved_step:
      return False
    if self.every_steps and step - (self._saved_step or 0) >= self.every_steps:
      return True
    return bool(self.every_secs) and time.monotonic() - self._saved_time >= self.every_secs

  def save(self):
    """Writes a checkpoint of the current step (once per step); returns its path."""
    step = self._step()
    if step == self._saved_step:
      return self.manager.latest_checkpoint
    variables = self.variables if self.variables is not None else []
    bad = [v.name for v in variables
           if not bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))))]
    if bad:
      raise FloatingPointError(
          f"{bad[0]} is not finite at step {step}; the last checkpoint in {self.directory} is "
          f"kept")
    if self.before_save is not None:
      self.before_save()
    self._mark_unsaved(True)  # a signal now waits for the save to finish
    try:
      path = self.manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:
      raise RunError(f"cannot write a checkpoint in {self.directory}: {first_line(e)}") from None
    if self.scratch is not None:
      shutil.rmtree(self.scratch, ignore_errors=True)
      path = os.path.join(self.directory, os.path.basename(path))  # the chief's
    self._saved_step, self._saved_time = step, time.monotonic()
    self._mark_unsaved(False)
    return path

  def _mark_unsaved(self, value):
    if self.stop_request is not None:
      self.stop_request.unsaved_steps = value or self.workers is not None

  def after_step(self, save=True):
    """After every step: saves when due; on a stop request saves and raises Stopped.

    save=False only notes the step (an epoch's last: the epoch's end writes its files,
    then its checkpoint, and calls this again).
    """
    self._mark_unsaved(self._step() != self._saved_step)  # not after the epoch's save
    if not save:
      return
    due = self.due()
    stop = self.stop_request.reason if self.stop_request else None
    if self.workers is not None:
      # The agreed decision only: a request that arrives after the exchange waits a step.
      stop, due = self._agree(stop, due)
    if stop:
      raise Stopped(stop, self._step(), self.save())
    if due:
      self.save()

  _REASONS = ("SIGTERM", "SIGINT")

  def _agree(self, stop, due):
    """(the first stop reason of any worker, whether any worker saves now)."""
    known = self._REASONS.index(stop) + 1 if stop in self._REASONS else len(self._REASONS) + 1
    code = known if stop else 0
    code, due = self.workers.any([code, int(due)])
    stop = None if not code else (self._REASONS[code - 1] if code <= len(self._REASONS)
                                  else "another worker")
    if stop and self.stop_request is not None:
      self.stop_request.request(stop)
    return stop, bool(due)
