r"""Draws a genotype with Graphviz: the normal and reduction cells, or a chain's layers.

Usage:
  python tools/draw_cells.py --genotype=NAME_OR_FILE --output_dir=OUT \
      [--format=png,svg,pdf]

NAME_OR_FILE is a published cell or chain (e.g. DARTS_V2, FairNAS_A) or a genotype
JSON file. Writes OUT/normal.gv and OUT/reduce.gv (DOT source) and
OUT/{normal,reduce}.<format> for cells, OUT/chain.gv and OUT/chain.<format> for a
chain (a strip of its layers), printing one line per written file. Rendering
needs Graphviz's `dot` (Debian package graphviz).
"""
import pathlib
import sys

# Lets `python tools/draw_cells.py` work from a checkout without installing.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # pylint: disable=g-import-not-at-top

from tfnas import spaces  # pylint: disable=g-import-not-at-top
from tfnas.runtime import cli  # pylint: disable=g-import-not-at-top
from tfnas.runtime.errors import UserInputError  # pylint: disable=g-import-not-at-top
from tfnas.spaces import render  # pylint: disable=g-import-not-at-top
from tfnas.spaces.chain import zoo as chain_zoo  # pylint: disable=g-import-not-at-top
from tfnas.spaces.darts_cell import zoo  # pylint: disable=g-import-not-at-top

_GENOTYPE = flags.DEFINE_string(
    'genotype', None,
    f"A zoo name ({', '.join(zoo.NAMES + chain_zoo.NAMES)}) or a genotype JSON file.",
    required=True)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Directory for the pictures; created if missing.',
    required=True)
_FORMAT = flags.DEFINE_list(
    'format', ['png'],
    f"Comma-separated output formats, from: {', '.join(render.FORMATS)}.")


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  formats = [f.strip() for f in _FORMAT.value if f.strip()]
  g = spaces.resolve_genotype(_GENOTYPE.value)
  out_dir = pathlib.Path(_OUTPUT_DIR.value)
  for name, graph in spaces.genotype_graphs(g).items():
    for path in render.render(graph, out_dir / name, formats):
      print(path)


if __name__ == '__main__':
  cli.run(main)
