"""A backend imports rxfs through one public face: ``rxfs.minirdr`` (``rxfs.testing`` in
its tests), never the core, the front end, pyfuse3 or a private module.

The built-in backends (minirdr/memory, minirdr/sftp) and the example plugins (examples/*/)
are what plugin authors copy, so they keep to the rule a third-party plugin is given in
docs/plugins.md. Read from the source with :mod:`ast`: an import inside a function or
under ``if TYPE_CHECKING:`` counts as much as one at the top of a module. A relative
import is fine while it stays inside the backend's own folder (sftp's modules import each
other); one that climbs out of it is refused.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import rxfs.minirdr
import rxfs.rdbss
import rxfs.rdbss.irp
import rxfs.testing

REPO = Path(__file__).resolve().parents[2]
BUILT_IN = ("memory", "sftp")

# The modules a backend may import from rxfs, with the names each one offers. (Only
# ``__all__`` is read from rxfs.testing: its lazy names load the kit's suite, which wants
# the kit's pytest plugin registered.)
PUBLIC_FACES: dict[str, types.ModuleType] = {
    "rxfs.minirdr": rxfs.minirdr,
    "rxfs.testing": rxfs.testing,
}
FRONT_END = ("pyfuse3", "rxfs.fs")

_SKIPPED_DIRS = {"__pycache__", "build", ".venv"}


def _backends() -> dict[str, Path]:
    """Backend name -> its folder: the built-in ones and every example distribution."""
    found = {name: REPO / "minirdr" / name for name in BUILT_IN}
    for project in sorted((REPO / "examples").glob("*/pyproject.toml")):
        found[project.parent.name] = project.parent
    return found


def _modules(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*.py")
        if not any(part in _SKIPPED_DIRS or part.endswith(".egg-info") for part in path.parts)
    )


def _is_import_call(node: ast.AST) -> bool:
    """``importlib.import_module("...")`` or ``__import__("...")`` with a literal name."""
    return (
        isinstance(node, ast.Call)
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
        )
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom | ast.Call]:
    """Every import anywhere in ``tree``: statements (in functions, classes and
    ``if TYPE_CHECKING:`` blocks too) and import calls with a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Call) and (
            not isinstance(node, ast.Call) or _is_import_call(node)
        ):
            yield node


def _refusal(module: str) -> str | None:
    """Why a backend may not import the absolute module ``module``, or None."""
    if module in PUBLIC_FACES:
        return None
    for forbidden in FRONT_END:
        if module == forbidden or module.startswith(forbidden + "."):
            return "the front end: a backend never sees FUSE"
    if module == "rxfs.rdbss" or module.startswith("rxfs.rdbss."):
        return "the core: import the name from rxfs.minirdr"
    if module == "rxfs" or module.startswith("rxfs."):
        return "not a public face: import from rxfs.minirdr (or rxfs.testing in tests)"
    return None


def violations(root: Path, path: Path) -> list[str]:
    """What ``path``, a module of the backend in ``root``, imports against the rule."""
    found: list[str] = []
    where = path.relative_to(root.parent)

    def refuse(node: ast.AST, what: str, why: str) -> None:
        found.append(f"{where}:{getattr(node, 'lineno', '?')}: {what}: {why}")

    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            arg = node.args[0]
            assert isinstance(arg, ast.Constant)
            name = str(arg.value)
            if (why := _refusal(name)) is not None:
                refuse(node, f"imports {name}", why)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if (why := _refusal(alias.name)) is not None:
                    refuse(node, f"import {alias.name}", why)
        elif node.level:
            package = path.parent
            for _ in range(node.level - 1):
                package = package.parent
            if not package.is_relative_to(root):
                what = f"from {'.' * node.level}{node.module or ''} import ..."
                refuse(node, what, "a relative import that leaves the backend's own folder")
        elif node.module == "rxfs":
            for alias in node.names:
                if (why := _refusal(f"rxfs.{alias.name}")) is not None:
                    refuse(node, f"from rxfs import {alias.name}", why)
        elif node.module is not None and (why := _refusal(node.module)) is not None:
            refuse(node, f"from {node.module} import ...", why)
        elif node.module in PUBLIC_FACES:
            public = set(PUBLIC_FACES[node.module].__all__)
            for alias in node.names:
                if alias.name not in public:
                    why = f"not in {node.module}.__all__"
                    refuse(node, f"from {node.module} import {alias.name}", why)
    return found


