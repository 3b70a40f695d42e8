"""The search spaces by name (a new space is a folder here and one line in SPACES), and what
the tools that take a genotype use: resolve_genotype and the evaluation network's spec."""
import os

from tfnas.runtime import files
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.chain import draw as chain_draw
from tfnas.spaces.chain import genotype as chain_genotype
from tfnas.spaces.chain import space as chain
from tfnas.spaces.chain import zoo as chain_zoo
from tfnas.spaces.darts_cell import draw as cell_draw
from tfnas.spaces.darts_cell import genotype as cell_genotype
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


def resolve_genotype(name_or_path):
  """A genotype of any space, from a zoo name or a genotype JSON file."""
  if genotype_space(name_or_path) == "chain":
    return chain_zoo.resolve(name_or_path)
  return cell_zoo.resolve(name_or_path)


def genotype_module(genotype):
  """The genotype module (to_json, save, ...) of the genotype's space."""
  return chain_genotype if isinstance(genotype, chain_genotype.ChainGenotype) else cell_genotype


def derive_from_alphas_file(path, rule, threshold=0.85):
  """The genotype a rule derives from a search's alphas.json, of either space (a chain's
  holds its space's settings)."""
  obj = files.read_json(path, "alphas file")
  try:
    if isinstance(obj, dict) and "search_space" in obj:
      return chain.derive_from_alphas_json(obj, rule, threshold)
    return cell_genotype.derive_from_alphas_json(obj, rule, threshold)
  except UserInputError as e:
    raise UserInputError(f"{path}: {e}") from None


def genotype_graphs(genotype):
  """{name: graphviz.Digraph} that draw a genotype: a cell genotype's normal and reduce cells,
  a chain's strip of layers (spaces.render writes them to files)."""
  if isinstance(genotype, chain_genotype.ChainGenotype):
    return {"chain": chain_draw.chain_graph(genotype)}
  return {cell: cell_draw.cell_graph(genotype, cell) for cell in darts_cell.CELLS}


def network_spec(genotype, num_classes=None, **settings):
  """The evaluation network (spaces.base.NetworkSpec) of a genotype of either space.

  settings: a DARTS cell network's (kind, init_channels, layers, auxiliary, drop_path); None
  keeps the default (the cifar kind, and the papers' settings for the kind). A chain takes
  none: its genotype holds them. num_classes None: the kind's dataset's (10 for cifar, 1000
  for imagenet and chains).
  """
  given = {k: v for k, v in settings.items() if v is not None}
  if isinstance(genotype, chain_genotype.ChainGenotype):
    if given:
      raise UserInputError(f"{', '.join(sorted(given))}: settings of a DARTS cell network; a "
                           "chain's network takes none (its genotype holds its settings)")
    return chain.NetworkSpec(genotype, 1000 if num_classes is None else num_classes)
  kind = given.pop("kind", "cifar")
  defaults = darts_cell.network_settings(kind, num_classes=num_classes)
  defaults.pop("image_size")
  return darts_cell.NetworkSpec(genotype, kind=kind, **{**defaults, **given})


def network_spec_from_json(network, genotype_json):
  """The spec of params.json's "network" (its kind names the space) and "genotype"."""
  if not isinstance(network, dict):
    raise UserInputError(f"'network' must be a JSON object, got {type(network).__name__}")
  if network.get("kind") == chain.NetworkSpec.kind:
    return chain.NetworkSpec.from_json(network, genotype_json)
  return darts_cell.NetworkSpec.from_json(network, genotype_json)
