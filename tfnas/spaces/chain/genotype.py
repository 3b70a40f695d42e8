"""Chain genotypes: per searchable layer the blocks it keeps, its width and its stride.

A chain network is a stem (3x3 conv, stride 2), a depthwise-separable 3x3 block, the
searchable layers, and a head (1x1 conv, global average pooling, dropout, classifier).
A layer keeps zero or more inverted-residual blocks (kernel, expansion): none is the
identity (a skipped layer, where input and output shapes agree), one is an MBConv, and
several (Fair DARTS' multi-hot choice) add up, with one residual for all of them.

Pure Python (no TensorFlow), so tools can read and check genotypes cheaply.
"""
import dataclasses
import numbers

from tfnas.runtime import files
from tfnas.runtime.errors import UserInputError

ACTIVATION_NAMES = ("relu", "relu6", "swish")


@dataclasses.dataclass(frozen=True)
class ChainLayer:
  blocks: tuple         # ((kernel, expansion), ...); () is the identity
  out_channels: int
  stride: int


@dataclasses.dataclass(frozen=True)
class ChainGenotype:
  """A chain and the options of its blocks (defaults: FairNAS' networks)."""
  layers: tuple                          # ChainLayer per searchable layer
  activation: str = "relu6"              # the inverted-residual blocks'
  outer_activation: str | None = None    # stem, separable block, head; None: `activation`
  se_ratio: float = 0.0                  # squeeze-excitation in every block; 0: none
  dropout: float = 0.2                   # before the classifier
  stem_channels: int = 32
  first_channels: int = 16               # the depthwise-separable block's output
  head_channels: int = 1280

  @property
  def outer(self):
    return self.outer_activation or self.activation


def residual(c_in, layer):
  """Whether a layer adds its input: stride 1 and as many channels out as in."""
  return layer.stride == 1 and c_in == layer.out_channels


def from_rows(rows, **options):
  """A genotype from [kernel, expansion, out_channels, stride] rows, one MBConv a layer (the
  way the published chains are written); options as ChainGenotype's."""
  return check(ChainGenotype(
      layers=tuple(ChainLayer(((k, e),), c, s) for k, e, c, s in rows), **options))


def _positive_int(what, value, allowed=None):
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
    raise UserInputError(f"{what} must be a positive integer, got {value!r}")
  if allowed is not None and value not in allowed:
    raise UserInputError(f"{what} must be one of {', '.join(map(str, allowed))}, got {value}")
  return int(value)


def check(g):
  """g, if every layer can be built; else a UserInputError naming the layer."""
  for name in ("activation", "outer"):
    if getattr(g, name) not in ACTIVATION_NAMES:
      raise UserInputError(f"unknown activation {getattr(g, name)!r}; choose one of "
                           f"{', '.join(ACTIVATION_NAMES)}")
  for name in ("se_ratio", "dropout"):
    value = getattr(g, name)
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
      raise UserInputError(f"{name} must be a number, got {value!r}")
  if not 0 <= g.se_ratio <= 1 or not 0 <= g.dropout < 1:
    raise UserInputError(f"se_ratio must be in [0, 1] and dropout in [0, 1), got {g.se_ratio} "
                         f"and {g.dropout}")
  for name in ("stem_channels", "first_channels", "head_channels"):
    _positive_int(name, getattr(g, name))
  if not g.layers:
    raise UserInputError("a chain needs at least one layer")
  c_in = g.first_channels
  for i, layer in enumerate(g.layers, 1):
    _positive_int(f"layer {i}: out_channels", layer.out_channels)
    _positive_int(f"layer {i}: stride", layer.stride, (1, 2))
    for kernel, expansion in layer.blocks:
      k = _positive_int(f"layer {i}: kernel", kernel)
      if k % 2 == 0:
        raise UserInputError(f"layer {i}: kernel must be odd (symmetric padding), got {k}")
      _positive_int(f"layer {i}: expansion", expansion)
    if not layer.blocks and not residual(c_in, layer):
      raise UserInputError(
          f"layer {i} is skipped (no block) but changes the shape ({c_in} -> "
          f"{layer.out_channels} channels, stride {layer.stride}): only a layer whose input "
          f"and output agree may be the identity")
    c_in = layer.out_channels
  return g


def to_json(g):
  obj = dataclasses.asdict(g)
  obj["layers"] = [{"blocks": [list(b) for b in layer.blocks],
                    "out_channels": layer.out_channels, "stride": layer.stride}
                   for layer in g.layers]
  return obj


def from_json(obj):
  """A genotype from to_json's dict; a UserInputError names what is wrong."""
  if not isinstance(obj, dict):
    raise UserInputError(f"a chain genotype must be a JSON object, got {type(obj).__name__}")
  fields = {f.name for f in dataclasses.fields(ChainGenotype)}
  unknown = sorted(set(obj) - fields)
  if unknown:
    raise UserInputError(f"unknown chain genotype keys: {', '.join(unknown)}")
  if not isinstance(obj.get("layers"), list):
    raise UserInputError("a chain genotype needs 'layers', a list")
  layers = []
  for i, layer in enumerate(obj["layers"], 1):
    if not isinstance(layer, dict) or set(layer) != {"blocks", "out_channels", "stride"}:
      raise UserInputError(f"layer {i} must be an object with blocks, out_channels and stride")
    blocks = layer["blocks"]
    if not isinstance(blocks, list) or any(
        not isinstance(b, list) or len(b) != 2 for b in blocks):
      raise UserInputError(f"layer {i}: blocks must be a list of [kernel, expansion] pairs")
    layers.append(ChainLayer(tuple(tuple(b) for b in blocks), layer["out_channels"],
                             layer["stride"]))
  return check(ChainGenotype(**{**obj, "layers": tuple(layers)}))


def save(g, path):
  files.write_json(to_json(g), path, indent=2)


def load(path):
  obj = files.read_json(path, "chain genotype")
  try:
    return from_json(obj)
  except UserInputError as e:
    raise UserInputError(f"{path}: {e}") from None


def count_blocks(g):
  """How many layers keep each candidate ('k3_e6', ...; 'skip' for the identity)."""
  counts = {}
  for layer in g.layers:
    for name in [f"k{k}_e{e}" for k, e in layer.blocks] or ["skip"]:
      counts[name] = counts.get(name, 0) + 1
  return dict(sorted(counts.items()))
