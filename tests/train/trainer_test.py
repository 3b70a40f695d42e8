"""Training a genotype from scratch: the protocol's schedules, resume, files, and the tool."""
import dataclasses
import glob
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfnas import spaces
from tfnas.data import sources
from tfnas.runtime import distribute
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.chain import genotype as chain_genotype
from tfnas.spaces.chain import networks as chain_networks
from tfnas.spaces.darts_cell import zoo
from tfnas.train import export
from tfnas.train import trainer

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA_CONFIG = sources.DataConfig(dataset="random-test-data")  # only recorded in params.json


def _data(size=32, n=32, seed=0):
  rng = np.random.default_rng(seed)

  def images(count):
    return sources.ImageSet(rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
                             rng.integers(0, 3, count).astype(np.int64))

  return sources.SearchData("random", images(n), images(10), 3, (size, size, 3), (0.5,) * 3,
                             (0.25,) * 3, True)


# 32x32 images keep the auxiliary head; 4 steps of 8 per epoch.
DATA = _data()
CONFIG = trainer.TrainConfig(epochs=2, batch_size=8, cutout=8, log_every_steps=1)
# A chain of three layers: two blocks summed, a skipped layer, a stride-2 block.
CHAIN = chain_genotype.ChainGenotype(
    layers=(chain_genotype.ChainLayer(((3, 3), (5, 3)), 8, 1), chain_genotype.ChainLayer((), 8, 1),
            chain_genotype.ChainLayer(((3, 3),), 12, 2)),
    stem_channels=8, first_channels=8, head_channels=16, dropout=0.2)


def _cell(name, **settings):
  """A small network of a zoo cell for the 3 classes of DATA."""
  return spaces.network_spec(zoo.get(name), 3, init_channels=4, layers=3, **settings)


def _one_device():
  return tf.distribute.OneDeviceStrategy("CPU:0")


def _checkpoint_values(model_dir):
  path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  reader = tf.train.load_checkpoint(path)
  return {k: reader.get_tensor(k) for k in sorted(reader.get_variable_to_shape_map())
          if not k.startswith(("save_counter", "_CHECKPOINTABLE"))}


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted(tmp_path):
  spec = _cell("DARTS_V2")
  full = trainer.train(spec, CONFIG, DATA_CONFIG, str(tmp_path / "full"), _one_device(), DATA)
  assert trainer.train(spec, CONFIG, DATA_CONFIG, str(tmp_path / "resumed"), _one_device(),
                       DATA, stop_at_step=6) is None  # in the middle of epoch 2
  resumed = trainer.train(spec, CONFIG, DATA_CONFIG, str(tmp_path / "resumed"),
                          _one_device(), DATA)
  assert resumed["final_test_accuracy"] == full["final_test_accuracy"]
  # The resumed epoch's training figures cover its steps before the interruption too.
  a, b = full["history"]["2"], resumed["history"]["2"]
  assert a["train_accuracy"] == b["train_accuracy"]
  np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-6)
  a, b = _checkpoint_values(tmp_path / "full"), _checkpoint_values(tmp_path / "resumed")
  assert a.keys() == b.keys() and len(a) > 100  # weights, BN statistics, optimizer slots
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_files_schedules_and_counts(tmp_path):
  config = trainer.TrainConfig(epochs=2, batch_size=8, log_every_steps=1)
  result = trainer.train(_cell("FairDARTS_a", drop_path="node"), config, DATA_CONFIG,
                         str(tmp_path), _one_device(), DATA)
  with open(tmp_path / "eval.json") as f:
    assert json.load(f) == json.loads(json.dumps(result))
  assert result["epochs_done"] == 2 and set(result["history"]) == {"1", "2"}
  assert 0 <= result["final_test_accuracy"] <= 1
  assert result["params_with_aux"] > result["params"] > 0
  with open(tmp_path / "params.json") as f:
    params = json.load(f)
  assert params["network"] == {"kind": "cifar", "init_channels": 4, "layers": 3,
                               "num_classes": 3, "auxiliary": True, "drop_path": "node",
                               "image_shape": [32, 32, 3], "mean": [0.5] * 3, "std": [0.25] * 3}
  assert params["genotype"]["normal_concat"] == [2, 4, 5]

  def scalars(tag):
    values = []
    for path in glob.glob(str(tmp_path / "train" / "events.out.tfevents.*")):
      for event in tf.compat.v1.train.summary_iterator(path):
        values += [(event.step, float(tf.make_ndarray(v.tensor)))
                   for v in event.summary.value if v.tag == tag]
    return [v for _, v in sorted(values)]

  # Drop path ramps linearly from 0 (0.2 * epoch / epochs); lr is cosine from 0.025 to 0.
  assert scalars("drop_path_prob") == pytest.approx([0.0, 0.1])
  assert scalars("learning_rate") == pytest.approx([0.025, 0.0125])


