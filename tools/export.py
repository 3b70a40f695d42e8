r"""Exports an evaluation network as a SavedModel that serves uint8 images.

Usage:
  python tools/export.py --model_dir=DIR --export_dir=OUT
  python tools/export.py --genotype=DARTS_V2 --export_dir=OUT [--network=cifar] \
      [--init_channels=36 --layers=20 --num_classes=10 --image_size=32] [--noauxiliary]

--model_dir exports the network that tools/train.py trained there (its
params.json and latest checkpoint). --genotype (a zoo name or a genotype JSON
file, a cell's or a chain's) exports an UNTRAINED network with random weights
instead, normalizing with the CIFAR-10 or ImageNet mean and std: useful to try
serving, not to classify. A chain takes --num_classes and --image_size (1000 and
224 by default); the other network flags are a cell's. OUT gets saved_model/ (signature serving_default: images uint8
[None, H, W, 3] -> logits, probabilities), genotype.json and describe.json.
"""
import json
import pathlib
import sys

# Lets `python tools/export.py` work from a checkout without installing tfnas.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from tfnas.runtime import cli  # noqa: E402
from tfnas.runtime.errors import UserInputError  # noqa: E402
from tools import flags_common  # noqa: E402

_MODEL_DIR = flags.DEFINE_string("model_dir", None,
                                 "A tools/train.py model_dir: export its trained network.")
_GENOTYPE = flags.DEFINE_string(
    "genotype", None, "A zoo name or a genotype JSON file: export an untrained network.")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "Where saved_model/, genotype.json and describe.json go.",
    required=True)
_NETWORK = flags.DEFINE_enum(
    "network", None, ["cifar", "imagenet"],
    "With --genotype: cifar (default; 3x3 stem) or imagenet (mobile setting).")
_INIT_CHANNELS = flags.DEFINE_integer(
    "init_channels", None, "With --genotype: channels of the first cells (default 36 / 48).",
    lower_bound=1)
_LAYERS = flags.DEFINE_integer("layers", None, "With --genotype: cells (default 20 / 14).",
                               lower_bound=1)
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None, "With --genotype: classes (default 10 / 1000).", lower_bound=2)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "With --genotype: square input size (default 32 / 224).",
    lower_bound=1)

_AUXILIARY = flags.DEFINE_boolean(
    "auxiliary", None, "With --genotype: build the auxiliary head (default true; --noauxiliary "
    "leaves it out, as images under 32x32 need).")

_SHAPE_FLAGS = (("network", _NETWORK), ("init_channels", _INIT_CHANNELS), ("layers", _LAYERS),
                ("num_classes", _NUM_CLASSES), ("image_size", _IMAGE_SIZE),
                ("auxiliary", _AUXILIARY))


def _untrained_spec(spaces, g):
  """The spec of g's network with the cell flags (a chain refuses them)."""
  if spaces.genotype_space(_GENOTYPE.value) == "chain":
    flags_common.refuse_for_chain(_GENOTYPE.value, _NETWORK, _INIT_CHANNELS, _LAYERS, _AUXILIARY)
  return spaces.network_spec(g, _NUM_CLASSES.value, kind=_NETWORK.value,
                             init_channels=_INIT_CHANNELS.value, layers=_LAYERS.value,
                             auxiliary=_AUXILIARY.value)


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  if (_MODEL_DIR.value is None) == (_GENOTYPE.value is None):
    raise UserInputError(
        "give exactly one of --model_dir (a trained network) or --genotype (an untrained "
        "one)")
  if _MODEL_DIR.value is not None:
    shape_flags = [f"--{name}" for name, flag in _SHAPE_FLAGS if flag.value is not None]
    if shape_flags:
      raise UserInputError(
          f"{', '.join(shape_flags)} only go with --genotype: --model_dir takes the network's "
          "settings from its params.json")
  else:
    from tfnas import spaces  # pylint: disable=g-import-not-at-top
    spec = _untrained_spec(spaces, spaces.resolve_genotype(_GENOTYPE.value))
  # Imported only now: bad flags or a bad genotype fail before TensorFlow loads.
  from tfnas.train import export  # pylint: disable=g-import-not-at-top
  export.check_export_dir(_EXPORT_DIR.value)  # before the slow build and save
  if _MODEL_DIR.value is not None:
    spec, network, params = export.load_trained(_MODEL_DIR.value)
    settings = params["network"]
    mean, std, image_shape = settings["mean"], settings["std"], settings["image_shape"]
    what = f"trained: restored {export.latest_checkpoint(_MODEL_DIR.value)}"
  else:
    network, mean, std, image_shape = export.untrained_network(spec, _IMAGE_SIZE.value)
    what = (f"untrained: random weights (the {spec.kind} network of {_GENOTYPE.value}: "
            f"{json.dumps(spec.settings_json())}); its outputs mean nothing")
  print(what, flush=True)
  out = export.export(spec, network, mean, std, image_shape, _EXPORT_DIR.value)
  print(f"saved model: {out['saved_model']}")
  print(f"genotype: {out['genotype']}")
  print(f"describe: {out['describe']}")
  print(f"signature serving_default: {out['signature']}")


if __name__ == "__main__":
  cli.run(main)
