"""rxfs.mount(): a real mount for the length of a ``with`` block, as the CLI makes it;
failures to mount or to land every byte at unmount are exceptions."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rxfs
from rxfs.fs.cli import state_dir
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.conftest import (
    COMMAND_TIMEOUT,
    Rxfs,
    is_mounted,
    process_alive,
    require_fuse,
    wait_until,
)
from tests.integration.conftest import fresh_server_dir
from tests.support.checklogs import expected_patterns, unexpected_lines
from tests.support.sshd import sshd

__all__ = ["sshd"]

pytestmark = pytest.mark.fuse


@pytest.fixture
def rxfs_cli() -> Rxfs:
    return Rxfs()  # the fixture `rxfs` of conftest would hide the module


def _state_file(mountpoint: Path, suffix: str) -> Path:
    return state_dir() / f"{str(mountpoint).strip('/').replace('/', '_')}.{suffix}"


@pytest.fixture
def mountpoint(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    require_fuse()
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    log = _state_file(path, "log")
    text = log.read_text(errors="replace") if log.exists() else ""
    log.unlink(missing_ok=True)
    problems = []
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], timeout=30, check=False)
        problems.append(f"{path} still mounted after the block")
    if "Traceback" in text:
        problems.append(f"the mount process printed a traceback:\n{text}")
    unexpected = unexpected_lines(text, expected_patterns(request.node))
    if unexpected:
        problems.append("the mount process logged:\n" + "\n".join(unexpected))
    if problems:
        pytest.fail("\n".join(problems))


def test_memory_mount_for_a_with_block(mountpoint: Path) -> None:
    with rxfs.mount("memory://", mountpoint, size="2G") as path:
        assert path == mountpoint
        assert is_mounted(mountpoint)  # ready when the block starts
        pid = int(_state_file(mountpoint, "pid").read_text())
        assert pid != os.getpid()
        (path / "f").write_text("through rxfs.mount")
        assert (path / "f").read_text() == "through rxfs.mount"
        vfs = os.statvfs(path)
        assert vfs.f_blocks * vfs.f_frsize == 2 << 30
    assert not is_mounted(mountpoint)
    assert wait_until(lambda: not process_alive(pid), COMMAND_TIMEOUT)


def test_sftp_bytes_are_on_the_server_when_the_block_ends(
    mountpoint: Path, sshd: LoopbackSshd
) -> None:
    server_dir, name = fresh_server_dir(sshd)
    data = os.urandom(3 << 20)
    with rxfs.mount(sshd.url(name), mountpoint, **sshd.mount_options()) as path:
        (path / "data").write_bytes(data)
    assert (server_dir / "data").read_bytes() == data


def test_read_only_flag(mountpoint: Path) -> None:
    with rxfs.mount("memory://", mountpoint, ro=True, allow_other=False) as path:
        with pytest.raises(OSError) as refused:
            (path / "f").write_text("no")
        assert refused.value.errno == errno.EROFS


def test_bad_option_is_a_mount_error(mountpoint: Path) -> None:
    with pytest.raises(rxfs.MountError) as failed, rxfs.mount("memory://", mountpoint, nope=1):
        pytest.fail("the block ran without a mount")
    assert failed.value.exit_status == 2
    assert str(failed.value).startswith("unknown option -o nope for memory://"), failed.value
    assert not is_mounted(mountpoint)


def test_unmount_that_cannot_finish_is_an_exception(mountpoint: Path, rxfs_cli: Rxfs) -> None:
    """A mount still in use at the end of the block is not unmounted: UnmountError says
    who uses it (and the mount stays for its user)."""
    with pytest.raises(rxfs.UnmountError) as failed, rxfs.mount("memory://", mountpoint) as path:
        held = (path / "held").open("w")
    try:
        assert failed.value.exit_status == 1
        assert "busy" in str(failed.value) or "in use" in str(failed.value), failed.value
        assert is_mounted(mountpoint)
    finally:
        held.close()
        done = rxfs_cli("umount", str(mountpoint))
        assert done.returncode == 0, done.stderr


def test_read_only_sftp_mount_changes_nothing_on_the_server(
    mountpoint: Path, sshd: LoopbackSshd
) -> None:
    """-o ro over sftp://: what is there reads; every change fails with EROFS and the
    server's files stay as they were."""
    server_dir, name = fresh_server_dir(sshd)
    (server_dir / "f").write_bytes(b"on the server")
    (server_dir / "d").mkdir()
    before = sorted(p.name for p in server_dir.iterdir())
    with rxfs.mount(sshd.url(name), mountpoint, ro=True, **sshd.mount_options()) as path:
        assert (path / "f").read_bytes() == b"on the server"
        changes: list[Callable[[], object]] = [
            lambda: (path / "f").write_bytes(b"x"),
            lambda: (path / "new").write_bytes(b"x"),
            (path / "f").unlink,
            lambda: (path / "f").rename(path / "g"),
            lambda: (path / "f").chmod(0o600),
            lambda: os.truncate(path / "f", 0),
            (path / "e").mkdir,
            (path / "d").rmdir,
            lambda: (path / "l").symlink_to("f"),
            lambda: os.link(path / "f", path / "h"),
        ]
        for change in changes:
            with pytest.raises(OSError) as refused:
                change()
            assert refused.value.errno == errno.EROFS, refused.value
    assert sorted(p.name for p in server_dir.iterdir()) == before
    assert (server_dir / "f").read_bytes() == b"on the server"


def test_a_mount_process_that_died_is_an_unmount_error(mountpoint: Path) -> None:
    """kill -9 of the mount process inside the block: the unmount cleans up, and the
    exception says bytes it held may be lost."""
    with pytest.raises(rxfs.UnmountError) as failed, rxfs.mount("memory://", mountpoint) as path:
        (path / "f").write_text("held")
        pid = int(_state_file(mountpoint, "pid").read_text())
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not process_alive(pid), COMMAND_TIMEOUT)
    assert failed.value.exit_status == 1
    assert "had died" in str(failed.value) and "lost" in str(failed.value), failed.value
    assert not is_mounted(mountpoint)
