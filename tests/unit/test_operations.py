"""The front end without a mount: RxOperations over memory://, its handlers called the
way pyfuse3 calls them, and the errno each error case gives (s3ql's t3_fs_api tier).

Quicker than a real mount and exact about which handler answered what; the real-mount
tests (tests/fuse, tests/integration) check what the kernel makes of the answers.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pyfuse3
import pytest
from rxfs.fs._operations import FsOptions, RxOperations

from ._harness import mounted, trio_test

ROOT = pyfuse3.ROOT_INODE


@dataclass
class Ctx:
    """What pyfuse3's RequestContext carries; another process's request."""

    uid: int = 0
    gid: int = 0
    pid: int = 1
    umask: int = 0o022


CTX = Ctx()


@dataclass
class Fields:
    """pyfuse3's SetattrFields, whose attributes only pyfuse3 may set."""

    update_atime: bool = False
    update_mtime: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_size: bool = False


@asynccontextmanager
async def operations() -> AsyncIterator[RxOperations]:
    async with mounted() as device:
        ops = RxOperations(device, FsOptions())
        yield ops
        await ops.close_all()


@pytest.fixture(autouse=True)
def _no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """No kernel to tell: the entry invalidations a handler sends go nowhere."""
    monkeypatch.setattr(pyfuse3, "invalidate_entry_async", lambda *args, **kwargs: None)


