"""IoStatus.Information of IRP_MJ_WRITE is the byte count, and the bytes read back."""

from __future__ import annotations

import random

import pytest
from rxfs.rdbss import NtStatus

from ._harness import file_bytes, mounted, open_file, read, read_bytes, stat_path, trio_test, write

# (offset, size) pairs: tiny, page-sized, odd, past a hole, and a FUSE-sized 1 MiB write.
WRITES = [(0, 1), (1, 4096), (4097, 65537), (200_000, 3), (10, 1 << 20)]


def pattern(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize(("offset", "size"), WRITES)
@trio_test
async def test_write_information_is_bytes_written(offset: int, size: int) -> None:
    async with mounted() as device:
        fobx = await open_file(device, "/f")
        data = pattern(offset, size)
        io_status = await write(device, fobx, offset, data)
        assert io_status.status == NtStatus.STATUS_SUCCESS
        assert io_status.information == size
        assert await read_bytes(device, fobx, offset, size) == data
        # A hole before the first write reads as zeros, as on a local file.
        assert await read_bytes(device, fobx, 0, offset) == bytes(offset)


@trio_test
async def test_overlapping_writes_read_back_as_a_local_file_would() -> None:
    async with mounted() as device:
        fobx = await open_file(device, "/f")
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


@trio_test
async def test_read_past_end_of_file_returns_no_bytes_not_an_error() -> None:
    async with mounted() as device:
        fobx = await open_file(device, "/f")
        await write(device, fobx, 0, b"abc")
        irp = await read(device, fobx, 10, 5)
        assert irp.io_status.status == NtStatus.STATUS_SUCCESS
        assert (irp.io_status.information, bytes(irp.buffer)) == (0, b"")
        assert await read_bytes(device, fobx, 1, 100) == b"bc"


@trio_test
async def test_zero_length_write_succeeds_with_information_zero() -> None:
    async with mounted() as device:
        fobx = await open_file(device, "/f")
        io_status = await write(device, fobx, 5, b"")
        assert (io_status.status, io_status.information) == (NtStatus.STATUS_SUCCESS, 0)
        assert await file_bytes(device, "/f") == b""
