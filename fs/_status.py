"""The mount process's status socket: ``rxfs status``, ``rxfs trace`` and ``rxfs umount``'s
progress ask it (docs/status.md).

A unix stream socket next to the mount's log, mode 0600 in a 0700 directory, and a peer
that is neither the mounting user nor root is refused as well (SO_PEERCRED). The
protocol is newline-delimited JSON: the client sends one request line, ``{"request":
"status"}`` or ``{"request": "trace"}``; a status request is answered with one document
and the connection closed, a trace request with one event per line until the client
goes. Everything runs on the mount's trio loop and reads the counters of
:mod:`rxfs.rdbss._stats`; nothing here makes a request to the mount itself (DESIGN §11).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

import trio
from rxfs.rdbss import OpStats, RxDevice, TraceEvent, bucket_upper_ns, parse_port, status_name

__all__ = [
    "SCHEMA_VERSION",
    "MetricsAddress",
    "StatusError",
    "parse_metrics_address",
    "query_status",
    "serve_status",
    "status_document",
    "stream_trace",
    "usable_socket_path",
]

log = logging.getLogger(__name__)

# Bumped when a key changes meaning or goes; new keys may appear within a version.
SCHEMA_VERSION = 1
# The files holding the most bytes that a status document lists.
TOP_FILES = 10
# Events a slow trace client may fall behind by before events are dropped for it.
TRACE_BACKLOG = 4096
REQUEST_LIMIT = 4096
REQUEST_TIMEOUT = 5.0
# sun_path holds 108 bytes with its NUL; a longer path cannot be bound.
_SUN_PATH_MAX = 100
_UCRED = struct.Struct("3i")


LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class MetricsAddress:
    host: str
    port: int


def parse_metrics_address(value: str | None) -> MetricsAddress:
    """``PORT`` (loopback) or ``HOST:PORT``; ValueError with a one-line message."""
    text = (value or "").strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host = LOOPBACK
    host = host.strip("[]") or LOOPBACK
    return MetricsAddress(host, parse_port(port, f"-o metrics={text!r}"))


class StatusError(Exception):
    """The mount's status socket could not be asked; the message is for the user."""


