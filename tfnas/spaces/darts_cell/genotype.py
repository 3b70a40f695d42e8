"""Cell genotypes: edge order, JSON form, and derivation from architecture weights.

A genotype lists the chosen operations of a normal and a reduction cell as
(op, to_node, from_node) entries. Nodes are numbered as in the original DARTS
code: 0 and 1 are the cell inputs, 2, 3, ... the intermediate nodes.

Pure numpy and json (no TensorFlow), so tools can use it cheaply.
"""
import dataclasses
import numbers

import numpy as np

from tfnas.layers.op_table import OP_NAMES
from tfnas.methods.presets import RELAXATIONS
from tfnas.methods.presets import SELECTION_RULES
from tfnas.runtime import files
from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import is_int

# The DARTS search space's ops (any of OP_NAMES may be searched). Column order
# of alpha; it also decides ties, so it follows the original.
PRIMITIVES = (
    'none',
    'max_pool_3x3',
    'avg_pool_3x3',
    'skip_connect',
    'sep_conv_3x3',
    'sep_conv_5x5',
    'dil_conv_3x3',
    'dil_conv_5x5',
)
# Fair DARTS and Noisy DARTS drop 'none'.
FAIR_PRIMITIVES = PRIMITIVES[1:]
# The ops each search method searches over unless told otherwise (as their original code).
_METHOD_PRIMITIVES = {'darts': PRIMITIVES, 'fair_darts': FAIR_PRIMITIVES,
                      'noisy_darts': FAIR_PRIMITIVES}


_CELLS = ('normal', 'reduce')
# Intermediate nodes of a genotype's cell unless it says otherwise: the DARTS
# cell, which the 3-tuple genotypes of Fair DARTS describe.
DEFAULT_STEPS = 4


def edges(steps):
  """Returns the (to_node, from_node) pairs of a cell, in alpha row order.

  Node 2 takes inputs 0 and 1, node 3 takes 0, 1 and 2, and so on: 14 edges
  for steps=4.
  """
  _check_steps(steps)
  return [(2 + i, j) for i in range(steps) for j in range(2 + i)]


@dataclasses.dataclass(frozen=True)
class Genotype:
  """The chosen ops of both cell types.

  normal/reduce: tuples of (op, to_node, from_node); *_concat: tuples of the
  intermediate nodes whose outputs the cell concatenates.
  """
  normal: tuple
  normal_concat: tuple
  reduce: tuple
  reduce_concat: tuple

  def __post_init__(self):
    # Lists in, tuples stored: keeps instances hashable and comparable.
    for cell in _CELLS:
      entries = tuple(
          (str(op), int(to), int(frm))
          for op, to, frm in getattr(self, cell))
      object.__setattr__(self, cell, entries)
      concat = tuple(int(n) for n in getattr(self, cell + '_concat'))
      object.__setattr__(self, cell + '_concat', concat)


def to_json(g):
  """Returns the JSON-ready dict form of a Genotype.

  'steps' is written only for a cell larger than DEFAULT_STEPS nodes.
  """
  out = {}
  for cell in _CELLS:
    out[cell] = [[op, to, frm] for op, to, frm in getattr(g, cell)]
    out[cell + '_concat'] = list(getattr(g, cell + '_concat'))
  last = max((to for cell in _CELLS for _, to, _ in getattr(g, cell)), default=0)
  if last - 1 > DEFAULT_STEPS:
    out['steps'] = last - 1
  return out


def from_json(obj, primitives=OP_NAMES):
  """Builds a validated Genotype from its JSON form.

  Accepts the tfnas form ([op, to_node, from_node] entries) and the original
  DARTS form ([op, from_node] pairs, two per intermediate node in node order).
  Missing concat lists default to range(2, 2 + steps) for the DARTS form and
  to the nodes that have entries for the 3-tuple form. Nodes must lie in the
  cell: 'steps' intermediate nodes, by default DEFAULT_STEPS for the 3-tuple
  form and the number of entry pairs for the DARTS form.
  """
  if not isinstance(obj, dict):
    raise UserInputError(
        f'genotype must be a JSON object, got {type(obj).__name__}')
  steps = obj.get('steps')
  if steps is not None and (not is_int(steps) or steps < 1):
    raise UserInputError(
        f"genotype 'steps' must be a positive integer, got {steps!r}")
  cells = {}
  for cell in _CELLS:
    if cell not in obj:
      raise UserInputError(f"genotype is missing key '{cell}'")
    entries, max_node = _parse_entries(cell, obj[cell], primitives)
    _check_nodes_in_cell(cell, entries, steps, max_node)
    key = cell + '_concat'
    if obj.get(key) is None:
      if max_node is None:  # 3-tuple form: the nodes that exist.
        concat = tuple(sorted({to for _, to, _ in entries}))
      else:
        concat = tuple(range(2, max_node + 1))
    else:
      concat = _parse_concat(key, obj[key], entries)
    cells[cell] = entries
    cells[key] = concat
  return Genotype(**cells)


