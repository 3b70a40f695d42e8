"""What a search shows in TensorBoard about its architecture, once per epoch.

The search space supplies what there is to show (spaces.base): its weights as
WeightGroups (in the DARTS cell: per cell type, a matrix [edges, ops]), its
genotype's scalars, pictures and JSON. This module lays them out.

TensorBoard colours lines by run, not by tag, so the weights of each op are a
run of their own, arch/<k>_<op> (op number k): its tag
arch_weights/<group>/<row> (e.g. arch_weights/normal/node3/from1) holds that
op's weight in one row. The Custom Scalars dashboard has one chart per group
and row, with one line (one colour, named in the run list) per op. Also
scalars: the genotype's (e.g. skip_connect counts) and, for a sigmoid
relaxation, the fraction of weights still undecided (between 0.15 and 0.85). A
row may lack an op (NaN in its WeightGroup: a chain layer whose shape changes has
no identity): it has no line there, and a grey cell in the heatmap.
Images, drawn for TensorBoard's 350-pixel cards: per group a heatmap of the
weights and the Fair DARTS paper's picture of collapse (how many rows each op
dominates, epoch by epoch); the pictures of the current genotype. Text: the
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


def arch_weight_tag(group, row_tag):
  return f"arch_weights/{group}/{row_tag}"


def write_layout(groups):
  """The Custom Scalars layout: one chart per group and row, a line per op (write once)."""
  categories = []
  for g in groups:
    charts = [layout_pb2.Chart(
        title=f"{g.name} {label}",
        multiline=layout_pb2.MultilineChartContent(tag=[f"^{arch_weight_tag(g.name, tag)}$"]))
              for tag, label in g.rows]
    categories.append(layout_pb2.Category(
        title=f"arch_weights/{g.name}: the weight of each op (run arch/<k>_<op>) on each "
              f"{g.row_help}", chart=charts))
  pb = custom_scalar_summary.pb(layout_pb2.Layout(category=categories))
  tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=0)


def heatmap_figure(group, relaxation):
  """A matplotlib Figure of a WeightGroup's matrix [rows, ops], labelled, with a colour bar.

  The colour scale runs from 0 to 1 for sigmoid weights, to the highest weight for softmax.
  """
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  from matplotlib import figure  # pylint: disable=import-outside-toplevel
  w = np.asarray(group.weights, np.float32)
  ops, row_labels = group.ops, [label for _, label in group.rows]
  # Softmax weights share 1 among the ops of an edge, near 1/ops for long: on a scale to 1
  # they would all look alike, so their scale ends at the highest weight.
  vmax = 1.0 if relaxation == "sigmoid" else max(float(np.nanmax(w)), 1e-6)
  fig = figure.Figure(figsize=(_WIDTH, 1.6 + 0.22 * len(row_labels)), dpi=_DPI)
  ax = fig.add_subplot()
  cmap = colormaps["viridis"].with_extremes(bad="lightgray")  # an op the row lacks
  image = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto",
                    interpolation="nearest")
  ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right",
                rotation_mode="anchor", fontsize=_FONT)
  ax.set_yticks(range(len(row_labels)), row_labels, fontsize=_FONT)
  ax.set_ylabel(group.row_title, fontsize=_FONT)
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


def heatmap(group, relaxation):
  """heatmap_figure's pixels for a WeightGroup."""
  return figure_image(heatmap_figure(group, relaxation))


def dominant_counts(weights):
  """How many rows each op dominates: the op of the highest weight, per row ([rows, ops];
  NaN where a row lacks an op)."""
  w = np.asarray(weights, np.float64)
  w = np.where(np.isnan(w), -np.inf, w)
  return np.bincount(np.argmax(w, axis=1), minlength=w.shape[1]).tolist()


