"""A file unlinked while open lives on until its last handle closes.

POSIX keeps an unlinked file's data for the descriptors open on it. The server would
too, through the handles it has, but a handle does not survive a lost connection: the
reconnect reopens files by name (``_reconnect``), and a deleted name cannot be
reopened. So, as Windows marks the Fcb delete-pending and deletes at the last close,
and as the Linux NFS client renames to ``.nfsXXXX`` (a "silly rename"), an unlink of
a file with open handles renames it on the server to a hidden name in its directory,
marks the Fcb DELETE_ON_CLOSE, and the last close deletes the hidden name.

The hidden name is ``.rxfs-unlinked-`` and 16 hex digits. Listings through this mount
leave out the names it hid; a crash (or a server gone at the last
close) leaves it on the server, where it can be found by that name and removed.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
from typing import TYPE_CHECKING

from ._objects import Fcb, FcbState
from ._rxcontext import RxContext
from .irp import (
    FileDispositionInformation,
    FileRenameInformation,
    Irp,
    IrpMj,
    SetInformationBuffer,
    SetInformationParameters,
)
from .ntstatus import NtStatus, nt_success, status_of

if TYPE_CHECKING:
    from ._device import RxDevice

__all__ = ["HIDDEN_PREFIX", "delete_on_close", "hidden_by_us", "hide_open_file", "still_open"]

log = logging.getLogger(__name__)

HIDDEN_PREFIX = ".rxfs-unlinked-"
_DELETE_ON_CLOSE = FcbState.FCB_STATE_DELETE_ON_CLOSE


def still_open(fcb: Fcb) -> bool:
    return any(not srv_open.closed for srv_open in fcb.srv_opens)


async def hide_open_file(rx_context: RxContext) -> NtStatus:
    """The unlink of an open file: rename it to a hidden name, delete it at the last
    close. The name the user removed is gone at once, as POSIX wants."""
    fcb = rx_context.fcb
    assert fcb is not None
    device = rx_context.device
    old = fcb.path
    hidden = posixpath.join(posixpath.dirname(old), HIDDEN_PREFIX + secrets.token_hex(8))
    status = await _set(device, fcb, FileRenameInformation(hidden, replace_if_exists=False))
    if nt_success(status):
        device.net_root.hidden_names.add(hidden)
        device.net_root.directory_changed(posixpath.dirname(old))
        device.net_root.rename_fcbs(old, hidden)
        device.net_root.directories.name_gone(old)
        fcb.state |= _DELETE_ON_CLOSE
        log.debug("%s unlinked while open: kept as %s until its last close", old, hidden)
    return status


async def delete_on_close(device: RxDevice, fcb: Fcb) -> None:
    """The last handle of a DELETE_ON_CLOSE file has closed: remove its hidden name."""
    if not fcb.state & _DELETE_ON_CLOSE or still_open(fcb):
        return
    fcb.state &= ~_DELETE_ON_CLOSE
    status = await _set(device, fcb, FileDispositionInformation())
    if nt_success(status) or status == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND:
        device.net_root.name_gone(fcb.path)
    else:
        log.warning(
            "%s (a file unlinked while open) could not be removed at its last close: %s; "
            "remove it on the server",
            fcb.path,
            status,
        )


def hidden_by_us(device: RxDevice, path: str) -> bool:
    """A listing leaves out the names this mount hid, for as long as it is mounted: a
    listing answered just before the last close removed one may still carry it."""
    return path in device.net_root.hidden_names


async def _set(device: RxDevice, fcb: Fcb, buffer: SetInformationBuffer) -> NtStatus:
    irp = Irp(IrpMj.IRP_MJ_SET_INFORMATION, SetInformationParameters(buffer), file_name=fcb.path)
    rx_context = RxContext(device, irp, fcb=fcb)
    status, _ = await status_of(device.minirdr.set_file_info(rx_context))
    return status
