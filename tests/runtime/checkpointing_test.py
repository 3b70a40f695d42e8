"""Checkpoints that survive faults: intervals, stop requests, finiteness, restore fallback."""
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.runtime import checkpointing
from tfnas.runtime import distribute
from tfnas.runtime import stopping
from tfnas.runtime.errors import RunError
from tfnas.runtime.errors import UserInputError


class _Run:
  """A stand-in for a training run: a weight, a step counter, a Checkpointer."""

  def __init__(self, directory, **kwargs):
    self.weight = tf.Variable([1.0, 2.0])
    self.step = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(weight=self.weight, step=self.step)
    self.checkpointer = checkpointing.Checkpointer(
        checkpoint, str(directory), self.step, variables=[self.weight], **kwargs)

  def advance(self, value):
    self.step.assign_add(1)
    self.weight.assign([value, value])


def test_saves_at_the_step_interval_and_once_per_step(tmp_path):
  run = _Run(tmp_path, every_steps=3, max_to_keep=10)
  saved = []
  for i in range(1, 8):
    run.advance(i)
    if run.checkpointer.due():
      saved.append(os.path.basename(run.checkpointer.save()))
  assert saved == ["ckpt-3", "ckpt-6"]
  assert run.checkpointer.save().endswith("ckpt-7")  # the epoch's end forces one
  run.checkpointer.save()  # the same step again writes nothing new
  assert len(run.checkpointer.manager.checkpoints) == 3


def test_saves_at_the_time_interval(tmp_path, monkeypatch):
  now = [1000.0]
  monkeypatch.setattr(checkpointing.time, "monotonic", lambda: now[0])
  run = _Run(tmp_path, every_secs=60)
  run.advance(1)
  now[0] += 59
  assert not run.checkpointer.due()
  now[0] += 2
  assert run.checkpointer.due()
  run.checkpointer.save()
  run.advance(2)
  assert not run.checkpointer.due()


def test_a_stop_request_saves_and_raises(tmp_path):
  request = stopping.StopRequest()
  run = _Run(tmp_path, stop_request=request)
  assert not request.unsaved_steps  # nothing ran: a signal may stop at once
  run.advance(5)
  run.checkpointer.after_step()  # no request, no interval: nothing written
  assert run.checkpointer.manager.latest_checkpoint is None
  assert request.unsaved_steps  # now a stop must write a checkpoint first
  request.request("SIGTERM")
  request.request("SIGINT")  # the first reason stays
  with pytest.raises(stopping.Stopped, match="stopped by SIGTERM at step 1") as stop:
    run.checkpointer.after_step()
  assert stop.value.checkpoint == run.checkpointer.manager.latest_checkpoint
  assert stop.value.checkpoint.endswith("ckpt-1")
  assert not request.unsaved_steps


def test_a_stop_raised_inside_a_keras_layer_arrives_unchanged():
  # SIGTERM while the network is built raises Stopped inside some layer's call.
  class Interrupted(keras.layers.Layer):
    def call(self, x):
      raise stopping.Stopped("SIGTERM")

  with pytest.raises(stopping.Stopped) as stop:
    Interrupted()(tf.zeros([1, 2]))
  assert stop.value.reason == "SIGTERM"
  assert str(stop.value) == ("stopped by SIGTERM with no step since the last checkpoint: run "
                             "the same command again to resume")


def test_a_stop_during_restore_is_not_taken_for_an_unreadable_checkpoint(tmp_path, monkeypatch):
  step = tf.Variable(0, dtype=tf.int64)
  checkpointer = checkpointing.Checkpointer(tf.train.Checkpoint(step=step), str(tmp_path), step)
  step.assign(1)
  checkpointer.save()

  def interrupted(*args, **kwargs):
    raise stopping.Stopped("SIGTERM")

  monkeypatch.setattr(tf.train.Checkpoint, "restore", interrupted)
  with pytest.raises(stopping.Stopped):
    checkpointer.restore()


def test_weights_that_are_not_finite_are_never_saved(tmp_path):
  run = _Run(tmp_path)
  run.advance(1)
  good = run.checkpointer.save()
  run.advance(float("nan"))
  with pytest.raises(FloatingPointError, match="not finite at step 2; the last checkpoint"):
    run.checkpointer.save()
  assert run.checkpointer.manager.latest_checkpoint == good


