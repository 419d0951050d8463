"""Python's file APIs on a real memory:// mount: bytes, sizes, metadata and the errno
each refused call must give, as the kernel hands them to a program."""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import random
import stat
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import MountFactory

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
AT_FDCWD = -100
RENAME_NOREPLACE = 1


def renameat2(source: Path, target: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, bytes(source), AT_FDCWD, bytes(target), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(source), None, str(target))


def test_open_seek_write_read_fsync_round_trip(mnt: Path) -> None:
    data = random.Random(0).randbytes(100_000)
    with (mnt / "f").open("w+b") as file:
        assert file.write(data) == len(data)
        file.seek(300_000)
        file.write(b"tail")
        file.flush()
        os.fsync(file.fileno())
        file.seek(0)
        assert file.read() == data + bytes(200_000) + b"tail"
        file.seek(50_000)
        assert file.read(10) == data[50_000:50_010]
    assert (mnt / "f").stat().st_size == 300_004
    assert (mnt / "f").read_bytes() == data + bytes(200_000) + b"tail"


def test_pwrite_and_pread_at_offsets_across_block_edges(mnt: Path) -> None:
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for offset in (0, 4095, 4096, 131_071, 1 << 20):
            assert os.pwrite(fd, b"abc", offset) == 3
            assert os.pread(fd, 3, offset) == b"abc"
        assert os.fstat(fd).st_size == (1 << 20) + 3
        assert os.pread(fd, 5, 4094) == b"\0aabc"  # 4095: "abc", then 4096: "abc"
    finally:
        os.close(fd)


def test_stat_size_follows_writes_before_close(mnt: Path) -> None:
    with (mnt / "f").open("wb") as file:
        file.write(b"x" * 5000)
        file.flush()
        assert os.fstat(file.fileno()).st_size == 5000
        assert os.stat(mnt / "f").st_size == 5000
        file.write(b"y" * 3000)
        file.flush()
        assert os.stat(mnt / "f").st_size == 8000
    assert os.stat(mnt / "f").st_size == 8000


def test_a_second_descriptor_reads_what_the_first_wrote_and_closed(mnt: Path) -> None:
    with (mnt / "f").open("wb") as writer:
        writer.write(b"first")
    with (mnt / "f").open("rb") as reader, (mnt / "f").open("ab") as appender:
        appender.write(b" second")
        appender.flush()
        assert reader.read() == b"first second"


def test_chmod_changes_the_permission_bits(mnt: Path) -> None:
    (mnt / "f").write_bytes(b"")
    for mode in (0o640, 0o755, 0o600):
        os.chmod(mnt / "f", mode)
        assert stat.S_IMODE(os.stat(mnt / "f").st_mode) == mode
    (mnt / "d").mkdir()
    os.chmod(mnt / "d", 0o700)
    assert stat.S_IMODE(os.stat(mnt / "d").st_mode) == 0o700


def test_utime_sets_access_and_modification_times(mnt: Path) -> None:
    (mnt / "f").write_bytes(b"")
    atime_ns, mtime_ns = 1_000_000_000 * 10**9, 1_200_000_000 * 10**9 + 500_000_000
    os.utime(mnt / "f", ns=(atime_ns, mtime_ns))
    result = os.stat(mnt / "f")
    assert (result.st_atime_ns, result.st_mtime_ns) == (atime_ns, mtime_ns)


def test_rename_over_an_existing_file_replaces_it(mnt: Path) -> None:
    (mnt / "a").write_bytes(b"new contents")
    (mnt / "b").write_bytes(b"old")
    os.rename(mnt / "a", mnt / "b")
    assert not (mnt / "a").exists()
    assert (mnt / "b").read_bytes() == b"new contents"
    assert os.listdir(mnt) == ["b"]


def test_rename_noreplace_refuses_an_existing_target(mnt: Path) -> None:
    (mnt / "a").write_bytes(b"a")
    (mnt / "b").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        renameat2(mnt / "a", mnt / "b", RENAME_NOREPLACE)
    assert (mnt / "a").read_bytes() == b"a"
    assert (mnt / "b").read_bytes() == b"b"
    renameat2(mnt / "a", mnt / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(mnt)) == ["b", "c"]


