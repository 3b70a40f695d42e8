"""DARTS' second-order architecture gradient: exact to the unrolled objective, and harmless."""
import dataclasses
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.methods import presets
from tfnas.runtime import optimizers
from tfnas.runtime.errors import UserInputError
from tfnas.search import architect
from tfnas.search import searcher as searcher_lib
from tfnas.spaces.darts_cell import space as cell_space

SPACE = cell_space.SearchSpace(primitives=("max_pool_3x3", "skip_connect", "sep_conv_3x3"),
                               steps=2, layers=3, init_channels=4, num_classes=3)


class _Toy(keras.Model):
  """Two candidate ops mixed by softmax(alpha), then a classifier; float64, no batch norm."""

  def __init__(self):
    super().__init__(dtype="float64")
    normal = keras.initializers.RandomNormal
    self.w_tanh = self.add_weight(shape=(4, 5), initializer=normal(seed=1), dtype="float64")
    self.w_sin = self.add_weight(shape=(4, 5), initializer=normal(seed=2), dtype="float64")
    self.w_out = self.add_weight(shape=(5, 3), initializer=normal(seed=3), dtype="float64")
    self.alphas = self.add_weight(shape=(2,), initializer=normal(seed=4), dtype="float64")
    self.arch_variables = [self.alphas]
    self.weight_variables = [self.w_tanh, self.w_sin, self.w_out]

  def call(self, x, training=False, noise_seed=None):
    a = tf.nn.softmax(self.alphas)
    hidden = a[0] * tf.tanh(x @ self.w_tanh) + a[1] * tf.sin(x @ self.w_sin)
    return hidden @ self.w_out


def _toy_searcher(learning_rate=0.5, weight_decay=3e-4):
  """What architect.second_order reads of a Searcher, around the float64 toy."""
  model = _Toy()
  model(tf.zeros([1, 4], tf.float64))
  optimizer = optimizers.TorchSGD(learning_rate, momentum=0.9)
  optimizer.build(model.weight_variables)
  rng = np.random.default_rng(5)
  for buffer in optimizer.momentums:  # a real buffer, as after some weight steps
    buffer.assign(rng.normal(size=buffer.shape))
  return types.SimpleNamespace(
      model=model, arch_variables=model.arch_variables,
      weight_variables=model.weight_variables, weight_optimizer=optimizer,
      config=types.SimpleNamespace(batch_size=8, weight_decay=weight_decay),
      method=presets.METHODS["darts"], num_replicas=1, arch_loss_scale=None,
      loss_fn=tf.nn.sparse_softmax_cross_entropy_with_logits)


def _toy_batches():
  rng = np.random.default_rng(6)
  return [(tf.constant(rng.normal(size=(8, 4))), tf.constant(rng.integers(0, 3, 8)))
          for _ in range(2)]


def _exact_unrolled_gradient(s, val, train):
  """d/d alpha of L_val(w - xi (m buf + grad_w L_train(w, alpha) + wd w), alpha), by nested
  tapes: the objective eq. (7) differentiates, with its second derivative exact."""
  xi = float(s.weight_optimizer.learning_rate)
  w = [tf.convert_to_tensor(v) for v in s.weight_variables]
  (alphas,) = [tf.convert_to_tensor(v) for v in s.arch_variables]
  buffers = [tf.convert_to_tensor(b) for b in s.weight_optimizer.momentums]

  def loss_at(weights, batch):  # the toy's trainable variables: w_tanh, w_sin, w_out, alphas
    logits, _ = s.model.stateless_call([*weights, alphas], [], batch[0])
    return tf.reduce_mean(s.loss_fn(batch[1], logits))

  with tf.GradientTape() as outer:
    outer.watch(alphas)
    with tf.GradientTape() as inner:
      inner.watch(w)
      loss = loss_at(w, train)
    grads = inner.gradient(loss, w)
    w_virtual = [p - xi * (0.9 * b + g + s.config.weight_decay * p)
                 for p, b, g in zip(w, buffers, grads)]
    val_loss = loss_at(w_virtual, val)
  return [outer.gradient(val_loss, alphas)]


