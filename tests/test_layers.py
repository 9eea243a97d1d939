"""The layer table of docs/design.md holds for the code: every module of `incontext/` is in it
once, and imports (at the top or inside a function) only from its own or a lower layer; no
module reaches into another module's `_private` names.

The table is read from docs/design.md itself, so the document and the code cannot drift apart.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "incontext"
DESIGN = ROOT / "docs" / "design.md"


def _modules() -> dict[str, pathlib.Path]:
  """{dotted name under incontext: path} of every module (packages' __init__ excluded)."""
  out = {}
  for p in PKG.rglob("*.py"):
    if p.name == "__init__.py":
      continue
    out[".".join(p.relative_to(PKG).with_suffix("").parts)] = p
  return out


def _table() -> dict[str, int]:
  """{module: layer} from the layer table under docs/design.md's "Architecture"."""
  text = DESIGN.read_text()
  section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
  layers = {}
  for line in section.splitlines():
    m = re.match(r"^\|\s*(\d+)\s*\|(.*?)\|", line)
    if not m:
      continue
    layer = int(m.group(1))
    cell = m.group(2)
    # `pkg/` (`a`, `b`) names modules of a package; a bare `a` names a top-level module.
    for pkg, inner in re.findall(r"`(\w+)/`\s*\(([^)]*)\)", cell):
      for name in re.findall(r"`(\w+)`", inner):
        layers[f"{pkg}.{name}"] = layer
    rest = re.sub(r"`\w+/`\s*\([^)]*\)", "", cell)
    for name in re.findall(r"`([\w.]+)`", rest):
      layers[name] = layer
  return layers


def _imports(path: pathlib.Path, name: str) -> set[str]:
  """Modules of incontext that `name` imports anywhere in its file."""
  tree = ast.parse(path.read_text())
  pkg = name.rsplit(".", 1)[0] if "." in name else ""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("incontext."):
          found.add(a.name[len("incontext.") :])
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative: from . import x / from .x import y
        base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if pkg else []
        mod = ".".join([*base, node.module] if node.module else base)
      elif node.module and (node.module == "incontext" or node.module.startswith("incontext.")):
        mod = node.module[len("incontext.") :] if node.module != "incontext" else ""
      else:
        continue
      for a in node.names:  # `from incontext import x` imports the module x
        found.add(f"{mod}.{a.name}" if mod else a.name)
        if mod:
          found.add(mod)
  return found


def _resolve(imported: str, modules: dict) -> str | None:
  """The module an imported dotted name belongs to (None for a package itself)."""
  parts = imported.split(".")
  for i in range(len(parts), 0, -1):
    cand = ".".join(parts[:i])
    if cand in modules:
      return cand
  return None


def test_every_module_is_in_the_table_once():
  modules, table = _modules(), _table()
  assert sorted(set(modules) - set(table)) == [], "modules missing from docs/design.md's table"
  assert sorted(set(table) - set(modules)) == [], "docs/design.md names modules that do not exist"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_imports_stay_in_or_below_the_layer(name):
  modules, table = _modules(), _table()
  if name not in table:
    pytest.fail(f"{name} is not in docs/design.md's layer table")
  upward = []
  for imp in _imports(modules[name], name):
    target = _resolve(imp, modules)
    if target is None or target == name:
      continue
    if target.split(".")[0] == "commands" and name.split(".")[0] == "commands":
      continue
    if table.get(target, -1) > table[name]:
      upward.append(f"{target} (layer {table[target]})")
  assert not upward, f"{name} (layer {table[name]}) imports upward: {upward}"


def test_no_module_uses_another_modules_private_names():
  modules = _modules()
  short = {n.rsplit(".", 1)[-1] for n in modules}
  bad = []
  for name, path in modules.items():
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      if (
        isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and isinstance(node.value, ast.Name)
        and node.value.id in short
        and node.value.id != name.rsplit(".", 1)[-1]
      ):
        bad.append(f"{name}: {node.value.id}.{node.attr}")
  assert not bad, bad


# Modules that turn images into predictions: each goes through the core, from above it.
PREDICTORS = ("inference", "video", "labelling", "app", "evaluators.fewshot", "train.tuner")


@pytest.mark.parametrize("name", PREDICTORS)
def test_the_prediction_core_is_below_every_module_that_predicts(name):
  modules, table = _modules(), _table()
  imported = {_resolve(i, modules) for i in _imports(modules[name], name)}
  assert "predict" in imported, f"{name} predicts without incontext.predict"
  assert table["predict"] < table[name]
  assert "inference" not in {_resolve(i, modules) for i in _imports(modules["predict"], "predict")}
