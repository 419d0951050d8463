"""The workloads, their seeded data, and the checks that the bytes landed intact.

Every byte written is a function of a seed and its offset, so the harness knows what each
file must hold without keeping a copy: 1 MiB blocks of seeded random bytes, each block's
first 8 bytes replaced by its index (so no two blocks are alike and a misplaced block is
caught). SSH compression is off for both clients, so random bytes cost what real data does.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._mounts import BenchmarkError

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
_STAMP = 8


@dataclass(frozen=True)
class Sample:
    """One timed run: wall seconds for ``nbytes`` in ``files`` files."""

    seconds: float
    nbytes: int
    files: int = 1

    @property
    def mib_per_s(self) -> float:
        return self.nbytes / MIB / self.seconds

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds


class Pattern:
    """Reproducible file contents for one seed."""

    def __init__(self, seed: int) -> None:
        self._tail = random.Random(seed).randbytes(MIB - _STAMP)
        self._digests: dict[int, str] = {}

    def block(self, index: int) -> bytes:
        return index.to_bytes(_STAMP, "little") + self._tail

    def chunks(self, size: int, chunk: int) -> Iterator[memoryview]:
        """The first ``size`` bytes in pieces of ``chunk`` bytes (``chunk`` divides 1 MiB)."""
        if MIB % chunk:
            raise ValueError(f"chunk size {chunk} does not divide 1 MiB")
        for offset in range(0, size, MIB):
            block = memoryview(self.block(offset // MIB))[: min(MIB, size - offset)]
            for start in range(0, len(block), chunk):
                yield block[start : start + chunk]

    def sha256(self, size: int) -> str:
        """The digest of the first ``size`` bytes (computed once per size)."""
        if size not in self._digests:
            digest = hashlib.sha256()
            for piece in self.chunks(size, MIB):
                digest.update(piece)
            self._digests[size] = digest.hexdigest()
        return self._digests[size]


def small_files(seed: int, count: int, max_size: int) -> list[bytes]:
    """``count`` files of 0..``max_size`` bytes, sizes and contents from ``seed``."""
    rng = random.Random(seed)
    sizes = [rng.randint(0, max_size) for _ in range(count)]
    return [rng.randbytes(size) for size in sizes]


def small_file_name(index: int) -> str:
    return f"f{index:04}.bin"


# -- timed parts -------------------------------------------------------------------------


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_sequential(path: Path, pattern: Pattern, size: int, block: int) -> Sample:
    """Create ``path`` and write ``size`` bytes in ``block``-byte writes; timed from open
    through fsync and close, so both clients are timed until the server has the bytes."""
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for piece in pattern.chunks(size, block):
            _write_all(fd, piece)
        os.fsync(fd)
    finally:
        os.close(fd)
    return Sample(time.perf_counter() - started, size)


def write_small_files(directory: Path, contents: list[bytes]) -> Sample:
    """Create each file with one write; timed through every close (no fsync)."""
    started = time.perf_counter()
    for index, data in enumerate(contents):
        fd = os.open(directory / small_file_name(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    return Sample(time.perf_counter() - started, sum(map(len, contents)), len(contents))


def read_sequential(path: Path, pattern: Pattern, size: int) -> Sample:
    """Read ``path`` in 1 MiB reads and compare each block as it comes (about 0.1 s per
    GiB, the same for both clients)."""
    buffer = bytearray(MIB)
    view = memoryview(buffer)
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as file:
        for index in range(0, -(-size // MIB)):
            want = pattern.block(index)[: min(MIB, size - index * MIB)]
            got = _read_exactly(file.fileno(), view[: len(want)])
            if got != want:
                raise BenchmarkError(f"{path}: block {index} read back wrong")
        if os.read(file.fileno(), 1):
            raise BenchmarkError(f"{path}: longer than the {size} bytes written")
    return Sample(time.perf_counter() - started, size)


def _read_exactly(fd: int, view: memoryview) -> bytes:
    filled = 0
    while filled < len(view):
        count = os.readv(fd, [view[filled:]])
        if count == 0:
            break
        filled += count
    return bytes(view[:filled])


# -- checks (untimed) --------------------------------------------------------------------


def check_file(path: Path, size: int, sha256: str) -> None:
    """Fail loudly unless ``path`` holds exactly the expected bytes."""
    actual = path.stat().st_size
    if actual != size:
        raise BenchmarkError(f"{path}: {actual} bytes, expected {size}")
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if digest != sha256:
        raise BenchmarkError(f"{path}: SHA-256 {digest}, expected {sha256}")


def check_small_files(directory: Path, contents: list[bytes]) -> None:
    for index, data in enumerate(contents):
        path = directory / small_file_name(index)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != hashlib.sha256(data).hexdigest():
            raise BenchmarkError(f"{path}: content differs from what was written")


def make_file(path: Path, pattern: Pattern, size: int) -> None:
    """Write a file for the read workload directly (not timed)."""
    with open(path, "wb") as file:
        for piece in pattern.chunks(size, MIB):
            file.write(piece)


# -- a source tree: extract, walk, rsync, remove ------------------------------------------


def make_tree(root: Path, seed: int, directories: int = 100, files_per_dir: int = 14) -> int:
    """A tree like a small source checkout (``directories`` directories in two levels,
    ``files_per_dir`` files of 0-8 KiB in each); returns how many entries it has."""
    rng = random.Random(seed)
    per_top = max(1, int(directories**0.5))
    entries = 0
    for index in range(directories):
        directory = root / f"d{index // per_top:02}" / f"s{index % per_top:02}"
        directory.mkdir(parents=True, exist_ok=True)
        entries += 1 + (index % per_top == 0)
        for number in range(files_per_dir):
            (directory / f"file{number:02}.c").write_bytes(rng.randbytes(rng.randint(0, 8 * KIB)))
            entries += 1
    return entries


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 (or "dir") of every entry below ``root``."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        found[relative] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def timed_command(argv: list[str], entries: int, *, cwd: Path | None = None) -> Sample:
    """Run ``argv`` (output discarded); a failure stops the run."""
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip()[-500:]
        raise BenchmarkError(f"{' '.join(argv)} exited {done.returncode}: {error}")
    return Sample(seconds, 0, entries)


# -- coherence between two clients (checked, not timed) -----------------------------------

RECORD = 100


def append_record(writer: int, number: int) -> bytes:
    head = f"w{writer} {number:06d} ".encode()
    return head + b"." * (RECORD - len(head) - 1) + b"\n"


def append_from(path: Path, writer: int, records: int, failures: list[BaseException]) -> None:
    """One kept-open O_APPEND descriptor, one write(2) per record."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for number in range(records):
                os.write(fd, append_record(writer, number))
        finally:
            os.close(fd)
    except OSError as exc:
        failures.append(exc)


def broken_records(data: bytes, writers: int, records: int) -> tuple[int, int]:
    """(records not found whole and in their writer's order, records expected)."""
    lines = data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")
    whole = {line + b"\n" for line in lines if len(line) == RECORD - 1}
    expected = [append_record(w, n) for w in range(writers) for n in range(records)]
    missing = sum(record not in whole for record in expected)
    extra = max(0, len(lines) - len(expected))
    return missing + extra, len(expected)
