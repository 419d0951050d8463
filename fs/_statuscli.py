"""``rxfs status`` and ``rxfs trace``: what a running mount is doing, asked of its mount
process over its status socket (fs/_status.py, docs/status.md); and the progress line
``rxfs umount`` prints while a mount process still sends what it holds.

Nothing here touches a mount point (no stat): the mounts are found in
/proc/self/mountinfo and each one's socket is named after its mount point.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ._mounttable import mount_entry, rxfs_mounts
from ._status import TOP_FILES, StatusError, query_status, stream_trace, usable_socket_path

__all__ = ["UmountProgress", "add_status_commands", "socket_for"]

EXIT_FAILURE = 1
EXIT_USAGE = 2

StateFile = Callable[[str, str], Path]


def socket_for(state_file: StateFile, mountpoint: str) -> Path:
    """The status socket of the mount at ``mountpoint`` (absolute, resolved)."""
    return usable_socket_path(state_file(mountpoint, "sock"), mountpoint)


def _resolve(path: str) -> str:
    """Absolute, the parent's links resolved, without a lookup of ``path`` itself (on a
    mount that does not answer, that would hang)."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(parent), name)


def _rxfs_mountpoint(path: str) -> str:
    mountpoint = _resolve(path)
    entry = mount_entry(mountpoint)
    if entry is None:
        raise _UsageError(f"{path} is not mounted")
    if not entry.is_rxfs:
        raise _UsageError(f"{path} is a {entry.fstype} mount, not an rxfs one")
    return mountpoint


class _UsageError(Exception):
    pass


# -- formatting ----------------------------------------------------------------------------


def _size(count: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(count) >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} B"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m"] if minutes or hours or days else []
    return " ".join([*parts, f"{seconds}s"])


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f}ms" if value >= 10000 else f"{value:.0f}us"


def _ops_table(title: str, ops: dict[str, Any]) -> list[str]:
    rows = [
        (name, op)
        for name, op in ops.items()
        if op["count"] or op["in_flight"]  # the others did nothing yet
    ]
    if not rows:
        return [f"  {title}: none yet"]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"  {title:<{width}}  {'count':>9} {'active':>6} {'errors':>7} "
        f"{'p50':>8} {'p90':>8} {'p99':>8}"
    ]
    for name, op in rows:
        latency = op["latency_us"]
        lines.append(
            f"  {name:<{width}}  {op['count']:>9} {op['in_flight']:>6} "
            f"{sum(op['errors'].values()):>7} {_us(latency['p50']):>8} "
            f"{_us(latency['p90']):>8} {_us(latency['p99']):>8}"
        )
    return lines


def format_status(doc: dict[str, Any]) -> str:
    """The human-readable form of one status document."""
    lines = [
        f"{doc['mountpoint']}  {doc['url']}  ({doc['backend']}, pid {doc['pid']}, "
        f"up {_duration(doc['uptime_s'])})"
    ]
    transport = doc["transport"]
    carrier = f"{transport['transport']}, " if transport.get("transport") else ""
    lines.append(
        f"  connection: {carrier}{transport['state']}, {transport['reconnects']} "
        f"reconnect(s), last error: {transport['last_error'] or 'none'}"
    )
    for number, connection in enumerate(transport.get("connections", []), 1):
        details = ", ".join(f"{k} {v}" for k, v in connection.items() if k != "state")
        lines.append(f"    #{number}: {connection.get('state', '?')}, {details}")
    held = doc["write_behind"]
    lines.append(
        f"  held: {_size(held['dirty_bytes'])} dirty, {_size(held['in_flight_bytes'])} in "
        f"flight (limit {_size(held['dirty_limit'])}), {held['files_held']} file(s)"
    )
    lines += [
        f"    {_size(f['dirty_bytes'])} dirty, {_size(f['in_flight_bytes'])} in flight  "
        f"{f['path']}"
        for f in held["files"]
    ]
    lines += _ops_table("IRP", doc["irp"])
    lines += _ops_table("LowIo", doc["lowio"])
    errors = ", ".join(f"{name} {count}" for name, count in sorted(doc["errors"].items()))
    lines.append(f"  errors since mount: {errors or 'none'}")
    caches = []
    for name, cache in doc["caches"].items():
        rate = cache["hit_rate"]
        shown = f"{rate:.0%}" if rate is not None else "-"
        caches.append(
            f"{name.replace('_', ' ')} {shown} ({cache['hits']}/{cache['hits'] + cache['misses']})"
        )
    lines.append(f"  cache hits: {', '.join(caches)}")
    return "\n".join(lines)


