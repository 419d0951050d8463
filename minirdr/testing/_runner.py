"""``rxfs conformance URL``: the suite run through pytest against one URL.

pytest runs in a private directory with a config of its own, so neither the pytest
settings nor the conftest.py files of wherever the user stands change the run.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

__all__ = ["run_conformance"]

_TEST_MODULE = """\
from rxfs.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    pass
"""

_CONFIG = """\
[pytest]
addopts = -ra -p no:cacheprovider
console_output_style = classic
"""


def run_conformance(url: str, options: Sequence[str] = (), pytest_args: Sequence[str] = ()) -> int:
    """Mount ``url`` (with ``rxfs mount -o`` ``options``), run the suite, print pytest's
    report; returns pytest's exit status (0 when every test passed or was skipped)."""
    # Registered as an object, not by name: this process has imported the plugin
    # already, and pytest cannot rewrite asserts in a module imported before it starts.
    plugin = sys.modules[__package__ or "rxfs.testing"]
    with tempfile.TemporaryDirectory(prefix="rxfs-conformance-run-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text(_CONFIG)
        module = root / "test_conformance.py"
        module.write_text(_TEST_MODULE)
        args = [
            "-c",
            str(root / "pytest.ini"),
            "--rootdir",
            str(root),
            f"--rxfs-url={url}",
            *(f"--rxfs-option={group}" for group in options),
            *pytest_args,
            str(module),
        ]
        return int(pytest.main(args, plugins=[plugin]))
