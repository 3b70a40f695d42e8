"""Tests for tfnas.methods (presets and parts): the zero-one loss, the skip_connect noise, the presets.

Expected values follow the original FairDARTS / NoisyDARTS code (computed here
with numpy from their formulas).
"""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfnas.methods import parts
from tfnas.methods import presets
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import supernet

C = 4


def _rand(shape, seed=0, scale=1.0, loc=0.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale + loc).astype(np.float32)


def _sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a.astype(np.float64)))


def _loss_and_grads(alphas, form='l2'):
  variables = [tf.Variable(a) for a in alphas]
  with tf.GradientTape() as tape:
    loss = parts.zero_one_loss(variables, form=form)
  grads = tape.gradient(loss, variables)
  return float(loss), [np.asarray(g) for g in grads]


def _seed(a, b):
  return tf.constant([a, b], tf.int64)


# ----------------------------------------------------------------------------
# Zero-one loss.


def test_zero_one_loss_and_gradient_are_exactly_zero_at_zero():
  loss, grads = _loss_and_grads([np.zeros([14, 7], np.float32)] * 2)
  assert loss == 0.0
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)


def test_zero_one_loss_is_mean_over_both_cell_types_together():
  alphas = [_rand([14, 7], seed=1, scale=2.0), _rand([14, 7], seed=2, scale=2.0)]
  loss, grads = _loss_and_grads(alphas)
  s = _sigmoid(np.concatenate([a.ravel() for a in alphas]))
  n = s.size
  assert n == 2 * 14 * 7
  assert loss == pytest.approx(-np.mean((s - 0.5) ** 2), rel=1e-5)
  want = -(2.0 / n) * (s - 0.5) * s * (1.0 - s)
  np.testing.assert_allclose(np.concatenate([g.ravel() for g in grads]), want, rtol=1e-4,
                             atol=1e-9)


def test_zero_one_loss_weights_every_alpha_equally_with_unequal_sizes():
  # A mean of per-tensor means would weigh the small tensor's values more.
  alphas = [_rand([14, 7], seed=3, scale=0.1), _rand([2, 7], seed=4, scale=5.0)]
  loss, _ = _loss_and_grads(alphas)
  s = _sigmoid(np.concatenate([a.ravel() for a in alphas]))
  assert loss == pytest.approx(-np.mean((s - 0.5) ** 2), rel=1e-5)
  per_tensor = np.mean([-np.mean((_sigmoid(a) - 0.5) ** 2) for a in alphas])
  assert loss != pytest.approx(per_tensor, rel=1e-2)


def test_zero_one_loss_range():
  for seed in range(5):
    alphas = [_rand([14, 7], seed=10 + seed, scale=4.0), _rand([14, 7], seed=20 + seed)]
    loss, _ = _loss_and_grads(alphas)
    assert -0.25 <= loss <= 0.0
    assert loss < 0.0
  big = np.where(_rand([14, 7], seed=30) > 0, 30.0, -30.0).astype(np.float32)
  loss, _ = _loss_and_grads([big, -big])
  assert loss == pytest.approx(-0.25, abs=1e-6)
  assert loss >= -0.25


def test_zero_one_loss_l1_form():
  alphas = [_rand([14, 7], seed=5, scale=2.0), _rand([14, 7], seed=6, scale=2.0)]
  loss, grads = _loss_and_grads(alphas, form='l1')
  s = _sigmoid(np.concatenate([a.ravel() for a in alphas]))
  assert loss == pytest.approx(-np.mean(np.abs(s - 0.5)), rel=1e-5)
  want = -(1.0 / s.size) * np.sign(s - 0.5) * s * (1.0 - s)
  np.testing.assert_allclose(np.concatenate([g.ravel() for g in grads]), want, rtol=1e-4,
                             atol=1e-9)
  l2, _ = _loss_and_grads(alphas, form='l2')
  assert loss != pytest.approx(l2)


# ----------------------------------------------------------------------------
# add_noise.


@pytest.fixture(scope='module', name='big_x')
def _big_x():
  return tf.constant(_rand([8, 16, 16, 8], seed=7, scale=3.0, loc=1.0))


def test_gaussian_additive_noise_statistics(big_x):
  cfg = presets.NoiseConfig()
  assert (cfg.type, cfg.mixture, cfg.mean, cfg.factor) == ('gaussian', 'additive', 0.0, 0.2)
  noise = np.asarray(parts.add_noise(big_x, cfg, _seed(1, 2))) - np.asarray(big_x)
  std_x = np.asarray(big_x).std(ddof=1)
  assert abs(noise.mean()) < 0.02 * std_x
  assert noise.std() == pytest.approx(0.2 * std_x, rel=0.03)


