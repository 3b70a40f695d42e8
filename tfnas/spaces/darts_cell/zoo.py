"""Published CIFAR-10 cells by name, and name-or-file lookup for the tools.

Cells are stored as their authors published them: DARTS-form lists of
(op, from_node) pairs, two per intermediate node, or Fair DARTS' 3-tuples
(op, to_node, from_node); genotype.from_json turns both into Genotypes.
"""
import os

from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype

# DARTS, quark0/darts cnn/genotypes.py (DARTS_V1, DARTS_V2); concat 2..5.
_DARTS_V1 = {
    'normal': [
        ['sep_conv_3x3', 1], ['sep_conv_3x3', 0],
        ['skip_connect', 0], ['sep_conv_3x3', 1],
        ['skip_connect', 0], ['sep_conv_3x3', 1],
        ['sep_conv_3x3', 0], ['skip_connect', 2]],
    'reduce': [
        ['max_pool_3x3', 0], ['max_pool_3x3', 1],
        ['skip_connect', 2], ['max_pool_3x3', 0],
        ['max_pool_3x3', 0], ['skip_connect', 2],
        ['skip_connect', 2], ['avg_pool_3x3', 0]],
}
_DARTS_V2 = {
    'normal': [
        ['sep_conv_3x3', 0], ['sep_conv_3x3', 1],
        ['sep_conv_3x3', 0], ['sep_conv_3x3', 1],
        ['sep_conv_3x3', 1], ['skip_connect', 0],
        ['skip_connect', 0], ['dil_conv_3x3', 2]],
    'reduce': [
        ['max_pool_3x3', 0], ['max_pool_3x3', 1],
        ['skip_connect', 2], ['max_pool_3x3', 1],
        ['max_pool_3x3', 0], ['skip_connect', 2],
        ['skip_connect', 2], ['max_pool_3x3', 1]],
}

