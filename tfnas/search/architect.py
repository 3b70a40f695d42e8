"""The architecture gradient: what the alphas step along (DARTS, section 2.3).

The alphas minimize the validation loss of the weights they induce,
L_val(w*(alpha), alpha). `first_order` takes the gradient at the weights as
they are (w* ~ w, the paper's first-order approximation, xi = 0). A
second-order variant (the unrolled step, w' = w - xi * grad_w L_train) is one
more function here, with the same signature.

Each function runs on one replica inside strategy.run and returns the
gradients summed over the replicas (the global batch's), with what the step
reports: the per-example losses, the logits and the zero-one loss.
"""
import tensorflow as tf

from tfnas.methods import parts
from tfnas.runtime import updates


def validation_loss(searcher, x, y, noise_seed):
  """L_val on this replica's share of the global batch, plus the method's zero-one term
  (which depends on the alphas alone, so each replica adds 1/replicas of it)."""
  logits = searcher.model(x, training=True, noise_seed=noise_seed)
  ce = searcher.loss_fn(y, logits)
  loss = tf.nn.compute_average_loss(ce, global_batch_size=searcher.config.batch_size)
  zero_one = tf.constant(0.0)
  method = searcher.method
  if method.zero_one_weight > 0:
    zero_one = parts.zero_one_loss(searcher.arch_variables, method.zero_one_form)
    loss += method.zero_one_weight * zero_one / searcher.num_replicas
  return loss, ce, logits, zero_one


def first_order(searcher, x, y, noise_seed=None):
  """grad_alpha L_val(w, alpha) at the current weights (DARTS' first order)."""
  with tf.GradientTape() as tape:
    loss, ce, logits, zero_one = validation_loss(searcher, x, y, noise_seed)
  grads = updates.summed_gradients(tape, loss, searcher.arch_variables, searcher.arch_loss_scale)
  return grads, (ce, logits, zero_one)
