"""kill -9 and SIGSTOP of the mount process at random moments never wedge anything.

Each cycle mounts sftp:// or memory:// on the same mount point, puts it to work, and
hits the mount process at one of the moments a user's kill could land: while it
mounts, right after the mount appears, mid-write, mid-flush (a close or fsync on its
way to the server), mid-unmount. Every time: the process is gone within 5 s, every
process that used the mount is freed within 5 s, ``rxfs umount`` returns within its
bound, and the mount point takes the next cycle's mount.

RXFS_CHAOS_CYCLES sets the number of kill cycles (default 20, half of them sftp://, a
random seed each run: the suite's 10-minute budget buys 20; run 200 before changing how
the mount starts or stops); RXFS_CHAOS_SEED replays a run.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.conftest import OWN_REQUEST_MARK, Rxfs, is_mounted, process_alive, rxfs_argv

from .conftest import FAST_OPTIONS
from .rig import wait_until

CYCLES = int(os.environ.get("RXFS_CHAOS_CYCLES", "20"))
SEED = int(os.environ.get("RXFS_CHAOS_SEED", str(random.randrange(1 << 30))))
GONE_WITHIN = 5.0
UMOUNT_TIMEOUT = 10.0
MOUNT_TIMEOUT = 15.0
MOMENTS = ("mounting", "appeared", "writing", "flushing", "unmounting")

# A user's program: writes ``size`` bytes in 64 KiB pieces, then fsync and close when
# asked; any error ends it (exit 3), never a hang.
WRITER = """
import os, sys
path, size, sync = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "sync"
piece = os.urandom(1 << 16)
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for _ in range(size >> 16):
        os.write(fd, piece)
    if sync:
        os.fsync(fd)
    os.close(fd)
except OSError:
    sys.exit(3)
