"""Real mounts for the tests: ``rxfs mount`` run as a subprocess, the way a user runs it.

``mount(url, options)`` mounts any URL (memory:// here, sftp:// from tests/sftp) on a
fresh directory, waits until the kernel lists the mount, and at teardown unmounts it and
checks that the mount process exited cleanly and never printed a traceback. Missing FUSE
fails the test: a file system whose mount tests skip on a broken machine is untested.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

# check_logs (autouse) and pytest_configure (its marker) are found by pytest here.
from tests.support.checklogs import (  # noqa: F401
    check_logs,
    expected_patterns,
    pytest_configure,
    unexpected_lines,
)

# One loopback smbd for the whole session, for tests/smb, tests/integration's smb://
# target and the conformance run alike: each starts its own directory of the share.
from tests.support.smbd import smbd  # noqa: F401

RXFS = Path(sys.executable).with_name("rxfs")
MOUNT_TIMEOUT = 15.0
EXIT_TIMEOUT = 15.0
COMMAND_TIMEOUT = 60.0
# A test that blocks on its mount this long gets the mount process killed, so that every
# blocked system call returns ENOTCONN and the test fails instead of hanging CI.
WATCHDOG_TIMEOUT = 180.0

# What the mount process logs when one of its own threads makes a request to its mount.
OWN_REQUEST_MARK = "request to its own mount"

MountOptions = Mapping[str, str | None] | Iterable[str]


def require_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: the real-mount tests need FUSE")
    if shutil.which("fusermount3") is None:
        pytest.fail("fusermount3 is missing: apt-get install fuse3")


def _unescape(mountinfo_field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo (octal).
    return mountinfo_field.encode().decode("unicode_escape").encode("latin-1").decode()


def mount_fstype(path: Path) -> str | None:
    """The type of the file system mounted exactly at ``path`` (``fuse.rxfs`` ...).

    Reads /proc/self/mountinfo instead of stat()ing the mount point: a stat goes through
    the file system under test and would hang with it.
    """
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if _unescape(fields[4]) == target:
                found = fields[fields.index("-") + 1]  # the last one listed is visible
    return found


def is_mounted(path: Path) -> bool:
    return mount_fstype(path) is not None


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie has exited and only waits for its parent."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in {"Z", "X"}


def pids_serving(path: Path) -> list[int]:
    """PIDs of live ``rxfs mount`` processes whose command line names ``path``."""
    target = os.path.realpath(path)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = [a.decode(errors="replace") for a in cmdline.read().split(b"\0")]
        except OSError:
            continue
        serves = "mount" in argv and target in argv and any("rxfs" in a for a in argv[:3])
        if serves and process_alive(int(entry)):
            found.append(int(entry))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def option_args(options: MountOptions) -> list[str]:
    if isinstance(options, Mapping):
        items = [k if v is None else f"{k}={v}" for k, v in options.items()]
    else:
        items = list(options)
    return ["-o", ",".join(items)] if items else []


def rxfs_argv(*args: str) -> list[str]:
    """The venv's console script, so the tests run the entry point users get."""
    if not RXFS.exists():
        pytest.fail(f"{RXFS} is missing: install rxfs into this venv (see README.md)")
    return [str(RXFS), *args]


