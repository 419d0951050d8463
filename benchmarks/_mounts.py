"""Mount rxfs and sshfs as subprocesses (and the kernel's CIFS client with mount(8)),
watch their memory, and take them down again.

Everything here acts on processes this harness started, by PID, and on its own mount
points; nothing looks a process up by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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
    """One mount; ``server_dir`` is where its files land on the server, if any.
    ``process`` is the mount process, None for a kernel client (cifs)."""

    system: str  # "rxfs", "sshfs" or "cifs"
    path: Path
    process: subprocess.Popen[bytes] | None
    log: Path
    server_dir: Path | None
    helpers: list[int] = field(default_factory=list)  # ssh processes, counted with it

    @property
    def pids(self) -> list[int]:
        return [self.process.pid, *self.helpers] if self.process else []

    def kill(self) -> None:
        """SIGKILL our processes: every system call blocked on the mount fails at once."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def abort(self) -> None:
        """Make every system call blocked on the mount fail: kill a FUSE mount's
        processes; force a kernel mount off (umount -f aborts its pending requests)."""
        if self.process is not None:
            self.kill()
            return
        for argv in (["umount", "-f", str(self.path)], ["umount", "-l", str(self.path)]):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(argv, capture_output=True, timeout=30, check=False)

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
    if mounted.process is None:
        return _unmount_kernel(mounted)
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


def _unmount_kernel(mounted: MountedFs) -> list[str]:
    """umount(8) flushes what the kernel client holds; lazily detached if it fails."""
    problems = []
    if is_mounted(mounted.path):
        done = subprocess.run(
            ["umount", str(mounted.path)],
            capture_output=True,
            text=True,
            timeout=UNMOUNT_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            problems.append(f"umount {mounted.path}: {done.stderr.strip()}")
            subprocess.run(["umount", "-l", str(mounted.path)], timeout=30, check=False)
    return problems


# -- the kernel's CIFS client ----------------------------------------------------------

MOUNT_CIFS = ("/sbin/mount.cifs", "/usr/sbin/mount.cifs")
# smbstatus's names for the dialects, as mount.cifs's vers= spells them.
CIFS_VERS = {"SMB2_10": "2.1", "SMB3_00": "3.0", "SMB3_02": "3.02", "SMB3_11": "3.1.1"}


def cifs_unavailable() -> str | None:
    """Why ``mount -t cifs`` cannot work on this machine, or None if it may: the kernel
    needs its cifs file system (built in, or a module modprobe loads) and mount(8) needs
    mount.cifs to read a credentials file."""
    if not _kernel_has("cifs") and shutil.which("modprobe"):
        subprocess.run(["modprobe", "cifs"], capture_output=True, timeout=60, check=False)
    if not _kernel_has("cifs"):
        how = "modprobe cifs failed" if shutil.which("modprobe") else "no modprobe"
        return (
            f"Linux {os.uname().release} has no cifs file system (not in /proc/filesystems; {how})"
        )
    if not any(os.path.exists(path) for path in MOUNT_CIFS):
        return "mount.cifs is missing (apt-get install cifs-utils)"
    return None


def _kernel_has(filesystem: str) -> bool:
    with open("/proc/filesystems", encoding="ascii") as known:
        return any(line.split()[-1] == filesystem for line in known if line.strip())


def cifs_mount(
    unc: str, mountpoint: Path, options: Mapping[str, str | None], log: Path, server_dir: Path
) -> MountedFs:
    """``mount -t cifs``: the kernel mounts in the call, no process stays behind.
    Raises BenchmarkError with mount's own message if the kernel refuses."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    argv = ["mount", "-t", "cifs", unc, str(mountpoint), "-o", option_string(options)]
    done = subprocess.run(argv, capture_output=True, timeout=MOUNT_TIMEOUT, check=False)
    log.write_bytes(done.stdout + done.stderr)
    mounted = MountedFs("cifs", mountpoint, None, log, server_dir)
    if done.returncode != 0 or not is_mounted(mountpoint):
        _unmount_kernel(mounted)
        # One line: mount(8) adds a hint about dmesg on a line of its own.
        message = " ".join((done.stderr or done.stdout).decode(errors="replace").split())
        raise BenchmarkError(f"mount -t cifs {unc} exited {done.returncode}: {message}")
    return mounted


def option_string(options: Mapping[str, str | None]) -> str:
    """mount(8)'s -o value: NAME=VALUE, or NAME alone for a flag (None)."""
    return ",".join(
        name if value is None else f"{name}={value}" for name, value in options.items()
    )


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
