"""A whole search: data, model_dir, the run loop, the alphas and genotype files, TensorBoard.

The step is searcher.py's; the epochs, checkpoints, stops and progress are the
shared run loop's (runtime/loop.py); what the search space is, the space's own
(spaces.base): this module joins them.
"""
import dataclasses
import json
import math
import os

from absl import logging
import keras
import tensorflow as tf

from tfnas.data import pipeline
from tfnas.data import sources
from tfnas.runtime import checkpointing
from tfnas.runtime import distribute
from tfnas.runtime import files as files_lib
from tfnas.runtime import loop as loop_lib
from tfnas.runtime import progress as progress_lib
from tfnas.runtime import updates
from tfnas.runtime.errors import RunError
from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import first_line
from tfnas.search import searcher as searcher_lib
from tfnas.search import summaries

# Settings that may change when a run resumes; everything else must match.
_RESUMABLE_CHANGES = {("search", "epochs"), ("search", "log_every_steps"),
                      ("search", "max_checkpoints"), ("search", "checkpoint_every_steps"),
                      ("search", "checkpoint_every_secs"), ("search", "jit_compile")}


@dataclasses.dataclass
class SearchResult:
  genotype: object  # the space's genotype
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
  strategy = strategy or tf.distribute.get_strategy()
  with loop_lib.model_dir_lock(model_dir, strategy):
    return _search(space, method, config, data_config, model_dir, strategy, data, stop_at_step,
                   stop_request, progress)


