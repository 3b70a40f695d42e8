"""The DARTS candidate operations as Keras layers, defined as in the original code.

Layout is NHWC. Differences from the PyTorch originals are deliberate only where
Keras forces them, and are numerically neutral:
- padding is symmetric (PyTorch style): TF's 'SAME' only at stride 1, where it
  pads symmetrically, explicit padding otherwise;
- a dilated conv is computed as a plain conv on each phase of the image (pixels
  at the same position modulo the dilation; at stride 2 only the even pixels),
  which gives the same values (TF has no strided dilated conv);
- batch norm is `BatchNorm` below: PyTorch's epsilon 1e-5, momentum 0.1 and
  unbiased running variance, with optional cross-replica synchronization;
- weights are initialized like PyTorch's defaults (kaiming-uniform with a=sqrt(5),
  i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))), so parameter scales match.
"""
import contextlib
import functools
import math
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
# What the synchronized batch norm records its gradient with.
from tensorflow.python.eager import record

from tfnas.layers.op_table import CONV_OPS, OP_NAMES, POOL_OPS  # noqa: F401 (the op table)
from tfnas.runtime import distribute
from tfnas.runtime.errors import UserInputError


def torch_uniform(fan_in):
  """PyTorch's default conv/linear initializer for a layer with this fan-in."""
  bound = 1.0 / math.sqrt(fan_in)
  return keras.initializers.RandomUniform(-bound, bound)


def torch_dense(units, fan_in):
  """A Dense layer initialized as PyTorch's nn.Linear (weights and bias, fan_in inputs)."""
  # Separate initializer objects: an unseeded Keras initializer repeats its draw.
  return keras.layers.Dense(units, kernel_initializer=torch_uniform(fan_in),
                            bias_initializer=torch_uniform(fan_in))


def image_shape(y, *channels):
  """The shape [batch, H, W, *channels] for y's batch and image size.

  Static where the image size is known, so that a reshape is one op.
  """
  h, w = y.shape[1], y.shape[2]
  if h is None or w is None:
    return tf.concat([tf.shape(y)[:3], list(channels)], 0)
  return [-1, h, w, *channels]


def _pad(x, pad, value=0.0):
  if pad == 0:
    return x
  return tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=value)


@functools.cache
def _native_grouped_conv_gradients(dtype):
  """Whether TensorFlow can differentiate a grouped conv of this dtype here: on a GPU,
  or with oneDNN (the default of its x86-64 CPU builds) in float32 or bfloat16; not
  with TF_ENABLE_ONEDNN_OPTS=0, nor in float16 on the CPU."""
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
  if tf.config.list_logical_devices("GPU"):
    return True
  return _pywrap_util_port.IsMklEnabled() and dtype in (tf.float32, tf.bfloat16)


def _split_grouped_conv(x, kernel, stride, padding, groups):
  """A grouped conv as one conv per group (same values; slower, but differentiable anywhere)."""
  return tf.concat([tf.nn.conv2d(a, k, stride, padding) for a, k in
                    zip(tf.split(x, groups, axis=-1), tf.split(kernel, groups, axis=-1))], -1)


# Off inside plain_gradients(): the custom gradients below (recomputed, _depthwise_conv).
_gradient_tricks = True


@contextlib.contextmanager
def plain_gradients():
  """Ops built inside use TensorFlow's own gradients, not the custom ones that save time
  and memory in training: for graphs that are never differentiated, such as a
  SavedModel for serving, whose loader cannot restore custom gradients and warns
  about each one."""
  global _gradient_tricks
  saved, _gradient_tricks = _gradient_tricks, False
  try:
    yield
  finally:
    _gradient_tricks = saved


