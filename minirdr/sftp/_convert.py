"""NT <-> SFTP conversions: what the core asks for, in SFTP v3 terms, and back.

The core speaks NT (CreateParameters, FileBasicInformation, FileAttributes); the server
speaks SFTP v3 (open flags, ATTRS). One function per direction; NTSTATUS is not here but
in :mod:`._status`, with the probes that refine it.
"""

from __future__ import annotations

import stat

from rxfs.minirdr import (
    AccessMask,
    CreateDisposition,
    CreateParameters,
    FileAttributes,
    FileBasicInformation,
)

from ._wire import Attrs, OpenFlags

__all__ = ["basic_attrs", "file_attributes", "is_dir", "is_symlink", "nlink_of", "open_flags"]


def file_attributes(attrs: Attrs, nlink: int = 1) -> FileAttributes:
    """SFTP v3 has whole seconds and no ctime: ctime is reported as mtime."""
    mtime_ns = (attrs.mtime or 0) * 1_000_000_000
    return FileAttributes(
        mode=attrs.permissions or 0,
        size=attrs.size or 0,
        uid=attrs.uid or 0,
        gid=attrs.gid or 0,
        atime_ns=(attrs.atime or 0) * 1_000_000_000,
        mtime_ns=mtime_ns,
        ctime_ns=mtime_ns,
        nlink=nlink,
    )


def is_dir(attrs: Attrs) -> bool:
    return attrs.permissions is not None and stat.S_ISDIR(attrs.permissions)


def is_symlink(attrs: Attrs) -> bool:
    return attrs.permissions is not None and stat.S_ISLNK(attrs.permissions)


def nlink_of(longname: str) -> int:
    """The link count from a READDIR longname (``ls -l`` format), 1 when unreadable."""
    fields = longname.split(None, 2)
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 1


def open_flags(params: CreateParameters, append: bool) -> OpenFlags:
    access = params.desired_access
    flags = OpenFlags(0)
    if access & AccessMask.FILE_READ_DATA:
        flags |= OpenFlags.SSH_FXF_READ
    if access & (AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA):
        flags |= OpenFlags.SSH_FXF_WRITE
    if append:
        # The server puts every write at the end, so appends from two mounts never
        # overwrite each other (the offsets we send are ignored).
        flags |= OpenFlags.SSH_FXF_APPEND
    disposition = params.disposition
    if disposition in (
        CreateDisposition.FILE_CREATE,
        CreateDisposition.FILE_OPEN_IF,
        CreateDisposition.FILE_OVERWRITE_IF,
        CreateDisposition.FILE_SUPERSEDE,
    ):
        flags |= OpenFlags.SSH_FXF_CREAT
    if disposition == CreateDisposition.FILE_CREATE:
        flags |= OpenFlags.SSH_FXF_EXCL
    if disposition in (
        CreateDisposition.FILE_OVERWRITE,
        CreateDisposition.FILE_OVERWRITE_IF,
        CreateDisposition.FILE_SUPERSEDE,
    ):
        flags |= OpenFlags.SSH_FXF_TRUNC | OpenFlags.SSH_FXF_WRITE
    if not flags & (OpenFlags.SSH_FXF_READ | OpenFlags.SSH_FXF_WRITE):
        flags |= OpenFlags.SSH_FXF_READ
    return flags


def basic_attrs(info: FileBasicInformation, current: Attrs) -> Attrs:
    """The SETSTAT attributes for ``info``, pairs completed from ``current``."""
    attrs = Attrs(permissions=None if info.mode is None else info.mode & 0o7777)
    if info.uid is not None or info.gid is not None:
        attrs.uid = info.uid if info.uid is not None else current.uid
        attrs.gid = info.gid if info.gid is not None else current.gid
    if info.atime_ns is not None or info.mtime_ns is not None:
        attrs.atime = (
            info.atime_ns // 1_000_000_000 if info.atime_ns is not None else current.atime
        )
        attrs.mtime = (
            info.mtime_ns // 1_000_000_000 if info.mtime_ns is not None else current.mtime
        )
    return attrs
