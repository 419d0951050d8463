"""POSIX semantics through the mount: rename, truncate, links, chmod/utime, fsync.

Each test checks what a user sees through the mount and what the server's directory holds.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from tests.integration.integration_support import MIB, run

if TYPE_CHECKING:
    from tests.integration.integration_support import Target

AT_FDCWD = -100
RENAME_NOREPLACE = 1


def renameat2(source: str, destination: str, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.renameat2(AT_FDCWD, source.encode(), AT_FDCWD, destination.encode(), flags)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source)


@pytest.mark.ordinary_tool
def test_rename_over_an_existing_file_replaces_it(target: Target) -> None:
    (target.mnt / "a").write_bytes(b"new content")
    (target.mnt / "b").write_bytes(b"old content that is longer")
    os.rename(target.mnt / "a", target.mnt / "b")

    assert sorted(os.listdir(target.mnt)) == ["b"]
    assert (target.mnt / "b").read_bytes() == b"new content"
    assert target.landed("b").read_bytes() == b"new content"
    assert not target.landed("a").exists()


def test_rename_noreplace_keeps_the_target(target: Target) -> None:
    (target.mnt / "a").write_bytes(b"source")
    (target.mnt / "b").write_bytes(b"target")
    with pytest.raises(OSError) as raised:
        renameat2(str(target.mnt / "a"), str(target.mnt / "b"), RENAME_NOREPLACE)
    assert raised.value.errno == errno.EEXIST

    # mv -n tries RENAME_NOREPLACE and must leave both files as they were.
    subprocess.run(["mv", "-n", str(target.mnt / "a"), str(target.mnt / "b")], check=False)
    for name, content in (("a", b"source"), ("b", b"target")):
        assert (target.mnt / name).read_bytes() == content
        assert target.landed(name).read_bytes() == content

    renameat2(str(target.mnt / "a"), str(target.mnt / "c"), RENAME_NOREPLACE)
    assert sorted(os.listdir(target.mnt)) == ["b", "c"]
    assert target.landed("c").read_bytes() == b"source"


@pytest.mark.ordinary_tool
def test_truncate_up_zero_fills_and_down_cuts(target: Target) -> None:
    path = target.mnt / "t"
    data = random.Random(4).randbytes(100_000)
    path.write_bytes(data)

    os.truncate(path, 3 * MIB + 17)
    assert path.stat().st_size == 3 * MIB + 17
    assert target.landed("t").stat().st_size == 3 * MIB + 17
    expected = data + bytes(3 * MIB + 17 - len(data))
    assert path.read_bytes() == expected
    assert target.landed("t").read_bytes() == expected

    run(["truncate", "-s", "1234", str(path)])
    assert path.stat().st_size == 1234
    assert path.read_bytes() == data[:1234]
    assert target.landed("t").read_bytes() == data[:1234]

    # Growing again must not resurrect the bytes cut off before.
    os.truncate(path, 5000)
    assert path.read_bytes() == data[:1234] + bytes(5000 - 1234)
    assert target.landed("t").read_bytes() == data[:1234] + bytes(5000 - 1234)


@pytest.mark.ordinary_tool
def test_a_log_renamed_while_appended_to_opens_under_its_new_name(target: Target) -> None:
    """logrotate's way: rename the log while its writer appends. On smb:// the next
    open of the new name said ENOENT: the kernel opened the inode the append had
    renumbered, by the name it had before the rename."""
    fd = os.open(target.mnt / "log", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"first\n")
        os.rename(target.mnt / "log", target.mnt / "log.1")
        os.write(fd, b"second\n")
    finally:
        os.close(fd)
    with (target.mnt / "log.1").open("r+b") as rotated:
        assert rotated.read() == b"first\nsecond\n"
    assert sorted(os.listdir(target.mnt)) == ["log.1"]
    assert target.landed("log.1").read_bytes() == b"first\nsecond\n"


@pytest.mark.ordinary_tool
def test_ftruncate_through_an_o_append_descriptor(target: Target) -> None:
    """POSIX lets an O_APPEND descriptor truncate its file; SMB's append-only access
    (FILE_APPEND_DATA) does not, and smb:// said EACCES."""
    fd = os.open(target.mnt / "log", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 100)
        os.ftruncate(fd, 10)
        os.write(fd, b"tail")
        os.ftruncate(fd, 5000)
    finally:
        os.close(fd)
    assert target.landed("log").read_bytes() == b"x" * 10 + b"tail" + bytes(5000 - 14)