def test_a_chain_trains_with_its_files_and_counts(tmp_path):
  spec = spaces.network_spec(CHAIN, 3)
  data = _data(size=16)
  result = trainer.train(spec, CONFIG, DATA_CONFIG, str(tmp_path), distribute.get_strategy("cpu"), data)
  assert result["epochs_done"] == 2 and result["genotype"] == chain_genotype.to_json(CHAIN)
  assert result["params"] == chain_networks.counts_from_shapes(CHAIN, 16, 3)["params"]
  assert "params_with_aux" not in result
  params = json.loads((tmp_path / "params.json").read_text())
  assert params["network"] == {"kind": "chain", "num_classes": 3, "image_shape": [16, 16, 3],
                               "mean": [0.5] * 3, "std": [0.25] * 3}
  assert spaces.network_spec_from_json(params["network"], params["genotype"]) == spec


@pytest.mark.slow
def test_a_resumed_chain_training_equals_the_uninterrupted_one(tmp_path):
  # Dropout and drop connect draw from the step's seed: they resume too.
  spec, data = spaces.network_spec(CHAIN, 3), _data(size=16)
  full = trainer.train(spec, CONFIG, DATA_CONFIG, str(tmp_path / "full"), _one_device(), data)
  assert trainer.train(spec, CONFIG, DATA_CONFIG, str(tmp_path / "resumed"), _one_device(),
                       data, stop_at_step=6) is None
  resumed = trainer.train(spec, CONFIG, DATA_CONFIG, str(tmp_path / "resumed"), _one_device(),
                          data)
  assert resumed["history"] == full["history"]
  a, b = _checkpoint_values(tmp_path / "full"), _checkpoint_values(tmp_path / "resumed")
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_bad_settings_are_refused(tmp_path):
  with pytest.raises(UserInputError, match="too small for the auxiliary head"):
    trainer.train(_cell("DARTS_V2"), CONFIG, DATA_CONFIG, str(tmp_path), _one_device(),
                  _data(size=8))
  with pytest.raises(UserInputError, match="batch_size 64 is larger than the training split"):
    trainer.train(_cell("DARTS_V2"), trainer.TrainConfig(batch_size=64), DATA_CONFIG,
                  str(tmp_path), _one_device(), DATA)
  with pytest.raises(UserInputError, match="the network has 10 classes; random has 3"):
    trainer.train(spaces.network_spec(CHAIN, 10), CONFIG, DATA_CONFIG, str(tmp_path),
                  _one_device(), DATA)
  with pytest.raises(UserInputError, match="drop_path_prob must be in"):
    trainer.TrainConfig(drop_path_prob=1.5)


