"""The import graph of `camjax`: no cycles, and the layering the package is built on.

The graph is read statically (`ast`, nothing is imported), from every `.py` file under `camjax/`. Rules:

  * Every `import` / `from ... import` statement counts, wherever it is: module level, inside functions and methods
    (the lazy imports that keep start-up light), class bodies, `try` blocks and `if TYPE_CHECKING:` blocks. A
    function-local import still makes one module need the other, and a type-only import is still a dependency
    between layers; take a type from a lower layer (a `Protocol` there) instead of importing it from above.
  * Module A depends on module B when A imports B or a name from B. `from camjax.x import y` depends on the
    submodule `camjax.x.y` when there is one, else on `camjax.x` (the name is defined in its `__init__`). Relative
    imports are resolved against A's package. A target that does not exist resolves to its longest existing prefix.
  * Packages: `camjax/x/__init__.py` is the module `camjax.x`, with the dependencies of its own imports. Importing
    `camjax.x.y` also runs `camjax/x/__init__.py`, so it adds an (implicit) edge to `camjax.x` too, except when A is
    itself inside `camjax.x`: Python has already started that package before A runs, and counting it would make
    every `__init__` that re-exports its submodules a cycle with them. Importing a name from one's own package
    (`from camjax.x import name` inside `camjax.x.*`) is an explicit edge and does count.
  * Only import statements count: `importlib.import_module("camjax.methods.foo")` (the method registry's lazy,
    by-name loading) and `__import__` are not edges.
  * The layering rules below are on direct (explicit) imports; no cycles plus direct rules keep the layers apart.

A failure lists every cycle as `a -> b -> a` with the import statements (file:line, enclosing function) that make
each edge, and every layering violation with its statement and what to do instead.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import functools
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "camjax"


# ------------------------------------------------------------------------------------------------------ the graph
@dataclasses.dataclass(frozen=True)
class Edge:
  """One import statement of `source` that makes it depend on `target`."""

  source: str
  target: str
  file: str  # relative to the root folder
  line: int
  scope: str  # enclosing function/class ("" at module level)
  statement: str
  type_checking: bool = False
  implicit: bool = False  # the package `__init__` run by importing one of its submodules

  def where(self) -> str:
    notes = [f"in {self.scope}" if self.scope else "module level"]
    if self.type_checking:
      notes.append("under TYPE_CHECKING")
    if self.implicit:
      notes.append(f"implicit: runs the package __init__ of {self.target}")
    return f"{self.file}:{self.line} ({', '.join(notes)}): {self.statement}"


def module_files(root: Path, package: str) -> dict[str, Path]:
  """`{module name: file}` for every `.py` file of `package` under `root` (`__init__.py` is the package itself)."""
  out = {}
  for path in sorted((root / package).rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    out[".".join(parts)] = path
  return out


def _is_type_checking(test: ast.expr) -> bool:
  return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
      isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportCollector(ast.NodeVisitor):
  """The import statements of one module, with their enclosing scope and TYPE_CHECKING flag."""

  def __init__(self):
    self.found: list[tuple[ast.Import | ast.ImportFrom, str, bool]] = []
    self._scope: list[str] = []
    self._type_checking = 0

  def _scoped(self, node):
    self._scope.append(node.name)
    self.generic_visit(node)
    self._scope.pop()

  visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

  def visit_If(self, node: ast.If):
    if _is_type_checking(node.test):
      self._type_checking += 1
      for child in node.body:
        self.visit(child)
      self._type_checking -= 1
      for child in node.orelse:
        self.visit(child)
    else:
      self.generic_visit(node)

  def _record(self, node):
    self.found.append((node, ".".join(self._scope), self._type_checking > 0))

  visit_Import = visit_ImportFrom = _record


def _resolve(name: str, modules: dict) -> str | None:
  """The longest prefix of dotted `name` that is a module of the package (None: not the package's)."""
  parts = name.split(".")
  while parts:
    if ".".join(parts) in modules:
      return ".".join(parts)
    parts.pop()
  return None


def _ancestors(module: str) -> list[str]:
  parts = module.split(".")
  return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, list[Edge]]:
  """`{module: [Edge, ...]}` for every module of `package` (see the module docstring for what counts).

  Raises:
    SyntaxError: a file does not parse (named in the message).
  """
  modules = module_files(root, package)
  graph = {}
  for module, path in modules.items():
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    is_package = path.name == "__init__.py"
    own_package = module if is_package else module.rpartition(".")[0]
    collector = _ImportCollector()
    collector.visit(tree)
    edges = []
    for node, scope, type_checking in collector.found:
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      else:
        if node.level:
          base_parts = own_package.split(".")
          if node.level > 1:
            base_parts = base_parts[:-(node.level - 1)]
          base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
          base = node.module
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
      statement = " ".join((ast.get_source_segment(source, node) or "").split())
      file = path.relative_to(root).as_posix()
      for name in dict.fromkeys(targets):
        target = _resolve(name, modules)
        if target is None:
          continue
        if target != module:
          edges.append(Edge(module, target, file, node.lineno, scope, statement, type_checking))
        for parent in _ancestors(target):  # the package __init__s the import runs
          if parent not in _ancestors(module) and parent != module and parent in modules:
            edges.append(Edge(module, parent, file, node.lineno, scope, statement, type_checking, implicit=True))
    graph[module] = edges
  return graph


