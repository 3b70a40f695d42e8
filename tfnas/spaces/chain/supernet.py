"""The chain's search network: a mixed layer per searchable layer, and the alphas.

Each candidate is the block as a derived network would hold it alone: an inverted residual
that adds its input where the layer's shapes agree (FBNet's convention), or the identity.
A mixed layer is their weighted sum,

    y = sum_k f(alpha)_k * o_k(x),

with f the method's relaxation (softmax over a layer's candidates, or a sigmoid per
candidate). In training, the identity's output gets Noisy DARTS' noise and then drop-path
(skip_drop_prob) before its weight, as skip_connect's in the DARTS cell. As DARTS builds its
search ops, the candidates' batch norms have no affine parameters (a learnt scale would
stand in for the alpha); the stem, the separable block and the head keep theirs. The
supernet has no dropout (the derived network's is the genotype's).

The alphas are two variables: one weight per block candidate and layer [layers, candidates],
and one per identity [skippable layers], so that the zero-one loss and the weight decay see
only alphas that take part. arch_weights() gives the relaxed weights in the same two parts;
a softmax runs over a layer's blocks and its identity together.
"""
import keras
import numpy as np
import tensorflow as tf

from tfnas.layers import mbconv
from tfnas.layers import ops
from tfnas.methods import parts
from tfnas.runtime import distribute


class MixedLayer(ops.LazyBlock):
  """One searchable layer: sum_k w_k o_k(x) over its candidate blocks and, if `skip`, the
  identity (whose weight is the last)."""

  def __init__(self, c_in, c_out, stride, candidates, skip, act, se_ratio=0.0, noise=None,
               skip_drop_prob=0.0, synchronized=False, **kwargs):
    super().__init__(**kwargs)
    self.residual = stride == 1 and c_in == c_out
    self.skip, self.noise, self.skip_drop_prob = skip, noise, skip_drop_prob
    self.blocks = [mbconv.InvertedResidual(c_in, c_out, k, e, stride, act, se_ratio,
                                           affine=False, synchronized=synchronized,
                                           name=f"k{k}_e{e}")
                   for k, e in candidates]

  def call(self, x, weights, training=False, noise_seed=None, noise_scale=1.0):
    """x: [B, H, W, C]; weights: [candidates (+ 1 for the identity)]."""
    out = 0.0
    for k, block in enumerate(self.blocks):
      y = block(x, training=training)
      if self.residual:
        y += x
      out += tf.cast(weights[k], y.dtype) * y
    if self.skip:
      y = x
      if training and (self.noise is not None or self.skip_drop_prob > 0):
        seed = distribute.replica_seed(noise_seed)
        if self.noise is not None:
          y = parts.add_noise(y, self.noise, seed, noise_scale)
        if self.skip_drop_prob > 0:
          y = ops.drop_path(y, self.skip_drop_prob, distribute.fold_seed(seed, 1))
      out += tf.cast(weights[len(self.blocks)], y.dtype) * y
    return out


class ChainSearchNetwork(ops.BuildsLazily, ops.ListsInCheckpoints, keras.Model):
  """The supernet: stem, separable block, the mixed layers, head and classifier."""

  def __init__(self, space, method, synchronized_bn=False, **kwargs):
    super().__init__(**kwargs)
    self.space, self.method = space, method
    act, outer = space.activation, space.outer_activation or space.activation
    stem, first, head = space.widths
    sync = dict(synchronized=synchronized_bn)
    self.stem = mbconv.ConvBN(stem, 3, stride=2, act=outer, **sync)
    self.separable = mbconv.DepthwiseSeparable(stem, first, 3, outer, **sync)
    self.skip_rows = space.skip_rows
    self.mixed = []
    c = first
    for i, ((c_out, stride), skip) in enumerate(zip(space.layers, self.skip_rows)):
      self.mixed.append(MixedLayer(c, c_out, stride, space.candidates, skip, act,
                                   space.se_ratio, method.noise, method.skip_drop_prob,
                                   name=f"layer_{i + 1}", **sync))
      c = c_out
    self.head = mbconv.ConvBN(head, 1, act=outer, **sync)
    self.classifier = ops.torch_dense(space.num_classes, head)

    def alpha_init():  # a new initializer per tensor, so the draws differ
      if method.alpha_init_std > 0:
        return keras.initializers.RandomNormal(stddev=method.alpha_init_std)
      return "zeros"

    self.alphas_blocks = self.add_weight(shape=(len(space.layers), len(space.candidates)),
                                         initializer=alpha_init(), name="alphas_blocks")
    self.alphas_skip = None
    if any(self.skip_rows):
      self.alphas_skip = self.add_weight(shape=(sum(self.skip_rows),),
                                         initializer=alpha_init(), name="alphas_skip")
    # Set from outside the step (e.g. the noise's cosine decay per epoch).
    self.noise_scale = self.add_weight(shape=(), initializer="ones", trainable=False,
                                       name="noise_scale")

  @property
  def arch_variables(self):
    return [v for v in (self.alphas_blocks, self.alphas_skip) if v is not None]

  @property
  def weight_variables(self):
    arch = {id(v) for v in self.arch_variables}
    return [v for v in self.trainable_variables if id(v) not in arch]

  def _skip_column(self, values, missing):
    """[layers, 1]: the identities' values on their layers, `missing` on the others."""
    rows = np.flatnonzero(self.skip_rows)[:, None]
    present = tf.scatter_nd(rows, tf.ones_like(values, tf.bool), [len(self.skip_rows)])
    column = tf.scatter_nd(rows, values, [len(self.skip_rows)])
    return tf.where(present, column, missing)[:, None]

  def arch_weights(self):
    """The relaxed weights, aligned with arch_variables: (blocks [layers, candidates],
    identities [skippable layers]), or (blocks,) when no layer has the identity."""
    relaxation = self.method.relaxation
    if self.alphas_skip is None:
      return (parts.relax(self.alphas_blocks, relaxation),)
    if relaxation == "softmax":  # over each layer's blocks and identity together
      logits = tf.concat([self.alphas_blocks, self._skip_column(self.alphas_skip, -np.inf)], 1)
      w = tf.nn.softmax(logits, axis=-1)
      return w[:, :-1], tf.boolean_mask(w[:, -1], self.skip_rows)
    return parts.relax(self.alphas_blocks, relaxation), parts.relax(self.alphas_skip,
                                                                     relaxation)

  def layer_weights(self):
    """[layers, candidates + 1]: each layer's weights, 0 for an identity it does not have."""
    weights = self.arch_weights()
    if len(weights) == 1:
      return weights[0]
    return tf.concat([weights[0], self._skip_column(weights[1], 0.0)], 1)

  def call(self, x, training=False, noise_seed=None):
    weights = tf.unstack(self.layer_weights())
    y = self.separable(self.stem(x, training=training), training=training)
    for i, (layer, w) in enumerate(zip(self.mixed, weights)):
      y = layer(y, w, training=training, noise_seed=distribute.fold_seed(noise_seed, i),
                noise_scale=self.noise_scale)
    y = tf.reduce_mean(self.head(y, training=training), axis=[1, 2])
    # Float32 logits under a mixed-precision policy: the loss is computed in float32.
    return tf.cast(self.classifier(y), tf.float32)
