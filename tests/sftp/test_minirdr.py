"""The sftp:// mini-redirector driven through RxDevice (no FUSE) against a real sshd.

Each test mounts a fresh directory below the server's root and checks the NTSTATUS the
core answers and the bytes that landed in the server's directory on disk.
"""

from __future__ import annotations

import itertools
import os
import pwd
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from rxfs.minirdr.sftp import SftpMiniRdr, _spread
from rxfs.minirdr.sftp.loopback import LoopbackSshd
from rxfs.rdbss import CoreOptions, Fobx, MountError, NtStatus, RxDevice
from rxfs.rdbss.irp import (
    AccessMask,
    CreateDisposition,
    CreateOptions,
    FileBasicInformation,
    FileDispositionInformation,
    FileEndOfFileInformation,
    FileLinkInformation,
    FileRenameInformation,
    FsControlCode,
    FsControlParameters,
    Irp,
    IrpMj,
    QueryDirectoryParameters,
)

from tests.support.checklogs import LOST_BYTES, RECONNECTS
from tests.unit._harness import (
    close,
    create,
    mkdir,
    open_file,
    read,
    read_bytes,
    set_info,
    stat_path,
    trio_test_within,
    write,
)

pytestmark = pytest.mark.sshd

DEADLINE = 60
MIB = 1024 * 1024
trio_test = trio_test_within(DEADLINE)
_share_numbers = itertools.count(1)


@pytest.fixture
def share(sshd: LoopbackSshd) -> Path:
    """A fresh directory below the server's root, for one test."""
    path = sshd.root / f"share{next(_share_numbers)}"
    path.mkdir()
    return path


@asynccontextmanager
async def mounted(
    server: LoopbackSshd, directory: Path, **options: str
) -> AsyncIterator[tuple[RxDevice, SftpMiniRdr]]:
    minirdr = SftpMiniRdr()
    url = server.url(str(directory.relative_to(server.root)))
    device = RxDevice(
        minirdr, url, {**server.mount_options(), **options}, CoreOptions.parse(options)
    )
    async with trio.open_nursery() as nursery:
        try:
            await device.start(nursery)
            yield device, minirdr
        finally:
            # Also after a failed start, as `rxfs mount` does: a connection made before
            # the failure (a missing share root) is closed and its ssh processes reaped.
            await device.stop()
            nursery.cancel_scope.cancel()


WRITE_ONLY = AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA


# -- create, write, read ------------------------------------------------------------------


@trio_test
async def test_writes_land_at_their_offsets_and_read_back(sshd: LoopbackSshd, share: Path) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)
    async with mounted(sshd, share) as (device, _):
        fobx = await open_file(device, "/f", CreateDisposition.FILE_CREATE)
        assert (await write(device, fobx, 0, big)).information == len(big)
        assert (await write(device, fobx, 10, b"small")).information == 5
        assert (await write(device, fobx, len(big) + 100, b"tail")).information == 4
        expected = big[:10] + b"small" + big[15:] + bytes(100) + b"tail"
        assert await read_bytes(device, fobx, 0, len(expected) + 50) == expected
        assert await read_bytes(device, fobx, 1000, 7) == expected[1000:1007]
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
    assert (share / "f").read_bytes() == expected


@trio_test
async def test_sequential_reads_return_the_file_and_then_end_of_file(
    sshd: LoopbackSshd, share: Path
) -> None:
    content = os.urandom(5 * 1024 * 1024 + 3)
    (share / "r").write_bytes(content)
    async with mounted(sshd, share) as (device, _):
        fobx = await open_file(device, "/r", CreateDisposition.FILE_OPEN)
        got = bytearray()
        while True:
            irp = await read(device, fobx, len(got), 128 * 1024)
            assert irp.io_status.status == NtStatus.STATUS_SUCCESS
            if not irp.buffer:
                break
            got += irp.buffer
        assert bytes(got) == content
        await close(device, fobx)


