"""Tests for tfnas.data (sources and pipeline); all offline."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfnas.data import pipeline
from tfnas.data import sources
from tfnas.runtime.errors import UserInputError


def _error(fn, *args, **kwargs):
  """Runs fn, expecting a one-line UserInputError; returns its message."""
  with pytest.raises(UserInputError) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert "\n" not in message
  return message


def _collect(ds):
  xs, ys = [], []
  for x, y in ds:
    xs.append(x.numpy())
    ys.append(y.numpy())
  return xs, ys


def _toy_set(n=40, size=6, seed=0):
  """Distinct random images whose label is their index."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
  return sources.ImageSet(images, np.arange(n, dtype=np.int64))


_MEAN = (0.4, 0.5, 0.6)
_STD = (0.2, 0.25, 0.3)


def _toy_batches(images, **kwargs):
  args = dict(global_batch_size=8, seed=3, stream=0, epochs=3,
              steps_per_epoch=4)
  args.update(kwargs)
  return pipeline.batches(images, _MEAN, _STD, **args)


def _to_uint8(x):
  return np.round((x * np.array(_STD) + np.array(_MEAN)) * 255.0)


# ------------------------------------------------------------------ digits


def test_digits_loads_offline():
  d = sources.load_search_data(sources.DataConfig())
  assert (len(d.train), len(d.val)) == (898, 899)  # round(898.5) == 898.
  assert d.image_shape == (8, 8, 3)
  assert d.train.images.shape == (898, 8, 8, 3)
  assert d.train.images.dtype == np.uint8 and d.train.labels.dtype == np.int64
  assert d.num_classes == 10
  for part in (d.train, d.val):
    assert set(np.unique(part.labels)) == set(range(10))
    np.testing.assert_array_equal(part.images[..., 0], part.images[..., 2])
  assert d.train.images.max() == 255
  assert not d.augment
  # Gray: equal channels, and the stats of the train split.
  assert d.mean[0] == d.mean[1] == d.mean[2]
  np.testing.assert_allclose(d.mean[0], d.train.images.mean() / 255, rtol=1e-6)
  np.testing.assert_allclose(d.std[0], (d.train.images / 255).std(),
                             rtol=1e-6)


def test_digits_halves_are_disjoint_and_cover_everything():
  first = sources.split_indices("train[:50%]", 1797, "digits")
  second = sources.split_indices("train[50%:]", 1797, "digits")
  assert len(first) + len(second) == 1797
  assert not set(first) & set(second)
  assert set(first) | set(second) == set(range(1797))


def test_augment_override():
  assert sources.load_search_data(sources.DataConfig(augment=True)).augment


def test_digits_rejects_other_image_size():
  message = _error(sources.load_search_data, sources.DataConfig(image_size=32))
  assert "8x8" in message


def test_empty_split():
  message = _error(sources.load_search_data,
                   sources.DataConfig(train_split="train[0:0]"))
  assert message == "split 'train[0:0]' of digits is empty"


def test_batch_larger_than_split():
  d = sources.load_search_data(sources.DataConfig())
  message = _error(pipeline.steps_per_epoch, d, 1000)
  assert "1000" in message and "898" in message and "899" in message
  assert pipeline.steps_per_epoch(d, 64) == 898 // 64


def test_bad_config_values():
  _error(sources.DataConfig, image_size=0)
  _error(sources.DataConfig, image_size=True)
  _error(sources.DataConfig, dataset=" ")
  _error(sources.DataConfig, val_split="")


# ----------------------------------------------------------------- slicing


@pytest.mark.parametrize("spec, n, expected", [
    ("train", 5, [0, 1, 2, 3, 4]),
    ("train[:50%]", 5, [0, 1]),  # round(2.5) == 2, as in TFDS.
    ("train[50%:]", 5, [2, 3, 4]),
    ("train[:50%]", 7, [0, 1, 2, 3]),  # round(3.5) == 4.
    ("train[10%:20%]", 100, list(range(10, 20))),
    ("train[:3]", 10, [0, 1, 2]),
    ("train[-3:]", 10, [7, 8, 9]),
    ("train[2:-5]", 10, [2, 3, 4]),
    ("train[-20%:]", 10, [8, 9]),
    ("train[:1]+train[-1:]", 10, [0, 9]),
    ("train[ 5 : ]", 7, [5, 6]),
    ("train[7:3]", 10, []),
    ("train[:100%]", 4, [0, 1, 2, 3]),
])
def test_split_indices(spec, n, expected):
  np.testing.assert_array_equal(sources.split_indices(spec, n, "x"), expected)


