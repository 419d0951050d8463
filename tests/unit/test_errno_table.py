"""NTSTATUS -> errno at the fs/ boundary (DESIGN §6): one table, walked here."""

from __future__ import annotations

import errno

import pytest
from rxfs.fs._errors import ERRNO_OF, errno_for
from rxfs.rdbss import NtStatus, nt_success

S = NtStatus

# DESIGN §6, "NTSTATUS -> errno, at the fs/ boundary only", as written there.
DESIGN_ERRNO_OF: dict[NtStatus, int] = {
    S.STATUS_OBJECT_NAME_NOT_FOUND: errno.ENOENT,
    S.STATUS_OBJECT_PATH_NOT_FOUND: errno.ENOENT,
    S.STATUS_NO_SUCH_FILE: errno.ENOENT,
    S.STATUS_ACCESS_DENIED: errno.EACCES,
    S.STATUS_LOGON_FAILURE: errno.EACCES,
    S.STATUS_MEDIA_WRITE_PROTECTED: errno.EROFS,
    S.STATUS_OBJECT_NAME_COLLISION: errno.EEXIST,
    S.STATUS_DIRECTORY_NOT_EMPTY: errno.ENOTEMPTY,
    S.STATUS_NOT_A_DIRECTORY: errno.ENOTDIR,
    S.STATUS_FILE_IS_A_DIRECTORY: errno.EISDIR,
    S.STATUS_INVALID_DEVICE_REQUEST: errno.EISDIR,  # only ever answered for a directory
    S.STATUS_DISK_FULL: errno.ENOSPC,
    S.STATUS_QUOTA_EXCEEDED: errno.EDQUOT,
    S.STATUS_INVALID_PARAMETER: errno.EINVAL,
    S.STATUS_OBJECT_NAME_INVALID: errno.EINVAL,
    S.STATUS_NAME_TOO_LONG: errno.ENAMETOOLONG,
    S.STATUS_NOT_SUPPORTED: errno.EOPNOTSUPP,
    S.STATUS_NOT_IMPLEMENTED: errno.ENOSYS,
    S.STATUS_FILE_CLOSED: errno.EBADF,
    S.STATUS_INVALID_HANDLE: errno.EBADF,
    S.STATUS_INSUFFICIENT_RESOURCES: errno.ENOMEM,
    S.STATUS_NOT_SAME_DEVICE: errno.EXDEV,
    S.STATUS_IO_TIMEOUT: errno.ETIMEDOUT,
    S.STATUS_CANCELLED: errno.EINTR,
    S.STATUS_FILE_LOCK_CONFLICT: errno.EAGAIN,
    S.STATUS_LOCK_NOT_GRANTED: errno.EAGAIN,
    S.STATUS_CONNECTION_DISCONNECTED: errno.EIO,
    S.STATUS_NETWORK_NAME_DELETED: errno.EIO,
    S.STATUS_UNEXPECTED_NETWORK_ERROR: errno.EIO,
    S.STATUS_IO_DEVICE_ERROR: errno.EIO,
    S.STATUS_DEVICE_NOT_READY: errno.EIO,
    S.STATUS_UNSUCCESSFUL: errno.EIO,
}

FAILURES = [s for s in NtStatus if not nt_success(s)]


@pytest.mark.parametrize("status", list(DESIGN_ERRNO_OF), ids=lambda s: s.name)
def test_errno_table_follows_design(status: NtStatus) -> None:
    assert ERRNO_OF[status] == DESIGN_ERRNO_OF[status]
    assert errno_for(status) == DESIGN_ERRNO_OF[status]


def test_every_failure_status_has_its_own_table_entry() -> None:
    """A new NtStatus member must be given an errno on purpose, not fall to EIO."""
    assert [s.name for s in FAILURES if s not in ERRNO_OF] == []


def test_table_maps_only_failures_to_real_errnos() -> None:
    known = set(errno.errorcode)
    for status, value in ERRNO_OF.items():
        assert not nt_success(status), f"{status} is a success and has no errno"
        assert value in known and value != 0, status


@pytest.mark.expect_log(r"a success status reached the errno mapping")
@pytest.mark.parametrize("status", [S.STATUS_SUCCESS, S.STATUS_PENDING], ids=lambda s: s.name)
def test_success_or_pending_reaching_the_mapping_is_eio_never_zero(status: NtStatus) -> None:
    assert errno_for(status) == errno.EIO
