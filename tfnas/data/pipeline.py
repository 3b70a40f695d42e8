"""Batches for the search and the training: reproducible order and augmentation.

`batches` orders each epoch by a stateless permutation of (seed, stream,
epoch), so a resumed search restarts at any global step by skipping index
batches, without checkpointing iterators or decoding skipped images.

In-memory sets (sources.ImageSet) are gathered a batch at a time and get the
DARTS transform (padded crop and flip). Streamed sets (sources.StreamedImageSet)
are read and decoded image by image in parallel after the index batches are
skipped, and get the Inception transforms: a random-resized crop and flip to
train, the shorter side resized to image_size / 0.875 and a centre crop to
evaluate (also to train when augment is off).
"""
import math

import tensorflow as tf

from tfnas.data.sources import ImageSet
from tfnas.data.sources import RNG_ALG
from tfnas.data.sources import SearchData
from tfnas.data.sources import StreamedImageSet
from tfnas.data.sources import channel_triple
from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import check_int

_CROP_PADDING = 4  # Pixels, as in the DARTS CIFAR transform.


# Purposes folded into the seed so that order and augmentation are unrelated.
_ORDER_KEY = 0


_AUGMENT_KEY = 1


# Inception's random-resized crop, as torchvision's RandomResizedCrop: the crop
# covers this share of the image's area, with this width / height, in at most
# _CROP_ATTEMPTS draws before falling back to a centre crop.
_CROP_AREA = (0.08, 1.0)


_CROP_RATIO = (3 / 4, 4 / 3)


_CROP_ATTEMPTS = 10


_EVAL_CROP = 0.875  # the centre crop's share of the resized shorter side


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


def batches(images: ImageSet | StreamedImageSet, mean, std, *, global_batch_size: int, seed: int,
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

  def scale(x):
    """uint8, or float32 in [0, 255] -> float32 in [0, 1], normalized."""
    x = tf.cast(x, tf.float32) / 255.0
    if normalize:
      x = (x - tf.constant(mean)) / tf.constant(std)
    return x

  def add_cutout(x, epoch, step_in_epoch):
    batch_key = _fold_in(_fold_in(augment_key, epoch), step_in_epoch)
    return _cutout(x, _fold_in(batch_key, 2), cutout, x.shape[1], x.shape[2])

  first_epoch = start_step // steps_per_epoch
  ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches)
  # Skipping index triples is cheap: no image is read or gathered for them.
  ds = ds.skip(start_step - first_epoch * steps_per_epoch)
  if isinstance(images, StreamedImageSet):
    # Scaled image by image, in parallel: one map over a whole batch would be serial.
    ds = _streamed(ds, images, augment_key, augment, global_batch_size, scale)
    if cutout:
      ds = ds.map(lambda x, y, e, s: (add_cutout(x, e, s), y, e, s),
                  num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x, y, e, s: (x, y))
  else:
    x_all = tf.constant(images.images)
    y_all = tf.constant(images.labels)
    _, height, width, _ = images.images.shape

    def make_batch(epoch, step_in_epoch, index):
      x = tf.gather(x_all, index)
      if augment:
        batch_key = _fold_in(_fold_in(augment_key, epoch), step_in_epoch)
        x = _crop_and_flip(x, batch_key, height, width)
      x = scale(x)
      if cutout:
        x = add_cutout(x, epoch, step_in_epoch)
      return x, tf.gather(y_all, index)

    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def _streamed(index_batches, images, augment_key, augment, batch_size, scale):
  """(scale(x) [B, S, S, 3], y, epoch, step) from (epoch, step, index [B]).

  Each image is read and transformed on its own, in parallel; its augmentation
  is keyed by (epoch, step in epoch, position in the batch).
  """
  ids = tf.constant(images.ids)
  labels = tf.constant(images.labels)
  size = images.image_size

  def per_image(epoch, step_in_epoch, index):
    return tf.data.Dataset.from_tensor_slices((
        tf.fill([batch_size], epoch), tf.fill([batch_size], step_in_epoch),
        tf.range(batch_size, dtype=tf.int64), index))

  def load(epoch, step_in_epoch, position, index):
    encoded = images.read(tf.gather(ids, index))
    if augment:
      key = _fold_in(_fold_in(_fold_in(augment_key, epoch), step_in_epoch), position)
      x = train_transform(encoded, key, size)
    else:
      x = eval_transform(encoded, size)
    return scale(x), tf.gather(labels, index), epoch, step_in_epoch

  ds = index_batches.flat_map(per_image)
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=True)
  # The batch's epoch and step: those of its first image (all are the same).
  return ds.map(lambda x, y, e, s: (x, y, e[0], s[0]))


