"""Image datasets for the search and the training: loaded and split.

A dataset is a TFDS name (cifar10, cifar100, imagenet2012, imagenette/320px-v2,
...), "digits" (scikit-learn's bundled 8x8 digits, works offline) or a folder of
images with one subfolder per class.

Small images are held in memory as uint8 (ImageSet), which suits CIFAR-scale
search. ImageNet-like sets are streamed (StreamedImageSet: record ids and labels
in memory, images read and decoded per batch by pipeline.py): the TFDS sets whose
images vary in size (imagenet2012, imagenette, ...) and the folders read at an
image_size above STREAM_ABOVE pixels. Streamed sets get ImageNet's mean and std
and the Inception transforms.

The only split of digits and of a folder is 'train'. A folder's files are
grouped by class, so its split strings slice a seeded stratified order (each
class shuffled and spread evenly), which gives every slice its share of every
class; digits keep their stored order, whose classes are already interleaved.
Batching is pipeline.py's.
"""
import dataclasses
import os
from typing import Callable
import re
import socket

from absl import logging
import numpy as np
import tensorflow as tf

from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import check_int
from tfnas.runtime.errors import first_line


# CIFAR-10: the mean and std of quark0/darts' cnn/utils.py (_data_transforms_cifar10);
# CIFAR-100: the values in common use.
_CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)


_CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)


_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)


_CIFAR100_STD = (0.2673, 0.2564, 0.2762)


_IMAGENET_MEAN = (0.485, 0.456, 0.406)


_IMAGENET_STD = (0.229, 0.224, 0.225)


_DEFAULT_FOLDER_IMAGE_SIZE = 32


# Folders read at a larger image_size are streamed: in memory, 64x64 uint8 images
# take 12 KB each (1.2 GB for 100k); ImageNet's 224x224 would take 150 KB each.
STREAM_ABOVE = 64


_DEFAULT_STREAMED_IMAGE_SIZE = 224  # TFDS sets of varying image sizes


_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


# A failing TFDS download retries for minutes when offline, so probe first.
_PROBE_HOST = ("storage.googleapis.com", 443)


_PROBE_TIMEOUT_S = 5.0


_PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY",
               "all_proxy", "ALL_PROXY")


_SPLIT_KEY = 2  # the stratified order of a folder (numpy, not TensorFlow)


RNG_ALG = "philox"  # Fixed, so that results do not depend on the device.


