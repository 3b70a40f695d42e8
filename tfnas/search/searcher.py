"""The bilevel search step: alternating architecture and weight steps under tf.distribute.

One search step, as in the original code: an architecture step on a validation batch
(Adam on the alphas), then a weight step on a training batch (SGD on the network weights,
gradients clipped by global norm). Both run inside one tf.function through strategy.run.
With `unrolled` the architecture step takes DARTS' second-order gradient, which also
reads the training batch of the weight step that follows (architect.second_order).

Distribution semantics (so that N replicas match 1 replica on the same global
batch): per-example losses are averaged over the global batch; gradients are
summed over the replicas (one all-reduce per step and per variable set) before
the weight gradient is clipped and the coupled weight decay is added; a loss
term that depends only on the alphas (the zero-one loss) is the same on every
replica, so it is divided by the replica count before that sum; batch norm is
synchronized across replicas by default when there is more than one. In
float16 (precision mixed_float16) each step's backward pass runs at its own
dynamic loss scale, and an update whose summed gradients are not finite is
skipped on every replica (updates.DynamicLossScale).

The architecture gradient is architect.py's; running a whole search is run.py's.
"""
import contextlib
import dataclasses

import keras
import tensorflow as tf

from tfnas.methods import parts
from tfnas.runtime import distribute
from tfnas.runtime import loop
from tfnas.runtime import optimizers
from tfnas.runtime import updates
from tfnas.runtime.errors import UserInputError
from tfnas.search import architect


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Optimization settings (defaults: quark0/darts cnn/train_search.py)."""
  epochs: int = 50
  batch_size: int = 64                 # global, split over the replicas
  learning_rate: float = 0.025
  learning_rate_min: float = 0.001
  momentum: float = 0.9
  weight_decay: float = 3e-4
  grad_clip: float = 5.0
  arch_learning_rate: float = 3e-4
  arch_beta1: float = 0.5
  arch_beta2: float = 0.999
  arch_weight_decay: float = 1e-3
  seed: int = 2
  deterministic: bool = False          # TF op determinism (slower; same result every run)
  synchronized_bn: bool | None = None  # None: on when there is more than one replica
  log_every_steps: int = 50
  max_checkpoints: int = 3
  checkpoint_every_steps: int = 0      # 0: off; a checkpoint is also written every epoch
  checkpoint_every_secs: float = 600.0  # 0: off
  # mixed_bfloat16 / mixed_float16: that compute dtype, float32 variables and loss; float16
  # with dynamic loss scaling (updates.DynamicLossScale), one scale per optimizer.
  precision: str = "float32"
  jit_compile: bool = False            # XLA for the replicas' step (one replica only)
  unrolled: bool = False               # DARTS' second-order architecture gradient

  def __post_init__(self):
    if self.precision not in PRECISIONS:
      raise UserInputError(f"unknown precision '{self.precision}'; choose one of "
                           f"{', '.join(PRECISIONS)}")
    for name in ("epochs", "batch_size", "log_every_steps", "max_checkpoints"):
      if getattr(self, name) < 1:
        raise UserInputError(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("learning_rate", "arch_learning_rate"):
      if not getattr(self, name) > 0:
        raise UserInputError(f"{name} must be > 0, got {getattr(self, name)}")
    for name in ("learning_rate_min", "weight_decay", "arch_weight_decay", "grad_clip",
                 "checkpoint_every_steps", "checkpoint_every_secs"):
      if getattr(self, name) < 0:
        raise UserInputError(f"{name} must be >= 0, got {getattr(self, name)}")
    for name in ("momentum", "arch_beta1", "arch_beta2"):
      if not 0 <= getattr(self, name) < 1:
        raise UserInputError(f"{name} must be in [0, 1), got {getattr(self, name)}")
    if self.unrolled and self.precision == "mixed_float16":
      # One loss scale cannot serve four backward passes whose finite difference divides
      # by a radius of 0.01 / ||v||: the skipped steps would not be the first order's.
      raise UserInputError("unrolled (second order) does not run in mixed_float16: use "
                           "float32 or mixed_bfloat16")


def cosine_learning_rate(config, epoch):
  """The weights' learning rate in an epoch: cosine from learning_rate to learning_rate_min."""
  return updates.cosine_learning_rate(config.learning_rate, config.learning_rate_min, epoch,
                                       config.epochs)