def strongly_connected_components(graph: dict[str, list[Edge]]) -> list[list[str]]:
  """Tarjan's algorithm (iterative); every component, each sorted, in no particular order."""
  succ = {m: sorted({e.target for e in edges if e.target in graph}) for m, edges in graph.items()}
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, 0)]
    while work:
      node, i = work.pop()
      if i == 0:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
      if i < len(succ[node]):
        work.append((node, i + 1))
        nxt = succ[node][i]
        if nxt not in index:
          work.append((nxt, 0))
        elif nxt in on_stack:
          low[node] = min(low[node], index[nxt])
        continue
      if low[node] == index[node]:
        comp = []
        while True:
          m = stack.pop()
          on_stack.discard(m)
          comp.append(m)
          if m == node:
            break
        out.append(sorted(comp))
      if work:
        parent = work[-1][0]
        low[parent] = min(low[parent], low[node])
  return out


def _shortest_path(graph, start: str, goal: str, within: set) -> list[str]:
  prev, queue = {start: None}, collections.deque([start])
  while queue:
    node = queue.popleft()
    if node == goal:
      break
    for e in graph[node]:
      if e.target in within and e.target not in prev:
        prev[e.target] = node
        queue.append(e.target)
  path, node = [], goal
  while node is not None:
    path.append(node)
    node = prev[node]
  return path[::-1]


def find_cycles(graph: dict[str, list[Edge]]) -> list[list[str]]:
  """Cycles `[a, b, ..., a]` that together use every edge inside every strongly connected component (the shortest
  cycle through each edge not yet covered), each starting at its smallest module, sorted."""
  cycles = set()
  for comp in strongly_connected_components(graph):
    if len(comp) < 2:
      continue
    members, covered = set(comp), set()
    for u in comp:
      for v in sorted({e.target for e in graph[u] if e.target in members}):
        if (u, v) in covered:
          continue
        cycle = [u] + _shortest_path(graph, v, u, members)
        covered.update(zip(cycle, cycle[1:]))
        i = cycle.index(min(cycle[:-1]))
        cycles.add(tuple(cycle[i:-1] + cycle[:i] + [cycle[i]]))
  return [list(c) for c in sorted(cycles)]


def describe_cycle(graph, cycle: list[str]) -> str:
  lines = [" -> ".join(cycle)]
  for u, v in zip(cycle, cycle[1:]):
    for e in graph[u]:
      if e.target == v:
        lines.append(f"    {u} -> {v}: {e.where()}")
  return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def _camjax_graph() -> dict[str, list[Edge]]:
  return import_graph(ROOT, PACKAGE)


# ------------------------------------------------------------------------------------------------------ the rules
def _under(module: str, *packages: str) -> bool:
  return any(module == p or module.startswith(p + ".") for p in packages)


METHOD_CORE = ("camjax.methods", "camjax.methods.base", "camjax.methods.registry")  # the interface and registry


