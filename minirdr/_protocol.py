"""The mini-redirector dispatch table: what a backend plugin implements.

The entries follow Microsoft's MINIRDR_DISPATCH (MRxStart, MRxCreateSrvCall, MRxCreate,
MRxLowIOSubmit[LOWIO_OP_*], ...) under Python names. Every entry is a coroutine that gets
the RxContext of the request, or the object being created, and returns an NTSTATUS; an
entry a backend leaves out answers STATUS_NOT_IMPLEMENTED, and the user sees the errno the
core maps that to (ENOSYS).

Low-I/O entries may return STATUS_PENDING and complete later with
``rx_context.complete_lowio(status, information)`` (from any thread). Before completing
from a reply path, call ``rx_context.clear_cancel_routine()`` and drop the reply when it
returns False. Everything else completes by returning its status.

A backend may also raise :class:`rxfs.minirdr.NtStatusError` from deep inside its helpers;
the core turns it into the request's status and logs its message.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from rxfs.rdbss.ntstatus import NtStatus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from rxfs.rdbss import RxContext, RxDevice, SrvCall, VNetRoot

__all__ = ["Capability", "MiniRdrDispatch"]

_NOT_IMPLEMENTED = NtStatus.STATUS_NOT_IMPLEMENTED


class Capability(enum.Flag):
    """Features a backend declares; the front end and conformance kit read them."""

    NONE = 0
    SYMLINKS = enum.auto()
    HARDLINKS = enum.auto()
    POSIX_RENAME = enum.auto()  # rename over an existing target in one step
    REMOTE_FSYNC = enum.auto()  # flush reaches stable storage on the server
    APPEND = enum.auto()  # FILE_APPEND_DATA writes land at the end atomically
    CHMOD = enum.auto()
    CHOWN = enum.auto()
    TIMES = enum.auto()
    STATFS = enum.auto()
    # Files outlive the mount process and every mount of the URL sees the same files
    # (memory:// holds its tree in the process: it does not).
    PERSISTENT = enum.auto()


class MiniRdrDispatch:
    """Base class of every mini-redirector. Override the entries the backend supports.

    ``scheme`` is the URL scheme it serves (``memory``, ``sftp``); ``option_names`` the
    ``-o`` mount options it accepts, with a one-line help each.
    """

    scheme: ClassVar[str] = ""
    description: ClassVar[str] = ""
    capabilities: ClassVar[Capability] = Capability.NONE
    option_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def capabilities_for(cls, options: Mapping[str, str]) -> Capability:
        """What a mount with these ``-o`` options has: ``capabilities`` (what a mount
        without options has) unless an option of the backend's own turns a feature on
        or off, as smb://'s ``-o modes=acl`` adds CHMOD. The conformance kit asks this."""
        return cls.capabilities

    # -- lifetime --------------------------------------------------------------------

    async def start(self, device: RxDevice) -> NtStatus:
        """MRxStart: the mount is starting; ``device.nursery`` runs background tasks."""
        return NtStatus.STATUS_SUCCESS

    async def stop(self, device: RxDevice) -> NtStatus:
        """MRxStop: the mount is going away; everything is flushed already."""
        return NtStatus.STATUS_SUCCESS

    async def create_srv_call(self, srv_call: SrvCall) -> NtStatus:
        """MRxCreateSrvCall: connect to the server named by ``srv_call.url``."""
        return NtStatus.STATUS_SUCCESS

    async def finalize_srv_call(self, srv_call: SrvCall) -> NtStatus:
        return NtStatus.STATUS_SUCCESS

    async def create_v_net_root(self, v_net_root: VNetRoot) -> NtStatus:
        """MRxCreateVNetRoot: check that the remote root exists and is a directory."""
        return NtStatus.STATUS_SUCCESS

    async def finalize_v_net_root(self, v_net_root: VNetRoot) -> NtStatus:
        return NtStatus.STATUS_SUCCESS

    def transport_status(self) -> dict[str, object]:
        """What carries the connection now, for ``rxfs status`` (docs/status.md):
        ``{"transport": name, "connections": [{"state": "up" | "down", ...}, ...]}``
        with JSON values only. Called on the trio loop, so it must not block. The core
        adds the SrvCall's state, reconnects and last error itself; a backend without a
        connection (memory://) keeps this default."""
        return {}

    # -- files -----------------------------------------------------------------------

    async def create(self, rx_context: RxContext) -> NtStatus:
        """MRxCreate: open or create ``rx_context.fcb.path`` as the IRP's
        CreateParameters say; store the handle in ``rx_context.srv_open.context`` and
        the file's attributes in ``rx_context.irp.attributes``."""
        return _NOT_IMPLEMENTED

    async def cleanup_fobx(self, rx_context: RxContext) -> NtStatus:
        """MRxCleanupFobx: the last descriptor of this Fobx was closed."""
        return NtStatus.STATUS_SUCCESS

    async def close_srv_open(self, rx_context: RxContext) -> NtStatus:
        """MRxCloseSrvOpen: close the remote handle. An error here is reported to the
        user's close(): data the server did not take must not pass as written."""
        return NtStatus.STATUS_SUCCESS

    async def flush(self, rx_context: RxContext) -> NtStatus:
        """MRxFlush: make what the server holds of this file durable (fsync)."""
        return NtStatus.STATUS_SUCCESS

    async def query_file_info(self, rx_context: RxContext) -> NtStatus:
        """MRxQueryFileInfo: fill ``rx_context.irp.attributes`` for ``fcb.path``
        (through ``srv_open.context`` when there is an open handle)."""
        return _NOT_IMPLEMENTED

    async def set_file_info(self, rx_context: RxContext) -> NtStatus:
        """MRxSetFileInfo: the IRP's SetInformationParameters name the class: basic
        (times, mode, owner), end of file, rename, link, disposition (delete)."""
        return _NOT_IMPLEMENTED

    async def query_directory(self, rx_context: RxContext) -> NtStatus:
        """MRxQueryDirectory: fill ``rx_context.irp.entries`` (without . and ..)."""
        return _NOT_IMPLEMENTED

    async def query_volume_info(self, rx_context: RxContext) -> NtStatus:
        """MRxQueryVolumeInfo: fill ``rx_context.irp.volume``."""
        return _NOT_IMPLEMENTED

    # -- MRxLowIOSubmit[LOWIO_OP_*] ---------------------------------------------------

    async def lowio_read(self, rx_context: RxContext) -> NtStatus:
        return _NOT_IMPLEMENTED

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        return _NOT_IMPLEMENTED

    async def lowio_shared_lock(self, rx_context: RxContext) -> NtStatus:
        return _NOT_IMPLEMENTED

    async def lowio_exclusive_lock(self, rx_context: RxContext) -> NtStatus:
        return _NOT_IMPLEMENTED

    async def lowio_unlock(self, rx_context: RxContext) -> NtStatus:
        return _NOT_IMPLEMENTED

    async def lowio_unlock_multiple(self, rx_context: RxContext) -> NtStatus:
        return _NOT_IMPLEMENTED

    async def lowio_fsctl(self, rx_context: RxContext) -> NtStatus:
        """Reparse points: FSCTL_SET_REPARSE_POINT creates ``fcb.path`` as a symlink to
        ``low_io.fsctl.target``; FSCTL_GET_REPARSE_POINT stores the target of
        ``fcb.path`` in ``rx_context.irp.link_target``."""
        return _NOT_IMPLEMENTED

    async def lowio_ioctl(self, rx_context: RxContext) -> NtStatus:
        return _NOT_IMPLEMENTED

    async def lowio_notify_change_directory(self, rx_context: RxContext) -> NtStatus:
        return _NOT_IMPLEMENTED

    @property
    def lowio_submit(self) -> tuple[Callable[[RxContext], Awaitable[NtStatus]], ...]:
        """MRxLowIOSubmit, indexed by LowIoOp."""
        return (
            self.lowio_read,
            self.lowio_write,
            self.lowio_shared_lock,
            self.lowio_exclusive_lock,
            self.lowio_unlock,
            self.lowio_unlock_multiple,
            self.lowio_fsctl,
            self.lowio_ioctl,
            self.lowio_notify_change_directory,
        )
