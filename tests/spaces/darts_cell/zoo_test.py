"""Tests for tfnas.spaces.darts_cell.zoo: the published cells, checked against their sources."""
import json

import pytest

from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype
from tfnas.spaces.darts_cell import zoo

# (normal, reduce) skip_connect counts as the originals' READMEs tabulate them
# (quark0/darts, FairDARTS, NoisyDARTS, PC-DARTS), which agree with the literal
# genotypes of darts' cnn/genotypes.py and FairDARTS' fairdarts/genotypes.py;
# PDARTS counted from its literal genotype.
_SKIPS = {
    'DARTS_V1': (3, 3),
    'DARTS_V2': (2, 3),
    'FairDARTS_a': (0, 2),
    'FairDARTS_b': (0, 3),
    'FairDARTS_c': (1, 1),
    'FairDARTS_d': (0, 1),
    'FairDARTS_e': (0, 0),
    'FairDARTS_f': (0, 0),
    'FairDARTS_g': (1, 2),
    'NoisyDARTS_a': (1, 4),
    'NoisyDARTS_b': (2, 3),
    'PC_DARTS': (1, 0),
    'PDARTS': (2, 0),
}

_DARTS_FORM = ('DARTS_V1', 'DARTS_V2', 'NoisyDARTS_a', 'NoisyDARTS_b',
               'PC_DARTS', 'PDARTS')


def test_names():
  assert zoo.NAMES == (
      'DARTS_V1', 'DARTS_V2', 'FairDARTS_a', 'FairDARTS_b', 'FairDARTS_c',
      'FairDARTS_d', 'FairDARTS_e', 'FairDARTS_f', 'FairDARTS_g',
      'NoisyDARTS_a', 'NoisyDARTS_b', 'PC_DARTS', 'PDARTS')
  assert set(_SKIPS) == set(zoo.NAMES)


@pytest.mark.parametrize('name', zoo.NAMES)
def test_every_name_resolves(name):
  g = zoo.resolve(name)
  assert isinstance(g, genotype.Genotype)
  assert g == zoo.get(name)
  for cell in ('normal', 'reduce'):
    assert all(op in genotype.PRIMITIVES and op != 'none'
               for op, _, _ in getattr(g, cell))
    if name in _DARTS_FORM:
      # Two inputs per node, all four nodes concatenated.
      assert len(getattr(g, cell)) == 8
      assert getattr(g, cell + '_concat') == (2, 3, 4, 5)
    else:
      # Fair DARTS: concat is the nodes that have inputs.
      assert getattr(g, cell + '_concat') == tuple(
          sorted({to for _, to, _ in getattr(g, cell)}))


@pytest.mark.parametrize('name', zoo.NAMES)
def test_skip_counts(name):
  counts = genotype.count_ops(zoo.get(name))
  assert (counts['normal'].get('skip_connect', 0),
          counts['reduce'].get('skip_connect', 0)) == _SKIPS[name]


def test_darts_v2():
  g = zoo.get('DARTS_V2')
  # sep3@0, sep3@1, sep3@0, sep3@1, ... with two entries per node.
  assert g.normal[:4] == (('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 2, 1),
                          ('sep_conv_3x3', 3, 0), ('sep_conv_3x3', 3, 1))
  assert g.normal[-1] == ('dil_conv_3x3', 5, 2)
  assert g.reduce[:3] == (('max_pool_3x3', 2, 0), ('max_pool_3x3', 2, 1),
                          ('skip_connect', 3, 2))


def test_fairdarts_a():
  g = zoo.get('FairDARTS_a')
  assert g.normal == (('sep_conv_3x3', 2, 0), ('sep_conv_5x5', 2, 1),
                      ('max_pool_3x3', 4, 0), ('sep_conv_3x3', 5, 0))
  assert g.normal_concat == (2, 4, 5)
  assert genotype.live_nodes(g.normal) == [2, 4, 5]  # Node 3 is missing.
  assert g.reduce_concat == (2, 3, 4, 5)
  assert g.reduce[-2:] == (('skip_connect', 5, 0), ('skip_connect', 5, 1))


def test_fairdarts_c_edge_from_missing_node():
  g = zoo.get('FairDARTS_c')
  assert ('skip_connect', 5, 3) in g.normal
  assert genotype.live_nodes(g.normal) == [2, 4, 5]


def test_noisy_darts_a_normal():
  g = zoo.get('NoisyDARTS_a')
  assert g.normal == (
      ('sep_conv_3x3', 2, 1), ('sep_conv_3x3', 2, 0),
      ('skip_connect', 3, 0), ('dil_conv_3x3', 3, 2),
      ('dil_conv_3x3', 4, 3), ('sep_conv_3x3', 4, 1),
      ('dil_conv_5x5', 5, 4), ('dil_conv_3x3', 5, 3))


def test_pc_darts_and_pdarts():
  pc = zoo.get('PC_DARTS')
  assert pc.normal[:2] == (('sep_conv_3x3', 2, 1), ('skip_connect', 2, 0))
  assert pc.reduce[-1] == ('sep_conv_3x3', 5, 2)
  pd = zoo.get('PDARTS')
  assert pd.normal[:2] == (('skip_connect', 2, 0), ('dil_conv_3x3', 2, 1))
  assert pd.reduce[-1] == ('dil_conv_5x5', 5, 3)


def test_resolve_saved_file(tmp_path):
  path = tmp_path / 'g.json'
  genotype.save(zoo.get('FairDARTS_c'), str(path))
  assert zoo.resolve(str(path)) == zoo.get('FairDARTS_c')


def test_resolve_darts_form_file(tmp_path):
  path = tmp_path / 'g.json'
  pairs = [['sep_conv_3x3', 0], ['skip_connect', 1]] * 4
  path.write_text(json.dumps({'normal': pairs, 'reduce': pairs}))
  g = zoo.resolve(str(path))
  assert g.normal[:2] == (('sep_conv_3x3', 2, 0), ('skip_connect', 2, 1))
  assert g.normal_concat == (2, 3, 4, 5)


def _one_line(excinfo):
  message = str(excinfo.value)
  assert '\n' not in message
  return message


def test_resolve_bad_name():
  with pytest.raises(UserInputError) as e:
    zoo.resolve('DARTS_V3')
  message = _one_line(e)
  assert "'DARTS_V3'" in message
  assert 'neither' in message
  assert 'DARTS_V2' in message and 'PDARTS' in message


def test_get_unknown_name_lists_names():
  with pytest.raises(UserInputError) as e:
    zoo.get('darts_v2')  # Names are case-sensitive.
  message = _one_line(e)
  assert "'darts_v2'" in message
  assert ', '.join(zoo.NAMES) in message


def test_resolve_directory(tmp_path):
  with pytest.raises(UserInputError, match='directory'):
    zoo.resolve(str(tmp_path))


def test_resolve_bad_file(tmp_path):
  path = tmp_path / 'bad.json'
  path.write_text('{"normal": [["conv_7x7", 2, 0]], "reduce": []}')
  with pytest.raises(UserInputError) as e:
    zoo.resolve(str(path))
  assert 'conv_7x7' in _one_line(e)
