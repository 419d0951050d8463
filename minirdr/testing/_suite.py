"""The behavioural suite: what every backend must do, seen through a real mount.

Each test gets ``rxfs_dir``, a fresh empty directory on the mount, and uses only the file
APIs an application would. A test that needs a feature a backend may lack is marked with
:func:`requires`; when the backend's ``capabilities`` do not declare it, the test is
reported as skipped with that reason. Everything else is the contract of every backend:
errnos are the ones DESIGN §6 maps the backend's NTSTATUS to, and the durability tests
are DESIGN §4.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from rxfs.minirdr import Capability

from ._mount import MountedBackend

__all__ = ["ConformanceSuite", "requires"]

F = TypeVar("F", bound=Callable[..., Any])

MIB = 1 << 20
# rxfs mount's default -o attr_timeout: how long the kernel may show old attributes.
ATTR_TIMEOUT = 1.0
# Seconds a closed file's RELEASE may take to reach the mount.
RELEASE_WAIT = 5.0


def requires(capability: Capability) -> Callable[[F], F]:
    """Run the test only on backends that declare ``capability``; skip it elsewhere."""
    return pytest.mark.rxfs_requires(capability)


@contextlib.contextmanager
def expect_errno(code: int) -> Iterator[None]:
    """The block must fail with OSError ``code``; the message names both errnos."""
    try:
        yield
    except OSError as exc:
        if exc.errno != code:
            got = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            pytest.fail(f"expected {errno.errorcode[code]}, got {got} ({exc})")
    else:
        pytest.fail(f"expected {errno.errorcode[code]}, but the call succeeded")


def write_file(path: Path, data: bytes, flags: int = os.O_CREAT | os.O_TRUNC) -> None:
    """open/write/close with every return checked: close() reports landing errors."""
    fd = os.open(path, os.O_WRONLY | flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_file(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes where every 4 KiB block differs, so misplaced blocks show as a mismatch."""
    block = bytes((i * 7 + seed) % 251 for i in range(4093))
    return (block * (size // len(block) + 1))[:size]


class ConformanceSuite:
    """Subclass it as ``TestSomething`` in a test module; the ``rxfs_url`` fixture (or
    ``--rxfs-url``) names the backend to mount."""

    # -- files ------------------------------------------------------------------------

    def test_create_write_read_back(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "hello.txt"
        write_file(path, b"hello, world\n")
        assert read_file(path) == b"hello, world\n"
        assert path.stat().st_size == 13
        assert stat.S_ISREG(path.stat().st_mode)

    def test_empty_file(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "empty"
        write_file(path, b"")
        assert path.stat().st_size == 0
        assert read_file(path) == b""

    def test_overwrite_in_the_middle(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"a" * 100)
        fd = os.open(path, os.O_WRONLY)
        try:
            assert os.pwrite(fd, b"XYZ", 50) == 3
        finally:
            os.close(fd)
        assert read_file(path) == b"a" * 50 + b"XYZ" + b"a" * 47

    def test_write_past_end_leaves_zeros(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "sparse"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"end", 1_000_000)
        finally:
            os.close(fd)
        data = read_file(path)
        assert len(data) == 1_000_003
        assert data[:1_000_000] == bytes(1_000_000)
        assert data[-3:] == b"end"

    def test_read_at_offsets_and_past_end(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        data = pattern(100_000)
        write_file(path, data)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(fd, 10, 0) == data[:10]
            assert os.pread(fd, 5000, 65_530) == data[65_530:70_530]
            assert os.pread(fd, 100, 99_950) == data[99_950:]
            assert os.pread(fd, 100, 100_000) == b""
            assert os.pread(fd, 100, 10**9) == b""
        finally:
            os.close(fd)

    def test_large_file_round_trip(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "large"
        data = pattern(8 * MIB + 12345, seed=3)
        with open(path, "wb") as file:
            for start in range(0, len(data), 1 * MIB - 1):  # odd sizes: unaligned writes
                file.write(data[start : start + MIB - 1])
        assert path.stat().st_size == len(data)
        assert read_file(path) == data

    def test_size_follows_writes_before_close(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "growing"
        with open(path, "wb") as file:
            file.write(b"x" * 5000)
            file.flush()
            assert os.fstat(file.fileno()).st_size == 5000
            assert path.stat().st_size == 5000
        assert path.stat().st_size == 5000

    def test_read_sees_unclosed_writes(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        with open(path, "w+b", buffering=0) as file:
            file.write(b"written, not closed")
            file.seek(0)
            assert file.read() == b"written, not closed"

    def test_open_missing_file_is_enoent(self, rxfs_dir: Path) -> None:
        with expect_errno(errno.ENOENT):
            os.open(rxfs_dir / "missing", os.O_RDONLY)

    def test_exclusive_create_of_existing_is_eexist(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"x")
        with expect_errno(errno.EEXIST):
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        assert read_file(path) == b"x"

    def test_open_with_o_trunc_empties(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"old contents")
        os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))
        assert path.stat().st_size == 0
        assert read_file(path) == b""

    @requires(Capability.CHMOD)
    def test_create_mode_is_kept(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o640))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~_umask()

    def test_create_in_missing_directory_is_enoent(self, rxfs_dir: Path) -> None:
        with expect_errno(errno.ENOENT):
            write_file(rxfs_dir / "no-such-dir" / "f", b"x")

    def test_file_as_directory_is_enotdir(self, rxfs_dir: Path) -> None:
        write_file(rxfs_dir / "file", b"x")
        with expect_errno(errno.ENOTDIR):
            os.open(rxfs_dir / "file" / "child", os.O_RDONLY)
        with expect_errno(errno.ENOTDIR):
            os.mkdir(rxfs_dir / "file" / "child")

    def test_write_to_directory_is_eisdir(self, rxfs_dir: Path) -> None:
        with expect_errno(errno.EISDIR):
            os.open(rxfs_dir, os.O_WRONLY)

    def test_name_too_long_is_enametoolong(self, rxfs_dir: Path) -> None:
        with expect_errno(errno.ENAMETOOLONG):
            write_file(rxfs_dir / ("n" * 256), b"x")
        write_file(rxfs_dir / ("n" * 255), b"x")  # NAME_MAX itself is fine
        assert read_file(rxfs_dir / ("n" * 255)) == b"x"

    def test_unusual_names(self, rxfs_dir: Path) -> None:
        names = ["with space", "ünïcödé", "semi;colon", "-dash", "percent%20", "new\nline"]
        for name in names:
            write_file(rxfs_dir / name, name.encode())
        assert sorted(os.listdir(rxfs_dir)) == sorted(names)
        for name in names:
            assert read_file(rxfs_dir / name) == name.encode()

    # -- truncation -------------------------------------------------------------------

    def test_truncate_shrinks(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"0123456789")
        os.truncate(path, 4)
        assert path.stat().st_size == 4
        assert read_file(path) == b"0123"

    def test_truncate_extends_with_zeros(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"abc")
        os.truncate(path, 10_000)
        assert read_file(path) == b"abc" + bytes(9_997)

    def test_ftruncate_then_write_on_open_descriptor(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        with open(path, "w+b", buffering=0) as file:
            file.write(b"x" * 10_000)
            os.ftruncate(file.fileno(), 100)
            assert os.fstat(file.fileno()).st_size == 100
            os.pwrite(file.fileno(), b"tail", 200)
        data = read_file(path)
        assert data == b"x" * 100 + bytes(100) + b"tail"

    # -- unlink -------------------------------------------------------------------------

    def test_unlink_removes_the_name(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"x")
        os.unlink(path)
        assert not path.exists()
        assert os.listdir(rxfs_dir) == []

    def test_unlink_missing_is_enoent(self, rxfs_dir: Path) -> None:
        with expect_errno(errno.ENOENT):
            os.unlink(rxfs_dir / "missing")

    def test_unlink_directory_is_eisdir(self, rxfs_dir: Path) -> None:
        os.mkdir(rxfs_dir / "d")
        with expect_errno(errno.EISDIR):
            os.unlink(rxfs_dir / "d")

    def test_open_descriptor_outlives_unlink(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        with open(path, "w+b", buffering=0) as file:
            file.write(b"still here")
            os.unlink(path)
            os.pwrite(file.fileno(), b"STILL", 0)
            assert os.pread(file.fileno(), 100, 0) == b"STILL here"
        assert not path.exists()
        assert os.listdir(rxfs_dir) == []

    def test_unlinked_file_grows_through_its_descriptor(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        with open(path, "w+b", buffering=0) as file:
            file.write(b"still here")
            os.unlink(path)
            file.write(b", and more")
            assert os.fstat(file.fileno()).st_size == 20
            assert os.pread(file.fileno(), 100, 0) == b"still here, and more"

    def test_unlinked_open_file_reads_and_writes_through_its_descriptor(
        self, rxfs_dir: Path
    ) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"old bytes")
        fd = os.open(path, os.O_RDWR)
        try:
            os.unlink(path)
            assert os.listdir(rxfs_dir) == []
            assert not path.exists()
            assert os.pread(fd, 100, 0) == b"old bytes"
            assert os.pwrite(fd, b"NEW", 0) == 3
            os.fsync(fd)
            assert os.pread(fd, 100, 0) == b"NEW bytes"
            assert os.fstat(fd).st_size == 9
            # The name is free for a new file meanwhile.
            write_file(path, b"new")
            assert read_file(path) == b"new"
            assert os.pread(fd, 100, 0) == b"NEW bytes"
        finally:
            os.close(fd)
        assert read_file(path) == b"new"
        assert os.listdir(rxfs_dir) == ["f"]

    @requires(Capability.PERSISTENT)
    def test_unlinked_open_file_is_gone_from_the_server_after_its_last_close(
        self, rxfs_dir: Path, rxfs_second_mount: MountedBackend, rxfs_mount: MountedBackend
    ) -> None:
        """Another client never sees the file's name after unlink, nor any trace of the
        file once its last descriptor is closed."""
        other = rxfs_second_mount.path / rxfs_dir.relative_to(rxfs_mount.path)
        fd = os.open(rxfs_dir / "f", os.O_RDWR | os.O_CREAT, 0o644)
        dup = os.dup(fd)
        try:
            os.write(fd, b"x" * 10_000)
            os.unlink(rxfs_dir / "f")
            assert "f" not in os.listdir(other)
            os.close(fd)
            assert os.pread(dup, 5, 0) == b"xxxxx"  # a descriptor still holds it
        finally:
            os.close(dup)
        # The kernel sends RELEASE once close() has returned: the file goes a moment later.
        deadline = time.monotonic() + RELEASE_WAIT
        while os.listdir(other) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.listdir(other) == []

    # -- directories --------------------------------------------------------------------

    def test_mkdir_and_list(self, rxfs_dir: Path) -> None:
        os.mkdir(rxfs_dir / "sub")
        write_file(rxfs_dir / "sub" / "a", b"a")
        write_file(rxfs_dir / "b", b"b")
        assert sorted(os.listdir(rxfs_dir)) == ["b", "sub"]
        assert os.listdir(rxfs_dir / "sub") == ["a"]
        assert (rxfs_dir / "sub").is_dir()

    def test_mkdir_existing_is_eexist(self, rxfs_dir: Path) -> None:
        os.mkdir(rxfs_dir / "d")
        with expect_errno(errno.EEXIST):
            os.mkdir(rxfs_dir / "d")
        write_file(rxfs_dir / "f", b"")
        with expect_errno(errno.EEXIST):
            os.mkdir(rxfs_dir / "f")

    def test_rmdir_empty(self, rxfs_dir: Path) -> None:
        os.mkdir(rxfs_dir / "d")
        os.rmdir(rxfs_dir / "d")
        assert os.listdir(rxfs_dir) == []

    def test_rmdir_not_empty_is_enotempty(self, rxfs_dir: Path) -> None:
        os.mkdir(rxfs_dir / "d")
        write_file(rxfs_dir / "d" / "f", b"x")
        with expect_errno(errno.ENOTEMPTY):
            os.rmdir(rxfs_dir / "d")
        assert read_file(rxfs_dir / "d" / "f") == b"x"

    def test_rmdir_of_file_is_enotdir(self, rxfs_dir: Path) -> None:
        write_file(rxfs_dir / "f", b"x")
        with expect_errno(errno.ENOTDIR):
            os.rmdir(rxfs_dir / "f")

    def test_many_names_in_one_directory(self, rxfs_dir: Path) -> None:
        names = {f"file-{i:04d}" for i in range(300)}
        for name in names:
            write_file(rxfs_dir / name, name.encode())
        assert set(os.listdir(rxfs_dir)) == names
        for name in sorted(names)[::2]:
            os.unlink(rxfs_dir / name)
        assert set(os.listdir(rxfs_dir)) == set(sorted(names)[1::2])

    def test_nested_tree_walk(self, rxfs_dir: Path) -> None:
        deep = rxfs_dir.joinpath(*(f"level{i}" for i in range(8)))
        os.makedirs(deep)
        write_file(deep / "leaf", b"leaf")
        found = [
            os.path.relpath(os.path.join(top, name), rxfs_dir)
            for top, _dirs, files in os.walk(rxfs_dir)
            for name in files
        ]
        assert found == [os.path.relpath(deep / "leaf", rxfs_dir)]

    def test_directory_listing_has_types(self, rxfs_dir: Path) -> None:
        os.mkdir(rxfs_dir / "d")
        write_file(rxfs_dir / "f", b"12345")
        with os.scandir(rxfs_dir) as entries:
            kinds = {entry.name: (entry.is_dir(), entry.is_file()) for entry in entries}
        assert kinds == {"d": (True, False), "f": (False, True)}

    # -- rename -------------------------------------------------------------------------

    def test_rename_file(self, rxfs_dir: Path) -> None:
        write_file(rxfs_dir / "old", b"contents")
        os.rename(rxfs_dir / "old", rxfs_dir / "new")
        assert os.listdir(rxfs_dir) == ["new"]
        assert read_file(rxfs_dir / "new") == b"contents"

    def test_rename_into_another_directory(self, rxfs_dir: Path) -> None:
        os.mkdir(rxfs_dir / "d")
        write_file(rxfs_dir / "f", b"moved")
        os.rename(rxfs_dir / "f", rxfs_dir / "d" / "g")
        assert os.listdir(rxfs_dir) == ["d"]
        assert read_file(rxfs_dir / "d" / "g") == b"moved"

    def test_rename_directory_with_contents(self, rxfs_dir: Path) -> None:
        os.makedirs(rxfs_dir / "a" / "b")
        write_file(rxfs_dir / "a" / "b" / "f", b"deep")
        os.rename(rxfs_dir / "a", rxfs_dir / "z")
        assert read_file(rxfs_dir / "z" / "b" / "f") == b"deep"
        assert not (rxfs_dir / "a").exists()

    @requires(Capability.POSIX_RENAME)
    def test_rename_replaces_existing_file(self, rxfs_dir: Path) -> None:
        write_file(rxfs_dir / "src", b"new")
        write_file(rxfs_dir / "dst", b"old contents")
        os.rename(rxfs_dir / "src", rxfs_dir / "dst")
        assert os.listdir(rxfs_dir) == ["dst"]
        assert read_file(rxfs_dir / "dst") == b"new"

    @requires(Capability.POSIX_RENAME)
    def test_rename_directory_over_nonempty_directory_is_enotempty(self, rxfs_dir: Path) -> None:
        os.makedirs(rxfs_dir / "src")
        os.makedirs(rxfs_dir / "dst")
        write_file(rxfs_dir / "dst" / "f", b"x")
        with expect_errno(errno.ENOTEMPTY):
            os.rename(rxfs_dir / "src", rxfs_dir / "dst")
        assert read_file(rxfs_dir / "dst" / "f") == b"x"

    def test_rename_directory_into_itself_is_einval(self, rxfs_dir: Path) -> None:
        os.makedirs(rxfs_dir / "d" / "sub")
        with expect_errno(errno.EINVAL):
            os.rename(rxfs_dir / "d", rxfs_dir / "d" / "sub" / "d")

    def test_rename_missing_is_enoent(self, rxfs_dir: Path) -> None:
        with expect_errno(errno.ENOENT):
            os.rename(rxfs_dir / "missing", rxfs_dir / "other")

    def test_open_descriptor_follows_rename(self, rxfs_dir: Path) -> None:
        with open(rxfs_dir / "before", "wb") as file:
            file.write(b"first ")
            file.flush()
            os.rename(rxfs_dir / "before", rxfs_dir / "after")
            file.write(b"second")
        assert read_file(rxfs_dir / "after") == b"first second"

    # -- metadata -----------------------------------------------------------------------

    @requires(Capability.CHMOD)
    def test_chmod(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"x")
        os.chmod(path, 0o600)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        os.chmod(path, 0o755)
        assert stat.S_IMODE(path.stat().st_mode) == 0o755

    @requires(Capability.TIMES)
    def test_utime_sets_mtime(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"x")
        os.utime(path, (1_000_000_000, 1_500_000_000))
        assert int(path.stat().st_mtime) == 1_500_000_000

    @requires(Capability.TIMES)
    def test_write_moves_mtime_forward(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"x")
        os.utime(path, (1_000_000_000, 1_000_000_000))
        write_file(path, b"y", flags=0)
        # The kernel may keep attributes it read while the write was still held by the
        # core for the mount's attr_timeout (1 s by default): allow for that, no more.
        deadline = time.monotonic() + ATTR_TIMEOUT + 2
        while path.stat().st_mtime <= 1_000_000_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.stat().st_mtime > 1_000_000_000

    @requires(Capability.CHOWN)
    def test_chown(self, rxfs_dir: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("chown to another owner needs root")
        path = rxfs_dir / "f"
        write_file(path, b"x")
        os.chown(path, 4321, 4321)
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4321)

    @requires(Capability.STATFS)
    def test_statvfs(self, rxfs_dir: Path) -> None:
        info = os.statvfs(rxfs_dir)
        assert info.f_bsize > 0 and info.f_frsize > 0
        assert info.f_blocks > 0
        assert 0 <= info.f_bavail <= info.f_bfree <= info.f_blocks
        assert info.f_namemax >= 255

    # -- links --------------------------------------------------------------------------

    @requires(Capability.SYMLINKS)
    def test_symlink_and_readlink(self, rxfs_dir: Path) -> None:
        write_file(rxfs_dir / "target", b"through the link")
        os.symlink("target", rxfs_dir / "link")
        assert os.readlink(rxfs_dir / "link") == "target"
        assert stat.S_ISLNK(os.lstat(rxfs_dir / "link").st_mode)
        assert read_file(rxfs_dir / "link") == b"through the link"

    @requires(Capability.SYMLINKS)
    def test_dangling_and_outside_symlinks_are_shown_as_they_are(self, rxfs_dir: Path) -> None:
        os.symlink("nowhere", rxfs_dir / "dangling")
        os.symlink("/etc/passwd", rxfs_dir / "outside")
        assert os.readlink(rxfs_dir / "dangling") == "nowhere"
        assert os.readlink(rxfs_dir / "outside") == "/etc/passwd"
        with expect_errno(errno.ENOENT):
            (rxfs_dir / "dangling").stat()
        with expect_errno(errno.EEXIST):
            os.symlink("elsewhere", rxfs_dir / "dangling")

    @requires(Capability.HARDLINKS)
    def test_hard_link_shares_contents(self, rxfs_dir: Path) -> None:
        write_file(rxfs_dir / "a", b"shared")
        os.link(rxfs_dir / "a", rxfs_dir / "b")
        # Not st_nlink: SFTP v3 has no link count to report.
        assert (rxfs_dir / "a").stat().st_ino == (rxfs_dir / "b").stat().st_ino
        write_file(rxfs_dir / "b", b"changed", flags=os.O_TRUNC)
        assert read_file(rxfs_dir / "a") == b"changed"
        os.unlink(rxfs_dir / "a")
        assert read_file(rxfs_dir / "b") == b"changed"

    @requires(Capability.HARDLINKS)
    def test_link_counts_follow_link_and_unlink(self, rxfs_dir: Path) -> None:
        first, second = rxfs_dir / "a", rxfs_dir / "b"
        write_file(first, b"x")
        assert first.stat().st_nlink == 1
        os.link(first, second)
        assert first.stat().st_nlink == 2
        assert second.stat().st_nlink == 2
        os.unlink(second)
        assert first.stat().st_nlink == 1

    @requires(Capability.HARDLINKS)
    def test_a_name_linked_again_after_its_removal_links(self, rxfs_dir: Path) -> None:
        """ln a b; rm b; ln a b. A link over an existing name is EEXIST."""
        first, second = rxfs_dir / "a", rxfs_dir / "b"
        write_file(first, b"linked")
        for _ in range(3):
            os.link(first, second)
            os.unlink(second)
        os.link(first, second)
        assert read_file(second) == b"linked"
        with expect_errno(errno.EEXIST):
            os.link(first, second)
        write_file(rxfs_dir / "c", b"other")
        with expect_errno(errno.EEXIST):
            os.link(first, rxfs_dir / "c")
        assert read_file(rxfs_dir / "c") == b"other"

    # -- attributes after our own changes -------------------------------------------------

    @requires(Capability.TIMES)
    def test_directory_mtime_follows_create_and_unlink_at_once(self, rxfs_dir: Path) -> None:
        """No waiting for the attribute timeout: a change made through the mount shows
        in the next stat (make and rsync compare these)."""
        old = 1_000_000_000
        os.utime(rxfs_dir, (old, old))
        write_file(rxfs_dir / "f", b"x")
        assert rxfs_dir.stat().st_mtime > old
        os.utime(rxfs_dir, (old, old))
        os.unlink(rxfs_dir / "f")
        assert rxfs_dir.stat().st_mtime > old
        os.utime(rxfs_dir, (old, old))
        os.mkdir(rxfs_dir / "d")
        assert rxfs_dir.stat().st_mtime > old

    @requires(Capability.TIMES)
    def test_truncate_changes_mtime_and_ctime_at_once(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        write_file(path, b"0123456789")
        old = 1_000_000_000
        os.utime(path, (old, old))
        before = path.stat()
        os.truncate(path, 4)
        after = path.stat()
        assert after.st_size == 4
        assert after.st_mtime > old
        assert after.st_ctime > old and after.st_ctime_ns >= before.st_ctime_ns

    # -- append -------------------------------------------------------------------------

    @requires(Capability.APPEND)
    def test_append_writes_at_the_end(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "log"
        write_file(path, b"one\n")
        with open(path, "ab") as file:
            file.write(b"two\n")
        with open(path, "ab") as file:
            file.write(b"three\n")
        assert read_file(path) == b"one\ntwo\nthree\n"

    @requires(Capability.APPEND)
    def test_concurrent_appends_lose_nothing(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "log"
        write_file(path, b"")
        records = 50

        def writer(n: int) -> None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            try:
                for i in range(records):
                    os.write(fd, f"writer {n} record {i:03d}\n".encode())
            finally:
                os.close(fd)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(writer, range(4)))
        lines = read_file(path).decode().splitlines()
        expected = {f"writer {n} record {i:03d}" for n in range(4) for i in range(records)}
        assert sorted(lines) == sorted(expected)

    # -- durability (DESIGN §4) ---------------------------------------------------------

    def test_close_to_open_on_one_mount(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        data = pattern(3 * MIB + 17, seed=5)
        write_file(path, data)
        assert read_file(path) == data

    def test_fsync_succeeds_and_data_stays_readable(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"synced")
            os.fsync(fd)
            os.fdatasync(fd)
            assert os.pread(fd, 100, 0) == b"synced"
        finally:
            os.close(fd)

    def test_every_close_of_a_duplicated_descriptor_succeeds(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "f"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        dup = os.dup(fd)
        os.write(fd, b"first")
        os.close(fd)
        os.write(dup, b" then second")
        os.close(dup)
        assert read_file(path) == b"first then second"

    @requires(Capability.PERSISTENT)
    def test_closed_file_is_on_the_server(
        self, rxfs_dir: Path, rxfs_second_mount: MountedBackend, rxfs_mount: MountedBackend
    ) -> None:
        """close() returned 0: every byte is at the server, so another client sees it."""
        data = pattern(2 * MIB + 99, seed=7)
        write_file(rxfs_dir / "f", data)
        other = rxfs_second_mount.path / rxfs_dir.relative_to(rxfs_mount.path) / "f"
        assert read_file(other) == data

    @requires(Capability.PERSISTENT)
    def test_fsynced_bytes_are_on_the_server_before_close(
        self, rxfs_dir: Path, rxfs_second_mount: MountedBackend, rxfs_mount: MountedBackend
    ) -> None:
        other = rxfs_second_mount.path / rxfs_dir.relative_to(rxfs_mount.path) / "f"
        fd = os.open(rxfs_dir / "f", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"on the server once fsync returns")
            os.fsync(fd)
            assert read_file(other) == b"on the server once fsync returns"
        finally:
            os.close(fd)

    # -- concurrency --------------------------------------------------------------------

    def test_parallel_writers_to_different_files(self, rxfs_dir: Path) -> None:
        def writer(n: int) -> None:
            write_file(rxfs_dir / f"f{n}", pattern(512 * 1024, seed=n))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(writer, range(8)))
        for n in range(8):
            assert read_file(rxfs_dir / f"f{n}") == pattern(512 * 1024, seed=n)

    def test_parallel_writers_to_disjoint_ranges_of_one_file(self, rxfs_dir: Path) -> None:
        path = rxfs_dir / "shared"
        chunk = 256 * 1024
        write_file(path, b"")
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    for part in range(4):
                        offset = (n * 4 + part) * chunk
                        os.pwrite(fd, pattern(chunk, seed=n * 4 + part), offset)
                finally:
                    os.close(fd)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        data = read_file(path)
        assert len(data) == 16 * chunk
        for index in range(16):
            assert data[index * chunk : (index + 1) * chunk] == pattern(chunk, seed=index)

    def test_concurrent_creates_and_deletes_in_one_directory(self, rxfs_dir: Path) -> None:
        def churn(n: int) -> None:
            for i in range(40):
                write_file(rxfs_dir / f"{n}-{i}", b"x")
            for i in range(0, 40, 2):
                os.unlink(rxfs_dir / f"{n}-{i}")

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(churn, range(6)))
        assert set(os.listdir(rxfs_dir)) == {f"{n}-{i}" for n in range(6) for i in range(1, 40, 2)}


def _umask() -> int:
    # Read, not set and restored: os.umask() would race with the kit's other threads.
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
