"""Drive an RxDevice without FUSE: mount a backend, send IRPs, read the answers back.

pytest-trio is not a dependency, so async tests are plain functions wrapped by
:func:`trio_test`, which runs them under ``trio.run`` with a deadline so that a hang
fails the test instead of stalling the suite.
"""

from __future__ import annotations

import faulthandler
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ParamSpec

import trio
import trio.testing
from rxfs.minirdr import MiniRdrDispatch
from rxfs.minirdr.memory import MemoryMiniRdr
from rxfs.rdbss import CoreOptions, Fobx, NtStatus, RxContext, RxContextFlags, RxDevice
from rxfs.rdbss.irp import (
    AccessMask,
    CreateDisposition,
    CreateOptions,
    CreateParameters,
    FileAttributes,
    IoStatusBlock,
    Irp,
    IrpMj,
    QueryInformationParameters,
    ReadParameters,
    SetInformationBuffer,
    SetInformationParameters,
    WriteParameters,
)

P = ParamSpec("P")

# Every unit test finishes in well under a second; this only turns a hang into a failure.
TEST_DEADLINE = 10

READ_WRITE = AccessMask.FILE_READ_DATA | AccessMask.FILE_WRITE_DATA

# An O_SYNC/O_DIRECT open: its writes bypass the write-behind cache and go straight to
# MRxLowIOSubmit[LOWIO_OP_WRITE], which is what tests of the low-I/O path need.
WRITE_THROUGH = CreateOptions.FILE_WRITE_THROUGH

# Both ways a write can go (DESIGN §3 step 3); a user sees the same answers from each.
OPEN_MODES = {"cached": CreateOptions(0), "write-through": WRITE_THROUGH}


def trio_test_within(
    deadline: float,
) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, None]]:
    """A decorator running an async test function under trio with ``deadline`` seconds."""

    def decorate(fn: Callable[P, Awaitable[None]]) -> Callable[P, None]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
            async def main() -> None:
                with trio.fail_after(deadline):
                    await fn(*args, **kwargs)

            # A hang inside a shielded teardown (RxDevice.stop) is out of trio's reach:
            # then dump every stack and end the run rather than stall it.
            faulthandler.dump_traceback_later(3 * deadline, exit=True)
            try:
                trio.run(main)
            finally:
                faulthandler.cancel_dump_traceback_later()

        return wrapper

    return decorate


trio_test = trio_test_within(TEST_DEADLINE)
"""Run an async test function under trio with :data:`TEST_DEADLINE`."""


@asynccontextmanager
async def mounted(
    minirdr: MiniRdrDispatch | None = None,
    url: str = "memory://",
    options: dict[str, str] | None = None,
    core: CoreOptions | None = None,
) -> AsyncIterator[RxDevice]:
    """A started RxDevice over ``minirdr`` (a fresh private memory tree by default)."""
    device = RxDevice(minirdr if minirdr is not None else MemoryMiniRdr(), url, options, core)
    async with trio.open_nursery() as nursery:
        await device.start(nursery)
        try:
            yield device
        finally:
            await device.stop()
            nursery.cancel_scope.cancel()


async def create(
    device: RxDevice,
    path: str,
    disposition: CreateDisposition = CreateDisposition.FILE_OPEN_IF,
    *,
    access: AccessMask = READ_WRITE,
    options: CreateOptions = CreateOptions(0),  # noqa: B008 - an immutable flag value
    mode: int = 0o644,
) -> Irp:
    """IRP_MJ_CREATE; the answer's ``file_object`` is the Fobx when it succeeded."""
    irp = Irp(
        IrpMj.IRP_MJ_CREATE,
        CreateParameters(access, disposition, options, mode),
        file_name=path,
    )
    await device.dispatch(irp)
    return irp


async def open_file(
    device: RxDevice,
    path: str,
    disposition: CreateDisposition = CreateDisposition.FILE_OPEN_IF,
    *,
    options: CreateOptions = CreateOptions(0),  # noqa: B008 - an immutable flag value
) -> Fobx:
    """Create or open ``path`` for reading and writing and insist that it worked."""
    irp = await create(device, path, disposition, options=options)
    assert irp.io_status.status == NtStatus.STATUS_SUCCESS, irp.io_status
    assert irp.file_object is not None
    return irp.file_object


async def mkdir(device: RxDevice, path: str) -> None:
    irp = await create(
        device,
        path,
        CreateDisposition.FILE_CREATE,
        access=AccessMask.FILE_READ_DATA,
        options=CreateOptions.FILE_DIRECTORY_FILE,
        mode=0o755,
    )
    assert irp.io_status.status == NtStatus.STATUS_SUCCESS, irp.io_status
    assert irp.file_object is not None
    await close(device, irp.file_object)