def synchronized_bn(config, num_replicas):
  """Whether batch norm syncs over replicas: by default when there are several."""
  return num_replicas > 1 if config.synchronized_bn is None else config.synchronized_bn


@contextlib.contextmanager
def _dtype_policy(name):
  """Keras' dtype policy while the layers are made (they keep it); restored after."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


class Searcher:
  """Owns the supernet, both optimizers, the global step and the step function."""

  # What train_step returns, each summed over the global batch.
  STEP_OUTPUTS = ("train_loss_sum", "train_correct", "val_loss_sum", "val_correct",
                  "zero_one_loss", "grad_norm", "arch_updates_skipped", "weight_updates_skipped")

  def __init__(self, space, method, config, strategy, image_shape):
    self.space, self.method, self.config = space, method, config
    self.strategy = strategy
    self.num_replicas = strategy.num_replicas_in_sync
    space.check_image_size(image_shape[0], image_shape[1])
    self.synchronized_bn = synchronized_bn(config, self.num_replicas)
    if config.jit_compile and self.num_replicas > 1:
      # XLA compiles one device's graph; the replicas' variables live on others.
      raise UserInputError(f"jit_compile needs one replica, not {self.num_replicas}")
    keras.utils.set_random_seed(config.seed)
    with strategy.scope(), _dtype_policy(config.precision):
      self.model = space.build_supernet(method, self.synchronized_bn)
      self.model(tf.zeros([1, *image_shape]))  # creates every layer and variable
      self.arch_variables = self.model.arch_variables
      self.weight_variables = self.model.weight_variables
      self.weight_optimizer = optimizers.TorchSGD(config.learning_rate, config.momentum)
      self.arch_optimizer = optimizers.TorchAdam(config.arch_learning_rate, config.arch_beta1,
                                                 config.arch_beta2)
      # Built here: building lazily inside strategy.run fails under MirroredStrategy.
      self.weight_optimizer.build(self.weight_variables)
      self.arch_optimizer.build(self.arch_variables)
      self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.arch_loss_scale = self.weight_loss_scale = None
      if config.precision == "mixed_float16":
        self.arch_loss_scale = updates.DynamicLossScale(name="arch_loss_scale")
        self.weight_loss_scale = updates.DynamicLossScale(name="weight_loss_scale")
    # The running sums of the epoch in progress, so that a resumed epoch's figures cover it all.
    self.epoch_totals = loop.EpochSums.variable(self.STEP_OUTPUTS)
    self.checkpoint = tf.train.Checkpoint(
        model=self.model, weight_optimizer=self.weight_optimizer,
        arch_optimizer=self.arch_optimizer, global_step=self.global_step, epoch=self.epoch,
        epoch_totals=self.epoch_totals,
        **{f"{name}_loss_scale": scale for name, scale in self.loss_scales().items()})
    self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    self._step_fn = self._traced_once = None

  # ---- the step ----------------------------------------------------------

  def arch_step(self, x, y, noise_seed=None, train_batch=None, train_seed=None):
    """Architecture step on a validation batch (per replica: call inside strategy.run);
    second order (config.unrolled) also reads the training batch (train_batch: x, y) with
    the weight step's seed."""
    n = self.num_replicas
    if self.config.unrolled:
      grads, (ce, logits, zero_one) = architect.second_order(self, x, y, noise_seed,
                                                             *train_batch, train_seed)
    else:
      grads, (ce, logits, zero_one) = architect.first_order(self, x, y, noise_seed)
    grads = [g + self.config.arch_weight_decay * v for g, v in zip(grads, self.arch_variables)]
    applied = updates.apply_gradients(self.arch_optimizer, grads, self.arch_variables,
                                       self.arch_loss_scale)
    # Sums over the replicas are taken outside; replica-identical values are pre-divided.
    return {"val_loss_sum": tf.reduce_sum(ce), "val_correct": updates.correct(y, logits),
            "zero_one_loss": zero_one / n, "arch_updates_skipped": _skipped(applied) / n}

  def weight_step(self, x, y, noise_seed=None):
    """Weight step on a training batch (per replica: call inside strategy.run)."""
    cfg, n = self.config, self.num_replicas
    with tf.GradientTape() as tape:
      logits = self.model(x, training=True, noise_seed=noise_seed)
      ce = self.loss_fn(y, logits)
      loss = tf.nn.compute_average_loss(ce, global_batch_size=cfg.batch_size)
    # Clip the global gradient, not each replica's share.
    grad_norm, applied = updates.sgd_update(self.weight_optimizer, loss, tape,
                                             self.weight_variables, cfg.grad_clip,
                                             cfg.weight_decay, self.weight_loss_scale)
    return {"train_loss_sum": tf.reduce_sum(ce), "train_correct": updates.correct(y, logits),
            "grad_norm": grad_norm / n, "weight_updates_skipped": _skipped(applied) / n}

  def _replica_step(self, train_batch, val_batch):
    step = self.global_step.read_value()
    seed = tf.constant(self.config.seed, tf.int64)
    train_seed = tf.stack([seed, 2 * step + 1])
    out = self.arch_step(*val_batch, noise_seed=tf.stack([seed, 2 * step]),
                         train_batch=train_batch, train_seed=train_seed)
    out.update(self.weight_step(*train_batch, noise_seed=train_seed))
    return out

  def train_step(self, iterator):
    """Runs one search step on the next batches; returns sums over the global batch."""
    if self._step_fn is None:
      self._step_fn = self._make_step_fn(traced_once=distribute.can_trace_once(self.strategy))
      if self._traced_once is not None:
        try:
          return self._step_fn(iterator)
        except distribute.NotTracedOnce:  # (raised while tracing: no batch was read)
          self._step_fn = self._make_step_fn(traced_once=False)
    return self._step_fn(iterator)

  def _make_step_fn(self, traced_once):
    """The step: one trace of the replica step for all replicas (distribute.
    ReplicasTracedOnce) when `traced_once`, else strategy.run."""
    self._traced_once = None
    if traced_once:
      self._traced_once = distribute.ReplicasTracedOnce(
          self.strategy, self._replica_step, self.model.weights + self.weight_optimizer.variables +
          self.arch_optimizer.variables, [self.weight_optimizer, self.arch_optimizer],
          self.checkpoint)
      replicas, summed = self._traced_once, lambda out: out
    else:
      def replicas(train_batch, val_batch):
        return self.strategy.run(self._replica_step, args=(train_batch, val_batch))

      if self.config.jit_compile:  # reading the input stays outside: XLA cannot compile it
        replicas = tf.function(replicas, jit_compile=True)

      def summed(out):
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in out.items()}

    @tf.function
    def step_fn(iterator):
      out = summed(replicas(*next(iterator)))
      self.global_step.assign_add(1)
      return out

    return step_fn

  @property
  def traced_once(self):
    """Whether the step runs one trace for all its replicas (distribute.ReplicasTracedOnce);
    None before the first step."""
    return None if self._step_fn is None else self._traced_once is not None

  # ---- state that outlives the step ---------------------------------------

  def loss_scales(self):
    """{"arch": ..., "weight": ...} in float16, else {}."""
    if self.arch_loss_scale is None:
      return {}
    return {"arch": self.arch_loss_scale, "weight": self.weight_loss_scale}

  def set_epoch_schedules(self, epoch):
    """Learning rate and noise scale of an epoch (set outside the step: no retracing)."""
    self.weight_optimizer.learning_rate.assign(cosine_learning_rate(self.config, epoch))
    self.model.noise_scale.assign(
        parts.noise_decay(self.method.noise, epoch, self.config.epochs))

  def arch_weights(self):
    """The relaxed alphas as numpy arrays (softmax or sigmoid; as the supernet's)."""
    return [w.numpy() for w in self.model.arch_weights()]

  def alphas_json(self):
    return self.space.alphas_json(self.method.relaxation,
                                  [v.numpy() for v in self.arch_variables])

  def genotype(self):
    return self.space.derive(self.arch_weights(), self.method.selection_rule,
                             self.method.threshold)


def _skipped(applied):
  return 1.0 - tf.cast(applied, tf.float32)
