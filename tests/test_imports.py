"""Imports point down only: no cycles (imports inside functions included), no library module importing the CLI,
the top-level package or an optional comparison library."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"

# A package imports only packages of lower layers (layer 0 also its own layer); modules of one package may
# import each other, without cycles.
LAYERS: Dict[str, int] = {
    "errors": 0, "_version": 0, "_validate": 0, "facts": 0, "folders": 0, "preserve": 0, "files": 0,
    "threads": 0,
    "defenses": 1, "data": 1,
    "models": 2,
    "attacks": 3,
    "masking": 4,
    "evaluation": 5, "training": 5,
    "cli": 6,
    "<top>": 7, "__main__": 7,
}
OPTIONAL = ("torchattacks", "foolbox", "eagerpy", "autoattack", "onnxruntime")


def _modules() -> Dict[str, Path]:
    modules = {}
    for path in (SOURCE / "gradconceal").rglob("*.py"):
        name = ".".join(path.relative_to(SOURCE).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(name: str, path: Path, modules: Dict[str, Path]) -> Tuple[Set[str], Set[str]]:
    """(gradconceal modules imported anywhere in the file, other top-level packages imported)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in submodules if t in modules]
            if len(targets) < len(submodules):
                targets.append(base)
        for target in targets:
            if target.split(".")[0] == "gradconceal":
                if target in modules and target != name:
                    inner.add(target)
            else:
                outer.add(target.split(".")[0])
    return inner, outer


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<top>"


@pytest.fixture(scope="module")
def graph() -> Dict[str, Tuple[Set[str], Set[str]]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_belongs_to_a_layer(graph) -> None:
    assert {_layer(m) for m in graph} <= set(LAYERS), "a new subpackage needs its place in LAYERS"


def test_imports_point_down_only(graph) -> None:
    upward = [f"{a} -> {b}" for a, (inner, _) in graph.items() for b in inner
              if _layer(a) != _layer(b) and LAYERS[_layer(a)] <= LAYERS[_layer(b)] and LAYERS[_layer(a)] > 0]
    assert upward == []


def test_no_module_imports_its_own_package_init(graph) -> None:
    own = [f"{a} -> {b}" for a, (inner, _) in graph.items() for b in inner if a.startswith(b + ".")]
    assert own == []


def test_no_import_cycles(graph) -> None:
    edges = {a: inner for a, (inner, _) in graph.items()}
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    assert cycles == []


def test_library_never_imports_optional_comparison_libraries(graph) -> None:
    found = [f"{m} imports {p}" for m, (_, outer) in graph.items() for p in outer if p in OPTIONAL]
    assert found == []