# Fair DARTS, xiaomi-automl/FairDARTS fairdarts/genotypes.py (FairDARTS_a..g).
# No concat given: from_json's default, the target nodes, is what the
# original cell (DCOCell) concatenates.
_FAIR_DARTS = {
    'a': {
        'normal': [
            ['sep_conv_3x3', 2, 0], ['sep_conv_5x5', 2, 1],
            ['max_pool_3x3', 4, 0], ['sep_conv_3x3', 5, 0]],
        'reduce': [
            ['max_pool_3x3', 2, 0], ['avg_pool_3x3', 2, 1],
            ['avg_pool_3x3', 3, 0], ['dil_conv_5x5', 3, 1],
            ['avg_pool_3x3', 4, 0], ['sep_conv_5x5', 4, 1],
            ['skip_connect', 5, 0], ['skip_connect', 5, 1]],
    },
    'b': {
        'normal': [
            ['sep_conv_3x3', 2, 0], ['sep_conv_3x3', 2, 1],
            ['sep_conv_3x3', 3, 1], ['dil_conv_3x3', 4, 0],
            ['sep_conv_5x5', 4, 1], ['dil_conv_5x5', 5, 1]],
        'reduce': [
            ['skip_connect', 2, 0], ['dil_conv_3x3', 2, 1],
            ['skip_connect', 3, 0], ['dil_conv_3x3', 3, 1],
            ['max_pool_3x3', 4, 0], ['sep_conv_3x3', 4, 1],
            ['skip_connect', 5, 2], ['max_pool_3x3', 5, 0]],
    },
    'c': {
        'normal': [
            ['max_pool_3x3', 2, 0], ['sep_conv_5x5', 2, 1],
            ['dil_conv_3x3', 4, 0], ['dil_conv_5x5', 4, 2],
            ['skip_connect', 5, 3], ['sep_conv_3x3', 5, 0]],
        'reduce': [
            ['dil_conv_3x3', 2, 1], ['dil_conv_5x5', 2, 0],
            ['dil_conv_3x3', 3, 0], ['sep_conv_3x3', 3, 1],
            ['sep_conv_5x5', 4, 0], ['sep_conv_5x5', 4, 3],
            ['sep_conv_5x5', 5, 0], ['skip_connect', 5, 1]],
    },
    'd': {
        'normal': [
            ['sep_conv_3x3', 2, 0], ['sep_conv_5x5', 2, 1],
            ['dil_conv_3x3', 3, 1], ['max_pool_3x3', 3, 0],
            ['dil_conv_3x3', 4, 0], ['dil_conv_3x3', 4, 1],
            ['sep_conv_3x3', 5, 0], ['dil_conv_5x5', 5, 1]],
        'reduce': [
            ['max_pool_3x3', 2, 0], ['sep_conv_5x5', 2, 1],
            ['avg_pool_3x3', 3, 0], ['dil_conv_5x5', 3, 2],
            ['dil_conv_3x3', 4, 3], ['avg_pool_3x3', 4, 0],
            ['avg_pool_3x3', 5, 0], ['skip_connect', 5, 3]],
    },
    'e': {
        'normal': [
            ['sep_conv_3x3', 2, 0], ['sep_conv_3x3', 2, 1],
            ['dil_conv_3x3', 4, 1], ['dil_conv_3x3', 4, 2],
            ['dil_conv_3x3', 5, 0], ['dil_conv_5x5', 5, 1]],
        'reduce': [
            ['max_pool_3x3', 2, 1], ['max_pool_3x3', 2, 0],
            ['max_pool_3x3', 3, 1], ['max_pool_3x3', 3, 0],
            ['sep_conv_5x5', 4, 1], ['max_pool_3x3', 4, 0],
            ['avg_pool_3x3', 5, 0], ['dil_conv_5x5', 5, 1]],
    },
    'f': {
        'normal': [
            ['max_pool_3x3', 2, 0], ['sep_conv_3x3', 2, 1],
            ['dil_conv_3x3', 3, 1], ['sep_conv_5x5', 4, 1],
            ['sep_conv_3x3', 5, 0], ['sep_conv_3x3', 5, 1]],
        'reduce': [
            ['max_pool_3x3', 2, 0], ['max_pool_3x3', 2, 1],
            ['max_pool_3x3', 3, 0], ['dil_conv_3x3', 3, 1],
            ['dil_conv_3x3', 4, 2], ['max_pool_3x3', 4, 0],
            ['max_pool_3x3', 5, 0], ['sep_conv_3x3', 5, 1]],
    },
    'g': {
        'normal': [
            ['sep_conv_3x3', 2, 0], ['sep_conv_3x3', 2, 1],
            ['skip_connect', 4, 3], ['sep_conv_5x5', 4, 1],
            ['dil_conv_3x3', 5, 0], ['sep_conv_3x3', 5, 1]],
        'reduce': [
            ['avg_pool_3x3', 2, 1], ['skip_connect', 2, 0],
            ['skip_connect', 3, 2], ['max_pool_3x3', 3, 1],
            ['sep_conv_5x5', 4, 3], ['max_pool_3x3', 4, 0],
            ['dil_conv_3x3', 5, 1], ['dil_conv_3x3', 5, 4]],
    },
}

