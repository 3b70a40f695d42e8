"""What every tool in tools/ shares: running main() with clear errors and signal handling.

No flags are defined here; the tools define their own. Nothing here imports
TensorFlow, so a tool that fails on bad input says so before TensorFlow loads.
"""
import gc
import os
import signal
import sys

from absl import app

from tfnas.errors import RunError
from tfnas.errors import UserInputError
from tfnas.stopping import Stopped
from tfnas.stopping import StopRequest

# Set by SIGTERM (preemption) and SIGINT (Ctrl-C) while a tool runs; the
# training loops write a checkpoint after the step in flight and stop.
STOP = StopRequest()
_EXIT_STATUS = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}


def _write_line(line):
  # os.write, not print: the handler may run in the middle of a print to stderr,
  # and a second write into the same buffer raises RuntimeError (reentrant call).
  fd = sys.stderr.fileno()
  start = "\n" if os.isatty(fd) else ""  # below a progress bar, not after it
  os.write(fd, (start + line + "\n").encode())


def _exit_now(line, status):
  """Ends the process from a signal handler: what was printed, the line, the status."""
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError, RuntimeError):  # closed, or the handler interrupted a write
      pass
  _write_line(line)
  os._exit(status)  # pylint: disable=protected-access


def _install_signal_handlers():
  # The handler never raises: Python runs it between any two bytecodes, also inside
  # TensorFlow's tracing machinery, and an exception raised there left it corrupt
  # (SystemError: Objects/listobject.c...). While steps are unsaved it only sets
  # STOP, which the training loop reads after each step (a safe point); while none
  # are (import, build, restore, the first trace, the step after a checkpoint, the
  # files after it) nothing is lost by ending the process at once.
  def handler(signum, frame):
    del frame
    name = signal.Signals(signum).name
    if STOP.reason == "SIGINT" and signum == signal.SIGINT:  # a second Ctrl-C: stop at once
      _exit_now("stopped by a second SIGINT: the steps since the last checkpoint are lost",
                _EXIT_STATUS["SIGINT"])
    STOP.request(name)
    if not STOP.unsaved_steps:
      _exit_now(str(Stopped(STOP.reason)), _EXIT_STATUS[STOP.reason])
    _write_line(f"{name} received: stopping after the current step with a checkpoint")

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, handler)


def run(main):
  """Runs an absl main with one-line errors.

  Bad input exits 2; a run that cannot go on (diverged, disk full) exits 1; a
  run stopped by a signal exits 128 + the signal's number, after its checkpoint.
  """

  def guarded_main(argv):
    try:
      status = main(argv)
    except UserInputError as e:
      print(f"error: {e}", file=sys.stderr)
      status = 2
    except (FloatingPointError, RunError) as e:  # say so, keep what was written
      print(f"error: {e}", file=sys.stderr)
      status = 1
    except Stopped as e:
      print(str(e), file=sys.stderr)
      status = _EXIT_STATUS.get(e.reason, 1)
    # Free what main left in reference cycles (a Searcher and its traced step, say) while
    # TensorFlow is whole. Otherwise the interpreter frees it at exit, after it began to
    # tear the modules down: with three replicas' graphs, tools/benchmark.py then aborted
    # with "double free or corruption".
    gc.collect()
    return status

  _install_signal_handlers()  # before the flags are parsed: a stop then ends at once
  app.run(guarded_main)
