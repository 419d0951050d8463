"""docs/plugins.md: every ```python block in the guide runs, as the guide presents it.

Blocks are run in order in one fresh interpreter with one namespace, the way a reader
types them in: a later block uses what an earlier one defined. A block that starts with
``# file: NAME`` is a file of a plugin's project instead: those are written into a
temporary project and pytest runs it (a few of the kit's tests, against localdir://).
Tracebacks point at the guide's own line numbers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
TIMEOUT = 120

pytestmark = pytest.mark.fuse  # the null:// and kit samples mount

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
_FILE = re.compile(r"# file: (\S+)\n")

_RUNNER = """
import ast, json, sys
guide, blocks = sys.argv[1], json.loads(sys.argv[2])
namespace = {"__name__": "__main__"}
for line, code in blocks:
    tree = ast.parse(code, guide)
    ast.increment_lineno(tree, line - 1)
    exec(compile(tree, guide, "exec"), namespace)
"""


def _blocks() -> list[tuple[int, str]]:
    """(first line in the guide, code) of every python block."""
    text = GUIDE.read_text()
    return [
        (text.count("\n", 0, match.start(1)) + 1, match.group(1))
        for match in _BLOCK.finditer(text)
    ]


def _require_examples() -> None:
    installed = {ep.name for ep in entry_points(group="rxfs.minirdr")}
    missing = {"null", "localdir"} - installed
    if missing:
        pytest.fail(
            f"the guide's samples use {', '.join(sorted(missing))}://: "
            "pip install -e examples/null -e examples/localdir"
        )


def test_the_guide_has_samples_of_each_kind() -> None:
    blocks = _blocks()
    files = [code for _, code in blocks if _FILE.match(code)]
    assert len(blocks) - len(files) >= 4
    assert len(files) == 2


def test_every_script_sample_runs(tmp_path: Path) -> None:
    _require_examples()
    scripts = [(line, code) for line, code in _blocks() if not _FILE.match(code)]
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(GUIDE), json.dumps(scripts)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_plugin_test_samples_run_the_kit(tmp_path: Path) -> None:
    _require_examples()
    for _, code in _blocks():
        match = _FILE.match(code)
        if match:
            (tmp_path / match.group(1)).write_text(code)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-k",
            "test_create_write_read_back or test_closed_file_is_on_the_server",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b2 passed\b", done.stdout), done.stdout
