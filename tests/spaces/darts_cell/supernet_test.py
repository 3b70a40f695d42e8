"""The search cell computes its edges per input state; it must equal one mixed op per edge."""
import numpy as np
import pytest
import tensorflow as tf

from tfnas.layers import ops
from tfnas.methods import presets
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import space as cell_space
from tfnas.spaces.darts_cell import supernet

C = 4
ALL_OPS = genotype_lib.PRIMITIVES + ("sep_conv_7x7",)


def _rand(shape, seed):
  return tf.constant(np.random.default_rng(seed).normal(size=shape), tf.float32)


def _candidate(mixed_op, name):
  return mixed_op.candidates[mixed_op.primitives.index(name)]


def _copy_weights(group, references):
  """Gives each edge's MixedOp the group's slice of the batched parameters."""
  for i, op in zip(group.op_index, group.candidates):
    name = group.primitives[i]
    if name in ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7"):
      pairs = [(op.block1, lambda r: r.block1), (op.block2, lambda r: r.block2)]
    elif name in ("dil_conv_3x3", "dil_conv_5x5"):
      pairs = [(op, lambda r: r)]
    elif name == "skip_connect" and group.stride == 2:
      for m, ref in enumerate(references):
        for conv in ("conv1", "conv2"):
          kernel = getattr(op, conv).kernel.numpy()
          half = kernel.shape[-1] // len(references)
          getattr(_candidate(ref, name), conv).kernel.assign(kernel[..., m * half:(m + 1) * half])
      continue
    else:
      continue  # parameter-free
    for batched, pick in pairs:
      depthwise, pointwise = batched.depthwise.kernel.numpy(), batched.pointwise.kernel.numpy()
      for m, ref in enumerate(references):
        block = pick(_candidate(ref, name))
        block.depthwise.kernel.assign(depthwise[:, :, m * C:(m + 1) * C, :])
        block.pointwise.kernel.assign(pointwise[..., m * C:(m + 1) * C])


