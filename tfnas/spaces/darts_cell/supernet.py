"""The DARTS search network: mixed ops (MixedOp as the paper writes it, EdgeGroup as the
search runs it), search cells, and the network with its alphas."""
import keras
import tensorflow as tf

from tfnas.layers import ops
from tfnas.methods import parts
from tfnas.runtime import distribute
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import networks
from tfnas.spaces.darts_cell import space as space_lib


class MixedOp(ops.LazyBlock):
  """One edge of the search cell as the DARTS paper writes it (eq. 2):

      o_mixed(x) = sum_k f(alpha_k) * o_k(x)

  over the candidate ops o_k, with f = softmax over the edge's alphas (DARTS, Noisy
  DARTS) or a sigmoid of each alpha (Fair DARTS). call(x, weights) takes the edge's
  f(alpha) (methods.parts.relax), one weight per op. Each candidate is its own layer from
  the op table (ops.make_op, as the search builds them: BN without affine parameters,
  a BN after each pool); 'none' is o_k(x) = 0. In training, skip_connect's output
  gets Noisy DARTS' noise (methods.parts.add_noise, if `noise`) and then drop-path
  (ops.drop_path with skip_drop_prob) before its weight, as the original:
  w_skip * drop_path(noise(o_skip(x))).

  The readable reference, not the fast path: EdgeGroup computes the same for all the
  edges that leave one state at once, and the search network runs that;
  tests/spaces/darts_cell/supernet_test.py checks that the two agree (outputs, gradients, running
  statistics, and the noise and drop-path draws of an edge).
  """

  def __init__(self, primitives, c, stride, noise=None, synchronized=False, skip_drop_prob=0.0,
               **kwargs):
    super().__init__(**kwargs)
    self.primitives, self.noise, self.skip_drop_prob = tuple(primitives), noise, skip_drop_prob
    self.candidates = [ops.make_op(name, c, stride, affine=False, search=True,
                                   synchronized=synchronized) for name in self.primitives]

  def call(self, x, weights, training=False, noise_seed=None, noise_scale=1.0):
    """x: [B, H, W, C]; weights: [ops]. noise_seed: the stateless seed of the skip's draws."""
    out = 0.0
    for k, (name, op) in enumerate(zip(self.primitives, self.candidates)):
      y = op(x, training=training)
      if name == "skip_connect" and training and (self.noise is not None or self.skip_drop_prob):
        seed = distribute.replica_seed(noise_seed)
        if self.noise is not None:
          y = parts.add_noise(y, self.noise, seed, noise_scale)
        if self.skip_drop_prob > 0:
          y = ops.drop_path(y, self.skip_drop_prob, distribute.fold_seed(seed, 1))
      out += tf.cast(weights[k], y.dtype) * y
    return out


@tf.custom_gradient
def _edge_weighted(y, w):
  """y * w for y [B, H, W, edges or 1, C] and w [edges, 1], with a faster gradient.

  TensorFlow sums the broadcast product for w's gradient over four axes in one
  reduction; summing the contiguous channels first and then the rest takes half
  the time (the shared ops of every edge group need it).
  """
  def grad(d):
    edges, c = w.shape[0], y.shape[-1]
    per_edge = tf.reduce_sum(tf.reshape(d * y, [-1, c]), axis=1)
    dw = tf.reduce_sum(tf.reshape(per_edge, [-1, edges]), axis=0)[:, None]
    dy = d * w
    if y.shape[3] == 1:
      dy = tf.reduce_sum(dy, axis=3, keepdims=True)
    return dy, dw
  return y * w, grad


