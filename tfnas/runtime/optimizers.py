"""SGD and Adam with PyTorch's update rules, as the original search code uses them.

Keras' SGD folds the learning rate into the momentum buffer, which differs from
PyTorch as soon as the learning rate changes (every epoch under the cosine
schedule), and Keras' Adam applies epsilon after bias correction. These
optimizers follow torch.optim exactly. Weight decay is *not* here: the
original's coupled L2 decay is added to the gradients by the search step
(after clipping, like torch.optim.SGD(weight_decay=...)).

Under a tf.distribute strategy these optimizers expect gradients that are
already summed over the replicas: the search step all-reduces them itself, so
that it can clip the global gradient, and a second all-reduce would be waste.
"""
import math

import keras
from keras import ops as kops  # keras.ops: in tfnas, `ops` is tfnas.layers.ops


def _bias_correction(beta, t):
  """1 - beta**t for a Python float beta and a step count t, accurate in t's dtype.

  PyTorch computes it in double precision. In float32, beta itself is off (1 - float32(0.999)
  by 1.3e-5) and 1 - beta**t cancels; as -expm1(t * log(beta)) with log(beta) taken in double
  precision it is right to float32 round-off, without float64 ops (which TPUs lack).
  """
  log_beta = math.log(beta) if beta > 0 else -math.inf  # beta = 0: no correction (1)
  return kops.negative(kops.expm1(kops.multiply(t, log_beta)))


class _PreReducedGradients(keras.optimizers.Optimizer):
  """Applies gradients as given: the caller has summed them over the replicas."""

  def _all_reduce_sum_gradients(self, grads_and_vars):
    return list(grads_and_vars)


class TorchSGD(_PreReducedGradients):
  """torch.optim.SGD with momentum: buf = m * buf + g; w -= lr * buf."""

  def __init__(self, learning_rate, momentum=0.9, name="torch_sgd", **kwargs):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.momentum = momentum

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]

  def update_step(self, gradient, variable, learning_rate):
    lr = kops.cast(learning_rate, variable.dtype)
    g = kops.cast(gradient, variable.dtype)
    buf = self.momentums[self._get_variable_index(variable)]
    self.assign(buf, kops.add(kops.multiply(buf, self.momentum), g))
    self.assign_sub(variable, kops.multiply(lr, buf))

  def get_config(self):
    return {**super().get_config(), "momentum": self.momentum}


class TorchAdam(_PreReducedGradients):
  """torch.optim.Adam: w -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)."""

  def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8, name="torch_adam",
               **kwargs):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self.m = [self.add_variable_from_reference(v, "m") for v in variables]
    self.v = [self.add_variable_from_reference(v, "v") for v in variables]

  def update_step(self, gradient, variable, learning_rate):
    lr = kops.cast(learning_rate, variable.dtype)
    g = kops.cast(gradient, variable.dtype)
    t = kops.cast(self.iterations + 1, variable.dtype)
    bc1, bc2 = _bias_correction(self.beta_1, t), _bias_correction(self.beta_2, t)
    i = self._get_variable_index(variable)
    m, v = self.m[i], self.v[i]
    self.assign(m, kops.add(kops.multiply(m, self.beta_1), kops.multiply(g, 1.0 - self.beta_1)))
    self.assign(v, kops.add(kops.multiply(v, self.beta_2),
                           kops.multiply(kops.square(g), 1.0 - self.beta_2)))
    denom = kops.add(kops.divide(kops.sqrt(v), kops.sqrt(bc2)), self.epsilon)
    self.assign_sub(variable, kops.multiply(kops.divide(lr, bc1), kops.divide(m, denom)))

  def get_config(self):
    return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
            "epsilon": self.epsilon}
