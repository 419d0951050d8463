"""Sequential throughput of the sftp:// backend through a real mount, against sshfs.

Both file systems mount the same loopback OpenSSH server (:class:`LoopbackSshd`) in turn:

    write   dd if=/dev/zero of=MNT/f bs=1M count=N conv=fsync   (a fresh mount)
    read    dd if=MNT/f of=/dev/null bs=1M                      (another fresh mount,
                                                                  so no page cache helps)

Each round runs rxfs then sshfs; the summary gives the median MB/s of the rounds with
the spread (min-max) and the ratio rxfs/sshfs of the medians. Run as root (sshd and
FUSE); needs sshfs for the comparison (``--no-sshfs`` to skip it).

    .venv/bin/python benchmarks/engine_bench.py --size 256 --rounds 3
    .venv/bin/python benchmarks/engine_bench.py -o transport=openssh
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rxfs.minirdr.sftp.loopback import LoopbackSshd

MIB = 1 << 20
MOUNT_TIMEOUT = 30.0
DD_TIMEOUT = 600.0


@dataclass
class Results:
    """MB/s per (file system, direction), one value per round."""

    runs: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, fs: str, direction: str, mb_per_s: float) -> None:
        self.runs.setdefault((fs, direction), []).append(mb_per_s)

    def median(self, fs: str, direction: str) -> float | None:
        values = self.runs.get((fs, direction))
        return statistics.median(values) if values else None


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@contextmanager
def rxfs_mount(
    server: LoopbackSshd, mnt: Path, remote_dir: str, extra: list[str]
) -> Iterator[None]:
    """``rxfs mount -f`` in a subprocess; unmounted (and waited for) on exit."""
    rxfs = Path(sys.executable).with_name("rxfs")
    options = ",".join([*(f"{k}={v}" for k, v in server.mount_options().items()), *extra])
    log = mnt.with_suffix(".log").open("ab")
    process = subprocess.Popen(
        [str(rxfs), "mount", "-f", server.url(remote_dir), str(mnt), "-o", options],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        if not _wait_until(lambda: os.path.ismount(mnt) or process.poll() is not None, 30):
            raise RuntimeError(f"rxfs did not mount {mnt}")
        if process.poll() is not None:
            raise RuntimeError(f"rxfs mount exited {process.returncode}; see {log.name}")
        yield
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], timeout=120, check=False)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def sshfs_mount(server: LoopbackSshd, mnt: Path, remote_dir: str) -> Iterator[None]:
    """sshfs with the same key and known_hosts; defaults otherwise (as a user runs it)."""
    remote = f"{server.user}@{server.host}:{server.root / remote_dir}"
    options = [
        f"IdentityFile={server.client_key_path}",
        f"UserKnownHostsFile={server.known_hosts_path}",
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        f"port={server.port}",
    ]
    subprocess.run(
        ["sshfs", remote, str(mnt), "-o", ",".join(options)], timeout=MOUNT_TIMEOUT, check=True
    )
    try:
        yield
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=120, check=False)
        _wait_until(lambda: not os.path.ismount(mnt), 30)


def dd(argv: list[str], nbytes: int) -> float:
    """Run dd; MB/s (10^6 bytes) over its wall time, fsync included."""
    started = time.monotonic()
    subprocess.run(["dd", *argv, "status=none"], timeout=DD_TIMEOUT, check=True)
    return nbytes / 1e6 / (time.monotonic() - started)


def one_round(
    server: LoopbackSshd,
    work: Path,
    fs: str,
    *,
    round_no: int,
    size_mib: int,
    rxfs_extra: list[str],
) -> tuple[float, float]:
    """Write a file through one mount, read it back through a fresh one."""
    name = f"{fs}-{round_no}"
    (server.root / name).mkdir()
    mnt = work / f"mnt-{name}"
    mnt.mkdir()

    def mounted() -> AbstractContextManager[None]:
        if fs == "rxfs":
            return rxfs_mount(server, mnt, name, rxfs_extra)
        return sshfs_mount(server, mnt, name)

    nbytes = size_mib * MIB
    with mounted():
        write = dd(
            ["if=/dev/zero", f"of={mnt}/big", "bs=1M", f"count={size_mib}", "conv=fsync"], nbytes
        )
    written = (server.root / name / "big").stat().st_size
    if written != nbytes:
        raise RuntimeError(f"{fs}: {written} bytes landed, expected {nbytes}")
    with mounted():
        read = dd([f"if={mnt}/big", "of=/dev/null", "bs=1M"], nbytes)
    shutil.rmtree(server.root / name)
    return write, read


def report(results: Results) -> None:
    print(f"\n{'':8}{'median MB/s':>12}  {'spread':>15}  runs")
    for (fs, direction), values in sorted(results.runs.items()):
        spread = f"{min(values):.1f}-{max(values):.1f}"
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{fs:5} {direction:5} {statistics.median(values):8.1f}  {spread:>15}  {runs}")
    for direction in ("write", "read"):
        ours, theirs = results.median("rxfs", direction), results.median("sshfs", direction)
        if ours is not None and theirs:
            print(f"ratio rxfs/sshfs {direction}: {ours / theirs:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="MiB per file (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--no-sshfs", action="store_true", help="measure rxfs only")
    parser.add_argument("--no-rxfs", action="store_true", help="measure sshfs only")
    parser.add_argument(
        "-o", dest="rxfs_options", action="append", default=[], help="extra rxfs -o option"
    )
    args = parser.parse_args()
    systems = [fs for fs, off in (("rxfs", args.no_rxfs), ("sshfs", args.no_sshfs)) if not off]
    results = Results()
    with LoopbackSshd() as server, tempfile.TemporaryDirectory(prefix="rxfs-bench-") as tmp:
        for round_no in range(args.rounds):
            for fs in systems:
                write, read = one_round(
                    server,
                    Path(tmp),
                    fs,
                    round_no=round_no,
                    size_mib=args.size,
                    rxfs_extra=args.rxfs_options,
                )
                results.add(fs, "write", write)
                results.add(fs, "read", read)
                print(
                    f"round {round_no + 1} {fs:5}: write {write:6.1f} MB/s  read {read:6.1f} MB/s"
                )
                sys.stdout.flush()
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
