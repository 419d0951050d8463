"""Close-to-open consistency under the kernel's writeback cache (DESIGN §9).

Between opens the kernel answers from its caches; each open asks the server. Under the
writeback cache Linux never takes a regular file's size or mtime from the server again
once it has built the inode, so a file changed elsewhere must reach the next open as a
new inode. Every check here opens right after the change, with no sleep: the entry and
attribute timeouts (1 s) have not run out, so only the open's own revalidation can see
the change.
"""

from __future__ import annotations

import mmap
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.conftest import MountFactory

from .conftest import fresh_server_dir
from .integration_support import Target

ROUNDS = 12


def _read_through(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read()


def _same_second_rewrite(server: Path, data: bytes) -> None:
    """Replace the bytes in place keeping size and mtime: only dropping the page cache
    at open can show them (SFTP v3 times are whole seconds)."""
    before = server.stat()
    with server.open("r+b") as file:
        file.write(data)
    os.utime(server, ns=(before.st_atime_ns, before.st_mtime_ns))


CHANGES = {
    "grows": lambda server, rng: server.write_bytes(server.read_bytes() + rng.randbytes(5000)),
    "shrinks": lambda server, rng: server.write_bytes(server.read_bytes()[: rng.randrange(1, 90)]),
    "same_size_new_bytes": lambda server, rng: _same_second_rewrite(
        server, rng.randbytes(server.stat().st_size)
    ),
    "replaced_by_rename": lambda server, rng: (
        server.with_name("incoming").write_bytes(rng.randbytes(rng.randrange(100, 9000))),
        server.with_name("incoming").rename(server),
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_the_next_open_sees_a_change_made_on_the_server(sftp_target: Target, change: str) -> None:
    rng = random.Random(change)
    mnt, server = sftp_target.mnt / "f", sftp_target.server_path("f")
    mnt.write_bytes(rng.randbytes(100))
    for round_ in range(ROUNDS):
        cached = _read_through(mnt)  # the kernel holds the inode, its size and pages
        assert cached == server.read_bytes()
        CHANGES[change](server, rng)
        expected = server.read_bytes()
        assert _read_through(mnt) == expected, f"round {round_}: stale bytes"
        assert mnt.stat().st_size == len(expected), f"round {round_}: stale size"
        if round_ % 3 == 2:  # and a write through the mount in between
            with mnt.open("r+b") as file:
                file.write(b"through the mount")
            assert server.read_bytes()[:17] == b"through the mount"


def test_the_next_open_sees_a_file_deleted_on_the_server(sftp_target: Target) -> None:
    mnt, server = sftp_target.mnt / "gone", sftp_target.server_path("gone")
    for round_ in range(ROUNDS):
        mnt.write_bytes(b"x" * round_)
        assert _read_through(mnt) == b"x" * round_
        server.unlink()
        with pytest.raises(FileNotFoundError):
            mnt.open("rb")
        assert not mnt.exists()


def test_two_mounts_writer_closes_reader_opens(mount: MountFactory, sshd: LoopbackSshd) -> None:
    _server, name = fresh_server_dir(sshd)
    options = sshd.mount_options()
    writer, reader = (mount(sshd.url(name), options).path for _ in range(2))
    rng = random.Random(5)
    (writer / "shared").write_bytes(b"first")
    assert _read_through(reader / "shared") == b"first"
    for round_ in range(ROUNDS * 2):
        data = rng.randbytes(rng.choice([1, 4095, 4096, 4097, 70_000, 1 << 20]))
        with (writer / "shared").open("wb") as file:  # close() landed every byte
            file.write(data)
        assert _read_through(reader / "shared") == data, f"round {round_}"
        # and the other way round, appending
        with (reader / "shared").open("ab") as file:
            file.write(b"tail")
        assert _read_through(writer / "shared") == data + b"tail", f"round {round_}"


def test_write_only_opens_write_parts_of_pages(target: Target) -> None:
    """The page cache reads the rest of a page a write covers only in part: a write-only
    open must still keep the bytes around it (sshfs#72 corrupted them)."""
    path = target.mnt / "wo"
    original = random.Random(3).randbytes(3 * 4096 + 100)
    path.write_bytes(original)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"PATCH", 4090)  # across a page boundary
        os.pwrite(fd, b"END", len(original) - 1)  # grows the file from inside a page
    finally:
        os.close(fd)
    expected = original[:4090] + b"PATCH" + original[4095:-1] + b"END"
    assert target.landed("wo").read_bytes() == expected
    assert path.read_bytes() == expected


def test_write_only_file_the_server_will_not_let_us_read(
    sshd_user: LoopbackSshd, mount: MountFactory
) -> None:
    """Mode 0200 for a non-root login: the open cannot read, so it goes around the page
    cache instead of failing or corrupting the bytes around a partial page."""
    root = sshd_user.root / f"wo-{os.getpid()}-{random.randrange(1 << 30)}"
    root.mkdir()
    secret = root / "secret"
    secret.write_bytes(b"0123456789" * 1000)
    account = sshd_user.root.stat()
    for path in (root, secret):
        os.chown(path, account.st_uid, account.st_gid)
    secret.chmod(0o200)
    mnt = mount(sshd_user.url(root.name), sshd_user.mount_options()).path
    fd = os.open(mnt / "secret", os.O_WRONLY)
    try:
        assert os.pwrite(fd, b"abc", 5) == 3
    finally:
        os.close(fd)
    assert secret.read_bytes() == b"01234abc89" + b"0123456789" * 999


def test_mmap_writes_and_truncate_under_cached_pages(target: Target) -> None:
    path = target.mnt / "mapped"
    path.write_bytes(bytes(3 * 4096))
    with path.open("r+b") as file, mmap.mmap(file.fileno(), 0) as mapped:
        mapped[4000:4010] = b"0123456789"
        mapped.flush()
    assert target.landed("mapped").read_bytes()[4000:4010] == b"0123456789"
    with path.open("r+b") as file:
        assert file.read(4096)  # pages cached
        file.truncate(4005)
        file.seek(0, os.SEEK_END)
        file.write(b"!")
    expected = bytes(4000) + b"01234" + b"!"
    assert path.read_bytes() == expected
    assert target.landed("mapped").read_bytes() == expected
    assert path.stat().st_size == len(expected)


def test_close_returns_once_the_page_cache_is_on_the_server(target: Target) -> None:
    """Under the writeback cache write(2) only dirties pages; close(2) must still not
    return before every byte is on the server (the kernel writes the pages back
    before FLUSH, and FLUSH waits for them to land)."""
    data = random.Random(8).randbytes(4096 * 300 + 123)
    fd = os.open(target.mnt / "paged", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for start in range(0, len(data), 4096):
            os.write(fd, data[start : start + 4096])
    finally:
        os.close(fd)
    assert target.landed("paged").read_bytes() == data  # at once, no sync, no wait


def test_the_writer_killed_right_after_close_loses_nothing(sftp_target: Target) -> None:
    script = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "for i in range(256):\n"
        "    os.write(fd, bytes([i]) * 4096)\n"
        "os.close(fd)\n"
        "print('closed', flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(sftp_target.mnt / "k")], stdout=subprocess.PIPE
    ) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline() == b"closed\n"
        finally:
            writer.kill()
    expected = b"".join(bytes([i]) * 4096 for i in range(256))
    assert sftp_target.server_path("k").read_bytes() == expected


def test_cp_sparse_into_the_mount_keeps_holes_and_bytes(target: Target, tmp_path: Path) -> None:
    """cp --sparse=always seeks over zero runs: the page cache must write back only the
    data and the size, and the server file must read back the same, holes as zeros."""
    source = tmp_path / "sparse"
    with source.open("wb") as file:
        file.write(b"head")
        file.seek(8 << 20)
        file.write(b"middle")
        file.truncate(16 << 20)
    subprocess.run(["cp", "--sparse=always", str(source), str(target.mnt / "copy")], check=True)
    assert target.landed("copy").stat().st_size == 16 << 20
    assert target.landed("copy").read_bytes() == source.read_bytes()
    assert (target.mnt / "copy").read_bytes() == source.read_bytes()
