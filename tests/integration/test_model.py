"""Model-based: the same random operations on the mount and on a local directory.

hypothesis drives create / write at offsets / truncate / rename / unlink / mkdir / rmdir /
symlink / link / relink (ln a b; rm b; ln a b) / chmod / utime, and reads and writes
through descriptors kept open, whose names are unlinked or renamed away under them, over
a handful of names. Each operation is applied to both trees and its outcome (the value
returned or the errno) compared step by step; stat compares type, size, mode and mtime
(to within MTIME_SLACK: the two trees are changed a moment apart, and SFTP v3 stores
whole seconds). When an example ends, both trees, and the server's directory (sftp://, smb://),
must hold the same names, types, sizes and bytes. One mount serves every example: the
trees are emptied in between, never remounted.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.integration.integration_support import tree_digest

if TYPE_CHECKING:
    from tests.integration.integration_support import Target

# Few names, nested two deep, so that operations collide often: existing targets,
# missing parents, files where directories are expected and the reverse.
NAMES = st.sampled_from(["a", "b", "d", "d/a", "d/b", "d/e", "d/e/a", "b/a"])
# Relative targets only, so that a link resolves the same way in both trees.
LINK_TARGETS = st.sampled_from(["a", "b", "d", "d/a", "../a", "e/a", "missing"])
MODES = st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o444, 0o4755])
# Times far in the past, so that a write or truncate that fails to stamp "now" shows.
PAST = st.integers(1_000_000_000, 1_000_100_000)
# The trees are changed one after the other, and SFTP v3 keeps whole seconds.
MTIME_SLACK = 2.0
# Seconds a closed file's RELEASE may take to reach the mount.
RELEASE_WAIT = 5.0
OFFSETS = st.one_of(st.integers(0, 5000), st.integers(60_000, 300_000))
LENGTHS = st.one_of(st.integers(0, 5000), st.integers(30_000, 140_000))
Outcome = tuple[str, object]
Handle = tuple[int, int, str]


def outcome(action: Callable[[], object]) -> Outcome:
    try:
        return ("ok", action())
    except OSError as exc:
        return ("error", errno.errorcode.get(exc.errno or 0, exc.errno))


def clear(root: Path) -> None:
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def write_at(path: Path, offset: int, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def create(path: Path, flags: int) -> int:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644))
    return os.stat(path).st_size


def read_all(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read()


def kind_and_size(path: Path) -> tuple[int, int | None]:
    """A directory's size is the file system's own business; a file's is not."""
    info = os.stat(path)
    return stat.S_IFMT(info.st_mode), info.st_size if stat.S_ISREG(info.st_mode) else None


def same_metadata(expected: Outcome, actual: Outcome) -> bool:
    """stat results: the same type, size and mode, mtimes within MTIME_SLACK."""
    if expected[0] != "ok" or actual[0] != "ok":
        return expected == actual
    local, mounted = expected[1], actual[1]
    assert isinstance(local, os.stat_result) and isinstance(mounted, os.stat_result)
    return (
        local.st_mode == mounted.st_mode
        and (local.st_size == mounted.st_size or stat.S_ISDIR(local.st_mode))
        and abs(local.st_mtime - mounted.st_mtime) <= MTIME_SLACK
    )


def describe(result: Outcome) -> object:
    if result[0] == "ok" and isinstance(result[1], os.stat_result):
        info = result[1]
        return (oct(info.st_mode), info.st_size, info.st_mtime)
    return result


