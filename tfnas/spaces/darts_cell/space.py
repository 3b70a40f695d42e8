"""The DARTS cell search space: its settings, and the seam (spaces.base) that the search uses.

A genotype of this space lists the ops of a normal and a reduction cell; the
architecture weights are one matrix [edges, ops] per cell type. Pure Python
until a network is built: the Keras code (supernet.py, networks.py) is imported
where it is needed, so that the tools check the settings before TensorFlow loads.
"""
import dataclasses

import numpy as np

from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import is_int
from tfnas.spaces import base
from tfnas.spaces.darts_cell import draw
from tfnas.spaces.darts_cell import genotype as genotype_lib

CELLS = ("normal", "reduce")  # the cell types, in the order of the alphas
# What derived_network_counts evaluates a genotype with: DARTS' CIFAR network.
EVAL_CHANNELS, EVAL_LAYERS = 36, 20
# The evaluation networks (networks.NETWORK_KINDS) and the settings the papers evaluate them
# with (DARTS CIFAR; DARTS ImageNet, mobile setting), for the tools that build one from a
# genotype alone.
NETWORK_KINDS = ("cifar", "imagenet")
KIND_SETTINGS = {
    "cifar": dict(init_channels=36, layers=20, num_classes=10, image_size=32),
    "imagenet": dict(init_channels=48, layers=14, num_classes=1000, image_size=224),
}
# Drop path per op except the identity (DARTS cells), or per node (Fair DARTS' DCOCell).
DROP_PATH_STYLES = ("op", "node")