@trio_test
async def test_read_after_write_through_another_open_sees_new_bytes(
    sshd: LoopbackSshd, share: Path
) -> None:
    (share / "c").write_bytes(b"a" * 600_000)
    async with mounted(sshd, share) as (device, _):
        reader = await open_file(device, "/c", CreateDisposition.FILE_OPEN)
        writer = await open_file(device, "/c", CreateDisposition.FILE_OPEN)
        assert await read_bytes(device, reader, 0, 4096) == b"a" * 4096
        await write(device, writer, 4096, b"b" * 4096)
        assert await read_bytes(device, reader, 4096, 4096) == b"b" * 4096
        await close(device, reader)
        await close(device, writer)


@trio_test
async def test_large_write_goes_out_in_requests_larger_than_32k(
    sshd: LoopbackSshd, share: Path
) -> None:
    data = os.urandom(4 * 1024 * 1024)
    async with mounted(sshd, share) as (device, minirdr):
        fobx = await open_file(device, "/big", CreateDisposition.FILE_CREATE)
        assert (await write(device, fobx, 0, data)).information == len(data)
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        stats = minirdr.pool.stats
        assert stats.largest_write_request > 32768
        assert stats.write_requests <= len(data) // 65536
        assert stats.write_bytes == len(data)
        assert stats.failed_replies == 0
    assert (share / "big").read_bytes() == data


@trio_test
async def test_append_only_opens_write_at_the_end(sshd: LoopbackSshd, share: Path) -> None:
    (share / "log").write_bytes(b"start\n")
    async with mounted(sshd, share) as (device, _), mounted(sshd, share) as (other, _):
        irp_a = await create(
            device, "/log", CreateDisposition.FILE_OPEN, access=AccessMask.FILE_APPEND_DATA
        )
        irp_b = await create(
            other, "/log", CreateDisposition.FILE_OPEN, access=AccessMask.FILE_APPEND_DATA
        )
        assert irp_a.file_object is not None and irp_b.file_object is not None
        # Both think the file is 6 bytes long; the server puts each write at the end.
        await write(device, irp_a.file_object, 6, b"one\n")
        await write(other, irp_b.file_object, 6, b"two\n")
        await close(device, irp_a.file_object)
        await close(other, irp_b.file_object)
    assert (share / "log").read_bytes() == b"start\none\ntwo\n"


@trio_test
async def test_overwrite_disposition_truncates(sshd: LoopbackSshd, share: Path) -> None:
    (share / "t").write_bytes(b"old content")
    async with mounted(sshd, share) as (device, _):
        fobx = await open_file(device, "/t", CreateDisposition.FILE_OVERWRITE_IF)
        await write(device, fobx, 0, b"new")
        await close(device, fobx)
    assert (share / "t").read_bytes() == b"new"


@trio_test
async def test_exclusive_create_of_existing_name_is_a_collision(
    sshd: LoopbackSshd, share: Path
) -> None:
    (share / "x").write_bytes(b"")
    (share / "d").mkdir()
    async with mounted(sshd, share) as (device, _):
        irp = await create(device, "/x", CreateDisposition.FILE_CREATE)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_COLLISION
        irp = await create(
            device,
            "/d",
            CreateDisposition.FILE_CREATE,
            options=CreateOptions.FILE_DIRECTORY_FILE,
        )
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_COLLISION


@trio_test
async def test_missing_names_and_parents(sshd: LoopbackSshd, share: Path) -> None:
    async with mounted(sshd, share) as (device, _):
        irp = await create(device, "/nope", CreateDisposition.FILE_OPEN)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
        irp = await create(device, "/no/such/dir/f", CreateDisposition.FILE_CREATE)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_PATH_NOT_FOUND
        status, _attrs = await stat_path(device, "/nope")
        assert status == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND


