"""The DARTS cell through the seam (spaces.base): what the search and its summaries get."""
import dataclasses
import sys
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from tfnas import spaces
from tfnas.methods import presets
from tfnas.runtime.errors import UserInputError
from tfnas.spaces import base
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import space as cell_space
from tfnas.spaces.darts_cell import zoo

OPS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3")
OPS_FAIR = genotype_lib.FAIR_PRIMITIVES
SPACE = cell_space.SearchSpace(primitives=OPS, steps=2, layers=3, init_channels=4)


def test_the_darts_cell_implements_every_member_of_the_seam():
  assert isinstance(SPACE, base.SearchSpace) and spaces.SPACES["darts_cell"] is type(SPACE)
  assert not getattr(cell_space.SearchSpace, "__abstractmethods__")


def test_make_takes_the_methods_op_set_and_refuses_what_the_space_lacks():
  darts = spaces.make("darts_cell", "darts", 10, {"steps": 2, "primitives": None})
  fair = spaces.make("darts_cell", "fair_darts", 10, {"steps": 2})
  assert darts.primitives == genotype_lib.PRIMITIVES and fair.primitives == OPS_FAIR
  assert fair == dataclasses.replace(darts, primitives=OPS_FAIR)
  with pytest.raises(UserInputError, match="the darts_cell space has no setting kernels"):
    spaces.make("darts_cell", "darts", 10, {"kernels": [3, 5]})
  with pytest.raises(UserInputError, match="unknown search space 'cells'; choose one of "
                     "darts_cell, chain"):
    spaces.make("cells", "darts", 10, {})
  with pytest.raises(UserInputError, match="sep_conv_9x9"):
    spaces.make("darts_cell", "darts", 10, {"primitives": ["sep_conv_9x9"]})


def test_the_space_settings_are_checked_before_tensorflow_loads():
  code = ("import sys; from tfnas import spaces; "
          "spaces.make('darts_cell', 'darts', 10, {'steps': 2}); "
          "print('tensorflow' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def test_supernet_variables_and_alphas_json_are_aligned():
  model = SPACE.build_supernet(presets.METHODS["fair_darts"])
  model(tf.zeros([1, 8, 8, 3]))
  assert [tuple(v.shape) for v in model.arch_variables] == [(5, 3), (5, 3)]
  alphas = [np.full((5, 3), 0.5), np.full((5, 3), -1.0)]
  saved = SPACE.alphas_json("sigmoid", alphas)
  assert saved == {"primitives": list(OPS), "relaxation": "sigmoid", "steps": 2,
                   "normal": alphas[0].tolist(), "reduce": alphas[1].tolist()}
  # What derive reads back from the file is what the search derived.
  weights = [1 / (1 + np.exp(-a)) for a in alphas]
  assert (genotype_lib.derive_from_alphas_json(saved, "threshold_sparse", 0.6)
          == SPACE.derive(weights, "threshold_sparse", 0.6))


def test_weight_groups_name_every_edge_of_both_cells():
  w = np.arange(15.0).reshape(5, 3)
  normal, reduce = SPACE.weight_groups([w, -w])
  assert (normal.name, reduce.name, normal.title) == ("normal", "reduce", "normal cell")
  assert normal.rows == (("node2/from0", "2\u21900"), ("node2/from1", "2\u21901"),
                         ("node3/from0", "3\u21900"), ("node3/from1", "3\u21901"),
                         ("node3/from2", "3\u21902"))
  assert normal.ops == OPS and normal.rows_name == "edges"
  np.testing.assert_array_equal(reduce.weights, -w)


def test_genotype_scalars_count_skip_connect_per_cell():
  g = zoo.get("DARTS_V1")
  assert SPACE.genotype_scalars(g) == {
      "genotype/skip_connect_normal": sum(op == "skip_connect" for op, _, _ in g.normal),
      "genotype/skip_connect_reduce": sum(op == "skip_connect" for op, _, _ in g.reduce)}
  assert SPACE.genotype_json(g) == genotype_lib.to_json(g)


def test_genotype_pictures_fit_a_tensorboard_card():
  pictures = SPACE.genotype_pictures(zoo.get("DARTS_V2"))
  assert sorted(pictures) == ["cells/normal", "cells/reduce"]
  picture = tf.image.decode_png(pictures["cells/normal"], channels=3).numpy()
  assert 300 <= picture.shape[1] <= 350 and picture.shape[2] == 3
  # No transparent margin, which TensorBoard would show as a black frame.
  corners = picture[::picture.shape[0] - 1, ::picture.shape[1] - 1]
  assert (corners == 255).all()


def test_derived_network_counts_for_the_closing_summary():
  space = cell_space.SearchSpace()
  counts = space.derived_network_counts(zoo.get("DARTS_V2"), (32, 32, 3))
  assert (counts["params"], counts["params_with_aux"], counts["macs"]) == (
      3_349_342, 3_825_768, 528_359_040)  # the published network's counts
  assert counts["network"] == "C=36, 20 cells"
  small = space.derived_network_counts(zoo.get("DARTS_V2"), (8, 8, 3))
  assert small["params"] == 3_349_342 and "params_with_aux" not in small  # no room for aux
  empty = genotype_lib.from_json({"normal": [], "normal_concat": [], "reduce": [],
                                  "reduce_concat": []})
  for size in (32, 8):  # the genotype is why, not the head that small images have no room for
    error = space.derived_network_counts(empty, (size, size, 3))["error"]
    assert "no existing node" in error and "auxiliary" not in error
