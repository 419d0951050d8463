"""``localdir:///path``: an rxfs mini-redirector that serves a local directory.

A passthrough backend, written as a second example next to ``memory://``: every entry of
the dispatch table a file system needs, each a few lines of ``os`` calls. It shows the
two things every real backend must get right:

* Nothing blocks the trio loop. Every system call runs in a worker thread through
  ``trio.to_thread.run_sync`` with a CapacityLimiter of this backend's own (``-o
  threads=N``), never trio's global default, which other code in the process shares.
* Errors are NTSTATUS, mapped from errno in one table (:data:`NTSTATUS_OF_ERRNO`); the
  front end maps them back to the errno the user sees.

Unlike ``memory://``, reads and writes complete synchronously: the entry awaits its
thread and returns STATUS_SUCCESS with ``IoStatus.Information`` set, rather than
STATUS_PENDING and a later ``complete_lowio``. Both are valid; see docs/plugins.md.

Symlinks are created and read as they are and never followed by the backend itself
(O_NOFOLLOW, lstat), so a link pointing outside the served directory stays a link.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

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
    RxContext,
    SetInformationParameters,
    SrvCall,
    VNetRoot,
    VolumeInfo,
)

__all__ = ["NTSTATUS_OF_ERRNO", "LocalDirMiniRdr", "ntstatus_for"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_THREADS = 8

_S = NtStatus

# errno -> NTSTATUS, the one table of this backend. The front end maps each back to the
# same errno (DESIGN §6), so the user sees what the local file system said.
NTSTATUS_OF_ERRNO: dict[int, NtStatus] = {
    errno.ENOENT: _S.STATUS_OBJECT_NAME_NOT_FOUND,
    errno.EACCES: _S.STATUS_ACCESS_DENIED,
    errno.EPERM: _S.STATUS_ACCESS_DENIED,
    errno.EEXIST: _S.STATUS_OBJECT_NAME_COLLISION,
    errno.ENOTEMPTY: _S.STATUS_DIRECTORY_NOT_EMPTY,
    errno.ENOTDIR: _S.STATUS_NOT_A_DIRECTORY,
    errno.EISDIR: _S.STATUS_FILE_IS_A_DIRECTORY,
    errno.ENOSPC: _S.STATUS_DISK_FULL,
    errno.EDQUOT: _S.STATUS_QUOTA_EXCEEDED,
    errno.EROFS: _S.STATUS_MEDIA_WRITE_PROTECTED,
    errno.EINVAL: _S.STATUS_INVALID_PARAMETER,
    errno.ENAMETOOLONG: _S.STATUS_NAME_TOO_LONG,
    errno.EXDEV: _S.STATUS_NOT_SAME_DEVICE,
    errno.EMFILE: _S.STATUS_TOO_MANY_OPENED_FILES,
    errno.ENFILE: _S.STATUS_TOO_MANY_OPENED_FILES,
    errno.ENOMEM: _S.STATUS_INSUFFICIENT_RESOURCES,
    errno.EOPNOTSUPP: _S.STATUS_NOT_SUPPORTED,
    errno.EBADF: _S.STATUS_INVALID_HANDLE,
    errno.EIO: _S.STATUS_IO_DEVICE_ERROR,
}


def ntstatus_for(exc: OSError) -> NtStatus:
    """The NTSTATUS of a failed system call; an errno the table lacks is logged and
    becomes STATUS_IO_DEVICE_ERROR (EIO for the user)."""
    status = NTSTATUS_OF_ERRNO.get(exc.errno or 0)
    if status is None:
        log.warning("localdir: unmapped error %r, answering EIO", exc)
        return NtStatus.STATUS_IO_DEVICE_ERROR
    return status


def _attributes(st: os.stat_result) -> FileAttributes:
    return FileAttributes(
        mode=st.st_mode,
        size=st.st_size,
        uid=st.st_uid,
        gid=st.st_gid,
        atime_ns=st.st_atime_ns,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        nlink=st.st_nlink,
    )


_OPEN_FLAGS_OF: dict[CreateDisposition, int] = {
    CreateDisposition.FILE_OPEN: 0,
    CreateDisposition.FILE_CREATE: os.O_CREAT | os.O_EXCL,
    CreateDisposition.FILE_OPEN_IF: os.O_CREAT,
    CreateDisposition.FILE_OVERWRITE: os.O_TRUNC,
    CreateDisposition.FILE_OVERWRITE_IF: os.O_CREAT | os.O_TRUNC,
    CreateDisposition.FILE_SUPERSEDE: os.O_CREAT | os.O_TRUNC,
}


def _open_flags(params: CreateParameters, append: bool) -> int:
    access = params.desired_access
    reads = bool(access & AccessMask.FILE_READ_DATA)
    writes = bool(access & (AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA))
    flags = (os.O_RDWR if reads else os.O_WRONLY) if writes else os.O_RDONLY
    if append:
        flags |= os.O_APPEND
    return flags | _OPEN_FLAGS_OF[params.disposition] | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(eq=False)
class _Handle:
    """SrvOpen.context: the local descriptor (None for a directory)."""

    fd: int | None
    append: bool


class LocalDirMiniRdr(MiniRdrDispatch):
    scheme = "localdir"
    description = "a local directory, passed through (example plugin)"
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
        "threads": f"worker threads for file I/O (default {DEFAULT_THREADS})"
    }

    def __init__(self) -> None:
        self._root = "/"
        self._limiter = trio.CapacityLimiter(DEFAULT_THREADS)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking call in one of this backend's worker threads."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _local(self, path: str) -> str:
        """The local path of the core's path ('/' is the served directory)."""
        return os.path.join(self._root, path.lstrip("/"))

    # -- mount ----------------------------------------------------------------------

    async def create_srv_call(self, srv_call: SrvCall) -> NtStatus:
        if srv_call.url.netloc:
            srv_call.status_message = (
                f"localdir:// serves a local path: write localdir:///path, "
                f"not localdir://{srv_call.url.netloc}/..."
            )
            return NtStatus.STATUS_BAD_NETWORK_NAME
        return NtStatus.STATUS_SUCCESS

    async def create_v_net_root(self, v_net_root: VNetRoot) -> NtStatus:
        threads = v_net_root.options.get("threads")
        if threads is not None:
            if not threads.isdigit() or int(threads) < 1:
                return NtStatus.STATUS_INVALID_PARAMETER
            self._limiter = trio.CapacityLimiter(int(threads))
        self._root = v_net_root.net_root.root
        try:
            st = await self._run(os.stat, self._root)
        except OSError as exc:
            return ntstatus_for(exc)
        if not stat.S_ISDIR(st.st_mode):
            return NtStatus.STATUS_NOT_A_DIRECTORY
        return NtStatus.STATUS_SUCCESS

    # -- create and close -----------------------------------------------------------

    async def create(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None and rx_context.srv_open is not None
        params = rx_context.irp.parameters
        assert isinstance(params, CreateParameters)
        local = self._local(rx_context.fcb.path)
        append = rx_context.srv_open.append
        try:
            if params.options & CreateOptions.FILE_DIRECTORY_FILE:
                st = await self._run(self._open_directory, local, params)
                handle = _Handle(None, append=False)
            else:
                fd, st = await self._run(self._open_file, local, params, append)
                handle = _Handle(fd, append)
        except OSError as exc:
            return ntstatus_for(exc)
        rx_context.srv_open.context = handle
        rx_context.irp.attributes = _attributes(st)
        return NtStatus.STATUS_SUCCESS

    @staticmethod
    def _open_directory(local: str, params: CreateParameters) -> os.stat_result:
        if params.disposition in (CreateDisposition.FILE_CREATE, CreateDisposition.FILE_OPEN_IF):
            try:
                os.mkdir(local, params.file_mode & 0o7777)
            except FileExistsError:
                if params.disposition == CreateDisposition.FILE_CREATE:
                    raise
        st = os.lstat(local)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", local)
        return st

    @staticmethod
    def _open_file(
        local: str, params: CreateParameters, append: bool
    ) -> tuple[int, os.stat_result]:
        fd = os.open(local, _open_flags(params, append), params.file_mode & 0o7777)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode) and params.options & CreateOptions.FILE_NON_DIRECTORY_FILE:
                raise IsADirectoryError(errno.EISDIR, "is a directory", local)
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    async def close_srv_open(self, rx_context: RxContext) -> NtStatus:
        handle = _handle(rx_context)
        if handle.fd is None:
            return NtStatus.STATUS_SUCCESS
        fd, handle.fd = handle.fd, None
        try:
            await self._run(os.close, fd)
        except OSError as exc:  # e.g. a network file system's deferred ENOSPC
            return ntstatus_for(exc)
        return NtStatus.STATUS_SUCCESS

    async def flush(self, rx_context: RxContext) -> NtStatus:
        """fsync(2): what the core sent is on stable storage once this returns."""
        handle = _handle(rx_context)
        if handle.fd is None:
            return NtStatus.STATUS_SUCCESS
        try:
            await self._run(os.fsync, handle.fd)
        except OSError as exc:
            return ntstatus_for(exc)
        return NtStatus.STATUS_SUCCESS

    # -- low I/O: completed before returning (no STATUS_PENDING) --------------------

    async def lowio_read(self, rx_context: RxContext) -> NtStatus:
        fd = _fd(rx_context)
        rw = rx_context.low_io.read_write
        try:
            rw.buffer = await self._run(os.pread, fd, rw.byte_count, rw.byte_offset)
        except OSError as exc:
            return ntstatus_for(exc)
        rx_context.io_status.information = len(rw.buffer)
        return NtStatus.STATUS_SUCCESS

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        handle = _handle(rx_context)
        fd = _fd(rx_context)
        rw = rx_context.low_io.read_write
        try:
            written = await self._run(_write_all, fd, rw.buffer, rw.byte_offset, handle.append)
        except OSError as exc:
            return ntstatus_for(exc)
        rx_context.io_status.information = written
        return NtStatus.STATUS_SUCCESS

    async def lowio_fsctl(self, rx_context: RxContext) -> NtStatus:
        """Symlinks: created and read as they are, never followed here."""
        assert rx_context.fcb is not None
        fsctl = rx_context.low_io.fsctl
        local = self._local(rx_context.fcb.path)
        try:
            if fsctl.fs_control_code == FsControlCode.FSCTL_GET_REPARSE_POINT:
                rx_context.irp.link_target = await self._run(os.readlink, local)
            else:
                await self._run(os.symlink, fsctl.target, local)
                rx_context.irp.attributes = _attributes(await self._run(os.lstat, local))
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # readlink of something that is not a link
                return NtStatus.STATUS_INVALID_PARAMETER
            return ntstatus_for(exc)
        return NtStatus.STATUS_SUCCESS

    # -- information ----------------------------------------------------------------

    async def query_file_info(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        srv_open = rx_context.srv_open
        fd = srv_open.context.fd if srv_open is not None else None
        try:
            if fd is not None:
                st = await self._run(os.fstat, fd)
            else:
                st = await self._run(os.lstat, self._local(rx_context.fcb.path))
        except OSError as exc:
            return ntstatus_for(exc)
        rx_context.irp.attributes = _attributes(st)
        return NtStatus.STATUS_SUCCESS

    async def set_file_info(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        params = rx_context.irp.parameters
        assert isinstance(params, SetInformationParameters)
        srv_open = rx_context.srv_open
        fd = srv_open.context.fd if srv_open is not None else None
        local = self._local(rx_context.fcb.path)
        info = params.buffer
        try:
            st = await self._run(self._set, local, fd, info)
        except OSError as exc:
            return ntstatus_for(exc)
        if st is not None:
            rx_context.irp.attributes = _attributes(st)
        return NtStatus.STATUS_SUCCESS

    def _set(self, local: str, fd: int | None, info: object) -> os.stat_result | None:
        """One SetInformation class; returns the file's attributes afterwards (None once
        it is deleted)."""
        if isinstance(info, FileEndOfFileInformation):
            os.truncate(fd if fd is not None else local, info.end_of_file)
        elif isinstance(info, FileBasicInformation):
            _set_basic(local, info)
        elif isinstance(info, FileRenameInformation):
            new = self._local(info.new_name)
            # Without replace_if_exists (RENAME_NOREPLACE) the check and the rename are
            # two steps: os has no renameat2, so another local writer could slip in.
            if not info.replace_if_exists and os.path.lexists(new):
                raise FileExistsError(errno.EEXIST, "exists", new)
            os.rename(local, new)
            return os.lstat(new)
        elif isinstance(info, FileLinkInformation):
            os.link(local, self._local(info.new_name), follow_symlinks=False)
        elif isinstance(info, FileDispositionInformation):
            if stat.S_ISDIR(os.lstat(local).st_mode):
                os.rmdir(local)
            else:
                os.unlink(local)
            return None
        else:
            raise OSError(errno.EINVAL, "unknown information class")
        return os.fstat(fd) if fd is not None else os.lstat(local)

    async def query_directory(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        try:
            entries = await self._run(_list, self._local(rx_context.fcb.path))
        except OSError as exc:
            return ntstatus_for(exc)
        rx_context.irp.entries = entries
        return NtStatus.STATUS_SUCCESS

    async def query_volume_info(self, rx_context: RxContext) -> NtStatus:
        try:
            vfs = await self._run(os.statvfs, self._root)
        except OSError as exc:
            return ntstatus_for(exc)
        rx_context.irp.volume = VolumeInfo(
            block_size=vfs.f_frsize,
            total_blocks=vfs.f_blocks,
            free_blocks=vfs.f_bfree,
            available_blocks=vfs.f_bavail,
            total_files=vfs.f_files,
            free_files=vfs.f_ffree,
            max_name_length=vfs.f_namemax,
        )
        return NtStatus.STATUS_SUCCESS


def _handle(rx_context: RxContext) -> _Handle:
    assert rx_context.srv_open is not None
    handle = rx_context.srv_open.context
    assert isinstance(handle, _Handle)
    return handle


def _fd(rx_context: RxContext) -> int:
    fd = _handle(rx_context).fd
    if fd is None:  # the core refuses reads and writes on directories before this
        raise OSError(errno.EBADF, "no descriptor")
    return fd


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int, append: bool) -> int:
    """Every byte or an OSError: a short write is retried from where it stopped."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        if append:  # O_APPEND: the kernel places each write at the end, atomically
            done += os.write(fd, view[done:])
        else:
            done += os.pwrite(fd, view[done:], offset + done)
    return done


def _set_basic(local: str, info: FileBasicInformation) -> None:
    if info.mode is not None:
        # Linux has no lchmod: refuse rather than follow a link that replaced the file.
        if stat.S_ISLNK(os.lstat(local).st_mode):
            raise OSError(errno.EOPNOTSUPP, "the mode of a symlink cannot change", local)
        os.chmod(local, info.mode & 0o7777)
    if info.uid is not None or info.gid is not None:
        uid = -1 if info.uid is None else info.uid
        gid = -1 if info.gid is None else info.gid
        os.chown(local, uid, gid, follow_symlinks=False)
    if info.atime_ns is not None or info.mtime_ns is not None:
        st = os.lstat(local)
        atime = st.st_atime_ns if info.atime_ns is None else info.atime_ns
        mtime = st.st_mtime_ns if info.mtime_ns is None else info.mtime_ns
        os.utime(local, ns=(atime, mtime), follow_symlinks=False)


def _list(local: str) -> list[DirEntry]:
    with os.scandir(local) as entries:
        return [
            DirEntry(entry.name, _attributes(entry.stat(follow_symlinks=False)))
            for entry in entries
        ]