class EdgeGroup(ops.LazyBlock):
  """The mixed ops of every edge that leaves one state of a cell, computed together.

  Each edge's output is the sum of every candidate op on the input, weighted by
  the edge's architecture weights (MixedOp, the paper's form). The edges that share
  an input apply the same ops to it with their own parameters, and batch norm
  and depthwise convolutions act per channel, so one op over `edges` edges is
  one op over edges * C channels: the rectified input tiled edge-major, the 1x1
  convolutions grouped per edge. Parameter-free ops (the pools with their
  affine-free BN, identity) give the same result on every edge and are computed
  once. An op with parameters per edge ends in an affine-free batch norm, which
  multiplies each edge's channels by that edge's weight (no separate multiply,
  and its output need not be kept for the weight's gradient). The outputs equal
  separate MixedOps' (tests/spaces/darts_cell/supernet_test.py), from a graph a fraction of
  the size. 'none' contributes zero and is not computed; its weight still takes
  part in the softmax. The ops come from the op table (ops.make_op with `edges`),
  but for the dilated convs at stride 2 (below). In training, skip_connect's output
  gets the method's noise and then its drop-path (skip_drop_prob), each edge its
  own, before its weight.
  """

  def __init__(self, primitives, c, stride, edges, noise=None, synchronized=False,
               skip_drop_prob=0.0, **kwargs):
    super().__init__(**kwargs)
    self.primitives, self.c, self.stride, self.edges = tuple(primitives), c, stride, edges
    self.noise, self.skip_drop_prob = noise, skip_drop_prob
    self.synchronized = synchronized
    self.op_index, self.candidates = [], []
    for k, name in enumerate(self.primitives):
      if name == "none":
        continue
      if name in ops.CONV_OPS and self._on_even_pixels(name):
        # A conv dilated by d at stride d only reads the pixels at multiples of d:
        # a plain conv on those (same parameters), subsampled once for the group.
        _, kernel, padding, dilation = ops.CONV_OPS[name]
        op = ops.DilConv(edges * c, kernel, 1, padding // dilation, 1, False, synchronized,
                         groups=edges, shared_input=True)
      else:
        op = ops.make_op(name, c, stride, affine=False, search=True, synchronized=synchronized,
                         edges=edges, shared_input=True)
      self.op_index.append(k)
      self.candidates.append(op)

  def _on_even_pixels(self, name):
    kind, _, _, dilation = ops.CONV_OPS[name]
    return kind == "dil" and self.stride == dilation

  def _layout(self, name, x):
    """Which input a conv op takes: the image, its even pixels, or its phases.

    A conv dilated by d is a plain conv on each phase of the image (pixels at
    the same position modulo d); the phases are split once for the group and the
    ops' outputs are summed before they are interleaved again.
    """
    kind, _, _, dilation = ops.CONV_OPS[name]
    if self._on_even_pixels(name):
      return "even"
    h, w = x.shape[1], x.shape[2]
    if kind == "dil" and self.stride == 1 and h and w and not h % dilation and not w % dilation:
      return ("phases", dilation)
    return "image"

  def call(self, x, weights, training=False, noise_seed=None, noise_scale=1.0):
    """x: [B, H, W, C]; weights: [edges, ops]. Returns [B, H', W', edges, C].

    noise_seed: the stateless seed of skip_connect's noise and drop-path.
    """
    names = [self.primitives[i] for i in self.op_index]
    reduces = "skip_connect" in names and self.stride > 1
    layouts = {n: self._layout(n, x) for n in names if n in ops.CONV_OPS}
    rectified = tf.nn.relu(x) if layouts or reduces else None  # shared by those ops
    shared = {}  # per layout: the rectified input in it (the ops make each edge's copy)
    for layout in dict.fromkeys(layouts.values()):  # in the ops' order: the same graph each run
      if layout == "image":
        shared[layout] = rectified
      elif layout == "even":
        shared[layout] = rectified[:, ::self.stride, ::self.stride, :]
      else:
        shared[layout] = tf.space_to_batch(rectified, [layout[1]] * 2, [[0, 0], [0, 0]])
    # Per op: its weight on each edge [edges, 1], and on each edge's channels [edges * C].
    # (One split and one tile for the group: a graph with far fewer ops to trace.)
    columns = tf.split(weights, len(self.primitives), axis=1)
    channel_weights = tf.unstack(tf.reshape(
        tf.tile(tf.transpose(weights)[:, :, None], [1, 1, self.c]), [-1, self.edges * self.c]))
    calls = []  # per op: the op, its input and keyword arguments
    for i, name, op in zip(self.op_index, names, self.candidates):
      layout = layouts.get(name)
      if self._scaled(name, training):
        # Each edge's weight scales its channels in the op's last batch norm; a dilated
        # conv in phases is summed there and interleaved once below.
        kwargs = {"scale": channel_weights[i]}
        if isinstance(layout, tuple):
          kwargs["phased"] = True
        calls.append((op, shared[layout] if layout else rectified, kwargs))
      elif self._has_edge_parameters(name):  # the noisy or dropped FactorizedReduce
        calls.append((op, rectified, {}))
      else:  # the same on every edge
        calls.append((op, x, {}))
    # (The ops' synchronized batch norms at the same depth share one sum over the replicas.)
    outputs = ops.call_side_by_side(calls, training, self.synchronized)
    terms, phased = [], {}
    for i, name, y in zip(self.op_index, names, outputs):
      noisy = name == "skip_connect" and training and self.noise is not None
      dropped = name == "skip_connect" and training and self.skip_drop_prob > 0
      layout = layouts.get(name)
      if self._scaled(name, training):
        if isinstance(layout, tuple):
          phased.setdefault(layout, []).append(y)
        else:
          terms.append(self._split_edges(y))
        continue
      if self._has_edge_parameters(name):
        y = self._split_edges(y)
      else:
        y = tf.expand_dims(y, -2)
      if noisy or dropped:
        y, seed = self._per_edge(y, noise_seed)
      if noisy:
        y = parts.add_noise(y, self.noise, seed, noise_scale, edge_axis=3)
      if dropped:  # after the noise, as the original
        y = ops.drop_path(y, self.skip_drop_prob, distribute.fold_seed(seed, 1),
                                 edge_axis=3)
      terms.append(_edge_weighted(y, tf.cast(columns[i], y.dtype)))  # [B, H', W', edges, C]
    for (_, dilation), ys in phased.items():
      terms.append(self._split_edges(
          tf.batch_to_space(tf.add_n(ys), [dilation] * 2, [[0, 0], [0, 0]])))
    out = terms[0]
    for term in terms[1:]:  # (measured: no faster as one AddN, and more memory)
      out += term
    return out

  def _has_edge_parameters(self, name):
    """Whether the op has parameters per edge (else every edge gets the same output)."""
    return name in ops.CONV_OPS or (name == "skip_connect" and self.stride > 1)

  def _scaled(self, name, training):
    """Whether the op's last batch norm scales each edge's output by its weight: the ops
    with parameters per edge, but a skip that gets noise or drop-path first."""
    skip_changed = name == "skip_connect" and training and (
        self.noise is not None or self.skip_drop_prob > 0)
    return self._has_edge_parameters(name) and not skip_changed

  def _split_edges(self, y):
    return tf.reshape(y, ops.image_shape(y, self.edges, self.c))

  def _per_edge(self, y, seed):
    """y with one copy per edge, and a seed of its own draws on this replica."""
    return y + tf.zeros([self.edges, self.c], y.dtype), distribute.replica_seed(seed)