@trio_test
async def test_directory_opens(sshd: LoopbackSshd, share: Path) -> None:
    (share / "d").mkdir()
    async with mounted(sshd, share) as (device, _):
        irp = await create(
            device,
            "/d",
            CreateDisposition.FILE_OPEN,
            options=CreateOptions.FILE_NON_DIRECTORY_FILE,
        )
        assert irp.io_status.status == NtStatus.STATUS_FILE_IS_A_DIRECTORY
        irp = await create(device, "/d", CreateDisposition.FILE_OPEN, access=WRITE_ONLY)
        assert irp.io_status.status == NtStatus.STATUS_FILE_IS_A_DIRECTORY
        irp = await create(
            device,
            "/d",
            CreateDisposition.FILE_OPEN,
            access=AccessMask.FILE_READ_DATA,
            options=CreateOptions.FILE_DIRECTORY_FILE,
        )
        assert irp.io_status.status == NtStatus.STATUS_SUCCESS
        assert irp.attributes is not None and irp.attributes.is_dir
        assert irp.file_object is not None
        await close(device, irp.file_object)


# -- sizes, attributes --------------------------------------------------------------------


@trio_test
async def test_truncate_down_and_up(sshd: LoopbackSshd, share: Path) -> None:
    (share / "s").write_bytes(b"0123456789")
    async with mounted(sshd, share) as (device, _):
        fobx = await open_file(device, "/s", CreateDisposition.FILE_OPEN)
        assert await read_bytes(device, fobx, 0, 100) == b"0123456789"
        assert await set_info(device, FileEndOfFileInformation(4), fobx=fobx) == (
            NtStatus.STATUS_SUCCESS
        )
        assert (share / "s").read_bytes() == b"0123"
        assert await read_bytes(device, fobx, 0, 100) == b"0123"
        assert await set_info(device, FileEndOfFileInformation(8), path="/s") == (
            NtStatus.STATUS_SUCCESS
        )
        assert (share / "s").read_bytes() == b"0123" + bytes(4)
        await close(device, fobx)


@trio_test
async def test_chmod_and_utime(sshd: LoopbackSshd, share: Path) -> None:
    (share / "m").write_bytes(b"")
    async with mounted(sshd, share) as (device, _):
        info = FileBasicInformation(mode=0o600, atime_ns=1_000_000_000, mtime_ns=2_000_000_000)
        assert await set_info(device, info, path="/m") == NtStatus.STATUS_SUCCESS
        status, attrs = await stat_path(device, "/m")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None
        assert stat.S_IMODE(attrs.mode) == 0o600 and stat.S_ISREG(attrs.mode)
        assert attrs.mtime_ns == 2_000_000_000
        # Only mtime: atime must stay as it was.
        assert await set_info(device, FileBasicInformation(mtime_ns=5_000_000_000), path="/m") == (
            NtStatus.STATUS_SUCCESS
        )
    st = os.stat(share / "m")
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 5_000_000_000)


@trio_test
async def test_query_directory_lists_entries_with_attributes(
    sshd: LoopbackSshd, share: Path
) -> None:
    (share / "a").write_bytes(b"abc")
    (share / "sub").mkdir()
    (share / "sub" / "inner").mkdir()
    async with mounted(sshd, share) as (device, _):
        irp = Irp(IrpMj.IRP_MJ_DIRECTORY_CONTROL, QueryDirectoryParameters(), file_name="/")
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
        entries = {e.name: e.attributes for e in irp.entries or []}
        assert set(entries) == {"a", "sub"}
        assert entries["a"].size == 3 and stat.S_ISREG(entries["a"].mode)
        assert entries["sub"].is_dir and entries["sub"].nlink == 3
        irp = Irp(IrpMj.IRP_MJ_DIRECTORY_CONTROL, QueryDirectoryParameters(), file_name="/a")
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_NOT_A_DIRECTORY


