"""No import circles in `grlo_jax/`: every module-level and function-level import, read from the
source (ast), forms a graph without cycles, so no module needs a lazy import to break one."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "grlo_jax"


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = path.relative_to(root).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
  """{module: the package's modules it imports}; `from pkg import name` counts as importing the
  submodule `pkg.name` when one exists, else `pkg` itself."""
  files = {_module_name(p, root): p for p in (root / package).rglob("*.py")}
  graph = {}
  for name, path in files.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        deps |= {a.name for a in node.names if a.name in files}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module.split(".")[0] != package:
          continue
        for a in node.names:
          sub = f"{node.module}.{a.name}"
          deps.add(sub if sub in files else node.module)
    graph[name] = {d for d in deps if d in files and d != name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import circle as [a, b, ..., a], or None."""
  state = {}  # 1: on the current path, 2: done

  def visit(node, path):
    state[node] = 1
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == 1:
        return path[path.index(dep):] + [dep]
      if dep not in state and (cycle := visit(dep, path + [dep])):
        return cycle
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node, [node])):
      return cycle
  return None


def test_find_cycle_finds_a_planted_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles_in_the_package():
  graph = import_graph()
  assert "grlo_jax.rl.step" in graph and graph["grlo_jax.rl.step"], "the graph found no imports"
  cycle = find_cycle(graph)
  if cycle:
    pytest.fail("import circle: " + " -> ".join(cycle))
