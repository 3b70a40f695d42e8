"""The bilevel search loop: alternating architecture and weight steps under tf.distribute.

One search step, as in the original first-order code: an architecture step on a
validation batch (Adam on the alphas), then a weight step on a training batch
(SGD on the network weights, gradients clipped by global norm). Both run inside
one tf.function through strategy.run.

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
"""
import contextlib
import dataclasses
import json
import math
import os
import time

from absl import logging
import keras
import tensorflow as tf

from tfnas.data import pipeline
from tfnas.data import sources
from tfnas.methods import parts
from tfnas.runtime import checkpointing
from tfnas.runtime import distribute
from tfnas.runtime import files as files_lib
from tfnas.runtime import optimizers
from tfnas.runtime import progress as progress_lib
from tfnas.runtime import stopping
from tfnas.runtime import updates
from tfnas.runtime.errors import RunError
from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import first_line
from tfnas.search import summaries
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import networks
from tfnas.spaces.darts_cell import supernet


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


def cosine_learning_rate(config, epoch):
  """The weights' learning rate in an epoch: cosine from learning_rate to learning_rate_min."""
  return updates.cosine_learning_rate(config.learning_rate, config.learning_rate_min, epoch,
                                       config.epochs)


def _synchronized_bn(config, num_replicas):
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

  def __init__(self, space, method, config, strategy, image_shape):
    self.space, self.method, self.config = space, method, config
    self.strategy = strategy
    self.num_replicas = strategy.num_replicas_in_sync
    space.check_image_size(image_shape[0], image_shape[1])
    self.synchronized_bn = _synchronized_bn(config, self.num_replicas)
    if config.jit_compile and self.num_replicas > 1:
      # XLA compiles one device's graph; the replicas' variables live on others.
      raise UserInputError(f"jit_compile needs one replica, not {self.num_replicas}")
    keras.utils.set_random_seed(config.seed)
    with strategy.scope(), _dtype_policy(config.precision):
      self.model = supernet.SearchNetwork(space, method, self.synchronized_bn)
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
    with tf.device("CPU:0"):  # host bookkeeping, outside the replicas (float64 on any device)
      # The running sums of the epoch in progress, so that a resumed epoch's figures cover it all.
      self.epoch_totals = tf.Variable(tf.zeros([_Totals.SIZE], tf.float64), trainable=False)
    self.checkpoint = tf.train.Checkpoint(
        model=self.model, weight_optimizer=self.weight_optimizer,
        arch_optimizer=self.arch_optimizer, global_step=self.global_step, epoch=self.epoch,
        epoch_totals=self.epoch_totals,
        **{f"{name}_loss_scale": scale for name, scale in self.loss_scales().items()})
    self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    self._step_fn = None

  # ---- the step ----------------------------------------------------------

  def arch_step(self, x, y, noise_seed=None):
    """Architecture step on a validation batch (per replica: call inside strategy.run)."""
    n = self.num_replicas
    with tf.GradientTape() as tape:
      logits = self.model(x, training=True, noise_seed=noise_seed)
      ce = self._loss(y, logits)
      loss = tf.nn.compute_average_loss(ce, global_batch_size=self.config.batch_size)
      zero_one = tf.constant(0.0)
      if self.method.zero_one_weight > 0:
        zero_one = parts.zero_one_loss(self.arch_variables, self.method.zero_one_form)
        loss += self.method.zero_one_weight * zero_one / n
    grads = updates.summed_gradients(tape, loss, self.arch_variables, self.arch_loss_scale)
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
      ce = self._loss(y, logits)
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
    out = self.arch_step(*val_batch, noise_seed=tf.stack([seed, 2 * step]))
    out.update(self.weight_step(*train_batch, noise_seed=tf.stack([seed, 2 * step + 1])))
    return out

  def train_step(self, iterator):
    """Runs one search step on the next batches; returns sums over the global batch."""
    if self._step_fn is None:

      def replicas(train_batch, val_batch):
        return self.strategy.run(self._replica_step, args=(train_batch, val_batch))

      if self.config.jit_compile:  # reading the input stays outside: XLA cannot compile it
        replicas = tf.function(replicas, jit_compile=True)

      @tf.function
      def step_fn(iterator):
        out = replicas(*next(iterator))
        self.global_step.assign_add(1)
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in out.items()}

      self._step_fn = step_fn
    return self._step_fn(iterator)

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

  def alphas_json(self):
    return {
        "primitives": list(self.space.primitives),
        "relaxation": self.method.relaxation,
        "steps": self.space.steps,
        "normal": self.model.alphas_normal.numpy().tolist(),
        "reduce": self.model.alphas_reduce.numpy().tolist(),
    }

  def genotype(self):
    w_normal, w_reduce = (w.numpy() for w in self.model.arch_weights())
    return genotype_lib.derive(w_normal, w_reduce, self.space.primitives, self.space.steps,
                               self.method.selection_rule, self.method.threshold)


