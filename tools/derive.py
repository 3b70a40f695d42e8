r"""Derives a discrete genotype from a search's alphas.json (a cell's or a chain's).

Usage:
  python tools/derive.py --alphas=RUN_DIR/alphas.json \
      [--rule=threshold_sparse] [--threshold=0.85] [--output=genotype.json]

Prints the genotype JSON on one line; with --output also writes it there.
"""
import json
import pathlib
import sys

# Lets `python tools/derive.py` work from a checkout without installing tfnas.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top

from tfnas.methods import presets  # pylint: disable=g-import-not-at-top
from tfnas.runtime import cli  # pylint: disable=g-import-not-at-top
from tfnas.runtime.errors import RunError  # pylint: disable=g-import-not-at-top
from tfnas.runtime.errors import UserInputError  # pylint: disable=g-import-not-at-top
from tfnas import spaces  # pylint: disable=g-import-not-at-top

_ALPHAS = flags.DEFINE_string(
    'alphas', None, 'Path to the alphas.json written by the search.',
    required=True)
_RULE = flags.DEFINE_enum(
    'rule', 'threshold_sparse', list(presets.SELECTION_RULES),
    'Derivation rule: darts (top-2 edges per node), threshold_sparse (Fair '
    'DARTS default: top-2 edges, best op kept if weight >= threshold) or '
    'threshold_edge (top-2 ops on every edge, kept if weight >= threshold). In '
    'a chain: the best candidate per layer, every candidate >= threshold, or '
    'the top two of those.')
_THRESHOLD = flags.DEFINE_float(
    'threshold', 0.85, 'Weight cut-off of the threshold rules.',
    lower_bound=0.0, upper_bound=1.0)
_OUTPUT = flags.DEFINE_string(
    'output', None, 'If set, also write the genotype JSON to this file.')


def main(argv):
  if len(argv) > 1:
    raise UserInputError(
        f"unexpected arguments: {' '.join(argv[1:])}")
  if _RULE.value == 'darts' and flags.FLAGS['threshold'].present:
    logging.warning('threshold=%s: no effect, the darts rule uses no threshold '
                    '(threshold_sparse and threshold_edge do)', _THRESHOLD.value)
  g = spaces.derive_from_alphas_file(
      _ALPHAS.value, _RULE.value, _THRESHOLD.value)
  genotype = spaces.genotype_module(g)
  if _OUTPUT.value:
    try:
      genotype.save(g, _OUTPUT.value)
    except RunError as e:  # --output is the user's path: bad input
      raise UserInputError(str(e)) from None
  print(json.dumps(genotype.to_json(g)))


if __name__ == '__main__':
  cli.run(main)