def _errno_name(number: int) -> str:
    return "0" if not number else errno.errorcode.get(number, str(number))


def format_event(event: dict[str, Any]) -> str:
    """One trace event: the FUSE operation, then each IRP and its LowIo operations."""
    when = datetime.fromtimestamp(event.get("started", time.time())).strftime("%H:%M:%S.%f")
    if "dropped" in event:
        return f"... {event['dropped']} event(s) dropped: the trace fell behind"
    op = event.get("op") or "(core)"
    head = f"{when} {op}"
    if "errno" in event:
        head += f" -> {_errno_name(event['errno'])} {_us(event['us'])}"
    lines = [head]
    for irp in event.get("irps", []):
        path = irp["path"] if irp["path"] is not None else "-"
        lines.append(f"  {irp['irp']}/{irp['minor']} {path} -> {irp['status']} {_us(irp['us'])}")
        lines += [f"    {_lowio(low)}" for low in irp["lowio"]]
    lines += [f"  {_lowio(low)}" for low in event.get("lowio", [])]
    return "\n".join(lines)


def _lowio(low: dict[str, Any]) -> str:
    paging = " PAGING_IO" if low["paging"] else ""
    return (
        f"{low['op']} offset={low['offset']} count={low['count']}{paging} "
        f"{low['backend']} -> {low['status']} {_us(low['us'])}"
    )


# -- commands ------------------------------------------------------------------------------


def _status_targets(args: argparse.Namespace) -> list[str]:
    if args.mountpoint is not None:
        return [_rxfs_mountpoint(args.mountpoint)]
    return rxfs_mounts(os.getuid())


def _collect(
    state_file: StateFile, mountpoints: list[str], top: int
) -> tuple[list[dict[str, Any]], list[str]]:
    docs, problems = [], []
    for mountpoint in mountpoints:
        try:
            docs.append(query_status(socket_for(state_file, mountpoint), top=top))
        except StatusError as exc:
            problems.append(f"{mountpoint}: {exc}")
    return docs, problems


def cmd_status(args: argparse.Namespace, state_file: StateFile) -> int:
    if args.interval <= 0:
        raise _UsageError("--interval takes a number of seconds above 0")
    mountpoints = _status_targets(args)
    if not args.watch:
        return _show_status(state_file, mountpoints, args, sys.stdout)
    try:
        while True:
            if not args.json and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: redraw in place
            _show_status(state_file, mountpoints, args, sys.stdout)
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _show_status(
    state_file: StateFile, mountpoints: list[str], args: argparse.Namespace, out: TextIO
) -> int:
    docs, problems = _collect(state_file, mountpoints, args.top)
    if args.json:
        # One line per document with --watch (a stream of JSON lines), else one document.
        if args.watch:
            out.write(json.dumps({"version": 1, "mounts": docs}) + "\n")
        else:
            out.write(json.dumps({"version": 1, "mounts": docs}, indent=2) + "\n")
    elif not docs and not problems:
        out.write("no rxfs mounts\n")
    else:
        out.write("\n\n".join(format_status(doc) for doc in docs) + "\n")
    for problem in problems:
        print(f"rxfs: {problem}", file=sys.stderr)
    return EXIT_FAILURE if problems else 0


