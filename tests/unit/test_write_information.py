"""IoStatus.Information of IRP_MJ_WRITE is the byte count, and the bytes read back."""

from __future__ import annotations

import random

import pytest
import trio
from rxfs.rdbss import Fobx, NtStatus, RxDevice
from rxfs.rdbss.irp import AccessMask, CreateDisposition, IoStatusBlock

from ._harness import (
    OPEN_MODES,
    create,
    file_bytes,
    mounted,
    open_file,
    read,
    read_bytes,
    stat_path,
    trio_test,
    write,
)

# (offset, size) pairs: tiny, page-sized, odd, past a hole, and a FUSE-sized 1 MiB write.
WRITES = [(0, 1), (1, 4096), (4097, 65537), (200_000, 3), (10, 1 << 20)]


def pattern(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("mode", list(OPEN_MODES))
@pytest.mark.parametrize(("offset", "size"), WRITES)
@trio_test
async def test_write_information_is_bytes_written(offset: int, size: int, mode: str) -> None:
    async with mounted() as device:
        fobx = await open_file(device, "/f", options=OPEN_MODES[mode])
        data = pattern(offset, size)
        io_status = await write(device, fobx, offset, data)
        assert io_status.status == NtStatus.STATUS_SUCCESS
        assert io_status.information == size
        assert await read_bytes(device, fobx, offset, size) == data
        # A hole before the first write reads as zeros, as on a local file.
        assert await read_bytes(device, fobx, 0, offset) == bytes(offset)


@pytest.mark.parametrize("mode", list(OPEN_MODES))
@trio_test
async def test_overlapping_writes_read_back_as_a_local_file_would(mode: str) -> None:
    async with mounted() as device:
        fobx = await open_file(device, "/f", options=OPEN_MODES[mode])
        model = bytearray()
        for seed, (offset, size) in enumerate(WRITES):
            data = pattern(seed, size)
            io_status = await write(device, fobx, offset, data)
            assert (io_status.status, io_status.information) == (NtStatus.STATUS_SUCCESS, size)
            model.extend(bytes(max(0, offset + size - len(model))))
            model[offset : offset + size] = data
        assert fobx.fcb is not None and fobx.fcb.file_size == len(model)
        status, attrs = await stat_path(device, "/f")
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None
        assert attrs.size == len(model)
        assert await file_bytes(device, "/f") == bytes(model)


@pytest.mark.parametrize("mode", list(OPEN_MODES))
@trio_test
async def test_read_past_end_of_file_returns_no_bytes_not_an_error(mode: str) -> None:
    async with mounted() as device:
        fobx = await open_file(device, "/f", options=OPEN_MODES[mode])
        await write(device, fobx, 0, b"abc")
        irp = await read(device, fobx, 10, 5)
        assert irp.io_status.status == NtStatus.STATUS_SUCCESS
        assert (irp.io_status.information, bytes(irp.buffer)) == (0, b"")
        assert await read_bytes(device, fobx, 1, 100) == b"bc"


@pytest.mark.parametrize("mode", list(OPEN_MODES))
@trio_test
async def test_zero_length_write_succeeds_with_information_zero(mode: str) -> None:
    async with mounted() as device:
        fobx = await open_file(device, "/f", options=OPEN_MODES[mode])
        io_status = await write(device, fobx, 5, b"")
        assert (io_status.status, io_status.information) == (NtStatus.STATUS_SUCCESS, 0)
        assert await file_bytes(device, "/f") == b""


@trio_test
async def test_concurrent_appends_both_land_at_the_end() -> None:
    """O_APPEND writes in flight together: each lands after the other, none is lost,
    and the size the core reports is the size of the file."""
    async with mounted() as device:
        fobx = await open_file(device, "/f")
        await write(device, fobx, 0, b"0123456789")
        irp = await create(
            device, "/f", CreateDisposition.FILE_OPEN, access=AccessMask.FILE_APPEND_DATA
        )
        appender = irp.file_object
        assert appender is not None
        results: list[IoStatusBlock] = []
        async with trio.open_nursery() as nursery:
            for chunk in (b"abc", b"xyz"):
                # The kernel's offset for an append is its idea of the size; stale here.
                nursery.start_soon(append, device, appender, chunk, results)
        assert [(r.status, r.information) for r in results] == [(NtStatus.STATUS_SUCCESS, 3)] * 2
        content = await file_bytes(device, "/f")
        assert content in (b"0123456789abcxyz", b"0123456789xyzabc")
        assert appender.fcb is not None and appender.fcb.file_size == len(content)


async def append(device: RxDevice, fobx: Fobx, data: bytes, results: list[IoStatusBlock]) -> None:
    results.append(await write(device, fobx, 0, data))