def test_gaussian_additive_noise_scale_follows_the_input(big_x):
  cfg = presets.NoiseConfig()
  small = big_x / 30.0
  noise = np.asarray(parts.add_noise(small, cfg, _seed(1, 2))) - np.asarray(small)
  assert noise.std() == pytest.approx(0.2 * np.asarray(small).std(), rel=0.03)


def test_noise_gradient_is_straight_through(big_x):
  cfg = presets.NoiseConfig()
  with tf.GradientTape() as tape:
    tape.watch(big_x)
    y = tf.reduce_sum(parts.add_noise(big_x, cfg, _seed(3, 4)))
  grad = np.asarray(tape.gradient(y, big_x))
  np.testing.assert_array_equal(grad, 1.0)
  # Had the x-dependent scale not been stopped, d sum(noise) / dx would not vanish.
  with tf.GradientTape() as tape:
    tape.watch(big_x)
    mean = tf.reduce_mean(big_x)
    std = tf.sqrt(tf.reduce_sum(tf.square(big_x - mean)) / (tf.cast(tf.size(big_x), tf.float32) - 1))
    unstopped = tf.reduce_sum(big_x + tf.random.stateless_normal(tf.shape(big_x), _seed(3, 4)) * 0.2 * std)
  assert not np.allclose(np.asarray(tape.gradient(unstopped, big_x)), 1.0)


def test_noise_is_reproducible_per_seed(big_x):
  cfg = presets.NoiseConfig()
  a = np.asarray(parts.add_noise(big_x, cfg, _seed(5, 6)))
  b = np.asarray(parts.add_noise(big_x, cfg, _seed(5, 6)))
  c = np.asarray(parts.add_noise(big_x, cfg, _seed(5, 7)))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_uniform_noise_variance_is_the_factor_in_absolute_terms(big_x):
  cfg = presets.NoiseConfig(type='uniform', factor=0.2)
  noise = np.asarray(parts.add_noise(big_x, cfg, _seed(8, 9))) - np.asarray(big_x)
  assert noise.var() == pytest.approx(0.2, rel=0.05)  # not (0.2 * std(x))^2 = 0.36
  bound = math.sqrt(3 * 0.2)
  assert np.abs(noise).max() <= bound + 1e-5
  assert np.abs(noise).max() > 0.98 * bound
  assert abs(noise.mean()) < 0.02


def test_multiplicative_gaussian_noise_with_mean_one(big_x):
  cfg = presets.NoiseConfig(type='gaussian', mixture='multiplicative', mean=1.0, factor=0.2)
  x = np.asarray(big_x)
  x = np.where(np.abs(x) < 0.1, 0.1, x).astype(np.float32)  # keep out/x well conditioned
  ratio = np.asarray(parts.add_noise(tf.constant(x), cfg, _seed(10, 11))) / x
  assert ratio.mean() == pytest.approx(1.0, abs=0.01)
  assert ratio.std() == pytest.approx(0.2, rel=0.03)  # absolute, not scaled by std(x)


def test_noise_scale(big_x):
  cfg = presets.NoiseConfig()
  x = np.asarray(big_x)
  np.testing.assert_array_equal(np.asarray(parts.add_noise(big_x, cfg, _seed(1, 1), 0.0)), x)
  full = np.asarray(parts.add_noise(big_x, cfg, _seed(1, 1))) - x
  half = np.asarray(parts.add_noise(big_x, cfg, _seed(1, 1), 0.5)) - x
  np.testing.assert_allclose(half, 0.5 * full, rtol=1e-3, atol=1e-5)


def test_additive_noise_with_a_mean_is_biased(big_x):
  cfg = presets.NoiseConfig(mean=0.5)
  noise = np.asarray(parts.add_noise(big_x, cfg, _seed(2, 2))) - np.asarray(big_x)
  assert noise.mean() == pytest.approx(0.5, abs=0.02)


def test_noise_config_validation():
  with pytest.raises(UserInputError, match='laplace'):
    presets.NoiseConfig(type='laplace')
  with pytest.raises(UserInputError, match='convolutive'):
    presets.NoiseConfig(mixture='convolutive')
  with pytest.raises(UserInputError, match='factor'):
    presets.NoiseConfig(factor=-0.1)


# ----------------------------------------------------------------------------
# Noise in the network.


class _MixedOp:
  """One edge's mixed op: an EdgeGroup of one edge, called with a weight vector."""

  def __init__(self, primitives, stride):
    self.group = supernet.EdgeGroup(primitives, C, stride, edges=1,
                                        noise=presets.NoiseConfig())
    self.candidates = self.group.candidates

  def __call__(self, x, w, **kwargs):
    return self.group(x, w[None], **kwargs)[..., 0, :]


