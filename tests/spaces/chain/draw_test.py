"""A chain drawn as a strip of its layers, and tools/draw_cells.py for chains."""
import pathlib
import subprocess
import sys

import pytest

from tfnas.spaces.chain import draw
from tfnas.spaces.chain import genotype as genotype_lib
from tfnas.spaces.chain import zoo

ROOT = pathlib.Path(__file__).resolve().parents[3]
TINY = genotype_lib.ChainGenotype(
    layers=(genotype_lib.ChainLayer(((3, 3), (5, 6)), 8, 1), genotype_lib.ChainLayer((), 8, 1),
            genotype_lib.ChainLayer(((7, 6),), 16, 2)),
    stem_channels=8, first_channels=8, head_channels=32)


def test_each_layer_is_a_box_in_order_with_its_blocks_width_and_stride():
  source = draw.chain_graph(TINY).source
  for label in (r"stem 3x3 s2\nc8", r"k3 e3 +\nk5 e6\nc8", r"skip\nc8", r"k7 e6\nc16 s2",
                r"1x1 c32\npool, fc"):
    assert label in source, label
  assert "style=dashed" in source  # the skipped layer
  edges = [line.strip() for line in source.splitlines() if "->" in line]
  assert edges == ["stem -> separable", "separable -> layer1", "layer1 -> layer2",
                   "layer2 -> layer3", "layer3 -> head"]


def test_the_narrow_picture_wraps_the_layers_into_rows():
  g = zoo.get("FairNAS_A")
  source = draw.narrow_chain_graph(g, per_row=4).source
  assert source.count("rank=same") == 6  # 2 + 19 + 1 boxes in rows of 4
  assert 'size="3.5,100"' in source
  png = draw.narrow_chain_graph(g).pipe(format="png")
  width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
  assert width <= 350 < height


@pytest.mark.slow
def test_draw_cells_draws_a_chain(tmp_path):
  path = tmp_path / "tiny.json"
  genotype_lib.save(TINY, str(path))
  result = subprocess.run([sys.executable, "tools/draw_cells.py", f"--genotype={path}",
                           f"--output_dir={tmp_path / 'out'}", "--format=png,svg"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [str(tmp_path / "out" / f)
                                        for f in ("chain.gv", "chain.png", "chain.svg")]
  assert (tmp_path / "out" / "chain.gv").read_text() == draw.chain_graph(TINY).source