# Splits left unset (None) in a DataConfig: a TFDS dataset's 'train' split and
# its held-out split ('test', else 'validation'); a source with only a 'train'
# split holds out its last 20%.
_HELD_OUT_SPLITS = ("train[:80%]", "train[80%:]")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which data to search on.

  Attributes:
    dataset: a TFDS name (e.g. cifar10), "digits", or a path to a folder of
      images with one subfolder per class (sorted names are the class ids).
    train_split: split that trains the weights (TFDS slicing syntax).
    val_split: split that trains the architecture (or, in tools/train.py,
      tests the network). The defaults are the DARTS 25k/25k halves of the
      CIFAR training set. None: the dataset's own train (test) split; digits
      and folders, which have only 'train', hold out its last 20%:
      train[:80%] and train[80%:].
    data_dir: TFDS data_dir; None means the TFDS default.
    image_size: folder images are resized to this (default 32); other
      datasets keep their native size and accept only that value.
    download: whether TFDS may download and prepare a missing dataset.
    augment: DARTS crop+flip augmentation; None = on for cifar*, else off.
    seed: orders a folder before its split strings slice it (see the module
      docstring), so the same seed gives the same halves in every tool.
  """
  dataset: str = "digits"
  train_split: str | None = "train[:50%]"
  val_split: str | None = "train[50%:]"
  data_dir: str | None = None
  image_size: int | None = None
  download: bool = True
  augment: bool | None = None
  seed: int = 0
  per_class_splits: bool = False

  def __post_init__(self):
    if not isinstance(self.dataset, str) or not self.dataset.strip():
      raise UserInputError("dataset is empty: give a TFDS name such as "
                           "cifar10, 'digits', or a folder of images")
    for field in ("train_split", "val_split"):
      value = getattr(self, field)
      if value is not None and (not isinstance(value, str) or not value.strip()):
        raise UserInputError(f"{field} is empty: give a split such as "
                             "train[:50%]")
    if self.image_size is not None and (
        isinstance(self.image_size, bool) or
        not isinstance(self.image_size, int) or self.image_size < 1):
      raise UserInputError(f"image_size must be a positive integer, got "
                           f"{self.image_size!r}")
    check_int("seed", self.seed)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSet:
  """Images uint8 [N, H, W, 3] and their int64 labels [N]."""
  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    images, labels = self.images, self.labels
    if (not isinstance(images, np.ndarray) or images.dtype != np.uint8 or
        images.ndim != 4 or images.shape[-1] != 3):
      raise UserInputError("ImageSet.images must be a uint8 numpy array "
                           "[N, H, W, 3], got "
                           f"{getattr(images, 'dtype', type(images))} "
                           f"{getattr(images, 'shape', '')}")
    if (not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or
        labels.shape != images.shape[:1]):
      raise UserInputError(f"ImageSet.labels must be an int64 numpy array "
                           f"[{len(images)}], got "
                           f"{getattr(labels, 'dtype', type(labels))} "
                           f"{getattr(labels, 'shape', '')}")

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedImageSet:
  """Images read and decoded per batch (pipeline.py), never held in memory.

  Attributes:
    ids: int64 [N], each image's id for `read`.
    labels: int64 [N].
    read: a scalar int64 id tensor -> the encoded image (JPEG, PNG, ...), a
      tf.string scalar; traced inside tf.data.
    image_size: the side of the square images the pipeline makes.
  """
  ids: np.ndarray
  labels: np.ndarray
  read: Callable[[tf.Tensor], tf.Tensor]
  image_size: int

  def __len__(self):
    return len(self.labels)

  def take(self, index):
    return StreamedImageSet(self.ids[index], self.labels[index], self.read, self.image_size)


@dataclasses.dataclass(frozen=True, eq=False)
class SearchData:
  """Both halves of the search data plus what the model needs to know.

  `val` is the half that trains the architecture in a search; in retraining
  (tfnas.trainer) the same field holds the held-out split tested every epoch,
  which reads better as `test`. mean and std are per channel in [0, 1] units;
  train_split and val_split are the split strings used (DataConfig's, or the
  defaults it left unset).
  """
  name: str
  train: ImageSet
  val: ImageSet
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  augment: bool
  train_split: str = ""
  val_split: str = ""

  @property
  def test(self):
    """`val` under the name retraining gives it: the held-out split it tests on."""
    return self.val


def load_search_data(cfg: DataConfig) -> SearchData:
  """Loads both splits of cfg.dataset into memory."""
  name = cfg.dataset
  expanded = os.path.expanduser(name)
  if name == "digits":
    loaded = _load_digits(cfg)
  elif _looks_like_path(name):
    if not os.path.isdir(expanded):
      raise UserInputError(f"dataset folder {name} does not exist")
    loaded = _load_folder(cfg, expanded)
  else:
    loaded = _load_tfds(cfg)  # Falls back to a folder of the same name.
  train, val, num_classes, mean, std, tfds_name, splits = loaded

  streamed = isinstance(train, StreamedImageSet)
  if cfg.augment is None:
    augment = streamed or bool(tfds_name and tfds_name.startswith("cifar"))
  else:
    augment = bool(cfg.augment)
  if streamed:
    image_shape = (train.image_size, train.image_size, 3)
  else:
    image_shape = tuple(int(d) for d in train.images.shape[1:])
  return SearchData(
      name=name,
      train=train,
      val=val,
      num_classes=num_classes,
      image_shape=image_shape,
      mean=mean,
      std=std,
      augment=augment,
      train_split=splits[0],
      val_split=splits[1])


def _load_digits(cfg):
  _check_native_size(cfg, "digits", 8, 8)
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  # Values are 0..16; scale to the full uint8 range.
  gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  images = np.repeat(gray[..., np.newaxis], 3, axis=-1)
  labels = digits.target.astype(np.int64)
  # Stored by writer with the classes interleaved: no shuffle needed.
  train, val, splits = _split_single(_in_memory(images, labels), labels, cfg, "digits",
                                     stratify=False)
  return train, val, 10, *_mean_std(train), None, splits


def _load_folder(cfg, root):
  """Images in root/<class>/...; sorted class names are the labels."""
  name = cfg.dataset
  size = cfg.image_size or _DEFAULT_FOLDER_IMAGE_SIZE
  try:
    entries = sorted(os.listdir(root))
  except OSError as e:
    raise UserInputError(f"cannot list dataset folder {name}: "
                         f"{e.strerror}") from None
  classes = [e for e in entries
             if not e.startswith(".") and os.path.isdir(os.path.join(root, e))]
  if len(classes) < 2:
    raise UserInputError(
        f"image folder {name} has {len(classes)} class subfolder(s); it needs "
        "at least 2 (one subfolder of images per class)")
  files, labels = [], []
  for label, cls in enumerate(classes):
    found = _image_files(os.path.join(root, cls))
    if not found:
      raise UserInputError(
          f"class folder {os.path.join(name, cls)} has no images "
          f"({', '.join(_IMAGE_EXTENSIONS)})")
    files.extend(found)
    labels.extend([label] * len(found))
  labels = np.asarray(labels, np.int64)
  if size > STREAM_ABOVE:
    paths = tf.constant(files)
    take = StreamedImageSet(np.arange(len(files), dtype=np.int64), labels,
                            lambda i: tf.io.read_file(tf.gather(paths, i)), size).take
  else:
    take = _in_memory(np.stack([_read_image(f, size) for f in files]), labels)
  # Grouped by class: contiguous slices would split the classes.
  train, val, splits = _split_single(take, labels, cfg, name, stratify=True)
  if size > STREAM_ABOVE:
    return train, val, len(classes), _IMAGENET_MEAN, _IMAGENET_STD, None, splits
  return train, val, len(classes), *_mean_std(train), None, splits


def _in_memory(images, labels):
  """take(index) of in-memory images: the ImageSet of those examples."""
  return lambda index: ImageSet(images[index], labels[index])


def _image_files(folder):
  """Sorted image paths under folder, hidden entries skipped."""
  paths = []
  for parent, dirs, names in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    paths.extend(os.path.join(parent, f) for f in names
                 if not f.startswith(".") and
                 f.lower().endswith(_IMAGE_EXTENSIONS))
  return sorted(paths)


def _read_image(path, size):
  try:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False)
  except (tf.errors.OpError, ValueError) as e:
    raise UserInputError(f"cannot read image {path}: {first_line(e, limit=200)}") from None
  if image.shape[0] != size or image.shape[1] != size:
    # Squash to a square (no aspect-preserving crop), like Keras' loaders.
    image = tf.image.resize(image, [size, size], antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return image.numpy()


def _load_tfds(cfg):
  """Loads a TFDS dataset, preparing it first if allowed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = cfg.dataset
  try:
    builder = tfds.builder(name, data_dir=cfg.data_dir)
  except Exception as e:  # pylint: disable=broad-except
    is_unknown = (isinstance(e, tfds.core.registered.DatasetNotFoundError) or
                  str(e).startswith("Parsing builder name string"))
    if is_unknown and os.path.isdir(name):
      return _load_folder(cfg, name)  # A folder in the working directory.
    if is_unknown and name.startswith("imagewoof"):
      raise UserInputError(
          f"unknown dataset '{name}': TFDS has no imagewoof; download imagewoof2 "
          "(https://github.com/fastai/imagenette) and pass its train folder") from None
    if is_unknown:
      raise UserInputError(
          f"unknown dataset '{name}': not a TFDS dataset name, 'digits', or "
          "a folder of images") from None
    raise UserInputError(f"cannot open TFDS dataset '{name}': "
                         f"{first_line(e, limit=200)}") from None

  info = builder.info
  keys = info.supervised_keys
  if not keys or len(keys) != 2:
    raise UserInputError(f"TFDS dataset {name} has no (image, label) "
                         "supervised keys, so it cannot be used for search")
  image_key, label_key = keys
  shape = tuple(getattr(info.features[image_key], "shape", ()) or ())
  if len(shape) != 3 or shape[-1] not in (1, 3):
    raise UserInputError(f"TFDS dataset {name} has images of shape {shape}; search needs "
                         "images with 1 or 3 channels")
  streamed = None in shape[:2]  # images of varying sizes: ImageNet-like

  if not builder.is_prepared():
    # Streamed sets read records by index, which array_record files allow.
    _prepare(builder, cfg, tfds, file_format="array_record" if streamed else None)

  info = builder.info
  num_classes = getattr(info.features[label_key], "num_classes", None)
  if not num_classes:
    raise UserInputError(f"TFDS dataset {name}: '{label_key}' is not a class "
                         "label, so it cannot be used for classification")
  held_out = "validation" if "validation" in info.splits and "test" not in info.splits else "test"
  splits = _resolve_splits(cfg, ("train", held_out))
  for split in splits:
    _check_tfds_split(builder, split)
  if streamed:
    records = _TfdsRecords(builder, tfds, image_key, label_key)
    everything = StreamedImageSet(np.arange(len(records.labels), dtype=np.int64),
                                  records.labels, records.read,
                                  cfg.image_size or _DEFAULT_STREAMED_IMAGE_SIZE)
  else:
    _check_native_size(cfg, name, shape[0], shape[1])
  if cfg.per_class_splits:
    if not streamed:  # every stored split, numbered as _tfds_examples does
      whole = [_read_tfds_split(builder, n, tfds) for n in sorted(info.splits.keys())]
      everything = ImageSet(np.concatenate([w.images for w in whole]),
                            np.concatenate([w.labels for w in whole]))
    labels = _labels_by_split(info, everything.labels)
    indices = [per_class_indices(s, labels, cfg.seed, name) for s in splits]
    for split, index in zip(splits, indices):
      if index.size == 0:
        raise UserInputError(f"split '{split}' of {name} is empty")
    _check_overlap(splits, name, indices)
    train, val = (_take(everything, i) for i in indices)
  elif streamed:
    indices = _tfds_examples(builder, splits, tfds)
    _check_overlap(splits, name, indices)
    train, val = (everything.take(i) for i in indices)
  else:
    train = _read_tfds_split(builder, splits[0], tfds)
    val = _read_tfds_split(builder, splits[1], tfds)
    _check_overlap(splits, name, _tfds_examples(builder, splits, tfds))
  if streamed:
    mean, std = _IMAGENET_MEAN, _IMAGENET_STD
  elif info.name == "cifar10":
    mean, std = _CIFAR10_MEAN, _CIFAR10_STD
  elif info.name == "cifar100":
    mean, std = _CIFAR100_MEAN, _CIFAR100_STD
  else:
    mean, std = _mean_std(train)
  return train, val, int(num_classes), mean, std, info.name, splits