def _three_checkpoints(directory):
  run = _Run(directory)
  for value in (1.0, 2.0, 3.0):
    run.advance(value)
    run.checkpointer.save()
  return run


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
  _three_checkpoints(tmp_path)
  data = tmp_path / "ckpt-3.data-00000-of-00001"
  data.write_bytes(data.read_bytes()[:10])  # a half-written file
  fresh = _Run(tmp_path)
  with caplog.at_level(logging.WARNING):
    assert fresh.checkpointer.restore().endswith("ckpt-2")
  assert "ckpt-3 cannot be read" in caplog.text
  np.testing.assert_array_equal(fresh.weight.numpy(), [2.0, 2.0])
  assert int(fresh.step.numpy()) == 2


def test_a_garbled_state_file_still_finds_the_newest_checkpoint(tmp_path):
  _three_checkpoints(tmp_path)
  (tmp_path / "checkpoint").write_text("not a checkpoint state {{{")
  fresh = _Run(tmp_path)
  assert fresh.checkpointer.restore().endswith("ckpt-3")
  np.testing.assert_array_equal(fresh.weight.numpy(), [3.0, 3.0])


class _ChiefWithAnotherWorker(distribute.Workers):
  """The chief of two workers; the other worker's digests are those of `other_values`
  (no cluster: gather answers for both)."""

  def __init__(self, other_values):  # pylint: disable=super-init-not-called
    self.names, self.task, self.chief = ["worker 0", "worker 1"], "worker 0", True
    self.other_values = other_values

  def gather(self, values):
    return [values, [distribute._digest(v) for _, v in sorted(self.other_values.items())]]


@pytest.mark.parametrize("other_step, refused", [(3, False), (0, True)])
def test_workers_that_restored_other_steps_are_refused(tmp_path, other_step, refused):
  # A worker whose model_dir is not the chief's folder restores nothing (step 0).
  _three_checkpoints(tmp_path)
  other = {"the step it resumes from": other_step}
  fresh = _Run(tmp_path, workers=_ChiefWithAnotherWorker(other))
  if not refused:
    assert fresh.checkpointer.restore().endswith("ckpt-3")
    return
  with pytest.raises(UserInputError, match=r"^worker 1 differs from worker 0 in the step it "
                     r"resumes from \(this is worker 0\): every worker's --model_dir must be "
                     r"the chief's folder"):
    fresh.checkpointer.restore()


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
  _three_checkpoints(tmp_path)
  for path in tmp_path.glob("ckpt-*.index"):
    path.write_bytes(b"garbage")
  with pytest.raises(RunError, match="none of the 3 checkpoints in .* can be read"):
    _Run(tmp_path).checkpointer.restore()
  assert _Run(tmp_path / "empty").checkpointer.restore() is None


def test_restore_removes_what_a_killed_save_left_half_written(tmp_path):
  _three_checkpoints(tmp_path)
  kept = sorted(os.listdir(tmp_path))
  # What TensorFlow leaves when killed within a save: the shards' folder (merged into
  # ckpt-4.index and .data at the save's end) and the state file's temp copy.
  temp = tmp_path / "ckpt-4_temp"
  temp.mkdir()
  (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 100)
  (temp / "part-00000-of-00001.index").write_bytes(b"\0" * 10)
  (tmp_path / "checkpoint.tmp0123456789abcdef").write_text("model_checkpoint_path: ")
  fresh = _Run(tmp_path)
  assert fresh.checkpointer.restore().endswith("ckpt-3")
  assert sorted(os.listdir(tmp_path)) == kept


def test_unsaved_steps_follow_the_steps_and_the_epoch_checkpoint(tmp_path):
  # A signal ends the process at once exactly while no step is unsaved.
  request = stopping.StopRequest()
  run = _Run(tmp_path, stop_request=request)
  run.advance(1)
  request.request("SIGTERM")
  run.checkpointer.after_step(save=False)  # an epoch's last step: noted, not saved yet
  assert request.unsaved_steps and run.checkpointer.manager.latest_checkpoint is None
  run.checkpointer.save()  # the epoch's checkpoint, after its files
  assert not request.unsaved_steps
  with pytest.raises(stopping.Stopped, match="stopped by SIGTERM at step 1"):
    run.checkpointer.after_step()  # the stop is honoured here, with that checkpoint
  assert not request.unsaved_steps  # no step since the save
