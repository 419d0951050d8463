"""O_APPEND from two mounts of one directory at once: every record lands whole.

Each mount appends fixed-size records through one kept-open O_APPEND descriptor, one
write(2) per record. The server places each write at the end (SSH_FXF_APPEND); what
rxfs must do is send each write(2) as one request. Through the page cache the kernel
split a record that crossed a 4 KiB boundary in two, and the other mount's record could
land between the halves (about 3% of the records broke, while the file's size was
exactly right).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.conftest import MountFactory

from .conftest import fresh_server_dir

RECORDS = 1000
RECORD = 100


def _record(writer: int, n: int) -> bytes:
    head = f"w{writer} {n:06d} ".encode()
    return head + b"." * (RECORD - len(head) - 1) + b"\n"


def _append(path: Path, writer: int, failures: list[BaseException]) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for n in range(RECORDS):
                assert os.write(fd, _record(writer, n)) == RECORD
        finally:
            os.close(fd)
    except BaseException as exc:  # reported by the test, not lost in the thread
        failures.append(exc)


def test_appends_from_two_mounts_at_once_land_whole(
    mount: MountFactory, sshd: LoopbackSshd
) -> None:
    server, name = fresh_server_dir(sshd)
    options = sshd.mount_options()
    mounts = [mount(sshd.url(name), options), mount(sshd.url(name), options)]
    (mounts[0].path / "log").write_bytes(b"")
    failures: list[BaseException] = []
    writers = [
        threading.Thread(target=_append, args=(m.path / "log", i, failures))
        for i, m in enumerate(mounts)
    ]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(120)
    assert not failures, failures
    lines = (server / "log").read_bytes().split(b"\n")[:-1]
    broken = [line for line in lines if len(line) != RECORD - 1]
    assert not broken, f"{len(broken)} of {len(lines)} records broken, e.g. {broken[:2]}"
    whole = Counter(line[:9] for line in lines)
    assert len(whole) == 2 * RECORDS and set(whole.values()) == {1}, "records lost or doubled"
    for i in range(2):  # each writer's records in the order it wrote them
        own = [line for line in lines if line.startswith(f"w{i} ".encode())]
        assert own == [_record(i, n)[:-1] for n in range(RECORDS)]
