"""A file changed on the server while the connection was down: the held bytes cannot
land, and the user hears why (DESIGN §4, README items 2-3).

Each test writes and fsyncs 1 MiB, cuts every connection at the proxy, changes the file
on the server (deletes it, renames it, makes it unwritable for the non-root account),
writes 1 MiB more and closes. rxfs reconnects once, cannot reopen the file, and fails
fsync() and close() with the errno that says why; it does not reconnect again and
again over the dead handle, and it never answers 0 for the lost MiB.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd, ensure_test_account

from tests.conftest import MountFactory
from tests.support.checklogs import LOST_BYTES, RECONNECTS
from tests.support.faultproxy import FaultProxy

from .conftest import FAST_OPTIONS, Rig
from .rig import MIB, endpoint_via, fresh_server_dir, pattern

pytestmark = pytest.mark.expect_log(*RECONNECTS, *LOST_BYTES)

# The whole scenario takes about a second; the bound is the request deadline
# (FAST_OPTIONS timeout=5) with room for a busy machine, far below reconnect_timeout
# times MAX_REPLAYS, which a reconnect loop would take.
BOUND = 15.0
RECONNECTING = "lost; reconnecting"


def _errno_of(call: Callable[[], object]) -> int:
    try:
        call()
    except OSError as exc:
        return exc.errno or -1
    return 0


def _write_cut_change_close(rig: Rig, change: Callable[[Path], None]) -> dict[str, int]:
    """The user's report, step by step; the errno of each call after the change."""
    first, second = pattern(1, MIB), pattern(2, MIB)
    fd = os.open(rig.mnt / "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, first)
        os.fsync(fd)
        assert (rig.server / "f").read_bytes() == first
        rig.proxy.cut_all()
        change(rig.server / "f")
        seen = {"write": _errno_of(lambda: os.write(fd, second))}
        seen["fsync"] = _errno_of(lambda: os.fsync(fd))
    finally:
        seen["close"] = _errno_of(lambda: os.close(fd))
    return seen


def _still_serves(rig: Rig) -> None:
    (rig.mnt / "after").write_bytes(b"fine")
    assert (rig.server / "after").read_bytes() == b"fine"


@pytest.mark.parametrize("change", ["deleted", "renamed"])
def test_a_file_gone_on_the_server_during_an_outage_fails_fsync_and_close_with_estale(
    rig: Rig, change: str
) -> None:
    def gone(path: Path) -> None:
        if change == "deleted":
            path.unlink()
        else:
            path.rename(path.with_name("moved"))

    started = time.monotonic()
    seen = _write_cut_change_close(rig, gone)
    elapsed = time.monotonic() - started
    log = rig.mount.stderr()

    # The write may be held (writeback) or refused at once; fsync and close both fail.
    assert seen["write"] in (0, errno.ESTALE), seen
    assert seen["fsync"] == errno.ESTALE, seen
    assert seen["close"] == errno.ESTALE, seen
    assert elapsed < BOUND, seen
    assert log.count(RECONNECTING) == 1, log
    # No file was made under the old name, and the renamed one has exactly the MiB
    # that landed before the outage.
    assert not (rig.server / "f").exists()
    if change == "renamed":
        assert (rig.server / "moved").read_bytes() == pattern(1, MIB)
    _still_serves(rig)


@pytest.fixture
def user_rig(tmp_path: Path, mount: MountFactory) -> Iterator[Rig]:
    """The rig for the non-root test account, for whom a chmod 0444 really denies."""
    account = ensure_test_account()
    with LoopbackSshd(account.pw_name) as sshd, FaultProxy((sshd.host, sshd.port)) as proxy:
        endpoint = endpoint_via(proxy, sshd, tmp_path)
        server = fresh_server_dir(sshd, "d")
        mounted = mount(endpoint.sftp_url(server), {**endpoint.rxfs_options(), **FAST_OPTIONS})
        yield Rig(sshd, proxy, endpoint, server, mounted)
        # Unmounted while sshd and the proxy still run (the mount fixture, set up
        # first, would otherwise unmount after they stopped).
        if mounted.mounted():
            subprocess.run(["fusermount3", "-u", str(mounted.path)], timeout=30, check=False)
        assert mounted.wait_exit(), mounted.stderr()


def test_a_file_made_read_only_during_an_outage_fails_fsync_and_close_with_eacces(
    user_rig: Rig,
) -> None:
    rig = user_rig
    started = time.monotonic()
    seen = _write_cut_change_close(rig, lambda path: path.chmod(0o444))
    elapsed = time.monotonic() - started
    log = rig.mount.stderr()

    assert seen["write"] in (0, errno.EACCES), seen
    assert seen["fsync"] == errno.EACCES, seen
    assert seen["close"] == errno.EACCES, seen
    assert elapsed < BOUND, seen
    assert log.count(RECONNECTING) == 1, log
    assert (rig.server / "f").read_bytes() == pattern(1, MIB)
    _still_serves(rig)
