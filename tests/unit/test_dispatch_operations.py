"""The other major functions through RxDevice.dispatch and the memory backend: create
dispositions, set information, directory and volume queries, symlinks, and the
Fcb table that follows renames and drops Fcbs nobody references."""

from __future__ import annotations

import stat

import pytest
from rxfs.minirdr import MiniRdrDispatch
from rxfs.rdbss import NtStatus, RxDevice
from rxfs.rdbss.irp import (
    CreateDisposition,
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

from ._harness import (
    close,
    create,
    file_bytes,
    mkdir,
    mounted,
    open_file,
    read_bytes,
    set_info,
    stat_path,
    trio_test,
    write,
)


async def make_file(device: RxDevice, path: str, data: bytes) -> None:
    fobx = await open_file(device, path, CreateDisposition.FILE_CREATE)
    assert (await write(device, fobx, 0, data)).information == len(data)
    assert await close(device, fobx) == NtStatus.STATUS_SUCCESS


async def list_dir(device: RxDevice, path: str) -> tuple[NtStatus, dict[str, int]]:
    irp = Irp(IrpMj.IRP_MJ_DIRECTORY_CONTROL, QueryDirectoryParameters(), file_name=path)
    status = (await device.dispatch(irp)).status
    return status, {e.name: e.attributes.mode for e in irp.entries or []}


async def fsctl(device: RxDevice, path: str, code: FsControlCode, target: str = "") -> Irp:
    irp = Irp(IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL, FsControlParameters(code, target), file_name=path)
    await device.dispatch(irp)
    return irp


# -- create dispositions ------------------------------------------------------------------


@trio_test
async def test_file_create_on_existing_name_is_object_name_collision() -> None:
    async with mounted() as device:
        await make_file(device, "/f", b"keep me")
        irp = await create(device, "/f", CreateDisposition.FILE_CREATE)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_COLLISION
        assert irp.file_object is None
        assert await file_bytes(device, "/f") == b"keep me"


@trio_test
async def test_file_open_on_missing_name_is_object_name_not_found() -> None:
    async with mounted() as device:
        irp = await create(device, "/missing", CreateDisposition.FILE_OPEN)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
        assert irp.file_object is None
        assert device.net_root.fcb_table == {}  # the failed open leaves no Fcb behind
        irp = await create(device, "/no/such/dir/f", CreateDisposition.FILE_OPEN_IF)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_PATH_NOT_FOUND


@pytest.mark.parametrize(
    "disposition",
    [
        CreateDisposition.FILE_OVERWRITE,
        CreateDisposition.FILE_OVERWRITE_IF,
        CreateDisposition.FILE_SUPERSEDE,
    ],
)
@trio_test
async def test_overwrite_dispositions_truncate_existing_file(
    disposition: CreateDisposition,
) -> None:
    async with mounted() as device:
        await make_file(device, "/f", b"old content")
        fobx = await open_file(device, "/f", disposition)
        assert fobx.fcb is not None and fobx.fcb.file_size == 0
        assert await read_bytes(device, fobx, 0, 100) == b""
        await close(device, fobx)
        status, attrs = await stat_path(device, "/f")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None and attrs.size == 0


@trio_test
async def test_file_overwrite_on_missing_name_is_not_found_and_open_if_keeps_bytes() -> None:
    async with mounted() as device:
        irp = await create(device, "/f", CreateDisposition.FILE_OVERWRITE)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
        await make_file(device, "/f", b"kept")
        fobx = await open_file(device, "/f", CreateDisposition.FILE_OPEN_IF)
        assert await read_bytes(device, fobx, 0, 10) == b"kept"


# -- set information ----------------------------------------------------------------------


@trio_test
async def test_rename_without_replace_onto_existing_name_is_collision() -> None:
    async with mounted() as device:
        await make_file(device, "/a", b"A")
        await make_file(device, "/b", b"B")
        status = await set_info(device, FileRenameInformation("/b", False), path="/a")
        assert status == NtStatus.STATUS_OBJECT_NAME_COLLISION
        assert await file_bytes(device, "/a") == b"A"
        assert await file_bytes(device, "/b") == b"B"


@trio_test
async def test_rename_with_replace_moves_bytes_over_the_target() -> None:
    async with mounted() as device:
        await make_file(device, "/a", b"A")
        await make_file(device, "/b", b"B")
        status = await set_info(device, FileRenameInformation("/b", True), path="/a")
        assert status == NtStatus.STATUS_SUCCESS
        assert await file_bytes(device, "/b") == b"A"
        assert (await stat_path(device, "/a"))[0] == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND


@trio_test
async def test_rename_to_a_free_name_without_replace() -> None:
    async with mounted() as device:
        await make_file(device, "/a", b"A")
        status = await set_info(device, FileRenameInformation("/c", False), path="/a")
        assert status == NtStatus.STATUS_SUCCESS
        assert await file_bytes(device, "/c") == b"A"
        _, names = await list_dir(device, "/")
        assert set(names) == {"c"}


@trio_test
async def test_link_gives_a_second_name_to_the_same_bytes() -> None:
    async with mounted() as device:
        await make_file(device, "/a", b"shared")
        status = await set_info(device, FileLinkInformation("/b"), path="/a")
        assert status == NtStatus.STATUS_SUCCESS
        fobx = await open_file(device, "/b", CreateDisposition.FILE_OPEN)
        await write(device, fobx, 0, b"SH")
        await close(device, fobx)
        assert await file_bytes(device, "/a") == b"SHared"
        _, attrs = await stat_path(device, "/a")
        assert attrs is not None and attrs.nlink == 2
        status = await set_info(device, FileLinkInformation("/b"), path="/a")
        assert status == NtStatus.STATUS_OBJECT_NAME_COLLISION


@trio_test
async def test_delete_of_non_empty_directory_is_directory_not_empty() -> None:
    async with mounted() as device:
        await mkdir(device, "/d")
        await make_file(device, "/d/f", b"x")
        status = await set_info(device, FileDispositionInformation(), path="/d")
        assert status == NtStatus.STATUS_DIRECTORY_NOT_EMPTY
        assert (await stat_path(device, "/d/f"))[0] == NtStatus.STATUS_SUCCESS
        assert await set_info(device, FileDispositionInformation(), path="/d/f") == (
            NtStatus.STATUS_SUCCESS
        )
        assert await set_info(device, FileDispositionInformation(), path="/d") == (
            NtStatus.STATUS_SUCCESS
        )
        assert (await stat_path(device, "/d"))[0] == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND


@trio_test
async def test_end_of_file_truncates_and_extends_with_zeros() -> None:
    async with mounted() as device:
        fobx = await open_file(device, "/f")
        await write(device, fobx, 0, b"0123456789")
        assert await set_info(device, FileEndOfFileInformation(3), fobx=fobx) == (
            NtStatus.STATUS_SUCCESS
        )
        assert fobx.fcb is not None and fobx.fcb.file_size == 3
        assert await read_bytes(device, fobx, 0, 100) == b"012"
        assert await set_info(device, FileEndOfFileInformation(6), path="/f") == (
            NtStatus.STATUS_SUCCESS
        )
        assert fobx.fcb.file_size == 6  # by name, the open file's Fcb sees it too
        assert await read_bytes(device, fobx, 0, 100) == b"012\0\0\0"
        assert not fobx.fcb.resource.is_exclusive


# -- directories, volume, symlinks ----------------------------------------------------------


@trio_test
async def test_query_directory_lists_entries_with_their_types() -> None:
    async with mounted() as device:
        await mkdir(device, "/d")
        await make_file(device, "/d/f", b"x")
        await mkdir(device, "/d/sub")
        status, names = await list_dir(device, "/d")
        assert status == NtStatus.STATUS_SUCCESS
        assert set(names) == {"f", "sub"}  # no . and ..
        assert stat.S_ISREG(names["f"]) and stat.S_ISDIR(names["sub"])
        assert (await list_dir(device, "/d/f"))[0] == NtStatus.STATUS_NOT_A_DIRECTORY
        assert (await list_dir(device, "/nope"))[0] == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND


@trio_test
async def test_volume_information_reports_capacity_and_use() -> None:
    async with mounted(options={"size": str(1 << 20)}) as device:
        irp = Irp(IrpMj.IRP_MJ_QUERY_VOLUME_INFORMATION)
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_SUCCESS
        assert irp.volume is not None
        assert irp.volume.block_size * irp.volume.total_blocks == 1 << 20
        assert irp.volume.free_blocks == irp.volume.total_blocks
        await make_file(device, "/f", bytes(8192))
        irp = Irp(IrpMj.IRP_MJ_QUERY_VOLUME_INFORMATION)
        await device.dispatch(irp)
        assert irp.volume is not None
        assert irp.volume.free_blocks == irp.volume.total_blocks - 2


@trio_test
async def test_symlink_by_fsctl_set_and_get_reparse_point() -> None:
    async with mounted() as device:
        irp = await fsctl(device, "/link", FsControlCode.FSCTL_SET_REPARSE_POINT, "../out/there")
        assert irp.io_status.status == NtStatus.STATUS_SUCCESS
        irp = await fsctl(device, "/link", FsControlCode.FSCTL_GET_REPARSE_POINT)
        assert irp.io_status.status == NtStatus.STATUS_SUCCESS
        assert irp.link_target == "../out/there"  # shown as it is, never resolved
        status, attrs = await stat_path(device, "/link")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None and attrs.is_symlink
        irp = await fsctl(device, "/link", FsControlCode.FSCTL_SET_REPARSE_POINT, "other")
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_COLLISION
        irp = await fsctl(device, "/missing", FsControlCode.FSCTL_GET_REPARSE_POINT)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND


# -- a backend that leaves entries out -------------------------------------------------------


class BareMiniRdr(MiniRdrDispatch):
    """Implements nothing beyond what the base class gives."""

    scheme = "bare"


@trio_test
async def test_entries_a_backend_leaves_out_answer_not_implemented() -> None:
    async with mounted(BareMiniRdr(), url="bare://host/") as device:
        assert (await create(device, "/f")).io_status.status == NtStatus.STATUS_NOT_IMPLEMENTED
        assert (await stat_path(device, "/f"))[0] == NtStatus.STATUS_NOT_IMPLEMENTED
        assert (await list_dir(device, "/"))[0] == NtStatus.STATUS_NOT_IMPLEMENTED
        assert await set_info(device, FileEndOfFileInformation(0), path="/f") == (
            NtStatus.STATUS_NOT_IMPLEMENTED
        )
        volume = Irp(IrpMj.IRP_MJ_QUERY_VOLUME_INFORMATION)
        assert (await device.dispatch(volume)).status == NtStatus.STATUS_NOT_IMPLEMENTED
        irp = await fsctl(device, "/l", FsControlCode.FSCTL_SET_REPARSE_POINT, "t")
        assert irp.io_status.status == NtStatus.STATUS_NOT_IMPLEMENTED
        assert device.net_root.fcb_table == {}


@trio_test
async def test_major_function_without_a_routine_is_invalid_device_request() -> None:
    async with mounted() as device:
        irp = Irp(IrpMj.IRP_MJ_LOCK_CONTROL, file_name="/f")
        assert (await device.dispatch(irp)).status == NtStatus.STATUS_INVALID_DEVICE_REQUEST


# -- the Fcb table --------------------------------------------------------------------------


@trio_test
async def test_fcb_table_rekeys_open_files_on_rename_of_their_directory() -> None:
    async with mounted() as device:
        await mkdir(device, "/d")
        fobx = await open_file(device, "/d/f")
        fcb = fobx.fcb
        assert fcb is not None
        assert set(device.net_root.fcb_table) == {"/d/f"}
        status = await set_info(device, FileRenameInformation("/e", False), path="/d")
        assert status == NtStatus.STATUS_SUCCESS
        assert device.net_root.fcb_table == {"/e/f": fcb}
        assert fcb.path == "/e/f"
        # The open descriptor keeps working, and what it writes is at the new name.
        await write(device, fobx, 0, b"moved")
        await close(device, fobx)
        assert await file_bytes(device, "/e/f") == b"moved"


@trio_test
async def test_rename_over_an_open_file_orphans_the_replaced_fcb() -> None:
    async with mounted() as device:
        await make_file(device, "/a", b"A")
        victim = await open_file(device, "/b")
        mover = await open_file(device, "/a", CreateDisposition.FILE_OPEN)
        old_fcb, moved_fcb = victim.fcb, mover.fcb
        assert old_fcb is not None and moved_fcb is not None
        status = await set_info(device, FileRenameInformation("/b", True), fobx=mover)
        assert status == NtStatus.STATUS_SUCCESS
        assert device.net_root.fcb_table == {"/b": moved_fcb}
        assert old_fcb.orphaned and not moved_fcb.orphaned
        await close(device, victim)
        await close(device, mover)
        assert device.net_root.fcb_table == {}


@trio_test
async def test_fcb_is_shared_by_opens_and_dropped_with_its_last_reference() -> None:
    async with mounted() as device:
        first = await open_file(device, "/f")
        second = await open_file(device, "/f", CreateDisposition.FILE_OPEN)
        assert first.fcb is second.fcb
        assert first.srv_open is not second.srv_open
        await close(device, first)
        assert set(device.net_root.fcb_table) == {"/f"}
        await close(device, second)
        assert device.net_root.fcb_table == {}
        # Path-addressed requests reference an Fcb only while they run.
        await stat_path(device, "/f")
        await list_dir(device, "/")
        await set_info(device, FileEndOfFileInformation(1), path="/f")
        assert device.net_root.fcb_table == {}
