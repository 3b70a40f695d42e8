"""The run loop shared by the search and the retraining, driven by a task with no network."""
import math
import os

import pytest
import tensorflow as tf

from tfnas.runtime import checkpointing
from tfnas.runtime import loop as loop_lib
from tfnas.runtime import progress as progress_lib
from tfnas.runtime import stopping


class CountingTask:
  """Step k (1-based) returns loss k and 1 correct; records what the loop asked of it."""

  keys = ("loss_sum", "correct")

  def __init__(self, global_step, nan_at=None):
    self.global_step, self.nan_at = global_step, nan_at
    self.calls = []

  def begin_epoch(self, epoch):
    self.calls.append(("begin", epoch))

  def step(self):
    self.global_step.assign_add(1)
    k = int(self.global_step.numpy())
    return {"loss_sum": math.nan if k == self.nan_at else float(k), "correct": 1.0}

  def check_step(self, out, step):
    del out, step

  def loss(self, out):
    return out["loss_sum"]

  def progress_fields(self, sums):
    return {"loss": f"{sums.per_example('loss_sum'):.4f}"}

  def step_summaries(self, window, step):
    self.calls.append(("window", step, window.steps, window.sums["loss_sum"]))

  def end_epoch(self, epoch, sums):
    self.calls.append(("end", epoch, sums.steps, sums.sums["loss_sum"]))

  def write_epoch(self, epoch, sums):
    self.calls.append(("write", epoch))

  def flush(self):
    self.calls.append(("flush",))


class _Worker:
  """A multi-worker strategy as the loop sees it: its cluster resolver."""

  def __init__(self, task_type, task_id, cluster):
    self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)


_TWO_WORKERS = {"worker": ["localhost:1", "localhost:2"]}


def _loop(model_dir, epochs=2, steps_per_epoch=3, stop_at_step=None, strategy=None,
          stop_request=None, every_steps=0):
  step, epoch = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
  sums = loop_lib.EpochSums.variable(CountingTask.keys)
  ckpt = tf.train.Checkpoint(step=step, epoch=epoch, sums=sums)
  checkpointer = checkpointing.Checkpointer(ckpt, os.path.join(model_dir, "ckpt"), step,
                                            every_steps=every_steps, stop_request=stop_request)
  checkpointer.restore()
  progress = progress_lib.Progress(epochs, steps_per_epoch, 100, 1, interactive=False)
  return loop_lib.Loop(model_dir=model_dir, epochs=epochs, steps_per_epoch=steps_per_epoch,
                       global_step=step, epoch=epoch, sums=sums, checkpointer=checkpointer,
                       progress=progress, batch_size=2, summary_every_steps=2,
                       stop_at_step=stop_at_step,
                       strategy=strategy or tf.distribute.get_strategy())


def test_epochs_steps_windows_and_checkpoints(tmp_path):
  loop = _loop(str(tmp_path))
  task = CountingTask(loop.global_step)
  sums = loop.run(task)
  assert task.calls == [
      ("begin", 0), ("window", 2, 2, 3.0), ("window", 3, 1, 3.0), ("end", 0, 3, 6.0),
      ("write", 0), ("flush",),
      ("begin", 1), ("window", 4, 1, 4.0), ("window", 6, 2, 11.0), ("end", 1, 3, 15.0),
      ("write", 1), ("flush",), ("flush",)]
  assert (sums.per_example("loss_sum"), sums.per_step("correct")) == (15.0 / 6, 1.0)
  assert int(loop.epoch.numpy()) == 2
  assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-6")


def test_a_resumed_epoch_counts_its_steps_before_the_stop(tmp_path):
  loop = _loop(str(tmp_path), stop_at_step=4)
  assert loop.run(CountingTask(loop.global_step)) is None
  resumed = _loop(str(tmp_path))
  assert int(resumed.global_step.numpy()) == 4
  task = CountingTask(resumed.global_step)
  sums = resumed.run(task)
  assert task.calls[0] == ("begin", 1)  # epoch 0 is done; epoch 1 goes on from step 5
  assert ("end", 1, 3, 15.0) in task.calls  # steps 4, 5, 6: step 4's sums from the checkpoint
  assert sums.examples == 6
  again = _loop(str(tmp_path))  # nothing left: the last epoch's sums from the checkpoint
  done = CountingTask(again.global_step)
  assert again.run(done).sums == {"loss_sum": 15.0, "correct": 3.0}
  assert done.calls == [("flush",)]


def test_a_non_finite_output_stops_with_the_step_and_the_model_dir(tmp_path):
  loop = _loop(str(tmp_path))
  with pytest.raises(FloatingPointError,
                     match=f"the loss became nan at step 5; the last checkpoint in {tmp_path}"):
    loop.run(CountingTask(loop.global_step, nan_at=5))
  assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-3")


def test_only_the_chief_writes(tmp_path):
  loop = _loop(str(tmp_path), strategy=_Worker("worker", 1, _TWO_WORKERS))
  task = CountingTask(loop.global_step)
  loop.run(task)
  assert {call[0] for call in task.calls} == {"begin", "end"}


@pytest.mark.parametrize("task_type, task_id, cluster, chief", [
    ("worker", 0, _TWO_WORKERS, True),   # no chief in the cluster: worker 0 writes
    ("worker", 1, _TWO_WORKERS, False),
    ("chief", 0, {"chief": ["localhost:3"], **_TWO_WORKERS}, True),
    ("worker", 0, {"chief": ["localhost:3"], **_TWO_WORKERS}, False),
])
def test_the_chief_of_a_cluster(task_type, task_id, cluster, chief, tmp_path):
  assert _loop(str(tmp_path), strategy=_Worker(task_type, task_id, cluster)).chief == chief
  assert _loop(str(tmp_path / "one")).chief  # one machine: its one process


def test_a_stop_request_saves_after_the_step_and_flushes(tmp_path):
  request = stopping.StopRequest()
  loop = _loop(str(tmp_path), stop_request=request)
  task = CountingTask(loop.global_step)
  original = task.step

  def step_then_signal():
    out = original()
    if int(loop.global_step.numpy()) == 2:
      request.request("SIGTERM")
    return out

  task.step = step_then_signal
  with pytest.raises(stopping.Stopped):
    loop.run(task)
  assert task.calls[-1] == ("flush",)
  assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-2")


def test_the_summaries_reach_the_disk_before_every_checkpoint(tmp_path):
  # A stop that ends the process at once right after a save keeps the checkpoint's steps;
  # their TensorBoard events must be on disk too.
  loop = _loop(str(tmp_path), every_steps=2)
  task = CountingTask(loop.global_step)
  save = loop.checkpointer.manager.save

  def recorded_save(**kwargs):
    task.calls.append(("save", kwargs["checkpoint_number"]))
    return save(**kwargs)

  loop.checkpointer.manager.save = recorded_save
  loop.run(task)
  saves = [i for i, call in enumerate(task.calls) if call[0] == "save"]
  assert [task.calls[i][1] for i in saves] == [2, 3, 5, 6]  # every 2 steps and each epoch's end
  assert all(task.calls[i - 1] == ("flush",) for i in saves)
