"""The DARTS cell search space: its op set and the shape of its search network."""
import dataclasses

from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import networks


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """The shape of the search network (defaults: the DARTS CIFAR search network)."""
  primitives: tuple = genotype_lib.PRIMITIVES
  steps: int = 4                 # intermediate nodes per cell
  layers: int = 8                # cells
  init_channels: int = 16
  stem_multiplier: int = 3
  num_classes: int = 10

  def __post_init__(self):
    object.__setattr__(self, "primitives", genotype_lib.check_primitives(self.primitives))
    for name in ("steps", "layers", "init_channels", "stem_multiplier"):
      if getattr(self, name) < 1:
        raise UserInputError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.num_classes < 2:
      raise UserInputError(f"num_classes must be >= 2, got {self.num_classes}")

  @property
  def reduction_cells(self):
    """Indices of the reduction cells: 1/3 and 2/3 of the depth."""
    return networks.reduction_cells(self.layers)

  @property
  def num_edges(self):
    return len(genotype_lib.edges(self.steps))

  def check_image_size(self, height, width):
    """Every reduction halves the image; FactorizedReduce needs even sizes."""
    factor = 2 ** len(self.reduction_cells)
    if height % factor or width % factor:
      raise UserInputError(
          f"images of {height}x{width} do not fit {len(self.reduction_cells)} reductions: "
          f"height and width must be multiples of {factor}")
