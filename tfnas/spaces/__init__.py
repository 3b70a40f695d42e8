"""The search spaces by name: a new space is a folder here and one line in SPACES."""
import os

from tfnas.runtime import files
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.chain import space as chain
from tfnas.spaces.chain import zoo as chain_zoo
from tfnas.spaces.darts_cell import space as darts_cell
from tfnas.spaces.darts_cell import zoo as cell_zoo

SPACES = {"darts_cell": darts_cell.SearchSpace, "chain": chain.SearchSpace}


def make(name, method_name, num_classes, settings):
  """The space `name` with a tool's settings ({setting: value}, None keeping the default)
  for a search by the method `method_name` (a method may have its own default op set)."""
  if name not in SPACES:
    raise UserInputError(f"unknown search space {name!r}; choose one of {', '.join(SPACES)}")
  return SPACES[name].from_settings(method_name, num_classes, settings)


def genotype_space(name_or_path):
  """'chain' or 'darts_cell': the space whose zoo has this name, or whose genotype a JSON file
  holds (a chain's has 'layers'); anything else is left to the DARTS cell's checks."""
  if name_or_path in chain_zoo.NAMES:
    return "chain"
  if name_or_path not in cell_zoo.NAMES and os.path.isfile(name_or_path):
    obj = files.read_json(name_or_path, "genotype")
    if isinstance(obj, dict) and "layers" in obj:
      return "chain"
  return "darts_cell"