class SearchCell(ops.LazyBlock):
  """A DARTS cell with a mixed op on every edge; outputs the concat of its nodes.

  The edges are computed per input state (EdgeGroup): once a state is complete,
  all the edges leaving it run together and add into their target nodes.
  """

  def __init__(self, space, c, reduction, reduction_prev, noise=None, synchronized=False,
               skip_drop_prob=0.0, **kwargs):
    super().__init__(**kwargs)
    self.reduction = reduction
    self.synchronized = synchronized
    self.steps = space.steps
    self.preprocess0, self.preprocess1 = networks.cell_preprocessing(
        c, reduction_prev, affine=False, synchronized=synchronized)
    self.edges = genotype_lib.edges(space.steps)
    # For each state that feeds nodes (0 .. steps): the indices of its edges.
    self.edges_from = [[e for e, (_, src) in enumerate(self.edges) if src == s]
                       for s in range(space.steps + 1)]
    self.groups = [
        EdgeGroup(space.primitives, c, space_lib.edge_stride(reduction, s), len(edge_ids),
                  noise, synchronized, skip_drop_prob, name=f"from{s}")
        for s, edge_ids in enumerate(self.edges_from)]

  def call(self, s0, s1, weights, training=False, noise_seed=None, noise_scale=1.0):
    states = ops.call_side_by_side([(self.preprocess0, s0, {}), (self.preprocess1, s1, {})],
                                   training, self.synchronized)
    incoming = {node: [] for node in range(2, 2 + self.steps)}
    # The weights' rows regrouped by input state: one gather and one split per cell.
    group_weights = tf.split(tf.gather(weights, sum(self.edges_from, [])),
                             [len(ids) for ids in self.edges_from])
    for s, (group, edge_ids) in enumerate(zip(self.groups, self.edges_from)):
      if s >= 2:  # every edge into node s has run
        states.append(tf.add_n(incoming.pop(s)))
      y = group(states[s], group_weights[s], training=training,
                noise_seed=distribute.fold_seed(noise_seed, s), noise_scale=noise_scale)
      for e, out in zip(edge_ids, tf.unstack(y, axis=3)):
        incoming[self.edges[e][0]].append(out)
    states.append(tf.add_n(incoming.pop(1 + self.steps)))
    return tf.concat(states[2:], axis=-1)