def _take(images, index):
  if isinstance(images, StreamedImageSet):
    return images.take(index)
  return ImageSet(images.images[index], images.labels[index])


def _labels_by_split(info, labels):
  """{split name: its labels} of labels numbered split after split in sorted name order."""
  names = sorted(info.splits.keys())
  bounds = np.cumsum([0] + [info.splits[n].num_examples for n in names])
  return {n: labels[bounds[k]:bounds[k + 1]] for k, n in enumerate(names)}


class _TfdsRecords:
  """A TFDS dataset's records by id (its splits one after the other in sorted name order,
  the numbering of _tfds_examples) and all their labels, for a StreamedImageSet."""

  def __init__(self, builder, tfds, image_key, label_key):
    info = builder.info
    self.names = sorted(info.splits.keys())
    try:
      self.sources = [builder.as_data_source(
          n, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES).data_source
                      for n in self.names]
    except NotImplementedError:
      raise UserInputError(
          f"TFDS dataset {info.full_name} in {builder.data_dir_root} is stored as "
          f"{info.file_format.value}, which cannot be read by index: build it again as "
          f"array_record (`tfds build {builder.name} --file_format=array_record "
          "--data_dir=NEW_DIR`) and pass --tfds_data_dir=NEW_DIR") from None
    self.starts = np.cumsum([0] + [len(s) for s in self.sources])
    self.image_key = image_key
    self.label_key = label_key
    self.labels = np.concatenate([self._split_labels(builder, n) for n in self.names])

  def _split_labels(self, builder, split):
    """The labels of a split: one pass over its records, then cached beside them."""
    cache = os.path.join(builder.data_dir, f"tfnas-labels-{split}.npy")
    if os.path.exists(cache):
      return np.load(cache)
    source = self.sources[self.names.index(split)]
    logging.info("Reading the labels of %s's %s split once (%d records)",
                 builder.info.full_name, split, len(source))
    spec = {self.label_key: tf.io.FixedLenFeature([], tf.int64)}
    chunks = [tf.io.parse_example(_as_strings(source.__getitems__(range(i, min(i + 4096,
                                                                              len(source))))),
                                  spec)[self.label_key].numpy()
              for i in range(0, len(source), 4096)]
    labels = np.concatenate(chunks).astype(np.int64) if chunks else np.zeros([0], np.int64)
    try:
      np.save(cache, labels)
    except OSError:  # a read-only dataset: read them again next time
      pass
    return labels

  def _record(self, i):
    k = int(np.searchsorted(self.starts, i, side="right")) - 1
    return _as_strings([self.sources[k][int(i) - int(self.starts[k])]])[0]

  def read(self, i):
    record = tf.numpy_function(self._record, [i], tf.string, stateful=False)
    return tf.io.parse_single_example(
        record, {self.image_key: tf.io.FixedLenFeature([], tf.string)})[self.image_key]


