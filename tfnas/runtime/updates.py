"""What the search and the training steps share: gradients across replicas, the
PyTorch-style weight update with clipping and coupled decay, dynamic loss scaling, schedules."""
import math

import tensorflow as tf

from tfnas.runtime import distribute


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
