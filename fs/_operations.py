"""The pyfuse3 Operations: each FUSE request becomes an IRP for the core.

Every handler is wrapped by :func:`_handler`: pyfuse3 turns only ``FUSEError`` into an
error reply and lets any other exception tear down every request in flight, so an
unexpected exception is logged with its traceback and answered EIO; the mount stays up.
NTSTATUS becomes an errno in one place (``fs/_errors.py``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import posixpath
import stat
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pyfuse3
import trio
from pyfuse3 import FileHandleT, FUSEError, InodeT
from rxfs.rdbss import (
    IRP_MN_FLUSH_NO_SYNC,
    IRP_MN_PAGING_IO,
    IRP_MN_QUERY_FROM_SERVER,
    Fobx,
    NtStatus,
    OptionError,
    RxDevice,
    nt_success,
    option_what,
)
from rxfs.rdbss.irp import (
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
    QueryInformationParameters,
    ReadParameters,
    SetInformationBuffer,
    SetInformationParameters,
    WriteParameters,
)
from rxfs.rdbss.ntstatus import NAME_NOT_FOUND

from ._errors import errno_for
from ._inodes import InodeTable
from ._ownrequests import own_requests

if TYPE_CHECKING:
    from ._status import MetricsAddress

__all__ = ["FsOptions", "RxOperations"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

NAME_MAX = 255


def _handler(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if args and type(args[-1]) is pyfuse3.RequestContext:
            own_requests.check(args[-1], fn.__name__)
        # rxfs trace: one test per request while nobody traces.
        tracer = args[0].tracer  # type: ignore[attr-defined]
        trace = tracer.begin_request(fn.__name__) if tracer.subscribers else None
        answer = 0
        try:
            return await fn(*args, **kwargs)
        except FUSEError as exc:
            answer = exc.errno
            raise
        except Exception:
            answer = errno.EIO
            log.exception("%s failed unexpectedly; answering EIO", fn.__name__)
            raise FUSEError(errno.EIO) from None
        finally:
            if trace is not None:
                tracer.end_request(*trace, answer)

    return wrapper


@dataclass(slots=True)
class FsOptions:
    """Front-end mount options (the ``-o`` names the core and backends do not own)."""

    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    allow_other: bool = False
    default_permissions: bool = False
    writeback_cache: bool = True
    # Shown instead of what the server says (libfuse's uid=, gid=, umask=).
    uid: int | None = None
    gid: int | None = None
    umask: int | None = None
    # -o metrics: where the Prometheus endpoint listens (off unless given).
    metrics: MetricsAddress | None = None

    NAMES = {
        "entry_timeout": "seconds the kernel may cache names (default: attr_timeout)",
        "writeback_cache": "the kernel gathers writes in its page cache and sends them "
        "in large requests, under close-to-open consistency (default yes)",
        "allow_other": "let users other than the mounting one use the mount (implies "
        "default_permissions)",
        "default_permissions": "the kernel checks the mode bits against local user ids "
        "before asking the server (default: the server alone decides, as with sshfs)",
        "uid": "show every file as owned by this local uid (as libfuse's uid=)",
        "gid": "show every file as owned by this local gid (as libfuse's gid=)",
        "umask": "show every file with permissions 0777 minus these octal bits (as "
        "libfuse's umask=; the server keeps its modes)",
        "metrics": "serve the status counters for Prometheus on [HOST:]PORT (default host "
        "127.0.0.1; off unless given)",
    }

    def set_shown(self, name: str, value: str) -> None:
        """uid=, gid= or umask=; raises OptionError (one line) for a bad value."""
        what = option_what(name, value)
        text = value.strip()
        if name == "umask":
            if not text or any(c not in "01234567" for c in text) or int(text, 8) > 0o777:
                raise OptionError(f"{what}: expected octal permission bits, 0 to 777")
            self.umask = int(text, 8)
            return
        if not (text.isascii() and text.isdigit()) or int(text) >= 2**32 - 1:
            raise OptionError(f"{what}: expected a numeric {name} from 0 to 4294967294")
        setattr(self, name, int(text))

    @property
    def kernel_checks_permissions(self) -> bool:
        """Only a mount shared with other users needs the kernel's checks: the server
        would let every one of them act as the account that mounted it. For the mounting
        user alone, the server's answer is the right one (the kernel's would compare the
        server's user ids with local ones), and the checks cost a GETATTR per create."""
        return self.default_permissions or self.allow_other


@dataclass(slots=True)
class _DirHandle:
    path: str
    entries: list[DirEntry] = field(default_factory=list)


