"""The attribute and directory caches on a real sftp:// mount: a cache never makes an
operation fail, and what another client does on the server shows within the timeouts.

What a user may rely on, pinned down here:

- A file deleted on the server (by another client) can be created through the mount at
  once, by any way of opening with O_CREAT, whatever the mount still remembers of it: the
  mount answers ESTALE for the inode and Linux walks the path again (LOOKUP_REVAL).
- A descriptor open on such a file keeps working (fstat, fchmod).
- A file created on the server shows through the mount within ``dir_timeout`` seconds
  (default: ``attr_timeout``, 1 s) of the mount listing its directory; our own changes to
  the directory do not make it show sooner (they only add our names to the listing).
- Creating a name the mount believes absent always asks the server: without O_EXCL the
  file the server has is opened (not truncated), with O_EXCL the answer is EEXIST.
- Creating files in a directory made through the mount costs no lookups on the server.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.integration.conftest import mount_sftp, remove_server_dir

if TYPE_CHECKING:
    from tests.conftest import MountFactory
    from tests.integration.integration_support import Target

# Long enough that nothing a test does outlives it: whatever the mount shows then comes
# from its caches or the kernel's.
LONG = "30"
LONG_CACHES = {"entry_timeout": LONG, "attr_timeout": LONG, "dir_timeout": LONG}


@pytest.fixture(params=["default caches", "long caches"])
def cached_target(
    request: pytest.FixtureRequest, mount: MountFactory, sshd: LoopbackSshd
) -> Iterator[Target]:
    options = LONG_CACHES if request.param == "long caches" else {}
    result = mount_sftp(mount, sshd, **options)
    yield result
    remove_server_dir(result)


@pytest.fixture
def long_cached_target(mount: MountFactory, sshd: LoopbackSshd) -> Iterator[Target]:
    result = mount_sftp(mount, sshd, **LONG_CACHES)
    yield result
    remove_server_dir(result)


def create_with_os_open(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def create_with_os_open_excl(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def create_with_shell(path: Path, data: bytes) -> None:
    # `printf ... > f`: O_WRONLY|O_CREAT|O_TRUNC from the shell.
    subprocess.run(["sh", "-c", f"printf %s '{data.decode()}' > '{path}'"], check=True, timeout=30)


def create_with_python_open(path: Path, data: bytes) -> None:
    with path.open("wb") as file:
        file.write(data)


CREATORS: dict[str, Callable[[Path, bytes], None]] = {
    "os.open(O_CREAT)": create_with_os_open,
    "os.open(O_CREAT|O_EXCL)": create_with_os_open_excl,
    "shell redirection": create_with_shell,
    "open(..., 'wb')": create_with_python_open,
}


# -- a file deleted on the server ----------------------------------------------------------


@pytest.mark.parametrize("creator", list(CREATORS))
def test_file_deleted_on_the_server_can_be_created_through_the_mount_at_once(
    cached_target: Target, creator: str
) -> None:
    path = cached_target.mnt / "f"
    path.write_bytes(b"first version, through the mount")
    assert path.stat().st_size == len(b"first version, through the mount")  # all cached now

    cached_target.server_path("f").unlink()  # another client deletes it
    CREATORS[creator](path, b"second")

    assert cached_target.server_path("f").read_bytes() == b"second"
    assert path.read_bytes() == b"second"
    assert os.listdir(cached_target.mnt) == ["f"]


def test_stat_of_a_file_deleted_on_the_server_says_enoent_once_asked(
    mount: MountFactory, sshd: LoopbackSshd
) -> None:
    """The kernel keeps the name (entry_timeout 30 s) but asks for attributes after the
    1 s attr_timeout: the mount then says the inode is stale, Linux looks the name up
    again and stat() answers ENOENT; the name is then free for a create."""
    target = mount_sftp(mount, sshd, entry_timeout=LONG)
    try:
        path = target.mnt / "f"
        path.write_bytes(b"data")
        path.stat()
        target.server_path("f").unlink()
        time.sleep(1.2)  # past attr_timeout, here and in the kernel

        with pytest.raises(FileNotFoundError):
            path.stat()
        assert not path.exists()
        create_with_os_open(path, b"new")
        assert target.server_path("f").read_bytes() == b"new"
    finally:
        remove_server_dir(target)


def test_an_open_descriptor_outlives_the_files_deletion_on_the_server(
    mount: MountFactory, sshd: LoopbackSshd
) -> None:
    """fstat and fchmod reach the file through the open handle: no ESTALE for a call
    Linux does not retry."""
    target = mount_sftp(mount, sshd, entry_timeout=LONG)
    try:
        path = target.mnt / "f"
        path.write_bytes(b"12345")
        fd = os.open(path, os.O_RDWR)
        try:
            target.server_path("f").unlink()
            time.sleep(1.2)  # past attr_timeout: fstat asks the mount
            assert os.fstat(fd).st_size == 5
            os.fchmod(fd, 0o600)
            assert os.pread(fd, 5, 0) == b"12345"
            assert os.write(fd, b"more") == 4
        finally:
            os.close(fd)
        assert not path.exists()
    finally:
        remove_server_dir(target)


def test_directory_deleted_on_the_server_can_be_made_again_through_the_mount(
    cached_target: Target,
) -> None:
    directory = cached_target.mnt / "d"
    directory.mkdir()
    (directory / "inside").write_bytes(b"x")
    assert os.listdir(directory) == ["inside"]  # listed: the directory cache knows it

    (cached_target.server_path("d") / "inside").unlink()
    cached_target.server_path("d").rmdir()
    directory.mkdir(exist_ok=True)
    (directory / "again").write_bytes(b"y")

    assert os.listdir(cached_target.server_path("d")) == ["again"]
    assert os.listdir(directory) == ["again"]


# -- a file created on the server ----------------------------------------------------------


def test_file_created_on_the_server_shows_within_dir_timeout(sftp_target: Target) -> None:
    """Default dir_timeout (1 s): a listing may hide a name another client adds for at
    most that long, our own changes to the directory notwithstanding."""
    assert os.listdir(sftp_target.mnt) == []  # the mount now knows the directory is empty
    sftp_target.server_path("theirs").write_bytes(b"from another client")
    (sftp_target.mnt / "ours").write_bytes(b"from us")
    time.sleep(1.2)

    assert (sftp_target.mnt / "theirs").read_bytes() == b"from another client"
    assert sorted(os.listdir(sftp_target.mnt)) == ["ours", "theirs"]


def test_dir_timeout_zero_shows_files_created_on_the_server_at_once(
    mount: MountFactory, sshd: LoopbackSshd
) -> None:
    target = mount_sftp(mount, sshd, dir_timeout="0")
    try:
        assert os.listdir(target.mnt) == []
        target.server_path("theirs").write_bytes(b"from another client")
        assert (target.mnt / "theirs").read_bytes() == b"from another client"
    finally:
        remove_server_dir(target)


def test_create_opens_a_file_the_cached_listing_lacks_without_truncating(
    long_cached_target: Target,
) -> None:
    """The listing says the name is free; the create goes to the server all the same."""
    mnt, server = long_cached_target.mnt, long_cached_target.server_path
    assert os.listdir(mnt) == []
    server("theirs").write_bytes(b"kept")
    # The cache hides it (dir_timeout 30 s): proof that the creates below are answered
    # by the server, not from the listing.
    assert not (mnt / "theirs").exists()

    with pytest.raises(FileExistsError):
        os.open(mnt / "theirs", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fd = os.open(mnt / "theirs", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.read(fd, 100) == b"kept"
        assert os.fstat(fd).st_size == 4
    finally:
        os.close(fd)
    assert server("theirs").read_bytes() == b"kept"
    assert (mnt / "theirs").read_bytes() == b"kept"


# -- lookups the server never sees ----------------------------------------------------------

SFTP_SERVER = "/usr/lib/openssh/sftp-server"


@pytest.fixture(scope="module")
def logging_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopbackSshd, Path]]:
    """sshd whose sftp-server logs every request it serves (``lstat name "..."``)."""
    log = tmp_path_factory.mktemp("sftp-log") / "sftp-server.log"
    subsystem = f"{SFTP_SERVER} -e -l VERBOSE 2>>{log}"
    with LoopbackSshd(root=tmp_path_factory.mktemp("sftp-root"), sftp_subsystem=subsystem) as s:
        yield s, log


def lstats_under(log: Path, directory: Path) -> int:
    text = log.read_text(errors="replace") if log.exists() else ""
    return len(re.findall(rf'^lstat name "{re.escape(str(directory))}/', text, re.M))


def create_files(directory: Path, count: int, first: int = 0) -> None:
    for index in range(first, first + count):
        fd = os.open(directory / f"f{index:04}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"x" * (index % 100))
        finally:
            os.close(fd)


@pytest.mark.parametrize(("dir_timeout", "cached"), [(LONG, True), ("0", False)])
def test_files_created_in_a_new_directory_need_no_lookup_on_the_server(
    mount: MountFactory, logging_sshd: tuple[LoopbackSshd, Path], dir_timeout: str, cached: bool
) -> None:
    """mkdir through the mount, then 200 creates with O_EXCL. The server's own log
    counts the LSTATs it served for the new directory's names: none with the directory
    cache; one per file without it (the control that shows the count is real)."""
    server, log = logging_sshd
    target = mount_sftp(mount, server, dir_timeout=dir_timeout)
    try:
        directory = target.mnt / "new"
        directory.mkdir()
        create_files(directory, 200)

        names = sorted(os.listdir(target.server_path("new")))
        assert names == [f"f{index:04}" for index in range(200)]
        assert (target.server_path("new") / "f0199").stat().st_size == 99
        lstats = lstats_under(log, target.server_path("new"))
        assert lstats == 0 if cached else lstats >= 200
    finally:
        remove_server_dir(target)


def test_a_busy_directory_listing_is_renewed_before_it_expires(
    mount: MountFactory, logging_sshd: tuple[LoopbackSshd, Path]
) -> None:
    """Creates spread over several dir_timeouts: the listing is renewed in the
    background while it keeps saving lookups, so they stay off the server; a file
    another client adds still shows once the creates stop and the timeout passes."""
    server, log = logging_sshd
    target = mount_sftp(mount, server, dir_timeout="0.4")
    try:
        directory = target.mnt / "busy"
        directory.mkdir()
        deadline = time.monotonic() + 2.0
        created = 0
        while time.monotonic() < deadline:
            create_files(directory, 10, created)
            created += 10
            time.sleep(0.02)
        target.server_path("busy/theirs").write_bytes(b"t")
        time.sleep(0.5)
        assert (directory / "theirs").read_bytes() == b"t"

        lstats = lstats_under(log, target.server_path("busy"))
        assert created >= 100
        # A lookup reaches the server only when a renewal came late, and for "theirs".
        assert lstats <= created // 10, (lstats, created)
    finally:
        remove_server_dir(target)


def test_enoent_is_what_a_missing_name_gives_through_a_cached_listing(
    long_cached_target: Target,
) -> None:
    """A name the listing lacks is ENOENT for every call that only looks."""
    mnt = long_cached_target.mnt
    assert os.listdir(mnt) == []
    for call in (os.stat, os.lstat, os.readlink, os.rmdir, os.unlink, os.listdir):
        with pytest.raises(FileNotFoundError):
            call(mnt / "missing")
    with pytest.raises(OSError) as raised:
        os.open(mnt / "missing", os.O_RDONLY)
    assert raised.value.errno == errno.ENOENT
