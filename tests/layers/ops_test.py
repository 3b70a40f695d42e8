"""Tests for tfnas.layers.ops and the search network: the original PyTorch definitions.

The expected values come from the formulas of the original DARTS code
(cnn/operations.py, cnn/model_search.py) and PyTorch's semantics, computed here
independently (numpy), never from the code under test.
"""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfnas.layers import ops
from tfnas.methods import presets
from tfnas.runtime import distribute
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype
from tfnas.spaces.darts_cell import space as cell_space
from tfnas.spaces.darts_cell import supernet

C = 4
ALL_OPS = ops.OP_NAMES  # the DARTS primitives plus sep_conv_7x7


def _rand(shape, seed=0, scale=1.0, loc=0.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale + loc).astype(np.float32)


def _n_params(variables):
  return sum(int(np.prod(v.shape)) for v in variables)


def _built(layer, x, **kwargs):
  """Calls a layer once (building it) and returns the output as numpy."""
  return np.asarray(layer(tf.constant(x), **kwargs))


# ----------------------------------------------------------------------------
# Shapes and parameter counts of the primitives.


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('name', ALL_OPS)
def test_primitive_output_shape(name, stride):
  op = ops.make_op(name, C, stride, affine=False, search=True)
  y = _built(op, _rand([2, 8, 8, C]), training=True)
  assert y.shape == (2, 8 // stride, 8 // stride, C)
  assert np.all(np.isfinite(y))


def _expected_params(name, c, stride, affine):
  """Trainable parameters of the original op (bias-free convs, BN gamma/beta if affine)."""
  bn = 2 * c if affine else 0
  if name in ('none', 'max_pool_3x3', 'avg_pool_3x3'):
    return 0  # the search network's BN after a pool is never affine
  if name == 'skip_connect':
    return 0 if stride == 1 else 2 * (c * (c // 2)) + bn  # FactorizedReduce
  k = int(name[-1])
  if name.startswith('sep_conv'):
    return 2 * (k * k * c + c * c + bn)  # two (depthwise kxk, 1x1, BN) blocks
  if name.startswith('dil_conv'):
    return k * k * c + c * c + bn
  raise AssertionError(name)


@pytest.mark.parametrize('affine', [False, True])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('name', ALL_OPS)
def test_primitive_parameter_count(name, stride, affine):
  op = ops.make_op(name, C, stride, affine=affine, search=True)
  _built(op, _rand([2, 8, 8, C]))
  assert _n_params(op.trainable_weights) == _expected_params(name, C, stride, affine)


def test_parameter_count_formulas_spot_values():
  # The formulas above, spelled out for C=4: guards the helper itself.
  assert _expected_params('sep_conv_3x3', 4, 1, False) == 2 * (36 + 16) == 104
  assert _expected_params('dil_conv_5x5', 4, 2, False) == 100 + 16
  assert _expected_params('skip_connect', 4, 2, False) == 16
  assert _expected_params('sep_conv_3x3', 4, 1, True) == 104 + 16


def test_search_pools_are_followed_by_batch_norm_non_search_pools_are_not():
  x = _rand([2, 8, 8, C], seed=1, scale=3.0, loc=2.0)
  for name in ('max_pool_3x3', 'avg_pool_3x3'):
    y = _built(ops.make_op(name, C, 1, affine=False, search=True), x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, rtol=1e-3)
    plain = _built(ops.make_op(name, C, 1, affine=False, search=False), x, training=True)
    assert plain.mean() > 1.0  # not normalized (the input has mean 2)


def test_zero_op_is_zero_and_subsamples():
  x = _rand([2, 8, 8, C])
  for stride in (1, 2):
    y = _built(ops.make_op('none', C, stride, affine=False), x)
    assert y.shape == (2, 8 // stride, 8 // stride, C)
    assert np.all(y == 0.0)


def test_identity_at_stride_1():
  x = _rand([2, 8, 8, C])
  np.testing.assert_array_equal(_built(ops.make_op('skip_connect', C, 1, affine=False), x), x)


def test_unknown_op_raises_user_input_error():
  with pytest.raises(UserInputError, match='conv_9x9'):
    ops.make_op('conv_9x9', C, 1, affine=False)


def test_factorized_reduce_needs_even_channels():
  with pytest.raises(UserInputError, match='3'):
    ops.FactorizedReduce(3, affine=False)


# ----------------------------------------------------------------------------
# PyTorch-style symmetric padding.


def _torch_conv_reference(x, w, stride, padding, dilation, depthwise):
  """PyTorch's conv2d (cross-correlation), NHWC, bias-free, in plain numpy.

  x: [B, H, W, Cin]; w: [k, k, Cin, Cout] (regular) or [k, k, C, 1] (depthwise).
  """
  xp = np.pad(x, [(0, 0), (padding, padding), (padding, padding), (0, 0)])
  b, h, wd, _ = x.shape
  k = w.shape[0]
  h_out = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
  w_out = (wd + 2 * padding - dilation * (k - 1) - 1) // stride + 1
  c_out = x.shape[-1] if depthwise else w.shape[-1]
  out = np.zeros([b, h_out, w_out, c_out], np.float64)
  for i in range(h_out):
    for j in range(w_out):
      for ki in range(k):
        for kj in range(k):
          pix = xp[:, i * stride + ki * dilation, j * stride + kj * dilation, :]
          if depthwise:
            out[:, i, j, :] += pix * w[ki, kj, :, 0]
          else:
            out[:, i, j, :] += pix @ w[ki, kj]
  return out


def test_stride2_conv_pads_symmetrically_like_pytorch():
  x = _rand([2, 8, 8, C])
  conv = ops.Conv(C, 3, stride=2, padding=1)
  _built(conv, x)
  delta = np.zeros([3, 3, C, C], np.float32)
  delta[1, 1] = np.eye(C)
  conv.kernel.assign(delta)
  y = _built(conv, x)
  np.testing.assert_array_equal(y, x[:, ::2, ::2, :])
  # TF's 'same' padding (extra pad bottom/right) would give the odd pixels instead.
  same = tf.nn.conv2d(x, delta, 2, 'SAME').numpy()
  np.testing.assert_array_equal(same, x[:, 1::2, 1::2, :])
  assert not np.allclose(y, same)


@pytest.mark.parametrize('kernel_size,padding', [(3, 2), (5, 4)])
def test_stride2_dilated_depthwise_conv_delta_kernel(kernel_size, padding):
  x = _rand([2, 8, 8, C])
  conv = ops.Conv(C, kernel_size, stride=2, padding=padding, dilation=2, depthwise=True)
  _built(conv, x)
  delta = np.zeros([kernel_size, kernel_size, C, 1], np.float32)
  delta[kernel_size // 2, kernel_size // 2] = 1.0
  conv.kernel.assign(delta)
  np.testing.assert_array_equal(_built(conv, x), x[:, ::2, ::2, :])


@pytest.mark.parametrize('size', [8, 7])
@pytest.mark.parametrize('kernel_size,padding', [(3, 2), (5, 4)])
def test_dilated_depthwise_conv_matches_pytorch_reference(kernel_size, padding, size):
  x = _rand([2, size, size, C], seed=3)
  for stride in (1, 2):
    conv = ops.Conv(C, kernel_size, stride=stride, padding=padding, dilation=2,
                    depthwise=True)
    _built(conv, x)
    w = _rand([kernel_size, kernel_size, C, 1], seed=4)
    conv.kernel.assign(w)
    want = _torch_conv_reference(x, w, stride, padding, 2, depthwise=True)
    got = _built(conv, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('stride', [1, 2])
def test_regular_conv_matches_pytorch_reference(stride):
  x = _rand([2, 8, 8, C], seed=5)
  conv = ops.Conv(6, 3, stride=stride, padding=1)
  _built(conv, x)
  w = _rand([3, 3, C, 6], seed=6)
  conv.kernel.assign(w)
  want = _torch_conv_reference(x, w, stride, 1, 1, depthwise=False)
  np.testing.assert_allclose(_built(conv, x), want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------
# Pools.


@pytest.mark.parametrize('stride', [1, 2])
def test_avg_pool_does_not_count_padding(stride):
  pool = ops.make_op('avg_pool_3x3', C, stride, affine=False, search=False)
  y = _built(pool, np.ones([2, 8, 8, C], np.float32))
  assert y.shape == (2, 8 // stride, 8 // stride, C)
  np.testing.assert_array_equal(y, 1.0)  # count_include_pad=True gives 4/9 at corners


@pytest.mark.parametrize('stride', [1, 2])
def test_avg_pool_corner_and_edge_are_means_of_in_image_pixels(stride):
  x = _rand([2, 8, 8, C], seed=7)
  y = _built(ops.make_op('avg_pool_3x3', C, stride, affine=False, search=False), x)
  # Top-left corner: the 2x2 in-image neighbours (for stride 1 and 2).
  np.testing.assert_allclose(y[:, 0, 0, :], x[:, 0:2, 0:2, :].mean(axis=(1, 2)), rtol=1e-5,
                             atol=1e-6)
  # A top-edge output: a 2x3 in-image window centred on column 2.
  np.testing.assert_allclose(y[:, 0, 2 // stride, :], x[:, 0:2, 1:4, :].mean(axis=(1, 2)),
                             rtol=1e-5, atol=1e-6)
  # An interior output: the full 3x3 window centred on (2, 2).
  np.testing.assert_allclose(y[:, 2 // stride, 2 // stride, :],
                             x[:, 1:4, 1:4, :].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('stride', [1, 2])
def test_max_pool_pads_with_minus_infinity(stride):
  x = -1.0 - np.abs(_rand([2, 8, 8, C], seed=8))
  y = _built(ops.make_op('max_pool_3x3', C, stride, affine=False, search=False), x)
  assert np.all(y < 0.0)
  np.testing.assert_array_equal(y[:, 0, 0, :], x[:, 0:2, 0:2, :].max(axis=(1, 2)))
  np.testing.assert_array_equal(y[:, 2 // stride, 2 // stride, :],
                                x[:, 1:4, 1:4, :].max(axis=(1, 2)))


# ----------------------------------------------------------------------------
# FactorizedReduce.


def test_factorized_reduce_shifts_the_second_path_by_one_pixel():
  x = _rand([2, 8, 8, C], seed=9)
  fr = ops.FactorizedReduce(C, affine=False)
  _built(fr, x, training=False)
  half = C // 2
  k1 = np.zeros([1, 1, C, half], np.float32)
  k2 = np.zeros([1, 1, C, half], np.float32)
  for i in range(half):
    k1[0, 0, i, i] = 1.0          # conv1 picks channels 0..C/2-1
    k2[0, 0, half + i, i] = 1.0   # conv2 picks channels C/2..C-1
  fr.conv1.kernel.assign(k1)
  fr.conv2.kernel.assign(k2)
  y = _built(fr, x, training=False)
  r = np.maximum(x, 0.0)
  bn = 1.0 / math.sqrt(1.0 + 1e-5)  # inference BN with moving mean 0, variance 1
  assert y.shape == (2, 4, 4, C)
  np.testing.assert_allclose(y[..., :half], r[:, ::2, ::2, :half] * bn, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(y[..., half:], r[:, 1::2, 1::2, half:] * bn, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------
# BatchNorm.


def test_batch_norm_training_step_updates_like_pytorch():
  x = _rand([4, 3, 3, C], seed=10, scale=2.0, loc=np.arange(C, dtype=np.float32))
  bn = ops.BatchNorm(affine=False)
  y = _built(bn, x, training=True)
  xd = x.astype(np.float64)
  mean = xd.mean(axis=(0, 1, 2))
  biased = xd.var(axis=(0, 1, 2))
  unbiased = xd.var(axis=(0, 1, 2), ddof=1)
  np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(bn.moving_variance), 0.9 + 0.1 * unbiased, rtol=1e-5)
  np.testing.assert_allclose(y, (xd - mean) / np.sqrt(biased + 1e-5), rtol=1e-4, atol=1e-5)
  assert not bn.trainable_weights  # affine=False: no gamma/beta


def test_batch_norm_epsilon_is_pytorchs():
  # Variance 1e-4: eps 1e-5 gives std sqrt(1e-4 / 1.1e-4) ~ 0.95; Keras' 1e-3 would give ~0.30.
  x = _rand([8, 4, 4, C], seed=11, scale=1e-2)
  y = _built(ops.BatchNorm(affine=False), x, training=True)
  var = x.astype(np.float64).var(axis=(0, 1, 2))
  np.testing.assert_allclose(y.std(axis=(0, 1, 2)), np.sqrt(var / (var + 1e-5)), rtol=1e-3)


def test_batch_norm_inference_uses_moving_statistics_and_affine_parameters():
  x = _rand([4, 3, 3, C], seed=12, scale=2.0, loc=1.0)
  bn = ops.BatchNorm(affine=True)
  _built(bn, x, training=True)
  assert _n_params(bn.trainable_weights) == 2 * C
  bn.gamma.assign(np.full([C], 2.0, np.float32))
  bn.beta.assign(np.full([C], -1.0, np.float32))
  mm, mv = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
  y = _built(bn, x, training=False)
  np.testing.assert_allclose(y, (x - mm) / np.sqrt(mv + 1e-5) * 2.0 - 1.0, rtol=1e-5, atol=1e-5)
  # Inference does not touch the running statistics.
  np.testing.assert_array_equal(np.asarray(bn.moving_mean), mm)


@pytest.mark.parametrize('affine', [False, True])
def test_batch_norm_extra_scale_multiplies_the_output(affine):
  x = _rand([4, 3, 3, C], seed=13, loc=1.0)
  scale = tf.constant(_rand([C], seed=14))
  plain, scaled = ops.BatchNorm(affine=affine), ops.BatchNorm(affine=affine)
  _built(plain, x, training=True)
  _built(scaled, x, training=True)
  if affine:
    for bn in (plain, scaled):
      bn.gamma.assign(_rand([C], seed=15))
      bn.beta.assign(_rand([C], seed=16))
  for training in (True, False):
    with tf.GradientTape() as tape:
      tape.watch(scale)
      y = scaled(tf.constant(x), training=training, scale=scale)
    want = plain(tf.constant(x), training=training) * scale
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    # d sum(y) / d scale = sum over pixels of the unscaled output.
    np.testing.assert_allclose(tape.gradient(y, scale),
                               np.sum(want / scale, axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)


def _run_on_shares(strategy, step, x, w):
  """step(x, w) on each replica with its share of the examples; each output's values, one
  per replica in order."""
  share = len(x) // strategy.num_replicas_in_sync
  inputs = strategy.experimental_distribute_values_from_function(
      lambda ctx: (x[ctx.replica_id_in_sync_group * share:][:share],
                   w[ctx.replica_id_in_sync_group * share:][:share]))
  out = tf.function(lambda xw: strategy.run(step, args=xw))(inputs)
  return [[t.numpy() for t in strategy.experimental_local_results(o)] for o in out]


def _batch_norm_step(strategy, synchronized, x, w, scale):
  """y and the gradients of sum(w * y^2) (for x, gamma, beta and the extra scale if one is
  given), and the running statistics, of an affine BN in training on x (split over the
  strategy's replicas)."""
  with strategy.scope():
    bn = ops.BatchNorm(affine=True, synchronized=synchronized)
    bn(tf.zeros([1, *x.shape[1:]]))
    bn.gamma.assign(np.linspace(0.5, 2.0, C, dtype=np.float32))
    bn.beta.assign(np.linspace(-1.0, 1.0, C, dtype=np.float32))

  def step(x, w):
    extra = [] if scale is None else [tf.constant(scale)]
    with tf.GradientTape() as tape:
      tape.watch([x, *extra])
      y = bn(x, training=True, scale=extra[0] if extra else None)
      loss = tf.reduce_sum(w * y * y)
    return (y, *tape.gradient(loss, [x, bn.gamma, bn.beta, *extra]))

  local = _run_on_shares(strategy, step, x, w)
  # Per example (y, dx): the replicas' shares in order; per channel: summed over them.
  got = [np.concatenate(o) for o in local[:2]] + [sum(o) for o in local[2:]]
  stats = [strategy.experimental_local_results(v.value)[0].numpy()
           for v in (bn.moving_mean, bn.moving_variance)]
  return got, stats


@pytest.mark.parametrize("scale", [None, _rand([C], seed=19)], ids=["gamma", "edge_scale"])
def test_synchronized_batch_norm_on_two_replicas_equals_one_replica_on_the_batch(scale):
  # The statistics and their gradient cover the global batch: the outputs, the gradients
  # of x, gamma, beta and the folded-in scale, and the running statistics.
  x = _rand([8, 3, 3, C], seed=17, scale=3.0, loc=2.0)
  w = _rand([8, 3, 3, C], seed=18)
  one = _batch_norm_step(tf.distribute.OneDeviceStrategy("CPU:0"), False, x, w, scale)
  two = _batch_norm_step(distribute.get_strategy("cpu"), True, x, w, scale)
  assert len(one[0]) == len(two[0]) == (4 if scale is None else 5)
  for name, a, b in zip(["y", "dx", "dgamma", "dbeta", "dscale"], one[0], two[0]):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=name)
  for a, b in zip(one[1], two[1]):
    np.testing.assert_allclose(b, a, rtol=1e-6)


def _side_by_side_step(strategy, synchronized, x, w):
  """The outputs of three ops run side by side (ops.call_side_by_side) in training on x
  (split over the strategy's replicas), the gradients of sum(w * y^2) over them for x and
  a kernel, and every batch norm's running statistics. Their batch norms: a separable
  conv's two, a pool's and a dilated conv's with other channels."""
  with strategy.scope():
    layers = [ops.SepConv(C, 3, 1, 1, affine=False, synchronized=synchronized),
              ops.Pool("avg", 1, ops.BatchNorm(False, synchronized)),
              ops.DilConv(6, 3, 1, 2, 2, affine=False, synchronized=synchronized)]
    for layer in layers:
      layer(tf.zeros([1, *x.shape[1:]]))
    for i, kernel in enumerate(v for layer in layers for v in layer.trainable_weights):
      kernel.assign(_rand(kernel.shape, seed=40 + i))  # the same network on both
  kernel = layers[0].block1.depthwise.kernel

  def step(x, w):
    with tf.GradientTape() as tape:
      tape.watch(x)
      ys = ops.call_side_by_side([(layer, x, {}) for layer in layers], True, synchronized)
      loss = sum(tf.reduce_sum(w[..., :y.shape[-1]] * y * y) for y in ys)
    return (*ys, *tape.gradient(loss, [x, kernel]))

  local = _run_on_shares(strategy, step, x, w)
  got = [np.concatenate(o) for o in local[:4]] + [sum(local[4])]  # per example; summed
  bns = [sub for layer in layers for sub in layer._flatten_layers()  # pylint: disable=protected-access
         if isinstance(sub, ops.BatchNorm)]
  stats = [strategy.experimental_local_results(v.value)[0].numpy()
           for bn in bns for v in (bn.moving_mean, bn.moving_variance)]
  return got, stats


def test_batch_norms_side_by_side_on_two_replicas_equal_one_replica_on_the_batch():
  # Normalized together (one sum over the replicas per depth for all of them), the ops
  # give what each gives alone on the whole batch.
  x = _rand([8, 4, 4, C], seed=31, scale=2.0, loc=1.0)
  w = _rand([8, 4, 4, 6], seed=32)
  one = _side_by_side_step(tf.distribute.OneDeviceStrategy("CPU:0"), False, x, w)
  two = _side_by_side_step(distribute.get_strategy("cpu"), True, x, w)
  assert len(one[1]) == len(two[1]) == 8  # four batch norms
  for name, a, b in zip(["sep_conv", "pool", "dil_conv", "dx", "dkernel"], one[0], two[0]):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=name)
  for a, b in zip(one[1], two[1]):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Recomputing the separable blocks in the backward pass.


def test_recomputed_gradients_equal_the_direct_ones():
  x = tf.constant(_rand([2, 6, 6, C], seed=20))
  k1 = tf.Variable(_rand([3, 3, C, 1], seed=21))
  k2 = tf.Variable(_rand([1, 1, C, 5], seed=22))

  def f(x, a, b):
    return tf.nn.conv2d(tf.nn.relu(tf.nn.depthwise_conv2d(x, a, [1] * 4, 'SAME')), b, 1, 'SAME')

  @tf.function
  def grads(recompute):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = ops.recomputed(f, x, k1, k2) if recompute else f(x, k1, k2)
      loss = tf.reduce_sum(tf.sin(y))
    return [y] + tape.gradient(loss, [x, k1, k2])

  for got, want in zip(grads(True), grads(False)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel_size', [3, 5, 7])
@pytest.mark.parametrize('stride,padding', [(1, 'SAME'), (2, 'VALID'), (1, 'VALID')])
def test_depthwise_conv_gradients_equal_tensorflows(kernel_size, stride, padding):
  x = tf.constant(_rand([2, 9, 9, C], seed=24))
  kernel = tf.constant(_rand([kernel_size, kernel_size, C, 1], seed=25))
  dy_seed = _rand([2, 9, 9, C], seed=26)

  def grads(conv):
    with tf.GradientTape() as tape:
      tape.watch([x, kernel])
      y = conv(x, kernel)
      loss = tf.reduce_sum(y * dy_seed[:, :y.shape[1], :y.shape[2]])
    return [y] + tape.gradient(loss, [x, kernel])

  want = grads(lambda x, k: tf.nn.depthwise_conv2d(x, k, [1, stride, stride, 1], padding))
  got = grads(lambda x, k: ops._depthwise_conv(x, k, stride, padding))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('stride', [1, 2])
def test_grouped_conv_split_per_group_equals_tensorflows(stride):
  # The path taken where TensorFlow cannot differentiate grouped convs (no oneDNN, no GPU).
  x = tf.constant(_rand([2, 6, 6, 3 * C], seed=27))
  kernel = tf.constant(_rand([1, 1, C, 3 * 5], seed=28))

  def grads(conv):
    with tf.GradientTape() as tape:
      tape.watch([x, kernel])
      y = conv(x, kernel)
      loss = tf.reduce_sum(tf.sin(y))
    return [y] + tape.gradient(loss, [x, kernel])

  want = grads(lambda x, k: tf.nn.conv2d(x, k, stride, 'VALID'))  # oneDNN's grouped conv
  got = grads(lambda x, k: ops._split_grouped_conv(x, k, stride, 'VALID', 3))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_sep_conv_backward_recomputes_instead_of_keeping_the_depthwise_output():
  op = ops.make_op('sep_conv_3x3', C, 1, affine=False)
  x = tf.constant(_rand([2, 6, 6, C], seed=23))
  op(x, training=True)

  forward_ops = set()

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      y = op(x, training=True)
    forward_ops.update(o.name for o in tf.compat.v1.get_default_graph().get_operations())
    return tape.gradient(y, op.trainable_weights)

  graph = step.get_concrete_function(x).graph
  depthwise = [o for o in graph.get_operations() if o.type == 'DepthwiseConv2dNative']
  forward = [o for o in depthwise if o.name in forward_ops]
  assert len(forward) == 2 and len(depthwise) == 4  # each block's conv, run again for its grads
  for o in forward:  # the forward output feeds only the next conv, no gradient op
    assert [c.type for c in o.outputs[0].consumers()] == ['Conv2D']

  def backward_ops_before(o):  # the gradient computations that o waits for
    found, seen, todo = [], set(), [o]
    while todo:
      for a in [t.op for t in todo[-1].inputs] + list(todo.pop().control_inputs):
        if a.name not in seen:
          seen.add(a.name)
          todo.append(a)
          if a.name not in forward_ops and a.type != 'Identity':
            found.append(a)
    return found

  for o in depthwise:
    if o not in forward:  # recomputed only once the backward pass reaches the block
      assert backward_ops_before(o)


# ----------------------------------------------------------------------------
# Initialization.


def test_conv_init_is_pytorch_uniform():
  conv = ops.Conv(8, 3)
  _built(conv, _rand([1, 8, 8, 16]))
  k = np.abs(np.asarray(conv.kernel))
  bound = 1.0 / math.sqrt(3 * 3 * 16)
  assert k.max() <= bound
  assert k.max() > 0.95 * bound  # 1152 uniform draws: the max is near the bound
  assert k.mean() == pytest.approx(bound / 2, rel=0.1)


@pytest.mark.parametrize('kernel_size', [3, 5])
def test_depthwise_conv_init_fan_in_is_kernel_area(kernel_size):
  conv = ops.Conv(16, kernel_size, padding=kernel_size // 2, depthwise=True)
  _built(conv, _rand([1, 8, 8, 16]))
  k = np.abs(np.asarray(conv.kernel))
  bound = 1.0 / kernel_size  # 1/sqrt(k*k); fan_in k*k*C would give 1/(4k)
  assert k.max() <= bound
  assert k.max() > 0.9 * bound


# ----------------------------------------------------------------------------
# The search network.


@pytest.fixture(scope='module', name='darts_net')
def _darts_net():
  space = cell_space.SearchSpace(primitives=genotype.PRIMITIVES, layers=8, init_channels=16,
                                   num_classes=10)
  net = supernet.SearchNetwork(space, presets.METHODS['darts'])
  logits = net(tf.constant(_rand([1, 8, 8, 3], seed=13)))
  return net, logits


def test_darts_search_network_parameter_count(darts_net):
  net, logits = darts_net
  assert tuple(logits.shape) == (1, 10)
  assert _n_params(net.weight_variables) == 1_930_618  # the original's 1.93M


def test_arch_variables_are_trainable_and_separate_from_weights(darts_net):
  net, _ = darts_net
  arch = net.arch_variables
  assert len(arch) == 2
  assert [tuple(a.shape) for a in arch] == [(14, 8), (14, 8)]
  assert arch[0] is not arch[1]
  trainable = {id(v) for v in net.trainable_weights}
  weights = {id(v) for v in net.weight_variables}
  for a in arch:
    assert id(a) in trainable
    assert id(a) not in weights
  assert len(net.weight_variables) == len(net.trainable_weights) - 2
  assert weights | {id(a) for a in arch} == trainable


def test_darts_search_network_reduction_cells(darts_net):
  net, _ = darts_net
  assert net.space.reduction_cells == [2, 5]
  assert [c.reduction for c in net.cells] == [i in (2, 5) for i in range(8)]


def test_darts_alpha_init_is_small_gaussian(darts_net):
  net, _ = darts_net
  values = np.concatenate([np.asarray(a).ravel() for a in net.arch_variables])
  assert values.size == 224
  assert np.all(values != 0.0)
  assert 0.5e-3 < values.std() < 2e-3


def test_darts_alphas_normal_and_reduce_are_independent_draws(darts_net):
  # The original draws each with its own 1e-3 * torch.randn(14, 8).
  net, _ = darts_net
  normal, reduce = np.asarray(net.alphas_normal), np.asarray(net.alphas_reduce)
  assert not np.allclose(normal, reduce, rtol=0, atol=1e-6)
  assert abs(np.corrcoef(normal.ravel(), reduce.ravel())[0, 1]) < 0.5


def test_classifier_init_is_pytorch_linear(darts_net):
  net, _ = darts_net
  kernel = np.asarray(net.classifier.kernel)
  bias = np.asarray(net.classifier.bias)
  assert kernel.shape == (256, 10)
  bound = 1.0 / math.sqrt(256)  # nn.Linear: kernel and bias ~ U(-1/sqrt(fan_in), ...)
  assert np.abs(kernel).max() <= bound
  assert np.abs(kernel).max() > 0.95 * bound
  assert np.abs(bias).max() <= bound


def test_classifier_kernel_and_bias_are_independent_draws(darts_net):
  net, _ = darts_net
  kernel = np.asarray(net.classifier.kernel)
  bias = np.asarray(net.classifier.bias)
  # Independent draws (PyTorch initializes them separately), not the same random stream.
  assert not np.allclose(bias, kernel.ravel()[:10])
  assert not np.allclose(bias, kernel[0])


def test_fair_darts_alpha_init_is_zero():
  space = cell_space.SearchSpace(primitives=genotype.FAIR_PRIMITIVES, steps=2, layers=3,
                                   init_channels=C)
  net = supernet.SearchNetwork(space, presets.METHODS['fair_darts'])
  for a in net.arch_variables:
    assert tuple(a.shape) == (5, 7)
    np.testing.assert_array_equal(np.asarray(a), 0.0)
  # sigmoid relaxation: every op starts at weight 0.5
  for w in net.arch_weights():
    np.testing.assert_array_equal(np.asarray(w), 0.5)


@pytest.fixture(scope='module', name='small_net')
def _small_net():
  space = cell_space.SearchSpace(primitives=('skip_connect', 'sep_conv_3x3'), steps=2,
                                   layers=3, init_channels=C, num_classes=5)
  return supernet.SearchNetwork(space, presets.METHODS['darts'])


def test_reduced_space_forward_training(small_net):
  logits = small_net(tf.constant(_rand([2, 8, 8, 3], seed=14)), training=True)
  assert tuple(logits.shape) == (2, 5)
  assert np.all(np.isfinite(np.asarray(logits)))
  assert [tuple(a.shape) for a in small_net.arch_variables] == [(5, 2), (5, 2)]


def test_reduced_space_reduction_cells(small_net):
  space = small_net.space
  assert space.reduction_cells == [3 // 3, 2 * 3 // 3] == [1, 2]
  assert [c.reduction for c in small_net.cells] == [False, True, True]


@pytest.mark.parametrize('layers', [1, 2, 5, 8, 20])
def test_reduction_cells_at_one_and_two_thirds(layers):
  space = cell_space.SearchSpace(layers=layers)
  assert space.reduction_cells == sorted({layers // 3, 2 * layers // 3})


def test_search_space_rejects_unknown_op():
  with pytest.raises(UserInputError, match='conv_9x9'):
    cell_space.SearchSpace(primitives=('skip_connect', 'conv_9x9'))


def test_search_space_rejects_only_none():
  with pytest.raises(UserInputError, match='none'):
    cell_space.SearchSpace(primitives=('none',))


def test_search_space_rejects_duplicates():
  with pytest.raises(UserInputError, match='sep_conv_3x3'):
    cell_space.SearchSpace(primitives=('sep_conv_3x3', 'skip_connect', 'sep_conv_3x3'))


def test_check_image_size():
  space = cell_space.SearchSpace(layers=8)  # two reductions: multiples of 4
  space.check_image_size(8, 8)
  space.check_image_size(32, 12)
  for h, w in [(6, 8), (8, 10), (7, 7)]:
    with pytest.raises(UserInputError, match=f'{h}x{w}'):
      space.check_image_size(h, w)
  one = cell_space.SearchSpace(layers=2)  # reductions at 0 and 1: still two
  with pytest.raises(UserInputError, match='4'):
    one.check_image_size(6, 6)
  single = cell_space.SearchSpace(layers=1)  # one reduction (cell 0): multiples of 2
  single.check_image_size(6, 6)
  with pytest.raises(UserInputError):
    single.check_image_size(5, 6)
