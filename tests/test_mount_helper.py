"""rxfs through mount(8), fstab, mount.fuse3 and systemd, for real.

mount(8) runs ``/sbin/mount.rxfs`` for ``-t rxfs`` and ``/sbin/mount.fuse.rxfs`` (or
failing that mount.fuse3) for ``-t fuse.rxfs``, with PATH and HOME cleared; so these
tests link the helpers into /sbin with ``rxfs install-mount-helper`` and remove the links
after (what was there before is put back). mount.fuse3 runs ``rxfs URL MOUNTPOINT -o
...`` through /bin/sh: that path is tested by running mount.fuse3 itself with the venv on
PATH. Each mount is checked to be ready when the command returns, served by a process
that went to the background, and gone with its process after umount(8).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rxfs.fs._mounthelper import IGNORED_OPTIONS, KERNEL_FLAGS
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.conftest import COMMAND_TIMEOUT, is_mounted, process_alive, require_fuse, wait_until
from tests.integration.conftest import fresh_server_dir
from tests.support.checklogs import expected_patterns, unexpected_lines
from tests.support.sshd import sshd

if TYPE_CHECKING:
    from tests.conftest import Rxfs

__all__ = ["sshd"]

pytestmark = pytest.mark.fuse

SBIN = Path("/sbin")
HELPERS = [SBIN / "mount.rxfs", SBIN / "mount.fuse.rxfs"]
VENV_BIN = Path(sys.executable).parent
# mount(8) clears the environment's PATH and HOME; the helper's state (pid, log) then
# goes where a root without XDG_RUNTIME_DIR keeps it.
STATE_DIR = Path(f"/tmp/rxfs-{os.getuid()}")
EXIT_TIMEOUT = 20.0
# The fstab line the README shows, options and all.
FSTAB_OPTIONS = "_netdev,noauto,x-systemd.automount,nofail,allow_other"


def _state_file(mountpoint: Path, suffix: str) -> Path:
    return STATE_DIR / f"{str(mountpoint).strip('/').replace('/', '_')}.{suffix}"


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        env=env,
    )


@pytest.fixture
def mountpoint(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory; whatever is still mounted there after the test is unmounted,
    its process ended, and its log checked."""
    require_fuse()
    if os.geteuid() != 0:
        pytest.fail("mount(8) tests need root (CI runs as root)")
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    problems = []
    pid_file = _state_file(path, "pid")
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    if is_mounted(path):
        problems.append(f"{path} still mounted after the test")
        _run(["umount", "-l", str(path)])
    if pid is not None and not wait_until(lambda: not process_alive(pid), EXIT_TIMEOUT):
        os.kill(pid, 9)
        problems.append(f"mount process {pid} still ran {EXIT_TIMEOUT:g} s after umount")
    log = _state_file(path, "log")
    text = log.read_text(errors="replace") if log.exists() else ""
    log.unlink(missing_ok=True)
    if "Traceback" in text:
        problems.append(f"the mount process printed a traceback:\n{text}")
    unexpected = unexpected_lines(text, expected_patterns(request.node))
    if unexpected:
        problems.append("the mount process logged:\n" + "\n".join(unexpected))
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def helpers_installed(rxfs: Rxfs) -> Iterator[None]:
    """/sbin/mount.rxfs and /sbin/mount.fuse.rxfs linked to this venv's mount.rxfs, for
    the test; what was there before is put back."""
    saved = {link: os.readlink(link) for link in HELPERS if link.is_symlink()}
    for link in HELPERS:
        if link.exists() and not link.is_symlink():
            pytest.fail(f"{link} is not a link: not touching it")
        link.unlink(missing_ok=True)
    try:
        done = rxfs("install-mount-helper")
        assert done.returncode == 0, done.stderr
        for link in HELPERS:
            assert link.resolve() == (VENV_BIN / "mount.rxfs").resolve(), done.stdout
        yield
    finally:
        for link in HELPERS:
            link.unlink(missing_ok=True)
            if link in saved:
                link.symlink_to(saved[link])


