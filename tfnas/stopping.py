"""Stopping a run on request (a signal), without TensorFlow: the tools import this early."""


class StopRequest:
  """A flag that a signal handler sets and the training loop reads after each step."""

  def __init__(self):
    self.reason = None
    # Whether steps ran since the last checkpoint (set by the training loop). While
    # none did, a stop loses nothing and need not wait for a step (or a graph build).
    self.unsaved_steps = False

  def request(self, reason):
    if self.reason is None:
      self.reason = reason

  def __bool__(self):
    return self.reason is not None


class Stopped(BaseException):
  """The run stopped on request after writing a checkpoint at `step`.

  A BaseException, as KeyboardInterrupt: a signal handler may raise it anywhere
  before the first step, and no `except Exception` on the way may turn it into
  something else (Keras rebuilds exceptions raised inside a layer's call with a
  new message, which lost the signal's name and the exit status).
  """

  def __init__(self, reason, step=None, checkpoint=None):
    if checkpoint is None:
      what = "with no step since the last checkpoint"
    else:
      what = f"at step {step}; checkpoint {checkpoint} written"
    super().__init__(f"stopped by {reason} {what}: run the same command again to resume")
    self.reason, self.step, self.checkpoint = reason, step, checkpoint