def _entry(
    inode: InodeT, attrs: FileAttributes, options: FsOptions, names: int = 1
) -> pyfuse3.EntryAttributes:
    """``names``: how many names of a file the mount knows. SFTP v3 cannot tell a link
    count (a file's answer is 1), and the kernel keeps its own: unlink drops it by one,
    and a link to a file whose count fell to 0 fails with ENOENT (ln a b; rm b; ln a b
    did). A file counts at least the names made or seen through this mount; one linked
    on the server and not yet seen here is undercounted (README)."""
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = inode
    entry.generation = 0
    entry.entry_timeout = options.entry_timeout
    entry.attr_timeout = options.attr_timeout
    entry.st_mode = attrs.mode
    if options.umask is not None:
        entry.st_mode = stat.S_IFMT(attrs.mode) | (0o777 & ~options.umask)
    entry.st_nlink = attrs.nlink if attrs.is_dir else max(attrs.nlink, names)
    entry.st_uid = attrs.uid if options.uid is None else options.uid
    entry.st_gid = attrs.gid if options.gid is None else options.gid
    entry.st_rdev = 0
    entry.st_size = attrs.size
    entry.st_blksize = 4096
    entry.st_blocks = (attrs.size + 511) // 512
    entry.st_atime_ns = attrs.atime_ns
    entry.st_mtime_ns = attrs.mtime_ns
    entry.st_ctime_ns = attrs.ctime_ns
    return entry


def _stale() -> FUSEError:
    """The file behind an inode is gone on the server. ESTALE makes Linux walk the path
    again with real lookups (LOOKUP_REVAL) and retry the call, so that open(O_CREAT)
    creates the file anew and stat() answers ENOENT, where ENOENT from the inode itself
    would leave the kernel's name in place and fail the create."""
    return FUSEError(errno_for(NtStatus.STATUS_FILE_DELETED))


def _check(status: NtStatus) -> None:
    """A failure status becomes the errno of one table."""
    if not nt_success(status):
        raise FUSEError(errno_for(status))


def _query(path: str | None = None, *, fobx: Fobx | None = None, from_server: bool = False) -> Irp:
    """By name, or through an open descriptor (fstat)."""
    return Irp(
        IrpMj.IRP_MJ_QUERY_INFORMATION,
        QueryInformationParameters(),
        minor_function=IRP_MN_QUERY_FROM_SERVER if from_server else 0,
        file_object=fobx,
        file_name=path,
    )


def _set_info_irp(
    buffer: SetInformationBuffer, *, path: str | None = None, fobx: Fobx | None = None
) -> Irp:
    return Irp(
        IrpMj.IRP_MJ_SET_INFORMATION,
        SetInformationParameters(buffer),
        file_object=fobx,
        file_name=path,
    )


def _close_flush(fobx: Fobx) -> Irp:
    """What every close(2) sends: land the bytes, report what did not land; no sync."""
    return Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, minor_function=IRP_MN_FLUSH_NO_SYNC, file_object=fobx)


def _access_for(flags: int, *, kernel_reads: bool = False) -> tuple[AccessMask, CreateOptions]:
    """open(2) flags -> DesiredAccess and CreateOptions. ``kernel_reads``: the page
    cache may read through this open (a write of part of a page reads the rest first),
    so a write-only open asks for reading too."""
    mode = flags & os.O_ACCMODE
    access = AccessMask.FILE_READ_ATTRIBUTES
    if mode in (os.O_RDONLY, os.O_RDWR) or kernel_reads:
        access |= AccessMask.FILE_READ_DATA
    if mode in (os.O_WRONLY, os.O_RDWR):
        # O_APPEND asks for append-only data access: the backend then lets the server
        # place each write at the end (SSH_FXF_APPEND), whatever the kernel's offset.
        access |= (
            AccessMask.FILE_APPEND_DATA
            if flags & os.O_APPEND
            else (AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA)
        )
    options = CreateOptions.FILE_NON_DIRECTORY_FILE
    if flags & (os.O_SYNC | os.O_DSYNC):
        options |= CreateOptions.FILE_WRITE_THROUGH
    if flags & os.O_DIRECT:
        options |= CreateOptions.FILE_NO_INTERMEDIATE_BUFFERING
    return access, options


def _own_times_written_back(fields: pyfuse3.SetattrFields) -> bool:
    """What the kernel sends to write back a file's times after buffered writes: mtime
    and ctime, nothing else (Linux's fuse_flush_times)."""
    return (
        fields.update_mtime
        and fields.update_ctime
        and not (
            fields.update_atime
            or fields.update_mode
            or fields.update_uid
            or fields.update_gid
            or fields.update_size
        )
    )


