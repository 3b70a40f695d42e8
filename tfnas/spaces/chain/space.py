"""The MobileNetV2-like chain space (Fair DARTS' "S2", Noisy DARTS' ImageNet space).

A layout is the searchable layers' (out_channels, stride), after a 3x3 stride-2 stem and a
depthwise-separable 3x3 block. Each layer chooses among inverted-residual blocks of kernel
{3, 5, 7} x expansion {3, 6} and, where its input and output shapes agree and `skip` is on,
the identity ('skip', ProxylessNAS-style: a skipped layer makes the chain shallower, and it
is where Noisy DARTS puts its noise).

FAIRNAS is the layout of the same group's FairNAS space, which NoisyDARTS-A follows
exactly (19 layers); PROXYLESSNAS is ProxylessNAS' mobile layout (21 layers); PROXY is a
small one of our own for laptops. Pure Python until a network is built (the supernet and
networks are imported where they are needed), so that the tools check settings before
TensorFlow loads.

The selection rules on a chain (our reading of the cell rules, whose "edge" is a layer here):
  darts             the candidate of the highest weight (the first of equal ones).
  threshold_sparse  every candidate whose weight reaches the threshold: several make the
                    layer their sum (Fair DARTS' multi-hot result).
  threshold_edge    the same, but at most the two highest (the higher index of equal
                    weights first, as the cell rule sorts them).
Under both threshold rules a layer where no candidate passes is skipped if it may be, else
keeps its best candidate; a kept identity next to kept blocks adds nothing, since a layer
whose shapes agree adds its input once anyway (genotype.residual).
"""
import dataclasses
import json
import math
import numbers

import numpy as np

from tfnas.methods import presets
from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import is_int
from tfnas.spaces import base
from tfnas.spaces.chain import draw
from tfnas.spaces.chain import genotype as genotype_lib

KERNELS = (3, 5, 7)
EXPANSIONS = (3, 6)
CANDIDATES = tuple((k, e) for k in KERNELS for e in EXPANSIONS)  # (kernel, expansion)
SKIP = "skip"


def candidate_name(block):
  """'k5_e3' for (5, 3); the identity (None) is 'skip'."""
  return SKIP if block is None else f"k{block[0]}_e{block[1]}"


def _stage(channels, n, first_stride):
  return ((channels, first_stride),) + ((channels, 1),) * (n - 1)


FAIRNAS = (_stage(32, 2, 2) + _stage(40, 4, 2) + _stage(80, 4, 2) + _stage(96, 4, 1) +
           _stage(192, 4, 2) + _stage(320, 1, 1))
PROXYLESSNAS = (_stage(24, 4, 2) + _stage(40, 4, 2) + _stage(80, 4, 2) + _stage(96, 4, 1) +
                _stage(192, 4, 2) + _stage(320, 1, 1))
# Our choice: FairNAS' stages with two layers each (one c320), for 64x64 searches on a laptop.
PROXY = (_stage(32, 2, 2) + _stage(40, 2, 2) + _stage(80, 2, 2) + _stage(96, 2, 1) +
         _stage(192, 2, 2) + _stage(320, 1, 1))
LAYOUTS = {"fairnas": FAIRNAS, "proxylessnas": PROXYLESSNAS, "proxy": PROXY}


def skippable(layout, first_channels=16):
  """Per layer, whether the identity fits it (stride 1, as many channels out as in)."""
  out, c_in = [], first_channels
  for channels, stride in layout:
    out.append(genotype_lib.residual(c_in, genotype_lib.ChainLayer((), channels, stride)))
    c_in = channels
  return tuple(out)


def scaled_channels(channels, multiplier, divisor=8):
  """channels x multiplier to a multiple of divisor, at most 10 % below (MobileNetV2's rule)."""
  if multiplier == 1:
    return channels
  v = channels * multiplier
  rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * v else rounded


def parse_layout(value):
  """A layout from a name in LAYOUTS, 'channels:stride' strings, or (channels, stride) pairs."""
  if isinstance(value, str):
    value = [value]
  value = list(value)
  if len(value) == 1 and isinstance(value[0], str) and ":" not in value[0]:
    if value[0] not in LAYOUTS:
      raise UserInputError(f"unknown chain layout {value[0]!r}; choose one of "
                           f"{', '.join(LAYOUTS)}, or give channels:stride per layer")
    return LAYOUTS[value[0]]
  pairs = []
  for item in value:
    if isinstance(item, str):
      channels, _, stride = item.partition(":")
      try:
        item = (int(channels), int(stride))
      except ValueError:
        raise UserInputError(f"chain layout entry {item!r} is not channels:stride, e.g. "
                             "40:2") from None
    pairs.append(tuple(item))
  return tuple(pairs)


