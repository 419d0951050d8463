"""An open SFTP file: pipelined writes in batches, read-ahead, and the handle's requests.

A :class:`RemoteFile` belongs to the session that opened it (a handle is only valid in
its sftp-server process). It builds on the session's request queue
(:meth:`~._engine.SftpSession.room_for`, :meth:`~._engine.SftpSession.enqueue`,
:meth:`~._engine.SftpSession.flush` and the budget calls beside them) and never on its
internals: a write is split into WRITE requests of the server's maximum size, held and
handed to the carrier in one go, and its :class:`WriteBatch` collects the replies; reads
are served from a window of pipelined READ requests that doubles while the reader stays
sequential.

:meth:`RemoteFile.open` (OPEN and STAT in one round trip) and
:meth:`RemoteFile.open_handle` make one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ._engine import (
    EXT_FSTATVFS,
    EXT_FSYNC,
    EngineStats,
    Packet,
    Reply,
    SftpError,
    SftpSession,
    attrs_after,
    status_of,
)
from ._wire import (
    Attrs,
    OpenFlags,
    PacketType,
    SftpStatusCode,
    StatVfs,
    pack_attrs,
    pack_string,
    packet,
    u32,
    u64,
    write_header,
)

__all__ = ["RemoteFile", "WriteBatch"]

# Read-ahead per file: grows while the reads stay sequential, up to this many bytes.
_MAX_READ_AHEAD = 4 * 1024 * 1024


def _handle_of(reply: Reply | SftpError) -> bytes:
    if isinstance(reply, SftpError):
        raise reply
    if reply.kind != PacketType.HANDLE:
        raise status_of(reply) or SftpError(SftpStatusCode.SSH_FX_BAD_MESSAGE)
    return reply.body.bytes()


@dataclass(eq=False)
class _ReadSeg:
    """A READ request of the read-ahead window: [start, start + length)."""

    start: int
    length: int
    done: trio.Event = field(default_factory=trio.Event)
    data: memoryview | bytes = b""
    error: SftpError | None = None
    used: int = 0  # bytes handed out to readers

    @property
    def end(self) -> int:
        return self.start + self.length

    def resolve(self, reply: Reply | SftpError) -> None:
        if isinstance(reply, SftpError):
            self.error = reply
        elif reply.kind == PacketType.DATA:
            self.data = reply.body.view()
        else:
            error = status_of(reply)
            if error is not None and error.code != SftpStatusCode.SSH_FX_EOF:
                self.error = error
        self.done.set()


class WriteBatch:
    """The replies of one write's requests; the first failure in offset order wins."""

    def __init__(self, stats: EngineStats) -> None:
        self._stats = stats
        self._outstanding = 0
        self._sealed = False
        self._failures: list[tuple[int, SftpError]] = []
        self._done = trio.Event()

    def expect(self, offset: int) -> Callable[[Reply | SftpError], None]:
        self._outstanding += 1

        def on_reply(reply: Reply | SftpError) -> None:
            error = reply if isinstance(reply, SftpError) else status_of(reply)
            if error is not None:
                self._stats.failed_replies += 1
                self._failures.append((offset, error))
            self._outstanding -= 1
            self._check()

        return on_reply

    def seal(self) -> None:
        self._sealed = True
        self._check()

    def _check(self) -> None:
        if self._sealed and self._outstanding == 0:
            self._done.set()

    async def wait(self) -> tuple[int, SftpError] | None:
        """(offset of the failed request, error), or None when every request landed."""
        await self._done.wait()
        return min(self._failures, key=lambda f: f[0]) if self._failures else None


