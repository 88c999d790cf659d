"""The shape of the code: no import cycle inside mcal_jax, library files short enough to read
in one sitting, thin entry points, and no citation of files outside the repository."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LIBRARY_LINES = 400
MAX_LAUNCH_LINES = 60


def _python_files(folder):
    for base, _, names in os.walk(os.path.join(ROOT, folder)):
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(base, name)


def _module_name(path):
    relative = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
    return ".".join(relative[:-1] if relative[-1] == "__init__" else relative)


def _imports(path, modules):
    """The mcal_jax modules ``path`` imports, anywhere in the file (late imports too)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph():
    """module -> the mcal_jax modules it needs, counting a package's ``__init__`` as needed
    by whoever imports one of its modules from outside the package."""
    paths = {_module_name(p): p for p in _python_files("mcal_jax")}
    graph = {}
    for module, path in paths.items():
        needed = set()
        for name in _imports(path, paths):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                if prefix in paths and not module.startswith(prefix + "."):
                    needed.add(prefix)
        needed.discard(module)
        graph[module] = needed
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if state.get(other) == "open":
                return stack[stack.index(other) :] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_mcal_jax():
    graph = import_graph()
    assert "mcal_jax.run.loop" in graph["mcal_jax.run"]  # the graph sees package imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize("path", list(_python_files("mcal_jax")), ids=_module_name)
def test_library_files_are_short(path):
    with open(path) as f:
        assert sum(1 for _ in f) <= MAX_LIBRARY_LINES


@pytest.mark.parametrize("path", list(_python_files("launch")), ids=_module_name)
def test_entry_points_are_thin(path):
    with open(path) as f:
        assert sum(1 for _ in f) <= MAX_LAUNCH_LINES


def test_no_citation_of_files_outside_the_repository():
    cited = re.compile(r"MCAL_SPEC|\.\./shared|mcal-paper\.md")
    offenders = []
    for folder in ("mcal_jax", "configs", "launch", "benchmarks", "tests"):
        for path in _python_files(folder):
            with open(path) as f:
                if cited.search(f.read()) and not path.endswith("test_layout.py"):
                    offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []
