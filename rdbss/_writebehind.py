"""The mount's lazy writer: sends what the Fcbs' write-behind buffers hold.

DESIGN §3 steps 3-4 and §4. A cached write copies its bytes into the Fcb's buffer
(:class:`._extents.WriteBehindBuffer`) and completes at once (Information = Length). The
lazy writer sends dirty ranges to the backend as paging writes
(LOWIO_READWRITEFLAG_PAGING_IO) through the one LowIo door (:mod:`._lowio`), coalesced
into chunks of ``chunk_size`` bytes, with two bounds that keep memory flat however large
the file: the dirty bytes of the mount (writers wait when it is reached) and the bytes in
flight.

Bytes stay held until the server acknowledges them (see :mod:`._extents`). A failed
paging write latches its status on the Fcb; the next fsync() or close() of each
descriptor open on the file returns it once (the errseq_t rule of Linux).

RDBSS delegates this to the Windows cache manager (CcCopyWrite, the lazy writer's
CcFlushCache); there is no cache manager here, so the core keeps the buffer itself.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from ._lowio import fill_write, rx_low_io_submit
from ._rxcontext import LowIoReadWriteFlags, RxContext, RxContextFlags
from .irp import Irp, IrpMj, WriteParameters
from .ntstatus import NtStatus, nt_success

if TYPE_CHECKING:
    from ._device import RxDevice
    from ._extents import Extent, Turn
    from ._objects import Fcb, SrvOpen

__all__ = ["MIB", "LazyWriter"]

log = logging.getLogger(__name__)

MIB = 1 << 20
_NO_WAIT = RxContextFlags(0)


class LazyWriter:
    """One per mount: owns the dirty-byte budget and sends paging writes."""

    def __init__(
        self,
        device: RxDevice,
        *,
        dirty_limit: int = 64 * MIB,
        in_flight_limit: int = 32 * MIB,
        chunk_size: int = MIB,
        delay: float = 0.5,
    ) -> None:
        self.device = device
        self.dirty_limit = dirty_limit
        self.in_flight_limit = in_flight_limit
        self.chunk_size = chunk_size
        self.delay = delay
        self.dirty_bytes = 0
        self.in_flight_bytes = 0
        self._fcbs: dict[Fcb, None] = {}
        self._wake = trio.Event()
        self._space = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._tick)
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                self._schedule()

    async def _tick(self) -> None:
        """Wake the lazy writer every ``delay`` for ranges that sat dirty that long: a
        timer of its own, so that each of the many other wakeups costs no timeout."""
        while True:
            await trio.sleep(self.delay)
            self._wake.set()

    # -- writers ------------------------------------------------------------------------

    def can_i_write(self, length: int) -> bool:
        """CcCanIWrite: whether a cached write of ``length`` bytes fits under the mount's
        dirty limit now (one larger than the limit goes when nothing else is held)."""
        return not self.dirty_bytes or self.dirty_bytes + length <= self.dirty_limit

    async def wait_until_i_can_write(self, length: int) -> None:
        """Backpressure (CcDeferWrite): wait until :meth:`can_i_write` says yes."""
        while not self.can_i_write(length):
            self._wake.set()
            await self._space.park()

    def copy_write(self, fcb: Fcb, offset: int, data: bytes | bytearray | memoryview) -> None:
        """CcCopyWrite: buffer a cached write. Not async, and no checkpoint: the caller
        asked :meth:`can_i_write` (or waited) just before, with nothing in between."""
        buffer = fcb.write_behind
        extents = len(buffer.dirty)
        self.dirty_bytes += buffer.add(offset, data, self.chunk_size)
        self._fcbs[fcb] = None
        dirty = buffer.dirty
        # Wake the lazy writer when a chunk filled up and there is room to send it; a
        # paging write that completes wakes it anyway. Once per chunk, not per write,
        # and not for a file's first bytes: nothing can be ready to go yet (a small
        # file goes at its close, from the closing task).
        filled = 0 < extents < len(dirty) or dirty[-1].length >= self.chunk_size
        if filled and self.in_flight_bytes < self.in_flight_limit:
            self._wake.set()

    def send_soon(self, fcb: Fcb) -> None:
        """Send the Fcb's dirty ranges now, short ones too, without waiting for them
        (see IRP_MN_PAGING_IO)."""
        fcb.write_behind.forced = True
        self._fcbs[fcb] = None
        if self.in_flight_bytes < self.in_flight_limit:
            self._wake.set()

    async def flush(self, fcb: Fcb) -> None:
        """Send every byte written to the Fcb before this call and wait until the
        server answered for all of it (success or not: the caller reads the latched
        error). Writes made meanwhile, by another descriptor, are not waited for."""
        buffer = fcb.write_behind
        target = buffer.seq
        while buffer.holds_writes_up_to(target):
            if buffer.dirty:
                buffer.forced = True
                if await self._send_from_here(fcb):
                    continue
                # Nothing could go (in flight is full, or the ranges overlap ones in
                # flight): the lazy writer sends them when room is made.
                self._fcbs[fcb] = None
                self._wake.set()
            await buffer.changed.wait()

    async def _send_from_here(self, fcb: Fcb) -> bool:
        """Send what of the Fcb's dirty ranges may go now, the last of them from this
        (the flushing) task: a small file's close then costs no wakeup of the lazy
        writer, no task started and no wakeup back. False if none went.

        Only a forced unmount cancels a flush; a range whose write it cuts short stays
        held, so the unmount reports it as not landed (as it does the lazy writer's)."""
        budget = self.in_flight_limit - self.in_flight_bytes
        taken = self._take_paging_writes(fcb, budget) if budget > 0 else []
        self._start_paging_writes(fcb, taken[:-1])
        if taken:
            await self._paging_write(fcb, *taken[-1])
        return bool(taken)

    def held(self) -> list[tuple[str, int, int]]:
        """(path, start, end) of every range not yet acknowledged by the server."""
        return [
            (fcb.path, extent.offset, extent.end)
            for fcb in self._fcbs
            for extent in [*fcb.write_behind.in_flight, *fcb.write_behind.dirty]
        ]

    def held_by_file(self) -> list[tuple[str, int, int]]:
        """(path, dirty bytes, bytes in flight) of every file holding bytes."""
        held = []
        for fcb in self._fcbs:
            buffer = fcb.write_behind
            in_flight = sum(extent.length for extent in buffer.in_flight)
            if buffer.dirty_bytes or in_flight:
                held.append((fcb.path, buffer.dirty_bytes, in_flight))
        return held

    async def flush_all(self) -> None:
        for fcb in list(self._fcbs):
            await self.flush(fcb)

    # -- the lazy writer proper ---------------------------------------------------------

    def _schedule(self) -> None:
        now = time.monotonic()
        pressed = self.dirty_bytes > self.dirty_limit // 2
        for fcb in list(self._fcbs):
            buffer = fcb.write_behind
            if buffer.dirty and (pressed or now - buffer.dirty_since >= self.delay):
                buffer.forced = True
            budget = self.in_flight_limit - self.in_flight_bytes
            if budget <= 0:
                break
            self._start_paging_writes(fcb, self._take_paging_writes(fcb, budget))
            if buffer.empty:
                del self._fcbs[fcb]

    def _take_paging_writes(self, fcb: Fcb, budget: int) -> list[tuple[Extent, Turn]]:
        """Take the Fcb's ranges that go now, each with its turn, and count them as in
        flight; the caller sends each (:meth:`_paging_write`)."""
        buffer = fcb.write_behind
        taken = [(extent, buffer.turns.take()) for extent in buffer.take(self.chunk_size, budget)]
        for extent, _ in taken:
            self.dirty_bytes -= extent.length
            self.in_flight_bytes += extent.length
        if taken:
            # Writers waiting for room go again only when there is more room: waking
            # them otherwise has them wake us straight back, a busy loop while in flight
            # is full.
            self._space.unpark_all()
        return taken

    def _start_paging_writes(self, fcb: Fcb, taken: list[tuple[Extent, Turn]]) -> None:
        assert self._nursery is not None
        for extent, turn in taken:
            self._nursery.start_soon(self._paging_write, fcb, extent, turn)

    async def _paging_write(self, fcb: Fcb, extent: Extent, turn: Turn) -> None:
        # Held until acknowledged: a write lost with its connection is sent again on
        # the next one (a positioned write is idempotent; a replay does not queue for
        # a turn again).
        try:
            status = await self.device.reconnector.with_replay(
                lambda: self._send(fcb, extent, turn)
            )
        finally:
            fcb.write_behind.turns.pass_on(turn)
        if not nt_success(status):
            fcb.latch_write_error(status)
            log.error(
                "write-behind of %s bytes %d-%d failed: %s",
                fcb.path,
                extent.offset,
                extent.end,
                status,
            )
        self.in_flight_bytes -= extent.length
        fcb.write_behind.landed(extent)
        if self.dirty_bytes:
            # Ranges may wait for the room this write made, or for its range to land.
            self._wake.set()

    async def _send(self, fcb: Fcb, extent: Extent, turn: Turn) -> NtStatus:
        turns = fcb.write_behind.turns
        await turns.wait_for(turn)
        srv_open = _writable_open(fcb)
        if isinstance(srv_open, NtStatus):
            return srv_open
        irp = Irp(
            IrpMj.IRP_MJ_WRITE,
            WriteParameters(len(extent.data), extent.offset),
            buffer=extent.data,
        )
        # Not WAIT: the submit returns once the backend has the write in hand, so the
        # next paging write may go while this one is in flight.
        rx_context = RxContext(self.device, irp, fcb=fcb, srv_open=srv_open, flags=_NO_WAIT)
        paging = LowIoReadWriteFlags.LOWIO_READWRITEFLAG_PAGING_IO
        fill_write(rx_context, extent.offset, extent.data, paging)
        srv_open.paging_writes += 1
        try:
            try:
                status = await rx_low_io_submit(rx_context)
            finally:
                turns.pass_on(turn)
            if status == NtStatus.STATUS_PENDING:
                status = await rx_context.wait()
        finally:
            srv_open.paging_writes -= 1
            if not srv_open.paging_writes:
                srv_open.paging_idle.set()
        if nt_success(status) and rx_context.io_status.information != len(extent.data):
            return NtStatus.STATUS_IO_DEVICE_ERROR
        return status


def _writable_open(fcb: Fcb) -> SrvOpen | NtStatus:
    """A handle to send through: one that is not being closed if there is one, so that
    a close need not wait for writes made through another descriptor. None left: why
    (an orphaned handle's status: the held bytes cannot land, and must not be sent on
    the handle of a connection that is gone), else STATUS_FILE_CLOSED."""
    writable = [
        srv_open
        for srv_open in fcb.srv_opens
        if not srv_open.closed and not srv_open.append and srv_open.may_write
    ]
    usable = [srv_open for srv_open in writable if srv_open.orphan_status is None]
    for srv_open in usable:
        if not srv_open.closing:
            return srv_open
    if usable:
        return usable[0]
    for srv_open in writable:
        if srv_open.orphan_status is not None:
            return srv_open.orphan_status
    return NtStatus.STATUS_FILE_CLOSED
