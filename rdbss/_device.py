"""RxDevice: one mount's redirector — its mini-redirector, object tree and dispatch."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

import trio

from ._dispatch import DISPATCH_TABLE
from ._objects import NetRoot, SrvCall, VNetRoot, normalize_path
from ._rxcontext import RxContext, RxContextFlags
from ._writebehind import MIB, LazyWriter
from .irp import IoStatusBlock, Irp
from .ntstatus import NtStatus, NtStatusError, nt_success

if TYPE_CHECKING:
    from rxfs.minirdr import MiniRdrDispatch

__all__ = ["MountError", "RxDevice"]

log = logging.getLogger(__name__)


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
        *,
        dirty_limit: int = 64 * MIB,
    ) -> None:
        self.minirdr = minirdr
        self.url = urlsplit(url) if isinstance(url, str) else url
        self.options = dict(options or {})
        self.lazy_writer = LazyWriter(
            self, dirty_limit=dirty_limit, in_flight_limit=max(dirty_limit // 2, MIB)
        )
        self._nursery: trio.Nursery | None = None
        self._srv_call: SrvCall | None = None
        self._net_root: NetRoot | None = None
        self._v_net_root: VNetRoot | None = None

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
        try:
            srv_call.status = await minirdr.create_srv_call(srv_call)
        except NtStatusError as exc:
            srv_call.status, srv_call.status_message = exc.status, exc.message
        _check(srv_call.status, srv_call.status_message or f"cannot reach {srv_call.name}")
        net_root = NetRoot(srv_call, normalize_path(self.url.path or "/"))
        net_root.reference()
        self._net_root = net_root
        v_net_root = VNetRoot(net_root, self.options)
        v_net_root.reference()
        self._v_net_root = v_net_root
        try:
            status = await minirdr.create_v_net_root(v_net_root)
            message = f"cannot use {net_root.root!r} on {srv_call.name} as the share root"
        except NtStatusError as exc:
            status, message = exc.status, exc.message
        _check(status, message)

    async def stop(self) -> None:
        """Finalize the VNetRoot and SrvCall (the backend disconnects), then MRxStop."""
        minirdr = self.minirdr
        with trio.CancelScope(shield=True):
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
        routine = DISPATCH_TABLE.get(irp.major_function)
        if routine is None:
            irp.io_status.status = NtStatus.STATUS_INVALID_DEVICE_REQUEST
            return irp.io_status
        rx_context = RxContext(self, irp, fobx=irp.file_object, flags=flags)
        try:
            status = await routine(rx_context)
        except NtStatusError as exc:
            log.info("%r failed: %s", rx_context, exc.message)
            status = exc.status
        if status == NtStatus.STATUS_PENDING and flags & RxContextFlags.RX_CONTEXT_FLAG_WAIT:
            log.error("%r returned STATUS_PENDING to a waiting caller", rx_context)
            status = NtStatus.STATUS_UNSUCCESSFUL
        irp.io_status.status = status
        return irp.io_status


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
