"""RxDevice: one mount's redirector — its mini-redirector, object tree and dispatch."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

import trio

from ._dispatch import DISPATCH_TABLE, Routine
from ._objects import (
    Fcb,
    FcbState,
    NetRoot,
    SrvCall,
    SrvOpen,
    SrvOpenFlags,
    VNetRoot,
    normalize_path,
)
from ._options import option_what, parse_flag, parse_seconds, parse_size
from ._reconnect import Reconnector
from ._rxcontext import RxContext, RxContextFlags
from ._stats import RxStatistics, TraceEvent, Tracer
from ._writebehind import MIB, LazyWriter
from .irp import (
    AccessMask,
    CreateDisposition,
    CreateParameters,
    FsControlCode,
    FsControlParameters,
    IoStatusBlock,
    Irp,
    IrpMj,
    ReadParameters,
    WriteParameters,
)
from .ntstatus import NtStatus, NtStatusError, nt_success, status_of

if TYPE_CHECKING:
    from rxfs.minirdr import MiniRdrDispatch

__all__ = ["CORE_OPTIONS", "CoreOptions", "MountError", "RxDevice"]

log = logging.getLogger(__name__)

# Read on every request: module constants, since an enum member looked up on its class
# costs ~0.2 us on Python 3.11 (EnumType.__getattr__).
_STATUS_PENDING = NtStatus.STATUS_PENDING
_STATUS_CANCELLED = NtStatus.STATUS_CANCELLED
_WAIT = int(RxContextFlags.RX_CONTEXT_FLAG_WAIT)


CORE_OPTIONS = {
    "dirty_limit": "bytes written but not yet sent that a mount may hold before writers "
    "wait (default 16M; K, M, G suffixes)",
    "reconnect_timeout": "seconds to keep reconnecting to a lost server before I/O fails "
    "(default 120)",
    "attr_timeout": "seconds attributes may be answered from the cache, here and in the "
    "kernel (default 1)",
    "dir_timeout": "seconds a directory's listing may answer 'no such file' for names it "
    "lacks, so that creating a file needs no lookup on the server, and answer a listing "
    "again (find, ls -R); a file another client creates may stay unseen that long "
    "(default: attr_timeout; 0: off)",
    "ro": "read-only: every write, create, rename, unlink and attribute change fails with "
    "EROFS (the kernel refuses them first; the core refuses them too)",
}


@dataclass(slots=True)
class CoreOptions:
    """The core's own mount options (``-o dirty_limit=...``)."""

    # Under the kernel's writeback cache the page cache holds what is written; this is
    # only what keeps the links busy (64M cost 70 MiB more RSS and no speed).
    dirty_limit: int = 16 * MIB
    reconnect_timeout: float = 120.0
    attr_timeout: float = 1.0
    # Follows attr_timeout unless given: one knob turns all caching of what the server
    # holds down or off.
    dir_timeout: float = 1.0
    read_only: bool = False

    @classmethod
    def parse(cls, options: dict[str, str]) -> CoreOptions:
        """Raises OptionError with a one-line message for a bad value."""
        core = cls()
        if "dirty_limit" in options:
            text = options["dirty_limit"]
            core.dirty_limit = parse_size(text, option_what("dirty_limit", text), minimum=MIB)
        for name in ("reconnect_timeout", "attr_timeout", "dir_timeout"):
            if name in options:
                text = options[name]
                setattr(core, name, parse_seconds(text, option_what(name, text)))
        if "dir_timeout" not in options:
            core.dir_timeout = core.attr_timeout
        core.read_only = parse_flag(options.get("ro"), option_what("ro", options.get("ro")))
        return core


