"""Stopping a run on request (a signal), without TensorFlow: the tools import this early."""


class StopRequest:
  """A flag that a signal handler sets and the training loop reads after each step."""

  def __init__(self):
    self.reason = None
    # Whether steps ran since the last checkpoint, or one is being written (set by
    # checkpointing.Checkpointer). While not, a stop loses nothing and the handler
    # ends the process at once, without waiting for a step or a graph build.
    self.unsaved_steps = False

  def request(self, reason):
    if self.reason is None:
      self.reason = reason

  def __bool__(self):
    return self.reason is not None


class Stopped(BaseException):
  """The run stopped on request after writing a checkpoint at `step`.

  Raised by the training loop at a safe point (after a step), never by a signal
  handler. A BaseException, as KeyboardInterrupt: no `except Exception` on the way
  may turn it into something else.
  """

  def __init__(self, reason, step=None, checkpoint=None):
    if checkpoint is None:
      what = "with no step since the last checkpoint"
    else:
      what = f"at step {step}; checkpoint {checkpoint} written"
    super().__init__(f"stopped by {reason} {what}: run the same command again to resume")
    self.reason, self.step, self.checkpoint = reason, step, checkpoint
