"""The chain space through the seam (spaces.base): settings, derive rules, weights, pictures."""
import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from tfnas import spaces
from tfnas.runtime.errors import UserInputError
from tfnas.search import summaries
from tfnas.spaces import base
from tfnas.spaces.chain import genotype as genotype_lib
from tfnas.spaces.chain import networks
from tfnas.spaces.chain import space as chain_space
from tfnas.spaces.chain import zoo

# Layers: 8 s1 (may be skipped), 12 s2 (may not), 12 s1 (may be skipped).
TINY = dict(layout=((8, 1), (12, 2), (12, 1)), kernels=(3, 5), expansions=(3,),
            stem_channels=8, first_channels=8, head_channels=16, num_classes=5)
SPACE = chain_space.SearchSpace(**TINY)
NAN = math.nan


def test_the_chain_implements_every_member_of_the_seam():
  assert isinstance(SPACE, base.SearchSpace) and spaces.SPACES["chain"] is type(SPACE)
  assert not getattr(chain_space.SearchSpace, "__abstractmethods__")
  assert SPACE.ops == ("k3_e3", "k5_e3", "skip") and SPACE.skip_rows == (True, False, True)
  assert chain_space.SearchSpace(**TINY, skip=False).ops == ("k3_e3", "k5_e3")


def test_the_default_space_is_fairnas_with_seven_candidates():
  default = spaces.make("chain", "fair_darts", 1000, {})
  assert default.layers == chain_space.FAIRNAS and len(default.layers) == 19
  assert default.ops == ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6", "skip")
  assert sum(default.skip_rows) == 13 and default.widths == (32, 16, 1280)


def test_make_reads_the_tools_strings_and_refuses_the_cells_settings():
  made = spaces.make("chain", "darts", 5, {
      "layout": ["8:1", "12:2", "12:1"], "kernels": ["3", "5"], "expansions": ["3"],
      "stem_channels": 8, "first_channels": 8, "head_channels": 16, "steps": None})
  assert made == SPACE
  assert spaces.make("chain", "darts", 5, {"layout": ["proxy"]}).layout == chain_space.PROXY
  with pytest.raises(UserInputError, match="the chain space has no setting layers, steps"):
    spaces.make("chain", "darts", 5, {"steps": 2, "layers": 5})
  with pytest.raises(UserInputError, match="the darts_cell space has no setting layout"):
    spaces.make("darts_cell", "darts", 5, {"layout": ["proxy"]})


@pytest.mark.parametrize("settings, match", [
    ({"layout": ["tiny"]}, "unknown chain layout 'tiny'; choose one of fairnas"),
    ({"layout": ["32-2", "40:2"]}, r"chain layout entry '32-2' is not channels:stride"),
    ({"layout": ["32:3"]}, "layer 1: stride must be one of 1, 2, got 3"),
    ({"kernels": ["4"]}, "layer 1: kernel must be odd"),
    ({"kernels": ["three"]}, "kernels must be integers, got 'three'"),
    ({"expansions": [6, 6]}, r"expansions repeat a value: \[6, 6\]"),
    ({"activation": "gelu"}, "unknown activation 'gelu'"),
    ({"width_multiplier": 0.0}, "width_multiplier must be > 0"),
])
def test_bad_settings_are_named(settings, match):
  with pytest.raises(UserInputError, match=match):
    spaces.make("chain", "darts", 10, settings)


