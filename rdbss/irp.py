"""The I/O request packet: what the front end hands the core, one per request.

Only the parts of the Windows IRP that carry meaning here are kept: the major function,
the per-major ``Parameters`` block, the buffer, the target file object (our Fobx) and the
IoStatus block the core fills in. Requests that Windows sends as create + operation +
close on a path (delete, rename, query by name) carry ``file_name`` instead of a Fobx:
FUSE addresses them by path, and POSIX unlink takes effect at once, not on last close.
"""

from __future__ import annotations

import enum
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .ntstatus import NtStatus

if TYPE_CHECKING:
    from ._objects import Fobx

__all__ = [
    "AccessMask",
    "CreateDisposition",
    "CreateOptions",
    "CreateParameters",
    "DirEntry",
    "FileAttributes",
    "FileBasicInformation",
    "FileDispositionInformation",
    "FileEndOfFileInformation",
    "FileInformationClass",
    "FileLinkInformation",
    "FileRenameInformation",
    "FsControlCode",
    "FsControlParameters",
    "IoStatusBlock",
    "Irp",
    "IrpMj",
    "QueryDirectoryParameters",
    "QueryInformationParameters",
    "ReadParameters",
    "SetInformationParameters",
    "VolumeInfo",
    "WriteParameters",
]


class IrpMj(enum.IntEnum):
    """Major function codes (wdm.h values)."""

    IRP_MJ_CREATE = 0x00
    IRP_MJ_CLOSE = 0x02
    IRP_MJ_READ = 0x03
    IRP_MJ_WRITE = 0x04
    IRP_MJ_QUERY_INFORMATION = 0x05
    IRP_MJ_SET_INFORMATION = 0x06
    IRP_MJ_FLUSH_BUFFERS = 0x09
    IRP_MJ_QUERY_VOLUME_INFORMATION = 0x0A
    IRP_MJ_DIRECTORY_CONTROL = 0x0C
    IRP_MJ_FILE_SYSTEM_CONTROL = 0x0D
    IRP_MJ_LOCK_CONTROL = 0x11
    IRP_MJ_CLEANUP = 0x12


class AccessMask(enum.IntFlag):
    """The DesiredAccess bits a create asks for (winnt.h values)."""

    FILE_READ_DATA = 0x0001
    FILE_WRITE_DATA = 0x0002
    FILE_APPEND_DATA = 0x0004
    FILE_READ_ATTRIBUTES = 0x0080
    FILE_WRITE_ATTRIBUTES = 0x0100
    DELETE = 0x00010000


class CreateDisposition(enum.IntEnum):
    """What a create does when the name exists or not (wdm.h values)."""

    FILE_SUPERSEDE = 0
    FILE_OPEN = 1
    FILE_CREATE = 2
    FILE_OPEN_IF = 3
    FILE_OVERWRITE = 4
    FILE_OVERWRITE_IF = 5


class CreateOptions(enum.IntFlag):
    FILE_DIRECTORY_FILE = 0x00000001
    FILE_WRITE_THROUGH = 0x00000002
    FILE_NO_INTERMEDIATE_BUFFERING = 0x00000008
    FILE_NON_DIRECTORY_FILE = 0x00000040


class FileInformationClass(enum.IntEnum):
    """FILE_INFORMATION_CLASS values for the classes the front end uses."""

    FileBasicInformation = 4
    FileRenameInformation = 10
    FileLinkInformation = 11
    FileDispositionInformation = 13
    FileEndOfFileInformation = 20
    FileStatInformation = 68


class FsControlCode(enum.IntEnum):
    """FSCTL codes for symbolic links (reparse points), winioctl.h values."""

    FSCTL_SET_REPARSE_POINT = 0x000900A4
    FSCTL_GET_REPARSE_POINT = 0x000900A8


@dataclass(slots=True)
class FileAttributes:
    """What a query for FileStatInformation returns: POSIX attributes of one file.

    Times are nanoseconds since the epoch; a backend that only knows seconds multiplies.
    """

    mode: int
    size: int = 0
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    nlink: int = 1

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


@dataclass(slots=True)
class DirEntry:
    name: str
    attributes: FileAttributes


@dataclass(slots=True)
class VolumeInfo:
    """IRP_MJ_QUERY_VOLUME_INFORMATION: sizes in blocks of ``block_size`` bytes."""

    block_size: int = 4096
    total_blocks: int = 0
    free_blocks: int = 0
    available_blocks: int = 0
    total_files: int = 0
    free_files: int = 0
    max_name_length: int = 255


