"""SMB3 leases and the core's buffering state (RxChangeBufferingState), through two
RxDevices on one share of the real smbd (no FUSE): the order of a break's steps, and
the hook into smbprotocol that receives breaks, with its fail-safe."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from rxfs.minirdr.smb import _client
from rxfs.rdbss.irp import CreateDisposition
from smbprotocol.connection import Connection

from tests.smb.test_minirdr import mounted
from tests.support.smbd import LoopbackSmbd
from tests.unit._harness import close, open_file, trio_test_within, write

trio_test = trio_test_within(60)


@trio_test
async def test_a_break_flushes_then_invalidates_then_acknowledges(
    smbd: LoopbackSmbd, share: Path
) -> None:
    """The other client's open returns only after this mount's bytes are on the server
    and the front end was told to drop its cache of the file; writes after the break go
    to the server as they come."""
    steps: list[tuple[str, bytes, bool]] = []
    other_opened = False

    async def invalidate(path: str) -> None:
        steps.append((path, (share / "f").read_bytes(), other_opened))

    async with mounted(smbd, share) as (writer, _), mounted(smbd, share) as (reader, _):
        writer.invalidate_file = invalidate
        fobx = await open_file(writer, "/f", CreateDisposition.FILE_CREATE)
        assert fobx.srv_open is not None and fobx.srv_open.may_cache_writes
        await write(writer, fobx, 0, b"held here")
        assert (share / "f").read_bytes() == b"", "a write lease lets the core hold bytes"
        other = await open_file(reader, "/f", CreateDisposition.FILE_OPEN)
        other_opened = True
        assert steps == [("/f", b"held here", False)]
        assert not fobx.srv_open.may_cache_writes
        await write(writer, fobx, 9, b"!")
        assert (share / "f").read_bytes() == b"held here!"
        await close(reader, other)
        await close(writer, fobx)


@trio_test
async def test_without_leases_the_core_holds_bytes_past_another_open(
    smbd: LoopbackSmbd, share: Path
) -> None:
    """-o leases=no keeps the behaviour of a backend without leases: writes are held
    until flush or close, whoever opens the file meanwhile."""
    told: list[str] = []

    async def invalidate(path: str) -> None:
        told.append(path)

    async with (
        mounted(smbd, share, leases="no") as (writer, _),
        mounted(smbd, share, leases="no") as (reader, _),
    ):
        writer.invalidate_file = invalidate
        fobx = await open_file(writer, "/f", CreateDisposition.FILE_CREATE)
        await write(writer, fobx, 0, b"held here")
        other = await open_file(reader, "/f", CreateDisposition.FILE_OPEN)
        assert (share / "f").read_bytes() == b""
        assert told == []
        await close(reader, other)
        await close(writer, fobx)
    assert (share / "f").read_bytes() == b"held here"


def test_the_hook_answers_only_for_notifications() -> None:
    received: list[object] = []
    connection = Connection(uuid.uuid4(), "127.0.0.1", 445)
    assert _client._install_break_hook(connection, received.append)
    table = connection.outstanding_requests
    with pytest.raises(KeyError):
        table[7]
    stand_in = table[0xFFFFFFFFFFFFFFFF]
    stand_in.response = "header"
    stand_in.response_event.set()
    assert received == ["header"]


@pytest.mark.expect_log(r"SMB leases are off")
def test_without_a_hook_no_leases_are_asked_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """smbprotocol's table not the plain dict the hook knows: no hook, said once."""
    monkeypatch.setattr(_client, "_hook_refused", [])
    connection = Connection(uuid.uuid4(), "127.0.0.1", 445)
    connection.outstanding_requests = {1: object()}
    with caplog.at_level(logging.WARNING, logger=_client.__name__):
        assert not _client._install_break_hook(connection, print)
        assert not _client._install_break_hook(connection, print)
    assert len([r for r in caplog.records if "leases are off" in r.message]) == 1
    assert type(connection.outstanding_requests) is dict
