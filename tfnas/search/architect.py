"""The architecture gradient: what the alphas step along (DARTS, section 2.3).

The alphas minimize the validation loss of the weights they induce (DARTS eq. 3-4):

    min_alpha L_val(w*(alpha), alpha)   with   w*(alpha) = argmin_w L_train(w, alpha).

first_order takes the gradient at the weights as they are (w* ~ w; xi = 0). second_order
takes it at one virtual SGD step, as quark0/darts' architect.py (eq. 6-8):

    w' = w - xi * grad_w L_train(w, alpha)                                           (6)
    grad_alpha L_val(w', alpha) - xi * grad2_{alpha,w} L_train(w, alpha) . v,
        v = grad_{w'} L_val(w', alpha)                                               (7)
    grad2_{alpha,w} L_train(w, alpha) . v
        ~ (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 R),
        w+- = w +- R v,  R = 0.01 / ||v||                                            (8)

Each function runs on one replica inside strategy.run and returns the gradients summed over
the replicas (the global batch's), with what the step reports: the per-example validation
losses, the logits and the zero-one loss.
"""
import tensorflow as tf

from tfnas.methods import parts
from tfnas.runtime import updates

HVP_RADIUS = 0.01  # R ||v||: eq. (8)'s step, as the original (architect.py l.77)


def validation_loss(searcher, x, y, noise_seed):
  """L_val on this replica's share of the global batch, plus the method's zero-one term
  (which depends on the alphas alone, so each replica adds 1/replicas of it)."""
  logits = searcher.model(x, training=True, noise_seed=noise_seed)
  ce = searcher.loss_fn(y, logits)
  loss = tf.nn.compute_average_loss(ce, global_batch_size=searcher.config.batch_size)
  zero_one = _zero_one(searcher, searcher.arch_variables)
  return _with_zero_one(searcher, loss, zero_one), ce, logits, zero_one


def first_order(searcher, x, y, noise_seed=None):
  """grad_alpha L_val(w, alpha) at the current weights (DARTS' first order)."""
  with tf.GradientTape() as tape:
    loss, ce, logits, zero_one = validation_loss(searcher, x, y, noise_seed)
  grads = updates.summed_gradients(tape, loss, searcher.arch_variables, searcher.arch_loss_scale)
  return grads, (ce, logits, zero_one)


def second_order(searcher, x, y, noise_seed, x_train, y_train, train_seed):
  """Eq. (7) with eq. (8)'s finite difference, as quark0/darts' architect.py runs it.

  x, y: the validation batch; x_train, y_train: the training batch the weight step uses
  next. xi is the weights' current learning rate. The virtual step (6) is the optimizer's
  own, without clipping: w' = w - xi (momentum buffer + grad + weight_decay w), with the
  buffer of zeros before the first weight step. R = 0.01 / ||v||, the norm over every
  weight tensor together (the global batch's v, the same on every replica). The finite
  difference perturbs the original w, not w'.

  Nothing is assigned: every pass runs the network on the values it is given (Keras'
  stateless call), so the weights are untouched and no pass updates the batch-norm
  running statistics (in the original, the virtual step runs on a copy, and the two
  perturbed passes do update the real network's statistics, which the search never reads).
  The three passes on the training batch draw the same noise and drop-path masks (the
  weight step's, train_seed): eq. (8)'s difference must see the weights change, not the
  draws.
  """
  cfg, optimizer = searcher.config, searcher.weight_optimizer
  xi = tf.convert_to_tensor(optimizer.learning_rate)
  alphas = [tf.convert_to_tensor(v) for v in searcher.arch_variables]
  w = [tf.convert_to_tensor(v) for v in searcher.weight_variables]
  buffers = [tf.convert_to_tensor(b) for b in optimizer.momentums]

  # (6): the virtual step.
  with tf.GradientTape() as tape:
    tape.watch(w)
    loss = _train_loss(searcher, w, alphas, x_train, y_train, train_seed)
  grads = updates.sum_over_replicas(tape.gradient(loss, w), w)
  w_virtual = [p - _cast(xi, p) * (optimizer.momentum * b + g + cfg.weight_decay * p)
               for p, b, g in zip(w, buffers, grads)]

  # (7): L_val at w', and v.
  with tf.GradientTape() as tape:
    tape.watch(alphas + w_virtual)
    logits = _logits(searcher, w_virtual, alphas, x, noise_seed)
    ce = searcher.loss_fn(y, logits)
    zero_one = _zero_one(searcher, alphas)
    loss = _with_zero_one(searcher, tf.nn.compute_average_loss(
        ce, global_batch_size=cfg.batch_size), zero_one)
  grads = updates.sum_over_replicas(tape.gradient(loss, alphas + w_virtual),
                                    alphas + w_virtual)
  d_alpha, v = grads[:len(alphas)], grads[len(alphas):]

  hessian_v = hessian_vector_product(searcher, w, alphas, v, x_train, y_train, train_seed)
  grads = [da - _cast(xi, da) * h for da, h in zip(d_alpha, hessian_v)]
  return grads, (ce, logits, zero_one)


