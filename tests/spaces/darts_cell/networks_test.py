"""Evaluation networks: the original's parameter and MAC counts, drop path, aux head, describe."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfnas.layers import ops
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import networks
from tfnas.spaces.darts_cell import space as cell_space
from tfnas.spaces.darts_cell import zoo

ROOT = pathlib.Path(__file__).resolve().parents[3]

# The original implementation's numbers at C=36, 20 cells, 10 classes, 32x32:
# (params without aux head, with it, MACs).
ORIGINAL = {
    "DARTS_V2": (3_349_342, 3_825_768, 528_359_040),
    "FairDARTS_a": (2_360_782, 2_837_208, 371_455_200),
}

ALL_SKIP = genotype_lib.from_json({
    "normal": [["skip_connect", 0], ["skip_connect", 1], ["skip_connect", 0],
               ["skip_connect", 2], ["skip_connect", 1], ["skip_connect", 3],
               ["skip_connect", 2], ["skip_connect", 4]],
    "reduce": [["max_pool_3x3", 0], ["skip_connect", 1], ["skip_connect", 2],
               ["max_pool_3x3", 1], ["avg_pool_3x3", 0], ["skip_connect", 3],
               ["skip_connect", 2], ["max_pool_3x3", 4]],
})


def _seed(a):
  return tf.constant([a, 7], tf.int64)


# Every op, on strided (reduce, from the inputs) and plain edges.
_ALL_OPS = (("sep_conv_3x3", 2, 0), ("sep_conv_5x5", 2, 1), ("sep_conv_7x7", 3, 0),
            ("dil_conv_3x3", 3, 1), ("dil_conv_5x5", 4, 0), ("skip_connect", 4, 1),
            ("max_pool_3x3", 5, 0), ("avg_pool_3x3", 5, 1))
ALL_OPS = genotype_lib.Genotype(
    _ALL_OPS, (2, 3, 4, 5),
    _ALL_OPS + (("sep_conv_3x3", 5, 2), ("skip_connect", 3, 2), ("dil_conv_5x5", 4, 3)),
    (2, 3, 4, 5))


@pytest.fixture(scope="module")
def full_counts():
  """Full-size CIFAR networks' {name: (params, params_with_aux, macs)}, from the shapes."""
  out = {}
  for name in ORIGINAL:
    f = networks.counts_from_shapes("cifar", zoo.get(name), (32, 32), 36, 20, 10)
    out[name] = (f["params"], f["params_with_aux"], f["macs"])
  return out


@pytest.mark.parametrize("network,size,auxiliary", [
    (networks.NetworkCIFAR, 32, True), (networks.NetworkCIFAR, 16, False),
    (networks.NetworkImageNet, 224, True)])
def test_counts_from_shapes_are_the_built_networks_counts(network, size, auxiliary):
  """The arithmetic the tools print against the Keras model's own weights and convs."""
  spec = cell_space.NetworkSpec(ALL_OPS, 10, network.KIND, init_channels=4, layers=3,
                                auxiliary=auxiliary)
  model = spec.build()
  assert isinstance(model, network)
  counted = spec.counts((size, size))  # before the build: shapes only
  macs = networks.count_macs(model, (size, size))
  expected = {"params": networks.count_params(model, include_aux=False),
              "macs": macs, "ops": genotype_lib.count_ops(ALL_OPS, built_only=True)}
  if auxiliary:
    expected["params_with_aux"] = networks.count_params(model, include_aux=True)
  assert counted == expected


@pytest.fixture(scope="module")
def small():
  """A small FairDARTS_a network with its aux head (32x32 is the least the head takes)."""
  model = networks.NetworkCIFAR(zoo.get("FairDARTS_a"), init_channels=8, layers=5)
  x = tf.random.stateless_normal([4, 32, 32, 3], seed=[1, 2])
  model(x)
  return model, x


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_params_match_the_original(full_counts, name):
  assert full_counts[name][:2] == ORIGINAL[name][:2]


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_macs_match_the_original(full_counts, name):
  assert full_counts[name][2] == ORIGINAL[name][2]


def test_inference_gives_deterministic_logits_only(small):
  model, x = small
  model.drop_path_prob.assign(0.5)
  try:
    a = model(x, training=False)
    b = model(x, training=False, seed=_seed(3))
  finally:
    model.drop_path_prob.assign(0.0)
  assert a.shape == (4, 10)
  np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_training_adds_aux_logits(small):
  model, x = small
  logits, aux = model(x, training=True, seed=_seed(1))
  assert logits.shape == (4, 10) and aux.shape == (4, 10)
  no_aux = networks.NetworkCIFAR(zoo.get("FairDARTS_a"), init_channels=8, layers=5,
                                   auxiliary=False)
  assert no_aux(x, training=True).shape == (4, 10)
  assert no_aux.aux_variables == []


