"""``rxfs mount smb://...`` as a user runs it, against the loopback smbd: ordinary file
APIs through FUSE, the errno the server's NTSTATUS becomes, and what a refused mount says.
"""

from __future__ import annotations

import errno
import os
import pwd
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Rxfs, rxfs_argv
from tests.support.checklogs import LOST_BYTES
from tests.support.smbd import LoopbackSmbd
from tests.test_status import status_of

if TYPE_CHECKING:
    from tests.conftest import MountFactory

pytestmark = pytest.mark.fuse


def _url(smbd: LoopbackSmbd, share: Path) -> str:
    return smbd.url(share.name)


def test_files_written_through_the_mount_are_on_the_share(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory
) -> None:
    mounted = mount(_url(smbd, share), smbd.mount_options())
    data = os.urandom(5 * 1024 * 1024 + 3)
    (mounted.path / "big").write_bytes(data)
    (mounted.path / "dir").mkdir()
    (mounted.path / "dir" / "small").write_text("hello")
    os.rename(mounted.path / "dir" / "small", mounted.path / "dir" / "renamed")
    assert (share / "big").read_bytes() == data
    assert (share / "dir" / "renamed").read_text() == "hello"
    assert sorted(os.listdir(mounted.path)) == ["big", "dir"]
    assert (mounted.path / "big").read_bytes() == data
    st = os.statvfs(mounted.path)
    assert st.f_blocks > 0 and st.f_bavail <= st.f_blocks


@pytest.mark.expect_log(*LOST_BYTES)
def test_a_full_share_fails_close_with_enospc(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory
) -> None:
    full = share / "full"
    full.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs", str(full)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"mounting a tmpfs needs root: {done.stderr}"
    try:
        mounted = mount(_url(smbd, share), smbd.mount_options())
        fd = os.open(mounted.path / "full" / "big", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with pytest.raises(OSError) as caught:
                for _ in range(8):
                    os.write(fd, os.urandom(256 * 1024))
                os.fsync(fd)
            assert caught.value.errno == errno.ENOSPC
        finally:
            # close() reports the same failure (or none, once fsync reported it).
            try:
                os.close(fd)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        if subprocess.run(["umount", str(full)], timeout=30, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(full)], timeout=30, check=False)


def test_another_users_file_is_eacces_for_writing(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory
) -> None:
    (share / "roots").write_text("keep")
    (share / "roots").chmod(0o644)
    mounted = mount(_url(smbd, share), smbd.mount_options(smbd.user_login))
    assert (mounted.path / "roots").read_text() == "keep"
    with pytest.raises(PermissionError):
        (mounted.path / "roots").write_text("overwritten")
    (mounted.path / "mine").write_text("mine")
    assert (share / "roots").read_text() == "keep"
    # smbd creates the file as the Unix user the login maps to.
    assert (share / "mine").stat().st_uid == pwd.getpwnam(smbd.user_login.user).pw_uid


