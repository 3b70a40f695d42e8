"""The blocks of MobileNetV2-like chains: inverted residuals (MBConv) with optional
squeeze-excitation, and the depthwise-separable block that precedes them.

As in the PyTorch originals (FairNAS models/FairNAS_A.py, timm's EfficientNet builder that
NoisyDARTS-A uses): bias-free convolutions with symmetric padding k // 2, each followed by
batch norm (PyTorch semantics, ops.BatchNorm); the projection has no activation; a block
adds its input when its stride is 1 and its input and output channels are equal.
Squeeze-excitation sits between the depthwise conv and the projection: global average
pool, a 1x1 conv with bias to round(ratio x the block's input channels), the block's
activation, a 1x1 conv with bias back, a sigmoid gate.
"""
import keras
import tensorflow as tf

from tfnas.layers import ops
from tfnas.runtime.errors import UserInputError

ACTIVATIONS = {"relu": tf.nn.relu, "relu6": tf.nn.relu6, "swish": tf.nn.swish}


def activation(name):
  """An activation function by name (relu, relu6, swish)."""
  if name not in ACTIVATIONS:
    raise UserInputError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def se_channels(c_in, ratio):
  """Squeeze-excitation's reduced channels: ratio x the block's input channels (at least 1)."""
  return max(1, int(c_in * ratio))


class ConvBN(ops.LazyBlock):
  """conv -> BN -> activation (None: no activation). `affine` and `synchronized` are the BN's."""

  def __init__(self, c_out, kernel_size, stride=1, depthwise=False, act=None, affine=True,
               synchronized=False, **kwargs):
    super().__init__(**kwargs)
    self.conv = ops.Conv(c_out, kernel_size, stride, kernel_size // 2, depthwise=depthwise)
    self.bn = ops.BatchNorm(affine=affine, synchronized=synchronized)
    self.act = None if act is None else activation(act)

  def call(self, x, training=False):
    y = self.bn(self.conv(x), training=training)
    return y if self.act is None else self.act(y)


class SqueezeExcite(keras.layers.Layer):
  """x * sigmoid(W2 act(W1 mean(x) + b1) + b2), the 1x1 convs written as dense layers."""

  def __init__(self, channels, reduced, act, **kwargs):
    super().__init__(**kwargs)
    self.reduce = ops.torch_dense(reduced, channels)
    self.expand = ops.torch_dense(channels, reduced)
    self.act = activation(act)

  def call(self, x):
    s = tf.reduce_mean(x, axis=[1, 2])
    s = tf.sigmoid(self.expand(self.act(self.reduce(s))))
    return x * tf.cast(s, x.dtype)[:, None, None, :]


class InvertedResidual(ops.LazyBlock):
  """MBConv without its residual: 1x1 expansion (none when expansion is 1), k x k depthwise
  conv with the stride, squeeze-excitation (se_ratio > 0), 1x1 projection; the layer that
  holds it adds the residual (a chain layer may sum several of them). `affine` and
  `synchronized` are its batch norms' (the search's candidates have affine-free ones)."""

  def __init__(self, c_in, c_out, kernel_size, expansion, stride, act, se_ratio=0.0,
               affine=True, synchronized=False, **kwargs):
    super().__init__(**kwargs)
    mid = c_in * expansion
    bn = dict(affine=affine, synchronized=synchronized)
    self.expand = ConvBN(mid, 1, act=act, **bn) if expansion != 1 else None
    self.depthwise = ConvBN(mid, kernel_size, stride, depthwise=True, act=act, **bn)
    self.se = (SqueezeExcite(mid, se_channels(c_in, se_ratio), act) if se_ratio > 0 else None)
    self.project = ConvBN(c_out, 1, **bn)

  def call(self, x, training=False):
    y = x if self.expand is None else self.expand(x, training=training)
    y = self.depthwise(y, training=training)
    if self.se is not None:
      y = self.se(y)
    return self.project(y, training=training)


class DepthwiseSeparable(ops.LazyBlock):
  """k x k depthwise conv, BN, activation; 1x1 conv, BN; no residual (FairNAS' second block)."""

  def __init__(self, c_in, c_out, kernel_size, act, synchronized=False, **kwargs):
    super().__init__(**kwargs)
    self.depthwise = ConvBN(c_in, kernel_size, depthwise=True, act=act, synchronized=synchronized)
    self.project = ConvBN(c_out, 1, synchronized=synchronized)

  def call(self, x, training=False):
    return self.project(self.depthwise(x, training=training), training=training)
