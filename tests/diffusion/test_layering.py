"""camjax.diffusion has no import cycles, counting imports inside functions (the errors live on the bottom floor)."""

import ast
import pathlib

import camjax.diffusion

PACKAGE = "camjax.diffusion"
ROOT = pathlib.Path(camjax.diffusion.__file__).parent


def _module(path: pathlib.Path) -> str:
  return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def _imports(path: pathlib.Path, modules: set) -> set:
  """The camjax.diffusion modules a file imports anywhere in its body (top level or inside functions)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name in modules}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
      for a in node.names:
        sub = f"{node.module}.{a.name}"
        found.add(sub if sub in modules else node.module)
  return found


def test_no_import_cycles_including_local_imports():
  paths = sorted(ROOT.glob("*.py"))
  modules = {_module(p) for p in paths}
  graph = {_module(p): _imports(p, modules) - {_module(p)} for p in paths}
  assert graph[f"{PACKAGE}.errors"] == set() and graph[f"{PACKAGE}.schedules"] == {f"{PACKAGE}.errors"}
  done, visiting = set(), []

  def visit(m):
    assert m not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(m):] + [m])}"
    if m in done:
      return
    visiting.append(m)
    for n in sorted(graph[m]):
      visit(n)
    visiting.pop()
    done.add(m)

  for m in sorted(graph):
    visit(m)


def test_diffusion_error_is_importable_from_its_old_homes():
  from camjax.diffusion import DiffusionError
  from camjax.diffusion.errors import DiffusionError as from_errors
  from camjax.diffusion.objectives import DiffusionError as from_objectives
  from camjax.errors import CamjaxError
  assert DiffusionError is from_errors is from_objectives
  assert issubclass(DiffusionError, CamjaxError) and issubclass(DiffusionError, ValueError)
