"""Mount rxfs and sshfs as subprocesses, watch their memory, and take them down again.

Everything here acts on processes this harness started, by PID, and on its own mount
points; nothing looks a process up by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MOUNT_TIMEOUT = 30.0
UNMOUNT_TIMEOUT = 120.0  # rxfs flushes everything before it exits
RSS_POLL_INTERVAL = 0.05

RXFS = Path(sys.executable).with_name("rxfs")


class BenchmarkError(RuntimeError):
    """The run cannot go on: a mount failed, a workload hung, or bytes came out wrong."""


@dataclass(frozen=True)
class SshEndpoint:
    """Where and how to log in: the sshd itself or the fault proxy in front of it."""

    user: str
    host: str
    port: int
    identity_file: Path
    known_hosts: Path


@dataclass
class MountedFs:
    """One mount process; ``server_dir`` is where its files land on the server, if any."""

    system: str  # "rxfs" or "sshfs"
    path: Path
    process: subprocess.Popen[bytes]
    log: Path
    server_dir: Path | None
    helpers: list[int] = field(default_factory=list)  # ssh processes, counted with it

    @property
    def pids(self) -> list[int]:
        return [self.process.pid, *self.helpers]

    def kill(self) -> None:
        """SIGKILL our processes: every system call blocked on the mount fails at once."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def rxfs_command(url: str, mountpoint: Path, options: Mapping[str, str]) -> list[str]:
    if not RXFS.exists():
        raise BenchmarkError(f"{RXFS} is missing: install rxfs into this venv (README.md)")
    argv = [str(RXFS), "mount", "-f", url, str(mountpoint)]
    if options:
        argv += ["-o", ",".join(f"{k}={v}" for k, v in options.items())]
    return argv


def sshfs_command(endpoint: SshEndpoint, remote_dir: Path, mountpoint: Path) -> list[str]:
    """sshfs as a user runs it: its defaults (no writeback cache, cache=yes, one
    connection, async writes with readahead), plus what it needs to log in here."""
    options = [
        f"IdentityFile={endpoint.identity_file}",
        f"UserKnownHostsFile={endpoint.known_hosts}",
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        f"Port={endpoint.port}",
    ]
    remote = f"{endpoint.user}@{endpoint.host}:{remote_dir}"
    return ["sshfs", "-f", remote, str(mountpoint), "-o", ",".join(options)]


def ssh_helper_marker(endpoint: SshEndpoint) -> list[str]:
    """Arguments that single out the ssh process sshfs starts for ``endpoint``.

    sshfs detaches ssh (its parent becomes init), so it is found as a process started no
    earlier than sshfs whose command line names our key and port.
    """
    return [f"-oIdentityFile={endpoint.identity_file}", f"-oPort={endpoint.port}"]


def mount(
    system: str,
    argv: list[str],
    mountpoint: Path,
    log: Path,
    server_dir: Path | None,
    *,
    helper_marker: list[str] | None = None,
) -> MountedFs:
    """Start a foreground mount process and wait until the kernel lists the mount."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    mounted = MountedFs(system, mountpoint, process, log, server_dir)
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not is_mounted(mountpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            unmount(mounted)
            raise BenchmarkError(
                f"{system} did not mount {mountpoint} (exit {process.returncode}):\n"
                f"{mounted.log_text()}"
            )
        time.sleep(0.05)
    if helper_marker:
        started = _start_time(process.pid)
        mounted.helpers = [
            pid
            for pid in _pids()
            if all(arg in _cmdline(pid) for arg in helper_marker) and _start_time(pid) >= started
        ]
    else:
        # rxfs's own ssh clients (transport=openssh) are its children.
        mounted.helpers = [pid for pid in _pids() if _parent(pid) == process.pid]
    return mounted


def unmount(mounted: MountedFs) -> list[str]:
    """Unmount, wait for the process, kill it by PID if it lingers; return the problems."""
    problems = []
    if is_mounted(mounted.path):
        done = subprocess.run(
            ["fusermount3", "-u", str(mounted.path)],
            capture_output=True,
            text=True,
            timeout=UNMOUNT_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            problems.append(f"fusermount3 -u {mounted.path}: {done.stderr.strip()}")
    try:
        mounted.process.wait(UNMOUNT_TIMEOUT)
    except subprocess.TimeoutExpired:
        problems.append(f"{mounted.system} (pid {mounted.process.pid}) did not exit; killed")
        mounted.kill()
        mounted.process.wait(10)
    # A killed sshfs leaves its ssh process behind; it is ours, so end it too. (rxfs
    # reaps its own ssh children: their PIDs may be someone else's by now.)
    for pid in mounted.helpers if mounted.system == "sshfs" else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if is_mounted(mounted.path):
        subprocess.run(["fusermount3", "-u", "-z", str(mounted.path)], timeout=30, check=False)
    if mounted.process.returncode not in (0, None):
        problems.append(f"{mounted.system} exited with {mounted.process.returncode}")
    if "Traceback" in mounted.log_text():
        problems.append(f"{mounted.system} printed a traceback:\n{mounted.log_text()}")
    return problems


def is_mounted(path: Path) -> bool:
    """From /proc/self/mountinfo: stat()ing a hung FUSE mount would hang us too."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            point = line.split()[4]
            if point.encode().decode("unicode_escape").encode("latin-1").decode() == target:
                return True
    return False


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _start_time(pid: int) -> int:
    """Clock ticks after boot at which ``pid`` started (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError):
        return -1


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return -1


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return [arg.decode(errors="replace") for arg in cmdline.read().split(b"\0")]
    except OSError:
        return []


# -- memory and CPU --------------------------------------------------------------------


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Fields 14 and 15 (utime, stime), counted from the state field, which is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssMonitor:
    """Polls VmHWM and VmRSS of a set of PIDs and keeps each one's peak, in bytes.

    VmHWM is the kernel's own high-water mark; polling keeps the last value seen for a
    process that exits before it is asked about.
    """

    def __init__(self) -> None:
        self._peaks: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="RssMonitor", daemon=True)

    def __enter__(self) -> RssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, pid: int) -> None:
        with self._lock:
            self._peaks.setdefault(pid, 0)

    def peak(self, pid: int) -> int:
        self._sample()
        with self._lock:
            return self._peaks.get(pid, 0)

    def _sample(self) -> None:
        with self._lock:
            for pid, peak in self._peaks.items():
                now = max(_status_kib(pid, "VmHWM"), _status_kib(pid, "VmRSS")) * 1024
                self._peaks[pid] = max(peak, now)

    def _poll(self) -> None:
        while not self._stop.wait(RSS_POLL_INTERVAL):
            self._sample()


@contextlib.contextmanager
def watchdog(seconds: float, on_expiry: Callable[[], None], what: str) -> Iterator[None]:
    """Bound a block that does blocking I/O on a mount: past ``seconds``, ``on_expiry``
    (killing the mount process) makes the blocked calls fail, and this raises."""
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        on_expiry()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except OSError as exc:
        if fired.is_set():
            raise BenchmarkError(f"{what} took over {seconds:g} s; mount killed") from exc
        raise
    finally:
        timer.cancel()
    if fired.is_set():
        raise BenchmarkError(f"{what} took over {seconds:g} s; mount killed")
