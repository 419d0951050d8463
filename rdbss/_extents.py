"""Write-behind extents: each Fcb's buffer of dirty and in-flight byte ranges.

DESIGN §3 step 3 and §4. A cached write copies its bytes into the Fcb's
:class:`WriteBehindBuffer`; the lazy writer (:mod:`._writebehind`) takes ranges from it
to send and hands them back when the server answered.

Bytes stay held until the server acknowledges them: a range moves from ``dirty`` to
``in_flight`` when it is sent and is dropped only when its reply arrives. A range that
overlaps one in flight is not sent until that one completes, so overlapping writes reach
the server in the order they were made.

A leaf: the object tree (every Fcb holds a buffer) imports it, so it imports nothing of
the core.
"""

from __future__ import annotations

import bisect
import operator
import time
from dataclasses import dataclass, field

import trio

__all__ = ["Extent", "Turn", "WriteBehindBuffer"]


class Extent:
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


def _join(run: list[Extent]) -> Extent:
    if len(run) == 1:
        return run[0]
    return Extent(run[0].offset, b"".join(e.data for e in run), min(e.seq for e in run))


@dataclass(slots=True)
class Turn:
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

    def take(self) -> Turn:
        turn = Turn(self._issued)
        self._issued += 1
        return turn

    async def wait_for(self, turn: Turn) -> None:
        while self._next < turn.number:
            await self._changed.wait()

    def pass_on(self, turn: Turn) -> None:
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

    dirty: list[Extent] = field(default_factory=list)
    in_flight: list[Extent] = field(default_factory=list)
    dirty_since: float = 0.0
    # Set by a flush that wants everything sent now, whatever the chunk size.
    forced: bool = False
    # Numbers the writes; see Extent.seq.
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
            self.dirty.insert(lo, Extent(offset, data, self.seq))
            return len(data)
        start = min(offset, merged[0].offset)
        stop = max(end, merged[-1].end)
        buffer = bytearray(stop - start)
        for extent in merged:
            buffer[extent.offset - start : extent.end - start] = extent.data
        buffer[offset - start : end - start] = data
        self.dirty[lo:hi] = [Extent(start, buffer, min(e.seq for e in merged))]
        return len(buffer) - sum(e.length for e in merged)

    def take(self, chunk_size: int, budget: int) -> list[Extent]:
        """Move ranges to send now into ``in_flight``: runs of adjacent extents joined
        up to ``chunk_size``; a run shorter than that only when forced; never a range
        that overlaps one already in flight; at most ``budget`` bytes (but always at
        least one range, so that a large one cannot starve). ``dirty`` stays sorted."""
        taken: list[Extent] = []
        kept: list[Extent] = []
        run: list[Extent] = []
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

    def landed(self, extent: Extent) -> None:
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