def _run_train(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_train_tool_end_to_end_on_digits(tmp_path):
  # The protocol's flags on digits: no test split (a held-out fifth instead), no room for
  # the auxiliary head.
  args = ["--flagfile=flags/train_cifar10.flags", "--genotype=DARTS_V2", "--dataset=digits",
          "--init_channels=4", "--layers=1", "--epochs=1", "--batch_size=96", "--noauxiliary",
          "--cutout=2", "--seed=3", f"--model_dir={tmp_path}"]
  result = _run_train(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "final test accuracy" in result.stdout
  with open(tmp_path / "eval.json") as f:
    evaluated = json.load(f)
  assert evaluated["epochs_done"] == 1 and "params_with_aux" not in evaluated
  with open(tmp_path / "params.json") as f:
    params = json.load(f)
  train_params = params["train"]
  assert train_params["weight_decay"] == 3e-4 and train_params["learning_rate"] == 0.025
  assert params["network"]["drop_path"] == "op"  # auto, for a DARTS cell
  assert train_params["auxiliary_weight"] == 0 and not params["network"]["auxiliary"]
  assert params["data"]["seed"] == 3
  derived = params["derived"]
  assert (derived["train_split"], derived["test_split"]) == ("train[:80%]", "train[80%:]")
  assert (derived["train_examples"], derived["test_examples"]) == (1438, 359)

  bad = _run_train(*args[:-1], "--genotype=NoSuchCell", f"--model_dir={tmp_path}/bad")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert "error: genotype 'NoSuchCell' is neither a zoo name nor an existing file" in bad.stderr
  small = _run_train(*args[:-1], "--auxiliary", f"--model_dir={tmp_path}/small")
  assert small.returncode == 2 and "Traceback" not in small.stderr
  assert ("too small for the auxiliary head: it needs at least 16x16; leave the head out with "
          "--noauxiliary") in small.stderr
  same = _run_train(*args[:-1], "--test_split=train[:80%]", f"--model_dir={tmp_path}/same")
  assert same.returncode == 2 and "are the same images" in same.stderr

  # A damaged file of the finished run: one line naming it, exit 2, the file kept as it was.
  eval_text = (tmp_path / "eval.json").read_text()
  for name, text, message in (("eval.json", eval_text[:len(eval_text) // 2], "is not valid JSON"),
                              ("params.json", "[]", "holds a JSON list, not a JSON object")):
    saved = (tmp_path / name).read_text()
    (tmp_path / name).write_text(text)
    damaged = _run_train(*args)
    assert damaged.returncode == 2 and "Traceback" not in damaged.stderr, damaged.stderr[-3000:]
    errors = [line for line in damaged.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / name} {message}"), (
        damaged.stderr[-3000:])
    assert (tmp_path / name).read_text() == text
    (tmp_path / name).write_text(saved)


@pytest.mark.slow
def test_train_tool_trains_a_chain_and_refuses_the_cells_flags(tmp_path):
  path = tmp_path / "chain.json"
  chain_genotype.save(CHAIN, str(path))
  args = ["--flagfile=flags/train_cifar10.flags", f"--genotype={path}", "--dataset=digits",
          "--epochs=1", "--batch_size=96", "--cutout=0", f"--model_dir={tmp_path / 'run'}"]
  refused = _run_train(*args)  # the CIFAR flags set --init_channels and --layers
  assert refused.returncode == 2 and "Traceback" not in refused.stderr
  assert (f"error: --init_channels, --layers apply to DARTS cells, not to the chain {path}"
          in refused.stderr), refused.stderr[-3000:]
  args[0] = "--learning_rate=0.05"
  result = _run_train(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  params = json.loads((tmp_path / "run" / "params.json").read_text())
  assert params["network"]["kind"] == "chain" and params["network"]["num_classes"] == 10
  assert params["train"]["auxiliary_weight"] == 0
  evaluated = json.loads((tmp_path / "run" / "eval.json").read_text())
  assert evaluated["params"] == chain_networks.counts_from_shapes(CHAIN, 8, 10)["params"]


def test_label_smoothing_and_the_decayed_learning_rate():
  logits = tf.constant([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
  y = tf.constant([0, 2])
  log_p = tf.nn.log_softmax(logits).numpy()
  plain = -log_p[[0, 1], [0, 2]]
  np.testing.assert_allclose(trainer.smoothed_cross_entropy(y, logits, 0.0), plain, rtol=1e-6)
  smoothed = 0.9 * plain - 0.1 * log_p.mean(axis=1)
  np.testing.assert_allclose(trainer.smoothed_cross_entropy(y, logits, 0.1), smoothed,
                             rtol=1e-6)
  # DARTS' ImageNet schedule: 0.1 x 0.97^epoch; without lr_decay, the cosine.
  decayed = trainer.TrainConfig(learning_rate=0.1, lr_decay=0.97, epochs=250)
  assert [decayed.learning_rate_at(e) for e in (0, 1, 2)] == pytest.approx(
      [0.1, 0.097, 0.09409])
  assert trainer.TrainConfig(epochs=2).learning_rate_at(1) == pytest.approx(0.0125)
  with pytest.raises(UserInputError, match="label_smoothing must be in"):
    trainer.TrainConfig(label_smoothing=1.0)


def test_the_evaluation_counts_every_test_image_once_on_two_replicas(tmp_path):
  # 9 test images in batches of 8: the second replica's share of the last batch is empty
  # without the filling-up (which Keras' layers failed on).
  rng = np.random.default_rng(3)
  test = sources.ImageSet(rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8),
                          rng.integers(0, 3, 9).astype(np.int64))
  data = dataclasses.replace(DATA, val=test)
  config = trainer.TrainConfig(epochs=1, batch_size=8, log_every_steps=1)
  result = trainer.train(_cell("DARTS_V2", auxiliary=False), config, DATA_CONFIG,
                         str(tmp_path), distribute.get_strategy("cpu"), data)
  _, network, _ = export.load_trained(str(tmp_path))
  x = (test.images.astype(np.float32) / 255.0 - 0.5) / 0.25
  logits = network(x, training=False).numpy()
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  figures = result["history"]["1"]
  np.testing.assert_allclose(figures["test_loss"], -log_p[range(9), test.labels].mean(),
                             rtol=1e-5)
  assert figures["test_accuracy"] == (logits.argmax(-1) == test.labels).mean()