def _depthwise_conv(x, kernel, stride, padding):
  """tf.nn.depthwise_conv2d ('SAME' or 'VALID'), with a faster kernel gradient above 3x3.

  TensorFlow's oneDNN kernel for a 5x5 depthwise kernel's gradient is slow on the
  CPU (5.5 ms against 0.8 ms for 3x3, at 32x32x64 and batch 32); asked for with
  explicit padding, the same gradient runs on TensorFlow's own kernel in 3.1 ms.
  Same values; the input's gradient and the forward pass keep oneDNN.
  """
  k = kernel.shape[0]
  strides = [1, stride, stride, 1]
  if k <= 3 or not _gradient_tricks:
    return tf.nn.depthwise_conv2d(x, kernel, strides, padding)
  p = (k - 1) // 2 if padding == "SAME" else 0
  explicit = [0, 0, p, p, p, p, 0, 0]

  @tf.custom_gradient
  def conv(x, kernel):
    def grad(dy):
      dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
          input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=strides,
          padding=padding)
      dk = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
          input=x, filter_sizes=tf.shape(kernel), out_backprop=dy, strides=strides,
          padding="EXPLICIT", explicit_paddings=explicit)
      return dx, dk
    return tf.nn.depthwise_conv2d(x, kernel, strides, padding), grad
  return conv(x, tf.convert_to_tensor(kernel))


def drop_path(x, drop_prob, seed=None, edge_axis=None):
  """Zeroes whole samples with probability drop_prob and scales the rest by 1/keep.

  `seed` is a stateless [2] int seed; None draws one from the global generator.
  `edge_axis`: x holds several edges' outputs along this axis, each dropped on its own.
  """
  if seed is None:
    seed = distribute.fresh_seed()
  keep = 1.0 - tf.cast(drop_prob, tf.float32)
  mask_shape = [tf.shape(x)[0]] + [1] * (x.shape.rank - 1)
  if edge_axis is not None:
    mask_shape[edge_axis] = tf.shape(x)[edge_axis]
  u = tf.random.stateless_uniform(tf.stack(mask_shape), seed)
  # u < keep (not floor(keep + u), which rounds up to 2 near u = 1): keep = 1
  # keeps every sample exactly, keep = 0 drops all without dividing by zero.
  mask = tf.cast(u < keep, x.dtype)
  return tf.math.divide_no_nan(x, tf.cast(keep, x.dtype)) * mask


class ListsInCheckpoints:
  """Puts the layers a Keras layer keeps in lists into its tf.train.Checkpoint.

  Keras 3.15 gives TF's checkpoints only a layer's direct attributes: layers in
  a list (the cells, a mixed op's candidates) and their batch-norm statistics
  were missing from checkpoints. Each list item becomes a child '<list>-<i>'.
  """

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    children = super()._trackable_children(save_type, **kwargs)
    if save_type == "checkpoint":
      for attr in getattr(self, "_tracked", ()):
        value = getattr(self, attr, None)
        if isinstance(value, list):
          for i, item in enumerate(value):
            if isinstance(item, tf.__internal__.tracking.Trackable):
              children[f"{attr}-{i}"] = item
    return children


class BuildsLazily:
  """For a Keras layer or model made of layers that build themselves on their first call.

  Without a build() of its own, Keras would build such a layer by tracing its
  call symbolically, once per nesting level: minutes for the DARTS supernet.
  """

  def build(self, *input_shapes):
    del input_shapes


class LazyBlock(BuildsLazily, ListsInCheckpoints, keras.layers.Layer):
  """A layer made of other layers (BuildsLazily), its lists of layers checkpointed."""


