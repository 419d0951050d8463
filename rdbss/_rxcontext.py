"""RxContext and LowIoContext: one request in flight and its low-level I/O part.

Completion rules (DESIGN §3, steps 5 and 6):

* A backend that answers STATUS_PENDING completes the context later with
  :meth:`RxContext.complete_lowio`, from the trio loop or from any worker thread.
* Before it completes from its reply path it calls :meth:`RxContext.clear_cancel_routine`;
  when that returns False a cancel has already taken the context, and the cancel routine
  is the one path that completes it. So exactly one path completes each context.
* Registering a cancel routine on a context that was already cancelled returns
  STATUS_CANCELLED; the backend then completes it with STATUS_CANCELLED itself and the
  request never goes further.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from .irp import FsControlCode, IoStatusBlock, Irp, IrpMj
from .ntstatus import NtStatus

if TYPE_CHECKING:
    from ._device import RxDevice
    from ._objects import Fcb, Fobx, SrvOpen

__all__ = [
    "CancelRoutine",
    "LowIoContext",
    "LowIoOp",
    "LowIoReadWriteFlags",
    "ReadWriteParams",
    "RxContext",
    "RxContextFlags",
]

log = logging.getLogger(__name__)


class LowIoOp(enum.IntEnum):
    LOWIO_OP_READ = 0
    LOWIO_OP_WRITE = 1
    LOWIO_OP_SHAREDLOCK = 2
    LOWIO_OP_EXCLUSIVELOCK = 3
    LOWIO_OP_UNLOCK = 4
    LOWIO_OP_UNLOCK_MULTIPLE = 5
    LOWIO_OP_FSCTL = 6
    LOWIO_OP_IOCTL = 7
    LOWIO_OP_NOTIFY_CHANGE_DIRECTORY = 8


class LowIoReadWriteFlags(enum.IntFlag):
    LOWIO_READWRITEFLAG_PAGING_IO = 0x1
    LOWIO_READWRITEFLAG_EXTENDING_FILESIZE = 0x2
    LOWIO_READWRITEFLAG_EXTENDING_VDL = 0x4


class RxContextFlags(enum.IntFlag):
    RX_CONTEXT_FLAG_WAIT = 0x1
    RX_CONTEXT_FLAG_ASYNC_OPERATION = 0x2
    RX_CONTEXT_FLAG_CANCELLED = 0x4
    RX_CONTEXT_FLAG_WRITE_THROUGH = 0x8


@dataclass(slots=True)
class ReadWriteParams:
    """LowIoContext.ParamsFor.ReadWrite.

    For a write, ``buffer`` holds the bytes to send. For a read the backend stores the
    bytes it read in ``buffer`` and their count in IoStatus.Information.
    """

    byte_offset: int = 0
    byte_count: int = 0
    key: int = 0
    flags: LowIoReadWriteFlags = LowIoReadWriteFlags(0)  # noqa: RUF009 - immutable
    buffer: bytes | bytearray | memoryview = b""


@dataclass(slots=True)
class FsCtlParams:
    fs_control_code: FsControlCode = FsControlCode.FSCTL_GET_REPARSE_POINT
    target: str = ""


_owner_tokens = itertools.count(1)

# An enum member looked up on its class costs ~0.2 us on Python 3.11 (it goes through
# EnumType.__getattr__); this one is read for every request.
_LOWIO_OP_READ = LowIoOp.LOWIO_OP_READ


class LowIoContext:
    """One request's low-level I/O part: the operation and its parameters.

    Built for every request, a cached 4 KiB write included, which uses neither arm of
    ParamsFor: so this is a plain slotted class, and ``read_write`` and ``fsctl`` are
    made the first time they are asked for.
    """

    __slots__ = (
        "_fsctl",
        "_read_write",
        "holds_fcb_resource",
        "operation",
        "resource_thread_id",
        "started_ns",
    )

    # perf_counter_ns() at the submit (rx_low_io_submit); the completion counts from it.
    started_ns: int

    def __init__(self) -> None:
        self.operation = _LOWIO_OP_READ
        # The Fcb resource owner token: a per-request token, not an OS thread id, since
        # the completion that releases the resource arrives on another task or thread.
        self.resource_thread_id: int = next(_owner_tokens)
        self._read_write: ReadWriteParams | None = None
        self._fsctl: FsCtlParams | None = None
        # Set by the core while this context holds the Fcb resource; the low-I/O
        # completion releases it on the owner's behalf.
        self.holds_fcb_resource = False

    @property
    def read_write(self) -> ReadWriteParams:
        """ParamsFor.ReadWrite."""
        if self._read_write is None:
            self._read_write = ReadWriteParams()
        return self._read_write

    @property
    def fsctl(self) -> FsCtlParams:
        """ParamsFor.FsCtl (symbolic links)."""
        if self._fsctl is None:
            self._fsctl = FsCtlParams()
        return self._fsctl


_WAIT = int(RxContextFlags.RX_CONTEXT_FLAG_WAIT)
_CANCELLED = int(RxContextFlags.RX_CONTEXT_FLAG_CANCELLED)

# Guards every context's cancel routine, as RDBSS's global RxStrucSupSpinLock does in
# RxSetMinirdrCancelRoutine: the sections are a few assignments, and one lock for all
# spares a lock object per request.
_cancel_lock = threading.Lock()

CancelRoutine = Callable[["RxContext"], None]
CompletionRoutine = Callable[["RxContext"], None]


class RxContext:
    """One request in flight through the core.

    One is built for every request, a 4 KiB write included: slotted, and the completion
    event is made only when someone has to wait for it.
    """

    __slots__ = (
        "_cancel_routine",
        "_cancel_taken",
        "_completed",
        "_done",
        "_trio_token",
        "completion_routine",
        "device",
        "fcb",
        "flags",
        "fobx",
        "irp",
        "low_io",
        "major_function",
        "srv_open",
    )

    def __init__(
        self,
        device: RxDevice,
        irp: Irp,
        *,
        fcb: Fcb | None = None,
        fobx: Fobx | None = None,
        srv_open: SrvOpen | None = None,
        flags: RxContextFlags = RxContextFlags.RX_CONTEXT_FLAG_WAIT,
    ) -> None:
        self.device = device
        self.irp = irp
        self.major_function: IrpMj = irp.major_function
        self.fobx = fobx
        if srv_open is None and fobx is not None:
            srv_open = fobx.srv_open
        self.srv_open = srv_open
        if fcb is None and srv_open is not None:
            fcb = srv_open.fcb
        self.fcb = fcb
        self.flags = flags
        self.low_io = LowIoContext()
        self.completion_routine: CompletionRoutine | None = None
        self._trio_token = trio.lowlevel.current_trio_token()
        self._cancel_routine: CancelRoutine | None = None
        self._cancel_taken = False
        self._completed = False
        self._done: trio.Event | None = None

    @property
    def io_status(self) -> IoStatusBlock:
        return self.irp.io_status

    @property
    def waits(self) -> bool:
        """The dispatcher waits for completion (RX_CONTEXT_FLAG_WAIT)."""
        return int.__and__(self.flags, _WAIT) != 0

    @property
    def cancelled(self) -> bool:
        return int.__and__(self.flags, _CANCELLED) != 0

    @property
    def completed(self) -> bool:
        return self._completed

    # -- cancellation ---------------------------------------------------------------

    def set_cancel_routine(self, routine: CancelRoutine) -> NtStatus:
        """RxSetMinirdrCancelRoutine: STATUS_CANCELLED if the context is already
        cancelled (the caller must then complete it with STATUS_CANCELLED)."""
        with _cancel_lock:
            if self.cancelled:
                return NtStatus.STATUS_CANCELLED
            self._cancel_routine = routine
            return NtStatus.STATUS_SUCCESS

    def clear_cancel_routine(self) -> bool:
        """Called by the reply path before completing. False means a cancel took the
        context and the cancel routine completes it: the reply must be dropped."""
        with _cancel_lock:
            if self._cancel_taken:
                return False
            self._cancel_routine = None
            return True

    def cancel(self) -> None:
        """Mark the context cancelled and run the backend's cancel routine, if any."""
        with _cancel_lock:
            if self._completed or self.cancelled:
                return
            self.flags |= RxContextFlags.RX_CONTEXT_FLAG_CANCELLED
            routine, self._cancel_routine = self._cancel_routine, None
            self._cancel_taken = routine is not None
        if routine is not None:
            routine(self)

    # -- completion -----------------------------------------------------------------

    def complete_lowio(self, status: NtStatus, information: int = 0) -> None:
        """Complete a request the backend answered with STATUS_PENDING.

        Safe from any thread: off the trio loop, the completion is queued to the loop.
        """
        try:
            on_loop = trio.lowlevel.current_trio_token() is self._trio_token
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._complete(status, information)
        else:
            self._trio_token.run_sync_soon(self._complete, status, information)

    def _complete(self, status: NtStatus, information: int) -> None:
        if self._completed:
            log.error("%s completed twice (second status %s): dropped", self, status)
            return
        if status == NtStatus.STATUS_PENDING:
            status = NtStatus.STATUS_UNSUCCESSFUL
            log.error("%s completed with STATUS_PENDING: treated as a failure", self)
        self._completed = True
        io_status = self.irp.io_status
        io_status.status = status
        io_status.information = information
        if self.completion_routine is not None:
            self.completion_routine(self)
        if self._done is not None:
            self._done.set()

    async def wait(self) -> NtStatus:
        """Wait for completion. A trio cancel of the waiter cancels the request, and the
        waiter still waits for the one path that completes it (bounded)."""
        if self._completed:
            await trio.lowlevel.checkpoint()
            return self.io_status.status
        if self._done is None:
            self._done = trio.Event()
        done = self._done
        try:
            await done.wait()
        except trio.Cancelled:
            self.cancel()
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await done.wait()
            raise
        return self.io_status.status

    def __repr__(self) -> str:
        target = self.fcb.path if self.fcb is not None else self.irp.file_name
        return f"<RxContext {self.major_function.name} {target!r}>"
