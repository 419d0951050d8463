"""The ``rxfs`` command line: refusals are one line and exit 2 with nothing mounted,
background mounts return once ready, signals and ``rxfs umount`` end mounts cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rxfs.fs.cli import state_dir

if TYPE_CHECKING:
    from conftest import MountFactory, Rxfs


def assert_one_line_error(done: subprocess.CompletedProcess[str], status: int) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{done.stderr}"
    assert lines[0].startswith("rxfs: "), lines[0]
    assert done.returncode == status, f"exit {done.returncode}: {done.stderr}"


def assert_nothing_mounted(rxfs: Rxfs, path: Path) -> None:
    assert not rxfs.is_mounted(path)
    assert rxfs.pids_serving(path) == []


@pytest.fixture
def mountpoint(tmp_path: Path) -> Path:
    path = tmp_path / "mountpoint"
    path.mkdir()
    return path


@pytest.fixture(params=[[], ["-f"]], ids=["background", "foreground"])
def mode(request: pytest.FixtureRequest) -> list[str]:
    flags: list[str] = request.param
    return flags


def test_unknown_scheme_is_refused_in_one_line(
    rxfs: Rxfs, mountpoint: Path, mode: list[str]
) -> None:
    done = rxfs("mount", "bogus://host/dir", str(mountpoint), *mode)
    assert_one_line_error(done, 2)
    assert "bogus" in done.stderr
    assert_nothing_mounted(rxfs, mountpoint)


def test_missing_mount_point_is_refused_in_one_line(
    rxfs: Rxfs, tmp_path: Path, mode: list[str]
) -> None:
    absent = tmp_path / "absent"
    done = rxfs("mount", "memory://", str(absent), *mode)
    assert_one_line_error(done, 2)
    assert not absent.exists()


def test_mount_point_in_use_is_refused_and_the_mount_keeps_serving(
    mount: MountFactory, rxfs: Rxfs, mode: list[str]
) -> None:
    first = mount("memory://")
    (first.path / "f").write_bytes(b"first mount")
    done = rxfs("mount", "memory://", str(first.path), *mode)
    assert_one_line_error(done, 2)
    assert rxfs.pids_serving(first.path) == [first.pid]
    assert (first.path / "f").read_bytes() == b"first mount"


def test_unknown_mount_option_is_refused_in_one_line(
    rxfs: Rxfs, mountpoint: Path, mode: list[str]
) -> None:
    done = rxfs("mount", "memory://", str(mountpoint), "-o", "no_such_option=1", *mode)
    assert_one_line_error(done, 2)
    assert "no_such_option" in done.stderr
    assert_nothing_mounted(rxfs, mountpoint)


def test_bad_option_value_is_refused_naming_the_option(
    rxfs: Rxfs, mountpoint: Path, mode: list[str]
) -> None:
    done = rxfs("mount", "memory://", str(mountpoint), "-o", "size=lots", *mode)
    assert_one_line_error(done, 2)
    assert "size" in done.stderr
    assert_nothing_mounted(rxfs, mountpoint)


def test_unreachable_server_fails_at_runtime_with_status_1(rxfs: Rxfs, mountpoint: Path) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    done = rxfs("mount", "sftp://nobody@127.0.0.1:1/", str(mountpoint))
    assert_one_line_error(done, 1)
    assert_nothing_mounted(rxfs, mountpoint)


def test_umount_of_a_directory_that_is_not_mounted_is_refused(
    rxfs: Rxfs, mountpoint: Path
) -> None:
    done = rxfs("umount", str(mountpoint))
    assert done.returncode != 0
    assert_one_line_error(done, done.returncode)


def test_backends_lists_memory_and_sftp(rxfs: Rxfs) -> None:
    done = rxfs("backends")
    assert done.returncode == 0, done.stderr
    words = done.stdout.replace(":", " ").split()
    assert "memory" in words
    assert "sftp" in words


def test_help_describes_the_commands(rxfs: Rxfs) -> None:
    done = rxfs("--help")
    assert done.returncode == 0, done.stderr
    for command in ("mount", "umount", "backends"):
        assert command in done.stdout
    done = rxfs("mount", "--help")
    assert done.returncode == 0, done.stderr
    for flag in ("-f", "-o", "--debug"):
        assert flag in done.stdout


def test_version_names_rxfs_and_what_it_runs_on(rxfs: Rxfs) -> None:
    done = rxfs("--version")
    assert done.returncode == 0, done.stderr
    versions = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    assert list(versions) == [
        "rxfs",
        "python",
        "pyfuse3",
        "libfuse",
        "trio",
        "paramiko",
        "openssh",
    ]
    for name in ("rxfs", "pyfuse3", "libfuse", "trio", "paramiko"):
        assert re.match(r"\d+\.\d+", versions[name]), (name, versions[name])
    assert versions["openssh"].startswith("OpenSSH_"), versions["openssh"]


def test_mount_help_lists_the_options_of_every_backend(rxfs: Rxfs) -> None:
    """rxfs mount --help and rxfs backends say what each -o name means, per backend."""
    for command in (["mount", "--help"], ["backends"]):
        done = rxfs(*command)
        assert done.returncode == 0, done.stderr
        text = done.stdout
        for heading, names in [
            ("for every backend:", ["attr_timeout", "dirty_limit", "allow_other", "ro"]),
            ("(fstab, systemd, mount -t rxfs):", ["_netdev", "x-*", "nosuid"]),
            ("memory:// options:", ["size"]),
            ("sftp:// options:", ["IdentityFile", "StrictHostKeyChecking", "transport"]),
        ]:
            section = text.split(heading, 1)[1].split("\n\n", 1)[0]
            for name in names:
                # A line of its own, or one of a list ("_netdev, nofail, ...").
                pattern = rf"^  (.*, )?{re.escape(name)}(,|$)"
                assert re.search(pattern, section, re.M), (command, name)


def test_url_first_is_mount_as_mount_fuse3_runs_it(rxfs: Rxfs, mountpoint: Path) -> None:
    """mount.fuse3 runs 'rxfs URL MOUNTPOINT -o OPTIONS': a background mount, with the
    options fstab and mount.fuse3 add taken or ignored."""
    done = rxfs("memory://", str(mountpoint), "-o", "_netdev,noauto,x-systemd.automount,dev,suid")
    assert done.returncode == 0, done.stderr
    try:
        assert rxfs.is_mounted(mountpoint)
        (mountpoint / "f").write_text("via mount.fuse3's argument order")
    finally:
        done = rxfs("umount", str(mountpoint))
    assert done.returncode == 0, done.stderr
    done = rxfs("memory://", str(mountpoint), "-o", "nope")
    assert_one_line_error(done, 2)
    assert_nothing_mounted(rxfs, mountpoint)


def test_ssh_error_says_ssh_once(rxfs: Rxfs, mountpoint: Path) -> None:
    done = rxfs("mount", "sftp://nobody@127.0.0.1:1/", str(mountpoint), "-o", "transport=openssh")
    assert_one_line_error(done, 1)
    assert "ssh: connect to host 127.0.0.1 port 1" in done.stderr, done.stderr
    assert "ssh: ssh:" not in done.stderr, done.stderr


def test_failed_background_mount_logs_why(rxfs: Rxfs, mountpoint: Path) -> None:
    """The reason goes to the mount's log as well as to stderr."""
    log = state_dir() / f"{str(mountpoint).strip('/').replace('/', '_')}.log"
    done = rxfs("mount", "sftp://nobody@127.0.0.1:1/", str(mountpoint), "-o", "transport=openssh")
    assert_one_line_error(done, 1)
    reason = done.stderr.strip().removeprefix("rxfs: ")
    try:
        assert f"ERROR rxfs: mount failed: {reason}" in log.read_text(), log.read_text()
    finally:
        log.unlink(missing_ok=True)


