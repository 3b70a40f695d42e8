"""The one error type for bad user input."""


class UserInputError(ValueError):
  """Bad input from a user: a config value, a file, a dataset.

  The message is one line that names the problem (and, where it helps, how to
  fix it). The tools print it as `error: <message>` and exit with status 2,
  without a traceback.
  """
