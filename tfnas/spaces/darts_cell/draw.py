"""Cell diagrams in the style of the original DARTS pictures, via graphviz.

cell_graph builds the graph without touching the disk (test it through
`.source`); spaces.render writes the DOT source and runs Graphviz's `dot` on it.
narrow_cell_graph draws the same cell top to bottom for TensorBoard, whose
image cards are 350 pixels wide.
"""
import graphviz

from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype as genotype_lib

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
  entries, concat, live, last = _cell(genotype, cell)
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
  _add_nodes(g, range(2, last + 1), live)
  for op, to, frm in entries:
    style = {} if frm in live else _MISSING_EDGE
    g.edge(_name(frm), _name(to), label=op, **style)
  _add_output(g, concat, live)
  return g


def narrow_cell_graph(genotype, cell, width_inches=3.5):
  """The cell of cell_graph drawn top to bottom, at most width_inches wide.

  Meant for TensorBoard, which shrinks every image to its 350-pixel card: a
  left-to-right DARTS cell is about 30 labels' heights wide, so its labels
  end up about 7 pixels high there. Here the inputs are on top, each
  intermediate node gets a row of its own with the ops of its incoming
  edges just above it, and an op's name is broken after its last
  underscore: the cell is about 17 labels' heights wide, and `dot` scales it
  down (smoothly) to width_inches, if wider, keeping labels about 14 pixels
  high at 96 dpi.
  """
  entries, concat, live, last = _cell(genotype, cell)
  g = graphviz.Digraph(
      name=f'{cell}_cell',
      graph_attr={'rankdir': 'TB', 'ranksep': '0.1', 'nodesep': '0.05',
                  'pad': '0.05', 'size': f'{width_inches},100', 'dpi': '96',
                  'bgcolor': 'white'},  # TensorBoard shows transparent pixels black
      node_attr={
          'style': 'filled', 'shape': 'rect', 'fontsize': '20',
          'height': '0.4', 'width': '0.4', 'penwidth': '2', 'fontname': 'times',
          'margin': '0.05,0.03'},
      edge_attr={'fontsize': '20', 'fontname': 'times'})
  with g.subgraph() as inputs:
    inputs.attr(rank='same')
    for name in _INPUTS:
      inputs.node(name, fillcolor=_INPUT_FILL)
  _add_nodes(g, range(2, last + 1), live)
  for to in range(2, last + 1):
    incoming = [(i, op, frm) for i, (op, t, frm) in enumerate(entries) if t == to]
    # The op names of a node's edges share the row above it: an op is a plain
    # text node that its edge passes through.
    with g.subgraph() as row:
      row.attr(rank='same')
      for i, op, frm in incoming:
        head, underscore, tail = op.rpartition('_')
        text = f'{head}_\\n{tail}' if underscore else op
        row.node(f'op{i}', label=text, shape='plaintext', style='', margin='0.02,0',
                 **({} if frm in live else {'fontcolor': 'gray'}))
    for i, _, frm in incoming:
      style = {} if frm in live else _MISSING_EDGE
      g.edge(_name(frm), f'op{i}', arrowhead='none', **style)
      g.edge(f'op{i}', _name(to), **style)
      if to > 2:  # below the node before, so that each row holds one node's ops
        g.edge(_name(to - 1), f'op{i}', style='invis')
  _add_output(g, concat, live)
  return g


def _cell(genotype, cell):
  """(entries, concat, live nodes with the inputs, highest node drawn) of a cell."""
  if cell not in _CELLS:
    raise UserInputError(
        f"unknown cell {cell!r}; allowed: {', '.join(_CELLS)}")
  entries = getattr(genotype, cell)
  concat = getattr(genotype, cell + '_concat')
  live = set(genotype_lib.live_nodes(entries)) | {0, 1}
  # Every node up to the highest one mentioned is drawn, so a missing node in
  # the middle (Fair DARTS' node 3) shows as a grey box, not as a gap.
  last = max([1, *concat, *(max(to, frm) for _, to, frm in entries)])
  return entries, concat, live, last


def _add_nodes(g, nodes, live):
  for n in nodes:
    if n in live:
      g.node(_name(n), fillcolor=_NODE_FILL)
    else:
      g.node(_name(n), **_MISSING_NODE)


def _add_output(g, concat, live):
  g.node(_OUTPUT, fillcolor=_OUTPUT_FILL)
  for n in concat:
    style = {} if n in live else _MISSING_EDGE
    g.edge(_name(n), _OUTPUT, **style)


def _name(node):
  """The drawn name of a node number: c_{k-2}, c_{k-1}, then 0, 1, ..."""
  return _INPUTS[node] if node < 2 else str(node - 2)
