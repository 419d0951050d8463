"""close() never returns 0 for bytes written through the descriptor that did not land,
also after fsync() reported them lost (README items 2-3). Through a real mount, whose
kernel writeback cache sends the pages back before FUSE_FLUSH."""

from __future__ import annotations

import errno
import os
import random

import pytest

from tests.integration.integration_support import MIB, Target
from tests.integration.test_errors import TMPFS_MIB, full_target, tmpfs_dir
from tests.support.checklogs import LOST_BYTES

__all__ = ["full_target", "tmpfs_dir"]


@pytest.mark.expect_log(*LOST_BYTES)
def test_close_reports_enospc_after_fsync_reported_it(full_target: Target) -> None:
    data = random.Random(12).randbytes(2 * TMPFS_MIB * MIB)
    fd = os.open(full_target.mnt / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for start in range(0, len(data), MIB):
            try:
                os.write(fd, data[start : start + MIB])
            except OSError as exc:  # the write itself may already say so
                assert exc.errno == errno.ENOSPC
                break
        with pytest.raises(OSError) as synced:
            os.fsync(fd)
        assert synced.value.errno == errno.ENOSPC
    finally:
        with pytest.raises(OSError) as closed:
            os.close(fd)
    assert closed.value.errno == errno.ENOSPC
    size = full_target.server_path("big").stat().st_size
    assert size <= TMPFS_MIB * MIB
    assert full_target.server_path("big").read_bytes() == data[:size]
