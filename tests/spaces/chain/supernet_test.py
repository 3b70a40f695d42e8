"""The chain's supernet: its candidates, its mixed layers and its alphas."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfnas.layers import mbconv
from tfnas.methods import parts
from tfnas.methods import presets
from tfnas.runtime import distribute
from tfnas.spaces.chain import space as chain_space
from tfnas.spaces.chain import supernet

TINY = dict(layout=((8, 1), (12, 2), (12, 1)), kernels=(3, 5), expansions=(3, 6),
            stem_channels=8, first_channels=8, head_channels=16, num_classes=5)
SPACE = chain_space.SearchSpace(**TINY)
SEED = tf.constant([3, 4], tf.int64)


def _built(space, method_name="darts", **changes):
  model = space.build_supernet(dataclasses.replace(presets.METHODS[method_name], **changes))
  model(tf.zeros([2, 16, 16, 3]))
  return model


def _block_params(c_in, c_out, k, e, se_ratio=0.0):
  """Conv kernels (and the SE's biases) of one candidate: its BNs are affine-free."""
  mid = c_in * e
  se = 0
  if se_ratio:
    r = mbconv.se_channels(c_in, se_ratio)
    se = mid * r + r + r * mid + mid
  return c_in * mid + k * k * mid + se + mid * c_out


@pytest.mark.parametrize("se_ratio", [0.0, 0.25])
def test_every_layer_holds_every_candidate_with_its_own_weights(se_ratio):
  space = dataclasses.replace(SPACE, se_ratio=se_ratio)
  model = _built(space)
  c_in = 8
  for layer, (c_out, stride) in zip(model.mixed, space.layers):
    assert [b.name for b in layer.blocks] == ["k3_e3", "k3_e6", "k5_e3", "k5_e6"]
    x = tf.random.normal([2, 6, 6, c_in])
    for block, (k, e) in zip(layer.blocks, space.candidates):
      assert block(x).shape == (2, 6 // stride, 6 // stride, c_out)
      assert sum(int(np.prod(v.shape)) for v in block.trainable_variables) == _block_params(
          c_in, c_out, k, e, se_ratio)
    c_in = c_out
  # Outside the layers: the stem, the separable block and the head keep affine batch norms.
  fixed = (3 * 3 * 3 * 8 + 16) + (3 * 3 * 8 + 16) + (8 * 8 + 16) + (12 * 16 + 32) + (16 * 5 + 5)
  searched = sum(_block_params(c, c_out, k, e, se_ratio)
                 for c, (c_out, _) in zip((8, 8, 12), space.layers) for k, e in space.candidates)
  assert sum(int(np.prod(v.shape)) for v in model.weight_variables) == fixed + searched


def _reference(layer, x, w, noise=None, seed=None):
  """The mixed layer written out: sum_k w_k (block_k(x) + x where the shapes agree) + w_skip x."""
  out = sum(w[k] * (block(x, training=True) + (x if layer.residual else 0))
            for k, block in enumerate(layer.blocks))
  if layer.skip:
    y = x if noise is None else parts.add_noise(x, noise, distribute.replica_seed(seed))
    out += w[-1] * y
  return out


@pytest.mark.parametrize("index", [0, 1])
def test_the_mixed_layer_is_the_weighted_sum_of_its_candidates(index):
  model = _built(SPACE, "noisy_darts")
  layer = model.mixed[index]
  assert layer.residual == layer.skip == (index == 0)
  x = tf.random.normal([4, 6, 6, 8])
  w = tf.constant([0.1, 0.2, 0.3, 0.15, 0.25][:4 + layer.skip])
  y = layer(x, w, training=True, noise_seed=SEED)
  np.testing.assert_allclose(y, _reference(layer, x, w, model.method.noise, SEED), rtol=1e-5,
                             atol=1e-5)
  # The noise is on the identity alone: without it, the difference is w_skip x the noise.
  quiet = supernet.MixedLayer(8, 8, 1, SPACE.candidates, True, "relu6")
  quiet.blocks = layer.blocks
  if layer.skip:
    noise = parts.add_noise(x, model.method.noise, distribute.replica_seed(SEED)) - x
    np.testing.assert_allclose(y - quiet(x, w, training=True), w[-1] * noise, rtol=1e-4,
                               atol=1e-5)


def test_softmax_runs_over_each_layers_blocks_and_identity():
  model = _built(SPACE)
  model.alphas_blocks.assign(tf.reshape(tf.range(12.0), [3, 4]) / 10)
  model.alphas_skip.assign([1.0, -1.0])
  blocks, skips = (w.numpy() for w in model.arch_weights())
  logits = np.array([[0.0, 0.1, 0.2, 0.3, 1.0], [0.4, 0.5, 0.6, 0.7, -np.inf],
                     [0.8, 0.9, 1.0, 1.1, -1.0]])
  expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  np.testing.assert_allclose(blocks, expected[:, :4], rtol=1e-6)
  np.testing.assert_allclose(skips, expected[[0, 2], 4], rtol=1e-6)
  np.testing.assert_allclose(model.layer_weights(), np.nan_to_num(expected), rtol=1e-6)
  # The alphas' gradient is finite (the missing identity's -inf takes no part).
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model.layer_weights() * tf.range(15.0, dtype=tf.float32)[None, :5])
  grads = tape.gradient(loss, model.arch_variables)
  assert all(np.all(np.isfinite(g)) for g in grads)


def test_sigmoid_weights_are_independent_and_only_real_alphas_exist():
  model = _built(SPACE, "fair_darts")
  assert [tuple(v.shape) for v in model.arch_variables] == [(3, 4), (2,)]
  model.alphas_skip.assign([2.0, -3.0])
  blocks, skips = (w.numpy() for w in model.arch_weights())
  np.testing.assert_allclose(blocks, 0.5)
  np.testing.assert_allclose(skips, 1 / (1 + np.exp([-2.0, 3.0])), rtol=1e-6)
  np.testing.assert_allclose(model.layer_weights()[:, 4], [skips[0], 0.0, skips[1]], rtol=1e-6)
  # The zero-one loss averages over the 14 alphas that take part.
  w = np.concatenate([blocks.ravel(), skips])
  assert float(parts.zero_one_loss(model.arch_variables)) == pytest.approx(
      -np.mean((w - 0.5) ** 2), rel=1e-6)
  # Without the identity there is one variable.
  no_skip = _built(chain_space.SearchSpace(**TINY, skip=False), "fair_darts")
  assert [tuple(v.shape) for v in no_skip.arch_variables] == [(3, 4)]
  assert no_skip.layer_weights().shape == (3, 4)
  # Arch and weight variables split every trainable variable.
  assert len(model.arch_variables) + len(model.weight_variables) == len(
      model.trainable_variables)


def test_noise_and_skip_drop_path_only_in_training():
  model = _built(SPACE, "noisy_darts", skip_drop_prob=0.5)
  x = tf.random.normal([8, 16, 16, 3])
  a = model(x, training=True, noise_seed=SEED)
  b = model(x, training=True, noise_seed=SEED)
  c = model(x, training=True, noise_seed=SEED + 1)
  np.testing.assert_allclose(a, b)  # the draws follow the seed
  assert np.max(np.abs(a - c)) > 1e-4
  np.testing.assert_allclose(model(x), model(x))
