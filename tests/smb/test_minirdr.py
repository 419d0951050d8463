"""The smb:// mini-redirector driven through RxDevice (no FUSE) against a real smbd.

Each test mounts a fresh directory of the loopback server's share and checks the
NTSTATUS the core answers (the server's own: the mapping is the identity), the errno
the front end makes of it, and the bytes that landed in the share's directory on disk.
The error cases are provoked for real: another user's file, a read-only share, a full
tmpfs, another client's exclusive open.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from rxfs.minirdr.smb import SmbMiniRdr
from rxfs.rdbss import CoreOptions, NtStatus, RxDevice
from rxfs.rdbss.irp import (
    AccessMask,
    CreateDisposition,
    CreateOptions,
    CreateParameters,
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
from rxfs.testing import errno_for
from smbprotocol.connection import Connection
from smbprotocol.open import Open
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from tests.support.smbd import READ_ONLY_SHARE, LoopbackSmbd, SmbAccount
from tests.unit._harness import (
    close,
    create,
    mkdir,
    open_file,
    read_bytes,
    set_info,
    stat_path,
    trio_test_within,
    write,
)

DEADLINE = 60
MIB = 1024 * 1024
trio_test = trio_test_within(DEADLINE)


@asynccontextmanager
async def mounted(
    server: LoopbackSmbd,
    directory: Path | None,
    *,
    share: str = "share",
    account: SmbAccount | None = None,
    **options: str,
) -> AsyncIterator[tuple[RxDevice, SmbMiniRdr]]:
    minirdr = SmbMiniRdr()
    path = str(directory.relative_to(server.root)) if directory is not None else ""
    url = server.url(path, share=share)
    device = RxDevice(
        minirdr, url, {**server.mount_options(account), **options}, CoreOptions.parse(options)
    )
    async with trio.open_nursery() as nursery:
        try:
            await device.start(nursery)
            yield device, minirdr
        finally:
            await device.stop()
            nursery.cancel_scope.cancel()


# -- the basics against a real server ----------------------------------------------------


@trio_test
async def test_writes_land_at_their_offsets_and_read_back(smbd: LoopbackSmbd, share: Path) -> None:
    big = os.urandom(3 * MIB + 17)
    async with mounted(smbd, share) as (device, minirdr):
        assert minirdr.tree.encrypted, "SMB3 encryption is the default where offered"
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
async def test_directories_list_with_sizes_and_names_smb_forbids(
    smbd: LoopbackSmbd, share: Path
) -> None:
    names = ["a", "with space", "new\nline", "back\\slash", 'q"uote:colon?', "trailing."]
    async with mounted(smbd, share) as (device, _):
        await mkdir(device, "/d")
        for number, name in enumerate(names):
            fobx = await open_file(device, f"/d/{name}", CreateDisposition.FILE_CREATE)
            await write(device, fobx, 0, b"x" * number)
            await close(device, fobx)
        irp = Irp(IrpMj.IRP_MJ_DIRECTORY_CONTROL, QueryDirectoryParameters(), file_name="/d")
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
        assert irp.entries is not None
        listed = {entry.name: entry.attributes.size for entry in irp.entries}
    assert listed == {name: number for number, name in enumerate(names)}
    # catia on the server stores the names as they are (the SFM mapping undone).
    assert sorted(p.name for p in (share / "d").iterdir()) == sorted(names)


@trio_test
async def test_rename_replaces_and_hard_links_share_the_inode(
    smbd: LoopbackSmbd, share: Path
) -> None:
    (share / "src").write_bytes(b"new")
    (share / "dst").write_bytes(b"old")
    async with mounted(smbd, share) as (device, _):
        status = await set_info(device, FileRenameInformation("/dst", False), path="/src")
        assert status == NtStatus.STATUS_OBJECT_NAME_COLLISION
        status = await set_info(device, FileRenameInformation("/dst", True), path="/src")
        assert status == NtStatus.STATUS_SUCCESS
        status = await set_info(device, FileLinkInformation("/link"), path="/dst")
        assert status == NtStatus.STATUS_SUCCESS
        status, attrs = await stat_path(device, "/link")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None
        assert attrs.nlink == 2
    assert not (share / "src").exists()
    assert (share / "dst").read_bytes() == b"new"
    assert (share / "link").stat().st_ino == (share / "dst").stat().st_ino


@trio_test
async def test_truncate_times_and_delete(smbd: LoopbackSmbd, share: Path) -> None:
    (share / "f").write_bytes(b"0123456789")
    async with mounted(smbd, share) as (device, _):
        assert await set_info(device, FileEndOfFileInformation(4), path="/f") == 0
        mtime = 1_500_000_000 * 10**9 + 123_456_700
        assert await set_info(device, FileBasicInformation(mtime_ns=mtime), path="/f") == 0
        _, attrs = await stat_path(device, "/f")
        assert attrs is not None and attrs.mtime_ns == mtime and attrs.size == 4
        assert await set_info(device, FileDispositionInformation(), path="/f") == 0
    assert not (share / "f").exists()


@trio_test
async def test_flush_and_statfs(smbd: LoopbackSmbd, share: Path) -> None:
    async with mounted(smbd, share) as (device, _):
        fobx = await open_file(device, "/f", CreateDisposition.FILE_CREATE)
        await write(device, fobx, 0, b"durable")
        flush = Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx)
        assert (await device.dispatch(flush)).status == NtStatus.STATUS_SUCCESS
        assert (share / "f").read_bytes() == b"durable"
        await close(device, fobx)
        irp = Irp(IrpMj.IRP_MJ_QUERY_VOLUME_INFORMATION)
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
        assert irp.volume is not None
    local = os.statvfs(share)
    assert irp.volume.block_size * irp.volume.total_blocks == pytest.approx(
        local.f_frsize * local.f_blocks, rel=0.01
    )


# -- the server's NTSTATUS, straight through -----------------------------------------------


@trio_test
async def test_exclusive_create_of_an_existing_name_is_object_name_collision(
    smbd: LoopbackSmbd, share: Path
) -> None:
    (share / "there").write_bytes(b"")
    async with mounted(smbd, share) as (device, _):
        irp = await create(device, "/there", CreateDisposition.FILE_CREATE)
    assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_COLLISION
    assert errno_for(irp.io_status.status) == errno.EEXIST


@trio_test
async def test_delete_of_a_non_empty_directory_is_directory_not_empty(
    smbd: LoopbackSmbd, share: Path
) -> None:
    (share / "d").mkdir()
    (share / "d" / "f").write_bytes(b"")
    async with mounted(smbd, share) as (device, _):
        status = await set_info(device, FileDispositionInformation(), path="/d")
    assert status == NtStatus.STATUS_DIRECTORY_NOT_EMPTY
    assert errno_for(status) == errno.ENOTEMPTY
    assert (share / "d" / "f").exists()


@trio_test
async def test_writing_another_users_file_is_access_denied(
    smbd: LoopbackSmbd, share: Path
) -> None:
    (share / "roots").write_bytes(b"keep")
    (share / "roots").chmod(0o644)
    async with mounted(smbd, share, account=smbd.user_login) as (device, _):
        irp = await create(device, "/roots", CreateDisposition.FILE_OPEN)
        assert irp.io_status.status == NtStatus.STATUS_ACCESS_DENIED
        readable = await create(
            device, "/roots", CreateDisposition.FILE_OPEN, access=AccessMask.FILE_READ_DATA
        )
        assert readable.io_status.status == NtStatus.STATUS_SUCCESS
        assert readable.file_object is not None
        await close(device, readable.file_object)
    assert errno_for(NtStatus.STATUS_ACCESS_DENIED) == errno.EACCES
    assert (share / "roots").read_bytes() == b"keep"


@trio_test
async def test_creating_on_a_read_only_share_is_access_denied(smbd: LoopbackSmbd) -> None:
    async with mounted(smbd, None, share=READ_ONLY_SHARE) as (device, _):
        irp = await create(device, f"/new-{uuid.uuid4().hex}", CreateDisposition.FILE_CREATE)
    assert irp.io_status.status == NtStatus.STATUS_ACCESS_DENIED
    assert list(smbd.read_only_root.iterdir()) == []


def _exclusive_open(server: LoopbackSmbd, name: str) -> tuple[Connection, Open]:
    """Another client (smbprotocol itself) opening ``name`` with no sharing at all."""
    connection = Connection(uuid.uuid4(), "127.0.0.1", server.port)
    connection.connect(timeout=10)
    session = Session(connection, server.admin.user, server.admin.password)
    session.connect()
    tree = TreeConnect(session, r"\\127.0.0.1\share")
    tree.connect()
    handle = Open(tree, name)
    # GENERIC_READ | GENERIC_WRITE, no share access, FILE_OPEN, a file.
    handle.create(2, 0x80000000 | 0x40000000, 0, 0, 1, 0x40)
    return connection, handle


@trio_test
async def test_a_file_another_client_holds_exclusively_is_sharing_violation(
    smbd: LoopbackSmbd, share: Path
) -> None:
    (share / "held").write_bytes(b"x")
    name = f"{share.name}\\held"
    connection, handle = await trio.to_thread.run_sync(_exclusive_open, smbd, name)
    try:
        async with mounted(smbd, share) as (device, _):
            irp = await create(device, "/held", CreateDisposition.FILE_OPEN)
    finally:
        await trio.to_thread.run_sync(handle.close)
        await trio.to_thread.run_sync(connection.disconnect)
    assert irp.io_status.status == NtStatus.STATUS_SHARING_VIOLATION
    assert errno_for(irp.io_status.status) == errno.EBUSY


@pytest.fixture
def full_dir(smbd: LoopbackSmbd, share: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted in the share (needs root), unmounted after."""
    path = share / "full"
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"mounting a tmpfs needs root: {done.stderr}"
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], timeout=30, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], timeout=30, check=False)


