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

from tfnas import genotype as genotype_lib
from tfnas import ops
from tfnas.errors import UserInputError

DROP_PATH_STYLES = ("op", "node")

_AUX_POOL = 5  # the auxiliary head's average pool window


def _fold(seed, value):
  return tf.random.experimental.stateless_fold_in(seed, value)


def _replica_id():
  ctx = tf.distribute.get_replica_context()
  return 0 if ctx is None else ctx.replica_id_in_sync_group


def _fresh_seed():
  return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)


def built_entries(entries):
  """The (op, to, from) entries a cell builds: those whose source exists."""
  existing = set(genotype_lib.live_nodes(entries)) | {0, 1}
  return tuple(e for e in entries if e[2] in existing)


def drop_path(x, drop_prob, seed=None, edge_axis=None):
  """Zeroes whole samples with probability drop_prob and scales the rest by 1/keep.

  `seed` is a stateless [2] int seed; None draws one from the global generator.
  `edge_axis`: x holds several edges' outputs along this axis, each dropped on its own.
  """
  if seed is None:
    seed = _fresh_seed()
  keep = 1.0 - tf.cast(drop_prob, tf.float32)
  mask_shape = [tf.shape(x)[0]] + [1] * (x.shape.rank - 1)
  if edge_axis is not None:
    mask_shape[edge_axis] = tf.shape(x)[edge_axis]
  u = tf.random.stateless_uniform(tf.stack(mask_shape), seed)
  # u < keep (not floor(keep + u), which rounds up to 2 near u = 1): keep = 1
  # keeps every sample exactly, keep = 0 drops all without dividing by zero.
  mask = tf.cast(u < keep, x.dtype)
  return tf.math.divide_no_nan(x, tf.cast(keep, x.dtype)) * mask


class EvalCell(ops.Block):
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
    cell = "reduce" if reduction else "normal"
    self.reduction = reduction
    self.drop_path_style = drop_path
    self.c_prev_prev, self.c_prev, self.c = c_prev_prev, c_prev, c
    self.nodes = tuple(genotype_lib.live_nodes(genotype_cell_entries))
    self.entries = built_entries(genotype_cell_entries)
    self.concat = tuple(n for n in concat if n in self.nodes)
    if not self.concat:
      raise UserInputError(
          f"the genotype's {cell} cell has no existing node to output (concat "
          f"{list(concat)}, existing nodes {list(self.nodes)})")
    self.multiplier = len(self.concat)
    if reduction_prev:
      self.preprocess0 = ops.FactorizedReduce(c, affine=True)
    else:
      self.preprocess0 = ops.ReLUConvBN(c, 1, 1, 0, affine=True)
    self.preprocess1 = ops.ReLUConvBN(c, 1, 1, 0, affine=True)
    self.edge_ops = [ops.make_op(op, c, 2 if reduction and src < 2 else 1, affine=True)
                     for op, _, src in self.entries]

  def call(self, s0, s1, training=False, drop_prob=0.0, seed=None):
    # Catches channel bookkeeping errors here rather than as a shape error deep inside.
    for name, s, c in (("s0", s0, self.c_prev_prev), ("s1", s1, self.c_prev)):
      if s.shape[-1] is not None and s.shape[-1] != c:
        raise ValueError(f"{self.name}: {name} has {s.shape[-1]} channels, expected {c}")
    if training and seed is None:
      seed = _fresh_seed()
    states = {0: self.preprocess0(s0, training=training),
              1: self.preprocess1(s1, training=training)}
    for node in self.nodes:
      total = None
      for k, ((_, to, src), op) in enumerate(zip(self.entries, self.edge_ops)):
        if to != node:
          continue
        y = op(states[src], training=training)
        if training and self.drop_path_style == "op" and not isinstance(op, ops.Identity):
          y = drop_path(y, drop_prob, _fold(seed, k))
        total = y if total is None else total + y
      if training and self.drop_path_style == "node":
        total = drop_path(total, drop_prob, _fold(seed, node))
      states[node] = total
    return tf.concat([states[n] for n in self.concat], axis=-1)


