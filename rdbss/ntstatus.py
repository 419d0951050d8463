"""NTSTATUS: the one error currency between the core and the mini-redirectors.

Values are Microsoft's (ntstatus.h). The top two bits are the severity; a status is a
success when, read as a signed 32-bit number, it is >= 0 (the NT_SUCCESS macro).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable

__all__ = [
    "NAME_NOT_FOUND",
    "NtStatus",
    "NtStatusError",
    "Severity",
    "nt_error",
    "nt_information",
    "nt_success",
    "nt_warning",
    "status_of",
]


class Severity(enum.IntEnum):
    SUCCESS = 0
    INFORMATIONAL = 1
    WARNING = 2
    ERROR = 3


class NtStatus(enum.IntEnum):
    """Microsoft's NTSTATUS values, under Microsoft's names."""

    STATUS_SUCCESS = 0x00000000
    STATUS_PENDING = 0x00000103
    STATUS_BUFFER_OVERFLOW = 0x80000005
    STATUS_NO_MORE_FILES = 0x80000006
    STATUS_UNSUCCESSFUL = 0xC0000001
    STATUS_NOT_IMPLEMENTED = 0xC0000002
    STATUS_INVALID_HANDLE = 0xC0000008
    STATUS_INVALID_PARAMETER = 0xC000000D
    STATUS_NO_SUCH_FILE = 0xC000000F
    STATUS_INVALID_DEVICE_REQUEST = 0xC0000010
    STATUS_END_OF_FILE = 0xC0000011
    STATUS_ACCESS_DENIED = 0xC0000022
    STATUS_OBJECT_NAME_INVALID = 0xC0000033
    STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
    STATUS_OBJECT_NAME_COLLISION = 0xC0000035
    STATUS_OBJECT_PATH_NOT_FOUND = 0xC000003A
    STATUS_SHARING_VIOLATION = 0xC0000043
    STATUS_QUOTA_EXCEEDED = 0xC0000044
    STATUS_FILE_LOCK_CONFLICT = 0xC0000054
    STATUS_LOCK_NOT_GRANTED = 0xC0000055
    STATUS_DELETE_PENDING = 0xC0000056
    STATUS_LOGON_FAILURE = 0xC000006D
    STATUS_DISK_FULL = 0xC000007F
    STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
    STATUS_MEDIA_WRITE_PROTECTED = 0xC00000A2
    STATUS_DEVICE_NOT_READY = 0xC00000A3
    STATUS_IO_TIMEOUT = 0xC00000B5
    STATUS_FILE_IS_A_DIRECTORY = 0xC00000BA
    STATUS_NOT_SUPPORTED = 0xC00000BB
    STATUS_UNEXPECTED_NETWORK_ERROR = 0xC00000C4
    STATUS_NETWORK_NAME_DELETED = 0xC00000C9
    STATUS_BAD_NETWORK_NAME = 0xC00000CC
    STATUS_NOT_SAME_DEVICE = 0xC00000D4
    STATUS_DIRECTORY_NOT_EMPTY = 0xC0000101
    STATUS_NOT_A_DIRECTORY = 0xC0000103
    STATUS_NAME_TOO_LONG = 0xC0000106
    STATUS_TOO_MANY_OPENED_FILES = 0xC000011F
    STATUS_CANCELLED = 0xC0000120
    STATUS_FILE_DELETED = 0xC0000123
    STATUS_FILE_CLOSED = 0xC0000128
    STATUS_IO_DEVICE_ERROR = 0xC0000185
    STATUS_CONNECTION_DISCONNECTED = 0xC000020C
    STATUS_RETRY = 0xC000022D
    STATUS_CONNECTION_REFUSED = 0xC0000236
    STATUS_HOST_UNREACHABLE = 0xC000023D

    @property
    def severity(self) -> Severity:
        return Severity(self.value >> 30)

    @property
    def signed(self) -> int:
        """The value as the signed 32-bit integer C code compares against zero."""
        return self.value - (1 << 32) if self.value & 0x80000000 else self.value

    def __str__(self) -> str:
        return f"{self.name} (0x{self.value:08X})"


# What the server answers for a name it does not have (the name, or a directory on its
# path). For a request about a file the front end holds by inode, this means the file
# behind the inode is gone.
NAME_NOT_FOUND = frozenset(
    {
        NtStatus.STATUS_OBJECT_NAME_NOT_FOUND,
        NtStatus.STATUS_OBJECT_PATH_NOT_FOUND,
        NtStatus.STATUS_NO_SUCH_FILE,
    }
)


def nt_success(status: int) -> bool:
    """NT_SUCCESS: success and informational values (signed value >= 0)."""
    return not status & 0x80000000


def nt_information(status: int) -> bool:
    return status >> 30 == Severity.INFORMATIONAL


def nt_warning(status: int) -> bool:
    return status >> 30 == Severity.WARNING


def nt_error(status: int) -> bool:
    return status >> 30 == Severity.ERROR


class NtStatusError(Exception):
    """Raised by a backend's helpers to fail the current request with ``status``.

    The core turns it into the request's IoStatus at the dispatch boundary and logs the
    message; it never reaches the front end as an exception.
    """

    def __init__(self, status: NtStatus, message: str = "") -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message or str(status)


async def status_of(call: Awaitable[NtStatus]) -> tuple[NtStatus, str]:
    """Await a backend entry: its status and a message, whether it returned the status
    or raised NtStatusError from deep in its helpers (both are allowed)."""
    try:
        return await call, ""
    except NtStatusError as exc:
        return exc.status, exc.message
