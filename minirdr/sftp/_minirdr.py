"""``sftp://``: the mini-redirector for OpenSSH servers (SFTP v3 plus @openssh.com
extensions), on the request engine of :mod:`._engine`.

URL paths: ``sftp://host/path`` names the absolute path ``/path`` on the server;
``sftp://host/~/path`` is ``path`` below the login (home) directory and ``sftp://host``
or ``sftp://host/~`` the login directory itself. The share root is resolved once, with
SSH_FXP_REALPATH, when the mount starts; the core's paths ('/a/b', relative to the share
root) are joined onto it.

Every entry runs under the request deadline (``-o timeout``) and answers an NTSTATUS:
SFTP failures go through the one table in :mod:`._status`, with a probe where OpenSSH's
FAILURE hides the cause.

This module holds the dispatch entries only: the connections and the session pool they
pick from are :mod:`._pool`'s, the NT <-> SFTP conversions :mod:`._convert`'s.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import posixpath
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import trio
from rxfs.minirdr import (
    AccessMask,
    Capability,
    CreateDisposition,
    CreateOptions,
    CreateParameters,
    DirEntry,
    FileBasicInformation,
    FileDispositionInformation,
    FileEndOfFileInformation,
    FileLinkInformation,
    FileRenameInformation,
    FsControlCode,
    FsControlParameters,
    LowIoReadWriteFlags,
    MiniRdrDispatch,
    NtStatus,
    NtStatusError,
    OptionError,
    RxContext,
    SetInformationParameters,
    SrvOpenFlags,
    VolumeInfo,
)

from ._convert import basic_attrs, is_dir, nlink_of, open_flags
from ._engine import (
    EXT_FSYNC,
    EXT_HARDLINK,
    EXT_POSIX_RENAME,
    EXT_STATVFS,
    SftpError,
    SftpSession,
)
from ._idmap import IDMAP_OPTIONS, parse_idmap
from ._owners import Owners
from ._pool import (
    DEFAULT_CHANNELS,
    DEFAULT_MAX_CONNS,
    DEFAULT_TIMEOUT,
    Connections,
    SessionPool,
    Transport,
    Tuning,
)
from ._remotefile import RemoteFile, WriteBatch
from ._settings import CONNECT_OPTIONS
from ._spread import SpreadWrites
from ._status import NTSTATUS_OF_SFTP, TIMEOUT_STATUS, Probe, nt_status_of, status_error
from ._wire import Attrs, OpenFlags

if TYPE_CHECKING:
    from rxfs.minirdr import Fcb, RxDevice, SrvCall, VNetRoot

__all__ = ["SftpMiniRdr"]

log = logging.getLogger(__name__)

# Read on every write: a module constant, not an enum lookup (see DESIGN §10).
_PAGING_IO = LowIoReadWriteFlags.LOWIO_READWRITEFLAG_PAGING_IO


@dataclass(eq=False)
class _Open:
    """``srv_open.context``: the file's handles (its own first, the one reads and
    every other request use), or None for a directory or an open that asked for
    attributes only (no SFTP handle is held for those)."""

    writes: SpreadWrites | None
    is_dir: bool

    @property
    def file(self) -> RemoteFile | None:
        return self.writes.own if self.writes is not None else None


_M = TypeVar("_M", bound="SftpMiniRdr")
_Entry = Callable[[_M, RxContext], Coroutine[Any, Any, NtStatus]]


def _entry(method: _Entry[_M]) -> _Entry[_M]:
    """Run an entry under the request deadline; turn failures into its NTSTATUS. A
    failure that came at or past the deadline is logged as a WARNING naming the
    request: its session was found dead (SftpSession._watch_replies) or the deadline
    cancelled it, and either way the user waited that long."""

    @functools.wraps(method)
    async def run(self: _M, rx_context: RxContext) -> NtStatus:
        timeout = self.tuning.timeout
        started = trio.current_time()
        try:
            with trio.fail_after(timeout):
                return await method(self, rx_context)
        except NtStatusError as exc:
            why, status = exc.message, exc.status
        except SftpError as exc:
            why, status = str(exc), NTSTATUS_OF_SFTP[exc.code]
        except trio.TooSlowError:
            why, status = "cancelled", TIMEOUT_STATUS
        except ValueError as exc:
            # A reply too short for its type (the Reader's complaint). Framing is intact,
            # so only this request fails; the same reply again would fail a replay too.
            log.warning("%r: the server's reply made no sense: %s", rx_context, exc)
            return NtStatus.STATUS_IO_DEVICE_ERROR
        if trio.current_time() - started >= timeout:
            log.warning("%r: no answer within %g s (%s)", rx_context, timeout, why)
        else:
            log.debug("%r: %s", rx_context, why)
        return status

    return run


class SftpMiniRdr(MiniRdrDispatch):
    scheme = "sftp"
    description = (
        "files on an SSH server (OpenSSH sftp-server), through paramiko or the ssh client"
    )
    capabilities = (
        Capability.SYMLINKS
        | Capability.HARDLINKS
        | Capability.POSIX_RENAME
        | Capability.REMOTE_FSYNC
        | Capability.APPEND
        | Capability.CHMOD
        | Capability.CHOWN
        | Capability.TIMES
        | Capability.STATFS
        | Capability.PERSISTENT
    )
    option_names: ClassVar[dict[str, str]] = {
        **CONNECT_OPTIONS,
        "max_conns": f"SSH connections to open (default {DEFAULT_MAX_CONNS})",
        "channels": f"SFTP sessions per SSH connection (default {DEFAULT_CHANNELS})",
        "timeout": f"seconds a request may go unanswered before its connection counts as dead "
        f"and is replaced, the request replayed (default {DEFAULT_TIMEOUT:g})",
        "transport": "auto (default): the system's ssh client, as sshfs does (its crypto runs "
        "in C, in another process: faster), when it is on PATH and can log in with a key or "
        "an agent, else paramiko (which can also ask for a password or a passphrase); "
        "openssh or paramiko: that one only",
        "ssh_command": "the ssh client the openssh transport runs, with any options of its own "
        "(default ssh)",
        **IDMAP_OPTIONS,
    }

    def __init__(self) -> None:
        self._connections = Connections()
        self._device: RxDevice | None = None
        self._root = "/"
        self._warned_no_fsync = False
        self._owners = Owners()

    @property
    def tuning(self) -> Tuning:
        """This backend's -o options, as the last connect read them."""
        return self._connections.tuning

    @property
    def transport(self) -> Transport | None:
        """What carries the connection (never AUTO); None before the first one."""
        return self._connections.transport

    @property
    def pool(self) -> SessionPool:
        return self._connections.pool

    def transport_status(self) -> dict[str, object]:
        pool = self._connections.current_pool
        return {
            "transport": self.transport.value if self.transport is not None else None,
            "connections": pool.describe() if pool is not None else [],
        }

    def _remote(self, path: str) -> str:
        """The server path of the core's path ('/' is the share root)."""
        rel = path.strip("/")
        return posixpath.join(self._root, rel) if rel else self._root

    # -- lifetime ------------------------------------------------------------------------

    async def start(self, device: RxDevice) -> NtStatus:
        self._device = device
        return NtStatus.STATUS_SUCCESS

    async def create_srv_call(self, srv_call: SrvCall) -> NtStatus:
        """Log in ``max_conns`` times (in worker threads) and open ``channels`` SFTP
        sessions on each, over the transport ``-o transport`` names. ``auto`` tries ssh
        first and falls back to paramiko when ssh cannot log in (in BatchMode it cannot
        type a password or a passphrase); a reconnect uses the transport that worked.
        Raises NtStatusError with the one-line reason on failure."""
        options = self._device.options if self._device is not None else {}
        if not self._owners.configured:
            # Once, before the first connect: a reconnect keeps the map (and what it
            # learned), whatever became of its files meanwhile.
            try:
                self._owners.configure(parse_idmap(options))
            except OptionError as exc:
                raise NtStatusError(NtStatus.STATUS_INVALID_PARAMETER, str(exc)) from None
        settings = await self._connections.connect(srv_call.url, options)
        srv_call.context = self._connections.pool
        self._root = settings.remote_path
        return NtStatus.STATUS_SUCCESS

    async def create_v_net_root(self, v_net_root: VNetRoot) -> NtStatus:
        """Resolve the share root on the server; it must be a directory."""
        session = self.pool.pick()
        wanted = self._root
        try:
            with trio.fail_after(self.tuning.timeout):
                root = await session.realpath(wanted)
                attrs = await session.stat(root)
        except SftpError as exc:
            raise NtStatusError(
                await nt_status_of(exc, session),
                f"cannot use {wanted!r} as the share root: {exc.message or exc.code.name}",
            ) from exc
        except trio.TooSlowError:
            raise NtStatusError(TIMEOUT_STATUS, "the server did not answer in time") from None
        if not is_dir(attrs):
            raise NtStatusError(
                NtStatus.STATUS_NOT_A_DIRECTORY, f"{root!r} on the server is not a directory"
            )
        self._root = root
        v_net_root.context = root
        try:
            with trio.fail_after(self.tuning.timeout):
                await self._owners.start(session)
        except trio.TooSlowError:
            raise NtStatusError(TIMEOUT_STATUS, "the server did not answer in time") from None
        return NtStatus.STATUS_SUCCESS

    async def finalize_srv_call(self, srv_call: SrvCall) -> NtStatus:
        await self._connections.close()
        return NtStatus.STATUS_SUCCESS

    # -- create and close ----------------------------------------------------------------

    @staticmethod
    def _open_of(rx_context: RxContext) -> _Open | None:
        srv_open = rx_context.srv_open
        ctx = srv_open.context if srv_open is not None else None
        return ctx if isinstance(ctx, _Open) else None

    @_entry
    async def create(self, rx_context: RxContext) -> NtStatus:
        fcb, srv_open = rx_context.fcb, rx_context.srv_open
        params = rx_context.irp.parameters
        assert fcb is not None and srv_open is not None
        assert isinstance(params, CreateParameters)
        path = self._remote(fcb.path)
        if params.options & CreateOptions.FILE_DIRECTORY_FILE:
            attrs = await self._create_directory(path, params)
            srv_open.context = _Open(None, True)
        elif not params.desired_access & (
            AccessMask.FILE_READ_DATA | AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA
        ) and params.disposition in (CreateDisposition.FILE_OPEN, CreateDisposition.FILE_OPEN_IF):
            attrs = await self._stat_for_open(path, params)
            srv_open.context = _Open(None, is_dir(attrs))
        else:
            append = bool(srv_open.flags & SrvOpenFlags.SRVOPEN_FLAG_APPEND)
            remote, attrs = await self._open_file(path, params, append)
            srv_open.context = _Open(self._spread_writes(remote), remote is None)
        rx_context.irp.attributes = await self._owners.one(self.pool.pick(), attrs)
        return NtStatus.STATUS_SUCCESS

    def _spread_writes(self, remote: RemoteFile | None) -> SpreadWrites | None:
        if remote is None:
            return None
        assert self._device is not None
        return SpreadWrites(remote, self.pool, self._device.nursery, self.tuning.timeout)

    async def _stat_for_open(self, path: str, params: CreateParameters) -> Attrs:
        """An open for attributes only: no handle, just the file's attributes. A
        missing file with FILE_OPEN_IF falls through to a real create."""
        session = self.pool.pick()
        try:
            attrs = await session.stat(path)
        except SftpError as exc:
            raise await status_error(exc, session, Probe.OPEN, path) from None
        if is_dir(attrs) and params.options & CreateOptions.FILE_NON_DIRECTORY_FILE:
            raise NtStatusError(NtStatus.STATUS_FILE_IS_A_DIRECTORY, path)
        return attrs

    async def _create_directory(self, path: str, params: CreateParameters) -> Attrs:
        """FILE_DIRECTORY_FILE: FILE_CREATE is mkdir with the given mode; FILE_OPEN
        stats; FILE_OPEN_IF does whichever applies."""
        session = self.pool.pick()
        disposition = params.disposition
        if disposition not in (
            CreateDisposition.FILE_CREATE,
            CreateDisposition.FILE_OPEN,
            CreateDisposition.FILE_OPEN_IF,
        ):
            raise NtStatusError(NtStatus.STATUS_INVALID_PARAMETER, "cannot overwrite a directory")
        made = False
        if disposition != CreateDisposition.FILE_OPEN:
            try:
                await session.mkdir(path, params.file_mode & 0o7777)
                made = True
            except SftpError as exc:
                failure = await status_error(exc, session, Probe.CREATE_NEW, path)
                if not (
                    disposition == CreateDisposition.FILE_OPEN_IF
                    and failure.status == NtStatus.STATUS_OBJECT_NAME_COLLISION
                ):
                    raise failure from None
        try:
            attrs = await session.stat(path)
        except SftpError as exc:
            raise await status_error(exc, session, Probe.OPEN, path) from None
        if not is_dir(attrs):
            raise NtStatusError(NtStatus.STATUS_NOT_A_DIRECTORY, path)
        if made and params.owner is not None:
            await self._owners.give_to_caller(session, path, attrs, params.owner)
        return attrs

    async def _open_file(
        self, path: str, params: CreateParameters, append: bool
    ) -> tuple[RemoteFile | None, Attrs]:
        """OPEN (+ STAT in the same round trip). An existing directory opened for
        reading is an open of the directory: its handle is closed and none is kept."""
        session = self.pool.pick()
        flags = open_flags(params, append)
        opened = None
        if params.owner is not None and flags & OpenFlags.SSH_FXF_CREAT:
            # Only a file this open makes may be given to the caller: a new one is
            # asked for first (the kernel creates names it found missing, so this
            # fails only when another client made the name meanwhile).
            opened = await self._open_new(session, path, flags | OpenFlags.SSH_FXF_EXCL, params)
            if opened is not None:
                remote, attrs = opened
                await self._owners.give_to_caller(session, path, attrs, params.owner, remote)
        if opened is None:
            try:
                remote, attrs = await RemoteFile.open(
                    session, path, flags, params.file_mode & 0o7777
                )
            except SftpError as exc:
                probe = Probe.CREATE_NEW if flags & OpenFlags.SSH_FXF_EXCL else Probe.OPEN
                raise await status_error(exc, session, probe, path) from None
        if not is_dir(attrs):
            return remote, attrs
        await self._close_quietly(remote)
        if params.options & CreateOptions.FILE_NON_DIRECTORY_FILE or flags & (
            OpenFlags.SSH_FXF_WRITE
        ):
            raise NtStatusError(NtStatus.STATUS_FILE_IS_A_DIRECTORY, path)
        return None, attrs

    @staticmethod
    async def _open_new(
        session: SftpSession, path: str, flags: OpenFlags, params: CreateParameters
    ) -> tuple[RemoteFile, Attrs] | None:
        """OPEN with SSH_FXF_EXCL: the new file, or None when the name exists; a
        create disposition that forbids an existing file (FILE_CREATE) raises."""
        try:
            return await RemoteFile.open(session, path, flags, params.file_mode & 0o7777)
        except SftpError as exc:
            failure = await status_error(exc, session, Probe.CREATE_NEW, path)
            if (
                failure.status != NtStatus.STATUS_OBJECT_NAME_COLLISION
                or params.disposition == CreateDisposition.FILE_CREATE
            ):
                raise failure from None
        return None

    @staticmethod
    async def _close_quietly(remote: RemoteFile) -> None:
        try:
            await remote.close()
        except SftpError as exc:
            log.debug("closing %s: %s", remote.path, exc)

    @_entry
    async def close_srv_open(self, rx_context: RxContext) -> NtStatus:
        """CLOSE the handle after its writes; a failure (a full disk seen at close) is
        the user's close() error."""
        ctx = self._open_of(rx_context)
        if ctx is None or ctx.writes is None:
            return NtStatus.STATUS_SUCCESS
        remote = ctx.writes.own
        try:
            await ctx.writes.close()
        except SftpError as exc:
            raise await status_error(exc, remote.session, Probe.SPACE, remote.path) from None
        return NtStatus.STATUS_SUCCESS

    @_entry
    async def flush(self, rx_context: RxContext) -> NtStatus:
        """fsync@openssh.com once every write of the handle is acknowledged. A server
        without it: success once the writes are acknowledged (logged once per mount)."""
        ctx = self._open_of(rx_context)
        if ctx is None or ctx.writes is None or not ctx.writes.own.writable:
            return NtStatus.STATUS_SUCCESS
        remote = ctx.writes.own
        # One fsync covers them all: it syncs the file, whichever handle wrote.
        await ctx.writes.wait_writes()
        if not remote.session.has(EXT_FSYNC):
            if not self._warned_no_fsync:
                self._warned_no_fsync = True
                log.warning(
                    "the server lacks %s: fsync() returns once the server has every "
                    "byte, without syncing its disk",
                    EXT_FSYNC,
                )
            return NtStatus.STATUS_SUCCESS
        try:
            await remote.fsync()
        except SftpError as exc:
            raise await status_error(exc, remote.session, Probe.SPACE, remote.path) from None
        return NtStatus.STATUS_SUCCESS

    # -- low I/O ---------------------------------------------------------------------------

    def _handles_for_io(self, rx_context: RxContext, want: OpenFlags) -> SpreadWrites:
        ctx = self._open_of(rx_context)
        if ctx is None or ctx.writes is None:
            raise NtStatusError(NtStatus.STATUS_INVALID_DEVICE_REQUEST, "no data handle")
        if not ctx.writes.own.flags & want:
            raise NtStatusError(NtStatus.STATUS_ACCESS_DENIED, "not opened for this access")
        return ctx.writes

    @staticmethod
    def _invalidate_read_ahead(fcb: Fcb | None) -> None:
        """Data read ahead by any open of the file may be stale after a write to it."""
        if fcb is None:
            return
        for srv_open in fcb.srv_opens:
            ctx = srv_open.context
            if isinstance(ctx, _Open) and ctx.file is not None:
                ctx.file.invalidate_read_ahead()

    @_entry
    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        """Queue the write as pipelined requests and answer STATUS_PENDING; the write
        completes with its byte count once every reply has come back OK, or with the
        status of the first failure (nothing is then claimed as written)."""
        writes = self._handles_for_io(rx_context, OpenFlags.SSH_FXF_WRITE)
        rw = rx_context.low_io.read_write
        self._invalidate_read_ahead(rx_context.fcb)
        # The core never has two overlapping paging writes in flight, so they may
        # spread over the file's handles on several sessions (_spread); others keep
        # to its own handle, in order.
        if rw.flags & _PAGING_IO:
            remote = await writes.handle_for(rw.byte_offset, len(rw.buffer))
        else:
            remote = writes.own
        try:
            batch = await remote.submit_write(rw.byte_offset, rw.buffer)
        except BaseException:
            # Timed out waiting for room: this write no longer counts as in flight.
            remote.write_done()
            raise
        if rx_context.set_cancel_routine(_complete_cancelled) == NtStatus.STATUS_CANCELLED:
            remote.write_done()
            rx_context.complete_lowio(NtStatus.STATUS_CANCELLED)
            return NtStatus.STATUS_PENDING
        assert self._device is not None
        self._device.nursery.start_soon(
            self._finish_write, rx_context, remote, batch, len(rw.buffer)
        )
        return NtStatus.STATUS_PENDING

    async def _finish_write(
        self, rx_context: RxContext, remote: RemoteFile, batch: WriteBatch, length: int
    ) -> None:
        status, information = NtStatus.STATUS_UNSUCCESSFUL, 0
        try:
            with trio.move_on_after(self.tuning.timeout) as deadline:
                failure = await batch.wait()
            if deadline.cancelled_caught:
                status = TIMEOUT_STATUS
                log.warning(
                    "write of %d bytes at %d to %s: no answer within %g s",
                    length,
                    rx_context.low_io.read_write.byte_offset,
                    remote.path,
                    self.tuning.timeout,
                )
            elif failure is None:
                status, information = NtStatus.STATUS_SUCCESS, length
            else:
                status = await nt_status_of(failure[1], remote.session, Probe.SPACE, remote.path)
                log.info(
                    "write of %d bytes at %d to %s failed at offset %d: %s -> %s",
                    length,
                    rx_context.low_io.read_write.byte_offset,
                    remote.path,
                    failure[0],
                    failure[1],
                    status,
                )
        except Exception:
            # This runs in the mount's nursery: never let it take the mount down.
            log.exception("completing a write to %s", remote.path)
        finally:
            remote.write_done()
            if rx_context.clear_cancel_routine():
                rx_context.complete_lowio(status, information)

    @_entry
    async def lowio_read(self, rx_context: RxContext) -> NtStatus:
        """Up to ByteCount bytes (short only at the end of the file); at or past the end,
        STATUS_END_OF_FILE, which the core turns into a read of 0 bytes."""
        remote = self._handles_for_io(rx_context, OpenFlags.SSH_FXF_READ).own
        rw = rx_context.low_io.read_write
        if rw.byte_count == 0:
            rw.buffer = b""
            rx_context.io_status.information = 0
            return NtStatus.STATUS_SUCCESS
        try:
            data = await remote.read(rw.byte_offset, rw.byte_count)
        except SftpError as exc:
            raise await status_error(exc, remote.session, Probe.NONE, remote.path) from None
        if not data:
            return NtStatus.STATUS_END_OF_FILE
        rw.buffer = data
        rx_context.io_status.information = len(data)
        return NtStatus.STATUS_SUCCESS

    @_entry
    async def lowio_fsctl(self, rx_context: RxContext) -> NtStatus:
        """Symlinks: SET creates the link with SSH_FXP_SYMLINK (target stored as given,
        never rebased onto the share root); GET reads it with SSH_FXP_READLINK."""
        assert rx_context.fcb is not None
        path = self._remote(rx_context.fcb.path)
        fsctl = rx_context.low_io.fsctl
        session = self.pool.pick()
        if fsctl.fs_control_code == FsControlCode.FSCTL_GET_REPARSE_POINT:
            try:
                rx_context.irp.link_target = await session.readlink(path)
            except SftpError as exc:
                raise await status_error(exc, session, Probe.READLINK, path) from None
            return NtStatus.STATUS_SUCCESS
        try:
            await session.symlink(path, fsctl.target)
            attrs = await session.lstat(path)
        except SftpError as exc:
            raise await status_error(exc, session, Probe.CREATE_NEW, path) from None
        params = rx_context.irp.parameters
        if isinstance(params, FsControlParameters) and params.owner is not None:
            await self._owners.give_to_caller(session, path, attrs, params.owner)
        rx_context.irp.attributes = await self._owners.one(session, attrs)
        return NtStatus.STATUS_SUCCESS

    # -- information -----------------------------------------------------------------------

    @_entry
    async def query_file_info(self, rx_context: RxContext) -> NtStatus:
        """FSTAT through an open handle, else LSTAT of the path (a lookup must see a
        symlink itself, not its target)."""
        assert rx_context.fcb is not None
        ctx = self._open_of(rx_context)
        path = self._remote(rx_context.fcb.path)
        if ctx is not None and ctx.file is not None:
            remote = ctx.file
            try:
                attrs = await remote.fstat()
            except SftpError as exc:
                raise await status_error(exc, remote.session, Probe.NONE, path) from None
        else:
            session = self.pool.pick()
            try:
                attrs = await (session.stat(path) if ctx is not None else session.lstat(path))
            except SftpError as exc:
                # No parent probe: a lookup answers ENOENT for a missing name and for a
                # missing parent alike, and every new file starts with such a lookup.
                raise await status_error(exc, session, Probe.NONE, path) from None
        rx_context.irp.attributes = await self._owners.one(self.pool.pick(), attrs)
        return NtStatus.STATUS_SUCCESS

    @_entry
    async def set_file_info(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        params = rx_context.irp.parameters
        assert isinstance(params, SetInformationParameters)
        info = params.buffer
        path = self._remote(rx_context.fcb.path)
        ctx = self._open_of(rx_context)
        remote = ctx.file if ctx is not None else None
        if isinstance(info, FileBasicInformation):
            await self._set_basic(rx_context, path, remote, info)
        elif isinstance(info, FileEndOfFileInformation):
            await self._set_end_of_file(rx_context, path, remote, info.end_of_file)
        elif isinstance(info, FileRenameInformation):
            await self._rename(path, self._remote(info.new_name), info.replace_if_exists)
        elif isinstance(info, FileLinkInformation):
            await self._link(rx_context, path, self._remote(info.new_name))
        elif isinstance(info, FileDispositionInformation) and info.delete_file:
            known = rx_context.fcb.attributes
            await self._delete(path, None if known is None else known.is_dir)
        return NtStatus.STATUS_SUCCESS

    async def _set_basic(
        self,
        rx_context: RxContext,
        path: str,
        remote: RemoteFile | None,
        info: FileBasicInformation,
    ) -> None:
        """FSETSTAT, or by name LSETSTAT: a change by name is a change to the name itself
        (the kernel resolves symlinks before chmod; what reaches us for a symlink is
        lutimes or lchown, as tar does after extracting one). SFTP v3 sets uid with gid
        and atime with mtime, so a half given pair is completed from the current
        attributes. Times are whole seconds."""
        session = remote.session if remote is not None else self.pool.pick()
        try:
            half_given = (info.uid is None) != (info.gid is None) or (info.atime_ns is None) != (
                info.mtime_ns is None
            )
            current = await self._stat_via(session, path, remote) if half_given else Attrs()
            attrs = basic_attrs(self._owners.to_server(info), current)
            if remote is not None:
                fresh = await remote.fsetstat_and_fstat(attrs)
            else:
                fresh = await session.lsetstat_and_lstat(path, attrs)
        except SftpError as exc:
            raise await status_error(exc, session, Probe.NONE, path) from None
        rx_context.irp.attributes = await self._owners.one(session, fresh)

    @staticmethod
    async def _stat_via(session: SftpSession, path: str, remote: RemoteFile | None) -> Attrs:
        return await remote.fstat() if remote is not None else await session.lstat(path)

    async def _set_end_of_file(
        self, rx_context: RxContext, path: str, remote: RemoteFile | None, size: int
    ) -> None:
        """ftruncate through a writable handle (FSETSTAT size), else truncate by path."""
        self._invalidate_read_ahead(rx_context.fcb)
        writable = remote is not None and remote.writable
        session = remote.session if remote is not None else self.pool.pick()
        try:
            if remote is not None and writable:
                await remote.wait_writes()
                await remote.fsetstat(Attrs(size=size))
            else:
                await session.setstat(path, Attrs(size=size))
        except SftpError as exc:
            raise await status_error(exc, session, Probe.SPACE, path) from None

    async def _rename(self, old: str, new: str, replace: bool) -> None:
        """posix-rename@openssh.com when the target may be replaced, else SSH_FXP_RENAME
        (which refuses an existing target: OBJECT_NAME_COLLISION).

        Without posix-rename, a replacing rename removes the target and then renames:
        NOT atomic (another client may see the name missing for a moment, and a failure
        between the two steps loses the old target). Logged when it happens.
        """
        if old == new:
            return
        if new.startswith(old.rstrip("/") + "/"):
            raise NtStatusError(NtStatus.STATUS_INVALID_PARAMETER, "rename into itself")
        session = self.pool.pick()
        try:
            if replace and session.has(EXT_POSIX_RENAME):
                await session.posix_rename(old, new)
                return
            try:
                await session.rename(old, new)
                return
            except SftpError as exc:
                failure = await status_error(exc, session, Probe.RENAME, old, new)
                if not replace or failure.status != NtStatus.STATUS_OBJECT_NAME_COLLISION:
                    raise failure from None
            log.warning("%s: no %s; replacing %s non-atomically", old, EXT_POSIX_RENAME, new)
            await session.remove(new)
            await session.rename(old, new)
        except SftpError as exc:
            probe = Probe.RENAME_REPLACE if replace else Probe.RENAME
            raise await status_error(exc, session, probe, old, new) from None

    async def _link(self, rx_context: RxContext, old: str, new: str) -> None:
        session = self.pool.pick()
        if not session.has(EXT_HARDLINK):
            raise NtStatusError(NtStatus.STATUS_NOT_SUPPORTED, f"the server lacks {EXT_HARDLINK}")
        try:
            await session.hardlink(old, new)
            attrs = await session.lstat(old)
        except SftpError as exc:
            raise await status_error(exc, session, Probe.CREATE_NEW, new) from None
        rx_context.irp.attributes = await self._owners.one(session, attrs)

    async def _delete(self, path: str, known_dir: bool | None) -> None:
        """REMOVE or RMDIR by the file's type (POSIX unlink: at once, not on close).
        The type the core last saw (``known_dir``) saves the LSTAT, one round trip of
        two (rm -rf); if that try fails, the type is asked for and the error that
        then comes is the one reported."""
        if path == self._root:
            raise NtStatusError(NtStatus.STATUS_ACCESS_DENIED, "the share root")
        session = self.pool.pick()
        if known_dir is not None:
            with contextlib.suppress(SftpError):
                await (session.rmdir(path) if known_dir else session.remove(path))
                return
        try:
            directory = is_dir(await session.lstat(path))
        except SftpError as exc:
            raise await status_error(exc, session, Probe.NONE, path) from None
        try:
            await (session.rmdir(path) if directory else session.remove(path))
        except SftpError as exc:
            raise await status_error(
                exc, session, Probe.RMDIR if directory else Probe.REMOVE, path
            ) from None

    @_entry
    async def query_directory(self, rx_context: RxContext) -> NtStatus:
        """OPENDIR/READDIR/CLOSE: every entry with the attributes READDIR carries (an
        lstat each) and the link count from its longname; without . and .."""
        assert rx_context.fcb is not None
        path = self._remote(rx_context.fcb.path)
        session = self.pool.pick()
        try:
            names = await session.listdir(path)
        except SftpError as exc:
            raise await status_error(exc, session, Probe.OPENDIR, path) from None
        names = [n for n in names if n.filename not in (".", "..")]
        shown = await self._owners.attributes(
            session, [(n.attrs, nlink_of(n.longname)) for n in names]
        )
        rx_context.irp.entries = [
            DirEntry(n.filename, attributes) for n, attributes in zip(names, shown, strict=True)
        ]
        return NtStatus.STATUS_SUCCESS

    @_entry
    async def query_volume_info(self, rx_context: RxContext) -> NtStatus:
        """statvfs@openssh.com on the share root; zeros when the server lacks it."""
        session = self.pool.pick()
        if not session.has(EXT_STATVFS):
            rx_context.irp.volume = VolumeInfo()
            return NtStatus.STATUS_SUCCESS
        try:
            vfs = await session.statvfs(self._root)
        except SftpError as exc:
            raise await status_error(exc, session, Probe.NONE, self._root) from None
        rx_context.irp.volume = VolumeInfo(
            block_size=vfs.frsize or vfs.bsize,
            total_blocks=vfs.blocks,
            free_blocks=vfs.bfree,
            available_blocks=vfs.bavail,
            total_files=vfs.files,
            free_files=vfs.favail,
            max_name_length=vfs.namemax,
        )
        return NtStatus.STATUS_SUCCESS


def _complete_cancelled(rx_context: RxContext) -> None:
    """Cancel routine of a write in flight: the requests are sent and may still land,
    but the write is reported as cancelled and claims no bytes."""
    rx_context.complete_lowio(NtStatus.STATUS_CANCELLED)
