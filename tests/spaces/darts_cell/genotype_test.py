"""Tests for tfnas.spaces.darts_cell.genotype and tools/derive.py."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tfnas.layers import op_table
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype

_REPO = pathlib.Path(__file__).resolve().parents[3]
_GOLDEN = _REPO / 'tests' / 'testdata' / 'fairdarts_sigmoid_golden.json'


@pytest.fixture(scope='module', name='golden')
def _golden():
  with open(_GOLDEN) as f:
    return json.load(f)


def _entries(pairs):
  """DARTS (op, from) pairs, two per node, as (op, to, from) entries."""
  return tuple((op, 2 + k // 2, frm) for k, (op, frm) in enumerate(pairs))


def test_edges_order():
  assert genotype.edges(1) == [(2, 0), (2, 1)]
  e = genotype.edges(4)
  assert len(e) == 14
  assert e[:5] == [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
  assert e[-1] == (5, 4)


def test_primitives():
  assert genotype.PRIMITIVES[0] == 'none'
  assert len(genotype.PRIMITIVES) == 8
  assert genotype.FAIR_PRIMITIVES == genotype.PRIMITIVES[1:]


def test_default_primitives_per_method():
  # As the originals: DARTS searches 'none' too; Fair and Noisy DARTS' code leaves it out.
  assert genotype.default_primitives('darts') == genotype.PRIMITIVES
  assert genotype.default_primitives('fair_darts') == genotype.FAIR_PRIMITIVES
  assert genotype.default_primitives('noisy_darts') == genotype.FAIR_PRIMITIVES
  with pytest.raises(UserInputError, match="unknown method 'pc_darts'"):
    genotype.default_primitives('pc_darts')


def test_threshold_sparse_golden(golden):
  g = genotype.derive(golden['normal_sigmoid'], golden['reduce_sigmoid'],
                      golden['primitives'], 4, 'threshold_sparse',
                      golden['threshold'])
  expected = golden['expected_threshold_sparse']
  assert g.normal == tuple(tuple(e) for e in expected['normal'])
  assert g.reduce == tuple(tuple(e) for e in expected['reduce'])
  assert g.normal_concat == (2,)
  assert g.reduce_concat == (2, 3, 4, 5)


def test_darts_rule_golden_normal(golden):
  g = genotype.derive(golden['normal_sigmoid'], golden['reduce_sigmoid'],
                      golden['primitives'], 4, 'darts')
  assert g.normal == _entries([
      ('dil_conv_5x5', 0), ('sep_conv_3x3', 1), ('sep_conv_5x5', 2),
      ('sep_conv_5x5', 0), ('sep_conv_3x3', 2), ('dil_conv_3x3', 0),
      ('sep_conv_5x5', 0), ('dil_conv_5x5', 1)])
  assert g.normal_concat == (2, 3, 4, 5)


def test_darts_ties_go_to_first_input_and_op():
  obj = {'primitives': list(genotype.PRIMITIVES), 'relaxation': 'softmax',
         'steps': 4, 'normal': np.zeros((14, 8)).tolist(),
         'reduce': np.zeros((14, 8)).tolist()}
  g = genotype.derive_from_alphas_json(obj, 'darts')
  expected = _entries([('max_pool_3x3', 0), ('max_pool_3x3', 1)] * 4)
  assert g.normal == expected
  assert g.reduce == expected


def test_darts_never_picks_none():
  w = np.full((14, 8), 0.01)
  w[:, 0] = 0.9  # 'none' dominates every edge.
  w[:, 5] = 0.05  # sep_conv_5x5 is the best real op.
  w[2, 4] = 0.2  # Node 3 prefers input 0 via sep_conv_3x3 ...
  w[4, 4] = 0.1  # ... then input 2.
  g = genotype.derive(w, w, genotype.PRIMITIVES, 4, 'darts')
  ops = [op for op, _, _ in g.normal]
  assert 'none' not in ops
  assert g.normal[2:4] == (('sep_conv_3x3', 3, 0), ('sep_conv_3x3', 3, 2))


def test_threshold_sparse_does_not_replace_rejected_edge():
  w = np.full((2 + 3, 7), 0.05)  # steps=2: edges (2,0) (2,1) (3,0) (3,1) (3,2)
  w[0, 3] = 0.9  # (2,0) kept.
  w[1, 2] = 0.5  # (2,1) ranked second but below threshold: dropped.
  w[4, 1] = 0.95  # (3,2) kept; (3,0) and (3,1) rank lower.
  w[2, 0] = 0.6  # (3,0) ranked second, rejected, (3,1) not taken instead.
  g = genotype.derive(w, w, genotype.FAIR_PRIMITIVES, 2, 'threshold_sparse')
  assert g.normal == (('sep_conv_3x3', 2, 0), ('avg_pool_3x3', 3, 2))
  assert g.normal_concat == (2, 3)


def test_threshold_edge_keeps_up_to_two_ops_per_edge(golden):
  g = genotype.derive(golden['normal_sigmoid'], golden['reduce_sigmoid'],
                      golden['primitives'], 4, 'threshold_edge')
  # Edge (2,0) has four ops >= 0.85; the top two are kept, in ascending order
  # of weight as in the original.
  assert g.normal[:2] == (('dil_conv_3x3', 2, 0), ('dil_conv_5x5', 2, 0))
  for cell in (g.normal, g.reduce):
    per_edge = {}
    for _, to, frm in cell:
      per_edge[(to, frm)] = per_edge.get((to, frm), 0) + 1
    assert max(per_edge.values()) == 2
  # Reduce edge (2,0) has five ops >= 0.85; again only the top two.
  assert g.reduce[:2] == (('max_pool_3x3', 2, 0), ('skip_connect', 2, 0))


def test_threshold_sparse_ties_go_to_first_input_and_op():
  # As the DARTS rule: a stable edge ranking and the first argmax.
  w = np.full((5, 7), 0.9)  # steps=2, every weight tied above the threshold
  g = genotype.derive(w, w, genotype.FAIR_PRIMITIVES, 2, 'threshold_sparse')
  assert g.normal == (('max_pool_3x3', 2, 0), ('max_pool_3x3', 2, 1),
                      ('max_pool_3x3', 3, 0), ('max_pool_3x3', 3, 1))


def test_threshold_edge_ties_go_to_the_higher_column():
  # The original keeps the last two of an ascending stable sort: between equal
  # weights the op with the higher column index wins (reference, section 3.3).
  w = np.full((2, 7), 0.05)  # steps=1: edges (2,0) and (2,1)
  w[0, [1, 3, 4]] = 0.9  # a three-way tie: the last two columns are kept
  w[1, [0, 2]] = 0.9  # a tie above a lower op: both kept, lower column first
  w[1, 5] = 0.95
  g = genotype.derive(w, w, genotype.FAIR_PRIMITIVES, 1, 'threshold_edge')
  assert g.normal == (('sep_conv_3x3', 2, 0), ('sep_conv_5x5', 2, 0),
                      ('skip_connect', 2, 1), ('dil_conv_3x3', 2, 1))


def test_golden_sigmoid_is_bimodal(golden):
  for cell, expected in (('normal', 2), ('reduce', 0)):
    w = np.asarray(golden[cell + '_sigmoid'])
    middle = np.sum((w > 0.15) & (w < 0.85))
    assert middle == expected
    assert w.size == 98
  # 2/98 = 2.0 % as the reference says.
  assert round(100 * 2 / 98, 1) == 2.0


def test_relax():
  a = np.array([[0.0, 0.0], [1000.0, 0.0]])
  np.testing.assert_allclose(genotype.relax(a, 'softmax'),
                             [[0.5, 0.5], [1.0, 0.0]])
  s = genotype.relax(np.array([-1000.0, 0.0, 2.0]), 'sigmoid')
  np.testing.assert_allclose(s, [0.0, 0.5, 1 / (1 + np.exp(-2.0))])
  with pytest.raises(UserInputError, match='relaxation'):
    genotype.relax(a, 'tanh')


def test_json_round_trip(tmp_path, golden):
  g = genotype.derive(golden['normal_sigmoid'], golden['reduce_sigmoid'],
                      golden['primitives'], 4, 'threshold_sparse')
  obj = genotype.to_json(g)
  assert obj == {
      'normal': [['dil_conv_5x5', 2, 0], ['sep_conv_3x3', 2, 1]],
      'normal_concat': [2],
      'reduce': golden['expected_threshold_sparse']['reduce'],
      'reduce_concat': [2, 3, 4, 5]}
  assert genotype.from_json(json.loads(json.dumps(obj))) == g
  path = tmp_path / 'genotype.json'
  genotype.save(g, str(path))
  assert genotype.load(str(path)) == g
  assert os.listdir(tmp_path) == ['genotype.json']  # No temp file left.
  assert '\n  ' in path.read_text()  # Indented.


def test_from_json_darts_form():
  darts_v2 = {
      'normal': [['sep_conv_3x3', 0], ['sep_conv_3x3', 1],
                 ['sep_conv_3x3', 0], ['sep_conv_3x3', 1],
                 ['sep_conv_3x3', 1], ['skip_connect', 0],
                 ['skip_connect', 0], ['dil_conv_3x3', 2]],
      'reduce': [['max_pool_3x3', 0], ['max_pool_3x3', 1],
                 ['skip_connect', 2], ['max_pool_3x3', 1],
                 ['max_pool_3x3', 0], ['skip_connect', 2],
                 ['skip_connect', 2], ['max_pool_3x3', 1]],
  }
  g = genotype.from_json(darts_v2)
  assert g.normal == (
      ('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 2, 1),
      ('sep_conv_3x3', 3, 0), ('sep_conv_3x3', 3, 1),
      ('sep_conv_3x3', 4, 1), ('skip_connect', 4, 0),
      ('skip_connect', 5, 0), ('dil_conv_3x3', 5, 2))
  assert g.normal_concat == (2, 3, 4, 5)
  assert g.reduce[2] == ('skip_connect', 3, 2)
  assert g.reduce_concat == (2, 3, 4, 5)


def test_from_json_default_concat_is_existing_nodes():
  g = genotype.from_json({'normal': [['sep_conv_3x3', 2, 0],
                                     ['max_pool_3x3', 4, 0]],
                          'reduce': []})
  assert g.normal_concat == (2, 4)
  assert g.reduce_concat == ()


def test_count_ops():
  g = genotype.from_json({'normal': [['sep_conv_3x3', 2, 0],
                                     ['skip_connect', 2, 1],
                                     ['skip_connect', 3, 0]],
                          'reduce': [['max_pool_3x3', 2, 0]]})
  assert genotype.count_ops(g) == {
      'normal': {'sep_conv_3x3': 1, 'skip_connect': 2},
      'reduce': {'max_pool_3x3': 1}}


@pytest.mark.parametrize('obj, message', [
    ({'normal': [['conv_9x9', 2, 0]], 'reduce': []},
     "unknown op 'conv_9x9'; allowed: none, max_pool_3x3"),
    ({'normal': [['sep_conv_3x3', 2, 2]], 'reduce': []},
     r'from_node must be in \[0, 2\)'),
    ({'normal': [['sep_conv_3x3', 1, 0]], 'reduce': []}, 'to_node must be >= 2'),
    ({'normal': []}, "missing key 'reduce'"),
    ({'normal': [['sep_conv_3x3', 2, '0']], 'reduce': []}, 'integers'),
    ({'normal': 'sep_conv_3x3', 'reduce': []}, 'must be a list'),
    ({'normal': [['sep_conv_3x3', 2, 0]], 'normal_concat': [3], 'reduce': []},
     'node 3 is not an intermediate node'),
    ({'normal': [['sep_conv_3x3', 0]], 'reduce': []}, 'two entries per node'),
    ([], 'must be a JSON object'),
])
def test_from_json_rejects_bad_input(obj, message):
  with pytest.raises(UserInputError, match=message) as e:
    genotype.from_json(obj)
  assert '\n' not in str(e.value)


def test_from_json_nodes_must_lie_in_the_cell():
  phantom = {'normal': [['sep_conv_3x3', 2, 0], ['sep_conv_3x3', 99, 0]],
             'reduce': []}
  with pytest.raises(UserInputError,
                     match=r"'normal' entry 1: node 99 is not in a cell of 4 "):
    genotype.from_json(phantom)
  # A larger cell says so; to_json writes 'steps' for it, so it round-trips.
  g = genotype.from_json(dict(phantom, steps=98))
  assert genotype.to_json(g)['steps'] == 98
  assert genotype.from_json(genotype.to_json(g)) == g
  assert 'steps' not in genotype.to_json(genotype.from_json(
      {'normal': [['sep_conv_3x3', 5, 0]], 'reduce': []}))
  # The DARTS form's cell has as many nodes as entry pairs.
  with pytest.raises(UserInputError, match='node 3 is not in a cell of 1 '):
    genotype.from_json({'normal': [['sep_conv_3x3', 0]] * 4,
                        'reduce': [['sep_conv_3x3', 0]] * 2, 'steps': 1})
  with pytest.raises(UserInputError, match="'steps' must be a positive"):
    genotype.from_json(dict(phantom, steps='4'))


def test_every_op_of_the_op_table_is_a_genotype_op():
  for op in op_table.OP_NAMES:
    genotype.from_json({'normal': [[op, 2, 0]], 'reduce': [[op, 2, 1]]})
  assert set(genotype.PRIMITIVES) < set(op_table.OP_NAMES)


def test_from_json_fair_primitives_reject_none():
  with pytest.raises(UserInputError, match="unknown op 'none'"):
    genotype.from_json({'normal': [['none', 2, 0]], 'reduce': []},
                       genotype.FAIR_PRIMITIVES)


def test_load_errors_name_the_file(tmp_path):
  missing = tmp_path / 'missing.json'
  with pytest.raises(UserInputError, match='not found: .*missing.json'):
    genotype.load(str(missing))
  bad = tmp_path / 'bad.json'
  bad.write_text('{"normal": [')
  with pytest.raises(UserInputError, match='bad.json is not valid JSON'):
    genotype.load(str(bad))
  wrong = tmp_path / 'wrong.json'
  wrong.write_text('{"normal": []}')
  with pytest.raises(UserInputError, match="wrong.json: .*missing key"):
    genotype.load(str(wrong))


def _alphas(steps=2, ops=genotype.FAIR_PRIMITIVES, relaxation='sigmoid',
            seed=0):
  rng = np.random.default_rng(seed)
  n = len(genotype.edges(steps))
  return {'primitives': list(ops), 'relaxation': relaxation, 'steps': steps,
          'normal': (4 * rng.standard_normal((n, len(ops)))).tolist(),
          'reduce': (4 * rng.standard_normal((n, len(ops)))).tolist()}


@pytest.mark.parametrize('change, message', [
    ({'relaxation': 'tanh'}, "unknown relaxation 'tanh'"),
    ({'normal': [[0.0] * 7] * 4}, "'normal' has shape 4x7, expected 5x7"),
    ({'reduce': [[0.0] * 6] * 5}, "'reduce' has shape 5x6, expected 5x7"),
    ({'steps': 0}, 'steps must be a positive integer'),
    ({'primitives': ['sep_conv_3x3', 'sep_conv_3x3']}, 'repeat'),
    ({'primitives': ['sep_conv_3x3', 'conv_9x9'] + ['skip_connect'] * 5},
     "unknown op 'conv_9x9'; known ops: none, max_pool_3x3"),
    ({'normal': [['a'] * 7] * 5}, 'matrix of numbers'),
    ({'normal': [[float('nan')] * 7] * 5}, 'non-finite'),
])
def test_derive_from_alphas_json_rejects_bad_input(change, message):
  obj = dict(_alphas(), **change)
  with pytest.raises(UserInputError, match=message) as e:
    genotype.derive_from_alphas_json(obj, 'darts')
  assert '\n' not in str(e.value)


def test_derive_rejects_bad_rule_and_missing_key():
  with pytest.raises(UserInputError, match="unknown derivation rule 'best'"):
    genotype.derive_from_alphas_json(_alphas(), 'best')
  obj = _alphas()
  del obj['steps']
  with pytest.raises(UserInputError, match="missing key 'steps'"):
    genotype.derive_from_alphas_json(obj, 'darts')
  with pytest.raises(UserInputError, match='threshold must be in'):
    genotype.derive_from_alphas_json(_alphas(), 'threshold_sparse', 1.5)


def _run_tool(*args):
  return subprocess.run(
      [sys.executable, 'tools/derive.py', *args], cwd=_REPO,
      capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_derive_tool_end_to_end(tmp_path):
  obj = _alphas(steps=4, seed=1)
  path = tmp_path / 'alphas.json'
  path.write_text(json.dumps(obj))
  out = tmp_path / 'genotype.json'
  result = _run_tool(f'--alphas={path}', '--rule=threshold_sparse',
                     '--threshold=0.9', f'--output={out}')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1
  expected = genotype.derive_from_alphas_json(obj, 'threshold_sparse', 0.9)
  assert genotype.from_json(json.loads(lines[0])) == expected
  assert genotype.load(str(out)) == expected


@pytest.mark.slow
def test_derive_tool_unknown_op_in_alphas(tmp_path):
  obj = _alphas(ops=('sep_conv_3x3', 'conv_9x9'))
  path = tmp_path / 'alphas.json'
  path.write_text(json.dumps(obj))
  out = tmp_path / 'genotype.json'
  result = _run_tool(f'--alphas={path}', f'--output={out}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: {path}: unknown op 'conv_9x9'; known ops: "
      f"{', '.join(op_table.OP_NAMES)}"]
  assert not out.exists()


@pytest.mark.slow
def test_derive_tool_warns_of_a_threshold_under_the_darts_rule(tmp_path):
  path = tmp_path / 'alphas.json'
  path.write_text(json.dumps(_alphas()))
  for rule, warnings in (('darts', 1), ('threshold_sparse', 0)):
    result = _run_tool(f'--alphas={path}', f'--rule={rule}', '--threshold=0.9')
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if 'threshold=0.9: no effect, the darts rule' in line]
    assert len(lines) == warnings, result.stderr
  assert 'no effect' not in _run_tool(f'--alphas={path}', '--rule=darts').stderr


@pytest.mark.slow
def test_derive_tool_bad_path(tmp_path):
  result = _run_tool(f'--alphas={tmp_path / "nope.json"}')
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1
  assert lines[0].startswith('error:') and 'nope.json' in lines[0]
  assert 'Traceback' not in result.stderr


def test_live_nodes_ignore_nodes_fed_only_by_missing_nodes():
  # FairDARTS_a's normal cell: node 3 has no input, so the cell has nodes 2, 4, 5.
  entries = [('sep_conv_3x3', 2, 0), ('sep_conv_5x5', 2, 1), ('max_pool_3x3', 4, 0),
             ('sep_conv_3x3', 5, 0)]
  assert genotype.live_nodes(entries) == [2, 4, 5]
  # Node 4 is fed only by node 3, which does not exist: it does not exist either.
  assert genotype.live_nodes([('skip_connect', 2, 0), ('skip_connect', 4, 3)]) == [2]
  assert genotype.live_nodes([('skip_connect', 2, 0), ('skip_connect', 3, 2),
                              ('skip_connect', 4, 3)]) == [2, 3, 4]
  assert genotype.live_nodes([]) == []
