"""POSIX mode bits as an NT ACL, the way Samba and Linux's cifs client (``cifsacl``) agree.

Plain SMB2 has no mode. Samba, with ``nt acl support`` (on by default), shows a file's
POSIX permissions as a DACL of three allow-ACEs: the owner's SID, the group's SID and
Everyone (S-1-1-0), with FILE_GENERIC_READ / _WRITE / _EXECUTE for r, w and x; and maps
a DACL of that shape that a client sets back to those permissions (posix_acls.c). So a
mode is read as the access the DACL grants those three SIDs and written as such a DACL;
ACEs for anyone else, and the inherit-only ones (a directory's default ACL), are kept.

Buffers are [MS-DTYP] 2.4.6 self-relative SECURITY_DESCRIPTORs, packed by hand like the
rest of ``_wire``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "SecurityDescriptor",
    "pack_mode_dacl",
    "parse_security_descriptor",
]

# [MS-DTYP] 2.4.4.1 ACE types and flags, 2.4.3 access bits.
_ALLOWED = 0x0
_DENIED = 0x1
_INHERIT_ONLY = 0x8
_READ_DATA = 0x1
_WRITE_DATA = 0x2
_EXECUTE = 0x20
_GENERIC_ALL = 0x10000000
_GENERIC_EXECUTE = 0x20000000
_GENERIC_WRITE = 0x40000000
_GENERIC_READ = 0x80000000
# What an ACE grants for r, w and x (Samba's and cifs's choice: the FILE_GENERIC_ sets).
_FILE_GENERIC_READ = 0x120089
_FILE_GENERIC_WRITE = 0x120116
_FILE_GENERIC_EXECUTE = 0x1200A0
# [MS-DTYP] 2.4.6 control bits: self-relative, DACL present.
_SELF_RELATIVE = 0x8000
_DACL_PRESENT = 0x4
_HEADER = struct.Struct("<BBHIIII")
_ACL_HEADER = struct.Struct("<BBHHH")
_ACE_HEADER = struct.Struct("<BBHI")
_ACL_REVISION = 2
EVERYONE = bytes([1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])  # S-1-1-0


@dataclass(frozen=True)
class Ace:
    type: int
    flags: int
    mask: int
    sid: bytes  # b"" for ACE types other than allow and deny (object ACEs)
    raw: bytes  # the whole ACE, to send it back as it came


@dataclass(frozen=True)
class SecurityDescriptor:
    """The owner and group SIDs (raw) and the DACL's ACEs, as the server sent them."""

    owner: bytes | None
    group: bytes | None
    aces: tuple[Ace, ...]

    def permissions(self) -> int:
        """The rwxrwxrwx bits the DACL grants the owner, the group and Everyone: the
        first ACE of a class that says anything of a bit decides it (deny or allow)."""
        owner = self._bits(self.owner) if self.owner is not None else 0
        group = self._bits(self.group) if self.group is not None else 0
        return owner << 6 | group << 3 | self._bits(EVERYONE)

    def _bits(self, sid: bytes) -> int:
        allowed = decided = 0
        for ace in self.aces:
            if ace.sid != sid or ace.flags & _INHERIT_ONLY or ace.type not in (_ALLOWED, _DENIED):
                continue
            bits = _rwx_of(ace.mask) & ~decided
            decided |= bits
            if ace.type == _ALLOWED:
                allowed |= bits
        return allowed


def _rwx_of(mask: int) -> int:
    if mask & _GENERIC_ALL:
        return 0o7
    r = bool(mask & (_READ_DATA | _GENERIC_READ))
    w = bool(mask & (_WRITE_DATA | _GENERIC_WRITE))
    x = bool(mask & (_EXECUTE | _GENERIC_EXECUTE))
    return r << 2 | w << 1 | x


def _mask_of(bits: int) -> int:
    return (
        (_FILE_GENERIC_READ if bits & 0o4 else 0)
        | (_FILE_GENERIC_WRITE if bits & 0o2 else 0)
        | (_FILE_GENERIC_EXECUTE if bits & 0o1 else 0)
    )


def _sid_at(buffer: bytes, offset: int) -> bytes | None:
    if not offset:
        return None
    end = offset + 8 + 4 * buffer[offset + 1]
    if end > len(buffer):
        raise ValueError(f"a SID at {offset} runs past the end ({len(buffer)})")
    return bytes(buffer[offset:end])


def parse_security_descriptor(buffer: bytes) -> SecurityDescriptor:
    """A self-relative SECURITY_DESCRIPTOR; ValueError (struct.error) if malformed."""
    _, _, control, owner_at, group_at, _, dacl_at = _HEADER.unpack_from(buffer, 0)
    aces: list[Ace] = []
    if control & _DACL_PRESENT and dacl_at:
        _, _, _, count, _ = _ACL_HEADER.unpack_from(buffer, dacl_at)
        offset = dacl_at + _ACL_HEADER.size
        for _ in range(count):
            kind, flags, size, mask = _ACE_HEADER.unpack_from(buffer, offset)
            if size < _ACE_HEADER.size or offset + size > len(buffer):
                raise ValueError(f"an ACE of {size} bytes at {offset} of {len(buffer)}")
            raw = bytes(buffer[offset : offset + size])
            sid = raw[_ACE_HEADER.size :] if kind in (_ALLOWED, _DENIED) else b""
            aces.append(Ace(kind, flags, mask, sid, raw))
            offset += size
    return SecurityDescriptor(_sid_at(buffer, owner_at), _sid_at(buffer, group_at), tuple(aces))


def pack_mode_dacl(current: SecurityDescriptor, mode: int) -> bytes:
    """A SECURITY_DESCRIPTOR with only a DACL (set with DACL_SECURITY_INFORMATION): the
    owner's, group's and Everyone's access as ``mode`` says, then the ACEs of
    ``current`` for anyone else and the inherit-only ones, as they were."""
    if current.owner is None or current.group is None:
        raise ValueError("the file's owner and group are not known")
    classes = (current.owner, current.group, EVERYONE)
    aces = [
        _ACE_HEADER.pack(_ALLOWED, 0, _ACE_HEADER.size + len(sid), _mask_of(mode >> shift & 0o7))
        + sid
        for sid, shift in zip(classes, (6, 3, 0), strict=True)
    ]
    aces += [a.raw for a in current.aces if a.sid not in classes or a.flags & _INHERIT_ONLY]
    body = b"".join(aces)
    acl = _ACL_HEADER.pack(_ACL_REVISION, 0, _ACL_HEADER.size + len(body), len(aces), 0) + body
    return _HEADER.pack(1, 0, _SELF_RELATIVE | _DACL_PRESENT, 0, 0, 0, _HEADER.size) + acl
