"""The error types the tools turn into one line and an exit status."""


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
