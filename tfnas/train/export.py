"""Exports an evaluation network as a SavedModel that serves decoded images.

An export directory holds:
  saved_model/   signature serving_default: input `images`, uint8
                 [None, H, W, 3] (decoded RGB, any batch size) -> `logits` and
                 `probabilities`, float32 [None, num_classes]; the
                 normalization is inside, so clients need neither tfnas nor
                 the training mean and std;
  genotype.json  the genotype (a cell's or a chain's);
  describe.json  params, macs and what else the genotype's space counts (NetworkSpec.counts).

The network is described by a spaces.base.NetworkSpec. load_trained() rebuilds a network from
a tools/train.py model_dir: its params.json and the latest checkpoint in model_dir/checkpoints.
"""
import gc
import logging
import math
import os

import tensorflow as tf

from tfnas import spaces
from tfnas.layers import ops
from tfnas.runtime import files
from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import is_int

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The mean and std tfnas.data.sources normalizes CIFAR-10 with, and ImageNet's usual ones: an
# untrained network of that kind normalizes with them.
_KIND_NORMALIZATION = {
    "cifar": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    "imagenet": _IMAGENET, "chain": _IMAGENET,
}

SAVED_MODEL = "saved_model"
GENOTYPE_FILE = "genotype.json"
DESCRIBE_FILE = "describe.json"
_OUTPUTS = (SAVED_MODEL, GENOTYPE_FILE, DESCRIBE_FILE)

_CHANNELS = 3  # decoded RGB, as the data pipeline feeds the networks


def untrained_network(spec, image_size=None):
  """(network, mean, std, image_shape): a random-weight network of `spec`, for square images
  of image_size (None: the spec's default), normalizing with its kind's dataset's mean and std."""
  size = spec.default_image_size if image_size is None else image_size
  return spec.build(), *_KIND_NORMALIZATION[spec.kind], (size, size, _CHANNELS)


class _ServingModule(tf.Module):
  """Holds the network (so its variables are saved) and the serving function."""

  def __init__(self, network, mean, std, image_shape):
    super().__init__(name="tfnas_serving")
    self.network = network
    self._mean = tf.constant(mean, tf.float32)
    self._std = tf.constant(std, tf.float32)
    # Built here, not as a decorated method: the signature depends on image_shape.
    self.serve = tf.function(
        self._serve,
        input_signature=[tf.TensorSpec([None, *image_shape], tf.uint8, name="images")])

  def _serve(self, images):
    x = (tf.cast(images, tf.float32) / 255.0 - self._mean) / self._std
    logits = self.network(x, training=False)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits)}


def serving_module(network, mean, std, image_shape):
  """Returns a tf.Module whose `serve` maps uint8 images to logits and probabilities.

  serve(images): images uint8 [batch, H, W, 3] with image_shape = (H, W, 3);
  returns {"logits", "probabilities"}, float32 [batch, num_classes]. It
  normalizes as training did, (images / 255 - mean) / std, mean and std per
  channel in [0, 1] units, and runs the network in inference mode.
  """
  image_shape = _check_image_shape(image_shape)
  mean = _check_channel_values("mean", mean)
  std = _check_channel_values("std", std)
  if min(std) <= 0:
    raise UserInputError(f"std must be positive, got {list(std)}")
  network.check_image_size(image_shape[0], image_shape[1])
  # Creates the variables eagerly: a traced first call would create them in the trace.
  network(tf.zeros([1, *image_shape]), training=False)
  return _ServingModule(network, mean, std, image_shape)


def check_export_dir(export_dir):
  """Raises UserInputError if export_dir is a file or already holds an export."""
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise UserInputError(f"export_dir {export_dir} is a file, not a directory")
  # Never mixes a new export with an old one's files.
  taken = [name for name in _OUTPUTS if os.path.exists(os.path.join(export_dir, name))]
  if taken:
    raise UserInputError(
        f"export_dir {export_dir} already holds {', '.join(taken)}: remove them or choose "
        "another export_dir")


def export(spec, network, mean, std, image_shape, export_dir, describe=None):
  """Writes saved_model/, genotype.json and describe.json into export_dir.

  spec: the network's NetworkSpec; describe: the counts to write (None: spec.counts).
  Returns {"saved_model", "genotype", "describe": paths, "signature": text}.
  """
  check_export_dir(export_dir)
  module = serving_module(network, mean, std, image_shape)
  if describe is None:
    describe = spec.counts(_check_image_shape(image_shape))
  try:
    os.makedirs(export_dir, exist_ok=True)
  except OSError as e:
    raise UserInputError(f"cannot create export_dir {export_dir}: {e.strerror}") from None
  paths = {key: os.path.join(export_dir, name)
           for key, name in zip(("saved_model", "genotype", "describe"), _OUTPUTS)}
  # Traced with the plain ops: serving needs none of training's custom gradients,
  # which a loader cannot restore (it warns about each).
  with ops.plain_gradients():
    tf.saved_model.save(module, paths["saved_model"],
                        signatures={"serving_default": module.serve.get_concrete_function()})
  spec.save_genotype(paths["genotype"])
  files.write_json(describe, paths["describe"], indent=2)
  paths["signature"] = signature_text(module.serve.get_concrete_function())
  return paths