class RemoteFile:
    """An open SFTP file handle on one session, with pipelined writes and read-ahead."""

    def __init__(self, session: SftpSession, handle: bytes, path: str, flags: OpenFlags) -> None:
        self.session = session
        self.handle = handle
        self.path = path
        self.flags = flags
        self.closed = False
        # Writes of this file leave in the order they were submitted (DESIGN §5).
        self._send_lock = trio.Lock()
        self._writes_in_flight = 0
        self._queued_bytes = 0  # submitted, not yet handed to the session
        self._idle = trio.Event()
        self._idle.set()
        self._ahead: deque[_ReadSeg] = deque()
        self._ahead_size = 0
        self._handle_field = pack_string(handle)

    # -- opening ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, session: SftpSession, path: str, flags: OpenFlags, mode: int | None = None
    ) -> tuple[RemoteFile, Attrs]:
        """OPEN and STAT sent back to back: the server handles a session's requests in
        order, so the STAT sees what the OPEN made, and both cost one round trip."""
        attrs_field = pack_attrs(Attrs(permissions=mode))
        opened: list[Reply | SftpError] = []
        stated: list[Reply | SftpError] = []
        done = trio.Event()

        def collect(into: list[Reply | SftpError]) -> Callable[[Reply | SftpError], None]:
            def on_reply(reply: Reply | SftpError) -> None:
                into.append(reply)
                if opened and stated:
                    done.set()

            return on_reply

        # The OPEN is held, so that both leave in one write.
        await session.submit(
            lambda rid: packet(PacketType.OPEN, rid, pack_string(path), u32(flags), attrs_field),
            collect(opened),
            hold=True,
        )
        await session.submit(
            lambda rid: packet(PacketType.STAT, rid, pack_string(path)), collect(stated)
        )
        with trio.CancelScope(shield=True):
            # Shielded: a handle the server opened must be closed, not leaked.
            await done.wait()
        remote = cls._opened(session, opened[0], path, flags)
        if isinstance(stated[0], SftpError):
            await remote.close()
            raise stated[0]
        if stated[0].kind != PacketType.ATTRS:
            await remote.close()
            raise status_of(stated[0]) or SftpError(SftpStatusCode.SSH_FX_BAD_MESSAGE)
        return remote, stated[0].body.attrs()

    @classmethod
    async def open_handle(cls, session: SftpSession, path: str, flags: OpenFlags) -> RemoteFile:
        """OPEN alone: a handle on a file that exists, no attributes wanted."""
        fields = (pack_string(path), u32(flags), pack_attrs(Attrs()))
        reply = await session.request(PacketType.OPEN, *fields, shielded=True)
        return cls._opened(session, reply, path, flags)

    @classmethod
    def _opened(
        cls, session: SftpSession, reply: Reply | SftpError, path: str, flags: OpenFlags
    ) -> RemoteFile:
        """The file an OPEN's reply gives; raises the OPEN's failure."""
        remote = cls(session, _handle_of(reply), path, flags)
        session.open_files += 1
        return remote

    @property
    def writable(self) -> bool:
        return bool(self.flags & OpenFlags.SSH_FXF_WRITE)

    # -- writes --------------------------------------------------------------------------

    async def submit_write(self, offset: int, data: bytes | bytearray | memoryview) -> WriteBatch:
        """Queue the whole write as requests of the server's maximum size and return
        once all are queued; ``await batch.wait()`` gives the outcome."""
        self.invalidate_read_ahead()
        session = self.session
        if not isinstance(data, bytes):
            # The requests hold views of the data until the sender has sent them: a
            # buffer the caller may change (or resize) meanwhile is copied, once.
            data = bytes(data)
        view = memoryview(data)
        step = session.max_write
        batch = WriteBatch(session.stats)
        if self._writes_in_flight == 0:
            # Only when the file stops being idle: a later write must not swap the event
            # under someone already waiting for this one.
            self._idle = trio.Event()
        self._writes_in_flight += 1
        self._queued_bytes += len(view)
        queued = len(view)
        try:
            async with self._send_lock:
                for pos in range(0, len(view), step):
                    chunk = view[pos : pos + step]
                    at = offset + pos
                    await session.room_for(len(chunk))
                    session.enqueue(
                        self._write_builder(at, chunk), batch.expect(at), len(chunk), hold=True
                    )
                    self._queued_bytes -= len(chunk)
                    queued -= len(chunk)
                    session.stats.write_requests += 1
                    session.stats.write_bytes += len(chunk)
                    session.stats.largest_write_request = max(
                        session.stats.largest_write_request, len(chunk)
                    )
        finally:
            self._queued_bytes -= queued
            session.flush()
            batch.seal()
        return batch

    def _write_builder(self, offset: int, chunk: memoryview) -> Callable[[int], Packet]:
        handle = self.handle

        def build(request_id: int) -> Packet:
            # Header and data apart: the link gathers them (writev) without a copy.
            return (write_header(request_id, handle, offset, len(chunk)), chunk)

        return build

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write and wait for every reply; raises the first failure in offset order."""
        try:
            batch = await self.submit_write(offset, data)
            failure = await batch.wait()
        finally:
            self.write_done()
        if failure is not None:
            raise failure[1]

    @property
    def writes_in_flight(self) -> int:
        return self._writes_in_flight

    @property
    def backlog(self) -> int:
        """Bytes in flight on the session plus this file's writes waiting to join them."""
        return self.session.in_flight_bytes + self._queued_bytes

    async def write_out_of_turn(self, offset: int, data: bytes) -> None:
        """One small WRITE that does not queue behind this file's other writes, for a
        range none of them touches; raises its failure."""
        self.invalidate_read_ahead()
        fields = (self._handle_field, u64(offset), pack_string(data))
        self.session.stats.write_requests += 1
        self.session.stats.write_bytes += len(data)
        await self.session.call(PacketType.WRITE, *fields)

    def write_done(self) -> None:
        """Called once per submit_write after its batch has been waited for."""
        self._writes_in_flight -= 1
        if self._writes_in_flight == 0:
            self._idle.set()

    async def wait_writes(self) -> None:
        """Until every write submitted so far has all its replies."""
        await self._idle.wait()

    # -- reads ---------------------------------------------------------------------------

    def invalidate_read_ahead(self) -> None:
        """Forget data read ahead (a write or a truncate may have changed it); replies
        still on the way are dropped when they arrive."""
        self._ahead.clear()
        self._ahead_size = 0

    async def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the file.

        Reads that stay inside (or just past) the read-ahead window are served from it,
        and the window, made of pipelined READ requests, doubles with each such hit up
        to 4 MiB. The kernel sends a sequential reader's requests several at a time and
        not always in order, so a hit is any offset the window covers, not only its
        first byte; a read just behind the window (a straggler whose segment its
        neighbours already used up) is fetched on its own and leaves the window alone.
        Only a read elsewhere starts a new window.
        """
        end = offset + length
        while True:
            segs = await self._segments_for(offset, end)
            if _covers(segs, offset, end):
                break
            # A write or another read reshaped the window while we waited for room.
        out: list[memoryview | bytes] = []
        pos = offset
        for seg in segs:
            if not seg.done.is_set():  # a read-ahead hit costs no trip through the scheduler
                await seg.done.wait()
            if seg.error is not None:
                self._forget(seg)
                raise seg.error
            piece = seg.data[pos - seg.start : end - seg.start]
            out.append(piece)
            pos += len(piece)
            seg.used += len(piece)
            if len(seg.data) < seg.length:
                # The file ends here; what was read beyond is not to be trusted.
                self._forget(seg)
                break
        self._drop_used()
        return b"".join(out)

    async def _segments_for(self, offset: int, end: int) -> list[_ReadSeg]:
        """The segments holding [offset, end), asked for where missing, read-ahead
        extended past them."""
        ahead = self._ahead
        if ahead and ahead[0].start <= offset <= self._window_end(offset):
            self._ahead_size = min(max(2 * self._ahead_size, end - offset), _MAX_READ_AHEAD)
        elif (
            ahead
            and ahead[0].start - _MAX_READ_AHEAD <= offset < ahead[0].start
            and end <= self._window_end(offset)
        ):
            window_start = ahead[0].start
            return await self._fetch(offset, window_start) + self._overlapping(window_start, end)
        else:
            self.invalidate_read_ahead()
            self._ahead_size = end - offset
        self._trim(offset)
        await self._fill_window(offset, end)
        self._extend_read_ahead(offset, end + self._ahead_size)
        return self._overlapping(offset, end)

    def _overlapping(self, offset: int, end: int) -> list[_ReadSeg]:
        return [seg for seg in self._ahead if seg.start < end and seg.end > offset]

    def _window_end(self, offset: int) -> int:
        return self._ahead[-1].end if self._ahead else offset

    def _forget(self, seg: _ReadSeg) -> None:
        """Drop the window if ``seg`` (failed, or short at the end of the file) is in it."""
        if seg in self._ahead:
            self.invalidate_read_ahead()

    def _trim(self, offset: int) -> None:
        """Segments far behind the reader will not be asked for again."""
        while self._ahead and self._ahead[0].end <= offset - _MAX_READ_AHEAD:
            self._ahead.popleft()

    def _drop_used(self) -> None:
        """Segments whose every byte has been handed out leave the window."""
        while self._ahead and self._ahead[0].used >= self._ahead[0].length:
            self._ahead.popleft()

    async def _fill_window(self, offset: int, end: int) -> None:
        """Extend the window to ``end`` with requests a caller waits for (waiting for
        room in the budget if need be). Each segment joins the window as soon as it is
        asked for, so a concurrent read sees it and does not ask again."""
        session = self.session
        while self._window_end(offset) < end:
            length = session.max_read
            await session.wait_for_room(length)
            pos = self._window_end(offset)  # another read may have extended it meanwhile
            if pos >= end:
                session.give_back_room(length)
                return
            self._ahead.append(self._send_read(pos, length))

    async def _fetch(self, offset: int, end: int) -> list[_ReadSeg]:
        """READ requests for [offset, end) outside the window, for one caller."""
        segs: list[_ReadSeg] = []
        for pos in range(offset, end, self.session.max_read):
            length = min(self.session.max_read, end - pos)
            await self.session.wait_for_room(length)
            segs.append(self._send_read(pos, length))
        return segs

    def _send_read(self, pos: int, length: int, *, hold: bool = False) -> _ReadSeg:
        """Queue one READ whose budget is already taken."""
        seg = _ReadSeg(pos, length)
        self.session.enqueue(self._read_builder(seg), seg.resolve, length, hold=hold)
        self.session.stats.read_requests += 1
        return seg

    def _extend_read_ahead(self, offset: int, end: int) -> None:
        """Queue read-ahead only while the session has room: it must never hold up a
        request someone waits for."""
        session = self.session
        pos = self._window_end(offset)
        while pos < end:
            # Whole server-sized requests: a window that grows by each small read must
            # not turn into as many small requests.
            if not session.try_room_for(session.max_read):
                break
            self._ahead.append(self._send_read(pos, session.max_read, hold=True))
            pos += session.max_read
        session.flush()

    def _read_builder(self, seg: _ReadSeg) -> Callable[[int], bytes]:
        fields = (self._handle_field, u64(seg.start), u32(seg.length))
        return lambda rid: packet(PacketType.READ, rid, *fields)

    async def pread(self, offset: int, length: int) -> bytes:
        """READs past the read-ahead window: what the server holds right now."""
        out = []
        for seg in await self._fetch(offset, offset + length):
            await seg.done.wait()
            if seg.error is not None:
                raise seg.error
            out.append(bytes(seg.data))
        return b"".join(out)

    # -- handle operations ---------------------------------------------------------------

    async def fstat(self) -> Attrs:
        reader = await self.session.expect(PacketType.ATTRS, PacketType.FSTAT, self._handle_field)
        return reader.attrs()

    async def fsetstat(self, attrs: Attrs) -> None:
        self.invalidate_read_ahead()
        await self.session.call(PacketType.FSETSTAT, self._handle_field, pack_attrs(attrs))

    async def fsetstat_and_fstat(self, attrs: Attrs) -> Attrs:
        """:meth:`fsetstat`, and the attributes it leaves, in one round trip."""
        self.invalidate_read_ahead()
        replies = await self.session.request_both(
            (PacketType.FSETSTAT, (self._handle_field, pack_attrs(attrs))),
            (PacketType.FSTAT, (self._handle_field,)),
        )
        return attrs_after(*replies)

    async def fsync(self) -> None:
        await self.session.extended(EXT_FSYNC, self._handle_field)

    async def fstatvfs(self) -> StatVfs:
        """The server's file system under this file (fstatvfs@openssh.com)."""
        reader = await self.session.extended(EXT_FSTATVFS, self._handle_field)
        if reader is None:
            raise SftpError(SftpStatusCode.SSH_FX_BAD_MESSAGE, "fstatvfs answered no data")
        return reader.statvfs()

    async def close(self) -> None:
        """Wait for this file's writes, then CLOSE; raises the CLOSE's failure."""
        if self.closed:
            return
        self.closed = True
        self.invalidate_read_ahead()
        with trio.CancelScope(shield=True):
            await self.wait_writes()
            self.session.open_files -= 1
            await self.session.call(PacketType.CLOSE, self._handle_field)


def _covers(segs: list[_ReadSeg], offset: int, end: int) -> bool:
    """Whether ``segs`` are contiguous from ``offset`` to ``end``."""
    pos = offset
    for seg in segs:
        if seg.start > pos:
            return False
        pos = max(pos, seg.end)
    return pos >= end
