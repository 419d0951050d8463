"""A server that answers badly (short, garbled, out-of-order or missing replies): the
affected requests fail or are retried, every other file stays usable, and the mount
stays up. The server is OpenSSH's sftp-server behind bad_sftp_server.py."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.conftest import Mount, MountFactory
from tests.support.checklogs import RECONNECTS

from .rig import MIB, pattern

pytestmark = pytest.mark.expect_log(*RECONNECTS, r"reply made no sense")

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
FILTER = Path(__file__).with_name("bad_sftp_server.py")
TIMEOUT = 2.0  # -o timeout: a missing reply counts as a dead connection after this
OPTIONS = {"timeout": "2", "reconnect_timeout": "5", "ConnectTimeout": "3"}


@pytest.fixture
def control(tmp_path: Path) -> Path:
    path = tmp_path / "control"
    path.mkdir()
    return path


@pytest.fixture
def bad_sshd(tmp_path: Path, control: Path) -> Iterator[LoopbackSshd]:
    if not os.access(SFTP_SERVER, os.X_OK):
        pytest.fail(f"{SFTP_SERVER} is missing: apt-get install openssh-sftp-server")
    root = tmp_path / "root"
    root.mkdir()
    subsystem = f"{sys.executable} {FILTER} {SFTP_SERVER} {control}"
    with LoopbackSshd(root=root, sftp_subsystem=subsystem) as server:
        yield server


@pytest.fixture
def bad_mount(bad_sshd: LoopbackSshd, mount: MountFactory) -> Mount:
    return mount(bad_sshd.url(), {**bad_sshd.mount_options(), **OPTIONS})


def _in_thread(work: object, limit: float) -> tuple[object, float]:
    """Run ``work()`` with a bound: (its result or the OSError it raised, seconds)."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(work())  # type: ignore[operator]
        except OSError as exc:
            result.append(exc)

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still blocked after {limit} s"
    return result[0], time.monotonic() - start


def _usable(mnt: Path, name: str) -> None:
    data = pattern(7, 256 * 1024)
    (mnt / name).write_bytes(data)
    assert (mnt / name).read_bytes() == data


def test_short_reply_fails_that_request_and_the_mount_stays_up(
    bad_sshd: LoopbackSshd, bad_mount: Mount
) -> None:
    (bad_sshd.root / "short.bin").write_bytes(b"x")
    result, _ = _in_thread(lambda: os.stat(bad_mount.path / "short.bin"), 30)
    assert isinstance(result, OSError), result
    _usable(bad_mount.path, "fine.bin")
    assert bad_mount.alive()


def test_garbled_reply_fails_that_request_and_the_mount_stays_up(
    bad_sshd: LoopbackSshd, bad_mount: Mount
) -> None:
    (bad_sshd.root / "garbled.bin").write_bytes(b"x")
    try:
        result, _ = _in_thread(lambda: os.stat(bad_mount.path / "garbled.bin"), 20)
    except AssertionError:
        bad_mount.kill()  # frees the blocked stat, so the mount can be cleaned up
        raise
    assert isinstance(result, OSError), result
    _usable(bad_mount.path, "fine.bin")
    assert bad_mount.alive()


def test_out_of_order_replies_still_give_exact_bytes(
    bad_sshd: LoopbackSshd, bad_mount: Mount
) -> None:
    data = pattern(8, 8 * MIB)
    (bad_sshd.root / "reorder-read.bin").write_bytes(data)
    assert (bad_mount.path / "reorder-read.bin").read_bytes() == data
    (bad_mount.path / "reorder-write.bin").write_bytes(data)
    assert (bad_sshd.root / "reorder-write.bin").read_bytes() == data


def test_unanswered_request_is_retried_on_a_new_connection_while_others_go_on(
    bad_sshd: LoopbackSshd, bad_mount: Mount, control: Path
) -> None:
    data = pattern(9, 2 * MIB)
    (bad_sshd.root / "stuck.bin").write_bytes(data)
    (bad_sshd.root / "other.bin").write_bytes(b"")
    result: list[bytes | OSError] = []
    # Opened before the fault: a stuck lookup would hold the directory's lock in the
    # kernel and block creates there whatever rxfs does. A read holds no such lock.
    with (bad_mount.path / "stuck.bin").open("rb") as stuck:
        (control / "stuck-armed").touch()

        def read_stuck() -> None:
            try:
                result.append(stuck.read())
            except OSError as exc:
                result.append(exc)

        start = time.monotonic()
        reader = threading.Thread(target=read_stuck, daemon=True)
        reader.start()
        _wait_disarmed(control)
        # One request is stuck; another file works meanwhile, well before the deadline.
        _, seconds = _in_thread(lambda: _usable(bad_mount.path, "other.bin"), 30)
        assert reader.is_alive() and seconds < TIMEOUT, seconds
        reader.join(TIMEOUT + 15)
        assert not reader.is_alive(), "the stuck read was never retried"
    assert result == [data]
    assert time.monotonic() - start >= TIMEOUT


def _wait_disarmed(control: Path) -> None:
    deadline = time.monotonic() + 10
    while (control / "stuck-armed").exists():
        assert time.monotonic() < deadline, "the read never reached the server"
        time.sleep(0.01)
