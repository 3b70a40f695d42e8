"""Writes a graphviz picture of a genotype (a cell, a chain) to files: the DOT source and the
pictures that Graphviz's `dot` renders from it."""
import os

import graphviz

from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import first_line

# Single-file picture formats; others (gv, vrml, imap, ...) clash with the
# .gv source or write side files.
FORMATS = ('png', 'svg', 'pdf', 'jpg', 'jpeg', 'gif', 'eps', 'ps')
_DOT_MISSING = ("rendering needs graphviz's `dot`: install the graphviz system "
                'package (apt-get install graphviz)')


def render(graph, path_stem, formats=('png',)):
  """Writes path_stem.gv (the DOT source), then path_stem.<fmt> per format.

  Args:
    graph: a graphviz.Digraph, e.g. from cell_graph.
    path_stem: output path without suffix; missing directories are created.
    formats: output formats, each one of FORMATS.

  Returns:
    The paths written, the .gv first.
  """
  if isinstance(formats, str):
    formats = (formats,)
  formats = tuple(dict.fromkeys(formats))  # Drops repeats, keeps order.
  if not formats:
    raise UserInputError(
        f"no output format given; allowed: {', '.join(FORMATS)}")
  for fmt in formats:
    # Checked up front, so a bad format writes nothing.
    if fmt not in FORMATS:
      raise UserInputError(
          f"unknown output format {fmt!r}; allowed: {', '.join(FORMATS)}")
  path_stem = os.fspath(path_stem)
  gv_path = path_stem + '.gv'
  directory = os.path.dirname(gv_path)
  try:
    if directory:
      os.makedirs(directory, exist_ok=True)
    graph.save(filename=gv_path)
  except OSError as e:
    raise UserInputError(f'cannot write {gv_path}: {e.strerror}') from None
  written = [gv_path]
  for fmt in formats:
    out = f'{path_stem}.{fmt}'
    try:
      graph.render(filename=gv_path, outfile=out, format=fmt, quiet=True)
    except graphviz.ExecutableNotFound:
      raise UserInputError(_DOT_MISSING) from None
    except graphviz.CalledProcessError as e:
      # E.g. a format this build of dot lacks a plugin for.
      detail = first_line(e.stderr) or f'exit status {e.returncode}'
      raise UserInputError(f'dot could not write {out}: {detail}') from None
    except OSError as e:
      raise UserInputError(f'cannot write {out}: {e.strerror}') from None
    written.append(out)
  return written