@trio_test
async def test_volume_information_comes_from_statvfs(sshd: LoopbackSshd, share: Path) -> None:
    async with mounted(sshd, share) as (device, _):
        irp = Irp(IrpMj.IRP_MJ_QUERY_VOLUME_INFORMATION)
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
    vfs = os.statvfs(share)
    assert irp.volume is not None
    assert irp.volume.total_blocks == vfs.f_blocks
    assert irp.volume.block_size == vfs.f_frsize


# -- names ---------------------------------------------------------------------------------


@trio_test
async def test_rename_over_an_existing_file_replaces_it(sshd: LoopbackSshd, share: Path) -> None:
    (share / "src").write_bytes(b"new")
    (share / "dst").write_bytes(b"old")
    async with mounted(sshd, share) as (device, _):
        status = await set_info(device, FileRenameInformation("/dst", True), path="/src")
        assert status == NtStatus.STATUS_SUCCESS
    assert (share / "dst").read_bytes() == b"new"
    assert not (share / "src").exists()


@trio_test
async def test_rename_without_replace_refuses_an_existing_target(
    sshd: LoopbackSshd, share: Path
) -> None:
    (share / "src").write_bytes(b"new")
    (share / "dst").write_bytes(b"old")
    async with mounted(sshd, share) as (device, _):
        status = await set_info(device, FileRenameInformation("/dst", False), path="/src")
        assert status == NtStatus.STATUS_OBJECT_NAME_COLLISION
        status = await set_info(device, FileRenameInformation("/moved", False), path="/src")
        assert status == NtStatus.STATUS_SUCCESS
    assert (share / "dst").read_bytes() == b"old"
    assert (share / "moved").read_bytes() == b"new"


@trio_test
async def test_rename_onto_a_non_empty_directory(sshd: LoopbackSshd, share: Path) -> None:
    (share / "a").mkdir()
    (share / "b").mkdir()
    (share / "b" / "f").write_bytes(b"")
    async with mounted(sshd, share) as (device, _):
        status = await set_info(device, FileRenameInformation("/b", True), path="/a")
        assert status == NtStatus.STATUS_DIRECTORY_NOT_EMPTY


@trio_test
async def test_hardlink_shares_the_data(sshd: LoopbackSshd, share: Path) -> None:
    (share / "orig").write_bytes(b"linked")
    async with mounted(sshd, share) as (device, _):
        assert await set_info(device, FileLinkInformation("/second"), path="/orig") == (
            NtStatus.STATUS_SUCCESS
        )
        assert await set_info(device, FileLinkInformation("/second"), path="/orig") == (
            NtStatus.STATUS_OBJECT_NAME_COLLISION
        )
    assert os.stat(share / "second").st_ino == os.stat(share / "orig").st_ino


@trio_test
async def test_symlink_is_created_the_right_way_round_and_read_back(
    sshd: LoopbackSshd, share: Path
) -> None:
    async with mounted(sshd, share) as (device, _):
        irp = Irp(
            IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL,
            FsControlParameters(FsControlCode.FSCTL_SET_REPARSE_POINT, "target/file"),
            file_name="/link",
        )
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
        assert irp.attributes is not None and irp.attributes.is_symlink
        assert os.readlink(share / "link") == "target/file"
        irp = Irp(
            IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL,
            FsControlParameters(FsControlCode.FSCTL_GET_REPARSE_POINT),
            file_name="/link",
        )
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
        assert irp.link_target == "target/file"
        status, attrs = await stat_path(device, "/link")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None and attrs.is_symlink
        irp = Irp(
            IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL,
            FsControlParameters(FsControlCode.FSCTL_SET_REPARSE_POINT, "elsewhere"),
            file_name="/link",
        )
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_OBJECT_NAME_COLLISION