class RxOperations(pyfuse3.Operations):
    """FUSE requests -> IRPs. One instance per mount, on the mount's trio loop."""

    def __init__(self, device: RxDevice, options: FsOptions | None = None) -> None:
        super().__init__()
        self.device = device
        self.tracer = device.stats.tracer
        self.options = options or FsOptions()
        # Read by pyfuse3 at INIT. Close-to-open rules keep the kernel's cache coherent
        # with the server (DESIGN §9): see open() and _revalidate().
        self.enable_writeback_cache = self.options.writeback_cache
        self.inodes = InodeTable(renew_changed=self.options.writeback_cache)
        self._files: dict[FileHandleT, Fobx] = {}
        # The inode each open file handle is on.
        self._file_inodes: dict[FileHandleT, InodeT] = {}
        self._dirs: dict[FileHandleT, _DirHandle] = {}
        self._next_dir_handle = 1
        # Inodes a change made through this mount left with stale cached attributes.
        self._changed_here: set[InodeT] = set()
        # O_APPEND handles: the server places their writes (see _file_info).
        # O_APPEND handles and the path each was opened by.
        self._appending: dict[FileHandleT, str] = {}
        # (path, pid) of opens _revalidate answered ESTALE: the kernel retries at once,
        # in the same task.
        self._reopening: set[tuple[str, int]] = set()
        # Handles through the page cache that may write (see InodeTable.writer_opened).
        self._page_writers: set[FileHandleT] = set()
        # Set once the kernel has sent FUSE INIT (see init()).
        self.initialized = trio.Event()
        # A lease break: the kernel's cache of a file must go (RxChangeBufferingState).
        device.invalidate_file = self._invalidate_file

    def init(self) -> None:
        """pyfuse3 calls this from the INIT request's handler, before the reply goes;
        whoever waits on ``initialized`` runs after the reply has been applied."""
        self.initialized.set()

    # -- plumbing -----------------------------------------------------------------------

    async def _call(self, irp: Irp) -> Irp:
        """Dispatch ``irp``; a failure status becomes the errno of one table."""
        _check((await self.device.dispatch(irp)).status)
        return irp

    def _path(self, inode: InodeT) -> str:
        path = self.inodes.path_of(inode)
        if path is None:
            raise FUSEError(errno.ENOENT)
        return path

    def _child(self, parent_inode: InodeT, name: bytes) -> str:
        if len(name) > NAME_MAX:
            raise FUSEError(errno.ENAMETOOLONG)
        text = os.fsdecode(name)
        if "/" in text or text in ("", ".", ".."):
            raise FUSEError(errno.EINVAL)
        return posixpath.join(self._path(parent_inode), text)

    def _fobx(self, fh: FileHandleT) -> Fobx:
        fobx = self._files.get(fh)
        if fobx is None:
            raise FUSEError(errno.EBADF)
        return fobx

    def _owner_for(
        self, ctx: pyfuse3.RequestContext, parent_inode: InodeT
    ) -> tuple[int, int] | None:
        """Who a new file should belong to: on a mount shared with other users, the
        caller, as on a local disk (the kernel checks permissions against these ids),
        with the group of a set-group-ID directory it is made in; otherwise whoever the
        server makes it (the mounting user's login)."""
        if not self.options.allow_other:
            return None
        parent = self.inodes.last_attributes(parent_inode)
        setgid = parent is not None and parent.mode & stat.S_ISGID
        return (ctx.uid, parent.gid if parent is not None and setgid else ctx.gid)

    def _entry(self, inode: InodeT, attrs: FileAttributes) -> pyfuse3.EntryAttributes:
        attrs = self.inodes.precise_times(inode, attrs)
        return _entry(inode, attrs, self.options, self.inodes.name_count(inode))

    async def _stat(self, path: str, *, from_server: bool = False) -> FileAttributes:
        irp = await self._call(_query(path, from_server=from_server))
        assert irp.attributes is not None
        return irp.attributes

    async def _by_inode(self, inode: InodeT, request: Callable[[str], Irp]) -> Irp | None:
        """Run ``request(path)`` on the file behind ``inode`` by its name (each of its
        names in turn). A name the server no longer has (deleted or renamed by another
        client while the kernel held the inode) is taken from the inode. None when no
        name is left: the caller decides between an open descriptor and ESTALE."""
        for path in self.inodes.paths_of(inode):
            irp = request(path)
            status = (await self.device.dispatch(irp)).status
            if status not in NAME_NOT_FOUND:
                _check(status)
                return irp
            self._name_gone(inode, path)
        return None

    async def _on_inode(self, inode: InodeT, request: Callable[[str], Irp]) -> Irp:
        """``_by_inode`` for a request only a name can serve: ESTALE when none is left."""
        irp = await self._by_inode(inode, request)
        if irp is None:
            raise _stale()
        return irp

    def _name_gone(self, inode: InodeT, path: str) -> None:
        """The server no longer has ``path``: the inode loses the name, and the kernel is
        told to drop it too, or it would go on showing the file for entry_timeout. Told
        from pyfuse3's own thread: this handler may hold the directory's lock."""
        self.inodes.name_gone(inode, path)
        self._forget_name(path)

    def _renew_if_changed(self, inode: InodeT, attrs: FileAttributes) -> bool:
        """Under the writeback cache the kernel never takes a regular file's size or
        mtime from the server again: a file changed elsewhere (and not open here) gets
        new inode numbers for its names, and the kernel is told to drop those names, so
        that the next lookup builds a fresh inode (fs/_inodes.py)."""
        if not self.inodes.changed_elsewhere(inode, attrs):
            return False
        for path in self.inodes.paths_of(inode):
            self._renew_name(path)
        return True

    def _renew_name(self, path: str) -> bool:
        """Give ``path`` a new inode unless its inode may hold dirty pages here, and have
        the kernel drop its dentry (told from pyfuse3's thread, not waited for); whether
        it did."""
        if not self.inodes.renumber_unless_dirty(path):
            return False
        self._forget_name(path)
        return True

    async def _invalidate_file(self, path: str) -> None:
        """RxDevice.invalidate_file, for a lease break: the kernel writes back its dirty
        pages of ``path`` (they arrive as writes, which this loop must go on serving:
        hence a worker thread, DESIGN §10) and drops its pages and attributes. The size
        and mtime of a regular file it keeps under the writeback cache, so unless it
        may hold dirty pages still, its names get new inodes (_renew_if_changed)."""
        inode = self.inodes.find(path)
        if inode is None:
            return
        try:
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, False)
        except OSError as exc:  # the kernel forgot the inode meanwhile
            log.debug("invalidating %s: %s", path, exc)
        if self.enable_writeback_cache:
            self._renew_name(path)

    def _forget_name(self, path: str) -> None:
        """Tell the kernel to drop its dentry for ``path`` (from pyfuse3's thread: the
        handler may hold the directory's lock)."""
        entry = self._dentry(path)
        if entry is not None:
            pyfuse3.invalidate_entry_async(*entry, ignore_enoent=True)

    def _dentry(self, path: str) -> tuple[InodeT, bytes] | None:
        """(parent inode, name) of ``path`` as the kernel knows it; None for the root or
        a parent the kernel does not hold."""
        parent = self.inodes.find(posixpath.dirname(path))
        if parent is None or path == "/":
            return None
        return parent, os.fsencode(posixpath.basename(path))

    def _open_fobx(self, inode: InodeT) -> Fobx | None:
        """A descriptor still open on ``inode``: it reaches the file when no name does."""
        for fh, on in self._file_inodes.items():
            fobx = self._files.get(fh)
            if on == inode and fobx is not None and fobx.srv_open is not None:
                return fobx
        return None

    async def _lookup_entry(
        self, path: str, attrs: FileAttributes | None = None
    ) -> pyfuse3.EntryAttributes:
        if attrs is None:
            attrs = await self._stat(path)
        inode = self.inodes.add_lookup(path, attrs)
        return self._entry(inode, attrs)

    async def _create(
        self, path: str, params: CreateParameters
    ) -> tuple[Fobx, FileAttributes | None]:
        """Create or open ``path``: the handle, and the attributes the create left on
        its Fcb (None when there are none: the entry then asks the server)."""
        irp = await self._call(Irp(IrpMj.IRP_MJ_CREATE, params, file_name=path))
        fobx = irp.file_object
        assert fobx is not None
        return fobx, fobx.fcb.attributes if fobx.fcb is not None else None

    async def _close(self, fobx: Fobx) -> None:
        """IRP_MJ_CLEANUP then IRP_MJ_CLOSE; both are attempted, the first error wins."""
        cleanup = await self.device.dispatch(Irp(IrpMj.IRP_MJ_CLEANUP, file_object=fobx))
        close = await self.device.dispatch(Irp(IrpMj.IRP_MJ_CLOSE, file_object=fobx))
        for status in (cleanup.status, close.status):
            _check(status)

    async def _set_info(self, buffer: SetInformationBuffer, *, path: str) -> Irp:
        return await self._call(_set_info_irp(buffer, path=path))

    # -- names and attributes -----------------------------------------------------------

    @_handler
    async def lookup(
        self, parent_inode: InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return await self.getattr(parent_inode, ctx)
        if name == b"..":
            parent = posixpath.dirname(self._path(parent_inode))
            return await self._lookup_entry(parent)
        path = self._child(parent_inode, name)
        # A name the kernel holds and asks for again: its entry timed out, or it wants
        # the server's word before O_EXCL, mkdir, a rename target or after ESTALE. A
        # cached answer would defeat that (EEXIST for a file deleted meanwhile).
        try:
            attrs = await self._stat(path, from_server=self.inodes.held(path))
        except FUSEError as exc:
            if exc.errno == errno.ENOENT:
                return self._negative_entry(path)
            raise
        return await self._lookup_entry(path, attrs)

    def _negative_entry(self, path: str) -> pyfuse3.EntryAttributes:
        """ "No such name", for the kernel to keep while the directory cache vouches for
        it (at most entry_timeout): a build or a PATH search asks for the same missing
        names again and again, and each answer kept saves a request."""
        keep = min(self.options.entry_timeout, self.device.absent_for(path))
        if keep <= 0:
            raise FUSEError(errno.ENOENT)
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = InodeT(0)
        entry.entry_timeout = keep
        return entry

    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        # Never raises: pyfuse3 cannot report an error for forget.
        for inode, count in inode_list:
            self.inodes.forget(inode, count)

    @_handler
    async def getattr(self, inode: InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """A file without a name answers through a descriptor open on it (unlinked
        while open: fstat must not fail, and the size must cover what was written
        since); with none open, a file we unlinked answers its last attributes, and
        one whose names turned out gone on the server is stale."""
        named = self.inodes.path_of(inode) is not None
        if named:
            fresh = inode in self._changed_here
            self._changed_here.discard(inode)
            irp = await self._by_inode(inode, lambda path: _query(path, from_server=fresh))
            if irp is not None:
                assert irp.attributes is not None
                self._renew_if_changed(inode, irp.attributes)
                self.inodes.remember(inode, irp.attributes)
                return self._entry(inode, irp.attributes)
        fobx = self._open_fobx(inode)
        if fobx is not None:
            # No name left, but a descriptor: the file lives on through its handle
            # (unlinked while open), and only the handle knows its size now (what was
            # written since, held here or on the server). The kernel reads no further
            # than the size it is told.
            irp = await self._call(_query(fobx=fobx))
            assert irp.attributes is not None
            self.inodes.remember(inode, irp.attributes)
            return self._entry(inode, irp.attributes)
        if named:  # its names turned out gone on the server, and nothing holds it open
            raise _stale()
        attrs = self.inodes.last_attributes(inode)
        if attrs is None:
            raise FUSEError(errno.ENOENT)
        return self._entry(inode, attrs)

    @_handler
    async def setattr(
        self,
        inode: InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        fobx = self._files.get(fh) if fh is not None else None
        if fobx is not None and _own_times_written_back(fields) and self.inodes.written(inode):
            # The kernel writing back the mtime of its own writes (writeback cache):
            # the server stamps the file when those writes land, so this costs no
            # round trip. A program's utimensat carries atime or comes by name.
            self.inodes.times_set(inode, None, attr.st_mtime_ns)
            return await self.getattr(inode, ctx)
        if fields.update_size:
            await self._set_inode_info(inode, fobx, FileEndOfFileInformation(attr.st_size))
            self.inodes.resized(inode, attr.st_size)
        basic = FileBasicInformation(
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            mode=stat.S_IMODE(attr.st_mode) if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
        )
        if basic != FileBasicInformation():
            await self._set_inode_info(inode, fobx, basic)
            if basic.atime_ns is not None or basic.mtime_ns is not None:
                self.inodes.times_set(inode, basic.atime_ns, basic.mtime_ns)
            if basic.mode is not None or basic.uid is not None or basic.gid is not None:
                await self._other_names_changed(inode)
        return await self.getattr(inode, ctx)

    async def _other_names_changed(self, inode: InodeT) -> None:
        """A chmod or chown through one name shows through the file's other names at
        once. Names linked here share the inode; names linked on the server are other
        inodes, which SFTP v3 (no inode numbers) cannot tell apart from other files:
        every inode listed with several links that looks the same (a regular file of
        that size and mtime) asks the server next time, and the kernel drops the
        attributes it holds of them (attributes only: no lock is taken, so this cannot
        deadlock with a request). Files listed with one link (tar, chmod -R) cost
        nothing."""
        for other in self.inodes.maybe_same_file(inode):
            self._changed_here.add(other)
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, other, True)

    async def _set_inode_info(
        self, inode: InodeT, fobx: Fobx | None, buffer: SetInformationBuffer
    ) -> None:
        """By descriptor when the kernel gave one (ftruncate), else by name; when no name
        is left, through a descriptor open on the file (fchmod of an unlinked file)."""
        if fobx is None:
            by_name = await self._by_inode(inode, lambda path: _set_info_irp(buffer, path=path))
            if by_name is not None:
                return
            fobx = self._open_fobx(inode)
            if fobx is None:
                raise _stale()
        await self._call(_set_info_irp(buffer, fobx=fobx))

    @_handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        irp = await self._call(Irp(IrpMj.IRP_MJ_QUERY_VOLUME_INFORMATION, file_name="/"))
        volume = irp.volume
        assert volume is not None
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = volume.block_size
        data.f_blocks = volume.total_blocks
        data.f_bfree = volume.free_blocks
        data.f_bavail = volume.available_blocks
        data.f_files = volume.total_files
        data.f_ffree = data.f_favail = volume.free_files
        data.f_namemax = volume.max_name_length
        return data

    # -- files --------------------------------------------------------------------------

    @_handler
    async def open(
        self, inode: InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        disposition = (
            CreateDisposition.FILE_OVERWRITE if flags & os.O_TRUNC else CreateDisposition.FILE_OPEN
        )
        kernel_reads = self._through_page_cache(flags)
        try:
            irp = await self._open_inode(inode, flags, disposition, kernel_reads=kernel_reads)
        except FUSEError as exc:
            write_only = flags & os.O_ACCMODE == os.O_WRONLY
            if not (kernel_reads and write_only and exc.errno == errno.EACCES):
                raise
            # The server lets us write the file but not read it: this open goes
            # around the page cache, which would have to read partial pages.
            kernel_reads = False
            irp = await self._open_inode(inode, flags, disposition, kernel_reads=False)
        fobx = irp.file_object
        assert fobx is not None and irp.file_name is not None
        if flags & os.O_TRUNC:
            self.inodes.resized(inode, 0)
        elif fobx.fcb is not None and fobx.fcb.attributes is not None:
            await self._revalidate(inode, (irp.file_name, ctx.pid), fobx, fobx.fcb.attributes)
        return self._file_info(fobx, inode, flags, direct=not kernel_reads)

    async def _open_inode(
        self, inode: InodeT, flags: int, disposition: CreateDisposition, *, kernel_reads: bool
    ) -> Irp:
        access, options = _access_for(flags, kernel_reads=kernel_reads)
        params = CreateParameters(access, disposition, options)
        former = self.inodes.former_path(inode)
        if former is not None:
            # Renumbered a moment ago (changed elsewhere, or appended to): the kernel
            # still opens it by its old dentry. The file is there; _revalidate decides.
            return await self._call(Irp(IrpMj.IRP_MJ_CREATE, params, file_name=former))
        return await self._on_inode(
            inode, lambda path: Irp(IrpMj.IRP_MJ_CREATE, params, file_name=path)
        )

    def _through_page_cache(self, flags: int) -> bool:
        """Whether an open's reads and writes go through the kernel's page cache:
        under the writeback cache, all but O_APPEND (see _file_info) and O_DIRECT."""
        return self.enable_writeback_cache and not flags & (os.O_APPEND | os.O_DIRECT)

    async def _revalidate(
        self, inode: InodeT, opener: tuple[str, int], fobx: Fobx, attrs: FileAttributes
    ) -> None:
        """Close-to-open: the open just read the file's size and mtime from the server.
        If the file changed elsewhere since the kernel built its inode, this open is
        undone and answered ESTALE; Linux then walks the path again with real lookups,
        which find the file under a new inode, and retries the open once."""
        if opener in self._reopening:
            # The retry: it looked the file up a moment ago. A file another client is
            # still writing may have changed again since; taking it as it is now is
            # all close-to-open can promise (and a second ESTALE would reach the
            # program).
            self._reopening.discard(opener)
        elif self._renew_if_changed(inode, attrs):
            await self._close(fobx)
            self._reopening.add(opener)
            raise _stale()
        self.inodes.resynced(inode, attrs)

    @_handler
    async def create(
        self, parent_inode: InodeT, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        kernel_reads = self._through_page_cache(flags)
        access, options = _access_for(flags, kernel_reads=kernel_reads)
        if flags & os.O_EXCL:
            disposition = CreateDisposition.FILE_CREATE
        elif flags & os.O_TRUNC:
            disposition = CreateDisposition.FILE_OVERWRITE_IF
        else:
            disposition = CreateDisposition.FILE_OPEN_IF
        fobx, attrs = await self._create(
            path,
            CreateParameters(
                access,
                disposition,
                options,
                stat.S_IMODE(mode),
                self._owner_for(ctx, parent_inode),
            ),
        )
        entry = await self._lookup_entry(path, attrs)
        return self._file_info(fobx, entry.st_ino, flags, direct=not kernel_reads), entry

    def _file_info(
        self, fobx: Fobx, inode: InodeT, flags: int, *, direct: bool
    ) -> pyfuse3.FileInfo:
        self._files[fobx.key] = fobx
        self._file_inodes[fobx.key] = inode
        if not direct and flags & os.O_ACCMODE != os.O_RDONLY:
            self._page_writers.add(fobx.key)
            self.inodes.writer_opened(inode)
        info = pyfuse3.FileInfo(fh=fobx.key)
        # Another client may have changed the bytes between opens without changing
        # the size or the mtime's second (SFTP v3 times are whole seconds): drop the
        # page cache at every open, as close-to-open wants.
        info.keep_cache = False
        # O_APPEND goes around the page cache: through it the kernel ends a write at
        # the first page it did not hold whole, so a 100-byte record across a 4 KiB
        # boundary left as two appends, and another client's record could land
        # between them. Direct I/O sends each write(2) as one request (up to 1 MiB),
        # which the server places at the end whole (SSH_FXF_APPEND).
        info.direct_io = direct or bool(flags & os.O_APPEND)
        if info.direct_io and flags & os.O_APPEND:
            assert fobx.fcb is not None
            self._appending[fobx.key] = fobx.fcb.path
        return info

    @_handler
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        irp = await self._call(
            Irp(IrpMj.IRP_MJ_READ, ReadParameters(size, off), file_object=self._fobx(fh))
        )
        return bytes(irp.buffer)

    @_handler
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        fobx = self._fobx(fh)
        irp = await self._call(
            Irp(
                IrpMj.IRP_MJ_WRITE,
                WriteParameters(len(buf), off, key=fobx.key),
                # Through the page cache, a write is the kernel writing back.
                minor_function=IRP_MN_PAGING_IO if fh in self._page_writers else 0,
                file_object=fobx,
                buffer=buf,
            )
        )
        self.inodes.wrote(
            self._file_inodes[fh], off + len(buf), placed_by_server=fh in self._appending
        )
        return irp.io_status.information

    @_handler
    async def flush(self, fh: FileHandleT) -> None:
        """Every close(2): the bytes written through this descriptor must be on the
        server, and any failure to get them there is returned here (pyfuse3 drops errors
        raised in release). May run several times for one fh (dup'd descriptors)."""
        await self._call(_close_flush(self._fobx(fh)))
        path = self._appending.get(fh)
        if path is not None:
            await self._renew_after_appends(path)

    async def _renew_after_appends(self, path: str) -> None:
        """The server placed this descriptor's writes (O_APPEND), so the size and mtime
        the kernel keeps for whatever inode now has the name are guesses (another
        process's lookup may have built one meanwhile): the name gets a new inode, and
        the kernel drops it before close(2) returns, so that a stat or an open right
        after sees the file as the server has it."""
        entry = self._dentry(path)
        if entry is None or not self.inodes.renumber_unless_dirty(path):
            return
        # Waited for in a thread: this handler holds no lock the kernel needs for it
        # (close(2) takes none of the directory's).
        with contextlib.suppress(OSError):
            await trio.to_thread.run_sync(pyfuse3.invalidate_entry, *entry)

    @_handler
    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        await self._call(Irp(IrpMj.IRP_MJ_FLUSH_BUFFERS, file_object=self._fobx(fh)))

    @_handler
    async def release(self, fh: FileHandleT) -> None:
        inode = self._file_inodes.pop(fh, None)
        self._appending.pop(fh, None)
        if fh in self._page_writers and inode is not None:
            self._page_writers.discard(fh)
            self.inodes.writer_released(inode)
        fobx = self._files.pop(fh, None)
        if fobx is not None:
            await self._close(fobx)

    # -- directories --------------------------------------------------------------------

    @_handler
    async def opendir(self, inode: InodeT, ctx: pyfuse3.RequestContext) -> FileHandleT:
        irp = await self._on_inode(inode, _query)
        assert irp.attributes is not None and irp.file_name is not None
        if not irp.attributes.is_dir:
            raise FUSEError(errno.ENOTDIR)
        handle = self._next_dir_handle
        self._next_dir_handle += 1
        self._dirs[handle] = _DirHandle(irp.file_name)
        return handle

    @_handler
    async def readdir(self, fh: FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Entries come from a snapshot taken at offset 0, so the ``next_id`` offsets
        stay valid while other tasks create and delete names in the directory."""
        handle = self._dirs.get(fh)
        if handle is None:
            raise FUSEError(errno.EBADF)
        if start_id == 0:
            irp = await self._call(
                Irp(
                    IrpMj.IRP_MJ_DIRECTORY_CONTROL,
                    QueryDirectoryParameters(),
                    file_name=handle.path,
                )
            )
            handle.entries = list(irp.entries or [])
        for index in range(start_id, len(handle.entries)):
            item = handle.entries[index]
            path = posixpath.join(handle.path, item.name)
            inode = self.inodes.current(path, item.attributes)
            entry = self._entry(inode, item.attributes)
            if not pyfuse3.readdir_reply(token, os.fsencode(item.name), entry, index + 1):
                self.inodes.drop_unlooked(inode)
                return
            self.inodes.add_lookup(path, item.attributes)
            self.inodes.listed(inode, item.attributes.nlink)

    @_handler
    async def releasedir(self, fh: FileHandleT) -> None:
        self._dirs.pop(fh, None)

    @_handler
    async def mkdir(
        self, parent_inode: InodeT, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        params = CreateParameters(
            AccessMask.FILE_READ_ATTRIBUTES,
            CreateDisposition.FILE_CREATE,
            CreateOptions.FILE_DIRECTORY_FILE,
            stat.S_IMODE(mode),
            self._owner_for(ctx, parent_inode),
        )
        fobx, attrs = await self._create(path, params)
        await self._close(fobx)
        return await self._lookup_entry(path, attrs)

    async def _remove(self, parent_inode: InodeT, name: bytes) -> None:
        path = self._child(parent_inode, name)
        await self._set_info(FileDispositionInformation(), path=path)
        inode = self.inodes.find(path)
        self.inodes.unlink(path)
        if inode is not None and self.inodes.name_count(inode):
            # The file lives on under its other names, whose cached attributes (link
            # count, ctime) the removal changed: the next getattr asks the server.
            self._changed_here.add(inode)

    @_handler
    async def unlink(self, parent_inode: InodeT, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove(parent_inode, name)

    @_handler
    async def rmdir(self, parent_inode: InodeT, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove(parent_inode, name)

    @_handler
    async def rename(  # noqa: PLR0917 - pyfuse3's signature
        self,
        parent_inode_old: InodeT,
        name_old: bytes,
        parent_inode_new: InodeT,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            # No SFTP server can swap two names atomically.
            raise FUSEError(errno.EINVAL)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        replace = not flags & pyfuse3.RENAME_NOREPLACE
        await self._set_info(FileRenameInformation(new, replace), path=old)
        self.inodes.rename(old, new)

    # -- links --------------------------------------------------------------------------

    @_handler
    async def symlink(
        self, parent_inode: InodeT, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        params = FsControlParameters(
            FsControlCode.FSCTL_SET_REPARSE_POINT,
            os.fsdecode(target),
            self._owner_for(ctx, parent_inode),
        )
        await self._call(Irp(IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL, params, file_name=path))
        return await self._lookup_entry(path)

    @_handler
    async def readlink(self, inode: InodeT, ctx: pyfuse3.RequestContext) -> bytes:
        params = FsControlParameters(FsControlCode.FSCTL_GET_REPARSE_POINT)
        irp = await self._on_inode(
            inode, lambda path: Irp(IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL, params, file_name=path)
        )
        return os.fsencode(irp.link_target or "")

    @_handler
    async def link(
        self, inode: InodeT, new_parent_inode: InodeT, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        new = self._child(new_parent_inode, new_name)
        await self._set_info(FileLinkInformation(new), path=self._path(inode))
        attrs = await self._stat(new)
        return self._entry(self.inodes.add_link(inode, new, attrs), attrs)

    # -- shutdown -----------------------------------------------------------------------

    async def close_all(self) -> list[str]:
        """Flush and close every descriptor still open (at unmount). Returns one line per
        file that could not be flushed, for the user."""
        failed: list[str] = []
        for fh in list(self._files):
            fobx = self._files.pop(fh)
            self._file_inodes.pop(fh, None)
            fcb = fobx.fcb
            name = fcb.path if fcb is not None else f"handle {fh}"
            flush = await self.device.dispatch(_close_flush(fobx))
            if not nt_success(flush.status):
                failed.append(f"{name}: {os.strerror(errno_for(flush.status))}")
            try:
                await self._close(fobx)
            except FUSEError as exc:
                failed.append(f"{name}: {os.strerror(exc.errno)}")
        return failed