def _as_strings(records):
  # An object array keeps bytes whole (numpy's bytes dtype drops trailing zeros).
  return np.array(list(records), dtype=object)


def _prepare(builder, cfg, tfds, file_format=None):
  """Downloads and prepares a missing dataset, or says how to get it."""
  if cfg.data_dir:
    where = cfg.data_dir
  else:
    where = os.fspath(tfds.core.constants.DATA_DIR)
  instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if instructions:
    reason = _check_manual_download(builder, instructions)
  elif not cfg.download:
    reason = "downloads are off"
  else:
    reason = _network_problem()
  if reason is None:
    try:
      builder.download_and_prepare(file_format=file_format)
    except Exception as e:  # pylint: disable=broad-except
      reason = first_line(e, limit=160)
  if reason is not None:
    name = cfg.dataset
    raise UserInputError(
        f"dataset {name} is not in {where} and could not be downloaded "
        f"({reason}): build it where there is internet (`tfds build {name} "
        "--data_dir=DIR`), copy DIR here and pass --tfds_data_dir=DIR")


def _check_manual_download(builder, instructions):
  """None when the manual download is in place; else raises the one line that says where."""
  manual = os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")
  names = sorted(set(re.findall(r"[\w.-]+\.(?:tar\.gz|tgz|tar|zip)\b", instructions)))
  missing = [n for n in names if not os.path.exists(os.path.join(manual, n))]
  if missing or not (os.path.isdir(manual) and os.listdir(manual)):
    files = " and ".join(names) if names else "its files"
    raise UserInputError(
        f"dataset {builder.name} needs a manual download: put {files} in {manual} "
        "(or pass --tfds_data_dir=DIR to use DIR/downloads/manual), then run again")
  return None