def _int_tuple(name, values):
  values = tuple(values)
  for v in values:
    if isinstance(v, str):
      try:
        v = int(v)
      except ValueError:
        raise UserInputError(f"{name} must be integers, got {v!r}") from None
  return tuple(int(v) for v in values)


@dataclasses.dataclass(frozen=True)
class SearchSpace(base.SearchSpace):
  """The chain's search network (defaults: the FairNAS layout and options)."""
  layout: tuple = FAIRNAS        # (out_channels, stride) per layer, before width_multiplier
  kernels: tuple = KERNELS
  expansions: tuple = EXPANSIONS
  skip: bool = True              # the identity on the layers whose shapes agree
  activation: str = "relu6"      # the inverted-residual blocks'
  outer_activation: str | None = None  # stem, separable block, head; None: `activation`
  se_ratio: float = 0.0          # squeeze-excitation in every block (0: none)
  width_multiplier: float = 1.0  # on every width (the head's only above 1), as MobileNetV2
  stem_channels: int = 32
  first_channels: int = 16       # the depthwise-separable block's output
  head_channels: int = 1280
  num_classes: int = 1000

  def __post_init__(self):
    # Normalized (a frozen dataclass): the same space however a tool wrote its settings.
    object.__setattr__(self, "layout", parse_layout(self.layout))
    for name in ("kernels", "expansions"):
      object.__setattr__(self, name, _int_tuple(name, getattr(self, name)))
    if not self.kernels or not self.expansions:
      raise UserInputError("a chain space needs at least one kernel and one expansion")
    for name in ("kernels", "expansions"):
      if len(set(getattr(self, name))) != len(getattr(self, name)):
        raise UserInputError(f"{name} repeat a value: {list(getattr(self, name))}")
    if not isinstance(self.width_multiplier, numbers.Real) or not self.width_multiplier > 0:
      raise UserInputError(f"width_multiplier must be > 0, got {self.width_multiplier!r}")
    if self.num_classes < 2:
      raise UserInputError(f"num_classes must be >= 2, got {self.num_classes}")
    # Every candidate block of every layer must be buildable: one check, the genotype's.
    self.genotype([self.candidates] * len(self.layout))

  @classmethod
  def from_settings(cls, method_name, num_classes, settings):
    """The space that a tool's settings describe ({field: value}, None keeping the default)."""
    del method_name  # every method searches the same candidates
    values = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise UserInputError(f"the chain space has no setting {', '.join(unknown)}")
    return cls(**values, num_classes=num_classes)

  # ---- the layers and their candidates ------------------------------------

  @property
  def candidates(self):
    """The blocks (kernel, expansion) every layer may choose, in the alphas' column order."""
    return tuple((k, e) for k in self.kernels for e in self.expansions)

  def _scaled(self, channels):
    return scaled_channels(channels, self.width_multiplier)

  @property
  def widths(self):
    """(stem, separable block, head) channels after the width multiplier."""
    head = scaled_channels(self.head_channels, max(1.0, self.width_multiplier))
    return self._scaled(self.stem_channels), self._scaled(self.first_channels), head

  @property
  def layers(self):
    """(out_channels, stride) per searchable layer, after the width multiplier."""
    return tuple((self._scaled(c), s) for c, s in self.layout)

  @property
  def skip_rows(self):
    """Per layer, whether it has the identity candidate."""
    if not self.skip:
      return (False,) * len(self.layout)
    return skippable(self.layers, self.widths[1])

  @property
  def ops(self):
    """The columns of the weights: the blocks' names, then 'skip' when any layer has it."""
    return tuple(map(candidate_name, self.candidates)) + ((SKIP,) if any(self.skip_rows) else ())

  def genotype(self, blocks_per_layer, dropout=0.2):
    """The ChainGenotype of this space that keeps these blocks per layer (checked)."""
    stem, first, head = self.widths
    layers = tuple(genotype_lib.ChainLayer(tuple(tuple(b) for b in blocks), c, s)
                   for blocks, (c, s) in zip(blocks_per_layer, self.layers))
    return genotype_lib.check(genotype_lib.ChainGenotype(
        layers=layers, activation=self.activation, outer_activation=self.outer_activation,
        se_ratio=self.se_ratio, dropout=dropout, stem_channels=stem, first_channels=first,
        head_channels=head))

  def check_image_size(self, height, width):
    """Any size fits: symmetric padding makes every stride-2 output ceil(size / 2)."""
    if height < 1 or width < 1:
      raise UserInputError(f"images of {height}x{width} have no pixels")

  # ---- the seam (spaces.base.SearchSpace) ----------------------------------

  def build_supernet(self, method, synchronized_bn=False):
    from tfnas.spaces.chain import supernet  # pylint: disable=import-outside-toplevel
    return supernet.ChainSearchNetwork(self, method, synchronized_bn)

  def alphas_json(self, relaxation, alphas):
    """The alphas per layer, aligned with `ops` (null where a layer has no identity), with the
    space's settings: derive_from_alphas_json rebuilds the genotype from the file alone."""
    return {"relaxation": relaxation, "ops": list(self.ops),
            "layers": [list(c_s) for c_s in self.layers],
            "alphas": _rows(self.skip_rows, alphas, None),
            "search_space": json.loads(json.dumps(dataclasses.asdict(self)))}

  def weight_matrix(self, arch_weights):
    """[layers, ops] of the supernet's arch_weights(), NaN where a layer has no identity."""
    return np.array(_rows(self.skip_rows, arch_weights, math.nan), np.float64)

  def derive(self, arch_weights, rule, threshold):
    return derive(self, self.weight_matrix(arch_weights), rule, threshold)

  def genotype_json(self, genotype):
    return genotype_lib.to_json(genotype)

  def save_genotype(self, genotype, path):
    genotype_lib.save(genotype, path)

  def weight_groups(self, arch_weights):
    rows = tuple((f"layer{i:02d}", f"{i}: c{c} s{s}")
                 for i, (c, s) in enumerate(self.layers, 1))
    return [base.WeightGroup(
        name="layers", title="chain", ops=self.ops, rows=rows, rows_name="layers",
        row_title="layer: out channels, stride",
        row_help="searchable layer (its output channels and stride; no skip where the shape "
                 "changes)",
        weights=self.weight_matrix(arch_weights))]

  def genotype_scalars(self, genotype):
    """Skipped layers (the chain's collapse would show there) and multi-block layers."""
    return {"genotype/skipped_layers": sum(not layer.blocks for layer in genotype.layers),
            "genotype/multi_block_layers": sum(len(layer.blocks) > 1
                                               for layer in genotype.layers)}

  def genotype_pictures(self, genotype):
    return {"chain": draw.narrow_chain_graph(genotype).pipe(format="png")}

  def derived_network_counts(self, genotype, image_shape):
    """Params and MACs of the genotype's network at the search's image size."""
    from tfnas.spaces.chain import networks  # pylint: disable=import-outside-toplevel
    counts = networks.counts_from_shapes(genotype, tuple(image_shape[:2]), self.num_classes)
    return {**counts, "network": "the chain"}


