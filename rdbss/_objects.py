"""The RDBSS object tree: SrvCall / NetRoot / VNetRoot / Fcb / SrvOpen / Fobx.

Each object is reference counted the way RDBSS counts NodeReferenceCount: the front end
and in-flight requests hold references, and an object is finalized (dropped from its
parent's table) when the last one goes. Backends hang their own state on ``context``.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import posixpath
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

import trio

from ._dircache import DirectoryCache
from ._extents import WriteBehindBuffer
from ._pathmap import PathMap, paths_under
from ._resource import FcbResource
from .irp import AccessMask, FileAttributes
from .ntstatus import NtStatus

if TYPE_CHECKING:
    from rxfs.minirdr import MiniRdrDispatch

__all__ = [
    "Fcb",
    "FcbState",
    "Fobx",
    "NetRoot",
    "NodeType",
    "SrvCall",
    "SrvOpen",
    "SrvOpenFlags",
    "VNetRoot",
    "normalize_path",
]


class NodeType(enum.IntEnum):
    """RDBSS node type codes (rxtypes.h)."""

    RDBSS_NTC_SRVCALL = 0xEB10
    RDBSS_NTC_NETROOT = 0xEB11
    RDBSS_NTC_V_NETROOT = 0xEB12
    RDBSS_NTC_SRVOPEN = 0xEB1C
    RDBSS_NTC_FOBX = 0xEB1D
    RDBSS_NTC_FCB = 0xEB60


class FcbState(enum.IntFlag):
    FCB_STATE_WRITECACHING_ENABLED = 0x1
    FCB_STATE_READCACHING_ENABLED = 0x2
    FCB_STATE_DELETE_ON_CLOSE = 0x4
    FCB_STATE_ORPHANED = 0x8


class SrvOpenFlags(enum.IntFlag):
    """Buffering a backend grants or withholds for one open (SRVOPEN_FLAG_*)."""

    SRVOPEN_FLAG_DONTUSE_READ_CACHING = 0x1
    SRVOPEN_FLAG_DONTUSE_WRITE_CACHING = 0x2
    SRVOPEN_FLAG_CLOSED = 0x4
    SRVOPEN_FLAG_FILE_RENAMED = 0x8
    SRVOPEN_FLAG_FILE_DELETED = 0x10
    SRVOPEN_FLAG_APPEND = 0x20
    # Its handle died with a connection and could not be opened again (the file was
    # deleted, renamed or made unwritable meanwhile): nothing goes through it again.
    SRVOPEN_FLAG_ORPHANED = 0x40


_ATTRIBUTE_CACHE_SIZE = 4096


def normalize_path(path: str) -> str:
    """Remote paths in the core are absolute below the share root: '/', '/a/b'."""
    norm = posixpath.normpath("/" + path.lstrip("/"))
    return "/" if norm in ("/", "//") else norm


class _RefCounted:
    node_type: NodeType

    def __init__(self) -> None:
        self.node_reference_count = 0

    def reference(self) -> None:
        self.node_reference_count += 1

    def dereference(self) -> None:
        if self.node_reference_count <= 0:
            raise RuntimeError(f"{self!r} dereferenced below zero")
        self.node_reference_count -= 1
        if self.node_reference_count == 0:
            self._finalize()

    def _finalize(self) -> None:
        """Called when the last reference goes."""


class SrvCall(_RefCounted):
    """One server (host, port, user): the backend keeps its connections in context."""

    node_type = NodeType.RDBSS_NTC_SRVCALL

    def __init__(self, url: SplitResult, minirdr: MiniRdrDispatch) -> None:
        super().__init__()
        self.url = url
        self.minirdr = minirdr
        self.context: Any = None
        self.status = NtStatus.STATUS_PENDING
        # A one-line reason for a failed create_srv_call (host key, auth, ...).
        self.status_message = ""

    @property
    def name(self) -> str:
        return f"{self.url.scheme}://{self.url.netloc}"


class NetRoot(_RefCounted):
    """A remote root directory and the table of its Fcbs by path."""

    node_type = NodeType.RDBSS_NTC_NETROOT

    def __init__(self, srv_call: SrvCall, root: str) -> None:
        super().__init__()
        self.srv_call = srv_call
        self.root = root
        self.fcb_table: dict[str, Fcb] = {}
        # Attributes of files whose Fcb went away, with when they were true: a stat
        # right after close need not ask the server (the core's attribute cache).
        self.attribute_cache: PathMap[tuple[FileAttributes, float]] = PathMap()
        # The names directories hold (-o dir_timeout), for "no such file" answers.
        self.directories = DirectoryCache()
        # Hidden names given to files unlinked while open (_deleteonclose).
        self.hidden_names: set[str] = set()
        srv_call.reference()

    def find_fcb(self, path: str) -> Fcb | None:
        return self.fcb_table.get(path)

    def get_fcb(self, path: str) -> Fcb:
        """The Fcb for ``path``, created on first use. The caller owns one reference."""
        fcb = self.fcb_table.get(path)
        if fcb is None:
            fcb = Fcb(self, path)
            self.fcb_table[path] = fcb
            remembered = self.attribute_cache.pop(path)
            if remembered is not None:
                fcb.attributes, fcb.attributes_time = remembered
        fcb.reference()
        return fcb

    def remember_attributes(self, fcb: Fcb) -> None:
        if fcb.attributes is None or fcb.orphaned:
            return
        if len(self.attribute_cache) >= _ATTRIBUTE_CACHE_SIZE:
            # Oldest first (insertion order): drop the older half.
            self.attribute_cache.drop_oldest(_ATTRIBUTE_CACHE_SIZE // 2)
        self.attribute_cache[fcb.path] = (fcb.attributes, fcb.attributes_time)

    def directory_changed(self, path: str) -> None:
        """A name in directory ``path`` was made, removed or renamed through this mount:
        the server changed the directory's mtime and ctime, so what is cached about it
        is no longer true (the kernel drops its own copy after each such request)."""
        self.attribute_cache.pop(path)
        fcb = self.fcb_table.get(path)
        if fcb is not None:
            fcb.attributes_time = 0.0

    def forget_attributes(self, path: str) -> None:
        """Our own change to ``path`` or below: cached attributes are no longer true."""
        for stale in self.attribute_cache.under(path):
            self.attribute_cache.pop(stale)

    def rename_fcbs(self, old: str, new: str) -> None:
        """Re-key ``old`` and everything below it after a rename; an Fcb already at the
        new name (a replaced target) is orphaned: its opens keep their handles."""
        self.forget_attributes(old)
        self.forget_attributes(new)
        self.directories.renamed(old, new)
        for path in paths_under(self.fcb_table, old):
            fcb = self.fcb_table.pop(path)
            fcb.path = new + path[len(old) :]
            replaced = self.fcb_table.pop(fcb.path, None)
            if replaced is not None:
                replaced.orphan()
            self.fcb_table[fcb.path] = fcb

    def name_gone(self, path: str) -> None:
        """``path`` no longer exists (we deleted it, or the server says so): its Fcb is
        orphaned (open handles keep working on the file they have; the next open of the
        name gets a new Fcb) and what was cached about it and below it is dropped."""
        self.forget_attributes(path)
        self.directories.name_gone(path)
        fcb = self.fcb_table.pop(path, None)
        if fcb is not None:
            fcb.orphan()


class VNetRoot(_RefCounted):
    """A mount: a user's view of a NetRoot with its options."""

    node_type = NodeType.RDBSS_NTC_V_NETROOT

    def __init__(self, net_root: NetRoot, options: dict[str, str]) -> None:
        super().__init__()
        self.net_root = net_root
        self.options = options
        self.context: Any = None
        net_root.reference()


