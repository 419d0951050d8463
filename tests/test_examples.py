"""examples/: localdir:// serves ordinary writes through a mount, and the write-path demo
shows FUSE -> IRP_MJ_WRITE -> MRxLowIOSubmit[LOWIO_OP_WRITE] in --debug output."""

from __future__ import annotations

import os
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import MountFactory

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def share(tmp_path: Path) -> Path:
    if "localdir" not in {ep.name for ep in entry_points(group="rxfs.minirdr")}:
        pytest.fail("localdir:// is not installed: pip install -e examples/localdir")
    path = tmp_path / "share"
    path.mkdir()
    return path


def test_ordinary_writes_through_a_localdir_mount_land_in_the_directory(
    mount: MountFactory, share: Path, tmp_path: Path
) -> None:
    mnt = mount(f"localdir://{share}", foreground=False).path
    source = tmp_path / "source"
    source.write_bytes(os.urandom(3 * (1 << 20) + 5))
    subprocess.run(["cp", str(source), str(mnt / "copy")], check=True, timeout=60)
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={mnt / 'zeros'}", "bs=64k", "count=16", "status=none"],
        check=True,
        timeout=60,
    )
    with open(mnt / "log", "a") as log:
        log.write("one\n")
    with open(mnt / "log", "a") as log:
        log.write("two\n")
    os.mkdir(mnt / "dir")
    os.rename(mnt / "copy", mnt / "dir" / "moved")
    assert (share / "dir" / "moved").read_bytes() == source.read_bytes()
    assert (share / "zeros").read_bytes() == bytes(16 * 65536)
    assert (share / "log").read_text() == "one\ntwo\n"
    assert sorted(os.listdir(share)) == ["dir", "log", "zeros"]


def test_write_path_demo_shows_irp_and_lowio_writes() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "examples" / "write_path_demo.sh")],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # Buffered: the IRP completes from the write-behind buffer, the bytes go later as
    # a paging write.
    assert "IRP_MJ_WRITE /f offset=0 length=6 -> STATUS_SUCCESS" in out, out
    assert "MRxLowIOSubmit[LOWIO_OP_WRITE] /f offset=0 count=6 PAGING_IO" in out, out
    # O_SYNC: each IRP_MJ_WRITE goes straight to LOWIO_OP_WRITE, no PAGING_IO.
    for offset in (0, 65536, 131072):
        assert f"MRxLowIOSubmit[LOWIO_OP_WRITE] /g offset={offset} count=65536\n" in out, out
        assert f"IRP_MJ_WRITE /g offset={offset} length=65536 -> STATUS_SUCCESS" in out, out