def _check_loss_scales(searcher, out, model_dir):
  """Stops a float16 search whose gradients overflow even at a scale below 1 (diverged)."""
  for name, loss_scale in searcher.loss_scales().items():
    if out[f"{name}_updates_skipped"] and updates.scalar(loss_scale.scale) < 1:
      raise FloatingPointError(
          f"the {name} gradients were not finite even at a loss scale below 1 at step "
          f"{int(searcher.global_step.numpy())}; the last checkpoint in {model_dir} is kept")


def _skipped(applied):
  return 1.0 - tf.cast(applied, tf.float32)


def _params(space, method, config, data_config, data, num_replicas):
  return {
      "search_space": dataclasses.asdict(space),
      "method": dataclasses.asdict(method),
      "search": dataclasses.asdict(config),
      "data": dataclasses.asdict(data_config),
      "derived": {
          "num_replicas": num_replicas,
          "per_replica_batch_size": config.batch_size // num_replicas,
          "synchronized_bn": _synchronized_bn(config, num_replicas),
          "steps_per_epoch": pipeline.steps_per_epoch(data, config.batch_size),
          "num_classes": data.num_classes,
          "image_shape": list(data.image_shape),
          "train_examples": len(data.train.labels),
          "val_examples": len(data.val.labels),
          "tensorflow": tf.__version__,
          "keras": keras.__version__,
          "graph_optimizer": distribute.graph_optimizer_enabled(),
      },
  }


# Settings that may change when a run resumes; everything else must match.
_RESUMABLE_CHANGES = {("search", "epochs"), ("search", "log_every_steps"),
                      ("search", "max_checkpoints"), ("search", "checkpoint_every_steps"),
                      ("search", "checkpoint_every_secs"), ("search", "jit_compile")}


@dataclasses.dataclass
class SearchResult:
  genotype: genotype_lib.Genotype
  train_accuracy: float
  val_accuracy: float
  model_dir: str
  files: dict
  # Sigmoid relaxations: the share of weights not yet near 0 or 1 (summaries.UNDECIDED).
  undecided_fraction: float | None = None


def search(space, method, config, data_config, model_dir, strategy=None, data=None,
           stop_at_step=None, stop_request=None, progress=None):
  """Runs (or resumes) a search in model_dir and returns its result.

  model_dir is locked for the run (files.model_dir_lock): a second run on it is refused.

  model_dir receives params.json, alphas.json and genotype.json (rewritten
  after every epoch), checkpoints (every epoch and at the config's interval),
  and TensorBoard events in train/ and validation/. Running again with the
  same model_dir resumes from the last readable checkpoint.

  `stop_request` (a stopping.StopRequest, set by a signal handler) makes the
  run write a checkpoint after the step in flight and raise stopping.Stopped.
  `stop_at_step` ends the run early (with a checkpoint) after that global step
  and returns None, as an interruption would.
  `progress` reports the steps (default: a progress.Progress on stderr).
  """
  with files_lib.model_dir_lock(model_dir):
    return _search(space, method, config, data_config, model_dir, strategy, data, stop_at_step,
                   stop_request, progress)


