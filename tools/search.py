r"""Searches a DARTS cell or a chain with DARTS, Fair DARTS or Noisy DARTS.

  python tools/search.py --flagfile=flags/fair_darts_cifar10.flags --model_dir=DIR

Running again with the same --model_dir resumes the search. Flags keep the
names of the original DARTS code where it has them.
"""
import json
import pathlib
import sys
import time

START = time.perf_counter()  # the wall time printed at the end covers the whole run

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from tfnas.runtime import cli  # noqa: E402
from tfnas.runtime.errors import UserInputError  # noqa: E402
from tools import flags_common  # noqa: E402

# Data.
_DATA = flags_common.data("digits")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", "train[:50%]",
                                   "TFDS split string of the half that trains the weights.")
_VAL_SPLIT = flags.DEFINE_string("val_split", "train[50%:]",
                                 "TFDS split string of the half that trains the alphas.")

# Search space: --search_space and each space's own flags.
_SPACE = flags_common.search_space()
_NUM_CLASSES = flags.DEFINE_integer("num_classes", None,
                                    "Classes of the classifier (default: the dataset's).")

# Method and its parts (None keeps the method's own setting).
_METHOD = flags.DEFINE_enum("method", "darts", ["darts", "fair_darts", "noisy_darts"],
                            "Search method: a preset of the parts below.")
_RELAXATION = flags.DEFINE_enum("relaxation", None, ["softmax", "sigmoid"],
                                "Softmax over each edge's ops, or an independent sigmoid per op.")
_ALPHA_INIT_STD = flags.DEFINE_float("alpha_init_std", None,
                                     "Alphas start as this * N(0, 1); 0 starts them at 0.")
_ZERO_ONE_WEIGHT = flags.DEFINE_float("zero_one_weight", None,
                                      "Weight of Fair DARTS' zero-one loss (0: off).")
_ZERO_ONE_FORM = flags.DEFINE_enum("zero_one_form", None, ["l2", "l1"],
                                   "-mean((w - 0.5)^2) (original default) or -mean(|w - 0.5|).")
_SELECTION_RULE = flags.DEFINE_enum("selection_rule", None,
                                    ["darts", "threshold_sparse", "threshold_edge"],
                                    "How the genotype is derived from the weights.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Weight an op needs under the threshold rules.")
_ADD_NOISE = flags.DEFINE_boolean("add_noise", None, "Noise on skip_connect (Noisy DARTS).")
_NOISE_TYPE = flags.DEFINE_enum("noise_type", None, ["gaussian", "uniform"], "Noise distribution.")
_NOISE_MIXTURE = flags.DEFINE_enum("noise_mixture", None, ["additive", "multiplicative"],
                                   "How the noise meets the skip output.")
_NOISE_MEAN = flags.DEFINE_float("noise_mean", None, "Mean of the noise (unbiased: 0).")
_NOISE_FACTOR = flags.DEFINE_float("noise_factor", None,
                                   "lambda: the Gaussian std is lambda * std(x).")
_NOISE_DECAY = flags.DEFINE_boolean("noise_decay", None,
                                    "Cosine decay of the noise to 0 over the search.")
_SKIP_DROP_PROB = flags.DEFINE_float(
    "skip_drop_prob", None,
    "Drop-path probability on skip_connect's (noisy) output in training, per example and edge "
    "(0: off; Noisy DARTS' official code: 0.3).")

# Optimization.
_EPOCHS = flags.DEFINE_integer("epochs", 50, "Search epochs.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch (split over replicas).",
                                   lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.025, "Initial weight learning rate.")
_LEARNING_RATE_MIN = flags.DEFINE_float("learning_rate_min", 0.001, "Final weight learning rate.")
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 3e-4, "Coupled L2 decay of the weights.")
_GRAD_CLIP = flags.DEFINE_float("grad_clip", 5.0, "Global-norm clip of the weight gradient.")
_ARCH_LEARNING_RATE = flags.DEFINE_float("arch_learning_rate", 3e-4, "Adam lr of the alphas.")
_ARCH_BETA1 = flags.DEFINE_float("arch_beta1", 0.5, "Adam beta1 of the alphas.")
_ARCH_BETA2 = flags.DEFINE_float("arch_beta2", 0.999, "Adam beta2 of the alphas.")
_ARCH_WEIGHT_DECAY = flags.DEFINE_float("arch_weight_decay", 1e-3, "Coupled L2 decay of alphas.")
_RANDOM = flags_common.seed(2)

# Runtime.
_MODEL_DIR = flags_common.model_dir()
_DISTRIBUTION = flags_common.distribution()
_STEP = flags_common.search_step()
_PROGRESS = flags_common.progress(50)

flags.adopt_module_key_flags(flags_common)  # --help lists them with the rest

