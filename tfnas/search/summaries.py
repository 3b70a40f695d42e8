"""What a search shows in TensorBoard about its architecture, once per epoch.

TensorBoard colours lines by run, not by tag, so the weights of each op are a
run of their own, arch/<k>_<op> (op number k): its tag
arch_weights/<cell>/node<to>/from<from> holds that op's weight on one edge.
The Custom Scalars dashboard has one chart per cell type and edge, with one
line (one colour, named in the run list) per op. Also scalars: the number of
skip_connect ops in the derived cells and, for a sigmoid relaxation, the
fraction of weights still undecided (between 0.15 and 0.85). Images, drawn for
TensorBoard's 350-pixel cards: per cell type a heatmap of the weights, the
Fair DARTS paper's picture of collapse (how many edges each op dominates,
epoch by epoch) and the drawn cell of the current genotype. Text: the
genotype.

Everything here is computed from the alphas, which are the same on every
replica, outside the replicas.
"""
import json
import os

from absl import logging
import graphviz
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
import numpy as np
import tensorflow as tf

from tfnas.runtime import files
from tfnas.spaces.darts_cell import draw
from tfnas.spaces.darts_cell import genotype as genotype_lib

CELLS = ("normal", "reduce")
UNDECIDED = (0.15, 0.85)  # a sigmoid weight in between is neither kept nor dropped
DOMINANT_OPS_FILE = "dominant_ops.json"
_WIDTH = 3.5  # inches at 100 dpi: TensorBoard's image cards are 350 pixels wide
_DPI = 100
_FONT = 9  # points: 12.5 pixels at 100 dpi


def op_run(k, op):
  """The run (subdirectory of the model_dir) of the weights of op number k.

  The number keeps the runs in the op order (that of alphas.json), and so
  their colours: TensorBoard gives the sorted runs the 7 colours of its palette
  in turn, so the first and the eighth op share one.
  """
  return f"arch/{k}_{op}"


def arch_weight_tag(cell, to, src):
  return f"arch_weights/{cell}/node{to}/from{src}"


def edge_name(to, src):
  return f"{to}\u2190{src}"  # 3<-1: the edge into node 3 from node 1


def write_layout(steps):
  """The Custom Scalars layout: one chart per cell type and edge, a line per op (write once)."""
  categories = []
  for cell in CELLS:
    charts = [layout_pb2.Chart(
        title=f"{cell} {edge_name(to, src)}",
        multiline=layout_pb2.MultilineChartContent(
            tag=[f"^{arch_weight_tag(cell, to, src)}$"]))
              for to, src in genotype_lib.edges(steps)]
    categories.append(layout_pb2.Category(
        title=f"arch_weights/{cell}: the weight of each op (run arch/<k>_<op>) on each edge "
              f"(node\u2190input; inputs 0, 1 are c_{{k-2}}, c_{{k-1}})", chart=charts))
  pb = custom_scalar_summary.pb(layout_pb2.Layout(category=categories))
  tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=0)


def heatmap_figure(weights, primitives, edges, relaxation):
  """A matplotlib Figure of a weight matrix [edges, ops], labelled, with a colour bar.

  The colour scale runs from 0 to 1 for sigmoid weights, to the highest weight for softmax.
  """
  from matplotlib import figure  # pylint: disable=import-outside-toplevel
  w = np.asarray(weights, np.float32)
  # Softmax weights share 1 among the ops of an edge, near 1/ops for long: on a scale to 1
  # they would all look alike, so their scale ends at the highest weight.
  vmax = 1.0 if relaxation == "sigmoid" else max(float(w.max()), 1e-6)
  fig = figure.Figure(figsize=(_WIDTH, 1.6 + 0.22 * len(edges)), dpi=_DPI)
  ax = fig.add_subplot()
  image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto",
                    interpolation="nearest")
  ax.set_xticks(range(len(primitives)), primitives, rotation=45, ha="right",
                rotation_mode="anchor", fontsize=_FONT)
  ax.set_yticks(range(len(edges)), [edge_name(to, src) for to, src in edges], fontsize=_FONT)
  ax.set_ylabel("edge (node\u2190input)", fontsize=_FONT)
  bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
  bar.set_label(f"{relaxation} weight", fontsize=_FONT)
  bar.ax.tick_params(labelsize=_FONT)
  fig.tight_layout(pad=0.3)
  return fig


def figure_image(fig):
  """The RGB uint8 pixels [H, W, 3] of a matplotlib Figure, drawn with Agg."""
  from matplotlib.backends import backend_agg  # pylint: disable=import-outside-toplevel
  canvas = backend_agg.FigureCanvasAgg(fig)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def heatmap(weights, primitives, edges, relaxation):
  """heatmap_figure's pixels."""
  return figure_image(heatmap_figure(weights, primitives, edges, relaxation))


def dominant_counts(weights):
  """How many edges each op dominates: the op of the highest weight, per edge ([edges, ops])."""
  w = np.asarray(weights)
  return np.bincount(np.argmax(w, axis=1), minlength=w.shape[1]).tolist()