def test_drop_path_only_when_probability_is_set(small):
  model, x = small
  a, _ = model(x, training=True, seed=_seed(1))
  b, _ = model(x, training=True, seed=_seed(2))
  np.testing.assert_array_equal(a.numpy(), b.numpy())  # p = 0: no effect
  model.drop_path_prob.assign(0.5)
  try:
    c, _ = model(x, training=True, seed=_seed(1))
    d, _ = model(x, training=True, seed=_seed(1))
    e, _ = model(x, training=True, seed=_seed(2))
  finally:
    model.drop_path_prob.assign(0.0)
  np.testing.assert_array_equal(c.numpy(), d.numpy())  # same seed, same masks
  assert np.abs(c.numpy() - e.numpy()).max() > 1e-3
  assert np.abs(a.numpy() - c.numpy()).max() > 1e-3


def test_drop_path_zeroes_samples_and_scales_the_rest():
  x = tf.ones([64, 2, 2, 3])
  y = ops.drop_path(x, 0.25, _seed(5)).numpy()
  per_sample = y.reshape(64, -1)
  assert np.all((per_sample == 0.0).all(axis=1) | np.isclose(per_sample, 1 / 0.75).all(axis=1))
  dropped = (per_sample == 0.0).all(axis=1).sum()
  assert 0 < dropped < 64


@pytest.mark.parametrize("style", ["op", "node"])
def test_op_style_spares_identity_node_style_drops_nodes(style):
  # A normal cell of stride-1 skips only: every op is an Identity.
  cell = networks.EvalCell(ALL_SKIP.normal, ALL_SKIP.normal_concat, 8, 8, 4,
                             reduction=False, reduction_prev=False, drop_path=style)
  s0, s1 = (tf.random.stateless_normal([16, 4, 4, 8], seed=[k, 0]) for k in (1, 2))
  clean = cell(s0, s1, training=True, drop_prob=0.0, seed=_seed(0)).numpy()
  dropped = cell(s0, s1, training=True, drop_prob=0.5, seed=_seed(9)).numpy()
  if style == "op":
    np.testing.assert_array_equal(dropped, clean)
    return
  # Node style: each node of each sample is either dropped or scaled by 1/keep
  # (a dropped node also changes the nodes that read it, so compare node 2 only).
  node2_clean, node2 = clean[..., :4].reshape(16, -1), dropped[..., :4].reshape(16, -1)
  zeroed = (node2 == 0).all(axis=1)
  assert 0 < zeroed.sum() < 16
  np.testing.assert_allclose(node2[~zeroed], 2 * node2_clean[~zeroed], rtol=1e-6)


def test_fair_darts_a_normal_cell_concatenates_three_nodes(small):
  model, _ = small
  normal, reduce = model.cells[0], model.cells[1]
  assert normal.nodes == (2, 4, 5) and normal.concat == (2, 4, 5)
  assert normal.multiplier == 3 and reduce.multiplier == 4
  # Cell 1 (reduction, C=16) reads cell 0's 3*8 channels; cell 2 reads them as s0.
  assert (reduce.c_prev_prev, reduce.c_prev) == (24, 24)
  assert (model.cells[2].c_prev_prev, model.cells[2].c_prev) == (24, 64)
  assert reduce.preprocess1.conv.kernel.shape == (1, 1, 24, 16)
  assert isinstance(model.cells[2].preprocess0, ops.FactorizedReduce)


def test_edges_from_missing_nodes_are_ignored():
  entries = (("sep_conv_3x3", 2, 0), ("max_pool_3x3", 4, 3), ("skip_connect", 5, 4),
             ("skip_connect", 5, 1))
  assert genotype_lib.built_entries(entries) == (entries[0], entries[3])
  cell = networks.EvalCell(entries, (2, 4, 5), 8, 8, 4, False, False)
  assert cell.nodes == (2, 5) and cell.multiplier == 2 and len(cell.edge_ops) == 2
  g = genotype_lib.Genotype(entries, (2, 4, 5), entries[:1], (2,))
  assert genotype_lib.count_ops(g, built_only=True) == {
      "normal": {"sep_conv_3x3": 1, "skip_connect": 1}, "reduce": {"sep_conv_3x3": 1}}
  assert genotype_lib.count_ops(g)["normal"] == {
      "max_pool_3x3": 1, "sep_conv_3x3": 1, "skip_connect": 2}


def test_imagenet_network_runs_at_224():
  model = networks.NetworkImageNet(zoo.get("DARTS_V2"))
  macs = networks.count_macs(model, (224, 224))
  assert model(tf.zeros([1, 224, 224, 3])).shape == (1, 1000)
  params = networks.count_params(model, include_aux=False)
  # The original reports 4.7M parameters (and 574M MACs, which we do not reach).
  assert round(params / 1e6, 1) == 4.7
  assert 0 < macs < 600e6


def test_unknown_op_is_user_error():
  g = genotype_lib.Genotype((("conv_9x9", 2, 0), ("skip_connect", 2, 1)), (2,),
                            (("max_pool_3x3", 2, 0),), (2,))
  with pytest.raises(UserInputError, match="unknown op 'conv_9x9'"):
    networks.NetworkCIFAR(g, init_channels=4, layers=3)


