"""What a search shows in TensorBoard about its architecture, once per epoch.

Scalars: the weight of every op on every edge as
arch_weights/<cell>/node<to>/from<from>/<op>, laid out in the Custom Scalars
dashboard as one chart per cell type and node (every op of every incoming edge
on it); the number of skip_connect ops in the derived cells; for a sigmoid
relaxation, the fraction of weights still undecided (between 0.15 and 0.85).
Images: a heatmap of the weights per cell type and the drawn cells of the
current genotype. Text: the genotype.

Everything here is computed from the alphas, which are the same on every
replica, outside the replicas.
"""
import json

from absl import logging
import graphviz
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
import numpy as np
import tensorflow as tf

from tfnas import genotype as genotype_lib
from tfnas import visualize

CELLS = ("normal", "reduce")
UNDECIDED = (0.15, 0.85)  # a sigmoid weight in between is neither kept nor dropped

# Viridis at 0, 1/4, 1/2, 3/4 and 1 (dark blue for 0, yellow for 1).
_COLORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                   np.float32)


def arch_weight_tag(cell, to, src, op):
  return f"arch_weights/{cell}/node{to}/from{src}/{op}"


def write_layout(steps):
  """The Custom Scalars layout: one multi-line chart per cell type and node (write once)."""
  categories = []
  for cell in CELLS:
    charts = []
    for node in range(2, 2 + steps):
      charts.append(layout_pb2.Chart(
          title=f"{cell} cell, node {node}: weight of each op on each incoming edge",
          multiline=layout_pb2.MultilineChartContent(tag=[rf"^arch_weights/{cell}/node{node}/"])))
    categories.append(layout_pb2.Category(title=f"arch_weights/{cell}", chart=charts))
  pb = custom_scalar_summary.pb(layout_pb2.Layout(category=categories))
  tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=0)


def heatmap(weights, cell_height=12, cell_width=24):
  """An RGB uint8 image of a weight matrix in [0, 1]: one block per (edge, op)."""
  w = np.clip(np.asarray(weights, np.float32), 0.0, 1.0)
  position = w * (len(_COLORS) - 1)
  low = np.minimum(np.floor(position).astype(int), len(_COLORS) - 2)
  frac = (position - low)[..., None]
  rgb = _COLORS[low] * (1 - frac) + _COLORS[low + 1] * frac
  rgb = np.repeat(np.repeat(rgb, cell_height, axis=0), cell_width, axis=1)
  return np.round(rgb).astype(np.uint8)


def undecided_fraction(weights_list):
  """The fraction of weights strictly between 0.15 and 0.85."""
  w = np.concatenate([np.asarray(x).ravel() for x in weights_list])
  return float(np.mean((w > UNDECIDED[0]) & (w < UNDECIDED[1])))


def skip_counts(genotype):
  """skip_connect ops per derived cell: the sign of DARTS' collapse."""
  return {cell: sum(op == "skip_connect" for op, _, _ in getattr(genotype, cell))
          for cell in CELLS}


def _cell_picture(genotype, cell):
  """The drawn cell as a [1, H, W, 3] image, or None without graphviz's dot."""
  png = visualize.cell_graph(genotype, cell).pipe(format="png")
  return tf.image.decode_png(png, channels=3)[None]


class ArchSummaries:
  """Writes the architecture's summaries of one epoch into a writer's default context."""

  def __init__(self, primitives, steps, relaxation):
    self.primitives, self.steps, self.relaxation = tuple(primitives), steps, relaxation
    self.edges = genotype_lib.edges(steps)
    self._draw = True

  def heatmap_description(self):
    rows = ", ".join(f"{to}<-{src}" for to, src in self.edges)
    return (f"Rows: edges (node<-input) {rows}. Columns: {', '.join(self.primitives)}. "
            f"Colour: the {self.relaxation} weight, dark blue 0 to yellow 1.")

  def write(self, step, weights, genotype):
    """weights: {'normal': [edges, ops], 'reduce': ...} relaxed; genotype: the derived one."""
    for cell in CELLS:
      w = np.asarray(weights[cell])
      for e, (to, src) in enumerate(self.edges):
        for k, op in enumerate(self.primitives):
          tf.summary.scalar(arch_weight_tag(cell, to, src, op), w[e, k], step=step)
      tf.summary.image(f"arch_weights/{cell}", heatmap(w)[None], step=step,
                       description=self.heatmap_description())
    for cell, count in skip_counts(genotype).items():
      tf.summary.scalar(f"genotype/skip_connect_{cell}", count, step=step)
    if self.relaxation == "sigmoid":
      tf.summary.scalar("arch/undecided_fraction",
                        undecided_fraction([weights[c] for c in CELLS]), step=step,
                        description=f"fraction of sigmoid weights in {UNDECIDED}")
    text = json.dumps(genotype_lib.to_json(genotype))
    tf.summary.text("genotype", f"`{text}`", step=step)
    if self._draw:
      try:
        for cell in CELLS:
          tf.summary.image(f"cells/{cell}", _cell_picture(genotype, cell), step=step)
      except graphviz.ExecutableNotFound:
        logging.warning("graphviz's `dot` is missing: no cell pictures in TensorBoard "
                        "(apt-get install graphviz)")
        self._draw = False
