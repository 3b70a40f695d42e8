"""Tests for tfnas.spaces.darts_cell.draw and tools/draw_cells.py.

Rendering runs for real: it needs Graphviz's `dot` (Debian package graphviz).
"""
import json
import pathlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tfnas.runtime.errors import UserInputError
from tfnas.spaces import render
from tfnas.spaces.darts_cell import draw
from tfnas.spaces.darts_cell import genotype
from tfnas.spaces.darts_cell import zoo

_REPO = pathlib.Path(__file__).resolve().parents[3]
_INPUTS = ('c_{k-2}', 'c_{k-1}')
_OUT = 'c_{k}'
_GREY = 'lightgray'

_EDGE = re.compile(r'^\t(\S+) -> (\S+)(?: \[(.*)\])?$')
_NODE = re.compile(r'^\t(\S+) \[(.*)\]$')
_ATTR = re.compile(r'(\w+)=("[^"]*"|\S+)')


def _unquote(s):
  return s[1:-1] if s.startswith('"') else s


def _attrs(text):
  return {k: _unquote(v) for k, v in _ATTR.findall(text or '')}


def _parse(source):
  """Returns ({node: attrs}, [(tail, head, attrs)]) of a DOT source."""
  nodes, edges = {}, []
  for line in source.splitlines():
    m = _EDGE.match(line)
    if m:
      edges.append((_unquote(m[1]), _unquote(m[2]), _attrs(m[3])))
      continue
    m = _NODE.match(line)
    if m and m[1] not in ('graph', 'node', 'edge'):
      nodes[_unquote(m[1])] = _attrs(m[2])
  return nodes, edges


def _op_edges(edges):
  return [(t, h, a['label']) for t, h, a in edges if 'label' in a]


def _out_edges(edges):
  return [t for t, h, a in edges if h == _OUT and 'label' not in a]


def _grey_edges(edges):
  return [(t, h) for t, h, a in edges if a.get('color') == 'gray']


def test_darts_v2_normal():
  source = draw.cell_graph(zoo.get('DARTS_V2'), 'normal').source
  assert 'rankdir=LR' in source
  nodes, edges = _parse(source)
  assert list(nodes) == [*_INPUTS, '0', '1', '2', '3', _OUT]
  assert nodes['c_{k-2}']['fillcolor'] == 'darkseagreen2'
  assert nodes['c_{k-1}']['fillcolor'] == 'darkseagreen2'
  assert all(nodes[n]['fillcolor'] == 'lightblue' for n in '0123')
  assert nodes[_OUT]['fillcolor'] == 'palegoldenrod'
  a, b = _INPUTS
  assert _op_edges(edges) == [
      (a, '0', 'sep_conv_3x3'), (b, '0', 'sep_conv_3x3'),
      (a, '1', 'sep_conv_3x3'), (b, '1', 'sep_conv_3x3'),
      (b, '2', 'sep_conv_3x3'), (a, '2', 'skip_connect'),
      (a, '3', 'skip_connect'), ('0', '3', 'dil_conv_3x3')]
  assert _out_edges(edges) == ['0', '1', '2', '3']
  assert len(edges) == 12
  assert not _grey_edges(edges)


def test_darts_v2_reduce():
  _, edges = _parse(draw.cell_graph(zoo.get('DARTS_V2'), 'reduce').source)
  assert _op_edges(edges)[:3] == [
      ('c_{k-2}', '0', 'max_pool_3x3'), ('c_{k-1}', '0', 'max_pool_3x3'),
      ('0', '1', 'skip_connect')]


def test_fairdarts_a_normal_missing_node():
  nodes, edges = _parse(
      draw.cell_graph(zoo.get('FairDARTS_a'), 'normal').source)
  assert list(nodes) == [*_INPUTS, '0', '1', '2', '3', _OUT]
  assert nodes['1']['fillcolor'] == _GREY  # Node 3 does not exist.
  assert nodes['1']['fontcolor'] == 'gray'
  assert all(nodes[n]['fillcolor'] == 'lightblue' for n in '023')
  a, b = _INPUTS
  assert _op_edges(edges) == [
      (a, '0', 'sep_conv_3x3'), (b, '0', 'sep_conv_5x5'),
      (a, '2', 'max_pool_3x3'), (a, '3', 'sep_conv_3x3')]
  assert _out_edges(edges) == ['0', '2', '3']
  assert not _grey_edges(edges)


