"""Modes as NT ACLs (minirdr/smb/_acl.py), without a server: what a DACL grants the
owner, the group and Everyone, and the DACL a chmod sends."""

from __future__ import annotations

import struct

import pytest
from rxfs.minirdr.smb._acl import (
    EVERYONE,
    SecurityDescriptor,
    pack_mode_dacl,
    parse_security_descriptor,
)

OWNER = bytes([1, 5, 0, 0, 0, 0, 0, 5]) + struct.pack("<5I", 21, 1, 2, 3, 1000)
GROUP = bytes([1, 2, 0, 0, 0, 0, 0, 22]) + struct.pack("<2I", 2, 0)  # S-1-22-2-0
OTHER_USER = bytes([1, 2, 0, 0, 0, 0, 0, 22]) + struct.pack("<2I", 1, 1001)
# What Samba answered for a file of mode 0640 (tests/smb: the owner's rw-, the group's
# r--, Everyone's nothing), masks as it sent them.
SAMBA_0640 = [(0, 0, 0x12019F, OWNER), (0, 0, 0x120089, GROUP), (0, 0, 0, EVERYONE)]


def descriptor(aces: list[tuple[int, int, int, bytes]], with_owner: bool = True) -> bytes:
    """A self-relative SECURITY_DESCRIPTOR as a server sends it: header, SIDs, DACL."""
    body = b"".join(struct.pack("<BBHI", t, f, 8 + len(sid), m) + sid for t, f, m, sid in aces)
    acl = struct.pack("<BBHHH", 2, 0, 8 + len(body), len(aces), 0) + body
    owner_at, group_at = (20, 20 + len(OWNER)) if with_owner else (0, 0)
    sids = OWNER + GROUP if with_owner else b""
    header = struct.pack("<BBHIIII", 1, 0, 0x8004, owner_at, group_at, 0, 20 + len(sids))
    return header + sids + acl


def test_a_dacl_as_samba_sends_it_reads_as_the_mode() -> None:
    parsed = parse_security_descriptor(descriptor(SAMBA_0640))
    assert parsed.owner == OWNER and parsed.group == GROUP
    assert parsed.permissions() == 0o640


def as_set(current: SecurityDescriptor, mode: int) -> SecurityDescriptor:
    """What the file's descriptor is once the server took the DACL a chmod sends (the
    DACL alone: the owner and group stay the file's)."""
    sent = parse_security_descriptor(pack_mode_dacl(current, mode))
    assert sent.owner is None and sent.group is None
    return SecurityDescriptor(current.owner, current.group, sent.aces)


def test_every_mode_goes_through_a_dacl_and_back() -> None:
    current = parse_security_descriptor(descriptor(SAMBA_0640))
    assert [as_set(current, mode).permissions() for mode in range(0o1000)] == list(range(0o1000))


def test_the_first_ace_that_names_a_bit_decides_it() -> None:
    deny_write, allow_all = (1, 0, 0x2, OWNER), (0, 0, 0x10000000, OWNER)  # GENERIC_ALL
    assert parse_security_descriptor(descriptor([deny_write, allow_all])).permissions() == 0o500
    assert parse_security_descriptor(descriptor([allow_all, deny_write])).permissions() == 0o700


def test_inherit_only_and_other_aces_are_kept_and_do_not_count() -> None:
    inherit_only = (0, 0x8 | 0x1 | 0x2, 0x1F01FF, OWNER)  # a directory's default ACL
    named = (0, 0, 0x120089, OTHER_USER)
    current = parse_security_descriptor(descriptor([*SAMBA_0640, inherit_only, named]))
    assert current.permissions() == 0o640
    changed = as_set(current, 0o751)
    assert changed.permissions() == 0o751
    kept = [(a.type, a.flags, a.mask, a.sid) for a in changed.aces[3:]]
    assert kept == [inherit_only, named]


def test_a_descriptor_without_owner_and_group_cannot_be_changed() -> None:
    bare = parse_security_descriptor(descriptor(SAMBA_0640, with_owner=False))
    assert bare.permissions() == 0o000  # Everyone's nothing; no owner, no group to read
    with pytest.raises(ValueError, match="owner and group"):
        pack_mode_dacl(bare, 0o644)


def test_a_truncated_descriptor_is_an_error_not_a_mode() -> None:
    whole = descriptor(SAMBA_0640)
    with pytest.raises((ValueError, struct.error)):
        parse_security_descriptor(whole[:-10])


def test_no_dacl_grants_nothing() -> None:
    header = struct.pack("<BBHIIII", 1, 0, 0x8000, 20, 20 + len(OWNER), 0, 0)
    parsed = parse_security_descriptor(header + OWNER + GROUP)
    assert parsed == SecurityDescriptor(OWNER, GROUP, ())
    assert parsed.permissions() == 0