def _rows(skip_rows, arch_weights, missing):
  """Rows [blocks..., skip] from (blocks [layers, candidates], skip [skippable layers]),
  with `missing` for the identity of a layer that has none."""
  blocks = np.asarray(arch_weights[0]).tolist()
  skip = iter(np.asarray(arch_weights[1]).tolist() if len(arch_weights) > 1 else ())
  if not any(skip_rows):
    return blocks
  return [row + [next(skip) if has_skip else missing]
          for row, has_skip in zip(blocks, skip_rows)]


def derive(space, weights, rule, threshold):
  """The ChainGenotype that a rule (module docstring) derives from weights [layers, ops]."""
  candidates = space.candidates
  kept_per_layer = []
  for row, has_skip in zip(weights, space.skip_rows):
    row = row[:len(candidates) + has_skip]
    if rule == "darts":
      kept = [int(np.argmax(row))]
    elif rule in ("threshold_sparse", "threshold_edge"):
      kept = [j for j in range(len(row)) if row[j] >= threshold]
      if rule == "threshold_edge":  # a stable ascending sort's last two
        top = sorted(range(len(row)), key=lambda j: row[j])[-2:]
        kept = [j for j in kept if j in top]
      if not kept:  # none passes: the identity where it fits, else the best
        kept = [] if has_skip else [int(np.argmax(row))]
    else:
      raise UserInputError(f"unknown selection rule {rule!r}")
    kept_per_layer.append([candidates[j] for j in kept if j < len(candidates)])
  return space.genotype(kept_per_layer)


