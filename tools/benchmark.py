r"""Times the library's search step; prints one JSON line.

  python tools/benchmark.py --method=fair_darts --init_channels=16 --layers=8 \
      --batch_size=32 --image_size=32 --timed_steps=5
  python tools/benchmark.py --search_space=chain --layout=proxy --image_size=64

The space's flags are the search's (tools/search.py). Compare with the PyTorch peer in the
same run (see README, Performance).
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
                            "Search method (in a cell, its op set: 8 ops for darts, 7 otherwise).")
_SPACE = flags_common.search_space()
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Classes of the random labels.",
                                    lower_bound=2)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch.", lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Image height and width.", lower_bound=1)
_TIMED_STEPS = flags.DEFINE_integer("timed_steps", 5, "Search steps timed after the first one.",
                                    lower_bound=1)
_DISTRIBUTION = flags_common.distribution(["auto", "mirrored", "one_device", "cpu",
                                           "multi_worker"])
_STEP = flags_common.search_step()

flags.adopt_module_key_flags(flags_common)  # --help lists them with the rest


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  from tfnas.runtime import distribute
  distribute.configure_cpu_devices(_DISTRIBUTION.cpu_devices.value)
  distribute.configure_graph_optimizer(_DISTRIBUTION.graph_optimizer.value)
  # Before any TensorFlow op: a multi-worker strategy sets up the collectives.
  strategy = distribute.get_strategy(_DISTRIBUTION.strategy.value)
  from tfnas import spaces
  from tfnas.methods import presets
  from tfnas.search import benchmark
  from tfnas.search import searcher

  settings = {f.name: f.value for f in _SPACE.settings}
  space = spaces.make(_SPACE.search_space.value, _METHOD.value, _NUM_CLASSES.value, settings)
  space.check_image_size(_IMAGE_SIZE.value, _IMAGE_SIZE.value)
  precision, jit_compile = _STEP.precision.value, _STEP.jit_compile.value
  config = searcher.SearchConfig(epochs=1, batch_size=_BATCH_SIZE.value, precision=precision,
                                 jit_compile=jit_compile, unrolled=_STEP.unrolled.value,
                                 synchronized_bn=_STEP.synchronized_bn.value)
  result = benchmark.benchmark_search_step(space, presets.get_method(_METHOD.value), config,
                                           _IMAGE_SIZE.value, _TIMED_STEPS.value, strategy)
  print(json.dumps({"impl": "tfnas", "method": _METHOD.value,
                    "search_space": _SPACE.search_space.value,
                    **{k: v for k, v in settings.items() if v is not None},
                    "batch_size": _BATCH_SIZE.value, "image_size": _IMAGE_SIZE.value,
                    "precision": precision, "jit_compile": jit_compile,
                    "unrolled": _STEP.unrolled.value,
                    "synchronized_bn": _STEP.synchronized_bn.value,
                    **result}))


if __name__ == "__main__":
  cli.run(main)