def collapse_figure(epochs, counts, ops, title, rows_name):
  """Fair DARTS' Figure 1: stacked areas of dominant_counts over the epochs.

  epochs: increasing epoch numbers; counts: [epochs, ops]. Epoch e's counts
  (at its end) fill the band from e - 1 to e, so one epoch shows too.
  """
  from matplotlib import figure  # pylint: disable=import-outside-toplevel
  counts = np.asarray(counts, np.float32).reshape(len(epochs), len(ops))
  x = [epochs[0] - 1, *epochs]
  fig = figure.Figure(figsize=(_WIDTH, 3.6), dpi=_DPI)
  ax = fig.add_subplot()
  colors = _op_colors(len(ops))
  bottom = np.zeros(len(x), np.float32)
  for k, op in enumerate(ops):
    top = bottom + np.concatenate([counts[:1, k], counts[:, k]])
    ax.fill_between(x, bottom, top, step="pre", color=colors[k], label=op, linewidth=0)
    bottom = top
  ax.set_xlim(x[0], x[-1])
  ax.set_ylim(0, max(float(bottom.max()), 1.0))
  ax.set_xlabel("epoch", fontsize=_FONT)
  ax.set_ylabel(rows_name, fontsize=_FONT)
  ax.set_title(f"{title}: {rows_name} each op dominates", fontsize=_FONT)
  ax.tick_params(labelsize=_FONT)
  ax.xaxis.get_major_locator().set_params(integer=True)
  fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncols=2, fontsize=_FONT,
             frameon=False)
  fig.tight_layout(pad=0.3, rect=(0, 0.055 * ((len(ops) + 1) // 2), 1, 1))
  return fig


def _op_colors(n):
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  palette = colormaps["tab10" if n <= 10 else "tab20"]
  return [palette(k) for k in range(n)]


def undecided_fraction(weights_list):
  """The fraction of weights strictly between 0.15 and 0.85 (NaN, an op a row lacks, is none)."""
  w = np.concatenate([np.asarray(x, np.float64).ravel() for x in weights_list])
  w = w[~np.isnan(w)]
  return float(np.mean((w > UNDECIDED[0]) & (w < UNDECIDED[1])))


class ArchSummaries:
  """Writes the architecture's summaries of one epoch, for any search space.

  The heatmaps, collapse pictures, scalars, text and pictures go to the default
  writer's context; the weights to a writer per op (runs arch/<k>_<op> of
  model_dir). The counts of dominant ops per epoch are kept in
  model_dir/dominant_ops.json, so that the collapse picture covers every epoch
  after a resume.
  """

  def __init__(self, model_dir, space, relaxation):
    self.space, self.relaxation = space, relaxation
    self.model_dir = model_dir
    self.writers = {}
    self.history_path = os.path.join(model_dir, DOMINANT_OPS_FILE)
    self._draw = True

  def _op_writers(self, ops):
    for k, op in enumerate(ops):
      if op not in self.writers:
        self.writers[op] = tf.summary.create_file_writer(
            os.path.join(self.model_dir, op_run(k, op)))
    return [self.writers[op] for op in ops]

  def write_layout(self, arch_weights):
    """The Custom Scalars layout of the space's weights (once, at the start of a run)."""
    write_layout(self.space.weight_groups(arch_weights))

  def heatmap_description(self, group):
    return (f"Rows: {group.row_help}, in the order of alphas.json. Columns: ops. Colour: the "
            f"{self.relaxation} weight, on the scale beside it.")

  def write(self, step, epoch, arch_weights, genotype):
    """arch_weights: the relaxed weights (as the supernet's arch_weights()); genotype: the
    derived one."""
    groups = self.space.weight_groups(arch_weights)
    for g in groups:
      for k, writer in enumerate(self._op_writers(g.ops)):
        with writer.as_default(step=step):
          for r, (tag, _) in enumerate(g.rows):
            if not np.isnan(g.weights[r][k]):
              tf.summary.scalar(arch_weight_tag(g.name, tag), g.weights[r][k])
    for g in groups:
      tf.summary.image(f"arch_weights/{g.name}", heatmap(g, self.relaxation)[None], step=step,
                       description=self.heatmap_description(g))
    epochs, counts = self._record_dominant_ops(epoch, groups)
    for g in groups:
      fig = collapse_figure(epochs, [c[g.name] for c in counts], g.ops, g.title, g.rows_name)
      tf.summary.image(
          f"arch_weights/dominant_ops_{g.name}", figure_image(fig)[None], step=step,
          description=f"How many {g.rows_name} each op dominates (has the highest weight on) "
                      "at the end of each epoch, stacked: Fair DARTS' Figure 1. DARTS' "
                      "collapse shows as skip_connect taking over.")
    for tag, value in self.space.genotype_scalars(genotype).items():
      tf.summary.scalar(tag, value, step=step)
    if self.relaxation == "sigmoid":
      tf.summary.scalar("arch/undecided_fraction",
                        undecided_fraction([g.weights for g in groups]), step=step,
                        description=f"fraction of sigmoid weights in {UNDECIDED}")
    text = json.dumps(self.space.genotype_json(genotype))
    tf.summary.text("genotype", f"`{text}`", step=step)
    if self._draw:
      try:
        for tag, png in self.space.genotype_pictures(genotype).items():
          tf.summary.image(tag, tf.image.decode_png(png, channels=3)[None], step=step)
      except graphviz.ExecutableNotFound:
        logging.warning("graphviz's `dot` is missing: no genotype pictures in TensorBoard "
                        "(apt-get install graphviz)")
        self._draw = False

  def flush(self):
    for writer in self.writers.values():
      writer.flush()

  def _record_dominant_ops(self, epoch, groups):
    """Adds this epoch's counts to dominant_ops.json; returns (epochs, counts) up to it.

    Epochs after this one (left by a run resumed from an older checkpoint)
    are dropped; a file of another op set, or one that cannot be read, is
    started again.
    """
    ops = list(groups[0].ops)
    history = {}
    try:
      with open(self.history_path) as f:
        saved = json.load(f)
      if saved["primitives"] == ops:
        history = {int(e): c for e, c in saved["epochs"].items() if int(e) < epoch}
    except FileNotFoundError:
      pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      logging.warning("%s cannot be read (%s): the collapse picture starts again",
                      self.history_path, e)
    history[epoch] = {g.name: dominant_counts(g.weights) for g in groups}
    epochs = sorted(history)
    files.write_json({"primitives": ops, "epochs": {str(e): history[e] for e in epochs}},
                     self.history_path)
    return epochs, [history[e] for e in epochs]
