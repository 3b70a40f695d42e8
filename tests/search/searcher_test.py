"""The bilevel search loop: which step changes what, replicas, resume, files, failures."""
import dataclasses
import glob
import json
import os
import re

import keras
import numpy as np
import pytest
from tensorboard.plugins.custom_scalar import layout_pb2
import tensorflow as tf

from tfnas import spaces
from tfnas.data import pipeline
from tfnas.data import sources
from tfnas.layers import ops
from tfnas.methods import presets
from tfnas.runtime import distribute
from tfnas.runtime import updates
from tfnas.runtime.errors import UserInputError
from tfnas.search import run as search_run
from tfnas.search import searcher
from tfnas.search import summaries
from tfnas.spaces.chain import genotype as chain_genotype
from tfnas.spaces.chain import space as chain_space
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import space as cell_space
from tfnas.spaces.darts_cell import supernet

SPACE = cell_space.SearchSpace(primitives=("max_pool_3x3", "skip_connect", "sep_conv_3x3"),
                                 steps=2, layers=3, init_channels=4, num_classes=3)
# Multi-replica graphs trace slowly on CPU: the smallest cell that still has both cell types.
SMALL_SPACE = cell_space.SearchSpace(primitives=("skip_connect", "sep_conv_3x3"), steps=1,
                                       layers=3, init_channels=4, num_classes=3)
# A chain of two layers: the first may be skipped, the second halves the image.
CHAIN = chain_space.SearchSpace(layout=((8, 1), (8, 2)), kernels=(3, 5), expansions=(3,),
                                stem_channels=8, first_channels=8, head_channels=8,
                                num_classes=3)
CONFIG = searcher.SearchConfig(epochs=2, batch_size=16, log_every_steps=1)
DATA_CONFIG = sources.DataConfig(dataset="random-test-data")  # only recorded in params.json


def _data(n=48, seed=0):
  rng = np.random.default_rng(seed)

  def images():
    return sources.ImageSet(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
                             rng.integers(0, 3, n).astype(np.int64))

  return sources.SearchData("random", images(), images(), 3, (8, 8, 3), (0.5,) * 3,
                             (0.25,) * 3, False)


DATA = _data()  # 48 + 48 images: 3 steps of 16 per epoch


def _two_cpus():
  return distribute.get_strategy("cpu")  # CPU:0 and CPU:1 (tests/conftest.py)


def _one_device():
  return tf.distribute.OneDeviceStrategy("CPU:0")


def _numpy(variable):
  return tf.convert_to_tensor(variable.value).numpy()


def _batch(seed):
  rng = np.random.default_rng(seed)
  return (tf.constant(rng.normal(size=(16, 8, 8, 3)), tf.float32),
          tf.constant(rng.integers(0, 3, 16), tf.int64))


@pytest.mark.parametrize("method", ["darts", "fair_darts"])
def test_arch_step_changes_only_alphas_and_weight_step_only_weights(method):
  s = searcher.Searcher(SPACE, presets.METHODS[method], CONFIG, _one_device(), (8, 8, 3))
  alphas0 = [_numpy(v) for v in s.arch_variables]
  weights0 = [_numpy(v) for v in s.weight_variables]

  s.strategy.run(s.arch_step, args=_batch(1))
  alphas1 = [_numpy(v) for v in s.arch_variables]
  weights1 = [_numpy(v) for v in s.weight_variables]
  assert all(np.all(a != b) for a, b in zip(alphas0, alphas1))  # every alpha moved
  for a, b in zip(weights0, weights1):
    np.testing.assert_array_equal(a, b)

  s.strategy.run(s.weight_step, args=_batch(2))
  for a, b in zip(alphas1, [_numpy(v) for v in s.arch_variables]):
    np.testing.assert_array_equal(a, b)
  changed = [not np.array_equal(a, _numpy(v)) for a, v in zip(weights1, s.weight_variables)]
  assert all(changed), f"{changed.count(False)} weight tensors did not move"


@pytest.mark.parametrize("precision,compute_dtype",
                         [("mixed_bfloat16", tf.bfloat16), ("mixed_float16", tf.float16)])