def _network_problem():
  """None if downloads look possible, else a short reason.

  TFDS retries a failing download for about 3.5 minutes when offline, so a
  quick connection attempt fails fast instead. Behind a proxy a direct
  connection proves nothing, so the check is skipped there.
  """
  if any(os.environ.get(v) for v in _PROXY_VARS):
    return None
  host, port = _PROBE_HOST
  try:
    socket.create_connection(_PROBE_HOST, timeout=_PROBE_TIMEOUT_S).close()
  except OSError:
    return f"no network: cannot reach {host}:{port}"
  return None


def _tfds_examples(builder, splits, tfds):
  """Each split's example ids (one numbering over all stored splits), or None if unknown."""
  infos = builder.info.splits
  if not infos:  # mocked builders know no splits
    return None
  names = sorted(infos.keys())
  sizes = {n: infos[n].num_examples for n in names}
  offsets = dict(zip(names, np.cumsum([0] + [sizes[n] for n in names])))
  ids = []
  for split in splits:
    ranges = []
    for part in tfds.core.ReadInstruction.from_spec(split).to_absolute(infos):
      start = offsets[part.splitname]  # bounds of None mean the split's ends
      stop = sizes[part.splitname] if part.to is None else part.to
      ranges.append(np.arange(start + (part.from_ or 0), start + stop))
    ids.append(np.concatenate(ranges))
  return ids


