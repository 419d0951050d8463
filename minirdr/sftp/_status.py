"""SFTP status -> NTSTATUS: one table, and the probes that find the cause of a FAILURE.

OpenSSH's sftp-server folds ENOSPC, EDQUOT, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR and most
other errnos into SSH_FX_FAILURE ("Failure"). A user deserves the real cause, so when the
answer is FAILURE the caller names what it was doing (:class:`Probe`) and
:func:`nt_status_of` asks the server a follow-up question (DESIGN §6): did the name
exist, is the directory empty, is the disk full. A probe only refines the answer; when it
cannot tell (or fails itself) the status stays STATUS_UNSUCCESSFUL.
"""

from __future__ import annotations

import enum
import logging
import posixpath
import stat
from typing import TYPE_CHECKING

from rxfs.minirdr import NtStatus, NtStatusError

from ._convert import is_dir
from ._engine import EXT_STATVFS, SftpError
from ._wire import SftpStatusCode

if TYPE_CHECKING:
    from ._engine import SftpSession
    from ._wire import Attrs

__all__ = ["NTSTATUS_OF_SFTP", "TIMEOUT_STATUS", "Probe", "nt_status_of", "status_error"]

log = logging.getLogger(__name__)

_S = NtStatus
_C = SftpStatusCode

NTSTATUS_OF_SFTP: dict[SftpStatusCode, NtStatus] = {
    _C.SSH_FX_OK: _S.STATUS_SUCCESS,
    _C.SSH_FX_EOF: _S.STATUS_END_OF_FILE,
    _C.SSH_FX_NO_SUCH_FILE: _S.STATUS_OBJECT_NAME_NOT_FOUND,
    _C.SSH_FX_PERMISSION_DENIED: _S.STATUS_ACCESS_DENIED,
    # Refined by a probe where the operation has one; otherwise an unexplained failure.
    _C.SSH_FX_FAILURE: _S.STATUS_UNSUCCESSFUL,
    _C.SSH_FX_BAD_MESSAGE: _S.STATUS_INVALID_PARAMETER,
    _C.SSH_FX_NO_CONNECTION: _S.STATUS_CONNECTION_DISCONNECTED,
    _C.SSH_FX_CONNECTION_LOST: _S.STATUS_CONNECTION_DISCONNECTED,
    _C.SSH_FX_OP_UNSUPPORTED: _S.STATUS_NOT_SUPPORTED,
}

# What a request that outlived its deadline answers.
TIMEOUT_STATUS = _S.STATUS_IO_TIMEOUT


class Probe(enum.Enum):
    """What the failed request was doing, which says which follow-up question to ask."""

    NONE = enum.auto()
    # OPEN without O_EXCL: a directory in the way, or a missing parent.
    OPEN = enum.auto()
    # Something that must not exist yet: O_EXCL create, mkdir, symlink, link target.
    CREATE_NEW = enum.auto()
    RMDIR = enum.auto()
    OPENDIR = enum.auto()
    READLINK = enum.auto()
    REMOVE = enum.auto()
    # Something that needs space: write, close, fsync, truncate up.
    SPACE = enum.auto()
    # Rename: ``other`` is the new name; a plain SFTP rename refuses an existing one.
    RENAME = enum.auto()
    # posix-rename@openssh.com: replaces an existing target.
    RENAME_REPLACE = enum.auto()


async def nt_status_of(
    error: SftpError,
    session: SftpSession,
    probe: Probe = Probe.NONE,
    path: str = "",
    other: str = "",
) -> NtStatus:
    """The NTSTATUS for ``error``, refined by asking the server when the code is vague.

    ``path`` is the remote path the request named; for RENAME, ``other`` is the target.
    """
    base = NTSTATUS_OF_SFTP[error.code]
    if error.code == _C.SSH_FX_NO_SUCH_FILE and probe in (
        Probe.OPEN,
        Probe.CREATE_NEW,
        Probe.RENAME,
        Probe.RENAME_REPLACE,
    ):
        created = other if probe in (Probe.RENAME, Probe.RENAME_REPLACE) else path
        return await _missing_parent(session, created, base)
    # OpenSSH answers NO_SUCH_FILE for ENOTDIR too: opendir(2) of a file.
    vague = error.code == _C.SSH_FX_FAILURE or (
        error.code == _C.SSH_FX_NO_SUCH_FILE and probe == Probe.OPENDIR
    )
    if not vague or probe == Probe.NONE:
        return base
    try:
        found = await _PROBES[probe](session, path, other)
    except SftpError as exc:
        log.debug("probe %s of %r failed: %s", probe.name, path, exc)
        found = None
    return found if found is not None else base


async def status_error(
    error: SftpError, session: SftpSession, probe: Probe, path: str, other: str = ""
) -> NtStatusError:
    """:func:`nt_status_of` as the NtStatusError a dispatch entry raises, naming ``path``."""
    status = await nt_status_of(error, session, probe, path, other)
    return NtStatusError(status, f"{path}: {error}")


async def _missing_parent(session: SftpSession, path: str, base: NtStatus) -> NtStatus:
    """NO_SUCH_FILE on a create names the target when its parent exists, else the path."""
    try:
        attrs = await session.stat(posixpath.dirname(path) or "/")
    except SftpError as exc:
        if exc.code == _C.SSH_FX_NO_SUCH_FILE:
            return _S.STATUS_OBJECT_PATH_NOT_FOUND
        return base
    if not is_dir(attrs):
        return _S.STATUS_NOT_A_DIRECTORY
    return base