def _parse_entries(cell, value, primitives):
  """Returns (entries, max_node); max_node is set only for the DARTS form."""
  if not isinstance(value, (list, tuple)):
    raise UserInputError(
        f"genotype '{cell}' must be a list of entries, got "
        f'{type(value).__name__}')
  lengths = set()
  for k, item in enumerate(value):
    if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
      raise UserInputError(
          f"genotype '{cell}' entry {k} must be [op, to_node, from_node] or "
          f'[op, from_node], got {item!r}')
    lengths.add(len(item))
  if len(lengths) > 1:
    raise UserInputError(
        f"genotype '{cell}' mixes [op, from_node] and [op, to_node, "
        'from_node] entries')
  darts_form = lengths == {2}
  if darts_form and len(value) % 2:
    raise UserInputError(
        f"genotype '{cell}' in DARTS [op, from_node] form needs two entries "
        f'per node, got {len(value)} entries')
  entries = []
  for k, item in enumerate(value):
    if darts_form:
      op, frm = item
      to = 2 + k // 2
    else:
      op, to, frm = item
    where = f"genotype '{cell}' entry {k}"
    if not isinstance(op, str):
      raise UserInputError(f'{where}: op must be a string, got {op!r}')
    if op not in primitives:
      raise UserInputError(
          f"{where}: unknown op '{op}'; allowed: {', '.join(primitives)}")
    if not is_int(to) or not is_int(frm):
      raise UserInputError(f'{where}: nodes must be integers, got {item!r}')
    if to < 2:
      raise UserInputError(
          f'{where}: to_node must be >= 2 (0 and 1 are the inputs), got {to}')
    if not 0 <= frm < to:
      raise UserInputError(
          f'{where}: from_node must be in [0, {to}) for to_node {to}, '
          f'got {frm}')
    entries.append((op, int(to), int(frm)))
  max_node = 1 + len(value) // 2 if darts_form else None
  return tuple(entries), max_node


def _check_nodes_in_cell(cell, entries, steps, max_node):
  """Refuses nodes beyond the cell's last (max_node: the DARTS form's)."""
  if steps is None:
    steps = DEFAULT_STEPS if max_node is None else max_node - 1
  for k, (_, to, _) in enumerate(entries):
    if to >= 2 + steps:
      raise UserInputError(
          f"genotype '{cell}' entry {k}: node {to} is not in a cell of {steps} "
          f'intermediate nodes (2..{1 + steps}); a larger cell needs "steps" '
          'in the genotype')


def _parse_concat(key, value, entries):
  if not isinstance(value, (list, tuple)):
    raise UserInputError(
        f"genotype '{key}' must be a list of node numbers, got "
        f'{type(value).__name__}')
  existing = {to for _, to, _ in entries}
  for n in value:
    if not is_int(n):
      raise UserInputError(f"genotype '{key}': {n!r} is not a node number")
    if n not in existing:
      raise UserInputError(
          f"genotype '{key}': node {n} is not an intermediate node with "
          f'inputs (nodes with inputs: {sorted(existing)})')
  if len(set(value)) != len(value):
    raise UserInputError(f"genotype '{key}' repeats a node: {list(value)}")
  return tuple(int(n) for n in value)


def load(path, primitives=OP_NAMES):
  """Reads a genotype JSON file (either form) into a Genotype."""
  obj = files.read_json(path, 'genotype file')
  try:
    return from_json(obj, primitives)
  except UserInputError as e:
    raise UserInputError(f'{path}: {e}') from None


