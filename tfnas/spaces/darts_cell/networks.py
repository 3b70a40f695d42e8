"""The evaluation networks: a genotype's cells stacked deep and trained from scratch.

As in the DARTS evaluation code (CIFAR network, ImageNet mobile setting), with
Fair DARTS' rule for cells whose nodes lack inputs: a node exists only if it
has an input from a cell input or an existing node, edges from missing nodes
are ignored, and the cell concatenates the existing nodes among its concat
list, so its channel multiplier is their number. Ops are affine and the pools
have no BN after them. Drop path and the auxiliary head act in training only.
"""
import keras
import numpy as np
import tensorflow as tf

from tfnas.layers import ops
from tfnas.runtime import distribute
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import zoo
from tfnas.spaces.darts_cell import space as space_lib
from tfnas.spaces.darts_cell.space import edge_stride
from tfnas.spaces.darts_cell.space import reduction_cells

DROP_PATH_STYLES = space_lib.DROP_PATH_STYLES

_AUX_POOL = 5  # the auxiliary head's average pool window
# Per network kind: its name, how much the stem shrinks the image, the auxiliary head's settings.
_STEM_REDUCTION = {"cifar": 1, "imagenet": 8}
_KIND_NAME = {"cifar": "CIFAR", "imagenet": "ImageNet"}
_AUX_HEAD = {"cifar": dict(pool_stride=3, second_bn=True),
             "imagenet": dict(pool_stride=2, second_bn=False)}


def cell_structure(entries, concat, reduction):
  """(existing nodes, the entries built, the existing nodes output) of a genotype's cell.

  UserInputError if no node of the concat list exists.
  """
  nodes = tuple(genotype_lib.live_nodes(entries))
  out = tuple(n for n in concat if n in nodes)
  if not out:
    raise UserInputError(
        f"the genotype's {'reduce' if reduction else 'normal'} cell has no existing node to "
        f"output (concat {list(concat)}, existing nodes {list(nodes)})")
  return nodes, genotype_lib.built_entries(entries), out


def _stack(genotype, layers, c_prev_prev, c_prev, c, reduction_prev):
  """Yields, per cell as the networks stack them, (index, EvalCell's arguments from
  entries to reduction_prev, the cell's output channels)."""
  if not isinstance(genotype, genotype_lib.Genotype):
    raise UserInputError(f"expected a Genotype, got {type(genotype).__name__}")
  for i in range(layers):
    reduction = i in reduction_cells(layers)
    if reduction:
      c *= 2
      entries, concat = genotype.reduce, genotype.reduce_concat
    else:
      entries, concat = genotype.normal, genotype.normal_concat
    _, _, out = cell_structure(entries, concat, reduction)
    c_out = len(out) * c
    yield i, (entries, concat, c_prev_prev, c_prev, c, reduction, reduction_prev), c_out
    reduction_prev = reduction
    c_prev_prev, c_prev = c_prev, c_out


def cell_preprocessing(c, reduction_prev, affine, synchronized=False):
  """The layers that bring a cell's two inputs (s0, s1) to C channels at s1's size: a 1x1
  ReLUConvBN each, FactorizedReduce for s0 when the previous cell reduced (the search and
  the evaluation cells alike)."""
  if reduction_prev:
    pre0 = ops.FactorizedReduce(c, affine, synchronized)
  else:
    pre0 = ops.ReLUConvBN(c, 1, 1, 0, affine, synchronized)
  return pre0, ops.ReLUConvBN(c, 1, 1, 0, affine, synchronized)


