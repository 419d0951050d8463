"""Fixtures for the reliability tests: a loopback sshd per test that needs to break it,
a fault proxy in front of it, and rxfs mounts of a fresh server directory.

Timeouts are small (``-o timeout``, ``reconnect_timeout``, ``ConnectTimeout``) so that
each fault plays out in seconds. FUSE or sshd missing fails the tests (tests/conftest.py
and LoopbackSshd see to that).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.support.faultproxy import FaultProxy

from .rig import Endpoint, RestartableSshd, endpoint_via, fresh_server_dir

if TYPE_CHECKING:
    from tests.conftest import Mount, MountFactory

# Fast enough to see each fault through in a few seconds, slow enough not to fire on a
# busy CI machine by mistake.
FAST_OPTIONS = {"timeout": "5", "reconnect_timeout": "10", "ConnectTimeout": "3"}
_dirs = itertools.count()


@dataclass
class Rig:
    """One rxfs mount of ``server`` (a fresh directory) through ``proxy`` to ``sshd``."""

    sshd: LoopbackSshd
    proxy: FaultProxy
    endpoint: Endpoint
    server: Path
    mount: Mount

    @property
    def mnt(self) -> Path:
        return self.mount.path


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[LoopbackSshd]:
    """A sshd of this test's own: the tests kill its sessions or the server itself."""
    root = tmp_path / "root"
    root.mkdir()
    with LoopbackSshd(root=root) as server:
        yield server


@pytest.fixture
def restartable(sshd: LoopbackSshd) -> Iterator[RestartableSshd]:
    server = RestartableSshd(sshd)
    yield server
    server.close()


@pytest.fixture
def proxy(sshd: LoopbackSshd) -> Iterator[FaultProxy]:
    with FaultProxy((sshd.host, sshd.port)) as running:
        yield running


class RigFactory(Protocol):
    def __call__(self, **options: str) -> Rig: ...


@pytest.fixture
def rig_factory(
    sshd: LoopbackSshd, proxy: FaultProxy, mount: MountFactory, tmp_path: Path
) -> RigFactory:
    """``rig_factory(**options)`` mounts a fresh server directory with extra ``-o``.

    ``mount`` comes after ``sshd`` and ``proxy`` so that it is torn down (unmounted,
    flushed) while they still run.
    """

    def make(**options: str) -> Rig:
        endpoint = endpoint_via(proxy, sshd, tmp_path)
        server = fresh_server_dir(sshd, f"d{next(_dirs)}")
        mounted = mount(
            endpoint.sftp_url(server), {**endpoint.rxfs_options(), **FAST_OPTIONS, **options}
        )
        return Rig(sshd, proxy, endpoint, server, mounted)

    return make


@pytest.fixture
def rig(rig_factory: RigFactory) -> Rig:
    return rig_factory()