def save(g, path):
  """Writes a genotype as indented JSON, atomically (files.write_json)."""
  files.write_json(to_json(g), path, indent=2)


def relax(alphas, relaxation):
  """Turns raw alphas into op weights: row-wise 'softmax' or 'sigmoid'."""
  a = np.asarray(alphas, dtype=np.float64)
  if relaxation == 'softmax':
    e = np.exp(a - a.max(axis=-1, keepdims=True))  # Shift for stability.
    return e / e.sum(axis=-1, keepdims=True)
  if relaxation == 'sigmoid':
    # Written via exp(-|a|) so large |a| never overflows.
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
  raise UserInputError(
      f"unknown relaxation '{relaxation}'; allowed: {', '.join(RELAXATIONS)}")


def derive(weights_normal, weights_reduce, primitives, steps, rule,
           threshold=0.85):
  """Derives a discrete Genotype from relaxed weights.

  Args:
    weights_normal: array (num_edges, num_ops) of the normal cell's weights
      (softmax or sigmoid of alpha), rows in edges(steps) order.
    weights_reduce: the same for the reduction cell.
    primitives: op names, one per column.
    steps: number of intermediate nodes.
    rule: 'darts' (top-2 edges per node, best non-'none' op), 'threshold_sparse'
      (as darts, but an edge's best op is kept only if its weight >=
      threshold) or 'threshold_edge' (on every edge, each of the top-2 ops
      whose weight >= threshold, in ascending order of weight).
    threshold: weight cut-off of the threshold rules.

  Returns:
    A Genotype.
  """
  primitives = check_primitives(primitives)
  _check_steps(steps)
  if rule not in SELECTION_RULES:
    raise UserInputError(
        f"unknown derivation rule '{rule}'; allowed: {', '.join(SELECTION_RULES)}")
  if (not isinstance(threshold, numbers.Real) or isinstance(threshold, bool)
      or not 0.0 <= threshold <= 1.0):
    raise UserInputError(f'threshold must be in [0, 1], got {threshold!r}')
  cells = {}
  for cell, weights in (('normal', weights_normal),
                        ('reduce', weights_reduce)):
    w = _check_weights(cell, weights, primitives, steps)
    entries = _derive_cell(w, primitives, steps, rule, threshold)
    cells[cell] = entries
    if rule == 'darts':
      cells[cell + '_concat'] = tuple(range(2, 2 + steps))
    else:
      cells[cell + '_concat'] = tuple(sorted({to for _, to, _ in entries}))
  return Genotype(**cells)


def _derive_cell(w, primitives, steps, rule, threshold):
  """Returns the (op, to_node, from_node) entries of one cell."""
  # 'none' is left out of ranking and choice, as in the original code.
  usable = np.array([k for k, op in enumerate(primitives) if op != 'none'])
  w = w[:, usable]
  pairs = edges(steps)
  entries = []
  if rule == 'threshold_edge':
    for (to, frm), row in zip(pairs, w):
      # As the original: the last two of an ascending stable sort, so between
      # equal weights the higher column wins; kept in ascending order.
      for k in np.argsort(row, kind='stable')[-2:]:
        if row[k] >= threshold:
          entries.append((primitives[usable[k]], to, frm))
    return tuple(entries)
  first = 0
  for to in range(2, 2 + steps):
    node_w = w[first:first + to]  # Rows of the edges from 0..to-1.
    first += to
    # Stable, like Python's sorted in the original: ties go to lower inputs.
    for frm in np.argsort(-node_w.max(axis=1), kind='stable')[:2]:
      k = int(np.argmax(node_w[frm]))  # First index wins ties.
      if rule == 'darts' or node_w[frm, k] >= threshold:
        entries.append((primitives[usable[k]], to, int(frm)))
  return tuple(entries)