@trio_test
async def test_mkdir_rmdir_and_non_empty_directories(sshd: LoopbackSshd, share: Path) -> None:
    async with mounted(sshd, share) as (device, _):
        irp = await create(
            device,
            "/d",
            CreateDisposition.FILE_CREATE,
            access=AccessMask.FILE_READ_ATTRIBUTES,
            options=CreateOptions.FILE_DIRECTORY_FILE,
            mode=0o750,
        )
        assert irp.io_status.status == NtStatus.STATUS_SUCCESS
        assert irp.file_object is not None
        await close(device, irp.file_object)
        assert stat.S_IMODE(os.stat(share / "d").st_mode) == 0o750
        await mkdir(device, "/d/sub")
        status = await set_info(device, FileDispositionInformation(), path="/d")
        assert status == NtStatus.STATUS_DIRECTORY_NOT_EMPTY
        assert await set_info(device, FileDispositionInformation(), path="/d/sub") == (
            NtStatus.STATUS_SUCCESS
        )
        assert await set_info(device, FileDispositionInformation(), path="/d") == (
            NtStatus.STATUS_SUCCESS
        )
    assert not (share / "d").exists()


@trio_test
async def test_delete_removes_a_file(sshd: LoopbackSshd, share: Path) -> None:
    (share / "gone").write_bytes(b"x")
    async with mounted(sshd, share) as (device, _):
        assert await set_info(device, FileDispositionInformation(), path="/gone") == (
            NtStatus.STATUS_SUCCESS
        )
        assert await set_info(device, FileDispositionInformation(), path="/gone") == (
            NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
        )
    assert not (share / "gone").exists()


# -- mount, permissions, durability --------------------------------------------------------


@trio_test
async def test_flush_syncs_and_close_succeeds(sshd: LoopbackSshd, share: Path) -> None:
    async with mounted(sshd, share) as (device, _):
        fobx = await open_file(device, "/synced", CreateDisposition.FILE_CREATE)
        await write(device, fobx, 0, b"durable")
        irp = Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx)
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
    assert (share / "synced").read_bytes() == b"durable"


@pytest.fixture
def home_mtime(sshd: LoopbackSshd) -> int:
    return int(os.stat(pwd.getpwnam(sshd.user).pw_dir).st_mtime)


@trio_test
async def test_home_relative_url_and_missing_root(
    sshd: LoopbackSshd, share: Path, home_mtime: int
) -> None:
    async with mounted_url(sshd, f"sftp://{sshd.user}@{sshd.host}:{sshd.port}/~") as device:
        status, attrs = await stat_path(device, "/")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None
        assert attrs.mtime_ns // 10**9 == home_mtime
    failure = await mount_error(sshd, share / "missing")
    assert failure.status == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
    assert "missing" in str(failure)


async def mount_error(server: LoopbackSshd, directory: Path, **options: str) -> MountError:
    """The MountError a mount of ``directory`` fails with (it must fail)."""
    with pytest.RaisesGroup(MountError) as failure:
        async with mounted(server, directory, **options):
            pass
    error = failure.value.exceptions[0]
    assert isinstance(error, MountError)
    return error


@asynccontextmanager
async def mounted_url(server: LoopbackSshd, url: str) -> AsyncIterator[RxDevice]:
    device = RxDevice(SftpMiniRdr(), url, server.mount_options())
    async with trio.open_nursery() as nursery:
        try:
            await device.start(nursery)
            yield device
        finally:
            await device.stop()
            nursery.cancel_scope.cancel()


@pytest.fixture
def read_only_dir(sshd_user: LoopbackSshd) -> Iterator[Path]:
    path = sshd_user.root / "ro"
    path.mkdir()
    (path / "existing").write_bytes(b"keep")
    owner = sshd_user.root.stat()
    os.chown(path, owner.st_uid, owner.st_gid)
    os.chown(path / "existing", owner.st_uid, owner.st_gid)
    path.chmod(0o555)
    (path / "existing").chmod(0o444)
    yield path
    path.chmod(0o755)