def _paper_method(module: str) -> bool:
  """A module of one paper's method: under camjax.methods but not its interface or registry (`METHOD_CORE`)."""
  return _under(module, "camjax.methods") and module not in METHOD_CORE


LAYERING = {  # name: (source selector, forbidden-target selector, what to do instead)
    "train_is_method_agnostic": (
        lambda m: m == "camjax.train",
        lambda t: _under(t, "camjax.conditioning") or _paper_method(t),
        "camjax.train must not know any method: use camjax.methods.base (the interface) and the registry "
        "(camjax.methods / camjax.methods.registry, which loads a paper's module by name with importlib), and move "
        "method-specific code into that method's module."),
    "models_below_methods": (
        lambda m: _under(m, "camjax.models"),
        lambda t: _under(t, "camjax.conditioning", "camjax.methods", "camjax.train"),
        "camjax.models holds architectures only: take what a method adds (conditioning branch, extra inputs) as an "
        "argument or a hook defined in camjax.models, and let camjax.methods / camjax.conditioning plug it in."),
    "diffusion_below_models": (
        lambda m: _under(m, "camjax.diffusion"),
        lambda t: _under(t, "camjax.models", "camjax.conditioning", "camjax.methods", "camjax.train"),
        "camjax.diffusion (schedules, objectives, samplers, guidance) works on any model: take the model as a "
        "callable argument instead of importing it, and keep method-specific logic in camjax.methods."),
    "only_main_imports_train": (
        lambda m: m not in ("camjax.main", "camjax.train"),
        lambda t: t == "camjax.train",
        "only camjax.main may import camjax.train (inference paths such as camjax.explore and camjax.eval must "
        "not): move what is shared (model construction, checkpoint restore, config helpers) into a lower module "
        "that both import."),
}


def layering_violations(graph: dict[str, list[Edge]], rule: str) -> list[Edge]:
  sources, forbidden, _ = LAYERING[rule]
  out = []
  for module in sorted(graph):
    if sources(module):
      out += [e for e in graph[module] if not e.implicit and forbidden(e.target)]
  return out


# ------------------------------------------------------------------------------------------------------ the tests
def test_no_import_cycles():
  graph = _camjax_graph()
  cycles = find_cycles(graph)
  if cycles:
    pytest.fail(
        f"{len(cycles)} import cycle(s) in camjax (every import counts, function-local and TYPE_CHECKING ones too; "
        "see tests/test_imports.py). Break each by moving what both modules need into a third module that both "
        "import, or by reversing one dependency:\n\n" + "\n\n".join(describe_cycle(graph, c) for c in cycles),
        pytrace=False)


@pytest.mark.parametrize("rule", sorted(LAYERING))
def test_layering(rule):
  bad = layering_violations(_camjax_graph(), rule)
  if bad:
    pytest.fail(f"layering rule {rule!r} broken by {len(bad)} import(s):\n"
                + "\n".join(f"  {e.source} -> {e.target}: {e.where()}" for e in bad)
                + "\n" + textwrap.fill(LAYERING[rule][2], 116, initial_indent="What to do: ", subsequent_indent="  "),
                pytrace=False)


def test_graph_covers_the_package():
  graph = _camjax_graph()
  for module in ("camjax", "camjax.main", "camjax.train", "camjax.eval.__main__", "camjax.data.shards"):
    assert module in graph
  # a function-local import is an edge (write_shards loads the TFDS builder only when writing)
  assert any(e.target == "camjax.data.tfds_builder" and e.scope == "write_shards" for e in graph["camjax.data.shards"])


# ------------------------------------------------------------------------------------------------ the walker itself
def _write_package(root: Path, files: dict[str, str]) -> None:
  for rel, text in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_walker_finds_a_cycle_through_a_function_local_import(tmp_path):
  _write_package(tmp_path, {
      "pkg/__init__.py": "",
      "pkg/a.py": "from pkg.b import helper\n",
      "pkg/b.py": """
          def helper():
            from pkg import a  # the submodule pkg.a, imported lazily
            return a
          """,
      "pkg/c.py": "import pkg.a\n",
  })
  graph = import_graph(tmp_path, "pkg")
  assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
  text = describe_cycle(graph, ["pkg.a", "pkg.b", "pkg.a"])
  assert "pkg/b.py:3 (in helper): from pkg import a" in text and "pkg/a.py:1 (module level)" in text


