"""``-o metrics=[HOST:]PORT``: the status counters for Prometheus (OpenMetrics text).

prometheus_client serves them from a thread of its own; every scrape asks the mount's
trio loop for one snapshot (the same counters ``rxfs status`` shows, read where they are
written), so the request path pays nothing for it. Off unless asked for; a bare port
listens on 127.0.0.1 only, another address only when the user names it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry
from rxfs.rdbss import OpStats, RxDevice, bucket_upper_ns

from ._status import MetricsAddress, status_document

__all__ = ["serve_metrics"]

log = logging.getLogger(__name__)

# Latency buckets exported: 1 us .. ~67 s; slower requests count in +Inf.
_EXPORTED_BUCKETS = 27


def _histogram(stats: OpStats) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets (upper bound in seconds) and an estimated sum of seconds."""
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    estimated_sum = 0.0
    for index, count in enumerate(stats.buckets):
        cumulative += count
        estimated_sum += count * bucket_upper_ns(index) / 2e9  # the bucket's middle
        if index < _EXPORTED_BUCKETS:
            buckets.append((repr(bucket_upper_ns(index) / 1e9), cumulative))
    buckets.append(("+Inf", cumulative))
    return buckets, estimated_sum


class _Snapshot:
    def __init__(self, device: RxDevice, mountpoint: str) -> None:
        self.document = status_document(device, mountpoint)
        stats = device.stats
        self.histograms = {
            "irp": [(op.name, _histogram(op)) for op in stats.irp_stats()],
            "lowio": [(op.name, _histogram(op)) for op in stats.lowio],
        }


class _RxfsCollector(Collector):
    def __init__(self, device: RxDevice, mountpoint: str, token: trio.lowlevel.TrioToken) -> None:
        self.device = device
        self.mountpoint = mountpoint
        self.token = token

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = trio.from_thread.run_sync(
                _Snapshot, self.device, self.mountpoint, trio_token=self.token
            )
        except trio.RunFinishedError:
            return  # the mount is going away
        yield from _metrics(snapshot)


def _metrics(snapshot: _Snapshot) -> Iterator[Metric]:
    doc: dict[str, Any] = snapshot.document
    for kind in ("irp", "lowio"):
        label = "major" if kind == "irp" else "op"
        requests = CounterMetricFamily(
            f"rxfs_{kind}_requests", f"{kind.upper()} requests finished", labels=[label]
        )
        in_flight = GaugeMetricFamily(
            f"rxfs_{kind}_in_flight", f"{kind.upper()} requests in flight", labels=[label]
        )
        errors = CounterMetricFamily(
            f"rxfs_{kind}_errors",
            f"{kind.upper()} requests that ended with an NTSTATUS other than success",
            labels=[label, "status"],
        )
        latency = HistogramMetricFamily(
            f"rxfs_{kind}_latency_seconds",
            f"{kind.upper()} request latency (log2 buckets; the sum is estimated)",
            labels=[label],
        )
        for name, op in doc[kind].items():
            requests.add_metric([name], op["count"])
            in_flight.add_metric([name], op["in_flight"])
            for status, count in op["errors"].items():
                errors.add_metric([name, status], count)
        for name, (buckets, total) in snapshot.histograms[kind]:
            latency.add_metric([name], buckets, total)
        yield from (requests, in_flight, errors, latency)
    write_behind = doc["write_behind"]
    for key, help_text in (
        ("dirty_bytes", "bytes written but not yet sent to the server"),
        ("in_flight_bytes", "bytes sent to the server and not yet acknowledged"),
        ("files_held", "files holding bytes not yet acknowledged"),
    ):
        yield GaugeMetricFamily(f"rxfs_write_behind_{key}", help_text, value=write_behind[key])
    transport = doc["transport"]
    yield CounterMetricFamily(
        "rxfs_reconnects", "reconnects since the mount", value=transport["reconnects"]
    )
    state = GaugeMetricFamily(
        "rxfs_connection_state", "1 for the state the connection is in", labels=["state"]
    )
    for name in ("active", "reconnecting", "unreachable"):
        state.add_metric([name], 1.0 if transport["state"] == name else 0.0)
    yield state
    hits = CounterMetricFamily("rxfs_cache_hits", "requests a cache answered", labels=["cache"])
    misses = CounterMetricFamily(
        "rxfs_cache_misses", "requests that asked the server", labels=["cache"]
    )
    for name, cache in doc["caches"].items():
        hits.add_metric([name], cache["hits"])
        misses.add_metric([name], cache["misses"])
    yield from (hits, misses)
    errors_total = CounterMetricFamily(
        "rxfs_errors", "requests by failing NTSTATUS, every IRP", labels=["status"]
    )
    for status, count in doc["errors"].items():
        errors_total.add_metric([status], count)
    yield errors_total


async def serve_metrics(
    address: MetricsAddress,
    device: RxDevice,
    mountpoint: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled. An address that cannot be bound fails the mount (OSError)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RxfsCollector(device, mountpoint, trio.lowlevel.current_trio_token()))
    server, thread = start_http_server(address.port, address.host, registry)
    log.info("metrics on http://%s:%d/metrics", address.host, address.port)
    task_status.started()
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            # shutdown() waits for serve_forever to notice (it polls every 0.5 s); a
            # scrape in progress asks this loop, so the wait is not made on the loop.
            await trio.to_thread.run_sync(server.shutdown)
            server.server_close()
            thread.join(5)
