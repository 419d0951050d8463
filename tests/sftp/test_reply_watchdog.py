"""A session whose requests go unanswered for ``reply_timeout`` dies, and every waiter
with it: also one that waits shielded from its caller's deadline, as a create's
OPEN+STAT does (issue 12: a create under a stopped ssh blocked for 625 s)."""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from rxfs.minirdr.sftp._engine import SftpError, SftpSession
from rxfs.minirdr.sftp._openssh import open_openssh_session
from rxfs.minirdr.sftp._pipes import PipeLink
from rxfs.minirdr.sftp._remotefile import RemoteFile
from rxfs.minirdr.sftp._settings import resolve_settings
from rxfs.minirdr.sftp._wire import OpenFlags, SftpStatusCode
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.unit._harness import trio_test

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.expect_log(r"no reply for 1 s to the oldest of 2 outstanding request"),
]

REPLY_TIMEOUT = 1.0
# If the watchdog did not end the wait, this ends it (by continuing ssh) and the
# test fails on the time taken instead of hanging.
RESCUE_AFTER = 6.0


async def _session(server: LoopbackSshd) -> SftpSession:
    settings = resolve_settings(urlsplit(server.url()), server.mount_options())
    token = trio.lowlevel.current_trio_token()
    session = await trio.to_thread.run_sync(lambda: open_openssh_session(settings, token))
    assert isinstance(session.link, PipeLink)
    return session


@trio_test
async def test_a_shielded_open_under_a_stopped_ssh_fails_once_the_session_is_quiet(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    session = await _session(sshd)
    session.reply_timeout = REPLY_TIMEOUT
    # Signalled through Popen: no signal reaches a PID that ssh, once reaped, left free.
    ssh = session.link.process
    target = sshd.root / f"{tmp_path.name}-new"
    flags = OpenFlags.SSH_FXF_WRITE | OpenFlags.SSH_FXF_CREAT
    ssh.send_signal(signal.SIGSTOP)
    try:
        async with trio.open_nursery() as nursery:

            async def rescue() -> None:
                await trio.sleep(RESCUE_AFTER)
                ssh.send_signal(signal.SIGCONT)

            nursery.start_soon(rescue)
            started = trio.current_time()
            with pytest.raises(SftpError) as failure:
                # The caller's own deadline passes first; the OPEN's reply is waited
                # for shielded from it, so only the watchdog can end the wait.
                with trio.move_on_after(0.1):
                    await RemoteFile.open(session, str(target), flags, 0o644)
            took = trio.current_time() - started
            nursery.cancel_scope.cancel()
    finally:
        ssh.send_signal(signal.SIGCONT)
        session.close()
        await trio.to_thread.run_sync(session.join)
    assert failure.value.code == SftpStatusCode.SSH_FX_CONNECTION_LOST
    assert REPLY_TIMEOUT <= took < REPLY_TIMEOUT + 2, took
    assert not session.alive