class BatchNorm(keras.layers.Layer):
  """Batch norm with PyTorch semantics.

  Training uses the batch statistics (over all replicas when `synchronized` and
  there is more than one) and updates running statistics with momentum 0.1 and
  the unbiased variance, as torch.nn.BatchNorm2d does. `affine=False` has no
  learnable scale and offset (the search network's setting).
  """

  def __init__(self, affine=True, synchronized=False, epsilon=1e-5, momentum=0.1, **kwargs):
    super().__init__(**kwargs)
    self.affine = affine
    self.synchronized = synchronized
    self.epsilon = epsilon
    self.momentum = momentum

  def build(self, input_shape):
    c = input_shape[-1]
    # Float32 parameters and statistics also under a mixed-precision policy (no autocast):
    # the fused op takes them so, and they are sums over many pixels.
    if self.affine:
      self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma", autocast=False)
      self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta", autocast=False)
    # Each replica updates its own copy (no cross-replica sync point per BN);
    # reading them outside the replicas gives the mean, as in tf.keras' BN.
    # (add_weight cannot make such variables, hence keras.Variable.)
    stat = dict(shape=(c,), trainable=False, synchronization="on_read", aggregation="mean",
                autocast=False)
    self.moving_mean = keras.Variable("zeros", name="moving_mean", **stat)
    self.moving_variance = keras.Variable("ones", name="moving_variance", **stat)

  def scale_offset(self, c, scale=None):
    """The float32 scale and offset of the normalized output; `scale` is an extra
    per-channel factor (see call)."""
    if scale is None:
      if self.affine:
        return self.gamma, self.beta
      return tf.ones([c], tf.float32), tf.zeros([c], tf.float32)
    scale = tf.cast(scale, tf.float32)  # a layer's call may have cast it to its compute dtype
    if self.affine:
      return self.gamma * scale, self.beta * scale
    return scale, tf.zeros([c], tf.float32)

  def call(self, x, training=False, scale=None):
    """`scale`: an extra per-channel factor on the output (the search cell folds each
    edge's architecture weight in here: no separate multiply, no saved output)."""
    scale, offset = self.scale_offset(x.shape[-1], scale)
    if training and self.synchronized and distribute.num_replicas() > 1:
      [y] = _synchronized_batch_norms([self], [x], [scale], [offset])
      return y
    if training:
      # One fused op (and one for its gradient) instead of about forty: the
      # search graph has hundreds of BNs. It normalizes with the biased batch
      # variance and returns the unbiased one, as PyTorch's running stats use.
      # With exponential_avg_factor it also returns the updated running stats.
      y, moving_mean, moving_var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
          x=x, scale=scale, offset=offset, mean=self.moving_mean.value,
          variance=self.moving_variance.value, epsilon=self.epsilon,
          exponential_avg_factor=self.momentum, is_training=True)
      self.moving_mean.assign(moving_mean)
      self.moving_variance.assign(moving_var)
      return y
    y = (tf.cast(x, tf.float32) - self.moving_mean) * tf.math.rsqrt(
        self.moving_variance + self.epsilon) * scale + offset
    return tf.cast(y, x.dtype)


def _per_channel(bns, attribute):
  """A batch norm setting (epsilon, momentum) of each of `bns` for each of its channels: a
  float when they all have the same."""
  values = [getattr(bn, attribute) for bn in bns]
  if len(set(values)) == 1:
    return values[0]
  return np.concatenate([np.full([bn.moving_mean.shape[0]], v, np.float32)
                         for bn, v in zip(bns, values)])