@pytest.mark.parametrize("spec, expected", [
    ("test", "unknown split 'test'"),
    ("validation[:10%]", "unknown split 'validation'"),
    ("train[5]", "bad split"),
    ("train[:]", "bad split"),
    ("train[:5%%]", "bad split"),
    ("train[1.5:]", "bad split"),
    ("train[1:2:3]", "bad split"),
    ("train[:10", "bad split"),
])
def test_split_indices_errors(spec, expected):
  message = _error(sources.split_indices, spec, 10, "digits")
  assert expected in message
  assert "only split is 'train'" in message


@pytest.mark.parametrize("spec, expected", [
    ("train[200%:]", "[-100%, 100%]"),
    ("train[:2000]", "out of range: it has 10 examples"),
    ("train[-11:]", "out of range: it has 10 examples"),
])
def test_split_indices_out_of_range(spec, expected):
  message = _error(sources.split_indices, spec, 10, "digits")
  assert f"split '{spec}' of digits" in message and expected in message


# ----------------------------------------------------------------- batches


def test_batches_are_deterministic():
  images = _toy_set()
  for augment in (False, True):
    xs1, ys1 = _collect(_toy_batches(images, augment=augment))
    xs2, ys2 = _collect(_toy_batches(images, augment=augment))
    assert len(xs1) == 12
    np.testing.assert_array_equal(np.stack(xs1), np.stack(xs2))
    np.testing.assert_array_equal(np.stack(ys1), np.stack(ys2))


@pytest.mark.parametrize("start_step", [1, 5, 12])
def test_start_step_continues_the_same_run(start_step):
  images = _toy_set()
  xs, ys = _collect(_toy_batches(images, augment=True))
  xs_k, ys_k = _collect(_toy_batches(images, augment=True,
                                     start_step=start_step))
  assert len(xs_k) == 12 - start_step
  for a, b in zip(xs[start_step:] + ys[start_step:], xs_k + ys_k):
    np.testing.assert_array_equal(a, b)


def test_epoch_order():
  images = _toy_set()
  _, ys = _collect(_toy_batches(images))
  epochs = [np.concatenate(ys[e * 4:(e + 1) * 4]) for e in range(3)]
  for order in epochs:
    assert len(order) == 32 and len(set(order)) == 32  # No repeats.
    assert order.min() >= 0 and order.max() < 40
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])
  assert not np.array_equal(np.sort(epochs[0]), np.arange(32))  # Shuffled.


def test_streams_and_seeds_differ():
  images = _toy_set()
  _, base = _collect(_toy_batches(images))
  _, other_stream = _collect(_toy_batches(images, stream=1))
  _, other_seed = _collect(_toy_batches(images, seed=4))
  assert not np.array_equal(np.stack(base), np.stack(other_stream))
  assert not np.array_equal(np.stack(base), np.stack(other_seed))


def test_no_augment_recovers_the_stored_images():
  images = _toy_set()
  xs, ys = _collect(_toy_batches(images))
  assert xs[0].shape == (8, 6, 6, 3) and xs[0].dtype == np.float32
  assert ys[0].dtype == np.int64
  for x, y in zip(xs, ys):
    np.testing.assert_array_equal(_to_uint8(x), images.images[y])
  xs, ys = _collect(_toy_batches(images, normalize=False))
  for x, y in zip(xs, ys):
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(np.round(x * 255), images.images[y])


def _crops_and_flips(image, pad=4):
  h, w, _ = image.shape
  padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      crop = padded[dy:dy + h, dx:dx + w]
      yield crop
      yield crop[:, ::-1]


def test_augment_is_a_padded_crop_and_flip():
  images = _toy_set()
  xs, ys = _collect(_toy_batches(images, augment=True))
  changed = 0
  for x, y in zip(xs[:4], ys[:4]):
    assert x.shape == (8, 6, 6, 3)
    got = _to_uint8(x)
    for image, label in zip(got, y):
      original = images.images[label]
      assert any(np.array_equal(image, c) for c in _crops_and_flips(original))
      changed += not np.array_equal(image, original)
  assert changed >= 16  # Of 32; identity has probability 1/162 each.


