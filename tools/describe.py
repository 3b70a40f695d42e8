r"""Describes the evaluation network of a genotype: parameters, MACs and ops.

Usage:
  python tools/describe.py --genotype=DARTS_V2 [--network=cifar] \
      [--init_channels=36 --layers=20 --num_classes=10 --image_size=32] [--noauxiliary]

--genotype is a zoo name or a genotype JSON file. Prints one JSON line:
params (without the auxiliary head), params_with_aux (not with --noauxiliary,
which leaves the head out, e.g. for images under 32x32), macs (one image,
inference) and the ops the cells build, per cell type.

A chain (python tools/describe.py --genotype=NoisyDARTS_A, or a chain's JSON file)
prints params, macs (one image, 224x224 unless --image_size), its layers and how
many layers keep each block ('skip': none); --num_classes defaults to 1000.
"""
import json
import pathlib
import sys

# Lets `python tools/describe.py` work from a checkout without installing tfnas.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from tfnas.runtime import cli  # noqa: E402
from tfnas.runtime.errors import UserInputError  # noqa: E402
from tools import flags_common  # noqa: E402

_GENOTYPE = flags.DEFINE_string("genotype", None, "A zoo name or a genotype JSON file.",
                                required=True)
_NETWORK = flags.DEFINE_enum("network", None, ["cifar", "imagenet"],
                             "cifar (3x3 stem) or imagenet (mobile setting, three stride-2 convs).")
_INIT_CHANNELS = flags.DEFINE_integer("init_channels", None,
                                      "Channels of the first cells (default 36 / 48).",
                                      lower_bound=1)
_LAYERS = flags.DEFINE_integer("layers", None, "Cells (default 20 / 14).", lower_bound=1)
_NUM_CLASSES = flags.DEFINE_integer("num_classes", None, "Classes (default 10 / 1000).",
                                    lower_bound=2)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None,
                                   "Square input size for the MACs (default 32 / 224).",
                                   lower_bound=1)
_AUXILIARY = flags.DEFINE_boolean(
    "auxiliary", None, "Build the auxiliary head (DARTS' --auxiliary); --noauxiliary leaves it "
    "out, as small images need.")


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  from tfnas import spaces  # pylint: disable=g-import-not-at-top
  g = spaces.resolve_genotype(_GENOTYPE.value)
  if spaces.genotype_space(_GENOTYPE.value) == "chain":
    flags_common.refuse_for_chain(_GENOTYPE.value, _NETWORK, _INIT_CHANNELS, _LAYERS, _AUXILIARY)
    spec = spaces.network_spec(g, _NUM_CLASSES.value)
  else:
    spec = spaces.network_spec(g, _NUM_CLASSES.value, kind=_NETWORK.value,
                               init_channels=_INIT_CHANNELS.value, layers=_LAYERS.value,
                               auxiliary=_AUXILIARY.value)
  size = _IMAGE_SIZE.value or spec.default_image_size
  # TensorFlow loads only now (the counts' modules): a bad genotype or flag fails before.
  print(json.dumps({"genotype": _GENOTYPE.value, **spec.counts((size, size))}))


if __name__ == "__main__":
  cli.run(main)
