"""RxLowIoSubmit and its completion: the one door to the backend's
``MRxLowIOSubmit[...]`` table.

Every low-level request goes through :func:`rx_low_io_submit`: the write routine's
non-cached writes, the read routine, symbolic-link FSCTLs and the lazy writer's paging
writes. Its completion (:func:`_low_io_completion`, RxLowIoCompletion) updates the file
size and releases the Fcb resource for the request's owner, whichever task or thread
completed it. This module names only the RxContext and NTSTATUS: the routines that use
it are above it, so it imports none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter_ns
from typing import TYPE_CHECKING

from ._rxcontext import CompletionRoutine, LowIoOp, LowIoReadWriteFlags, RxContext
from .ntstatus import NtStatus, nt_success

if TYPE_CHECKING:
    from ._stats import Tracer

__all__ = ["fill_write", "release_fcb_resource", "rx_low_io_submit"]

log = logging.getLogger(__name__)

# Looking up an enum member on its class goes through EnumType.__getattr__ on Python
# 3.11 (~0.2 us each on this class of machine): the per-write path reads this instead.
_STATUS_PENDING = NtStatus.STATUS_PENDING


async def rx_low_io_submit(rx_context: RxContext) -> NtStatus:
    """Hand the LowIoContext to the backend and see the request through to completion.

    A synchronous answer is completed here; STATUS_PENDING is waited for when the
    context says WAIT, and otherwise returned so the caller can go on (the completion
    routine still runs when the backend completes).
    """
    device = rx_context.device
    minirdr = device.minirdr
    low_io = rx_context.low_io
    op = low_io.operation
    routine = minirdr.lowio_submit[op]
    # Counted until its completion, whichever task or thread completes it.
    device.stats.lowio[op].in_flight += 1
    low_io.started_ns = perf_counter_ns()
    tracer = device.stats.tracer
    if tracer.subscribers:
        rx_context.completion_routine = _traced_completion(tracer, rx_context, routine)
    else:
        rx_context.completion_routine = _low_io_completion
    if log.isEnabledFor(logging.DEBUG):  # the write path is hot: no formatting else
        _log_submit(rx_context)
    try:
        status = await routine(rx_context)
    except BaseException:
        if not rx_context.completed:
            rx_context._complete(NtStatus.STATUS_UNSUCCESSFUL, 0)
        raise
    if status != _STATUS_PENDING:
        rx_context._complete(status, rx_context.io_status.information)
        return rx_context.io_status.status
    if rx_context.waits:
        return await rx_context.wait()
    return _STATUS_PENDING


def _log_submit(rx_context: RxContext) -> None:
    low_io = rx_context.low_io
    rw = low_io.read_write
    paging = rw.flags & LowIoReadWriteFlags.LOWIO_READWRITEFLAG_PAGING_IO
    log.debug(
        "MRxLowIOSubmit[%s] %s offset=%d count=%d%s",
        low_io.operation.name,
        rx_context.fcb.path if rx_context.fcb is not None else "?",
        rw.byte_offset,
        rw.byte_count,
        " PAGING_IO" if paging else "",
    )


def _traced_completion(
    tracer: Tracer, rx_context: RxContext, routine: Callable[..., object]
) -> CompletionRoutine:
    """The completion of a LowIo submit made while someone traces: it records the
    operation, the backend routine that served it, its status and its duration."""
    low_io = rx_context.low_io
    rw = low_io.read_write
    paging = bool(rw.flags & LowIoReadWriteFlags.LOWIO_READWRITEFLAG_PAGING_IO)
    backend = getattr(routine, "__qualname__", repr(routine))
    event, parent = tracer.lowio_event(
        low_io.operation, rw.byte_offset, rw.byte_count, backend, paging
    )

    def completion(rx_context: RxContext) -> None:
        _low_io_completion(rx_context)
        elapsed = perf_counter_ns() - rx_context.low_io.started_ns
        tracer.end_lowio(event, parent, rx_context.io_status.status, elapsed)

    return completion


def _low_io_completion(rx_context: RxContext) -> None:
    """RxLowIoCompletion: count it, update sizes, then release the Fcb resource for its
    owner (RxReleaseFcbResourceForThreadInMRx) whichever task or thread completed."""
    fcb = rx_context.fcb
    low_io = rx_context.low_io
    status = rx_context.io_status.status
    rx_context.device.stats.lowio[low_io.operation].done(
        status, perf_counter_ns() - low_io.started_ns
    )
    if fcb is None:
        return
    if low_io.operation == LowIoOp.LOWIO_OP_WRITE and nt_success(status):
        rw = low_io.read_write
        written = rx_context.io_status.information
        if rx_context.srv_open is not None and rx_context.srv_open.append:
            end = fcb.file_size + written
        else:
            end = rw.byte_offset + written
        fcb.file_size = max(fcb.file_size, end)
        if not rw.flags & LowIoReadWriteFlags.LOWIO_READWRITEFLAG_PAGING_IO:
            # Sent as written, not held here (O_APPEND, O_DIRECT, no write caching):
            # the server stamped a new mtime, which the cached attributes lack.
            fcb.attributes_time = 0.0
    release_fcb_resource(rx_context)


def release_fcb_resource(rx_context: RxContext) -> None:
    """Release the Fcb resource for the context's owner token if it still holds it
    (RxReleaseFcbResourceForThreadInMRx): from the completion or from the dispatcher,
    whichever comes first."""
    low_io = rx_context.low_io
    if low_io.holds_fcb_resource and rx_context.fcb is not None:
        low_io.holds_fcb_resource = False
        rx_context.fcb.resource.release_for_owner(low_io.resource_thread_id)


def fill_write(
    rx_context: RxContext,
    offset: int,
    buffer: bytes | bytearray | memoryview,
    flags: LowIoReadWriteFlags,
    key: int = 0,
) -> None:
    """The LowIoContext of a LOWIO_OP_WRITE of ``buffer`` at ``offset``."""
    low_io = rx_context.low_io
    low_io.operation = LowIoOp.LOWIO_OP_WRITE
    rw = low_io.read_write
    rw.byte_offset = offset
    rw.byte_count = len(buffer)
    rw.key = key
    rw.buffer = buffer
    rw.flags = flags
