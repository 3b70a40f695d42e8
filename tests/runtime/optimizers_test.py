"""TorchSGD and TorchAdam against torch.optim's update rules, written out in float64.

The expected values follow the algorithms in torch.optim's documentation (SGD with momentum,
dampening 0; Adam with coupled weight decay), over several steps with a learning rate that
changes every step, as it does every epoch under the cosine schedule. The coupled weight
decay wd * w is added to the gradient here, as the search step does before calling the
optimizer. The optimizer keeps its learning rate in a float32 variable, so the expected
values use the float32-rounded rates.
"""
import numpy as np
import pytest
import tensorflow as tf

from tfnas.runtime import optimizers

_LRS = [0.1, 0.05, 0.2, 0.025, 0.07]  # a different rate each step
_WD = 3e-4
_W0 = np.array([0.5, -1.25, 2.0, 0.0], np.float64)
# Gradients of different signs and sizes each step (exact in float32).
_GRADS = np.array([[0.25, -0.5, 1.5, 0.0],
                   [-0.125, -0.75, 1.0, 0.5],
                   [0.5, 0.25, -2.0, 0.25],
                   [1.0, -0.25, 0.5, -0.5],
                   [-0.375, 0.125, 0.75, 1.0]], np.float64)


def _lr(i):
  return float(np.float32(_LRS[i]))


def _run(optimizer, dtype):
  """The weights after each step of `optimizer`, with coupled weight decay in the gradient."""
  w = tf.Variable(_W0, dtype=dtype)
  after = []
  for i, g in enumerate(_GRADS):
    optimizer.learning_rate = _LRS[i]
    grad = tf.constant(g, dtype) + _WD * w
    optimizer.apply_gradients([(grad, w)])
    after.append(w.numpy().astype(np.float64))
  return np.array(after)


def _torch_sgd(momentum):
  w, buf, after = _W0.copy(), None, []
  for i, g in enumerate(_GRADS):
    d = g + _WD * w
    buf = d if buf is None else momentum * buf + d  # dampening 0: the first buf is the grad
    w = w - _lr(i) * buf
    after.append(w)
  return np.array(after)


def _torch_adam(beta1, beta2, eps):
  w, m, v, after = _W0.copy(), np.zeros(4), np.zeros(4), []
  for i, g in enumerate(_GRADS):
    t = i + 1
    d = g + _WD * w
    m = beta1 * m + (1 - beta1) * d
    v = beta2 * v + (1 - beta2) * d * d
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t  # Python floats: double precision, as torch
    w = w - _lr(i) / bc1 * m / (np.sqrt(v) / np.sqrt(bc2) + eps)
    after.append(w)
  return np.array(after)


def _updates(weights):
  """The change of each step, so that a relative error in a step size is seen whole."""
  return np.diff(np.concatenate([_W0[None], weights]), axis=0)


# float64 variables, so that the comparison sees any departure beyond double round-off (the
# float32 bias corrections of earlier made every Adam step about 6e-6 too large).
def test_torch_sgd_follows_torch_with_a_changing_learning_rate():
  got = _run(optimizers.TorchSGD(0.1, momentum=0.9), tf.float64)
  expected = _torch_sgd(0.9)
  np.testing.assert_allclose(_updates(got), _updates(expected), rtol=1e-12, atol=0)
  # Keras' SGD keeps lr inside its buffer (buf = m * buf - lr * g), which differs as soon as
  # the rate changes: the comparison above would see it.
  keras_like, buf, w = [], np.zeros(4), _W0.copy()
  for i, g in enumerate(_GRADS):
    buf = 0.9 * buf - _lr(i) * (g + _WD * w)
    w = w + buf
    keras_like.append(w)
  assert not np.allclose(_updates(np.array(keras_like)), _updates(expected), rtol=1e-3)


@pytest.mark.parametrize("beta1", [0.9, 0.5, 0.0])  # 0.5: Fair DARTS' alphas
def test_torch_adam_follows_torch_with_a_changing_learning_rate(beta1):
  got = _run(optimizers.TorchAdam(3e-4, beta_1=beta1, beta_2=0.999, epsilon=1e-8), tf.float64)
  expected = _torch_adam(beta1, 0.999, 1e-8)
  np.testing.assert_allclose(_updates(got), _updates(expected), rtol=1e-12, atol=0)


def test_adam_bias_corrections_are_right_in_float32():
  # The search runs in float32: its step sizes lr / bc1 and 1 / sqrt(bc2) must be PyTorch's
  # (double precision) to float32 round-off, not 6e-6 off as with float32 betas.
  steps = np.array([1, 2, 3, 10, 100, 1000, 10000, 100000], np.float32)
  for beta in (0.9, 0.5, 0.999):
    got = optimizers._bias_correction(beta, tf.constant(steps)).numpy()
    np.testing.assert_allclose(got, 1 - beta**steps.astype(np.float64), rtol=3e-7)
