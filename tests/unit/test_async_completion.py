"""STATUS_PENDING, completion from other tasks and threads, and cancellation (DESIGN §3
steps 5 and 6): exactly one path completes each RxContext."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from rxfs.rdbss import Fobx, NtStatus, RxContext, RxDevice
from rxfs.rdbss.irp import IoStatusBlock, Irp, IrpMj

from ._harness import (
    WRITE_THROUGH,
    ParkingMiniRdr,
    file_bytes,
    mounted,
    open_file,
    trio_test,
    write,
)


def no_double_completion(caplog: pytest.LogCaptureFixture) -> None:
    """The core logs a second completion of one context as an error and drops it."""
    assert not [r for r in caplog.records if "completed twice" in r.getMessage()]


async def start_write(
    nursery: trio.Nursery,
    device: RxDevice,
    fobx: Fobx,
    data: bytes,
    results: list[IoStatusBlock],
) -> None:
    async def dispatch() -> None:
        results.append(await write(device, fobx, 0, data))

    nursery.start_soon(dispatch)


async def complete_from_other_task(backend: ParkingMiniRdr, ctx: RxContext, n: int) -> None:
    async def server_reply() -> None:
        await trio.lowlevel.checkpoint()
        backend.reply(ctx, NtStatus.STATUS_SUCCESS, n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_reply)


async def complete_from_to_thread(backend: ParkingMiniRdr, ctx: RxContext, n: int) -> None:
    await trio.to_thread.run_sync(backend.reply, ctx, NtStatus.STATUS_SUCCESS, n)


async def complete_from_plain_thread(backend: ParkingMiniRdr, ctx: RxContext, n: int) -> None:
    """A thread trio knows nothing about, as a paramiko reader thread would be."""
    thread = threading.Thread(target=backend.reply, args=(ctx, NtStatus.STATUS_SUCCESS, n))
    thread.start()
    await trio.to_thread.run_sync(thread.join, 5)
    assert not thread.is_alive()


COMPLETERS: dict[str, Callable[[ParkingMiniRdr, RxContext, int], Awaitable[None]]] = {
    "other trio task": complete_from_other_task,
    "trio.to_thread worker": complete_from_to_thread,
    "plain threading.Thread": complete_from_plain_thread,
}


@pytest.mark.parametrize("completer", list(COMPLETERS), ids=list(COMPLETERS))
@trio_test
async def test_pending_write_wakes_waiter_only_at_completion(completer: str) -> None:
    backend = ParkingMiniRdr()
    async with mounted(backend) as device:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        results: list[IoStatusBlock] = []
        async with trio.open_nursery() as nursery:
            await start_write(nursery, device, fobx, b"hello world", results)
            ctx = await backend.parked.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert results == []  # still pending: nothing has answered yet
            assert not ctx.completed
            # The server took only the first 5 bytes: the waiter sees exactly that.
            await COMPLETERS[completer](backend, ctx, 5)
        assert [(r.status, r.information) for r in results] == [(NtStatus.STATUS_SUCCESS, 5)]
        assert backend.completions == 1
        assert fobx.fcb is not None and fobx.fcb.file_size == 5
        assert not fobx.fcb.resource.is_exclusive and fobx.fcb.resource.shared_count == 0
        assert await file_bytes(device, "/f") == b"hello"


@trio_test
async def test_pending_write_failure_status_reaches_the_waiter() -> None:
    backend = ParkingMiniRdr()
    async with mounted(backend) as device, trio.open_nursery() as nursery:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        results: list[IoStatusBlock] = []
        await start_write(nursery, device, fobx, b"data", results)
        ctx = await backend.parked.receive()
        await trio.to_thread.run_sync(backend.reply, ctx, NtStatus.STATUS_DISK_FULL)
        await trio.testing.wait_all_tasks_blocked()
        assert [(r.status, r.information) for r in results] == [(NtStatus.STATUS_DISK_FULL, 0)]
        assert fobx.fcb is not None and fobx.fcb.file_size == 0  # a failed write extends nothing


@trio_test
async def test_set_cancel_routine_on_cancelled_context_returns_cancelled() -> None:
    async with mounted() as device:
        ctx = RxContext(device, Irp(IrpMj.IRP_MJ_WRITE))
        runs: list[RxContext] = []
        ctx.cancel()
        assert ctx.cancelled
        assert ctx.set_cancel_routine(runs.append) == NtStatus.STATUS_CANCELLED
        ctx.cancel()  # a second cancel changes nothing
        assert runs == []


class CancelledBeforeRegistration(ParkingMiniRdr):
    """A deadline fires between the core's submit and the backend's registration."""

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        rx_context.cancel()
        return await super().lowio_write(rx_context)


@trio_test
async def test_cancel_before_registration_completes_once_with_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = CancelledBeforeRegistration()
    async with mounted(backend) as device:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        io_status = await write(device, fobx, 0, b"never sent")
        assert io_status.status == NtStatus.STATUS_CANCELLED
        assert backend.completions == 1
        assert backend.cancel_routine_runs == 0  # never registered, so never run
        assert backend.parked.statistics().current_buffer_used == 0  # never sent on
        assert fobx.fcb is not None and not fobx.fcb.resource.is_exclusive
        assert await file_bytes(device, "/f") == b""
    no_double_completion(caplog)


@trio_test
async def test_cancel_after_registration_runs_routine_and_drops_later_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ParkingMiniRdr()
    async with mounted(backend) as device, trio.open_nursery() as nursery:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        results: list[IoStatusBlock] = []
        await start_write(nursery, device, fobx, b"late reply", results)
        ctx = await backend.parked.receive()
        ctx.cancel()
        assert backend.cancel_routine_runs == 1
        # The server's reply arrives after the cancel: clear_cancel_routine() says no.
        assert ctx.clear_cancel_routine() is False
        assert await trio.to_thread.run_sync(backend.reply, ctx, NtStatus.STATUS_SUCCESS, 10) is (
            False
        )
        await trio.testing.wait_all_tasks_blocked()
        assert [r.status for r in results] == [NtStatus.STATUS_CANCELLED]
        assert (backend.completions, backend.dropped_replies) == (1, 1)
        assert fobx.fcb is not None and fobx.fcb.file_size == 0
        assert not fobx.fcb.resource.is_exclusive
    no_double_completion(caplog)


@trio_test
async def test_reply_first_then_cancel_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    backend = ParkingMiniRdr()
    async with mounted(backend) as device, trio.open_nursery() as nursery:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        results: list[IoStatusBlock] = []
        await start_write(nursery, device, fobx, b"in time", results)
        ctx = await backend.parked.receive()
        assert backend.reply(ctx, NtStatus.STATUS_SUCCESS, 7)
        ctx.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert [(r.status, r.information) for r in results] == [(NtStatus.STATUS_SUCCESS, 7)]
        assert (backend.completions, backend.cancel_routine_runs) == (1, 0)
        assert not ctx.cancelled
    no_double_completion(caplog)


@trio_test
async def test_threaded_reply_racing_cancel_completes_exactly_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many rounds of a worker thread's reply against a cancel on the loop."""
    backend = ParkingMiniRdr()
    async with mounted(backend) as device:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        for _ in range(50):
            async with trio.open_nursery() as nursery:
                results: list[IoStatusBlock] = []
                await start_write(nursery, device, fobx, b"x", results)
                ctx = await backend.parked.receive()
                before = backend.completions
                go = threading.Barrier(2)

                def reply(ctx: RxContext = ctx, go: threading.Barrier = go) -> None:
                    go.wait(timeout=5)
                    backend.reply(ctx, NtStatus.STATUS_SUCCESS, 1)

                thread = threading.Thread(target=reply)
                thread.start()
                go.wait(timeout=5)
                ctx.cancel()
                await trio.to_thread.run_sync(thread.join, 5)
            assert backend.completions - before == 1
            assert [r.status for r in results] in (
                [NtStatus.STATUS_SUCCESS],
                [NtStatus.STATUS_CANCELLED],
            )
        assert fobx.fcb is not None and not fobx.fcb.resource.is_exclusive
    no_double_completion(caplog)


