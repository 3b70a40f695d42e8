r"""Trains a cell's or a chain's network from scratch.

  python tools/train.py --flagfile=flags/train_cifar10.flags --genotype=DARTS_V2 --model_dir=DIR

--genotype takes a zoo name (DARTS_V2, FairDARTS_a, ..., FairNAS_A, NoisyDARTS_A, ...) or a
genotype JSON file (e.g. a search's genotype.json). Running again with the same --model_dir
resumes.
"""
import pathlib
import sys
import time

START = time.perf_counter()  # the wall time printed at the end covers the whole run

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from tfnas.runtime import cli  # noqa: E402
from tools import flags_common  # noqa: E402
from tfnas.runtime.errors import UserInputError  # noqa: E402

_GENOTYPE = flags.DEFINE_string("genotype", None, "Zoo name or genotype JSON file.")
_MODEL_DIR = flags_common.model_dir()
# Data.
_DATA = flags_common.data("cifar10")
_TRAIN_SPLIT = flags.DEFINE_string(
    "train_split", None, "Split to train on (default: train; for digits and folders, which have "
    "only a train split, train[:80%] of it).")
_TEST_SPLIT = flags.DEFINE_string(
    "test_split", None, "Split to evaluate on every epoch (default: test; for digits and "
    "folders, the held-out train[80%:]).")
# Network. A cell's settings (None: the default); a chain's genotype holds its own.
_NETWORK = flags.DEFINE_enum(
    "network", None, ["cifar", "imagenet"], "Cells: DARTS' CIFAR network (default; 3x3 stem) "
    "or its ImageNet mobile network (three stride-2 convs; 14 cells of 48 channels by "
    "default).")
_INIT_CHANNELS = flags.DEFINE_integer("init_channels", None, "Cells: channels of the first "
                                      "cells (default 36; imagenet 48).", lower_bound=1)
_LAYERS = flags.DEFINE_integer("layers", None, "Cells: cells (default 20; imagenet 14).",
                               lower_bound=1)
_AUXILIARY = flags.DEFINE_boolean(
    "auxiliary", None, "Cells: train with the auxiliary head, as DARTS' --auxiliary (default); "
    "--noauxiliary leaves it out (images under 32x32 have no room for it).")
_AUXILIARY_WEIGHT = flags.DEFINE_float("auxiliary_weight", 0.4,
                                       "Weight of the auxiliary head's loss (0 also leaves the "
                                       "head out).")
_DROP_PATH_PROB = flags.DEFINE_float(
    "drop_path_prob", 0.2, "Drop path probability at the last epoch (linear from 0); in a "
    "chain, the drop of a layer's blocks where the layer adds its input (drop connect).")
_DROP_PATH = flags.DEFINE_enum(
    "drop_path", None, ["auto", "op", "node"],
    "Cells: drop path per op except identity (DARTS cells) or per node (Fair DARTS cells); "
    "auto (default): node for FairDARTS_* zoo cells and for cells whose nodes do not all have "
    "two inputs.")
# Optimization.
_EPOCHS = flags.DEFINE_integer("epochs", 600, "Epochs.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 96, "Global batch.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.025, "Initial learning rate.")
_LEARNING_RATE_MIN = flags.DEFINE_float("learning_rate_min", 0.0, "Final learning rate.")
_LR_DECAY = flags.DEFINE_float(
    "lr_decay", None, "Per-epoch decay factor of the learning rate instead of the cosine "
    "(DARTS' ImageNet protocol: 0.97); unset: cosine to --learning_rate_min.",
    lower_bound=0.0, upper_bound=1.0)
_LABEL_SMOOTHING = flags.DEFINE_float(
    "label_smoothing", None, "Label smoothing of the training loss (DARTS' ImageNet protocol: "
    "0.1); unset: none.", lower_bound=0.0, upper_bound=1.0)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 3e-4, "Coupled L2 weight decay.")
_GRAD_CLIP = flags.DEFINE_float("grad_clip", 5.0, "Global-norm gradient clip.")
_CUTOUT = flags.DEFINE_integer("cutout", 16, "Cutout square side (0: off).")
_RANDOM = flags_common.seed(0)
_PROGRESS = flags_common.progress(100, "Steps between log lines.")
# Runtime.
_DISTRIBUTION = flags_common.distribution()

flags.adopt_module_key_flags(flags_common)  # --help lists them with the rest