@trio_test
async def test_writing_past_a_full_disk_is_disk_full(
    smbd: LoopbackSmbd, share: Path, full_dir: Path
) -> None:
    async with mounted(smbd, share) as (device, _):
        # Write-through (O_SYNC): each write is answered by the server, not cached.
        fobx = await open_file(
            device,
            "/full/big",
            CreateDisposition.FILE_CREATE,
            options=CreateOptions.FILE_WRITE_THROUGH,
        )
        statuses = [
            (await write(device, fobx, offset, os.urandom(256 * 1024))).status
            for offset in range(0, 2 * MIB, 256 * 1024)
        ]
        await close(device, fobx)
    assert NtStatus.STATUS_DISK_FULL in statuses, statuses
    assert errno_for(NtStatus.STATUS_DISK_FULL) == errno.ENOSPC


@trio_test
async def test_a_directory_is_not_opened_as_a_file(smbd: LoopbackSmbd, share: Path) -> None:
    (share / "d").mkdir()
    async with mounted(smbd, share) as (device, _):
        irp = await create(
            device,
            "/d",
            CreateDisposition.FILE_OPEN,
            options=CreateOptions.FILE_NON_DIRECTORY_FILE,
        )
    assert irp.io_status.status == NtStatus.STATUS_FILE_IS_A_DIRECTORY
    assert errno_for(irp.io_status.status) == errno.EISDIR


