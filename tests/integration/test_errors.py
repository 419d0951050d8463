"""Errors a user must see with the errno that says why, not EIO.

The server side is made to fail for real: a small tmpfs mounted under the served root for
a full disk, a read-only directory for the non-root account.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.integration.integration_support import MIB, Target
from tests.support.checklogs import LOST_BYTES

if TYPE_CHECKING:
    from tests.conftest import MountFactory

TMPFS_MIB = 8


@pytest.fixture
def tmpfs_dir(sshd: LoopbackSshd) -> Iterator[tuple[Path, str]]:
    """A TMPFS_MIB tmpfs mounted at a fresh dir under the served root (needs root)."""
    name = f"full-{os.getpid()}-{random.randrange(1 << 30)}"
    path = sshd.root / name
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m,mode=0777", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"mounting a tmpfs needs root: {done.stderr}"
    try:
        yield path, name
    finally:
        if subprocess.run(["umount", str(path)], timeout=30, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], timeout=30, check=False)
        path.rmdir()


@pytest.fixture
def full_target(tmpfs_dir: tuple[Path, str], sshd: LoopbackSshd, mount: MountFactory) -> Target:
    """sftp:// mount of the small tmpfs (set up after it, so unmounted before it)."""
    path, name = tmpfs_dir
    mounted = mount(sshd.url(name), sshd.mount_options())
    return Target("sftp", mounted.path, mounted, path)


