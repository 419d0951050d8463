"""The common read and write routines (RxCommonRead, RxCommonWrite).

The write routine follows DESIGN §3: the checks and the Fcb resource come first, then one
decision point (:func:`_may_cache`) sends the bytes to the write-behind buffer or
straight to ``MRxLowIOSubmit[LOWIO_OP_WRITE]`` (O_SYNC, O_DIRECT and append opens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lowio import fill_write, release_fcb_resource, rx_low_io_submit
from ._reconnect import final
from ._rxcontext import LowIoOp, LowIoReadWriteFlags, RxContext
from .irp import ReadParameters, WriteParameters
from .ntstatus import NtStatus, nt_success

if TYPE_CHECKING:
    from ._objects import Fcb, Fobx

__all__ = ["IRP_MN_PAGING_IO", "MAX_FILE_SIZE", "common_read", "common_write"]

# The largest offset + length a write may reach (off_t's limit).
MAX_FILE_SIZE = (1 << 63) - 1

# Looking up an enum member on its class goes through EnumType.__getattr__ on Python
# 3.11 (~0.2 us each on this class of machine): the per-write path reads these instead.
_STATUS_SUCCESS = NtStatus.STATUS_SUCCESS
_STATUS_FILE_CLOSED = NtStatus.STATUS_FILE_CLOSED
_STATUS_INVALID_DEVICE_REQUEST = NtStatus.STATUS_INVALID_DEVICE_REQUEST
_STATUS_INVALID_PARAMETER = NtStatus.STATUS_INVALID_PARAMETER


def _check_open(rx_context: RxContext) -> NtStatus:
    fobx = rx_context.fobx
    srv_open = rx_context.srv_open
    if fobx is None or srv_open is None or srv_open.closed or rx_context.fcb is None:
        return _STATUS_FILE_CLOSED
    if rx_context.fcb.is_directory:
        return _STATUS_INVALID_DEVICE_REQUEST
    return _STATUS_SUCCESS


def _may_cache(rx_context: RxContext) -> bool:
    """Cached or not (DESIGN §3 step 3): the open must allow write caching (not
    O_SYNC/O_DIRECT, not append-only: the server places appends)."""
    srv_open = rx_context.srv_open
    return srv_open is not None and srv_open.may_cache_writes and srv_open.may_write


# Write minor function (ours: Windows marks such writes IRP_PAGING_IO): the kernel's page
# cache writing back what it gathered (FUSE writeback cache). Nothing more will be added
# to these bytes before they must land, so the lazy writer sends them at once instead
# of waiting for more or for the close: their round trip overlaps the requests that
# come before the close (the kernel's SETATTR of the mtime, the FLUSH itself).
IRP_MN_PAGING_IO = 1


async def common_write(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_WRITE: check, take the Fcb resource, then cache or submit low I/O.

    Every cached write runs this, one per 4 KiB for a ``dd``-style writer: the cached
    path allocates nothing and reaches no checkpoint unless it has to wait.
    """
    status = _check_open(rx_context)
    if status != _STATUS_SUCCESS:
        return status
    irp = rx_context.irp
    params = irp.parameters
    if not isinstance(params, WriteParameters):
        return _STATUS_INVALID_PARAMETER
    buffer = irp.buffer
    offset = params.byte_offset
    length = params.length
    if offset < 0 or length < 0 or length != len(buffer) or offset + length > MAX_FILE_SIZE:
        return _STATUS_INVALID_PARAMETER
    fcb = rx_context.fcb
    fobx = rx_context.fobx
    srv_open = rx_context.srv_open
    assert fcb is not None and fobx is not None and srv_open is not None
    # After a failed write-behind, further writes fail at once (as NFS does) instead
    # of filling the cache with bytes that cannot land; close still reports it.
    # A handle orphaned after a reconnect (its file deleted, renamed or made unwritable
    # meanwhile) answers why, and is never sent to.
    error = srv_open.orphan_status or fcb.peek_write_error(fobx)
    if error is not None:
        return _refused(fcb, fobx, error)
    if length == 0:
        irp.io_status.information = 0
        return _STATUS_SUCCESS
    # The file's size and mtime in its directory's cached listing are not true now.
    rx_context.device.net_root.directories.entries_changed(fcb.path)
    cached = _may_cache(rx_context)
    lazy_writer = rx_context.device.lazy_writer
    if not cached:
        # Bytes held for this file go first, so writes land in the order made.
        await lazy_writer.flush(fcb)

    low_io = rx_context.low_io
    # Every append extends the file, whatever offset the kernel thought it had.
    extending = srv_open.append or offset + length > fcb.file_size
    owner = low_io.resource_thread_id
    # Extending writes change the file size: take the resource exclusively so that
    # size updates are ordered; writes inside the file share it.
    resource = fcb.resource
    if extending:
        if not resource.try_acquire_exclusive(owner):
            await resource.acquire_exclusive(owner)
    elif not resource.try_acquire_shared(owner):
        await resource.acquire_shared(owner)
    low_io.holds_fcb_resource = True
    try:
        if cached:
            if not lazy_writer.can_i_write(length):
                await lazy_writer.wait_until_i_can_write(length)
            lazy_writer.copy_write(fcb, offset, buffer)
            if irp.minor_function == IRP_MN_PAGING_IO:
                lazy_writer.send_soon(fcb)
            fcb.file_size = max(fcb.file_size, offset + length)
            irp.io_status.information = length
            return _STATUS_SUCCESS
        flags = LowIoReadWriteFlags(0)
        if extending:
            flags |= LowIoReadWriteFlags.LOWIO_READWRITEFLAG_EXTENDING_FILESIZE
        fill_write(rx_context, offset, buffer, flags, key=params.key)
        return await rx_low_io_submit(rx_context)
    finally:
        if cached or rx_context.completed:
            release_fcb_resource(rx_context)