def cmd_trace(args: argparse.Namespace, state_file: StateFile) -> int:
    mountpoint = _rxfs_mountpoint(args.mountpoint)
    path = socket_for(state_file, mountpoint)

    def show(event: dict[str, Any]) -> None:
        if args.json:  # the first line says the trace is on: {"trace": "started"}
            print(json.dumps(event), flush=True)
        elif "trace" in event:
            print(f"tracing {mountpoint} (Ctrl-C to stop)", file=sys.stderr)
        else:
            print(format_event(event), flush=True)

    try:
        stream_trace(path, show)
    except StatusError as exc:
        print(f"rxfs: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # | head
        return 0
    return 0


def add_status_commands(sub: argparse._SubParsersAction[Any], state_file: StateFile) -> None:
    """Register ``status`` and ``trace`` on the ``rxfs`` command line."""

    def run(command: Callable[[argparse.Namespace, StateFile], int]) -> Callable[..., int]:
        def call(args: argparse.Namespace) -> int:
            try:
                return command(args, state_file)
            except _UsageError as exc:
                print(f"rxfs: {exc}", file=sys.stderr)
                return EXIT_USAGE

        return call

    status = sub.add_parser(
        "status",
        help="what the rxfs mounts are doing",
        description="Connections, bytes held, requests, latencies, errors and cache hits "
        "of each rxfs mount of this user (or of MOUNTPOINT), asked of its mount process. "
        "The --json schema is in docs/status.md.",
    )
    status.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?")
    status.add_argument("--json", action="store_true", help="the documented JSON schema")
    status.add_argument("--watch", action="store_true", help="redraw every --interval")
    status.add_argument("--interval", type=float, default=1.0, help="seconds (default 1)")
    status.add_argument(
        "--top", type=int, default=TOP_FILES, help=f"files listed (default {TOP_FILES})"
    )
    status.set_defaults(func=run(cmd_status))
    trace = sub.add_parser(
        "trace",
        help="stream MOUNTPOINT's requests live",
        description="Each request as it finishes: FUSE operation -> IRP major/minor -> "
        "LowIo operation -> backend routine -> NTSTATUS -> errno, with durations. "
        "Costs the mount nothing while nobody traces.",
    )
    trace.add_argument("mountpoint", metavar="MOUNTPOINT")
    trace.add_argument("--json", action="store_true", help="one JSON event per line")
    trace.set_defaults(func=run(cmd_trace))


# -- rxfs umount's progress ----------------------------------------------------------------


@dataclass
class UmountProgress:
    """Polls the mount process while ``rxfs umount`` waits for it and says what is left:
    redrawn in place on a terminal, a plain line every PLAIN_EVERY seconds otherwise."""

    socket: Path
    out: TextIO = field(default_factory=lambda: sys.stderr)
    POLL_EVERY = 0.5
    PLAIN_EVERY = 3.0
    _next_poll: float = 0.0
    _last_line: float = float("-inf")
    _last: tuple[float, int] | None = None
    _rate: float = 0.0
    _drawn: bool = False
    _gone: bool = False

    def poll(self) -> None:
        now = time.monotonic()
        if self._gone or now < self._next_poll:
            return
        self._next_poll = now + self.POLL_EVERY
        try:
            held = query_status(self.socket, timeout=1.0, top=0)["write_behind"]
        except StatusError:
            self._gone = True  # done flushing (the socket goes with the flush) or never up
            return
        left = held["dirty_bytes"] + held["in_flight_bytes"]
        if self._last is not None and now > self._last[0]:
            landed = max(self._last[1] - left, 0) / (now - self._last[0])
            self._rate = landed if not self._rate else 0.5 * self._rate + 0.5 * landed
        self._last = (now, left)
        if left or self._drawn:
            self._say(
                now, f"{_size(left)} in {held['files_held']} file(s) left, {_size(self._rate)}/s"
            )

    def _say(self, now: float, text: str) -> None:
        if self.out.isatty():
            self.out.write(f"\rrxfs: {text}\x1b[K")
            self.out.flush()
            self._drawn = True
        elif now - self._last_line >= self.PLAIN_EVERY:
            self.out.write(f"rxfs: {text}\n")
            self.out.flush()
            self._last_line = now

    def done(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
