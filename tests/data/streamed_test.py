"""Tests for streamed (ImageNet-like) sets, per-class splits and the Inception transforms.

All offline: small generated folders of JPEG and PNG images and a tiny TFDS dataset
prepared from a generator.
"""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfnas.data import pipeline
from tfnas.data import sources
from tfnas.runtime.errors import UserInputError

_SIZE = 72  # above sources.STREAM_ABOVE: streamed


def _error(fn, *args, **kwargs):
  with pytest.raises(UserInputError) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert "\n" not in message
  return message


def _write(path, image):
  encode = tf.io.encode_jpeg if str(path).endswith(".jpg") else tf.io.encode_png
  tf.io.write_file(str(path), encode(tf.constant(image, tf.uint8)))


def _make_folder(root, sizes=(6, 9, 12)):
  """Classes c0, c1, ... of the given sizes: JPEGs and PNGs of varied shapes, each
  image's red channel its number (1, 2, ...) so that it can be told apart, its green
  channel 40 * its class."""
  number = 0
  for label, count in enumerate(sizes):
    (root / f"c{label}").mkdir()
    for j in range(count):
      number += 1
      height, width = 60 + 7 * (j % 6), 90 - 5 * (j % 7)
      image = np.zeros((height, width, 3), np.uint8)
      image[..., 0] = number
      image[..., 1] = 40 * label
      image[..., 2] = np.linspace(0, 255, width)  # a ramp, which crops and flips change
      _write(root / f"c{label}" / f"{j}.{'jpg' if j % 2 else 'png'}", image)
  return root


def _load(root, **kwargs):
  args = dict(dataset=str(root), image_size=_SIZE, train_split="train[:50%]",
              val_split="train[50%:]")
  args.update(kwargs)
  return sources.load_search_data(sources.DataConfig(**args))


def _collect(ds):
  return [(x.numpy(), y.numpy()) for x, y in ds]


def test_a_large_image_size_streams_a_folder(tmp_path):
  d = _load(_make_folder(tmp_path))
  assert isinstance(d.train, sources.StreamedImageSet)
  assert d.image_shape == (_SIZE, _SIZE, 3)
  assert (d.mean, d.std) == (sources._IMAGENET_MEAN, sources._IMAGENET_STD)
  assert d.augment  # on by default for streamed sets
  assert len(d.train) + len(d.val) == 27
  assert not set(d.train.ids) & set(d.val.ids)
  small = _load(tmp_path, image_size=sources.STREAM_ABOVE)
  assert isinstance(small.train, sources.ImageSet) and not small.augment


@pytest.mark.parametrize("augment", [False, True])
def test_streamed_batches_shapes_dtypes_and_labels(tmp_path, augment):
  d = _load(_make_folder(tmp_path), augment=augment)
  batches = _collect(pipeline.batches(d.train, d.mean, d.std, global_batch_size=4, seed=1,
                                      stream=0, epochs=2, steps_per_epoch=3, augment=augment,
                                      normalize=False))
  assert len(batches) == 6
  for x, y in batches:
    assert x.shape == (4, _SIZE, _SIZE, 3) and x.dtype == np.float32
    assert y.shape == (4,) and y.dtype == np.int64
    assert 0 <= x.min() and x.max() <= 1
    # Every image's green channel is 40 * its class (JPEG: within a few levels).
    green = np.median(x[..., 1], axis=(1, 2)) * 255
    np.testing.assert_allclose(green, 40 * y, atol=4)
  # Without augmentation every image is the evaluation transform of its file.
  plain = _collect(pipeline.batches(d.train, d.mean, d.std, global_batch_size=4, seed=1,
                                    stream=0, epochs=2, steps_per_epoch=3, normalize=False))
  first = plain[0][0][0]
  candidates = [pipeline.eval_transform(d.train.read(tf.constant(i, tf.int64)), _SIZE).numpy()
                for i in d.train.ids]
  assert any(np.allclose(first * 255, c, atol=1e-3) for c in candidates)
  same = all(np.array_equal(a, b) for (a, _), (b, _) in zip(batches, plain))
  assert same != augment


def test_streamed_search_input_and_normalization(tmp_path):
  d = _load(_make_folder(tmp_path), augment=False)
  (xt, yt), (xv, yv) = next(iter(pipeline.search_input(d, global_batch_size=4, seed=0,
                                                       epochs=1)))
  assert xt.shape == xv.shape == (4, _SIZE, _SIZE, 3)
  # Normalized with ImageNet's statistics (the green channel is 40 * the class).
  green = (40 * yt.numpy()[:, None, None] / 255 - 0.456) / 0.224
  np.testing.assert_allclose(xt.numpy()[..., 1], np.broadcast_to(green, (4, _SIZE, _SIZE)),
                             atol=0.1)
  assert pipeline.steps_per_epoch(d, 4) == min(len(d.train), len(d.val)) // 4


