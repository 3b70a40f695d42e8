"""The flags that several tools take, defined here once.

Each tool calls the functions for the flags it takes (with its own defaults
where they differ), then `flags.adopt_module_key_flags(flags_common)` so
that its --help lists them with its own. The library (tfnas/) stays free of flags.
"""
import types

from absl import flags

from tfnas.runtime.errors import UserInputError

STRATEGIES = ("auto", "mirrored", "one_device", "cpu", "multi_worker", "tpu")


def model_dir():
  """--model_dir of the tools that run (search, train)."""
  return flags.DEFINE_string("model_dir", None, "Where the run's files go; resumes from it.")


def distribution(strategies=STRATEGIES):
  """--distribution_strategy, --cpu_devices, --tpu (with 'tpu' among strategies) and
  --graph_optimizer."""
  out = types.SimpleNamespace(
      strategy=flags.DEFINE_enum(
          "distribution_strategy", "auto", list(strategies),
          "auto: mirrored over all GPUs, else over the (logical) CPU devices."),
      cpu_devices=flags.DEFINE_integer(
          "cpu_devices", None, "Split the CPU into N logical devices (N replicas).",
          lower_bound=1),
      tpu=None)
  if "tpu" in strategies:
    out.tpu = flags.DEFINE_string("tpu", None, "TPU address for --distribution_strategy=tpu.")
  out.graph_optimizer = flags.DEFINE_enum(
      "graph_optimizer", "auto", ["auto", "on", "off"],
      "TensorFlow's graph optimizer (Grappler); auto: off without GPUs (faster first step).")
  return out


def search_step():
  """--unrolled, --precision, --jit_compile and --synchronized_bn: how the step is computed."""
  return types.SimpleNamespace(
      unrolled=flags.DEFINE_boolean(
          "unrolled", False, "DARTS' second-order architecture gradient (the original's "
          "flag): one virtual weight step and a finite-difference Hessian-vector product."),
      precision=flags.DEFINE_enum(
          "precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
          "mixed_*: that compute dtype, float32 variables and loss (for GPUs and TPUs; no "
          "faster on CPUs); float16 with dynamic loss scaling."),
      jit_compile=flags.DEFINE_boolean(
          "jit_compile", False, "Compile the step with XLA (one replica only; slower on CPUs)."),
      synchronized_bn=flags.DEFINE_boolean(
          "synchronized_bn", None, "Batch statistics over all replicas (default: on with >1)."))


def seed(default):
  """--seed and --deterministic."""
  return types.SimpleNamespace(
      seed=flags.DEFINE_integer("seed", default, "Random seed."),
      deterministic=flags.DEFINE_boolean(
          "deterministic", False,
          "TensorFlow op determinism: the same seed gives the same result on the same machine "
          "(slower on GPUs; recorded in params.json)."))


def data(default_dataset):
  """--dataset, --tfds_data_dir, --download, --image_size and --per_class_splits (the
  splits are each tool's)."""
  return types.SimpleNamespace(
      dataset=flags.DEFINE_string(
          "dataset", default_dataset,
          "A TFDS name (cifar10, cifar100, imagenet2012, imagenette/320px-v2, ...), 'digits' "
          "(scikit-learn's bundled 8x8 digits, offline) or a folder of images with one "
          "subfolder per class."),
      tfds_data_dir=flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir."),
      download=flags.DEFINE_boolean(
          "download", True, "Let TFDS download a dataset that is not in tfds_data_dir."),
      image_size=flags.DEFINE_integer(
          "image_size", None,
          "Image size: folders are resized to it (default 32) and streamed above 64; TFDS "
          "sets of varying image sizes (imagenet2012, imagenette) are cropped to it (default "
          "224).", lower_bound=1),
      per_class_splits=flags.DEFINE_boolean(
          "per_class_splits", False,
          "Slice the split strings within every class: train[:10%] and train[10%:12.5%] are "
          "10% and 2.5% of each class (PC-DARTS' ImageNet halves)."))


