"""The checks of the common write routine (DESIGN §3 step 2): refused before any byte
reaches the backend."""

from __future__ import annotations

import pytest
from rxfs.minirdr.memory import MemoryMiniRdr
from rxfs.rdbss import MAX_FILE_SIZE, Fobx, NtStatus, RxContext, SrvOpenFlags
from rxfs.rdbss.irp import AccessMask, CreateDisposition, CreateOptions

from ._harness import (
    OPEN_MODES,
    WRITE_THROUGH,
    close,
    create,
    file_bytes,
    mkdir,
    mounted,
    open_file,
    trio_test,
    write,
)


class CountingMiniRdr(MemoryMiniRdr):
    """The memory backend, counting the writes that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        self.writes += 1
        return await super().lowio_write(rx_context)


@pytest.mark.parametrize("mode", list(OPEN_MODES))
@trio_test
async def test_write_after_close_is_file_closed(mode: str) -> None:
    backend = CountingMiniRdr()
    async with mounted(backend) as device:
        fobx = await open_file(device, "/f", options=OPEN_MODES[mode])
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        assert fobx.srv_open is None
        io_status = await write(device, fobx, 0, b"late")
        assert (io_status.status, io_status.information) == (NtStatus.STATUS_FILE_CLOSED, 0)
        assert backend.writes == 0


@pytest.mark.parametrize("mode", list(OPEN_MODES))
@trio_test
async def test_write_through_closed_srv_open_is_file_closed(mode: str) -> None:
    """The SrvOpen is marked closed (its handle is gone) while the Fobx still names it."""
    backend = CountingMiniRdr()
    async with mounted(backend) as device:
        fobx = await open_file(device, "/f", options=OPEN_MODES[mode])
        assert fobx.srv_open is not None
        fobx.srv_open.flags |= SrvOpenFlags.SRVOPEN_FLAG_CLOSED
        io_status = await write(device, fobx, 0, b"late")
        assert io_status.status == NtStatus.STATUS_FILE_CLOSED
        assert backend.writes == 0
        assert await file_bytes(device, "/f") == b""


@trio_test
async def test_write_through_fobx_without_srv_open_is_file_closed() -> None:
    async with mounted() as device:
        io_status = await write(device, Fobx(None), 0, b"nowhere")
        assert io_status.status == NtStatus.STATUS_FILE_CLOSED


@trio_test
async def test_write_to_directory_is_invalid_device_request() -> None:
    backend = CountingMiniRdr()
    async with mounted(backend) as device:
        await mkdir(device, "/d")
        irp = await create(
            device,
            "/d",
            CreateDisposition.FILE_OPEN,
            access=AccessMask.FILE_READ_DATA,
            options=CreateOptions.FILE_DIRECTORY_FILE,
        )
        assert irp.io_status.status == NtStatus.STATUS_SUCCESS
        assert irp.file_object is not None
        io_status = await write(device, irp.file_object, 0, b"x")
        assert io_status.status == NtStatus.STATUS_INVALID_DEVICE_REQUEST
        assert backend.writes == 0


@pytest.mark.parametrize(
    ("offset", "data", "length"),
    [
        pytest.param(-1, b"abc", None, id="negative offset"),
        pytest.param(0, b"abc", 4, id="length longer than buffer"),
        pytest.param(0, b"abc", 2, id="length shorter than buffer"),
        pytest.param(0, b"", -1, id="negative length"),
        pytest.param(MAX_FILE_SIZE - 2, b"abc", None, id="beyond MAX_FILE_SIZE"),
    ],
)
@pytest.mark.parametrize("mode", list(OPEN_MODES))
@trio_test
async def test_bad_offset_or_length_is_invalid_parameter(
    offset: int, data: bytes, length: int | None, mode: str
) -> None:
    backend = CountingMiniRdr()
    async with mounted(backend) as device:
        fobx = await open_file(device, "/f", options=OPEN_MODES[mode])
        io_status = await write(device, fobx, offset, data, length=length)
        assert (io_status.status, io_status.information) == (NtStatus.STATUS_INVALID_PARAMETER, 0)
        assert backend.writes == 0
        assert fobx.fcb is not None and fobx.fcb.file_size == 0
        assert not fobx.fcb.resource.is_exclusive and fobx.fcb.resource.shared_count == 0


@trio_test
async def test_write_ending_exactly_at_max_file_size_reaches_the_backend() -> None:
    """The limit is inclusive: offset + length == MAX_FILE_SIZE passes the core's check
    (the backend then answers for its own capacity)."""
    backend = CountingMiniRdr()
    async with mounted(backend, options={"size": "4096"}) as device:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        io_status = await write(device, fobx, MAX_FILE_SIZE - 3, b"abc")
        assert io_status.status == NtStatus.STATUS_DISK_FULL
        assert backend.writes == 1
