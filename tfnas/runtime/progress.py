"""Progress of a run: a bar per epoch on a terminal, a compact log line every N steps elsewhere.

On a terminal the bar shows the epoch, the step, the loss, the accuracy,
images/s and the epoch's ETA, redrawn in place. In CI and cluster logs (no
terminal) a bar would fill the log with carriage returns, so every N steps one
absl log line is written instead, with the same figures and the run's ETA.
"""
import sys
import time

from absl import logging


def format_duration(seconds):
  """H:MM:SS (or M:SS under an hour)."""
  seconds = max(int(round(seconds)), 0)
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
  """Reports the steps of a run made of epochs.

  Args:
    epochs, steps_per_epoch: the run's shape.
    every_steps: steps between log lines when not on a terminal.
    images_per_step: images one step reads (for images/s).
    stream: where the bar goes (default sys.stderr, with the log).
    interactive: draw a bar; default: whether `stream` is a terminal.
    width: characters of the bar itself.
  """

  def __init__(self, epochs, steps_per_epoch, every_steps, images_per_step, stream=None,
               interactive=None, width=24):
    self.epochs, self.steps_per_epoch, self.every_steps = epochs, steps_per_epoch, every_steps
    self.images_per_step = images_per_step
    self.stream = stream or sys.stderr
    if interactive is None:
      isatty = getattr(self.stream, "isatty", None)
      interactive = bool(isatty and isatty())
    self.interactive = interactive
    self.width = width
    self._epoch = 0
    self._timed_steps, self._timed_seconds = 0, 0.0
    self._last_step_time = None
    self._last_draw = 0.0
    self._drawn = False

  def begin_epoch(self, epoch):
    """epoch: 0-based."""
    self._epoch = epoch
    self._last_step_time = None  # the first step of an epoch may include tracing

  def seconds_per_step(self):
    """The mean step time so far, without each epoch's first step (tracing, data start-up)."""
    return self._timed_seconds / self._timed_steps if self._timed_steps else None

  def step(self, step_in_epoch, global_step, fields):
    """After a step. step_in_epoch is 0-based; fields: an ordered {name: text} of figures."""
    now = time.perf_counter()
    if self._last_step_time is not None:
      self._timed_steps += 1
      self._timed_seconds += now - self._last_step_time
    self._last_step_time = now
    done = step_in_epoch + 1
    sps = self.seconds_per_step()
    epoch_eta = None if sps is None else sps * (self.steps_per_epoch - done)
    run_left = self.epochs * self.steps_per_epoch - global_step
    run_eta = None if sps is None else sps * run_left
    figures = " ".join(f"{k} {v}" for k, v in fields.items())
    speed = "--" if sps is None else f"{self.images_per_step / sps:.1f}"
    if self.interactive:
      last = done == self.steps_per_epoch
      if not last and now - self._last_draw < 0.1:
        return  # redraw at most 10 times a second
      self._last_draw = now
      filled = self.width * done // self.steps_per_epoch
      bar = "=" * filled + (">" if filled < self.width else "") + "." * (
          self.width - filled - 1)
      eta = "--" if epoch_eta is None else format_duration(epoch_eta)
      self.stream.write(f"\r\x1b[Kepoch {self._epoch + 1}/{self.epochs} [{bar}] "
                        f"{done}/{self.steps_per_epoch} {figures} | {speed} img/s | ETA {eta}")
      self.stream.flush()
      self._drawn = True
    elif global_step % self.every_steps == 0 or done == self.steps_per_epoch:
      eta = "--" if run_eta is None else format_duration(run_eta)
      logging.info("epoch %d/%d step %d/%d | %s | %s img/s | ETA %s", self._epoch + 1,
                   self.epochs, done, self.steps_per_epoch, figures, speed, eta)

  def end_epoch(self):
    """Ends the bar's line, so that log lines start on their own."""
    if self.interactive and self._drawn:
      self.stream.write("\n")
      self.stream.flush()
      self._drawn = False