def _check_served_in_background(path: Path, fstype: str = "fuse.rxfs") -> int:
    """The mount is there and answering the moment mount returned, served by a process
    of its own (not the one mount(8) waited for); returns its pid."""
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        types = [line.split(" - ")[1].split()[0] for line in mountinfo if f" {path} " in line]
    assert types == [fstype], types
    pid = int(_state_file(path, "pid").read_text())
    assert process_alive(pid)
    (path / "probe").write_text("ready")
    assert (path / "probe").read_text() == "ready"
    return pid


def _umount(path: Path, pid: int) -> None:
    done = _run(["umount", str(path)])
    assert done.returncode == 0, done.stderr
    assert not is_mounted(path)
    assert wait_until(lambda: not process_alive(pid), EXIT_TIMEOUT), "process outlived umount"


def test_mount_fuse3_runs_rxfs_url_first(mountpoint: Path) -> None:
    """mount.fuse3 (what mount -t fuse.rxfs falls back to) runs 'rxfs URL MOUNTPOINT -o
    OPTIONS' through /bin/sh and PATH, with fstab's options and its own dev,suid."""
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    env.pop("XDG_RUNTIME_DIR", None)
    argv = ["/sbin/mount.fuse3", "memory://", str(mountpoint), "-t", "fuse.rxfs"]
    done = _run([*argv, "-o", f"{FSTAB_OPTIONS},rw,nosuid,noexec"], env)
    assert done.returncode == 0, done.stderr
    pid = _check_served_in_background(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        flags = next(line for line in mountinfo if f" {mountpoint} " in line).split()[5]
    assert {"rw", "nosuid", "noexec"} <= set(flags.split(",")), flags
    _umount(mountpoint, pid)


@pytest.fixture
def rxfs_on_default_path() -> Iterator[None]:
    """No /sbin/mount.fuse.rxfs, and /usr/local/sbin/rxfs linked to this venv's rxfs:
    what mount -t fuse.rxfs needs to go through mount.fuse3 (which runs 'rxfs' on the
    shell's default PATH: mount(8) clears PATH). Both put back as they were after."""
    fuse_helper, launcher = SBIN / "mount.fuse.rxfs", Path("/usr/local/sbin/rxfs")
    for link in (fuse_helper, launcher):
        if link.exists() and not link.is_symlink():
            pytest.fail(f"{link} is not a link: not touching it")
    saved = {link: os.readlink(link) for link in (fuse_helper, launcher) if link.is_symlink()}
    fuse_helper.unlink(missing_ok=True)
    launcher.unlink(missing_ok=True)
    launcher.symlink_to(VENV_BIN / "rxfs")
    try:
        yield
    finally:
        launcher.unlink(missing_ok=True)
        for link, target in saved.items():
            link.symlink_to(target)


@pytest.mark.usefixtures("rxfs_on_default_path")
def test_mount_t_fuse_rxfs_through_mount_fuse3(mountpoint: Path) -> None:
    done = _run(["mount", "-t", "fuse.rxfs", "memory://", str(mountpoint), "-o", FSTAB_OPTIONS])
    assert done.returncode == 0, done.stderr
    pid = _check_served_in_background(mountpoint)
    _umount(mountpoint, pid)


@pytest.mark.usefixtures("helpers_installed")
@pytest.mark.parametrize("fstype", ["rxfs", "fuse.rxfs"])
def test_mount_t_rxfs_sftp(fstype: str, mountpoint: Path, sshd: LoopbackSshd) -> None:
    """mount -t rxfs / -t fuse.rxfs of sftp:// against the loopback sshd: the bytes
    written land on the server, umount(8) flushes and ends the process."""
    server_dir, name = fresh_server_dir(sshd)
    options = ",".join(f"{k}={v}" for k, v in sshd.mount_options().items())
    done = _run(
        [
            "mount",
            "-t",
            fstype,
            sshd.url(name),
            str(mountpoint),
            "-o",
            f"{FSTAB_OPTIONS},{options}",
        ]
    )
    assert done.returncode == 0, done.stderr
    pid = _check_served_in_background(mountpoint)
    (mountpoint / "data").write_bytes(b"x" * 100_000)
    _umount(mountpoint, pid)
    assert (server_dir / "data").read_bytes() == b"x" * 100_000
    assert (server_dir / "probe").read_text() == "ready"


@pytest.mark.usefixtures("helpers_installed")
def test_fstab_line_mounts(tmp_path: Path, mountpoint: Path, sshd: LoopbackSshd) -> None:
    """The README's fstab line, through mount(8) with that fstab (mount -T FILE DIR)."""
    server_dir, name = fresh_server_dir(sshd)
    options = ",".join(f"{k}={v}" for k, v in sshd.mount_options().items())
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{sshd.url(name)} {mountpoint} rxfs {FSTAB_OPTIONS},{options} 0 0\n")
    done = _run(["mount", "-T", str(fstab), str(mountpoint)])
    assert done.returncode == 0, done.stderr
    pid = _check_served_in_background(mountpoint)
    _umount(mountpoint, pid)
    assert (server_dir / "probe").read_text() == "ready"


@pytest.mark.usefixtures("helpers_installed")
def test_mount_t_rxfs_read_only(mountpoint: Path) -> None:
    done = _run(["mount", "-t", "rxfs", "-o", "ro", "memory://", str(mountpoint)])
    assert done.returncode == 0, done.stderr
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        flags = next(line for line in mountinfo if f" {mountpoint} " in line).split()[5]
    assert "ro" in flags.split(","), flags
    with pytest.raises(OSError, match="Read-only file system"):
        (mountpoint / "new").write_text("no")
    pid = int(_state_file(mountpoint, "pid").read_text())
    _umount(mountpoint, pid)


@pytest.mark.usefixtures("helpers_installed")
@pytest.mark.expect_log(r"^mount failed: -o size=lots")  # the mount process's log says why
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("no_such_option", r"rxfs: unknown option -o no_such_option for memory://"),
        ("size=lots", r"rxfs: -o size=lots: expected a size"),
    ],
)
def test_mount_t_rxfs_refuses_bad_options(mountpoint: Path, options: str, message: str) -> None:
    done = _run(["mount", "-t", "rxfs", "-o", options, "memory://", str(mountpoint)])
    assert done.returncode != 0
    assert re.search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert not is_mounted(mountpoint)


