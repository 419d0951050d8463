"""The write-behind buffer against a bytearray model: whatever order writes, sends and
replies come in, the server's bytes overlaid with the held ones equal what was written."""

from __future__ import annotations

import random

import pytest
from rxfs.minirdr.memory import MemoryMiniRdr
from rxfs.rdbss import LowIoReadWriteFlags, NtStatus, RxContext
from rxfs.rdbss._extents import Extent, WriteBehindBuffer
from rxfs.rdbss._writebehind import MIB
from rxfs.rdbss.irp import Irp, IrpMj

from ._harness import close, file_bytes, mounted, open_file, trio_test, write


def _apply(target: bytearray, offset: int, data: bytes | bytearray) -> None:
    if len(target) < offset + len(data):
        target.extend(bytes(offset + len(data) - len(target)))
    target[offset : offset + len(data)] = data


@pytest.mark.parametrize("seed", range(60))
def test_held_bytes_over_server_bytes_equal_every_write(seed: int) -> None:
    rng = random.Random(seed)
    chunk = rng.choice([8, 64, 4096])
    written, server = bytearray(), bytearray()
    buffer = WriteBehindBuffer()
    in_flight: list[Extent] = []
    for _ in range(200):
        roll = rng.random()
        if roll < 0.6:
            offset = rng.randrange(2000)
            data = rng.randbytes(rng.randrange(1, 300))
            buffer.add(offset, data, chunk)
            _apply(written, offset, data)
        elif roll < 0.8:
            buffer.forced = rng.random() < 0.5
            in_flight += buffer.take(chunk, rng.randrange(1, 5000))
        elif in_flight:
            extent = in_flight.pop(rng.randrange(len(in_flight)))
            _apply(server, extent.offset, extent.data)
            buffer.landed(extent)
        view = server + bytes(max(0, len(written) - len(server)))
        for offset, piece in buffer.snapshot(0, len(view)):
            view[offset : offset + len(piece)] = piece
        assert view[: len(written)] == written
        assert buffer.end() <= len(written)
        assert all(a.end <= b.offset for a, b in zip(buffer.dirty, buffer.dirty[1:], strict=False))


def test_sequential_writes_are_sent_as_whole_chunks() -> None:
    buffer = WriteBehindBuffer()
    for i in range(1024):
        buffer.add(i * 4096, bytes(4096), 1 << 20)
    taken = buffer.take(1 << 20, budget=1 << 30)
    assert [len(e.data) for e in taken] == [1 << 20] * 4
    assert buffer.dirty == [] and buffer.dirty_bytes == 0


def test_a_partial_chunk_waits_until_forced() -> None:
    buffer = WriteBehindBuffer()
    buffer.add(0, b"abc", 1 << 20)
    assert buffer.take(1 << 20, budget=1 << 30) == []
    buffer.forced = True
    taken = buffer.take(1 << 20, budget=1 << 30)
    assert [(e.offset, bytes(e.data)) for e in taken] == [(0, b"abc")]


def test_a_range_overlapping_one_in_flight_is_not_sent_until_it_lands() -> None:
    buffer = WriteBehindBuffer()
    buffer.forced = True
    buffer.add(0, b"old", 16)
    (first,) = buffer.take(16, budget=100)
    buffer.add(1, b"N", 16)
    buffer.forced = True
    assert buffer.take(16, budget=100) == []
    buffer.landed(first)
    (second,) = buffer.take(16, budget=100)
    assert (second.offset, bytes(second.data)) == (1, b"N")


class _RecordingMiniRdr(MemoryMiniRdr):
    """The memory backend, noting the offset of every paging write as it arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[int] = []

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        rw = rx_context.low_io.read_write
        if rw.flags & LowIoReadWriteFlags.LOWIO_READWRITEFLAG_PAGING_IO:
            self.arrivals.append(rw.byte_offset)
        return await super().lowio_write(rx_context)


@trio_test
async def test_one_flush_hands_its_ranges_to_the_backend_in_offset_order() -> None:
    # trio runs a batch of new tasks in either order (it reverses half of them); were a
    # flush's ranges handed over reversed, a disk filling in between would leave a hole.
    backend = _RecordingMiniRdr()
    async with mounted(backend) as device:
        for attempt in range(20):
            fobx = await open_file(device, f"/f{attempt}")
            data = random.Random(attempt).randbytes(4 * MIB + 5)
            # Chunk by chunk, with no checkpoint in between: the lazy writer sends
            # nothing before the flush takes all five ranges at once.
            for pos in range(0, len(data), MIB):
                piece = data[pos : pos + MIB]
                assert (await write(device, fobx, pos, piece)).information == len(piece)
            backend.arrivals.clear()
            flush = Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx)
            assert (await device.dispatch(flush)).status == NtStatus.STATUS_SUCCESS
            assert len(backend.arrivals) == 5, backend.arrivals
            assert backend.arrivals == sorted(backend.arrivals)
            assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
            assert await file_bytes(device, f"/f{attempt}") == data
