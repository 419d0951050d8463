"""``smb://``: the mini-redirector for SMB 2/3 servers (Samba, Windows), on smbprotocol.

``smb://[user@]host[:port]/share[/path]`` mounts ``path`` of ``share``; the core's paths
('/a/b', relative to that root) become share-relative SMB names ('path\\a\\b').

smbprotocol blocks, so every request runs in a worker thread of this backend's own
CapacityLimiter (never trio's default, which the rest of the process shares). Reads and
writes answer STATUS_PENDING at once and complete from a task in the mount's nursery
when the server has replied, honouring the cancel protocol of docs/plugins.md §4.

Errors: the server's NTSTATUS is the answer (the mapping is the identity, in
``_client.nt_status_of``); the front end turns it into an errno with its one table.

Plain SMB2 has no POSIX mode, owner or symlinks. By default (``-o modes=fixed``) a file
shows 0644 and a directory 0755 (read-only files without their write bits), as
mount.cifs shows them by default, and chmod changes only the read-only attribute (the
owner's write bit). With ``-o modes=acl`` (mount.cifs's cifsacl) modes live in the
file's NT ACL, which Samba maps to and from the POSIX mode (``_acl``): a create's mode
and chmod set the DACL, and every stat reads it in the same compound; but a listing
carries no ACLs, so each listed entry costs a compound of its own (a cold ``ls -lR``
is five to seven times slower, README): hence not the default. Files show as the
mounting user's; chown to anyone else is EOPNOTSUPP (no uid <-> SID mapping here).
Symlinks are Minshall-French symlink files (``-o mfsymlinks``, on by default).

Where Windows semantics differ from POSIX, the entries bridge what they can: a rename
over a file held open moves it aside first (``_replace_open_file``), an unlink of a
read-only file clears the attribute first (``_delete``), and requests that a handle
the core closes in the background would undo or refuse (times set by name, renames)
wait for those closes (``_closes_done``).

Leases (``-o leases``, on by default where smbprotocol lets us take breaks; see
``_client``): every open of a file asks for a read-write-handle lease on the file's one
lease key (``Fcb.context``), and an open whose lease lacks write caching does not buffer
writes (SRVOPEN_FLAG_DONTUSE_WRITE_CACHING). A break goes to the core's
``RxDevice.change_buffering_state`` (which sends what this mount holds of the file and
has the kernel write back and drop its pages), and is acknowledged after it: the other
client's open returns when this mount's bytes are on the server.

Reconnects: the core reconnects (``create_srv_call``, under the mount's one client GUID)
and reopens every open handle through ``create``; a durable one is reclaimed there
(``_reclaimed``), with its lease, and only a handle the server no longer has, or never
made durable, is opened anew by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import stat
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import trio
from rxfs.minirdr import (
    AccessMask,
    Capability,
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
    MiniRdrDispatch,
    NtStatus,
    NtStatusError,
    RxContext,
    SetInformationParameters,
    SrvOpen,
    SrvOpenFlags,
    VolumeInfo,
)

from ._client import (
    LEASE_READ,
    LEASE_WRITE,
    STATUS_CANNOT_DELETE,
    CreateResult,
    Durable,
    LeaseBreak,
    ServerStatusError,
    SmbTree,
)
from ._settings import DEFAULT_MODES, SMB_OPTIONS, SmbSettings
from ._wire import (
    ATTRIBUTE_NORMAL,
    ATTRIBUTE_READONLY,
    MF_SYMLINK_SIZE,
    FileInfo,
    filetime_of_ns,
    name_from_server,
    name_to_server,
    ns_of_filetime,
    pack_basic,
    pack_disposition,
    pack_end_of_file,
    pack_mf_symlink,
    pack_rename,
    parse_directory_entries,
    parse_mf_symlink,
)

if TYPE_CHECKING:
    from rxfs.minirdr import RxDevice, SrvCall, VNetRoot

__all__ = ["SmbMiniRdr"]

log = logging.getLogger(__name__)

# Access bits beyond the core's AccessMask ([MS-SMB2] 2.2.13.1).
_FILE_LIST_DIRECTORY = 0x1
_READ_ATTRIBUTES = 0x80
_WRITE_ATTRIBUTES = 0x100
_DELETE = 0x10000
_SYNCHRONIZE = 0x100000
_NON_DIRECTORY = 0x40  # FILE_NON_DIRECTORY_FILE
# The hidden name of a file replaced by a rename while open (_replace_open_file).
REPLACED_PREFIX = ".rxfs-replaced-"
# FILE_INFORMATION_CLASS values sent in SET_INFO.
_BASIC_INFORMATION = 4
_RENAME_INFORMATION = 10
_LINK_INFORMATION = 11
_DISPOSITION_INFORMATION = 13
_END_OF_FILE_INFORMATION = 20
# Worker threads, hence requests in flight at once on the connection.
_THREADS = 16

_WRITES = AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA


@dataclass(eq=False)
class _Handle:
    """``srv_open.context``: the server's file id, on the tree that opened it."""

    tree: SmbTree
    file_id: bytes
    srv_open: SrvOpen
    is_dir: bool
    writable: bool
    append: bool
    write_through: bool
    # The lease key it was opened with (its Fcb's), if a lease was asked for.
    lease_key: bytes | None = None
    # It may set the DACL (-o modes=acl): chmod goes through it.
    write_dac: bool = False
    # The CreateGuid of a durable handle: after a reconnect it is reclaimed, not reopened.
    create_guid: bytes | None = None
    # Set once the server has closed the file id (or its connection is gone).
    gone: trio.Event = field(default_factory=trio.Event)