@pytest.mark.parametrize("network,size,message", [
    (networks.NetworkCIFAR, 30, "30x30 does not fit .* multiples of 4"),
    (networks.NetworkCIFAR, 16, "16x16 is too small for the auxiliary head: it needs at "
     "least 32x32; leave the head out with --noauxiliary"),
    (networks.NetworkImageNet, 200, "200x200 does not fit .* multiples of 32"),
    (networks.NetworkImageNet, 192, "192x192 is too small for the auxiliary head.*--noaux"),
])
def test_bad_image_size_is_user_error(network, size, message):
  model = network(zoo.get("DARTS_V2"), init_channels=4, layers=3, num_classes=10)
  with pytest.raises(UserInputError, match=message):
    model(tf.zeros([1, size, size, 3]))


def test_counting_needs_a_built_network():
  model = networks.NetworkCIFAR(zoo.get("DARTS_V2"), init_channels=4, layers=3)
  with pytest.raises(ValueError, match="call the network once"):
    networks.count_params(model, include_aux=True)


def _describe(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / "describe.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_describe_prints_the_darts_v2_numbers():
  result = _describe("--genotype=DARTS_V2")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1
  assert json.loads(lines[0]) == {
      "genotype": "DARTS_V2", "params": 3_349_342, "params_with_aux": 3_825_768,
      "macs": 528_359_040,
      "ops": {"normal": {"dil_conv_3x3": 1, "sep_conv_3x3": 5, "skip_connect": 2},
              "reduce": {"max_pool_3x3": 5, "skip_connect": 3}}}


@pytest.mark.slow
def test_describe_reads_a_genotype_file(tmp_path):
  path = str(tmp_path / "g.json")
  entries = (("sep_conv_3x3", 2, 0), ("max_pool_3x3", 4, 3), ("skip_connect", 2, 1))
  genotype_lib.save(genotype_lib.Genotype(entries, (2,), entries, (2,)), path)
  result = _describe(f"--genotype={path}", "--init_channels=4", "--layers=3")
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout)
  assert out["genotype"] == path and 0 < out["params"] < out["params_with_aux"]
  # The edge from missing node 3 is not built, so not counted.
  assert out["ops"]["normal"] == {"sep_conv_3x3": 1, "skip_connect": 1}


@pytest.mark.slow
def test_describe_small_images_without_the_auxiliary_head():
  small = ["--genotype=DARTS_V2", "--init_channels=4", "--layers=3", "--image_size=8"]
  refused = _describe(*small)
  assert refused.returncode == 2 and "Traceback" not in refused.stderr
  assert "error: image size 8x8 is too small for the auxiliary head" in refused.stderr
  assert "--noauxiliary" in refused.stderr
  result = _describe(*small, "--noauxiliary")
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout)
  assert "params_with_aux" not in out and out["params"] > 0 and out["macs"] > 0
  spec = cell_space.NetworkSpec(zoo.get("DARTS_V2"), init_channels=4, layers=3, auxiliary=False)
  assert out == {"genotype": "DARTS_V2", **spec.counts((8, 8))}


@pytest.mark.slow
def test_describe_bad_genotype_is_one_error_line():
  result = _describe("--genotype=NO_SUCH_CELL")
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "NO_SUCH_CELL" in errors[0]


@pytest.mark.slow
def test_describe_refuses_a_node_beyond_the_cell(tmp_path):
  path = tmp_path / "g.json"
  path.write_text(json.dumps({"normal": [["sep_conv_3x3", 2, 0], ["sep_conv_3x3", 99, 1]],
                              "reduce": [["max_pool_3x3", 2, 0]]}))
  result = _describe(f"--genotype={path}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: {path}: genotype 'normal' entry 1: node 99 is not in a cell of 4 intermediate "
      "nodes (2..5); a larger cell needs \"steps\" in the genotype"]


def test_drop_path_granularity_follows_the_cell_style():
  assert networks.drop_path_granularity(zoo.get("DARTS_V2")) == "op"
  assert networks.drop_path_granularity(zoo.get("FairDARTS_a")) == "node"  # node 3 is missing


def test_auto_drop_path_is_node_for_the_fair_darts_zoo_cells_by_name(tmp_path):
  # FairDARTS_c has two inputs on every node: by its zoo name it still drops nodes, as
  # Fair DARTS' code trains it; the same cell from a JSON file goes by its shape.
  fair_c = zoo.get("FairDARTS_c")
  assert networks.auto_drop_path("FairDARTS_c", fair_c) == "node"
  path = tmp_path / "FairDARTS_c"
  path.write_text(json.dumps(genotype_lib.to_json(fair_c)))
  assert networks.auto_drop_path(str(path), zoo.resolve(str(path))) == "op"
  assert networks.auto_drop_path("DARTS_V2", zoo.get("DARTS_V2")) == "op"