def _refused(fcb: Fcb, fobx: Fobx, status: NtStatus) -> NtStatus:
    """A write refused because bytes of the file cannot land (a latched error, a handle
    orphaned after a reconnect). Under the kernel's writeback cache the caller is the
    kernel writing back pages, through whichever writable descriptor it picked, not the
    user: so the refusal through an orphaned handle is latched like a failed
    write-behind (every writer's close() says so), and the descriptor's close() says
    so in any case. The answer is final: a latched STATUS_CONNECTION_DISCONNECTED must
    not start a reconnect and a replay of its own."""
    assert fobx.srv_open is not None
    if fobx.srv_open.orphan_status is not None:
        fcb.latch_write_error(status)
    fobx.unlanded = status
    return final(status)


async def common_read(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_READ: fill ``irp.buffer`` with up to Length bytes from ByteOffset.

    Bytes the Fcb still holds (dirty or in flight) are laid over what the server
    returned: a reader sees every write that returned, landed or not.
    """
    status = _check_open(rx_context)
    if not nt_success(status):
        return status
    assert rx_context.srv_open is not None
    if rx_context.srv_open.orphan_status is not None:
        # Its handle died with a connection and could not be had again.
        return rx_context.srv_open.orphan_status
    params = rx_context.irp.parameters
    if not isinstance(params, ReadParameters) or params.byte_offset < 0 or params.length < 0:
        return NtStatus.STATUS_INVALID_PARAMETER
    fcb = rx_context.fcb
    assert fcb is not None
    start = params.byte_offset
    # Copied before the server read: a range that lands meanwhile leaves the buffer
    # but the server may still answer with the bytes from before it.
    held = fcb.write_behind.snapshot(start, start + params.length)
    size = fcb.file_size
    low_io = rx_context.low_io
    await fcb.resource.acquire_shared(low_io.resource_thread_id)
    low_io.holds_fcb_resource = True
    try:
        low_io.operation = LowIoOp.LOWIO_OP_READ
        rw = low_io.read_write
        rw.byte_offset = start
        rw.byte_count = params.length
        rw.key = params.key
        status = await rx_low_io_submit(rx_context)
    finally:
        if rx_context.completed:
            release_fcb_resource(rx_context)
    if status == NtStatus.STATUS_END_OF_FILE:
        rw.buffer = b""
        rx_context.io_status.information = 0
        status = NtStatus.STATUS_SUCCESS
    if not nt_success(status):
        return status
    data = rw.buffer[: rx_context.io_status.information]
    end = min(start + params.length, size)
    if held or (len(data) < end - start and not fcb.write_behind.empty):
        # Short of the size this file has here: held bytes beyond the server's end,
        # with a hole before them that reads as zeros.
        data = _lay_over(data, start, end, held)
    rx_context.irp.buffer = data
    rx_context.io_status.information = len(data)
    return status


def _lay_over(
    data: bytes | bytearray | memoryview, start: int, end: int, held: list[tuple[int, bytes]]
) -> bytearray:
    """The server's bytes, zero-filled up to ``end`` and overlaid with held ranges."""
    result = bytearray(data)
    if len(result) < end - start:
        result.extend(bytes(end - start - len(result)))
    for offset, piece in held:
        result[offset - start : offset - start + len(piece)] = piece
    return result