def hessian_vector_product(searcher, w, alphas, v, x, y, noise_seed):
  """Eq. (8): grad2_{alpha,w} L_train(w, alpha) . v by central differences around w (the
  original weights, not w'), with R = 0.01 / ||v||."""
  radius = HVP_RADIUS / tf.linalg.global_norm(v)
  grad_plus = _train_alpha_grads(searcher, [p + radius * d for p, d in zip(w, v)], alphas, x, y,
                                 noise_seed)
  # One pass after the other: run side by side, the two would hold their activations at once.
  with tf.control_dependencies(grad_plus):
    w_minus = [p - radius * d for p, d in zip(w, v)]
  grad_minus = _train_alpha_grads(searcher, w_minus, alphas, x, y, noise_seed)
  return [(gp - gm) / (2.0 * radius) for gp, gm in zip(grad_plus, grad_minus)]


def _cast(xi, like):
  return tf.cast(xi, like.dtype)


def _zero_one(searcher, alphas):
  if searcher.method.zero_one_weight > 0:
    return parts.zero_one_loss(alphas, searcher.method.zero_one_form)
  return tf.constant(0.0)


def _with_zero_one(searcher, loss, zero_one):
  """loss + the zero-one term, which depends on the alphas alone: each replica adds
  1/replicas of it."""
  term = searcher.method.zero_one_weight * zero_one / searcher.num_replicas
  return loss + tf.cast(term, loss.dtype)


def _logits(searcher, weights, alphas, x, noise_seed):
  """The supernet's training-mode logits with these values for its weights and alphas (the
  variables untouched, the batch-norm statistics' updates dropped)."""
  model = searcher.model
  by_id = {id(v): t for v, t in zip(searcher.weight_variables, weights)}
  by_id.update({id(v): t for v, t in zip(searcher.arch_variables, alphas)})
  trainable = [by_id[id(v)] for v in model.trainable_variables]
  logits, _ = model.stateless_call(trainable, [v.value for v in model.non_trainable_variables],
                                   x, training=True, noise_seed=noise_seed)
  return logits


def _train_loss(searcher, weights, alphas, x, y, noise_seed):
  ce = searcher.loss_fn(y, _logits(searcher, weights, alphas, x, noise_seed))
  return tf.nn.compute_average_loss(ce, global_batch_size=searcher.config.batch_size)


def _train_alpha_grads(searcher, weights, alphas, x, y, noise_seed):
  """grad_alpha L_train(weights, alpha) of the global batch."""
  with tf.GradientTape() as tape:
    tape.watch(alphas)
    loss = _train_loss(searcher, weights, alphas, x, y, noise_seed)
  return updates.sum_over_replicas(tape.gradient(loss, alphas), alphas)