class AuxiliaryHead(ops.Block):
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
    self.classifier = keras.layers.Dense(
        self.num_classes, kernel_initializer=ops.torch_uniform(features),
        bias_initializer=ops.torch_uniform(features))
    self.classifier.build((None, features))

  def call(self, x, training=False):
    x = tf.nn.avg_pool2d(tf.nn.relu(x), _AUX_POOL, self.pool_stride, "VALID")
    x = tf.nn.relu(self.bn1(self.conv1(x), training=training))
    x = self.conv2(x)
    if self.bn2 is not None:
      x = self.bn2(x, training=training)
    x = tf.nn.relu(x)
    return self.classifier(tf.reshape(x, [tf.shape(x)[0], -1]))


def _check_network_args(init_channels, layers, num_classes):
  for name, value, low in (("init_channels", init_channels, 1), ("layers", layers, 1),
                           ("num_classes", num_classes, 2)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
      raise UserInputError(f"{name} must be an integer >= {low}, got {value!r}")


def _classifier(num_classes, fan_in):
  # Separate initializer objects: an unseeded Keras initializer repeats its draw.
  return keras.layers.Dense(num_classes, kernel_initializer=ops.torch_uniform(fan_in),
                            bias_initializer=ops.torch_uniform(fan_in))


class _Network(ops.ListsInCheckpoints, keras.Model):
  """What both evaluation networks share: the cell stack, aux head and drop path."""

  def _make_cells(self, genotype, layers, c_prev_prev, c_prev, c, reduction_prev, drop_path):
    """Stacks the cells; returns the channels of the last cell's output."""
    if not isinstance(genotype, genotype_lib.Genotype):
      raise UserInputError(f"expected a Genotype, got {type(genotype).__name__}")
    self.reduction_cells = tuple(sorted({layers // 3, 2 * layers // 3}))
    self.aux_index = 2 * layers // 3
    self.cells = []
    self.aux_channels = None
    for i in range(layers):
      reduction = i in self.reduction_cells
      if reduction:
        c *= 2
        entries, concat = genotype.reduce, genotype.reduce_concat
      else:
        entries, concat = genotype.normal, genotype.normal_concat
      cell = EvalCell(entries, concat, c_prev_prev, c_prev, c, reduction, reduction_prev,
                      drop_path, name=f"cell_{i}")
      self.cells.append(cell)
      reduction_prev = reduction
      c_prev_prev, c_prev = c_prev, cell.multiplier * c
      if i == self.aux_index:
        self.aux_channels = c_prev
    # Set from outside per epoch (a variable, so changing it does not retrace).
    self.drop_path_prob = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                          name="drop_path_prob")
    return c_prev

  def build(self, input_shape):
    del input_shape  # the layers build on the first call (see ops.Block)

  @property
  def aux_variables(self):
    """The auxiliary head's variables (none without the head)."""
    return [] if self.auxiliary_head is None else list(self.auxiliary_head.variables)

  def _run_cells(self, s0, s1, training, seed):
    """Runs the cells; returns (last output, aux logits or None)."""
    if training:
      seed = _fresh_seed() if seed is None else seed
      # Replicas draw different masks for their different samples.
      seed = _fold(seed, _replica_id())
    logits_aux = None
    for i, cell in enumerate(self.cells):
      s0, s1 = s1, cell(s0, s1, training=training, drop_prob=self.drop_path_prob,
                        seed=_fold(seed, i) if training else None)
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

  def _check_size(self, height, width, factor, what):
    if height % factor or width % factor:
      raise UserInputError(
          f"image size {height}x{width} does not fit the {what} network: height and width "
          f"must be multiples of {factor}")
    aux = self.auxiliary_head
    if aux is not None:
      # The 2x2 conv after the pool needs at least 2x2 pooled positions.
      least = (_AUX_POOL + aux.pool_stride) * factor
      if min(height, width) < least:
        raise UserInputError(
            f"image size {height}x{width} is too small for the auxiliary head: it needs at "
            f"least {least}x{least}; leave the head out with --noauxiliary")


class NetworkCIFAR(_Network):
  """The DARTS CIFAR evaluation network.

  call(x, training=False, seed=None) returns logits, or (logits, aux_logits) in
  training with the auxiliary head. `seed` is an optional stateless [2] int
  seed for drop path; without it the masks come from the global generator.
  """

  def __init__(self, genotype, init_channels=36, layers=20, num_classes=10, auxiliary=True,
               drop_path="op", stem_multiplier=3, **kwargs):
    super().__init__(**kwargs)
    _check_network_args(init_channels, layers, num_classes)
    if stem_multiplier < 1:
      raise UserInputError(f"stem_multiplier must be >= 1, got {stem_multiplier}")
    c_stem = stem_multiplier * init_channels
    self.stem_conv = ops.Conv(c_stem, 3, padding=1)
    self.stem_bn = ops.BatchNorm(affine=True)
    c_out = self._make_cells(genotype, layers, c_stem, c_stem, init_channels, False, drop_path)
    self.auxiliary_head = (AuxiliaryHead(num_classes, 3, second_bn=True, name="aux_head")
                           if auxiliary else None)
    self.classifier = _classifier(num_classes, c_out)

  def check_image_size(self, height, width):
    """Raises UserInputError unless the reductions and the aux head fit the image."""
    factor = 2 ** len(self.reduction_cells)
    self._check_size(height, width, factor, "CIFAR")

  def call(self, x, training=False, seed=None):
    self._check_image(x)
    s = self.stem_bn(self.stem_conv(x), training=training)
    return self._finish(*self._run_cells(s, s, training, seed))


class NetworkImageNet(_Network):
  """The DARTS ImageNet network (mobile setting: 224x224 input, three stride-2 stem convs).

  Same call as NetworkCIFAR.
  """

  def __init__(self, genotype, init_channels=48, layers=14, num_classes=1000, auxiliary=True,
               drop_path="op", **kwargs):
    super().__init__(**kwargs)
    _check_network_args(init_channels, layers, num_classes)
    if init_channels < 2 or init_channels % 2:
      raise UserInputError(f"init_channels must be even for ImageNet, got {init_channels}")
    c = init_channels
    self.stem0_conv1 = ops.Conv(c // 2, 3, stride=2, padding=1)
    self.stem0_bn1 = ops.BatchNorm(affine=True)
    self.stem0_conv2 = ops.Conv(c, 3, stride=2, padding=1)
    self.stem0_bn2 = ops.BatchNorm(affine=True)
    self.stem1_conv = ops.Conv(c, 3, stride=2, padding=1)
    self.stem1_bn = ops.BatchNorm(affine=True)
    # The first cell's s0 is stem0's output, at twice stem1's resolution.
    c_out = self._make_cells(genotype, layers, c, c, c, True, drop_path)
    self.auxiliary_head = (AuxiliaryHead(num_classes, 2, second_bn=False, name="aux_head")
                           if auxiliary else None)
    self.classifier = _classifier(num_classes, c_out)

  def check_image_size(self, height, width):
    """Raises UserInputError unless the stems, reductions and aux head fit the image."""
    factor = 8 * 2 ** len(self.reduction_cells)
    self._check_size(height, width, factor, "ImageNet")

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
  # Keras 3 has no public walk over nested layers; Model.layers uses this one.
  # pylint: disable=protected-access
  aux = model.auxiliary_head
  excluded = set() if aux is None else {id(layer) for layer in aux._flatten_layers()}
  total = 0
  for layer in model._flatten_layers():
    if id(layer) in excluded:
      continue
    if isinstance(layer, ops.Conv):
      total += layer.macs
    elif isinstance(layer, keras.layers.Dense):
      total += int(np.prod(layer.kernel.shape))
  return total


def built_op_counts(genotype):
  """{'normal': {op: count}, 'reduce': {...}} over the entries the cells build."""
  out = {}
  for cell in ("normal", "reduce"):
    counts = {}
    for op, _, _ in built_entries(getattr(genotype, cell)):
      counts[op] = counts.get(op, 0) + 1
    out[cell] = dict(sorted(counts.items()))
  return out


def figures(network, genotype, image_shape):
  """What describe.py prints and export.py stores: params, params_with_aux, macs, ops.

  params_with_aux only when the network has the auxiliary head. `network` is
  built by this call if needed (one inference pass on a zero image).
  """
  network.check_image_size(image_shape[0], image_shape[1])
  macs = count_macs(network, image_shape)
  out = {"params": count_params(network, include_aux=False)}
  if network.auxiliary_head is not None:
    out["params_with_aux"] = count_params(network, include_aux=True)
  return {**out, "macs": macs, "ops": built_op_counts(genotype)}
