"""End-to-end fixtures: a real FUSE mount of sftp:// on a loopback OpenSSH sshd.

``target`` is parametrized on sftp:// (the one that matters) and memory:// (cheap, and a
reference for the same tests). Each test mounts a fresh directory of its own, so tests
never see each other's files; ``target.server`` is that directory on the server side,
where the tests check the bytes that landed. memory:// has no server directory: there the
checks read back through the mount instead.

The sshd fixtures of tests/sftp/conftest.py are not visible from this directory, so this
file starts its own servers (once per session). Missing FUSE or sshd fails the tests: the
mount helper of tests/conftest.py fails without FUSE, LoopbackSshd raises without sshd.
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
from rxfs.minirdr.sftp.loopback import LoopbackSshd, ensure_test_account, shared_password

from tests.integration.integration_support import Target

if TYPE_CHECKING:
    from tests.conftest import MountFactory

BACKENDS = ("sftp", "memory")
_test_dirs = itertools.count()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """sshd on 127.0.0.1 logging in root by key; its root is a pytest temp dir."""
    with LoopbackSshd(root=tmp_path_factory.mktemp("sftp-root")) as server:
        yield server


@pytest.fixture(scope="session")
def sshd_user() -> Iterator[LoopbackSshd]:
    """sshd for the non-root test account; its root is a dir owned by that account."""
    account = ensure_test_account()
    with LoopbackSshd(account.pw_name, password=shared_password(account.pw_name)) as server:
        yield server


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


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, mount: MountFactory) -> Iterator[Target]:
    """A fresh mounted directory on each backend; the server side is removed after."""
    backend: str = request.param
    if backend == "memory":
        mounted = mount("memory://")
        yield Target("memory", mounted.path, mounted, None)
        return
    server: LoopbackSshd = request.getfixturevalue("sshd")
    result = mount_sftp(mount, server)
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
