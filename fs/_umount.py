"""``rxfs umount``: unmount an rxfs mount in whatever state it is, within a time bound.

The mount process serves the mount; what ``rxfs umount`` does depends on its state:

- it runs: unmount the way umount(8) does (``fusermount3 -u``: refused while a process
  uses the mount, unless ``--lazy`` or ``--force``); the mount process sees its session
  end, sends what it still holds to the server, reports what did not land and exits;
- it is stopped (SIGSTOP) or does not answer: abort its FUSE connection
  (/sys/fs/fuse/connections/N/abort), so that every process blocked on the mount gets
  ENOTCONN, detach the mount, and let the process (resumed, if stopped) finish;
- it is gone (killed, or a zombie stuck in a request to its own mount): abort the
  connection and detach the mount; whatever it held and had not sent is lost.

The exit status says whether every byte landed: 0 only when the mount process said so.
Nothing here touches the mount point itself (no stat): on a mount that does not answer,
that would hang this command too.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._mounttable import MountEntry, mount_entry
from ._statuscli import UmountProgress

__all__ = ["ProcessState", "Umount", "UmountRefusedError", "process_state"]

FUSECTL = Path("/sys/fs/fuse/connections")
EXIT_OK = 0
EXIT_FAILURE = 1
# What umount(8) allows for the kernel to detach a mount that nobody answers for.
DETACH_TIMEOUT = 5.0


class ProcessState(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    GONE = "gone"


def process_state(pid: int | None) -> ProcessState:
    """What the mount process is doing. A zombie has exited (its parent has not reaped
    it yet, or one of its threads still waits on a request to its own mount)."""
    if pid is None:
        return ProcessState.GONE
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ProcessState.GONE
    if state in {"Z", "X"}:
        return ProcessState.GONE
    return ProcessState.STOPPED if state in {"T", "t"} else ProcessState.RUNNING


class UmountRefusedError(Exception):
    """The mount stays as it was; the message says why and what the user can do."""


@dataclass
class Umount:
    """One ``rxfs umount``: ``run()`` returns the exit status; ``say`` prints a line."""

    mountpoint: str  # resolved
    shown: str  # as the user typed it
    timeout: float
    lazy: bool
    force: bool
    pid_file: Path
    report_file: Path
    log_file: Path | None
    say: Callable[[str], None]
    # The mount process's status socket: while it sends what it holds, say how much is
    # left (never silent for minutes).
    status_socket: Path | None = None

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def run(self, entry: MountEntry) -> int:
        pid = self.pid()
        state = process_state(pid)
        if state is ProcessState.GONE and pid is not None:
            return self._after_death(entry, pid)
        if state is ProcessState.STOPPED:
            assert pid is not None
            self.say(f"the mount process {pid} is stopped; aborting its FUSE connection")
            self._abort_and_detach(entry)
            os.kill(pid, signal.SIGCONT)
            return self.finish(pid)
        if self.force:
            self.say("--force: aborting the FUSE connection (users of the mount get ENOTCONN)")
            self._abort_and_detach(entry)
        elif not self._unmount(entry):
            return EXIT_OK
        return self.finish(pid) if pid is not None else EXIT_OK

    # -- the states ---------------------------------------------------------------------

    def _after_death(self, entry: MountEntry, pid: int) -> int:
        # A zombie whose thread waits on its own mount keeps the connection (and the
        # mount) alive until the connection is aborted; a dead one has none to abort.
        self._abort_and_detach(entry)
        return self._died(pid)

    def _died(self, pid: int) -> int:
        """The mount process ended without a clean exit (which removes its pid file and
        its status socket)."""
        self.forget_pid()
        if self.status_socket is not None:
            self.status_socket.unlink(missing_ok=True)
        self.print_unflushed()
        self.say(
            f"the mount process {pid} had died before it finished unmounting; bytes it "
            "held but had not sent to the server, if any, are lost"
        )
        return EXIT_FAILURE

    def _unmount(self, entry: MountEntry) -> bool:
        """umount(8)'s way: the kernel refuses a mount in use (EBUSY); with --lazy it
        is detached and lives on for its users. False when that happened: the mount
        process serves them until the last one lets go."""
        try:
            done = self._fusermount("-u")
        except subprocess.TimeoutExpired:
            # subprocess.run killed fusermount3; the kernel was waiting on the mount
            # process for it.
            self.say("the mount process does not answer; aborting its FUSE connection")
            self._abort_and_detach(entry)
            return True
        if done.returncode == 0:
            return True
        if "busy" not in done.stderr.lower():
            raise UmountRefusedError(f"cannot unmount {self.shown}: {done.stderr.strip()}")
        if not self.lazy:
            raise UmountRefusedError(self._busy_message())
        users = self._users()
        detach(self.mountpoint)
        self.say(
            f"{self.shown} detached while busy{users}; the mount process serves those "
            "users and exits once the last one lets go"
        )
        return False

    def _fusermount(self, *flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["fusermount3", *flags, self.mountpoint],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(self.remaining(), 1.0),
            check=False,
        )

    def _users(self) -> str:
        users = ", ".join(f"{pid} ({name})" for pid, name in users_of(self.mountpoint)[:8])
        return f" (used by {users})" if users else ""

    def _busy_message(self) -> str:
        return (
            f"{self.shown} is busy{self._users()}; close what uses "
            "it and try again, or --lazy (detach now, unmount when the last user lets go) "
            "or --force (abort: processes using it get ENOTCONN at once)"
        )

    def finish(self, pid: int) -> int:
        """Wait for the mount process to exit and say what it could not flush (also
        when the mount is gone already and its process still sends what it holds)."""
        progress = UmountProgress(self.status_socket) if self.status_socket else None
        while process_state(pid) is not ProcessState.GONE and self.remaining() > 0:
            if progress is not None:
                progress.poll()
            time.sleep(0.05)
        if progress is not None:
            progress.done()
        if process_state(pid) is not ProcessState.GONE:
            where = f" in {self.log_file}" if self.log_file is not None else ""
            self.say(
                f"the mount is gone, but process {pid} is still sending held bytes to the "
                f"server after {self.timeout:g}s; it names what did not land{where} when "
                "it gives up (-o reconnect_timeout)"
            )
            return EXIT_FAILURE
        if self.pid_file.exists():  # a clean exit removes it
            return self._died(pid)
        return EXIT_FAILURE if self.print_unflushed() else EXIT_OK

    # -- helpers ------------------------------------------------------------------------

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def forget_pid(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def print_unflushed(self) -> bool:
        """Say what the mount process could not flush; True if anything."""
        try:
            lines = self.report_file.read_text().splitlines()
        except FileNotFoundError:
            return False
        self.report_file.unlink()
        for line in lines:
            self.say(f"not flushed: {line}")
        return bool(lines)

    def _abort_and_detach(self, entry: MountEntry) -> None:
        abort_connection(entry)
        if mount_entry(self.mountpoint) == entry:
            detach(self.mountpoint)


def abort_connection(entry: MountEntry) -> bool:
    """Abort the FUSE connection behind ``entry``: every request waiting on it ends
    (ENOTCONN), and the mount process's /dev/fuse reads end. Needs root; mounts
    fusectl first where it is not mounted. False where it could not be done."""
    abort = FUSECTL / str(entry.connection) / "abort"
    if not abort.exists() and not _mount_fusectl():
        return False
    try:
        abort.write_text("1")
    except FileNotFoundError:
        return False  # the connection ended meanwhile
    except PermissionError:
        print(
            "rxfs: aborting a FUSE connection needs root (sudo rxfs umount ...)",
            file=sys.stderr,
        )
        return False
    return True


def _mount_fusectl() -> bool:
    if mount_entry(str(FUSECTL)) is not None or not FUSECTL.is_dir():
        return False
    done = subprocess.run(
        ["mount", "-t", "fusectl", "fusectl", str(FUSECTL)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DETACH_TIMEOUT,
        check=False,
    )
    return done.returncode == 0


def detach(mountpoint: str) -> None:
    """Lazy unmount: the kernel detaches the mount at once and needs no answer."""
    subprocess.run(
        ["fusermount3", "-u", "-z", mountpoint],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DETACH_TIMEOUT,
        check=False,
    )


def users_of(mountpoint: str) -> list[tuple[int, str]]:
    """Processes with a file, directory or cwd below ``mountpoint``. Read from /proc's
    links, which the kernel answers from its own names, not from the mount."""
    prefix = mountpoint.rstrip("/") + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if any(_below(link, mountpoint, prefix) for link in _links(entry)):
            try:
                name = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                name = "?"
            found.append((int(entry), name))
    return found


def _links(pid: str) -> list[str]:
    links = []
    for name in ("cwd", "root"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/{pid}/{name}"))
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return links


def _below(link: str, mountpoint: str, prefix: str) -> bool:
    return link == mountpoint or link.startswith(prefix)
