"""The seam between a search space and what searches it.

The search (its step, its run, its TensorBoard views) and the search tool use a
space only through these members. What a cell, an edge, a node or a layer is
stays inside the space's folder; a new space is a new folder that implements
them, plus its name in spaces.SPACES.

Pure Python (no TensorFlow): the tools check a space's settings before
TensorFlow loads; a space imports its Keras code where it builds a network.
"""
import abc
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class WeightGroup:
  """Architecture weights as TensorBoard shows them: one matrix [rows, ops].

  In the DARTS cell a group is a cell type and a row an edge; in a chain it
  would be the layers.
  """
  name: str              # e.g. "normal"
  title: str             # e.g. "normal cell"
  ops: tuple             # the column names (op names)
  rows: tuple            # per row (tag, label), e.g. ("node3/from1", "3←1")
  rows_name: str         # what the rows are, e.g. "edges"
  row_title: str         # what a row is, for an axis, e.g. "edge (node←input)"
  row_help: str          # the same, said in full for a chart's title
  weights: np.ndarray    # [rows, ops], relaxed (softmax or sigmoid of the alphas)


class SearchSpace(abc.ABC):
  """What a search space provides. Implementations are frozen dataclasses: their
  fields are the space's settings, recorded in params.json."""

  num_classes: int

  @abc.abstractmethod
  def check_image_size(self, height, width):
    """Raises UserInputError when images of this size do not fit the space's network."""

  @abc.abstractmethod
  def build_supernet(self, method, synchronized_bn=False):
    """The supernet, a Keras model called as model(x, training=, noise_seed=) -> logits.

    It has `arch_variables` (the alphas), `weight_variables` (every other trainable
    variable), `arch_weights()` (the relaxed alphas, aligned with arch_variables)
    and a `noise_scale` variable (the skip noise's scale, set per epoch).
    """

  @abc.abstractmethod
  def alphas_json(self, relaxation, alphas):
    """The dict written as alphas.json, from the raw alphas (arrays, aligned with
    the supernet's arch_variables)."""

  @abc.abstractmethod
  def derive(self, arch_weights, rule, threshold):
    """The genotype that a selection rule derives from the relaxed weights."""

  @abc.abstractmethod
  def genotype_json(self, genotype):
    """A genotype as the JSON object written to genotype.json and printed."""

  @abc.abstractmethod
  def save_genotype(self, genotype, path):
    """Writes genotype.json atomically."""

  @abc.abstractmethod
  def weight_groups(self, arch_weights):
    """The relaxed weights as WeightGroups, for TensorBoard."""

  @abc.abstractmethod
  def genotype_scalars(self, genotype):
    """{tag: number} that TensorBoard charts per epoch (e.g. skip_connect counts)."""

  @abc.abstractmethod
  def genotype_pictures(self, genotype):
    """{tag: PNG bytes} of the genotype, drawn for TensorBoard's 350-pixel cards.
    Raises graphviz.ExecutableNotFound when graphviz' `dot` is missing."""

  @abc.abstractmethod
  def derived_network_counts(self, genotype, image_shape):
    """Params and MACs of the network that the genotype is evaluated with ({"params",
    "macs", ...}), or {"error": why} when it builds none; with a "network" entry that
    names that network in a line."""


class NetworkSpec(abc.ABC):
  """A genotype's evaluation network as retraining, export and describe build it.

  Implementations are frozen dataclasses of the genotype, num_classes and the network's
  settings; spaces.network_spec makes one from a genotype and a tool's settings, and
  spaces.network_spec_from_json from params.json's "network" and "genotype".
  """

  genotype: object
  num_classes: int
  auxiliary = False  # whether training returns (logits, aux_logits) and has a loss for both

  @property
  @abc.abstractmethod
  def kind(self):
    """The network's kind in params.json ('cifar', 'imagenet', 'chain')."""

  @property
  @abc.abstractmethod
  def default_image_size(self):
    """The square image size the network is evaluated at when none is given."""

  @abc.abstractmethod
  def build(self):
    """The Keras network, unbuilt: network(x, training=, seed=) -> logits, or (logits,
    aux_logits) in training when `auxiliary`; with `check_image_size(height, width)` and a
    `drop_path_prob` variable (set per epoch)."""

  @abc.abstractmethod
  def settings_json(self):
    """params.json's "network": {"kind": ..., the settings, "num_classes": ...}."""

  @abc.abstractmethod
  def genotype_json(self):
    """The genotype as JSON (params.json's "genotype", genotype.json)."""

  @abc.abstractmethod
  def save_genotype(self, path):
    """Writes genotype.json atomically."""

  @abc.abstractmethod
  def param_counts(self, network):
    """{"params": ...} of the built network, and "params_with_aux" when it has the head."""

  @abc.abstractmethod
  def counts(self, image_shape):
    """What describe prints and export stores: params and MACs for one image of this shape
    (and what else the space counts), from shapes, nothing built."""