def test_mixed_precision_step_computes_the_same_network_with_float32_variables(precision,
                                                                               compute_dtype):
  space = cell_space.SearchSpace(
      primitives=("max_pool_3x3", "skip_connect", "sep_conv_5x5", "dil_conv_3x3"), steps=2,
      layers=3, init_channels=4, num_classes=3)
  x, y = _batch(3)

  def weight_step(precision):  # the same initial weights each time (Searcher seeds Keras)
    config = searcher.SearchConfig(epochs=2, batch_size=16, precision=precision)
    s = searcher.Searcher(space, presets.METHODS["fair_darts"], config, _one_device(), (8, 8, 3))
    for skipped in range(20):  # float16: until the loss scale is low enough (see below)
      out = {k: float(v) for k, v in s.strategy.run(s.weight_step, args=(x, y)).items()}
      if not out["weight_updates_skipped"]:
        return s, out, skipped
    raise AssertionError("every update skipped")

  _, want, _ = weight_step("float32")
  s, got, skipped = weight_step(precision)
  assert keras.config.dtype_policy().name == "float32"  # restored after the build
  cell_output = s.model.cells[0](*[tf.zeros([2, 8, 8, 12])] * 2, s.model.arch_weights()[0],
                                 training=True)
  assert cell_output.dtype == compute_dtype
  assert s.model(x, training=True).dtype == tf.float32  # float32 logits for the loss
  assert {v.dtype for v in s.model.variables} == {"float32"}
  assert np.isfinite(got["train_loss_sum"])
  assert got["train_loss_sum"] == pytest.approx(want["train_loss_sum"], rel=0.03)
  # The gradient (unscaled again in float16) is the float32 one's.
  assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=0.05)
  if precision == "mixed_float16":
    # Updates with overflowing gradients were skipped, each halving the scale (from 2**16).
    assert float(s.weight_loss_scale.scale) == 2.0**(16 - skipped)
    print(skipped)


def test_loss_scale_halves_on_overflow_and_doubles_after_a_run_of_finite_steps():
  loss_scale = updates.DynamicLossScale(initial_scale=8.0, growth_steps=3)
  scales = []
  for finite in (True, True, False, True, True, True, True):
    loss_scale.update(tf.constant(finite))
    scales.append(float(loss_scale.scale))
  # The overflow resets the count: three more finite steps are needed to grow.
  assert scales == [8.0, 8.0, 4.0, 4.0, 4.0, 8.0, 8.0]
  assert int(loss_scale.good_steps) == 1


def _next_step(s, seed=0):
  dataset = pipeline.search_input(DATA, global_batch_size=16, seed=seed, epochs=1)
  return {k: float(v) for k, v in s.train_step(
      iter(s.strategy.experimental_distribute_dataset(dataset))).items()}