@pytest.mark.ordinary_tool
def test_ftruncate_on_an_open_descriptor_with_pending_writes(target: Target) -> None:
    path = target.mnt / "ft"
    with path.open("w+b") as file:
        file.write(b"x" * 10_000)
        file.flush()
        os.ftruncate(file.fileno(), 100)
        file.seek(0, os.SEEK_END)
        file.write(b"tail")
    assert path.read_bytes() == b"x" * 100 + b"tail"
    assert target.landed("ft").read_bytes() == b"x" * 100 + b"tail"


def test_symlinks_show_relative_and_absolute_targets_as_is(target: Target) -> None:
    (target.mnt / "dir").mkdir()
    (target.mnt / "dir" / "file").write_bytes(b"pointed at")
    links = {
        "rel": "dir/file",
        "dotdot": "../outside/of/the/mount",
        "abs": "/etc/hostname",
        "dangling": "no-such-file",
    }
    for name, link_target in links.items():
        os.symlink(link_target, target.mnt / name)

    run(["ln", "-s", "dir", str(target.mnt / "ln-made")])
    links["ln-made"] = "dir"
    for name, link_target in links.items():
        assert os.readlink(target.mnt / name) == link_target
        assert (target.mnt / name).is_symlink()
        if target.server is not None:
            assert os.readlink(target.server_path(name)) == link_target
    assert run(["readlink", str(target.mnt / "abs")]) == "/etc/hostname\n"
    assert (target.mnt / "rel").read_bytes() == b"pointed at"
    assert (target.mnt / "ln-made" / "file").read_bytes() == b"pointed at"
    assert os.lstat(target.mnt / "rel").st_size == len("dir/file")
    with pytest.raises(FileNotFoundError):
        (target.mnt / "dangling").read_bytes()
    os.unlink(target.mnt / "rel")
    assert (target.mnt / "dir" / "file").exists()


def test_symlink_metadata_changes_never_touch_the_target(target: Target) -> None:
    (target.mnt / "file").write_bytes(b"x")
    os.utime(target.mnt / "file", (1_000_000_000, 1_000_000_000))
    os.symlink("file", target.mnt / "link")
    os.symlink("missing", target.mnt / "dangling")

    # What tar does after extracting a symlink: utimensat/lchown with AT_SYMLINK_NOFOLLOW.
    for name in ("link", "dangling"):
        os.utime(target.mnt / name, (2_000_000_000, 2_000_000_000), follow_symlinks=False)
        os.lchown(target.mnt / name, os.getuid(), os.getgid())
        assert os.lstat(target.mnt / name).st_mtime == 2_000_000_000
    assert os.stat(target.mnt / "file").st_mtime == 1_000_000_000
    assert os.stat(target.landed("file")).st_mtime == 1_000_000_000
    if target.server is not None:
        assert os.lstat(target.server_path("link")).st_mtime == 2_000_000_000
        assert not target.server_path("missing").exists()


