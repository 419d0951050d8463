"""One routine per IRP major function (the RxCommon* routines).

Each takes the RxContext the device built and returns the final NTSTATUS; outputs go
into the IRP (see :class:`rxfs.rdbss.irp.Irp`).
"""

from __future__ import annotations

import functools
import logging
import posixpath
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ._deleteonclose import delete_on_close, hidden_by_us, hide_open_file, still_open
from ._lowio import rx_low_io_submit
from ._objects import Fcb, Fobx, SrvOpen, SrvOpenFlags, normalize_path
from ._readwrite import common_read, common_write
from ._reconnect import RETRYABLE, final
from ._rxcontext import LowIoOp, RxContext
from .irp import (
    AccessMask,
    CreateDisposition,
    CreateOptions,
    CreateParameters,
    DirEntry,
    FileAttributes,
    FileBasicInformation,
    FileDispositionInformation,
    FileEndOfFileInformation,
    FileLinkInformation,
    FileRenameInformation,
    FsControlCode,
    FsControlParameters,
    Irp,
    IrpMj,
    QueryDirectoryParameters,
    SetInformationParameters,
)
from .ntstatus import NAME_NOT_FOUND, NtStatus, nt_success, status_of

if TYPE_CHECKING:
    from ._device import RxDevice

__all__ = ["DISPATCH_TABLE", "IRP_MN_FLUSH_NO_SYNC", "IRP_MN_QUERY_FROM_SERVER"]

log = logging.getLogger(__name__)

Routine = Callable[[RxContext], Awaitable[NtStatus]]

# Flush minor function: close(2) flushes data to the server without asking the server to
# sync it (IRP_MN_FLUSH_NO_SYNC); fsync(2) sends minor 0, a full flush.
IRP_MN_FLUSH_NO_SYNC = 2

# Query-information minor function (ours: Windows has none). The front end revalidates
# a name the kernel holds (Linux does so on purpose before O_EXCL creates, mkdir, rename
# targets and after ESTALE): the answer must come from the server, not from the caches.
IRP_MN_QUERY_FROM_SERVER = 1


