"""``-o transport=openssh``: SFTP over the system's ssh client, against the loopback sshd."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ParamSpec
from urllib.parse import urlsplit

import pytest
import trio
from rxfs.minirdr.sftp._connect import HostKeyPolicy, resolve_settings
from rxfs.minirdr.sftp._engine import SftpSession
from rxfs.minirdr.sftp._openssh import open_openssh_session, ssh_argv
from rxfs.minirdr.sftp._pipes import PipeLink
from rxfs.minirdr.sftp._wire import OpenFlags
from rxfs.minirdr.sftp.loopback import LoopbackSshd
from rxfs.rdbss import NtStatus, NtStatusError
from rxfs.rdbss.irp import CreateDisposition

from tests.sftp.test_minirdr import mount_error, mounted
from tests.unit._harness import close, open_file, read_bytes, stat_path, write

P = ParamSpec("P")

pytestmark = pytest.mark.sshd


def trio_test(fn: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        async def main() -> None:
            with trio.fail_after(60):
                await fn(*args, **kwargs)

        trio.run(main)

    return wrapper


async def _session(server: LoopbackSshd, **options: str) -> SftpSession:
    settings = resolve_settings(urlsplit(server.url()), {**server.mount_options(), **options})
    token = trio.lowlevel.current_trio_token()
    return await trio.to_thread.run_sync(lambda: open_openssh_session(settings, token))


def test_ssh_argv_passes_the_resolved_settings_and_never_prompts(sshd: LoopbackSshd) -> None:
    settings = resolve_settings(
        urlsplit(sshd.url()), {**sshd.mount_options(), "StrictHostKeyChecking": "accept-new"}
    )
    argv = ssh_argv(settings)
    assert argv[-4:] == ["-s", "--", "127.0.0.1", "sftp"]
    for option in (
        "-oBatchMode=yes",
        f"-oPort={sshd.port}",
        f"-oUser={sshd.user}",
        f"-oIdentityFile={sshd.client_key_path}",
        f"-oUserKnownHostsFile={sshd.known_hosts_path}",
        f"-oStrictHostKeyChecking={HostKeyPolicy.ACCEPT_NEW.value}",
    ):
        assert option in argv


@trio_test
async def test_a_session_over_ssh_writes_and_reads_large_files(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    workdir = sshd.root / tmp_path.name
    workdir.mkdir()
    data = os.urandom(5 * 1024 * 1024 + 11)
    session = await _session(sshd)
    try:
        remote, _ = await session.open_file(
            str(workdir / "f"),
            OpenFlags.SSH_FXF_READ | OpenFlags.SSH_FXF_WRITE | OpenFlags.SSH_FXF_CREAT,
            0o644,
        )
        await remote.write(0, data)
        assert await remote.read(0, len(data) + 10) == data
        await remote.close()
        assert session.stats.largest_write_request == session.max_write > 32768
    finally:
        session.close()
        await trio.to_thread.run_sync(session.join)
    assert (workdir / "f").read_bytes() == data


@trio_test
async def test_an_unknown_host_key_is_refused_with_what_ssh_said(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(NtStatusError) as refused:
        await _session(sshd, UserKnownHostsFile=str(empty))
    assert refused.value.status == NtStatus.STATUS_ACCESS_DENIED
    assert "Host key verification failed" in refused.value.message


@trio_test
async def test_a_wrong_key_is_a_logon_failure(sshd: LoopbackSshd, tmp_path: Path) -> None:
    stranger = tmp_path / "id_ed25519"
    await trio.run_process(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)])
    with pytest.raises(NtStatusError) as refused:
        await _session(sshd, IdentityFile=str(stranger))
    assert refused.value.status == NtStatus.STATUS_LOGON_FAILURE


@trio_test
async def test_the_mini_redirector_runs_on_the_openssh_transport(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    share = sshd.root / tmp_path.name
    share.mkdir()
    big = os.urandom(3 * 1024 * 1024 + 5)
    async with mounted(sshd, share, transport="openssh", max_conns="1") as (device, minirdr):
        assert minirdr.pool.transports == []
        fobx = await open_file(device, "/f", CreateDisposition.FILE_CREATE)
        assert (await write(device, fobx, 0, big)).information == len(big)
        assert await read_bytes(device, fobx, 0, len(big)) == big
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
    assert (share / "f").read_bytes() == big


@trio_test
async def test_an_unknown_transport_is_an_invalid_parameter(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    share = sshd.root / tmp_path.name
    share.mkdir()
    failure = await mount_error(sshd, share, transport="telnet")
    assert failure.status == NtStatus.STATUS_INVALID_PARAMETER
    assert "transport=telnet" in str(failure)


@trio_test
async def test_a_dropped_ssh_connection_is_reconnected(sshd: LoopbackSshd, tmp_path: Path) -> None:
    share = sshd.root / tmp_path.name
    share.mkdir()
    async with mounted(sshd, share, transport="openssh", max_conns="1") as (device, minirdr):
        lost = minirdr.pool
        assert sshd.drop_connections() >= 1
        status, _ = await stat_path(device, "/")
        assert status == NtStatus.STATUS_SUCCESS
        assert device.reconnector.reconnects == 1
        # The lost connection's ssh processes were reaped, their pipes closed.
        for session in lost.sessions:
            assert isinstance(session.link, PipeLink)
            assert session.link.process.returncode is not None