def test_hard_links_share_content_and_server_inode(target: Target) -> None:
    first = target.mnt / "first"
    first.write_bytes(b"shared")
    os.link(first, target.mnt / "second")

    assert (target.mnt / "second").read_bytes() == b"shared"
    with first.open("r+b") as file:
        file.write(b"SH")
    assert (target.mnt / "second").read_bytes() == b"SHared"
    # A link made through the mount is one inode there too (cp -a, du and rsync -H rely
    # on it).
    assert first.stat().st_ino == (target.mnt / "second").stat().st_ino
    # SFTP v3 attributes carry no link count: the mount counts the names it made.
    assert first.stat().st_nlink == 2
    if target.server is not None:
        on_server = os.stat(target.server_path("first"))
        assert on_server.st_ino == os.stat(target.server_path("second")).st_ino
        assert on_server.st_nlink == 2
        assert target.server_path("second").read_bytes() == b"SHared"

    os.unlink(first)
    assert (target.mnt / "second").read_bytes() == b"SHared"
    assert target.landed("second").read_bytes() == b"SHared"
    if target.server is not None:
        assert os.stat(target.server_path("second")).st_nlink == 1


def test_a_name_linked_again_after_its_removal_links(target: Target) -> None:
    """ln a b; rm b; ln a b: the kernel refuses a link to a file whose link count it
    thinks fell to 0 (ENOENT), so the count the mount answers must include b."""
    first, second = target.mnt / "a", target.mnt / "b"
    first.write_bytes(b"linked")
    for _ in range(3):
        os.link(first, second)
        assert first.stat().st_nlink == 2
        os.unlink(second)
        assert first.stat().st_nlink == 1
    os.link(first, second)
    with pytest.raises(FileExistsError):
        os.link(first, second)
    assert target.landed("b").read_bytes() == b"linked"


def test_chmod_reaches_the_server(target: Target) -> None:
    path = target.mnt / "mode"
    path.write_bytes(b"")
    for mode in (0o600, 0o755, 0o640, 0o4755):
        os.chmod(path, mode)
        assert path.stat().st_mode & 0o7777 == mode
        if target.server is not None:
            assert os.stat(target.server_path("mode")).st_mode & 0o7777 == mode
    (target.mnt / "d").mkdir()
    os.chmod(target.mnt / "d", 0o700)
    assert (target.mnt / "d").stat().st_mode & 0o7777 == 0o700
    assert os.stat(target.landed("d")).st_mode & 0o7777 == 0o700


def test_times_set_through_the_writing_descriptor_survive_its_writes(target: Target) -> None:
    # cp -p: write, futimens on the same descriptor, close. The written bytes are held
    # for write-behind when the times are set: they must land first, or the server
    # stamps the file with the time they landed.
    path = target.mnt / "preserved"
    mtime = 1_000_000_000
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"p" * 100_000)
        os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)
    assert os.stat(target.landed("preserved")).st_mtime == mtime
    assert path.stat().st_mtime == mtime
    source = target.mnt / "source"
    source.write_bytes(b"s" * 200_000)
    os.utime(source, (mtime + 7, mtime + 7))
    run(["cp", "-p", str(source), str(target.mnt / "copy")])
    assert os.stat(target.landed("copy")).st_mtime == mtime + 7


