"""A chain genotype drawn as a strip of its layers, via graphviz.

chain_graph runs left to right (for a page); narrow_chain_graph top to bottom, for
TensorBoard's 350-pixel image cards. Each searchable layer is a box with its blocks
("k5 e6"; several blocks of a multi-hot layer one per line, "+" between them), its output
channels and its stride; a skipped layer is a dashed grey box. Blocks are filled by kernel
size, darker for expansion 6. spaces.render writes them to files.
"""
import graphviz

from tfnas.spaces.chain import genotype as genotype_lib

_KERNEL_FILL = {3: ("lightblue", "steelblue1"), 5: ("palegreen", "limegreen"),
                7: ("khaki1", "gold")}  # (expansion below 6, expansion 6 or more)
_OTHER_FILL = ("lightgray", "darkgray")
_FIXED_FILL = "darkseagreen2"  # the stem, the separable block, the head
_SKIPPED = {"style": "dashed", "color": "gray", "fontcolor": "gray"}


def _fill(blocks):
  k, e = max(blocks, key=lambda b: (b[0], b[1]))
  return _KERNEL_FILL.get(k, _OTHER_FILL)[e >= 6]


def _layer_label(layer):
  if not layer.blocks:
    return f"skip\\nc{layer.out_channels}"
  blocks = " +\\n".join(f"k{k} e{e}" for k, e in layer.blocks)
  stride = " s2" if layer.stride == 2 else ""
  return f"{blocks}\\nc{layer.out_channels}{stride}"


def chain_graph(genotype, per_row=None, **graph_attr):
  """The graphviz.Digraph of a ChainGenotype: one row left to right, or rows of per_row
  boxes that read left to right, top to bottom."""
  g = genotype_lib.check(genotype)
  graph = graphviz.Digraph(
      name="chain", graph_attr={"rankdir": "LR" if per_row is None else "TB",
                                "bgcolor": "white", **graph_attr},
      node_attr={"shape": "rect", "style": "filled", "fontname": "times", "fontsize": "14",
                 "margin": "0.06,0.03", "height": "0.3"},
      edge_attr={"arrowsize": "0.6"})
  nodes = [("stem", f"stem 3x3 s2\\nc{g.stem_channels}", {"fillcolor": _FIXED_FILL}),
           ("separable", f"sep 3x3\\nc{g.first_channels}", {"fillcolor": _FIXED_FILL})]
  for i, layer in enumerate(g.layers, 1):
    style = {"fillcolor": _fill(layer.blocks)} if layer.blocks else {"fillcolor": "white",
                                                                      **_SKIPPED}
    nodes.append((f"layer{i}", _layer_label(layer), style))
  nodes.append(("head", f"1x1 c{g.head_channels}\\npool, fc", {"fillcolor": _FIXED_FILL}))
  rows = [nodes] if per_row is None else [nodes[i:i + per_row]
                                           for i in range(0, len(nodes), per_row)]
  for row in rows:
    with graph.subgraph() as same:
      if per_row is not None:
        same.attr(rank="same")
      for name, label, style in row:
        same.node(name, label, **style)
  for row in rows:
    for (a, _, _), (b, _, _) in zip(row, row[1:]):
      graph.edge(a, b)
  for above, below in zip(rows, rows[1:]):
    # Rows start under each other; the edge from a row's end back to the next row's start
    # does not pull the rows apart.
    graph.edge(above[0][0], below[0][0], style="invis", weight="10")
    graph.edge(above[-1][0], below[0][0], constraint="false")
  return graph


def narrow_chain_graph(genotype, width_inches=3.5, per_row=4):
  """chain_graph in rows of per_row boxes, at most width_inches wide (TensorBoard's cards)."""
  return chain_graph(genotype, per_row=per_row, size=f"{width_inches},100", dpi="96",
                     pad="0.05", ranksep="0.25", nodesep="0.15")