async def _errno_of(call: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await call
    return caught.value.errno


async def _create(ops: RxOperations, name: bytes, flags: int = os.O_RDWR) -> tuple[int, int]:
    info, entry = await ops.create(ROOT, name, 0o100644, flags | os.O_CREAT, CTX)
    return info.fh, entry.st_ino


async def _list(ops: RxOperations, inode: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []

    def reply(token: object, name: bytes, entry: object, next_id: int) -> bool:
        names.append(os.fsdecode(name))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    fh = await ops.opendir(inode, CTX)
    await ops.readdir(fh, 0, None)
    await ops.releasedir(fh)
    return sorted(names)


@trio_test
async def test_create_write_flush_release_then_read_back() -> None:
    async with operations() as ops:
        fh, inode = await _create(ops, b"f")
        assert await ops.write(fh, 0, b"hello ") == 6
        assert await ops.write(fh, 6, b"world") == 5
        await ops.flush(fh)
        await ops.release(fh)
        entry = await ops.lookup(ROOT, b"f", CTX)
        assert entry.st_ino == inode
        assert entry.st_size == 11
        info = await ops.open(inode, os.O_RDONLY, CTX)
        assert await ops.read(info.fh, 0, 100) == b"hello world"
        assert await ops.read(info.fh, 6, 3) == b"wor"
        await ops.release(info.fh)


@trio_test
async def test_lookup_of_a_missing_name_is_enoent() -> None:
    async with operations() as ops:
        assert await _errno_of(ops.lookup(ROOT, b"missing", CTX)) == errno.ENOENT


@trio_test
async def test_a_name_a_held_listing_lacks_is_a_negative_entry_the_kernel_keeps() -> None:
    async with operations() as ops:
        directory = (await ops.mkdir(ROOT, b"d", 0o40755, CTX)).st_ino  # known empty
        entry = await ops.lookup(directory, b"missing", CTX)
        assert entry.st_ino == 0
        assert 0 < entry.entry_timeout <= ops.options.entry_timeout
        info, created = await ops.create(directory, b"missing", 0o100644, os.O_RDWR, CTX)
        await ops.release(info.fh)
        assert (await ops.lookup(directory, b"missing", CTX)).st_ino == created.st_ino


@trio_test
async def test_a_name_too_long_is_enametoolong() -> None:
    async with operations() as ops:
        name = b"n" * 256
        assert await _errno_of(ops.lookup(ROOT, name, CTX)) == errno.ENAMETOOLONG
        assert await _errno_of(ops.create(ROOT, name, 0o100644, os.O_RDWR, CTX)) == (
            errno.ENAMETOOLONG
        )


@trio_test
async def test_exclusive_create_of_an_existing_name_is_eexist() -> None:
    async with operations() as ops:
        fh, _ = await _create(ops, b"f")
        await ops.release(fh)
        assert await _errno_of(
            ops.create(ROOT, b"f", 0o100644, os.O_RDWR | os.O_CREAT | os.O_EXCL, CTX)
        ) == (errno.EEXIST)


@trio_test
async def test_mkdir_readdir_rmdir_and_their_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    async with operations() as ops:
        entry = await ops.mkdir(ROOT, b"d", 0o40755, CTX)
        assert entry.st_mode & 0o170000 == 0o040000
        assert await _errno_of(ops.mkdir(ROOT, b"d", 0o40755, CTX)) == errno.EEXIST
        info, _ = await ops.create(entry.st_ino, b"inside", 0o100644, os.O_RDWR, CTX)
        await ops.release(info.fh)
        assert await _list(ops, entry.st_ino, monkeypatch) == ["inside"]
        assert await _list(ops, ROOT, monkeypatch) == ["d"]
        assert await _errno_of(ops.rmdir(ROOT, b"d", CTX)) == errno.ENOTEMPTY
        assert await _errno_of(ops.opendir(info_inode(ops, "/d/inside"), CTX)) == errno.ENOTDIR
        await ops.unlink(entry.st_ino, b"inside", CTX)
        await ops.rmdir(ROOT, b"d", CTX)
        assert await _errno_of(ops.lookup(ROOT, b"d", CTX)) == errno.ENOENT


def info_inode(ops: RxOperations, path: str) -> int:
    inode = ops.inodes.find(path)
    assert inode is not None, path
    return inode


@trio_test
async def test_rename_moves_the_name_and_keeps_the_inode(monkeypatch: pytest.MonkeyPatch) -> None:
    async with operations() as ops:
        fh, inode = await _create(ops, b"old")
        await ops.write(fh, 0, b"data")
        await ops.release(fh)
        await ops.rename(ROOT, b"old", ROOT, b"new", 0, CTX)
        assert await _list(ops, ROOT, monkeypatch) == ["new"]
        assert (await ops.lookup(ROOT, b"new", CTX)).st_ino == inode
        # Not found, from the listing just taken: an entry the kernel keeps as negative.
        assert (await ops.lookup(ROOT, b"old", CTX)).st_ino == 0
        assert await _errno_of(ops.rename(ROOT, b"old", ROOT, b"x", 0, CTX)) == errno.ENOENT


@trio_test
async def test_rename_noreplace_onto_an_existing_name_is_eexist() -> None:
    async with operations() as ops:
        for name in (b"a", b"b"):
            fh, _ = await _create(ops, name)
            await ops.release(fh)
        flags = pyfuse3.RENAME_NOREPLACE
        assert await _errno_of(ops.rename(ROOT, b"a", ROOT, b"b", flags, CTX)) == errno.EEXIST
        exchange = pyfuse3.RENAME_EXCHANGE
        assert await _errno_of(ops.rename(ROOT, b"a", ROOT, b"b", exchange, CTX)) == errno.EINVAL


@trio_test
async def test_a_closed_handle_is_ebadf() -> None:
    async with operations() as ops:
        fh, _ = await _create(ops, b"f")
        await ops.release(fh)
        assert await _errno_of(ops.write(fh, 0, b"late")) == errno.EBADF
        assert await _errno_of(ops.read(fh, 0, 1)) == errno.EBADF
        assert await _errno_of(ops.flush(fh)) == errno.EBADF


@trio_test
async def test_truncate_through_setattr_changes_the_size() -> None:
    async with operations() as ops:
        fh, inode = await _create(ops, b"f")
        await ops.write(fh, 0, b"0123456789")
        attr = pyfuse3.EntryAttributes()
        attr.st_size = 4
        entry = await ops.setattr(inode, attr, Fields(update_size=True), fh, CTX)
        assert entry.st_size == 4
        assert await ops.read(fh, 0, 100) == b"0123"
        await ops.release(fh)


@trio_test
async def test_symlink_and_readlink() -> None:
    async with operations() as ops:
        entry = await ops.symlink(ROOT, b"link", b"target/elsewhere", CTX)
        assert await ops.readlink(entry.st_ino, CTX) == b"target/elsewhere"


@trio_test
async def test_statfs_answers_the_volume() -> None:
    async with operations() as ops:
        data = await ops.statfs(CTX)
        assert data.f_namemax == 255
        assert data.f_bsize > 0


@pytest.mark.expect_log(r"failed unexpectedly; answering EIO")
@trio_test
async def test_an_unexpected_exception_becomes_eio_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with operations() as ops:

        async def broken(irp: object) -> object:
            raise RuntimeError("a bug")

        monkeypatch.setattr(ops.device, "dispatch", broken)
        assert await _errno_of(ops.lookup(ROOT, b"f", CTX)) == errno.EIO


@trio_test
async def test_a_listing_again_comes_from_the_cache_and_shows_our_own_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with operations() as ops:
        asked: list[str] = []
        query_directory = ops.device.minirdr.query_directory

        async def counting(rx_context: Any) -> Any:
            asked.append(rx_context.fcb.path)
            return await query_directory(rx_context)

        monkeypatch.setattr(ops.device.minirdr, "query_directory", counting)
        sizes: dict[str, int] = {}

        def reply(token: object, name: bytes, entry: Any, next_id: int) -> bool:
            sizes[os.fsdecode(name)] = entry.st_size
            return True

        monkeypatch.setattr(pyfuse3, "readdir_reply", reply)

        async def listing() -> dict[str, int]:
            sizes.clear()
            fh = await ops.opendir(ROOT, CTX)
            await ops.readdir(fh, 0, None)
            await ops.releasedir(fh)
            return dict(sizes)

        fh, _ = await _create(ops, b"f")
        await ops.write(fh, 0, b"12")
        await ops.flush(fh)
        assert await listing() == {"f": 2}
        assert await listing() == {"f": 2}
        assert asked == ["/"]  # the second from the cache
        await ops.write(fh, 2, b"345")  # our change: the cached entries go
        await ops.flush(fh)
        await ops.release(fh)
        assert await listing() == {"f": 5}
        assert asked == ["/", "/"]
