"""A loopback TCP proxy that adds latency, stalls and cuts connections, for fault tests.

The kernel here has no netem (DESIGN.md section 8), so faults between a client and the
loopback sshd come from this proxy instead::

    with FaultProxy(("127.0.0.1", sshd.port)) as proxy:
        proxy.set_latency(0.005)        # 5 ms each way, a delay line
        mount(f"sftp://root@127.0.0.1:{proxy.port}/...")
        proxy.stall(); ...; proxy.resume()
        proxy.cut_all()                 # RST every connection; new ones still accepted

It listens on 127.0.0.1 on a free port and forwards every accepted connection to one
target, which must be a loopback address. It runs its own trio loop in a background
thread; every control is a plain method that is safe to call from any other thread
(including another trio loop's thread) and returns once the change is in effect.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

import trio

__all__ = ["FaultProxy", "FaultProxyError", "ProxyStats"]

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
# One read from a socket; the delay line holds at most QUEUE_CHUNKS of them per
# direction (16 MiB), so a fast sender against a slow or stalled receiver meets TCP
# backpressure instead of growing our memory.
CHUNK_SIZE = 65536
QUEUE_CHUNKS = 256
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
CONTROL_TIMEOUT = 10.0
# SO_LINGER on with a zero timeout: close() sends RST and drops unsent data, which is
# what a crashed peer or a middlebox timing out looks like to the other end.
_ABORTIVE_LINGER = struct.pack("ii", 1, 0)


class FaultProxyError(RuntimeError):
    """The proxy could not start, stop, or carry out a control in time."""


class Direction(enum.Enum):
    TO_TARGET = "to_target"
    TO_CLIENT = "to_client"


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of the counters. Bytes are counted when delivered, not when read."""

    accepted: int
    refused: int
    upstream_failures: int
    active: int
    bytes_to_target: int
    bytes_to_client: int


@dataclass(eq=False)
class _Connection:
    client: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    upstream: trio.SocketStream | None = None

    def abort(self) -> None:
        """Reset both sides now; a task blocked on either socket wakes with an error."""
        for stream in (self.client, self.upstream):
            if stream is not None:
                _abort(stream)
        self.scope.cancel()

    def close(self) -> None:
        for stream in (self.client, self.upstream):
            if stream is not None:
                stream.socket.close()