async def _lstat_or_none(session: SftpSession, path: str) -> Attrs | None:
    try:
        return await session.lstat(path)
    except SftpError as exc:
        if exc.code == _C.SSH_FX_NO_SUCH_FILE:
            return None
        if exc.code == _C.SSH_FX_FAILURE:
            # lstat(2) fails this way on ENOTDIR: a file where a directory should be.
            raise _NotADirectoryError from exc
        raise


class _NotADirectoryError(Exception):
    pass


async def _probe_open(session: SftpSession, path: str, other: str) -> NtStatus | None:
    try:
        attrs = await _lstat_or_none(session, path)
    except _NotADirectoryError:
        return _S.STATUS_NOT_A_DIRECTORY
    if attrs is not None and is_dir(attrs):
        return _S.STATUS_FILE_IS_A_DIRECTORY
    return await _probe_space(session, path, other)


async def _probe_create_new(session: SftpSession, path: str, other: str) -> NtStatus | None:
    try:
        attrs = await _lstat_or_none(session, path)
    except _NotADirectoryError:
        return _S.STATUS_NOT_A_DIRECTORY
    if attrs is not None:
        return _S.STATUS_OBJECT_NAME_COLLISION
    return await _probe_space(session, path, other)


async def _probe_rmdir(session: SftpSession, path: str, other: str) -> NtStatus | None:
    try:
        attrs = await _lstat_or_none(session, path)
    except _NotADirectoryError:
        return _S.STATUS_NOT_A_DIRECTORY
    if attrs is None:
        return _S.STATUS_OBJECT_NAME_NOT_FOUND
    if not is_dir(attrs):
        return _S.STATUS_NOT_A_DIRECTORY
    if await _non_empty(session, path):
        return _S.STATUS_DIRECTORY_NOT_EMPTY
    return None


async def _probe_opendir(session: SftpSession, path: str, other: str) -> NtStatus | None:
    try:
        attrs = await _lstat_or_none(session, path)
    except _NotADirectoryError:
        return _S.STATUS_NOT_A_DIRECTORY
    if attrs is not None and not is_dir(attrs):
        return _S.STATUS_NOT_A_DIRECTORY
    return None


async def _probe_readlink(session: SftpSession, path: str, other: str) -> NtStatus | None:
    """readlink(2) of something that is not a symlink fails EINVAL."""
    attrs = await _lstat_or_none(session, path)
    if attrs is not None and not (
        attrs.permissions is not None and stat.S_ISLNK(attrs.permissions)
    ):
        return _S.STATUS_INVALID_PARAMETER
    return None


async def _probe_remove(session: SftpSession, path: str, other: str) -> NtStatus | None:
    attrs = await _lstat_or_none(session, path)
    if attrs is not None and is_dir(attrs):
        return _S.STATUS_FILE_IS_A_DIRECTORY
    return None


async def _non_empty(session: SftpSession, path: str) -> bool:
    entries = await session.listdir(path, first_batch_only=True)
    return any(e.filename not in (".", "..") for e in entries)


async def _probe_space(session: SftpSession, path: str, other: str) -> NtStatus | None:
    """No free blocks for us on the server's file system: DISK_FULL.

    A short write leaves the disk full, so a FAILURE with bavail == 0 is ENOSPC. Without
    statvfs@openssh.com we cannot tell and the failure stays unexplained.
    """
    if not session.has(EXT_STATVFS):
        return None
    vfs = await session.statvfs(posixpath.dirname(path) if path else "/")
    if vfs.bavail == 0 or (vfs.favail == 0 and vfs.files != 0):
        return _S.STATUS_DISK_FULL
    return None


async def _probe_rename(session: SftpSession, path: str, other: str) -> NtStatus | None:
    return await _probe_rename_onto(session, path, other, replace=False)


async def _probe_rename_replace(session: SftpSession, path: str, other: str) -> NtStatus | None:
    return await _probe_rename_onto(session, path, other, replace=True)


async def _probe_rename_onto(
    session: SftpSession, path: str, other: str, *, replace: bool
) -> NtStatus | None:
    try:
        source = await _lstat_or_none(session, path)
        target = await _lstat_or_none(session, other)
    except _NotADirectoryError:
        return _S.STATUS_NOT_A_DIRECTORY
    if source is None:
        return _S.STATUS_OBJECT_NAME_NOT_FOUND
    if target is None:
        return await _probe_space(session, other, "")
    if is_dir(target):
        if not is_dir(source):
            return _S.STATUS_FILE_IS_A_DIRECTORY
        if await _non_empty(session, other):
            return _S.STATUS_DIRECTORY_NOT_EMPTY
        return None
    if is_dir(source):
        return _S.STATUS_NOT_A_DIRECTORY
    # A plain SSH_FXP_RENAME refuses any existing target.
    return None if replace else _S.STATUS_OBJECT_NAME_COLLISION


async def _no_probe(session: SftpSession, path: str, other: str) -> NtStatus | None:
    return None


_PROBES = {
    Probe.NONE: _no_probe,
    Probe.OPEN: _probe_open,
    Probe.CREATE_NEW: _probe_create_new,
    Probe.RMDIR: _probe_rmdir,
    Probe.OPENDIR: _probe_opendir,
    Probe.READLINK: _probe_readlink,
    Probe.REMOVE: _probe_remove,
    Probe.SPACE: _probe_space,
    Probe.RENAME: _probe_rename,
    Probe.RENAME_REPLACE: _probe_rename_replace,
}
