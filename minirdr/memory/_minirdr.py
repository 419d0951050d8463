"""``memory://``: a whole file tree held in this process, gone at unmount.

It is written as the reference for plugin authors: every entry of the dispatch table that
a file system needs, each short, each returning the NTSTATUS a real server's answer maps
to. Reads and writes complete asynchronously (STATUS_PENDING, then completion from a
task in the device's nursery) so that the core's async path runs in every test, the
way a network backend's replies arrive later.

Several mounts of ``memory://NAME`` in one process share the tree NAME.
"""

from __future__ import annotations

import itertools
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    FsControlParameters,
    MiniRdrDispatch,
    NtStatus,
    NtStatusError,
    OptionError,
    RxContext,
    RxDevice,
    SetInformationParameters,
    SrvCall,
    SrvOpenFlags,
    VNetRoot,
    VolumeInfo,
    option_what,
    parse_size,
)

__all__ = ["MemoryMiniRdr"]

_inode_numbers = itertools.count(2)


@dataclass(eq=False)
class _Node:
    mode: int
    data: bytearray = field(default_factory=bytearray)
    children: dict[str, _Node] | None = None
    target: str = ""
    nlink: int = 1
    # The mount process is the server here: its files are its own, as a login's are.
    uid: int = field(default_factory=os.geteuid)
    gid: int = field(default_factory=os.getegid)
    ino: int = field(default_factory=lambda: next(_inode_numbers))
    atime_ns: int = field(default_factory=time.time_ns)
    mtime_ns: int = field(default_factory=time.time_ns)
    ctime_ns: int = field(default_factory=time.time_ns)

    def attributes(self) -> FileAttributes:
        size = len(self.target) if stat.S_ISLNK(self.mode) else len(self.data)
        return FileAttributes(
            mode=self.mode,
            size=size,
            uid=self.uid,
            gid=self.gid,
            atime_ns=self.atime_ns,
            mtime_ns=self.mtime_ns,
            ctime_ns=self.ctime_ns,
            nlink=self.nlink,
        )

    def touch(self) -> None:
        self.mtime_ns = self.ctime_ns = time.time_ns()


def _give(node: _Node, owner: tuple[int, int] | None) -> None:
    """A new file belongs to the caller who asked for it by name (allow_other)."""
    if owner is not None:
        node.uid, node.gid = owner


def _new_dir(mode: int = 0o755) -> _Node:
    return _Node(stat.S_IFDIR | mode, children={}, nlink=2)


# Trees by share name, so that two mounts of memory://NAME in one process see one tree.
_TREES: dict[str, _Node] = {}


class _Lookup:
    """Path resolution with the NTSTATUS a server gives for each way it can fail."""

    def __init__(self, root: _Node) -> None:
        self.root = root

    def parent(self, path: str) -> tuple[_Node, str]:
        *dirs, name = path.strip("/").split("/")
        node = self.root
        for part in dirs:
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                raise NtStatusError(NtStatus.STATUS_OBJECT_PATH_NOT_FOUND)
            if child.children is None:
                raise NtStatusError(NtStatus.STATUS_NOT_A_DIRECTORY)
            node = child
        return node, name

    def node(self, path: str) -> _Node:
        if path.strip("/") == "":
            return self.root
        parent, name = self.parent(path)
        assert parent.children is not None
        node = parent.children.get(name)
        if node is None:
            raise NtStatusError(NtStatus.STATUS_OBJECT_NAME_NOT_FOUND)
        return node


@dataclass(eq=False)
class _Handle:
    node: _Node
    append: bool