class EvalCell(ops.LazyBlock):
  """A cell of the evaluation network, built from one cell of a genotype.

  drop_path: "op" drops each op's output except Identity (the DARTS cell);
  "node" drops each node's sum, identity included (Fair DARTS' DCOCell).
  """

  def __init__(self, genotype_cell_entries, concat, c_prev_prev, c_prev, c, reduction,
               reduction_prev, drop_path="op", **kwargs):
    super().__init__(**kwargs)
    if drop_path not in DROP_PATH_STYLES:
      raise UserInputError(
          f"unknown drop_path style '{drop_path}'; allowed: {', '.join(DROP_PATH_STYLES)}")
    self.reduction = reduction
    self.drop_path_style = drop_path
    self.c_prev_prev, self.c_prev, self.c = c_prev_prev, c_prev, c
    self.nodes, self.entries, self.concat = cell_structure(genotype_cell_entries, concat,
                                                           reduction)
    self.multiplier = len(self.concat)
    self.preprocess0, self.preprocess1 = cell_preprocessing(c, reduction_prev, affine=True)
    self.edge_ops = [ops.make_op(op, c, edge_stride(reduction, src), affine=True)
                     for op, _, src in self.entries]

  def call(self, s0, s1, training=False, drop_prob=0.0, seed=None):
    # Catches channel bookkeeping errors here rather than as a shape error deep inside.
    for name, s, c in (("s0", s0, self.c_prev_prev), ("s1", s1, self.c_prev)):
      if s.shape[-1] is not None and s.shape[-1] != c:
        raise ValueError(f"{self.name}: {name} has {s.shape[-1]} channels, expected {c}")
    if training and seed is None:
      seed = distribute.fresh_seed()
    states = {0: self.preprocess0(s0, training=training),
              1: self.preprocess1(s1, training=training)}
    for node in self.nodes:
      total = None
      for k, ((_, to, src), op) in enumerate(zip(self.entries, self.edge_ops)):
        if to != node:
          continue
        y = op(states[src], training=training)
        if training and self.drop_path_style == "op" and not isinstance(op, ops.Identity):
          y = ops.drop_path(y, drop_prob, distribute.fold_seed(seed, k))
        total = y if total is None else total + y
      if training and self.drop_path_style == "node":
        total = ops.drop_path(total, drop_prob, distribute.fold_seed(seed, node))
      states[node] = total
    return tf.concat([states[n] for n in self.concat], axis=-1)