_M = TypeVar("_M", bound="SmbMiniRdr")
_Entry = Callable[[_M, RxContext], Coroutine[Any, Any, NtStatus]]


def _entry(method: _Entry[_M]) -> _Entry[_M]:
    """Turn an NtStatusError raised anywhere below an entry into its status."""

    @functools.wraps(method)
    async def run(self: _M, rx_context: RxContext) -> NtStatus:
        try:
            return await method(self, rx_context)
        except NtStatusError as exc:
            log.debug("%r: %s (%s)", rx_context, exc.status.name, exc.message)
            return exc.status

    return run


class SmbMiniRdr(MiniRdrDispatch):
    scheme = "smb"
    description = "files on an SMB 2/3 server (Samba, Windows), through smbprotocol"
    capabilities = (
        Capability.SYMLINKS
        | Capability.HARDLINKS
        | Capability.POSIX_RENAME
        | Capability.REMOTE_FSYNC
        | Capability.TIMES
        | Capability.STATFS
        | Capability.PERSISTENT
    )
    option_names: ClassVar[dict[str, str]] = dict(SMB_OPTIONS)

    @classmethod
    def capabilities_for(cls, options: Mapping[str, str]) -> Capability:
        """-o modes=acl keeps modes (CHMOD); the default, -o modes=fixed, does not."""
        if options.get("modes", DEFAULT_MODES).lower() == "acl":
            return cls.capabilities | Capability.CHMOD
        return cls.capabilities

    def __init__(self) -> None:
        self._device: RxDevice | None = None
        self._settings: SmbSettings | None = None
        self._tree: SmbTree | None = None
        self._limiter = trio.CapacityLimiter(_THREADS)
        # Every handle the server holds for us: the core closes in the background, and
        # some requests must wait for those closes (_closes_done).
        self._handles: set[_Handle] = set()
        # Files replaced while open (_replace_open_file), under their hidden names until
        # their last holder closes them: listings leave them out.
        self._aside: set[str] = set()
        # The client GUID of every connection of this mount: leases and durable
        # handles belong to it, and are reclaimed under it after a reconnect.
        self._client_guid = uuid.uuid4()
        self._uid = os.getuid()
        self._gid = os.getgid()
        # Lease breaks arrive on smbprotocol's reader thread and are handed to the loop.
        self._token: trio.lowlevel.TrioToken | None = None

    # -- plumbing ------------------------------------------------------------------------

    @property
    def tree(self) -> SmbTree:
        if self._tree is None:
            raise NtStatusError(NtStatus.STATUS_CONNECTION_DISCONNECTED, "not connected")
        return self._tree

    def transport_status(self) -> dict[str, object]:
        """The SMB connection, with the handles the server holds for us (docs/status.md)."""
        if self._tree is None:
            return {"transport": "smb", "connections": []}
        held = [handle for handle in self._handles if not handle.gone.is_set()]
        counts = {
            "open_files": len(held),
            "durable_files": sum(handle.create_guid is not None for handle in held),
        }
        return {"transport": "smb", "connections": [{**self._tree.describe(), **counts}]}

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A blocking smbprotocol call, in one of our worker threads."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _remote(self, path: str) -> str:
        """The share-relative SMB name of the core's path ('' is the share root)."""
        assert self._settings is not None
        parts = [name_to_server(p) for p in path.split("/") if p]
        if self._settings.path:
            parts.insert(0, self._settings.path)
        return "\\".join(parts)

    def _attributes(self, info: FileInfo, link_target: str | None = None) -> FileAttributes:
        if link_target is not None:
            mode, size = stat.S_IFLNK | 0o777, len(os.fsencode(link_target))
        else:
            mode, size = info.mode(), 0 if info.is_dir else info.end_of_file
        return FileAttributes(
            mode=mode,
            size=size,
            uid=self._uid,
            gid=self._gid,
            atime_ns=ns_of_filetime(info.last_access),
            mtime_ns=ns_of_filetime(info.last_write),
            ctime_ns=ns_of_filetime(info.change),
            nlink=max(info.nlink, 1),
        )

    async def _attributes_of(self, path: str, info: FileInfo) -> FileAttributes:
        """With -o mfsymlinks (the default) a regular file of the size a symlink file
        has is read to tell which it is; any other file costs nothing more."""
        return self._attributes(info, await self._link_target(path, info))

    async def _link_target(self, path: str, info: FileInfo) -> str | None:
        assert self._settings is not None
        if not self._settings.mf_symlinks or info.is_dir or info.end_of_file != MF_SYMLINK_SIZE:
            return None
        try:
            data = await self._run(self.tree.read_by_path, path, MF_SYMLINK_SIZE)
        except NtStatusError as exc:
            # Unreadable to us (another user's file): then it is shown as a file.
            log.debug("%s: cannot tell whether it is a symlink: %s", path, exc.message)
            return None
        return parse_mf_symlink(data)

    @staticmethod
    def _handle(rx_context: RxContext) -> _Handle | None:
        srv_open = rx_context.srv_open
        ctx = srv_open.context if srv_open is not None else None
        return ctx if isinstance(ctx, _Handle) else None

    # -- lifetime ------------------------------------------------------------------------

    async def start(self, device: RxDevice) -> NtStatus:
        self._device = device
        self._token = trio.lowlevel.current_trio_token()
        return NtStatus.STATUS_SUCCESS

    # -- leases --------------------------------------------------------------------------

    def _lease_break_received(self, brk: LeaseBreak) -> None:
        """On smbprotocol's reader thread: hand the break to the loop, never block."""
        if self._token is None:
            return
        # A mount that is gone has closed its handles, and the leases with them.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._start_lease_break, brk)

    def _start_lease_break(self, brk: LeaseBreak) -> None:
        assert self._device is not None
        self._device.nursery.start_soon(self._lease_broken, brk)

    async def _lease_broken(self, brk: LeaseBreak) -> None:
        """RxChangeBufferingState for every Fcb open on the lease key, then the
        acknowledgement (in that order: the other client's open waits for it)."""
        assert self._device is not None
        handles = [h for h in self._handles if h.lease_key == brk.key]
        log.debug(
            "lease break 0x%x -> 0x%x on %d handle(s)",
            brk.current_state,
            brk.new_state,
            len(handles),
        )
        try:
            for fcb in {h.srv_open.fcb: None for h in handles}:
                await self._device.change_buffering_state(
                    fcb,
                    read_caching=bool(brk.new_state & LEASE_READ),
                    write_caching=bool(brk.new_state & LEASE_WRITE),
                )
        except Exception:
            # This runs in the mount's nursery: never let it take the mount down.
            log.exception("a lease break could not be carried out")
        finally:
            if brk.ack_required:
                await self._acknowledge(handles[0].tree if handles else self._tree, brk)

    async def _acknowledge(self, tree: SmbTree | None, brk: LeaseBreak) -> None:
        if tree is None or tree is not self._tree:
            return  # the connection went, and the lease with it
        try:
            await self._run(tree.ack_lease_break, brk)
        except NtStatusError as exc:
            log.info("acknowledging a lease break: %s", exc.message)

    async def create_srv_call(self, srv_call: SrvCall) -> NtStatus:
        """Negotiate (SMB 3.1.1 where the server has it), log in, connect the share. On
        a reconnect the settings read at mount (the password included) are used again."""
        if self._settings is None:
            options = self._device.options if self._device is not None else {}
            self._settings = SmbSettings.parse(srv_call.url, options)
        old, self._tree = self._tree, None
        for handle in self._handles:
            handle.gone.set()  # gone with the old connection
        self._handles.clear()
        if old is not None:
            await self._run(old.disconnect)
        on_break = self._lease_break_received if self._settings.leases else None
        tree = SmbTree(self._settings, on_break, self._client_guid)
        await self._run(tree.connect)
        if not tree.encrypted:
            log.info("%s: messages are signed, not encrypted", self._settings.unc)
        self._tree = tree
        srv_call.context = tree
        return NtStatus.STATUS_SUCCESS

    async def create_v_net_root(self, v_net_root: VNetRoot) -> NtStatus:
        """The mounted path must be a directory on the share."""
        assert self._settings is not None
        root = self._remote("/")
        try:
            info = await self._run(self.tree.stat, root)
        except NtStatusError as exc:
            raise NtStatusError(
                exc.status, rf"cannot use {self._settings.unc}\{root} as the root: {exc.message}"
            ) from None
        if not info.is_dir:
            raise NtStatusError(
                NtStatus.STATUS_NOT_A_DIRECTORY, rf"{self._settings.unc}\{root} is not a directory"
            )
        v_net_root.context = root
        return NtStatus.STATUS_SUCCESS

    async def finalize_srv_call(self, srv_call: SrvCall) -> NtStatus:
        tree, self._tree = self._tree, None
        if tree is not None:
            await self._run(tree.disconnect, True)
        return NtStatus.STATUS_SUCCESS

    # -- create and close ----------------------------------------------------------------

    @_entry
    async def create(self, rx_context: RxContext) -> NtStatus:
        fcb, srv_open = rx_context.fcb, rx_context.srv_open
        params = rx_context.irp.parameters
        assert fcb is not None and srv_open is not None
        assert isinstance(params, CreateParameters)
        tree = self.tree
        wanted = params.desired_access
        writable = bool(wanted & _WRITES)
        access = int(wanted) | _READ_ATTRIBUTES | _SYNCHRONIZE
        if writable:
            # An O_APPEND open asks for FILE_APPEND_DATA alone, but POSIX lets it
            # ftruncate, which Samba allows only with FILE_WRITE_DATA; its writes are
            # placed at the end here anyway (lowio_write), not by the server.
            access |= _WRITE_ATTRIBUTES | AccessMask.FILE_WRITE_DATA
        if params.options & CreateOptions.FILE_DIRECTORY_FILE:
            access |= _FILE_LIST_DIRECTORY
        lease_key = None
        if tree.leases and not params.options & CreateOptions.FILE_DIRECTORY_FILE:
            if not isinstance(fcb.context, bytes):
                fcb.context = uuid.uuid4().bytes  # the file's lease key, for all its opens
            lease_key = fcb.context
        created = await self._reclaimed(tree, srv_open, int(params.options), lease_key)
        if created is None:
            created = await self._run(
                functools.partial(
                    tree.create,
                    self._remote(fcb.path),
                    access,
                    int(params.disposition),
                    int(params.options),
                    lease_key=lease_key,
                )
            )
        if created.lease_state is not None and not created.lease_state & LEASE_WRITE:
            # Another client has the file open: writes go to the server as they come.
            srv_open.flags |= SrvOpenFlags.SRVOPEN_FLAG_DONTUSE_WRITE_CACHING
        append = bool(srv_open.flags & SrvOpenFlags.SRVOPEN_FLAG_APPEND)
        write_through = bool(params.options & CreateOptions.FILE_WRITE_THROUGH)
        handle = _Handle(
            tree,
            created.file_id,
            srv_open,
            created.info.is_dir,
            writable,
            append,
            write_through,
            lease_key if created.lease_state is not None else None,
            created.write_dac,
            created.create_guid,
        )
        self._handles.add(handle)
        srv_open.context = handle
        info = created.info
        mode = params.file_mode & 0o777
        if created.created and created.security is not None and info.permissions != mode:
            # The mode it was made with, as its DACL (Samba gave it the share's).
            info = await self._run(tree.set_mode_of_new, created, mode)
        rx_context.irp.attributes = await self._attributes_of(self._remote(fcb.path), info)
        return NtStatus.STATUS_SUCCESS

    async def _reclaimed(
        self, tree: SmbTree, srv_open: SrvOpen, options: int, lease_key: bytes | None
    ) -> CreateResult | None:
        """After a reconnect the core reopens every handle (FILE_OPEN by name, as RDBSS
        reopens on a new connection); a durable one is taken back instead (DH2C): the
        server kept it open with its lease, so the file was never closed by us, no
        other client's open was let in by our absence, and the replayed writes go to
        the same handle. None where it was not durable or the server has it no more
        (expired, a restarted server): then it is opened anew."""
        old = srv_open.context
        if not isinstance(old, _Handle) or old.create_guid is None or old.tree is tree:
            return None
        path = self._remote(srv_open.fcb.path)
        durable = Durable(old.create_guid, old.file_id)
        try:
            created: CreateResult = await self._run(
                tree.reclaim, path, durable, options, lease_key
            )
        except ServerStatusError as exc:
            log.info("%s: durable handle not reclaimed (%s): opening it anew", path, exc.message)
            return None
        log.info("%s: durable handle reclaimed after the reconnect", path)
        return dataclasses.replace(created, write_dac=old.write_dac)

    @_entry
    async def close_srv_open(self, rx_context: RxContext) -> NtStatus:
        handle = self._handle(rx_context)
        if handle is None or handle.tree is not self._tree:
            return NtStatus.STATUS_SUCCESS  # its connection is gone, and the handle with it
        try:
            await self._run(handle.tree.close, handle.file_id)
        finally:
            self._handles.discard(handle)
            handle.gone.set()
        return NtStatus.STATUS_SUCCESS

    async def _closes_done(self, below: str) -> None:
        """Wait until the server has closed every handle the core closed already (its
        remote close runs in the background) of ``below`` and the files under it."""
        prefix = below.rstrip("/") + "/"
        for handle in list(self._handles):
            path = handle.srv_open.fcb.path
            if handle.srv_open.closed and (path == below or path.startswith(prefix)):
                await handle.gone.wait()

    @_entry
    async def flush(self, rx_context: RxContext) -> NtStatus:
        """SMB2 FLUSH: Samba fsyncs the file (``strict sync``, on by default)."""
        handle = self._handle(rx_context)
        if handle is None or not handle.writable:
            return NtStatus.STATUS_SUCCESS
        await self._run(self._live(handle).flush, handle.file_id)
        return NtStatus.STATUS_SUCCESS

    def _live(self, handle: _Handle) -> SmbTree:
        """The handle's tree, if it is still the connection; a handle of a lost
        connection is gone with it (the core reopens after a reconnect)."""
        if handle.tree is not self._tree:
            raise NtStatusError(NtStatus.STATUS_CONNECTION_DISCONNECTED, "the handle's connection")
        return handle.tree

    # -- low I/O ---------------------------------------------------------------------------

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        handle = self._handle(rx_context)
        if handle is None or not handle.writable:
            return NtStatus.STATUS_INVALID_HANDLE
        rw = rx_context.low_io.read_write
        data = bytes(rw.buffer)
        tree = handle.tree

        def write() -> int:
            offset = rw.byte_offset
            if handle.append:
                # Not atomic against other clients: plain SMB2 has no append-at-end
                # write that Samba honours (Capability.APPEND is not declared).
                offset = tree.query(handle.file_id).end_of_file
            return tree.write(handle.file_id, offset, data, handle.write_through)

        return self._submit(rx_context, handle, write, None)

    async def lowio_read(self, rx_context: RxContext) -> NtStatus:
        handle = self._handle(rx_context)
        if handle is None:
            return NtStatus.STATUS_INVALID_HANDLE
        rw = rx_context.low_io.read_write
        if rw.byte_count == 0:
            rw.buffer = b""
            rx_context.io_status.information = 0
            return NtStatus.STATUS_SUCCESS
        got: list[bytes] = []

        def read() -> int:
            data = handle.tree.read(handle.file_id, rw.byte_offset, rw.byte_count)
            got.append(data)
            return len(data)

        def deliver() -> None:
            rw.buffer = got[0]

        return self._submit(rx_context, handle, read, deliver)

    def _submit(
        self,
        rx_context: RxContext,
        handle: _Handle,
        work: Callable[[], int],
        deliver: Callable[[], None] | None,
    ) -> NtStatus:
        """Answer STATUS_PENDING; ``work`` runs in a worker thread and the reply path
        completes the context with its byte count (``deliver`` first stores a read's
        bytes), unless a cancel took the context first."""
        if handle.tree is not self._tree:
            return NtStatus.STATUS_CONNECTION_DISCONNECTED
        if rx_context.set_cancel_routine(_complete_cancelled) == NtStatus.STATUS_CANCELLED:
            rx_context.complete_lowio(NtStatus.STATUS_CANCELLED)
            return NtStatus.STATUS_PENDING

        async def reply() -> None:
            status, information = NtStatus.STATUS_UNSUCCESSFUL, 0
            try:
                information = await self._run(work)
                if deliver is not None:
                    deliver()
                status = NtStatus.STATUS_SUCCESS
            except NtStatusError as exc:
                status = exc.status
                log.debug("%r: %s (%s)", rx_context, exc.status.name, exc.message)
            except Exception:
                # This runs in the mount's nursery: never let it take the mount down.
                log.exception("%r: the SMB request failed", rx_context)
            finally:
                if rx_context.clear_cancel_routine():
                    if status == NtStatus.STATUS_SUCCESS and information == 0 and deliver:
                        status = NtStatus.STATUS_END_OF_FILE
                    rx_context.complete_lowio(status, information)

        assert self._device is not None
        self._device.nursery.start_soon(reply)
        return NtStatus.STATUS_PENDING

    @_entry
    async def lowio_fsctl(self, rx_context: RxContext) -> NtStatus:
        """Symlinks as Minshall-French symlink files (``_wire.pack_mf_symlink``): plain
        SMB2 to Samba has no symlinks to make (Samba 4.17 takes no reparse points, and
        the SMB3 POSIX extensions are not in Debian's build). With -o mfsymlinks=no,
        EOPNOTSUPP (not ENOSYS: the kernel would stop asking)."""
        assert rx_context.fcb is not None and self._settings is not None
        if not self._settings.mf_symlinks:
            return NtStatus.STATUS_NOT_SUPPORTED
        path = self._remote(rx_context.fcb.path)
        fsctl = rx_context.low_io.fsctl
        tree = self.tree
        if fsctl.fs_control_code == FsControlCode.FSCTL_GET_REPARSE_POINT:
            target = parse_mf_symlink(await self._run(tree.read_by_path, path, MF_SYMLINK_SIZE))
            if target is None:
                return NtStatus.STATUS_INVALID_PARAMETER  # not a symlink: EINVAL
            rx_context.irp.link_target = target
            return NtStatus.STATUS_SUCCESS
        try:
            content = pack_mf_symlink(fsctl.target)
        except ValueError as exc:
            raise NtStatusError(NtStatus.STATUS_NAME_TOO_LONG, str(exc)) from None
        access = AccessMask.FILE_WRITE_DATA | _READ_ATTRIBUTES | _SYNCHRONIZE
        created = await self._run(
            tree.create, path, access, CreateDisposition.FILE_CREATE, _NON_DIRECTORY
        )
        try:
            await self._run(tree.write, created.file_id, 0, content, False)
        finally:
            await self._run(tree.close, created.file_id)
        rx_context.irp.attributes = self._attributes(created.info, fsctl.target)
        return NtStatus.STATUS_SUCCESS

    # -- information -----------------------------------------------------------------------

    @_entry
    async def query_file_info(self, rx_context: RxContext) -> NtStatus:
        """QUERY_INFO on the open handle, else CREATE + QUERY_INFO + CLOSE by name, once
        the closes in flight of the file landed: Samba (as Windows) shows the write
        time a handle had at its open until it closes (or 2 s after its first write),
        and the core closes handles after close(2) returned."""
        assert rx_context.fcb is not None
        handle = self._handle(rx_context)
        if handle is not None and handle.tree is self._tree:
            info = await self._run(handle.tree.query, handle.file_id)
        else:
            await self._closes_done(rx_context.fcb.path)
            info = await self._run(self.tree.stat, self._remote(rx_context.fcb.path))
        rx_context.irp.attributes = await self._attributes_of(
            self._remote(rx_context.fcb.path), info
        )
        return NtStatus.STATUS_SUCCESS

    @_entry
    async def set_file_info(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        params = rx_context.irp.parameters
        assert isinstance(params, SetInformationParameters)
        info = params.buffer
        path = self._remote(rx_context.fcb.path)
        handle = self._writable_handle(rx_context)
        if isinstance(info, FileDispositionInformation):
            if info.delete_file:
                await self._delete(path)
            return NtStatus.STATUS_SUCCESS
        fresh: FileInfo | None = None
        if isinstance(info, FileBasicInformation):
            handles = self._open_handles(rx_context)
            fresh = await self._set_basic(rx_context.fcb.path, handle, info, handles)
        elif isinstance(info, FileEndOfFileInformation):
            await self._set_info(
                path, handle, _END_OF_FILE_INFORMATION, pack_end_of_file(info.end_of_file)
            )
        elif isinstance(info, FileRenameInformation):
            # Samba refuses to rename a directory with a file open below it
            # (ACCESS_DENIED), and a file closed a moment ago may still have its handle.
            await self._closes_done(rx_context.fcb.path)
            path = self._remote(info.new_name)  # the attributes are the new name's
            await self._rename(self._remote(rx_context.fcb.path), path, info.replace_if_exists)
        else:
            assert isinstance(info, FileLinkInformation)
            await self._run(
                self.tree.set_info_by_path,
                path,
                _READ_ATTRIBUTES | _WRITE_ATTRIBUTES,
                _LINK_INFORMATION,
                pack_rename(self._remote(info.new_name), info.replace_if_exists),
            )
        if fresh is None:
            fresh = await self._stat_via(path, handle)
        rx_context.irp.attributes = await self._attributes_of(path, fresh)
        return NtStatus.STATUS_SUCCESS

    def _open_handles(self, rx_context: RxContext) -> list[_Handle]:
        """The request's own handle and every other live one of its Fcb."""
        own = self._handle(rx_context)
        fcb = rx_context.fcb
        found = [own] if own is not None else []
        if fcb is not None:
            found += [
                s.context for s in fcb.srv_opens if isinstance(s.context, _Handle) and not s.closed
            ]
        return found

    def _writable_handle(self, rx_context: RxContext) -> _Handle | None:
        """A live handle of ours that may write the file: the request's own, else any
        other open of the Fcb. Samba stamps the write time when a handle that wrote
        closes, unless the time was set through that very handle, so times set by name
        while a write handle is open (a delayed close) would be undone."""
        own = self._handle(rx_context)
        for handle in self._open_handles(rx_context):
            if handle.writable and handle.tree is self._tree:
                return handle
        return own if own is not None and own.tree is self._tree else None

    async def _stat_via(self, path: str, handle: _Handle | None) -> FileInfo:
        if handle is not None:
            info: FileInfo = await self._run(handle.tree.query, handle.file_id)
        else:
            info = await self._run(self.tree.stat, path)
        return info

    async def _set_info(
        self, path: str, handle: _Handle | None, info_class: int, buffer: bytes
    ) -> None:
        """Through the open handle when it may (a writable one), else by name."""
        if handle is not None and handle.writable:
            await self._run(handle.tree.set_info, handle.file_id, info_class, buffer)
            return
        access = _WRITE_ATTRIBUTES | _READ_ATTRIBUTES
        if info_class == _END_OF_FILE_INFORMATION:
            access |= AccessMask.FILE_WRITE_DATA
        await self._run(self.tree.set_info_by_path, path, access, info_class, buffer)

    async def _set_basic(
        self,
        core_path: str,
        handle: _Handle | None,
        info: FileBasicInformation,
        handles: list[_Handle],
    ) -> FileInfo | None:
        """Times as FILETIMEs; a mode as the DACL (-o modes=acl, through one of the
        file's ``handles`` that may set it: a chmod by name would break our own lease)
        and the owner's write bit as the read-only attribute; with -o modes=fixed only
        that bit, since plain SMB2 has no other place for a mode. Returns the file's
        attributes where a chmod read them back and nothing changed after it."""
        if (info.uid is not None and info.uid != self._uid) or (
            info.gid is not None and info.gid != self._gid
        ):
            raise NtStatusError(NtStatus.STATUS_NOT_SUPPORTED, "no owners over plain SMB2")
        path = self._remote(core_path)
        attributes = 0
        changed: FileInfo | None = None
        assert self._settings is not None
        if info.mode is not None and self._settings.acl_modes:
            own = next((h for h in handles if h.write_dac and h.tree is self._tree), None)
            changed = await self._run(
                self.tree.set_mode, path, info.mode & 0o777, own.file_id if own else None
            )
        elif info.mode is not None:
            current = await self._stat_via(path, handle)
            if not current.is_dir:
                attributes = current.attributes & ~ATTRIBUTE_READONLY
                if not info.mode & 0o200:
                    attributes |= ATTRIBUTE_READONLY
                attributes = attributes or ATTRIBUTE_NORMAL
        atime = filetime_of_ns(info.atime_ns) if info.atime_ns is not None else 0
        mtime = filetime_of_ns(info.mtime_ns) if info.mtime_ns is not None else 0
        if mtime and (handle is None or not handle.writable):
            # A handle that wrote stamps the write time when it closes: let the closes
            # in flight land first, or they would undo the time set here.
            await self._closes_done(core_path)
        if atime or mtime or attributes:
            await self._set_info(
                path, handle, _BASIC_INFORMATION, pack_basic(atime, mtime, 0, attributes)
            )
            return None
        return changed

    async def _rename(self, old: str, new: str, replace: bool) -> None:
        if old == new:
            return
        if new.startswith(old + "\\"):
            raise NtStatusError(NtStatus.STATUS_INVALID_PARAMETER, "rename into itself")
        try:
            await self._rename_once(old, new, replace)
        except NtStatusError as exc:
            if not replace or exc.status != NtStatus.STATUS_ACCESS_DENIED:
                raise
            await self._replace_open_file(old, new, exc)

    async def _rename_once(self, old: str, new: str, replace: bool) -> None:
        await self._run(
            self.tree.set_info_by_path,
            old,
            _DELETE | _READ_ATTRIBUTES,
            _RENAME_INFORMATION,
            pack_rename(new, replace),
        )

    async def _replace_open_file(self, old: str, new: str, refused: NtStatusError) -> None:
        """SMB (Windows) refuses to replace a file someone holds open; POSIX replaces
        it, and the holders keep the old file. So: move the target aside under a
        hidden name, rename, and mark the old file delete-on-close, which the server
        carries out when its last holder closes it (any client's). Where the target
        is a directory or cannot be moved either, the first refusal stands."""
        try:
            target = await self._run(self.tree.stat, new)
        except NtStatusError:
            raise refused from None
        if target.is_dir:
            raise refused
        parent, _, _ = new.rpartition("\\")
        aside = f"{parent}\\" if parent else ""
        aside += name_to_server(REPLACED_PREFIX + secrets.token_hex(8))
        try:
            await self._rename_once(new, aside, False)
        except NtStatusError:
            raise refused from None
        self._aside.add(aside)
        try:
            await self._rename_once(old, new, False)
        except NtStatusError:
            await self._rename_once(aside, new, False)  # put it back
            self._aside.discard(aside)
            raise
        await self._delete(aside)

    async def _delete(self, path: str) -> None:
        """Delete-on-close set on a handle of our own, closed at once: the name goes
        now unless another client holds the file open (then at its close)."""
        if path == self._remote("/"):
            raise NtStatusError(NtStatus.STATUS_ACCESS_DENIED, "the share root")
        delete = (_DELETE | _READ_ATTRIBUTES, _DISPOSITION_INFORMATION, pack_disposition())
        try:
            await self._run(self.tree.set_info_by_path, path, *delete)
        except ServerStatusError as exc:
            if exc.code != STATUS_CANNOT_DELETE:
                raise
            # A read-only file (chmod a-w): POSIX unlinks it all the same, and so does
            # mount.cifs, by clearing the attribute first.
            info = await self._run(self.tree.stat, path)
            attributes = (info.attributes & ~ATTRIBUTE_READONLY) or ATTRIBUTE_NORMAL
            await self._run(
                self.tree.set_info_by_path,
                path,
                _WRITE_ATTRIBUTES | _READ_ATTRIBUTES,
                _BASIC_INFORMATION,
                pack_basic(attributes=attributes),
            )
            await self._run(self.tree.set_info_by_path, path, *delete)

    @_entry
    async def query_directory(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        directory = self._remote(rx_context.fcb.path)
        buffers = await self._run(self.tree.list_directory, directory)
        prefix = f"{directory}\\" if directory else ""
        listed = [
            (name, info)
            for buffer in buffers
            for name, info in parse_directory_entries(buffer)
            if name not in (".", "..") and prefix + name not in self._aside
        ]
        entries: list[DirEntry | None] = [None] * len(listed)

        async def entry(index: int, name: str, info: FileInfo) -> None:
            path = f"{directory}\\{name}" if directory else name
            if self._settings is not None and self._settings.acl_modes:
                # A listing carries no ACLs, and nothing tells whether one read before
                # still holds (Samba's ChangeTime is the mtime: a chmod leaves it).
                permissions = await self._run(self.tree.permissions, path)
                info = dataclasses.replace(info, permissions=permissions)
            attributes = await self._attributes_of(path, info)
            entries[index] = DirEntry(name_from_server(name), attributes)

        # A listing carries no ACLs (nor says which files are symlinks): each entry's
        # DACL (-o modes=acl) and the files that may be symlinks are read, all at once.
        async with trio.open_nursery() as nursery:
            for index, (name, info) in enumerate(listed):
                nursery.start_soon(entry, index, name, info)
        rx_context.irp.entries = [e for e in entries if e is not None]
        return NtStatus.STATUS_SUCCESS

    @_entry
    async def query_volume_info(self, rx_context: RxContext) -> NtStatus:
        size = await self._run(self.tree.fs_size)
        rx_context.irp.volume = VolumeInfo(
            block_size=size.sectors_per_unit * size.bytes_per_sector,
            total_blocks=size.total_units,
            free_blocks=size.actual_available_units,
            available_blocks=size.caller_available_units,
        )
        return NtStatus.STATUS_SUCCESS


def _complete_cancelled(rx_context: RxContext) -> None:
    """Cancel routine: the request may still land, but claims nothing."""
    rx_context.complete_lowio(NtStatus.STATUS_CANCELLED)
