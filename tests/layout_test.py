"""The package's imports point one way: tools -> search, train -> spaces -> methods -> layers
-> runtime (data sits beside layers). A module that imports upwards fails here."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# What each folder of tfnas/ may import from tfnas (besides itself).
ALLOWED = {
    "runtime": set(),
    "layers": {"runtime"},
    "data": {"runtime"},
    "methods": {"runtime"},
    "spaces": {"methods", "layers", "runtime"},
    "search": {"spaces", "methods", "layers", "data", "runtime"},
    "train": {"spaces", "methods", "layers", "data", "runtime"},
}


def tfnas_imports(path):
  """The dotted tfnas modules (or packages) that a file imports, at any depth of its code."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tfnas":
      found += [node.module] if node.module != "tfnas" else [f"tfnas.{a.name}" for a in node.names]
    elif isinstance(node, ast.Import):
      found += [a.name for a in node.names if a.name.split(".")[0] == "tfnas"]
  return found


def upward_imports(package_root):
  """(file, imported module) for every import of tfnas that its folder may not make."""
  bad = []
  for path in sorted(package_root.rglob("*.py")):
    parts = path.relative_to(package_root).parts
    if len(parts) == 1:  # tfnas/__init__.py
      continue
    folder = parts[0]
    for module in tfnas_imports(path):
      target = module.split(".")
      if len(target) < 2:
        bad.append((str(path), module))
        continue
      if target[1] == folder:
        # A search space never imports another space.
        if folder == "spaces" and len(target) > 2 and len(parts) > 2 and target[2] != parts[1]:
          bad.append((str(path), module))
        continue
      if target[1] not in ALLOWED[folder]:
        bad.append((str(path), module))
  return bad


def test_every_folder_of_tfnas_is_in_the_table():
  folders = {p.name for p in (ROOT / "tfnas").iterdir() if p.is_dir() and p.name != "__pycache__"}
  assert folders == set(ALLOWED)


def test_imports_point_one_way():
  assert upward_imports(ROOT / "tfnas") == []


def test_an_upward_import_is_found(tmp_path):
  (tmp_path / "layers").mkdir()
  (tmp_path / "spaces" / "a").mkdir(parents=True)
  (tmp_path / "layers" / "ops.py").write_text("from tfnas.search import searcher\n")
  (tmp_path / "spaces" / "a" / "net.py").write_text(
      "def f():\n  from tfnas.spaces.b import net\n  from tfnas.layers import ops\n")
  assert upward_imports(tmp_path) == [
      (str(tmp_path / "layers" / "ops.py"), "tfnas.search"),
      (str(tmp_path / "spaces" / "a" / "net.py"), "tfnas.spaces.b")]