def test_utime_shows_the_times_set_and_the_server_keeps_its_seconds(target: Target) -> None:
    path = target.mnt / "times"
    path.write_bytes(b"x")
    atime_ns = 1_500_000_000_123_456_789
    mtime_ns = 1_600_000_000_987_654_321
    os.utime(path, ns=(atime_ns, mtime_ns))

    # The times set, to the nanosecond, for as long as the mount knows the file, also
    # once the attribute cache asked the server again (make and cp -p compare them).
    seen = path.stat()
    assert (seen.st_atime_ns, seen.st_mtime_ns) == (atime_ns, mtime_ns)
    time.sleep(1.2)  # past attr_timeout
    seen = path.stat()
    assert (seen.st_atime_ns, seen.st_mtime_ns) == (atime_ns, mtime_ns)
    if target.server is None:
        return
    # SFTP v3 carries whole seconds: that is what the server keeps.
    on_server = os.stat(target.server_path("times"))
    whole = (atime_ns // 10**9 * 10**9, mtime_ns // 10**9 * 10**9)
    assert (on_server.st_atime_ns, on_server.st_mtime_ns) == whole

    run(["touch", "-d", "@1234567890", str(path)])
    assert os.stat(target.server_path("times")).st_mtime_ns == 1234567890 * 10**9
    assert path.stat().st_mtime_ns == 1234567890 * 10**9


def test_bytes_are_on_the_server_when_fsync_returns_before_close(target: Target) -> None:
    data = random.Random(5).randbytes(3 * MIB + 123)
    fd = os.open(target.mnt / "durable", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for start in range(0, len(data), 4096):
            os.write(fd, data[start : start + 4096])
        os.fsync(fd)
        assert target.landed("durable").read_bytes() == data
        # A second round: an overwrite in the middle, then fsync again, still open.
        os.pwrite(fd, b"\xff" * 10_000, MIB)
        os.fsync(fd)
        expected = data[:MIB] + b"\xff" * 10_000 + data[MIB + 10_000 :]
        assert target.landed("durable").read_bytes() == expected
    finally:
        os.close(fd)
    assert (target.mnt / "durable").read_bytes() == expected


def test_close_lands_every_byte_written_through_the_descriptor(target: Target) -> None:
    data = random.Random(6).randbytes(2 * MIB)
    with (target.mnt / "closed").open("wb") as file:
        file.write(data)
    # close-to-open: once close() returned, another client (the server) sees the bytes.
    assert target.landed("closed").read_bytes() == data


def test_fsync_lands_bytes_written_through_another_descriptor(target: Target) -> None:
    path = target.mnt / "shared-fd"
    path.write_bytes(b"")
    writer = os.open(path, os.O_WRONLY)
    syncer = os.open(path, os.O_RDONLY)
    try:
        data = random.Random(7).randbytes(MIB + 5)
        os.write(writer, data)
        # fsync is about the file, not the descriptor: every byte of it is on the server.
        os.fsync(syncer)
        assert target.landed("shared-fd").read_bytes() == data
        assert os.pread(syncer, len(data) + 10, 0) == data
    finally:
        os.close(writer)
        os.close(syncer)


def test_rename_and_unlink_while_open_with_unflushed_writes(target: Target) -> None:
    fd = os.open(target.mnt / "old", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"before rename;")
        os.rename(target.mnt / "old", target.mnt / "new")
        os.write(fd, b"after rename")
    finally:
        os.close(fd)
    assert sorted(os.listdir(target.mnt)) == ["new"]
    assert target.landed("new").read_bytes() == b"before rename;after rename"
    assert not target.landed("old").exists()

    fd = os.open(target.mnt / "new", os.O_RDWR)
    try:
        os.unlink(target.mnt / "new")
        os.pwrite(fd, b"AFTER", 14)
        # An unlinked file stays readable and writable through its open descriptor.
        assert os.pread(fd, 100, 0) == b"before rename;AFTER rename"
        assert os.fstat(fd).st_size == 26
    finally:
        os.close(fd)
    assert os.listdir(target.mnt) == []
    assert not target.landed("new").exists()


def test_an_unlinked_open_file_keeps_its_bytes_for_the_descriptor(target: Target) -> None:
    """POSIX: the file lives until its last descriptor closes. The kernel reads no
    further than the size it is told, so fstat through the descriptor must see the
    bytes written since the open (it saw the size from before the open)."""
    path = target.mnt / "f"
    path.write_bytes(b"old")
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, b"Hello, World!")
        os.unlink(path)
        assert "f" not in os.listdir(target.mnt)
        assert os.pread(fd, 13, 0) == b"Hello, World!"
        assert os.fstat(fd).st_size == 13
        os.write(fd, b" more")
        assert os.pread(fd, 100, 0) == b"Hello, World! more"
        if target.server is not None:
            # Kept on the server under a hidden name (for reconnects and crashes),
            # which listings through the mount leave out.
            hidden = [p.name for p in target.server.iterdir()]
            assert len(hidden) == 1 and hidden[0].startswith(".rxfs-unlinked-"), hidden
            assert os.listdir(target.mnt) == []
    finally:
        os.close(fd)
    assert not path.exists()
    if target.server is not None:  # the last close removes it (the release is async)
        deadline = time.monotonic() + 5
        while list(target.server.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(target.server.iterdir()) == []


def _tick(target: Target) -> None:
    """Long enough for the server to stamp a different time (SFTP v3: whole seconds)."""
    time.sleep(1.05 if target.server is not None else 0.01)


def test_a_directory_shows_the_times_of_changes_made_here_at_once(target: Target) -> None:
    """The attribute cache is for changes made elsewhere: after a create, symlink,
    rename or rmdir here, the directory's mtime is the new one at once (rsync -a sets
    a directory's times after filling it and compares them on the next run)."""
    directory = target.mnt / "d"
    directory.mkdir()
    (directory / "sub").mkdir()
    changes = {
        "create": lambda: (directory / "f").write_bytes(b"x"),
        "symlink": lambda: os.symlink("f", directory / "l"),
        "rename": lambda: os.rename(directory / "f", directory / "g"),
        "rmdir": lambda: os.rmdir(directory / "sub"),
    }
    for name, change in changes.items():
        before = directory.stat().st_mtime_ns
        _tick(target)
        change()
        after = directory.stat().st_mtime_ns
        assert after > before, f"{name}: the directory's mtime did not move"
        if target.server is not None:  # SFTP v3 carries whole seconds
            on_server = os.stat(target.server_path("d")).st_mtime_ns
            assert after // 10**9 == on_server // 10**9, name


def test_truncate_changes_the_ctime_at_once(target: Target) -> None:
    path = target.mnt / "f"
    path.write_bytes(b"0123456789")
    before = path.stat().st_ctime_ns
    _tick(target)
    os.truncate(path, 4)
    assert path.stat().st_ctime_ns > before
    assert path.stat().st_size == 4


def test_sparse_write_far_past_the_end(target: Target) -> None:
    offset = 200 * MIB
    fd = os.open(target.mnt / "sparse", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"end", offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert (target.mnt / "sparse").stat().st_size == offset + 3
    assert target.landed("sparse").stat().st_size == offset + 3
    with (target.mnt / "sparse").open("rb") as file:
        assert file.read(4096) == bytes(4096)
        file.seek(offset - 5)
        assert file.read() == bytes(5) + b"end"


def test_write_right_after_another_descriptor_closed_lands(target: Target) -> None:
    # FUSE sends RELEASE after close(2) returns, so the first descriptor's handle is still
    # being closed while the second one writes: the write must not use that handle.
    data = random.Random(9).randbytes(1204)
    failures = []
    for index in range(200):
        path = target.mnt / f"f{index % 7}"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, data, 0)
            finally:
                os.close(fd)
        except OSError as exc:
            failures.append(f"round {index}: {exc!r}")
    assert failures == []
    for index in range(7):
        assert target.landed(f"f{index}").read_bytes() == data


ODD_NAMES = [
    "with space",
    "ünïcödé-名前",
    "per%20cent",
    "q?mark",
    "hash#tag",
    "back\\slash",
    "new\nline",
    "colon:semi;",
    "star*",
    "-leading-dash",
    ".hidden",
    "x" * 255,
]


def test_odd_file_names_arrive_unchanged(target: Target) -> None:
    for index, name in enumerate(ODD_NAMES):
        (target.mnt / name).write_bytes(f"{index}".encode())
    (target.mnt / "dir with space").mkdir()
    (target.mnt / "dir with space" / "per%2Fcent").write_bytes(b"nested")

    expected = sorted([*ODD_NAMES, "dir with space"])
    assert sorted(os.listdir(target.mnt)) == expected
    assert sorted(os.listdir(target.landed(""))) == expected
    for index, name in enumerate(ODD_NAMES):
        assert target.landed(name).read_bytes() == f"{index}".encode()
    assert target.landed("dir with space/per%2Fcent").read_bytes() == b"nested"
    with pytest.raises(OSError) as raised:
        (target.mnt / ("y" * 256)).write_bytes(b"")
    assert raised.value.errno == errno.ENAMETOOLONG


@pytest.mark.parametrize("target", ["sftp"], indirect=True)
def test_rm_r_of_a_large_directory_while_listing_it(target: Target) -> None:
    big = target.mnt / "big"
    big.mkdir()
    for index in range(300):
        (big / f"entry-{index:04d}").write_bytes(b"")
    assert len(os.listdir(big)) == 300
    assert run(["find", str(big), "-type", "f"]).count("\n") == 300
    # rm -r reads the directory while it unlinks its entries: no entry may be skipped.
    run(["rm", "-r", str(big)])
    assert not big.exists()
    assert not target.landed("big").exists()


def test_statvfs_reports_the_servers_file_system(target: Target) -> None:
    seen = os.statvfs(target.mnt)
    assert seen.f_bsize > 0
    assert seen.f_blocks > 0
    assert seen.f_bfree <= seen.f_blocks
    if target.server is not None:
        server = os.statvfs(target.server)
        assert seen.f_blocks * seen.f_frsize == server.f_blocks * server.f_frsize
        assert seen.f_namemax == server.f_namemax


def test_changes_made_on_the_server_show_after_the_attribute_timeout(
    sftp_target: Target,
) -> None:
    path = sftp_target.mnt / "shared"
    path.write_bytes(b"written through the mount")
    assert path.read_bytes() == b"written through the mount"

    # Another client changes the file on the server (a longer file, new bytes).
    sftp_target.server_path("shared").write_bytes(b"changed on the server, and longer")
    sftp_target.server_path("new-on-server").write_bytes(b"hello")
    time.sleep(1.5)  # past the default attr_timeout and entry_timeout of 1 s

    assert path.stat().st_size == len(b"changed on the server, and longer")
    assert path.read_bytes() == b"changed on the server, and longer"
    assert (sftp_target.mnt / "new-on-server").read_bytes() == b"hello"
    assert "new-on-server" in os.listdir(sftp_target.mnt)


@pytest.mark.ordinary_tool
def test_copy_within_the_mount(target: Target) -> None:
    data = random.Random(11).randbytes(3 * MIB + 7)
    (target.mnt / "original").write_bytes(data)
    run(["cp", str(target.mnt / "original"), str(target.mnt / "copy")])
    shutil.copyfile(target.mnt / "original", target.mnt / "copy2")  # copy_file_range
    for name in ("copy", "copy2"):
        assert (target.mnt / name).read_bytes() == data
        assert target.landed(name).read_bytes() == data


def test_mtime_follows_writes_like_make_expects(target: Target) -> None:
    older = target.mnt / "older"
    older.write_bytes(b"1")
    time.sleep(1.1)  # SFTP v3 keeps whole seconds
    newer = target.mnt / "newer"
    newer.write_bytes(b"2")
    assert newer.stat().st_mtime > older.stat().st_mtime
    with older.open("ab") as file:
        time.sleep(1.1)
        file.write(b"more")
    assert older.stat().st_mtime > newer.stat().st_mtime
    if target.server is not None:
        for name in ("older", "newer"):
            seen = int((target.mnt / name).stat().st_mtime)
            assert seen == int(os.stat(target.server_path(name)).st_mtime)


def test_stat_right_after_an_append_shows_its_mtime(target: Target) -> None:
    """An O_APPEND write goes to the server as the program makes it, past the kernel's
    page cache: the server stamps the mtime, and no cache here may answer the one from
    before (make compares the times right after a tool closed its output)."""
    past = 1_000_000_000
    path = target.mnt / "log"
    path.write_bytes(b"old")
    os.utime(path, (past, past))
    before = time.time()
    with path.open("ab") as file:
        file.write(b" and new")
    assert path.stat().st_mtime >= before - 1
    assert os.stat(target.landed("log")).st_mtime >= before - 1
    assert target.landed("log").read_bytes() == b"old and new"