def derive_from_alphas_json(obj, rule, threshold=0.85):
  """Derives a Genotype from an alphas.json dict holding raw alphas.

  The dict has 'primitives', 'relaxation' ('softmax' or 'sigmoid'), 'steps'
  and 'normal'/'reduce' matrices, one row per edge in edges(steps) order.
  """
  if not isinstance(obj, dict):
    raise UserInputError(
        f'alphas must be a JSON object, got {type(obj).__name__}')
  for key in ('primitives', 'relaxation', 'steps', 'normal', 'reduce'):
    if key not in obj:
      raise UserInputError(f"alphas is missing key '{key}'")
  primitives = check_primitives(obj['primitives'])
  relaxation = obj['relaxation']
  if relaxation not in RELAXATIONS:
    raise UserInputError(
        f"unknown relaxation {relaxation!r}; allowed: {', '.join(RELAXATIONS)}")
  steps = obj['steps']
  _check_steps(steps)
  weights = {}
  for cell in _CELLS:
    alphas = _check_weights(cell, obj[cell], primitives, steps)
    weights[cell] = relax(alphas, relaxation)
  return derive(weights['normal'], weights['reduce'], primitives, steps, rule,
                threshold)


def live_nodes(entries):
  """The intermediate nodes that exist in a cell built from these entries.

  A node exists if it has an incoming edge from an input (0 or 1) or from an
  existing node; edges from missing nodes are ignored (Fair DARTS' rule, which
  is the DARTS cell's too when every node has its two inputs).
  """
  live = {0, 1}
  for to in sorted({to for _, to, _ in entries}):
    if any(src in live for _, t, src in entries if t == to):
      live.add(to)
  return sorted(live - {0, 1})


def built_entries(entries):
  """The (op, to, from) entries a cell builds: those whose source exists (live_nodes)."""
  existing = set(live_nodes(entries)) | {0, 1}
  return tuple(e for e in entries if e[2] in existing)


def count_ops(g, built_only=False):
  """Returns {'normal': {op: count}, 'reduce': {...}}, ops sorted by name.

  built_only: count only the entries the evaluation cells build (built_entries).
  """
  out = {}
  for cell in _CELLS:
    entries = getattr(g, cell)
    counts = {}
    for op, _, _ in built_entries(entries) if built_only else entries:
      counts[op] = counts.get(op, 0) + 1
    out[cell] = dict(sorted(counts.items()))
  return out


def _check_steps(steps):
  if not is_int(steps) or steps < 1:
    raise UserInputError(f'steps must be a positive integer, got {steps!r}')


def default_primitives(method):
  """The candidate ops of a method's search by default: the 8 DARTS ops for darts, the same
  without 'none' for fair_darts and noisy_darts."""
  if method not in _METHOD_PRIMITIVES:
    raise UserInputError(
        f"unknown method {method!r}; known methods: {', '.join(_METHOD_PRIMITIVES)}")
  return _METHOD_PRIMITIVES[method]


def check_primitives(primitives):
  """Returns the op list as a tuple, refusing unknown, repeated or no real ops."""
  if (not isinstance(primitives, (list, tuple)) or not primitives
      or not all(isinstance(p, str) for p in primitives)):
    raise UserInputError(
        f'primitives must be a non-empty list of op names, got {primitives!r}')
  unknown = [p for p in primitives if p not in OP_NAMES]
  if unknown:
    raise UserInputError(
        f"unknown op '{unknown[0]}'; known ops: {', '.join(OP_NAMES)}")
  if len(set(primitives)) != len(primitives):
    raise UserInputError(f'primitives repeat an op: {list(primitives)}')
  if all(p == 'none' for p in primitives):
    raise UserInputError("primitives need at least one op other than 'none'")
  return tuple(primitives)


def _check_weights(cell, weights, primitives, steps):
  """Returns weights as a float array of the shape primitives/steps need."""
  expected = (len(edges(steps)), len(primitives))
  try:
    w = np.asarray(weights, dtype=np.float64)
  except (TypeError, ValueError):
    raise UserInputError(
        f"'{cell}' must be a {expected[0]}x{expected[1]} matrix of numbers "
        f'(edges x ops)') from None
  if w.shape != expected:
    raise UserInputError(
        f"'{cell}' has shape {_shape_str(w.shape)}, expected "
        f'{expected[0]}x{expected[1]} ({expected[0]} edges for steps={steps}, '
        f'{expected[1]} primitives)')
  if not np.all(np.isfinite(w)):
    raise UserInputError(f"'{cell}' holds non-finite values")
  return w


def _shape_str(shape):
  return 'x'.join(str(d) for d in shape) if shape else 'scalar'