def test_every_option_mount8_may_pass_mounts(mountpoint: Path, rxfs: Rxfs) -> None:
    """Each flag rxfs hands to the kernel is one libfuse takes, and each one it ignores
    is ignored: one mount with all of them."""
    flags = sorted(KERNEL_FLAGS - {"rw", "dev", "suid", "exec", "async", "atime"})
    names = [*flags, *sorted(IGNORED_OPTIONS), "x-systemd.automount", "comment=systemd.x"]
    done = rxfs("mount", "memory://", str(mountpoint), "-o", ",".join(names))
    assert done.returncode == 0, done.stderr
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
            line = next(line for line in mountinfo if f" {mountpoint} " in line)
        assert {"nodev", "nosuid", "noexec", "noatime"} <= set(line.split()[5].split(","))
    finally:
        done = rxfs("umount", str(mountpoint))
    assert done.returncode == 0, done.stderr
    for positive in ("rw", "dev", "suid", "exec", "async", "atime"):
        done = rxfs("mount", "memory://", str(mountpoint), "-o", positive)
        assert done.returncode == 0, (positive, done.stderr)
        assert rxfs("umount", str(mountpoint)).returncode == 0


def test_helper_fake_mount_checks_and_mounts_nothing(mountpoint: Path) -> None:
    """mount -f: the helper checks its arguments and mounts nothing."""
    helper = str(VENV_BIN / "mount.rxfs")
    done = _run([helper, "memory://", str(mountpoint), "-f", "-o", "size=1G"])
    assert done.returncode == 0, done.stderr
    assert not is_mounted(mountpoint)
    done = _run([helper, "memory://", str(mountpoint), "-f", "-o", "no_such_option"])
    assert done.returncode == 2
    assert done.stderr.startswith("rxfs: unknown option -o no_such_option"), done.stderr
    done = _run([helper, "memory://", str(mountpoint), "-N", "1234"])
    assert done.returncode == 2
    assert "-N" in done.stderr and "not supported" in done.stderr, done.stderr
    assert not is_mounted(mountpoint)