@trio_test
async def test_trio_cancel_of_waiting_task_cancels_rx_context() -> None:
    backend = ParkingMiniRdr()
    async with mounted(backend) as device, trio.open_nursery() as nursery:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        outcome: list[str] = []

        async def impatient_writer(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                await write(device, fobx, 0, b"abandoned")
                outcome.append("returned")
            outcome.append("cancelled" if scope.cancelled_caught else "not cancelled")

        scope = await nursery.start(impatient_writer)
        ctx = await backend.parked.receive()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == ["cancelled"]
        assert ctx.cancelled and ctx.completed
        assert ctx.io_status.status == NtStatus.STATUS_CANCELLED
        assert (backend.cancel_routine_runs, backend.completions) == (1, 1)
        # The cancelled write gave the Fcb resource back: the next write goes through.
        assert fobx.fcb is not None and not fobx.fcb.resource.is_exclusive
        async with trio.open_nursery() as inner:
            results: list[IoStatusBlock] = []
            await start_write(inner, device, fobx, b"next", results)
            backend.reply(await backend.parked.receive(), NtStatus.STATUS_SUCCESS, 4)
        assert [(r.status, r.information) for r in results] == [(NtStatus.STATUS_SUCCESS, 4)]


@trio_test
async def test_memory_backend_honours_a_cancel_before_its_reply() -> None:
    """The reference backend's own reply path: cancelled before its reply task runs."""
    async with mounted() as device:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        with trio.CancelScope() as scope:
            scope.cancel()
            await write(device, fobx, 0, b"never lands")
        assert scope.cancelled_caught
        assert await file_bytes(device, "/f") == b""
        assert fobx.fcb is not None and not fobx.fcb.resource.is_exclusive


@trio_test
async def test_write_cancelled_while_taking_the_resource_leaves_the_fcb_free() -> None:
    """A non-extending write whose caller is already cancelled must not keep the Fcb
    resource shared, or every later extending write of the file would hang."""
    async with mounted() as device:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        await write(device, fobx, 0, b"0123456789")
        with trio.CancelScope() as scope:
            scope.cancel()
            await write(device, fobx, 2, b"xy")
        assert scope.cancelled_caught
        assert fobx.fcb is not None and fobx.fcb.resource.shared_count == 0
        io_status = await write(device, fobx, 10, b"more")
        assert (io_status.status, io_status.information) == (NtStatus.STATUS_SUCCESS, 4)
