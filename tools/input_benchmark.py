r"""Times the input pipeline alone: the search's training batches, in images per second.

  python tools/input_benchmark.py --dataset=/data/imagenet/train --image_size=224 \
      --batch_size=64 --batches=30

Prints one JSON line; the first batch (building the pipeline, filling the prefetch) is
not timed. See README, How the data is read.
"""
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from tfnas.runtime import cli  # noqa: E402
from tfnas.runtime.errors import UserInputError  # noqa: E402
from tools import flags_common  # noqa: E402

_DATA = flags_common.data("digits")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch.", lower_bound=1)
_BATCHES = flags.DEFINE_integer("batches", 30, "Batches timed after the first one.",
                                lower_bound=1)
_AUGMENT = flags.DEFINE_boolean("augment", None,
                                "The training augmentation; default: the dataset's.")
_RANDOM = flags_common.seed(0)

flags.adopt_module_key_flags(flags_common)  # --help lists them with the rest


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  from tfnas.data import pipeline
  from tfnas.data import sources

  # The search's training half (train[:50%]), its batches as the search reads them.
  data = sources.load_search_data(sources.DataConfig(
      dataset=_DATA.dataset.value, data_dir=_DATA.tfds_data_dir.value, image_size=_DATA.image_size.value,
      download=_DATA.download.value, augment=_AUGMENT.value, seed=_RANDOM.seed.value,
      per_class_splits=_DATA.per_class_splits.value))
  steps = len(data.train) // _BATCH_SIZE.value
  if steps == 0:
    raise UserInputError(f"batch size {_BATCH_SIZE.value} is larger than {data.name} "
                         f"({len(data.train)} images)")
  batches = pipeline.batches(
      data.train, data.mean, data.std, global_batch_size=_BATCH_SIZE.value,
      seed=_RANDOM.seed.value, stream=0, epochs=-(-(_BATCHES.value + 1) // steps),
      steps_per_epoch=steps, augment=data.augment)
  iterator = iter(batches)
  next(iterator)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(iterator)[0].numpy()
  seconds = time.perf_counter() - start
  print(json.dumps({"dataset": data.name, "streamed": isinstance(data.train,
                                                                 sources.StreamedImageSet),
                    "images": len(data.train), "image_shape": list(data.image_shape),
                    "augment": data.augment, "batch_size": _BATCH_SIZE.value,
                    "batches": _BATCHES.value,
                    "images_per_s": round(_BATCHES.value * _BATCH_SIZE.value / seconds, 1)}))


if __name__ == "__main__":
  cli.run(main)
