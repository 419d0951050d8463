"""SFTP on a paramiko channel (``-o transport=paramiko``): the link and its two threads.

A paramiko channel blocks, and paramiko's SFTPClient loses replies when several threads
read them (DESIGN §5, §10), so a :class:`ThreadCarrier` gives each session exactly two
threads of its own: a *sender* that writes queued packets to the channel and a *reader*
that is the only one ever to read replies from it. Both hand-overs are batched: a burst
of requests wakes the sender once, and one wakeup of the loop (``run_sync_soon``) takes
every reply that arrived meanwhile. The session (:mod:`._engine`) sees none of this: it
talks to the :class:`~._engine.Carrier` interface.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from ._engine import (
    MAX_IO,
    Packet,
    Reply,
    SftpError,
    SftpSession,
    Waiter,
    read_packet,
)
from ._wire import SftpStatusCode

if TYPE_CHECKING:
    import paramiko

__all__ = ["ChannelLink", "ThreadCarrier", "open_channel_session"]

# Channel receive window and packet size: a 16 MiB window lets read-ahead replies stream
# without waiting for window adjustments on every few packets.
_WINDOW_SIZE = 16 * 1024 * 1024
_MAX_PACKET_SIZE = 64 * 1024
# Packets the sender hands to the link at once (each is one or two pieces).
_MAX_PIECES = 512


def open_channel_session(
    transport: paramiko.Transport, token: trio.lowlevel.TrioToken, **budget: int
) -> SftpSession:
    """Blocking: open a channel running the sftp subsystem on ``transport`` and start a
    session on it (see :meth:`~._engine.SftpSession.over`)."""
    try:
        channel = transport.open_session(
            window_size=_WINDOW_SIZE, max_packet_size=_MAX_PACKET_SIZE
        )
        channel.invoke_subsystem("sftp")
    except Exception as exc:
        raise SftpError(
            SftpStatusCode.SSH_FX_NO_CONNECTION, f"cannot start the sftp subsystem: {exc}"
        ) from exc
    return SftpSession.over(ThreadCarrier(ChannelLink(channel)), token, **budget)


class ThreadCarrier:
    """A session's sender and reader thread on a blocking :class:`ChannelLink`."""

    def __init__(self, link: ChannelLink) -> None:
        self.link = link
        self._session: SftpSession | None = None
        self._outbox: queue.SimpleQueue[Packet | None] = queue.SimpleQueue()
        # Replies the reader has handed over and the loop not yet taken (under _lock):
        # one wakeup of the loop takes all that piled up meanwhile.
        self._lock = threading.Lock()
        self._inbox: list[tuple[Waiter, Reply | SftpError]] = []
        self._drain_scheduled = False
        self._threads: list[threading.Thread] = []

    def _owner(self) -> SftpSession:
        assert self._session is not None, "the carrier has not been started"
        return self._session

    def start(self, session: SftpSession) -> None:
        """Start the sender and the reader thread."""
        self._session = session
        self._threads = [
            threading.Thread(target=self._send_loop, name=f"{session.name}-send", daemon=True),
            threading.Thread(target=self._read_loop, name=f"{session.name}-read", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def send(self, pieces: Packet) -> None:
        self._outbox.put(pieces)

    def deliver(self, waiter: Waiter, result: Reply | SftpError) -> None:
        with self._lock:
            self._inbox.append((waiter, result))
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        # When the mount's loop is gone, nobody waits for this reply any more.
        with contextlib.suppress(trio.RunFinishedError):
            self._owner().token.run_sync_soon(self._drain_inbox)

    def _drain_inbox(self) -> None:
        """On the loop: everything the reader handed over since the last wakeup."""
        with self._lock:
            batch, self._inbox = self._inbox, []
            self._drain_scheduled = False
        self._owner().complete(batch)

    def close(self) -> None:
        self._outbox.put(None)
        self.link.close()

    def abort(self, end: Callable[[], None]) -> None:
        # Closing a paramiko channel may block on a stalled transport: a thread of its own.
        name = f"{self._owner().name}-abort"
        threading.Thread(target=end, name=name, daemon=True).start()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
        self.link.wait_closed(timeout)

    # -- the two threads ------------------------------------------------------------

    def _send_loop(self) -> None:
        """Sender thread: write queued packets, several at a time when they pile up."""
        while True:
            item = self._outbox.get()
            if item is None:
                return
            pieces = list(item)
            size = sum(map(len, item))
            # Bounded in pieces too: writev takes at most IOV_MAX (1024) of them.
            while size < MAX_IO and len(pieces) < _MAX_PIECES:
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._outbox.put(None)
                    break
                pieces.extend(more)
                size += sum(map(len, more))
            try:
                self.link.send_all(pieces)
            except Exception as exc:  # the channel or the transport is gone
                self._owner().end(SftpError(SftpStatusCode.SSH_FX_CONNECTION_LOST, str(exc)))
                return

    def _read_loop(self) -> None:
        """Reader thread: the only reader of this channel; hands replies to the loop."""
        session = self._owner()
        try:
            while True:
                session.on_packet(*read_packet(self.link))
        except Exception as exc:
            session.lose(str(exc))


class ChannelLink:
    """A paramiko channel running the sftp subsystem."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel

    def send_all(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Channel.sendall re-slices the whole remainder after every packet (quadratic
        for large buffers); send packet-sized slices of a memoryview instead."""
        channel = self.channel
        view = memoryview(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        step = max(4096, int(getattr(channel, "out_max_packet_size", 32768)))
        pos = 0
        while pos < len(view):
            sent = channel.send(bytes(view[pos : pos + step]))
            if sent <= 0:
                raise EOFError("the SFTP channel is closed")
            pos += sent

    def recv_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n > 0:
            chunk: bytes = self.channel.recv(n)
            if not chunk:
                raise EOFError("the SFTP channel is closed")
            parts.append(chunk)
            n -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        # paramiko sends CHANNEL_CLOSE here, which raises EOFError or OSError once the
        # transport is dead; a dying session's threads call this and must not crash.
        with contextlib.suppress(EOFError, OSError):
            self.channel.close()

    def wait_closed(self, timeout: float) -> None:
        """Nothing to wait for: paramiko's transport thread owns the socket."""