def _abort(stream: trio.SocketStream) -> None:
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORTIVE_LINGER)
    stream.socket.close()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target``, with latency, stalls, cuts and refusals.

    Start it with ``with FaultProxy(target) as proxy:`` or :meth:`start`/:meth:`stop`.
    """

    def __init__(self, target: tuple[str, int], *, latency: float = 0.0) -> None:
        host, port = target
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"FaultProxy forwards to loopback addresses only, not {host!r}")
        self.target = (host, port)
        self.host = LOOPBACK
        self.port = 0
        self._check_latency(latency)
        self._latency = latency
        self._stalled = False
        self._resumed: trio.Event | None = None
        self._refusing = False
        self._connections: set[_Connection] = set()
        self._bytes = dict.fromkeys(Direction, 0)
        self._accepted = 0
        self._refused = 0
        self._upstream_failures = 0
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop_scope: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifetime --------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the loop thread; return once the proxy accepts connections."""
        if self._thread is not None:
            raise FaultProxyError("FaultProxy is already running")
        self._ready.clear()
        self._error = self._token = self._stop_scope = None
        self._thread = threading.Thread(
            target=self._run_loop, name=f"FaultProxy->{self.target[1]}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._error is not None:
            self.stop()
            raise FaultProxyError(f"FaultProxy did not start: {self._error!r}")

    def stop(self) -> None:
        """Close the listener and every connection (abortively) and end the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        token, scope = self._token, self._stop_scope
        if token is not None and scope is not None and thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise FaultProxyError(f"FaultProxy thread did not stop within {STOP_TIMEOUT} s")

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    # -- controls --------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` after it was read, in each direction.

        A delay line: chunks read while others wait are in flight together, so order and
        throughput are kept and only the time of arrival moves. Applies to chunks read
        from now on.
        """
        self._check_latency(seconds)
        self._call(lambda: setattr(self, "_latency", seconds))

    def stall(self) -> None:
        """Stop forwarding bytes both ways; connections stay open and new ones are taken.

        A chunk already being written to a socket when this is called may still land.
        """
        self._call(self._stall)

    def resume(self) -> None:
        """Forward again, starting with whatever queued up during the stall."""
        self._call(self._resume)

    def cut_all(self) -> int:
        """Reset (RST) every open connection; return how many. New ones are accepted."""
        return self._call(self._cut_all)

    def refuse(self, refusing: bool = True) -> None:
        """While ``refusing``, accept each new connection and reset it at once."""
        self._call(lambda: setattr(self, "_refusing", refusing))

    @property
    def stats(self) -> ProxyStats:
        return self._call(self._stats)

    # -- in the loop thread ----------------------------------------------------------

    def _stall(self) -> None:
        if not self._stalled:
            self._stalled = True
            self._resumed = trio.Event()

    def _resume(self) -> None:
        self._stalled = False
        if self._resumed is not None:
            self._resumed.set()

    def _cut_all(self) -> int:
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        return len(connections)

    def _stats(self) -> ProxyStats:
        return ProxyStats(
            accepted=self._accepted,
            refused=self._refused,
            upstream_failures=self._upstream_failures,
            active=len(self._connections),
            bytes_to_target=self._bytes[Direction.TO_TARGET],
            bytes_to_client=self._bytes[Direction.TO_CLIENT],
        )

    def _run_loop(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported by start(); the thread must not die silently
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
        self.port = listeners[0].socket.getsockname()[1]
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._stop_scope = nursery.cancel_scope
            self._ready.set()
            # serve_listeners closes the listeners when stop() cancels it; each handler
            # resets its own connection on the way out.
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, client: trio.SocketStream) -> None:
        self._accepted += 1
        if self._refusing:
            self._refused += 1
            _abort(client)
            return
        connection = _Connection(client)
        self._connections.add(connection)
        orderly = False
        try:
            with connection.scope:
                orderly = await self._forward(connection)
        finally:
            self._connections.discard(connection)
            if orderly:
                connection.close()
            else:
                # Cut, stopped, or one side reset: pass a reset on to the other side.
                connection.abort()

    async def _forward(self, connection: _Connection) -> bool:
        """Carry bytes both ways; True once both sides sent EOF and got every byte."""
        try:
            connection.upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            self._upstream_failures += 1
            return False
        upstream, client = connection.upstream, connection.client
        orderly = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pipe, client, upstream, Direction.TO_TARGET)
                nursery.start_soon(self._pipe, upstream, client, Direction.TO_CLIENT)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            orderly = False
        return orderly

    async def _pipe(
        self, source: trio.SocketStream, sink: trio.SocketStream, direction: Direction
    ) -> None:
        """Read ``source`` into the delay line; a second task empties it into ``sink``."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](QUEUE_CHUNKS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, receive, sink, direction)
            async with send:
                while True:
                    await self._wait_unstalled()
                    data = await source.receive_some(CHUNK_SIZE)
                    if not data:
                        break
                    await send.send((trio.current_time() + self._latency, data))

    async def _deliver(
        self,
        receive: trio.MemoryReceiveChannel[tuple[float, bytes]],
        sink: trio.SocketStream,
        direction: Direction,
    ) -> None:
        async with receive:
            async for due, data in receive:
                await trio.sleep_until(due)
                await self._wait_unstalled()
                await sink.send_all(data)
                self._bytes[direction] += len(data)
        await sink.send_eof()

    async def _wait_unstalled(self) -> None:
        while self._stalled and self._resumed is not None:
            await self._resumed.wait()

    # -- plumbing --------------------------------------------------------------------

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` in the loop thread and return its result.

        trio.from_thread refuses callers that run a trio loop of their own; run_sync_soon
        does not, so tests written with trio can drive the proxy too.
        """
        if self._token is None or self._thread is None:
            raise FaultProxyError("FaultProxy is not running")
        if threading.current_thread() is self._thread:
            return function()
        done = threading.Event()
        outcome: list[T] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                outcome.append(function())
            except BaseException as exc:  # handed back to the calling thread below
                errors.append(exc)
            finally:
                done.set()

        try:
            self._token.run_sync_soon(run)
        except trio.RunFinishedError:
            raise FaultProxyError("FaultProxy has stopped") from None
        if not done.wait(CONTROL_TIMEOUT):
            raise FaultProxyError(f"FaultProxy loop did not answer in {CONTROL_TIMEOUT} s")
        if errors:
            raise errors[0]
        return outcome[0]

    @staticmethod
    def _check_latency(seconds: float) -> None:
        if not 0 <= seconds <= 60:
            raise ValueError(f"latency must be between 0 and 60 seconds, not {seconds!r}")

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<FaultProxy {self.host}:{self.port} -> {self.target[0]}:{self.target[1]} {state}>"
