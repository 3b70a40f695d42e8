"""What a method's parts compute in the search network: the relaxation of the
alphas, the zero-one loss, the noise on skip_connect and its schedule.

Space-independent maths: a search space applies them to its own alphas and ops.
"""
import math

import tensorflow as tf


def relax(alphas, relaxation):
  """Architecture weights from raw alphas: softmax over each edge's ops, or sigmoid per op."""
  if relaxation == "softmax":
    return tf.nn.softmax(alphas, axis=-1)
  return tf.sigmoid(alphas)


def zero_one_loss(alphas_list, form="l2"):
  """Fair DARTS' zero-one loss: -mean((sigmoid(a) - 0.5)^2) over all alphas together.

  As in the original, the mean runs over both cell types at once (28 x 7 values
  in the CIFAR space). `form='l1'` gives -mean(|sigmoid(a) - 0.5|).
  """
  w = tf.concat([tf.reshape(tf.sigmoid(a), [-1]) for a in alphas_list], axis=0)
  d = w - 0.5
  return -tf.reduce_mean(tf.square(d) if form == "l2" else tf.abs(d))


def noise_decay(cfg, epoch, epochs):
  """Scale of the noise in an epoch: 1, or a cosine from 1 to 0 over the search."""
  if cfg is None or not cfg.cosine_decay:
    return 1.0
  return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def add_noise(x, cfg, seed, scale=1.0, edge_axis=None):
  """Noise for skip_connect's output; the noise is a constant for backprop.

  `seed` is a stateless seed (shape [2] int); callers fold in where and on which
  replica the draw happens, so draws differ between replicas yet are
  reproducible. `edge_axis`: x holds several edges' outputs along this axis,
  each with its own std (as if each edge's output were noised alone).
  """
  shape = tf.shape(x)
  if cfg.type == "gaussian":
    if cfg.mixture == "additive":
      axes = None
      if edge_axis is not None:
        axes = [a for a in range(x.shape.rank) if a != edge_axis % x.shape.rank]
      n = tf.cast(tf.size(x), x.dtype) / tf.cast(1 if edge_axis is None else shape[edge_axis],
                                                  x.dtype)
      mean = tf.reduce_mean(x, axes, keepdims=True)
      # Unbiased std over the whole tensor (each edge's), as torch's x.std().
      std = tf.sqrt(tf.reduce_sum(tf.square(x - mean), axes, keepdims=True)
                    / tf.maximum(n - 1.0, 1.0))
      stddev = cfg.factor * std
    else:
      stddev = cfg.factor
    deviation = tf.random.stateless_normal(shape, seed, dtype=x.dtype) * stddev
  else:
    a = math.sqrt(3.0 * cfg.factor)
    deviation = tf.random.stateless_uniform(shape, seed, -a, a, dtype=x.dtype)
  if cfg.mixture == "additive":
    return x + tf.stop_gradient((cfg.mean + deviation) * scale)
  return x * tf.stop_gradient(cfg.mean + deviation * scale)
