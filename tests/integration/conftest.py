"""End-to-end fixtures: real FUSE mounts of sftp:// on a loopback OpenSSH sshd and of
smb:// on a loopback Samba smbd.

``target`` is parametrized on sftp:// (the one that matters), memory:// (cheap, and a
reference for the same tests) and, for the ordinary-tool tests, smb:// (the second real
mini-redirector, on the session's smbd of tests/conftest.py). Each test mounts a fresh
directory of its own, so tests never see each other's files; ``target.server`` is that
directory on the server side, where the tests check the bytes that landed. memory:// has
no server directory: there the checks read back through the mount instead.

The sshd fixtures of tests/support/sshd.py are imported here to be visible in this
directory, which so has servers of its own (once per session). Missing FUSE, sshd or smbd
fails the tests: the mount helper of tests/conftest.py fails without FUSE, LoopbackSshd
and LoopbackSmbd raise without their servers.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.integration.integration_support import Target
from tests.support.smbd import LoopbackSmbd
from tests.support.sshd import sshd, sshd_user

if TYPE_CHECKING:
    from tests.conftest import MountFactory

__all__ = ["sshd", "sshd_user"]

# Every test with ``target`` runs on these. smb:// runs the ordinary-tool tests issue 15
# names (marked ordinary_tool: cp, dd, tar, git, appends, rename-over, truncate, the
# model test): the other smb:// variants would add ~90 s of CI, and tests/smb covers
# the rest of the backend.
BACKENDS = ("sftp", "memory")
_test_dirs = itertools.count()


def fresh_server_dir(server: LoopbackSshd) -> tuple[Path, str]:
    """A new empty directory under the served root, owned by the login user."""
    name = f"t{os.getpid()}-{next(_test_dirs)}"
    path = server.root / name
    path.mkdir()
    owner = server.root.stat()
    os.chown(path, owner.st_uid, owner.st_gid)
    return path, name


def mount_sftp(mount: MountFactory, server: LoopbackSshd, **options: str) -> Target:
    path, name = fresh_server_dir(server)
    mounted = mount(server.url(name), {**server.mount_options(), **options})
    return Target("sftp", mounted.path, mounted, path)


def mount_smb(mount: MountFactory, server: LoopbackSmbd, **options: str) -> Target:
    path = server.fresh_dir()
    mounted = mount(server.url(path.name), {**server.mount_options(), **options})
    return Target("smb", mounted.path, mounted, path)


@pytest.fixture
def target(request: pytest.FixtureRequest, mount: MountFactory) -> Iterator[Target]:
    """A fresh mounted directory on each backend (pytest_generate_tests below); the
    server side is removed after."""
    backend: str = request.param
    if backend == "memory":
        mounted = mount("memory://")
        yield Target("memory", mounted.path, mounted, None)
        return
    if backend == "smb":
        result = mount_smb(mount, request.getfixturevalue("smbd"))
    else:
        result = mount_sftp(mount, request.getfixturevalue("sshd"))
    yield result
    remove_server_dir(result)


@pytest.fixture
def sftp_target(mount: MountFactory, sshd: LoopbackSshd) -> Iterator[Target]:
    """sftp:// only, for tests about the server side itself."""
    result = mount_sftp(mount, sshd)
    yield result
    remove_server_dir(result)


def remove_server_dir(target: Target) -> None:
    """Unmount first (the mount fixture then finds nothing to do), then drop the files."""
    if target.mount.mounted():
        subprocess.run(["fusermount3", "-u", str(target.mnt)], timeout=30, check=False)
    target.mount.wait_exit()
    assert target.server is not None
    shutil.rmtree(target.server, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``target`` runs on BACKENDS, and an ``ordinary_tool`` test on smb:// too; a test
    that parametrizes ``target`` itself decides for itself."""
    if "target" not in metafunc.fixturenames or _parametrizes_target(metafunc.definition):
        return
    backends = list(BACKENDS)
    if metafunc.definition.get_closest_marker("ordinary_tool") is not None:
        backends.insert(1, "smb")
    metafunc.parametrize("target", backends, indirect=True)


def _parametrizes_target(definition: pytest.Function) -> bool:
    for mark in definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "target" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return True
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whatever here needs a loopback sshd is an sshd test: tests/conftest.py then turns a
    # skip into a failure (DESIGN §8).
    here = Path(__file__).parent
    for item in items:
        if here not in item.path.parents:
            continue
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        on_sftp = callspec is not None and callspec.params.get("target") == "sftp"
        if on_sftp or names & {"sshd", "sshd_user", "sftp_target", "full_target"}:
            item.add_marker(pytest.mark.sshd)