class MemoryMiniRdr(MiniRdrDispatch):
    scheme = "memory"
    description = "files held in memory by the mount process (for tests and as an example)"
    capabilities = (
        Capability.SYMLINKS
        | Capability.HARDLINKS
        | Capability.POSIX_RENAME
        | Capability.APPEND
        | Capability.CHMOD
        | Capability.CHOWN
        | Capability.TIMES
        | Capability.STATFS
    )
    option_names = {"size": "capacity reported by statfs (default 1G; K, M, G suffixes)"}

    def __init__(self) -> None:
        self._tree = _Lookup(_new_dir())
        self._capacity = 1 << 30
        self._device: RxDevice | None = None

    async def start(self, device: RxDevice) -> NtStatus:
        self._device = device
        return NtStatus.STATUS_SUCCESS

    async def create_srv_call(self, srv_call: SrvCall) -> NtStatus:
        # The core calls this again to reconnect after a lost connection; the tree is
        # this process's memory and stays as it is.
        share = srv_call.url.netloc
        if share and srv_call.context is None:
            self._tree = _Lookup(_TREES.setdefault(share, _new_dir()))
        srv_call.context = share
        return NtStatus.STATUS_SUCCESS

    async def create_v_net_root(self, v_net_root: VNetRoot) -> NtStatus:
        size = v_net_root.options.get("size")
        if size is not None:
            try:
                self._capacity = parse_size(size, option_what("size", size))
            except OptionError as exc:
                # Raised, not returned: the message reaches the user who mounted.
                raise NtStatusError(NtStatus.STATUS_INVALID_PARAMETER, str(exc)) from None
        root = v_net_root.net_root.root
        if root != "/":
            try:
                node = self._tree.node(root)
            except NtStatusError as fail:
                return fail.status
            if node.children is None:
                return NtStatus.STATUS_NOT_A_DIRECTORY
            self._tree = _Lookup(node)
        return NtStatus.STATUS_SUCCESS

    # -- create and close -------------------------------------------------------------

    async def create(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None and rx_context.srv_open is not None
        params = rx_context.irp.parameters
        assert isinstance(params, CreateParameters)
        try:
            node = self._open(rx_context.fcb.path, params)
        except NtStatusError as fail:
            return fail.status
        append = bool(rx_context.srv_open.flags & SrvOpenFlags.SRVOPEN_FLAG_APPEND)
        rx_context.srv_open.context = _Handle(node, append)
        rx_context.irp.attributes = node.attributes()
        return NtStatus.STATUS_SUCCESS

    def _open(self, path: str, params: CreateParameters) -> _Node:
        want_dir = bool(params.options & CreateOptions.FILE_DIRECTORY_FILE)
        disposition = params.disposition
        try:
            node = self._tree.node(path)
        except NtStatusError as fail:
            if fail.status != NtStatus.STATUS_OBJECT_NAME_NOT_FOUND or disposition in (
                CreateDisposition.FILE_OPEN,
                CreateDisposition.FILE_OVERWRITE,
            ):
                raise
            return self._make(path, params, want_dir)
        if disposition == CreateDisposition.FILE_CREATE:
            raise NtStatusError(NtStatus.STATUS_OBJECT_NAME_COLLISION)
        if node.children is not None and params.options & CreateOptions.FILE_NON_DIRECTORY_FILE:
            raise NtStatusError(NtStatus.STATUS_FILE_IS_A_DIRECTORY)
        if want_dir and node.children is None:
            raise NtStatusError(NtStatus.STATUS_NOT_A_DIRECTORY)
        if node.children is not None and params.desired_access & (
            AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA
        ):
            raise NtStatusError(NtStatus.STATUS_FILE_IS_A_DIRECTORY)
        if disposition in (
            CreateDisposition.FILE_OVERWRITE,
            CreateDisposition.FILE_OVERWRITE_IF,
            CreateDisposition.FILE_SUPERSEDE,
        ):
            del node.data[:]
            node.touch()
        return node

    def _make(self, path: str, params: CreateParameters, want_dir: bool) -> _Node:
        parent, name = self._tree.parent(path)
        assert parent.children is not None
        if len(name.encode()) > 255:
            raise NtStatusError(NtStatus.STATUS_NAME_TOO_LONG)
        perm = params.file_mode & 0o7777
        node = _new_dir(perm) if want_dir else _Node(stat.S_IFREG | perm)
        _give(node, params.owner)
        parent.children[name] = node
        if want_dir:
            parent.nlink += 1
        parent.touch()
        return node

    async def close_srv_open(self, rx_context: RxContext) -> NtStatus:
        return NtStatus.STATUS_SUCCESS

    async def flush(self, rx_context: RxContext) -> NtStatus:
        # Memory is as durable as this backend gets: nothing more to sync.
        return NtStatus.STATUS_SUCCESS

    # -- low I/O: asynchronous, like a network reply --------------------------------

    async def lowio_write(self, rx_context: RxContext) -> NtStatus:
        handle = self._handle(rx_context)
        rw = rx_context.low_io.read_write
        data = bytes(rw.buffer)
        node = handle.node
        offset = len(node.data) if handle.append else rw.byte_offset
        if max(offset + len(data), len(node.data)) > self._capacity:
            return NtStatus.STATUS_DISK_FULL

        def work() -> int:
            # An append goes at the end as it is when the write lands, as a server
            # places it: appends in flight together must not overwrite each other.
            return self._write(node, len(node.data) if handle.append else offset, data)

        self._complete_soon(rx_context, work)
        return NtStatus.STATUS_PENDING

    @staticmethod
    def _write(node: _Node, offset: int, data: bytes) -> int:
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.touch()
        return len(data)

    async def lowio_read(self, rx_context: RxContext) -> NtStatus:
        handle = self._handle(rx_context)
        rw = rx_context.low_io.read_write

        def read() -> int:
            rw.buffer = bytes(handle.node.data[rw.byte_offset : rw.byte_offset + rw.byte_count])
            return len(rw.buffer)

        self._complete_soon(rx_context, read)
        return NtStatus.STATUS_PENDING

    def _complete_soon(self, rx_context: RxContext, work: Callable[[], int]) -> None:
        """Answer from another task, as a server reply would; honour cancellation."""
        status = rx_context.set_cancel_routine(
            lambda ctx: ctx.complete_lowio(NtStatus.STATUS_CANCELLED)
        )
        if status == NtStatus.STATUS_CANCELLED:
            rx_context.complete_lowio(NtStatus.STATUS_CANCELLED)
            return

        async def reply() -> None:
            await trio.lowlevel.checkpoint()
            if rx_context.clear_cancel_routine():
                rx_context.complete_lowio(NtStatus.STATUS_SUCCESS, work())

        assert self._device is not None
        self._device.nursery.start_soon(reply)

    @staticmethod
    def _handle(rx_context: RxContext) -> _Handle:
        assert rx_context.srv_open is not None
        handle = rx_context.srv_open.context
        assert isinstance(handle, _Handle)
        return handle

    async def lowio_fsctl(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        fsctl = rx_context.low_io.fsctl
        path = rx_context.fcb.path
        try:
            if fsctl.fs_control_code == FsControlCode.FSCTL_GET_REPARSE_POINT:
                node = self._tree.node(path)
                if not stat.S_ISLNK(node.mode):
                    return NtStatus.STATUS_INVALID_PARAMETER
                rx_context.irp.link_target = node.target
                return NtStatus.STATUS_SUCCESS
            parent, name = self._tree.parent(path)
        except NtStatusError as fail:
            return fail.status
        assert parent.children is not None
        if name in parent.children:
            return NtStatus.STATUS_OBJECT_NAME_COLLISION
        node = _Node(stat.S_IFLNK | 0o777, target=fsctl.target)
        params = rx_context.irp.parameters
        _give(node, params.owner if isinstance(params, FsControlParameters) else None)
        parent.children[name] = node
        parent.touch()
        rx_context.irp.attributes = node.attributes()
        return NtStatus.STATUS_SUCCESS

    # -- information ----------------------------------------------------------------

    async def query_file_info(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        srv_open = rx_context.srv_open
        try:
            node = (
                self._handle(rx_context).node
                if srv_open is not None
                else self._tree.node(rx_context.fcb.path)
            )
        except NtStatusError as fail:
            return fail.status
        rx_context.irp.attributes = node.attributes()
        return NtStatus.STATUS_SUCCESS

    async def set_file_info(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        params = rx_context.irp.parameters
        assert isinstance(params, SetInformationParameters)
        path = rx_context.fcb.path
        try:
            node = (
                self._handle(rx_context).node
                if rx_context.srv_open is not None
                else self._tree.node(path)
            )
            self._set(path, node, params.buffer)
        except NtStatusError as fail:
            return fail.status
        # A deleted name has no attributes to report; the Fcb's stay those of the file
        # its open descriptors still write to.
        if not isinstance(params.buffer, FileDispositionInformation):
            rx_context.irp.attributes = node.attributes()
        return NtStatus.STATUS_SUCCESS

    def _set(self, path: str, node: _Node, info: object) -> None:
        if isinstance(info, FileEndOfFileInformation):
            if node.children is not None:
                raise NtStatusError(NtStatus.STATUS_FILE_IS_A_DIRECTORY)
            if info.end_of_file > self._capacity:
                raise NtStatusError(NtStatus.STATUS_DISK_FULL)
            del node.data[info.end_of_file :]
            node.data.extend(bytes(info.end_of_file - len(node.data)))
            node.touch()
        elif isinstance(info, FileBasicInformation):
            if info.mode is not None:
                node.mode = stat.S_IFMT(node.mode) | (info.mode & 0o7777)
            if info.atime_ns is not None:
                node.atime_ns = info.atime_ns
            if info.mtime_ns is not None:
                node.mtime_ns = info.mtime_ns
            if info.uid is not None:
                node.uid = info.uid
            if info.gid is not None:
                node.gid = info.gid
            node.ctime_ns = time.time_ns()
        elif isinstance(info, FileRenameInformation):
            self._rename(path, info)
        elif isinstance(info, FileLinkInformation):
            self._link(node, info)
        elif isinstance(info, FileDispositionInformation):
            self._delete(path, node)
        else:
            raise NtStatusError(NtStatus.STATUS_INVALID_PARAMETER)

    def _rename(self, path: str, info: FileRenameInformation) -> None:
        old_parent, old_name = self._tree.parent(path)
        new_parent, new_name = self._tree.parent(info.new_name)
        assert old_parent.children is not None and new_parent.children is not None
        node = old_parent.children.get(old_name)
        if node is None:
            raise NtStatusError(NtStatus.STATUS_OBJECT_NAME_NOT_FOUND)
        if info.new_name == path or info.new_name.startswith(path.rstrip("/") + "/"):
            if info.new_name == path:
                return
            raise NtStatusError(NtStatus.STATUS_INVALID_PARAMETER)  # into its own subtree
        target = new_parent.children.get(new_name)
        if target is not None:
            if not info.replace_if_exists:
                raise NtStatusError(NtStatus.STATUS_OBJECT_NAME_COLLISION)
            if target is node:
                return
            self._check_replace(node, target)
        del old_parent.children[old_name]
        new_parent.children[new_name] = node
        if node.children is not None and old_parent is not new_parent:
            old_parent.nlink -= 1
            new_parent.nlink += 1
        old_parent.touch()
        new_parent.touch()
        node.ctime_ns = time.time_ns()

    @staticmethod
    def _check_replace(node: _Node, target: _Node) -> None:
        if target.children is not None:
            if node.children is None:
                raise NtStatusError(NtStatus.STATUS_FILE_IS_A_DIRECTORY)
            if target.children:
                raise NtStatusError(NtStatus.STATUS_DIRECTORY_NOT_EMPTY)
        elif node.children is not None:
            raise NtStatusError(NtStatus.STATUS_NOT_A_DIRECTORY)

    def _link(self, node: _Node, info: FileLinkInformation) -> None:
        if node.children is not None:
            raise NtStatusError(NtStatus.STATUS_FILE_IS_A_DIRECTORY)
        parent, name = self._tree.parent(info.new_name)
        assert parent.children is not None
        if name in parent.children:
            raise NtStatusError(NtStatus.STATUS_OBJECT_NAME_COLLISION)
        parent.children[name] = node
        node.nlink += 1
        node.ctime_ns = time.time_ns()
        parent.touch()

    def _delete(self, path: str, node: _Node) -> None:
        if node is self._tree.root:
            raise NtStatusError(NtStatus.STATUS_ACCESS_DENIED)
        if node.children:
            raise NtStatusError(NtStatus.STATUS_DIRECTORY_NOT_EMPTY)
        parent, name = self._tree.parent(path)
        assert parent.children is not None
        del parent.children[name]
        if node.children is not None:
            parent.nlink -= 1
        else:
            node.nlink -= 1
        parent.touch()

    async def query_directory(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        try:
            node = self._tree.node(rx_context.fcb.path)
        except NtStatusError as fail:
            return fail.status
        if node.children is None:
            return NtStatus.STATUS_NOT_A_DIRECTORY
        rx_context.irp.entries = [
            DirEntry(name, child.attributes()) for name, child in node.children.items()
        ]
        return NtStatus.STATUS_SUCCESS

    async def query_volume_info(self, rx_context: RxContext) -> NtStatus:
        used = _used_bytes(self._tree.root)
        block = 4096
        free = max(self._capacity - used, 0) // block
        rx_context.irp.volume = VolumeInfo(
            block_size=block,
            total_blocks=self._capacity // block,
            free_blocks=free,
            available_blocks=free,
            total_files=1 << 20,
            free_files=1 << 20,
        )
        return NtStatus.STATUS_SUCCESS


def _used_bytes(node: _Node) -> int:
    if node.children is None:
        return len(node.data)
    return sum(_used_bytes(child) for child in node.children.values())
