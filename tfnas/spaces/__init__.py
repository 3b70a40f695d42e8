"""The search spaces by name: a new space is a folder here and one line in SPACES."""
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import space as darts_cell

SPACES = {"darts_cell": darts_cell.SearchSpace}


def make(name, method_name, num_classes, settings):
  """The space `name` with a tool's settings ({setting: value}, None keeping the default)
  for a search by the method `method_name` (a method may have its own default op set)."""
  if name not in SPACES:
    raise UserInputError(f"unknown search space {name!r}; choose one of {', '.join(SPACES)}")
  return SPACES[name].from_settings(method_name, num_classes, settings)