class Fcb(_RefCounted):
    """One remote file: sizes, attributes, the resource, buffering state, latched error."""

    node_type = NodeType.RDBSS_NTC_FCB

    def __init__(self, net_root: NetRoot, path: str) -> None:
        super().__init__()
        self.net_root = net_root
        self.path = path
        self.resource = FcbResource()
        self.attributes: FileAttributes | None = None
        # When the attributes were last true at the server (time.monotonic()).
        self.attributes_time = 0.0
        self.state = FcbState(0)
        self.srv_opens: list[SrvOpen] = []
        self.context: Any = None
        self.write_behind = WriteBehindBuffer()
        # The last failure to land written bytes, and how many there have been: each
        # Fobx reports an error once, at its next flush or fsync (Linux's errseq_t).
        self.write_error: NtStatus | None = None
        self.write_error_seq = 0

    def latch_write_error(self, status: NtStatus) -> None:
        """Bytes of this file cannot land: each descriptor open now reports ``status``
        once at its next fsync or close (errseq), and each one that can write reports it
        at its close however often it was reported before (:attr:`Fobx.unlanded`):
        writes through any writable descriptor may be among the missing bytes, since the
        kernel's writeback sends a file's pages through whichever one it picks."""
        self.write_error = status
        self.write_error_seq += 1
        for srv_open in self.srv_opens:
            if srv_open.writes_at_all:
                for fobx in srv_open.fobxs:
                    fobx.unlanded = status

    def take_write_error(self, fobx: Fobx) -> NtStatus | None:
        """The write error this descriptor has not reported yet, once."""
        error = self.peek_write_error(fobx)
        fobx.write_error_seq = self.write_error_seq
        return error

    def peek_write_error(self, fobx: Fobx) -> NtStatus | None:
        if fobx.write_error_seq == self.write_error_seq:
            return None
        return self.write_error

    def set_attributes(self, attributes: FileAttributes) -> None:
        """Fresh attributes from the server or from a change made through this mount."""
        self.attributes = attributes
        self.attributes_time = time.monotonic()

    def cached_attributes(self, max_age: float) -> FileAttributes | None:
        """The attributes if younger than ``max_age`` seconds (a copy), else None."""
        if self.attributes is None or time.monotonic() - self.attributes_time >= max_age:
            return None
        return dataclasses.replace(self.attributes)

    @property
    def file_size(self) -> int:
        return self.attributes.size if self.attributes is not None else 0

    @file_size.setter
    def file_size(self, size: int) -> None:
        if self.attributes is not None:
            self.attributes.size = size

    @property
    def is_directory(self) -> bool:
        return self.attributes is not None and stat.S_ISDIR(self.attributes.mode)

    @property
    def orphaned(self) -> bool:
        return bool(self.state & FcbState.FCB_STATE_ORPHANED)

    def orphan(self) -> None:
        self.state |= FcbState.FCB_STATE_ORPHANED

    def _finalize(self) -> None:
        if self.net_root.fcb_table.get(self.path) is self:
            del self.net_root.fcb_table[self.path]
            self.net_root.remember_attributes(self)


