"""A server that stops answering or restarts: errors come within the deadlines, never a
hang, and a server that comes back is used again without remounting (DESIGN §4)."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.conftest import MountFactory
from tests.support.checklogs import LOST_BYTES, RECONNECTS

from .conftest import FAST_OPTIONS, RigFactory
from .rig import RestartableSshd
from .scenarios import sshd_restart, stalled_server

pytestmark = pytest.mark.expect_log(
    *RECONNECTS, *LOST_BYTES, r"again: unmounting without waiting for the flush"
)

# Seconds allowed on top of the deadlines for the kernel, the threads and a busy CI box.
SLACK = 5.0


def test_stalled_server_fails_fsync_within_the_deadlines_then_recovers(
    rig_factory: RigFactory,
) -> None:
    rig = rig_factory(timeout="2", reconnect_timeout="4", ConnectTimeout="2")
    # A request times out (2 s), then reconnect attempts run for 4 s; an attempt that
    # started just before the deadline may take its ConnectTimeout (2 s) to give up.
    bound = 2 + 4 + 2 + SLACK
    outcome = stalled_server(
        rig.mnt, rig.server, rig.proxy.stall, rig.proxy.resume, give_up_after=bound
    )
    assert outcome.stalled_seconds < bound, outcome
    # DESIGN §4: a server that stays away past reconnect_timeout is EIO.
    assert outcome.stalled_fsync_errno == errno.EIO, outcome
    assert outcome.later_write_ok, outcome
    assert outcome.exact, outcome


def test_sshd_killed_and_restarted_while_writing_loses_nothing(
    sshd: LoopbackSshd, restartable: RestartableSshd, mount: MountFactory
) -> None:
    mounted = mount(sshd.url(), {**sshd.mount_options(), **FAST_OPTIONS})
    outcome = sshd_restart(mounted.path, sshd.root, restartable.kill, restartable.relaunch)
    assert "sshd killed" in outcome.notes[0], outcome
    assert outcome.exit_codes == [0], outcome
    assert not outcome.errors, outcome
    assert outcome.exact, outcome


def test_a_second_signal_unmounts_at_once_while_a_close_waits_on_a_stalled_server(
    rig_factory: RigFactory,
) -> None:
    # The write's own deadline is far away: only the forced unmount can end the wait.
    rig = rig_factory(timeout="60")
    fd = os.open(rig.mnt / "held", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"x" * 10_000)
    rig.proxy.stall()
    closed: list[int] = []

    def close() -> None:
        try:
            os.close(fd)
        except OSError as exc:
            closed.append(exc.errno)
        else:
            closed.append(0)

    closer = threading.Thread(target=close, daemon=True)
    try:
        closer.start()
        time.sleep(1.0)  # the close is now waiting for the server's answer
        assert not closed
        os.kill(rig.mount.pid, signal.SIGTERM)  # flush, then unmount: waits
        time.sleep(0.5)
        started = time.monotonic()
        os.kill(rig.mount.pid, signal.SIGTERM)  # unmount now
        assert rig.mount.wait_exit(SLACK), rig.mount.stderr()
        assert time.monotonic() - started < SLACK
        closer.join(SLACK)
    finally:
        rig.proxy.resume()
    # The close never claims bytes the server did not get, and the unmount names them.
    assert closed == [errno.ECONNABORTED]
    assert "not flushed: /held: bytes 0-10000 (unmount forced)" in rig.mount.stderr()
