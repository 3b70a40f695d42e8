"""The parts that make DARTS, Fair DARTS and Noisy DARTS, and how they combine.

A method is a preset of independent parts: the relaxation of the architecture
weights (softmax per edge or sigmoid per op), their initialization, the
zero-one regularizer, the noise on skip_connect, the drop-path on
skip_connect, and the selection rule. Any part can be overridden on its own
(e.g. softmax with the zero-one loss).
"""
import dataclasses
import math

from absl import logging
import tensorflow as tf

from tfnas import genotype as genotype_lib
from tfnas.errors import UserInputError

RELAXATIONS = genotype_lib.RELAXATIONS
SELECTION_RULES = genotype_lib.RULES
NOISE_TYPES = ("gaussian", "uniform")
NOISE_MIXTURES = ("additive", "multiplicative")
ZERO_ONE_FORMS = ("l2", "l1")


def _check_choice(what, value, choices):
  if value not in choices:
    raise UserInputError(f"unknown {what} '{value}'; choose one of {', '.join(choices)}")


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
  """Noise on the output of skip_connect during search (Noisy DARTS).

  gaussian + additive (the paper's unbiased form): x + N(mean, (factor * std(x))^2),
  std over the whole tensor. As in the original code, uniform noise is absolute:
  mean + U(-a, a) with a = sqrt(3 * factor) (variance = factor), and the
  multiplicative Gaussian form is x * N(mean, factor^2).
  With `cosine_decay` the noise is scaled by (1 + cos(pi * epoch / epochs)) / 2.
  """
  type: str = "gaussian"
  mixture: str = "additive"
  mean: float = 0.0
  factor: float = 0.2
  cosine_decay: bool = False

  def __post_init__(self):
    _check_choice("noise type", self.type, NOISE_TYPES)
    _check_choice("noise mixture", self.mixture, NOISE_MIXTURES)
    if not self.factor >= 0:
      raise UserInputError(f"noise factor must be >= 0, got {self.factor}")


@dataclasses.dataclass(frozen=True)
class Method:
  """The parts of a search method."""
  relaxation: str
  alpha_init_std: float          # 0 means alphas start at exactly 0
  zero_one_weight: float = 0.0   # Fair DARTS' zero-one loss weight; 0 = off
  zero_one_form: str = "l2"
  noise: NoiseConfig | None = None
  # Noisy DARTS' official code: drop-path with this probability on each edge's (noisy)
  # skip_connect output during search, per example, rescaled by 1/(1-p); 0 = off.
  skip_drop_prob: float = 0.0
  selection_rule: str = "darts"
  threshold: float = 0.85

  def __post_init__(self):
    _check_choice("relaxation", self.relaxation, RELAXATIONS)
    _check_choice("zero-one loss form", self.zero_one_form, ZERO_ONE_FORMS)
    _check_choice("selection rule", self.selection_rule, SELECTION_RULES)
    if not 0.0 <= self.threshold <= 1.0:
      raise UserInputError(f"threshold must be in [0, 1], got {self.threshold}")
    if self.alpha_init_std < 0 or self.zero_one_weight < 0:
      raise UserInputError("alpha_init_std and zero_one_weight must be >= 0")
    if not 0.0 <= self.skip_drop_prob < 1.0:
      raise UserInputError(f"skip_drop_prob must be in [0, 1), got {self.skip_drop_prob}")


METHODS = {
    # quark0/darts: softmax, alpha ~ 1e-3 * N(0, 1), top-2 edges + argmax op.
    "darts": Method(relaxation="softmax", alpha_init_std=1e-3),
    # FairDARTS: independent sigmoids from 0, zero-one loss weight 10, threshold 0.85.
    "fair_darts": Method(relaxation="sigmoid", alpha_init_std=0.0, zero_one_weight=10.0,
                         selection_rule="threshold_sparse"),
    # NoisyDARTS: DARTS plus unbiased Gaussian noise (lambda 0.2) on skip_connect.
    "noisy_darts": Method(relaxation="softmax", alpha_init_std=1e-3, noise=NoiseConfig()),
}



def get_method(name, add_noise=None, noise_parts=None, **overrides):
  """A preset with some parts replaced; overrides set to None keep the preset.

  add_noise turns the skip noise on or off (None: as the preset); noise_parts,
  a dict of NoiseConfig fields, replaces parts of the noise (None values keep
  them). Settings that have no effect in the method are named in a warning.
  """
  _check_choice("method", name, tuple(METHODS))
  changes = {k: v for k, v in overrides.items() if v is not None}
  parts = {k: v for k, v in (noise_parts or {}).items() if v is not None}
  noise = changes.get("noise", METHODS[name].noise)
  if add_noise is not None:
    noise = (noise or NoiseConfig()) if add_noise else None
  if noise is not None:
    changes["noise"] = dataclasses.replace(noise, **parts)
  else:
    changes["noise"] = None
    if parts:
      logging.warning("noise settings (%s): no effect, the method adds no noise (add_noise "
                      "turns it on)", ", ".join(f"{k}={v}" for k, v in parts.items()))
  method = dataclasses.replace(METHODS[name], **changes)
  if "threshold" in changes and method.selection_rule == "darts":
    logging.warning("threshold=%s: no effect, the darts selection rule uses no threshold "
                    "(threshold_sparse and threshold_edge do)", method.threshold)
  return method


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
