"""The Fcb resource: shared/exclusive, owned by a token, releasable from any task."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from rxfs.rdbss import FcbResource, LowIoReadWriteFlags, NtStatus, RxContext
from rxfs.rdbss.irp import IoStatusBlock, Irp

from ._harness import WRITE_THROUGH, ParkingMiniRdr, mounted, open_file, read, trio_test, write


async def acquire_in_task(
    nursery: trio.Nursery, resource: FcbResource, owner: str, exclusive: bool, got: list[str]
) -> None:
    async def acquire() -> None:
        if exclusive:
            await resource.acquire_exclusive(owner)
        else:
            await resource.acquire_shared(owner)
        got.append(owner)

    nursery.start_soon(acquire)
    await trio.testing.wait_all_tasks_blocked()


@trio_test
async def test_release_for_owner_from_another_task_lets_exclusive_waiter_proceed() -> None:
    resource = FcbResource()
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        await acquire_in_task(nursery, resource, "write-1", True, got)
        await acquire_in_task(nursery, resource, "write-2", True, got)
        assert got == ["write-1"]  # the second writer waits

        async def completion() -> None:
            # Not the task that acquired: the completion releases for the owner.
            resource.release_for_owner("write-1")

        nursery.start_soon(completion)
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["write-1", "write-2"]
        assert resource.is_held_by("write-2") and not resource.is_held_by("write-1")


@trio_test
async def test_shared_owners_hold_together_and_exclusive_waits_for_all() -> None:
    resource = FcbResource()
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        await acquire_in_task(nursery, resource, "read-1", False, got)
        await acquire_in_task(nursery, resource, "read-2", False, got)
        assert got == ["read-1", "read-2"] and resource.shared_count == 2
        await acquire_in_task(nursery, resource, "extend", True, got)
        assert "extend" not in got
        resource.release_for_owner("read-1")
        await trio.testing.wait_all_tasks_blocked()
        assert "extend" not in got  # read-2 still holds it
        resource.release_for_owner("read-2")
        await trio.testing.wait_all_tasks_blocked()
        assert got[-1] == "extend" and resource.is_exclusive


@trio_test
async def test_waiting_exclusive_goes_before_new_shared_owners() -> None:
    resource = FcbResource()
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        await acquire_in_task(nursery, resource, "read-1", False, got)
        await acquire_in_task(nursery, resource, "extend", True, got)
        await acquire_in_task(nursery, resource, "read-2", False, got)
        assert got == ["read-1"]  # read-2 queues behind the extending write
        resource.release_for_owner("read-1")
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["read-1", "extend"]
        resource.release_for_owner("extend")
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["read-1", "extend", "read-2"]


@trio_test
async def test_exclusive_owner_may_reacquire_and_must_release_each_time() -> None:
    resource = FcbResource()
    await resource.acquire_exclusive("w")
    await resource.acquire_exclusive("w")
    await resource.acquire_shared("w")  # the exclusive owner may also read
    resource.release_for_owner("w")
    resource.release_for_owner("w")
    assert resource.is_exclusive
    resource.release_for_owner("w")
    assert not resource.is_exclusive and not resource.is_held_by("w")


@trio_test
async def test_release_for_non_owner_raises() -> None:
    resource = FcbResource()
    await resource.acquire_exclusive("owner")
    with pytest.raises(RuntimeError, match="does not hold it"):
        resource.release_for_owner("someone else")
    resource.release_for_owner("owner")
    with pytest.raises(RuntimeError, match="does not hold it"):
        resource.release_for_owner("owner")
    await resource.acquire_shared("reader")
    with pytest.raises(RuntimeError, match="does not hold it"):
        resource.release_for_owner("owner")


@trio_test
async def test_cancelled_shared_acquire_does_not_keep_the_resource() -> None:
    """A request cancelled while acquiring must not leave the resource held: nobody
    would ever release it and every later extending write would hang."""
    resource = FcbResource()
    with trio.CancelScope() as scope:
        scope.cancel()
        await resource.acquire_shared("cancelled reader")
    assert scope.cancelled_caught
    assert not resource.is_held_by("cancelled reader") and resource.shared_count == 0
    with trio.fail_after(1):
        await resource.acquire_exclusive("writer")


@trio_test
async def test_cancelled_exclusive_waiter_unblocks_shared_waiters() -> None:
    """A shared request queued behind an exclusive waiter proceeds when that waiter
    gives up, without waiting for the current holder to release."""
    resource = FcbResource()
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        await resource.acquire_shared("read-1")

        async def extend(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                await resource.acquire_exclusive("extend")
                got.append("extend")

        extend_scope = await nursery.start(extend)
        await trio.testing.wait_all_tasks_blocked()
        await acquire_in_task(nursery, resource, "read-2", False, got)
        assert got == []
        extend_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["read-2"]
        resource.release_for_owner("read-1")
        resource.release_for_owner("read-2")


@trio_test
async def test_extending_write_holds_resource_exclusively_until_async_completion() -> None:
    backend = ParkingMiniRdr()
    async with mounted(backend) as device:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        fcb = fobx.fcb
        assert fcb is not None
        results: list[IoStatusBlock] = []
        reads: list[Irp] = []
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                results.append(await write(device, fobx, 0, b"0123456789"))

            async def reader() -> None:
                reads.append(await read(device, fobx, 0, 10))

            nursery.start_soon(writer)
            ctx: RxContext = await backend.parked.receive()
            rw = ctx.low_io.read_write
            assert rw.flags & LowIoReadWriteFlags.LOWIO_READWRITEFLAG_EXTENDING_FILESIZE
            owner = ctx.low_io.resource_thread_id
            assert fcb.resource.is_exclusive and fcb.resource.is_held_by(owner)

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert reads == []  # the read waits for the extending write
            assert fcb.resource.is_held_by(owner)

            await trio.to_thread.run_sync(backend.reply, ctx, NtStatus.STATUS_SUCCESS, 10)
        assert [(r.status, r.information) for r in results] == [(NtStatus.STATUS_SUCCESS, 10)]
        assert [bytes(r.buffer) for r in reads] == [b"0123456789"]
        assert not fcb.resource.is_exclusive and fcb.resource.shared_count == 0


@trio_test
async def test_write_inside_the_file_shares_the_resource() -> None:
    backend = ParkingMiniRdr()
    async with mounted(backend) as device:
        fobx = await open_file(device, "/f", options=WRITE_THROUGH)
        fcb = fobx.fcb
        assert fcb is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, device, fobx, 0, b"0123456789")
            backend.reply(await backend.parked.receive(), NtStatus.STATUS_SUCCESS, 10)

        results: list[IoStatusBlock] = []
        async with trio.open_nursery() as nursery:

            async def overwrite(offset: int, data: bytes) -> None:
                results.append(await write(device, fobx, offset, data))

            nursery.start_soon(overwrite, 0, b"ab")
            nursery.start_soon(overwrite, 5, b"cd")
            first = await backend.parked.receive()
            second = await backend.parked.receive()
            # Both in flight at once: neither extends, so both share the resource.
            assert not fcb.resource.is_exclusive and fcb.resource.shared_count == 2
            for ctx in (first, second):
                flags = ctx.low_io.read_write.flags
                assert not flags & LowIoReadWriteFlags.LOWIO_READWRITEFLAG_EXTENDING_FILESIZE
                backend.reply(ctx, NtStatus.STATUS_SUCCESS, 2)
        assert [r.information for r in results] == [2, 2]
        assert fcb.resource.shared_count == 0
