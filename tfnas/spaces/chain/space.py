"""The MobileNetV2-like chain space (Fair DARTS' "S2", Noisy DARTS' ImageNet space), as data.

A layout is the searchable layers' (out_channels, stride), after a 3x3 stride-2 stem to 32
channels and a depthwise-separable 3x3 block to 16. Each layer chooses among inverted-
residual blocks of kernel {3, 5, 7} x expansion {3, 6}, and, where its input and output
shapes agree and skipping is allowed, the identity.

FAIRNAS is the layout of the same group's FairNAS space, which NoisyDARTS-A follows
exactly (19 layers); PROXYLESSNAS is ProxylessNAS' mobile layout (21 layers). The search
space itself (its supernet and the seam of spaces.base) is the next step of this folder.
"""
from tfnas.spaces.chain import genotype as genotype_lib

KERNELS = (3, 5, 7)
EXPANSIONS = (3, 6)
CANDIDATES = tuple((k, e) for k in KERNELS for e in EXPANSIONS)  # (kernel, expansion)
SKIP = "skip"


def candidate_name(block):
  """'k5_e3' for (5, 3); the identity is 'skip'."""
  return SKIP if block is None else f"k{block[0]}_e{block[1]}"


def _stage(channels, n, first_stride):
  return ((channels, first_stride),) + ((channels, 1),) * (n - 1)


FAIRNAS = (_stage(32, 2, 2) + _stage(40, 4, 2) + _stage(80, 4, 2) + _stage(96, 4, 1) +
           _stage(192, 4, 2) + _stage(320, 1, 1))
PROXYLESSNAS = (_stage(24, 4, 2) + _stage(40, 4, 2) + _stage(80, 4, 2) + _stage(96, 4, 1) +
                _stage(192, 4, 2) + _stage(320, 1, 1))
LAYOUTS = {"fairnas": FAIRNAS, "proxylessnas": PROXYLESSNAS}


def skippable(layout, first_channels=16):
  """Per layer, whether the identity fits it (stride 1, as many channels out as in)."""
  out, c_in = [], first_channels
  for channels, stride in layout:
    out.append(genotype_lib.residual(c_in, genotype_lib.ChainLayer((), channels, stride)))
    c_in = channels
  return tuple(out)
