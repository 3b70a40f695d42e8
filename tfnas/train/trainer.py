"""Training a discovered cell from scratch, with the original evaluation protocol.

quark0/darts cnn/train.py: SGD momentum 0.9, coupled weight decay 3e-4, lr 0.025
cosine to 0 (stepped per epoch), gradient clipping at 5, batch 96, 600 epochs,
the auxiliary head's loss weighted 0.4, drop path ramping linearly to 0.2,
cutout 16, the whole training split, evaluation on the test split.
"""
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
from tfnas.runtime import checkpointing
from tfnas.runtime import distribute
from tfnas.runtime import files
from tfnas.runtime import optimizers
from tfnas.runtime import progress as progress_lib
from tfnas.runtime import updates
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import networks
from tfnas.spaces.darts_cell import zoo


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The network and the optimization (defaults: the original CIFAR-10 protocol)."""
  init_channels: int = 36
  layers: int = 20
  auxiliary_weight: float = 0.4      # 0: no auxiliary head
  drop_path_prob: float = 0.2        # reached at the last epoch, from 0
  drop_path: str = "op"              # "op" (DARTS cells) or "node" (Fair DARTS cells)
  epochs: int = 600
  batch_size: int = 96               # global
  learning_rate: float = 0.025
  learning_rate_min: float = 0.0
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
    for name in ("init_channels", "layers", "epochs", "batch_size", "log_every_steps",
                 "max_checkpoints"):
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
    if self.drop_path not in ("op", "node"):
      raise UserInputError(f"drop_path must be 'op' or 'node', got {self.drop_path!r}")


def drop_path_granularity(genotype):
  """'op' for DARTS-rule cells (two inputs on every node), 'node' otherwise (Fair DARTS)."""
  for entries in (genotype.normal, genotype.reduce):
    nodes = {to for _, to, _ in entries}
    if any(sum(1 for _, to, _ in entries if to == n) != 2 for n in nodes) or len(
        genotype_lib.live_nodes(entries)) != len(nodes):
      return "node"
  return "op"


def auto_drop_path(name_or_path, genotype):
  """The drop path --drop_path=auto picks for the genotype that `name_or_path` (a zoo name or
  a JSON file) resolved to: 'node' for the FairDARTS_* zoo cells, trained as Fair DARTS' code
  trains them even where every node has two inputs; drop_path_granularity otherwise."""
  if name_or_path.startswith("FairDARTS_") and name_or_path in zoo.NAMES:
    return "node"
  return drop_path_granularity(genotype)


def _evaluate(eval_step, strategy, data, batch_size):
  """Test loss and accuracy in inference mode over the whole split."""
  total_loss = total_correct = 0.0
  dataset = pipeline.evaluation_batches(data.test, data.mean, data.std, batch_size)
  for x, y in distribute.input_iterator(dataset, strategy):
    loss, right = strategy.run(eval_step, args=(x, y))
    total_loss += float(strategy.reduce("SUM", loss, axis=None))
    total_correct += float(strategy.reduce("SUM", right, axis=None))
  return total_loss / len(data.test), total_correct / len(data.test)


_RESUMABLE = {("train", "epochs"), ("train", "log_every_steps"), ("train", "max_checkpoints"),
              ("train", "checkpoint_every_steps"), ("train", "checkpoint_every_secs")}


def train(genotype, config, data_config, model_dir, strategy=None, data=None,
          stop_at_step=None, stop_request=None, progress=None):
  """Trains (or resumes training of) the network of `genotype` in model_dir.

  model_dir receives params.json, checkpoints/ (network, optimizer, step,
  epoch; every epoch and at the config's interval), TensorBoard events in
  train/ and validation/, and eval.json with the final and best test accuracy.
  Returns eval.json's dict, or None when stopped early by `stop_at_step`.
  `stop_request` and `progress` as in searcher.search; model_dir is locked for the run
  (files.model_dir_lock): a second run on it is refused.
  """
  with files.model_dir_lock(model_dir):
    return _train(genotype, config, data_config, model_dir, strategy, data, stop_at_step,
                  stop_request, progress)


def _train(genotype, config, data_config, model_dir, strategy, data, stop_at_step, stop_request,
           progress):
  strategy = strategy or tf.distribute.get_strategy()
  data = data or sources.load_search_data(data_config)
  distribute.check_batch_size(config.batch_size, strategy)
  n = strategy.num_replicas_in_sync
  steps_per_epoch = len(data.train) // config.batch_size
  if steps_per_epoch == 0:
    raise UserInputError(f"batch_size {config.batch_size} is larger than the training split "
                         f"({len(data.train)} images)")
  auxiliary = config.auxiliary_weight > 0
  network_params = {
      "kind": "cifar", "init_channels": config.init_channels, "layers": config.layers,
      "num_classes": data.num_classes, "auxiliary": auxiliary, "drop_path": config.drop_path,
      "image_shape": list(data.image_shape), "mean": list(data.mean), "std": list(data.std)}
  params = {"genotype": genotype_lib.to_json(genotype), "network": network_params,
            "train": dataclasses.asdict(config), "data": dataclasses.asdict(data_config),
            "derived": {"num_replicas": n, "steps_per_epoch": steps_per_epoch,
                        "train_split": data.train_split, "test_split": data.val_split,
                        "train_examples": len(data.train), "test_examples": len(data.test),
                        "tensorflow": tf.__version__, "keras": keras.__version__}}
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  with strategy.scope():
    network = networks.NetworkCIFAR(genotype, config.init_channels, config.layers,
                                      data.num_classes, auxiliary=auxiliary,
                                      drop_path=config.drop_path)
    network.check_image_size(*data.image_shape[:2])
    files.prepare_model_dir(model_dir, params, _RESUMABLE, "training")
    network(tf.zeros([1, *data.image_shape]))
    variables = network.trainable_variables
    optimizer = optimizers.TorchSGD(config.learning_rate, config.momentum)
    optimizer.build(variables)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False,
                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
  with tf.device("CPU:0"):
    # The epoch's running loss, correct predictions and examples, so that a resumed epoch's
    # figures cover it all.
    epoch_sums = tf.Variable(tf.zeros([3], tf.float64), trainable=False)
  checkpoint = tf.train.Checkpoint(model=network, optimizer=optimizer, global_step=global_step,
                                   epoch=epoch_var, epoch_sums=epoch_sums)
  checkpoints = checkpointing.Checkpointer(
      checkpoint, os.path.join(model_dir, "checkpoints"), global_step, config.max_checkpoints,
      config.checkpoint_every_steps, config.checkpoint_every_secs, variables=network.weights,
      stop_request=stop_request)
  restored = checkpoints.restore()
  if restored:
    logging.info("Resuming from %s", restored)
  counts = {"params": networks.count_params(network, include_aux=False)}
  if auxiliary:
    counts["params_with_aux"] = networks.count_params(network, include_aux=True)
  logging.info("Training %s: %d params (%s), %d epochs x %d steps",
               json.dumps(params["genotype"]), counts["params"],
               f"{counts['params_with_aux']} with the auxiliary head" if auxiliary
               else "no auxiliary head", config.epochs, steps_per_epoch)

  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

  def replica_step(x, y):
    seed = tf.stack([tf.constant(config.seed, tf.int64), global_step.read_value()])
    with tf.GradientTape() as tape:
      out = network(x, training=True, seed=seed)
      logits, aux_logits = out if auxiliary else (out, None)
      ce = loss_fn(y, logits)
      loss = tf.nn.compute_average_loss(ce, global_batch_size=config.batch_size)
      if auxiliary:
        loss += config.auxiliary_weight * tf.nn.compute_average_loss(
            loss_fn(y, aux_logits), global_batch_size=config.batch_size)
    updates.sgd_update(optimizer, loss, tape, variables, config.grad_clip, config.weight_decay)
    return tf.reduce_sum(ce), updates.correct(y, logits)

  # Traced once for full batches and once for the short last one.
  @tf.function(reduce_retracing=True)
  def eval_step(x, y):
    logits = network(x, training=False)
    return tf.reduce_sum(loss_fn(y, logits)), updates.correct(y, logits)

  @tf.function
  def train_step(iterator):
    loss, right = strategy.run(replica_step, args=next(iterator))
    global_step.assign_add(1)
    return (strategy.reduce("SUM", loss, axis=None), strategy.reduce("SUM", right, axis=None))

  start_step = int(global_step.numpy())
  dataset = pipeline.batches(data.train, data.mean, data.std,
                             global_batch_size=config.batch_size, seed=config.seed, stream=0,
                             epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                             start_step=start_step, augment=data.augment, cutout=config.cutout)
  iterator = distribute.input_iterator(dataset, strategy)
  writers = {name: tf.summary.create_file_writer(os.path.join(model_dir, name))
             for name in ("train", "validation")}
  eval_path = os.path.join(model_dir, "eval.json")
  history = {}
  if os.path.lexists(eval_path):
    history = files.read_json(eval_path, expect=dict).get("history", {})
    if not isinstance(history, dict):
      raise UserInputError(f"{eval_path}: 'history' must be a JSON object")
  progress = progress or progress_lib.Progress(config.epochs, steps_per_epoch,
                                               config.log_every_steps, config.batch_size)
  for epoch in range(start_step // steps_per_epoch, config.epochs):
    optimizer.learning_rate.assign(updates.cosine_learning_rate(
        config.learning_rate, config.learning_rate_min, epoch, config.epochs))
    network.drop_path_prob.assign(config.drop_path_prob * epoch / config.epochs)
    progress.begin_epoch(epoch)
    first = max(start_step - epoch * steps_per_epoch, 0)
    # Resumed within the epoch: its first steps' sums come from the checkpoint.
    loss_sum, right_sum, examples = epoch_sums.numpy().tolist() if first else (0.0, 0.0, 0.0)
    start, timed_examples = time.perf_counter(), 0
    for step_in_epoch in range(first, steps_per_epoch):
      loss, right = (float(t) for t in train_step(iterator))
      if not math.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss} at step {int(global_step.numpy())}; "
                                 f"the last checkpoint in {model_dir} is kept")
      loss_sum, right_sum, examples = loss_sum + loss, right_sum + right, examples + (
          config.batch_size)
      timed_examples += config.batch_size
      epoch_sums.assign([loss_sum, right_sum, examples])
      step = int(global_step.numpy())
      progress.step(step_in_epoch, step, {"loss": f"{loss_sum / examples:.4f}",
                                          "acc": f"{right_sum / examples:.4f}"})
      if step == stop_at_step:
        checkpoints.save()
        progress.end_epoch()
        return None
      # The epoch's end writes its own checkpoint.
      checkpoints.after_step(save=step_in_epoch + 1 < steps_per_epoch)
    progress.end_epoch()
    seconds = time.perf_counter() - start
    test_loss, test_accuracy = _evaluate(eval_step, strategy, data, config.batch_size)
    epoch_var.assign(epoch + 1)
    step = int(global_step.numpy())
    train_loss, train_accuracy = loss_sum / max(examples, 1), right_sum / max(examples, 1)
    with writers["train"].as_default(step=step):
      tf.summary.scalar("loss/cross_entropy", train_loss)
      tf.summary.scalar("accuracy", train_accuracy)
      tf.summary.scalar("learning_rate", updates.scalar(optimizer.learning_rate))
      tf.summary.scalar("drop_path_prob", updates.scalar(network.drop_path_prob))
      tf.summary.scalar("images_per_second", timed_examples / seconds)
      tf.summary.scalar("steps_per_second", timed_examples / config.batch_size / seconds)
    with writers["validation"].as_default(step=step):
      tf.summary.scalar("loss/cross_entropy", test_loss)
      tf.summary.scalar("accuracy", test_accuracy)
    history[str(epoch + 1)] = {"train_loss": train_loss, "train_accuracy": train_accuracy,
                               "test_loss": test_loss, "test_accuracy": test_accuracy}
    files.write_json(_eval_summary(history, counts, genotype), eval_path)
    logging.info("epoch %d/%d done | train loss %.4f acc %.4f | test loss %.4f acc %.4f",
                 epoch + 1, config.epochs, train_loss, train_accuracy, test_loss, test_accuracy)
    # The checkpoint last: a stop after it loses nothing, so it may end the process.
    checkpoints.save()
    checkpoints.after_step()
  for w in writers.values():
    w.flush()
  summary = _eval_summary(history, counts, genotype)
  files.write_json(summary, eval_path)
  return summary


def _eval_summary(history, counts, genotype):
  """eval.json: the final and the best test accuracy (DARTS reports the final one)."""
  epochs = sorted(history, key=int)
  best = max(epochs, key=lambda e: history[e]["test_accuracy"]) if epochs else None
  return {
      "genotype": genotype_lib.to_json(genotype),
      **counts,
      "epochs_done": int(epochs[-1]) if epochs else 0,
      "final_test_accuracy": history[epochs[-1]]["test_accuracy"] if epochs else None,
      "best_test_accuracy": history[best]["test_accuracy"] if best else None,
      "best_epoch": int(best) if best else None,
      "history": history,
  }
