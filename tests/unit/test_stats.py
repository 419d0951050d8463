"""The redirector's counters (rdbss/_stats.py): log2 latency buckets, percentiles that
are never low, failures by NTSTATUS, requests in flight, and the trace that records a
request's IRPs and LowIo operations only while someone listens."""

from __future__ import annotations

from rxfs.rdbss import LowIoOp, NtStatus, OpStats, RxStatistics, bucket_upper_ns
from rxfs.rdbss.irp import IrpMj

from ._harness import mounted, open_file, stat_path, trio_test, write


def test_latency_buckets_and_percentiles() -> None:
    stats = OpStats("IRP_MJ_WRITE")
    for _ in range(90):
        stats.in_flight += 1
        stats.done(NtStatus.STATUS_SUCCESS, 3_000)  # 3 us: bucket [2.048, 4.096) us
    for _ in range(10):
        stats.in_flight += 1
        stats.done(NtStatus.STATUS_DISK_FULL, 5_000_000)  # 5 ms
    assert stats.count == 100 and stats.in_flight == 0
    assert stats.statuses == {NtStatus.STATUS_DISK_FULL: 10}
    assert stats.percentile_us(0.5) == bucket_upper_ns(2) / 1000 == 4.096
    assert stats.percentile_us(0.9) == 4.096
    p99 = stats.percentile_us(0.99)
    assert p99 is not None and 5000 <= p99 < 2 * 5000, "the bucket's top, never low"
    assert OpStats("x").percentile_us(0.5) is None


def test_a_huge_duration_has_a_bucket() -> None:
    stats = OpStats("x")
    stats.in_flight += 1
    stats.done(NtStatus.STATUS_SUCCESS, (1 << 63) - 1)
    assert stats.count == 1


@trio_test
async def test_dispatch_counts_irps_and_failures_by_status() -> None:
    async with mounted() as device:
        stats: RxStatistics = device.stats
        query = stats.irp[IrpMj.IRP_MJ_QUERY_INFORMATION]
        before = query.count
        status, _ = await stat_path(device, "/nothing-here")
        assert status == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
        assert query.count == before + 1 and query.in_flight == 0
        assert query.statuses[NtStatus.STATUS_OBJECT_NAME_NOT_FOUND] == 1
        assert stats.errors() == {"STATUS_OBJECT_NAME_NOT_FOUND": 1}
        fobx = await open_file(device, "/f")
        await write(device, fobx, 0, b"abc")
        assert stats.irp[IrpMj.IRP_MJ_WRITE].count == 1
        assert not stats.irp[IrpMj.IRP_MJ_WRITE].statuses
        await device.lazy_writer.flush_all()
        assert stats.lowio[LowIoOp.LOWIO_OP_WRITE].count == 1  # the paging write


@trio_test
async def test_trace_records_only_while_subscribed() -> None:
    async with mounted() as device:
        tracer = device.stats.tracer
        events: list[dict[str, object]] = []
        await stat_path(device, "/before")
        tracer.subscribers.append(events.append)
        event, token = tracer.begin_request("getattr")
        await stat_path(device, "/during")
        tracer.end_request(event, token, 2)
        tracer.subscribers.remove(events.append)
        await stat_path(device, "/after")
        assert len(events) == 1
        (recorded,) = events
        assert recorded["op"] == "getattr" and recorded["errno"] == 2
        irps = recorded["irps"]
        assert isinstance(irps, list) and len(irps) == 1
        assert irps[0]["irp"] == "IRP_MJ_QUERY_INFORMATION"
        assert irps[0]["path"] == "/during"
        assert irps[0]["status"] == "STATUS_OBJECT_NAME_NOT_FOUND"