def _check_tfds_split(builder, split):
  """Refuses a split string the dataset cannot slice, or an empty slice."""
  name = builder.info.name
  splits = builder.info.splits
  # Mocked builders (tfds.testing.mock_data) know no splits: skip the check.
  if splits:
    try:
      size = splits[split].num_examples
    except (ValueError, KeyError, NotImplementedError, AssertionError) as e:
      raise UserInputError(
          f"bad split '{split}' for {name} ({first_line(e, limit=200)}); available splits: "
          f"{', '.join(sorted(splits.keys()))}") from None
    if size == 0:
      raise UserInputError(f"split '{split}' of {name} is empty")


def _read_tfds_split(builder, split, tfds):
  """Reads one split into memory, in the stored (deterministic) order."""
  name = builder.info.name
  _check_tfds_split(builder, split)
  try:
    ds = builder.as_dataset(
        split=split, as_supervised=True, shuffle_files=False,
        read_config=tfds.ReadConfig(interleave_cycle_length=1))
    chunks = list(ds.batch(4096).as_numpy_iterator())
  except (tf.errors.OpError, ValueError, OSError) as e:
    raise UserInputError(f"cannot read split '{split}' of {name} from "
                         f"{builder.data_dir}: {first_line(e, limit=200)}") from None
  if not chunks:
    raise UserInputError(f"split '{split}' of {name} is empty")
  images = np.concatenate([c[0] for c in chunks]).astype(np.uint8)
  labels = np.concatenate([c[1] for c in chunks]).astype(np.int64)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return ImageSet(images, labels)


def _looks_like_path(name):
  return (os.path.isabs(name) or name.startswith(("./", "../", "~")) or
          name in (".", "..") or (os.sep != "/" and os.sep in name))


def _check_native_size(cfg, name, height, width):
  size = cfg.image_size
  if size is not None and (size != height or size != width):
    raise UserInputError(
        f"{name} images are {height}x{width}; image_size={size} only resizes "
        f"folder datasets (leave it unset or set it to {height})")