"""


@dataclass
class Cycle:
    """One mount process and the programs using its mount."""

    mnt: Path
    url: str
    options: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    users: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def mount(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as err:
            self.process = subprocess.Popen(
                [*rxfs_argv("mount", self.url, str(self.mnt), *self.options), "-f"],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        return self.process

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_mounted(self) -> None:
        assert self.process is not None
        if not wait_until(lambda: is_mounted(self.mnt) or self.process.poll() is not None, 15):
            pytest.fail(f"{self.url} not mounted within 15 s:\n{self.log.read_text()}")
        assert self.process.poll() is None, self.log.read_text()

    def start_writer(self, name: str, size: int, *, sync: bool) -> None:
        argv = [sys.executable, "-c", WRITER, str(self.mnt / name), str(size)]
        self._spawn([*argv, "sync" if sync else "close"])

    def start_umount(self) -> None:
        self._spawn(rxfs_argv("umount", "--timeout", str(UMOUNT_TIMEOUT), str(self.mnt)))

    def touch_afterwards(self) -> None:
        """A program that comes to the mount after the hit: it must get an answer."""
        self._spawn(["stat", str(self.mnt / "after")])

    def _spawn(self, argv: list[str]) -> None:
        quiet = subprocess.DEVNULL
        self.users.append(subprocess.Popen(argv, stdin=quiet, stdout=quiet, stderr=quiet))

    def kill_everything_left(self) -> None:
        for process in [*self.users, *([self.process] if self.process else [])]:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)


@dataclass
class Tally:
    """What the run saw, printed at the end (the issue note quotes it)."""

    hits: dict[str, int] = field(default_factory=dict)
    slowest_exit: float = 0.0
    slowest_umount: float = 0.0
    umount_codes: dict[int, int] = field(default_factory=dict)

    def add(self, moment: str, exit_took: float, umount_took: float, code: int) -> None:
        self.hits[moment] = self.hits.get(moment, 0) + 1
        self.slowest_exit = max(self.slowest_exit, exit_took)
        self.slowest_umount = max(self.slowest_umount, umount_took)
        self.umount_codes[code] = self.umount_codes.get(code, 0) + 1


def _gone_within(process: subprocess.Popen[bytes], seconds: float) -> float | None:
    started = time.monotonic()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - started


def _umount(mnt: Path, log: Path) -> tuple[int, float]:
    started = time.monotonic()
    done = Rxfs()("umount", "--timeout", str(UMOUNT_TIMEOUT), str(mnt), timeout=60)
    took = time.monotonic() - started
    with log.open("a") as out:
        out.write(f"[rxfs umount exit {done.returncode} in {took:.2f}s] {done.stderr}")
    assert "Traceback" not in done.stderr, done.stderr
    assert took < UMOUNT_TIMEOUT + 3, f"rxfs umount took {took:.1f}s (--timeout {UMOUNT_TIMEOUT})"
    return done.returncode, took


def _hit(cycle: Cycle, moment: str, rng: random.Random) -> None:
    """Bring the mount to ``moment`` and SIGKILL its process there."""
    process = cycle.mount()
    if moment == "mounting":
        time.sleep(rng.uniform(0.0, 0.6))
    else:
        cycle.wait_mounted()
    if moment == "writing":
        cycle.start_writer("w", 64 << 20, sync=False)
        time.sleep(rng.uniform(0.05, 0.4))
    elif moment == "flushing":
        cycle.start_writer("f", rng.choice((1, 4, 16)) << 20, sync=rng.random() < 0.5)
        time.sleep(rng.uniform(0.05, 0.5))
    elif moment == "unmounting":
        (cycle.mnt / "u").write_bytes(b"u" * 200_000)
        cycle.start_umount()
        time.sleep(rng.uniform(0.0, 0.3))
    os.kill(process.pid, signal.SIGKILL)


def _check_cycle(cycle: Cycle, moment: str, label: str, tally: Tally) -> None:
    assert cycle.process is not None
    exit_took = _gone_within(cycle.process, GONE_WITHIN)
    assert exit_took is not None, f"{label}: mount process {cycle.pid} still there after 5 s"
    cycle.touch_afterwards()
    for user in cycle.users:
        assert _gone_within(user, GONE_WITHIN) is not None, f"{label}: {user.args} blocked"
    code, umount_took = _umount(cycle.mnt, cycle.log)
    assert not is_mounted(cycle.mnt), f"{label}: still mounted after rxfs umount"
    tally.add(moment, exit_took, umount_took, code)


@pytest.fixture
def chaos_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "chaos.log"
    log.touch()
    yield log
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    assert OWN_REQUEST_MARK not in text


def _sources(sshd: LoopbackSshd) -> list[tuple[str, list[str]]]:
    options = {**sshd.mount_options(), **FAST_OPTIONS}
    sftp_options = ["-o", ",".join(f"{k}={v}" for k, v in options.items())]
    return [("memory://", []), (sshd.url(), sftp_options)]


def test_kill_9_at_random_moments_never_wedges_the_mount(
    sshd: LoopbackSshd, tmp_path: Path, chaos_log: Path
) -> None:
    rng = random.Random(SEED)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sources = _sources(sshd)
    tally = Tally()
    started = time.monotonic()
    for n in range(CYCLES):
        url, options = sources[n % 2]
        moment = rng.choice(MOMENTS)
        cycle = Cycle(mnt, url, options, chaos_log)
        try:
            _hit(cycle, moment, rng)
            _check_cycle(cycle, moment, f"cycle {n} ({url}, seed {SEED}) {moment}", tally)
        finally:
            cycle.kill_everything_left()
    _last_mount_works(mnt, sources[1], chaos_log)
    print(
        f"\nchaos: {CYCLES} kill -9 cycles in {time.monotonic() - started:.0f}s, seed {SEED}, "
        f"moments {tally.hits}; slowest exit {tally.slowest_exit:.2f}s, slowest rxfs umount "
        f"{tally.slowest_umount:.2f}s, umount exit codes {tally.umount_codes}"
    )


def _last_mount_works(mnt: Path, source: tuple[str, list[str]], log: Path) -> None:
    cycle = Cycle(mnt, source[0], source[1], log)
    try:
        cycle.mount()
        cycle.wait_mounted()
        (mnt / "final").write_bytes(b"the mount point works")
        assert (mnt / "final").read_bytes() == b"the mount point works"
        code, _ = _umount(mnt, log)
        assert code == 0
        assert _gone_within(cycle.process, GONE_WITHIN) is not None  # type: ignore[arg-type]
    finally:
        cycle.kill_everything_left()


@pytest.mark.parametrize("source", [0, 1], ids=["memory", "sftp"])
def test_sigstop_longer_than_the_request_timeout_then_umount(
    sshd: LoopbackSshd, tmp_path: Path, chaos_log: Path, source: int
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    url, options = _sources(sshd)[source]
    cycle = Cycle(mnt, url, options, chaos_log)
    try:
        process = cycle.mount()
        cycle.wait_mounted()
        cycle.start_writer("w", 32 << 20, sync=True)
        time.sleep(0.2)
        os.kill(process.pid, signal.SIGSTOP)
        time.sleep(float(FAST_OPTIONS["timeout"]) + 1)
        _umount(mnt, chaos_log)
        assert not is_mounted(mnt)
        assert _gone_within(process, GONE_WITHIN) is not None, "the stopped process stayed"
        cycle.touch_afterwards()
        for user in cycle.users:
            assert _gone_within(user, GONE_WITHIN) is not None, f"{user.args} left blocked"
        assert not process_alive(process.pid)
    finally:
        cycle.kill_everything_left()
    _last_mount_works(mnt, (url, options), chaos_log)