@trio_test
async def test_symlinks_are_minshall_french_files(smbd: LoopbackSmbd, share: Path) -> None:
    async with mounted(smbd, share) as (device, _):
        set_link = Irp(
            IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL,
            FsControlParameters(FsControlCode.FSCTL_SET_REPARSE_POINT, "../elsewhere"),
            file_name="/link",
        )
        assert (await device.dispatch(set_link)).status == NtStatus.STATUS_SUCCESS
        status, attrs = await stat_path(device, "/link")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None and attrs.is_symlink
        assert attrs.size == len("../elsewhere")
        get_link = Irp(
            IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL,
            FsControlParameters(FsControlCode.FSCTL_GET_REPARSE_POINT),
            file_name="/link",
        )
        assert (await device.dispatch(get_link)).status == NtStatus.STATUS_SUCCESS
        assert get_link.link_target == "../elsewhere"
    on_disk = (share / "link").read_bytes()
    assert len(on_disk) == 1067 and on_disk.startswith(b"XSym\n0012\n")
    async with mounted(smbd, share, mfsymlinks="no") as (device, _):
        status, attrs = await stat_path(device, "/link")
        assert attrs is not None and not attrs.is_symlink and attrs.size == 1067


@trio_test
async def test_a_read_only_file_is_unlinked_as_posix_wants(
    smbd: LoopbackSmbd, share: Path
) -> None:
    (share / "ro").write_bytes(b"x")
    async with mounted(smbd, share) as (device, _):
        assert await set_info(device, FileBasicInformation(mode=0o444), path="/ro") == 0
        status, attrs = await stat_path(device, "/ro")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None
        assert attrs.mode & 0o222 == 0  # the read-only attribute
        # Samba answers STATUS_CANNOT_DELETE; the backend clears the attribute and
        # deletes, as mount.cifs does.
        assert await set_info(device, FileDispositionInformation(), path="/ro") == 0
    assert not (share / "ro").exists()