def relink(source: Path, destination: Path) -> int:
    """ln a b; rm b; ln a b: the kernel's link count must not fall to 0 in between."""
    os.link(source, destination)
    os.unlink(destination)
    os.link(source, destination)
    return os.stat(source).st_nlink


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def make_machine(target: Target, local: Path) -> type[RuleBasedStateMachine]:
    roots = (local, target.mnt)

    class MountVersusLocal(RuleBasedStateMachine):
        # Descriptors kept open across steps: (local fd, mount fd, name), or None where
        # the open failed on both sides. Writes through them race renames and unlinks.
        handles = Bundle("handles")

        def __init__(self) -> None:
            super().__init__()
            self.open_fds: list[int] = []
            for root in roots:
                clear(root)

        def both(self, op: Callable[[Path], Callable[[], object]]) -> None:
            expected, actual = (outcome(op(root)) for root in roots)
            assert actual == expected, f"mount: {actual}, local: {expected}"

        @rule(name=NAMES, flags=st.sampled_from([0, os.O_EXCL, os.O_TRUNC]))
        def create(self, name: str, flags: int) -> None:
            self.both(lambda root: lambda: create(root / name, flags))

        @rule(name=NAMES, offset=OFFSETS, length=LENGTHS, seed=st.integers(0, 255))
        def write(self, name: str, offset: int, length: int, seed: int) -> None:
            data = random.Random(seed).randbytes(length)
            self.both(lambda root: lambda: write_at(root / name, offset, data))

        @rule(name=NAMES, size=st.one_of(st.integers(0, 5000), st.integers(0, 400_000)))
        def truncate(self, name: str, size: int) -> None:
            self.both(lambda root: lambda: os.truncate(root / name, size))

        @rule(source=NAMES, destination=NAMES)
        def rename(self, source: str, destination: str) -> None:
            self.both(lambda root: lambda: os.rename(root / source, root / destination))

        @rule(name=NAMES)
        def unlink(self, name: str) -> None:
            self.both(lambda root: lambda: os.unlink(root / name))

        @rule(name=NAMES)
        def mkdir(self, name: str) -> None:
            self.both(lambda root: lambda: os.mkdir(root / name))

        @rule(name=NAMES)
        def rmdir(self, name: str) -> None:
            self.both(lambda root: lambda: os.rmdir(root / name))

        @rule(name=NAMES, link_target=LINK_TARGETS)
        def symlink(self, name: str, link_target: str) -> None:
            self.both(lambda root: lambda: os.symlink(link_target, root / name))

        @rule(name=NAMES)
        def readlink(self, name: str) -> None:
            self.both(lambda root: lambda: os.readlink(root / name))

        @rule(source=NAMES, destination=NAMES)
        def link(self, source: str, destination: str) -> None:
            self.both(lambda root: lambda: os.link(root / source, root / destination))

        @rule(name=NAMES)
        def read(self, name: str) -> None:
            self.both(lambda root: lambda: read_all(root / name))

        @rule(name=NAMES)
        def stat(self, name: str) -> None:
            self.both(lambda root: lambda: kind_and_size(root / name))
            expected, actual = (outcome(lambda root=root: os.stat(root / name)) for root in roots)
            assert same_metadata(expected, actual), (
                f"mount: {describe(actual)}, local: {describe(expected)}"
            )

        # smb:// (-o modes=fixed) keeps no mode, only the read-only attribute, which binds
        # root too (README.md, "### smb://"): where a local root writes to a 0444 file,
        # the mount says EACCES.
        @precondition(lambda _: target.keeps_modes)
        @rule(name=NAMES, mode=MODES)
        def chmod(self, name: str, mode: int) -> None:
            self.both(lambda root: lambda: os.chmod(root / name, mode))

        @rule(name=NAMES, atime=PAST, mtime=PAST)
        def utime(self, name: str, atime: int, mtime: int) -> None:
            self.both(lambda root: lambda: os.utime(root / name, (atime, mtime)))

        @rule(source=NAMES, destination=NAMES)
        def relink(self, source: str, destination: str) -> None:
            self.both(lambda root: lambda: relink(root / source, root / destination))

        @rule(target=handles, name=NAMES, create=st.booleans(), append=st.booleans())
        def open(self, name: str, create: bool, append: bool) -> Handle | None:
            flags = os.O_RDWR | (os.O_CREAT if create else 0) | (os.O_APPEND if append else 0)
            opened = [
                outcome(lambda root=root: os.open(root / name, flags, 0o644)) for root in roots
            ]
            fds = [value for kind, value in opened if kind == "ok"]
            assert isinstance(fds, list)
            self.open_fds += [fd for fd in fds if isinstance(fd, int)]
            if len(fds) != 2:
                assert opened[0] == opened[1], f"mount: {opened[1]}, local: {opened[0]}"
                return None
            return (int(fds[0]), int(fds[1]), name)

        def each_fd(self, handle: Handle | None, op: Callable[[int], object]) -> None:
            if handle is None:
                return
            expected, actual = (outcome(lambda fd=fd: op(fd)) for fd in handle[:2])
            assert actual == expected, f"mount: {actual}, local: {expected}"

        @rule(handle=handles)
        def unlink_while_open(self, handle: Handle | None) -> None:
            if handle is not None:
                self.both(lambda root: lambda: os.unlink(root / handle[2]))

        @rule(handle=handles, destination=NAMES)
        def rename_while_open(self, handle: Handle | None, destination: str) -> None:
            if handle is not None:
                self.both(lambda root: lambda: os.rename(root / handle[2], root / destination))

        @rule(handle=handles)
        def fstat_metadata(self, handle: Handle | None) -> None:
            if handle is None:
                return
            expected, actual = (outcome(lambda fd=fd: os.fstat(fd)) for fd in handle[:2])
            assert same_metadata(expected, actual), (
                f"mount: {describe(actual)}, local: {describe(expected)}"
            )

        @rule(handle=handles, offset=OFFSETS, length=LENGTHS, seed=st.integers(0, 255))
        def pwrite(self, handle: Handle | None, offset: int, length: int, seed: int) -> None:
            data = random.Random(seed).randbytes(length)
            self.each_fd(handle, lambda fd: os.pwrite(fd, data, offset))

        @rule(handle=handles, offset=OFFSETS, length=LENGTHS)
        def pread(self, handle: Handle | None, offset: int, length: int) -> None:
            self.each_fd(handle, lambda fd: os.pread(fd, length, offset))

        @rule(handle=handles, size=st.integers(0, 300_000))
        def ftruncate(self, handle: Handle | None, size: int) -> None:
            self.each_fd(handle, lambda fd: os.ftruncate(fd, size))

        @rule(handle=handles)
        def fsync(self, handle: Handle | None) -> None:
            self.each_fd(handle, os.fsync)

        @rule(handle=handles)
        def fstat(self, handle: Handle | None) -> None:
            self.each_fd(handle, lambda fd: os.fstat(fd).st_size)

        @rule(handle=consumes(handles))
        def close(self, handle: Handle | None) -> None:
            if handle is not None:
                for fd in handle[:2]:
                    self.open_fds.remove(fd)
            self.each_fd(handle, os.close)

        @invariant()
        def same_listing(self) -> None:
            expected, actual = (outcome(lambda root=root: listing(root)) for root in roots)
            assert actual == expected

        def teardown(self) -> None:
            for fd in self.open_fds:
                os.close(fd)
            expected = tree_digest(local)
            assert tree_digest(target.mnt) == expected
            if target.server is not None:
                # The kernel sends RELEASE after close() returns: the hidden name of a
                # file unlinked while open goes a moment later.
                deadline = time.monotonic() + RELEASE_WAIT
                while target.landed_tree("") != expected and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert target.landed_tree("") == expected

    return MountVersusLocal


@pytest.mark.ordinary_tool
def test_random_operations_match_a_local_directory(target: Target, tmp_path: Path) -> None:
    """RXFS_MODEL_EXAMPLES / RXFS_MODEL_STEPS make it longer, within the 180 s watchdog
    that tests/conftest.py puts on every mount."""
    local = tmp_path / "local"
    local.mkdir()
    machine = make_machine(target, local)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=int(os.environ.get("RXFS_MODEL_EXAMPLES", "50")),
            stateful_step_count=int(os.environ.get("RXFS_MODEL_STEPS", "40")),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
