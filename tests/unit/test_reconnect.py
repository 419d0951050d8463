"""A lost connection is not lost data: held bytes wait, the SrvCall reconnects, open
descriptors are reopened without truncating and the writes are replayed (DESIGN §4)."""

from __future__ import annotations

import pytest
import trio
from rxfs.minirdr.memory import MemoryMiniRdr
from rxfs.rdbss import NtStatus, RxContext, SrvCall, SrvCallState
from rxfs.rdbss.irp import CreateDisposition, Irp, IrpMj

from tests.support.checklogs import LOST_BYTES, RECONNECTS

from ._harness import (
    OPEN_MODES,
    close,
    file_bytes,
    mounted,
    open_file,
    read_bytes,
    trio_test,
    write,
)

pytestmark = pytest.mark.expect_log(*RECONNECTS, *LOST_BYTES)


DOWN = NtStatus.STATUS_CONNECTION_DISCONNECTED


class FlakyMiniRdr(MemoryMiniRdr):
    """Memory behind a connection that can be cut: after a cut every request fails as a
    dropped transport does until the core reconnects (which works only once ``down`` is
    cleared), and handles from before the cut stay dead."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.alive = True
        self.epoch = 0
        self.connects = 0
        self.reopened: list[str] = []

    def cut(self) -> None:
        self.down = True
        self.alive = False
        self.epoch += 1

    async def create_srv_call(self, srv_call: SrvCall) -> NtStatus:
        if self.down:
            return NtStatus.STATUS_HOST_UNREACHABLE
        self.alive = True
        self.connects += 1
        return await super().create_srv_call(srv_call)

    def _dead(self, rx_context: RxContext) -> bool:
        srv_open = rx_context.srv_open
        stale = srv_open is not None and getattr(srv_open, "epoch", self.epoch) != self.epoch
        return not self.alive or stale

    async def create(self, rx_context: RxContext) -> NtStatus:
        if not self.alive:
            return DOWN
        assert rx_context.srv_open is not None
        if rx_context.srv_open.context is not None:
            assert rx_context.fcb is not None
            self.reopened.append(rx_context.fcb.path)
        rx_context.srv_open.epoch = self.epoch  # type: ignore[attr-defined]
        return await super().create(rx_context)

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        return DOWN if self._dead(rx_context) else await super().lowio_write(rx_context)

    async def lowio_read(self, rx_context: RxContext) -> NtStatus:
        return DOWN if self._dead(rx_context) else await super().lowio_read(rx_context)

    async def query_file_info(self, rx_context: RxContext) -> NtStatus:
        return DOWN if self._dead(rx_context) else await super().query_file_info(rx_context)


async def _restore_after(backend: FlakyMiniRdr, seconds: float) -> None:
    await trio.sleep(seconds)
    backend.down = False


@trio_test
async def test_held_writes_land_after_a_reconnect_and_the_descriptor_keeps_working() -> None:
    backend = FlakyMiniRdr()
    async with mounted(backend, options={}) as device, trio.open_nursery() as nursery:
        device.reconnector.first_delay = 0.01
        fobx = await open_file(device, "/f")
        assert (await write(device, fobx, 0, b"before ")).status == NtStatus.STATUS_SUCCESS
        backend.cut()
        assert (await write(device, fobx, 7, b"during")).status == NtStatus.STATUS_SUCCESS
        nursery.start_soon(_restore_after, backend, 0.3)
        flush = await device.dispatch(Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx))
        assert flush.status == NtStatus.STATUS_SUCCESS
        assert backend.reopened == ["/f"]
        assert (await write(device, fobx, 13, b" after")).status == NtStatus.STATUS_SUCCESS
        assert await read_bytes(device, fobx, 0, 100) == b"before during after"
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        assert await file_bytes(device, "/f") == b"before during after"
        assert device.reconnector.reconnects == 1


@trio_test
async def test_a_write_through_write_is_replayed_on_the_new_connection() -> None:
    backend = FlakyMiniRdr()
    async with mounted(backend) as device, trio.open_nursery() as nursery:
        device.reconnector.first_delay = 0.01
        fobx = await open_file(device, "/f", options=OPEN_MODES["write-through"])
        backend.cut()
        nursery.start_soon(_restore_after, backend, 0.2)
        answer = await write(device, fobx, 0, b"replayed")
        assert (answer.status, answer.information) == (NtStatus.STATUS_SUCCESS, 8)
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
        assert await file_bytes(device, "/f") == b"replayed"


@trio_test
async def test_a_server_that_stays_away_fails_the_flush_then_is_used_again() -> None:
    backend = FlakyMiniRdr()
    async with mounted(backend, options={}) as device:
        device.reconnector.reconnect_timeout = 0.5
        device.reconnector.first_delay = 0.05
        fobx = await open_file(device, "/f")
        backend.cut()
        await write(device, fobx, 0, b"lost")
        with trio.fail_after(5):  # an error, not a hang
            flush = await device.dispatch(Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx))
        assert flush.status == DOWN
        assert device.reconnector.state is SrvCallState.UNREACHABLE
        backend.down = False
        # The next request tries again at once and finds the server back.
        again = await open_file(device, "/g", CreateDisposition.FILE_CREATE)
        assert (await write(device, again, 0, b"fine")).status == NtStatus.STATUS_SUCCESS
        assert await close(device, again) == NtStatus.STATUS_SUCCESS
        assert await file_bytes(device, "/g") == b"fine"
        assert device.reconnector.state is SrvCallState.ACTIVE


@trio_test
async def test_requests_failing_together_share_one_reconnect() -> None:
    backend = FlakyMiniRdr()
    async with mounted(backend) as device, trio.open_nursery() as nursery:
        device.reconnector.first_delay = 0.01
        files = [
            await open_file(device, f"/f{i}", options=OPEN_MODES["write-through"])
            for i in range(8)
        ]
        backend.cut()
        nursery.start_soon(_restore_after, backend, 0.2)
        async with trio.open_nursery() as writers:
            for i, fobx in enumerate(files):
                writers.start_soon(write, device, fobx, 0, b"x" * i)
        assert device.reconnector.reconnects == 1
        assert backend.connects == 2
        for i, fobx in enumerate(files):
            assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
            assert await file_bytes(device, f"/f{i}") == b"x" * i
