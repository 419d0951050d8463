"""Two rxfs mounts of one share, kept coherent by SMB3 leases (RxChangeBufferingState).

A mount caches a file's writes (in the core and in the kernel's writeback cache) only
while it holds the file's write lease; when another client opens the file, Samba breaks
that lease and holds the other open until the break is acknowledged, and rxfs lands the
bytes first. With ``-o leases=no`` nothing tells the writer, and its bytes stay in its
page cache until it closes the file (as on sftp://).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.smbd import LoopbackSmbd

if TYPE_CHECKING:
    from tests.conftest import Mount, MountFactory

pytestmark = pytest.mark.fuse

# Samba waits this long for an acknowledgement that never comes; an open that returns
# well within it was let through by one.
_UNACKNOWLEDGED_BREAK = 35.0
_OPEN_TIMEOUT = 20.0
_DATA = b"written through the first mount, the file still open\n" * 300


def _two_mounts(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory, **options: str
) -> tuple[Mount, Mount]:
    url = smbd.url(share.name)
    every = {**smbd.mount_options(), **options}
    return mount(url, every), mount(url, every)


def _read_elsewhere(path: Path) -> tuple[bytes, float]:
    """The file's bytes (open, read, close), and how long that took; bounded. Read
    from a thread, not a child process: a fork would copy the writer's descriptor, and
    its close at exec would flush the writer's pages (FUSE_FLUSH), lease or not."""
    got: list[bytes] = []
    started = time.monotonic()
    reader = threading.Thread(target=lambda: got.append(path.read_bytes()), daemon=True)
    reader.start()
    reader.join(_OPEN_TIMEOUT)
    took = time.monotonic() - started
    assert got, f"opening {path} did not return within {_OPEN_TIMEOUT:g} s"
    return got[0], took


def _write_held_open(path: Path) -> int:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, _DATA)
    return fd


def test_a_closed_file_reads_at_once_on_the_other_mount(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory
) -> None:
    first, second = _two_mounts(smbd, share, mount)
    (first.path / "f").write_bytes(b"old bytes, same size")
    assert _read_elsewhere(second.path / "f")[0] == b"old bytes, same size"
    (first.path / "f").write_bytes(b"new bytes, same size")
    assert _read_elsewhere(second.path / "f")[0] == b"new bytes, same size"


def test_an_open_on_the_other_mount_finds_bytes_held_open_on_the_server(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory
) -> None:
    """The writer holds the file open with its writes cached; the reader's open breaks
    the writer's lease, and returns once the writer's bytes are on the server."""
    first, second = _two_mounts(smbd, share, mount)
    fd = _write_held_open(first.path / "held")
    try:
        seen, took = _read_elsewhere(second.path / "held")
        on_server = (share / "held").read_bytes()
        # The connection goes on after the break, and so do the writer's writes.
        os.write(fd, b"tail")
    finally:
        os.close(fd)
    assert on_server == _DATA
    assert seen == _DATA
    assert took < _UNACKNOWLEDGED_BREAK / 4, f"the break was not acknowledged ({took:.1f} s)"
    assert (share / "held").read_bytes() == _DATA + b"tail"
    assert _read_elsewhere(second.path / "held")[0] == _DATA + b"tail"


def test_without_leases_bytes_held_open_stay_on_the_writer(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory
) -> None:
    """-o leases=no: the writer is never told, and the reader finds the file as the
    server has it (empty) until the writer closes it. The test above fails this way
    without leases."""
    first, second = _two_mounts(smbd, share, mount, leases="no")
    fd = _write_held_open(first.path / "held")
    try:
        seen, _ = _read_elsewhere(second.path / "held")
    finally:
        os.close(fd)
    assert seen == b""
    assert (share / "held").read_bytes() == _DATA