# ------------------------------------------------------------ search_input


def test_search_input_pairs_train_and_val():
  d = sources.load_search_data(sources.DataConfig(train_split="train[:100]",
                                            val_split="train[100:150]"))
  assert pipeline.steps_per_epoch(d, 16) == 3
  ds = pipeline.search_input(d, global_batch_size=16, seed=0, epochs=2)
  steps = list(ds)
  assert len(steps) == 6
  (xt, yt), (xv, yv) = steps[0]
  assert xt.shape == xv.shape == (16, 8, 8, 3)
  assert yt.dtype == yv.dtype == tf.int64
  # Each half draws from its own split: images identify their source.
  val_images = {im.tobytes() for im in d.val.images}
  for (_, _), (x, _) in steps:
    restored = np.round((x.numpy() * d.std + np.array(d.mean)) * 255)
    for image in restored.astype(np.uint8):
      assert image.tobytes() in val_images
  resumed = list(pipeline.search_input(d, global_batch_size=16, seed=0, epochs=2,
                                   start_step=4))
  np.testing.assert_array_equal(resumed[0][1][0], steps[4][1][0])


# ------------------------------------------------------------------ folder


def _write_image(path, image, fmt="png"):
  encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
  tf.io.write_file(str(path), encode(tf.constant(image, tf.uint8)))


def _make_folder(root):
  colors = {"b_red": (255, 0, 0), "a_green": (0, 255, 0),
            "c_blue": (0, 0, 255)}
  for i, (name, color) in enumerate(sorted(colors.items())):
    folder = root / name
    folder.mkdir(parents=True)
    for j in range(2 + i):
      size = (5 + j, 7)
      _write_image(folder / f"img{j}.png", np.full(size + (3,), color))
  # Grayscale and nested images count; hidden and non-image files do not.
  _write_image(root / "a_green" / "gray.png", np.full((4, 4, 1), 255))
  (root / "a_green" / "sub").mkdir()
  _write_image(root / "a_green" / "sub" / "x.png", np.full((3, 3, 3), 9))
  (root / "a_green" / "notes.txt").write_text("not an image")
  (root / "a_green" / ".DS_Store").write_text("junk")
  (root / ".hidden").mkdir()
  _write_image(root / ".hidden" / "y.png", np.zeros((3, 3, 3)))
  return colors


def test_folder_dataset(tmp_path):
  _make_folder(tmp_path)
  cfg = sources.DataConfig(dataset=str(tmp_path), train_split="train",
                        val_split="train[-2:]", image_size=16)
  d = sources.load_search_data(cfg)
  assert d.num_classes == 3
  assert d.image_shape == (16, 16, 3)
  # Sorted class names: a_green=0 (4 images), b_red=1 (3), c_blue=2 (4), in
  # a seeded order (see test_folder_splits_hold_every_class).
  assert sorted(d.train.labels) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
  colors = {0: (0, 255, 0), 1: (255, 0, 0), 2: (0, 0, 255)}
  # a_green holds gray.png (white as RGB), img0.png, img1.png and sub/x.png.
  white = [i for i, im in enumerate(d.train.images) if (im == 255).all()]
  assert len(white) == 1 and d.train.labels[white[0]] == 0
  for i, (image, label) in enumerate(zip(d.train.images, d.train.labels)):
    if i not in white and not (label == 0 and (image == 9).all()):  # sub/x.png
      np.testing.assert_array_equal(image, np.full((16, 16, 3), colors[label]))
  assert len(d.val) == 2
  assert not d.augment
  np.testing.assert_allclose(d.mean, d.train.images.mean(axis=(0, 1, 2)) / 255)


def test_folder_default_size_and_jpeg(tmp_path):
  for name in ("x", "y"):
    (tmp_path / name).mkdir()
    _write_image(tmp_path / name / "a.jpg", np.full((40, 20, 3), 100), "jpeg")
    _write_image(tmp_path / name / "b.png", np.full((32, 32, 3), 7))
  d = sources.load_search_data(sources.DataConfig(dataset=str(tmp_path),
                                            train_split="train",
                                            val_split="train[:1]"))
  assert d.image_shape == (32, 32, 3)
  assert sum((im == 7).all() for im in d.train.images) == 2