def _mount_once(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


# user= is mount.cifs's spelling of username= (mount(8)'s own user flag has no value).
@pytest.mark.parametrize("login", ["username=root", "user=root"])
def test_password_stdin_logs_in(
    smbd: LoopbackSmbd, share: Path, tmp_path: Path, login: str
) -> None:
    where = tmp_path / "mnt"
    where.mkdir()
    argv = rxfs_argv("mount", _url(smbd, share), str(where), "-o", f"{login},password_stdin")
    done = _mount_once(argv, smbd.admin.password + "\n")
    assert done.returncode == 0, done.stderr
    try:
        (where / "f").write_text("via stdin")
    finally:
        subprocess.run(["fusermount3", "-u", str(where)], timeout=30, check=True)
    assert (share / "f").read_text() == "via stdin"


@pytest.mark.parametrize(
    ("url_of", "options_of", "words"),
    [
        (lambda s: s.url("no-such-dir"), lambda s: s.options(), "STATUS_OBJECT_NAME_NOT_FOUND"),
        (lambda s: s.url(share="noshare"), lambda s: s.options(), "STATUS_BAD_NETWORK_NAME"),
        (lambda s: s.url(), lambda s: "username=root,password_stdin", "refused the login"),
    ],
)
def test_a_refused_mount_says_why_in_one_line(
    smbd: LoopbackSmbd,
    tmp_path: Path,
    url_of: Callable[[LoopbackSmbd], str],
    options_of: Callable[[LoopbackSmbd], str],
    words: str,
) -> None:
    where = tmp_path / "mnt"
    where.mkdir()
    done = _mount_once(
        rxfs_argv("mount", url_of(smbd), str(where), "-o", options_of(smbd)), "wrong\n"
    )
    assert done.returncode != 0
    assert words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "wrong" not in done.stderr
    assert smbd.admin.password not in done.stderr


def test_two_mounts_see_each_others_closed_files(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory
) -> None:
    first = mount(_url(smbd, share), smbd.mount_options())
    second = mount(_url(smbd, share), smbd.mount_options())
    (first.path / "shared").write_bytes(b"from the first mount")
    assert (second.path / "shared").read_bytes() == b"from the first mount"


def test_rename_over_a_file_held_open_replaces_it(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory
) -> None:
    """SMB refuses to replace an open file; POSIX replaces it, and the holder keeps the
    old one until it closes it (then the server drops it)."""
    mounted = mount(_url(smbd, share), smbd.mount_options())
    fd = os.open(mounted.path / "target", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"old content")
        (mounted.path / "new").write_bytes(b"new content")
        os.rename(mounted.path / "new", mounted.path / "target")
        assert (mounted.path / "target").read_bytes() == b"new content"
        assert os.listdir(mounted.path) == ["target"]
        assert os.pread(fd, 100, 0) == b"old content"
    finally:
        os.close(fd)
    mounted_names = os.listdir(mounted.path)
    # Unmounted, every handle is closed: the old file is gone from the share.
    subprocess.run(["fusermount3", "-u", str(mounted.path)], timeout=30, check=True)
    assert mounted_names == ["target"]
    assert [p.name for p in share.iterdir()] == ["target"]
    assert (share / "target").read_bytes() == b"new content"


def test_status_names_the_connection_and_the_handles_it_holds(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory, rxfs: Rxfs
) -> None:
    mounted = mount(_url(smbd, share), smbd.mount_options())
    with (mounted.path / "held").open("wb") as held:
        held.write(b"x")
        held.flush()
        (connection,) = status_of(rxfs, mounted.path)["transport"]["connections"]
    assert connection == {
        "state": "up",
        "server": f"127.0.0.1:{smbd.port}",
        "share": connection["share"],
        "dialect": "3.1.1",
        "encrypted": True,
        "signed": True,
        "leases": True,
        "open_files": connection["open_files"],
        "durable_files": connection["durable_files"],
    }
    assert connection["share"].endswith("\\share")
    assert connection["open_files"] >= 1 and connection["durable_files"] >= 1
    # The core closes in the background: the server's handle goes soon after close(2).
    deadline = time.monotonic() + 10
    while status_of(rxfs, mounted.path)["transport"]["connections"][0]["open_files"]:
        assert time.monotonic() < deadline, "the handle is still open 10 s after close"
        time.sleep(0.1)


def test_stat_right_after_close_shows_the_write(
    smbd: LoopbackSmbd, share: Path, mount: MountFactory
) -> None:
    """Samba (as Windows) shows the write time a handle had at its open until 2 s
    after its first write or until the handle closes, and the handle closes after
    close(2) returned (FUSE's RELEASE is asynchronous): a stat in between saw the
    time from before the write."""
    mounted = mount(_url(smbd, share), smbd.mount_options())
    past = 1_000_000_000
    stale = []
    for index in range(40):
        path = mounted.path / f"f{index}"
        path.write_bytes(b"old")
        os.utime(path, (past, past))
        before = time.time()
        with path.open("ab") as file:
            file.write(b" and new")
        if path.stat().st_mtime < before - 1:
            stale.append(index)
    assert stale == []
    for index in range(40):
        assert (share / f"f{index}").read_bytes() == b"old and new"
        assert os.stat(share / f"f{index}").st_mtime > past