class Rxfs:
    """Runs the ``rxfs`` command line; ``rxfs("umount", path)`` -> CompletedProcess."""

    def __call__(
        self, *args: str, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            rxfs_argv(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    is_mounted = staticmethod(is_mounted)
    pids_serving = staticmethod(pids_serving)
    process_alive = staticmethod(process_alive)


@dataclass
class Mount:
    """One running ``rxfs mount``; ``pid`` is the process serving the mount."""

    url: str
    path: Path
    pid: int
    log: Path
    process: subprocess.Popen[bytes] | None = None  # None for a background mount
    watchdog_fired: bool = field(default=False, init=False)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def mounted(self) -> bool:
        return is_mounted(self.path)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return process_alive(self.pid)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> bool:
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return wait_until(lambda: not process_alive(self.pid), timeout)

    def kill(self) -> None:
        """SIGKILL by PID, for a mount process that no longer answers (or a test)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.wait_exit(5)


class MountFactory(Protocol):
    def __call__(
        self,
        url: str,
        options: MountOptions = (),
        *,
        foreground: bool = True,
        mountpoint: Path | None = None,
    ) -> Mount: ...


class _Mounter:
    def __init__(self, tmp_path: Path, expected: list[re.Pattern[str]]) -> None:
        self._tmp_path = tmp_path
        self._expected = expected
        self._mounts: list[Mount] = []
        self._timers: list[threading.Timer] = []

    def __call__(
        self,
        url: str,
        options: MountOptions = (),
        *,
        foreground: bool = True,
        mountpoint: Path | None = None,
    ) -> Mount:
        require_fuse()
        n = len(self._mounts)
        path = mountpoint or self._tmp_path / f"mnt{n}"
        path.mkdir(exist_ok=True)
        log = self._tmp_path / f"rxfs-mount{n}.log"
        argv = rxfs_argv("mount", url, str(path), *option_args(options))
        if foreground:
            mount = self._start_foreground(url, path, log, argv)
        else:
            mount = self._start_background(url, path, log, argv)
        self._mounts.append(mount)
        self._arm_watchdog(mount)
        return mount

    def _start_foreground(self, url: str, path: Path, log: Path, argv: list[str]) -> Mount:
        with log.open("wb") as err:
            process = subprocess.Popen(
                [*argv, "-f"], stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        mount = Mount(url, path, process.pid, log, process)
        if not wait_until(lambda: is_mounted(path) or not mount.alive(), MOUNT_TIMEOUT):
            mount.kill()
            pytest.fail(f"{url} not mounted after {MOUNT_TIMEOUT} s:\n{mount.stderr()}")
        if not mount.alive():
            pytest.fail(f"rxfs mount -f exited with {process.returncode}:\n{mount.stderr()}")
        return mount

    def _start_background(self, url: str, path: Path, log: Path, argv: list[str]) -> Mount:
        with log.open("wb") as err:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        if done.returncode != 0:
            pytest.fail(f"rxfs mount exited with {done.returncode}:\n{log.read_text()}")
        # The contract: without -f, rxfs mount returns only once the mount is ready.
        assert is_mounted(path), f"rxfs mount returned 0 but {path} is not mounted"
        pids = pids_serving(path)
        assert len(pids) == 1, f"expected one process serving {path}, found {pids}"
        return Mount(url, path, pids[0], log)

    def _arm_watchdog(self, mount: Mount) -> None:
        def fire() -> None:
            if mount.alive():
                mount.watchdog_fired = True
                mount.kill()

        timer = threading.Timer(WATCHDOG_TIMEOUT, fire)
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def cleanup(self) -> list[str]:
        """Unmount whatever is still mounted; return what went wrong."""
        for timer in self._timers:
            timer.cancel()
        return [problem for mount in self._mounts for problem in _teardown(mount, self._expected)]


def _teardown(mount: Mount, expected: list[re.Pattern[str]]) -> list[str]:
    problems = []
    if mount.watchdog_fired:
        problems.append(f"{mount.url}: the test blocked for {WATCHDOG_TIMEOUT} s; killed")
    if mount.mounted():
        done = subprocess.run(
            ["fusermount3", "-u", str(mount.path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            problems.append(f"fusermount3 -u {mount.path}: {done.stderr.strip()}")
            subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], timeout=30, check=False)
    if not mount.wait_exit():
        mount.kill()
        problems.append(
            f"{mount.url}: process {mount.pid} still ran {EXIT_TIMEOUT} s after unmount"
        )
    elif mount.process is not None and mount.process.returncode not in (0, -signal.SIGKILL):
        problems.append(f"{mount.url}: rxfs mount -f exited with {mount.process.returncode}")
    if OWN_REQUEST_MARK in mount.stderr():
        # DESIGN §11: such a request wedges the mount if a kill -9 lands during it.
        problems.append(f"{mount.url}: the mount process made a request to its own mount")
    if "Traceback" in mount.stderr():
        problems.append(f"{mount.url}: the mount process printed a traceback:\n{mount.stderr()}")
    unexpected = unexpected_lines(mount.stderr(), expected)
    if unexpected:
        problems.append(
            f"{mount.url}: the mount process logged, unexpected (add @pytest.mark.expect_log "
            "if on purpose):\n" + "\n".join(unexpected[:20])
        )
    return problems


@pytest.fixture
def mount(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MountFactory]:
    """``mount(url, options, foreground=True)`` -> Mount; unmounted and checked after."""
    mounter = _Mounter(tmp_path, expected_patterns(request.node))
    yield mounter
    problems = mounter.cleanup()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def memory_mount(mount: MountFactory) -> Mount:
    return mount("memory://")


@pytest.fixture
def mnt(memory_mount: Mount) -> Path:
    """The root directory of a fresh memory:// mount."""
    return memory_mount.path


@pytest.fixture
def rxfs() -> Rxfs:
    return Rxfs()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whatever mounts is a FUSE test, whether or not its author remembered the marker.
    for item in items:
        if "mount" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fuse)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # FUSE and sshd tests fail, never skip, when the machine lacks what they need
    # (DESIGN §8): a skip would turn CI green with the file system untested.
    report = yield
    needs = {"fuse", "sshd"} & {mark.name for mark in item.iter_markers()}
    if report.skipped and needs and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"a {'/'.join(sorted(needs))} test must not skip: {report.longrepr}"
    return report
