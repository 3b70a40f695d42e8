"""What the search and the training loops share: gradients across replicas, the
PyTorch-style weight update, schedules and a self-describing model_dir."""
import json
import math
import os

import tensorflow as tf

from tfnas import distribute
from tfnas import files
from tfnas.errors import RunError
from tfnas.errors import UserInputError


def sum_over_replicas(grads, variables):
  """The gradient of the global batch's loss, on every replica.

  A variable that did not take part (alphas_normal in a network of one
  reduction cell) gets a zero gradient.
  """
  grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
  return distribute.sum_over_replicas(grads)


class DynamicLossScale(tf.Module):
  """Dynamic loss scaling for float16 compute, with the rule of torch.cuda.amp.GradScaler.

  The backward pass starts from `scale` instead of 1, so that small gradients do
  not flush to zero in float16; the summed gradients are divided by it again. A
  step whose gradients are not finite is skipped and halves the scale;
  `growth_steps` finite steps in a row double it. Its two variables belong in
  the checkpoint, so that a resumed run scales as the uninterrupted one.
  """

  def __init__(self, initial_scale=2.0**16, growth_steps=2000, name=None):
    super().__init__(name=name)
    self.growth_steps = growth_steps
    # Every replica makes the same decision (from the same summed gradients).
    first = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.scale = tf.Variable(initial_scale, dtype=tf.float32, trainable=False,
                             aggregation=first, name="scale")
    self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                                  name="good_steps")

  def update(self, finite):
    grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_steps)
    self.scale.assign(tf.where(finite, tf.where(grow, 2.0, 1.0), 0.5) * self.scale)
    self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                                    self.good_steps + 1, 0))


def summed_gradients(tape, loss, variables, loss_scale=None):
  """The gradients of the global batch's loss over the replicas (replica context),
  with the backward pass run at `loss_scale` (a DynamicLossScale) when given."""
  if loss_scale is None:
    return sum_over_replicas(tape.gradient(loss, variables), variables)
  scale = tf.convert_to_tensor(loss_scale.scale)
  grads = tape.gradient(loss, variables, output_gradients=scale)
  return [g / scale for g in sum_over_replicas(grads, variables)]


def apply_gradients(optimizer, grads, variables, loss_scale=None, norm=None):
  """optimizer.apply_gradients (replica context), skipped when a loss-scaled gradient
  is not finite; returns whether it was applied.

  `norm`: the gradients' global norm, if already known. The skip is decided in the
  cross-replica context: under MirroredStrategy the optimizer's update is a
  merge_call, which TensorFlow refuses inside a tf.cond in the replica function
  (keras-team/keras#18666). The summed gradients, and so the decision, are the same
  on every replica.
  """
  if loss_scale is None:
    optimizer.apply_gradients(zip(grads, variables))
    return tf.constant(True)
  finite = tf.math.is_finite(tf.linalg.global_norm(grads) if norm is None else norm)

  def update(strategy, grads, finite):
    finite = strategy.experimental_local_results(finite)[0]

    def apply():
      strategy.extended.call_for_each_replica(
          lambda g: optimizer.apply_gradients(zip(g, variables)), args=(grads,))

    tf.cond(finite, apply, lambda: None)
    loss_scale.update(finite)

  tf.distribute.get_replica_context().merge_call(update, args=(grads, finite))
  return finite


def sgd_update(optimizer, loss, tape, variables, grad_clip, weight_decay, loss_scale=None):
  """One weight update as the original: clip the global gradient, add coupled L2, step.

  Returns the gradient's global norm before clipping (0 for a skipped update) and
  whether the update was applied (see apply_gradients).
  """
  grads = summed_gradients(tape, loss, variables, loss_scale)
  if grad_clip > 0:
    grads, norm = tf.clip_by_global_norm(grads, grad_clip)
  else:
    norm = tf.linalg.global_norm(grads)
  # Coupled L2 decay after clipping, as torch.optim.SGD(weight_decay=...) does.
  grads = [g + weight_decay * v for g, v in zip(grads, variables)]
  applied = apply_gradients(optimizer, grads, variables, loss_scale, norm)
  return tf.where(applied, norm, 0.0), applied


def scalar(variable):
  """A scalar variable's value as a float (a Keras or tf.Variable, also a mirrored one)."""
  if isinstance(variable, tf.Variable):
    return float(variable.read_value())
  return float(tf.convert_to_tensor(variable.value if hasattr(variable, "value") else variable))


def correct(y, logits):
  """How many predictions in the batch are right (a float sum)."""
  return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32))


def cosine_learning_rate(initial, final, epoch, epochs):
  """Per-epoch cosine annealing, as torch's CosineAnnealingLR stepped at each epoch's start."""
  return final + 0.5 * (initial - final) * (1.0 + math.cos(math.pi * epoch / epochs))


# The section that tells a search's params.json from a training's.
_KINDS = {"search": "search", "train": "training"}


def prepare_model_dir(model_dir, params, resumable, what):
  """Writes params.json, refusing a model_dir that holds a run of another kind or configuration.

  `resumable` lists the (section, key) settings that may change on resume; `what`
  names the run ('search' or 'training') in messages. Take files.model_dir_lock first.
  """
  path = os.path.join(model_dir, "params.json")
  if os.path.lexists(path):
    old = files.read_json(path, expect=dict)
    held = next((name for key, name in _KINDS.items() if key in old), None)
    if held is None:
      raise UserInputError(f"{path} is neither a search's nor a training's: use another "
                           "--model_dir")
    if held != what:
      raise UserInputError(f"{model_dir} holds a {held}, not a {what}: use another --model_dir")
    new = json.loads(json.dumps(params))
    for section, values in new.items():
      if section == "derived":
        continue
      stored = old.get(section) or {}
      if not isinstance(stored, dict):
        raise UserInputError(f"{path}: '{section}' must be a JSON object, not {stored!r}")
      for key in sorted(set(stored) | set(values or {})):
        if (section, key) in resumable:
          continue
        a, b = stored.get(key), (values or {}).get(key)
        if key not in stored:
          raise UserInputError(
              f"{model_dir} holds a {what} of an older tfnas, which had no setting "
              f"{section}.{key}: this version cannot resume it; use another --model_dir")
        if a != b:
          raise UserInputError(
              f"{model_dir} holds a {what} with {section}.{key}={a!r}, not {b!r}: "
              f"use another --model_dir, or the same settings to resume")
  try:
    os.makedirs(model_dir, exist_ok=True)
  except OSError as e:
    raise UserInputError(f"cannot write to model_dir {model_dir}: {e.strerror}") from None
  try:
    files.write_json(params, path)
  except RunError as e:
    raise UserInputError(str(e)) from None
  return path