def test_the_finite_difference_is_the_exact_second_order_gradient():
  # In float64 the central difference's error is its truncation, about (R ||v||)^2 = 1e-4
  # of the Hessian term's third-order part, and rounding 1e-16 / R: well under rtol 1e-6 here
  # (measured: about 1e-9). The known bugs miss it by far more: perturbing w' instead of w
  # (xi = 0.5 moves w by half its gradient), no momentum buffer in the virtual step, or
  # `/ 2. * R` for `/ (2. * R)` (a factor 4 R^2).
  s = _toy_searcher()
  val, train = _toy_batches()
  (got,), _ = architect.second_order(s, *val, None, *train, None)
  (exact,) = _exact_unrolled_gradient(s, val, train)
  first = architect.first_order(s, *val)[0][0]
  assert np.max(np.abs(exact - first)) > 1e-2  # the second-order term matters here
  np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-9)


def test_with_xi_zero_the_second_order_step_is_the_first_order_step():
  s = _toy_searcher(learning_rate=0.0)
  val, train = _toy_batches()
  (got,), _ = architect.second_order(s, *val, None, *train, None)
  np.testing.assert_allclose(got, architect.first_order(s, *val)[0][0], rtol=1e-12)


def _batch(seed, n=16):
  rng = np.random.default_rng(seed)
  return (tf.constant(rng.normal(size=(n, 8, 8, 3)), tf.float32),
          tf.constant(rng.integers(0, 3, n), tf.int64))


def _searcher(method="noisy_darts", **config):
  config = searcher_lib.SearchConfig(epochs=1, batch_size=16, unrolled=True, **config)
  s = searcher_lib.Searcher(SPACE, presets.METHODS[method], config,
                            tf.distribute.OneDeviceStrategy("CPU:0"), (8, 8, 3))
  s.weight_step(*_batch(0))  # a momentum buffer, and statistics away from their start
  return s


@pytest.mark.parametrize("method", ["darts", "fair_darts", "noisy_darts"])
def test_the_step_leaves_weights_and_batch_norm_statistics_as_they_were(method):
  s = _searcher(method)
  before = [v.numpy().copy() for v in s.model.variables]
  grads, (ce, logits, zero_one) = architect.second_order(
      s, *_batch(1), tf.constant([1, 2], tf.int64), *_batch(2), tf.constant([1, 3], tf.int64))
  assert all(np.all(np.isfinite(g)) for g in grads) and logits.shape == (16, 3)
  assert np.isfinite(float(zero_one))
  # Bit for bit: nothing was assigned, no pass updated a running statistic.
  for v, b in zip(s.model.variables, before):
    np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)


def test_the_perturbed_passes_draw_the_weight_steps_noise(monkeypatch):
  # Eq. (8) divides by 2R: draws that differed between w+ and w- would swamp it. (The noise
  # also scales with std(x), which the difference sees and the exact product, through
  # stop_gradient, does not: with noise the two differ by more than rounding.)
  seeds = []
  train_alpha_grads = architect._train_alpha_grads  # pylint: disable=protected-access

  def recording(searcher, weights, alphas, x, y, noise_seed):
    seeds.append(noise_seed)
    return train_alpha_grads(searcher, weights, alphas, x, y, noise_seed)

  monkeypatch.setattr(architect, "_train_alpha_grads", recording)
  s = _searcher("noisy_darts")
  train_seed = tf.constant([1, 3], tf.int64)
  architect.second_order(s, *_batch(1), tf.constant([1, 2], tf.int64), *_batch(2), train_seed)
  assert len(seeds) == 2 and all(seed is train_seed for seed in seeds)


def test_float16_is_refused_and_bfloat16_runs():
  with pytest.raises(UserInputError, match="unrolled .second order. does not run in "
                     "mixed_float16: use float32 or mixed_bfloat16"):
    searcher_lib.SearchConfig(unrolled=True, precision="mixed_float16")
  s = _searcher("darts", precision="mixed_bfloat16")
  dataset = tf.data.Dataset.from_tensors((_batch(3), _batch(4))).repeat()
  out = s.train_step(iter(dataset))
  assert np.isfinite(float(out["val_loss_sum"])) and float(out["arch_updates_skipped"]) == 0


def test_a_searcher_without_unrolled_is_first_order():
  s = searcher_lib.Searcher(SPACE, presets.METHODS["darts"],
                            dataclasses.replace(searcher_lib.SearchConfig(batch_size=16)),
                            tf.distribute.OneDeviceStrategy("CPU:0"), (8, 8, 3))
  assert s.config.unrolled is False
