"""``rxfs umount`` in every state a mount can be in: in use (refused unless --lazy or
--force), a mount process stopped or dead, a mount that is not rxfs's. Each returns
within its --timeout, and leaves the mount point ready for a new mount."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import OWN_REQUEST_MARK

if TYPE_CHECKING:
    from conftest import MountFactory, Rxfs


def _blocked_reader(path: Path) -> subprocess.Popen[str]:
    """A process that opens ``path`` and reads it: it blocks while the mount does not
    answer, and says which errno it got once it is freed."""
    code = (
        "import sys\n"
        "try:\n"
        f"    open({str(path)!r}, 'rb').read()\n"
        "    print('ok')\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )


def _wait_blocked(process: subprocess.Popen[str]) -> None:
    """Until ``process`` sleeps in the kernel on the mount (or 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and process.poll() is None:
        wchan = Path(f"/proc/{process.pid}/wchan").read_text()
        if "fuse" in wchan or "request_wait" in wchan:
            return
        time.sleep(0.05)


def test_umount_refuses_a_mount_in_use_and_leaves_it_working(
    mount: MountFactory, rxfs: Rxfs
) -> None:
    memory = mount("memory://")
    with (memory.path / "open.txt").open("w") as busy:
        done = rxfs("umount", str(memory.path))
        assert done.returncode == 1
        assert "busy" in done.stderr
        assert f"{os.getpid()} (" in done.stderr, "names the process using the mount"
        assert rxfs.is_mounted(memory.path)
        busy.write("still works")
    assert (memory.path / "open.txt").read_text() == "still works"
    done = rxfs("umount", str(memory.path))
    assert done.returncode == 0, done.stderr
    assert not rxfs.is_mounted(memory.path)


def test_umount_force_aborts_users_of_a_mount_in_use(mount: MountFactory, rxfs: Rxfs) -> None:
    memory = mount("memory://")
    (memory.path / "f").write_bytes(b"landed before")
    busy = os.open(memory.path / "g", os.O_WRONLY | os.O_CREAT)
    try:
        done = rxfs("umount", "--force", str(memory.path), timeout=30)
        assert done.returncode == 0, done.stderr
        assert not rxfs.is_mounted(memory.path)
        assert memory.wait_exit(5), "the mount process outlived umount --force"
        # Under the writeback cache a write(2) may only dirty a page; the next call
        # that needs the mount process (fsync, close) says the connection is gone.
        try:
            os.write(busy, b"after the abort")
        except OSError as exc:
            assert exc.errno == errno.ENOTCONN
        with pytest.raises(OSError) as caught:
            os.fsync(busy)
        assert caught.value.errno == errno.ENOTCONN
    finally:
        with contextlib.suppress(OSError):  # its flush can only say ENOTCONN too
            os.close(busy)


def test_umount_lazy_detaches_a_mount_in_use(mount: MountFactory, rxfs: Rxfs) -> None:
    memory = mount("memory://")
    busy = os.open(memory.path / "f", os.O_RDWR | os.O_CREAT)
    try:
        done = rxfs("umount", "--lazy", str(memory.path))
        assert done.returncode == 0, done.stderr
        assert "detached" in done.stderr
        assert not rxfs.is_mounted(memory.path)
        os.write(busy, b"the user keeps its file")
        assert os.pread(busy, 100, 0) == b"the user keeps its file"
    finally:
        os.close(busy)
    assert memory.wait_exit(10), "the mount process outlived its last user"


# Answers to requests the abort already ended find no one to take them (pyfuse3 logs it).
@pytest.mark.expect_log(r"fuse_reply_\S+ failed")
def test_umount_of_a_stopped_mount_process_returns_within_its_timeout(
    mount: MountFactory, rxfs: Rxfs
) -> None:
    memory = mount("memory://")
    (memory.path / "f").write_bytes(b"x")
    os.kill(memory.pid, signal.SIGSTOP)
    reader = _blocked_reader(memory.path / "f")
    try:
        _wait_blocked(reader)
        time.sleep(2.5)  # longer than the request timeout
        started = time.monotonic()
        done = rxfs("umount", "--timeout", "10", str(memory.path), timeout=30)
        took = time.monotonic() - started
        assert took < 12, f"rxfs umount took {took:.1f}s with --timeout 10"
        assert "stopped" in done.stderr
        assert done.returncode == 0, done.stderr
        assert memory.wait_exit(5), "the mount process was left behind"
        out, _ = reader.communicate(timeout=5)
        # ECONNABORTED for a request the abort ended, ENOTCONN for one made after it.
        assert out.strip() in {str(errno.ECONNABORTED), str(errno.ENOTCONN)}, out
    finally:
        os.kill(memory.pid, signal.SIGCONT) if memory.alive() else None
        reader.kill()
        reader.wait()
    assert not rxfs.is_mounted(memory.path)
    again = mount("memory://", mountpoint=memory.path)
    (again.path / "g").write_bytes(b"mounted again")


def test_umount_touches_only_rxfs_mounts(rxfs: Rxfs, tmp_path: Path) -> None:
    other = tmp_path / "tmpfs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(other)], check=True)
    try:
        done = rxfs("umount", str(other))
        assert done.returncode == 2
        assert "not an rxfs" in done.stderr
        assert rxfs.is_mounted(other)
    finally:
        subprocess.run(["umount", str(other)], check=True)


def test_umount_refuses_a_timeout_of_zero(rxfs: Rxfs, tmp_path: Path) -> None:
    done = rxfs("umount", "--timeout", "0", str(tmp_path))
    assert done.returncode == 2
    assert "--timeout" in done.stderr


def test_the_mount_process_never_makes_a_request_to_its_own_mount(
    mount: MountFactory, rxfs: Rxfs
) -> None:
    """The front end logs such a request (see fs/_operations.py); the mount fixture
    fails every test whose mount logged one. Here: mount, use, unmount, nothing else."""
    memory = mount("memory://")
    time.sleep(0.5)  # the read-ahead is raised in the background after FUSE INIT
    (memory.path / "f").write_bytes(b"x" * 100_000)
    assert (memory.path / "f").read_bytes() == b"x" * 100_000
    done = rxfs("umount", str(memory.path))
    assert done.returncode == 0, done.stderr
    assert memory.wait_exit(5)
    assert OWN_REQUEST_MARK not in memory.stderr()