def _split_single(take, labels, cfg, name, stratify):
  """(train, val, splits) of a dataset whose only split is 'train'.

  take(index) makes the set of those examples. stratify: slice
  stratified_order(labels, cfg.seed) instead of the stored order.
  """
  splits = _resolve_splits(cfg, _HELD_OUT_SPLITS)
  order = stratified_order(labels, cfg.seed) if stratify else np.arange(len(labels))
  indices = []
  for split in splits:
    if cfg.per_class_splits:
      index = per_class_indices(split, {"train": labels}, cfg.seed, name)
    else:
      index = order[split_indices(split, len(labels), name)]
    if index.size == 0:
      raise UserInputError(f"split '{split}' of {name} is empty")
    indices.append(index)
  _check_overlap(splits, name, indices)
  train, val = (take(i) for i in indices)
  return train, val, splits


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
  """A seeded order of all examples in which any slice holds its share of every class.

  Each class is shuffled and its k-th of n examples placed at (k + 1/2) / n along
  the order (ties broken at random), so a slice of p% of the order holds p% of
  each class, within one example: a class of two or more examples reaches both
  halves of train[:50%] / train[50%:]. The same labels and seed give the same order.
  """
  rng = np.random.default_rng([seed % 2**64, _SPLIT_KEY])
  position = np.empty(len(labels))
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    position[members] = (np.arange(len(members)) + 0.5) / len(members)
  return np.lexsort((rng.random(len(labels)), position))


def _resolve_splits(cfg, defaults):
  """(train_split, val_split) with unset ones replaced by the dataset's defaults."""
  return tuple(default if split is None else split
               for split, default in zip((cfg.train_split, cfg.val_split), defaults))


def _check_overlap(splits, name, indices):
  """Refuses two splits of the same images; warns when they share some.

  indices: each split's example ids (one numbering), or None when unknown.
  """
  train_split, val_split = splits
  same = train_split.replace(" ", "") == val_split.replace(" ", "")
  shared = 0
  if indices is not None:
    train, val = (np.unique(i) for i in indices)
    shared = len(np.intersect1d(train, val, assume_unique=True))
    same = same or (shared == len(train) == len(val))
  if same:
    raise UserInputError(
        f"the train split '{train_split}' and the validation (test) split '{val_split}' of "
        f"{name} are the same images, so the second measures nothing: give them disjoint "
        "splits, e.g. train[:50%] and train[50%:]")
  if shared:
    logging.warning("the train split '%s' and the validation (test) split '%s' of %s share "
                    "%d images: the second does not measure unseen images only", train_split,
                    val_split, name, shared)


_PART_RE = re.compile(r"^(?P<split>[\w-]+)(?:\[(?P<selector>[^\]]*)\])?$")


_BOUND_RE = re.compile(r"^(?P<value>-?\d+(?:\.\d*)?)(?P<percent>%)?$")


def split_indices(spec: str, num_examples: int, name: str) -> np.ndarray:
  """Indices selected by a TFDS-style split of a single 'train' split.

  Supports train, train[a:b] with absolute or percent bounds (negative ones
  count from the end) and '+' to join parts. Percent bounds round to the
  closest example like TFDS (Python's round, so 50% of 1797 is 898).
  """
  return np.concatenate([_slice(_parse_part(p, spec, name, ("train",))[1], spec,
                                num_examples, name)
                         for p in _parts(spec)])


def per_class_indices(spec: str, labels: dict, seed: int, name: str) -> np.ndarray:
  """Indices selected by a split string sliced within every class.

  labels maps each split name to its int64 labels; the indices number the
  splits one after the other in sorted name order. Each class of a split is
  put in a seeded order (the same seed, the same order) and sliced by the
  bounds, so train[:10%] is 10% of every class (rounded per class) and
  train[10%:12.5%] the next 2.5%.
  """
  names = sorted(labels)
  offsets = dict(zip(names, np.cumsum([0] + [len(labels[n]) for n in names])))
  chosen = []
  for part in _parts(spec):
    split, selector = _parse_part(part, spec, name, tuple(names))
    rng = np.random.default_rng([seed % 2**64, _SPLIT_KEY, names.index(split)])
    of_split = labels[split]
    for label in np.unique(of_split):
      members = rng.permutation(np.flatnonzero(of_split == label))
      index = _slice(selector, spec, len(members), f"{name} (class {label})")
      chosen.append(offsets[split] + np.sort(members[index]))
  return np.concatenate(chosen) if chosen else np.zeros([0], np.int64)


