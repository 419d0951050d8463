"""NTSTATUS -> errno: the one place the core's answers become POSIX errors (DESIGN §6)."""

from __future__ import annotations

import errno
import logging

from rxfs.rdbss import NtStatus, nt_success

__all__ = ["ERRNO_OF", "errno_for"]

log = logging.getLogger(__name__)

_S = NtStatus

ERRNO_OF: dict[NtStatus, int] = {
    _S.STATUS_OBJECT_NAME_NOT_FOUND: errno.ENOENT,
    _S.STATUS_OBJECT_PATH_NOT_FOUND: errno.ENOENT,
    _S.STATUS_NO_SUCH_FILE: errno.ENOENT,
    _S.STATUS_ACCESS_DENIED: errno.EACCES,
    _S.STATUS_LOGON_FAILURE: errno.EACCES,
    _S.STATUS_MEDIA_WRITE_PROTECTED: errno.EROFS,
    _S.STATUS_OBJECT_NAME_COLLISION: errno.EEXIST,
    _S.STATUS_DIRECTORY_NOT_EMPTY: errno.ENOTEMPTY,
    _S.STATUS_NOT_A_DIRECTORY: errno.ENOTDIR,
    _S.STATUS_FILE_IS_A_DIRECTORY: errno.EISDIR,
    # Only the write and read paths answer INVALID_DEVICE_REQUEST, for a directory.
    _S.STATUS_INVALID_DEVICE_REQUEST: errno.EISDIR,
    _S.STATUS_DISK_FULL: errno.ENOSPC,
    _S.STATUS_QUOTA_EXCEEDED: errno.EDQUOT,
    _S.STATUS_INVALID_PARAMETER: errno.EINVAL,
    _S.STATUS_OBJECT_NAME_INVALID: errno.EINVAL,
    _S.STATUS_NAME_TOO_LONG: errno.ENAMETOOLONG,
    _S.STATUS_NOT_SUPPORTED: errno.EOPNOTSUPP,
    _S.STATUS_NOT_IMPLEMENTED: errno.ENOSYS,
    _S.STATUS_FILE_CLOSED: errno.EBADF,
    _S.STATUS_INVALID_HANDLE: errno.EBADF,
    _S.STATUS_INSUFFICIENT_RESOURCES: errno.ENOMEM,
    _S.STATUS_NOT_SAME_DEVICE: errno.EXDEV,
    _S.STATUS_IO_TIMEOUT: errno.ETIMEDOUT,
    _S.STATUS_CANCELLED: errno.EINTR,
    _S.STATUS_FILE_LOCK_CONFLICT: errno.EAGAIN,
    _S.STATUS_LOCK_NOT_GRANTED: errno.EAGAIN,
    _S.STATUS_SHARING_VIOLATION: errno.EBUSY,
    _S.STATUS_DELETE_PENDING: errno.ENOENT,
    # The file behind an inode the kernel holds is gone on the server: on ESTALE Linux
    # walks the path again with real lookups (LOOKUP_REVAL) and retries the call.
    _S.STATUS_FILE_DELETED: errno.ESTALE,
    _S.STATUS_TOO_MANY_OPENED_FILES: errno.EMFILE,
    _S.STATUS_END_OF_FILE: errno.EIO,
    _S.STATUS_CONNECTION_DISCONNECTED: errno.EIO,
    _S.STATUS_NETWORK_NAME_DELETED: errno.EIO,
    _S.STATUS_UNEXPECTED_NETWORK_ERROR: errno.EIO,
    _S.STATUS_IO_DEVICE_ERROR: errno.EIO,
    _S.STATUS_DEVICE_NOT_READY: errno.EIO,
    _S.STATUS_UNSUCCESSFUL: errno.EIO,
    _S.STATUS_CONNECTION_REFUSED: errno.EIO,
    _S.STATUS_HOST_UNREACHABLE: errno.EIO,
    _S.STATUS_BAD_NETWORK_NAME: errno.ENOENT,
    _S.STATUS_RETRY: errno.EAGAIN,
    _S.STATUS_BUFFER_OVERFLOW: errno.EOVERFLOW,
    _S.STATUS_NO_MORE_FILES: errno.ENOENT,
}


def errno_for(status: NtStatus) -> int:
    """The errno a failed request returns. PENDING and successes never get here: they
    are a bug in the core, answered EIO and logged."""
    if nt_success(status):
        log.error("errno_for(%s): a success status reached the errno mapping", status)
        return errno.EIO
    return ERRNO_OF.get(status, errno.EIO)