def test_the_settings_are_checked_before_tensorflow_loads():
  code = ("import sys; from tfnas import spaces; "
          "spaces.make('chain', 'darts', 10, {'layout': ['proxy']}); "
          "print('tensorflow' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def test_width_multiplier_rounds_as_mobilenet_v2():
  # MobileNetV2 1.4: stem 48, head 1792; 0.5: the 16-channel block keeps 8, c320 is 160.
  wide = chain_space.SearchSpace(width_multiplier=1.4)
  assert wide.widths == (48, 24, 1792) and wide.layers[0] == (48, 2)
  narrow = chain_space.SearchSpace(width_multiplier=0.5)
  assert narrow.widths == (16, 8, 1280) and narrow.layers[-1] == (160, 1)
  assert [chain_space.scaled_channels(c, 0.75) for c in (32, 16, 24, 40, 320)] == [
      24, 16, 24, 32, 240]
  # The same skips: the widths scale together.
  assert narrow.skip_rows == chain_space.SearchSpace().skip_rows


def _derive(rows, rule, threshold=0.85):
  g = SPACE.derive(_parts(rows), rule, threshold)
  return [[list(b) for b in layer.blocks] for layer in g.layers]


def _parts(rows):
  """(blocks, skips) as the supernet's arch_weights() gives them, from [layers, ops] rows."""
  rows = np.array(rows, np.float64)
  return rows[:, :2], rows[[0, 2], 2]


@pytest.mark.parametrize("rows, expected", [
    # The highest weight; the identity when it wins; the first of equal weights.
    ([[0.2, 0.5, 0.3], [0.6, 0.4, NAN], [0.2, 0.3, 0.5]], [[[5, 3]], [[3, 3]], []]),
    ([[0.4, 0.4, 0.2], [0.5, 0.5, NAN], [0.3, 0.3, 0.3]], [[[3, 3]], [[3, 3]], [[3, 3]]]),
])
def test_darts_rule_takes_the_best_candidate_per_layer(rows, expected):
  assert _derive(rows, "darts") == expected


def test_threshold_rule_keeps_every_candidate_that_passes():
  rows = [[0.9, 0.95, 0.1],   # two pass: their sum
          [0.1, 0.2, NAN],    # none passes, the shape changes: the best
          [0.1, 0.2, 0.3]]    # none passes: the identity
  assert _derive(rows, "threshold_sparse") == [[[3, 3], [5, 3]], [[5, 3]], []]
  # A kept identity beside a kept block: the block (the layer adds its input anyway).
  assert _derive([[0.9, 0.1, 0.9], [0.9, 0.1, NAN], [0.1, 0.1, 0.95]],
                 "threshold_sparse") == [[[3, 3]], [[3, 3]], []]
  # The threshold is inclusive, as in the cell's rule.
  assert _derive([[0.5, 0.6, 0.1]] * 2 + [[0.1, 0.1, 0.6]], "threshold_sparse", 0.6) == [
      [[5, 3]], [[5, 3]], []]


def test_threshold_edge_keeps_at_most_the_top_two():
  space = chain_space.SearchSpace(**{**TINY, "kernels": (3, 5, 7)}, skip=False)
  g = space.derive([np.array([[0.9, 0.95, 0.9], [0.9, 0.9, 0.9], [0.9, 0.1, 0.9]])],
                   "threshold_edge", 0.85)
  # Of equal weights, the higher index first (the cell rule's stable sort).
  assert [layer.blocks for layer in g.layers] == [((5, 3), (7, 3)), ((5, 3), (7, 3)),
                                                  ((3, 3), (7, 3))]
  sparse = space.derive([np.full((3, 3), 0.9)], "threshold_sparse", 0.85)
  assert all(len(layer.blocks) == 3 for layer in sparse.layers)


def test_the_derived_genotype_carries_the_space_options_and_counts():
  space = dataclasses.replace(SPACE, activation="swish", outer_activation="relu",
                              se_ratio=0.25)
  g = space.derive(_parts([[0.2, 0.5, 0.3], [0.6, 0.4, NAN], [0.2, 0.3, 0.5]]), "darts", 0.85)
  assert (g.activation, g.outer_activation, g.se_ratio) == ("swish", "relu", 0.25)
  assert (g.stem_channels, g.first_channels, g.head_channels) == (8, 8, 16)
  assert [(layer.out_channels, layer.stride) for layer in g.layers] == list(SPACE.layers)
  counts = space.derived_network_counts(g, (16, 12, 3))
  assert counts == {**networks.counts_from_shapes(g, (16, 12), 5), "network": "the chain"}
  assert space.genotype_json(g) == genotype_lib.to_json(g)
  assert space.genotype_scalars(g) == {"genotype/skipped_layers": 1,
                                       "genotype/multi_block_layers": 0}


def test_alphas_json_and_weight_groups_mark_the_missing_identity():
  alphas = (np.arange(6.0).reshape(3, 2), np.array([-1.0, -2.0]))
  saved = SPACE.alphas_json("softmax", alphas)
  assert saved == {
      "relaxation": "softmax", "ops": ["k3_e3", "k5_e3", "skip"],
      "layers": [[8, 1], [12, 2], [12, 1]],
      "alphas": [[0.0, 1.0, -1.0], [2.0, 3.0, None], [4.0, 5.0, -2.0]],
      "search_space": json.loads(json.dumps(dataclasses.asdict(SPACE)))}
  (group,) = SPACE.weight_groups(alphas)
  assert (group.name, group.ops, group.rows_name) == ("layers", SPACE.ops, "layers")
  assert group.rows == (("layer01", "1: c8 s1"), ("layer02", "2: c12 s2"),
                        ("layer03", "3: c12 s1"))
  np.testing.assert_array_equal(group.weights, [[0, 1, -1], [2, 3, NAN], [4, 5, -2]])


def test_summaries_leave_out_the_missing_identity():
  weights = np.array([[0.1, 0.2, 0.9], [0.5, 0.3, NAN], [0.95, 0.4, 0.2]])
  assert summaries.dominant_counts(weights) == [2, 0, 1]
  assert summaries.undecided_fraction([weights]) == pytest.approx(5 / 8)
  (group,) = SPACE.weight_groups(_parts(weights))
  picture = summaries.heatmap(group, "sigmoid")
  assert picture.ndim == 3 and picture.shape[1] == 350
  grey = np.array([211, 211, 211])  # matplotlib's lightgray: the cell of the missing skip
  assert np.all(picture == grey, axis=-1).sum() > 100


def test_genotype_pictures_draw_the_chain_for_a_tensorboard_card():
  (png,) = SPACE.genotype_pictures(zoo.get("FairNAS_A")).values()
  assert png.startswith(b"\x89PNG")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  image = tf.io.decode_png(png).numpy()
  assert image.shape[1] <= 350 and image.shape[0] > image.shape[1]


@pytest.mark.parametrize("relaxation, rule", [("softmax", "darts"),
                                              ("sigmoid", "threshold_sparse")])
def test_derive_from_alphas_json_is_what_the_search_derived(tmp_path, relaxation, rule):
  rng = np.random.default_rng(0)
  space = dataclasses.replace(SPACE, se_ratio=0.25, width_multiplier=1.5)
  alphas = (rng.normal(0, 2, (3, 2)), rng.normal(0, 2, 2))
  if relaxation == "sigmoid":
    weights = [1 / (1 + np.exp(-a)) for a in alphas]
  else:
    logits = space.weight_matrix(alphas)
    e = np.exp(np.nan_to_num(logits, nan=-np.inf))
    w = e / e.sum(1, keepdims=True)
    weights = [w[:, :2], w[[0, 2], 2]]
  path = tmp_path / "alphas.json"
  path.write_text(json.dumps(space.alphas_json(relaxation, alphas)))
  derived = spaces.derive_from_alphas_file(str(path), rule, 0.6)
  assert derived == space.derive(weights, rule, 0.6)
  assert derived.se_ratio == 0.25 and derived.stem_channels == 16  # the space's settings
  assert spaces.genotype_module(derived) is genotype_lib


@pytest.mark.parametrize("change, match", [
    ({"relaxation": "tanh"}, "unknown relaxation 'tanh'"),
    ({"search_space": {"cells": 3}}, "alphas' search_space must be an object of"),
    ({"alphas": [[0, 1, 2]] * 3}, r"alphas must be 3 rows of 3 numbers, null exactly where"),
    ({"alphas": [[0, 1, None]] * 3}, r"alphas must be 3 rows of 3 numbers, null exactly where"),
    ({"alphas": "none"}, r"alphas must be 3 rows of 3 numbers"),
])
def test_a_damaged_chain_alphas_file_is_named(tmp_path, change, match):
  obj = {**SPACE.alphas_json("sigmoid", (np.zeros((3, 2)), np.zeros(2))), **change}
  path = tmp_path / "alphas.json"
  path.write_text(json.dumps(obj))
  with pytest.raises(UserInputError, match=f"{path}: {match}"):
    spaces.derive_from_alphas_file(str(path), "darts")
