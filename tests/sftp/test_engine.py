"""The SFTP request engine on its own, against the loopback sshd: sessions, pipelined
writes, every reply checked, read-ahead, extensions, a session that dies."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from rxfs.minirdr.sftp._channel import ChannelLink, open_channel_session
from rxfs.minirdr.sftp._connect import open_transport
from rxfs.minirdr.sftp._engine import (
    EXT_FSYNC,
    EXT_HARDLINK,
    EXT_LIMITS,
    EXT_POSIX_RENAME,
    EXT_STATVFS,
    SftpError,
    SftpSession,
)
from rxfs.minirdr.sftp._remotefile import RemoteFile
from rxfs.minirdr.sftp._settings import resolve_settings
from rxfs.minirdr.sftp._status import NTSTATUS_OF_SFTP, Probe, nt_status_of
from rxfs.minirdr.sftp._wire import OpenFlags, SftpStatusCode
from rxfs.minirdr.sftp.loopback import LoopbackSshd
from rxfs.rdbss import NtStatus

from tests.sftp.test_minirdr import trio_test

pytestmark = pytest.mark.sshd

RW_CREATE = OpenFlags.SSH_FXF_READ | OpenFlags.SSH_FXF_WRITE | OpenFlags.SSH_FXF_CREAT


@asynccontextmanager
async def session_on(server: LoopbackSshd, **budget: int) -> AsyncIterator[SftpSession]:
    settings = resolve_settings(urlsplit(server.url()), server.mount_options())
    token = trio.lowlevel.current_trio_token()
    transport = await trio.to_thread.run_sync(lambda: open_transport(settings))
    try:
        session = await trio.to_thread.run_sync(
            lambda: open_channel_session(transport, token, **budget)
        )
        try:
            yield session
        finally:
            session.close()
            await trio.to_thread.run_sync(session.join)
    finally:
        transport.close()


@pytest.fixture
def workdir(sshd: LoopbackSshd, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = sshd.root / os.path.basename(tmp_path_factory.mktemp("engine"))
    path.mkdir()
    return path


@trio_test
async def test_version_reply_extensions_and_limits_are_read(sshd: LoopbackSshd) -> None:
    async with session_on(sshd) as session:
        for name in (EXT_LIMITS, EXT_STATVFS, EXT_FSYNC, EXT_HARDLINK, EXT_POSIX_RENAME):
            assert session.has(name), name
        # OpenSSH accepts 255 KiB of data a message, far above paramiko's 32 KiB.
        assert session.limits.max_write_length >= 64 * 1024
        assert session.max_write > 32768 and session.max_write % 4096 == 0


@trio_test
async def test_a_4mib_write_goes_out_in_large_pipelined_requests(
    sshd: LoopbackSshd, workdir: Path
) -> None:
    data = os.urandom(4 * 1024 * 1024)
    async with session_on(sshd) as session:
        remote, _ = await RemoteFile.open(session, str(workdir / "w"), RW_CREATE, 0o644)
        await remote.write(0, data)
        await remote.close()
        stats = session.stats
    assert (workdir / "w").read_bytes() == data
    assert stats.largest_write_request == session.max_write > 32768
    assert stats.write_requests == -(-len(data) // session.max_write)
    assert stats.failed_replies == 0


@trio_test
async def test_a_tiny_budget_still_completes_large_writes_in_order(
    sshd: LoopbackSshd, workdir: Path
) -> None:
    first, second = os.urandom(2 * 1024 * 1024), os.urandom(1024 * 1024)
    async with session_on(sshd, max_inflight_bytes=64 * 1024, max_inflight_requests=2) as s:
        remote, _ = await RemoteFile.open(s, str(workdir / "o"), RW_CREATE, 0o644)
        batch_a = await remote.submit_write(0, first)
        batch_b = await remote.submit_write(512 * 1024, second)
        assert await batch_a.wait() is None
        assert await batch_b.wait() is None
        remote.write_done()
        remote.write_done()
        await remote.close()
    # Overlapping writes land in the order they were submitted.
    expected = first[: 512 * 1024] + second + first[512 * 1024 + len(second) :]
    assert (workdir / "o").read_bytes() == expected


@trio_test
async def test_every_write_reply_is_checked(sshd: LoopbackSshd, workdir: Path) -> None:
    (workdir / "ro").write_bytes(b"x")
    async with session_on(sshd) as session:
        remote, _ = await RemoteFile.open(session, str(workdir / "ro"), OpenFlags.SSH_FXF_READ)
        with pytest.raises(SftpError):
            await remote.write(4096, bytes(3 * session.max_write))
        # Each of the three requests failed, and each failure was seen.
        assert session.stats.failed_replies == 3
        await remote.close()
    assert (workdir / "ro").read_bytes() == b"x"


@trio_test
async def test_sequential_reads_are_served_from_read_ahead(
    sshd: LoopbackSshd, workdir: Path
) -> None:
    content = os.urandom(6 * 1024 * 1024 + 5)
    (workdir / "r").write_bytes(content)
    async with session_on(sshd) as session:
        remote, _ = await RemoteFile.open(session, str(workdir / "r"), OpenFlags.SSH_FXF_READ)
        got = bytearray()
        while chunk := await remote.read(len(got), 64 * 1024):
            got += chunk
        assert bytes(got) == content
        sequential_requests = session.stats.read_requests
        # Read-ahead asks for whole server-sized requests, not 64 KiB pieces.
        assert sequential_requests < len(content) // (64 * 1024)
        # A jump back is served correctly (the window is dropped and rebuilt).
        assert await remote.read(100, 10) == content[100:110]
        assert await remote.read(len(content) - 2, 10) == content[-2:]
        assert await remote.read(len(content), 10) == b""
        await remote.close()


@trio_test
async def test_concurrent_out_of_order_reads_share_one_read_ahead_window(
    sshd: LoopbackSshd, workdir: Path
) -> None:
    """The kernel sends a sequential reader's 128 KiB reads several at a time, and they
    reach the backend slightly out of order: each must still be a read-ahead hit."""
    piece = 128 * 1024
    content = os.urandom(64 * piece + 7)
    (workdir / "c").write_bytes(content)
    got: dict[int, bytes] = {}
    async with session_on(sshd) as session:
        remote, _ = await RemoteFile.open(session, str(workdir / "c"), OpenFlags.SSH_FXF_READ)

        async def read_at(offset: int) -> None:
            got[offset] = await remote.read(offset, piece)

        for first in range(0, len(content), 4 * piece):
            async with trio.open_nursery() as nursery:
                # Second, first, fourth, third: as FUSE's worker tasks may run them.
                for offset in (first + piece, first, first + 3 * piece, first + 2 * piece):
                    if offset < len(content):  # the kernel never reads past the end
                        nursery.start_soon(read_at, offset)
                        await trio.lowlevel.checkpoint()
        await remote.close()
        requests = session.stats.read_requests
    assert b"".join(got[offset] for offset in sorted(got)) == content
    # Whole server-sized requests, each asked for once; a few more at the window's
    # start, and read-ahead that ran past the end of the file (up to 4 MiB of it).
    past_the_end = 4 * 1024 * 1024 // session.max_read
    assert requests <= len(content) // session.max_read + past_the_end + 6


@trio_test
async def test_extensions_statvfs_fsync_hardlink_posix_rename(
    sshd: LoopbackSshd, workdir: Path
) -> None:
    async with session_on(sshd) as session:
        vfs = await session.statvfs(str(workdir))
        local = os.statvfs(workdir)
        assert (vfs.frsize, vfs.blocks) == (local.f_frsize, local.f_blocks)
        remote, _ = await RemoteFile.open(session, str(workdir / "a"), RW_CREATE, 0o600)
        await remote.write(0, b"abc")
        await remote.fsync()
        await remote.close()
        await session.hardlink(str(workdir / "a"), str(workdir / "b"))
        (workdir / "c").write_bytes(b"old")
        await session.posix_rename(str(workdir / "b"), str(workdir / "c"))
        with pytest.raises(SftpError) as refused:
            await session.rename(str(workdir / "a"), str(workdir / "c"))
        assert refused.value.code == SftpStatusCode.SSH_FX_FAILURE
        status = await nt_status_of(
            refused.value, session, Probe.RENAME, str(workdir / "a"), str(workdir / "c")
        )
        assert status == NtStatus.STATUS_OBJECT_NAME_COLLISION
    assert (workdir / "c").read_bytes() == b"abc"
    assert os.stat(workdir / "c").st_ino == os.stat(workdir / "a").st_ino
    assert not (workdir / "b").exists()


@trio_test
async def test_a_dead_session_fails_requests_with_connection_lost(sshd: LoopbackSshd) -> None:
    async with session_on(sshd) as session:
        assert await session.realpath("/") == "/"
        assert isinstance(session.link, ChannelLink)
        session.link.channel.get_transport().close()
        with pytest.raises(SftpError) as lost:
            for _ in range(50):  # the reader sees the close promptly; bounded anyway
                await session.stat("/")
                await trio.sleep(0.05)
        assert lost.value.code in (
            SftpStatusCode.SSH_FX_CONNECTION_LOST,
            SftpStatusCode.SSH_FX_NO_CONNECTION,
        )
        assert NTSTATUS_OF_SFTP[lost.value.code] == NtStatus.STATUS_CONNECTION_DISCONNECTED
        assert not session.alive


def test_status_table_covers_every_sftp_code() -> None:
    assert set(NTSTATUS_OF_SFTP) == set(SftpStatusCode)
    expected = {
        SftpStatusCode.SSH_FX_OK: NtStatus.STATUS_SUCCESS,
        SftpStatusCode.SSH_FX_EOF: NtStatus.STATUS_END_OF_FILE,
        SftpStatusCode.SSH_FX_NO_SUCH_FILE: NtStatus.STATUS_OBJECT_NAME_NOT_FOUND,
        SftpStatusCode.SSH_FX_PERMISSION_DENIED: NtStatus.STATUS_ACCESS_DENIED,
        SftpStatusCode.SSH_FX_FAILURE: NtStatus.STATUS_UNSUCCESSFUL,
        SftpStatusCode.SSH_FX_BAD_MESSAGE: NtStatus.STATUS_INVALID_PARAMETER,
        SftpStatusCode.SSH_FX_NO_CONNECTION: NtStatus.STATUS_CONNECTION_DISCONNECTED,
        SftpStatusCode.SSH_FX_CONNECTION_LOST: NtStatus.STATUS_CONNECTION_DISCONNECTED,
        SftpStatusCode.SSH_FX_OP_UNSUPPORTED: NtStatus.STATUS_NOT_SUPPORTED,
    }
    assert expected == NTSTATUS_OF_SFTP
