"""The blocks of chain networks: shapes, parameters, the residual and squeeze-excitation."""
import numpy as np
import pytest
import tensorflow as tf

from tfnas.layers import mbconv
from tfnas.runtime.errors import UserInputError


def _params(layer):
  return int(sum(np.prod(v.shape) for v in layer.trainable_variables))


@pytest.mark.parametrize("kernel, expansion, stride", [(3, 3, 1), (5, 6, 2), (7, 1, 1)])
def test_inverted_residual_shapes_and_parameters(kernel, expansion, stride):
  block = mbconv.InvertedResidual(8, 12, kernel, expansion, stride, "relu6")
  y = block(tf.random.normal([2, 9, 9, 8]))
  size = (9 + stride - 1) // stride  # symmetric padding k // 2
  assert y.shape == (2, size, size, 12)
  mid = 8 * expansion
  expand = 8 * mid + 2 * mid if expansion != 1 else 0  # conv and BN scale/offset
  assert _params(block) == expand + kernel * kernel * mid + 2 * mid + mid * 12 + 2 * 12


def test_squeeze_excitation_reduces_the_blocks_input_channels_and_gates():
  block = mbconv.InvertedResidual(16, 16, 3, 6, 1, "swish", se_ratio=0.25)
  block(tf.zeros([1, 4, 4, 16]))
  r = 4  # 0.25 x the block's input channels (16), not of the expanded 96
  assert block.se.reduce.kernel.shape == (96, r) and block.se.expand.kernel.shape == (r, 96)
  se = mbconv.SqueezeExcite(3, 1, "relu")
  x = tf.random.normal([2, 5, 5, 3])
  gate = tf.sigmoid(se.expand(tf.nn.relu(se.reduce(tf.reduce_mean(x, axis=[1, 2])))))
  np.testing.assert_allclose(se(x), x * gate[:, None, None, :], rtol=1e-6)


def test_the_projection_has_no_activation_and_the_separable_block_no_residual():
  block = mbconv.InvertedResidual(4, 4, 3, 3, 1, "relu")
  assert block.project.act is None and block.depthwise.act is tf.nn.relu
  sep = mbconv.DepthwiseSeparable(4, 6, 3, "relu")
  assert sep(tf.zeros([1, 5, 5, 4])).shape == (1, 5, 5, 6) and sep.project.act is None


def test_an_unknown_activation_is_named():
  with pytest.raises(UserInputError, match="unknown activation 'gelu'; choose one of relu"):
    mbconv.activation("gelu")
