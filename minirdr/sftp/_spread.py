"""One file's paging writes spread over handles on several SSH connections.

A session is a pipeline of processes (rxfs -> ssh -> sshd -> sftp-server), and one
large file written through one session leaves a 2-core machine half idle: 1 GiB in
1 MiB writes took 8.2 s through one session and 4.6-5.1 s as two files on two. So once
a file streams (a paging write arrives while another of its writes is in flight), it is
opened again, in the background, on the pool's other live sessions, and from then on
each paging write goes to the handle with the smallest backlog.

SFTP v3 has no inode number to tell whether a second OPEN by path reached the same file:
the file may have been renamed or replaced on the server in between. So each new handle
is proven before it carries a byte: the next paging write waits while a random nonce is
written through the open's own handle at the start of its range (which it overwrites
next) and read back through the new handle. Only paging writes spread: the core never
has two overlapping ones in flight, so they may land in any order; every other write
keeps to the open's own handle, in order.

Landing out of order has one cost: when the server's disk fills, a write may fail below
one that landed, leaving a hole where writes in order leave a clean prefix (which
resuming tools such as ``rsync --append`` trust). So writes spread only while
fstatvfs@openssh.com shows ample room on the server's file system, checked before the
extra handles are opened and again as the file grows; a server without it gets one
handle per file.

The core hands a file's paging writes over one at a time, in offset order (its write-
behind's turns), so :meth:`SpreadWrites.handle_for` never runs twice at once for a file.
"""

from __future__ import annotations

import enum
import logging
import secrets

import trio

from ._engine import EXT_FSTATVFS, SftpError, SftpSession
from ._pool import SessionPool
from ._remotefile import RemoteFile
from ._wire import OpenFlags

__all__ = ["SpreadWrites"]

log = logging.getLogger(__name__)

# Random bytes that prove a new handle reaches the same file (a chance match: 2**-128).
_NONCE_SIZE = 16
# Extra handles per open file at most (one on each other session).
MAX_EXTRA_HANDLES = 3
# Free space on the server below which a file's writes keep to one handle, in order:
# far more than can be in flight out of order (the lazy writer's in-flight bound) plus
# what is written between two checks.
ROOM_NEEDED = 256 * 1024 * 1024
RECHECK_EVERY = 64 * 1024 * 1024


class _Stage(enum.Enum):
    IDLE = "idle"  # one handle; not streaming yet
    OPENING = "opening"  # checking room and opening the extra handles, in the background
    OPENED = "opened"  # extra handles open, to be proven by the next paging write
    SETTLED = "settled"  # the handles writes may use are known


class SpreadWrites:
    """The handles an open file's paging writes may go through: its own first, then,
    once the file streams, one proven handle on each other live session."""

    def __init__(
        self, own: RemoteFile, pool: SessionPool, nursery: trio.Nursery, timeout: float
    ) -> None:
        self.own = own
        self.handles = [own]  # every handle open, to wait for and close
        self._active = [own]  # the proven ones, that new writes may use
        self._pool = pool
        self._nursery = nursery
        self._timeout = timeout
        self._stage = _Stage.IDLE
        self._opening_ended = trio.Event()
        self._since_check = 0

    async def handle_for(self, offset: int, length: int) -> RemoteFile:
        """The handle a paging write of ``length`` bytes at ``offset`` goes through."""
        stage = self._stage
        if stage is _Stage.IDLE and self._streaming():
            self._stage = _Stage.OPENING
            self._nursery.start_soon(self._open_extras)
        elif stage is _Stage.OPENED and length >= _NONCE_SIZE:
            self._stage = _Stage.SETTLED
            await self._prove(offset)
        elif len(self._active) > 1:
            self._since_check += length
            if self._since_check >= RECHECK_EVERY:
                await self._recheck_room()
        return self._pick()

    def _streaming(self) -> bool:
        """Another write of the file is in flight (a small file written at close never
        pays for a second handle) and another session is alive."""
        return self.own.writes_in_flight > 0 and bool(self._other_sessions())

    def _other_sessions(self) -> list[SftpSession]:
        mine = self.own.session
        others = [s for s in self._pool.sessions if s.alive and s is not mine]
        return others[:MAX_EXTRA_HANDLES]

    async def _room_to_spread(self) -> bool:
        if not self.own.session.has(EXT_FSTATVFS):
            return False
        try:
            vfs = await self.own.fstatvfs()
        except SftpError as exc:
            log.debug("%s: fstatvfs: %s", self.own.path, exc)
            return False
        return vfs.bavail * (vfs.frsize or vfs.bsize) >= ROOM_NEEDED

    async def _open_extras(self) -> None:
        """In the mount's nursery: check room, then open the file on the other
        sessions (READ too, to read the nonce back; never CREAT or TRUNC: nothing of
        the file changes, and only a file that exists is opened)."""
        flags = OpenFlags.SSH_FXF_READ | OpenFlags.SSH_FXF_WRITE
        opened: list[RemoteFile] = []

        async def open_on(session: SftpSession) -> None:
            try:
                opened.append(await RemoteFile.open_handle(session, self.own.path, flags))
            except SftpError as exc:
                log.debug("%s: no second handle on %s: %s", self.own.path, session.name, exc)

        try:
            with trio.move_on_after(self._timeout):
                if await self._room_to_spread():
                    async with trio.open_nursery() as nursery:
                        for session in self._other_sessions():
                            nursery.start_soon(open_on, session)
        except Exception:
            # This runs in the mount's nursery: never let it take the mount down.
            log.exception("opening %s on more connections", self.own.path)
        finally:
            # Whatever was opened is closed with the rest, even if never proven.
            self.handles.extend(opened)
            self._stage = _Stage.OPENED if opened else _Stage.SETTLED
            self._opening_ended.set()

    async def _prove(self, offset: int) -> None:
        """Keep those extra handles that read back a nonce written through the own one
        at ``offset``; the caller's write, which covers it, goes next."""
        extras = self.handles[1:]
        nonce = secrets.token_bytes(_NONCE_SIZE)
        try:
            # Out of turn: behind the file's queued writes it would wait for all of them.
            await self.own.write_out_of_turn(offset, nonce)
            for remote in extras:
                if await remote.pread(offset, _NONCE_SIZE) == nonce:
                    self._active.append(remote)
                else:
                    log.info(
                        "%s names another file on the server now; its writes stay on one "
                        "connection",
                        self.own.path,
                    )
        except SftpError as exc:
            log.debug("%s: writes stay on one connection: %s", self.own.path, exc)
            del self._active[1:]
        if len(self._active) > 1:
            log.debug("%s: writes spread over %d connections", self.own.path, len(self._active))

    async def _recheck_room(self) -> None:
        self._since_check = 0
        if not await self._room_to_spread():
            log.debug("%s: the server runs short of space; one handle", self.own.path)
            del self._active[1:]

    def _pick(self) -> RemoteFile:
        """The live handle with the smallest backlog."""
        active = self._active
        if len(active) == 1:
            return active[0]
        live = [h for h in active if h.session.alive] or [self.own]
        return min(live, key=lambda h: h.backlog)

    async def wait_writes(self) -> None:
        """Until every write submitted through any of the handles has its replies."""
        for remote in self.handles:
            await remote.wait_writes()

    async def close(self) -> None:
        """CLOSE every handle after its writes, the own one last; raises the first
        failure once all are closed."""
        if self._stage is _Stage.OPENING:
            await self._opening_ended.wait()
        failure: SftpError | None = None
        for remote in reversed(self.handles):
            try:
                await remote.close()
            except SftpError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
