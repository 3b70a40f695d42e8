"""The parts that make DARTS, Fair DARTS and Noisy DARTS, and how they combine.

A method is a preset of independent parts: the relaxation of the architecture
weights (softmax per edge or sigmoid per op), their initialization, the
zero-one regularizer, the noise on skip_connect, the drop-path on
skip_connect, and the selection rule. Any part can be overridden on its own
(e.g. softmax with the zero-one loss). What the parts compute is parts.py's.

Pure Python (no TensorFlow), so that the tools and the search spaces' genotype
code can check a method's names before TensorFlow loads.
"""
import dataclasses

from absl import logging

from tfnas.runtime.errors import UserInputError

RELAXATIONS = ("softmax", "sigmoid")
# Each search space derives its genotype by these rules (spaces/*/genotype.py).
SELECTION_RULES = ("darts", "threshold_sparse", "threshold_edge")
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
