"""The RDBSS object tree: SrvCall / NetRoot / VNetRoot / Fcb / SrvOpen / Fobx.

Each object is reference counted the way RDBSS counts NodeReferenceCount: the front end
and in-flight requests hold references, and an object is finalized (dropped from its
parent's table) when the last one goes. Backends hang their own state on ``context``.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import itertools
import posixpath
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import SplitResult

import trio

from ._resource import FcbResource
from ._writebehind import WriteBehindBuffer
from .irp import AccessMask, FileAttributes
from .ntstatus import NtStatus

if TYPE_CHECKING:
    from rxfs.minirdr import MiniRdrDispatch

__all__ = [
    "DirectoryCache",
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
# The directory cache holds at most this many directories and names in all.
_DIRECTORY_CACHE_SIZE = 4096
_DIRECTORY_CACHE_NAMES = 100_000
# Renewing a listing costs about one request per this many names (OpenSSH answers a
# READDIR with up to 100): a listing is renewed only once it has saved that many.
_NAMES_PER_LISTING_REQUEST = 100


def normalize_path(path: str) -> str:
    """Remote paths in the core are absolute below the share root: '/', '/a/b'."""
    norm = posixpath.normpath("/" + path.lstrip("/"))
    return "/" if norm in ("/", "//") else norm


def _under(paths: Iterable[str], path: str) -> list[str]:
    """The keys of ``paths`` that are ``path`` or below it (a list: callers re-key).
    A scan, for the small tables (Fcbs in use, listings on their way); the caches,
    asked on every miss, keep a :class:`PathMap`."""
    prefix = path.rstrip("/") + "/"
    return [p for p in paths if p == path or p.startswith(prefix)]


V = TypeVar("V")


class PathMap(Generic[V]):
    """A dict keyed by core paths that also finds a path and every key below it in
    O(log n): a lookup the server answers "no such file" drops what the caches held
    for the name and below it, and scanning a few thousand cached paths for that cost
    half a millisecond per miss. Iterates in insertion order (oldest first)."""

    __slots__ = ("_items", "_sorted")

    def __init__(self) -> None:
        self._items: dict[str, V] = {}
        self._sorted: list[str] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str) -> V | None:
        return self._items.get(key)

    def __setitem__(self, key: str, value: V) -> None:
        if key not in self._items:
            bisect.insort(self._sorted, key)
        self._items[key] = value

    def pop(self, key: str) -> V | None:
        """Remove ``key``; its value, or None if it was not there."""
        if key not in self._items:
            return None
        del self._sorted[bisect.bisect_left(self._sorted, key)]
        return self._items.pop(key)

    def drop_oldest(self, count: int) -> None:
        for key in list(itertools.islice(self._items, count)):
            del self._items[key]
        self._sorted = sorted(self._items)

    def under(self, path: str) -> list[str]:
        """``path`` (if present) and the keys below it."""
        base = path.rstrip("/")
        keys = self._sorted
        # Keys below base are those from base + "/" up to base + "0" ("0" follows "/").
        below = keys[bisect.bisect_left(keys, base + "/") : bisect.bisect_left(keys, base + "0")]
        if base and path in self._items:
            below.insert(0, path)
        return below


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


@dataclass(slots=True, eq=False)
class Listing:
    """Every name one directory holds, as the server had them at ``learned``."""

    names: set[str]
    # time.monotonic() when the listing was asked for (or the directory made): names
    # other clients add later are unseen, so its age is counted from before the answer.
    learned: float
    # The connection it was learned on (Reconnector.generation).
    generation: int
    # "No such name" answers given from it since it was learned.
    hits: int = 0


@dataclass(slots=True, eq=False)
class ListingInFlight:
    """A listing asked for and not yet answered."""

    asked: float
    generation: int
    # Our own changes to the directory that completed while it was on its way: the
    # server may have listed before or after each, so they are applied on top of it.
    changes: list[tuple[str, bool]] = field(default_factory=list)
    # False once something made the answer untrustworthy (a failed change, a rename of
    # the directory): it is then dropped on arrival.
    valid: bool = True


class DirectoryCache:
    """The names directories hold (``-o dir_timeout``), so that a lookup of a name a
    fresh, complete listing lacks is answered "not found" without asking the server.

    Filled by complete listings and by directories made through this mount (empty at
    birth); kept true by our own changes (create, delete, rename, link, symlink) and by
    what the server answers about single names; a directory is dropped when anything
    leaves it uncertain (a failed change, an error from the server). Trusted for
    ``dir_timeout`` seconds from when it was asked for, and only on the connection it
    was learned on. It only ever short-cuts "not found" answers to lookups: creates and
    opens always go to the server, so a stale listing can delay seeing another client's
    new file by up to ``dir_timeout``, never make one of our operations fail.
    """

    def __init__(self) -> None:
        self._listings: PathMap[Listing] = PathMap()
        self._in_flight: dict[str, list[ListingInFlight]] = {}
        self._names = 0

    # -- answers -------------------------------------------------------------------------

    def lacks(self, path: str, max_age: float, generation: int) -> Listing | None:
        """The listing of ``path``'s directory if it is fresh and does not hold the name:
        the name does not exist. None when that is not known."""
        directory, name = posixpath.split(path)
        listing = self._listings.get(directory)
        if listing is None or not name:
            return None
        if listing.generation != generation or time.monotonic() - listing.learned >= max_age:
            self._drop(directory)
            return None
        if name in listing.names:
            return None
        listing.hits += 1
        return listing

    def worth_renewing(self, directory: str, listing: Listing, max_age: float) -> bool:
        """Past half its life, nobody listing it already, and it has saved the server
        more requests than listing it again will cost: ask again before it expires."""
        return (
            time.monotonic() - listing.learned >= max_age / 2
            and not self._in_flight.get(directory)
            and listing.hits >= 1 + len(listing.names) // _NAMES_PER_LISTING_REQUEST
        )

    # -- filling -------------------------------------------------------------------------

    def begin_listing(self, directory: str, generation: int) -> ListingInFlight:
        """Call before asking the server for the complete listing of ``directory``."""
        pending = ListingInFlight(time.monotonic(), generation)
        self._in_flight.setdefault(directory, []).append(pending)
        return pending

    def end_listing(
        self, directory: str, pending: ListingInFlight, names: Iterable[str] | None
    ) -> None:
        """The listing begun as ``pending`` arrived with ``names``, or failed (None)."""
        waiting = self._in_flight.get(directory, [])
        if pending in waiting:
            waiting.remove(pending)
            if not waiting:
                del self._in_flight[directory]
        if names is None:
            self.forget(directory)
            return
        current = self._listings.get(directory)
        if not pending.valid or (current is not None and current.learned > pending.asked):
            return
        held = set(names)
        for name, present in pending.changes:
            if present:
                held.add(name)
            else:
                held.discard(name)
        self._store(directory, Listing(held, pending.asked, pending.generation))

    def made_directory(self, directory: str, since: float, generation: int) -> None:
        """We created ``directory`` with a request sent at ``since``: it was empty."""
        self._drop_tree(directory)
        self._store(directory, Listing(set(), since, generation))

    # -- what we changed or learned --------------------------------------------------------

    def name_exists(self, path: str) -> None:
        """``path`` exists now: we created or linked it, or the server just said so."""
        self._change(path, present=True)

    def name_gone(self, path: str) -> None:
        """``path`` does not exist now: we deleted it, or the server just said so. What
        was known about the directory it may have been is dropped with it."""
        self._change(path, present=False)
        self._drop_tree(path)

    def renamed(self, old: str, new: str) -> None:
        """We renamed ``old`` to ``new`` (replacing whatever was there): listings of the
        moved directory and below move with it."""
        if old == new:
            return
        self._drop_tree(new)
        for key in self._listings.under(old):
            moved = self._listings.pop(key)
            assert moved is not None
            self._listings[new + key[len(old) :]] = moved
        self._invalidate_in_flight(old)
        self._change(old, present=False)
        self._change(new, present=True)

    def forget(self, directory: str) -> None:
        """Something left ``directory`` uncertain: drop its listing and ignore those on
        their way."""
        self._drop(directory)
        for pending in self._in_flight.get(directory, []):
            pending.valid = False

    # -- internals -----------------------------------------------------------------------

    def _change(self, path: str, *, present: bool) -> None:
        directory, name = posixpath.split(path)
        if not name:
            return
        listing = self._listings.get(directory)
        if listing is not None:
            if present and name not in listing.names:
                listing.names.add(name)
                self._names += 1
                self._trim()
            elif not present and name in listing.names:
                listing.names.discard(name)
                self._names -= 1
        for pending in self._in_flight.get(directory, []):
            pending.changes.append((name, present))

    def _store(self, directory: str, listing: Listing) -> None:
        self._drop(directory)
        self._listings[directory] = listing
        self._names += len(listing.names)
        self._trim()

    def _trim(self) -> None:
        """Oldest first (insertion order) until within both bounds."""
        while self._listings and (
            len(self._listings) > _DIRECTORY_CACHE_SIZE or self._names > _DIRECTORY_CACHE_NAMES
        ):
            self._drop(next(iter(self._listings)))

    def _drop(self, directory: str) -> None:
        listing = self._listings.pop(directory)
        if listing is not None:
            self._names -= len(listing.names)

    def _drop_tree(self, path: str) -> None:
        for key in self._listings.under(path):
            self._drop(key)
        self._invalidate_in_flight(path)

    def _invalidate_in_flight(self, path: str) -> None:
        for key in _under(self._in_flight, path):
            for pending in self._in_flight[key]:
                pending.valid = False


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
        for path in _under(self.fcb_table, old):
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
