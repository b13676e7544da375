"""The tree reads as the architecture: no import cycles between effbench's parts, and no part
imports another part's private names."""
from __future__ import annotations

import ast
from pathlib import Path

import effbench

ROOT = Path(effbench.__file__).parent
# Leaves every part may use; they import no other part.
SHARED = {"errors", "yamlfile", "registry", "cputime", "__init__", "__main__"}


def _part(module: str) -> str:
    """effbench.sensors.nvml -> sensors; effbench.planner -> planner."""
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _imports() -> list[tuple[str, str, str, int]]:
    """(importing part, imported module, imported name, line) for every effbench import outside TYPE_CHECKING."""
    found = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("effbench") and node.level == 0:
                for alias in node.names:
                    found.append((module, node.module, alias.name, node.lineno))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("effbench."):
                        found.append((module, alias.name, "", node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for importer, imported, _, _ in _imports():
        a, b = _part(importer), _part(imported)
        if a != b and b not in SHARED and a not in ("__init__", "__main__"):
            graph.setdefault(a, set()).add(b)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return cycles


def test_no_import_cycles_between_parts() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_private_names_across_parts() -> None:
    bad = [f"{imp} imports {name} from {mod} (line {line})" for imp, mod, name, line in _imports()
           if name.startswith("_") and _part(imp) != _part(mod)]
    assert bad == []