def test_a_resumed_start_step_gives_the_batches_of_a_run_through(tmp_path):
  d = _load(_make_folder(tmp_path))
  args = dict(global_batch_size=4, seed=5, stream=1, epochs=3, steps_per_epoch=3,
              augment=True, cutout=8)
  through = _collect(pipeline.batches(d.train, d.mean, d.std, **args))
  for x, _ in through:  # cutout: an 8x8 square (at least 4x4 at a corner) of zeros
    assert ((x == 0).all(axis=-1).sum(axis=(1, 2)) >= 16).all()
  for start in (1, 4, 8):
    resumed = _collect(pipeline.batches(d.train, d.mean, d.std, start_step=start, **args))
    assert len(resumed) == 9 - start
    for (x, y), (x_k, y_k) in zip(through[start:], resumed):
      np.testing.assert_array_equal(y, y_k)
      np.testing.assert_array_equal(x, x_k)


def test_resumed_runs_read_no_skipped_image(tmp_path):
  d = _load(_make_folder(tmp_path))
  read = []

  def counting(i):
    read.append(1)
    return d.train.read(i)

  counted = sources.StreamedImageSet(d.train.ids, d.train.labels,
                                     lambda i: tf.py_function(
                                         lambda j: (counting(j), d.train.read(j))[1], [i],
                                         tf.string),
                                     _SIZE)
  ds = pipeline.batches(counted, d.mean, d.std, global_batch_size=4, seed=5, stream=0,
                        epochs=3, steps_per_epoch=3, start_step=7)
  assert len(_collect(ds)) == 2
  assert len(read) == 8  # the two batches left, not the 7 skipped


def _pattern(height, width):
  """Green outside the centre, red in its left half, blue in its right half."""
  image = np.zeros((height, width, 3), np.uint8)
  image[..., 1] = 255
  margin = (width - height) // 2 - 4  # outside the centre crop (0.875 of the centre square)
  image[:, margin:width // 2] = (255, 0, 0)
  image[:, width // 2:width - margin] = (0, 0, 255)
  return image


def test_the_evaluation_transform_is_a_centre_crop():
  size = 16
  for height, width in ((64, 128), (70, 110)):
    encoded = tf.io.encode_png(tf.constant(_pattern(height, width)))
    x = pipeline.eval_transform(encoded, size).numpy()
    assert x.shape == (size, size, 3)
    assert x[..., 1].max() < 1  # no green: the sides are cut off
    assert (x[:, :size // 2 - 1, 0] > 250).all() and (x[:, :size // 2 - 1, 2] < 5).all()
    assert (x[:, size // 2 + 1:, 2] > 250).all() and (x[:, size // 2 + 1:, 0] < 5).all()
  tall = pipeline.eval_transform(tf.io.encode_png(tf.constant(
      np.transpose(_pattern(64, 128), (1, 0, 2)))), size).numpy()
  assert tall[..., 1].max() < 1 and (tall[:size // 2 - 1, :, 0] > 250).all()
  # Its scale: the shorter side (64) becomes round(16 / 0.875) = 18 pixels, so output column
  # j shows the image's column 64 + (j + 0.5 - 8) * 64 / 18 - 0.5 (the centre at 64 - 0.5).
  ramp = np.broadcast_to(np.arange(128, dtype=np.uint8)[None, :, None], (64, 128, 3))
  x = pipeline.eval_transform(tf.io.encode_png(tf.constant(ramp)), size).numpy()
  expected = 64 + (np.arange(size) + 0.5 - size / 2) * 64 / 18 - 0.5
  np.testing.assert_allclose(x[size // 2, 1:-1, 0], expected[1:-1], atol=0.5)


def test_the_random_resized_crop_stays_within_the_image_and_follows_the_seed():
  seen = set()
  for height, width in ((50, 80), (300, 40), (7, 9)):
    for i in range(200):
      key = tf.constant([i, 0], tf.int64)
      window = tuple(int(v) for v in pipeline.crop_window(height, width, key))
      top, left, h, w = window
      assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
      assert h >= 1 and w >= 1
      assert window == tuple(int(v) for v in pipeline.crop_window(height, width, key))
      seen.add(window)
      if (height, width) == (50, 80):
        assert 0.08 * 4000 * 0.9 <= h * w and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
  assert len(seen) > 300  # varies with the key
  # Every draw misses a 300x40 image more often than not: the fallback is a centre crop
  # of ratio 3/4: 53 high.
  assert (123, 0, 53, 40) in seen


def test_the_training_transform_crops_resizes_and_flips():
  size = 8
  image = np.random.default_rng(0).integers(0, 100, (40, 40, 3), dtype=np.uint8)
  image[:, :20] += 155  # a light left half
  encoded = tf.io.encode_jpeg(tf.constant(image))
  outputs = [pipeline.train_transform(encoded, tf.constant([i, 3], tf.int64), size).numpy()
             for i in range(40)]
  for x in outputs:
    assert x.shape == (size, size, 3) and x.dtype == np.float32
  again = pipeline.train_transform(encoded, tf.constant([0, 3], tf.int64), size).numpy()
  np.testing.assert_array_equal(outputs[0], again)
  left_white = sum(x[:, 0].mean() > x[:, -1].mean() + 50 for x in outputs)
  right_white = sum(x[:, -1].mean() > x[:, 0].mean() + 50 for x in outputs)
  assert left_white >= 5 and right_white >= 5  # flipped about half of the time
  assert len({x.tobytes() for x in outputs}) == 40


def test_streamed_evaluation_batches_in_order(tmp_path):
  d = _load(_make_folder(tmp_path, sizes=(3, 4)))
  batches = _collect(pipeline.evaluation_batches(d.val, (0,) * 3, (1 / 255,) * 3, 2))
  assert [len(y) for _, y in batches] == [2, 2]  # the last filled up with label -1
  np.testing.assert_array_equal(np.concatenate([y for _, y in batches]),
                                [*d.val.labels, pipeline.PADDING_LABEL])
  red = np.concatenate([np.median(x[..., 0], axis=(1, 2)) for x, _ in batches])[:3]
  # The red channel numbers the images in file order, which is the ids' order.
  np.testing.assert_allclose(red, d.val.ids + 1, atol=2)


# --------------------------------------------------------------- per-class splits


def _classes_of(images):
  return np.bincount(images.labels, minlength=3)


def test_per_class_splits_take_each_class_share(tmp_path):
  root = _make_folder(tmp_path, sizes=(6, 10, 25))
  halves = dict(per_class_splits=True, train_split="train[:30%]", val_split="train[30%:60%]")
  for size in (16, _SIZE):  # in memory and streamed
    d = _load(root, image_size=size, **halves)
    # Rounded per class (30% of 41 images would be 12, then 13).
    np.testing.assert_array_equal(_classes_of(d.train), [2, 3, 8])
    np.testing.assert_array_equal(_classes_of(d.val), [2, 3, 7])
    if size == _SIZE:
      assert not set(d.train.ids) & set(d.val.ids)
      again = _load(root, **halves)
      np.testing.assert_array_equal(again.train.ids, d.train.ids)
      other = _load(root, seed=1, **halves)
      assert set(other.train.ids) != set(d.train.ids)


def test_per_class_indices():
  labels = {"train": np.repeat(np.arange(3), [10, 40, 200]), "validation": np.arange(6) % 3}
  train = sources.per_class_indices("train[:10%]", labels, 0, "x")
  val = sources.per_class_indices("train[10%:12.5%]", labels, 0, "x")
  both = np.concatenate([labels["train"], labels["validation"]])
  np.testing.assert_array_equal(np.bincount(both[train]), [1, 4, 20])
  np.testing.assert_array_equal(np.bincount(both[val]), [0, 1, 5])  # 0.25, 1, 5
  assert not set(train) & set(val)
  held_out = sources.per_class_indices("validation[:50%]", labels, 0, "x")
  assert set(held_out) <= set(range(250, 256)) and len(held_out) == 3
  message = _error(sources.per_class_indices, "test", labels, 0, "x")
  assert "unknown split 'test'" in message and "train, validation" in message
  assert "bad split" in _error(sources.per_class_indices, "train[:5%%]", labels, 0, "x")


# --------------------------------------------------------------------- TFDS


class TfnasVariedTest(tfds.core.GeneratorBasedBuilder):
  """A tiny TFDS dataset of JPEGs of varying sizes (ImageNet-like) that prepares offline."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=3),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples(0, 30), "validation": self._generate_examples(30, 9)}

  def _generate_examples(self, first, n):
    for i in range(first, first + n):
      image = np.zeros((40 + i, 70 - i, 3), np.uint8)
      image[..., 0] = 5 * i  # the example's number
      image[..., 1] = 100 * (i % 3)  # its label
      yield i, {"image": image, "label": i % 3}


@pytest.fixture(scope="module")
def varied_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  builder = tfds.builder("tfnas_varied_test", data_dir=str(root))
  builder.download_and_prepare(file_format="array_record")
  return str(root)


def _tfds(data_dir, **kwargs):
  return sources.load_search_data(sources.DataConfig(
      dataset="tfnas_varied_test", data_dir=data_dir, download=False, image_size=32, **kwargs))


def test_a_tfds_set_of_varied_sizes_streams(varied_dir):
  d = _tfds(varied_dir)
  assert isinstance(d.train, sources.StreamedImageSet)
  assert (len(d.train), len(d.val)) == (15, 15) and d.image_shape == (32, 32, 3)
  assert d.num_classes == 3 and d.augment
  batches = _collect(pipeline.batches(d.train, d.mean, d.std, global_batch_size=5, seed=0,
                                      stream=0, epochs=1, steps_per_epoch=3, normalize=False))
  for x, y in batches:
    assert x.shape == (5, 32, 32, 3)
    np.testing.assert_allclose(np.median(x[..., 1], axis=(1, 2)) * 255, 100 * y, atol=4)
  seen = np.concatenate([np.median(x[..., 0], axis=(1, 2)) * 255 / 5 for x, _ in batches])
  assert len(set(np.round(seen).astype(int))) == 15  # each image once per epoch
  unset = _tfds(varied_dir, train_split=None, val_split=None)
  assert (unset.train_split, unset.val_split) == ("train", "validation")
  assert len(unset.val) == 9
  x, y = next(iter(pipeline.evaluation_batches(unset.val, (0,) * 3, (1 / 255,) * 3, 9)))
  # The validation split holds examples 30..38; the red channel numbers them.
  numbers = np.round(np.median(x.numpy()[..., 0], axis=(1, 2)) / 5).astype(int)
  assert sorted(numbers) == list(range(30, 39))
  np.testing.assert_array_equal(y.numpy(), numbers % 3)


def test_tfds_per_class_splits(varied_dir):
  d = _tfds(varied_dir, per_class_splits=True, train_split="train[:60%]",
            val_split="train[60%:]+validation")
  np.testing.assert_array_equal(np.bincount(d.train.labels), [6, 6, 6])
  np.testing.assert_array_equal(np.bincount(d.val.labels), [7, 7, 7])
  assert not set(d.train.ids) & set(d.val.ids)
  message = _error(_tfds, varied_dir, per_class_splits=True, train_split="train[:60%]",
                   val_split="train[:60%]")
  assert "are the same images" in message


def test_a_tfds_set_stored_as_tfrecord_is_refused(tmp_path):
  tfds.builder("tfnas_varied_test", data_dir=str(tmp_path)).download_and_prepare()
  message = _error(_tfds, str(tmp_path))
  assert "cannot be read by index" in message and "--file_format=array_record" in message


def test_imagenet_without_its_archives_says_where_to_put_them(tmp_path, monkeypatch):
  def no_probe():
    raise AssertionError("a manual download needs no network")
  monkeypatch.setattr(sources, "_network_problem", no_probe)
  message = _error(sources.load_search_data, sources.DataConfig(
      dataset="imagenet2012", data_dir=str(tmp_path)))
  manual = os.path.join(str(tmp_path), "downloads", "manual")
  assert message.startswith("dataset imagenet2012 needs a manual download: put "
                            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
                            f"{manual} ")
  os.makedirs(manual)
  (tmp_path / "downloads" / "manual" / "ILSVRC2012_img_train.tar").write_bytes(b"")
  message = _error(sources.load_search_data, sources.DataConfig(
      dataset="imagenet2012", data_dir=str(tmp_path)))
  assert "ILSVRC2012_img_val.tar" in message and manual in message


def test_imagenette_is_offered_like_other_tfds_sets(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "_network_problem", lambda: "no network: test")
  message = _error(sources.load_search_data, sources.DataConfig(
      dataset="imagenette/320px-v2", data_dir=str(tmp_path)))
  assert "could not be downloaded (no network: test)" in message
  message = _error(sources.load_search_data, sources.DataConfig(dataset="imagewoof/320px"))
  assert "TFDS has no imagewoof" in message
