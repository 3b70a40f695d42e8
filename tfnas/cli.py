"""What every tool in tools/ shares: running main() with clear errors.

No flags are defined here; the tools define their own.
"""
import sys

from absl import app

from tfnas.errors import UserInputError


def run(main):
  """Runs an absl main; bad input (exit 2) or a diverged run (exit 1) ends with one line."""

  def guarded_main(argv):
    try:
      return main(argv)
    except UserInputError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except FloatingPointError as e:  # a diverged run: say so, keep what was written
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)

  app.run(guarded_main)