def signature_text(concrete_function):
  """One line such as 'images uint8 [None, 32, 32, 3] -> logits float32 [None, 10], ...'."""

  def spec(name, s):
    dims = ", ".join("None" if d is None else str(d) for d in s.shape.as_list())
    return f"{name} {s.dtype.name} [{dims}]"

  args, kwargs = concrete_function.structured_input_signature
  inputs = [spec(s.name, s) for s in args] + [spec(k, s) for k, s in sorted(kwargs.items())]
  outputs = [spec(k, s) for k, s in sorted(concrete_function.structured_outputs.items())]
  return f"{', '.join(inputs)} -> {', '.join(outputs)}"


def latest_checkpoint(model_dir):
  """The latest checkpoint's path in model_dir/checkpoints; UserInputError if none."""
  ckpt_dir = os.path.join(model_dir, "checkpoints")
  path = tf.train.latest_checkpoint(ckpt_dir)
  if path is None:
    raise UserInputError(
        f"no checkpoint in {ckpt_dir}: train first, or export an untrained network with "
        "--genotype")
  return path


def load_trained(model_dir):
  """Rebuilds the trained network of a tools/train.py model_dir.

  Reads model_dir/params.json, builds the network it describes and restores
  the model from the latest checkpoint (optimizer and counters are left out).
  Returns (spec, network, params): the NetworkSpec, the network and params.json's content,
  with "genotype" as the genotype and "network" checked (image_shape, mean and std as tuples).
  """
  if not os.path.isdir(model_dir):
    raise UserInputError(f"model_dir {model_dir} is not a directory")
  path = os.path.join(model_dir, "params.json")
  spec, params = _read_params(path)
  network = spec.build()
  h, w, c = params["network"]["image_shape"]
  network.check_image_size(h, w)
  # Builds every variable (the aux head too) so the restore is immediate and checkable.
  network(tf.zeros([1, h, w, c]), training=False)
  _check_all_in_checkpoint(network)
  ckpt = latest_checkpoint(model_dir)
  # A restore that fails midway logs every unrestored value when its state is
  # freed; quiet that, so the error stays one line.
  logger = tf.get_logger()
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    problem = _restore(network, ckpt)
    if problem is not None:
      del network
      gc.collect()
  finally:
    logger.setLevel(level)
  if problem is not None:
    raise UserInputError(f"checkpoint {ckpt} does not fit the network in {path}: {problem}")
  return spec, network, params


def _restore(network, ckpt):
  """Restores the model from ckpt; returns None, or what did not fit."""
  try:
    status = tf.train.Checkpoint(model=network).restore(ckpt).expect_partial()
    status.assert_existing_objects_matched()
  except AssertionError:
    # Its message lists the unmatched variables with their values: too long.
    return "the network has variables the checkpoint lacks (other cells or layers?)"
  except (ValueError, tf.errors.OpError) as e:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
  return None


def _check_all_in_checkpoint(network):
  """Raises if some variable is not reachable by tf.train.Checkpoint (a tfnas bug).

  Such a variable would silently keep its random value on restore, as layers
  kept in lists once did under Keras 3.
  """
  reachable = {id(x) for x in tf.train.TrackableView(network).descendants()}
  missing = [v.path for v in network.variables if id(v) not in reachable]
  if missing:
    raise RuntimeError(
        f"{len(missing)} of the network's variables are not in its checkpoints, e.g. "
        f"{missing[0]}: restoring would leave them random")


def _read_params(path):
  """(spec, params.json with its genotype as a genotype and its network section checked)."""
  if not os.path.lexists(path):
    raise UserInputError(
        f"no params.json in {os.path.dirname(path)}: expected a model_dir written by "
        "tools/train.py")
  params = files.read_json(path, expect=dict)
  try:
    for key in ("genotype", "network"):
      if key not in params:
        raise UserInputError(f"missing key '{key}'")
    spec = spaces.network_spec_from_json(params["network"], params["genotype"])
    network = _check_image_settings(params["network"])
  except UserInputError as e:
    raise UserInputError(f"{path}: {e}") from None
  return spec, dict(params, genotype=spec.genotype, network=network)


def _check_image_settings(settings):
  """The 'network' section of params.json with its image_shape, mean and std checked (the
  spec checks the rest)."""
  missing = [k for k in ("image_shape", "mean", "std") if k not in settings]
  if missing:
    raise UserInputError(f"'network' is missing {', '.join(missing)}")
  out = dict(settings)
  out["image_shape"] = _check_image_shape(settings["image_shape"], "network.image_shape")
  out["mean"] = _check_channel_values("network.mean", settings["mean"])
  out["std"] = _check_channel_values("network.std", settings["std"])
  if min(out["std"]) <= 0:
    raise UserInputError(f"network.std must be positive, got {settings['std']}")
  return out


def _check_image_shape(image_shape, what="image_shape"):
  """(H, W, 3) as a tuple of ints."""
  if (not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3
      or not all(is_int(d) and d > 0 for d in image_shape) or image_shape[2] != _CHANNELS):
    raise UserInputError(
        f"{what} must be [height, width, {_CHANNELS}] with positive integers, got "
        f"{image_shape!r}")
  return tuple(int(d) for d in image_shape)


def _check_channel_values(what, values):
  """A finite float per channel, as a tuple."""
  try:
    out = tuple(float(v) for v in values)
  except (TypeError, ValueError):
    out = ()
  if (len(out) != _CHANNELS or not all(math.isfinite(v) for v in out)
      or any(isinstance(v, bool) for v in values)):
    raise UserInputError(f"{what} must be {_CHANNELS} finite numbers, got {values!r}")
  return out
