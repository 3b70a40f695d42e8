"""The network of a chain genotype, and its parameters and multiply-accumulates.

Counted as the originals count them: params are every trainable weight (kernels, BN scales
and offsets, biases); MACs are those of every convolution, the squeeze-excitation layers
and the classifier for one image, not BN, activations, pooling, the gating product or the
residual adds. counts_from_shapes gets both by arithmetic (milliseconds, no network);
tests check it against the built network.
"""
import keras
import numpy as np
import tensorflow as tf

from tfnas.layers import mbconv
from tfnas.layers import ops
from tfnas.runtime import distribute
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.chain import genotype as genotype_lib


class ChainBlockSum(ops.LazyBlock):
  """One searchable layer of an evaluation network: the sum of its kept blocks, plus its
  input when the shapes agree (the identity when it keeps none).

  In training, drop_prob drops the blocks' sum of a layer that adds its input, per example
  (EfficientNet's "drop connect"; the input passes)."""

  def __init__(self, c_in, layer, g, **kwargs):
    super().__init__(**kwargs)
    self.residual = genotype_lib.residual(c_in, layer)
    self.blocks = [mbconv.InvertedResidual(c_in, layer.out_channels, k, e, layer.stride,
                                           g.activation, g.se_ratio, name=f"k{k}_e{e}")
                   for k, e in layer.blocks]

  def call(self, x, training=False, drop_prob=0.0, seed=None):
    if not self.blocks:
      return x
    ys = [block(x, training=training) for block in self.blocks]
    y = tf.add_n(ys) if len(ys) > 1 else ys[0]
    if not self.residual:
      return y
    if training:
      y = ops.drop_path(y, drop_prob, seed)
    return y + x


class ChainNetwork(ops.BuildsLazily, ops.ListsInCheckpoints, keras.Model):
  """Stem, depthwise-separable block, the genotype's layers, head and classifier.

  call(x, training=False, seed=None) returns logits. `seed` is an optional stateless [2] int
  seed of the training's random draws (dropout, drop connect); without it they come from the
  global generator. `drop_path_prob` (a variable, set per epoch) is the drop connect of the
  layers that add their input.
  """

  def __init__(self, genotype, num_classes=1000, **kwargs):
    super().__init__(**kwargs)
    g = genotype_lib.check(genotype)
    self.genotype, self.num_classes = g, num_classes
    self.stem = mbconv.ConvBN(g.stem_channels, 3, stride=2, act=g.outer)
    self.separable = mbconv.DepthwiseSeparable(g.stem_channels, g.first_channels, 3, g.outer)
    self.chain = []
    c = g.first_channels
    for i, layer in enumerate(g.layers):
      self.chain.append(ChainBlockSum(c, layer, g, name=f"layer_{i + 1}"))
      c = layer.out_channels
    self.head = mbconv.ConvBN(g.head_channels, 1, act=g.outer)
    self.classifier = ops.torch_dense(num_classes, g.head_channels)
    self.drop_path_prob = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                          name="drop_path_prob")

  def check_image_size(self, height, width):
    """Any size fits (symmetric padding: each stride 2 gives ceil(size / 2))."""
    if height < 1 or width < 1:
      raise UserInputError(f"images of {height}x{width} have no pixels")

  def call(self, x, training=False, seed=None):
    if training:
      seed = distribute.replica_seed(seed)
    y = self.separable(self.stem(x, training=training), training=training)
    for i, layer in enumerate(self.chain):
      y = layer(y, training=training, drop_prob=self.drop_path_prob,
                seed=distribute.fold_seed(seed, i) if training else None)
    y = tf.reduce_mean(self.head(y, training=training), axis=[1, 2])
    if training and self.genotype.dropout > 0:
      y = tf.nn.experimental.stateless_dropout(
          y, self.genotype.dropout, distribute.fold_seed(seed, len(self.chain)))
    return tf.cast(self.classifier(y), tf.float32)


def count_params(model):
  return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def count_macs(model, image_size):
  """MACs of one image's inference, from the layers' shapes in one forward pass."""
  model(tf.zeros([1, image_size, image_size, 3]), training=False)
  return ops.layer_macs(model)


def _conv_bn(c_in, c_out, k, size, depthwise=False):
  """(params, MACs) of a conv and its BN at this output size (height, width)."""
  weights = k * k * c_out if depthwise else k * k * c_in * c_out
  return weights + 2 * c_out, weights * size[0] * size[1]


def _strided(size, stride):
  """The output size of a stride with symmetric padding k // 2: ceil(size / stride)."""
  return tuple((n + stride - 1) // stride for n in size)


def counts_from_shapes(g, image_size=224, num_classes=1000):
  """{"params", "macs"} of ChainNetwork(g, num_classes) for images of this size (an int for
  square ones, or (height, width))."""
  g = genotype_lib.check(g)
  size = _strided((image_size, image_size) if isinstance(image_size, int)
                  else tuple(image_size), 2)  # the stem
  parts = [_conv_bn(3, g.stem_channels, 3, size),
           _conv_bn(g.stem_channels, g.stem_channels, 3, size, depthwise=True),
           _conv_bn(g.stem_channels, g.first_channels, 1, size)]
  c = g.first_channels
  for layer in g.layers:
    out = _strided(size, layer.stride)
    for k, e in layer.blocks:
      mid = c * e
      if e != 1:
        parts.append(_conv_bn(c, mid, 1, size))
      parts.append(_conv_bn(mid, mid, k, out, depthwise=True))
      if g.se_ratio > 0:
        r = mbconv.se_channels(c, g.se_ratio)
        parts.append((mid * r + r + r * mid + mid, 2 * mid * r))
      parts.append(_conv_bn(mid, layer.out_channels, 1, out))
    c, size = layer.out_channels, out
  parts.append(_conv_bn(c, g.head_channels, 1, size))
  parts.append((g.head_channels * num_classes + num_classes, g.head_channels * num_classes))
  return {"params": sum(p for p, _ in parts), "macs": sum(m for _, m in parts)}
