"""The issue's end to end: mount in the background, write 64 MiB with dd, read it back,
unmount with ``rxfs umount`` and leave no process behind."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import MountFactory, Rxfs

MIB = 1 << 20


def dd(*args: str) -> None:
    done = subprocess.run(
        ["dd", *args, "status=none"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"dd {args} exited {done.returncode}: {done.stderr}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def test_dd_64_mib_reads_back_identical_and_umount_leaves_no_process(
    mount: MountFactory, rxfs: Rxfs, tmp_path: Path
) -> None:
    memory = mount("memory://", foreground=False)
    source = tmp_path / "random"
    dd("if=/dev/urandom", f"of={source}", "bs=1M", "count=64", "iflag=fullblock")
    dd(f"if={source}", f"of={memory.path / 'x'}", "bs=1M", "count=64")
    assert (memory.path / "x").stat().st_size == 64 * MIB
    dd(f"if={memory.path / 'x'}", f"of={tmp_path / 'back'}", "bs=1M")
    assert sha256(tmp_path / "back") == sha256(source)

    done = rxfs("umount", str(memory.path))
    assert done.returncode == 0, done.stderr
    assert not rxfs.is_mounted(memory.path)
    # rxfs umount waits for the mount process, so it is gone the moment umount returns.
    assert not rxfs.process_alive(memory.pid), f"mount process {memory.pid} outlived umount"
    assert rxfs.pids_serving(memory.path) == []