@pytest.mark.parametrize("reduction", [False, True])
def test_cell_equals_one_mixed_op_per_edge(reduction):
  space = cell_space.SearchSpace(primitives=ALL_OPS, steps=3, layers=3, init_channels=C)
  cell = supernet.SearchCell(space, C, reduction, reduction_prev=False)
  s0, s1 = _rand([2, 8, 8, 6], 1), _rand([2, 8, 8, 5], 2)
  weights = tf.Variable(tf.nn.softmax(_rand([space.num_edges, len(ALL_OPS)], 3)))
  cell(tf.zeros_like(s0), tf.zeros_like(s1), weights, training=True)  # builds every layer

  edges = genotype_lib.edges(space.steps)
  references = []
  for group, edge_ids in zip(cell.groups, cell.edges_from):
    refs = [supernet.MixedOp(ALL_OPS, C, group.stride) for _ in edge_ids]
    for ref, e in zip(refs, edge_ids):
      # builds it, with the statistics of the cell's
      ref(tf.zeros([2, 8, 8, C]), weights[e], training=True)
    _copy_weights(group, refs)
    references += list(zip(edge_ids, refs))
  references = [ref for _, ref in sorted(references, key=lambda pair: pair[0])]

  def reference_cell(s0, s1):
    states = [cell.preprocess0(s0, training=True), cell.preprocess1(s1, training=True)]
    for node in range(2, 2 + space.steps):
      states.append(tf.add_n([references[e](states[src], weights[e], training=True)
                              for e, (to, src) in enumerate(edges) if to == node]))
    return tf.concat(states[2:], axis=-1)

  def run(fn):
    with tf.GradientTape() as tape:
      tape.watch([s0, s1])
      y = fn()
      loss = tf.reduce_sum(y * _rand(y.shape, 4))
    return [y.numpy()] + [tf.convert_to_tensor(g).numpy()
                          for g in tape.gradient(loss, [s0, s1, weights])]

  got = run(lambda: cell(s0, s1, weights, training=True))
  want = run(lambda: reference_cell(s0, s1))
  assert got[0].shape == ((2, 4, 4, 3 * C) if reduction else (2, 8, 8, 3 * C))
  for name, a, b in zip(["output", "d/ds0", "d/ds1", "d/dweights"], got, want):
    # Float32 round-off of sums in another order, relative to the array's scale.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max(), err_msg=name)
  # The batch-norm running statistics are each edge's, side by side.
  for group, edge_ids in zip(cell.groups, cell.edges_from):
    for i, op in zip(group.op_index, group.candidates):
      name = group.primitives[i]
      if name not in ("sep_conv_3x3", "dil_conv_5x5"):
        continue
      bn = op.block2.bn if name.startswith("sep") else op.bn
      per_edge = [_candidate(references[e], name) for e in edge_ids]
      per_edge = [r.block2.bn if name.startswith("sep") else r.bn for r in per_edge]
      np.testing.assert_allclose(
          bn.moving_mean.numpy(), np.concatenate([r.moving_mean.numpy() for r in per_edge]),
          rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_one_edge_group_equals_the_mixed_op_with_noise_and_skip_drop_path(stride):
  """Noisy DARTS' noise and drop-path on skip_connect: the same draws from the same seed."""
  primitives = ("none", "max_pool_3x3", "skip_connect", "dil_conv_3x3")
  x, seed = _rand([8, 8, 8, C], 7), tf.constant([5, 6], tf.int64)
  w = tf.nn.softmax(_rand([len(primitives)], 8))
  kwargs = dict(noise=presets.NoiseConfig(), skip_drop_prob=0.5)
  group = supernet.EdgeGroup(primitives, C, stride, edges=1, **kwargs)
  mixed = supernet.MixedOp(primitives, C, stride, **kwargs)
  group(x, w[None], training=True, noise_seed=seed)
  mixed(x, w, training=True, noise_seed=seed)  # both built
  _copy_weights(group, [mixed])
  want = mixed(x, w, training=True, noise_seed=seed, noise_scale=0.5).numpy()
  got = group(x, w[None], training=True, noise_seed=seed, noise_scale=0.5).numpy()[..., 0, :]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The draws took effect in training only: the same op without noise and drop-path
  # differs in training and gives the same in inference.
  clean = supernet.MixedOp(primitives, C, stride)
  clean(x, w, training=True)
  for a, b in zip(clean.weights, mixed.weights):
    a.assign(b)
  np.testing.assert_array_equal(clean(x, w).numpy(), mixed(x, w, noise_seed=seed).numpy())
  assert not np.allclose(want, clean(x, w, training=True).numpy(), atol=1e-3)


def test_parameters_are_those_of_one_mixed_op_per_edge():
  space = cell_space.SearchSpace(primitives=ALL_OPS, steps=4, layers=3, init_channels=C)
  for reduction in (False, True):
    cell = supernet.SearchCell(space, C, reduction, reduction_prev=False)
    cell(_rand([1, 8, 8, C], 1), _rand([1, 8, 8, C], 2),
         tf.ones([space.num_edges, len(ALL_OPS)]))
    batched = sum(int(np.prod(v.shape)) for g in cell.groups for v in g.trainable_weights)
    per_edge = 0
    for _, src in genotype_lib.edges(space.steps):
      for p in ALL_OPS:
        op = ops.make_op(p, C, 2 if reduction and src < 2 else 1, affine=False, search=True)
        op(tf.zeros([1, 8, 8, C]), training=True)
        per_edge += sum(int(np.prod(v.shape)) for v in op.trainable_weights)
    assert batched == per_edge > 0


def test_each_edge_gets_its_own_noise_on_skip_connect():
  x = _rand([8, 16, 16, C], 5)
  seed = tf.constant([1, 2], tf.int64)
  for stride in (1, 2):
    group = supernet.EdgeGroup(("skip_connect",), C, stride, edges=3,
                                   noise=presets.NoiseConfig())
    w = tf.ones([3, 1])
    noisy = group(x, w, training=True, noise_seed=seed).numpy()
    np.testing.assert_array_equal(noisy, group(x, w, training=True, noise_seed=seed).numpy())
    if stride == 1:
      clean = np.broadcast_to(x.numpy()[..., None, :], noisy.shape)
    else:  # each edge's own FactorizedReduce, in training mode (batch statistics)
      y = group.candidates[0](tf.nn.relu(x), training=True).numpy()
      clean = y.reshape(noisy.shape)
    for m in range(3):
      # Unbiased Gaussian noise, std 0.2 * the std of that edge's output.
      d = noisy[..., m, :] - clean[..., m, :]
      assert abs(d.mean()) < 0.05 * d.std()
      assert d.std() == pytest.approx(0.2 * clean[..., m, :].std(ddof=1), rel=0.05)
    assert not np.allclose(noisy[..., 0, :], noisy[..., 1, :])  # independent draws per edge


@pytest.mark.parametrize("noise", [None, presets.NoiseConfig()])
def test_skip_drop_path_per_example_and_edge_in_training_only(noise):
  x = _rand([16, 4, 4, C], 6)
  seed = tf.constant([3, 4], tf.int64)
  w = tf.constant([[1.0], [0.5], [0.25]])
  for stride in (1, 2):
    group = supernet.EdgeGroup(("skip_connect",), C, stride, edges=3, noise=noise,
                                   skip_drop_prob=0.5)
    out = group(x, w, training=True, noise_seed=seed).numpy()
    np.testing.assert_array_equal(out, group(x, w, training=True, noise_seed=seed).numpy())
    if stride == 1:
      clean = np.broadcast_to(x.numpy()[..., None, :], out.shape)
    else:  # each edge's own FactorizedReduce, in training mode (batch statistics)
      clean = group.candidates[0](tf.nn.relu(x), training=True).numpy().reshape(out.shape)
    clean = clean * w.numpy()[:, 0, None]
    zeroed = np.all(out == 0, axis=(1, 2, 4))  # [examples, edges]; after the noise too
    assert 0 < zeroed.sum() < zeroed.size and not np.all(zeroed == zeroed[:, :1])
    if noise is None:  # the others scaled by 1 / (1 - p)
      kept = ~zeroed
      np.testing.assert_allclose(np.moveaxis(out, 3, 1)[kept],
                                 np.moveaxis(clean, 3, 1)[kept] / 0.5, rtol=1e-5, atol=1e-6)
    inference = group(x, w, training=False, noise_seed=seed).numpy()
    if stride == 1:
      np.testing.assert_array_equal(inference, clean)
    assert not np.any(np.all(inference == 0, axis=(1, 2, 4)))
  # p = 0 is today's group: nothing dropped.
  plain = supernet.EdgeGroup(("skip_connect",), C, 1, edges=3, skip_drop_prob=0.0)
  np.testing.assert_array_equal(plain(x, w, training=True, noise_seed=seed).numpy(),
                                x.numpy()[..., None, :] * w.numpy()[:, 0, None])


def test_the_network_drops_the_skip_of_every_edge_group_of_both_cell_types():
  space = cell_space.SearchSpace(primitives=("skip_connect", "max_pool_3x3"), steps=1,
                                   layers=3, init_channels=C)
  method = presets.get_method("noisy_darts", skip_drop_prob=0.3)
  network = supernet.SearchNetwork(space, method)
  assert {cell.reduction for cell in network.cells} == {False, True}
  assert {g.skip_drop_prob for cell in network.cells for g in cell.groups} == {0.3}
