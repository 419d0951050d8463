"""The reliability scenarios, written once and run on any mount: the tests run them on
rxfs and assert; benchmarks/reliability_vs_sshfs.py runs them on rxfs and on sshfs -o
reconnect and prints what each one did.

Each scenario drives ordinary processes and system calls against a mounted directory,
causes its fault, and returns an :class:`Outcome`: what the user saw (exit codes,
errnos, how long a call took) and whether the bytes on the server are exact. None of
them asserts; none of them waits without a bound.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .rig import MIB, pattern, sha256_of, wait_until, write_pattern_file

# Every process a scenario starts is killed after this long: a hang is an outcome too.
PROCESS_TIMEOUT = 120.0


@dataclass
class Outcome:
    """What one scenario did. ``exact``: the server's bytes are what was written."""

    exact: bool = False
    exit_codes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def __str__(self) -> str:
        parts = [
            f"bytes exact: {'yes' if self.exact else 'NO'}",
            f"exit codes: {self.exit_codes}",
            f"{self.seconds:.1f}s",
        ]
        if self.errors:
            parts.append("errors: " + "; ".join(self.errors))
        parts += self.notes
        return " | ".join(parts)


def _strerror(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{name} ({exc.strerror})"


def _run(argv: list[str], timeout: float = PROCESS_TIMEOUT) -> tuple[int, str]:
    """Exit code and stderr; a process still running at ``timeout`` is killed (-9)."""
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        return -9, f"still running after {timeout:g}s; killed"
    return process.returncode, err.decode(errors="replace").strip()


# -- 1. a large copy while every connection is cut several times -----------------------


def copy_with_cuts(
    mnt: Path,
    server: Path,
    scratch: Path,
    cut: Callable[[], int],
    *,
    size: int = 128 * MIB,
    cuts: int = 3,
) -> Outcome:
    """``cp`` a ``size``-byte file into the mount; cut every connection ``cuts`` times
    while it runs, each time another 1/(cuts+1) of the file has reached the server."""
    source = scratch / "source.bin"
    want = write_pattern_file(source, 1, size)
    target = server / "copy.bin"
    outcome = Outcome()
    done = threading.Event()
    cut_at: list[int] = []

    def cutter() -> None:
        for k in range(1, cuts + 1):
            threshold = size * k // (cuts + 1)
            while not done.is_set() and _size(target) < threshold:
                time.sleep(0.01)
            if done.is_set():
                return
            cut_at.append(_size(target))
            cut()

    thread = threading.Thread(target=cutter, daemon=True)
    start = time.monotonic()
    thread.start()
    code, err = _run(["cp", str(source), str(mnt / "copy.bin")])
    done.set()
    thread.join(5)
    outcome.seconds = time.monotonic() - start
    outcome.exit_codes.append(code)
    if err:
        outcome.errors.append(err)
    outcome.note(f"cut {len(cut_at)} times, at {[n // MIB for n in cut_at]} MiB on the server")
    outcome.exact = target.exists() and sha256_of(target) == want
    if not outcome.exact:
        outcome.note(f"server file: {_size(target)} of {size} bytes")
    return outcome


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- 2. a server that stops answering -----------------------------------------------------


@dataclass
class StallOutcome(Outcome):
    stalled_fsync_errno: int | None = None
    stalled_seconds: float = 0.0
    later_write_ok: bool = False


def stalled_server(
    mnt: Path,
    server: Path,
    stall: Callable[[], None],
    resume: Callable[[], None],
    *,
    give_up_after: float,
) -> StallOutcome:
    """Write and fsync while the server is stalled; then resume and write a new file
    without remounting. The stalled fsync is abandoned (its thread left behind) after
    ``give_up_after`` seconds: that counts as a hang."""
    outcome = StallOutcome()
    data = pattern(2, MIB)
    (mnt / "before.bin").write_bytes(data)
    stall()
    result: list[int | None] = []

    def write_and_fsync() -> None:
        try:
            fd = os.open(mnt / "stalled.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            result.append(None)
        except OSError as exc:
            outcome.errors.append(f"stalled write+fsync: {_strerror(exc)}")
            result.append(exc.errno)

    start = time.monotonic()
    thread = threading.Thread(target=write_and_fsync, daemon=True)
    thread.start()
    thread.join(give_up_after)
    outcome.stalled_seconds = time.monotonic() - start
    outcome.note(f"stalled write+fsync answered after {outcome.stalled_seconds:.1f}s")
    if thread.is_alive():
        outcome.note(f"write+fsync still blocked after {give_up_after:g}s (hang)")
    elif result[0] is None:
        outcome.note("write+fsync succeeded while the server was stalled")
    outcome.stalled_fsync_errno = result[0] if result else None
    resume()
    later = pattern(3, MIB)
    try:
        (mnt / "after.bin").write_bytes(later)
        outcome.later_write_ok = True
    except OSError as exc:
        outcome.errors.append(f"write after resume: {_strerror(exc)}")
    outcome.exact = outcome.later_write_ok and _read(server / "after.bin") == later
    outcome.seconds = time.monotonic() - start
    thread.join(give_up_after)
    return outcome


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


# -- 3. sshd killed and started again while a file is being written -----------------------

_SLOW_WRITER = textwrap.dedent(
    """
    import random, sys, time
    path, seed, size, piece, pause = sys.argv[1:6]
    size, piece, pause = int(size), int(piece), float(pause)
    data = random.Random(int(seed)).randbytes(size)
    with open(path, "wb") as f:
        for pos in range(0, size, piece):
            f.write(data[pos:pos + piece])
            f.flush()
            time.sleep(pause)
    """
)


def sshd_restart(
    mnt: Path,
    server: Path,
    kill: Callable[[], None],
    relaunch: Callable[[], None],
    *,
    size: int = 16 * MIB,
    piece: int = 256 * 1024,
    pause: float = 0.05,
    down_for: float = 1.0,
) -> Outcome:
    """A writer puts ``size`` bytes in ``piece``s, pausing between them; a third of the
    way in sshd is killed (-9, every session with it), and relaunched ``down_for``
    seconds later."""
    outcome = Outcome()
    argv = [sys.executable, "-c", _SLOW_WRITER, str(mnt / "slow.bin"), "4", str(size)]
    argv += [str(piece), str(pause)]
    start = time.monotonic()
    writer = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(
        lambda: _size(server / "slow.bin") >= size // 3 or writer.poll() is not None,
        PROCESS_TIMEOUT,
    )
    if writer.poll() is None:
        kill()
        outcome.note(f"sshd killed at {_size(server / 'slow.bin') // MIB} MiB on the server")
        time.sleep(down_for)
        relaunch()
    else:
        outcome.note("the writer finished before sshd could be killed")
    try:
        _, err = writer.communicate(timeout=PROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        writer.kill()
        _, err = writer.communicate()
        outcome.errors.append(f"writer still running after {PROCESS_TIMEOUT:g}s; killed")
    outcome.seconds = time.monotonic() - start
    outcome.exit_codes.append(writer.returncode)
    if err.strip():
        outcome.errors.append(err.decode(errors="replace").strip().splitlines()[-1])
    outcome.exact = _read(server / "slow.bin") == pattern(4, size)
    return outcome


# -- 4. many writers at once --------------------------------------------------------------

_FILE_WRITER = textwrap.dedent(
    """
    import os, random, sys
    path, seed, offset, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data = random.Random(seed).randbytes(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for pos in range(0, size, 65536):
            os.pwrite(fd, data[pos:pos + 65536], offset + pos)
        os.fsync(fd)
    finally:
        os.close(fd)
    """
)


def concurrent_writers(
    mnt: Path,
    server: Path,
    cut: Callable[[], int] | None = None,
    *,
    files: int = 8,
    ranges: int = 4,
    size: int = 4 * MIB,
) -> Outcome:
    """``files`` processes write a file each and ``ranges`` processes write their own
    range of one shared file, all at once; with ``cut``, every connection is cut once
    while they run."""
    outcome = Outcome()
    jobs = [(mnt / f"own{i}.bin", 10 + i, 0) for i in range(files)]
    jobs += [(mnt / "shared.bin", 100 + i, i * size) for i in range(ranges)]
    start = time.monotonic()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _FILE_WRITER, str(path), str(seed), str(offset), str(size)],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for path, seed, offset in jobs
    ]
    if cut is not None:
        landed = lambda: sum(_size(server / p.name) for p, _, _ in jobs[:files])  # noqa: E731
        wait_until(lambda: landed() >= files * size // 3, PROCESS_TIMEOUT)
        outcome.note(f"cut {cut()} connections at {landed() // MIB} MiB on the server")
    for writer in writers:
        try:
            _, err = writer.communicate(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            writer.kill()
            _, err = writer.communicate()
        outcome.exit_codes.append(writer.returncode)
        if err.strip():
            outcome.errors.append(err.decode(errors="replace").strip().splitlines()[-1])
    outcome.seconds = time.monotonic() - start
    shared = b"".join(pattern(100 + i, size) for i in range(ranges))
    wrong = [
        path.name
        for path, seed, _ in jobs[:files]
        if _read(server / path.name) != pattern(seed, size)
    ]
    if ranges and _read(server / "shared.bin") != shared:
        wrong.append("shared.bin")
    if wrong:
        outcome.note(f"wrong bytes in {wrong}")
    outcome.exact = not wrong
    return outcome
