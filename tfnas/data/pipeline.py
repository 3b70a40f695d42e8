"""Batches for the search and the training: reproducible order and augmentation.

`batches` orders each epoch by a stateless permutation of (seed, stream,
epoch), so a resumed search restarts at any global step by skipping index
batches, without checkpointing iterators or decoding skipped images.
"""
import tensorflow as tf

from tfnas.data.sources import ImageSet
from tfnas.data.sources import RNG_ALG
from tfnas.data.sources import SearchData
from tfnas.data.sources import channel_triple
from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import check_int

_CROP_PADDING = 4  # Pixels, as in the DARTS CIFAR transform.


# Purposes folded into the seed so that order and augmentation are unrelated.
_ORDER_KEY = 0


_AUGMENT_KEY = 1


def steps_per_epoch(data: SearchData, global_batch_size: int) -> int:
  """Steps per epoch: the smaller split in whole global batches."""
  check_int("global_batch_size", global_batch_size, minimum=1)
  n_train, n_val = len(data.train), len(data.val)
  steps = min(n_train, n_val) // global_batch_size
  if steps == 0:
    raise UserInputError(
        f"batch size {global_batch_size} is larger than the search splits of "
        f"{data.name} (train {n_train}, val {n_val} examples): use a smaller "
        "batch size or larger splits")
  return steps


def search_input(data: SearchData, *, global_batch_size: int, seed: int,
                 epochs: int, start_step: int = 0) -> tf.data.Dataset:
  """Yields ((x_train, y_train), (x_val, y_val)) global batches.

  Both halves get the training transform when data.augment is on, as in
  DARTS, whose validation half is the same dataset object.
  """
  steps = steps_per_epoch(data, global_batch_size)
  common = dict(global_batch_size=global_batch_size, seed=seed, epochs=epochs,
                steps_per_epoch=steps, start_step=start_step,
                augment=data.augment)
  train = batches(data.train, data.mean, data.std, stream=0, **common)
  val = batches(data.val, data.mean, data.std, stream=1, **common)
  return tf.data.Dataset.zip((train, val))


