"""Write-behind: each Fcb's buffer of dirty ranges, and the mount's lazy writer.

DESIGN §3 steps 3-4 and §4. A cached write copies its bytes into the Fcb's buffer and
completes at once (Information = Length). The lazy writer sends dirty ranges to the
backend as paging writes (LOWIO_READWRITEFLAG_PAGING_IO), coalesced into chunks of
``chunk_size`` bytes, with two bounds that keep memory flat however large the file: the
dirty bytes of the mount (writers wait when it is reached) and the bytes in flight.

Bytes stay held until the server acknowledges them: a range moves from ``dirty`` to
``in_flight`` when it is sent and is dropped only when its reply arrives. A range that
overlaps one in flight is not sent until that one completes, so overlapping writes reach
the server in the order they were made. A failed paging write latches its status on the
Fcb; the next fsync() or close() of each descriptor open on the file returns it once
(the errseq_t rule of Linux).

RDBSS delegates this to the Windows cache manager (CcCopyWrite, the lazy writer's
CcFlushCache); there is no cache manager here, so the core keeps the buffer itself.
"""

from __future__ import annotations

import bisect
import logging
import operator
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from ._lowio import fill_write, rx_low_io_submit
from ._rxcontext import LowIoReadWriteFlags, RxContext, RxContextFlags
from .irp import Irp, IrpMj, WriteParameters
from .ntstatus import NtStatus, nt_success

if TYPE_CHECKING:
    from ._device import RxDevice
    from ._objects import Fcb, SrvOpen

__all__ = ["LazyWriter", "WriteBehindBuffer"]

log = logging.getLogger(__name__)

MIB = 1 << 20
_NO_WAIT = RxContextFlags(0)


class _Extent:
    """A run of held bytes, kept as the writers' own buffers until it is sent:
    appending a sequential write is then a list append, not a copy."""

    __slots__ = ("_parts", "length", "offset", "seq")

    def __init__(self, offset: int, data: bytes | bytearray | memoryview, seq: int = 0) -> None:
        self.offset = offset
        self._parts = [data if isinstance(data, bytes) else bytes(data)]
        self.length = len(data)
        # The oldest write whose bytes this holds: a flush waits for extents holding
        # writes made before it, not for ones a busy writer makes after.
        self.seq = seq

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def data(self) -> bytes:
        if len(self._parts) > 1:
            self._parts = [b"".join(self._parts)]
        return self._parts[0]

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._parts.append(data if isinstance(data, bytes) else bytes(data))
        self.length += len(data)

    def overlaps(self, start: int, end: int) -> bool:
        return self.offset < end and start < self.end


_offset_of = operator.attrgetter("offset")


def _join(run: list[_Extent]) -> _Extent:
    if len(run) == 1:
        return run[0]
    return _Extent(run[0].offset, b"".join(e.data for e in run), min(e.seq for e in run))


@dataclass(slots=True)
class _Turn:
    """A paging write's place in the order of hand-over to the backend."""

    number: int
    passed: bool = False


class _Turns:
    """A file's paging writes reach the backend in the order the lazy writer took their
    ranges (by offset). trio starts a batch of new tasks in any order; were two writes
    of one flush handed over reversed and the server's disk filled between them, the
    file would keep a hole below bytes that landed. Only the hand-over is ordered: the
    writes are in flight together, and other files' writes never wait for it."""

    def __init__(self) -> None:
        self._issued = 0
        self._next = 0
        self._passed: set[int] = set()
        self._changed = trio.Event()

    def take(self) -> _Turn:
        turn = _Turn(self._issued)
        self._issued += 1
        return turn

    async def wait_for(self, turn: _Turn) -> None:
        while self._next < turn.number:
            await self._changed.wait()

    def pass_on(self, turn: _Turn) -> None:
        """``turn`` is handed over, or will never be (it failed before): the next goes."""
        if turn.passed:
            return
        turn.passed = True
        self._passed.add(turn.number)
        while self._next in self._passed:
            self._passed.remove(self._next)
            self._next += 1
        self._changed.set()
        self._changed = trio.Event()