def test_walker_finds_longer_cycles_and_type_checking_imports(tmp_path):
  _write_package(tmp_path, {
      "pkg/__init__.py": "",
      "pkg/a.py": "from . import b\n",
      "pkg/b.py": "from pkg.sub.c import X\n",
      "pkg/sub/__init__.py": "",
      "pkg/sub/c.py": """
          from typing import TYPE_CHECKING
          if TYPE_CHECKING:
            from ..a import Y
          X = 1
          """,
  })
  graph = import_graph(tmp_path, "pkg")
  assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
  assert [e.type_checking for e in graph["pkg.sub.c"]] == [True]
  # importing pkg.sub.c from outside pkg.sub also runs pkg/sub/__init__.py
  assert {(e.target, e.implicit) for e in graph["pkg.b"]} == {("pkg.sub.c", False), ("pkg.sub", True)}


def test_walker_sees_no_cycle_in_a_dag(tmp_path):
  _write_package(tmp_path, {
      # a package __init__ re-exporting its submodules is not a cycle with them
      "pkg/__init__.py": "from pkg.a import run\nfrom pkg import b\n",
      "pkg/a.py": """
          import importlib
          from pkg.b import value
          from .sub import d

          def run():
            from pkg import c  # lazy, still one-way
            importlib.import_module("pkg.plugin")  # by name: not an import statement
            return value + c.VALUE + d.VALUE
          """,
      "pkg/b.py": "import os\nimport pkg.c as c\nvalue = c.VALUE\n",
      "pkg/c.py": "VALUE = 1\n",
      "pkg/sub/__init__.py": "from pkg.sub.d import VALUE\n",
      "pkg/sub/d.py": "from pkg.c import VALUE\n",
      "pkg/plugin.py": "from pkg.a import run\n",
  })
  graph = import_graph(tmp_path, "pkg")
  assert find_cycles(graph) == []
  assert sorted({e.target for e in graph["pkg.a"]}) == ["pkg.b", "pkg.c", "pkg.sub", "pkg.sub.d"]
  assert {e.target for e in graph["pkg.b"]} == {"pkg.c"}  # `os` is not the package's


def test_walker_flags_importing_from_ones_own_package_init(tmp_path):
  _write_package(tmp_path, {
      "pkg/__init__.py": "from pkg.a import f\n",
      "pkg/a.py": "from pkg import CONSTANT\nf = CONSTANT\n",  # a name from pkg/__init__.py, not a submodule
  })
  assert find_cycles(import_graph(tmp_path, "pkg")) == [["pkg", "pkg.a", "pkg"]]


def test_layering_rules_on_examples():
  def graph_of(*edges):
    g = collections.defaultdict(list)
    for s, t in edges:
      g[s].append(Edge(s, t, "x.py", 1, "", f"import {t}"))
    return g

  g = graph_of(("camjax.train", "camjax.methods"), ("camjax.train", "camjax.methods.base"),
               ("camjax.train", "camjax.methods.registry"),
               ("camjax.train", "camjax.methods.cameractrl2"), ("camjax.train", "camjax.conditioning.cameractrl2"),
               ("camjax.models.wan", "camjax.conditioning"), ("camjax.models.wan", "camjax.geometry.plucker"),
               ("camjax.diffusion.samplers", "camjax.models.wan"), ("camjax.explore", "camjax.train"),
               ("camjax.main", "camjax.train"))
  assert [e.target for e in layering_violations(g, "train_is_method_agnostic")] == [
      "camjax.methods.cameractrl2", "camjax.conditioning.cameractrl2"]
  assert [e.target for e in layering_violations(g, "models_below_methods")] == ["camjax.conditioning"]
  assert [e.source for e in layering_violations(g, "diffusion_below_models")] == ["camjax.diffusion.samplers"]
  assert [e.source for e in layering_violations(g, "only_main_imports_train")] == ["camjax.explore"]