def _skip_mixed_op(stride=1, primitives=('skip_connect',)):
  return _MixedOp(primitives, stride)


def test_mixed_op_noise_only_in_training():
  x = tf.constant(_rand([2, 8, 8, C], seed=12))
  w = tf.constant([0.7])
  op = _skip_mixed_op()
  inference = np.asarray(op(x, w, training=False, noise_seed=_seed(1, 2)))
  np.testing.assert_array_equal(inference, 0.7 * np.asarray(x))
  training = np.asarray(op(x, w, training=True, noise_seed=_seed(1, 2)))
  assert not np.allclose(training, 0.7 * np.asarray(x), atol=1e-3)
  # Unseeded training draws are fresh each call.
  a = np.asarray(op(x, w, training=True))
  b = np.asarray(op(x, w, training=True))
  assert not np.allclose(a, b)


def test_mixed_op_noise_on_factorized_reduce_skip():
  x = tf.constant(_rand([2, 8, 8, C], seed=13))
  w = tf.constant([0.5])
  op = _skip_mixed_op(stride=2)
  noisy = np.asarray(op(x, w, training=True, noise_seed=_seed(3, 3)))
  plain = 0.5 * np.asarray(op.candidates[0](tf.nn.relu(x), training=True))  # batch statistics
  assert noisy.shape == plain.shape == (2, 4, 4, C)
  assert not np.allclose(noisy, plain, atol=1e-3)


def test_mixed_op_no_noise_on_other_ops():
  x = tf.constant(_rand([2, 8, 8, C], seed=14))
  w = tf.constant([0.0, 0.25, 0.75])
  op = _MixedOp(('none', 'max_pool_3x3', 'avg_pool_3x3'), 1)
  out = np.asarray(op(x, w, training=True, noise_seed=_seed(4, 4)))
  want = (0.25 * np.asarray(op.candidates[0](x, training=True))
          + 0.75 * np.asarray(op.candidates[1](x, training=True)))
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_mixed_op_noise_differs_between_replicas_and_is_reproducible():
  strategy = tf.distribute.MirroredStrategy(['CPU:0', 'CPU:1'])
  assert strategy.num_replicas_in_sync == 2
  x = tf.constant(_rand([2, 8, 8, C], seed=15))
  w = tf.constant([1.0])
  with strategy.scope():
    op = _skip_mixed_op()

  @tf.function
  def step(seed):
    return strategy.run(lambda: op(x, w, training=True, noise_seed=seed))

  first = [np.asarray(r) for r in strategy.experimental_local_results(step(_seed(7, 8)))]
  again = [np.asarray(r) for r in strategy.experimental_local_results(step(_seed(7, 8)))]
  other = [np.asarray(r) for r in strategy.experimental_local_results(step(_seed(7, 9)))]
  assert len(first) == 2
  for r in first:
    assert not np.allclose(r, np.asarray(x), atol=1e-3)  # noise on each replica
  assert not np.allclose(first[0], first[1])
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(first, other):
    assert not np.allclose(a, b)


# ----------------------------------------------------------------------------
# noise_decay.


def test_noise_decay_constant_without_cosine():
  for epoch in (0, 10, 25, 49):
    assert parts.noise_decay(presets.NoiseConfig(), epoch, 50) == 1.0
    assert parts.noise_decay(None, epoch, 50) == 1.0


def test_noise_decay_cosine():
  cfg = presets.NoiseConfig(cosine_decay=True)
  assert parts.noise_decay(cfg, 0, 50) == pytest.approx(1.0)
  assert parts.noise_decay(cfg, 25, 50) == pytest.approx(0.5)
  assert parts.noise_decay(cfg, 50, 50) == pytest.approx(0.0, abs=1e-12)
  for epoch in (1, 10, 37):
    want = (1.0 + math.cos(math.pi * epoch / 50)) / 2.0
    assert parts.noise_decay(cfg, epoch, 50) == pytest.approx(want)
  assert parts.noise_decay(cfg, 10, 50) > parts.noise_decay(cfg, 11, 50)


# ----------------------------------------------------------------------------
# Presets and overrides.


def test_darts_preset():
  m = presets.get_method('darts')
  assert m.relaxation == 'softmax'
  assert m.alpha_init_std == 1e-3
  assert m.zero_one_weight == 0.0
  assert m.noise is None
  assert m.selection_rule == 'darts'


