"""What ``rxfs status`` and ``rxfs umount`` say while a mount holds bytes the server has
not acknowledged: sftp:// through the fault proxy, stalled so the bytes stay held.

The request deadline is raised (-o timeout=60) so that the stall, a few seconds, is not
taken for a lost connection: nothing is replayed and the numbers are exact. The file is
written by a child process that keeps it open: were the test's own process to hold it,
every command the test starts would inherit the descriptor and close it, and each such
close(2) is a FUSE flush that waits for the held bytes to land.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Rxfs, rxfs_argv

from .conftest import RigFactory
from .rig import MIB, wait_until

HELD = 3 * MIB
PATIENT = {"timeout": "60", "reconnect_timeout": "60"}


@contextlib.contextmanager
def held_open(path: Path, data: bytes) -> Iterator[subprocess.Popen[str]]:
    """A child that writes ``data`` to ``path`` and keeps it open until its stdin
    closes; yields once rxfs has the bytes (its write-behind returns at once)."""
    code = (
        "import os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "data = sys.stdin.buffer.read(int(sys.argv[1]))\n"
        "assert os.write(fd, data) == len(data)\n"
        # Under the writeback cache the bytes sit in the kernel's pages: hand them to
        # rxfs, as the kernel's writeback does, without waiting for them to land.
        # sync_file_range(SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(0), 2 | 4) == 0\n"
        "print('written', flush=True)\n"
        "sys.stdin.read()\n"
        "try:\n"
        "    os.close(fd)\n"
        "    print('closed')\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(len(data))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=False,
    ) as writer:
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write(data)
        writer.stdin.flush()
        assert writer.stdout.readline() == b"written\n"
        try:
            yield writer  # type: ignore[misc]
        finally:
            with contextlib.suppress(BrokenPipeError):
                writer.stdin.close()
            writer.wait(60)


def _status(mnt: str) -> dict[str, Any]:
    done = Rxfs()("status", "--json", mnt, timeout=20)
    assert done.returncode == 0, done.stderr
    (mount,) = json.loads(done.stdout)["mounts"]
    return mount  # type: ignore[no-any-return]


def _held(doc: dict[str, Any]) -> int:
    held = doc["write_behind"]
    return int(held["dirty_bytes"] + held["in_flight_bytes"])


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_status_shows_a_files_held_bytes_and_the_connections(
    rig_factory: RigFactory, transport: str
) -> None:
    rig = rig_factory(**PATIENT, transport=transport)
    data = os.urandom(HELD)
    path = rig.mnt / "held.bin"
    with held_open(path, data) as writer:
        rig.proxy.stall()
        try:
            doc = _status(str(rig.mnt))
        finally:
            rig.proxy.resume()
        assert writer.stdout is not None
    assert writer.returncode == 0
    assert doc["backend"] == "sftp"
    files = {f["path"]: f for f in doc["write_behind"]["files"]}
    assert "/held.bin" in files, doc["write_behind"]
    held = files["/held.bin"]
    assert held["dirty_bytes"] + held["in_flight_bytes"] == HELD
    assert _held(doc) == HELD and doc["write_behind"]["files_held"] == 1
    carrier = doc["transport"]
    assert carrier["transport"] == transport
    assert carrier["state"] == "active" and carrier["connections"]
    assert all(c["state"] == "up" for c in carrier["connections"])
    assert sum(c["in_flight_bytes"] for c in carrier["connections"]) <= HELD
    # The stalled connection: requests sent and unanswered, the oldest for a while.
    stalled = [c for c in carrier["connections"] if c["requests_waiting"]]
    assert stalled and max(c["oldest_request_s"] for c in stalled) > 0
    # Once closed (close() returns when every byte is on the server), nothing is held.
    assert _held(_status(str(rig.mnt))) == 0
    assert (rig.server / "held.bin").read_bytes() == data


# Answers to requests the abort already ended find no one to take them (pyfuse3 logs it).
@pytest.mark.expect_log(r"fuse_reply_\S+ failed")
def test_umount_shows_progress_while_held_bytes_land(rig_factory: RigFactory) -> None:
    """rxfs umount --force aborts the FUSE connection; the mount process then sends what
    it holds, and umount says how much is left, as plain lines when stderr is no
    terminal, instead of being silent until it is done."""
    rig = rig_factory(**PATIENT)
    data = os.urandom(HELD)
    with held_open(rig.mnt / "late.bin", data):
        rig.proxy.stall()
        with subprocess.Popen(
            rxfs_argv("umount", "--force", "--timeout", "40", str(rig.mnt)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as umount:
            try:
                # Long enough for two progress lines (one at once, one every 3 s).
                assert wait_until(lambda: not rig.mount.mounted(), 10)
                time.sleep(3.5)
                assert umount.poll() is None, "umount returned before the bytes landed"
            finally:
                rig.proxy.resume()
            _, err = umount.communicate(timeout=45)
    assert umount.returncode == 0, err
    progress = [line for line in err.splitlines() if "file(s) left" in line]
    assert len(progress) >= 2, err
    assert progress[0].startswith(f"rxfs: {HELD / MIB:.1f} MiB in 1 file(s) left"), err
    assert rig.mount.wait_exit(10)
    assert (rig.server / "late.bin").read_bytes() == data