# --help lists the flags in these groups.
FLAG_GROUPS = {
    "run": [_GENOTYPE, _MODEL_DIR],
    "data": [_DATA.dataset, _TRAIN_SPLIT, _TEST_SPLIT, _DATA.tfds_data_dir, _DATA.download,
             _DATA.image_size, _DATA.per_class_splits],
    "network": [_NETWORK, _INIT_CHANNELS, _LAYERS, _AUXILIARY, _AUXILIARY_WEIGHT,
                _DROP_PATH_PROB, _DROP_PATH],
    "optimization": [_EPOCHS, _BATCH_SIZE, _LEARNING_RATE, _LEARNING_RATE_MIN, _LR_DECAY,
                     _LABEL_SMOOTHING, _MOMENTUM, _WEIGHT_DECAY, _GRAD_CLIP, _CUTOUT,
                     _RANDOM.seed, _RANDOM.deterministic],
    "runtime": [_PROGRESS.log_every_steps, _PROGRESS.checkpoint_every_steps,
                _PROGRESS.checkpoint_every_secs, _DISTRIBUTION.strategy,
                _DISTRIBUTION.cpu_devices, _DISTRIBUTION.tpu, _DISTRIBUTION.graph_optimizer],
}


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  from tfnas.runtime import distribute
  distribute.configure_cpu_devices(_DISTRIBUTION.cpu_devices.value)
  distribute.configure_graph_optimizer(_DISTRIBUTION.graph_optimizer.value)
  # Before any TensorFlow op: a multi-worker strategy sets up the collectives.
  strategy = distribute.get_strategy(_DISTRIBUTION.strategy.value, _DISTRIBUTION.tpu.value)
  from tfnas import spaces
  from tfnas.data import sources
  from tfnas.runtime import progress
  from tfnas.train import trainer

  genotype = spaces.resolve_genotype(_GENOTYPE.value)
  cell_settings = {"kind": _NETWORK.value, "init_channels": _INIT_CHANNELS.value,
                   "layers": _LAYERS.value, "auxiliary": _AUXILIARY.value,
                   "drop_path": _DROP_PATH.value}
  if spaces.genotype_space(_GENOTYPE.value) == "chain":
    flags_common.refuse_for_chain(_GENOTYPE.value, _NETWORK, _INIT_CHANNELS, _LAYERS,
                                  _AUXILIARY, _DROP_PATH)
  else:
    auxiliary = _AUXILIARY.value is not False and _AUXILIARY_WEIGHT.value > 0
    cell_settings["auxiliary"] = auxiliary
    if _DROP_PATH.value in (None, "auto"):
      from tfnas.spaces.darts_cell import networks
      cell_settings["drop_path"] = networks.auto_drop_path(_GENOTYPE.value, genotype)
  config = trainer.TrainConfig(
      auxiliary_weight=_AUXILIARY_WEIGHT.value if cell_settings["auxiliary"] else 0.0,
      drop_path_prob=_DROP_PATH_PROB.value, epochs=_EPOCHS.value, batch_size=_BATCH_SIZE.value,
      learning_rate=_LEARNING_RATE.value, learning_rate_min=_LEARNING_RATE_MIN.value,
      lr_decay=_LR_DECAY.value, label_smoothing=_LABEL_SMOOTHING.value, momentum=_MOMENTUM.value, weight_decay=_WEIGHT_DECAY.value, grad_clip=_GRAD_CLIP.value,
      cutout=_CUTOUT.value, seed=_RANDOM.seed.value, deterministic=_RANDOM.deterministic.value,
      log_every_steps=_PROGRESS.log_every_steps.value,
      checkpoint_every_steps=_PROGRESS.checkpoint_every_steps.value,
      checkpoint_every_secs=_PROGRESS.checkpoint_every_secs.value)
  data_config = sources.DataConfig(
      dataset=_DATA.dataset.value, train_split=_TRAIN_SPLIT.value, val_split=_TEST_SPLIT.value,
      data_dir=_DATA.tfds_data_dir.value, image_size=_DATA.image_size.value,
      download=_DATA.download.value, seed=_RANDOM.seed.value,
      per_class_splits=_DATA.per_class_splits.value)
  data = sources.load_search_data(data_config)
  spec = spaces.network_spec(genotype, data.num_classes, **cell_settings)
  result = trainer.train(spec, config, data_config, _MODEL_DIR.value, strategy=strategy,
                         data=data, stop_request=cli.STOP)
  model_dir = pathlib.Path(_MODEL_DIR.value)
  print(f"final test accuracy {result['final_test_accuracy']:.4f} "
        f"(best {result['best_test_accuracy']:.4f} at epoch {result['best_epoch']}); "
        f"{result['params']} params")
  print(f"wall time: {progress.format_duration(time.perf_counter() - START)}")
  for name in ("eval.json", "params.json", "checkpoints"):
    print(f"{name}: {model_dir / name}")
  print(f"tensorboard: {model_dir}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["genotype", "model_dir"])
  cli.run(main, FLAG_GROUPS)