def collapse_figure(epochs, counts, primitives, cell):
  """Fair DARTS' Figure 1: stacked areas of dominant_counts over the epochs.

  epochs: increasing epoch numbers; counts: [epochs, ops]. Epoch e's counts
  (at its end) fill the band from e - 1 to e, so one epoch shows too.
  """
  from matplotlib import figure  # pylint: disable=import-outside-toplevel
  counts = np.asarray(counts, np.float32).reshape(len(epochs), len(primitives))
  x = [epochs[0] - 1, *epochs]
  fig = figure.Figure(figsize=(_WIDTH, 3.6), dpi=_DPI)
  ax = fig.add_subplot()
  colors = _op_colors(len(primitives))
  bottom = np.zeros(len(x), np.float32)
  for k, op in enumerate(primitives):
    top = bottom + np.concatenate([counts[:1, k], counts[:, k]])
    ax.fill_between(x, bottom, top, step="pre", color=colors[k], label=op, linewidth=0)
    bottom = top
  ax.set_xlim(x[0], x[-1])
  ax.set_ylim(0, max(float(bottom.max()), 1.0))
  ax.set_xlabel("epoch", fontsize=_FONT)
  ax.set_ylabel("edges", fontsize=_FONT)
  ax.set_title(f"{cell} cell: edges each op dominates", fontsize=_FONT)
  ax.tick_params(labelsize=_FONT)
  ax.xaxis.get_major_locator().set_params(integer=True)
  fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncols=2, fontsize=_FONT,
             frameon=False)
  fig.tight_layout(pad=0.3, rect=(0, 0.055 * ((len(primitives) + 1) // 2), 1, 1))
  return fig


def _op_colors(n):
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  palette = colormaps["tab10" if n <= 10 else "tab20"]
  return [palette(k) for k in range(n)]


def undecided_fraction(weights_list):
  """The fraction of weights strictly between 0.15 and 0.85."""
  w = np.concatenate([np.asarray(x).ravel() for x in weights_list])
  return float(np.mean((w > UNDECIDED[0]) & (w < UNDECIDED[1])))


def skip_counts(genotype):
  """skip_connect ops per derived cell: the sign of DARTS' collapse."""
  return {cell: sum(op == "skip_connect" for op, _, _ in getattr(genotype, cell))
          for cell in CELLS}


def _cell_picture(genotype, cell):
  """The drawn cell as a [1, H, W, 3] image, 350 pixels wide at most."""
  png = draw.narrow_cell_graph(genotype, cell).pipe(format="png")
  return tf.image.decode_png(png, channels=3)[None]


class ArchSummaries:
  """Writes the architecture's summaries of one epoch.

  The heatmaps, collapse pictures, counts, text and cells go to the default
  writer's context; the weights to a writer per op (runs arch/<k>_<op> of
  model_dir). The counts of dominant ops per epoch are kept in
  model_dir/dominant_ops.json, so that the collapse picture covers every epoch
  after a resume.
  """

  def __init__(self, model_dir, primitives, steps, relaxation):
    self.primitives, self.steps, self.relaxation = tuple(primitives), steps, relaxation
    self.edges = genotype_lib.edges(steps)
    self.writers = {op: tf.summary.create_file_writer(os.path.join(model_dir, op_run(k, op)))
                    for k, op in enumerate(self.primitives)}
    self.history_path = os.path.join(model_dir, DOMINANT_OPS_FILE)
    self._draw = True

  def heatmap_description(self):
    return (f"Rows: edges (node\u2190input; inputs 0, 1 are c_{{k-2}}, c_{{k-1}}), in the "
            f"order of alphas.json. Columns: ops. Colour: the {self.relaxation} weight, "
            f"on the scale beside it.")

  def write(self, step, epoch, weights, genotype):
    """weights: {'normal': [edges, ops], 'reduce': ...} relaxed; genotype: the derived one."""
    for k, op in enumerate(self.primitives):
      with self.writers[op].as_default(step=step):
        for cell in CELLS:
          for e, (to, src) in enumerate(self.edges):
            tf.summary.scalar(arch_weight_tag(cell, to, src), weights[cell][e][k])
    for cell in CELLS:
      tf.summary.image(f"arch_weights/{cell}",
                       heatmap(weights[cell], self.primitives, self.edges,
                               self.relaxation)[None],
                       step=step, description=self.heatmap_description())
    epochs, counts = self._record_dominant_ops(epoch, weights)
    for cell in CELLS:
      fig = collapse_figure(epochs, [c[cell] for c in counts], self.primitives, cell)
      tf.summary.image(
          f"arch_weights/dominant_ops_{cell}", figure_image(fig)[None], step=step,
          description="How many edges of the cell each op dominates (has the highest "
                      "weight on) at the end of each epoch, stacked: Fair DARTS' Figure 1. "
                      "DARTS' collapse shows as skip_connect taking over.")
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

  def _record_dominant_ops(self, epoch, weights):
    """Adds this epoch's counts to dominant_ops.json; returns (epochs, counts) up to it.

    Epochs after this one (left by a run resumed from an older checkpoint)
    are dropped; a file of another op set, or one that cannot be read, is
    started again.
    """
    history = {}
    try:
      with open(self.history_path) as f:
        saved = json.load(f)
      if saved["primitives"] == list(self.primitives):
        history = {int(e): c for e, c in saved["epochs"].items() if int(e) < epoch}
    except FileNotFoundError:
      pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      logging.warning("%s cannot be read (%s): the collapse picture starts again",
                      self.history_path, e)
    history[epoch] = {cell: dominant_counts(weights[cell]) for cell in CELLS}
    epochs = sorted(history)
    files.write_json({"primitives": list(self.primitives),
                      "epochs": {str(e): history[e] for e in epochs}}, self.history_path)
    return epochs, [history[e] for e in epochs]