def test_fairdarts_c_normal_edge_from_missing_node_is_grey():
  nodes, edges = _parse(
      draw.cell_graph(zoo.get('FairDARTS_c'), 'normal').source)
  assert nodes['1']['fillcolor'] == _GREY
  assert _grey_edges(edges) == [('1', '3')]
  assert ('1', '3', 'skip_connect') in _op_edges(edges)
  assert nodes['3']['fillcolor'] == 'lightblue'  # Node 5 has input 0 too.


def _cell(entries, concat):
  return genotype.Genotype(normal=entries, normal_concat=concat,
                           reduce=entries, reduce_concat=concat)


def test_several_ops_on_one_edge():
  g = _cell([('sep_conv_3x3', 2, 0), ('skip_connect', 2, 0),
             ('max_pool_3x3', 2, 1)], (2,))
  nodes, edges = _parse(draw.cell_graph(g, 'normal').source)
  assert list(nodes) == [*_INPUTS, '0', _OUT]
  assert _op_edges(edges) == [('c_{k-2}', '0', 'sep_conv_3x3'),
                              ('c_{k-2}', '0', 'skip_connect'),
                              ('c_{k-1}', '0', 'max_pool_3x3')]
  assert _out_edges(edges) == ['0']


def test_named_but_missing_node_is_grey():
  # Node 4's only input is node 3, which has none: both are missing.
  g = _cell([('sep_conv_3x3', 2, 0), ('skip_connect', 4, 3)], (2, 4))
  nodes, edges = _parse(draw.cell_graph(g, 'reduce').source)
  assert list(nodes) == [*_INPUTS, '0', '1', '2', _OUT]
  assert nodes['0']['fillcolor'] == 'lightblue'
  assert nodes['1']['fillcolor'] == _GREY
  assert nodes['2']['fillcolor'] == _GREY
  assert _grey_edges(edges) == [('1', '2'), ('2', _OUT)]


def test_cell_without_live_nodes():
  nodes, edges = _parse(draw.cell_graph(_cell([], ()), 'normal').source)
  assert list(nodes) == [*_INPUTS, _OUT]
  assert not edges


def test_unknown_cell():
  with pytest.raises(UserInputError, match="'nromal'"):
    draw.cell_graph(zoo.get('DARTS_V2'), 'nromal')


def test_render_png_svg_pdf(tmp_path):
  graph = draw.cell_graph(zoo.get('DARTS_V2'), 'normal')
  stem = tmp_path / 'sub' / 'normal'  # The missing folder gets created.
  written = render.render(graph, str(stem), ('png', 'svg', 'pdf'))
  assert written == [str(stem) + s for s in ('.gv', '.png', '.svg', '.pdf')]
  assert (tmp_path / 'sub' / 'normal.gv').read_text() == graph.source
  assert (tmp_path / 'sub' / 'normal.png').read_bytes().startswith(
      b'\x89PNG\r\n\x1a\n')
  assert (tmp_path / 'sub' / 'normal.pdf').read_bytes().startswith(b'%PDF')
  root = ET.parse(tmp_path / 'sub' / 'normal.svg').getroot()
  texts = {e.text for e in root.iter() if e.tag.endswith('}text')}
  assert {'sep_conv_3x3', 'skip_connect', 'dil_conv_3x3', 'c_{k}',
          '0', '3'} <= texts
  assert sorted(p.name for p in (tmp_path / 'sub').iterdir()) == [
      'normal.gv', 'normal.pdf', 'normal.png', 'normal.svg']


def test_render_default_png(tmp_path):
  graph = draw.cell_graph(zoo.get('FairDARTS_a'), 'reduce')
  written = render.render(graph, tmp_path / 'reduce')
  assert written == [str(tmp_path / 'reduce.gv'), str(tmp_path / 'reduce.png')]


def test_render_unknown_format_writes_nothing(tmp_path):
  graph = draw.cell_graph(zoo.get('DARTS_V2'), 'normal')
  with pytest.raises(UserInputError, match="'bmp'"):
    render.render(graph, str(tmp_path / 'normal'), ('png', 'bmp'))
  assert not list(tmp_path.iterdir())


def test_render_without_dot(tmp_path, monkeypatch):
  # An empty PATH hides `dot`, as on a machine without Graphviz.
  empty = tmp_path / 'empty'
  empty.mkdir()
  monkeypatch.setenv('PATH', str(empty))
  graph = draw.cell_graph(zoo.get('DARTS_V2'), 'normal')
  with pytest.raises(UserInputError) as e:
    render.render(graph, str(tmp_path / 'normal'), ('png',))
  assert str(e.value) == (
      "rendering needs graphviz's `dot`: install the graphviz system package "
      '(apt-get install graphviz)')
  assert (tmp_path / 'normal.gv').read_text() == graph.source  # Written first.
  assert not (tmp_path / 'normal.png').exists()


