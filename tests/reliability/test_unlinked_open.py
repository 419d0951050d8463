"""A file unlinked while open survives a lost connection: the reconnect reopens it by
the hidden name it was given (rdbss/_deleteonclose.py), and its last close removes it."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.checklogs import RECONNECTS

from .conftest import Rig
from .rig import MIB, pattern

pytestmark = pytest.mark.expect_log(*RECONNECTS)


def test_an_unlinked_open_file_keeps_its_bytes_across_a_reconnect(rig: Rig) -> None:
    first, second = pattern(1, MIB), pattern(2, MIB)
    path = rig.mnt / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, first)
        os.unlink(path)
        rig.proxy.cut_all()
        os.write(fd, second)
        os.fsync(fd)
        assert os.pread(fd, 2 * MIB, 0) == first + second
        (hidden,) = list(rig.server.iterdir())
        assert hidden.name.startswith(".rxfs-unlinked-")
        assert hidden.read_bytes() == first + second
    finally:
        os.close(fd)
    deadline = time.monotonic() + 5
    while list(rig.server.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(rig.server.iterdir()) == [], "the last close removes the hidden name"