async def common_create(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_CREATE: open or create ``irp.file_name``; on success ``irp.file_object``
    is a new Fobx on a new SrvOpen of the file's Fcb."""
    irp = rx_context.irp
    params = irp.parameters
    if not isinstance(params, CreateParameters) or irp.file_name is None:
        return NtStatus.STATUS_INVALID_PARAMETER
    device = rx_context.device
    fcb = device.net_root.get_fcb(normalize_path(irp.file_name))
    flags = SrvOpenFlags(0)
    if params.desired_access & AccessMask.FILE_APPEND_DATA and not (
        params.desired_access & AccessMask.FILE_WRITE_DATA
    ):
        flags |= SrvOpenFlags.SRVOPEN_FLAG_APPEND
    if params.options & (
        CreateOptions.FILE_WRITE_THROUGH | CreateOptions.FILE_NO_INTERMEDIATE_BUFFERING
    ):
        flags |= SrvOpenFlags.SRVOPEN_FLAG_DONTUSE_WRITE_CACHING
    srv_open = SrvOpen(fcb, params.desired_access, flags)
    rx_context.fcb, rx_context.srv_open = fcb, srv_open
    asked, generation = time.monotonic(), device.reconnector.generation
    try:
        status = await device.minirdr.create(rx_context)
    except BaseException:
        # Whether the server made the name is unknown.
        device.net_root.directories.forget(posixpath.dirname(fcb.path))
        fcb.dereference()
        raise
    if not nt_success(status):
        if status in NAME_NOT_FOUND:
            device.net_root.name_gone(fcb.path)
        # Whatever else a failed create says, the directory is uncertain now.
        device.net_root.directories.forget(posixpath.dirname(fcb.path))
        fcb.dereference()
        return status
    _created(rx_context, params, asked, generation)
    if irp.attributes is not None:
        fcb.set_attributes(_with_held_size(fcb, irp.attributes))
    fobx = Fobx(srv_open, write_error_seq=fcb.write_error_seq)
    srv_open.fobxs.append(fobx)
    fcb.srv_opens.append(srv_open)
    rx_context.device.srv_opens.add(srv_open)
    irp.file_object = fobx
    return status


def _created(
    rx_context: RxContext, params: CreateParameters, asked: float, generation: int
) -> None:
    """The name exists now; a directory we made (FILE_CREATE) is known to be empty,
    from when the request was sent."""
    fcb = rx_context.fcb
    assert fcb is not None
    device = rx_context.device
    directories = device.net_root.directories
    directories.name_exists(fcb.path)
    if params.disposition not in (CreateDisposition.FILE_OPEN, CreateDisposition.FILE_OVERWRITE):
        device.net_root.directory_changed(posixpath.dirname(fcb.path))
    if (
        params.options & CreateOptions.FILE_DIRECTORY_FILE
        and params.disposition == CreateDisposition.FILE_CREATE
        and device.core.dir_timeout > 0
    ):
        directories.made_directory(fcb.path, asked, generation)


def _after_by_name(rx_context: RxContext, path: str, status: NtStatus) -> None:
    """What a request naming ``path`` (not through an open handle) learned: the name
    exists, it does not (its Fcb is orphaned, cached attributes and names dropped), or
    the directory is uncertain (any other failure)."""
    net_root = rx_context.device.net_root
    if nt_success(status):
        net_root.directories.name_exists(path)
    elif status in NAME_NOT_FOUND:
        net_root.name_gone(path)
    else:
        net_root.directories.forget(posixpath.dirname(path))


async def common_cleanup(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_CLEANUP: the last descriptor of the Fobx is gone."""
    if rx_context.fobx is None or rx_context.srv_open is None:
        return NtStatus.STATUS_INVALID_HANDLE
    return await rx_context.device.minirdr.cleanup_fobx(rx_context)


async def common_close(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_CLOSE: close the SrvOpen once its last Fobx goes, drop the Fcb reference."""
    fobx, srv_open, fcb = rx_context.fobx, rx_context.srv_open, rx_context.fcb
    if fobx is None or srv_open is None or fcb is None:
        return NtStatus.STATUS_INVALID_HANDLE
    if fobx in srv_open.fobxs:
        srv_open.fobxs.remove(fobx)
    fobx.srv_open = None
    if srv_open.fobxs or srv_open.closed:
        return NtStatus.STATUS_SUCCESS
    # The lazy writer sends through an open handle: what this file holds must land
    # before the last one that can write goes, and nothing may still be on its way
    # through this one when the server closes it.
    srv_open.closing = True
    await rx_context.device.lazy_writer.flush(fcb)
    await srv_open.wait_paging_idle()
    rx_context.device.srv_opens.discard(srv_open)
    srv_open.flags |= SrvOpenFlags.SRVOPEN_FLAG_CLOSED
    if srv_open in fcb.srv_opens:
        fcb.srv_opens.remove(srv_open)
    # Before the handle goes: nothing waits on the release (close(2) returned at the
    # flush), and an unmount right after it must not find the hidden name left over.
    await delete_on_close(rx_context.device, fcb)
    # Every byte written through the handle is acknowledged (or its error latched and
    # reported by flush), so nobody needs to wait for the server to close it: the
    # remote close goes on in the background, a round trip less per file. RDBSS
    # defers closes too (delayed close of SrvOpens).
    rx_context.device.nursery.start_soon(_close_remote, rx_context)
    return NtStatus.STATUS_SUCCESS


async def _close_remote(rx_context: RxContext) -> None:
    fcb = rx_context.fcb
    assert fcb is not None
    try:
        status = await rx_context.device.minirdr.close_srv_open(rx_context)
    except Exception:
        log.exception("closing the remote handle of %s failed", fcb.path)
    else:
        # A handle that died with its connection is closed all the same.
        if not nt_success(status) and status not in RETRYABLE:
            log.warning("closing the remote handle of %s: %s", fcb.path, status)
    finally:
        fcb.dereference()


async def common_flush(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_FLUSH_BUFFERS: land what the Fcb holds, report what did not land, then
    (fsync) ask the server to sync.

    Every close(2) arrives here with IRP_MN_FLUSH_NO_SYNC. A write error is returned
    once to each descriptor open when it happened (Fcb.take_write_error), by fsync or
    close, whichever comes first; a close also returns it however often it was
    reported before, if bytes written through the descriptor may be among those that
    did not land (Fobx.unlanded): close() returns 0 only when they are all on the
    server. What is returned is the request's answer, never replayed (``final``): the
    lazy writer has replayed the writes already, and a replay would find the error
    reported and answer 0.
    """
    fobx, fcb, srv_open = rx_context.fobx, rx_context.fcb, rx_context.srv_open
    if fobx is None or fcb is None or srv_open is None:
        return NtStatus.STATUS_FILE_CLOSED
    await rx_context.device.lazy_writer.flush(fcb)
    error = fcb.take_write_error(fobx)
    closing = rx_context.irp.minor_function == IRP_MN_FLUSH_NO_SYNC
    if error is None:
        # Nothing can be synced through a handle gone for good; a close of one that
        # wrote nothing claims nothing.
        error = fobx.unlanded if closing else srv_open.orphan_status
    if error is not None:
        return final(error)
    if closing:
        return NtStatus.STATUS_SUCCESS
    status = await rx_context.device.minirdr.flush(rx_context)
    if status == NtStatus.STATUS_NOT_IMPLEMENTED:
        # Every byte is at the server now; a backend without a remote sync has
        # nothing more it could do.
        return NtStatus.STATUS_SUCCESS
    return status


def _with_held_size(fcb: Fcb, attributes: FileAttributes) -> FileAttributes:
    """The server's attributes, with the size grown to cover bytes still held here."""
    held_end = fcb.write_behind.end()
    attributes.size = max(attributes.size, held_end)
    return attributes


def _by_name(routine: Routine) -> Routine:
    """Path-addressed requests: run ``routine`` with the Fcb of ``irp.file_name`` (or of
    the Fobx) attached to the RxContext and referenced for as long as it runs."""

    @functools.wraps(routine)
    async def with_fcb(rx_context: RxContext) -> NtStatus:
        if rx_context.fcb is not None:
            rx_context.fcb.reference()
        elif rx_context.irp.file_name is not None:
            path = normalize_path(rx_context.irp.file_name)
            rx_context.fcb = rx_context.device.net_root.get_fcb(path)
        else:
            return NtStatus.STATUS_INVALID_PARAMETER
        fcb = rx_context.fcb
        try:
            srv_open = rx_context.srv_open
            if srv_open is not None and srv_open.orphan_status is not None:
                # Through a handle that died with a connection and could not be had
                # again (fstat, ftruncate, fchmod): the server cannot be asked.
                return srv_open.orphan_status
            return await routine(rx_context)
        finally:
            fcb.dereference()

    return with_fcb


@_by_name
async def common_query_information(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_QUERY_INFORMATION (FileStatInformation) by Fobx or by name."""
    fcb = rx_context.fcb
    assert fcb is not None
    by_name = rx_context.srv_open is None
    path = fcb.path
    stats = rx_context.device.stats
    cached_first = rx_context.irp.minor_function != IRP_MN_QUERY_FROM_SERVER
    if cached_first:
        # The attribute cache (-o attr_timeout): answered here while the Fcb's
        # attributes are fresh; every change made through this mount keeps them true.
        cached = fcb.cached_attributes(rx_context.device.core.attr_timeout)
        if cached is not None:
            stats.attributes.hits += 1
            rx_context.irp.attributes = _with_held_size(fcb, cached)
            return NtStatus.STATUS_SUCCESS
        stats.attributes.misses += 1
        if by_name and _known_absent(rx_context, path):
            stats.negative_lookups.hits += 1
            return NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
    status = await rx_context.device.minirdr.query_file_info(rx_context)
    if cached_first and by_name and status in NAME_NOT_FOUND:
        stats.negative_lookups.misses += 1
    if nt_success(status) and rx_context.irp.attributes is not None:
        fcb.set_attributes(_with_held_size(fcb, rx_context.irp.attributes))
    if by_name:
        _after_by_name(rx_context, path, status)
    return status


def _known_absent(rx_context: RxContext, path: str) -> bool:
    """The directory cache (-o dir_timeout) knows ``path`` does not exist: a fresh,
    complete listing of its directory lacks the name. A listing that keeps saving
    requests is renewed in the background before it expires."""
    device = rx_context.device
    max_age = device.core.dir_timeout
    directories = device.net_root.directories
    listing = directories.lacks(path, max_age, device.reconnector.generation)
    if listing is None:
        return False
    directory = posixpath.dirname(path)
    if directories.worth_renewing(directory, listing, max_age):
        device.nursery.start_soon(_renew_listing, device, directory)
    return True


async def _renew_listing(device: RxDevice, directory: str) -> None:
    """List ``directory`` again; common_directory_control files the answer. Not
    replayed on a lost connection: the cache simply goes without."""
    irp = Irp(IrpMj.IRP_MJ_DIRECTORY_CONTROL, QueryDirectoryParameters(), file_name=directory)
    try:
        await status_of(common_directory_control(RxContext(device, irp)))
    except Exception:
        log.exception("listing %s again for the directory cache failed", directory)


@_by_name
async def common_set_information(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_SET_INFORMATION: basic info, end of file, rename, link, disposition.

    Disposition: POSIX unlink removes the name at once. A file with no open handle is
    deleted now; one still open is renamed to a hidden name and deleted at its last
    close (_deleteonclose: RDBSS's delete-pending Fcb, NFS's silly rename).
    """
    params = rx_context.irp.parameters
    fcb = rx_context.fcb
    if not isinstance(params, SetInformationParameters) or fcb is None:
        return NtStatus.STATUS_INVALID_PARAMETER
    # Whatever it sets, the file's entry in a cached listing is not true now.
    rx_context.device.net_root.directories.entries_changed(fcb.path)
    if (
        isinstance(params.buffer, FileDispositionInformation)
        and params.buffer.delete_file
        and still_open(fcb)
    ):
        return await hide_open_file(rx_context)
    owner = rx_context.low_io.resource_thread_id
    buffer = params.buffer
    size_change = isinstance(buffer, FileEndOfFileInformation)
    sets_times = isinstance(buffer, FileBasicInformation) and (
        buffer.atime_ns is not None or buffer.mtime_ns is not None
    )
    if size_change or sets_times:
        # Held bytes beyond the new end must not land after the truncate; held bytes
        # that landed after a change of times would stamp the file "now" on the server
        # (cp -p sets the times through the descriptor it wrote with, before close).
        await rx_context.device.lazy_writer.flush(fcb)
    if size_change:
        await fcb.resource.acquire_exclusive(owner)
    try:
        if isinstance(buffer, FileRenameInformation | FileLinkInformation):
            buffer.new_name = normalize_path(buffer.new_name)
        path = fcb.path
        status = await rx_context.device.minirdr.set_file_info(rx_context)
        if nt_success(status):
            _after_set_information(rx_context, buffer)
        else:
            _set_information_failed(rx_context, path, buffer, status)
    finally:
        if size_change:
            fcb.resource.release_for_owner(owner)
    return status


def _after_set_information(rx_context: RxContext, buffer: object) -> None:
    fcb = rx_context.fcb
    assert fcb is not None
    net_root = rx_context.device.net_root
    if isinstance(buffer, FileEndOfFileInformation):
        fcb.file_size = buffer.end_of_file
        # The server stamped a new mtime (and so ctime) on it: ask it next time.
        fcb.attributes_time = 0.0
    elif isinstance(buffer, FileRenameInformation):
        net_root.directory_changed(posixpath.dirname(fcb.path))
        net_root.directory_changed(posixpath.dirname(buffer.new_name))
        net_root.rename_fcbs(fcb.path, buffer.new_name)
    elif isinstance(buffer, FileLinkInformation):
        net_root.forget_attributes(buffer.new_name)
        net_root.directories.name_exists(buffer.new_name)
        net_root.directory_changed(posixpath.dirname(buffer.new_name))
        # A new link is a new ctime for the file.
        fcb.attributes_time = 0.0
    elif isinstance(buffer, FileDispositionInformation) and buffer.delete_file:
        net_root.directory_changed(posixpath.dirname(fcb.path))
        net_root.name_gone(fcb.path)
    elif isinstance(buffer, FileBasicInformation) and fcb.attributes is not None:
        _apply_basic(fcb.attributes, buffer)
    if rx_context.irp.attributes is not None:
        fcb.set_attributes(rx_context.irp.attributes)


def _set_information_failed(
    rx_context: RxContext, path: str, buffer: object, status: NtStatus
) -> None:
    """A rename or link that failed may have half happened (a non-atomic replace):
    both directories are uncertain. A change by name learned what the server has."""
    directories = rx_context.device.net_root.directories
    if isinstance(buffer, FileRenameInformation | FileLinkInformation):
        directories.forget(posixpath.dirname(path))
        directories.forget(posixpath.dirname(buffer.new_name))
    elif rx_context.srv_open is None:
        _after_by_name(rx_context, path, status)


def _apply_basic(attributes: FileAttributes, basic: FileBasicInformation) -> None:
    if basic.mode is not None:
        attributes.mode = (attributes.mode & ~0o7777) | (basic.mode & 0o7777)
    if basic.atime_ns is not None:
        attributes.atime_ns = basic.atime_ns
    if basic.mtime_ns is not None:
        attributes.mtime_ns = basic.mtime_ns
    if basic.uid is not None:
        attributes.uid = basic.uid
    if basic.gid is not None:
        attributes.gid = basic.gid


@_by_name
async def common_directory_control(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_DIRECTORY_CONTROL (query directory): the whole listing in ``irp.entries``,
    which also fills the directory cache (-o dir_timeout)."""
    fcb = rx_context.fcb
    assert fcb is not None
    device = rx_context.device
    directories = device.net_root.directories
    path = fcb.path
    generation = device.reconnector.generation
    cached = directories.entries(path, device.core.dir_timeout, generation)
    if cached is not None:
        # Listed again within dir_timeout (find, du, ls -R, a build): as the server
        # answered then, with our own changes since having dropped the entries.
        rx_context.irp.entries = cached
        _directory_sizes(rx_context)
        return NtStatus.STATUS_SUCCESS
    pending = directories.begin_listing(path, generation) if device.core.dir_timeout > 0 else None
    listed: list[DirEntry] | None = None
    try:
        status = await device.minirdr.query_directory(rx_context)
        if nt_success(status):
            listed = [
                entry
                for entry in rx_context.irp.entries or []
                if not hidden_by_us(device, posixpath.join(path, entry.name))
            ]
            rx_context.irp.entries = listed
            if pending is not None:
                # Stored before the held sizes are laid over the entries.
                directories.end_listing(path, pending, listed)
                pending = None
            _directory_sizes(rx_context)
    finally:
        if pending is not None:
            directories.end_listing(path, pending, None)
    if not nt_success(status):
        _after_by_name(rx_context, path, status)
    return status


def _directory_sizes(rx_context: RxContext) -> None:
    """Sizes in a listing cover bytes still held for files being written: the kernel
    would otherwise shrink its idea of a file that is growing."""
    fcb = rx_context.fcb
    assert fcb is not None
    table = rx_context.device.net_root.fcb_table
    base = fcb.path.rstrip("/")
    for entry in rx_context.irp.entries or []:
        held = table.get(f"{base}/{entry.name}")
        if held is not None and not held.write_behind.empty:
            _with_held_size(held, entry.attributes)


async def common_query_volume_information(rx_context: RxContext) -> NtStatus:
    return await rx_context.device.minirdr.query_volume_info(rx_context)


@_by_name
async def common_file_system_control(rx_context: RxContext) -> NtStatus:
    """IRP_MJ_FILE_SYSTEM_CONTROL: reparse points (symlinks), through LOWIO_OP_FSCTL."""
    params = rx_context.irp.parameters
    if not isinstance(params, FsControlParameters):
        return NtStatus.STATUS_INVALID_PARAMETER
    if params.fs_control_code not in FsControlCode.__members__.values():
        return NtStatus.STATUS_INVALID_DEVICE_REQUEST
    rx_context.low_io.operation = LowIoOp.LOWIO_OP_FSCTL
    rx_context.low_io.fsctl.fs_control_code = params.fs_control_code
    rx_context.low_io.fsctl.target = params.target
    fcb = rx_context.fcb
    assert fcb is not None
    path = fcb.path
    status = await rx_low_io_submit(rx_context)
    _after_by_name(rx_context, path, status)
    made = params.fs_control_code == FsControlCode.FSCTL_SET_REPARSE_POINT
    if made and nt_success(status):
        rx_context.device.net_root.directory_changed(posixpath.dirname(path))
        if rx_context.irp.attributes is not None:
            # The new link's attributes came with the answer: its lookup needs none.
            fcb.set_attributes(rx_context.irp.attributes)
    return status


DISPATCH_TABLE: dict[IrpMj, Routine] = {
    IrpMj.IRP_MJ_CREATE: common_create,
    IrpMj.IRP_MJ_CLEANUP: common_cleanup,
    IrpMj.IRP_MJ_CLOSE: common_close,
    IrpMj.IRP_MJ_READ: common_read,
    IrpMj.IRP_MJ_WRITE: common_write,
    IrpMj.IRP_MJ_FLUSH_BUFFERS: common_flush,
    IrpMj.IRP_MJ_QUERY_INFORMATION: common_query_information,
    IrpMj.IRP_MJ_SET_INFORMATION: common_set_information,
    IrpMj.IRP_MJ_DIRECTORY_CONTROL: common_directory_control,
    IrpMj.IRP_MJ_QUERY_VOLUME_INFORMATION: common_query_volume_information,
    IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL: common_file_system_control,
}
