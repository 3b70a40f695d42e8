r"""Times the library's search step; prints one JSON line.

  python tools/benchmark.py --method=fair_darts --init_channels=16 --layers=8 \
      --batch_size=32 --image_size=32 --timed_steps=5

Compare with the PyTorch peer in the same run (see README, Performance).
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from tfnas.runtime import cli  # noqa: E402
from tools import flags_common  # noqa: E402
from tfnas.runtime.errors import UserInputError  # noqa: E402

_METHOD = flags.DEFINE_enum("method", "fair_darts", ["darts", "fair_darts", "noisy_darts"],
                            "Search method (its op set: 8 ops for darts, 7 otherwise).")
_INIT_CHANNELS = flags.DEFINE_integer("init_channels", 16, "Channels.", lower_bound=1)
_LAYERS = flags.DEFINE_integer("layers", 8, "Cells.", lower_bound=1)
_STEPS = flags.DEFINE_integer(
    "steps", 4, "Intermediate nodes per cell (the original DARTS code calls them steps).",
    lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch.", lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Image height and width.", lower_bound=1)
_TIMED_STEPS = flags.DEFINE_integer("timed_steps", 5, "Search steps timed after the first one.",
                                    lower_bound=1)
_DISTRIBUTION = flags_common.distribution(["auto", "mirrored", "one_device", "cpu"])
_STEP = flags_common.search_step()

flags.adopt_module_key_flags(flags_common)  # --help lists them with the rest


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  from tfnas.runtime import distribute
  distribute.configure_cpu_devices(_DISTRIBUTION.cpu_devices.value)
  distribute.configure_graph_optimizer(_DISTRIBUTION.graph_optimizer.value)
  from tfnas import spaces
  from tfnas.methods import presets
  from tfnas.search import benchmark
  from tfnas.search import searcher

  space = spaces.make("darts_cell", _METHOD.value, 10, {
      "steps": _STEPS.value, "layers": _LAYERS.value, "init_channels": _INIT_CHANNELS.value})
  space.check_image_size(_IMAGE_SIZE.value, _IMAGE_SIZE.value)
  precision, jit_compile = _STEP.precision.value, _STEP.jit_compile.value
  config = searcher.SearchConfig(epochs=1, batch_size=_BATCH_SIZE.value, precision=precision,
                                 jit_compile=jit_compile)
  strategy = distribute.get_strategy(_DISTRIBUTION.strategy.value)
  result = benchmark.benchmark_search_step(space, presets.get_method(_METHOD.value), config,
                                           _IMAGE_SIZE.value, _TIMED_STEPS.value, strategy)
  print(json.dumps({"impl": "tfnas", "method": _METHOD.value,
                    "init_channels": _INIT_CHANNELS.value, "layers": _LAYERS.value,
                    "batch_size": _BATCH_SIZE.value, "image_size": _IMAGE_SIZE.value,
                    "precision": precision, "jit_compile": jit_compile,
                    **result}))


if __name__ == "__main__":
  cli.run(main)
