"""The error types the tools turn into one line and an exit status, and the
small helpers that make those lines."""
import numbers
import re


class UserInputError(ValueError):
  """Bad input from a user: a config value, a file, a dataset.

  The message is one line that names the problem (and, where it helps, how to
  fix it). The tools print it as `error: <message>` and exit with status 2,
  without a traceback.
  """


class RunError(RuntimeError):
  """A run that cannot go on: a full disk, an unreadable set of checkpoints.

  One line, like UserInputError; the tools exit with status 1 and what was
  already written stays.
  """


def first_line(error, limit=None):
  """The first non-empty line of an error, for a one-line message.

  `error` is an exception (its `message` where it has one, as TensorFlow's do),
  a message, or a process's stderr (bytes); None gives ''. TensorFlow's
  {{function_node ...}} and [Op:...] noise is left out; a line longer than
  `limit` is cut, ending in '...'.
  """
  if error is None:
    return ""
  if isinstance(error, bytes):
    text = error.decode("utf-8", "replace")
  elif isinstance(error, str):
    text = error
  else:
    text = getattr(error, "message", None) or str(error)
  line = next((l.strip() for l in text.splitlines() if l.strip()), "")
  line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", line)
  line = re.sub(r"\s*\[Op:\w+\]$", "", line)
  if not line and isinstance(error, BaseException):
    line = type(error).__name__
  if limit is not None and len(line) > limit:
    line = line[:limit - 3] + "..."
  return line


def is_int(value):
  """True for an integer (Python's or NumPy's), False for bool and everything else."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(what, value, minimum=None):
  """Refuses (UserInputError naming `what`) a value that is not an integer >= minimum."""
  if not is_int(value):
    raise UserInputError(f"{what} must be an integer, got {value!r}")
  if minimum is not None and value < minimum:
    raise UserInputError(f"{what} must be at least {minimum}, got {value}")
