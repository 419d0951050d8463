"""Inode numbers for remote paths, with the kernel's lookup counts.

The kernel knows files by inode number; the core and backends know them by path. The
table maps between the two and keeps an inode alive while the kernel holds lookups on it
(every entry returned by lookup, create, mkdir, symlink, link and readdirplus counts one;
``forget`` gives them back). An unlinked inode keeps its last attributes so that fstat
on an open, deleted file still answers.

Under the kernel's writeback cache the kernel keeps a regular file's size and mtime
itself and never takes them from the server again (Linux's fuse_get_cache_mask), nor
does ``invalidate_inode`` refresh them. So a file changed elsewhere is given a new inode
number (``renumber``): the kernel drops its dentry on the next lookup and builds a fresh
inode from the server's attributes, as the close-to-open rules want (DESIGN §9). Each
regular file inode therefore records what the kernel believes (``_Synced``).

An inode may have several names: a hard link made through this mount is entered under
the inode of its source, so tar, cp -a and the kernel's own caches see one file. (SFTP v3
carries no inode numbers, so links made elsewhere look like separate files, as with sshfs.)
"""

from __future__ import annotations

import dataclasses
import itertools
import posixpath
import stat
from dataclasses import dataclass
from typing import NewType

import pyfuse3
from rxfs.rdbss.irp import FileAttributes

__all__ = ["InodeT", "InodeTable"]

InodeT = NewType("InodeT", int)

ROOT_INODE = InodeT(pyfuse3.ROOT_INODE)
_NS = 1_000_000_000