def _search(space, method, config, data_config, model_dir, strategy, data, stop_at_step,
            stop_request, progress):
  strategy = strategy or tf.distribute.get_strategy()
  data = data or sources.load_search_data(data_config)
  if space.num_classes != data.num_classes:
    raise UserInputError(f"num_classes={space.num_classes} does not fit {data.name}, "
                         f"which has {data.num_classes} classes")
  distribute.check_batch_size(config.batch_size, strategy)
  steps_per_epoch = pipeline.steps_per_epoch(data, config.batch_size)
  space.check_image_size(*data.image_shape[:2])
  params = _params(space, method, config, data_config, data, strategy.num_replicas_in_sync)
  files = {name: os.path.join(model_dir, name)
           for name in ("params.json", "alphas.json", "genotype.json")}
  files_lib.prepare_model_dir(model_dir, params, _RESUMABLE_CHANGES, "search")
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  searcher = Searcher(space, method, config, strategy, data.image_shape)

  checkpoints = checkpointing.Checkpointer(
      searcher.checkpoint, os.path.join(model_dir, "checkpoints"), searcher.global_step,
      config.max_checkpoints, config.checkpoint_every_steps, config.checkpoint_every_secs,
      variables=searcher.model.weights, stop_request=stop_request)
  restored = checkpoints.restore()
  if restored:
    logging.info("Resuming from %s at step %d", restored, int(searcher.global_step.numpy()))
  start_step = int(searcher.global_step.numpy())
  total_steps = config.epochs * steps_per_epoch
  writers = {name: tf.summary.create_file_writer(os.path.join(model_dir, name))
             for name in ("train", "validation")}
  arch_summaries = summaries.ArchSummaries(model_dir, space.primitives, space.steps,
                                          method.relaxation)
  if start_step == 0:
    with writers["train"].as_default():
      summaries.write_layout(space.steps)
  logging.info("Search: %d epochs x %d steps, global batch %d on %d replica(s), %s",
               config.epochs, steps_per_epoch, config.batch_size, searcher.num_replicas,
               json.dumps(params["method"]))
  # Each step reads a training and a validation batch.
  progress = progress or progress_lib.Progress(config.epochs, steps_per_epoch,
                                               config.log_every_steps, 2 * config.batch_size)

  dataset = pipeline.search_input(data, global_batch_size=config.batch_size, seed=config.seed,
                                  epochs=config.epochs, start_step=start_step)
  iterator = distribute.input_iterator(dataset, strategy)
  epoch_totals = None
  try:
    for epoch in range(start_step // steps_per_epoch, config.epochs):
      searcher.set_epoch_schedules(epoch)
      progress.begin_epoch(epoch)
      first = max(start_step - epoch * steps_per_epoch, 0)
      # Resumed within the epoch: its first steps' sums come from the checkpoint.
      epoch_totals = _Totals(searcher.epoch_totals, resume=first > 0)
      window = _Totals()
      for step_in_epoch in range(first, steps_per_epoch):
        out = {k: float(v) for k, v in searcher.train_step(iterator).items()}
        if not all(math.isfinite(v) for v in out.values()):
          raise FloatingPointError(
              f"the loss became {out['train_loss_sum'] + out['val_loss_sum']} at step "
              f"{int(searcher.global_step.numpy())}; the last checkpoint in {model_dir} is kept")
        _check_loss_scales(searcher, out, model_dir)
        epoch_totals.add(out, config.batch_size)
        window.add(out, config.batch_size)
        step = int(searcher.global_step.numpy())
        progress.step(step_in_epoch, step, epoch_totals.fields())
        last = step_in_epoch + 1 == steps_per_epoch
        if step % config.log_every_steps == 0 or last or step == stop_at_step:
          _write_step_summaries(writers, window, searcher, step)
          window = _Totals()
        if step == stop_at_step:
          checkpoints.save()
          progress.end_epoch()
          _flush(writers)
          return None
        checkpoints.after_step(save=not last)  # the epoch's end writes its own checkpoint
      progress.end_epoch()
      searcher.epoch.assign(epoch + 1)
      genotype = searcher.genotype()
      files_lib.write_json(searcher.alphas_json(), files["alphas.json"])
      genotype_lib.save(genotype, files["genotype.json"])
      _write_epoch_summaries(writers, searcher, arch_summaries, genotype, epoch + 1)
      logging.info("epoch %d/%d done | %s | genotype %s", epoch + 1, config.epochs,
                   epoch_totals.line(), json.dumps(genotype_lib.to_json(genotype)))
      # The checkpoint last: a stop after it loses nothing, so it may end the process.
      checkpoints.save()
      checkpoints.after_step()
  except stopping.Stopped:
    _flush(writers)  # what was logged before the stop
    raise
  _flush(writers)
  if start_step >= total_steps:  # nothing left to run: report the finished search
    logging.info("The search in %s is already complete", model_dir)
  genotype = searcher.genotype()
  files_lib.write_json(searcher.alphas_json(), files["alphas.json"])
  genotype_lib.save(genotype, files["genotype.json"])
  files["checkpoints"] = os.path.dirname(checkpoints.manager.latest_checkpoint or model_dir + "/")
  files["tensorboard"] = model_dir
  # The last epoch's figures (from the checkpoint when this run had no step left).
  totals = epoch_totals or _Totals(searcher.epoch_totals, resume=True)
  undecided = None
  if method.relaxation == "sigmoid":
    undecided = summaries.undecided_fraction([w.numpy() for w in searcher.model.arch_weights()])
  return SearchResult(genotype, totals.accuracy("train"), totals.accuracy("val"), model_dir,
                      files, undecided)


def derived_network_counts(genotype, num_classes, image_shape, init_channels=36, layers=20):
  """Params and MACs of the genotype's evaluation network (DARTS CIFAR: C=36, 20 cells).

  Returns networks.network_counts' dict (without params_with_aux when the images are too small
  for the auxiliary head), or {"error": why} when the genotype builds no network (e.g. a
  Fair DARTS genotype with no edge over the threshold).
  """
  for auxiliary in (True, False):
    try:
      return networks.counts_from_shapes("cifar", genotype, image_shape, init_channels,
                                           layers, num_classes, auxiliary)
    except UserInputError as e:
      error = str(e)  # without the head: why there is no network at all
  return {"error": error}


class _Totals:
  """Running sums of the step outputs over some steps.

  With a `variable` (float64, SIZE values) the sums are kept in it after every
  step, so that a checkpoint holds them; `resume` starts from its values.
  """

  # Every output of Searcher.train_step: the checkpointed sums hold these.
  KEYS = ("train_loss_sum", "train_correct", "val_loss_sum", "val_correct", "zero_one_loss",
          "grad_norm", "arch_updates_skipped", "weight_updates_skipped")
  SIZE = len(KEYS) + 2  # and the examples and the steps

  def __init__(self, variable=None, resume=False):
    self.sums, self.examples, self.steps = {}, 0, 0
    self.variable = variable
    if resume:
      *sums, examples, steps = variable.numpy().tolist()
      if steps:
        self.sums, self.examples, self.steps = dict(zip(self.KEYS, sums)), int(examples), int(
            steps)
    # The rate covers the steps run since this object was made.
    self.start, self.timed_examples = time.perf_counter(), 0

  def add(self, out, batch_size):
    for k, v in out.items():
      self.sums[k] = self.sums.get(k, 0.0) + v
    self.examples += batch_size
    self.timed_examples += batch_size
    self.steps += 1
    if self.variable is not None:
      self.variable.assign([self.sums.get(k, 0.0) for k in self.KEYS] + [self.examples,
                                                                         self.steps])

  def loss(self, split):
    return self.sums.get(f"{split}_loss_sum", math.nan) / max(self.examples, 1)

  def accuracy(self, split):
    return self.sums.get(f"{split}_correct", math.nan) / max(self.examples, 1)

  def mean(self, key):
    return self.sums.get(key, math.nan) / max(self.steps, 1)

  def seconds(self):
    return max(time.perf_counter() - self.start, 1e-9)

  def images_per_second(self):
    # Each step reads one training and one validation batch.
    return 2 * self.timed_examples / self.seconds()

  def fields(self):
    return {"loss/weights": f"{self.loss('train'):.4f}", "acc": f"{self.accuracy('train'):.4f}",
            "loss/arch": f"{self.loss('val'):.4f}", "val_acc": f"{self.accuracy('val'):.4f}"}

  def line(self):
    return (f"loss/weights {self.loss('train'):.4f} acc {self.accuracy('train'):.4f} | "
            f"loss/arch {self.loss('val'):.4f} acc {self.accuracy('val'):.4f} | "
            f"{self.images_per_second():.1f} img/s")


def _flush(writers):
  try:
    for w in writers.values():
      w.flush()
  except (OSError, tf.errors.OpError) as e:
    raise RunError(f"cannot write TensorBoard events: {first_line(e)}") from None


def _write_step_summaries(writers, totals, searcher, step):
  with writers["train"].as_default(step=step):
    tf.summary.scalar("loss/cross_entropy", totals.loss("train"))
    tf.summary.scalar("accuracy", totals.accuracy("train"))
    tf.summary.scalar("learning_rate/weights",
                      updates.scalar(searcher.weight_optimizer.learning_rate))
    tf.summary.scalar("learning_rate/arch", updates.scalar(searcher.arch_optimizer.learning_rate))
    # Over the applied updates (a skipped float16 step has no gradient norm).
    applied = totals.steps - totals.sums.get("weight_updates_skipped", 0.0)
    tf.summary.scalar("grad_norm", totals.sums.get("grad_norm", math.nan) / max(applied, 1))
    tf.summary.scalar("images_per_second", totals.images_per_second())
    tf.summary.scalar("steps_per_second", totals.steps / totals.seconds())
  with writers["validation"].as_default(step=step):
    tf.summary.scalar("loss/cross_entropy", totals.loss("val"))
    tf.summary.scalar("accuracy", totals.accuracy("val"))
    if searcher.method.zero_one_weight > 0:
      tf.summary.scalar("loss/zero_one", totals.mean("zero_one_loss"))
    if searcher.method.noise is not None:
      tf.summary.scalar("noise_scale", updates.scalar(searcher.model.noise_scale))
  for name, loss_scale in searcher.loss_scales().items():
    with writers["train" if name == "weight" else "validation"].as_default(step=step):
      tf.summary.scalar("loss_scale", updates.scalar(loss_scale.scale))
      tf.summary.scalar("updates_skipped", totals.sums[f"{name}_updates_skipped"])


def _write_epoch_summaries(writers, searcher, arch_summaries, genotype, epoch):
  step = int(searcher.global_step.numpy())
  weights = dict(zip(summaries.CELLS, (w.numpy() for w in searcher.model.arch_weights())))
  with writers["train"].as_default(step=step):
    tf.summary.scalar("epoch", epoch)
    arch_summaries.write(step, epoch, weights, genotype)
  _flush({**writers, **arch_summaries.writers})