async def write(
    device: RxDevice,
    fobx: Fobx,
    offset: int,
    data: bytes,
    *,
    length: int | None = None,
    flags: RxContextFlags = RxContextFlags.RX_CONTEXT_FLAG_WAIT,
) -> IoStatusBlock:
    """IRP_MJ_WRITE of ``data`` at ``offset`` (``length`` may be made to disagree)."""
    params = WriteParameters(len(data) if length is None else length, offset, fobx.key)
    irp = Irp(IrpMj.IRP_MJ_WRITE, params, file_object=fobx, buffer=data)
    return await device.dispatch(irp, flags)


async def read(device: RxDevice, fobx: Fobx, offset: int, length: int) -> Irp:
    irp = Irp(IrpMj.IRP_MJ_READ, ReadParameters(length, offset, fobx.key), file_object=fobx)
    await device.dispatch(irp)
    return irp


async def read_bytes(device: RxDevice, fobx: Fobx, offset: int, length: int) -> bytes:
    """IRP_MJ_READ, insisting that it worked; the bytes the user would get."""
    irp = await read(device, fobx, offset, length)
    assert irp.io_status.status == NtStatus.STATUS_SUCCESS, irp.io_status
    assert irp.io_status.information == len(irp.buffer)
    return bytes(irp.buffer)


async def close(device: RxDevice, fobx: Fobx) -> NtStatus:
    """What release does: IRP_MJ_CLEANUP then IRP_MJ_CLOSE, then waits until the remote
    handle, which the core closes in the background, is closed too."""
    await device.dispatch(Irp(IrpMj.IRP_MJ_CLEANUP, file_object=fobx))
    status = (await device.dispatch(Irp(IrpMj.IRP_MJ_CLOSE, file_object=fobx))).status
    await trio.testing.wait_all_tasks_blocked()
    return status


async def stat_path(device: RxDevice, path: str) -> tuple[NtStatus, FileAttributes | None]:
    """IRP_MJ_QUERY_INFORMATION by name: the status and the attributes a lookup sees."""
    irp = Irp(IrpMj.IRP_MJ_QUERY_INFORMATION, QueryInformationParameters(), file_name=path)
    status = (await device.dispatch(irp)).status
    return status, irp.attributes


async def set_info(
    device: RxDevice,
    buffer: SetInformationBuffer,
    *,
    path: str | None = None,
    fobx: Fobx | None = None,
) -> NtStatus:
    """IRP_MJ_SET_INFORMATION by name or by Fobx."""
    irp = Irp(
        IrpMj.IRP_MJ_SET_INFORMATION,
        SetInformationParameters(buffer),
        file_object=fobx,
        file_name=path,
    )
    return (await device.dispatch(irp)).status


async def file_bytes(device: RxDevice, path: str) -> bytes:
    """The whole content of ``path`` as a fresh open reads it."""
    fobx = await open_file(device, path, CreateDisposition.FILE_OPEN)
    try:
        status, attrs = await stat_path(device, path)
        assert status == NtStatus.STATUS_SUCCESS and attrs is not None
        return await read_bytes(device, fobx, 0, attrs.size + 1)
    finally:
        await close(device, fobx)


class ParkingMiniRdr(MemoryMiniRdr):
    """The memory backend, except that low-I/O writes answer STATUS_PENDING and wait
    for the test: each parked RxContext arrives on :attr:`parked`, with a cancel routine
    registered that completes it with STATUS_CANCELLED. Open files with
    :data:`WRITE_THROUGH` so that writes reach it while the test waits.

    The test plays the server's reply with :meth:`reply` (from any task or thread), or
    cancels. :attr:`completions` counts every completion the backend issues, on either
    path, so a test can insist that exactly one happened.
    """

    def __init__(self) -> None:
        super().__init__()
        self._send, self.parked = trio.open_memory_channel[RxContext](16)
        self.completions = 0
        self.cancel_routine_runs = 0
        self.dropped_replies = 0

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        if rx_context.set_cancel_routine(self._cancelled) == NtStatus.STATUS_CANCELLED:
            self._complete(rx_context, NtStatus.STATUS_CANCELLED)
            return NtStatus.STATUS_PENDING
        self._send.send_nowait(rx_context)
        return NtStatus.STATUS_PENDING

    def _cancelled(self, rx_context: RxContext) -> None:
        self.cancel_routine_runs += 1
        self._complete(rx_context, NtStatus.STATUS_CANCELLED)

    def reply(self, rx_context: RxContext, status: NtStatus, information: int = 0) -> bool:
        """The server answered: land the bytes on success, then complete, unless a
        cancel took the context first. Returns whether this reply completed it."""
        if not rx_context.clear_cancel_routine():
            self.dropped_replies += 1
            return False
        if status == NtStatus.STATUS_SUCCESS:
            rw = rx_context.low_io.read_write
            handle = self._handle(rx_context)
            self._write(handle.node, rw.byte_offset, bytes(rw.buffer)[:information])
        self._complete(rx_context, status, information)
        return True

    def _complete(self, rx_context: RxContext, status: NtStatus, information: int = 0) -> None:
        self.completions += 1
        rx_context.complete_lowio(status, information)