def test_folder_with_one_class(tmp_path):
  (tmp_path / "only").mkdir()
  _write_image(tmp_path / "only" / "a.png", np.zeros((4, 4, 3)))
  message = _error(sources.load_search_data,
                   sources.DataConfig(dataset=str(tmp_path)))
  assert "at least 2" in message


def test_folder_with_corrupt_image(tmp_path):
  for name in ("x", "y"):
    (tmp_path / name).mkdir()
    _write_image(tmp_path / name / "a.png", np.zeros((4, 4, 3)))
  bad = tmp_path / "y" / "broken.png"
  bad.write_bytes(b"this is not a png")
  message = _error(sources.load_search_data,
                   sources.DataConfig(dataset=str(tmp_path)))
  assert str(bad) in message


def test_folder_class_without_images(tmp_path):
  (tmp_path / "x").mkdir()
  (tmp_path / "y").mkdir()
  _write_image(tmp_path / "x" / "a.png", np.zeros((4, 4, 3)))
  (tmp_path / "y" / "readme.txt").write_text("hi")
  message = _error(sources.load_search_data,
                   sources.DataConfig(dataset=str(tmp_path)))
  assert "has no images" in message and "y" in message


def test_bare_folder_name_in_working_directory(tmp_path, monkeypatch):
  for name in ("x", "y"):
    (tmp_path / "imgs" / name).mkdir(parents=True)
    _write_image(tmp_path / "imgs" / name / "a.png", np.zeros((4, 4, 3)))
  monkeypatch.chdir(tmp_path)
  d = sources.load_search_data(sources.DataConfig(dataset="imgs", image_size=4))
  assert d.num_classes == 2 and d.image_shape == (4, 4, 3)


def _make_unique_folder(root, sizes):
  """Classes c0, c1, ... of the given sizes; every image a different gray level."""
  level = 0
  for i, n in enumerate(sizes):
    (root / f"c{i}").mkdir()
    for j in range(n):
      level += 1
      _write_image(root / f"c{i}" / f"{j}.png", np.full((4, 4, 3), level))


def test_folder_splits_hold_every_class(tmp_path):
  _make_unique_folder(tmp_path, (2, 3, 7))

  def halves(seed):
    d = sources.load_search_data(sources.DataConfig(dataset=str(tmp_path), image_size=4,
                                              seed=seed))
    return [{int(im[0, 0, 0]): int(label) for im, label in zip(s.images, s.labels)}
            for s in (d.train, d.val)]

  train, val = halves(seed=2)
  for part in (train, val):
    assert set(part.values()) == {0, 1, 2}  # every class in both halves
  assert not set(train) & set(val)
  assert set(train) | set(val) == set(range(1, 13))
  assert halves(seed=2) == [train, val]
  assert any(halves(seed=s)[0] != train for s in (3, 4, 5))


def test_stratified_order_spreads_each_class():
  labels = np.repeat(np.arange(4), [1, 5, 10, 50])
  order = sources.stratified_order(labels, seed=7)
  assert sorted(order) == list(range(len(labels)))
  for stop in range(1, len(labels) + 1):
    counts = np.bincount(labels[order[:stop]], minlength=4)
    share = stop / len(labels) * np.array([1, 5, 10, 50])
    assert (np.abs(counts - share) <= 1).all(), stop
  np.testing.assert_array_equal(order, sources.stratified_order(labels, seed=7))
  assert sources.stratified_order(labels, seed=-1).shape == order.shape


def test_same_images_in_both_splits_are_refused(tmp_path):
  message = _error(sources.load_search_data,
                   sources.DataConfig(train_split="train[:50%]", val_split="train[:50%]"))
  assert "are the same images" in message and "'train[:50%]'" in message
  message = _error(sources.load_search_data,
                   sources.DataConfig(train_split="train[:10]", val_split="train[0:10]"))
  assert "are the same images" in message
  _make_unique_folder(tmp_path, (2, 2))
  message = _error(sources.load_search_data, sources.DataConfig(
      dataset=str(tmp_path), train_split="train", val_split="train[:100%]"))
  assert "are the same images" in message