def test_fair_darts_preset():
  m = presets.get_method('fair_darts')
  assert m.relaxation == 'sigmoid'
  assert m.alpha_init_std == 0.0
  assert m.zero_one_weight == 10.0
  assert m.zero_one_form == 'l2'
  assert m.noise is None
  assert m.selection_rule == 'threshold_sparse'
  assert m.threshold == 0.85


def test_noisy_darts_preset():
  m = presets.get_method('noisy_darts')
  assert m.relaxation == 'softmax'
  assert m.alpha_init_std == 1e-3
  assert m.zero_one_weight == 0.0
  assert m.selection_rule == 'darts'
  assert m.noise == presets.NoiseConfig(type='gaussian', mixture='additive', mean=0.0,
                                        factor=0.2, cosine_decay=False)


def test_overrides_replace_one_part_and_keep_the_rest():
  base = presets.get_method('fair_darts')
  m = presets.get_method('fair_darts', relaxation='softmax')
  assert m.relaxation == 'softmax'
  assert (m.alpha_init_std, m.zero_one_weight, m.selection_rule, m.threshold, m.noise) == (
      base.alpha_init_std, base.zero_one_weight, base.selection_rule, base.threshold,
      base.noise)
  m = presets.get_method('darts', zero_one_weight=2.0, selection_rule=None)
  assert m.zero_one_weight == 2.0
  assert m.selection_rule == 'darts' and m.relaxation == 'softmax'
  noise = presets.NoiseConfig(type='uniform', factor=0.1)
  m = presets.get_method('darts', noise=noise)
  assert m.noise == noise and m.alpha_init_std == 1e-3
  # The presets themselves are untouched.
  assert presets.get_method('fair_darts') == base
  assert presets.get_method('darts').noise is None


def test_noise_is_turned_on_off_and_adjusted_part_by_part():
  m = presets.get_method('darts', add_noise=True, noise_parts={'factor': 0.1, 'type': None})
  assert m.noise == presets.NoiseConfig(factor=0.1)
  m = presets.get_method('noisy_darts', noise_parts={'mixture': 'multiplicative', 'mean': 1.0})
  assert m.noise == presets.NoiseConfig(mixture='multiplicative', mean=1.0)
  assert presets.get_method('noisy_darts', add_noise=False).noise is None
  assert presets.get_method('noisy_darts', skip_drop_prob=0.3).skip_drop_prob == 0.3
  assert presets.get_method('noisy_darts').skip_drop_prob == 0.0  # the paper's


@pytest.mark.parametrize('name,overrides,warning', [
    ('fair_darts', {'noise_parts': {'factor': 0.3, 'type': None}},
     'noise settings (factor=0.3): no effect, the method adds no noise'),
    ('noisy_darts', {'add_noise': False, 'noise_parts': {'cosine_decay': True}},
     'noise settings (cosine_decay=True): no effect'),
    ('darts', {'threshold': 0.9},
     'threshold=0.9: no effect, the darts selection rule uses no threshold'),
    ('fair_darts', {'threshold': 0.9, 'selection_rule': 'darts'}, 'threshold=0.9: no effect'),
    ('fair_darts', {'threshold': 0.9}, None),
    ('noisy_darts', {'noise_parts': {'factor': 0.3}}, None),
])
def test_settings_without_effect_are_named_in_one_warning(name, overrides, warning, caplog):
  with caplog.at_level('WARNING'):
    presets.get_method(name, **overrides)
  if warning is None:
    assert not caplog.records
  else:
    assert len(caplog.records) == 1 and warning in caplog.records[0].getMessage()


@pytest.mark.parametrize('name,overrides,what', [
    ('enas', {}, 'enas'),
    ('darts', {'relaxation': 'gumbel'}, 'gumbel'),
    ('fair_darts', {'selection_rule': 'top3'}, 'top3'),
    ('darts', {'zero_one_form': 'l3'}, 'l3'),
    ('darts', {'threshold': 1.5}, 'threshold'),
    ('noisy_darts', {'skip_drop_prob': 1.0}, 'skip_drop_prob'),
    ('noisy_darts', {'noise_parts': {'factor': -1.0}}, 'noise factor'),
])
def test_invalid_choices_raise_user_input_error(name, overrides, what):
  with pytest.raises(UserInputError, match=what):
    presets.get_method(name, **overrides)


def test_relax():
  a = _rand([5, 3], seed=16)
  soft = np.asarray(parts.relax(tf.constant(a), 'softmax'))
  e = np.exp(a - a.max(axis=1, keepdims=True))
  np.testing.assert_allclose(soft, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(parts.relax(tf.constant(a), 'sigmoid')), _sigmoid(a),
                             rtol=1e-5)
