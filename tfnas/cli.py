"""What every tool in tools/ shares: running main() with clear errors.

No flags are defined here; the tools define their own.
"""
import sys

from absl import app

from tfnas.errors import UserInputError


def run(main):
  """Runs an absl main; bad user input ends with one line and exit status 2."""

  def guarded_main(argv):
    try:
      return main(argv)
    except UserInputError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(guarded_main)
