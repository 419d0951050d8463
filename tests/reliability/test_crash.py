"""kill -9 of the mount process: ``rxfs umount`` cleans up the dead mount and the same
mount point can be mounted again."""

from __future__ import annotations

import os
import signal

from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.conftest import MountFactory, Rxfs, is_mounted

from .conftest import FAST_OPTIONS
from .rig import pattern


def test_umount_after_kill_9_cleans_up_and_the_mount_point_mounts_again(
    sshd: LoopbackSshd, mount: MountFactory, rxfs: Rxfs
) -> None:
    options = {**sshd.mount_options(), **FAST_OPTIONS}
    first = mount(sshd.url(), options)
    data = pattern(5, 1 << 20)
    (first.path / "kept.bin").write_bytes(data)  # closed: on the server before the kill
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait_exit(10)
    assert is_mounted(first.path), "a killed FUSE process leaves its mount behind"

    done = rxfs("umount", str(first.path), timeout=30)
    assert done.returncode == 1, "a killed mount process cannot vouch for its bytes"
    assert "had died" in done.stderr
    assert not is_mounted(first.path)

    second = mount(sshd.url(), options, mountpoint=first.path)
    assert (second.path / "kept.bin").read_bytes() == data
    assert (sshd.root / "kept.bin").read_bytes() == data