def test_background_mount_is_ready_when_the_command_returns(
    mount: MountFactory, rxfs: Rxfs
) -> None:
    # The fixture asserts the kernel lists the mount the moment `rxfs mount` exits 0.
    memory = mount("memory://", foreground=False)
    (memory.path / "f").write_bytes(b"at once")
    assert (memory.path / "f").read_bytes() == b"at once"
    done = rxfs("umount", str(memory.path))
    assert done.returncode == 0, done.stderr
    assert_nothing_mounted(rxfs, memory.path)
    assert not rxfs.process_alive(memory.pid)


def test_umount_flushes_and_waits_for_the_mount_process(mount: MountFactory, rxfs: Rxfs) -> None:
    memory = mount("memory://")
    with (memory.path / "f").open("wb") as file:
        file.write(b"x" * 100_000)
    done = rxfs("umount", str(memory.path))
    assert done.returncode == 0, done.stderr
    assert memory.process is not None
    assert memory.process.poll() == 0, "rxfs umount returned before the mount process ended"
    assert not rxfs.is_mounted(memory.path)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_to_the_foreground_process_unmounts_cleanly(
    mount: MountFactory, rxfs: Rxfs, signum: signal.Signals
) -> None:
    memory = mount("memory://")
    (memory.path / "f").write_bytes(b"bytes to flush")
    os.kill(memory.pid, signum)
    assert memory.wait_exit(), f"rxfs mount -f ignored {signum.name}"
    assert memory.process is not None
    assert memory.process.returncode == 0, memory.stderr()
    assert not rxfs.is_mounted(memory.path)
    assert "Traceback" not in memory.stderr()


