"""Bytes that cannot land are never reported as landed (DESIGN §4, README items 2-3).

A descriptor through which bytes may have been written that did not land never gets 0
from its close(), even after an fsync() reported the failure once (errseq keeps fsync
to once per descriptor). A handle that cannot be reopened after a reconnect (the file
was deleted, renamed or made unwritable meanwhile) is orphaned: requests through it
fail with why, at once, instead of going out on the dead handle and reconnecting again.
"""

from __future__ import annotations

import pytest
from rxfs.rdbss import IRP_MN_FLUSH_NO_SYNC, Fobx, NtStatus, RxContext, SrvCallState
from rxfs.rdbss.irp import AccessMask, CreateDisposition, Irp, IrpMj

from tests.support.checklogs import LOST_BYTES, RECONNECTS

from ._harness import (
    OPEN_MODES,
    close,
    create,
    file_bytes,
    mounted,
    open_file,
    trio_test,
    write,
)
from .test_reconnect import FlakyMiniRdr

pytestmark = pytest.mark.expect_log(*RECONNECTS, *LOST_BYTES)

DOWN = NtStatus.STATUS_CONNECTION_DISCONNECTED
OK = NtStatus.STATUS_SUCCESS


class ChangingMiniRdr(FlakyMiniRdr):
    """A FlakyMiniRdr whose server can change a file while the connection is down."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.denied: set[str] = set()

    def delete_on_server(self, path: str) -> None:
        parent, name = self._tree.parent(path)
        assert parent.children is not None
        del parent.children[name]

    async def create(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        params = rx_context.irp.parameters
        wants_write = getattr(params, "desired_access", 0) & AccessMask.FILE_WRITE_DATA
        if self.alive and wants_write and rx_context.fcb.path in self.denied:
            return NtStatus.STATUS_ACCESS_DENIED
        return await super().create(rx_context)

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        self.writes += 1
        return await super().lowio_write(rx_context)


async def fsync(device: object, fobx: Fobx) -> NtStatus:
    irp = Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=fobx)
    return (await device.dispatch(irp)).status  # type: ignore[attr-defined]


async def close_flush(device: object, fobx: Fobx) -> NtStatus:
    """What close(2) gets: the flush every close sends (release's errors are dropped)."""
    irp = Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, minor_function=IRP_MN_FLUSH_NO_SYNC, file_object=fobx)
    return (await device.dispatch(irp)).status  # type: ignore[attr-defined]


@trio_test
async def test_a_file_deleted_during_an_outage_fails_fsync_and_close_after_one_reconnect() -> None:
    backend = ChangingMiniRdr()
    async with mounted(backend) as device:
        device.reconnector.first_delay = 0.01
        fobx = await open_file(device, "/f")
        assert (await write(device, fobx, 0, b"landed ")).status == OK
        assert await fsync(device, fobx) == OK
        backend.cut()
        backend.delete_on_server("/f")
        backend.down = False  # the server is back; the file is not
        assert (await write(device, fobx, 7, b"held")).status == OK  # cached

        # One write meets the dead connection, one reconnect finds the file gone.
        assert await fsync(device, fobx) == NtStatus.STATUS_FILE_DELETED
        assert device.reconnector.reconnects == 1
        writes = backend.writes
        # The dead handle is never used again: no write reaches the backend, no
        # reconnect follows, and every answer says why.
        assert (await write(device, fobx, 11, b"more")).status == NtStatus.STATUS_FILE_DELETED
        assert await fsync(device, fobx) == NtStatus.STATUS_FILE_DELETED
        assert await close_flush(device, fobx) == NtStatus.STATUS_FILE_DELETED
        assert await close_flush(device, fobx) == NtStatus.STATUS_FILE_DELETED  # a dup
        assert await close(device, fobx) == OK
        assert backend.writes == writes
        assert device.reconnector.reconnects == 1
        assert backend.connects == 2
        # A file made under the name later is another file: none of the bytes go there.
        again = await open_file(device, "/f")
        assert await close_flush(device, again) == OK
        assert await close(device, again) == OK
        assert await file_bytes(device, "/f") == b""


@trio_test
async def test_a_file_made_unwritable_during_an_outage_fails_close_with_access_denied() -> None:
    backend = ChangingMiniRdr()
    async with mounted(backend) as device:
        device.reconnector.first_delay = 0.01
        writer = await open_file(device, "/f")
        reader = (await create(device, "/f", access=AccessMask.FILE_READ_DATA)).file_object
        assert reader is not None
        assert (await write(device, writer, 0, b"landed ")).status == OK
        assert await fsync(device, writer) == OK
        backend.cut()
        backend.denied.add("/f")
        backend.down = False
        assert (await write(device, writer, 7, b"held")).status == OK

        assert await close_flush(device, writer) == NtStatus.STATUS_ACCESS_DENIED
        assert await close(device, writer) == OK
        # The reader's handle came back; it wrote nothing and its close claims nothing.
        assert await close_flush(device, reader) == NtStatus.STATUS_ACCESS_DENIED  # errseq
        assert await close_flush(device, reader) == OK
        assert await close(device, reader) == OK
        assert device.reconnector.reconnects == 1
        backend.denied.clear()
        assert await file_bytes(device, "/f") == b"landed "