_fobx_keys = itertools.count(1)


@dataclass(eq=False)
class SrvOpen:
    """One remote handle; ``context`` is the backend's handle object."""

    fcb: Fcb
    desired_access: AccessMask
    flags: SrvOpenFlags = SrvOpenFlags(0)  # noqa: RUF009 - immutable
    context: Any = None
    fobxs: list[Fobx] = field(default_factory=list)
    node_type: NodeType = NodeType.RDBSS_NTC_SRVOPEN
    # Its last descriptor is closing: the lazy writer sends through it only when the
    # file has no other writable handle, and the remote close waits for those writes.
    closing: bool = False
    # Why the handle could not be reopened after a reconnect (SRVOPEN_FLAG_ORPHANED).
    orphan_status: NtStatus | None = None
    paging_writes: int = 0
    paging_idle: trio.Event = field(default_factory=trio.Event)

    async def wait_paging_idle(self) -> None:
        while self.paging_writes:
            self.paging_idle = trio.Event()
            await self.paging_idle.wait()

    def orphan(self, status: NtStatus) -> None:
        """The handle is dead and cannot be had again: every request through it fails
        with ``status`` from now on, instead of being sent on a handle of a connection
        that is gone (which would look like a connection lost again, and reconnect).
        RDBSS orphans SrvOpens the same way (SRVOPEN_FLAG_ORPHANED) when their
        NetRoot is torn down under them."""
        self.flags |= SrvOpenFlags.SRVOPEN_FLAG_ORPHANED
        self.orphan_status = status

    # These run on every read and write: plain int tests, since enum.Flag's & costs
    # microseconds a call.
    @property
    def closed(self) -> bool:
        return _has(self.flags, _CLOSED)

    @property
    def append(self) -> bool:
        return _has(self.flags, _APPEND)

    @property
    def may_cache_writes(self) -> bool:
        return not _has(self.flags, _NO_WRITE_CACHE | _APPEND)

    @property
    def may_write(self) -> bool:
        return _has(self.desired_access, _WRITE_DATA)

    @property
    def writes_at_all(self) -> bool:
        """Opened for writing or appending."""
        return _has(self.desired_access, _WRITE_DATA | _APPEND_DATA)


def _has(flags: int, bits: int) -> bool:
    return int.__and__(flags, bits) != 0


_CLOSED = int(SrvOpenFlags.SRVOPEN_FLAG_CLOSED)
_APPEND = int(SrvOpenFlags.SRVOPEN_FLAG_APPEND)
_NO_WRITE_CACHE = int(SrvOpenFlags.SRVOPEN_FLAG_DONTUSE_WRITE_CACHING)
_WRITE_DATA = int(AccessMask.FILE_WRITE_DATA)
_APPEND_DATA = int(AccessMask.FILE_APPEND_DATA)


@dataclass(eq=False)
class Fobx:
    """One open file description (a FUSE file handle)."""

    srv_open: SrvOpen | None
    key: int = field(default_factory=lambda: next(_fobx_keys))
    # The Fcb's write_error_seq this descriptor has reported (see Fcb.take_write_error).
    write_error_seq: int = 0
    # Why bytes that may have been written through this descriptor did not land: its
    # close() reports it, every time, even after an fsync() reported it once (a close
    # never claims bytes the server does not have). See Fcb.latch_write_error.
    unlanded: NtStatus | None = None
    node_type: NodeType = NodeType.RDBSS_NTC_FOBX

    @property
    def fcb(self) -> Fcb | None:
        return self.srv_open.fcb if self.srv_open is not None else None
