"""What every tool in tools/ shares: running main() with clear errors, signal handling,
help in the README's flag groups, and TensorFlow's own log lines hidden.

Importing this module defines no flag; run() defines --tf_logs, the one flag every
tool takes. Nothing here imports TensorFlow, so a tool that fails on bad input
says so before TensorFlow loads, and TensorFlow's logging is set before it loads.
"""
import contextlib
import gc
import importlib.abc
import importlib.util
import os
import signal
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging as absl_logging

from tfnas.runtime.errors import RunError
from tfnas.runtime.errors import UserInputError
from tfnas.runtime.stopping import StopRequest
from tfnas.runtime.stopping import Stopped

# Set by SIGTERM (preemption) and SIGINT (Ctrl-C) while a tool runs; the
# training loops write a checkpoint after the step in flight and stop.
STOP = StopRequest()
_EXIT_STATUS = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}


# The terminal's stderr while TensorFlow's import writes to a buffer (_stderr_held_back):
# a stop line must reach it even then.
_REAL_STDERR_FD = None


def _write_line(line):
  # os.write, not print: the handler may run in the middle of a print to stderr,
  # and a second write into the same buffer raises RuntimeError (reentrant call).
  fd = _REAL_STDERR_FD if _REAL_STDERR_FD is not None else sys.stderr.fileno()
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


_HELP_FLAGS = ("-h", "-help", "--help", "-?", "--helpshort", "-helpshort", "--helpfull",
               "-helpfull")


def _within(path, folder, subfolders=True):
  path = os.path.abspath(path)
  if not subfolders:
    return os.path.dirname(path) == folder
  return path.startswith(folder + os.sep)


def _hide_tensorflow_logs():
  """Leaves only tfnas' own lines on stderr: hides TensorFlow's C++ log (its notices and
  warnings; the level is read when its library loads, so it is set before), the banners
  it logs while it loads, before any level applies, and its Python modules' records."""
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # fatal errors only
  os.environ.pop("TF_CPP_MAX_VLOG_LEVEL", None)
  # TensorFlow's Python modules log through absl too, as tfnas does: keep tfnas' records.
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tfnas/
  tool_dir = os.path.dirname(os.path.abspath(sys.argv[0]))
  absl_logging.get_absl_handler().addFilter(
      lambda record: _within(record.pathname, package) or _within(record.pathname, tool_dir,
                                                                  subfolders=False))
  if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietImport("tensorflow"))


@contextlib.contextmanager
def _stderr_held_back():
  """Sends what is written to file descriptor 2 (C++ included) to a buffer, shown only if
  the block fails."""
  global _REAL_STDERR_FD
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    _REAL_STDERR_FD = saved
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      held.seek(0)
      os.write(2, held.read())
      raise
    finally:
      os.dup2(saved, 2)
      _REAL_STDERR_FD = None
      os.close(saved)


class _QuietImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports one module (the first time) with its stderr held back."""

  def __init__(self, name):
    self.name = name
    self.loader = None

  def find_spec(self, fullname, path, target=None):
    if fullname != self.name:
      return None
    sys.meta_path.remove(self)  # once, and the usual finders do the finding
    spec = importlib.util.find_spec(fullname)
    if spec is not None and spec.loader is not None:
      self.loader, spec.loader = spec.loader, self
    return spec

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module):
    module.__loader__ = module.__spec__.loader = self.loader
    with _stderr_held_back():
      self.loader.exec_module(module)


def _flag_lines(flag_list, title):
  """absl's rendering of each flag, in this order, under a title line."""
  lines = [f"{title}:"]
  for flag in flag_list:
    values = flags.FlagValues()
    values[flag.name] = flag
    values.register_flag_by_module(title, flag)
    lines += values.module_help(title).strip("\n").splitlines()[1:]
  return "\n".join(lines)


def usage(groups=None, full=False):
  """The tool's help: its docstring, then its flags in `groups` ({title: [flag holders]},
  in order; flags of the tool in no group come last), then the flags every tool takes;
  `full` adds the flags of the libraries (absl's own)."""
  main_flags = flags.FLAGS.get_key_flags_for_module(sys.argv[0])
  sections, grouped = [], set()
  for title, holders in (groups or {}).items():
    group = [flags.FLAGS[h.name] for h in holders]
    grouped.update(f.name for f in group)
    sections.append(_flag_lines(group, title))
  rest = [f for f in main_flags if f.name not in grouped and f.name != "tf_logs"]
  if rest:
    sections.append(_flag_lines(rest, "other" if groups else "flags"))
  sections.append(_flag_lines([flags.FLAGS["tf_logs"]], "every tool") + "\n  --flagfile: "
                  "Reads flags from a file, one a line; flags after it override it.")
  if full:
    shown = {f.name for f in main_flags} | {"tf_logs"}
    for module, module_flags in sorted(flags.FLAGS.flags_by_module_dict().items()):
      others = [f for f in module_flags if f.name not in shown]
      if others:
        sections.append(_flag_lines(others, module))
        shown.update(f.name for f in others)
  doc = (sys.modules["__main__"].__doc__ or "").strip()
  hint = "" if full else "\n\n--helpfull also lists the flags of the libraries."
  return f"{doc}\n\n" + "\n\n".join(sections) + hint


def _wants_help(argv):
  args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  asked = [a for a in args if a in _HELP_FLAGS]
  return asked and ("full" if any("full" in a for a in asked) else "short")


def run(main, flag_groups=None):
  """Runs an absl main with one-line errors.

  Bad input exits 2; a run that cannot go on (diverged, disk full) exits 1; a
  run stopped by a signal exits 128 + the signal's number, after its checkpoint.
  --help lists the tool's flags in `flag_groups` ({title: [flag holders]}) and
  exits 0. TensorFlow's own log lines are hidden unless --tf_logs.
  """
  tf_logs = flags.DEFINE_boolean(
      "tf_logs", False, "Show TensorFlow's own log lines (its banners, notices and "
      "warnings), which are hidden by default.")
  wanted = _wants_help(sys.argv)
  if wanted:
    print(usage(flag_groups, full=wanted == "full"))
    sys.exit(0)

  def guarded_main(argv):
    if not tf_logs.value:
      _hide_tensorflow_logs()
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