# -- modes as NT ACLs (-o modes=acl) -----------------------------------------------------


async def _listed_modes(device: RxDevice, path: str) -> dict[str, int]:
    irp = Irp(IrpMj.IRP_MJ_DIRECTORY_CONTROL, QueryDirectoryParameters(), file_name=path)
    assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
    assert irp.entries is not None
    return {e.name: e.attributes.mode & 0o777 for e in irp.entries}


def _effective_mode(path: Path) -> int:
    """The permissions the server's file system enforces: Samba stores a DACL as a
    POSIX ACL whose mask shows as the group bits of st_mode; owner and other are plain."""
    mode = path.stat().st_mode
    return mode & 0o707


@trio_test
async def test_modes_are_read_from_and_kept_in_the_files_acl(
    smbd: LoopbackSmbd, share: Path
) -> None:
    (share / "server").write_bytes(b"x")
    (share / "server").chmod(0o751)
    # No directory cache: each listing asks the server.
    async with mounted(smbd, share, modes="acl", dir_timeout="0") as (device, _):
        status, attrs = await stat_path(device, "/server")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None
        assert attrs.mode & 0o777 == 0o751
        assert (await _listed_modes(device, "/"))["server"] == 0o751
        made = Irp(
            IrpMj.IRP_MJ_CREATE,
            CreateParameters(
                AccessMask.FILE_READ_DATA | AccessMask.FILE_WRITE_DATA,
                CreateDisposition.FILE_CREATE,
                CreateOptions.FILE_NON_DIRECTORY_FILE,
                file_mode=0o640,
            ),
            file_name="/made",
        )
        assert (await device.dispatch(made)).status == NtStatus.STATUS_SUCCESS
        assert made.attributes is not None and made.attributes.mode & 0o777 == 0o640
        assert made.file_object is not None
        assert await close(device, made.file_object) == NtStatus.STATUS_SUCCESS
        assert await set_info(device, FileBasicInformation(mode=0o705), path="/server") == 0
        assert await _listed_modes(device, "/") == {"server": 0o705, "made": 0o640}
    assert _effective_mode(share / "server") == 0o705
    assert _effective_mode(share / "made") == 0o600
    async with mounted(smbd, share, modes="acl") as (device, _):
        assert await _listed_modes(device, "/") == {"server": 0o705, "made": 0o640}
    async with mounted(smbd, share) as (device, _):  # -o modes=fixed, the default
        assert await _listed_modes(device, "/") == {"server": 0o644, "made": 0o644}


@trio_test
async def test_a_file_made_read_only_takes_its_creators_writes(
    smbd: LoopbackSmbd, share: Path
) -> None:
    """open(O_CREAT | O_WRONLY, 0444) returns a descriptor that writes (git's objects,
    cp of a read-only file), though the mode set at the create makes the file read-only
    (its DACL, and the read-only attribute)."""
    async with mounted(smbd, share, modes="acl") as (device, _):
        made = Irp(
            IrpMj.IRP_MJ_CREATE,
            CreateParameters(
                AccessMask.FILE_WRITE_DATA,
                CreateDisposition.FILE_CREATE,
                CreateOptions.FILE_NON_DIRECTORY_FILE,
                file_mode=0o444,
            ),
            file_name="/ro",
        )
        assert (await device.dispatch(made)).status == NtStatus.STATUS_SUCCESS
        assert made.file_object is not None
        assert (await write(device, made.file_object, 0, b"written")).information == 7
        assert await close(device, made.file_object) == NtStatus.STATUS_SUCCESS
        status, attrs = await stat_path(device, "/ro")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None
        assert attrs.mode & 0o777 == 0o444
    assert (share / "ro").read_bytes() == b"written"


@trio_test
async def test_another_users_file_it_may_not_read_shows_the_default_mode(
    smbd: LoopbackSmbd, share: Path
) -> None:
    (share / "private").write_bytes(b"secret")
    (share / "private").chmod(0o600)
    async with mounted(smbd, share, account=smbd.user_login, modes="acl") as (device, _):
        status, attrs = await stat_path(device, "/private")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None
        # READ_CONTROL is refused: the stat is made again without the DACL.
        assert attrs.mode & 0o777 == 0o644
        assert (await _listed_modes(device, "/"))["private"] == 0o644
        irp = await create(device, "/private", CreateDisposition.FILE_OPEN)
        assert irp.io_status.status == NtStatus.STATUS_ACCESS_DENIED
