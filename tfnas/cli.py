"""What every tool in tools/ shares: running main() with clear errors and signal handling.

No flags are defined here; the tools define their own. Nothing here imports
TensorFlow, so a tool that fails on bad input says so before TensorFlow loads.
"""
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


def _install_signal_handlers():
  def handler(signum, frame):
    del frame
    name = signal.Signals(signum).name
    if STOP and STOP.reason == name and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop at once
    STOP.request(name)
    if not STOP.unsaved_steps:  # e.g. while the graph is built: nothing to save
      raise Stopped(name)
    print(f"{name} received: stopping after the current step with a checkpoint",
          file=sys.stderr, flush=True)

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, handler)


def run(main):
  """Runs an absl main with one-line errors.

  Bad input exits 2; a run that cannot go on (diverged, disk full) exits 1; a
  run stopped by a signal exits 128 + the signal's number, after its checkpoint.
  """

  def guarded_main(argv):
    _install_signal_handlers()
    try:
      return main(argv)
    except UserInputError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except (FloatingPointError, RunError) as e:  # say so, keep what was written
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
    except Stopped as e:
      print(str(e), file=sys.stderr)
      sys.exit(_EXIT_STATUS.get(e.reason, 1))

  app.run(guarded_main)