@trio_test
async def test_read_only_directory_denies_access(
    sshd_user: LoopbackSshd, read_only_dir: Path
) -> None:
    async with mounted(sshd_user, read_only_dir) as (device, _):
        irp = await create(device, "/new", CreateDisposition.FILE_CREATE)
        assert irp.io_status.status == NtStatus.STATUS_ACCESS_DENIED
        irp = await create(device, "/existing", CreateDisposition.FILE_OPEN, access=WRITE_ONLY)
        assert irp.io_status.status == NtStatus.STATUS_ACCESS_DENIED
        assert await set_info(device, FileDispositionInformation(), path="/existing") == (
            NtStatus.STATUS_ACCESS_DENIED
        )
    assert (read_only_dir / "existing").read_bytes() == b"keep"


@pytest.fixture
def small_disk(sshd: LoopbackSshd) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted below the server's root, unmounted after the test."""
    path = sshd.root / f"tmpfs{next(_share_numbers)}"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        _umount(path)
        path.rmdir()


def _umount(path: Path, timeout: float = 10.0) -> None:
    """umount, retried while busy: the server's sftp-server processes close their files
    when they see the session end, a moment after the mount has stopped."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["umount", str(path)], check=False).returncode != 0:
        assert time.monotonic() < deadline, f"{path} still busy after {timeout}s"
        time.sleep(0.1)


@trio_test
async def test_full_disk_fails_a_write_through_write_with_disk_full(
    sshd: LoopbackSshd, small_disk: Path
) -> None:
    chunk = os.urandom(1024 * 1024)
    async with mounted(sshd, small_disk) as (device, minirdr):
        fobx = await open_file(
            device,
            "/fill",
            CreateDisposition.FILE_CREATE,
            options=CreateOptions.FILE_WRITE_THROUGH,
        )
        written = 0
        status = NtStatus.STATUS_SUCCESS
        for offset in range(0, 8 * len(chunk), len(chunk)):
            io = await write(device, fobx, offset, chunk)
            status = io.status
            if status != NtStatus.STATUS_SUCCESS:
                assert io.information == 0
                break
            written += io.information
        assert status == NtStatus.STATUS_DISK_FULL
        assert minirdr.pool.stats.failed_replies > 0
        # Nothing beyond the writes that fully landed is claimed.
        assert fobx.fcb is not None and fobx.fcb.file_size == written
        await close(device, fobx)
    assert 0 < written <= 4 * 1024 * 1024
    on_disk = (small_disk / "fill").read_bytes()
    assert on_disk[:written] == (chunk * 8)[:written]


@pytest.mark.expect_log(*LOST_BYTES)
@trio_test
async def test_full_disk_is_reported_by_write_flush_or_close(
    sshd: LoopbackSshd, small_disk: Path
) -> None:
    chunk = os.urandom(1024 * 1024)
    async with mounted(sshd, small_disk) as (device, _):
        fobx = await open_file(device, "/fill", CreateDisposition.FILE_CREATE)
        statuses = [
            (await write(device, fobx, off, chunk)).status for off in range(0, 8 << 20, 1 << 20)
        ]
        irp = Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx)
        statuses.append((await device.dispatch(irp)).status)
        statuses.append(await close(device, fobx))
    assert NtStatus.STATUS_DISK_FULL in statuses
    assert set(statuses) <= {NtStatus.STATUS_SUCCESS, NtStatus.STATUS_DISK_FULL}


@trio_test
async def test_bad_option_value_fails_the_mount(sshd: LoopbackSshd, share: Path) -> None:
    failure = await mount_error(sshd, share, max_conns="zero")
    assert failure.status == NtStatus.STATUS_INVALID_PARAMETER
    assert "max_conns=zero" in str(failure)


@pytest.mark.parametrize("transport", ["paramiko", "openssh"])
@trio_test
async def test_several_connections_share_the_work(
    sshd: LoopbackSshd, share: Path, transport: str
) -> None:
    options = {"max_conns": "3", "channels": "2", "transport": transport}
    async with mounted(sshd, share, **options) as (device, minirdr):
        # paramiko: 2 channels on each of 3 SSH connections; openssh: one ssh each.
        assert len(minirdr.pool.transports) == (3 if transport == "paramiko" else 0)
        assert len(minirdr.pool.sessions) == 6
        fobxs = [
            await open_file(device, f"/p{i}", CreateDisposition.FILE_CREATE) for i in range(6)
        ]
        assert len({id(f.srv_open.context.file.session) for f in fobxs if f.srv_open}) == 6
        async with trio.open_nursery() as nursery:
            for i, fobx in enumerate(fobxs):
                nursery.start_soon(write, device, fobx, 0, bytes([i]) * 300_000)
        for fobx in fobxs:
            assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
    for i in range(6):
        assert (share / f"p{i}").read_bytes() == bytes([i]) * 300_000


# Writers held to a few MiB ahead of the server, as a large file's writer is by the
# default 64 MiB, so that the file is still being written once its second handle is up.
SPREADING = {"max_conns": "2", "dirty_limit": "4M"}


async def _write_mib_by_mib(device: RxDevice, fobx: Fobx, data: bytes, start: int = 0) -> None:
    for pos in range(start, len(data), MIB):
        block = data[pos : pos + MIB]
        assert (await write(device, fobx, pos, block)).information == len(block)


@trio_test
async def test_one_large_file_spreads_its_writes_over_the_connections(
    sshd: LoopbackSshd, share: Path
) -> None:
    data = os.urandom(24 * MIB + 5)
    async with mounted(sshd, share, **SPREADING) as (device, minirdr):
        fobx = await open_file(device, "/big", CreateDisposition.FILE_CREATE)
        await _write_mib_by_mib(device, fobx, data)
        flush = Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx)
        assert (await device.dispatch(flush)).status == NtStatus.STATUS_SUCCESS
        # fsync returned: every byte is on the server, whichever handle carried it.
        assert (share / "big").read_bytes() == data
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        carried = [session.stats.write_bytes for session in minirdr.pool.sessions]
        assert all(n >= 2 * MIB for n in carried), carried
        assert sum(carried) == len(data) + 16  # and the nonce that proved the second handle
    assert (share / "big").read_bytes() == data


@pytest.mark.parametrize("replaced", [True, False], ids=["replaced", "renamed-away"])
@trio_test
async def test_a_second_handle_never_writes_to_another_file(
    sshd: LoopbackSshd, share: Path, replaced: bool
) -> None:
    # The name is taken away on the server after the open: a second OPEN by name finds
    # another file or none. The other file must stay untouched and every byte must go
    # to the file the open holds, through its own handle.
    data = os.urandom(12 * MIB)
    other = os.urandom(20 * MIB)
    async with mounted(sshd, share, **SPREADING) as (device, minirdr):
        fobx = await open_file(device, "/f", CreateDisposition.FILE_CREATE)
        (share / "f").rename(share / "moved")
        if replaced:
            (share / "f").write_bytes(other)
        await _write_mib_by_mib(device, fobx, data)
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        carried = sorted(session.stats.write_bytes for session in minirdr.pool.sessions)
        assert carried[0] == 0, carried
    assert (share / "moved").read_bytes() == data
    if replaced:
        assert (share / "f").read_bytes() == other
    else:
        assert not (share / "f").exists()


@trio_test
async def test_writes_keep_to_one_handle_while_the_server_is_short_of_space(
    sshd: LoopbackSshd, share: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Out of order, a full disk could fail a write below one that landed (a hole where
    # one handle leaves a clean prefix): no spreading without ample room, and it stops
    # when the room runs short.
    monkeypatch.setattr(_spread, "RECHECK_EVERY", 2 * MIB)
    data = os.urandom(32 * MIB)
    async with mounted(sshd, share, **SPREADING) as (device, minirdr):
        monkeypatch.setattr(_spread, "ROOM_NEEDED", 1 << 62)
        fobx = await open_file(device, "/short", CreateDisposition.FILE_CREATE)
        await _write_mib_by_mib(device, fobx, data)
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        assert sorted(s.stats.write_bytes for s in minirdr.pool.sessions)[0] == 0

        monkeypatch.setattr(_spread, "ROOM_NEEDED", 0)
        fobx = await open_file(device, "/shrinking", CreateDisposition.FILE_CREATE)
        await _write_mib_by_mib(device, fobx, data[: 8 * MIB])
        flush = Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx)
        assert (await device.dispatch(flush)).status == NtStatus.STATUS_SUCCESS
        before = [s.stats.write_bytes for s in minirdr.pool.sessions]
        assert min(before) > 0, before  # it spread
        monkeypatch.setattr(_spread, "ROOM_NEEDED", 1 << 62)
        await _write_mib_by_mib(device, fobx, data, 8 * MIB)
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        after = [s.stats.write_bytes for s in minirdr.pool.sessions]
        grew = sorted(b - a for a, b in zip(before, after, strict=True))
        # Until the next check (every 2 MiB here) the other handle still takes a share.
        assert grew[0] <= 2 * MIB, grew
    assert (share / "short").read_bytes() == data
    assert (share / "shrinking").read_bytes() == data


def _forget_extensions(minirdr: SftpMiniRdr, *names: str) -> None:
    """Make the server look like one without these extensions."""
    for session in minirdr.pool.sessions:
        for name in names:
            session.extensions.pop(name, None)


@pytest.mark.expect_log(r"lacks fsync@openssh.com", r"no posix-rename@openssh.com")
@trio_test
async def test_fallbacks_when_the_server_lacks_extensions(sshd: LoopbackSshd, share: Path) -> None:
    (share / "src").write_bytes(b"new")
    (share / "dst").write_bytes(b"old")
    async with mounted(sshd, share) as (device, minirdr):
        _forget_extensions(
            minirdr,
            "posix-rename@openssh.com",
            "statvfs@openssh.com",
            "fsync@openssh.com",
            "hardlink@openssh.com",
        )
        # Replacing rename: remove then rename (not atomic, but the right result).
        status = await set_info(device, FileRenameInformation("/dst", True), path="/src")
        assert status == NtStatus.STATUS_SUCCESS
        # statfs: zeros.
        irp = Irp(IrpMj.IRP_MJ_QUERY_VOLUME_INFORMATION)
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
        assert irp.volume is not None and irp.volume.total_blocks == 0
        # fsync: success once the writes are acknowledged.
        fobx = await open_file(device, "/dst", CreateDisposition.FILE_OPEN)
        await write(device, fobx, 3, b"er")
        flush = Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx)
        assert (await device.dispatch(flush)).status == NtStatus.STATUS_SUCCESS
        await close(device, fobx)
        # hard links: not supported.
        assert await set_info(device, FileLinkInformation("/l"), path="/dst") == (
            NtStatus.STATUS_NOT_SUPPORTED
        )
    assert (share / "dst").read_bytes() == b"newer"
    assert not (share / "src").exists()


@pytest.mark.expect_log(*RECONNECTS)
@trio_test
async def test_a_dropped_connection_is_reconnected_and_the_request_replayed(
    sshd: LoopbackSshd, share: Path
) -> None:
    # Cut from inside paramiko (test_openssh has the same for ssh, cut at the server).
    async with mounted(sshd, share, max_conns="1", transport="paramiko") as (device, minirdr):
        for transport in minirdr.pool.transports:
            transport.close()
        await trio.sleep(0.2)
        status, _ = await stat_path(device, "/")
        assert status == NtStatus.STATUS_SUCCESS
        assert device.reconnector.reconnects == 1