def write_until_failure(path: Path, data: bytes, block: int, fsync: bool) -> OSError | None:
    """Write ``data`` in ``block``-sized writes, fsync and close; the first error, if any."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    failure: OSError | None = None
    try:
        for start in range(0, len(data), block):
            os.write(fd, data[start : start + block])
        if fsync:
            os.fsync(fd)
    except OSError as exc:
        failure = exc
    try:
        os.close(fd)
    except OSError as exc:
        failure = failure or exc
    return failure


@pytest.mark.parametrize(
    ("block", "fsync"), [(MIB, True), (4096, True), (MIB, False)], ids=["1M", "4K", "close"]
)
@pytest.mark.expect_log(*LOST_BYTES)
def test_full_remote_disk_reports_enospc_and_no_phantom_bytes(
    full_target: Target, block: int, fsync: bool
) -> None:
    data = random.Random(block).randbytes(2 * TMPFS_MIB * MIB)
    failure = write_until_failure(full_target.mnt / "big", data, block, fsync)

    assert failure is not None, "writing twice the disk's size succeeded"
    assert failure.errno == errno.ENOSPC, f"expected ENOSPC, got {failure!r}"
    on_server = full_target.server_path("big")
    size = on_server.stat().st_size
    assert size <= TMPFS_MIB * MIB
    # The server file holds exactly the prefix it claims: no hole, no zeros in place of
    # bytes that never arrived.
    assert on_server.read_bytes() == data[:size]

    # The mount keeps serving: after freeing the space, a write succeeds again.
    os.unlink(full_target.mnt / "big")
    (full_target.mnt / "small").write_bytes(b"fits")
    assert on_server.with_name("small").read_bytes() == b"fits"


def test_read_only_remote_directory_gives_eacces(
    sshd_user: LoopbackSshd, mount: MountFactory
) -> None:
    root = sshd_user.root / f"ro-{os.getpid()}-{random.randrange(1 << 30)}"
    account = sshd_user.root.stat()
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "inside").write_bytes(b"keep")
    (root / "readonly-file").write_bytes(b"keep")
    for path in (root, root / "locked", root / "locked" / "inside", root / "readonly-file"):
        os.chown(path, account.st_uid, account.st_gid)
    os.chmod(root / "locked", 0o555)
    os.chmod(root / "readonly-file", 0o444)
    mnt = mount(sshd_user.url(root.name), sshd_user.mount_options()).path

    attempts = {
        "create": lambda: (mnt / "locked" / "new").write_bytes(b"x"),
        "mkdir": (mnt / "locked" / "sub").mkdir,
        "unlink": (mnt / "locked" / "inside").unlink,
        "rename": lambda: os.rename(mnt / "locked" / "inside", mnt / "moved"),
        "write": lambda: (mnt / "readonly-file").write_bytes(b"changed"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as raised:
            attempt()
        assert raised.value.errno == errno.EACCES, f"{what}: {raised.value!r}"
    assert sorted(os.listdir(root / "locked")) == ["inside"]
    assert (root / "locked" / "inside").read_bytes() == b"keep"
    assert (root / "readonly-file").read_bytes() == b"keep"
    assert (mnt / "locked" / "inside").read_bytes() == b"keep"


def test_o_excl_on_an_existing_name_gives_eexist(target: Target) -> None:
    (target.mnt / "exists").write_bytes(b"original")
    (target.mnt / "dir").mkdir()
    for name in ("exists", "dir"):
        with pytest.raises(FileExistsError):
            os.open(target.mnt / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with pytest.raises(FileExistsError):
        (target.mnt / "exists").mkdir()
    assert (target.mnt / "exists").read_bytes() == b"original"
    assert target.landed("exists").read_bytes() == b"original"


def test_rmdir_of_a_non_empty_directory_gives_enotempty(target: Target) -> None:
    (target.mnt / "full" / "sub").mkdir(parents=True)
    (target.mnt / "full" / "file").write_bytes(b"x")
    with pytest.raises(OSError) as raised:
        os.rmdir(target.mnt / "full")
    assert raised.value.errno == errno.ENOTEMPTY
    os.unlink(target.mnt / "full" / "file")
    with pytest.raises(OSError) as raised:
        os.rmdir(target.mnt / "full")
    assert raised.value.errno == errno.ENOTEMPTY
    assert sorted(os.listdir(target.landed("full"))) == ["sub"]
    os.rmdir(target.mnt / "full" / "sub")
    os.rmdir(target.mnt / "full")
    assert not target.landed("full").exists()


def test_missing_parent_and_wrong_types_give_their_errnos(target: Target) -> None:
    (target.mnt / "file").write_bytes(b"x")
    (target.mnt / "dir").mkdir()
    cases = [
        (errno.ENOENT, lambda: (target.mnt / "nope" / "x").write_bytes(b"")),
        (errno.ENOTDIR, lambda: (target.mnt / "file" / "x").write_bytes(b"")),
        (errno.EISDIR, lambda: (target.mnt / "dir").write_bytes(b"")),
        (errno.ENOTDIR, lambda: os.rmdir(target.mnt / "file")),
        (errno.EISDIR, lambda: os.unlink(target.mnt / "dir")),
        (errno.ENOENT, lambda: os.unlink(target.mnt / "nope")),
    ]
    for expected, attempt in cases:
        with pytest.raises(OSError) as raised:
            attempt()
        assert raised.value.errno == expected, raised.value


@pytest.mark.expect_log(*LOST_BYTES)
def test_enospc_reaches_a_descriptor_that_did_not_write(full_target: Target) -> None:
    path = full_target.mnt / "shared"
    path.write_bytes(b"")
    writer = os.open(path, os.O_WRONLY)
    watcher = os.open(path, os.O_RDONLY)
    data = random.Random(10).randbytes(MIB)
    try:
        failures: list[OSError] = []
        for index in range(2 * TMPFS_MIB):
            try:
                os.pwrite(writer, data, index * MIB)
            except OSError as exc:  # the write itself may already say so
                failures.append(exc)
                break
        # The bytes of the file did not all land: fsync of any descriptor says why.
        with pytest.raises(OSError) as raised:
            os.fsync(watcher)
        assert raised.value.errno == errno.ENOSPC
        assert all(failure.errno == errno.ENOSPC for failure in failures)
    finally:
        os.close(watcher)
        with contextlib.suppress(OSError):
            os.close(writer)