class SearchNetwork(ops.BuildsLazily, ops.ListsInCheckpoints, keras.Model):
  """The supernet. `arch_variables` are the alphas, one tensor per cell type.

  The alphas are tracked Keras weights shared by every cell of their type; the
  network weights are every other trainable variable (`weight_variables`).
  """

  def __init__(self, space, method, synchronized_bn=False, **kwargs):
    super().__init__(**kwargs)
    self.space = space
    self.method = method
    noise = method.noise
    c = space.init_channels
    c_curr = space.stem_multiplier * c
    self.stem_conv = ops.Conv(c_curr, 3, padding=1)
    self.stem_bn = ops.BatchNorm(affine=True, synchronized=synchronized_bn)
    c_prev, c_curr = c_curr, c
    self.cells = []
    reduction_prev = False
    for i in range(space.layers):
      reduction = i in space.reduction_cells
      if reduction:
        c_curr *= 2
      self.cells.append(SearchCell(space, c_curr, reduction, reduction_prev, noise,
                                   synchronized_bn, method.skip_drop_prob, name=f"cell_{i}"))
      reduction_prev = reduction
      c_prev = space.steps * c_curr  # the next cell's input (the classifier's after the last)
    self.classifier = ops.torch_dense(space.num_classes, c_prev)
    shape = (space.num_edges, len(space.primitives))
    def alpha_init():  # a new initializer per tensor, so the two draws differ
      if method.alpha_init_std > 0:
        return keras.initializers.RandomNormal(stddev=method.alpha_init_std)
      return "zeros"

    self.alphas_normal = self.add_weight(shape=shape, initializer=alpha_init(),
                                         name="alphas_normal")
    self.alphas_reduce = self.add_weight(shape=shape, initializer=alpha_init(),
                                         name="alphas_reduce")
    # Set from outside the step (e.g. the noise's cosine decay per epoch).
    self.noise_scale = self.add_weight(shape=(), initializer="ones", trainable=False,
                                       name="noise_scale")

  @property
  def arch_variables(self):
    return [self.alphas_normal, self.alphas_reduce]

  @property
  def weight_variables(self):
    arch = {id(v) for v in self.arch_variables}
    return [v for v in self.trainable_variables if id(v) not in arch]

  def arch_weights(self):
    """The relaxed weights (normal, reduce): softmax or sigmoid of the alphas."""
    return (parts.relax(self.alphas_normal, self.method.relaxation),
            parts.relax(self.alphas_reduce, self.method.relaxation))

  def call(self, x, training=False, noise_seed=None):
    w_normal, w_reduce = self.arch_weights()
    s0 = s1 = self.stem_bn(self.stem_conv(x), training=training)
    for i, cell in enumerate(self.cells):
      w = w_reduce if cell.reduction else w_normal
      s0, s1 = s1, cell(s0, s1, w, training=training,
                        noise_seed=distribute.fold_seed(noise_seed, i),
                        noise_scale=self.noise_scale)
    # Float32 logits under a mixed-precision policy: the loss is computed in float32.
    return tf.cast(self.classifier(tf.reduce_mean(s1, axis=[1, 2])), tf.float32)