@dataclass(slots=True)
class IoStatusBlock:
    status: NtStatus = NtStatus.STATUS_PENDING
    information: int = 0


@dataclass(slots=True)
class CreateParameters:
    """``owner``: the local (uid, gid) of the caller, for a file this create makes. A
    mount shared with other users (allow_other) passes it, so that their files are
    theirs on the server as on a local disk; a backend that cannot set it (or need not:
    the server gives the same) leaves the owner it got. None: whatever the server gives.
    """

    desired_access: AccessMask
    disposition: CreateDisposition
    options: CreateOptions = CreateOptions(0)  # noqa: RUF009 - immutable
    file_mode: int = 0o644
    owner: tuple[int, int] | None = None


@dataclass(slots=True)
class ReadParameters:
    length: int
    byte_offset: int
    key: int = 0


@dataclass(slots=True)
class WriteParameters:
    length: int
    byte_offset: int
    key: int = 0


@dataclass(slots=True)
class QueryInformationParameters:
    file_information_class: FileInformationClass = FileInformationClass.FileStatInformation


@dataclass(slots=True)
class FileBasicInformation:
    """Times and mode; None leaves a field as it is.

    Departs from Windows, whose basic information carries DOS attribute bits: a POSIX
    mount needs the permission bits here instead.
    """

    atime_ns: int | None = None
    mtime_ns: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(slots=True)
class FileEndOfFileInformation:
    end_of_file: int


@dataclass(slots=True)
class FileRenameInformation:
    new_name: str
    replace_if_exists: bool


@dataclass(slots=True)
class FileLinkInformation:
    new_name: str
    replace_if_exists: bool = False


@dataclass(slots=True)
class FileDispositionInformation:
    delete_file: bool = True


SetInformationBuffer = (
    FileBasicInformation
    | FileEndOfFileInformation
    | FileRenameInformation
    | FileLinkInformation
    | FileDispositionInformation
)

_INFO_CLASS_OF: dict[type, FileInformationClass] = {
    FileBasicInformation: FileInformationClass.FileBasicInformation,
    FileEndOfFileInformation: FileInformationClass.FileEndOfFileInformation,
    FileRenameInformation: FileInformationClass.FileRenameInformation,
    FileLinkInformation: FileInformationClass.FileLinkInformation,
    FileDispositionInformation: FileInformationClass.FileDispositionInformation,
}


@dataclass(slots=True)
class SetInformationParameters:
    buffer: SetInformationBuffer

    @property
    def file_information_class(self) -> FileInformationClass:
        return _INFO_CLASS_OF[type(self.buffer)]


@dataclass(slots=True)
class QueryDirectoryParameters:
    """Ask for the whole listing; the front end keeps it as a snapshot per open."""

    restart_scan: bool = True


@dataclass(slots=True)
class FsControlParameters:
    """Reparse-point FSCTLs, used for symbolic links.

    SET creates ``file_name`` as a symlink whose target is ``target``; GET returns the
    target in ``Irp.link_target``.
    """

    fs_control_code: FsControlCode
    target: str = ""
    owner: tuple[int, int] | None = None  # of a symlink SET makes: see CreateParameters


Parameters = (
    CreateParameters
    | ReadParameters
    | WriteParameters
    | QueryInformationParameters
    | SetInformationParameters
    | QueryDirectoryParameters
    | FsControlParameters
    | None
)


@dataclass(eq=False, slots=True)
class Irp:
    """One request from the front end.

    The core fills ``io_status`` and, by major function, one of the output fields:
    ``file_object`` (create), ``attributes`` (create, query information, set
    information), ``entries`` (directory control), ``volume`` (volume information),
    ``link_target`` (FSCTL_GET_REPARSE_POINT) or the read ``buffer``.
    """

    major_function: IrpMj
    parameters: Parameters = None
    minor_function: int = 0
    file_object: Fobx | None = None
    file_name: str | None = None
    buffer: bytes | bytearray | memoryview = b""
    io_status: IoStatusBlock = field(default_factory=IoStatusBlock)
    attributes: FileAttributes | None = None
    entries: list[DirEntry] | None = None
    volume: VolumeInfo | None = None
    link_target: str | None = None