# --help lists the flags in these groups, as the README does.
FLAG_GROUPS = {
    "data": [_DATA.dataset, _TRAIN_SPLIT, _VAL_SPLIT, _DATA.tfds_data_dir, _DATA.download,
             _DATA.image_size, _DATA.per_class_splits],
    "space": [_SPACE.search_space, *_SPACE.settings, _NUM_CLASSES],
    "method": [_METHOD, _RELAXATION, _ALPHA_INIT_STD, _ZERO_ONE_WEIGHT, _ZERO_ONE_FORM,
               _SELECTION_RULE, _THRESHOLD, _ADD_NOISE, _NOISE_TYPE, _NOISE_MIXTURE,
               _NOISE_MEAN, _NOISE_FACTOR, _NOISE_DECAY, _SKIP_DROP_PROB],
    "optimization": [_EPOCHS, _BATCH_SIZE, _LEARNING_RATE, _LEARNING_RATE_MIN, _MOMENTUM,
                     _WEIGHT_DECAY, _GRAD_CLIP, _ARCH_LEARNING_RATE, _ARCH_BETA1, _ARCH_BETA2,
                     _ARCH_WEIGHT_DECAY, _STEP.unrolled, _RANDOM.seed,
                     _RANDOM.deterministic],
    "runtime": [_MODEL_DIR, _DISTRIBUTION.strategy, _DISTRIBUTION.cpu_devices, _DISTRIBUTION.tpu,
                _STEP.synchronized_bn, _PROGRESS.log_every_steps, _PROGRESS.checkpoint_every_steps,
                _PROGRESS.checkpoint_every_secs, _DISTRIBUTION.graph_optimizer, _STEP.precision,
                _STEP.jit_compile],
}

def main(argv):
  if len(argv) > 1:
    raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  from tfnas import spaces  # no TensorFlow: a wrong space setting (an unknown op) fails at once
  settings = {f.name: f.value for f in _SPACE.settings}

  def make_space(num_classes):
    return spaces.make(_SPACE.search_space.value, _METHOD.value, num_classes, settings)

  make_space(num_classes=2)
  # Before anything else touches TensorFlow's devices.
  from tfnas.runtime import distribute
  distribute.configure_cpu_devices(_DISTRIBUTION.cpu_devices.value)
  distribute.configure_graph_optimizer(_DISTRIBUTION.graph_optimizer.value)
  # Before any TensorFlow op: a multi-worker strategy sets up the collectives.
  strategy = distribute.get_strategy(_DISTRIBUTION.strategy.value, _DISTRIBUTION.tpu.value)

  from tfnas.data import sources
  from tfnas.methods import presets
  from tfnas.runtime import progress
  from tfnas.search import run as search_run
  from tfnas.search import searcher
  from tfnas.search import summaries

  method = presets.get_method(
      _METHOD.value, relaxation=_RELAXATION.value, alpha_init_std=_ALPHA_INIT_STD.value,
      zero_one_weight=_ZERO_ONE_WEIGHT.value, zero_one_form=_ZERO_ONE_FORM.value,
      selection_rule=_SELECTION_RULE.value, threshold=_THRESHOLD.value,
      skip_drop_prob=_SKIP_DROP_PROB.value, add_noise=_ADD_NOISE.value,
      noise_parts=dict(type=_NOISE_TYPE.value, mixture=_NOISE_MIXTURE.value,
                       mean=_NOISE_MEAN.value, factor=_NOISE_FACTOR.value,
                       cosine_decay=_NOISE_DECAY.value))

  data_config = sources.DataConfig(
      dataset=_DATA.dataset.value, train_split=_TRAIN_SPLIT.value, val_split=_VAL_SPLIT.value,
      data_dir=_DATA.tfds_data_dir.value, image_size=_DATA.image_size.value,
      download=_DATA.download.value, seed=_RANDOM.seed.value,
      per_class_splits=_DATA.per_class_splits.value)
  data = sources.load_search_data(data_config)

  space = make_space(data.num_classes if _NUM_CLASSES.value is None else _NUM_CLASSES.value)
  config = searcher.SearchConfig(
      epochs=_EPOCHS.value, batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
      learning_rate_min=_LEARNING_RATE_MIN.value, momentum=_MOMENTUM.value,
      weight_decay=_WEIGHT_DECAY.value, grad_clip=_GRAD_CLIP.value,
      arch_learning_rate=_ARCH_LEARNING_RATE.value, arch_beta1=_ARCH_BETA1.value,
      arch_beta2=_ARCH_BETA2.value, arch_weight_decay=_ARCH_WEIGHT_DECAY.value,
      seed=_RANDOM.seed.value, deterministic=_RANDOM.deterministic.value,
      synchronized_bn=_STEP.synchronized_bn.value, log_every_steps=_PROGRESS.log_every_steps.value,
      checkpoint_every_steps=_PROGRESS.checkpoint_every_steps.value,
      checkpoint_every_secs=_PROGRESS.checkpoint_every_secs.value,
      precision=_STEP.precision.value, jit_compile=_STEP.jit_compile.value,
      unrolled=_STEP.unrolled.value)

  result = search_run.search(space, method, config, data_config, _MODEL_DIR.value,
                             strategy=strategy, data=data, stop_request=cli.STOP)
  logging.info("Search finished.")
  print(json.dumps(space.genotype_json(result.genotype)))
  print(f"supernet accuracy in the last epoch: train {result.train_accuracy:.4f}, "
        f"validation {result.val_accuracy:.4f}")
  if result.undecided_fraction is not None:
    low, high = summaries.UNDECIDED
    print(f"undecided weights: {result.undecided_fraction:.2f} (the share of sigmoid weights "
          f"between {low} and {high})")
  counts = space.derived_network_counts(result.genotype, data.image_shape)
  h, w = data.image_shape[:2]
  if "error" in counts:
    print(f"derived network: none ({counts['error']})")
  else:
    aux = counts.get("params_with_aux")
    aux = "" if aux is None else f" ({aux:,} with the auxiliary head)"
    print(f"derived network ({counts['network']}, {h}x{w} images): {counts['params']:,} params"
          f"{aux}, {counts['macs']:,} MACs")
  print(f"wall time: {progress.format_duration(time.perf_counter() - START)}")
  for name, path in result.files.items():
    print(f"{name}: {path}")


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  cli.run(main, FLAG_GROUPS)