def test_umount_cleans_up_after_a_killed_mount_and_the_point_mounts_again(
    mount: MountFactory, rxfs: Rxfs
) -> None:
    killed = mount("memory://")
    killed.kill()
    assert rxfs.is_mounted(killed.path), "a SIGKILLed FUSE daemon leaves its mount behind"
    done = rxfs("umount", str(killed.path))
    # Whatever the killed process held is gone with it: umount cannot say all landed.
    assert done.returncode == 1, done.stderr
    assert "had died" in done.stderr
    assert not rxfs.is_mounted(killed.path)
    again = mount("memory://", mountpoint=killed.path)
    (again.path / "f").write_bytes(b"mounted again")
    assert (again.path / "f").read_bytes() == b"mounted again"


def _super_options(path: Path) -> set[str]:
    """The mount's super options as /proc/self/mountinfo lists them (after " - ")."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4] == target:
                return set(fields[fields.index("-") + 3].split(","))
    raise AssertionError(f"{path} is not in /proc/self/mountinfo")


@pytest.mark.parametrize(
    ("options", "kernel_checks"),
    [({}, False), ({"default_permissions": None}, True), ({"allow_other": None}, True)],
    ids=["default", "default_permissions", "allow_other"],
)
def test_the_kernel_checks_permissions_only_when_asked_or_shared(
    mount: MountFactory, options: dict[str, str | None], kernel_checks: bool
) -> None:
    memory = mount("memory://", options)
    assert ("default_permissions" in _super_options(memory.path)) is kernel_checks


def test_the_mount_reads_ahead_a_mebibyte(mount: MountFactory) -> None:
    """Root may raise the mount's read-ahead (128 KiB by default): sequential reads then
    arrive as 1 MiB FUSE READs, an eighth of the requests."""
    memory = mount("memory://")
    device = os.stat(memory.path).st_dev
    setting = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    deadline = time.monotonic() + 10
    while setting.read_text().strip() != "1024" and time.monotonic() < deadline:
        time.sleep(0.05)  # raised right after FUSE INIT, in the background
    assert setting.read_text().strip() == "1024"


def test_the_mount_keeps_two_background_requests_outstanding(mount: MountFactory) -> None:
    """Root may lower the kernel's outstanding background requests (12 by default): a
    writer past the dirty limit then pins two 1 MiB WRITEs in the mount process, not 12
    (issue 13, the memory of a 2 GiB copy)."""
    memory = mount("memory://")
    device = os.stat(memory.path).st_dev
    # The kernel's own dev_t encoding names the connection (MINORBITS = 20).
    setting = Path(f"/sys/fs/fuse/connections/{os.major(device) << 20 | os.minor(device)}")
    setting /= "max_background"
    deadline = time.monotonic() + 10
    while setting.read_text().strip() != "2" and time.monotonic() < deadline:
        time.sleep(0.05)  # lowered right after FUSE INIT, in the background
    assert setting.read_text().strip() == "2"