def test_install_mount_helper_leaves_foreign_files_alone(tmp_path: Path, rxfs: Rxfs) -> None:
    (tmp_path / "mount.rxfs").write_text("#!/bin/sh\n")
    done = rxfs("install-mount-helper", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert "not an rxfs mount helper" in done.stderr, done.stderr
    assert (tmp_path / "mount.rxfs").read_text() == "#!/bin/sh\n"
    (tmp_path / "mount.rxfs").unlink()
    done = rxfs("install-mount-helper", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mount.fuse.rxfs").resolve() == (VENV_BIN / "mount.rxfs").resolve()
    done = rxfs("install-mount-helper", "--dir", str(tmp_path), "--remove")
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []


# -- systemd: Type=notify ---------------------------------------------------------------


@dataclass
class NotifySocket:
    """What systemd listens on for a Type=notify service: ``name`` is $NOTIFY_SOCKET."""

    name: str
    sock: socket.socket

    def received(self) -> dict[str, str]:
        datagram = self.sock.recv(4096)
        return dict(line.split("=", 1) for line in datagram.decode().splitlines())


@pytest.fixture(params=["path", "abstract"])
def notify_socket(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    """A path, or @name for an abstract socket, as systemd may set either."""
    name = str(tmp_path / "notify") if request.param == "path" else f"@rxfs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:] if name.startswith("@") else name)
        sock.settimeout(COMMAND_TIMEOUT)
        yield NotifySocket(name, sock)


def test_foreground_mount_tells_systemd_when_ready(
    mountpoint: Path, notify_socket: NotifySocket
) -> None:
    """rxfs mount -f under Type=notify: READY=1 once the mount answers."""
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.name}
    argv = [str(VENV_BIN / "rxfs"), "mount", "-f", "memory://", str(mountpoint)]
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env) as process:
        try:
            states = notify_socket.received()
            assert states["READY"] == "1"
            assert is_mounted(mountpoint)
            (mountpoint / "f").write_text("ok")
        finally:
            process.send_signal(2)
            assert process.wait(EXIT_TIMEOUT) == 0


def test_background_mount_tells_systemd_its_main_pid(
    mountpoint: Path, notify_socket: NotifySocket
) -> None:
    """A forking mount under Type=notify: READY=1 and MAINPID, the process that serves
    (the one systemd must watch), once the mount answers."""
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.name}
    env.pop("XDG_RUNTIME_DIR", None)
    done = _run([str(VENV_BIN / "rxfs"), "mount", "memory://", str(mountpoint)], env)
    assert done.returncode == 0, done.stderr
    states = notify_socket.received()
    assert states["READY"] == "1"
    pid = int(_state_file(mountpoint, "pid").read_text())
    assert int(states["MAINPID"]) == pid
    _umount(mountpoint, pid)


def test_an_automount_point_is_mounted_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """x-systemd.automount: systemd mounts autofs on the mount point and, at the first
    access, runs mount(8), whose mount goes on top. This kernel may lack autofs, so the
    mount table says so here; any other mount there is still refused."""
    from rxfs.fs import cli  # noqa: PLC0415 - the function under test
    from rxfs.fs._mounttable import MountEntry  # noqa: PLC0415

    listed: dict[str, MountEntry] = {}
    monkeypatch.setattr(cli, "mount_entry", listed.get)
    point = str(tmp_path)
    listed[point] = MountEntry(point, "autofs", "0:99", "systemd-1")
    assert cli._check_mountpoint(point) == point
    listed[point] = MountEntry(point, "fuse.sshfs", "0:98", "me@host:")
    with pytest.raises(cli.UsageError, match="already a mount point"):
        cli._check_mountpoint(point)