@dataclass(eq=False)
class WriteBehindBuffer:
    """The dirty and in-flight ranges of one Fcb."""

    dirty: list[_Extent] = field(default_factory=list)
    in_flight: list[_Extent] = field(default_factory=list)
    dirty_since: float = 0.0
    # Set by a flush that wants everything sent now, whatever the chunk size.
    forced: bool = False
    # Numbers the writes; see _Extent.seq.
    seq: int = 0
    turns: _Turns = field(default_factory=_Turns)
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def dirty_bytes(self) -> int:
        return sum(e.length for e in self.dirty)

    @property
    def empty(self) -> bool:
        return not self.dirty and not self.in_flight

    def end(self) -> int:
        """The end of the last byte held; the file is at least this long."""
        ends = [e.end for e in self.dirty] + [e.end for e in self.in_flight]
        return max(ends, default=0)

    def add(self, offset: int, data: bytes | bytearray | memoryview, chunk_size: int) -> int:
        """Buffer a write; returns by how much the dirty byte count grew.

        Extents never grow past ``chunk_size``: a sequential writer fills one chunk
        after another, so neither appending nor sending ever copies a large buffer.
        Only overlapping extents merge; adjacent ones are joined when sent.
        """
        self.seq += 1
        if self.dirty:
            last = self.dirty[-1]
            if last.offset + last.length == offset and last.length + len(data) <= chunk_size:
                last.append(data)  # the common case: a sequential writer
                return len(data)
        else:
            self.dirty_since = time.monotonic()
        end = offset + len(data)
        # O(log n) searches: a random writer may hold thousands of extents.
        lo = bisect.bisect_left(self.dirty, offset, key=_offset_of)
        if lo > 0 and self.dirty[lo - 1].end > offset:
            lo -= 1
        hi = bisect.bisect_left(self.dirty, end, lo, key=_offset_of)
        merged = self.dirty[lo:hi]
        if not merged:
            self.dirty.insert(lo, _Extent(offset, data, self.seq))
            return len(data)
        start = min(offset, merged[0].offset)
        stop = max(end, merged[-1].end)
        buffer = bytearray(stop - start)
        for extent in merged:
            buffer[extent.offset - start : extent.end - start] = extent.data
        buffer[offset - start : end - start] = data
        self.dirty[lo:hi] = [_Extent(start, buffer, min(e.seq for e in merged))]
        return len(buffer) - sum(e.length for e in merged)

    def take(self, chunk_size: int, budget: int) -> list[_Extent]:
        """Move ranges to send now into ``in_flight``: runs of adjacent extents joined
        up to ``chunk_size``; a run shorter than that only when forced; never a range
        that overlaps one already in flight; at most ``budget`` bytes (but always at
        least one range, so that a large one cannot starve). ``dirty`` stays sorted."""
        taken: list[_Extent] = []
        kept: list[_Extent] = []
        run: list[_Extent] = []
        run_size = 0

        def close_run() -> None:
            nonlocal budget, run, run_size
            if run and (run_size >= chunk_size or self.forced) and (budget > 0 or not taken):
                taken.append(_join(run))
                budget -= run_size
            else:
                kept.extend(run)
            run, run_size = [], 0

        # One sweep: dirty is sorted and so is what is in flight (disjoint ranges), so
        # the first in-flight range not wholly before an extent is the only one that
        # can overlap it. (Checking every pair cost a fifth of a 1 GiB write's CPU.)
        busy = sorted((f.offset, f.end) for f in self.in_flight)
        next_busy = 0
        for index, extent in enumerate(self.dirty):
            if taken and budget <= 0:  # nothing more goes this time
                close_run()
                kept.extend(self.dirty[index:])
                break
            while next_busy < len(busy) and busy[next_busy][1] <= extent.offset:
                next_busy += 1
            blocked = next_busy < len(busy) and busy[next_busy][0] < extent.end
            if run and (
                blocked or extent.offset != run[-1].end or run_size + extent.length > chunk_size
            ):
                close_run()
            if blocked:
                kept.append(extent)
            else:
                run.append(extent)
                run_size += extent.length
        close_run()
        self.dirty = kept
        if not kept:
            self.forced = False
        self.in_flight.extend(taken)
        return taken

    def holds_writes_up_to(self, seq: int) -> bool:
        return any(e.seq <= seq for e in self.dirty) or any(e.seq <= seq for e in self.in_flight)

    def landed(self, extent: _Extent) -> None:
        """The server answered for ``extent`` (either way): stop holding it."""
        self.in_flight.remove(extent)
        self._signal()

    def snapshot(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """Copies of the held bytes in [start, end), oldest first, for a read to lay
        over what the server returned."""
        pieces: list[tuple[int, bytes]] = []
        for extent in [*self.in_flight, *self.dirty]:
            if extent.overlaps(start, end):
                lo = max(start, extent.offset)
                hi = min(end, extent.end)
                pieces.append((lo, bytes(extent.data[lo - extent.offset : hi - extent.offset])))
        return pieces

    def _signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


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

    def _take_paging_writes(self, fcb: Fcb, budget: int) -> list[tuple[_Extent, _Turn]]:
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

    def _start_paging_writes(self, fcb: Fcb, taken: list[tuple[_Extent, _Turn]]) -> None:
        assert self._nursery is not None
        for extent, turn in taken:
            self._nursery.start_soon(self._paging_write, fcb, extent, turn)

    async def _paging_write(self, fcb: Fcb, extent: _Extent, turn: _Turn) -> None:
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

    async def _send(self, fcb: Fcb, extent: _Extent, turn: _Turn) -> NtStatus:
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
