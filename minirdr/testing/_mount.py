"""Mount a backend the way a user does: ``rxfs mount -f URL DIR`` in a subprocess.

The kit never imports pyfuse3 or rxfs.fs: what it tests is the command a user runs and
the file system the kernel shows, through plain file APIs. A mount that does not come up,
or a mount process that prints a traceback or exits non-zero, is a failure the caller
reports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from rxfs.minirdr import Capability, load_backend

__all__ = ["MountError", "MountedBackend", "backend_capabilities", "mount_backend"]

MOUNT_TIMEOUT = 20.0
EXIT_TIMEOUT = 20.0


class MountError(RuntimeError):
    """The mount did not come up, or did not go away cleanly; the message says why."""


def backend_capabilities(url: str, options: Mapping[str, str] | None = None) -> Capability:
    """What the backend serving ``url`` declares for a mount with ``options``
    (``MiniRdrDispatch.capabilities_for``)."""
    return load_backend(urlsplit(url).scheme).capabilities_for(options or {})


def _unescape(mountinfo_field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \\ooo (octal).
    return mountinfo_field.encode().decode("unicode_escape").encode("latin-1").decode()


def is_mounted(path: Path) -> bool:
    """From /proc/self/mountinfo: a stat() would go through a possibly hung mount."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        return any(_unescape(line.split()[4]) == target for line in mountinfo)


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@dataclass
class MountedBackend:
    """One ``rxfs mount -f`` process and the directory it serves."""

    url: str
    path: Path
    process: subprocess.Popen[bytes]
    log: Path
    capabilities: Capability
    problems: list[str] = field(default_factory=list)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def unmount(self) -> None:
        """fusermount3 -u, then wait for the process; raises MountError with what went
        wrong (a lazy unmount and SIGKILL still clean up whatever they can)."""
        if is_mounted(self.path):
            done = subprocess.run(
                ["fusermount3", "-u", str(self.path)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if done.returncode != 0:
                self.problems.append(f"fusermount3 -u {self.path}: {done.stderr.strip()}")
                subprocess.run(
                    ["fusermount3", "-u", "-z", str(self.path)],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
        try:
            code = self.process.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            code = self.process.wait(5)
            self.problems.append(f"the mount process still ran {EXIT_TIMEOUT:g} s after unmount")
        if code != 0:
            self.problems.append(f"rxfs mount -f exited with status {code}")
        if "Traceback" in self.output():
            self.problems.append("the mount process logged a traceback")
        with contextlib.suppress(OSError):
            self.path.rmdir()  # fails, as it should, on a mount point left behind
        if self.problems:
            raise MountError(f"{self.url}: " + "; ".join(self.problems) + "\n" + self.output())
        self.log.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the mount process (a hung test): every blocked call then fails."""
        if self.process.poll() is None:
            self.problems.append("killed: a test blocked on the mount")
            self.process.kill()


def _rxfs_command() -> list[str]:
    # The module rather than the console script: it is there whatever bin/ is on PATH.
    return [sys.executable, "-m", "rxfs.fs.cli"]


def start_mount(url: str, options: Mapping[str, str] | None = None) -> MountedBackend:
    """Mount ``url`` on a new temporary directory; returns once the kernel lists it."""
    if shutil.which("fusermount3") is None or not os.path.exists("/dev/fuse"):
        raise MountError("FUSE is missing: the kit needs /dev/fuse and fusermount3 (fuse3)")
    capabilities = backend_capabilities(url, options)
    path = Path(tempfile.mkdtemp(prefix="rxfs-conformance-"))
    log = path.with_name(path.name + ".log")
    argv = [*_rxfs_command(), "mount", "-f", url, str(path)]
    if options:
        argv += ["-o", ",".join(f"{k}={v}" if v else k for k, v in options.items())]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    mounted = MountedBackend(url, path, process, log, capabilities)
    if not _wait_until(lambda: is_mounted(path) or process.poll() is not None, MOUNT_TIMEOUT):
        process.kill()
        process.wait(5)
        raise MountError(f"{url} was not mounted after {MOUNT_TIMEOUT:g} s:\n{mounted.output()}")
    if process.poll() is not None:
        with contextlib.suppress(OSError):
            path.rmdir()
        raise MountError(
            f"rxfs mount -f {url} exited with status {process.returncode}:\n{mounted.output()}"
        )
    return mounted


@contextlib.contextmanager
def mount_backend(url: str, options: Mapping[str, str] | None = None) -> Iterator[MountedBackend]:
    """``with mount_backend("memory://") as m:`` use ``m.path``; unmounted after."""
    mounted = start_mount(url, options)
    try:
        yield mounted
    finally:
        mounted.unmount()