def test_rename_of_a_directory_over_a_non_empty_directory_is_refused(mnt: Path) -> None:
    (mnt / "a").mkdir()
    (mnt / "b").mkdir()
    (mnt / "b" / "f").write_bytes(b"")
    with pytest.raises(OSError) as refused:
        os.rename(mnt / "a", mnt / "b")
    assert refused.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    assert os.listdir(mnt / "b") == ["f"]


def test_rmdir_of_a_non_empty_directory_is_enotempty(mnt: Path) -> None:
    (mnt / "d").mkdir()
    (mnt / "d" / "f").write_bytes(b"")
    with pytest.raises(OSError) as refused:
        os.rmdir(mnt / "d")
    assert refused.value.errno == errno.ENOTEMPTY
    assert os.listdir(mnt / "d") == ["f"]


def test_o_excl_on_an_existing_file_is_eexist(mnt: Path) -> None:
    (mnt / "f").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        os.open(mnt / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with pytest.raises(FileExistsError):
        os.mkdir(mnt / "f")
    assert (mnt / "f").read_bytes() == b"keep"


def test_refusals_give_the_posix_errno(mnt: Path) -> None:
    (mnt / "f").write_bytes(b"")
    (mnt / "d").mkdir()
    cases = [
        (lambda: os.open(mnt / "missing", os.O_RDONLY), errno.ENOENT),
        (lambda: os.open(mnt / "nodir" / "f", os.O_WRONLY | os.O_CREAT), errno.ENOENT),
        (lambda: os.rmdir(mnt / "f"), errno.ENOTDIR),
        (lambda: os.unlink(mnt / "d"), errno.EISDIR),
        (lambda: os.listdir(mnt / "f"), errno.ENOTDIR),
        (lambda: os.mkdir(mnt / "f" / "sub"), errno.ENOTDIR),
    ]
    for call, expected in cases:
        with pytest.raises(OSError) as refused:
            call()
        assert refused.value.errno == expected, refused.value


def test_a_directory_cannot_be_written(mnt: Path) -> None:
    (mnt / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        os.open(mnt / "d", os.O_WRONLY)
    fd = os.open(mnt / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as refused:
            os.write(fd, b"x")
        assert refused.value.errno == errno.EBADF
        with pytest.raises(IsADirectoryError):
            os.read(fd, 1)
    finally:
        os.close(fd)


def test_unlinked_file_stays_readable_through_an_open_descriptor(mnt: Path) -> None:
    (mnt / "f").write_bytes(b"still here")
    with (mnt / "f").open("rb") as file:
        os.unlink(mnt / "f")
        assert not (mnt / "f").exists()
        assert file.read() == b"still here"
    assert os.listdir(mnt) == []


def test_statvfs_reports_the_size_option_and_counts_written_bytes(mount: MountFactory) -> None:
    size = 64 << 20
    root = mount("memory://", {"size": str(size)}).path
    before = os.statvfs(root)
    assert before.f_frsize > 0
    assert before.f_blocks * before.f_frsize == size
    assert 0 <= before.f_bavail <= before.f_bfree <= before.f_blocks
    with (root / "f").open("wb") as file:
        file.write(bytes(8 << 20))
        file.flush()
        os.fsync(file.fileno())
    after = os.statvfs(root)
    assert (before.f_bfree - after.f_bfree) * after.f_frsize == 8 << 20


def test_readdir_lists_every_stable_entry_once_while_others_come_and_go(mnt: Path) -> None:
    directory = mnt / "many"
    directory.mkdir()
    stable = {f"stable-{i:04}" for i in range(1000)}
    for name in stable:
        (directory / name).write_bytes(b"")
    stop = threading.Event()
    churned = itertools.count()

    def churn() -> None:
        while not stop.is_set():
            path = directory / f"churn-{next(churned):06}"
            path.write_bytes(b"")
            path.unlink()

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        listings = [os.listdir(directory) for _ in range(5)]
    finally:
        stop.set()
        churner.join(timeout=60)
    assert not churner.is_alive()
    assert next(churned) > 0, "the churn thread never ran"
    for names in listings:
        duplicated = [name for name, count in Counter(names).items() if count > 1]
        assert duplicated == []
        assert stable <= set(names)
    assert set(os.listdir(directory)) == stable