def usable_socket_path(path: Path, mountpoint: str) -> Path:
    """``path``, or for a mount point too long to name a unix socket after, a name made
    from its digest in the same directory (the same for the same mount point)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(mountpoint)).hexdigest()[:32]
    return path.with_name(f"{digest}.sock")


# -- the document --------------------------------------------------------------------------


def _shown_url(url: SplitResult) -> str:
    """The URL without a password (and with its ``//`` even when it names no host)."""
    netloc = url.hostname or ""
    if url.port is not None:
        netloc = f"{netloc}:{url.port}"
    if url.username:
        netloc = f"{url.username}@{netloc}"
    query = f"?{url.query}" if url.query else ""
    return f"{url.scheme}://{netloc}{url.path}{query}"


def _op_document(stats: OpStats) -> dict[str, Any]:
    top = max((i for i, count in enumerate(stats.buckets) if count), default=None)
    return {
        "count": stats.count,
        "in_flight": stats.in_flight,
        "errors": {status_name(status): count for status, count in sorted(stats.statuses.items())},
        "latency_us": {
            "p50": stats.percentile_us(0.50),
            "p90": stats.percentile_us(0.90),
            "p99": stats.percentile_us(0.99),
            "max": bucket_upper_ns(top) / 1000 if top is not None else None,
        },
    }


def status_document(device: RxDevice, mountpoint: str, top: int = TOP_FILES) -> dict[str, Any]:
    """The answer to a status request (docs/status.md); built on the trio loop."""
    stats = device.stats
    lazy_writer = device.lazy_writer
    held = sorted(lazy_writer.held_by_file(), key=lambda f: f[1] + f[2], reverse=True)
    reconnector = device.reconnector
    transport: dict[str, Any] = {"transport": None, "connections": []}
    transport.update(device.minirdr.transport_status())
    transport.update(
        state=reconnector.state.value,
        reconnects=reconnector.reconnects,
        last_error=reconnector.last_error,
    )
    caches = {
        name: {"hits": cache.hits, "misses": cache.misses, "hit_rate": cache.hit_rate}
        for name, cache in (
            ("attributes", stats.attributes),
            ("negative_lookups", stats.negative_lookups),
        )
    }
    return {
        "version": SCHEMA_VERSION,
        "mountpoint": mountpoint,
        "url": _shown_url(device.url),
        "backend": device.url.scheme,
        "pid": os.getpid(),
        "started": stats.started,
        "uptime_s": time.time() - stats.started,
        "transport": transport,
        "write_behind": {
            "dirty_bytes": lazy_writer.dirty_bytes,
            "in_flight_bytes": lazy_writer.in_flight_bytes,
            "dirty_limit": lazy_writer.dirty_limit,
            "files_held": len(held),
            "files": [
                {"path": path, "dirty_bytes": dirty, "in_flight_bytes": in_flight}
                for path, dirty, in_flight in held[:top]
            ],
        },
        "irp": {op.name: _op_document(op) for op in stats.irp_stats()},
        "lowio": {op.name: _op_document(op) for op in stats.lowio},
        "errors": stats.errors(),
        "caches": caches,
        "tracers": len(stats.tracer.subscribers),
    }


# -- the server ----------------------------------------------------------------------------


async def serve_status(
    path: Path,
    device: RxDevice,
    mountpoint: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``path`` until cancelled; the socket file goes with the task."""
    listener = _listen(path)
    try:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(_answer, stream, device, mountpoint)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # at teardown: a quick local call, nothing to wait for
        listener.socket.close()


def _listen(path: Path) -> trio.SocketListener:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a mount process that died
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Made 0600 from the start: the umask is the process's, so it is set only around
    # the bind, which does not yield to another task.
    old_umask = os.umask(0o177)
    try:
        raw.bind(os.fspath(path))
    except OSError:
        raw.close()
        raise
    finally:
        os.umask(old_umask)
    raw.listen(16)
    return trio.SocketListener(trio.socket.from_stdlib_socket(raw))


def _peer_allowed(stream: trio.SocketStream) -> bool:
    """The mounting user or root; anyone else is refused even past the file's mode."""
    raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(raw)
    return uid in (os.getuid(), 0)


async def _answer(stream: trio.SocketStream, device: RxDevice, mountpoint: str) -> None:
    async with stream:
        try:
            if not _peer_allowed(stream):
                await _send(stream, {"error": "permission denied"})
                return
            request = await _read_request(stream)
            kind = request.get("request")
            if kind == "status":
                top = request.get("top", TOP_FILES)
                top = top if isinstance(top, int) and top >= 0 else TOP_FILES
                await _send(stream, status_document(device, mountpoint, top))
            elif kind == "trace":
                await _stream_trace(stream, device)
            else:
                await _send(stream, {"error": f"unknown request {kind!r}"})
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass  # the client went
        except (ValueError, trio.TooSlowError) as exc:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await _send(stream, {"error": f"bad request: {exc}"})


async def _read_request(stream: trio.SocketStream) -> dict[str, Any]:
    data = b""
    with trio.fail_after(REQUEST_TIMEOUT):
        while b"\n" not in data:
            chunk = await stream.receive_some(REQUEST_LIMIT)
            if not chunk:
                break
            data += chunk
            if len(data) > REQUEST_LIMIT:
                raise ValueError("request too long")
    request = json.loads(data.split(b"\n", 1)[0] or b"{}")
    if not isinstance(request, dict):
        raise ValueError("a request is a JSON object")
    return request


async def _send(stream: trio.SocketStream, document: dict[str, Any]) -> None:
    await stream.send_all(json.dumps(document).encode() + b"\n")


async def _stream_trace(stream: trio.SocketStream, device: RxDevice) -> None:
    """One event per line until the client closes; a client that falls behind by
    TRACE_BACKLOG events is told how many it missed."""
    send, receive = trio.open_memory_channel[TraceEvent](TRACE_BACKLOG)
    dropped = 0

    def subscriber(event: TraceEvent) -> None:
        nonlocal dropped
        try:
            send.send_nowait(event)
        except trio.WouldBlock:
            dropped += 1

    tracers = device.stats.tracer.subscribers
    tracers.append(subscriber)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_closed, stream, nursery.cancel_scope)
            await _send(stream, {"version": SCHEMA_VERSION, "trace": "started"})
            async for event in receive:
                if dropped:
                    await _send(stream, {"dropped": dropped})
                    dropped = 0
                await _send(stream, event)
    finally:
        tracers.remove(subscriber)


async def _until_closed(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    with contextlib.suppress(trio.BrokenResourceError, ConnectionError):
        while await stream.receive_some(REQUEST_LIMIT):
            pass
    scope.cancel()


# -- the client (rxfs status, rxfs trace, rxfs umount) ------------------------------------


def _connect(path: Path, timeout: float) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        client.connect(os.fspath(path))
    except FileNotFoundError:
        client.close()
        raise StatusError(f"no status socket at {path} (is the mount process running?)") from None
    except PermissionError:
        client.close()
        raise StatusError(f"permission denied: {path} belongs to another user") from None
    except OSError as exc:
        client.close()
        raise StatusError(f"cannot reach the mount process at {path}: {exc.strerror}") from None
    return client


def _answer_of(line: bytes, path: Path) -> dict[str, Any]:
    try:
        document = json.loads(line)
    except ValueError:
        raise StatusError(f"the mount process at {path} answered garbage") from None
    if not isinstance(document, dict):
        raise StatusError(f"the mount process at {path} answered garbage")
    if "error" in document:
        raise StatusError(f"the mount process refused: {document['error']}")
    return document


def query_status(path: Path, timeout: float = 5.0, top: int = TOP_FILES) -> dict[str, Any]:
    """One status document from the mount process listening on ``path``."""
    with _connect(path, timeout) as client:
        try:
            # A refused peer is answered (and the connection closed) before it asks.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                client.sendall(json.dumps({"request": "status", "top": top}).encode() + b"\n")
            with client.makefile("rb") as answer:
                line = answer.readline()
        except OSError as exc:
            raise StatusError(f"the mount process at {path} did not answer: {exc}") from None
    if not line:
        raise StatusError(f"the mount process at {path} closed without answering")
    return _answer_of(line, path)


def stream_trace(path: Path, on_event: Callable[[dict[str, Any]], None]) -> None:
    """Call ``on_event`` with every trace event until the mount process goes (or the
    caller interrupts)."""
    with _connect(path, 5.0) as client:
        client.sendall(b'{"request": "trace"}\n')
        client.settimeout(None)
        with client.makefile("rb") as events:
            for line in events:
                on_event(_answer_of(line, path))