# Noisy DARTS, xiaomi-automl/NoisyDARTS genotypes.py (noisy_darts_a/b);
# concat 2..5.
_NOISY_DARTS_A = {
    'normal': [
        ['sep_conv_3x3', 1], ['sep_conv_3x3', 0],
        ['skip_connect', 0], ['dil_conv_3x3', 2],
        ['dil_conv_3x3', 3], ['sep_conv_3x3', 1],
        ['dil_conv_5x5', 4], ['dil_conv_3x3', 3]],
    'reduce': [
        ['max_pool_3x3', 0], ['dil_conv_5x5', 1],
        ['skip_connect', 2], ['max_pool_3x3', 0],
        ['skip_connect', 2], ['skip_connect', 3],
        ['skip_connect', 2], ['dil_conv_5x5', 4]],
}
_NOISY_DARTS_B = {
    'normal': [
        ['sep_conv_3x3', 1], ['sep_conv_3x3', 0],
        ['skip_connect', 0], ['dil_conv_5x5', 2],
        ['skip_connect', 0], ['sep_conv_3x3', 1],
        ['dil_conv_3x3', 4], ['dil_conv_5x5', 3]],
    'reduce': [
        ['avg_pool_3x3', 0], ['dil_conv_3x3', 1],
        ['skip_connect', 2], ['avg_pool_3x3', 0],
        ['avg_pool_3x3', 0], ['skip_connect', 2],
        ['skip_connect', 2], ['dil_conv_5x5', 3]],
}

# PC-DARTS, yuhuixu1993/PC-DARTS genotypes.py (PC_DARTS_cifar); concat 2..5.
_PC_DARTS = {
    'normal': [
        ['sep_conv_3x3', 1], ['skip_connect', 0],
        ['sep_conv_3x3', 0], ['dil_conv_3x3', 1],
        ['sep_conv_5x5', 0], ['sep_conv_3x3', 1],
        ['avg_pool_3x3', 0], ['dil_conv_3x3', 1]],
    'reduce': [
        ['sep_conv_5x5', 1], ['max_pool_3x3', 0],
        ['sep_conv_5x5', 1], ['sep_conv_5x5', 2],
        ['sep_conv_3x3', 0], ['sep_conv_3x3', 3],
        ['sep_conv_3x3', 1], ['sep_conv_3x3', 2]],
}

# P-DARTS, chenxin061/pdarts genotypes.py (PDARTS); concat 2..5.
_PDARTS = {
    'normal': [
        ['skip_connect', 0], ['dil_conv_3x3', 1],
        ['skip_connect', 0], ['sep_conv_3x3', 1],
        ['sep_conv_3x3', 1], ['sep_conv_3x3', 3],
        ['sep_conv_3x3', 0], ['dil_conv_5x5', 4]],
    'reduce': [
        ['avg_pool_3x3', 0], ['sep_conv_5x5', 1],
        ['sep_conv_3x3', 0], ['dil_conv_5x5', 2],
        ['max_pool_3x3', 0], ['dil_conv_3x3', 1],
        ['dil_conv_3x3', 1], ['dil_conv_5x5', 3]],
}

_JSON = {
    'DARTS_V1': _DARTS_V1,
    'DARTS_V2': _DARTS_V2,
    **{f'FairDARTS_{k}': v for k, v in _FAIR_DARTS.items()},
    'NoisyDARTS_a': _NOISY_DARTS_A,
    'NoisyDARTS_b': _NOISY_DARTS_B,
    'PC_DARTS': _PC_DARTS,
    'PDARTS': _PDARTS,
}

NAMES = tuple(_JSON)


def get(name):
  """Returns the published Genotype called `name` (one of NAMES)."""
  if name not in _JSON:
    raise UserInputError(
        f'unknown genotype name {name!r}; known: {", ".join(NAMES)}')
  # Built on each call: cheap, and keeps importing this module free of work.
  return genotype.from_json(_JSON[name])


def resolve(name_or_path):
  """Returns a Genotype from a zoo name or a genotype JSON file (either form).

  Zoo names win over files of the same name in the working directory.
  """
  if name_or_path in _JSON:
    return get(name_or_path)
  if os.path.isdir(name_or_path):
    raise UserInputError(
        f'genotype {name_or_path!r} is a directory, not a genotype JSON file')
  if os.path.isfile(name_or_path):
    return genotype.load(name_or_path)
  raise UserInputError(
      f'genotype {name_or_path!r} is neither a zoo name nor an existing file; '
      f'zoo names: {", ".join(NAMES)}')
