"""SFTP version 3 on the wire (draft-ietf-secsh-filexfer-02 plus OpenSSH's extensions).

We speak the protocol ourselves instead of through paramiko's SFTPClient: paramiko drops
the extension list of the server's VERSION reply, caps requests at 32 KiB, and has no
helpers for statvfs/fsync/hardlink/limits. paramiko still carries the SSH transport and
the channel; this module only builds and parses SFTP packets.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "AttrFlags",
    "Attrs",
    "Limits",
    "NameEntry",
    "OpenFlags",
    "PacketType",
    "Reader",
    "SftpStatusCode",
    "StatVfs",
    "pack_attrs",
    "pack_string",
    "packet",
]

SFTP_VERSION = 3


class PacketType(enum.IntEnum):
    INIT = 1
    VERSION = 2
    OPEN = 3
    CLOSE = 4
    READ = 5
    WRITE = 6
    LSTAT = 7
    FSTAT = 8
    SETSTAT = 9
    FSETSTAT = 10
    OPENDIR = 11
    READDIR = 12
    REMOVE = 13
    MKDIR = 14
    RMDIR = 15
    REALPATH = 16
    STAT = 17
    RENAME = 18
    READLINK = 19
    SYMLINK = 20
    STATUS = 101
    HANDLE = 102
    DATA = 103
    NAME = 104
    ATTRS = 105
    EXTENDED = 200
    EXTENDED_REPLY = 201


class SftpStatusCode(enum.IntEnum):
    """SSH_FX_* status codes of SFTP v3."""

    SSH_FX_OK = 0
    SSH_FX_EOF = 1
    SSH_FX_NO_SUCH_FILE = 2
    SSH_FX_PERMISSION_DENIED = 3
    SSH_FX_FAILURE = 4
    SSH_FX_BAD_MESSAGE = 5
    SSH_FX_NO_CONNECTION = 6
    SSH_FX_CONNECTION_LOST = 7
    SSH_FX_OP_UNSUPPORTED = 8


class OpenFlags(enum.IntFlag):
    SSH_FXF_READ = 0x01
    SSH_FXF_WRITE = 0x02
    SSH_FXF_APPEND = 0x04
    SSH_FXF_CREAT = 0x08
    SSH_FXF_TRUNC = 0x10
    SSH_FXF_EXCL = 0x20


class AttrFlags(enum.IntFlag):
    SIZE = 0x01
    UIDGID = 0x02
    PERMISSIONS = 0x04
    ACMODTIME = 0x08
    EXTENDED = 0x80000000


_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_SIZE = int(AttrFlags.SIZE)
_UIDGID = int(AttrFlags.UIDGID)
_PERMISSIONS = int(AttrFlags.PERMISSIONS)
_ACMODTIME = int(AttrFlags.ACMODTIME)
_EXTENDED = int(AttrFlags.EXTENDED)
_ALL_FOUR = _SIZE | _UIDGID | _PERMISSIONS | _ACMODTIME
# size, uid, gid, permissions, atime, mtime: the order of Attrs' fields.
_ALL_FOUR_FIELDS = struct.Struct(">QIIIII")


def pack_string(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return _U32.pack(len(raw)) + raw


def packet(kind: PacketType, request_id: int, *fields: bytes) -> bytes:
    """One request packet: length, type, id, then the already packed fields."""
    body = b"".join(fields)
    return _U32.pack(len(body) + 5) + bytes((kind,)) + _U32.pack(request_id) + body


def write_header(request_id: int, handle: bytes, offset: int, length: int) -> bytes:
    """The bytes of an SSH_FXP_WRITE packet that precede its data, so that the data need
    not be copied into one buffer with them."""
    body_len = 4 + 4 + len(handle) + 8 + 4 + length
    return (
        _U32.pack(body_len + 1)
        + bytes((PacketType.WRITE,))
        + _U32.pack(request_id)
        + pack_string(handle)
        + _U64.pack(offset)
        + _U32.pack(length)
    )


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


@dataclass(slots=True)
class Attrs:
    """SFTP v3 file attributes; None where the server did not send a field."""

    size: int | None = None
    uid: int | None = None
    gid: int | None = None
    permissions: int | None = None
    atime: int | None = None
    mtime: int | None = None


def pack_attrs(attrs: Attrs) -> bytes:
    flags = AttrFlags(0)
    out = b""
    if attrs.size is not None:
        flags |= AttrFlags.SIZE
        out += _U64.pack(attrs.size)
    if attrs.uid is not None and attrs.gid is not None:
        flags |= AttrFlags.UIDGID
        out += _U32.pack(attrs.uid) + _U32.pack(attrs.gid)
    if attrs.permissions is not None:
        flags |= AttrFlags.PERMISSIONS
        out += _U32.pack(attrs.permissions)
    if attrs.atime is not None and attrs.mtime is not None:
        flags |= AttrFlags.ACMODTIME
        out += _U32.pack(attrs.atime & 0xFFFFFFFF) + _U32.pack(attrs.mtime & 0xFFFFFFFF)
    return _U32.pack(flags) + out


@dataclass(slots=True)
class NameEntry:
    filename: str
    longname: str
    attrs: Attrs


@dataclass(slots=True)
class StatVfs:
    """The reply to statvfs@openssh.com / fstatvfs@openssh.com (struct statvfs)."""

    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int
    fsid: int
    flag: int
    namemax: int


@dataclass(slots=True)
class Limits:
    """The reply to limits@openssh.com; 0 means the server sets no limit."""

    max_packet_length: int
    max_read_length: int
    max_write_length: int
    max_open_handles: int


class Reader:
    """Parse the fields of one reply; raises ValueError on a truncated packet."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def _take(self, n: int) -> memoryview:
        end = self._pos + n
        if end > len(self._data):
            raise ValueError("truncated SFTP packet")
        view = self._data[self._pos : end]
        self._pos = end
        return view

    @property
    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def bytes(self) -> bytes:
        return bytes(self._take(self.u32()))

    def view(self) -> memoryview:
        """A string field without copying it (for DATA replies)."""
        return self._take(self.u32())

    def text(self) -> str:
        return self.bytes().decode("utf-8", "surrogateescape")

    def attrs(self) -> Attrs:
        # Plain ints, not AttrFlags: every STAT reply and every listed name comes
        # through here, and an IntFlag operation costs a flag object each.
        flags = self.u32()
        if flags == _ALL_FOUR:  # what OpenSSH sends for every file: one unpack
            return Attrs(*_ALL_FOUR_FIELDS.unpack(self._take(_ALL_FOUR_FIELDS.size)))
        attrs = Attrs()
        if flags & _SIZE:
            attrs.size = self.u64()
        if flags & _UIDGID:
            attrs.uid, attrs.gid = self.u32(), self.u32()
        if flags & _PERMISSIONS:
            attrs.permissions = self.u32()
        if flags & _ACMODTIME:
            attrs.atime, attrs.mtime = self.u32(), self.u32()
        if flags & _EXTENDED:
            for _ in range(self.u32()):
                self.bytes()
                self.bytes()
        return attrs

    def names(self) -> list[NameEntry]:
        return [NameEntry(self.text(), self.text(), self.attrs()) for _ in range(self.u32())]

    def statvfs(self) -> StatVfs:
        return StatVfs(*(self.u64() for _ in range(11)))

    def limits(self) -> Limits:
        return Limits(*(self.u64() for _ in range(4)))
