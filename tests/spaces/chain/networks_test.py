"""Chain networks: the published chains' counts, built and from shapes; genotypes and JSON."""
import dataclasses
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfnas import spaces
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.chain import genotype as genotype_lib
from tfnas.spaces.chain import networks
from tfnas.spaces.chain import space
from tfnas.spaces.chain import zoo
from tfnas.spaces.darts_cell import genotype as cell_genotype
from tfnas.spaces.darts_cell import zoo as cell_zoo

ROOT = pathlib.Path(__file__).resolve().parents[3]

# (params, MACs) of one 224x224 image. NoisyDARTS-A's are the reference's exact recount
# of its definition (algorithms.md 11.2); the papers round the others: FairNAS-A 4.6 M /
# 388 M, B 4.5 M / 345 M, C 4.4 M / 321 M, MobileNetV2 3.5 M / 300 M.
PUBLISHED = {"NoisyDARTS_A": (5_547_124, 446_669_312), "FairNAS_A": (4_651_352, 388_122_848),
             "FairNAS_B": (4_506_272, 345_297_632), "FairNAS_C": (4_397_864, 321_024_992),
             "MobileNetV2": (3_504_872, 300_774_272)}
ROUNDED = {"FairNAS_A": (4.6e6, 388e6), "FairNAS_B": (4.5e6, 345e6),
           "FairNAS_C": (4.4e6, 321e6), "MobileNetV2": (3.5e6, 300e6)}


@pytest.mark.parametrize("name", zoo.NAMES)
def test_published_chains_counted_from_shapes(name):
  counts = networks.counts_from_shapes(zoo.get(name))
  assert (counts["params"], counts["macs"]) == PUBLISHED[name]
  if name in ROUNDED:
    params, macs = ROUNDED[name]
    assert abs(counts["params"] - params) < 0.1e6 and abs(counts["macs"] - macs) < 1e6


@pytest.mark.parametrize("name", ["NoisyDARTS_A", "FairNAS_A"])
def test_the_built_network_has_the_counted_params_and_macs(name):
  network = networks.ChainNetwork(zoo.get(name))
  macs = networks.count_macs(network, 224)
  assert (networks.count_params(network), macs) == PUBLISHED[name]
  assert network(tf.zeros([2, 224, 224, 3])).shape == (2, 1000)


def _tiny(blocks_per_layer, **options):
  """A 3-layer chain on 16x16 images: widths 8, 8, 12, the last with stride 2."""
  widths = [(8, 1), (8, 1), (12, 2)]
  layers = tuple(genotype_lib.ChainLayer(tuple(b), c, s)
                 for b, (c, s) in zip(blocks_per_layer, widths))
  return genotype_lib.ChainGenotype(layers=layers, stem_channels=8, first_channels=8,
                                    head_channels=32, **options)


def test_skipped_and_multi_hot_layers_are_built_and_counted():
  # Layer 1 keeps two blocks (their sum plus the residual), layer 2 none (the identity).
  g = _tiny([[(3, 3), (5, 6)], [], [(7, 3)]], se_ratio=0.25, activation="swish")
  network = networks.ChainNetwork(g, num_classes=5)
  macs = networks.count_macs(network, 16)  # builds it
  assert networks.counts_from_shapes(g, image_size=16, num_classes=5) == {
      "params": networks.count_params(network), "macs": macs}
  layer_1, layer_2 = network.chain[0], network.chain[1]
  assert len(layer_1.blocks) == 2 and layer_1.residual and layer_2.blocks == []
  x = tf.random.normal([2, 8, 8, 8])
  np.testing.assert_allclose(layer_2(x), x)
  expected = layer_1.blocks[0](x) + layer_1.blocks[1](x) + x
  np.testing.assert_allclose(layer_1(x), expected, rtol=1e-5, atol=1e-5)


def test_a_skipped_layer_must_keep_the_shape():
  with pytest.raises(UserInputError, match=r"layer 3 is skipped \(no block\) but changes the shape \(8 -> 12 "
                     r"channels, stride 2\)"):
    genotype_lib.check(_tiny([[(3, 3)], [(3, 3)], []]))


@pytest.mark.parametrize("rows, match", [
    ([[4, 3, 8, 1]], "layer 1: kernel must be odd"),
    ([[3, 3, 8, 3]], "layer 1: stride must be one of 1, 2, got 3"),
    ([[3, 0, 8, 1]], "layer 1: expansion must be a positive integer, got 0"),
    ([], "a chain needs at least one layer"),
])
def test_rows_that_build_no_chain_are_named(rows, match):
  with pytest.raises(UserInputError, match=match):
    genotype_lib.from_rows(rows)


def test_json_round_trip_and_bad_json(tmp_path):
  g = zoo.get("NoisyDARTS_A")
  path = tmp_path / "chain.json"
  genotype_lib.save(g, str(path))
  assert genotype_lib.load(str(path)) == g
  with pytest.raises(UserInputError, match="unknown chain genotype keys: kernel"):
    genotype_lib.from_json({**genotype_lib.to_json(g), "kernel": 3})
  with pytest.raises(UserInputError, match="se_ratio must be a number, got 'a'"):
    genotype_lib.from_json({**genotype_lib.to_json(g), "se_ratio": "a"})
  with pytest.raises(UserInputError, match="layer 2: blocks must be a list of"):
    obj = genotype_lib.to_json(g)
    obj["layers"][1]["blocks"] = [3, 6]
    genotype_lib.from_json(obj)


