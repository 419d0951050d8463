"""The SMB2 information buffers this backend reads and writes, packed by hand.

smbprotocol carries the SMB2 messages; the FILE_INFORMATION_CLASS buffers inside them
([MS-FSCC] 2.4, 2.5) are a few fixed layouts, packed and parsed here with ``struct`` so
that every field we rely on is visible in one place. Times are FILETIME: 100 ns units
since 1601-01-01 UTC.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from dataclasses import dataclass

__all__ = [
    "ATTRIBUTE_DIRECTORY",
    "ATTRIBUTE_READONLY",
    "ATTRIBUTE_REPARSE_POINT",
    "MF_SYMLINK_SIZE",
    "FileInfo",
    "FsSize",
    "filetime_of_ns",
    "name_from_server",
    "name_to_server",
    "ns_of_filetime",
    "pack_basic",
    "pack_disposition",
    "pack_end_of_file",
    "pack_mf_symlink",
    "pack_rename",
    "parse_all_information",
    "parse_directory_entries",
    "parse_fs_full_size",
    "parse_mf_symlink",
]

ATTRIBUTE_READONLY = 0x1
ATTRIBUTE_DIRECTORY = 0x10
ATTRIBUTE_REPARSE_POINT = 0x400
ATTRIBUTE_NORMAL = 0x80

# FILETIME of the Unix epoch.
_EPOCH_AS_FILETIME = 116_444_736_000_000_000


def ns_of_filetime(filetime: int) -> int:
    return (filetime - _EPOCH_AS_FILETIME) * 100 if filetime else 0


def filetime_of_ns(ns: int) -> int:
    return ns // 100 + _EPOCH_AS_FILETIME


@dataclass(frozen=True)
class FileInfo:
    """What a stat needs of one file, from any of the buffers below."""

    creation: int
    last_access: int
    last_write: int
    change: int
    end_of_file: int
    attributes: int
    nlink: int = 1
    file_id: int = 0
    # rwxrwxrwx as the file's NT ACL grants them (``_acl``); None: not read.
    permissions: int | None = None

    @property
    def is_dir(self) -> bool:
        return bool(self.attributes & ATTRIBUTE_DIRECTORY)

    def mode(self) -> int:
        """The permissions its ACL grants where they were read; else, with no POSIX
        mode over plain SMB2, 0644 for a file and 0755 for a directory (as mount.cifs
        shows them without cifsacl). A read-only file shows no write bits either way."""
        kind = stat.S_IFDIR if self.is_dir else stat.S_IFREG
        default = 0o755 if self.is_dir else 0o644
        perm = default if self.permissions is None else self.permissions
        if self.attributes & ATTRIBUTE_READONLY:
            perm &= ~0o222
        return kind | perm


# FileBasicInformation: four FILETIMEs, attributes, reserved.
_BASIC = struct.Struct("<qqqqII")
# FileStandardInformation: allocation, end of file, links, delete pending, directory.
_STANDARD = struct.Struct("<qqIBBxx")
# FileInternalInformation: the file id (an inode number on Samba).
_INTERNAL = struct.Struct("<Q")


def parse_all_information(buffer: bytes) -> FileInfo:
    """FileAllInformation (class 18): Basic, Standard, Internal, ... (we read these)."""
    creation, access, write, change, attributes, _ = _BASIC.unpack_from(buffer, 0)
    _, end_of_file, links, _, _ = _STANDARD.unpack_from(buffer, _BASIC.size)
    (file_id,) = _INTERNAL.unpack_from(buffer, _BASIC.size + _STANDARD.size)
    return FileInfo(creation, access, write, change, end_of_file, attributes, links, file_id)


# FileIdFullDirectoryInformation (class 38) up to the name.
_DIR_ENTRY = struct.Struct("<IIqqqqqqIIIIQ")


def parse_directory_entries(buffer: bytes) -> list[tuple[str, FileInfo]]:
    entries = []
    offset = 0
    while True:
        (
            next_offset,
            _index,
            creation,
            access,
            write,
            change,
            end_of_file,
            _allocation,
            attributes,
            name_length,
            _ea_size,
            _reserved,
            file_id,
        ) = _DIR_ENTRY.unpack_from(buffer, offset)
        start = offset + _DIR_ENTRY.size
        name = buffer[start : start + name_length].decode("utf-16-le")
        info = FileInfo(creation, access, write, change, end_of_file, attributes, 1, file_id)
        entries.append((name, info))
        if next_offset == 0:
            return entries
        offset += next_offset


@dataclass(frozen=True)
class FsSize:
    total_units: int
    caller_available_units: int
    actual_available_units: int
    sectors_per_unit: int
    bytes_per_sector: int


_FS_FULL_SIZE = struct.Struct("<qqqII")


def parse_fs_full_size(buffer: bytes) -> FsSize:
    """FileFsFullSizeInformation (FS class 7)."""
    return FsSize(*_FS_FULL_SIZE.unpack_from(buffer, 0))


def pack_basic(
    last_access: int = 0, last_write: int = 0, change: int = 0, attributes: int = 0
) -> bytes:
    """FileBasicInformation for SET_INFO: 0 leaves a time or the attributes as they are."""
    return _BASIC.pack(0, last_access, last_write, change, attributes, 0)


def pack_end_of_file(size: int) -> bytes:
    return struct.pack("<q", size)


def pack_disposition(delete: bool = True) -> bytes:
    return struct.pack("<B", 1 if delete else 0)


def pack_rename(target: str, replace: bool) -> bytes:
    """FileRenameInformation / FileLinkInformation in the SMB2 form ([MS-FSCC] 2.4.37
    TYPE_2): the target is a path from the share root, with backslashes."""
    name = target.encode("utf-16-le")
    return struct.pack("<B7xQI", 1 if replace else 0, 0, len(name)) + name


# Characters a POSIX name may hold and an SMB name may not, carried in Unicode's private
# use area as Services for Macintosh does (Linux's cifs client with ``mapposix``, macOS):
# control characters 0x01-0x1F to U+F001-U+F01F, and " * : < > ? \ | to U+F020-U+F027.
# A server with ``vfs objects = catia`` (or fruit's ``encoding = native``) stores the
# real name. Samba keeps a trailing space or period as it is: those go unmapped.
SFM_MAP = {
    **{chr(c): chr(0xF000 + c) for c in range(0x01, 0x20)},
    **{c: chr(0xF020 + i) for i, c in enumerate('"*:<>?\\|')},
}
_SFM_TO_SERVER = str.maketrans(SFM_MAP)
_SFM_FROM_SERVER = str.maketrans({v: k for k, v in SFM_MAP.items()})


def name_to_server(name: str) -> str:
    """One POSIX path component as an SMB name component."""
    return name.translate(_SFM_TO_SERVER)


def name_from_server(name: str) -> str:
    return name.translate(_SFM_FROM_SERVER)


# Minshall-French symlinks, as Linux's cifs client (``mfsymlinks``) and macOS write them
# where the server has no symlinks of its own: a regular file of exactly 1067 bytes,
# "XSym\n", the target's length as 4 digits and "\n", the MD5 of the target in hex and
# "\n", the target and "\n", spaces to the end.
MF_SYMLINK_SIZE = 1067
MF_SYMLINK_MAX_TARGET = 1024
_MF_MAGIC = b"XSym\n"
_MF_TARGET_OFFSET = 43


def pack_mf_symlink(target: str) -> bytes:
    """The file content of a symlink to ``target``; ValueError when it is too long."""
    link = os.fsencode(target)
    if len(link) > MF_SYMLINK_MAX_TARGET:
        raise ValueError(f"a symlink target of {len(link)} bytes (1024 at most)")
    digest = hashlib.md5(link, usedforsecurity=False).hexdigest().encode()
    head = _MF_MAGIC + b"%04d\n" % len(link) + digest + b"\n" + link + b"\n"
    return head[:MF_SYMLINK_SIZE].ljust(MF_SYMLINK_SIZE, b" ")


def parse_mf_symlink(data: bytes) -> str | None:
    """The target, if ``data`` is a symlink file (its checksum too); else None."""
    if len(data) != MF_SYMLINK_SIZE or not data.startswith(_MF_MAGIC):
        return None
    length_text = data[5:9]
    if not length_text.isdigit() or data[9:10] != b"\n" or data[42:43] != b"\n":
        return None
    length = int(length_text)
    link = data[_MF_TARGET_OFFSET : _MF_TARGET_OFFSET + length]
    if (
        length > MF_SYMLINK_MAX_TARGET
        or hashlib.md5(link, usedforsecurity=False).hexdigest().encode() != data[10:42]
    ):
        return None
    return os.fsdecode(link)
