"""Published chains by name, layer by layer as [kernel, expansion, out_channels, stride]
after the stem and the 16-channel separable block; all with the 1280-channel head.

FairNAS A, B, C: xiaomi-automl/FairNAS models (ReLU6, no squeeze-excitation, dropout 0.2).
NoisyDARTS_A: NoisyDARTS verify_se.py (swish and squeeze-excitation 0.25 in every
inverted-residual block, ReLU in the stem, the separable block and the head; no dropout).
MobileNetV2: the hand-designed reference (ReLU6, kernel 3 and expansion 6, dropout 0.2).
"""
import os

from tfnas.runtime.errors import UserInputError
from tfnas.spaces.chain import genotype as genotype_lib


def _repeat(row, n):
  return [row] * n


_FAIRNAS = dict(activation="relu6", dropout=0.2)
ROWS = {
    "FairNAS_A": ([[7, 3, 32, 2], [3, 3, 32, 1], [7, 3, 40, 2], [3, 6, 40, 1], [7, 6, 40, 1],
                   [3, 3, 40, 1], [3, 3, 80, 2], [7, 6, 80, 1], [7, 6, 80, 1], [5, 3, 80, 1],
                   [3, 6, 96, 1], [5, 3, 96, 1], [5, 3, 96, 1], [3, 6, 96, 1], [3, 6, 192, 2],
                   [7, 6, 192, 1], [3, 6, 192, 1], [7, 6, 192, 1], [5, 6, 320, 1]], _FAIRNAS),
    "FairNAS_B": ([[5, 3, 32, 2], [3, 3, 32, 1], [5, 3, 40, 2], [3, 3, 40, 1], [3, 6, 40, 1],
                   [5, 3, 40, 1], [7, 3, 80, 2], [3, 3, 80, 1], [3, 6, 80, 1], [5, 3, 80, 1],
                   [3, 3, 96, 1], [3, 6, 96, 1], [7, 3, 96, 1], [3, 3, 96, 1], [7, 6, 192, 2],
                   [5, 6, 192, 1], [7, 6, 192, 1], [3, 6, 192, 1], [5, 6, 320, 1]], _FAIRNAS),
    "FairNAS_C": ([[5, 3, 32, 2], [3, 3, 32, 1], [7, 3, 40, 2], *_repeat([3, 3, 40, 1], 3),
                   [3, 3, 80, 2], *_repeat([3, 3, 80, 1], 2), [3, 6, 80, 1],
                   *_repeat([3, 3, 96, 1], 4), [7, 6, 192, 2], [7, 6, 192, 1],
                   *_repeat([3, 6, 192, 1], 2), [5, 6, 320, 1]], _FAIRNAS),
    "NoisyDARTS_A": ([[3, 6, 32, 2], [3, 3, 32, 1], [5, 6, 40, 2], *_repeat([3, 6, 40, 1], 3),
                      [5, 6, 80, 2], [7, 6, 80, 1], *_repeat([3, 6, 80, 1], 2),
                      *_repeat([3, 6, 96, 1], 4), [3, 6, 192, 2], *_repeat([7, 6, 192, 1], 3),
                      [7, 6, 320, 1]],
                     dict(activation="swish", outer_activation="relu", se_ratio=0.25,
                          dropout=0.0)),
    "MobileNetV2": ([[3, 6, 24, 2], [3, 6, 24, 1], [3, 6, 32, 2], *_repeat([3, 6, 32, 1], 2),
                     [3, 6, 64, 2], *_repeat([3, 6, 64, 1], 3), *_repeat([3, 6, 96, 1], 3),
                     [3, 6, 160, 2], *_repeat([3, 6, 160, 1], 2), [3, 6, 320, 1]], _FAIRNAS),
}
NAMES = tuple(ROWS)


def get(name):
  if name not in ROWS:
    raise UserInputError(f"unknown chain {name!r}; known: {', '.join(NAMES)}")
  rows, options = ROWS[name]
  return genotype_lib.from_rows(rows, **options)


def resolve(name_or_path):
  """A chain from a zoo name or a chain genotype JSON file (zoo names win)."""
  if name_or_path in ROWS:
    return get(name_or_path)
  if os.path.isdir(name_or_path):
    raise UserInputError(f"genotype {name_or_path!r} is a directory, not a genotype JSON file")
  if os.path.isfile(name_or_path):
    return genotype_lib.load(name_or_path)
  raise UserInputError(f"genotype {name_or_path!r} is neither a chain's zoo name nor an "
                       f"existing file; chains: {', '.join(NAMES)}")
