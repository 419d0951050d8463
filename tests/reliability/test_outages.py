"""A server that stops answering or restarts: errors come within the deadlines, never a
hang, and a server that comes back is used again without remounting (DESIGN §4)."""

from __future__ import annotations

import errno

from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.conftest import MountFactory

from .conftest import FAST_OPTIONS, RigFactory
from .rig import RestartableSshd
from .scenarios import sshd_restart, stalled_server

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