def _decode(encoded):
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def train_transform(encoded, key, size):
  """Inception's training transform of an encoded image: float32 [size, size, 3] in [0, 255].

  A random-resized crop (crop_window) resized to size x size, then a random
  horizontal flip. A JPEG decodes only its crop.
  """
  def jpeg():
    shape = tf.image.extract_jpeg_shape(encoded)
    y, x, h, w = crop_window(shape[0], shape[1], _fold_in(key, 0))
    return tf.image.decode_and_crop_jpeg(encoded, tf.stack([y, x, h, w]), channels=3)

  def other():
    image = _decode(encoded)
    shape = tf.shape(image)
    y, x, h, w = crop_window(shape[0], shape[1], _fold_in(key, 0))
    return image[y:y + h, x:x + w]

  crop = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
  image = tf.image.resize(crop, [size, size])
  flip = tf.random.stateless_uniform([], seed=_fold_in(key, 1), alg=RNG_ALG) < 0.5
  image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
  return tf.ensure_shape(image, [size, size, 3])


def crop_window(height, width, key):
  """(top, left, crop height, crop width), int32, of a random-resized crop.

  Up to _CROP_ATTEMPTS draws of an area share in _CROP_AREA and a log-uniform
  aspect ratio (width / height) in _CROP_RATIO; the first that fits in the image
  is placed uniformly. If none fits: the largest centre crop whose ratio is
  within _CROP_RATIO.
  """
  h = tf.cast(height, tf.float32)
  w = tf.cast(width, tf.float32)
  draws = tf.random.stateless_uniform([_CROP_ATTEMPTS, 4], seed=key, alg=RNG_ALG)
  area = h * w * (_CROP_AREA[0] + (_CROP_AREA[1] - _CROP_AREA[0]) * draws[:, 0])
  low, high = math.log(_CROP_RATIO[0]), math.log(_CROP_RATIO[1])
  ratio = tf.exp(low + (high - low) * draws[:, 1])
  crop_w = tf.round(tf.sqrt(area * ratio))
  crop_h = tf.round(tf.sqrt(area / ratio))
  fits = (crop_w >= 1) & (crop_h >= 1) & (crop_w <= w) & (crop_h <= h)
  first = tf.argmax(tf.cast(fits, tf.int32))  # the first that fits (0 if none)
  top = tf.floor(draws[first, 2] * (h - crop_h[first] + 1))
  left = tf.floor(draws[first, 3] * (w - crop_w[first] + 1))
  # The fallback: the whole image, cut to the nearest allowed ratio.
  centre_w = tf.minimum(w, tf.round(h * _CROP_RATIO[1]))
  centre_h = tf.minimum(h, tf.round(w / _CROP_RATIO[0]))
  found = tf.reduce_any(fits)
  window = tf.where(
      found, tf.stack([top, left, crop_h[first], crop_w[first]]),
      tf.stack([tf.floor((h - centre_h) / 2), tf.floor((w - centre_w) / 2), centre_h,
                centre_w]))
  return tf.unstack(tf.cast(window, tf.int32))


def eval_transform(encoded, size):
  """The evaluation transform: shorter side to size / 0.875, centre crop size x size.

  float32 [size, size, 3] in [0, 255].
  """
  image = _decode(encoded)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = round(size / _EVAL_CROP) / tf.reduce_min(shape)
  resized = tf.cast(tf.round(shape * scale), tf.int32)
  image = tf.image.resize(image, tf.maximum(resized, size))
  top = (tf.shape(image)[0] - size) // 2
  left = (tf.shape(image)[1] - size) // 2
  return tf.ensure_shape(image[top:top + size, left:left + size], [size, size, 3])


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


def evaluation_batches(images: ImageSet | StreamedImageSet, mean, std,
                       batch_size: int) -> tf.data.Dataset:
  """Every image once, in order, normalized, no augmentation, in full batches: the last is
  filled up with blank images of label -1 (PADDING_LABEL), for the evaluation to leave out.
  So every replica gets its share of every batch (a share of 0 images failed in Keras'
  layers) and the step is traced once.

  Streamed sets get the evaluation transform (eval_transform).
  """
  check_int("batch_size", batch_size, minimum=1)
  mean = tf.constant(channel_triple("mean", mean))
  std = tf.constant(channel_triple("std", std))
  if isinstance(images, StreamedImageSet):
    ds = tf.data.Dataset.from_tensor_slices((images.ids, images.labels)).map(
        lambda i, y: (eval_transform(images.read(i), images.image_size), y),
        num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
  else:
    ds = tf.data.Dataset.from_tensor_slices((images.images, images.labels)).batch(batch_size)

  def normalize_and_fill(x, y):
    x = (tf.cast(x, tf.float32) / 255.0 - mean) / std
    missing = batch_size - tf.shape(y)[0]
    x = tf.pad(x, [[0, missing], [0, 0], [0, 0], [0, 0]])
    y = tf.pad(y, [[0, missing]], constant_values=PADDING_LABEL)
    return tf.ensure_shape(x, [batch_size, *x.shape[1:]]), tf.ensure_shape(y, [batch_size])

  return ds.map(normalize_and_fill).prefetch(tf.data.AUTOTUNE)


# The label of the blank images that fill up the last evaluation batch.
PADDING_LABEL = -1


def _fold_in(key, data):
  return tf.random.experimental.stateless_fold_in(
      key, tf.cast(data, tf.int64), alg=RNG_ALG)