def derive_from_alphas_json(obj, rule, threshold=0.85):
  """The genotype a rule derives from a chain's alphas.json (raw alphas and the space)."""
  if not isinstance(obj, dict):
    raise UserInputError(f"alphas must be a JSON object, got {type(obj).__name__}")
  for key in ("relaxation", "alphas", "search_space"):
    if key not in obj:
      raise UserInputError(f"alphas is missing key '{key}'")
  if obj["relaxation"] not in presets.RELAXATIONS:
    raise UserInputError(f"unknown relaxation {obj['relaxation']!r}; allowed: "
                         f"{', '.join(presets.RELAXATIONS)}")
  settings = obj["search_space"]
  fields = {f.name for f in dataclasses.fields(SearchSpace)}
  if not isinstance(settings, dict) or not set(settings) <= fields:
    raise UserInputError(f"alphas' search_space must be an object of {', '.join(sorted(fields))}")
  space = SearchSpace(**settings)
  rows = obj["alphas"]
  shape = (len(space.layers), len(space.ops))
  try:
    alphas = np.array([[math.nan if v is None else v for v in row] for row in rows], np.float64)
  except (TypeError, ValueError):
    alphas = None
  missing = [[j == len(space.candidates) and not skip for j in range(shape[1])]
             for skip in space.skip_rows]
  if alphas is None or alphas.shape != shape or not np.array_equal(np.isnan(alphas), missing):
    raise UserInputError(f"alphas must be {shape[0]} rows of {shape[1]} numbers, null exactly "
                         "where a layer has no identity")
  if obj["relaxation"] == "sigmoid":
    weights = 1 / (1 + np.exp(-alphas))
  else:  # over each layer's candidates, the missing identity left out
    e = np.exp(np.where(np.isnan(alphas), -np.inf, alphas - np.nanmax(alphas, 1, keepdims=True)))
    weights = np.where(np.isnan(alphas), np.nan, e / e.sum(1, keepdims=True))
  return derive(space, weights, rule, threshold)


@dataclasses.dataclass(frozen=True)
class NetworkSpec(base.NetworkSpec):
  """A chain genotype's network (networks.ChainNetwork): the genotype holds its settings."""
  genotype: object
  num_classes: int = 1000
  kind = "chain"
  default_image_size = 224

  def __post_init__(self):
    genotype_lib.check(self.genotype)
    if not is_int(self.num_classes) or self.num_classes < 2:
      raise UserInputError(f"network.num_classes must be an integer >= 2, got "
                           f"{self.num_classes!r}")

  @classmethod
  def from_json(cls, settings, genotype_json):
    """From params.json's "network" ({"kind": "chain", "num_classes"}) and "genotype"."""
    if "num_classes" not in settings:
      raise UserInputError("'network' is missing num_classes")
    return cls(genotype_lib.from_json(genotype_json), settings["num_classes"])

  def build(self):
    from tfnas.spaces.chain import networks  # pylint: disable=import-outside-toplevel
    return networks.ChainNetwork(self.genotype, self.num_classes)

  def settings_json(self):
    return {"kind": self.kind, "num_classes": self.num_classes}

  def genotype_json(self):
    return genotype_lib.to_json(self.genotype)

  def save_genotype(self, path):
    genotype_lib.save(self.genotype, path)

  def param_counts(self, network):
    from tfnas.spaces.chain import networks  # pylint: disable=import-outside-toplevel
    return {"params": networks.count_params(network)}

  def counts(self, image_shape):
    """params, macs, the layers and how many keep each block ('skip': none)."""
    from tfnas.spaces.chain import networks  # pylint: disable=import-outside-toplevel
    return {**networks.counts_from_shapes(self.genotype, tuple(image_shape[:2]),
                                          self.num_classes),
            "layers": len(self.genotype.layers), "ops": genotype_lib.count_blocks(self.genotype)}
