"""-o ro in the core: every request that would change the share is refused with
STATUS_MEDIA_WRITE_PROTECTED (EROFS), whatever the kernel let through; reads work."""

from __future__ import annotations

import itertools

import pytest
from rxfs.rdbss import CoreOptions, NtStatus
from rxfs.rdbss.irp import (
    AccessMask,
    CreateDisposition,
    FileBasicInformation,
    FileDispositionInformation,
    FileEndOfFileInformation,
    FileLinkInformation,
    FileRenameInformation,
    FsControlCode,
    FsControlParameters,
    Irp,
    IrpMj,
    SetInformationBuffer,
)

from ._harness import close, create, mkdir, mounted, open_file, read_bytes, set_info, trio_test
from ._harness import write as write_irp

PROTECTED = NtStatus.STATUS_MEDIA_WRITE_PROTECTED
_shares = itertools.count()


async def _prepare() -> str:
    """A memory:// tree of its own holding /f and /d, as a server would; its URL."""
    share = f"memory://read-only-{next(_shares)}"
    async with mounted(url=share) as device:
        fobx = await open_file(device, "/f", CreateDisposition.FILE_CREATE)
        await write_irp(device, fobx, 0, b"server bytes")
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        await mkdir(device, "/d")
    return share


def test_ro_parses_as_mount_options_do() -> None:
    assert CoreOptions.parse({"ro": ""}).read_only
    assert not CoreOptions.parse({}).read_only
    assert not CoreOptions.parse({"ro": "no"}).read_only


@trio_test
async def test_reads_work_on_a_read_only_device() -> None:
    share = await _prepare()
    async with mounted(url=share, core=CoreOptions(read_only=True)) as device:
        irp = await create(
            device, "/f", CreateDisposition.FILE_OPEN, access=AccessMask.FILE_READ_DATA
        )
        assert irp.io_status.status == NtStatus.STATUS_SUCCESS
        assert irp.file_object is not None
        assert await read_bytes(device, irp.file_object, 0, 100) == b"server bytes"
        assert await close(device, irp.file_object) == NtStatus.STATUS_SUCCESS


@pytest.mark.parametrize(
    ("disposition", "access"),
    [
        (CreateDisposition.FILE_OPEN, AccessMask.FILE_READ_DATA | AccessMask.FILE_WRITE_DATA),
        (CreateDisposition.FILE_OPEN, AccessMask.FILE_APPEND_DATA),
        (CreateDisposition.FILE_OPEN, AccessMask.DELETE),
        (CreateDisposition.FILE_OVERWRITE, AccessMask.FILE_READ_DATA),
        (CreateDisposition.FILE_CREATE, AccessMask.FILE_READ_DATA),
        (CreateDisposition.FILE_OPEN_IF, AccessMask.FILE_READ_DATA),
    ],
)
@trio_test
async def test_creates_that_could_change_the_share_are_refused(
    disposition: CreateDisposition, access: AccessMask
) -> None:
    share = await _prepare()
    async with mounted(url=share, core=CoreOptions(read_only=True)) as device:
        for path in ("/f", "/new"):
            irp = await create(device, path, disposition, access=access)
            assert irp.io_status.status == PROTECTED, (path, irp.io_status)
            assert irp.file_object is None


@pytest.mark.parametrize(
    "buffer",
    [
        FileEndOfFileInformation(0),
        FileBasicInformation(mode=0o600),
        FileRenameInformation("/g", replace_if_exists=False),
        FileLinkInformation("/g"),
        FileDispositionInformation(),
    ],
)
@trio_test
async def test_set_information_is_refused(buffer: SetInformationBuffer) -> None:
    share = await _prepare()
    async with mounted(url=share, core=CoreOptions(read_only=True)) as device:
        assert await set_info(device, buffer, path="/f") == PROTECTED


@trio_test
async def test_writes_through_a_handle_and_symlinks_are_refused() -> None:
    """A write through a handle the kernel opened read-only (a bypass of the kernel's
    checks) is refused too; the share keeps its bytes."""
    share = await _prepare()
    async with mounted(url=share, core=CoreOptions(read_only=True)) as device:
        fobx = (
            await create(
                device, "/f", CreateDisposition.FILE_OPEN, access=AccessMask.FILE_READ_DATA
            )
        ).file_object
        assert fobx is not None
        assert (await write_irp(device, fobx, 0, b"changed")).status == PROTECTED
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        symlink = Irp(
            IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL,
            FsControlParameters(FsControlCode.FSCTL_SET_REPARSE_POINT, "/f"),
            file_name="/link",
        )
        assert (await device.dispatch(symlink)).status == PROTECTED
    async with mounted(url=share) as device:
        fobx = await open_file(device, "/f", CreateDisposition.FILE_OPEN)
        assert await read_bytes(device, fobx, 0, 100) == b"server bytes"
        await close(device, fobx)
