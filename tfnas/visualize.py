"""Cell diagrams in the style of the original DARTS pictures, via graphviz.

cell_graph builds the graph without touching the disk (test it through
`.source`); render writes the DOT source and runs Graphviz's `dot` on it.
"""
import os

import graphviz

from tfnas import genotype as genotype_lib
from tfnas.errors import UserInputError

_CELLS = ('normal', 'reduce')
_INPUTS = ('c_{k-2}', 'c_{k-1}')  # Nodes 0 and 1.
_OUTPUT = 'c_{k}'

# Fills of the original pictures.
_INPUT_FILL = 'darkseagreen2'
_NODE_FILL = 'lightblue'
_OUTPUT_FILL = 'palegoldenrod'
# Nodes that do not exist in the built cell, and edges from them.
_MISSING_NODE = {'fillcolor': 'lightgray', 'color': 'gray', 'fontcolor': 'gray'}
_MISSING_EDGE = {'color': 'gray', 'fontcolor': 'gray'}

# Single-file picture formats; others (gv, vrml, imap, ...) clash with the
# .gv source or write side files.
FORMATS = ('png', 'svg', 'pdf', 'jpg', 'jpeg', 'gif', 'eps', 'ps')
_DOT_MISSING = ("rendering needs graphviz's `dot`: install the graphviz system "
                'package (apt-get install graphviz)')


def cell_graph(genotype, cell):
  """Returns the graphviz.Digraph of one cell of a Genotype.

  Args:
    genotype: a genotype.Genotype.
    cell: 'normal' or 'reduce'.

  Intermediate nodes are labelled 0..n-1 (node 2 is "0"), one edge per entry
  is labelled with its op, and every concatenated node has an edge to c_{k}.
  Nodes that do not exist in the built cell (see genotype.live_nodes), and
  edges from them, are grey.
  """
  if cell not in _CELLS:
    raise UserInputError(
        f"unknown cell {cell!r}; allowed: {', '.join(_CELLS)}")
  entries = getattr(genotype, cell)
  concat = getattr(genotype, cell + '_concat')
  live = set(genotype_lib.live_nodes(entries)) | {0, 1}
  # Every node up to the highest one mentioned is drawn, so a missing node in
  # the middle (Fair DARTS' node 3) shows as a grey box, not as a gap.
  last = max([1, *concat, *(max(to, frm) for _, to, frm in entries)])

  g = graphviz.Digraph(
      name=f'{cell}_cell',
      graph_attr={'rankdir': 'LR'},
      node_attr={
          'style': 'filled', 'shape': 'rect', 'align': 'center',
          'fontsize': '20', 'height': '0.5', 'width': '0.5',
          'penwidth': '2', 'fontname': 'times'},
      edge_attr={'fontsize': '20', 'fontname': 'times'})
  for name in _INPUTS:
    g.node(name, fillcolor=_INPUT_FILL)
  for n in range(2, last + 1):
    if n in live:
      g.node(_name(n), fillcolor=_NODE_FILL)
    else:
      g.node(_name(n), **_MISSING_NODE)
  g.node(_OUTPUT, fillcolor=_OUTPUT_FILL)
  for op, to, frm in entries:
    style = {} if frm in live else _MISSING_EDGE
    g.edge(_name(frm), _name(to), label=op, **style)
  for n in concat:
    style = {} if n in live else _MISSING_EDGE
    g.edge(_name(n), _OUTPUT, **style)
  return g


def _name(node):
  """The drawn name of a node number: c_{k-2}, c_{k-1}, then 0, 1, ..."""
  return _INPUTS[node] if node < 2 else str(node - 2)


def render(graph, path_stem, formats=('png',)):
  """Writes path_stem.gv (the DOT source), then path_stem.<fmt> per format.

  Args:
    graph: a graphviz.Digraph, e.g. from cell_graph.
    path_stem: output path without suffix; missing directories are created.
    formats: output formats, each one of FORMATS.

  Returns:
    The paths written, the .gv first.
  """
  if isinstance(formats, str):
    formats = (formats,)
  formats = tuple(dict.fromkeys(formats))  # Drops repeats, keeps order.
  if not formats:
    raise UserInputError(
        f"no output format given; allowed: {', '.join(FORMATS)}")
  for fmt in formats:
    # Checked up front, so a bad format writes nothing.
    if fmt not in FORMATS:
      raise UserInputError(
          f"unknown output format {fmt!r}; allowed: {', '.join(FORMATS)}")
  path_stem = os.fspath(path_stem)
  gv_path = path_stem + '.gv'
  directory = os.path.dirname(gv_path)
  try:
    if directory:
      os.makedirs(directory, exist_ok=True)
    graph.save(filename=gv_path)
  except OSError as e:
    raise UserInputError(f'cannot write {gv_path}: {e.strerror}') from None
  written = [gv_path]
  for fmt in formats:
    out = f'{path_stem}.{fmt}'
    try:
      graph.render(filename=gv_path, outfile=out, format=fmt, quiet=True)
    except graphviz.ExecutableNotFound:
      raise UserInputError(_DOT_MISSING) from None
    except graphviz.CalledProcessError as e:
      # E.g. a format this build of dot lacks a plugin for.
      detail = _first_line(e.stderr) or f'exit status {e.returncode}'
      raise UserInputError(f'dot could not write {out}: {detail}') from None
    except OSError as e:
      raise UserInputError(f'cannot write {out}: {e.strerror}') from None
    written.append(out)
  return written


def _first_line(stderr):
  if isinstance(stderr, bytes):
    stderr = stderr.decode('utf-8', 'replace')
  lines = (stderr or '').strip().splitlines()
  return lines[0].strip() if lines else ''