@trio_test
async def test_close_reports_disk_full_even_after_fsync_reported_it() -> None:
    async with mounted(options={"size": "4096"}) as device:
        writer = await open_file(device, "/f")
        reader = (await create(device, "/f", access=AccessMask.FILE_READ_DATA)).file_object
        assert reader is not None
        assert (await write(device, writer, 0, b"x" * 8192)).status == OK  # cached
        assert await fsync(device, writer) == NtStatus.STATUS_DISK_FULL
        # fsync reports each failure once per descriptor (errseq, DESIGN §11) ...
        assert await fsync(device, writer) == OK
        # ... but a close never claims the bytes are on the server: every time, since
        # dup'd descriptors close one after another.
        assert await close_flush(device, writer) == NtStatus.STATUS_DISK_FULL
        assert await close_flush(device, writer) == NtStatus.STATUS_DISK_FULL
        assert await close(device, writer) == OK
        # A descriptor that cannot write hears of it once and closes clean.
        assert await fsync(device, reader) == NtStatus.STATUS_DISK_FULL
        assert await close_flush(device, reader) == OK
        assert await close(device, reader) == OK
        # A descriptor opened after the failure starts clean.
        later = await open_file(device, "/f")
        assert (await write(device, later, 0, b"fits")).status == OK
        assert await close_flush(device, later) == OK
        assert await close(device, later) == OK


@trio_test
async def test_a_latched_disconnect_is_answered_not_replayed_into_success() -> None:
    """The server stayed away past reconnect_timeout: the error is
    STATUS_CONNECTION_DISCONNECTED, a status that otherwise asks for a reconnect and a
    replay. Answered by a request, it is that request's answer: a replay would find it
    reported already and answer 0."""
    backend = ChangingMiniRdr()
    async with mounted(backend) as device:
        device.reconnector.reconnect_timeout = 0.3
        device.reconnector.first_delay = 0.05
        fobx = await open_file(device, "/f")
        backend.cut()
        assert (await write(device, fobx, 0, b"lost")).status == OK
        assert await fsync(device, fobx) == DOWN
        assert device.reconnector.state is SrvCallState.UNREACHABLE
        backend.down = False
        connects = backend.connects
        assert await close_flush(device, fobx) == DOWN
        assert await close(device, fobx) == OK
        # Answering the latched error asked the server for nothing.
        assert backend.connects == connects
        # The mount itself works again.
        again = await open_file(device, "/g", CreateDisposition.FILE_CREATE)
        assert (await write(device, again, 0, b"fine")).status == OK
        assert await close_flush(device, again) == OK
        assert await close(device, again) == OK
        assert await file_bytes(device, "/g") == b"fine"


@trio_test
async def test_a_file_gone_with_nothing_held_closes_clean_until_written_to() -> None:
    """Orphaned with every byte landed: nothing was lost, so a close says 0; fsync and
    write say the file is gone, and once a write was refused every writable descriptor
    fails its close (the kernel's writeback may have sent any one's pages through it)."""
    backend = ChangingMiniRdr()
    async with mounted(backend) as device:
        device.reconnector.first_delay = 0.01
        idle, writer = await open_file(device, "/f"), await open_file(device, "/f")
        bystander = await open_file(device, "/f")
        assert (await write(device, idle, 0, b"landed")).status == OK
        assert await fsync(device, idle) == OK
        other = await open_file(device, "/g", options=OPEN_MODES["write-through"])
        backend.cut()
        backend.delete_on_server("/f")
        backend.down = False
        # Another file's write meets the dead connection; the reconnect finds /f gone.
        assert (await write(device, other, 0, b"g")).status == OK
        assert device.reconnector.reconnects == 1

        assert await fsync(device, idle) == NtStatus.STATUS_FILE_DELETED
        assert await close_flush(device, idle) == OK
        assert (await write(device, writer, 6, b"more")).status == NtStatus.STATUS_FILE_DELETED
        assert await close_flush(device, writer) == NtStatus.STATUS_FILE_DELETED
        assert await close_flush(device, bystander) == NtStatus.STATUS_FILE_DELETED
        for fobx in (idle, writer, bystander, other):
            assert await close(device, fobx) == OK
        assert device.reconnector.reconnects == 1
