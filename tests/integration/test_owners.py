"""Owners, modes and id mapping through the mount (issues 14 and 16).

A mount shared with other local users (allow_other) gives the files they make to them on
the server when the login may chown; ``-o idmap``, ``uid=``, ``gid=``, ``umask=`` show the
server's owners as sshfs and libfuse do; a chmod or chown through one name of a file shows
through its other names at once.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.integration.conftest import fresh_server_dir, mount_sftp, remove_server_dir
from tests.integration.integration_support import Target

if TYPE_CHECKING:
    from tests.conftest import MountFactory, Rxfs

NOBODY = 65534
# An ordinary user's commands, run as uid/gid 65534 with no other groups.
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.fixture
def open_mountpoint() -> Iterator[Path]:
    """A mount point other users can reach (pytest's tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="rxfs-shared-"))
    path.chmod(0o755)
    yield path
    # Torn down before the mount fixture: unmount here (it then finds nothing to do).
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", str(path)], timeout=30, check=False)
    path.rmdir()


def as_nobody(script: str, cwd: Path) -> None:
    done = subprocess.run(
        [*AS_NOBODY, "sh", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def shared_sftp(
    mount: MountFactory, server: LoopbackSshd, mountpoint: Path, **options: str
) -> Target:
    path, name = fresh_server_dir(server)
    path.chmod(0o777)
    mounted = mount(
        server.url(name),
        {**server.mount_options(), "allow_other": "", **options},
        mountpoint=mountpoint,
    )
    return Target("sftp", mounted.path, mounted, path)


MAKE_FILES = "echo data > file && mkdir dir && ln -s file link && : > dir/inner"


def test_files_another_local_user_makes_are_theirs_on_the_server(
    mount: MountFactory, sshd: LoopbackSshd, open_mountpoint: Path
) -> None:
    """The login is root: it gives each new file to its caller, as a local disk would."""
    target = shared_sftp(mount, sshd, open_mountpoint)
    try:
        as_nobody(MAKE_FILES, target.mnt)
        for name in ("file", "dir", "link", "dir/inner"):
            on_server = os.lstat(target.server_path(name))
            assert (on_server.st_uid, on_server.st_gid) == (NOBODY, NOBODY), name
            seen = os.lstat(target.mnt / name)
            assert (seen.st_uid, seen.st_gid) == (NOBODY, NOBODY), name
        # Its own files stay its own: the kernel's checks now see the right owner.
        as_nobody("echo more >> file && chmod 600 file && cat file > /dev/null", target.mnt)
        assert target.server_path("file").read_bytes() == b"data\nmore\n"
        # The mounting user's files are the login's, as before (no chown asked).
        (target.mnt / "mine").write_bytes(b"")
        assert os.stat(target.server_path("mine")).st_uid == 0
        # In a set-group-ID directory a new file takes the directory's group.
        group_dir = target.server_path("group")
        group_dir.mkdir()
        os.chown(group_dir, 0, 4321)
        group_dir.chmod(0o2777)
        as_nobody("echo x > group/f && mkdir group/d", target.mnt)
        for name in ("group/f", "group/d"):
            on_server = os.stat(target.server_path(name))
            assert (on_server.st_uid, on_server.st_gid) == (NOBODY, 4321), name
    finally:
        remove_server_dir(target)


def test_a_login_that_cannot_chown_keeps_the_files_it_makes(
    mount: MountFactory, sshd_user: LoopbackSshd, open_mountpoint: Path
) -> None:
    target = shared_sftp(mount, sshd_user, open_mountpoint)
    login = os.stat(target.server_path(".")).st_uid
    try:
        # Not dir/inner: the directory is the login's, and the kernel lets only the
        # login's uid write in it (the limit README states).
        as_nobody("echo data > file && mkdir dir && ln -s file link", target.mnt)
        for name in ("file", "dir", "link"):
            assert os.lstat(target.server_path(name)).st_uid == login, name
        assert target.server_path("file").read_bytes() == b"data\n"
    finally:
        remove_server_dir(target)


def test_memory_gives_new_files_to_their_caller(
    mount: MountFactory, open_mountpoint: Path
) -> None:
    mnt = mount("memory://", {"allow_other": ""}, mountpoint=open_mountpoint).path
    os.chmod(mnt, 0o777)
    as_nobody(MAKE_FILES, mnt)
    for name in ("file", "dir", "link", "dir/inner"):
        seen = os.lstat(mnt / name)
        assert (seen.st_uid, seen.st_gid) == (NOBODY, NOBODY), name
    (mnt / "mine").write_bytes(b"")
    assert os.stat(mnt / "mine").st_uid == os.getuid()


# -- one file, several names ----------------------------------------------------------------


def test_chmod_and_chown_through_one_link_show_through_the_other(target: Target) -> None:
    first, second = target.mnt / "a", target.mnt / "b"
    first.write_bytes(b"x")
    os.link(first, second)
    os.stat(second)  # both names' attributes are cached now
    os.chmod(first, 0o600)
    assert stat.S_IMODE(os.stat(second).st_mode) == 0o600
    os.chown(second, 4321, 8765)
    assert (os.stat(first).st_uid, os.stat(first).st_gid) == (4321, 8765)


def test_chmod_through_one_name_of_a_file_linked_on_the_server(sftp_target: Target) -> None:
    """Two names the mount cannot tell are one file (no inode numbers in SFTP v3): two
    inodes, each with attributes cached, yet once a listing showed their link count
    (ls -l), a chmod or chown through one shows through the other at once."""
    sftp_target.server_path("a").write_bytes(b"x")
    os.link(sftp_target.server_path("a"), sftp_target.server_path("b"))
    first, second = sftp_target.mnt / "a", sftp_target.mnt / "b"
    assert sorted(os.listdir(sftp_target.mnt)) == ["a", "b"]
    assert os.stat(first).st_ino != os.stat(second).st_ino
    os.chmod(first, 0o600)
    assert stat.S_IMODE(os.stat(second).st_mode) == 0o600
    os.chown(first, 4321, 8765)
    assert (os.stat(second).st_uid, os.stat(second).st_gid) == (4321, 8765)
    os.chmod(second, 0o640)
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o640


# -- id mapping -----------------------------------------------------------------------------


def test_idmap_user_shows_the_login_as_the_mounting_user(
    mount: MountFactory, sshd_user: LoopbackSshd
) -> None:
    target = mount_sftp(mount, sshd_user, idmap="user")
    login = os.stat(target.server_path(".")).st_uid
    assert login != os.getuid()
    try:
        (target.mnt / "f").write_bytes(b"x")
        assert os.stat(target.server_path("f")).st_uid == login
        seen = os.stat(target.mnt / "f")
        assert (seen.st_uid, seen.st_gid) == (os.getuid(), os.getgid())
        # Another owner on the server is shown as it is.
        target.server_path("other").write_bytes(b"")
        os.chown(target.server_path("other"), 4321, 4321)
        assert os.stat(target.mnt / "other").st_uid == 4321
        # A chown to the mounting user (root) is a chown to the login there, which
        # the login may do; a chown to root itself it may not.
        os.chown(target.mnt / "f", os.getuid(), os.getgid())
        assert os.stat(target.server_path("f")).st_uid == login
    finally:
        remove_server_dir(target)


def write_map(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o644)
    return str(path)


def test_idmap_file_maps_server_ids_to_local_names(
    mount: MountFactory, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    uidfile = write_map(tmp_path / "uids", "root:0\n\nnobody:4321\nno-such-user-here:77\n")
    gidfile = write_map(tmp_path / "gids", "root:x:0:\nnogroup:x:4321:\n")
    target = mount_sftp(mount, sshd, idmap="file", uidfile=uidfile, gidfile=gidfile)
    try:
        for name, owner in (("mapped", 4321), ("unmapped", 999)):
            target.server_path(name).write_bytes(b"x")
            os.chown(target.server_path(name), owner, owner)
        nobody = os.stat(target.mnt / "mapped")
        assert (nobody.st_uid, nobody.st_gid) == (NOBODY, NOBODY)
        # nomap=error (the default): an owner the files do not name is refused.
        with pytest.raises(PermissionError):
            os.stat(target.mnt / "unmapped")
        os.chown(target.mnt / "mapped", 0, 0)
        assert os.stat(target.server_path("mapped")).st_uid == 0
        os.chown(target.mnt / "mapped", NOBODY, NOBODY)
        on_server = os.stat(target.server_path("mapped"))
        assert (on_server.st_uid, on_server.st_gid) == (4321, 4321)
    finally:
        remove_server_dir(target)


@pytest.mark.expect_log(r"lost; reconnecting", r"reconnected to")
def test_idmap_file_survives_a_reconnect_without_its_files(
    mount: MountFactory, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    """A reconnect keeps the map read at mount: the files may be gone by then."""
    uidfile = write_map(tmp_path / "uids", "root:0\nnobody:4321\n")
    target = mount_sftp(
        mount, sshd, idmap="file", uidfile=uidfile, attr_timeout="0", reconnect_timeout="10"
    )
    try:
        target.server_path("f").write_bytes(b"x")
        os.chown(target.server_path("f"), 4321, 4321)
        assert os.stat(target.mnt / "f").st_uid == NOBODY
        os.unlink(uidfile)
        assert sshd.drop_connections() > 0
        assert os.stat(target.mnt / "f").st_uid == NOBODY
        assert (target.mnt / "f").read_bytes() == b"x"
    finally:
        remove_server_dir(target)


def test_idmap_file_nomap_ignore_shows_the_server_id(
    mount: MountFactory, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    uidfile = write_map(tmp_path / "uids", "nobody:4321\n")
    target = mount_sftp(mount, sshd, idmap="file", uidfile=uidfile, nomap="ignore")
    try:
        target.server_path("f").write_bytes(b"x")
        os.chown(target.server_path("f"), 999, 999)
        assert os.stat(target.mnt / "f").st_uid == 999
        assert os.stat(target.mnt).st_uid == 0
    finally:
        remove_server_dir(target)


def test_idmap_file_names_alone_map_by_the_servers_names(
    mount: MountFactory, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    """A line with a name alone: the server's user of that name (users-groups-by-id)."""
    uidfile = write_map(tmp_path / "uids", "root\nnobody\n")
    gidfile = write_map(tmp_path / "gids", "root\nnogroup\n")
    target = mount_sftp(mount, sshd, idmap="file", uidfile=uidfile, gidfile=gidfile)
    try:
        for name, owner in (("named", NOBODY), ("nameless", 4321)):
            target.server_path(name).write_bytes(b"x")
            os.chown(target.server_path(name), owner, owner)
        seen = os.stat(target.mnt / "named")
        assert (seen.st_uid, seen.st_gid) == (NOBODY, NOBODY)
        # The server has no name for 4321: unmapped, refused (nomap=error).
        with pytest.raises(PermissionError):
            os.stat(target.mnt / "nameless")
        os.chown(target.mnt / "named", 0, 0)
        assert os.stat(target.server_path("named")).st_uid == 0
    finally:
        remove_server_dir(target)


def test_idmap_file_names_alone_need_the_servers_names(rxfs: Rxfs, tmp_path: Path) -> None:
    uidfile = write_map(tmp_path / "uids", "root:0\nnobody\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subsystem = "internal-sftp -P users-groups-by-id"
    with LoopbackSshd(root=tmp_path / "root", sftp_subsystem=subsystem) as server:
        (tmp_path / "root").mkdir(exist_ok=True)
        options = {**server.mount_options(), "idmap": "file", "uidfile": uidfile}
        option_arg = ",".join(f"{k}={v}" for k, v in options.items())
        done = rxfs("mount", server.url(), str(mnt), "-o", option_arg, timeout=60)
        if rxfs.is_mounted(mnt):  # a failing test must not leave a mount behind
            subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "line 2 (nobody): a name without an id needs the server's" in lines[0]
    assert not rxfs.is_mounted(mnt)


def test_uid_gid_umask_override_what_is_shown(mount: MountFactory, sshd: LoopbackSshd) -> None:
    target = mount_sftp(mount, sshd, uid="1234", gid="5678", umask="027")
    try:
        (target.mnt / "f").write_bytes(b"x")
        (target.mnt / "d").mkdir()
        for name, kind in (("f", stat.S_IFREG), ("d", stat.S_IFDIR)):
            seen = os.stat(target.mnt / name)
            assert (seen.st_uid, seen.st_gid) == (1234, 5678)
            assert seen.st_mode == kind | 0o750
        assert os.stat(target.server_path("f")).st_uid == 0
        assert stat.S_IMODE(os.stat(target.server_path("f")).st_mode) == 0o644
    finally:
        remove_server_dir(target)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"idmap": "users"}, "-o idmap=users: expected none, user or file"),
        ({"idmap": "file"}, "-o idmap=file needs -o uidfile=FILE or -o gidfile=FILE"),
        ({"idmap": "file", "uidfile": "/no/such/file"}, "cannot read it (No such file"),
        (
            {"idmap": "file", "uidfile": "BAD"},
            "line 2: expected name:id or a name, got 'nobody:x'",
        ),
        ({"idmap": "file", "uidfile": "BAD", "nomap": "maybe"}, "expected error or ignore"),
        ({"uidfile": "BAD"}, "-o uidfile: only with -o idmap=file"),
        ({"umask": "999"}, "-o umask=999: expected octal permission bits"),
        ({"uid": "root"}, "-o uid=root: expected a numeric uid"),
    ],
)
def test_bad_id_options_are_refused_in_one_line(
    rxfs: Rxfs, sshd: LoopbackSshd, tmp_path: Path, options: dict[str, str], message: str
) -> None:
    bad = write_map(tmp_path / "bad", "root:0\nnobody:x\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    given = {k: bad if v == "BAD" else v for k, v in options.items()}
    option_arg = ",".join(f"{k}={v}" for k, v in {**sshd.mount_options(), **given}.items())
    done = rxfs("mount", sshd.url(), str(mnt), "-o", option_arg, timeout=60)
    if rxfs.is_mounted(mnt):  # a failing test must not leave a mount behind
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not rxfs.is_mounted(mnt)