def test_every_backend_and_example_is_found() -> None:
    backends = _backends()
    assert {"memory", "sftp", "localdir", "null"} <= set(backends)
    for name, root in backends.items():
        assert _modules(root), f"no modules found for {name} in {root}"


@pytest.mark.parametrize("backend", sorted(_backends()))
def test_a_backend_imports_only_the_public_face(backend: str) -> None:
    root = _backends()[backend]
    found = [line for path in _modules(root) for line in violations(root, path)]
    assert not found, "\n".join(found)


def test_every_public_name_resolves() -> None:
    """``from rxfs.minirdr import *`` works, and every name is the core's own object, not
    a copy that isinstance() checks in the core would refuse."""
    names = list(rxfs.minirdr.__all__)
    assert len(names) == len(set(names)), "rxfs.minirdr.__all__ repeats a name"
    namespace: dict[str, object] = {}
    exec("from rxfs.minirdr import *", namespace)
    assert set(names) <= set(namespace)
    for name in names:
        assert not isinstance(namespace[name], types.ModuleType), name
        for core in (rxfs.rdbss, rxfs.rdbss.irp):
            if hasattr(core, name):
                assert namespace[name] is getattr(core, name), name


@pytest.mark.parametrize(
    ("first", "never_loaded"),
    [
        ("rxfs.rdbss", ("rxfs.minirdr", "rxfs.fs", "pyfuse3")),
        ("rxfs.minirdr", ("rxfs.fs", "pyfuse3")),
        ("rxfs.minirdr.memory", ("rxfs.fs", "pyfuse3")),
        ("rxfs.minirdr.sftp", ("rxfs.fs", "pyfuse3")),
        ("rxfs_localdir", ("rxfs.fs", "pyfuse3")),
        ("rxfs_null", ("rxfs.fs", "pyfuse3")),
        ("rxfs.testing", ("rxfs.fs", "pyfuse3")),
    ],
)
def test_each_module_imports_first_in_a_fresh_interpreter(
    first: str, never_loaded: tuple[str, ...]
) -> None:
    """No import cycle between the face and the core, whichever is imported first, and
    neither drags in the front end; the core never imports rxfs.minirdr at run time."""
    script = (
        f"import sys, {first}\n"
        f"loaded = [m for m in {never_loaded!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_check_sees_every_way_out(tmp_path: Path) -> None:
    """The checker itself: imports in functions and under TYPE_CHECKING, a relative
    import that climbs out of the backend, a private name from the face, importlib."""
    root = tmp_path / "mybackend"
    (root / "pkg").mkdir(parents=True)
    module = root / "pkg" / "_impl.py"
    module.write_text(
        "from __future__ import annotations\n"
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "import trio\n"
        "import rxfs.minirdr\n"
        "from rxfs.minirdr import NtStatus, RxContext\n"
        "from rxfs.testing import errno_for\n"
        "from . import _wire\n"
        "from ..tests import helpers\n"
        "if TYPE_CHECKING:\n"
        "    from rxfs.rdbss import Fcb\n"  # 11
        "def f():\n"
        "    from rxfs.minirdr._protocol import Capability\n"  # 13
        "    import pyfuse3.asyncio\n"  # 14
        "    from rxfs import fs\n"  # 15
        "    from rxfs.minirdr import _registry\n"  # 16
        "    from ... import outside\n"  # 17
        "    importlib.import_module('rxfs.rdbss.irp')\n"  # 18
        "    from rxfs.rdbss.ntstatus import NtStatus\n"  # 19
    )
    lines = {int(line.split(":")[1]) for line in violations(root, module)}
    assert lines == {11, 13, 14, 15, 16, 17, 18, 19}
