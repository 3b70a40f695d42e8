r"""Draws the normal and reduction cells of a genotype with Graphviz.

Usage:
  python tools/draw_cells.py --genotype=NAME_OR_FILE --output_dir=OUT \
      [--format=png,svg,pdf]

NAME_OR_FILE is a published cell (tfnas.zoo.NAMES, e.g. DARTS_V2) or a
genotype JSON file. Writes OUT/normal.gv and OUT/reduce.gv (DOT source) and
OUT/{normal,reduce}.<format>, printing one line per written file. Rendering
needs Graphviz's `dot` (Debian package graphviz).
"""
import pathlib
import sys

# Lets `python tools/draw_cells.py` work from a checkout without installing.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # pylint: disable=g-import-not-at-top

from tfnas.runtime import cli  # pylint: disable=g-import-not-at-top
from tfnas.runtime.errors import UserInputError  # pylint: disable=g-import-not-at-top
from tfnas.spaces.darts_cell import draw  # pylint: disable=g-import-not-at-top
from tfnas.spaces.darts_cell import zoo  # pylint: disable=g-import-not-at-top

_GENOTYPE = flags.DEFINE_string(
    'genotype', None,
    f"A zoo name ({', '.join(zoo.NAMES)}) or a genotype JSON file.",
    required=True)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Directory for the pictures; created if missing.',
    required=True)
_FORMAT = flags.DEFINE_list(
    'format', ['png'],
    f"Comma-separated output formats, from: {', '.join(draw.FORMATS)}.")


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  formats = [f.strip() for f in _FORMAT.value if f.strip()]
  g = zoo.resolve(_GENOTYPE.value)
  out_dir = pathlib.Path(_OUTPUT_DIR.value)
  for cell in ('normal', 'reduce'):
    graph = draw.cell_graph(g, cell)
    for path in draw.render(graph, out_dir / cell, formats):
      print(path)


if __name__ == '__main__':
  cli.run(main)