class MountError(Exception):
    """The mount could not start; ``str()`` is a one-line message for the user."""

    def __init__(self, status: NtStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class RxDevice:
    """The RDBSS device object of one mount (RxDeviceObject).

    ``start`` runs MRxStart, creates the SrvCall (the backend connects), the NetRoot and
    the VNetRoot; ``dispatch`` runs one IRP to completion; ``stop`` tears down in reverse.
    """

    def __init__(
        self,
        minirdr: MiniRdrDispatch,
        url: str | SplitResult,
        options: dict[str, str] | None = None,
        core: CoreOptions | None = None,
    ) -> None:
        self.minirdr = minirdr
        self.url = urlsplit(url) if isinstance(url, str) else url
        self.options = dict(options or {})
        self.core = core or CoreOptions()
        self.lazy_writer = LazyWriter(
            self,
            dirty_limit=self.core.dirty_limit,
            in_flight_limit=max(self.core.dirty_limit // 2, MIB),
        )
        self.reconnector = Reconnector(self, self.core.reconnect_timeout)
        self.stats = RxStatistics()
        self._dispatch_table = READ_ONLY_DISPATCH_TABLE if self.core.read_only else DISPATCH_TABLE
        # Every SrvOpen not yet closed: a reconnect reopens them all.
        self.srv_opens: set[SrvOpen] = set()
        self._nursery: trio.Nursery | None = None
        self._srv_call: SrvCall | None = None
        self._net_root: NetRoot | None = None
        self._v_net_root: VNetRoot | None = None
        # Set by the front end: have the kernel write back its dirty pages of the file
        # at a path (through this device) and drop its pages and attributes of it. The
        # core never imports the front end's FUSE binding; a device without one
        # (tests, the conformance kit) has no kernel cache to drop.
        self.invalidate_file: Callable[[str], Awaitable[None]] | None = None

    @property
    def nursery(self) -> trio.Nursery:
        """Where backends start background tasks; lives as long as the mount."""
        if self._nursery is None:
            raise RuntimeError("the device is not started")
        return self._nursery

    @property
    def srv_call(self) -> SrvCall:
        if self._srv_call is None:
            raise RuntimeError("the device is not started")
        return self._srv_call

    @property
    def net_root(self) -> NetRoot:
        if self._net_root is None:
            raise RuntimeError("the device is not started")
        return self._net_root

    def absent_for(self, path: str) -> float:
        """Seconds for which the directory cache (-o dir_timeout) vouches that ``path``
        does not exist: a front end may cache the "not found" that long (0.0: not at
        all). Our own creates keep the listing true; another client's new name stays
        unseen that long, as it does here."""
        return self.net_root.directories.absent_for(
            path, self.core.dir_timeout, self.reconnector.generation
        )

    @property
    def v_net_root(self) -> VNetRoot:
        if self._v_net_root is None:
            raise RuntimeError("the device is not started")
        return self._v_net_root

    async def start(self, nursery: trio.Nursery) -> None:
        """Connect and attach the share; raises MountError with a one-line reason."""
        self._nursery = nursery
        minirdr = self.minirdr
        _check(await minirdr.start(self), "the mini-redirector did not start")
        await nursery.start(self.lazy_writer.run)
        srv_call = SrvCall(self.url, minirdr)
        srv_call.reference()
        self._srv_call = srv_call
        status = await self.connect_srv_call()
        _check(status, srv_call.status_message or f"cannot reach {srv_call.name}")
        net_root = NetRoot(srv_call, normalize_path(self.url.path or "/"))
        net_root.reference()
        self._net_root = net_root
        v_net_root = VNetRoot(net_root, self.options)
        v_net_root.reference()
        self._v_net_root = v_net_root
        status, message = await status_of(minirdr.create_v_net_root(v_net_root))
        _check(
            status, message or f"cannot use {net_root.root!r} on {srv_call.name} as the share root"
        )

    async def connect_srv_call(self) -> NtStatus:
        """MRxCreateSrvCall, at mount and again on every reconnect; the status and its
        one-line reason are kept on the SrvCall."""
        srv_call = self.srv_call
        srv_call.status, srv_call.status_message = await status_of(
            self.minirdr.create_srv_call(srv_call)
        )
        return srv_call.status

    async def change_buffering_state(
        self, fcb: Fcb, *, read_caching: bool, write_caching: bool
    ) -> None:
        """RxChangeBufferingState: the backend's lease (or oplock) on ``fcb`` was broken
        down to what the arguments say this mount may still cache. The backend calls
        this before it acknowledges the break, and acknowledges once it returns: the
        server holds the other client's open until then, so that open must find every
        byte written here on the server.

        Losing write caching: the file's SrvOpens stop buffering writes, the bytes the
        core holds are sent, the kernel writes back its dirty pages (they come through
        this device) and drops its pages and attributes, and what those writes left is
        sent too. Losing read caching alone: the kernel's pages and attributes go."""
        if read_caching and write_caching:
            return
        if not write_caching:
            for srv_open in fcb.srv_opens:
                srv_open.flags |= SrvOpenFlags.SRVOPEN_FLAG_DONTUSE_WRITE_CACHING
            fcb.state &= ~FcbState.FCB_STATE_WRITECACHING_ENABLED
        if not read_caching:
            fcb.state &= ~FcbState.FCB_STATE_READCACHING_ENABLED
        fcb.attributes_time = 0.0  # the other client may change it from now on
        await self.lazy_writer.flush(fcb)
        if self.invalidate_file is not None:
            await self.invalidate_file(fcb.path)
            await self.lazy_writer.flush(fcb)

    async def stop(self, *, flush: bool = True) -> None:
        """Land what is held (unless told not to wait), finalize the VNetRoot and SrvCall
        (the backend disconnects), then MRxStop."""
        minirdr = self.minirdr
        with trio.CancelScope(shield=True):
            if flush:
                await self.lazy_writer.flush_all()
            if self._v_net_root is not None:
                await _quietly(minirdr.finalize_v_net_root(self._v_net_root))
            if self._srv_call is not None and nt_success(self._srv_call.status):
                await _quietly(minirdr.finalize_srv_call(self._srv_call))
            await _quietly(minirdr.stop(self))

    async def dispatch(
        self,
        irp: Irp,
        flags: RxContextFlags = RxContextFlags.RX_CONTEXT_FLAG_WAIT,
    ) -> IoStatusBlock:
        """Run one IRP through the common routine of its major function.

        Returns the IRP's IoStatus; never STATUS_PENDING for a WAIT request.
        """
        routine = self._dispatch_table.get(irp.major_function)
        if routine is None:
            irp.io_status.status = NtStatus.STATUS_INVALID_DEVICE_REQUEST
            return irp.io_status
        # Described before it runs: a close detaches the file object it names.
        debug = _describe(irp) if log.isEnabledFor(logging.DEBUG) else None
        # Counted (rxfs status) and traced (rxfs trace) as one request, replays and all.
        op_stats = self.stats.irp[irp.major_function]
        tracer = self.stats.tracer
        trace = _begin_trace(tracer, irp) if tracer.subscribers else None
        op_stats.in_flight += 1
        started = perf_counter_ns()
        status = _STATUS_CANCELLED  # unless it returns
        try:
            # A request the connection went away under is replayed on a new one.
            status = await self.reconnector.with_replay(partial(self._run, routine, irp, flags))
            if status == _STATUS_PENDING and int.__and__(flags, _WAIT):
                log.error(
                    "%s returned STATUS_PENDING to a waiting caller", irp.major_function.name
                )
                status = NtStatus.STATUS_UNSUCCESSFUL
        finally:
            elapsed = perf_counter_ns() - started
            op_stats.done(status, elapsed)
            if trace is not None:
                tracer.end_irp(*trace, status, elapsed)
        irp.io_status.status = status
        if debug is not None:  # the write path is hot: nothing is formatted otherwise
            log.debug("%s -> %s", debug, _status_name(status))
        return irp.io_status

    async def _run(self, routine: Routine, irp: Irp, flags: RxContextFlags) -> NtStatus:
        # Each attempt starts from a clean IoStatus (a replay follows a failed one).
        io_status = irp.io_status
        io_status.status = _STATUS_PENDING
        io_status.information = 0
        rx_context = RxContext(self, irp, fobx=irp.file_object, flags=flags)
        # status_of(), inlined: this runs for every request, a 4 KiB write included.
        try:
            return await routine(rx_context)
        except NtStatusError as exc:
            if exc.message:
                log.info("%r failed: %s", rx_context, exc.message)
            return exc.status


# What a create may ask for on a read-only mount: open an existing name to read it.
_READ_ACCESS = AccessMask.FILE_READ_DATA | AccessMask.FILE_READ_ATTRIBUTES


def _modifies(irp: Irp) -> bool:
    """Whether ``irp`` would change anything on the server (or a file's held bytes)."""
    params = irp.parameters
    if isinstance(params, CreateParameters):
        return params.disposition != CreateDisposition.FILE_OPEN or bool(
            params.desired_access & ~_READ_ACCESS
        )
    if isinstance(params, FsControlParameters):
        return params.fs_control_code != FsControlCode.FSCTL_GET_REPARSE_POINT
    return irp.major_function in (IrpMj.IRP_MJ_WRITE, IrpMj.IRP_MJ_SET_INFORMATION)


def _refusing_changes(routine: Routine) -> Routine:
    async def read_only(rx_context: RxContext) -> NtStatus:
        if _modifies(rx_context.irp):
            return NtStatus.STATUS_MEDIA_WRITE_PROTECTED
        return await routine(rx_context)

    return read_only


# -o ro: the kernel refuses changes on a read-only mount before they reach us; the core
# refuses them as well, so that nothing that calls the core directly (or a kernel that
# lets one through) can change the share.
READ_ONLY_DISPATCH_TABLE: dict[IrpMj, Routine] = {
    major: _refusing_changes(routine) for major, routine in DISPATCH_TABLE.items()
}


def _begin_trace(tracer: Tracer, irp: Irp) -> tuple[TraceEvent, contextvars.Token[Any]]:
    fcb = irp.file_object.fcb if irp.file_object is not None else None
    return tracer.begin_irp(
        irp.major_function, irp.minor_function, fcb.path if fcb is not None else irp.file_name
    )


def _describe(irp: Irp) -> str:
    """``IRP_MJ_WRITE /a/f offset=0 length=4096`` for --debug."""
    fcb = irp.file_object.fcb if irp.file_object is not None else None
    path = fcb.path if fcb is not None else irp.file_name
    text = f"{irp.major_function.name} {path}"
    params = irp.parameters
    if isinstance(params, ReadParameters | WriteParameters):
        text += f" offset={params.byte_offset} length={params.length}"
    return text


def _status_name(status: int) -> str:
    try:
        return NtStatus(status).name
    except ValueError:
        return f"0x{status:08X}"


def _check(status: NtStatus, message: str) -> None:
    if not nt_success(status):
        raise MountError(status, message)


async def _quietly(step: object) -> None:
    """Teardown goes on past a failing step; the failure is logged."""
    try:
        status = await step  # type: ignore[misc]
    except Exception:
        log.exception("mount teardown step failed")
        return
    if not nt_success(status):
        log.warning("mount teardown step answered %s", NtStatus(status))
