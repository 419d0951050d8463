"""localdir's errno -> NTSTATUS table, walked: the user must see the errno the local
file system gave, through the front end's NTSTATUS -> errno table."""

from __future__ import annotations

import errno

from rxfs.minirdr import NtStatus
from rxfs.testing import errno_for
from rxfs_localdir import NTSTATUS_OF_ERRNO, ntstatus_for

# Where two errnos share a status, the user sees the more common one.
FOLDED = {errno.EPERM: errno.EACCES, errno.ENFILE: errno.EMFILE}


def test_every_errno_reaches_the_user_unchanged() -> None:
    for code, status in NTSTATUS_OF_ERRNO.items():
        assert errno_for(status) == FOLDED.get(code, code), errno.errorcode[code]


def test_an_unknown_errno_is_eio() -> None:
    status = ntstatus_for(OSError(errno.ELOOP, "loop"))
    assert status == NtStatus.STATUS_IO_DEVICE_ERROR
    assert errno_for(status) == errno.EIO
