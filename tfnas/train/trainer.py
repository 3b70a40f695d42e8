"""Training a discovered network from scratch: a cell's, with the original evaluation protocol,
or a chain's.

The network is a spaces.base.NetworkSpec (spaces.network_spec makes one from a genotype). The
defaults are quark0/darts cnn/train.py's: SGD momentum 0.9, coupled weight decay 3e-4, lr
0.025 cosine to 0 (stepped per epoch), gradient clipping at 5, batch 96, 600 epochs, the
auxiliary head's loss weighted 0.4 (networks that have the head), drop path ramping linearly
to 0.2, cutout 16, the whole training split, evaluation on the test split.
"""
import dataclasses
import json
import os

from absl import logging
import keras
import tensorflow as tf

from tfnas.data import pipeline
from tfnas.data import sources
from tfnas.runtime import checkpointing
from tfnas.runtime import distribute
from tfnas.runtime import files
from tfnas.runtime import loop as loop_lib
from tfnas.runtime import optimizers
from tfnas.runtime import progress as progress_lib
from tfnas.runtime import updates
from tfnas.runtime.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The optimization (defaults: the original CIFAR-10 protocol); the network is a NetworkSpec."""
  auxiliary_weight: float = 0.4      # of the auxiliary head's loss, in networks that have one
  drop_path_prob: float = 0.2        # reached at the last epoch, from 0
  epochs: int = 600
  batch_size: int = 96               # global
  learning_rate: float = 0.025
  learning_rate_min: float = 0.0
  # None: cosine from learning_rate to learning_rate_min; a factor: learning_rate x
  # lr_decay^epoch (DARTS' ImageNet protocol: StepLR(1, 0.97)).
  lr_decay: float | None = None
  label_smoothing: float | None = None  # None or 0: off (DARTS' ImageNet protocol: 0.1)
  momentum: float = 0.9
  weight_decay: float = 3e-4
  grad_clip: float = 5.0
  cutout: int = 16                   # 0: off
  seed: int = 0
  deterministic: bool = False        # TF op determinism
  log_every_steps: int = 100
  max_checkpoints: int = 3
  checkpoint_every_steps: int = 0    # 0: off; a checkpoint is also written every epoch
  checkpoint_every_secs: float = 600.0  # 0: off

  def __post_init__(self):
    for name in ("epochs", "batch_size", "log_every_steps", "max_checkpoints"):
      if getattr(self, name) < 1:
        raise UserInputError(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("auxiliary_weight", "learning_rate_min", "weight_decay", "grad_clip", "cutout",
                 "checkpoint_every_steps", "checkpoint_every_secs"):
      if getattr(self, name) < 0:
        raise UserInputError(f"{name} must be >= 0, got {getattr(self, name)}")
    if not 0 <= self.drop_path_prob < 1:
      raise UserInputError(f"drop_path_prob must be in [0, 1), got {self.drop_path_prob}")
    if not self.learning_rate > 0:
      raise UserInputError(f"learning_rate must be > 0, got {self.learning_rate}")
    if self.lr_decay is not None and not 0 < self.lr_decay <= 1:
      raise UserInputError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
    if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
      raise UserInputError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

  def learning_rate_at(self, epoch):
    """The learning rate of an epoch (set at its start)."""
    if self.lr_decay is not None:
      return self.learning_rate * self.lr_decay ** epoch
    return updates.cosine_learning_rate(self.learning_rate, self.learning_rate_min, epoch,
                                        self.epochs)


def _evaluate(eval_step, strategy, data, batch_size, copy_statistics):
  """Test loss and accuracy in inference mode over the whole split, of the network that a
  checkpoint keeps (`copy_statistics`: distribute.first_replica_copier's, or None)."""
  if copy_statistics is not None:
    copy_statistics()
  total_loss = total_correct = 0.0
  dataset = pipeline.evaluation_batches(data.test, data.mean, data.std, batch_size)
  for x, y in distribute.input_iterator(dataset, strategy):
    loss, right = strategy.run(eval_step, args=(x, y))
    total_loss += float(strategy.reduce("SUM", loss, axis=None))
    total_correct += float(strategy.reduce("SUM", right, axis=None))
  return total_loss / len(data.test), total_correct / len(data.test)


_RESUMABLE = {("train", "epochs"), ("train", "log_every_steps"), ("train", "max_checkpoints"),
              ("train", "checkpoint_every_steps"), ("train", "checkpoint_every_secs"),
              # Written into "train" before 2026-11-30, now in "network" (which is checked):
              # a cell training of then resumes.
              ("train", "init_channels"), ("train", "layers"), ("train", "drop_path")}


def train(spec, config, data_config, model_dir, strategy=None, data=None,
          stop_at_step=None, stop_request=None, progress=None):
  """Trains (or resumes training of) the network of `spec` (a NetworkSpec) in model_dir.

  model_dir receives params.json, checkpoints/ (network, optimizer, step,
  epoch; every epoch and at the config's interval), TensorBoard events in
  train/ and validation/, and eval.json with the final and best test accuracy.
  Returns eval.json's dict, or None when stopped early by `stop_at_step`.
  `stop_request` and `progress` as in search.run.search; model_dir is locked for the run
  (files.model_dir_lock): a second run on it is refused.
  """
  strategy = strategy or tf.distribute.get_strategy()
  with loop_lib.model_dir_lock(model_dir, strategy):
    return _train(spec, config, data_config, model_dir, strategy, data, stop_at_step,
                  stop_request, progress)


def _train(spec, config, data_config, model_dir, strategy, data, stop_at_step, stop_request,
           progress):
  data = data or sources.load_search_data(data_config)
  if spec.num_classes != data.num_classes:
    raise UserInputError(f"the network has {spec.num_classes} classes; {data.name} has "
                         f"{data.num_classes}")
  distribute.check_batch_size(config.batch_size, strategy)
  n = strategy.num_replicas_in_sync
  steps_per_epoch = len(data.train) // config.batch_size
  if steps_per_epoch == 0:
    raise UserInputError(f"batch_size {config.batch_size} is larger than the training split "
                         f"({len(data.train)} images)")
  auxiliary = spec.auxiliary
  network_params = {**spec.settings_json(), "image_shape": list(data.image_shape),
                    "mean": list(data.mean), "std": list(data.std)}
  params = {"genotype": spec.genotype_json(), "network": network_params,
            "train": dataclasses.asdict(config), "data": dataclasses.asdict(data_config),
            "derived": {"num_replicas": n, "steps_per_epoch": steps_per_epoch,
                        "train_split": data.train_split, "test_split": data.val_split,
                        "train_examples": len(data.train), "test_examples": len(data.test),
                        "tensorflow": tf.__version__, "keras": keras.__version__}}
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  with strategy.scope():
    network = spec.build()
    network.check_image_size(*data.image_shape[:2])
    loop_lib.prepare_model_dir(model_dir, params, _RESUMABLE, "training", strategy)
    network(tf.zeros([1, *data.image_shape]))
    variables = network.trainable_variables
    optimizer = optimizers.TorchSGD(config.learning_rate, config.momentum)
    optimizer.build(variables)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False,
                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
  # The epoch's running loss, correct predictions and examples, so that a resumed epoch's
  # figures cover it all (no step count: the layout of the checkpoints written before the
  # run loop was shared).
  epoch_sums = loop_lib.EpochSums.variable(_TrainTask.keys, with_steps=False)
  checkpoint = tf.train.Checkpoint(model=network, optimizer=optimizer, global_step=global_step,
                                   epoch=epoch_var, epoch_sums=epoch_sums)
  checkpoints = checkpointing.Checkpointer(
      checkpoint, os.path.join(model_dir, "checkpoints"), global_step, config.max_checkpoints,
      config.checkpoint_every_steps, config.checkpoint_every_secs, variables=network.weights,
      stop_request=stop_request, workers=distribute.workers(strategy))
  restored = checkpoints.restore()
  if restored:
    logging.info("Resuming from %s", restored)
  counts = spec.param_counts(network)
  logging.info("Training %s: %d params (%s), %d epochs x %d steps",
               json.dumps(params["genotype"]), counts["params"],
               f"{counts['params_with_aux']} with the auxiliary head" if auxiliary
               else "no auxiliary head", config.epochs, steps_per_epoch)

  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

  def train_loss(y, logits):  # the test loss is the plain cross-entropy
    return smoothed_cross_entropy(y, logits, config.label_smoothing or 0.0)

  def replica_step(x, y):
    seed = tf.stack([tf.constant(config.seed, tf.int64), global_step.read_value()])
    with tf.GradientTape() as tape:
      out = network(x, training=True, seed=seed)
      logits, aux_logits = out if auxiliary else (out, None)
      ce = train_loss(y, logits)
      loss = tf.nn.compute_average_loss(ce, global_batch_size=config.batch_size)
      if auxiliary:
        loss += config.auxiliary_weight * tf.nn.compute_average_loss(
            train_loss(y, aux_logits), global_batch_size=config.batch_size)
    updates.sgd_update(optimizer, loss, tape, variables, config.grad_clip, config.weight_decay)
    return tf.reduce_sum(ce), updates.correct(y, logits)

  @tf.function
  def eval_step(x, y):
    logits = network(x, training=False)
    real = tf.not_equal(y, pipeline.PADDING_LABEL)  # the last batch is filled up
    losses = loss_fn(tf.where(real, y, tf.zeros_like(y)), logits)
    # A filled-up example's label matches no prediction: updates.correct leaves it out.
    return tf.reduce_sum(tf.where(real, losses, 0.0)), updates.correct(y, logits)

  @tf.function
  def train_step(iterator):
    loss, right = strategy.run(replica_step, args=next(iterator))
    global_step.assign_add(1)
    return {"loss_sum": strategy.reduce("SUM", loss, axis=None),
            "correct": strategy.reduce("SUM", right, axis=None)}

  copy_statistics = distribute.first_replica_copier(
      strategy, [v for v in network.non_trainable_variables if "float" in v.dtype])
  start_step = int(global_step.numpy())
  dataset = pipeline.batches(data.train, data.mean, data.std,
                             global_batch_size=config.batch_size, seed=config.seed, stream=0,
                             epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                             start_step=start_step, augment=data.augment, cutout=config.cutout)
  iterator = distribute.input_iterator(dataset, strategy)
  eval_path = os.path.join(model_dir, "eval.json")
  history = {}
  if os.path.lexists(eval_path):
    history = files.read_json(eval_path, expect=dict).get("history", {})
    if not isinstance(history, dict):
      raise UserInputError(f"{eval_path}: 'history' must be a JSON object")
  task = _TrainTask(config, model_dir, network, optimizer, global_step, history, counts, spec,
                    lambda: train_step(iterator),
                    lambda: _evaluate(eval_step, strategy, data, config.batch_size,
                                      copy_statistics),
                    distribute.is_chief(strategy))
  loop = loop_lib.Loop(
      model_dir=model_dir, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
      global_step=global_step, epoch=epoch_var, sums=epoch_sums, checkpointer=checkpoints,
      batch_size=config.batch_size, strategy=strategy, stop_at_step=stop_at_step,
      with_steps=False,
      progress=progress or progress_lib.Progress(config.epochs, steps_per_epoch,
                                                 config.log_every_steps, config.batch_size))
  if loop.run(task) is None:
    return None
  summary = _eval_summary(history, counts, spec)
  if loop.chief:
    files.write_json(summary, eval_path)
  return summary


def smoothed_cross_entropy(y, logits, smoothing):
  """Per-example cross-entropy against (1 - smoothing) one-hot + smoothing / classes, as
  DARTS' CrossEntropyLabelSmooth (smoothing 0: the plain cross-entropy)."""
  if not smoothing:
    return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
  log_p = tf.nn.log_softmax(logits)
  classes = logits.shape[-1]
  target = tf.one_hot(y, classes, 1.0 - smoothing, 0.0) + smoothing / classes
  return -tf.reduce_sum(target * log_p, axis=-1)


class _TrainTask:
  """The retraining's part of the run loop (loop.py): its step, evaluation, files, summaries."""

  keys = ("loss_sum", "correct")

  def __init__(self, config, model_dir, network, optimizer, global_step, history, counts,
               spec, step, evaluate, chief):
    self.config, self.model_dir, self.network, self.optimizer = (config, model_dir, network,
                                                                 optimizer)
    self.global_step, self.history, self.counts, self.spec = (global_step, history, counts,
                                                              spec)
    self.step, self.evaluate = step, evaluate
    self.writers = loop_lib.summary_writers(model_dir, chief)
    self.epoch_figures, self.rate = None, None

  def begin_epoch(self, epoch):
    cfg = self.config
    self.optimizer.learning_rate.assign(cfg.learning_rate_at(epoch))
    self.network.drop_path_prob.assign(cfg.drop_path_prob * epoch / cfg.epochs)

  def check_step(self, out, step):
    del out, step  # nothing beyond the loop's finiteness check

  def loss(self, out):
    return out["loss_sum"]

  def progress_fields(self, sums):
    return {"loss": f"{sums.per_example('loss_sum'):.4f}",
            "acc": f"{sums.per_example('correct'):.4f}"}

  def step_summaries(self, window, step):
    del window, step  # the training writes its summaries once per epoch

  def end_epoch(self, epoch, sums):
    seconds = sums.seconds()  # the steps', before the evaluation
    test_loss, test_accuracy = self.evaluate()
    self.epoch_figures = {"train_loss": sums.per_example("loss_sum"),
                          "train_accuracy": sums.per_example("correct"),
                          "test_loss": test_loss, "test_accuracy": test_accuracy}
    self.history[str(epoch + 1)] = self.epoch_figures
    self.rate = sums.timed_examples / seconds
    logging.info("epoch %d/%d done | train loss %.4f acc %.4f | test loss %.4f acc %.4f",
                 epoch + 1, self.config.epochs, *self.epoch_figures.values())

  def write_epoch(self, epoch, sums):
    del epoch, sums
    f, step = self.epoch_figures, int(self.global_step.numpy())
    with self.writers["train"].as_default(step=step):
      tf.summary.scalar("loss/cross_entropy", f["train_loss"])
      tf.summary.scalar("accuracy", f["train_accuracy"])
      tf.summary.scalar("learning_rate", updates.scalar(self.optimizer.learning_rate))
      tf.summary.scalar("drop_path_prob", updates.scalar(self.network.drop_path_prob))
      tf.summary.scalar("images_per_second", self.rate)
      tf.summary.scalar("steps_per_second", self.rate / self.config.batch_size)
    with self.writers["validation"].as_default(step=step):
      tf.summary.scalar("loss/cross_entropy", f["test_loss"])
      tf.summary.scalar("accuracy", f["test_accuracy"])
    files.write_json(_eval_summary(self.history, self.counts, self.spec),
                     os.path.join(self.model_dir, "eval.json"))

  def flush(self):
    for writer in self.writers.values():
      writer.flush()


def _eval_summary(history, counts, spec):
  """eval.json: the final and the best test accuracy (DARTS reports the final one)."""
  epochs = sorted(history, key=int)
  best = max(epochs, key=lambda e: history[e]["test_accuracy"]) if epochs else None
  return {
      "genotype": spec.genotype_json(),
      **counts,
      "epochs_done": int(epochs[-1]) if epochs else 0,
      "final_test_accuracy": history[epochs[-1]]["test_accuracy"] if epochs else None,
      "best_test_accuracy": history[best]["test_accuracy"] if best else None,
      "best_epoch": int(best) if best else None,
      "history": history,
  }
