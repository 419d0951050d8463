"""A cut connection (a fault proxy in front of the loopback smbd) or a restarted smbd
mid-copy loses nothing on smb:// either: the core reconnects, reopens the handles and
replays the writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from rxfs.minirdr import NtStatus, NtStatusError
from rxfs.minirdr.smb._client import SmbTree
from rxfs.minirdr.smb._settings import SmbSettings
from smbprotocol.session import Session

from tests.conftest import rxfs_argv
from tests.reliability.scenarios import concurrent_writers, copy_with_cuts
from tests.support.checklogs import RECONNECTS
from tests.support.faultproxy import FaultProxy
from tests.support.smbd import LoopbackSmbd

if TYPE_CHECKING:
    from tests.conftest import MountFactory

pytestmark = pytest.mark.fuse


@pytest.fixture
def proxy(smbd: LoopbackSmbd) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", smbd.port)) as running:
        yield running


def _mount_through(
    mount: MountFactory, smbd: LoopbackSmbd, proxy: FaultProxy, share: Path
) -> Path:
    url = f"smb://127.0.0.1:{proxy.port}/share/{share.name}"
    return mount(url, {**smbd.mount_options(), "timeout": "10"}).path


@pytest.mark.expect_log(*RECONNECTS)
def test_a_copy_survives_three_cuts(
    smbd: LoopbackSmbd, proxy: FaultProxy, share: Path, mount: MountFactory, tmp_path: Path
) -> None:
    mnt = _mount_through(mount, smbd, proxy, share)
    outcome = copy_with_cuts(mnt, share, tmp_path, proxy.cut_all, size=64 * 1024 * 1024)
    assert outcome.exit_codes == [0], outcome
    assert "cut 3 times" in outcome.notes[0], outcome
    assert outcome.exact, outcome


@pytest.mark.expect_log(*RECONNECTS)
def test_concurrent_writers_with_a_cut_land_every_byte(
    smbd: LoopbackSmbd, proxy: FaultProxy, share: Path, mount: MountFactory
) -> None:
    mnt = _mount_through(mount, smbd, proxy, share)
    outcome = concurrent_writers(mnt, share, proxy.cut_all)
    assert outcome.exit_codes == [0] * 12, outcome
    assert outcome.exact, outcome


@pytest.mark.expect_log(*RECONNECTS)
def test_a_file_open_across_a_cut_keeps_its_durable_handle(
    smbd: LoopbackSmbd, proxy: FaultProxy, share: Path, mount: MountFactory
) -> None:
    """The server keeps a durable handle of a lost connection open for its client, and
    rxfs takes it back (DH2C) instead of opening the file again: the server sees one
    open across the cut, still holding its lease, and every byte lands through it."""
    mnt = _mount_through(mount, smbd, proxy, share)
    data = os.urandom(4 * 1024 * 1024)
    half = len(data) // 2
    with open(mnt / "kept", "wb") as file:
        file.write(data[:half])
        file.flush()
        os.fsync(file.fileno())
        (before,) = smbd.opens(share / "kept")
        assert proxy.cut_all() >= 1
        file.write(data[half:])
        file.flush()
        os.fsync(file.fileno())  # goes out on a new connection, through the old handle
        (after,) = smbd.opens(share / "kept")
    assert after["opened_at"] == before["opened_at"], (before, after)
    assert after["lease"]["text"] == before["lease"]["text"] == "RWH"
    assert (share / "kept").read_bytes() == data
    assert smbd.opens(share / "kept") == []


@pytest.fixture
def own_smbd() -> Iterator[LoopbackSmbd]:
    """A server of this test's own: it is restarted under the mount."""
    base = Path(tempfile.mkdtemp(prefix="rxfs-smbd-"))
    base.chmod(0o711)
    try:
        with LoopbackSmbd(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.expect_log(*RECONNECTS)
def test_a_copy_survives_a_server_restart(
    own_smbd: LoopbackSmbd, mount: MountFactory, tmp_path: Path
) -> None:
    share = own_smbd.root / "restart"
    share.mkdir()
    mnt = mount(own_smbd.url("restart"), {**own_smbd.mount_options(), "timeout": "10"}).path
    outcome = copy_with_cuts(mnt, share, tmp_path, own_smbd.restart, size=48 * 1024 * 1024, cuts=2)
    assert outcome.exit_codes == [0], outcome
    assert "cut 2 times" in outcome.notes[0], outcome
    assert outcome.exact, outcome


def test_a_server_that_stops_answering_fails_the_mount_in_time(
    smbd: LoopbackSmbd, proxy: FaultProxy, share: Path, tmp_path: Path
) -> None:
    """smbprotocol's login waits for ever; the backend's own deadline ends it."""
    where = tmp_path / "mnt"
    where.mkdir()
    proxy.stall()
    url = f"smb://127.0.0.1:{proxy.port}/share/{share.name}"
    started = time.monotonic()
    done = subprocess.run(
        rxfs_argv("mount", url, str(where), "-o", f"{smbd.options()},timeout=3"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "did not answer within 3 s" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 20


def test_a_login_that_gets_no_answer_ends_at_the_deadline(
    smbd: LoopbackSmbd, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """smbprotocol waits for ever for the answer to a login; the backend's own
    deadline closes the socket. The server stops answering right after negotiating."""
    settings = SmbSettings.parse(
        urlsplit(f"smb://127.0.0.1:{proxy.port}/share"),
        {**smbd.mount_options(), "timeout": "2"},
    )
    login = Session.connect

    def stalled_login(session: Session) -> None:
        proxy.stall()
        login(session)

    monkeypatch.setattr(Session, "connect", stalled_login)
    started = time.monotonic()
    with pytest.raises(NtStatusError) as caught:
        SmbTree(settings).connect()
    assert caught.value.status == NtStatus.STATUS_IO_TIMEOUT
    assert "did not answer within 2 s" in caught.value.message
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("leases", [True, False])
def test_the_reader_thread_may_walk_requests_while_others_add_them(leases: bool) -> None:
    """When the connection dies, smbprotocol's reader thread walks the outstanding
    requests while our threads go on adding theirs: that walk must not raise
    "dictionary changed size during iteration" (a traceback in the mount's log)."""
    settings = SmbSettings.parse(urlsplit("smb://127.0.0.1:1/share"), {"username": "nobody"})
    tree = SmbTree(settings, (lambda _brk: None) if leases else None)
    table = tree._connection.outstanding_requests
    table[1] = "sent"
    for _ in table.values():
        table[2] = "sent meanwhile by another thread"
    assert set(table) == {1, 2}