def _synchronized_batch_norms(bns, xs, scales, offsets):
  """Training batch norms on the global batch's statistics (summed over the replicas),
  several at once: one sum over the replicas forward and one backward for all of them,
  and their per-channel arithmetic on all their channels together.

  Each is one fused op forward and one backward, and the gradient through the statistics
  is written out (PyTorch's SyncBatchNorm has the same closed form): the tape's gradient
  of the statistics' formula took about a hundred ops per batch norm. Normalizing the
  batch norms of a cell's ops together (normalize_together) gives a 2-replica search step
  about the graph of unsynchronized ones.
  """
  sizes = [x.shape[-1] for x in xs]
  scales = [tf.convert_to_tensor(s) for s in scales]  # read on the tape
  offsets = [tf.convert_to_tensor(o) for o in offsets]
  epsilon, momentum = _per_channel(bns, "epsilon"), _per_channel(bns, "momentum")
  with record.stop_recording():
    # Each list argument would be a constant op of its own: these are made once.
    axes, first, per_bn = tf.constant([0, 1, 2]), tf.constant(0), tf.constant(sizes)
    x32 = [tf.cast(x, tf.float32) for x in xs]
    pixels = [x.shape[:-1].num_elements() for x in xs]
    if None in pixels:
      counts = tf.concat([tf.fill([c], tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32))
                          for x, c in zip(xs, sizes)], first)
    else:
      counts = tf.constant(np.repeat(np.float32(pixels), sizes))
    # [sum x | sum x^2 | count] per channel, over the replicas.
    [sums] = distribute.sum_over_replicas([tf.concat(
        [tf.reduce_sum(x, axes) for x in x32] + [tf.reduce_sum(tf.square(x), axes)
                                                 for x in x32] + [counts], first)])
    total, total_sq, count = tf.split(sums, 3, first)
    mean = total / count
    var = tf.nn.relu(total_sq / count - tf.square(mean))
    # PyTorch's running statistics: momentum m, the unbiased variance.
    moving_mean = tf.concat([bn.moving_mean.value for bn in bns], first)
    moving_var = tf.concat([bn.moving_variance.value for bn in bns], first)
    unbiased = tf.math.divide_no_nan(var * count, count - 1.0)
    new_means = tf.split(moving_mean - (moving_mean - mean) * momentum, per_bn, first)
    new_vars = tf.split(moving_var - (moving_var - unbiased) * momentum, per_bn, first)
    for bn, new_mean, new_var in zip(bns, new_means, new_vars):
      bn.moving_mean.assign(new_mean)
      bn.moving_variance.assign(new_var)
    # For the gradient: dx = dy * scale * r with the statistics held fixed, plus
    # -scale * r / count * (sum dy + x_hat * sum dy * x_hat) through them
    # (x_hat = (x - mean) * r, r = 1 / sqrt(var + eps)); as b - x * a per channel.
    r = tf.math.rsqrt(var + epsilon)
    k = tf.concat(scales, first) * r / count
    means, variances = tf.split(mean, per_bn, first), tf.split(var, per_bn, first)
    ys, reserves = [], []
    for x, scale, offset, mean_i, var_i, bn in zip(xs, scales, offsets, means, variances, bns):
      y, _, _, _, _, reserve = tf.raw_ops.FusedBatchNormV3(
          x=x, scale=scale, offset=offset, mean=mean_i, variance=var_i, epsilon=bn.epsilon,
          is_training=False)
      ys.append(y)
      reserves.append(reserve)

  def grad(*dys):
    dxs, local = [], []
    for dy, y, x, scale, mean_i, var_i, reserve, bn in zip(
        dys, ys, xs, scales, means, variances, reserves, bns):
      dx, dscale, doffset, _, _ = tf.raw_ops.FusedBatchNormGradV3(
          y_backprop=tf.zeros_like(y) if dy is None else dy, x=x, scale=scale,
          reserve_space_1=mean_i, reserve_space_2=var_i, reserve_space_3=reserve,
          epsilon=bn.epsilon, is_training=False)
      dxs.append(dx)
      local.append((dscale, doffset))
    dscales, doffsets = [d for d, _ in local], [d for _, d in local]
    # [sum dy * x_hat | sum dy] per channel, over the replicas.
    [sums] = distribute.sum_over_replicas([tf.concat(dscales + doffsets, first)])
    sum_dy_x_hat, sum_dy = tf.split(sums, 2, first)
    a = k * r * sum_dy_x_hat
    b = a * mean - k * sum_dy
    dxs = [tf.cast(tf.cast(dx, tf.float32) - x * a_i + b_i, dx.dtype)
           for dx, x, a_i, b_i in zip(dxs, x32, tf.split(a, per_bn, first),
                                      tf.split(b, per_bn, first))]
    return dxs + dscales + doffsets

  record.record_operation("SynchronizedBatchNorms", ys, xs + scales + offsets, grad)
  return ys


class BatchNormRequest(NamedTuple):
  """What an op written as a generator (normalize_alone) asks for: x normalized by bn,
  times `scale` per channel if given."""
  bn: BatchNorm
  x: tf.Tensor
  scale: object = None


def normalize_alone(op_steps, training):
  """The result of an op written as a generator of BatchNormRequests (sent back each
  request's output), every batch norm on its own."""
  y = None
  try:
    while True:
      request = op_steps.send(y)
      y = request.bn(request.x, training=training, scale=request.scale)
  except StopIteration as done:
    return done.value


def normalize_together(ops_steps, training):
  """The results of several ops written as generators (normalize_alone), run side by side:
  the batch norms that they reach at the same depth are normalized together, the
  synchronized ones on several replicas with one sum over the replicas in each direction
  (_synchronized_batch_norms) instead of one each. Each op's result is as normalize_alone's.
  """
  results, sent = [None] * len(ops_steps), [None] * len(ops_steps)
  synchronizing = training and distribute.num_replicas() > 1
  active = range(len(ops_steps))
  while active:
    requests = {}
    for i in active:
      try:
        requests[i] = ops_steps[i].send(sent[i])
      except StopIteration as done:
        results[i] = done.value
    together = [i for i, r in requests.items() if synchronizing and r.bn.synchronized]
    for i, r in requests.items():
      if i not in together:
        sent[i] = r.bn(r.x, training=training, scale=r.scale)
    if together:
      normalized = [requests[i] for i in together]
      scales, offsets = zip(*(r.bn.scale_offset(r.x.shape[-1], r.scale) for r in normalized))
      ys = _synchronized_batch_norms([r.bn for r in normalized], [r.x for r in normalized],
                                     list(scales), list(offsets))
      for i, y in zip(together, ys):
        sent[i] = y
    active = list(requests)
  return results


