"""The redirector's own statistics and its live trace (``rxfs status``, ``rxfs trace``).

Counted on the request path, so they cost next to nothing: per IRP major function and
per LowIo operation a count, the requests in flight, the failures by NTSTATUS and a
latency histogram with fixed log2 buckets (no per-request allocation; percentiles are
estimated from the buckets). Everything is updated on the trio loop only.

The trace costs one ``if tracer.subscribers:`` per request while nobody traces. When
someone does, each request is recorded as one event: the FUSE operation (filled in by
the front end, which also adds the errno), the IRPs it ran, the LowIo operations each
IRP submitted with the backend routine that served them, every NTSTATUS and every
duration. Paging writes the lazy writer sends on its own are events of their own.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._rxcontext import LowIoOp
from .irp import IrpMj
from .ntstatus import NtStatus

__all__ = [
    "LATENCY_BUCKETS",
    "CacheStats",
    "OpStats",
    "RxStatistics",
    "TraceEvent",
    "Tracer",
    "bucket_upper_ns",
    "status_name",
]

# Bucket i counts durations d (ns) with (d >> 10).bit_length() == i: bucket 0 is under
# 1.024 us, bucket i (i >= 1) is [1.024 us * 2**(i-1), 1.024 us * 2**i). 64 buckets hold
# any duration a 64-bit clock can give, so the hot path needs no bounds check.
LATENCY_BUCKETS = 64
_BUCKET_SHIFT = 10

TraceEvent = dict[str, Any]


def bucket_upper_ns(index: int) -> int:
    """The (exclusive) upper bound of latency bucket ``index``, in nanoseconds."""
    return 1 << (index + _BUCKET_SHIFT)


def status_name(status: int) -> str:
    try:
        return NtStatus(status).name
    except ValueError:
        return f"0x{status & 0xFFFFFFFF:08X}"


class OpStats:
    """One IRP major function's or LowIo operation's counters."""

    __slots__ = ("buckets", "count", "in_flight", "name", "statuses")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.in_flight = 0
        self.buckets = [0] * LATENCY_BUCKETS
        # NTSTATUS -> how many requests ended with it; STATUS_SUCCESS is not counted.
        self.statuses: dict[int, int] = {}

    def done(self, status: int, elapsed_ns: int) -> None:
        """One request finished (it was counted in flight when it started)."""
        self.in_flight -= 1
        self.count += 1
        self.buckets[(elapsed_ns >> _BUCKET_SHIFT).bit_length()] += 1
        if status:
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def percentile_us(self, fraction: float) -> float | None:
        """The latency below which ``fraction`` of the requests finished, estimated as
        the upper bound of the bucket it falls in (so never an underestimate). None
        before the first request."""
        total = sum(self.buckets)
        if not total:
            return None
        rank = fraction * total
        seen = 0
        for index, count in enumerate(self.buckets):
            seen += count
            if seen >= rank and count:
                return bucket_upper_ns(index) / 1000
        return bucket_upper_ns(LATENCY_BUCKETS - 1) / 1000


@dataclass(slots=True)
class CacheStats:
    """Requests a cache answered (hits) and those that went to the server (misses)."""

    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None


# Where the IRP being traced in this task collects its LowIo operations, and the event
# of the front-end request that collects the IRPs. Set only while someone traces.
_current_irps: contextvars.ContextVar[list[TraceEvent] | None] = contextvars.ContextVar(
    "rxfs_trace_irps", default=None
)
_current_lowio: contextvars.ContextVar[list[TraceEvent] | None] = contextvars.ContextVar(
    "rxfs_trace_lowio", default=None
)

Subscriber = Callable[[TraceEvent], None]


@dataclass(slots=True)
class Tracer:
    """The live trace: whoever subscribes gets every finished request's event."""

    subscribers: list[Subscriber] = field(default_factory=list)

    def publish(self, event: TraceEvent) -> None:
        for subscriber in list(self.subscribers):
            subscriber(event)

    # -- the front end's request -------------------------------------------------------

    def begin_request(self, operation: str) -> tuple[TraceEvent, contextvars.Token[Any]]:
        """A front-end request starts: its IRPs are collected into the event."""
        event: TraceEvent = {"op": operation, "irps": [], "started": time.time()}
        token = _current_irps.set(event["irps"])
        event["_t0"] = time.perf_counter_ns()
        return event, token

    def end_request(self, event: TraceEvent, token: contextvars.Token[Any], errno: int) -> None:
        _current_irps.reset(token)
        event["us"] = (time.perf_counter_ns() - event.pop("_t0")) / 1000
        event["errno"] = errno
        self.publish(event)

    # -- the core's IRPs and LowIo operations ------------------------------------------

    def begin_irp(
        self, major: IrpMj, minor: int, path: str | None
    ) -> tuple[TraceEvent, contextvars.Token[Any]]:
        event: TraceEvent = {"irp": major.name, "minor": minor, "path": path, "lowio": []}
        return event, _current_lowio.set(event["lowio"])

    def end_irp(
        self, event: TraceEvent, token: contextvars.Token[Any], status: int, elapsed_ns: int
    ) -> None:
        _current_lowio.reset(token)
        event["status"] = status_name(status)
        event["us"] = elapsed_ns / 1000
        irps = _current_irps.get()
        if irps is not None:
            irps.append(event)
        else:  # not from the front end (a background listing, a replayed open)
            self.publish({"op": None, "irps": [event], "started": time.time()})

    def lowio_event(
        self, op: LowIoOp, offset: int, count: int, backend: str, paging: bool
    ) -> tuple[TraceEvent, list[TraceEvent] | None]:
        """The event of a LowIo submit, and the IRP event it belongs to (None for the
        lazy writer's own paging writes: they are published alone)."""
        event: TraceEvent = {
            "op": op.name,
            "offset": offset,
            "count": count,
            "backend": backend,
            "paging": paging,
        }
        return event, _current_lowio.get()

    def end_lowio(
        self, event: TraceEvent, parent: list[TraceEvent] | None, status: int, elapsed_ns: int
    ) -> None:
        event["status"] = status_name(status)
        event["us"] = elapsed_ns / 1000
        if parent is not None:
            parent.append(event)
        else:
            self.publish(
                {"op": "lazy writer", "irps": [], "lowio": [event], "started": time.time()}
            )


class RxStatistics:
    """One mount's counters (``device.stats``)."""

    def __init__(self) -> None:
        self.started = time.time()
        # Indexed by the IrpMj / LowIoOp value: a list index is the cheapest lookup
        # (the values IrpMj lacks hold counters nobody reads).
        self.irp = [OpStats(f"0x{value:02X}") for value in range(max(IrpMj) + 1)]
        for major in IrpMj:
            self.irp[major] = OpStats(major.name)
        self.lowio = [OpStats(op.name) for op in LowIoOp]
        # -o attr_timeout: attributes answered from the Fcb, or asked of the server.
        self.attributes = CacheStats()
        # -o dir_timeout: a name answered "not found" from a cached listing, or asked.
        self.negative_lookups = CacheStats()
        self.tracer = Tracer()

    def irp_stats(self) -> list[OpStats]:
        return [self.irp[major] for major in IrpMj]

    def errors(self) -> dict[str, int]:
        """Every IRP's failures by NTSTATUS, since the mount."""
        total: dict[str, int] = {}
        for stats in self.irp_stats():
            for status, count in stats.statuses.items():
                name = status_name(status)
                total[name] = total.get(name, 0) + count
        return total
