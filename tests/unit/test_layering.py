"""rdbss/'s imports form a tree, not a circle, and never reach up into the front end.

Read from the source with :mod:`ast`, so that an import inside a function (a cycle
hidden from import time) counts as much as one at the top of a module. Imports under
``if TYPE_CHECKING:`` never run; they count too, except the few type-only edges listed
in :data:`TYPE_ONLY_UPWARD`, each with the reason it points up.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

RDBSS = Path(__file__).resolve().parents[2] / "rdbss"
PACKAGE = "rxfs.rdbss"

# Type-only imports allowed to point up the tree: (importer, imported) -> why. "*" is
# any importer.
TYPE_ONLY_UPWARD = {
    # The device builds the lazy writer, the reconnector and every RxContext and hands
    # itself down to them (``rx_context.device``): they name its type, never import it.
    ("*", "_device"): "the device is handed down to what it builds",
    # An IRP names the file object it targets (Windows' Irp->FileObject), and the
    # object tree is made of IRP types (AccessMask, FileAttributes).
    ("irp", "_objects"): "Irp.file_object is a Fobx",
}


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in RDBSS.glob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every import statement anywhere in ``tree`` (functions and classes included),
    with whether it sits under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), type_only)
        else:
            yield from _imports(node, type_only)


def _absolute_names(node: ast.AST) -> Iterator[str]:
    """The dotted names a statement imports, relative ones resolved against rxfs.rdbss."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        parts = PACKAGE.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
        module = ".".join(filter(None, [base, node.module or ""]))
        for alias in node.names:
            yield f"{module}.{alias.name}"


def _edges(modules: dict[str, ast.Module]) -> dict[tuple[str, str], bool]:
    """(importer, imported) -> True when every import of the edge is type-only."""
    edges: dict[tuple[str, str], bool] = {}
    for name, tree in modules.items():
        for node, type_only in _imports(tree):
            for dotted in _absolute_names(node):
                if not dotted.startswith(PACKAGE + "."):
                    continue
                parts = dotted[len(PACKAGE) + 1 :].split(".")
                # "from . import x" names module x, or a name of the package itself.
                target = parts[0] if parts[0] in modules else "__init__"
                if target != name:
                    key = (name, target)
                    edges[key] = edges.get(key, True) and type_only
    return edges


def _cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """One cycle of the graph, as the modules along it, or None."""
    graph: dict[str, list[str]] = {}
    for source, target in sorted(edges):
        graph.setdefault(source, []).append(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in graph.get(node, []):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _allowed_upward(edge: tuple[str, str]) -> bool:
    source, target = edge
    return (source, target) in TYPE_ONLY_UPWARD or ("*", target) in TYPE_ONLY_UPWARD


def test_the_modules_are_found() -> None:
    modules = _modules()
    assert {"_objects", "_readwrite", "_lowio", "_device", "irp", "ntstatus"} <= set(modules)


def test_rdbss_imports_that_run_form_no_cycle() -> None:
    """Imports at the top of a module and inside functions: a cycle through a function
    import is a circle all the same, only hidden from import time."""
    edges = _edges(_modules())
    cycle = _cycle({edge for edge, type_only in edges.items() if not type_only})
    assert cycle is None, "import cycle in rdbss/: " + " -> ".join(cycle or [])


def test_type_only_imports_point_up_only_where_listed() -> None:
    """A module that everyone needs imports none of the modules that use it, not even for
    its types; the type-only exceptions are listed, with why, in TYPE_ONLY_UPWARD."""
    edges = _edges(_modules())
    kept = {edge for edge, type_only in edges.items() if not (type_only and _allowed_upward(edge))}
    cycle = _cycle(kept)
    assert cycle is None, "import cycle in rdbss/ (types included): " + " -> ".join(cycle or [])
    # An allowed edge that runs would be a real cycle: the previous test catches it.


@pytest.mark.parametrize("forbidden", ["pyfuse3", "rxfs.fs"])
def test_rdbss_never_imports_the_front_end(forbidden: str) -> None:
    """DESIGN §1: fs -> rdbss -> minirdr protocol; the core never imports pyfuse3."""
    found = [
        f"{name}.py:{getattr(node, 'lineno', '?')} imports {dotted}"
        for name, tree in _modules().items()
        for node, _ in _imports(tree)
        for dotted in _absolute_names(node)
        if dotted == forbidden or dotted.startswith(forbidden + ".")
    ]
    assert not found, "\n".join(found)


def test_the_checks_see_function_level_and_type_only_imports() -> None:
    """The parser itself: an import inside a method and one under TYPE_CHECKING are
    both seen, the first as one that runs."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ._device import RxDevice\n"
        "class A:\n"
        "    def f(self):\n"
        "        from ._lowio import fill_write\n"
        "        import pyfuse3\n"
        "        from ..fs import _mount\n"
    )
    empty = ast.Module(body=[], type_ignores=[])
    edges = _edges({"_x": tree, "_device": empty, "_lowio": empty})
    assert edges == {("_x", "_device"): True, ("_x", "_lowio"): False}
    names = {dotted for node, _ in _imports(tree) for dotted in _absolute_names(node)}
    assert {"pyfuse3", "rxfs.fs._mount"} <= names
    assert _cycle({("a", "b"), ("b", "c"), ("c", "a")}) == ["a", "b", "c", "a"]