@pytest.mark.slow
def test_two_replicas_traced_once_step_as_one_replica_on_the_global_batch():
  # One trace for both replicas (distribute.ReplicasTracedOnce): the step's sums and the
  # variables after it are the one-device step's on the same global batch.
  config = searcher.SearchConfig(epochs=1, batch_size=16, arch_learning_rate=3e-2)
  two, one = (searcher.Searcher(SMALL_SPACE, presets.METHODS["fair_darts"], config, strategy,
                                (8, 8, 3)) for strategy in (_two_cpus(), _one_device()))
  assert two.traced_once is None
  out_two, out_one = _next_step(two), _next_step(one)
  assert two.traced_once is True and one.traced_once is False
  assert out_two.keys() == out_one.keys()
  for key in out_one:
    np.testing.assert_allclose(out_two[key], out_one[key], rtol=1e-4, atol=1e-6, err_msg=key)
  for a, b in zip(one.model.weights, two.model.weights):
    for copy in b.value.values:  # every replica's copy
      np.testing.assert_allclose(copy.numpy(), _numpy(a), rtol=1e-4, atol=1e-6, err_msg=a.path)
  # Inside a strategy's scope the step runs through strategy.run.
  inside = searcher.Searcher(SMALL_SPACE, presets.METHODS["fair_darts"], config, _two_cpus(),
                             (8, 8, 3))
  with inside.strategy.scope():
    np.testing.assert_allclose(_next_step(inside)["train_loss_sum"], out_one["train_loss_sum"],
                               rtol=1e-4)
  assert inside.traced_once is False
  # Noisy DARTS draws its noise per replica: as strategy.run draws it.
  noisy = [searcher.Searcher(SMALL_SPACE, presets.METHODS["noisy_darts"], config, _two_cpus(),
                             (8, 8, 3)) for _ in range(2)]
  noisy[1]._step_fn = noisy[1]._make_step_fn(traced_once=False)  # pylint: disable=protected-access
  once, run = (_next_step(s) for s in noisy)
  assert noisy[0].traced_once and not noisy[1].traced_once
  for key in once:
    np.testing.assert_allclose(once[key], run[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_float16_updates_with_overflowing_gradients_are_skipped_on_every_replica():
  config = searcher.SearchConfig(epochs=1, batch_size=16, precision="mixed_float16")
  s = searcher.Searcher(SMALL_SPACE, presets.METHODS["fair_darts"], config, _two_cpus(),
                        (8, 8, 3))
  s.weight_loss_scale.scale.assign(1e38)  # overflows float16 in the backward pass
  weights = [v.value.values for v in s.weight_variables]  # per replica
  w0, a0 = [[t.numpy() for t in v] for v in weights], [_numpy(v) for v in s.arch_variables]
  out = _next_step(s)
  # The loss scales are not Keras variables: each replica is traced apart (strategy.run).
  assert s.traced_once is False
  assert (out["weight_updates_skipped"], out["grad_norm"], out["arch_updates_skipped"]) == (1, 0, 0)
  for before, v in zip(w0, weights):  # on both replicas
    for b, t in zip(before, v):
      np.testing.assert_array_equal(b, t.numpy())
  assert int(_numpy(s.weight_optimizer.iterations)) == 0  # no step: momentum and counters as they were
  assert all(np.any(a != _numpy(v)) for a, v in zip(a0, s.arch_variables))  # alphas moved
  for loss_scale, scale, good in ((s.weight_loss_scale, 5e37, 0), (s.arch_loss_scale, 2**16, 1)):
    assert [float(t) for t in loss_scale.scale.values] == [np.float32(scale)] * 2
    assert [int(t) for t in loss_scale.good_steps.values] == [good] * 2

  s.weight_loss_scale.scale.assign(2.0**12)
  out = _next_step(s, seed=1)
  assert out["weight_updates_skipped"] == 0 and out["grad_norm"] > 0
  assert int(_numpy(s.weight_optimizer.iterations)) == 1
  for before, v in zip(w0, weights):
    assert np.any(before[0] != v[0].numpy())
    np.testing.assert_array_equal(v[0].numpy(), v[1].numpy())  # replicas stay identical


def test_float16_search_stops_when_gradients_overflow_even_unscaled(tmp_path):
  config = searcher.SearchConfig(epochs=1, batch_size=16, precision="mixed_float16")
  s = searcher.Searcher(SMALL_SPACE, presets.METHODS["darts"], config, _one_device(), (8, 8, 3))
  skipped = {"arch_updates_skipped": 0.0, "weight_updates_skipped": 1.0}
  s.weight_loss_scale.scale.assign(2.0)
  search_run.check_loss_scales(s, skipped, 0, str(tmp_path))  # a scale > 1 may still come down
  s.weight_loss_scale.scale.assign(0.5)
  with pytest.raises(FloatingPointError, match="the weight gradients were not finite even at a "
                     "loss scale below 1 at step 0; the last checkpoint in"):
    search_run.check_loss_scales(s, skipped, 0, str(tmp_path))
  search_run.check_loss_scales(s, {**skipped, "weight_updates_skipped": 0.0}, 0,
                                str(tmp_path))


@pytest.mark.slow
def test_xla_step_gives_the_same_search_step():
  results = []
  for jit_compile in (False, True):
    config = searcher.SearchConfig(epochs=1, batch_size=16, jit_compile=jit_compile)
    s = searcher.Searcher(SMALL_SPACE, presets.METHODS["fair_darts"], config, _one_device(),
                          (8, 8, 3))
    results.append((_next_step(s), [_numpy(v) for v in s.model.weights]))
  (want, want_weights), (got, got_weights) = results
  for key in want:
    assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
  for a, b in zip(want_weights, got_weights):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_coupled_weight_decay_and_clipping_follow_pytorch():
  # With a zero gradient path blocked (lr, momentum known), one SGD step from a
  # clipped gradient g plus wd * w: w1 = w0 - lr * (clip(g) + wd * w0).
  config = searcher.SearchConfig(epochs=1, batch_size=16, grad_clip=1e-3, weight_decay=0.1,
                                 momentum=0.9, learning_rate=0.5)
  s = searcher.Searcher(SPACE, presets.METHODS["darts"], config, _one_device(), (8, 8, 3))
  w0 = [_numpy(v) for v in s.weight_variables]
  x, y = _batch(3)
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(s.loss_fn(y, s.model(x, training=True)))
  grads = tape.gradient(loss, s.weight_variables)
  # The model's BN statistics moved in that forward pass; the step recomputes
  # the same gradient from the same weights (batch statistics in training mode).
  clipped, norm = tf.clip_by_global_norm(grads, 1e-3)
  assert float(norm) > 1e-3  # the clip is active
  out = s.strategy.run(s.weight_step, args=(x, y))
  np.testing.assert_allclose(float(out["grad_norm"]), float(norm), rtol=1e-5)
  for v, w, g in zip(s.weight_variables, w0, clipped):
    np.testing.assert_allclose(_numpy(v), w - 0.5 * (g.numpy() + 0.1 * w), rtol=1e-4, atol=1e-7)


def _search_two_steps(strategy, model_dir, synchronized_bn=None, space=SMALL_SPACE,
                      unrolled=False):
  """Two search steps (stopped as an interruption would); the checkpoint and the summaries."""
  config = searcher.SearchConfig(epochs=1, batch_size=16, synchronized_bn=synchronized_bn,
                                 arch_learning_rate=3e-2, log_every_steps=1, unrolled=unrolled)
  assert search_run.search(space, presets.METHODS["fair_darts"], config, DATA_CONFIG,
                           str(model_dir), strategy, DATA, stop_at_step=2) is None
  logged = {f"{split}/{tag}": values for split in ("train", "validation")
            for tag, values in _summaries(model_dir, split).items()
            if tag not in ("images_per_second", "steps_per_second", "custom_scalars__config__")}
  return _checkpoint_values(model_dir), logged


@pytest.mark.slow
@pytest.mark.parametrize("space, unrolled", [(SMALL_SPACE, False), (CHAIN, False),
                                             (SMALL_SPACE, True)],
                         ids=["darts_cell", "chain", "second_order"])
def test_two_replicas_match_one_replica_on_the_same_global_batch(tmp_path, space, unrolled):
  one, logged_one = _search_two_steps(_one_device(), tmp_path / "one", space=space,
                                      unrolled=unrolled)
  two, logged_two = _search_two_steps(_two_cpus(), tmp_path / "two", space=space,
                                      unrolled=unrolled)
  # Every saved tensor: weights, alphas, batch-norm statistics, optimizer slots.
  assert one.keys() == two.keys()
  for key in one:
    np.testing.assert_allclose(one[key], two[key], rtol=1e-4, atol=1e-6, err_msg=key)
  # What TensorBoard shows is the global batch's (summed over the replicas), not one
  # replica's: losses, accuracies, the gradient norm and the zero-one loss, at steps 1 and 2.
  assert sorted(logged_one) == sorted(logged_two)
  assert {"train/loss/cross_entropy", "validation/accuracy", "train/grad_norm",
          "validation/loss/zero_one"} <= set(logged_one)
  for tag, values in logged_one.items():
    assert [s for s, _ in values] == [1, 2], tag
    np.testing.assert_allclose([v for _, v in values], [v for _, v in logged_two[tag]],
                               rtol=1e-4, atol=1e-6, err_msg=tag)
  if space is SMALL_SPACE and not unrolled:
    # Without synchronized batch norm the replicas normalize with half-batch statistics,
    # and the result is measurably different (once: the batch norm is the same in all).
    unsynced, _ = _search_two_steps(_two_cpus(), tmp_path / "unsynced", synchronized_bn=False,
                                    space=space, unrolled=unrolled)
    assert max(np.max(np.abs(one[k] - unsynced[k])) for k in one) > 1e-4


def _checkpoint_values(model_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir,
                                                                            "checkpoints")))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if not k.startswith(("save_counter", "_CHECKPOINTABLE"))}