def call_side_by_side(calls, training, synchronized):
  """The outputs of independent ops, calls = [(op, x, keyword arguments)]: called one by
  one, or, training with `synchronized` batch norms on several replicas, run side by side
  through their steps() (normalize_together)."""
  if training and synchronized and distribute.num_replicas() > 1:
    return normalize_together([op.steps(x, **kwargs) for op, x, kwargs in calls], training)
  return [op(x, training=training, **kwargs) for op, x, kwargs in calls]


class Conv(keras.layers.Layer):
  """A bias-free 2D convolution with symmetric padding (regular, grouped or depthwise).

  `groups` splits the input and output channels into that many independent
  convolutions (the search cell runs one 1x1 conv per edge as one grouped conv).
  """

  def __init__(self, filters, kernel_size, stride=1, padding=0, dilation=1, depthwise=False,
               groups=1, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = kernel_size
    self.stride = stride
    self.padding = padding
    self.dilation = dilation
    self.depthwise = depthwise
    self.groups = groups
    # Multiply-accumulates per image of the last call (see networks.count_macs).
    self.macs = None

  def build(self, input_shape):
    c_in = input_shape[-1]
    k = self.kernel_size
    if self.depthwise:
      if self.filters != c_in:
        raise ValueError(f"depthwise conv needs filters == input channels, got {self.filters}, {c_in}")
      shape, fan_in = (k, k, c_in, 1), k * k
    else:
      if c_in % self.groups or self.filters % self.groups:
        raise ValueError(f"{self.groups} groups do not divide {c_in} -> {self.filters} channels")
      c_group = c_in // self.groups
      shape, fan_in = (k, k, c_group, self.filters), k * k * c_group
    self.kernel = self.add_weight(shape=shape, initializer=torch_uniform(fan_in), name="kernel")

  def call(self, x):
    return self.convolve(x, self.kernel)

  def convolve(self, x, kernel, phased=False):
    """The convolution with this kernel (the layer's, or its value for a recomputation).

    `phased`: x is already split into the phases of the dilation (see
    _dilated_as_plain; tf.space_to_batch), and so is the result.
    """
    d = self.dilation
    if phased:
      if self.stride != 1 or 2 * self.padding != d * (self.kernel_size - 1):
        raise ValueError("only a stride-1 conv padded d*(k-1)/2 runs on the phases")
      y = self._conv(x, kernel, 1, self.padding // d, 1)
      self._record_macs(x.shape[-1], [None, y.shape[1] * d, y.shape[2] * d])
      return y
    y = self._dilated_as_plain(x, kernel) if d > 1 else None
    if y is None:
      y = self._conv(x, kernel, self.stride, self.padding, d)
    self._record_macs(x.shape[-1], y.shape)
    return y

  def _dilated_as_plain(self, x, kernel):
    """A dilated conv padded d*(k-1)/2 is a plain 'SAME' conv on each phase of the image.

    The phases are the pixels at the same position modulo the dilation d. At
    stride d only phase 0 is used (a quarter of the work of computing at stride
    1 and subsampling); at stride 1 space_to_batch splits the phases and
    batch_to_space interleaves the results. Same values; None where it does not apply.
    """
    d = self.dilation
    if 2 * self.padding != d * (self.kernel_size - 1):
      return None
    if self.stride == d:
      return self._conv(x[:, ::d, ::d, :], kernel, 1, self.padding // d, 1)
    h, w = x.shape[1], x.shape[2]
    if self.stride == 1 and h is not None and w is not None and h % d == 0 and w % d == 0:
      no_pad = [[0, 0], [0, 0]]
      phases = tf.space_to_batch(x, [d, d], no_pad)
      y = self._conv(phases, kernel, 1, self.padding // d, 1)
      return tf.batch_to_space(y, [d, d], no_pad)
    return None

  def _conv(self, x, kernel, stride, padding, dilation):
    # TF has no strided dilated conv: run at stride 1 and subsample (same values).
    subsample = stride if dilation > 1 else 1
    stride = 1 if dilation > 1 else stride
    # At stride 1 TF's 'SAME' pads symmetrically, as PyTorch does with this padding:
    # no Pad op (nor its gradient) in the graph. At stride 2 'SAME' would pad only
    # the bottom and right, so the padding is explicit.
    if stride == 1 and 2 * padding == dilation * (self.kernel_size - 1):
      pad = "SAME"
    else:
      x, pad = _pad(x, padding), "VALID"
    if self.depthwise and dilation == 1:
      y = _depthwise_conv(x, kernel, stride, pad)
    elif self.depthwise:
      y = tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], pad,
                                 dilations=[dilation, dilation])
    elif self.groups > 1 and not _native_grouped_conv_gradients(x.dtype):
      y = _split_grouped_conv(x, kernel, stride, pad, self.groups)
    else:
      y = tf.nn.conv2d(x, kernel, stride, pad, dilations=dilation)
    if subsample > 1:
      y = y[:, ::subsample, ::subsample, :]
    return y

  def _record_macs(self, c_in, out_shape):
    """Sets self.macs from static shapes: the strided conv's count, as PyTorch's."""
    h, w = out_shape[1], out_shape[2]
    if h is None or w is None or c_in is None:
      return
    per_output = self.kernel_size * self.kernel_size * (
        1 if self.depthwise else c_in // self.groups)
    self.macs = int(h) * int(w) * per_output * self.filters


def layer_macs(model, excluded=()):
  """Multiply-accumulates of the last call, per image: every ops.Conv (its recorded count)
  and every Dense layer of `model`, except the layers within `excluded` (layers)."""
  # Keras 3 has no public walk over nested layers; Model.layers uses this one.
  # pylint: disable=protected-access
  skip = {id(sub) for layer in excluded for sub in layer._flatten_layers()}
  total = 0
  for layer in model._flatten_layers():
    if id(layer) in skip:
      continue
    if isinstance(layer, Conv):
      total += layer.macs
    elif isinstance(layer, keras.layers.Dense):
      total += int(np.prod(layer.kernel.shape))
  return total


def recomputed(f, x, *variables):
  """f(x, *values of the variables), keeping only x for the gradient.

  The intermediate results of f are computed again in the backward pass
  instead of staying in memory from the forward pass: for a depthwise conv
  followed by a 1x1 conv that costs one depthwise conv and saves a tensor of the
  input's size per block (about a third of the search step's peak memory).
  """
  if not _gradient_tricks:
    return f(x, *[tf.convert_to_tensor(v) for v in variables])

  @tf.custom_gradient
  def run(x, *values):
    def grad(dy):
      # Not before the backward pass gets here: the graph runs an op as soon as
      # its inputs are ready, which would recompute everything during the forward.
      # (Delaying x is enough: nothing is recomputed without it.)
      with tf.control_dependencies([dy]):
        inputs = [tf.identity(x), *values]
      with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = f(*inputs)  # only the parts the gradient needs stay in the graph
      return tape.gradient(y, inputs, output_gradients=dy)
    return f(x, *values), grad
  return run(x, *[tf.convert_to_tensor(v) for v in variables])


class ReLUConvBN(LazyBlock):
  """ReLU -> conv -> BN, the preprocessing op of the cells."""

  def __init__(self, c_out, kernel_size, stride, padding, affine, synchronized=False, **kwargs):
    super().__init__(**kwargs)
    self.conv = Conv(c_out, kernel_size, stride, padding)
    self.bn = BatchNorm(affine, synchronized)

  def call(self, x, training=False):
    return normalize_alone(self.steps(x), training)

  def steps(self, x):
    """call() as a generator of its batch norm's request (normalize_alone)."""
    return (yield BatchNormRequest(self.bn, self.conv(tf.nn.relu(x))))


class DilConv(keras.layers.Layer):
  """ReLU -> dilated depthwise kxk -> 1x1 conv -> BN (one block).

  With `groups` = k the block is k independent blocks side by side (the 1x1
  conv is grouped), one per edge of a search cell. `shared_input`: the input is
  the already rectified input that those k edges share, one copy of its
  channels; each edge's copy is made inside the recomputation, so that only the
  one copy stays in memory for the backward pass.
  """

  def __init__(self, c_out, kernel_size, stride, padding, dilation, affine, synchronized=False,
               groups=1, shared_input=False, **kwargs):
    super().__init__(**kwargs)
    self.c_out = c_out
    self.kernel_size, self.stride, self.padding, self.dilation = (
        kernel_size, stride, padding, dilation)
    self.groups, self.shared_input = groups, shared_input
    self.pointwise = Conv(c_out, 1, groups=groups)
    self.bn = BatchNorm(affine, synchronized)

  def build(self, input_shape):
    copies = self.groups if self.shared_input else 1
    shape = (*input_shape[:-1], input_shape[-1] * copies)
    self.depthwise = Conv(shape[-1], self.kernel_size, self.stride, self.padding,
                          self.dilation, depthwise=True)
    self.depthwise.build(shape)
    self.pointwise.build(shape)

  def call(self, x, training=False, scale=None, phased=False):
    """`phased`: x (and the result) split into the dilation's phases (Conv.convolve)."""
    return normalize_alone(self.steps(x, scale, phased), training)

  def steps(self, x, scale=None, phased=False):
    """call() as a generator of its batch norm's request (normalize_alone)."""
    copies = self.groups if self.shared_input else 1
    if not self.shared_input:
      x = tf.nn.relu(x)

    def block(x, dw, pw):
      if copies > 1:
        x = tf.tile(x, [1, 1, 1, copies])  # edge-major: each edge's copy of the channels
      return self.pointwise.convolve(self.depthwise.convolve(x, dw, phased), pw)

    y = recomputed(block, x, self.depthwise.kernel, self.pointwise.kernel)
    return (yield BatchNormRequest(self.bn, y, scale))  # the same statistics in phases


class SepConv(keras.layers.Layer):
  """Two stacked separable blocks; the stride is on the first depthwise conv only.

  `groups` as in DilConv; `shared_input` applies to the first block (the second
  takes each edge's own channels).
  """

  def __init__(self, c_out, kernel_size, stride, padding, affine, synchronized=False, groups=1,
               shared_input=False, **kwargs):
    super().__init__(**kwargs)
    self.c_out = c_out
    self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
    self.affine, self.synchronized = affine, synchronized
    self.groups, self.shared_input = groups, shared_input

  def build(self, input_shape):
    c_mid = input_shape[-1] * (self.groups if self.shared_input else 1)  # C_in, per edge
    self.block1 = DilConv(c_mid, self.kernel_size, self.stride, self.padding, 1, self.affine,
                          self.synchronized, self.groups, self.shared_input)
    self.block2 = DilConv(self.c_out, self.kernel_size, 1, self.padding, 1, self.affine,
                          self.synchronized, self.groups)
    # Built here: steps() runs the blocks' steps, not their calls (which would build them).
    self.block1.build(input_shape)
    self.block2.build((*input_shape[:-1], c_mid))

  def call(self, x, training=False, scale=None):
    return normalize_alone(self.steps(x, scale), training)

  def steps(self, x, scale=None):
    """call() as a generator of its batch norms' requests (normalize_alone)."""
    y = yield from self.block1.steps(x)
    return (yield from self.block2.steps(y, scale))


class FactorizedReduce(LazyBlock):
  """ReLU -> two stride-2 1x1 convs, the second on the input shifted by one pixel -> BN.

  With `edges` = k it is k of them on the same input, side by side in the
  output (edge-major: each edge's conv1 then conv2 channels); `relu=False`
  takes an input that is already rectified.
  """

  def __init__(self, c_out, affine, synchronized=False, edges=1, relu=True, **kwargs):
    super().__init__(**kwargs)
    if c_out % 2:
      raise UserInputError(f"FactorizedReduce needs an even channel count, got {c_out}")
    self.c_out, self.edges, self.relu = c_out, edges, relu
    self.conv1 = Conv(edges * c_out // 2, 1, stride=2)
    self.conv2 = Conv(edges * c_out // 2, 1, stride=2)
    self.bn = BatchNorm(affine, synchronized)

  def call(self, x, training=False, scale=None):
    return normalize_alone(self.steps(x, scale), training)

  def steps(self, x, scale=None):
    """call() as a generator of its batch norm's request (normalize_alone)."""
    if self.relu:
      x = tf.nn.relu(x)
    # tf.slice: its gradient is a Pad, much cheaper than a strided slice's.
    a, b = self.conv1(x), self.conv2(tf.slice(x, [0, 1, 1, 0], [-1, -1, -1, -1]))
    if self.edges == 1:
      y = tf.concat([a, b], axis=-1)
    else:
      shape = image_shape(a, self.edges, self.c_out // 2)
      y = tf.concat([tf.reshape(a, shape), tf.reshape(b, shape)], axis=-1)
      y = tf.reshape(y, image_shape(a, self.edges * self.c_out))
    return (yield BatchNormRequest(self.bn, y, scale))


class Pool(LazyBlock):
  """3x3 max or average pool, padding 1; the average does not count padding.

  In the search network a non-affine BN follows (the original's pool -> BN).
  """

  def __init__(self, kind, stride, bn=None, **kwargs):
    super().__init__(**kwargs)
    self.kind = kind
    self.stride = stride
    self.bn = bn

  def call(self, x, training=False):
    return normalize_alone(self.steps(x), training)

  def steps(self, x):
    """call() as a generator of its batch norm's request, if it has one (normalize_alone)."""
    if self.stride == 1:
      # 'SAME' at stride 1 pads symmetrically; TF's max pool ignores the padding and
      # its average pool leaves it out of the count, as count_include_pad=False.
      pool = tf.nn.max_pool2d if self.kind == "max" else tf.nn.avg_pool2d
      y = pool(x, 3, 1, "SAME")
    elif self.kind == "max":
      y = tf.nn.max_pool2d(_pad(x, 1, float("-inf")), 3, self.stride, "VALID")
    else:
      total = tf.nn.avg_pool2d(_pad(x, 1), 3, self.stride, "VALID")
      ones = tf.ones_like(x[:1, :, :, :1])
      count = tf.nn.avg_pool2d(_pad(ones, 1), 3, self.stride, "VALID")
      y = total / count
    if self.bn is not None:
      y = yield BatchNormRequest(self.bn, y)
    return y


class Identity(LazyBlock):

  def call(self, x, training=False):
    return x

  def steps(self, x):
    """call() as a generator (normalize_alone) that has no request."""
    return x
    yield  # pylint: disable=unreachable


class Zero(LazyBlock):
  """The 'none' op: zeros, subsampled when the stride is 2."""

  def __init__(self, stride, **kwargs):
    super().__init__(**kwargs)
    self.stride = stride

  def call(self, x, training=False):
    return tf.zeros_like(x[:, ::self.stride, ::self.stride, :])


def conv_op(name, c_out, stride, affine, synchronized=False, groups=1, shared_input=False):
  """One of CONV_OPS; `groups` and `shared_input` as in DilConv (a search cell's edges)."""
  kind, kernel, padding, dilation = CONV_OPS[name]
  if kind == "sep":
    return SepConv(c_out, kernel, stride, padding, affine, synchronized, groups, shared_input)
  return DilConv(c_out, kernel, stride, padding, dilation, affine, synchronized, groups,
                 shared_input)


def make_op(name, c, stride, affine, search=False, synchronized=False, edges=1,
            shared_input=False):
  """Builds one primitive with C channels in and out: the one table of the ops, for the
  search network and the evaluation networks.

  `search=True` adds the BN after each pool (the search network only). `edges` and
  `shared_input` (the search cell's EdgeGroup): the ops with parameters are `edges` ops
  side by side, edge-major, on one input that is already rectified (see DilConv); the
  ops without parameters give every edge the same output.
  """
  if name == "none":
    return Zero(stride)
  if name in POOL_OPS:
    return Pool(POOL_OPS[name], stride, BatchNorm(False, synchronized) if search else None)
  if name == "skip_connect":
    return Identity() if stride == 1 else FactorizedReduce(
        c, affine, synchronized, edges=edges, relu=not shared_input)
  if name in CONV_OPS:
    return conv_op(name, edges * c, stride, affine, synchronized, groups=edges,
                   shared_input=shared_input)
  raise UserInputError(f"unknown op '{name}'; known ops: {', '.join(OP_NAMES)}")