def _params(space, method, config, data_config, data, num_replicas):
  return {
      "search_space": dataclasses.asdict(space),
      "method": dataclasses.asdict(method),
      "search": dataclasses.asdict(config),
      "data": dataclasses.asdict(data_config),
      "derived": {
          "num_replicas": num_replicas,
          "per_replica_batch_size": config.batch_size // num_replicas,
          "synchronized_bn": searcher_lib.synchronized_bn(config, num_replicas),
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


def _search(space, method, config, data_config, model_dir, strategy, data, stop_at_step,
            stop_request, progress):
  data = data or sources.load_search_data(data_config)
  if space.num_classes != data.num_classes:
    raise UserInputError(f"num_classes={space.num_classes} does not fit {data.name}, "
                         f"which has {data.num_classes} classes")
  distribute.check_batch_size(config.batch_size, strategy)
  steps_per_epoch = pipeline.steps_per_epoch(data, config.batch_size)
  space.check_image_size(*data.image_shape[:2])
  params = _params(space, method, config, data_config, data, strategy.num_replicas_in_sync)
  loop_lib.prepare_model_dir(model_dir, params, _RESUMABLE_CHANGES, "search", strategy)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  searcher = searcher_lib.Searcher(space, method, config, strategy, data.image_shape)

  checkpoints = checkpointing.Checkpointer(
      searcher.checkpoint, os.path.join(model_dir, "checkpoints"), searcher.global_step,
      config.max_checkpoints, config.checkpoint_every_steps, config.checkpoint_every_secs,
      variables=searcher.model.weights, stop_request=stop_request,
      workers=distribute.workers(strategy))
  restored = checkpoints.restore()
  if restored:
    logging.info("Resuming from %s at step %d", restored, int(searcher.global_step.numpy()))
  start_step = int(searcher.global_step.numpy())
  task = _SearchTask(searcher, model_dir, distribute.is_chief(strategy))
  loop = loop_lib.Loop(
      model_dir=model_dir, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
      global_step=searcher.global_step, epoch=searcher.epoch, sums=searcher.epoch_totals,
      checkpointer=checkpoints, batch_size=config.batch_size, strategy=strategy,
      # Each step reads a training and a validation batch.
      progress=progress or progress_lib.Progress(config.epochs, steps_per_epoch,
                                                 config.log_every_steps,
                                                 2 * config.batch_size),
      summary_every_steps=config.log_every_steps, stop_at_step=stop_at_step)
  if start_step == 0 and loop.chief:
    task.write_layout()
  logging.info("Search: %d epochs x %d steps, global batch %d on %d replica(s), %s",
               config.epochs, steps_per_epoch, config.batch_size, searcher.num_replicas,
               json.dumps(params["method"]))
  dataset = pipeline.search_input(data, global_batch_size=config.batch_size, seed=config.seed,
                                  epochs=config.epochs, start_step=start_step)
  task.iterator = distribute.input_iterator(dataset, strategy)
  sums = loop.run(task)
  if sums is None:
    return None
  if start_step >= config.epochs * steps_per_epoch:  # nothing left to run: report it
    logging.info("The search in %s is already complete", model_dir)
  genotype = searcher.genotype()
  if loop.chief:
    task.write_files(genotype)
  files = {**task.files(),
           "checkpoints": checkpoints.directory,
           "tensorboard": model_dir}
  undecided = None
  if method.relaxation == "sigmoid":
    undecided = summaries.undecided_fraction(searcher.arch_weights())
  return SearchResult(genotype, sums.per_example("train_correct"),
                      sums.per_example("val_correct"), model_dir, files, undecided)


def check_loss_scales(searcher, out, step, model_dir):
  """Stops a float16 search whose gradients overflow even at a scale below 1 (diverged)."""
  for name, loss_scale in searcher.loss_scales().items():
    if out[f"{name}_updates_skipped"] and updates.scalar(loss_scale.scale) < 1:
      raise FloatingPointError(
          f"the {name} gradients were not finite even at a loss scale below 1 at step "
          f"{step}; the last checkpoint in {model_dir} is kept")


class _SearchTask:
  """The search's part of the run loop (loop.py): its step, schedules, files and summaries."""

  keys = searcher_lib.Searcher.STEP_OUTPUTS

  def __init__(self, searcher, model_dir, chief):
    self.searcher, self.model_dir = searcher, model_dir
    self.iterator = None
    self.writers = loop_lib.summary_writers(model_dir, chief)
    self.arch_summaries = summaries.ArchSummaries(model_dir, searcher.space,
                                                  searcher.method.relaxation)
    self.genotype = None

  def files(self):
    return {name: os.path.join(self.model_dir, name)
            for name in ("params.json", "alphas.json", "genotype.json")}

  def write_layout(self):
    with self.writers["train"].as_default():
      self.arch_summaries.write_layout(self.searcher.arch_weights())

  def write_files(self, genotype):
    files = self.files()
    files_lib.write_json(self.searcher.alphas_json(), files["alphas.json"])
    self.searcher.space.save_genotype(genotype, files["genotype.json"])

  # ---- the loop's calls ------------------------------------------------------

  def begin_epoch(self, epoch):
    self.searcher.set_epoch_schedules(epoch)

  def step(self):
    return self.searcher.train_step(self.iterator)

  def check_step(self, out, step):
    check_loss_scales(self.searcher, out, step, self.model_dir)

  def loss(self, out):
    return out["train_loss_sum"] + out["val_loss_sum"]

  def progress_fields(self, sums):
    return {"loss/weights": f"{sums.per_example('train_loss_sum'):.4f}",
            "acc": f"{sums.per_example('train_correct'):.4f}",
            "loss/arch": f"{sums.per_example('val_loss_sum'):.4f}",
            "val_acc": f"{sums.per_example('val_correct'):.4f}"}

  def step_summaries(self, window, step):
    s = self.searcher
    with self.writers["train"].as_default(step=step):
      tf.summary.scalar("loss/cross_entropy", window.per_example("train_loss_sum"))
      tf.summary.scalar("accuracy", window.per_example("train_correct"))
      tf.summary.scalar("learning_rate/weights", updates.scalar(s.weight_optimizer.learning_rate))
      tf.summary.scalar("learning_rate/arch", updates.scalar(s.arch_optimizer.learning_rate))
      # Over the applied updates (a skipped float16 step has no gradient norm).
      applied = window.steps - window.sums.get("weight_updates_skipped", 0.0)
      tf.summary.scalar("grad_norm", window.sums.get("grad_norm", math.nan) / max(applied, 1))
      # Each step reads one training and one validation batch.
      tf.summary.scalar("images_per_second", 2 * window.examples_per_second())
      tf.summary.scalar("steps_per_second", window.steps / window.seconds())
    with self.writers["validation"].as_default(step=step):
      tf.summary.scalar("loss/cross_entropy", window.per_example("val_loss_sum"))
      tf.summary.scalar("accuracy", window.per_example("val_correct"))
      if s.method.zero_one_weight > 0:
        tf.summary.scalar("loss/zero_one", window.per_step("zero_one_loss"))
      if s.method.noise is not None:
        tf.summary.scalar("noise_scale", updates.scalar(s.model.noise_scale))
    for name, loss_scale in s.loss_scales().items():
      with self.writers["train" if name == "weight" else "validation"].as_default(step=step):
        tf.summary.scalar("loss_scale", updates.scalar(loss_scale.scale))
        tf.summary.scalar("updates_skipped", window.sums[f"{name}_updates_skipped"])

  def end_epoch(self, epoch, sums):
    self.genotype = self.searcher.genotype()
    logging.info("epoch %d/%d done | %s | genotype %s", epoch + 1, self.searcher.config.epochs,
                 _line(sums), json.dumps(self.searcher.space.genotype_json(self.genotype)))

  def write_epoch(self, epoch, sums):
    del sums  # the step summaries wrote the epoch's last window
    self.write_files(self.genotype)
    step = int(self.searcher.global_step.numpy())
    with self.writers["train"].as_default(step=step):
      tf.summary.scalar("epoch", epoch + 1)
      self.arch_summaries.write(step, epoch + 1, self.searcher.arch_weights(), self.genotype)

  def flush(self):
    try:
      for writer in self.writers.values():
        writer.flush()
      self.arch_summaries.flush()
    except (OSError, tf.errors.OpError) as e:
      raise RunError(f"cannot write TensorBoard events: {first_line(e)}") from None


def _line(sums):
  """The epoch's figures in its closing log line."""
  # Each step reads one training and one validation batch.
  return (f"loss/weights {sums.per_example('train_loss_sum'):.4f} "
          f"acc {sums.per_example('train_correct'):.4f} | "
          f"loss/arch {sums.per_example('val_loss_sum'):.4f} "
          f"acc {sums.per_example('val_correct'):.4f} | "
          f"{2 * sums.examples_per_second():.1f} img/s")
