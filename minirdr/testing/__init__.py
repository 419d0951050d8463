"""The conformance kit for mini-redirectors, as a pytest plugin.

``rxfs conformance URL`` mounts the backend that serves URL and runs the behavioural suite
against the mount. A backend's own tests run the same suite::

    # tests/conftest.py
    pytest_plugins = ["rxfs.testing"]

    # tests/test_conformance.py
    import pytest
    from rxfs.testing import ConformanceSuite

    @pytest.fixture(scope="class")
    def rxfs_url(tmp_path_factory: pytest.TempPathFactory) -> str:
        return f"localdir://{tmp_path_factory.mktemp('share')}"

    class TestLocalDir(ConformanceSuite):
        pass

Fixtures (class-scoped unless said otherwise): ``rxfs_url`` (from ``--rxfs-url`` unless
overridden), ``rxfs_options`` (``-o`` mount options, from ``--rxfs-option``),
``rxfs_mount`` (the running mount), ``rxfs_second_mount`` (a second mount of the same
URL, for the tests that need another client), ``rxfs_dir`` (per test: a fresh empty
directory on the mount). The kit mounts with ``rxfs mount -f`` in a subprocess and never
imports pyfuse3.

``errno_for(status)`` is the errno a user sees for an NTSTATUS (the front end's one
table), for a backend's tests of its own error table. It is imported from ``rxfs.fs`` on
first use, which loads pyfuse3 into the test process; the kit itself never uses it.
"""

from __future__ import annotations

import importlib
import itertools
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from rxfs.minirdr import Capability
from rxfs.rdbss import parse_option_groups

from ._mount import MountedBackend, MountError, backend_capabilities, mount_backend
from ._runner import run_conformance

if TYPE_CHECKING:
    from rxfs.fs import errno_for

    from ._suite import ConformanceSuite, expect_errno, requires

__all__ = [
    "ConformanceSuite",
    "MountError",
    "MountedBackend",
    "backend_capabilities",
    "errno_for",
    "expect_errno",
    "mount_backend",
    "requires",
    "run_conformance",
]

# A test blocked this long on the mount gets the mount process killed: every blocked call
# then fails (ENOTCONN) and the run ends with failures instead of hanging.
TEST_TIMEOUT = 120.0

_SUITE = f"{__name__}._suite"
_LAZY = {"ConformanceSuite", "expect_errno", "requires"}
_test_dirs = itertools.count()


def __getattr__(name: str) -> Any:
    # The suite is imported on first use, after pytest's assertion rewriting is in place,
    # so that a failing check reports the values it compared.
    if name in _LAZY:
        return getattr(importlib.import_module(_SUITE), name)
    if name == "errno_for":
        # Only on request: rxfs.fs loads pyfuse3, which the kit's own code never needs.
        return importlib.import_module("rxfs.fs").errno_for
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rxfs", "rxfs conformance kit")
    group.addoption("--rxfs-url", help="URL of the backend to mount (rxfs_url fixture)")
    group.addoption(
        "--rxfs-option",
        action="append",
        default=[],
        metavar="opt[=val],...",
        help="rxfs mount -o options for the backend (repeatable)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "rxfs_requires(capability): skip unless the backend declares capability"
    )
    if _SUITE not in sys.modules:
        pytest.register_assert_rewrite(_SUITE)


@pytest.fixture(scope="class")
def rxfs_url(request: pytest.FixtureRequest) -> str:
    url: str | None = request.config.getoption("--rxfs-url")
    if not url:
        pytest.fail("no backend to test: pass --rxfs-url=URL or override the rxfs_url fixture")
    return url


@pytest.fixture(scope="class")
def rxfs_options(request: pytest.FixtureRequest) -> dict[str, str]:
    return parse_option_groups(request.config.getoption("--rxfs-option"))


@pytest.fixture(scope="class")
def rxfs_mount(rxfs_url: str, rxfs_options: dict[str, str]) -> Iterator[MountedBackend]:
    """The backend mounted on a temporary directory; unmounted (and checked) after."""
    with mount_backend(rxfs_url, rxfs_options) as mounted:
        yield mounted


@pytest.fixture(scope="class")
def rxfs_workdir(rxfs_mount: MountedBackend) -> Iterator[Path]:
    """Where the tests make their files, removed at the end: the URL may name a share
    that holds other files."""
    path = rxfs_mount.path / f"rxfs-conformance-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    if rxfs_mount.process.poll() is None:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="class")
def rxfs_second_mount(
    rxfs_mount: MountedBackend, rxfs_url: str, rxfs_options: dict[str, str]
) -> Iterator[MountedBackend]:
    """Another client of the same share. No attribute or name caching, so that it sees
    what the server holds now. Only backends that declare PERSISTENT share their files
    between mounts."""
    _require(rxfs_mount, Capability.PERSISTENT)
    options = {**rxfs_options, "attr_timeout": "0", "entry_timeout": "0"}
    with mount_backend(rxfs_url, options) as mounted:
        yield mounted


@pytest.fixture
def rxfs_dir(request: pytest.FixtureRequest, rxfs_mount: MountedBackend) -> Iterator[Path]:
    """A fresh empty directory on the mount for one test; removed after it."""
    # Capabilities first: a backend that cannot even make the work directory still
    # gets its skips reported as skips.
    for marker in request.node.iter_markers("rxfs_requires"):
        _require(rxfs_mount, marker.args[0])
    if rxfs_mount.process.poll() is not None:
        pytest.fail(f"the mount process has exited:\n{rxfs_mount.output()}")
    workdir: Path = request.getfixturevalue("rxfs_workdir")
    path = workdir / f"{next(_test_dirs):03d}-{request.node.name[:60]}"
    path.mkdir()
    watchdog = threading.Timer(TEST_TIMEOUT, rxfs_mount.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield path
    finally:
        watchdog.cancel()
    shutil.rmtree(path, ignore_errors=True)


def _require(mounted: MountedBackend, capability: Capability) -> None:
    if capability not in mounted.capabilities:
        scheme = mounted.url.split(":", 1)[0]
        pytest.skip(f"{scheme}:// does not declare Capability.{capability.name}")