def progress(log_every_steps, log_help="Steps between log lines and summaries."):
  """--log_every_steps and the checkpoint cadence (--checkpoint_every_steps, _secs)."""
  return types.SimpleNamespace(
      log_every_steps=flags.DEFINE_integer("log_every_steps", log_every_steps, log_help,
                                           lower_bound=1),
      checkpoint_every_steps=flags.DEFINE_integer(
          "checkpoint_every_steps", 0, "Also write a checkpoint every N steps (0: off).",
          lower_bound=0),
      checkpoint_every_secs=flags.DEFINE_float(
          "checkpoint_every_secs", 600.0, "Also write a checkpoint every T seconds (0: off).",
          lower_bound=0))


def search_space():
  """--search_space and each space's flags (None keeps the space's default; spaces.make refuses
  a flag of the other space). Returns .search_space and .settings, the flags whose
  {name: value} spaces.make takes."""
  search_space = flags.DEFINE_enum(
      "search_space", "darts_cell", ["darts_cell", "chain"],
      "The search space (tfnas.spaces.SPACES): darts_cell, the DARTS cell on CIFAR-sized "
      "images; chain, the MobileNetV2-like chain of inverted-residual layers (ImageNet).")
  cell = [
      flags.DEFINE_list(
          "primitives", None,
          "darts_cell: candidate ops, in order. Default: the 8 DARTS ops for darts, the same "
          "without 'none' for fair_darts and noisy_darts (as their original code)."),
      flags.DEFINE_integer("steps", None, "darts_cell: intermediate nodes per cell (the "
                           "original DARTS code calls them steps; default 4).", lower_bound=1),
      flags.DEFINE_integer("layers", None, "darts_cell: cells in the search network (default "
                           "8).", lower_bound=1),
      flags.DEFINE_integer("init_channels", None, "darts_cell: channels of the first cells "
                           "(default 16).", lower_bound=1),
      flags.DEFINE_integer("stem_multiplier", None, "darts_cell: stem channels / init_channels "
                           "(default 3).", lower_bound=1),
  ]
  chain = [
      flags.DEFINE_list(
          "layout", None, "chain: the searchable layers, a name (fairnas: 19 layers, the "
          "default; proxylessnas: 21; proxy: 11) or channels:stride per layer, e.g. "
          "32:2,32:1,40:2."),
      flags.DEFINE_list("kernels", None, "chain: the blocks' kernel sizes (default 3,5,7)."),
      flags.DEFINE_list("expansions", None, "chain: the blocks' expansion ratios (default 3,6)."),
      flags.DEFINE_boolean("skip", None, "chain: the identity as a candidate on the layers "
                           "whose shapes agree (default on)."),
      flags.DEFINE_enum("activation", None, ["relu6", "relu", "swish"],
                        "chain: the blocks' activation (default relu6)."),
      flags.DEFINE_enum("outer_activation", None, ["relu6", "relu", "swish"],
                        "chain: the stem's, separable block's and head's activation (default: "
                        "--activation)."),
      flags.DEFINE_float("se_ratio", None, "chain: squeeze-excitation in every block, reduced "
                         "channels = this x the block's input (default 0: none)."),
      flags.DEFINE_float("width_multiplier", None, "chain: on every width, rounded to "
                         "multiples of 8 (default 1)."),
      flags.DEFINE_integer("stem_channels", None, "chain: the stem's channels (default 32).",
                           lower_bound=1),
      flags.DEFINE_integer("first_channels", None, "chain: the separable block's channels "
                           "(default 16).", lower_bound=1),
      flags.DEFINE_integer("head_channels", None, "chain: the head's channels (default 1280).",
                           lower_bound=1),
  ]
  return types.SimpleNamespace(search_space=search_space, settings=cell + chain)


def refuse_for_chain(genotype, *cell_flags):
  """A chain's network takes no DARTS cell setting: one error naming the ones given."""
  given = [f"--{flag.name}" for flag in cell_flags if flags.FLAGS[flag.name].present]
  if given:
    raise UserInputError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to "
                         f"DARTS cells, not to the chain {genotype}")