def test_unknown_zoo_name_lists_the_known_ones():
  with pytest.raises(UserInputError, match="unknown chain 'FairNAS_D'; known: FairNAS_A"):
    zoo.get("FairNAS_D")


def test_the_layouts_as_data():
  assert len(space.FAIRNAS) == 19 and len(space.PROXYLESSNAS) == 21
  assert [c for c, _ in space.FAIRNAS] == [c for *_, c, _ in zoo.ROWS["FairNAS_A"][0]]
  assert [s for _, s in space.FAIRNAS] == [s for *_, s in zoo.ROWS["FairNAS_A"][0]]
  assert len(space.CANDIDATES) == 6 and space.candidate_name((5, 3)) == "k5_e3"
  # FairNAS' 19 layers: the first of each stage changes the shape; 13 may be skipped.
  skips = space.skippable(space.FAIRNAS)
  assert sum(skips) == 13 and not skips[0] and not skips[2] and skips[1]


def test_count_blocks_and_resolve(tmp_path):
  g = _tiny([[(3, 3), (5, 6)], [], [(3, 3)]])
  assert genotype_lib.count_blocks(g) == {"k3_e3": 2, "k5_e6": 1, "skip": 1}
  path = tmp_path / "tiny.json"
  genotype_lib.save(g, str(path))
  assert zoo.resolve(str(path)) == g and zoo.resolve("MobileNetV2") == zoo.get("MobileNetV2")
  with pytest.raises(UserInputError, match="is a directory, not a genotype JSON file"):
    zoo.resolve(str(tmp_path))
  with pytest.raises(UserInputError, match="neither a chain's zoo name nor an existing file"):
    zoo.resolve("FairNAS_Z")


def test_a_genotype_names_its_space(tmp_path):
  path = tmp_path / "tiny.json"
  genotype_lib.save(_tiny([[(3, 3)], [], [(3, 3)]]), str(path))
  assert spaces.genotype_space("NoisyDARTS_A") == spaces.genotype_space(str(path)) == "chain"
  assert spaces.genotype_space("DARTS_V2") == "darts_cell"
  cell = tmp_path / "cell.json"
  cell.write_text(json.dumps(cell_genotype.to_json(cell_zoo.get("DARTS_V2"))))
  assert spaces.genotype_space(str(cell)) == "darts_cell"
  assert spaces.genotype_space("no_such_file") == "darts_cell"  # whose errors name it


def _describe(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / "describe.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_describe_counts_a_chain(tmp_path):
  out = json.loads(_describe("--genotype=NoisyDARTS_A").stdout)
  assert (out["params"], out["macs"], out["layers"]) == (*PUBLISHED["NoisyDARTS_A"], 19)
  assert sum(out["ops"].values()) == 19
  path = tmp_path / "tiny.json"
  genotype_lib.save(_tiny([[(3, 3)], [], [(3, 3)]]), str(path))
  out = json.loads(_describe(f"--genotype={path}", "--image_size=16", "--num_classes=5").stdout)
  assert {k: out[k] for k in ("params", "macs")} == networks.counts_from_shapes(
      genotype_lib.load(str(path)), image_size=16, num_classes=5)
  refused = _describe("--genotype=FairNAS_B", "--init_channels=8")
  assert refused.returncode == 2
  assert refused.stderr.strip() == ("error: --init_channels applies to DARTS cells, not to the "
                                    "chain FairNAS_B")


def test_dropout_and_drop_connect_follow_the_seed_in_training_only():
  g = _tiny([[(3, 3)], [(5, 3)], [(3, 3)]], dropout=0.5)
  network = networks.ChainNetwork(g, num_classes=5)
  x = tf.random.normal([4, 16, 16, 3])
  seed = tf.constant([1, 2], tf.int64)
  np.testing.assert_allclose(network(x, training=True, seed=seed),
                             network(x, training=True, seed=seed))
  assert np.max(np.abs(network(x, training=True, seed=seed)
                       - network(x, training=True, seed=seed + 1))) > 1e-3
  np.testing.assert_allclose(network(x), network(x))
  # Without dropout, drop connect alone: it drops the residual layers' blocks per example.
  quiet = networks.ChainNetwork(dataclasses.replace(g, dropout=0.0), num_classes=5)
  quiet.drop_path_prob.assign(0.0)
  a = quiet(x, training=True, seed=seed)
  np.testing.assert_allclose(a, quiet(x, training=True, seed=seed + 1), rtol=1e-5, atol=1e-6)
  quiet.drop_path_prob.assign(0.5)
  layer = quiet.chain[0]
  assert layer.residual
  y = layer(tf.ones([8, 4, 4, 8]), training=True, drop_prob=0.5, seed=seed)
  kept = np.any(np.abs(y.numpy() - 1.0) > 1e-6, axis=(1, 2, 3))
  assert 0 < kept.sum() < 8  # some examples keep only the input