def _draw(*args):
  return subprocess.run(
      [sys.executable, 'tools/draw_cells.py', *args], cwd=_REPO,
      capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_tool_zoo_name(tmp_path):
  out = tmp_path / 'cells'
  r = _draw('--genotype=FairDARTS_c', f'--output_dir={out}',
            '--format=png,svg')
  assert r.returncode == 0, r.stderr
  expected = [str(out / f) for f in (
      'normal.gv', 'normal.png', 'normal.svg',
      'reduce.gv', 'reduce.png', 'reduce.svg')]
  assert r.stdout.splitlines() == expected
  for path in expected:
    assert pathlib.Path(path).stat().st_size > 0
  assert 'color=gray' in (out / 'normal.gv').read_text()


@pytest.mark.slow
def test_tool_json_file(tmp_path):
  path = tmp_path / 'genotype.json'
  genotype.save(zoo.get('PC_DARTS'), str(path))
  out = tmp_path / 'cells'
  r = _draw(f'--genotype={path}', f'--output_dir={out}')
  assert r.returncode == 0, r.stderr
  assert r.stdout.splitlines() == [
      str(out / f) for f in ('normal.gv', 'normal.png', 'reduce.gv',
                             'reduce.png')]
  assert (out / 'reduce.png').read_bytes().startswith(b'\x89PNG\r\n\x1a\n')
  source = (out / 'normal.gv').read_text()
  assert source == draw.cell_graph(zoo.get('PC_DARTS'), 'normal').source


_BAD_FILES = {
    'malformed': ('{"normal": [', 'not valid JSON'),
    'unknown_op': (
        json.dumps({'normal': [['conv_7x7', 2, 0]], 'reduce': []}),
        "unknown op 'conv_7x7'"),
    'node_out_of_range': (
        json.dumps({'normal': [['sep_conv_3x3', 2, 2]], 'reduce': []}),
        'from_node must be in [0, 2)'),
    'node_beyond_the_cell': (
        json.dumps({'normal': [['sep_conv_3x3', 2, 0], ['sep_conv_3x3', 99, 1]],
                    'reduce': []}),
        "'normal' entry 1: node 99 is not in a cell of 4 intermediate nodes"),
}


@pytest.mark.parametrize('case', [None, *_BAD_FILES])
@pytest.mark.slow
def test_tool_bad_input(tmp_path, case):
  if case is None:
    arg, expected = 'DARTS_V9', "'DARTS_V9' is neither a zoo name"
  else:
    text, expected = _BAD_FILES[case]
    path = tmp_path / f'{case}.json'
    path.write_text(text)
    arg = str(path)
  out = tmp_path / 'cells'
  r = _draw(f'--genotype={arg}', f'--output_dir={out}')
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1, r.stderr
  assert lines[0].startswith('error: ')
  assert expected in lines[0]
  assert 'Traceback' not in r.stderr
  assert not out.exists()


@pytest.mark.parametrize('name', ['DARTS_V2', 'PDARTS', 'FairDARTS_a'])
@pytest.mark.parametrize('cell', ['normal', 'reduce'])
def test_narrow_cell_graph_fits_a_tensorboard_card_with_large_labels(name, cell):
  g = zoo.get(name)
  graph = draw.narrow_cell_graph(g, cell)
  svg = graph.pipe(format='svg').decode()
  width = float(re.search(r'<svg width="([\d.]+)pt"', svg).group(1))
  scale = float(re.search(r'scale\(([\d.]+)', svg).group(1))
  # At most 350 pixels wide (at 96 dpi), so TensorBoard does not shrink it, and its
  # 20-point labels at least 20 pixels high (a left-to-right cell at that width: 11).
  assert width <= 350 and 20 * scale >= 20
  # Each entry's op is a text node on its edge, broken after its last underscore.
  labels = re.findall(r'label="([^"]*)" margin="0.02,0" shape=plaintext', graph.source)
  expected = [op[:op.rindex('_') + 1] + r'\n' + op[op.rindex('_') + 1:]
              for op, _, _ in getattr(g, cell)]
  assert sorted(labels) == sorted(expected)