def _parts(spec):
  return [p.strip() for p in spec.split("+")]


def _parse_part(part, spec, name, splits):
  """(split name, selector or None) of one '+' part; splits: the names it may use."""
  if splits == ("train",):
    usage = (f"bad split '{spec}' for {name}: write train, train[:50%], "
             "train[50%:], train[10%:20%], train[:100] or train[-100:] (its "
             "only split is 'train')")
  else:
    usage = (f"bad split '{spec}' for {name}: write e.g. train, train[:10%] or "
             f"train[10%:12.5%] (its splits: {', '.join(splits)})")
  match = _PART_RE.match(part)
  if not match:
    raise UserInputError(usage)
  if match["split"] not in splits:
    if splits == ("train",):
      raise UserInputError(
          f"unknown split '{match['split']}' in '{spec}' for {name}: its only "
          "split is 'train' (slice it, e.g. train[:50%] and train[50%:])")
    raise UserInputError(f"unknown split '{match['split']}' in '{spec}' for {name}: its "
                         f"splits are {', '.join(splits)}")
  selector = match["selector"]
  if selector is not None and not _selector_ok(selector):
    raise UserInputError(usage)
  return match["split"], selector


def _selector_ok(selector):
  bounds = [b.strip() for b in selector.split(":")]
  return (len(bounds) == 2 and any(bounds) and
          all(_BOUND_RE.match(b) for b in bounds if b) and
          not ("." in selector and "%" not in selector))


def _slice(selector, spec, n, name):
  """np.arange of the examples a checked selector ('a:b', or None: all) keeps of n."""
  if selector is None:
    return np.arange(n)
  found = [_BOUND_RE.match(b.strip()) for b in selector.split(":")]
  percent = any(m and m["percent"] for m in found)

  def resolve(m, default):
    if m is None:
      return default
    text = m["value"]
    if percent:
      value = float(text)
      if abs(value) > 100:
        raise UserInputError(f"split '{spec}' of {name}: percent bounds must "
                             "be within [-100%, 100%]")
      value = int(round(value * n / 100.0))
    else:
      value = int(text)
      if abs(value) > n:
        raise UserInputError(f"split '{spec}' of {name} is out of range: it "
                             f"has {n} examples")
    return n + value if value < 0 else value

  start, stop = resolve(found[0], 0), resolve(found[1], n)
  return np.arange(start, max(start, stop))


def _mean_std(images: ImageSet):
  """Per-channel mean and std in [0, 1] units, summed in chunks."""
  x = images.images
  count = x.shape[0] * x.shape[1] * x.shape[2]
  total = np.zeros(3)
  squares = np.zeros(3)
  for i in range(0, len(x), 4096):
    chunk = x[i:i + 4096].astype(np.float64) / 255.0
    total += chunk.sum(axis=(0, 1, 2))
    squares += np.square(chunk).sum(axis=(0, 1, 2))
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
  # A constant channel has std 0; any positive value leaves it at 0.
  std = np.where(std < 1e-6, 1.0, std)
  return (tuple(float(v) for v in mean), tuple(float(v) for v in std))


def channel_triple(what, values):
  try:
    triple = tuple(float(v) for v in values)
  except (TypeError, ValueError):
    triple = ()
  if len(triple) != 3:
    raise UserInputError(f"{what} must be 3 numbers (one per channel), got "
                         f"{values!r}")
  return triple
