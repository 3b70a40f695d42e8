"""The pictures a search shows in TensorBoard: labelled, with a colour scale, legible in a card."""
import dataclasses
import json

from matplotlib import colormaps
import numpy as np

from tfnas.search import summaries
from tfnas.spaces.darts_cell import space as cell_space

OPS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3")
SPACE = cell_space.SearchSpace(primitives=OPS, steps=2)  # 5 edges: 2<-0, 2<-1, 3<-0, 3<-1, 3<-2


def _group(weights, cell="normal"):
  """The space's WeightGroup of a cell type, holding these weights."""
  groups = {g.name: g for g in SPACE.weight_groups([np.zeros((5, 3))] * 2)}
  return dataclasses.replace(groups[cell], weights=np.asarray(weights))


def _pixel(image, ax, x, y):
  """The pixel of image at data coordinates (x, y) of ax (display y grows upwards)."""
  px, py = ax.transData.transform((x, y))
  return image[image.shape[0] - 1 - int(py), int(px)]


def test_heatmap_names_ops_and_edges_and_has_a_colour_scale():
  weights = np.array([[0.0, 0.5, 1.0], [0.25, 0.75, 0.1], [0.9, 0.2, 0.6], [0.3, 0.3, 0.3],
                      [1.0, 0.0, 0.45]])
  fig = summaries.heatmap_figure(_group(weights), "sigmoid")
  image = summaries.figure_image(fig)
  assert image.dtype == np.uint8 and image.shape[1] == 350  # TensorBoard's card, unscaled
  ax, bar = fig.axes
  assert [t.get_text() for t in ax.get_xticklabels()] == list(OPS)
  assert [t.get_text() for t in ax.get_yticklabels()] == ["2\u21900", "2\u21901", "3\u21900",
                                                         "3\u21901", "3\u21902"]
  assert bar.get_ylabel() == "sigmoid weight"
  np.testing.assert_allclose([t for t in bar.get_yticks() if 0 <= t <= 1], np.linspace(0, 1, 6))
  # Every label is drawn inside the picture, at least 9 pixels high (a 9-point font at 100 dpi).
  labels = [*ax.get_xticklabels(), *ax.get_yticklabels(), bar.yaxis.label, ax.yaxis.label]
  for label in labels:
    box = label.get_window_extent()
    assert box.height >= 9 and box.x0 >= 0 and box.y0 >= 0, label.get_text()
    assert box.x1 <= image.shape[1] and box.y1 <= image.shape[0], label.get_text()
  # Each block has the viridis colour of its weight.
  for e in range(5):
    for k in range(len(OPS)):
      expected = np.array(colormaps["viridis"](weights[e, k])[:3]) * 255
      np.testing.assert_allclose(_pixel(image, ax, k, e), expected, atol=2)


def test_softmax_heatmap_scale_ends_at_the_highest_weight():
  weights = np.full((5, 3), 0.2)
  weights[1, 2] = 0.4
  fig = summaries.heatmap_figure(_group(weights), "softmax")
  image = summaries.figure_image(fig)
  ax, bar = fig.axes
  np.testing.assert_allclose(bar.get_ylim(), (0.0, 0.4))
  assert bar.get_ylabel() == "softmax weight"
  yellow, middle = (np.array(colormaps["viridis"](x)[:3]) * 255 for x in (1.0, 0.5))
  np.testing.assert_allclose(_pixel(image, ax, 2, 1), yellow, atol=2)
  np.testing.assert_allclose(_pixel(image, ax, 0, 0), middle, atol=2)


def test_heatmap_is_the_same_for_the_same_weights():
  weights = np.random.default_rng(0).random((5, 3))
  a = summaries.heatmap(_group(weights), "softmax")
  np.testing.assert_array_equal(a, summaries.heatmap(_group(weights), "softmax"))
  assert not np.array_equal(a, summaries.heatmap(_group(weights[::-1]), "softmax"))


def test_dominant_counts_take_the_highest_weight_of_each_edge():
  weights = [[0.1, 0.8, 0.3], [0.9, 0.2, 0.1], [0.2, 0.7, 0.6], [0.3, 0.3, 0.9], [0.5, 0.6, 0.0]]
  assert summaries.dominant_counts(weights) == [1, 3, 1]


def test_collapse_figure_stacks_the_counts_of_each_epoch():
  counts = [[1, 3, 1], [0, 5, 0]]  # epoch 1, epoch 2: skip_connect takes every edge
  fig = summaries.collapse_figure([1, 2], counts, OPS, "normal cell", "edges")
  image = summaries.figure_image(fig)
  assert image.shape[1] == 350
  (ax,) = fig.axes
  assert [t.get_text() for t in fig.legends[0].get_texts()] == list(OPS)
  assert ax.get_title() == "normal cell: edges each op dominates"
  colours = [np.array(colormaps["tab10"](k)[:3]) * 255 for k in range(3)]
  # Epoch 1 fills the band from 0 to 1: op 0 up to 1, op 1 from 1 to 4, op 2 from 4 to 5.
  for y, k in ((0.5, 0), (2.5, 1), (4.5, 2)):
    np.testing.assert_allclose(_pixel(image, ax, 0.5, y), colours[k], atol=2)
  for y in (0.5, 2.5, 4.5):  # epoch 2: all skip_connect
    np.testing.assert_allclose(_pixel(image, ax, 1.5, y), colours[1], atol=2)
  # One epoch is drawn too (the band from 0 to 1).
  one = summaries.collapse_figure([1], counts[:1], OPS, "reduce cell", "edges")
  np.testing.assert_allclose(_pixel(summaries.figure_image(one), one.axes[0], 0.5, 2.5),
                             colours[1], atol=2)


def test_dominant_ops_history_survives_a_new_writer_and_a_bad_file(tmp_path):
  weights = SPACE.weight_groups([np.eye(5, 3), 1 - np.eye(5, 3)])
  first = summaries.ArchSummaries(str(tmp_path), SPACE, "softmax")
  first._record_dominant_ops(1, weights)  # pylint: disable=protected-access
  first._record_dominant_ops(2, weights)  # pylint: disable=protected-access
  # A resumed run (a new writer) continues the history; one resumed from an older
  # checkpoint rewrites the epochs after it.
  resumed = summaries.ArchSummaries(str(tmp_path), SPACE, "softmax")
  epochs, counts = resumed._record_dominant_ops(2, weights)  # pylint: disable=protected-access
  assert epochs == [1, 2] and counts[0] == counts[1] == {"normal": [3, 1, 1],
                                                         "reduce": [4, 1, 0]}
  epochs, _ = resumed._record_dominant_ops(1, weights)  # pylint: disable=protected-access
  assert epochs == [1]
  with open(tmp_path / "dominant_ops.json") as f:
    assert sorted(json.load(f)["epochs"]) == ["1"]
  (tmp_path / "dominant_ops.json").write_text("[1, 2")  # truncated: start again
  epochs, _ = resumed._record_dominant_ops(3, weights)  # pylint: disable=protected-access
  assert epochs == [3]
