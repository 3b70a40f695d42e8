"""The candidate operations by name: the one table of the ops tfnas can build.

The search network, the evaluation networks, genotype files, alphas files and
the tools all check op names against it. Pure Python (no TensorFlow), so
genotypes can be checked before TensorFlow loads; tfnas.layers.ops builds the layers.
"""

# The pooling ops (their kind) and the convolution ops (separable or dilated,
# kernel size, padding, dilation), as in the original operations.py.
POOL_OPS = {"max_pool_3x3": "max", "avg_pool_3x3": "avg"}
CONV_OPS = {"sep_conv_3x3": ("sep", 3, 1, 1), "sep_conv_5x5": ("sep", 5, 2, 1),
            "sep_conv_7x7": ("sep", 7, 3, 1), "dil_conv_3x3": ("dil", 3, 2, 2),
            "dil_conv_5x5": ("dil", 5, 4, 2)}
# Every op name, in the original's order.
OP_NAMES = ("none", *POOL_OPS, "skip_connect", *CONV_OPS)