def test_overlapping_splits_warn(caplog):
  d = sources.load_search_data(sources.DataConfig(train_split="train[:60%]",
                                            val_split="train[50%:]"))
  assert len(d.train) == 1078
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert warnings == ["the train split 'train[:60%]' and the validation (test) split "
                      "'train[50%:]' of digits share 180 images: the second does not "
                      "measure unseen images only"]


def test_unset_splits_hold_out_a_fifth():
  d = sources.load_search_data(sources.DataConfig(train_split=None, val_split=None))
  assert (len(d.train), len(d.val)) == (1438, 359)
  assert (d.train_split, d.val_split) == ("train[:80%]", "train[80%:]")
  assert set(np.unique(d.val.labels)) == set(range(10))


def test_missing_folder():
  message = _error(sources.load_search_data,
                   sources.DataConfig(dataset="./no/such/folder"))
  assert "does not exist" in message


# -------------------------------------------------------------------- TFDS


def test_unknown_dataset():
  message = _error(sources.load_search_data,
                   sources.DataConfig(dataset="no_such_dataset_xyz"))
  assert message == ("unknown dataset 'no_such_dataset_xyz': not a TFDS "
                     "dataset name, 'digits', or a folder of images")


def test_tfds_missing_without_download(tmp_path):
  cfg = sources.DataConfig(dataset="cifar10", data_dir=str(tmp_path),
                        download=False)
  message = _error(sources.load_search_data, cfg)
  assert message.startswith(f"dataset cifar10 is not in {tmp_path} ")
  assert "tfds build cifar10 --data_dir=DIR" in message
  assert "--tfds_data_dir" in message


def test_tfds_missing_and_offline(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "_network_problem", lambda: "no network: test")
  cfg = sources.DataConfig(dataset="cifar10", data_dir=str(tmp_path))
  message = _error(sources.load_search_data, cfg)
  assert "could not be downloaded (no network: test)" in message


@pytest.mark.parametrize("name, classes, mean, std", [
    ("cifar10", 10, sources._CIFAR10_MEAN, sources._CIFAR10_STD),
    ("cifar100", 100, sources._CIFAR100_MEAN, sources._CIFAR100_STD),
])
def test_cifar_under_mock(name, classes, mean, std, monkeypatch):
  # The mock skips downloads but not our connectivity probe.
  monkeypatch.setattr(sources, "_network_problem", lambda: None)
  with tfds.testing.mock_data(num_examples=24):
    d = sources.load_search_data(sources.DataConfig(dataset=name))
  # Slicing is ignored under the mock, so sizes are not checked.
  assert len(d.train) > 0 and len(d.val) > 0
  assert d.image_shape == (32, 32, 3)
  assert d.num_classes == classes
  assert d.mean == mean and d.std == std
  assert d.augment
  assert d.train.labels.max() < classes
  (xt, yt), (xv, _) = next(iter(pipeline.search_input(
      d, global_batch_size=8, seed=0, epochs=1)))
  assert xt.shape == xv.shape == (8, 32, 32, 3) and yt.shape == (8,)