def batches(images: ImageSet, mean, std, *, global_batch_size: int, seed: int,
            stream: int, epochs: int,
            steps_per_epoch: int,  # pylint: disable=redefined-outer-name
            start_step: int = 0, augment: bool = False,
            normalize: bool = True, cutout: int = 0) -> tf.data.Dataset:
  """Global batches (x float32 [B, H, W, 3], y int64 [B]) from start_step on.

  Epoch e uses the first steps_per_epoch * B entries of a stateless
  permutation keyed by (seed, stream, e); augmentation is keyed by (seed,
  stream, e, step in epoch). Starting at start_step=k therefore yields exactly
  batches k, k+1, ... of a run started at 0. `cutout` > 0 zeroes a square of
  that side around a random pixel (clipped at the border) after normalization,
  as the original evaluation training does.
  """
  check_int("global_batch_size", global_batch_size, minimum=1)
  check_int("steps_per_epoch", steps_per_epoch, minimum=1)
  check_int("epochs", epochs, minimum=1)
  check_int("seed", seed)
  check_int("stream", stream)
  total_steps = epochs * steps_per_epoch
  check_int("start_step", start_step, minimum=0)
  if start_step > total_steps:
    raise UserInputError(f"start_step {start_step} is past the end of the run "
                         f"({epochs} epochs x {steps_per_epoch} steps)")
  n = len(images)
  per_epoch = steps_per_epoch * global_batch_size
  if per_epoch > n:
    raise UserInputError(
        f"{steps_per_epoch} steps of batch {global_batch_size} need "
        f"{per_epoch} examples per epoch but the split has {n}")
  mean = channel_triple("mean", mean)
  std = channel_triple("std", std)
  if min(std) <= 0:
    raise UserInputError(f"std must be positive, got {std}")

  x_all = tf.constant(images.images)
  y_all = tf.constant(images.labels)
  _, height, width, _ = images.images.shape
  key = tf.constant([seed, stream], tf.int64)
  order_key = _fold_in(key, _ORDER_KEY)
  augment_key = _fold_in(key, _AUGMENT_KEY)

  def epoch_batches(epoch):
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=_fold_in(order_key, epoch),
        alg=RNG_ALG)
    index = tf.reshape(perm[:per_epoch], [steps_per_epoch, global_batch_size])
    return tf.data.Dataset.from_tensor_slices(
        (tf.fill([steps_per_epoch], epoch),
         tf.range(steps_per_epoch, dtype=tf.int64), index))

  def make_batch(epoch, step_in_epoch, index):
    x = tf.gather(x_all, index)
    y = tf.gather(y_all, index)
    if augment:
      batch_key = _fold_in(_fold_in(augment_key, epoch), step_in_epoch)
      x = _crop_and_flip(x, batch_key, height, width)
    x = tf.cast(x, tf.float32) / 255.0
    if normalize:
      x = (x - tf.constant(mean)) / tf.constant(std)
    if cutout:
      batch_key = _fold_in(_fold_in(augment_key, epoch), step_in_epoch)
      x = _cutout(x, _fold_in(batch_key, 2), cutout, height, width)
    return x, y

  first_epoch = start_step // steps_per_epoch
  ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches)
  # Skipping index triples is cheap: no image is gathered for them.
  ds = ds.skip(start_step - first_epoch * steps_per_epoch)
  ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def _crop_and_flip(x, key, height, width):
  """DARTS transform: zero-pad 4, random crop back to HxW, random h-flip."""
  batch = tf.shape(x)[0]
  pad = _CROP_PADDING
  padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  offsets = tf.random.stateless_uniform(
      [batch, 2], seed=_fold_in(key, 0), minval=0, maxval=2 * pad + 1,
      dtype=tf.int32, alg=RNG_ALG)
  flip = tf.random.stateless_uniform(
      [batch], seed=_fold_in(key, 1), minval=0, maxval=2, dtype=tf.int32,
      alg=RNG_ALG) > 0
  rows = offsets[:, :1] + tf.range(height)[tf.newaxis]
  cols = tf.where(flip[:, tf.newaxis],
                  offsets[:, 1:] + tf.range(width - 1, -1, -1)[tf.newaxis],
                  offsets[:, 1:] + tf.range(width)[tf.newaxis])
  x = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(x, cols, axis=2, batch_dims=1)


def _cutout(x, key, length, height, width):
  """Zeroes a length x length square centred on a uniform random pixel per image."""
  centre = tf.random.stateless_uniform([tf.shape(x)[0], 2], seed=key, minval=0,
                                       maxval=tf.int32.max, dtype=tf.int32, alg=RNG_ALG)
  cy = centre[:, 0] % height
  cx = centre[:, 1] % width
  rows = tf.range(height)[tf.newaxis]
  cols = tf.range(width)[tf.newaxis]
  in_rows = (rows >= (cy - length // 2)[:, tf.newaxis]) & (rows < (cy + length - length // 2)[:, tf.newaxis])
  in_cols = (cols >= (cx - length // 2)[:, tf.newaxis]) & (cols < (cx + length - length // 2)[:, tf.newaxis])
  hole = in_rows[:, :, tf.newaxis] & in_cols[:, tf.newaxis, :]
  return x * tf.cast(~hole, x.dtype)[..., tf.newaxis]


def evaluation_batches(images: ImageSet, mean, std, batch_size: int) -> tf.data.Dataset:
  """Every image once, in order, normalized, no augmentation; the last batch may be short."""
  check_int("batch_size", batch_size, minimum=1)
  mean = tf.constant(channel_triple("mean", mean))
  std = tf.constant(channel_triple("std", std))
  ds = tf.data.Dataset.from_tensor_slices((images.images, images.labels)).batch(batch_size)
  return ds.map(lambda x, y: ((tf.cast(x, tf.float32) / 255.0 - mean) / std, y)).prefetch(
      tf.data.AUTOTUNE)


def _fold_in(key, data):
  return tf.random.experimental.stateless_fold_in(
      key, tf.cast(data, tf.int64), alg=RNG_ALG)