class AuxiliaryHead(ops.LazyBlock):
  """ReLU -> 5x5 avg pool -> 1x1 conv 128 -> BN -> ReLU -> 2x2 conv 768 [-> BN] -> ReLU -> dense.

  CIFAR: pool stride 3 and both BNs; ImageNet: pool stride 2, no second BN (as
  the original, which kept the paper's typo). The pool has no padding, so
  count_include_pad does not matter: it is a plain average.
  """

  def __init__(self, num_classes, pool_stride, second_bn, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.pool_stride = pool_stride
    self.conv1 = ops.Conv(128, 1)
    self.bn1 = ops.BatchNorm(affine=True)
    self.conv2 = ops.Conv(768, 2)
    self.bn2 = ops.BatchNorm(affine=True) if second_bn else None

  def build(self, input_shape):
    # Builds every weight from the input shape, so the weights exist (and can
    # be counted) even if the head has only been skipped in inference so far.
    _, h, w, c = input_shape
    h, w = (h - _AUX_POOL) // self.pool_stride + 1, (w - _AUX_POOL) // self.pool_stride + 1
    self.conv1.build((None, h, w, c))
    self.bn1.build((None, h, w, 128))
    self.conv2.build((None, h, w, 128))
    if self.bn2 is not None:
      self.bn2.build((None, h - 1, w - 1, 768))
    # 768 features at the standard sizes (1x1 after the 2x2 conv); more when larger.
    features = (h - 1) * (w - 1) * 768
    self.classifier = ops.torch_dense(self.num_classes, features)
    self.classifier.build((None, features))

  def call(self, x, training=False):
    x = tf.nn.avg_pool2d(tf.nn.relu(x), _AUX_POOL, self.pool_stride, "VALID")
    x = tf.nn.relu(self.bn1(self.conv1(x), training=training))
    x = self.conv2(x)
    if self.bn2 is not None:
      x = self.bn2(x, training=training)
    x = tf.nn.relu(x)
    return self.classifier(tf.reshape(x, [tf.shape(x)[0], -1]))


def drop_path_granularity(genotype):
  """'op' for DARTS-rule cells (two inputs on every node), 'node' otherwise (Fair DARTS)."""
  for entries in (genotype.normal, genotype.reduce):
    nodes = {to for _, to, _ in entries}
    if any(sum(1 for _, to, _ in entries if to == n) != 2 for n in nodes) or len(
        genotype_lib.live_nodes(entries)) != len(nodes):
      return "node"
  return "op"


def auto_drop_path(name_or_path, genotype):
  """The drop path --drop_path=auto picks for the genotype that `name_or_path` (a zoo name or
  a JSON file) resolved to: 'node' for the FairDARTS_* zoo cells, trained as Fair DARTS' code
  trains them even where every node has two inputs; drop_path_granularity otherwise."""
  if name_or_path.startswith("FairDARTS_") and name_or_path in zoo.NAMES:
    return "node"
  return drop_path_granularity(genotype)


def _check_network_args(init_channels, layers, num_classes):
  for name, value, low in (("init_channels", init_channels, 1), ("layers", layers, 1),
                           ("num_classes", num_classes, 2)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
      raise UserInputError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_image_size(kind, layers, auxiliary, height, width):
  factor = _STEM_REDUCTION[kind] * 2 ** len(reduction_cells(layers))
  if height % factor or width % factor:
    raise UserInputError(
        f"image size {height}x{width} does not fit the {_KIND_NAME[kind]} network: height and "
        f"width must be multiples of {factor}")
  if auxiliary:
    # The 2x2 conv after the pool needs at least 2x2 pooled positions.
    least = (_AUX_POOL + _AUX_HEAD[kind]["pool_stride"]) * factor
    if min(height, width) < least:
      raise UserInputError(
          f"image size {height}x{width} is too small for the auxiliary head: it needs at "
          f"least {least}x{least}; leave the head out with --noauxiliary")


class _Network(ops.BuildsLazily, ops.ListsInCheckpoints, keras.Model):
  """What both evaluation networks share: the cell stack, aux head and drop path."""

  def _make_cells(self, genotype, layers, c_prev_prev, c_prev, c, reduction_prev, drop_path):
    """Stacks the cells; returns the channels of the last cell's output."""
    self.reduction_cells = reduction_cells(layers)
    self.aux_index = 2 * layers // 3
    self.cells = []
    self.aux_channels = None
    c_out = c_prev
    for i, settings, c_out in _stack(genotype, layers, c_prev_prev, c_prev, c, reduction_prev):
      self.cells.append(EvalCell(*settings, drop_path, name=f"cell_{i}"))
      if i == self.aux_index:
        self.aux_channels = c_out
    # Set from outside per epoch (a variable, so changing it does not retrace).
    self.drop_path_prob = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                          name="drop_path_prob")
    return c_out

  @property
  def aux_variables(self):
    """The auxiliary head's variables (none without the head)."""
    return [] if self.auxiliary_head is None else list(self.auxiliary_head.variables)

  def _run_cells(self, s0, s1, training, seed):
    """Runs the cells; returns (last output, aux logits or None)."""
    if training:
      seed = distribute.replica_seed(seed)
    logits_aux = None
    for i, cell in enumerate(self.cells):
      s0, s1 = s1, cell(s0, s1, training=training, drop_prob=self.drop_path_prob,
                        seed=distribute.fold_seed(seed, i) if training else None)
      if i == self.aux_index and self.auxiliary_head is not None:
        if training:
          logits_aux = self.auxiliary_head(s1, training=True)
        elif not self.auxiliary_head.built:
          self.auxiliary_head.build(s1.shape)
    return s1, logits_aux

  def _finish(self, s1, logits_aux):
    logits = self.classifier(tf.reduce_mean(s1, axis=[1, 2]))
    return logits if logits_aux is None else (logits, logits_aux)

  def _check_image(self, x):
    if x.shape.rank != 4:
      raise UserInputError(f"expected a [batch, height, width, channels] batch, got {x.shape}")
    if x.shape[1] is not None and x.shape[2] is not None:
      self.check_image_size(int(x.shape[1]), int(x.shape[2]))

  def check_image_size(self, height, width):
    """Raises UserInputError unless the stem, the reductions and the aux head fit the image."""
    _check_image_size(self.KIND, len(self.cells), self.auxiliary_head is not None, height,
                      width)


class NetworkCIFAR(_Network):
  """The DARTS CIFAR evaluation network.

  call(x, training=False, seed=None) returns logits, or (logits, aux_logits) in
  training with the auxiliary head. `seed` is an optional stateless [2] int
  seed for drop path; without it the masks come from the global generator.
  """
  KIND = "cifar"

  def __init__(self, genotype, init_channels=36, layers=20, num_classes=10, auxiliary=True,
               drop_path="op", stem_multiplier=3, **kwargs):
    super().__init__(**kwargs)
    _check_network_args(init_channels, layers, num_classes)
    if stem_multiplier < 1:
      raise UserInputError(f"stem_multiplier must be >= 1, got {stem_multiplier}")
    self.init_channels, self.num_classes, self.stem_multiplier = (
        init_channels, num_classes, stem_multiplier)
    c_stem = stem_multiplier * init_channels
    self.stem_conv = ops.Conv(c_stem, 3, padding=1)
    self.stem_bn = ops.BatchNorm(affine=True)
    c_out = self._make_cells(genotype, layers, c_stem, c_stem, init_channels, False, drop_path)
    self.auxiliary_head = (AuxiliaryHead(num_classes, **_AUX_HEAD["cifar"], name="aux_head")
                           if auxiliary else None)
    self.classifier = ops.torch_dense(num_classes, c_out)

  def call(self, x, training=False, seed=None):
    self._check_image(x)
    s = self.stem_bn(self.stem_conv(x), training=training)
    return self._finish(*self._run_cells(s, s, training, seed))


class NetworkImageNet(_Network):
  """The DARTS ImageNet network (mobile setting: 224x224 input, three stride-2 stem convs).

  Same call as NetworkCIFAR.
  """
  KIND = "imagenet"

  def __init__(self, genotype, init_channels=48, layers=14, num_classes=1000, auxiliary=True,
               drop_path="op", **kwargs):
    super().__init__(**kwargs)
    _check_network_args(init_channels, layers, num_classes)
    if init_channels < 2 or init_channels % 2:
      raise UserInputError(f"init_channels must be even for ImageNet, got {init_channels}")
    self.init_channels, self.num_classes, self.stem_multiplier = init_channels, num_classes, None
    c = init_channels
    self.stem0_conv1 = ops.Conv(c // 2, 3, stride=2, padding=1)
    self.stem0_bn1 = ops.BatchNorm(affine=True)
    self.stem0_conv2 = ops.Conv(c, 3, stride=2, padding=1)
    self.stem0_bn2 = ops.BatchNorm(affine=True)
    self.stem1_conv = ops.Conv(c, 3, stride=2, padding=1)
    self.stem1_bn = ops.BatchNorm(affine=True)
    # The first cell's s0 is stem0's output, at twice stem1's resolution.
    c_out = self._make_cells(genotype, layers, c, c, c, True, drop_path)
    self.auxiliary_head = (AuxiliaryHead(num_classes, **_AUX_HEAD["imagenet"], name="aux_head")
                           if auxiliary else None)
    self.classifier = ops.torch_dense(num_classes, c_out)

  def call(self, x, training=False, seed=None):
    self._check_image(x)
    s0 = tf.nn.relu(self.stem0_bn1(self.stem0_conv1(x), training=training))
    s0 = self.stem0_bn2(self.stem0_conv2(s0), training=training)
    s1 = self.stem1_bn(self.stem1_conv(tf.nn.relu(s0)), training=training)
    return self._finish(*self._run_cells(s0, s1, training, seed))


def _check_built(model):
  if not model.classifier.built:
    raise ValueError("call the network once (e.g. count_macs) before counting its parameters")


def count_params(model, include_aux):
  """Trainable parameters, as PyTorch counts them (BN scale and offset, not running stats)."""
  _check_built(model)
  excluded = set() if include_aux else {id(v) for v in model.aux_variables}
  return int(sum(np.prod(v.shape) for v in model.trainable_variables
                 if id(v) not in excluded))


def count_macs(model, image_shape):
  """Multiply-accumulates of one image's inference: conv and dense layers, no aux head.

  image_shape: (height, width) or (height, width, channels). Runs one forward
  pass on a zero image; each ops.Conv records its count from static shapes.
  """
  if len(image_shape) == 2:
    image_shape = (*image_shape, 3)
  model(tf.zeros([1, *image_shape]), training=False)
  aux = model.auxiliary_head
  return ops.layer_macs(model, excluded=() if aux is None else (aux,))


# The counts by shape arithmetic: what count_params and count_macs give for the built
# network, in microseconds instead of seconds (a test compares the two on every op).
def _conv(c_in, c_out, k, stride, padding, size, dilation=1, groups=1):
  """(params, macs, output size) of an ops.Conv on a `size` (h, w) input."""
  out = tuple((n + 2 * padding - dilation * (k - 1) - 1) // stride + 1 for n in size)
  params = k * k * (c_in // groups) * c_out
  return params, params * out[0] * out[1], out


def _add(*counts):
  return tuple(map(sum, zip(*counts)))


def _relu_conv_bn(c_in, c_out, size):
  params, macs, _ = _conv(c_in, c_out, 1, 1, 0, size)
  return params + 2 * c_out, macs


def _factorized_reduce(c_in, c_out, size):
  # conv2 reads the input shifted by one pixel
  p1, m1, _ = _conv(c_in, c_out // 2, 1, 2, 0, size)
  p2, m2, _ = _conv(c_in, c_out // 2, 1, 2, 0, tuple(n - 1 for n in size))
  return p1 + p2 + 2 * c_out, m1 + m2


def _op_counts(name, c, stride, size):
  """(params, macs) of make_op(name, c, stride, affine=True) on a `size` input."""
  if name not in ops.OP_NAMES:
    ops.make_op(name, c, stride, affine=True)  # raises the unknown op's error
  if name == "skip_connect" and stride > 1:
    return _factorized_reduce(c, c, size)
  if name not in ops.CONV_OPS:  # none, pools (no BN after them here), identity
    return 0, 0
  kind, k, padding, dilation = ops.CONV_OPS[name]
  # sep: two separable blocks, the stride on the first; dil: one dilated block
  blocks = ((stride, 1), (1, 1)) if kind == "sep" else ((stride, dilation),)
  total = (0, 0)
  for s, d in blocks:
    p1, m1, size = _conv(c, c, k, s, padding, size, d, groups=c)  # depthwise
    p2, m2, size = _conv(c, c, 1, 1, 0, size)  # pointwise
    total = _add(total, (p1 + p2 + 2 * c, m1 + m2))
  return total


def _cell_counts(entries, concat, c_prev_prev, c_prev, c, reduction, reduction_prev, size):
  """(params, macs) of an EvalCell whose s1 is `size` (s0 twice that after a reduction)."""
  pre0 = (_factorized_reduce(c_prev_prev, c, tuple(2 * n for n in size)) if reduction_prev
          else _relu_conv_bn(c_prev_prev, c, size))
  total = _add(pre0, _relu_conv_bn(c_prev, c, size))
  _, built, _ = cell_structure(entries, concat, reduction)
  for op, _, src in built:
    stride = edge_stride(reduction, src)
    src_size = size if src < 2 or not reduction else _reduced(size)
    total = _add(total, _op_counts(op, c, stride, src_size))
  return total


def _reduced(size):
  return tuple((n + 1) // 2 for n in size)


def _aux_counts(kind, c, num_classes, size):
  """Parameters of the auxiliary head on a `size` input of c channels."""
  stride, second_bn = _AUX_HEAD[kind]["pool_stride"], _AUX_HEAD[kind]["second_bn"]
  h, w = ((n - _AUX_POOL) // stride + 1 for n in size)
  features = (h - 1) * (w - 1) * 768
  return (128 * c + 2 * 128 + 2 * 2 * 128 * 768 + (2 * 768 if second_bn else 0)
          + features * num_classes + num_classes)


def counts_from_shapes(kind, genotype, image_shape, init_channels, layers, num_classes,
                       auxiliary=True, stem_multiplier=3):
  """params, params_with_aux (with the head), macs (as count_params and count_macs) and ops of the
  evaluation network of this kind ('cifar' or 'imagenet') and settings, from shapes only.

  Raises UserInputError where building the network would.
  """
  _check_network_args(init_channels, layers, num_classes)
  size = tuple(image_shape[:2])
  _check_image_size(kind, layers, auxiliary, *size)
  c = init_channels
  if kind == "cifar":
    c_stem = stem_multiplier * c
    params, macs, size = _conv(3, c_stem, 3, 1, 1, size)
    stem = (params + 2 * c_stem, macs)
    channels, reduction_prev = (c_stem, c_stem, c), False
  else:
    if c < 2 or c % 2:
      raise UserInputError(f"init_channels must be even for ImageNet, got {c}")
    p1, m1, size = _conv(3, c // 2, 3, 2, 1, size)
    p2, m2, size = _conv(c // 2, c, 3, 2, 1, size)
    p3, m3, size = _conv(c, c, 3, 2, 1, size)
    stem = (p1 + p2 + p3 + c + 4 * c, m1 + m2 + m3)
    channels, reduction_prev = (c, c, c), True
  total, aux = stem, 0
  c_out = channels[1]
  for i, settings, c_out in _stack(genotype, layers, *channels, reduction_prev):
    total = _add(total, _cell_counts(*settings, size))
    if settings[5]:  # a reduction cell halves the image
      size = _reduced(size)
    if auxiliary and i == 2 * layers // 3:
      aux = _aux_counts(kind, c_out, num_classes, size)
  params, macs = _add(total, (c_out * num_classes + num_classes, c_out * num_classes))
  out = {"params": params}
  if auxiliary:
    out["params_with_aux"] = params + aux
  return {**out, "macs": macs, "ops": genotype_lib.count_ops(genotype, built_only=True)}


# The evaluation networks by kind (their settings in the papers: space.KIND_SETTINGS).
NETWORK_KINDS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}