class TfnasGrayTest(tfds.core.GeneratorBasedBuilder):
  """A tiny grayscale TFDS dataset that prepares offline."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(6, 5, 1)),
            "label": tfds.features.ClassLabel(num_classes=3),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples(30),
            "test": self._generate_examples(7)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": np.full((6, 5, 1), 8 * i, np.uint8), "label": i % 3}


@pytest.fixture(scope="module")
def gray_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  tfds.builder("tfnas_gray_test", data_dir=str(root)).download_and_prepare()
  return str(root)


def test_prepared_tfds_gray_dataset(gray_dir, monkeypatch):
  def no_probe():
    raise AssertionError("a prepared dataset must not probe the network")
  monkeypatch.setattr(sources, "_network_problem", no_probe)
  d = sources.load_search_data(sources.DataConfig(
      dataset="tfnas_gray_test", data_dir=gray_dir, download=False))
  assert (len(d.train), len(d.val)) == (15, 15)
  assert d.image_shape == (6, 5, 3)
  assert d.num_classes == 3
  assert not d.augment
  np.testing.assert_array_equal(d.train.images[..., 0], d.train.images[..., 2])
  all_values = np.concatenate([d.train.images[:, 0, 0, 0],
                               d.val.images[:, 0, 0, 0]])
  assert sorted(all_values) == [8 * i for i in range(30)]
  np.testing.assert_allclose(d.mean, [d.train.images.mean() / 255] * 3,
                             rtol=1e-6)


def test_tfds_split_errors(gray_dir):
  def load(**kwargs):
    return sources.load_search_data(sources.DataConfig(
        dataset="tfnas_gray_test", data_dir=gray_dir, download=False,
        **kwargs))
  message = _error(load, val_split="validation")
  assert "bad split 'validation'" in message and "test, train" in message
  assert "bad split" in _error(load, train_split="train[:5%%]")
  assert "bad split" in _error(load, train_split="train[200%:]")
  message = _error(load, train_split="train[5:5]")
  assert message == "split 'train[5:5]' of tfnas_gray_test is empty"
  assert "6x5" in _error(load, image_size=6)
  assert len(load(train_split="train+test").train) == 37
  assert "are the same images" in _error(load, train_split="test", val_split="test[:100%]")
  unset = load(train_split=None, val_split=None)
  assert (len(unset.train), len(unset.val)) == (30, 7)
  assert (unset.train_split, unset.val_split) == ("train", "test")
  assert unset.test is unset.val  # the name retraining reads it by


def test_own_slicing_matches_tfds(gray_dir):
  builder = tfds.builder("tfnas_gray_test", data_dir=gray_dir)
  for spec in ["train[:50%]", "train[50%:]", "train[:45%]", "train[45%:]",
               "train[10%:25%]", "train[-7%:]", "train[:7]", "train[-4:]",
               "train[3:-3]", "train[:1%]", "train[:2%]"]:
    expected = builder.info.splits[spec].num_examples
    assert len(sources.split_indices(spec, 30, "x")) == expected, spec


def test_network_probe_is_bounded():
  # Whatever the machine, the probe must answer within its own timeout.
  import time  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  result = sources._network_problem()
  assert result is None or result.startswith("no network")
  assert time.monotonic() - start < sources._PROBE_TIMEOUT_S + 1


def test_cutout_zeroes_one_clipped_square_per_image():
  rng = np.random.default_rng(0)
  images = sources.ImageSet(rng.integers(1, 256, (16, 12, 12, 3), dtype=np.uint8),
                         np.zeros(16, np.int64))
  kwargs = dict(global_batch_size=16, seed=3, stream=0, epochs=1, steps_per_epoch=1,
                normalize=False)
  plain = next(iter(pipeline.batches(images, (0.5,) * 3, (0.25,) * 3, **kwargs)))[0].numpy()
  cut = next(iter(pipeline.batches(images, (0.5,) * 3, (0.25,) * 3, cutout=4, **kwargs)))[0].numpy()
  zero = np.all(cut == 0, axis=-1)
  assert not np.any(np.all(plain == 0, axis=-1))  # no zero pixel before cutout
  for mask in zero:
    rows, cols = np.nonzero(mask)
    assert 1 <= mask.sum() <= 16  # a 4x4 square, smaller where clipped at the border
    assert mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
  np.testing.assert_array_equal(cut[~zero], plain[~zero])
  assert (zero.sum(axis=(1, 2)) == 16).sum() >= 4  # most squares lie fully inside
  again = next(iter(pipeline.batches(images, (0.5,) * 3, (0.25,) * 3, cutout=4, **kwargs)))[0]
  np.testing.assert_array_equal(cut, again.numpy())


def test_evaluation_batches_cover_every_image_once_in_order():
  rng = np.random.default_rng(1)
  images = sources.ImageSet(rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8),
                         np.arange(10, dtype=np.int64))
  batches = list(pipeline.evaluation_batches(images, (0.5,) * 3, (0.25,) * 3, batch_size=4))
  # Full batches: the last one filled up with blank images labelled -1.
  assert [len(y) for _, y in batches] == [4, 4, 4]
  np.testing.assert_array_equal(np.concatenate([y for _, y in batches]),
                                [*range(10), pipeline.PADDING_LABEL, pipeline.PADDING_LABEL])
  x = np.concatenate([x for x, _ in batches])
  np.testing.assert_allclose((x[:10] * 0.25 + 0.5) * 255, images.images, atol=1e-3)
  assert not x[10:].any()
