"""Flags of the search step that tools/search.py and tools/benchmark.py both take.

Defined here once so that the two tools offer the same choices and help; the
library (tfnas/) stays free of flags.
"""
from absl import flags

PRECISION = flags.DEFINE_enum(
    "precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
    "mixed_*: that compute dtype, float32 variables and loss (for GPUs and TPUs; no faster on "
    "CPUs); float16 with dynamic loss scaling.")
JIT_COMPILE = flags.DEFINE_boolean(
    "jit_compile", False, "Compile the step with XLA (one replica only; slower on CPUs).")
