"""What the search and the training loops share: gradients across replicas, the
PyTorch-style weight update, schedules and a self-describing model_dir."""
import json
import math
import os

import tensorflow as tf

from tfnas import distribute
from tfnas.errors import RunError
from tfnas.errors import UserInputError


def sum_over_replicas(grads, variables):
  """The gradient of the global batch's loss, on every replica.

  A variable that did not take part (alphas_normal in a network of one
  reduction cell) gets a zero gradient.
  """
  grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
  return distribute.sum_over_replicas(grads)


def sgd_update(optimizer, loss, tape, variables, grad_clip, weight_decay):
  """One weight update as the original: clip the global gradient, add coupled L2, step.

  Returns the gradient's global norm before clipping.
  """
  grads = sum_over_replicas(tape.gradient(loss, variables), variables)
  if grad_clip > 0:
    grads, norm = tf.clip_by_global_norm(grads, grad_clip)
  else:
    norm = tf.linalg.global_norm(grads)
  # Coupled L2 decay after clipping, as torch.optim.SGD(weight_decay=...) does.
  optimizer.apply_gradients(zip([g + weight_decay * v for g, v in zip(grads, variables)],
                                variables))
  return norm


def scalar(variable):
  """A scalar variable's value as a float (also for a mirrored one)."""
  return float(tf.convert_to_tensor(variable.value if hasattr(variable, "value") else variable))


def correct(y, logits):
  """How many predictions in the batch are right (a float sum)."""
  return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32))


def cosine_learning_rate(initial, final, epoch, epochs):
  """Per-epoch cosine annealing, as torch's CosineAnnealingLR stepped at each epoch's start."""
  return final + 0.5 * (initial - final) * (1.0 + math.cos(math.pi * epoch / epochs))


def write_json(obj, path):
  """Writes JSON atomically, so a reader never sees half a file."""
  tmp = f"{path}.tmp"
  try:
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=1)
    os.replace(tmp, path)
  except OSError as e:
    raise RunError(f"cannot write {path}: {e.strerror}") from None


def prepare_model_dir(model_dir, params, resumable, what):
  """Writes params.json, refusing a model_dir that holds a run of another configuration.

  `resumable` lists the (section, key) settings that may change on resume.
  """
  path = os.path.join(model_dir, "params.json")
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    new = json.loads(json.dumps(params))
    for section, values in new.items():
      if section == "derived":
        continue
      for key in sorted(set(old.get(section) or {}) | set(values or {})):
        if (section, key) in resumable:
          continue
        a, b = (old.get(section) or {}).get(key), (values or {}).get(key)
        if a != b:
          raise UserInputError(
              f"{model_dir} holds a {what} with {section}.{key}={a!r}, not {b!r}: "
              f"use another --model_dir, or the same settings to resume")
  try:
    os.makedirs(model_dir, exist_ok=True)
  except OSError as e:
    raise UserInputError(f"cannot write to model_dir {model_dir}: {e.strerror}") from None
  try:
    write_json(params, path)
  except RunError as e:
    raise UserInputError(str(e)) from None
  return path