def _alphas(model_dir):
  with open(os.path.join(model_dir, "alphas.json")) as f:
    return json.load(f)


def _summaries(model_dir, subdir):
  """{tag: [(step, value)]} from a run's event files, oldest first: floats, images, text,
  the layout."""
  values = {}
  # A resumed run has an event file per process; their names begin with the time.
  for path in sorted(glob.glob(os.path.join(model_dir, subdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        plugin = v.metadata.plugin_data.plugin_name
        if plugin == "images":
          value = tf.io.decode_png(tf.make_ndarray(v.tensor)[2]).numpy()
        elif plugin == "text":
          value = tf.make_ndarray(v.tensor).item().decode()
        elif plugin == "custom_scalars":
          value = layout_pb2.Layout.FromString(tf.make_ndarray(v.tensor).item())
        else:
          value = float(tf.make_ndarray(v.tensor))
        values.setdefault(v.tag, []).append((event.step, value))
  return values


@pytest.mark.slow
def test_resumed_search_equals_uninterrupted(tmp_path):
  # Noise draws and skip drop-path masks must resume too.
  method = dataclasses.replace(presets.METHODS["noisy_darts"], skip_drop_prob=0.3)
  full_dir, resumed_dir = str(tmp_path / "full"), str(tmp_path / "resumed")

  # A larger architecture step than the preset's, so that the alphas move well past their
  # initial 1e-3 in the 6 steps (checked below).
  config = dataclasses.replace(CONFIG, arch_learning_rate=3e-2)

  def search(model_dir, **kwargs):
    return search_run.search(SMALL_SPACE, method, config, DATA_CONFIG, model_dir, _one_device(),
                             DATA, **kwargs)

  full = search(full_dir)
  # Interrupted in the middle of the second epoch (3 steps per epoch).
  assert search(resumed_dir, stop_at_step=4) is None
  assert tf.train.latest_checkpoint(os.path.join(resumed_dir, "checkpoints")).endswith("-4")
  resumed = search(resumed_dir)
  # The resumed epoch's figures cover its steps before the interruption too.
  assert (resumed.train_accuracy, resumed.val_accuracy) == (full.train_accuracy,
                                                            full.val_accuracy)
  # Run again when finished: the last epoch's figures, not nan.
  again = search(resumed_dir)
  assert (again.train_accuracy, again.val_accuracy) == (full.train_accuracy, full.val_accuracy)
  a, b = _alphas(full_dir), _alphas(resumed_dir)
  np.testing.assert_allclose(a["normal"], b["normal"], rtol=0, atol=1e-7)
  np.testing.assert_allclose(a["reduce"], b["reduce"], rtol=0, atol=1e-7)
  assert full.genotype == resumed.genotype
  # Every saved tensor agrees: weights, batch-norm statistics, optimizer slots.
  a_ckpt, b_ckpt = _checkpoint_values(full_dir), _checkpoint_values(resumed_dir)
  assert a_ckpt.keys() == b_ckpt.keys()
  # Every batch norm's statistics are saved, the cells' too.
  network = supernet.SearchNetwork(SMALL_SPACE, method)
  network(tf.zeros([1, 8, 8, 3]))
  batch_norms = [layer for layer in network._flatten_layers()  # pylint: disable=protected-access
                 if isinstance(layer, ops.BatchNorm)]
  assert sum("moving_variance" in k for k in a_ckpt) == len(batch_norms) > 10
  for key in a_ckpt:
    np.testing.assert_allclose(a_ckpt[key], b_ckpt[key], rtol=1e-5, atol=1e-6, err_msg=key)
  # And the alphas did move during the search (the comparison is not vacuous).
  assert np.max(np.abs(np.array(a["normal"]))) > 1e-3
  # The collapse picture of the resumed run still covers the epoch before the resume.
  with open(os.path.join(full_dir, "dominant_ops.json")) as f, \
       open(os.path.join(resumed_dir, "dominant_ops.json")) as g:
    history = json.load(f)
    assert sorted(history["epochs"]) == ["1", "2"] and json.load(g) == history
  full_train, resumed_train = _summaries(full_dir, "train"), _summaries(resumed_dir, "train")
  for cell in ("normal", "reduce"):
    np.testing.assert_array_equal(resumed_train[f"arch_weights/dominant_ops_{cell}"][-1][1],
                                  full_train[f"arch_weights/dominant_ops_{cell}"][-1][1])


def test_model_dir_files_and_summaries(tmp_path):
  model_dir = str(tmp_path)
  method = presets.METHODS["fair_darts"]
  result = search_run.search(SPACE, method, CONFIG, DATA_CONFIG, model_dir, _one_device(), DATA)

  with open(os.path.join(model_dir, "params.json")) as f:
    params = json.load(f)
  assert params["search"]["batch_size"] == 16 and params["search_space"]["layers"] == 3
  assert params["method"]["relaxation"] == "sigmoid"
  assert params["derived"]["steps_per_epoch"] == 3 and params["derived"]["num_replicas"] == 1

  alphas = _alphas(model_dir)
  assert alphas["primitives"] == list(SPACE.primitives)
  assert alphas["relaxation"] == "sigmoid" and alphas["steps"] == 2
  assert np.array(alphas["normal"]).shape == (5, 3) == np.array(alphas["reduce"]).shape
  derived = genotype_lib.derive_from_alphas_json(alphas, "threshold_sparse", 0.85)
  assert genotype_lib.load(os.path.join(model_dir, "genotype.json")) == derived == result.genotype

  train, val = _summaries(model_dir, "train"), _summaries(model_dir, "validation")
  for tag in ("loss/cross_entropy", "accuracy", "learning_rate/weights", "learning_rate/arch",
              "images_per_second", "steps_per_second", "grad_norm"):
    assert tag in train, tag
  for tag in ("loss/cross_entropy", "accuracy", "loss/zero_one"):
    assert tag in val, tag
  lr = dict(train["learning_rate/weights"])
  assert lr[1] == pytest.approx(searcher.cosine_learning_rate(CONFIG, 0))
  assert lr[4] == pytest.approx(searcher.cosine_learning_rate(CONFIG, 1))
  assert all(0 <= acc <= 1 for _, acc in train["accuracy"] + val["accuracy"])
  assert all(v > 0 for _, v in train["steps_per_second"] + train["images_per_second"])
  # The last logged weight of every op on every edge is sigmoid(final alpha), in the op's
  # own run (TensorBoard colours by run), under one tag per edge.
  weights = {c: 1 / (1 + np.exp(-np.array(alphas[c]))) for c in ("normal", "reduce")}
  edges = genotype_lib.edges(2)
  runs = {op: _summaries(model_dir, f"arch/{k}_{op}") for k, op in enumerate(SPACE.primitives)}
  for k, op in enumerate(SPACE.primitives):
    assert sorted(runs[op]) == sorted(f"arch_weights/{cell}/node{to}/from{src}"
                                      for cell in ("normal", "reduce") for to, src in edges)
    for cell in ("normal", "reduce"):
      for e, (to, src) in enumerate(edges):
        logged = runs[op][f"arch_weights/{cell}/node{to}/from{src}"]
        assert [step for step, _ in logged] == [3, 6]
        assert logged[-1][1] == pytest.approx(weights[cell][e, k], abs=1e-6)
  assert not any(tag.startswith("arch_weights/") and "node" in tag for tag in train)
  history = json.loads(open(os.path.join(model_dir, "dominant_ops.json")).read())
  groups = {g.name: g for g in SPACE.weight_groups([weights["normal"], weights["reduce"]])}
  assert history["primitives"] == list(SPACE.primitives) and sorted(history["epochs"]) == ["1", "2"]
  for cell in ("normal", "reduce"):
    # A heatmap per cell type every epoch (steps 3 and 6), the last one of the final weights.
    assert [step for step, _ in train[f"arch_weights/{cell}"]] == [3, 6]
    np.testing.assert_array_equal(
        train[f"arch_weights/{cell}"][-1][1],
        summaries.heatmap(groups[cell], "sigmoid"))
    # The collapse picture every epoch; the last one of both epochs' dominant ops.
    counts = history["epochs"]["2"][cell]
    assert counts == np.bincount(np.argmax(weights[cell], 1), minlength=3).tolist()
    assert [step for step, _ in train[f"arch_weights/dominant_ops_{cell}"]] == [3, 6]
    np.testing.assert_array_equal(
        train[f"arch_weights/dominant_ops_{cell}"][-1][1],
        summaries.figure_image(summaries.collapse_figure(
            [1, 2], [history["epochs"]["1"][cell], counts], SPACE.primitives, f"{cell} cell",
            "edges")))
    picture = train[f"cells/{cell}"][-1][1]  # the drawn cell of the current genotype
    assert picture.ndim == 3 and 20 < picture.shape[1] <= 350 and picture.shape[0] > 20
    assert train[f"genotype/skip_connect_{cell}"][-1][1] == sum(
        op == "skip_connect" for op, _, _ in getattr(result.genotype, cell))
  assert train["arch/undecided_fraction"][-1][1] == pytest.approx(np.mean(
      [(w > 0.15) & (w < 0.85) for c in ("normal", "reduce") for w in weights[c].ravel()]))
  assert json.loads(train["genotype"][-1][1].strip("`")) == genotype_lib.to_json(result.genotype)
  # Custom Scalars: one chart per cell type and edge; each matches that edge's tag in every
  # op's run, so the chart has one line per op, coloured and named by its run.
  layout = train["custom_scalars__config__"][0][1]
  charts = {c.title: c.multiline.tag for cat in layout.category for c in cat.chart}
  assert sorted(charts) == sorted(f"{cell} {to}\u2190{src}" for cell in ("normal", "reduce")
                                  for to, src in edges)
  for title, patterns in charts.items():
    cell, edge = title.split(" ")
    to, src = edge.split("\u2190")
    for op in SPACE.primitives:
      assert {t for t in runs[op] if any(re.search(p, t) for p in patterns)} == {
          f"arch_weights/{cell}/node{to}/from{src}"}
    assert not any(re.search(p, t) for p in patterns for t in [*train, *val])
  assert "noise_scale" not in val  # Fair DARTS has no noise


def _chain_weights(alphas, relaxation):
  """[layers, ops] relaxed from alphas.json's rows (null: a layer without the identity)."""
  a = np.array([[np.nan if v is None else v for v in row] for row in alphas], np.float64)
  if relaxation == "sigmoid":
    return 1 / (1 + np.exp(-a))
  e = np.exp(np.nan_to_num(a, nan=-np.inf))
  return np.where(np.isnan(a), np.nan, e / e.sum(1, keepdims=True))


@pytest.mark.parametrize("method_name", ["darts", "fair_darts", "noisy_darts"])
def test_a_chain_search_writes_its_files_and_summaries(tmp_path, method_name):
  model_dir = str(tmp_path)
  method = presets.METHODS[method_name]
  result = search_run.search(CHAIN, method, CONFIG, DATA_CONFIG, model_dir, _one_device(), DATA)
  params = json.loads(open(os.path.join(model_dir, "params.json")).read())
  assert params["search_space"]["layout"] == [[8, 1], [8, 2]]
  alphas = _alphas(model_dir)
  assert alphas["ops"] == ["k3_e3", "k5_e3", "skip"] and alphas["alphas"][1][2] is None
  weights = _chain_weights(alphas["alphas"], method.relaxation)
  derived = chain_space.derive(CHAIN, weights, method.selection_rule, method.threshold)
  assert chain_genotype.load(os.path.join(model_dir, "genotype.json")) == derived == (
      result.genotype) == spaces.derive_from_alphas_file(
          os.path.join(model_dir, "alphas.json"), method.selection_rule, method.threshold)
  if method.alpha_init_std == 0:  # they moved
    assert np.min(np.abs(np.nan_to_num(np.array(alphas["alphas"], np.float64), nan=1))) > 1e-5
  train, val = _summaries(model_dir, "train"), _summaries(model_dir, "validation")
  # Each op's weight per layer in the op's run; the identity only where the layer has it.
  for k, op in enumerate(CHAIN.ops):
    logged = _summaries(model_dir, f"arch/{k}_{op}")
    tags = ["arch_weights/layers/layer01"] + ["arch_weights/layers/layer02"] * (op != "skip")
    assert sorted(logged) == sorted(set(tags))
    for row, tag in enumerate(tags):
      assert logged[tag][-1][1] == pytest.approx(weights[row, k], abs=1e-6)
  (group,) = CHAIN.weight_groups([np.array(w, np.float32) for w in (
      weights[:, :2], weights[[0], 2])])
  np.testing.assert_array_equal(train["arch_weights/layers"][-1][1],
                                summaries.heatmap(group, method.relaxation))
  assert train["chain"][-1][1].shape[1] <= 350
  assert train["genotype/skipped_layers"][-1][1] == sum(
      not layer.blocks for layer in result.genotype.layers)
  assert json.loads(train["genotype"][-1][1].strip("`")) == chain_genotype.to_json(
      result.genotype)
  assert ("noise_scale" in val) == (method.noise is not None)
  assert ("loss/zero_one" in val) == (method.zero_one_weight > 0)


@pytest.mark.slow
def test_a_resumed_chain_search_equals_the_uninterrupted_one(tmp_path):
  method = dataclasses.replace(presets.METHODS["noisy_darts"], skip_drop_prob=0.3)
  full_dir, resumed_dir = str(tmp_path / "full"), str(tmp_path / "resumed")
  full = search_run.search(CHAIN, method, CONFIG, DATA_CONFIG, full_dir, _one_device(), DATA)
  assert search_run.search(CHAIN, method, CONFIG, DATA_CONFIG, resumed_dir, _one_device(), DATA,
                           stop_at_step=4) is None
  resumed = search_run.search(CHAIN, method, CONFIG, DATA_CONFIG, resumed_dir, _one_device(),
                              DATA)
  assert (resumed.train_accuracy, resumed.val_accuracy, resumed.genotype) == (
      full.train_accuracy, full.val_accuracy, full.genotype)
  a_ckpt, b_ckpt = _checkpoint_values(full_dir), _checkpoint_values(resumed_dir)
  assert a_ckpt.keys() == b_ckpt.keys()
  assert sum("moving_variance" in k for k in a_ckpt) == 3 + 2 * 3 * 2 + 1  # every BN
  for key in a_ckpt:
    np.testing.assert_allclose(a_ckpt[key], b_ckpt[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_a_resumed_second_order_search_equals_the_uninterrupted_one(tmp_path):
  config = dataclasses.replace(CONFIG, unrolled=True)
  method = presets.METHODS["fair_darts"]  # alphas from 0: any that moved is not 0
  full_dir, resumed_dir = str(tmp_path / "full"), str(tmp_path / "resumed")
  full = search_run.search(SMALL_SPACE, method, config, DATA_CONFIG, full_dir, _one_device(),
                           DATA)
  assert search_run.search(SMALL_SPACE, method, config, DATA_CONFIG, resumed_dir,
                           _one_device(), DATA, stop_at_step=4) is None
  resumed = search_run.search(SMALL_SPACE, method, config, DATA_CONFIG, resumed_dir,
                              _one_device(), DATA)
  assert (resumed.train_accuracy, resumed.val_accuracy) == (full.train_accuracy,
                                                            full.val_accuracy)
  a, b = _alphas(full_dir), _alphas(resumed_dir)
  np.testing.assert_allclose(a["normal"], b["normal"], rtol=0, atol=1e-7)
  np.testing.assert_allclose(a["reduce"], b["reduce"], rtol=0, atol=1e-7)
  assert np.min(np.abs(np.array(a["normal"]))) > 0
  params = json.loads(open(os.path.join(full_dir, "params.json")).read())
  assert params["search"]["unrolled"] is True


def test_a_model_dir_of_another_configuration_is_refused(tmp_path):
  method = presets.METHODS["darts"]
  search_run.search(SPACE, method, CONFIG, DATA_CONFIG, str(tmp_path), _one_device(), DATA,
                    stop_at_step=1)
  with pytest.raises(UserInputError, match="search_space.layers=3, not 4"):
    other = cell_space.SearchSpace(primitives=SPACE.primitives, steps=2, layers=4,
                                     init_channels=4, num_classes=3)
    search_run.search(other, method, CONFIG, DATA_CONFIG, str(tmp_path), _one_device(), DATA)


def test_a_diverging_loss_stops_with_a_clear_error(tmp_path):
  # Step 1 with an absurd learning rate blows the weights up; step 2 sees it.
  config = searcher.SearchConfig(epochs=2, batch_size=16, learning_rate=1e30)
  with pytest.raises(FloatingPointError, match=r"loss became (nan|inf) at step 2; the last"):
    search_run.search(SPACE, presets.METHODS["darts"], config, DATA_CONFIG, str(tmp_path),
                      _one_device(), DATA)
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints", "checkpoint"))


def test_bad_settings_are_refused(tmp_path):
  with pytest.raises(UserInputError, match="num_classes=5 does not fit random"):
    space = cell_space.SearchSpace(primitives=SPACE.primitives, steps=2, layers=3,
                                     init_channels=4, num_classes=5)
    search_run.search(space, presets.METHODS["darts"], CONFIG, DATA_CONFIG, str(tmp_path),
                      _one_device(), DATA)
  with pytest.raises(UserInputError, match="not divisible by the 2 replicas"):
    search_run.search(SPACE, presets.METHODS["darts"],
                      searcher.SearchConfig(epochs=1, batch_size=15), DATA_CONFIG, str(tmp_path),
                      _two_cpus(), DATA)
  with pytest.raises(UserInputError, match="batch_size must be >= 1"):
    searcher.SearchConfig(batch_size=0)
  with pytest.raises(UserInputError, match="unknown precision 'float16'; choose one of float32"):
    searcher.SearchConfig(precision="float16")
  with pytest.raises(UserInputError, match="jit_compile needs one replica, not 2"):
    searcher.Searcher(SPACE, presets.METHODS["darts"], searcher.SearchConfig(jit_compile=True),
                      _two_cpus(), (8, 8, 3))