@dataclass(slots=True)
class _Synced:
    """What the kernel's inode holds of a regular file: the size and mtime (whole
    seconds) it was built from, and whether this mount changed the contents since (the
    kernel then keeps its own mtime, and the size it knows is ``size``)."""

    size: int
    mtime_s: int
    written: bool = False
    # Writes that went around the page cache (O_APPEND): the server placed them, so the
    # kernel's size and mtime are guesses until the inode is renewed.
    placed_by_server: bool = False

    def differs(self, attributes: FileAttributes) -> bool:
        if self.placed_by_server:
            return True
        if self.written:
            return attributes.size != self.size
        return (attributes.size, attributes.mtime_ns // _NS) != (self.size, self.mtime_s)


@dataclass(slots=True)
class _Inode:
    paths: list[str]
    lookups: int = 0
    attributes: FileAttributes | None = None
    # Times set through the mount, to the nanosecond (atime_ns, mtime_ns).
    set_times: tuple[int | None, int | None] = (None, None)
    # The link count the server's last listing showed (a stat tells none under SFTP).
    listed_links: int = 0
    # Its key in InodeTable._by_signature, as filed (the attributes may change since).
    signature: tuple[int, int] | None = None
    # Regular files only; set when the kernel first hears of the inode.
    synced: _Synced | None = None
    # Descriptors open on the inode through this mount that may leave dirty pages in
    # the kernel (writable, through the page cache): while there are any, the inode is
    # kept, or a new open would miss bytes not yet written back.
    writers: int = 0
    # The name it had before ``renumber`` gave the name a new inode.
    former: str | None = None


class InodeTable:
    def __init__(self, *, renew_changed: bool = True) -> None:
        # Whether files changed elsewhere get new inodes (under the writeback cache).
        self._renew_changed = renew_changed
        self._by_inode: dict[InodeT, _Inode] = {ROOT_INODE: _Inode(["/"], lookups=1)}
        self._by_path: dict[str, InodeT] = {"/": ROOT_INODE}
        # The paths in _by_path by directory, so that a rename moves a subtree without
        # scanning every path the kernel knows (12 ms a rename at 100,000 of them).
        self._children: dict[str, set[str]] = {}
        self._numbers = itertools.count(ROOT_INODE + 1)
        # Regular files a listing showed with several links, by (size, mtime second):
        # names that may be one file the mount cannot tell is one (linked on the
        # server; SFTP v3 has no inode numbers).
        self._by_signature: dict[tuple[int, int], set[InodeT]] = {}
        # Renumbered inodes the kernel still holds, which it opens by their former
        # name (former_path): few, so that a rename can carry those names along.
        self._renumbered: set[InodeT] = set()

    def path_of(self, inode: int) -> str | None:
        """The path of ``inode``; None once the name is gone (unlinked) or unknown."""
        entry = self._by_inode.get(InodeT(inode))
        return entry.paths[0] if entry is not None and entry.paths else None

    def find(self, path: str) -> InodeT | None:
        """The inode of ``path`` if the table has one (never allocates)."""
        return self._by_path.get(path)

    def held(self, path: str) -> bool:
        """Whether the kernel holds a lookup of ``path`` (has it in its name cache)."""
        inode = self._by_path.get(path)
        return inode is not None and self._by_inode[inode].lookups > 0

    def paths_of(self, inode: int) -> list[str]:
        """Every name of ``inode`` (a copy), first the one ``path_of`` gives."""
        entry = self._by_inode.get(InodeT(inode))
        return list(entry.paths) if entry is not None else []

    def times_set(self, inode: int, atime_ns: int | None, mtime_ns: int | None) -> None:
        """utimensat() through the mount set these; the server may keep whole seconds
        only (SFTP v3), the kernel's cache keeps what was set (see precise_times)."""
        entry = self._by_inode.get(InodeT(inode))
        if entry is not None:
            atime, mtime = entry.set_times
            entry.set_times = (
                atime if atime_ns is None else atime_ns,
                mtime if mtime_ns is None else mtime_ns,
            )
            if entry.synced is not None and mtime_ns is not None:
                # The kernel took this mtime; the server stores it too.
                entry.synced.mtime_s = mtime_ns // _NS

    def precise_times(self, inode: int, attributes: FileAttributes) -> FileAttributes:
        """``attributes`` with the times set through the mount where the server's are
        the same second (it stored them cut to seconds); a change since (a write, a
        touch elsewhere) shows as a different second and wins."""
        entry = self._by_inode.get(InodeT(inode))
        if entry is None or entry.set_times == (None, None):
            return attributes
        atime, mtime = entry.set_times
        if atime is None or attributes.atime_ns // _NS != atime // _NS:
            atime = attributes.atime_ns
        if mtime is None or attributes.mtime_ns // _NS != mtime // _NS:
            mtime = attributes.mtime_ns
        return dataclasses.replace(attributes, atime_ns=atime, mtime_ns=mtime)

    def name_count(self, inode: int) -> int:
        """How many names of ``inode`` this mount knows (looked up or linked here)."""
        entry = self._by_inode.get(InodeT(inode))
        return len(entry.paths) if entry is not None else 0

    def inode_of(self, path: str) -> InodeT:
        """The inode of ``path``, allocated on first sight (with no lookups yet)."""
        inode = self._by_path.get(path)
        if inode is None:
            inode = InodeT(next(self._numbers))
            self._by_inode[inode] = _Inode([path])
            self._add_path(path, inode)
        return inode

    def add_lookup(self, path: str, attributes: FileAttributes) -> InodeT:
        """Count one kernel lookup of ``path`` and remember its attributes. A regular
        file that changed elsewhere since the kernel built its inode, and that no
        descriptor here holds open, gets a new inode number (see the module doc)."""
        inode = self.current(path, attributes)
        entry = self._by_inode[inode]
        if entry.synced is None and stat.S_ISREG(attributes.mode):
            entry.synced = _Synced(attributes.size, attributes.mtime_ns // _NS)
        entry.lookups += 1
        self._file(inode, entry, attributes)
        return inode

    def current(self, path: str, attributes: FileAttributes) -> InodeT:
        """The inode to give the kernel for ``path`` whose server attributes are
        ``attributes``: a new one if the file changed elsewhere and nothing here holds
        it open (see the module doc)."""
        inode = self.inode_of(path)
        if self.changed_elsewhere(inode, attributes):
            inode = self.renumber(path)
        return inode

    def changed_elsewhere(self, inode: int, attributes: FileAttributes) -> bool:
        """Whether the server's ``attributes`` of a regular file disagree with what
        the kernel's inode holds, in a way this mount's own changes do not explain, and
        nothing here may hold dirty pages of it (see _Inode.writers)."""
        entry = self._by_inode.get(InodeT(inode))
        return (
            self._renew_changed
            and entry is not None
            and entry.synced is not None
            and not entry.writers
            and entry.synced.differs(attributes)
        )

    def renumber(self, path: str) -> InodeT:
        """Give ``path`` a new inode: the file behind it changed elsewhere. The old
        inode keeps its other names, or lives on nameless until the kernel forgets it;
        the kernel may still open it by its dentry meanwhile (see ``former_path``)."""
        old = self._by_path.get(path)
        self.unlink(path)
        if old is not None:
            self._by_inode[old].former = path
            self._renumbered.add(old)
        return self.inode_of(path)

    def former_path(self, inode: int) -> str | None:
        """The name a renumbered inode had: the file is still there under it, only the
        kernel's view of it (size, mtime) is out of date."""
        entry = self._by_inode.get(InodeT(inode))
        return entry.former if entry is not None and not entry.paths else None

    def resynced(self, inode: int, attributes: FileAttributes) -> None:
        """The server's ``attributes`` were checked against the kernel's inode and
        agree: later comparisons start from them."""
        entry = self._by_inode.get(InodeT(inode))
        if entry is not None and entry.synced is not None and not entry.writers:
            entry.synced = _Synced(attributes.size, attributes.mtime_ns // _NS)

    def writer_opened(self, inode: int) -> None:
        entry = self._by_inode.get(InodeT(inode))
        if entry is not None:
            entry.writers += 1

    def writer_released(self, inode: int) -> None:
        entry = self._by_inode.get(InodeT(inode))
        if entry is not None:
            entry.writers -= 1

    def wrote(self, inode: int, end: int, *, placed_by_server: bool = False) -> None:
        """The kernel sent bytes up to ``end`` (its size grows to cover them)."""
        synced = self._synced(inode)
        if synced is not None:
            synced.written = True
            synced.size = max(synced.size, end)
            synced.placed_by_server |= placed_by_server

    def renumber_unless_dirty(self, path: str) -> bool:
        """:meth:`renumber` ``path`` unless its inode may hold dirty pages (see
        _Inode.writers); whether it did."""
        inode = self._by_path.get(path)
        if inode is None or self._by_inode[inode].writers:
            return False
        self.renumber(path)
        return True

    def written(self, inode: int) -> bool:
        """Whether this mount changed the file's contents since the kernel built or
        last checked its inode."""
        synced = self._synced(inode)
        return synced is not None and synced.written

    def resized(self, inode: int, size: int) -> None:
        """truncate/ftruncate or O_TRUNC through the mount: the kernel's size is ``size``."""
        synced = self._synced(inode)
        if synced is not None:
            synced.written = True
            synced.size = size

    def _synced(self, inode: int) -> _Synced | None:
        entry = self._by_inode.get(InodeT(inode))
        return entry.synced if entry is not None else None

    def add_link(self, inode: int, path: str, attributes: FileAttributes) -> InodeT:
        """``path`` is a new hard link to ``inode``: one more name, one more lookup."""
        entry = self._by_inode.get(InodeT(inode))
        if entry is None:
            return self.add_lookup(path, attributes)
        self.unlink(path)
        entry.paths.append(path)
        entry.lookups += 1
        self._file(InodeT(inode), entry, attributes)
        self._add_path(path, InodeT(inode))
        return InodeT(inode)

    def remember(self, inode: int, attributes: FileAttributes) -> None:
        entry = self._by_inode.get(InodeT(inode))
        if entry is not None:
            self._file(InodeT(inode), entry, attributes)

    def listed(self, inode: int, links: int) -> None:
        """A listing showed ``inode``'s file with ``links`` links."""
        entry = self._by_inode.get(InodeT(inode))
        if entry is not None:
            entry.listed_links = links
            if entry.attributes is not None:
                self._file(InodeT(inode), entry, entry.attributes)

    def maybe_same_file(self, inode: int) -> list[InodeT]:
        """Other inodes of files listed with several links that look like ``inode``'s
        (a regular file of that size and mtime): after a chmod or chown through one
        name, these may be its other names."""
        entry = self._by_inode.get(InodeT(inode))
        signature = _signature(entry.attributes) if entry and entry.attributes else None
        if signature is None:
            return []
        return [other for other in self._by_signature.get(signature, ()) if other != inode]

    def _file(self, inode: InodeT, entry: _Inode, attributes: FileAttributes) -> None:
        """Keep ``attributes``; a file listed with several links is filed under their
        signature."""
        entry.attributes = attributes
        signature = _signature(attributes) if entry.listed_links > 1 else None
        if signature != entry.signature:
            self._unfile(inode, entry)
            if signature is not None:
                self._by_signature.setdefault(signature, set()).add(inode)
            entry.signature = signature

    def _unfile(self, inode: InodeT, entry: _Inode) -> None:
        if entry.signature is not None:
            alike = self._by_signature[entry.signature]
            alike.discard(inode)
            if not alike:
                del self._by_signature[entry.signature]
            entry.signature = None

    def last_attributes(self, inode: int) -> FileAttributes | None:
        entry = self._by_inode.get(InodeT(inode))
        return entry.attributes if entry is not None else None

    def drop_unlooked(self, inode: InodeT) -> None:
        """Undo ``inode_of`` for an entry the kernel did not take (readdir buffer full)."""
        entry = self._by_inode.get(inode)
        if entry is not None and entry.lookups == 0 and inode != ROOT_INODE:
            self._forget_entry(inode, entry)

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped ``count`` lookups. Never raises (pyfuse3's forget must not)."""
        entry = self._by_inode.get(InodeT(inode))
        if entry is None or inode == ROOT_INODE:
            return
        entry.lookups -= count
        if entry.lookups <= 0:
            self._forget_entry(InodeT(inode), entry)

    def unlink(self, path: str) -> None:
        """The name is gone; the inode lives on (nameless) until the kernel forgets it."""
        inode = self._remove_path(path)
        if inode is not None:
            entry = self._by_inode[inode]
            entry.paths.remove(path)
            if entry.attributes is not None:
                entry.attributes.nlink = max(entry.attributes.nlink - 1, 0)

    def name_gone(self, inode: int, path: str) -> None:
        """The server no longer has ``path``: the inode loses that name, as after an
        unlink here (a new file at the name gets a new inode). The root keeps its name."""
        if inode != ROOT_INODE and self._by_path.get(path) == inode:
            self.unlink(path)

    def rename(self, old: str, new: str) -> None:
        """Move ``old`` and everything below it to ``new``; a replaced target loses its
        name."""
        self.unlink(new)
        for path in self._subtree(old):
            inode = self._remove_path(path)
            assert inode is not None
            new_path = new + path[len(old) :]
            paths = self._by_inode[inode].paths
            paths[paths.index(path)] = new_path
            self._add_path(new_path, inode)
        # A renumbered inode is still the file the kernel's dentry, which this rename
        # moves, leads to: it is opened by its former name, which moves too.
        prefix = old.rstrip("/") + "/"
        for inode in self._renumbered:
            entry = self._by_inode[inode]
            if entry.former is not None and (
                entry.former == old or entry.former.startswith(prefix)
            ):
                entry.former = new + entry.former[len(old) :]

    def _forget_entry(self, inode: InodeT, entry: _Inode) -> None:
        del self._by_inode[inode]
        self._renumbered.discard(inode)
        self._unfile(inode, entry)
        for path in entry.paths:
            if self._by_path.get(path) == inode:
                self._remove_path(path)

    def _add_path(self, path: str, inode: InodeT) -> None:
        self._by_path[path] = inode
        self._children.setdefault(posixpath.dirname(path), set()).add(path)

    def _remove_path(self, path: str) -> InodeT | None:
        inode = self._by_path.pop(path, None)
        if inode is not None and path != "/":  # the root is nobody's child
            directory = posixpath.dirname(path)
            siblings = self._children[directory]
            siblings.discard(path)
            if not siblings:
                del self._children[directory]
        return inode

    def _subtree(self, path: str) -> list[str]:
        """``path`` and the known paths below it, parents before children. A path whose
        parent lost its name is not reached; the server no longer has it either."""
        found = [path] if path in self._by_path else []
        pending = [path]
        while pending:
            for child in self._children.get(pending.pop(), ()):
                found.append(child)
                pending.append(child)
        return found

    def __len__(self) -> int:
        return len(self._by_inode)


def _signature(attributes: FileAttributes) -> tuple[int, int] | None:
    """What two names of one regular file show alike."""
    if not stat.S_ISREG(attributes.mode):
        return None
    return attributes.size, attributes.mtime_ns // _NS