def reduction_cells(layers):
  """Indices of the reduction cells among `layers` cells: at 1/3 and 2/3 of the depth
  (the search network's and the evaluation networks')."""
  return sorted({layers // 3, 2 * layers // 3})


def edge_stride(reduction, src):
  """An edge's stride: 2 from a cell input (node 0 or 1) of a reduction cell, else 1."""
  return 2 if reduction and src < 2 else 1


def edge_name(to, src):
  return f"{to}\u2190{src}"  # 3<-1: the edge into node 3 from node 1


@dataclasses.dataclass(frozen=True)
class SearchSpace(base.SearchSpace):
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

  @classmethod
  def from_settings(cls, method_name, num_classes, settings):
    """The space that a tool's settings describe ({field: value}, None keeping the
    default); the op set defaults to the method's (genotype.default_primitives)."""
    values = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise UserInputError(f"the darts_cell space has no setting {', '.join(unknown)}")
    values.setdefault("primitives", genotype_lib.default_primitives(method_name))
    return cls(**values, num_classes=num_classes)

  @property
  def reduction_cells(self):
    """Indices of the reduction cells: 1/3 and 2/3 of the depth."""
    return reduction_cells(self.layers)

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

  # ---- the seam (spaces.base.SearchSpace) ----------------------------------

  def build_supernet(self, method, synchronized_bn=False):
    from tfnas.spaces.darts_cell import supernet  # pylint: disable=import-outside-toplevel
    return supernet.SearchNetwork(self, method, synchronized_bn)

  def alphas_json(self, relaxation, alphas):
    normal, reduce = (np.asarray(a).tolist() for a in alphas)
    return {"primitives": list(self.primitives), "relaxation": relaxation,
            "steps": self.steps, "normal": normal, "reduce": reduce}

  def derive(self, arch_weights, rule, threshold):
    w_normal, w_reduce = (np.asarray(w) for w in arch_weights)
    return genotype_lib.derive(w_normal, w_reduce, self.primitives, self.steps, rule, threshold)

  def genotype_json(self, genotype):
    return genotype_lib.to_json(genotype)

  def save_genotype(self, genotype, path):
    genotype_lib.save(genotype, path)

  def weight_groups(self, arch_weights):
    edges = genotype_lib.edges(self.steps)
    rows = tuple((f"node{to}/from{src}", edge_name(to, src)) for to, src in edges)
    return [base.WeightGroup(
        name=cell, title=f"{cell} cell", ops=tuple(self.primitives), rows=rows, rows_name="edges", row_title="edge (node\u2190input)",
        row_help="edge (node\u2190input; inputs 0, 1 are c_{k-2}, c_{k-1})",
        weights=np.asarray(w)) for cell, w in zip(CELLS, arch_weights)]

  def genotype_scalars(self, genotype):
    """skip_connect ops per derived cell: the sign of DARTS' collapse."""
    return {f"genotype/skip_connect_{cell}":
            sum(op == "skip_connect" for op, _, _ in getattr(genotype, cell)) for cell in CELLS}

  def genotype_pictures(self, genotype):
    return {f"cells/{cell}": draw.narrow_cell_graph(genotype, cell).pipe(format="png")
            for cell in CELLS}

  def derived_network_counts(self, genotype, image_shape):
    """Params and MACs of the genotype's evaluation network (DARTS CIFAR: C=36, 20 cells).

    networks.counts_from_shapes' dict (without params_with_aux when the images are too small
    for the auxiliary head), or {"error": why} when the genotype builds no network (e.g. a
    Fair DARTS genotype with no edge over the threshold).
    """
    from tfnas.spaces.darts_cell import networks  # pylint: disable=import-outside-toplevel
    network = f"C={EVAL_CHANNELS}, {EVAL_LAYERS} cells"
    for auxiliary in (True, False):
      try:
        counts = networks.counts_from_shapes("cifar", genotype, image_shape, EVAL_CHANNELS,
                                             EVAL_LAYERS, self.num_classes, auxiliary)
        return {**counts, "network": network}
      except UserInputError as e:
        error = str(e)  # without the head: why there is no network at all
    return {"error": error, "network": network}


def network_settings(kind, **overrides):
  """init_channels, layers, num_classes and image_size of a `kind` network: the papers'
  setting, with the overrides that are not None."""
  if kind not in NETWORK_KINDS:
    raise UserInputError(f"unknown network kind {kind!r}; allowed: {', '.join(NETWORK_KINDS)}")
  return {**KIND_SETTINGS[kind], **{k: v for k, v in overrides.items() if v is not None}}


@dataclasses.dataclass(frozen=True)
class NetworkSpec(base.NetworkSpec):
  """A cell genotype's evaluation network: DARTS' CIFAR network ('cifar') or its ImageNet
  mobile network ('imagenet'), with its settings (defaults: the CIFAR protocol)."""
  genotype: object
  num_classes: int = 10
  kind: str = "cifar"
  init_channels: int = 36
  layers: int = 20
  auxiliary: bool = True
  drop_path: str = "op"            # "op" (DARTS cells) or "node" (Fair DARTS cells)

  def __post_init__(self):
    if self.kind not in NETWORK_KINDS:
      raise UserInputError(f"network.kind must be one of {', '.join(NETWORK_KINDS)}, got "
                           f"{self.kind!r}")
    for name in ("init_channels", "layers", "num_classes"):
      value, least = getattr(self, name), 2 if name == "num_classes" else 1
      if not is_int(value) or value < least:
        raise UserInputError(f"network.{name} must be an integer >= {least}, got {value!r}")
    if not isinstance(self.auxiliary, bool):
      raise UserInputError(f"network.auxiliary must be true or false, got {self.auxiliary!r}")
    if self.drop_path not in DROP_PATH_STYLES:
      raise UserInputError(f"network.drop_path must be one of {', '.join(DROP_PATH_STYLES)}, "
                           f"got {self.drop_path!r}")

  @property
  def default_image_size(self):
    """The papers' image size for this kind (32 CIFAR, 224 ImageNet)."""
    return KIND_SETTINGS[self.kind]["image_size"]

  @classmethod
  def from_json(cls, settings, genotype_json):
    """From params.json's "network" (kind and settings) and "genotype"."""
    missing = [k for k in ("kind", "init_channels", "layers", "num_classes", "auxiliary",
                           "drop_path") if k not in settings]
    if missing:
      raise UserInputError(f"'network' is missing {', '.join(missing)}")
    return cls(genotype_lib.from_json(genotype_json), settings["num_classes"],
               settings["kind"], settings["init_channels"], settings["layers"],
               settings["auxiliary"], settings["drop_path"])

  def build(self):
    from tfnas.spaces.darts_cell import networks  # pylint: disable=import-outside-toplevel
    return networks.NETWORK_KINDS[self.kind](
        self.genotype, init_channels=self.init_channels, layers=self.layers,
        num_classes=self.num_classes, auxiliary=self.auxiliary, drop_path=self.drop_path)

  def settings_json(self):
    return {"kind": self.kind, "init_channels": self.init_channels, "layers": self.layers,
            "num_classes": self.num_classes, "auxiliary": self.auxiliary,
            "drop_path": self.drop_path}

  def genotype_json(self):
    return genotype_lib.to_json(self.genotype)

  def save_genotype(self, path):
    genotype_lib.save(self.genotype, path)

  def param_counts(self, network):
    from tfnas.spaces.darts_cell import networks  # pylint: disable=import-outside-toplevel
    counts = {"params": networks.count_params(network, include_aux=False)}
    if self.auxiliary:
      counts["params_with_aux"] = networks.count_params(network, include_aux=True)
    return counts

  def counts(self, image_shape):
    """params, params_with_aux (with the head), macs and the ops the cells build."""
    from tfnas.spaces.darts_cell import networks  # pylint: disable=import-outside-toplevel
    return networks.counts_from_shapes(self.kind, self.genotype, tuple(image_shape[:2]),
                                       self.init_channels, self.layers, self.num_classes,
                                       self.auxiliary)
