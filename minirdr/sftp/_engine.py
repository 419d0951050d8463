"""The SFTP request engine: SFTP sessions driven from the trio loop.

A session runs on a :class:`Link`, and a :class:`Carrier` moves its packets. The trio
loop never blocks: it numbers a request, registers a waiter, queues the packet and
awaits a trio event set when the reply is handed back. On a paramiko channel
(``_channel.ThreadCarrier``, ``-o transport=paramiko``) the link blocks, and two threads
of the session's own carry the bytes: a *sender* and a *reader*, each handing over in
batches. On the pipes of the system's ssh client (``_pipes.PipeCarrier``) the loop moves the
bytes itself and there are no threads at all; only the carrier differs, and the session
knows it only through the :class:`Carrier` interface.

Flow control lives on the loop: each session has a cap on requests and on bytes in
flight (:class:`_Budget`), so a large write is cut into requests as large as the server
accepts (``limits@openssh.com``, 256 KiB on OpenSSH) and many stay outstanding without
memory growing with the file. Every reply is checked: a write whose reply says FAILURE
fails the whole write it belongs to, and nothing is claimed as written.

A session whose oldest request goes unanswered for ``reply_timeout`` seconds (``-o
timeout``) is dead, whether or not anything closed it: a stopped ssh client or a stalled
server closes nothing. One watchdog task per session enforces that for every request
alike, so a reply waited for shielded from the caller's deadline (an OPEN's, which holds
a handle) cannot wait longer than any other: the session dies, every waiter fails with
CONNECTION_LOST, and the core reconnects and replays.

An SFTP handle belongs to the session that opened it (each channel is a separate
sftp-server process), so a :class:`._remotefile.RemoteFile` stays on its session;
requests by path go to the least loaded session of the :class:`._pool.SessionPool`,
which spans several SSH connections (``-o max_conns``) for throughput. A file uses the
session only through its request queue (``submit``, ``room_for``, ``enqueue``,
``flush`` and the budget calls), never through its private members.

Why this module is past ~700 lines: it is one class, the session, whose request queue,
budget, waiters and watchdog share one lock and change together. What could leave has
left (files: _remotefile, carriers: _channel and _pipes, the pool: _pool); the requests
by path that remain are thin wrappers of ``call`` and ``expect``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from ._wire import (
    SFTP_VERSION,
    Attrs,
    Limits,
    NameEntry,
    PacketType,
    Reader,
    SftpStatusCode,
    StatVfs,
    pack_attrs,
    pack_string,
    packet,
    u32,
)

__all__ = [
    "MAX_IO",
    "MAX_PACKET_LENGTH",
    "Carrier",
    "EngineStats",
    "Link",
    "Packet",
    "Reply",
    "SftpError",
    "SftpSession",
    "Waiter",
    "attrs_after",
    "packet_length",
    "read_packet",
    "status_of",
]

log = logging.getLogger(__name__)

# One request: its packet type and fields (see request_both).
Request = tuple[PacketType, tuple[bytes, ...]]

# A dict lookup per reply instead of a call of the enum (several times slower).
_PACKET_TYPES = {int(kind): kind for kind in PacketType}

# What we assume when the server does not answer limits@openssh.com: the draft's floor.
_DEFAULT_MAX_IO = 32768
# Never send more than this in one request even if the server's limits allow it: OpenSSH
# caps a message at 256 KiB, and bigger requests only delay the first reply.
MAX_IO = 256 * 1024
# A reply longer than this means the stream is out of step (OpenSSH sends at most 256 KiB).
MAX_PACKET_LENGTH = 16 * 1024 * 1024
# Flow control per session.
DEFAULT_MAX_INFLIGHT_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_INFLIGHT_REQUESTS = 64

EXT_LIMITS = "limits@openssh.com"
EXT_STATVFS = "statvfs@openssh.com"
EXT_FSTATVFS = "fstatvfs@openssh.com"
EXT_FSYNC = "fsync@openssh.com"
EXT_HARDLINK = "hardlink@openssh.com"
EXT_POSIX_RENAME = "posix-rename@openssh.com"
EXT_LSETSTAT = "lsetstat@openssh.com"
EXT_USERS_GROUPS_BY_ID = "users-groups-by-id@openssh.com"


class SftpError(Exception):
    """A request failed: the server's SSH_FX_* code and message, or a local one
    (NO_CONNECTION, CONNECTION_LOST) when the session is gone."""

    def __init__(self, code: SftpStatusCode, message: str = "") -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message


Packet = tuple["bytes | memoryview", ...]
"""One request as the pieces that go on the wire one after the other."""


class Link(Protocol):
    """The byte stream an SFTP session runs on: a paramiko channel
    (``_channel.ChannelLink``) or the pipes of an OpenSSH client (``_pipes.PipeLink``).
    Blocking ``send_all`` and ``recv_exact`` serve the INIT/VERSION handshake, then
    whatever its carrier does with them; ``close`` may be called from any thread, and it
    makes both fail promptly."""

    def send_all(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Send the pieces one after the other, all of them."""
        ...

    def recv_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes; EOFError when the stream ends first."""
        ...

    def close(self) -> None: ...

    def wait_closed(self, timeout: float) -> None:
        """Blocking: release what ``close`` left for after the threads have ended."""
        ...


class Carrier(Protocol):
    """What moves a session's packets between the trio loop and its :class:`Link`: the
    transport interface. Two exist: a paramiko channel's sender and reader threads
    (``_channel.ThreadCarrier``) and the loop itself on ssh's pipes
    (``_pipes.PipeCarrier``). The session calls these methods; the carrier calls back
    :meth:`SftpSession.on_packet` for each reply it reads, :meth:`SftpSession.complete`
    on the loop, and :meth:`SftpSession.lose` when its link fails."""

    @property
    def link(self) -> Link:
        """The byte stream the carrier moves packets on."""
        ...

    def start(self, session: SftpSession) -> None:
        """Blocking, in the worker thread that did the handshake: start moving packets."""
        ...

    def send(self, pieces: Packet) -> None:
        """On the loop, without blocking: requests to go out, in this order."""
        ...

    def deliver(self, waiter: Waiter, result: Reply | SftpError) -> None:
        """From any thread: get ``result`` to :meth:`SftpSession.complete` on the loop."""
        ...

    def close(self) -> None:
        """From any thread, without blocking: stop, and close the link; outstanding
        requests then fail with CONNECTION_LOST."""
        ...

    def abort(self, end: Callable[[], None]) -> None:
        """On the loop: run ``end`` (the session's death, which closes the link) where
        closing the link may block without holding up the loop."""
        ...

    def join(self, timeout: float) -> None:
        """Blocking (a worker thread): wait for what :meth:`start` started to end, then
        release the link."""
        ...


@dataclass
class EngineStats:
    """Counters a test or a benchmark can read; updated on the trio loop only."""

    write_requests: int = 0
    write_bytes: int = 0
    largest_write_request: int = 0
    read_requests: int = 0
    failed_replies: int = 0


@dataclass(slots=True)
class Reply:
    kind: PacketType
    body: Reader


@dataclass(eq=False, slots=True)
class Waiter:
    """One outstanding request. ``callback`` runs on the trio loop with the reply."""

    cost: int
    callback: Callable[[Reply | SftpError], None]


class _Budget:
    """Requests and bytes in flight on one session; waited for on the trio loop."""

    def __init__(self, max_bytes: int, max_requests: int) -> None:
        self.max_bytes = max_bytes
        self.max_requests = max_requests
        self.bytes = 0
        self.requests = 0
        self._changed = trio.Event()

    def _fits(self, nbytes: int) -> bool:
        if self.requests >= self.max_requests:
            return False
        # A request larger than the cap alone still goes, when nothing else is in flight.
        return self.bytes == 0 or self.bytes + nbytes <= self.max_bytes

    async def acquire(self, nbytes: int) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._fits(nbytes):
            await self._changed.wait()
        self.bytes += nbytes
        self.requests += 1

    def try_acquire(self, nbytes: int) -> bool:
        if not self._fits(nbytes):
            return False
        self.bytes += nbytes
        self.requests += 1
        return True

    def release(self, nbytes: int, requests: int = 1) -> None:
        self.bytes -= nbytes
        self.requests -= requests
        self._changed.set()
        self._changed = trio.Event()


def status_of(reply: Reply) -> SftpError | None:
    """None for SSH_FX_OK; the failure otherwise (an unexpected packet type included)."""
    if reply.kind != PacketType.STATUS:
        return SftpError(SftpStatusCode.SSH_FX_BAD_MESSAGE, f"unexpected {reply.kind.name}")
    code = reply.body.u32()
    message = "" if reply.body.at_end else reply.body.text()
    try:
        status = SftpStatusCode(code)
    except ValueError:
        status = SftpStatusCode.SSH_FX_FAILURE
    return None if status == SftpStatusCode.SSH_FX_OK else SftpError(status, message)


def _build(request: Request, request_id: int) -> bytes | Packet:
    kind, fields = request
    return packet(kind, request_id, *fields)


def attrs_after(change: Reply, stat: Reply) -> Attrs:
    """The attributes a STAT answered after a change answered STATUS OK; raises the
    change's failure first (the stat then says nothing of interest)."""
    error = status_of(change)
    if error is not None:
        raise error
    if stat.kind != PacketType.ATTRS:
        raise status_of(stat) or SftpError(
            SftpStatusCode.SSH_FX_BAD_MESSAGE, "a stat answered SSH_FX_OK"
        )
    return stat.body.attrs()


class SftpSession:
    """One SFTP session (an SSH channel or an ssh process running the sftp subsystem):
    the request queue, flow control, the reply watchdog and the requests themselves. Its
    :class:`Carrier` moves the bytes.

    Build it with :meth:`over` in a worker thread (``_channel.open_channel_session`` on
    a paramiko transport); every other method runs on the trio loop whose token it was
    given, except where it says otherwise.
    """

    _names = itertools.count(1)

    def __init__(
        self,
        carrier: Carrier,
        token: trio.lowlevel.TrioToken,
        extensions: dict[str, bytes],
        *,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        max_inflight_requests: int = DEFAULT_MAX_INFLIGHT_REQUESTS,
    ) -> None:
        self.name = f"sftp-{next(self._names)}"
        self.carrier = carrier
        self.extensions = extensions
        self.limits = Limits(0, _DEFAULT_MAX_IO, _DEFAULT_MAX_IO, 0)
        self.stats = EngineStats()
        self.open_files = 0
        self._token = token
        self._budget = _Budget(max_inflight_bytes, max_inflight_requests)
        self._ids = itertools.count(1)
        self._waiters: dict[int, Waiter] = {}
        self._lock = threading.Lock()  # guards _waiters and _dead across threads
        self._dead: SftpError | None = None
        self._held: list[bytes | memoryview] = []  # see enqueue(hold=True); loop only
        # Seconds the oldest outstanding request may go unanswered before the session
        # counts as dead (see _watch_replies); set by the owner before the first request.
        self.reply_timeout = math.inf
        # Since when the oldest outstanding request has been the oldest (time.monotonic():
        # sent, or the one before it answered); None while none is outstanding. Under
        # _lock. _waiters keeps the order requests were sent in: the first is the oldest.
        self._head_since: float | None = None
        self._watch_wakeup = trio.Event()  # loop only

    # -- opening and closing (worker thread) ------------------------------------------

    @classmethod
    def over(cls, carrier: Carrier, token: trio.lowlevel.TrioToken, **budget: int) -> SftpSession:
        """Blocking: exchange INIT/VERSION on the carrier's link, ask for limits, start
        the carrier. Raises SftpError(NO_CONNECTION) when the subsystem cannot start."""
        link = carrier.link
        try:
            link.send_all([packet(PacketType.INIT, SFTP_VERSION)])
            kind, body = read_packet(link)
        except Exception as exc:
            link.close()
            raise SftpError(
                SftpStatusCode.SSH_FX_NO_CONNECTION, f"cannot start the sftp subsystem: {exc}"
            ) from exc
        if kind != PacketType.VERSION:
            link.close()
            raise SftpError(SftpStatusCode.SSH_FX_BAD_MESSAGE, "the server did not speak SFTP")
        reader = Reader(body)
        version = reader.u32()
        extensions: dict[str, bytes] = {}
        while not reader.at_end:
            name = reader.text()
            extensions[name] = reader.bytes()
        log.debug("SFTP version %d, extensions %s", version, sorted(extensions))
        session = cls(carrier, token, extensions, **budget)
        if EXT_LIMITS in extensions:
            session._ask_limits_blocking()
        session._start_io()
        return session

    def _start_io(self) -> None:
        """Start the carrier, and the watchdog on the loop."""
        self.carrier.start(self)
        trio.from_thread.run_sync(self._spawn_watchdog, trio_token=self._token)

    def _spawn_watchdog(self) -> None:
        trio.lowlevel.spawn_system_task(self._watch_replies, name=f"{self.name}-watchdog")

    def _ask_limits_blocking(self) -> None:
        """Before the threads start, this thread owns the link: ask synchronously."""
        request_id = next(self._ids)
        self.link.send_all([packet(PacketType.EXTENDED, request_id, pack_string(EXT_LIMITS))])
        kind, body = read_packet(self.link)
        reader = Reader(body)
        if reader.u32() != request_id or kind != PacketType.EXTENDED_REPLY:
            log.warning("the server's answer to %s was not understood", EXT_LIMITS)
            return
        limits = reader.limits()
        self.limits = Limits(
            limits.max_packet_length,
            limits.max_read_length or _DEFAULT_MAX_IO,
            limits.max_write_length or _DEFAULT_MAX_IO,
            limits.max_open_handles,
        )

    def close(self) -> None:
        """Blocking-free: stop the threads and close the link. Outstanding requests
        fail with CONNECTION_LOST."""
        self.carrier.close()

    def join(self, timeout: float = 5.0) -> None:
        """Blocking: wait for the carrier's threads or tasks to end (call from a worker
        thread)."""
        self.carrier.join(timeout)

    @property
    def link(self) -> Link:
        return self.carrier.link

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        """The token of the loop the session runs on (for its carrier)."""
        return self._token

    @property
    def alive(self) -> bool:
        return self._dead is None

    @property
    def load(self) -> int:
        """How busy the session is, to pick one for a new file or a path request."""
        return self._budget.bytes + 64 * 1024 * (self._budget.requests + self.open_files)

    @property
    def in_flight_bytes(self) -> int:
        return self._budget.bytes

    def waiting(self) -> tuple[int, float]:
        """(requests unanswered, seconds the oldest has waited for its turn's reply):
        what shows a stalled connection in ``rxfs status``."""
        with self._lock:
            head_since, count = self._head_since, len(self._waiters)
        return count, (time.monotonic() - head_since) if head_since is not None else 0.0

    @property
    def max_write(self) -> int:
        """Bytes per WRITE request: the server's limit, in whole 4 KiB pages."""
        return _whole_pages(min(self.limits.max_write_length, MAX_IO))

    @property
    def max_read(self) -> int:
        return _whole_pages(min(self.limits.max_read_length, MAX_IO))

    # -- what the carrier calls ---------------------------------------------------------

    def on_packet(self, kind: int, body: bytes) -> None:
        """One reply off the wire (any thread): hand it to the request that waits for it."""
        reader = Reader(body)
        request_id = reader.u32()
        with self._lock:
            oldest = next(iter(self._waiters), None)
            waiter = self._waiters.pop(request_id, None)
            if request_id == oldest:
                # The next request's clock starts now: before, it waited its turn.
                self._head_since = time.monotonic() if self._waiters else None
        if waiter is None:
            # Expected once the session was declared dead (its waiters were failed
            # and forgotten); a live session that gets one is talking to a confused
            # server.
            level = logging.WARNING if self._dead is None else logging.DEBUG
            log.log(level, "%s: reply to unknown request %d dropped", self.name, request_id)
            return
        ptype = _PACKET_TYPES.get(kind)
        if ptype is None:
            ptype = PacketType.STATUS
            reader = Reader(u32(SftpStatusCode.SSH_FX_BAD_MESSAGE))
        self.carrier.deliver(waiter, Reply(ptype, reader))

    def complete(self, batch: Sequence[tuple[Waiter, Reply | SftpError]]) -> None:
        """On the loop: release the budget of every reply handed over, then run their
        callbacks (each exactly once)."""
        self._budget.release(sum(waiter.cost for waiter, _ in batch), len(batch))
        for waiter, result in batch:
            waiter.callback(result)

    def lose(self, why: str) -> None:
        """The link failed (any thread): the session is over, see :meth:`end`."""
        self.end(SftpError(SftpStatusCode.SSH_FX_CONNECTION_LOST, why or "EOF"))

    def end(self, error: SftpError) -> None:
        """The session is over (any thread): every waiter fails with ``error``, every
        later request with NO_CONNECTION, and the carrier stops."""
        with self._lock:
            if self._dead is None:
                self._dead = error
                log.info("%s closed: %s", self.name, error)
            waiters, self._waiters = list(self._waiters.values()), {}
            self._head_since = None
        for waiter in waiters:
            self.carrier.deliver(waiter, error)
        self.carrier.close()
        # The watchdog ends too (this may run in any thread: the loop wakes it).
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._wake_watchdog)

    def _wake_watchdog(self) -> None:
        self._watch_wakeup.set()

    async def _watch_replies(self) -> None:
        """A system task of the loop for the life of the session: when the oldest
        outstanding request has gone unanswered for ``reply_timeout`` seconds, the
        session dies (:meth:`_abort`), its waiters fail with CONNECTION_LOST, and the
        core reconnects and replays them.

        This is the one place the deadline holds for every request: the entries' own
        deadline (``trio.fail_after``) cannot end a wait shielded from it, and an OPEN's
        reply is waited for shielded (its handle must be closed, not leaked). Once the
        session is dead no handle can leak: the server's sftp-server ends with it.
        A request's clock starts when it becomes the oldest, not when it is queued:
        behind megabytes of writes on a slow link it waits its turn, and that is no
        sign of a dead connection while the ones before it are answered."""
        try:
            while self._dead is None:
                self._watch_wakeup = trio.Event()
                head_since, timeout = self._head_since, self.reply_timeout
                if head_since is None or math.isinf(timeout):
                    await self._watch_wakeup.wait()  # set by enqueue and end
                    continue
                left = head_since + timeout - time.monotonic()
                if left > 0:
                    await trio.sleep(left)
                    continue
                log.warning(
                    "%s: no reply for %g s to the oldest of %d outstanding request(s); "
                    "counting the connection as lost",
                    self.name,
                    timeout,
                    len(self._waiters),
                )
                self._abort(
                    SftpError(SftpStatusCode.SSH_FX_CONNECTION_LOST, f"no reply for {timeout:g} s")
                )
                return
        except Exception:
            # A system task must never raise: that would end the whole mount.
            log.exception("%s: the reply watchdog failed", self.name)

    def _abort(self, error: SftpError) -> None:
        """On the loop: end the session as a broken link would, where the carrier says
        closing its link may block (Carrier.abort)."""
        self.carrier.abort(lambda: self.end(error))

    # -- requests (trio loop) -----------------------------------------------------------

    async def submit(
        self,
        build: Callable[[int], bytes | Packet],
        callback: Callable[[Reply | SftpError], None],
        cost: int = 0,
        *,
        hold: bool = False,
    ) -> None:
        """Wait for room in the budget, then queue one request (``hold``: see
        :meth:`enqueue`). ``callback`` runs on the loop exactly once, with the reply or
        the error that ended the session."""
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.room_for(cost)
        self.enqueue(build, callback, cost, hold=hold)

    async def room_for(self, cost: int) -> None:
        """Take budget for one request; held requests leave first if we must wait."""
        if not self._budget.try_acquire(cost):
            self.flush()
            await self._budget.acquire(cost)

    async def wait_for_room(self, cost: int) -> None:
        """Take budget for one request, waiting as long as it takes; held requests stay
        held (a request the caller waits for, queued at once after)."""
        await self._budget.acquire(cost)

    def try_room_for(self, cost: int) -> bool:
        """Take budget for one request if there is room now (read-ahead, which must never
        hold up a request someone waits for)."""
        return self._budget.try_acquire(cost)

    def give_back_room(self, cost: int) -> None:
        """Return budget taken for a request that was not sent after all."""
        self._budget.release(cost)

    def enqueue(
        self,
        build: Callable[[int], bytes | Packet],
        callback: Callable[[Reply | SftpError], None],
        cost: int,
        *,
        hold: bool = False,
    ) -> None:
        """Queue a request whose budget is already taken. With ``hold``, it waits in
        the loop's hands until the next :meth:`flush` (or unheld request): waking the
        sender once for a burst of requests costs the loop far less than once each."""
        request_id = next(self._ids)
        waiter = Waiter(cost, callback)
        with self._lock:
            dead = self._dead
            first = not self._waiters
            if dead is None:
                self._waiters[request_id] = waiter
                if first:
                    self._head_since = time.monotonic()
        if dead is not None:
            self._budget.release(cost)
            callback(SftpError(SftpStatusCode.SSH_FX_NO_CONNECTION, dead.message))
            return
        if first:
            self._wake_watchdog()
        built = build(request_id)
        self._held.extend((built,) if isinstance(built, bytes) else built)
        if not hold:
            self.flush()

    def flush(self) -> None:
        """Hand the held requests to the carrier."""
        if self._held:
            self.carrier.send(tuple(self._held))
            self._held.clear()

    async def request(self, kind: PacketType, *fields: bytes, shielded: bool = False) -> Reply:
        """Send one request and wait for its reply (any type; STATUS is not checked).
        ``shielded``: once sent, the reply is waited for even if the caller is
        cancelled (an OPEN's reply holds a handle that must be closed, not leaked)."""
        done = trio.Event()
        result: list[Reply | SftpError] = []

        def on_reply(reply: Reply | SftpError) -> None:
            result.append(reply)
            done.set()

        await self.submit(lambda rid: packet(kind, rid, *fields), on_reply)
        if shielded:
            with trio.CancelScope(shield=True):
                await done.wait()
        else:
            await done.wait()
        if isinstance(result[0], SftpError):
            raise result[0]
        return result[0]

    async def request_both(self, first: Request, second: Request) -> tuple[Reply, Reply]:
        """Two requests in one write, both replies awaited: a change and the stat that
        reads its outcome cost one round trip, not two (the server answers in order)."""
        done = trio.Event()
        replies: dict[int, Reply | SftpError] = {}

        def collect(index: int) -> Callable[[Reply | SftpError], None]:
            def on_reply(reply: Reply | SftpError) -> None:
                replies[index] = reply
                if len(replies) == 2:
                    done.set()

            return on_reply

        for index, request in enumerate((first, second)):
            await self.submit(functools.partial(_build, request), collect(index), hold=index == 0)
        await done.wait()
        first_reply, second_reply = replies[0], replies[1]
        if isinstance(first_reply, SftpError):
            raise first_reply
        if isinstance(second_reply, SftpError):
            raise second_reply
        return first_reply, second_reply

    async def call(self, kind: PacketType, *fields: bytes) -> None:
        """A request whose answer is a STATUS: raise SftpError unless it is OK."""
        error = status_of(await self.request(kind, *fields))
        if error is not None:
            raise error

    async def expect(self, expected: PacketType, kind: PacketType, *fields: bytes) -> Reader:
        reply = await self.request(kind, *fields)
        if reply.kind == expected:
            return reply.body
        raise status_of(reply) or SftpError(
            SftpStatusCode.SSH_FX_BAD_MESSAGE, f"{kind.name} answered SSH_FX_OK"
        )

    async def extended(self, name: str, *fields: bytes) -> Reader | None:
        """An extended request: the EXTENDED_REPLY's body, or None for a STATUS OK."""
        reply = await self.request(PacketType.EXTENDED, pack_string(name), *fields)
        if reply.kind == PacketType.EXTENDED_REPLY:
            return reply.body
        error = status_of(reply)
        if error is not None:
            raise error
        return None

    def has(self, extension: str) -> bool:
        return extension in self.extensions

    # -- operations by path -----------------------------------------------------------

    async def stat(self, path: str) -> Attrs:
        return (await self.expect(PacketType.ATTRS, PacketType.STAT, pack_string(path))).attrs()

    async def lstat(self, path: str) -> Attrs:
        reader = await self.expect(PacketType.ATTRS, PacketType.LSTAT, pack_string(path))
        return reader.attrs()

    async def setstat(self, path: str, attrs: Attrs) -> None:
        await self.call(PacketType.SETSTAT, pack_string(path), pack_attrs(attrs))

    async def lsetstat(self, path: str, attrs: Attrs) -> None:
        """SETSTAT of the name itself, not what a symlink points at (lutimes,
        lchown); plain SETSTAT where the server lacks lsetstat@openssh.com."""
        kind, fields = self._lsetstat_request(path, attrs)
        await self.call(kind, *fields)

    def _lsetstat_request(self, path: str, attrs: Attrs) -> Request:
        """lsetstat@openssh.com where the server has it, else plain SETSTAT."""
        target = (pack_string(path), pack_attrs(attrs))
        if self.has(EXT_LSETSTAT):
            return PacketType.EXTENDED, (pack_string(EXT_LSETSTAT), *target)
        return PacketType.SETSTAT, target

    async def lsetstat_and_lstat(self, path: str, attrs: Attrs) -> Attrs:
        """:meth:`lsetstat`, and the attributes it leaves, in one round trip."""
        change = self._lsetstat_request(path, attrs)
        replies = await self.request_both(change, (PacketType.LSTAT, (pack_string(path),)))
        return attrs_after(*replies)

    async def mkdir(self, path: str, mode: int) -> None:
        await self.call(PacketType.MKDIR, pack_string(path), pack_attrs(Attrs(permissions=mode)))

    async def rmdir(self, path: str) -> None:
        await self.call(PacketType.RMDIR, pack_string(path))

    async def remove(self, path: str) -> None:
        await self.call(PacketType.REMOVE, pack_string(path))

    async def rename(self, old: str, new: str) -> None:
        """SSH_FXP_RENAME: OpenSSH refuses an existing target (FAILURE)."""
        await self.call(PacketType.RENAME, pack_string(old), pack_string(new))

    async def posix_rename(self, old: str, new: str) -> None:
        """posix-rename@openssh.com: rename(2), replacing the target atomically."""
        await self.extended(EXT_POSIX_RENAME, pack_string(old), pack_string(new))

    async def hardlink(self, old: str, new: str) -> None:
        await self.extended(EXT_HARDLINK, pack_string(old), pack_string(new))

    async def symlink(self, link_path: str, target: str) -> None:
        """Create ``link_path`` pointing at ``target``.

        The draft names the fields (linkpath, targetpath), but OpenSSH's sftp-server reads
        them the other way round and calls symlink(first, second); every client that
        talks to OpenSSH (its own sftp, sshfs, paramiko) sends the target first. So do we.
        """
        await self.call(PacketType.SYMLINK, pack_string(target), pack_string(link_path))

    async def readlink(self, path: str) -> str:
        return await self._one_name(PacketType.READLINK, path)

    async def realpath(self, path: str) -> str:
        return await self._one_name(PacketType.REALPATH, path)

    async def _one_name(self, kind: PacketType, path: str) -> str:
        names = (await self.expect(PacketType.NAME, kind, pack_string(path))).names()
        if not names:
            raise SftpError(SftpStatusCode.SSH_FX_BAD_MESSAGE, f"empty {kind.name} reply")
        return names[0].filename

    async def statvfs(self, path: str) -> StatVfs:
        reader = await self.extended(EXT_STATVFS, pack_string(path))
        if reader is None:
            raise SftpError(SftpStatusCode.SSH_FX_BAD_MESSAGE, "statvfs answered no data")
        return reader.statvfs()

    async def users_groups_by_id(
        self, uids: Sequence[int], gids: Sequence[int]
    ) -> tuple[list[str], list[str]]:
        """users-groups-by-id@openssh.com: the server's names of these ids, in order;
        "" where it knows none."""
        reader = await self.extended(
            EXT_USERS_GROUPS_BY_ID,
            pack_string(b"".join(u32(uid) for uid in uids)),
            pack_string(b"".join(u32(gid) for gid in gids)),
        )
        if reader is None:
            raise SftpError(SftpStatusCode.SSH_FX_BAD_MESSAGE, "users-groups-by-id: no names")
        users, groups = Reader(reader.bytes()), Reader(reader.bytes())
        return [users.text() for _ in uids], [groups.text() for _ in gids]

    async def listdir(self, path: str, *, first_batch_only: bool = False) -> list[NameEntry]:
        """All entries of a directory, . and .. included (the caller drops them)."""
        handle = (
            await self.expect(PacketType.HANDLE, PacketType.OPENDIR, pack_string(path))
        ).bytes()
        entries: list[NameEntry] = []
        try:
            while True:
                reply = await self.request(PacketType.READDIR, pack_string(handle))
                if reply.kind != PacketType.NAME:
                    error = status_of(reply)
                    if error is None or error.code == SftpStatusCode.SSH_FX_EOF:
                        break
                    raise error
                entries.extend(reply.body.names())
                if first_batch_only:
                    break
        finally:
            with trio.CancelScope(shield=True):
                await self._close_quietly(handle)
        return entries

    async def _close_quietly(self, handle: bytes) -> None:
        try:
            await self.call(PacketType.CLOSE, pack_string(handle))
        except SftpError as exc:
            log.debug("%s: closing a directory handle failed: %s", self.name, exc)


def _whole_pages(limit: int) -> int:
    return max(4096, limit - limit % 4096)


def packet_length(prefix: bytes | memoryview) -> int:
    """The length a packet's 4-byte prefix gives; EOFError when it cannot be one."""
    length = int.from_bytes(prefix, "big")
    if not 1 <= length <= MAX_PACKET_LENGTH:
        raise EOFError(f"SFTP packet of {length} bytes: the stream is out of step")
    return length


def read_packet(link: Link) -> tuple[int, bytes]:
    """One packet off a blocking link: (type, body after the type byte)."""
    header = link.recv_exact(5)
    length = packet_length(header[:4])
    return header[4], link.recv_exact(length - 1) if length > 1 else b""
