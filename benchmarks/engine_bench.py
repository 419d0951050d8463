"""Sequential throughput of the sftp:// backend through a real mount, against sshfs.

Both file systems mount the same loopback OpenSSH server (:class:`LoopbackSshd`) in turn:

    write   dd if=/dev/zero of=MNT/f bs=1M count=N conv=fsync   (a fresh mount)
    read    dd if=MNT/f of=/dev/null bs=1M                      (another fresh mount,
                                                                  so no page cache helps)

Each round runs every rxfs variant then sshfs; the summary gives the median MB/s of the
rounds with the spread (min-max) and the ratio of each variant to sshfs (medians). Run
as root (sshd and FUSE); needs sshfs for the comparison (``--no-sshfs`` to skip it).
The load average is printed before and after: other work on the machine shows there.
Each phase also reports the CPU seconds per GiB of the mount process and its ssh client
(user + system), a measure of cost that other load on the machine disturbs less.

    .venv/bin/python benchmarks/engine_bench.py --size 256 --rounds 3
    .venv/bin/python benchmarks/engine_bench.py --variant ssh= --variant pmk=transport=paramiko
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
    """Per (file system, metric): one value per round. Metrics: "write" and "read" in
    MB/s, "write cpu" and "read cpu" in CPU seconds per GiB moved."""

    runs: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, fs: str, metric: str, value: float) -> None:
        self.runs.setdefault((fs, metric), []).append(value)

    def median(self, fs: str, metric: str) -> float | None:
        values = self.runs.get((fs, metric))
        return statistics.median(values) if values else None


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@dataclass
class Mounted:
    """A running mount process; :meth:`cpu_seconds` is the user + system time of it, its
    live descendants, and any ssh client logging in with ``key`` (sshfs double-forks its
    ssh, which then belongs to init). Less sensitive than MB/s to other load."""

    pid: int
    key: str

    def cpu_seconds(self) -> float:
        parents: dict[int, int] = {}
        ticks: dict[int, int] = {}
        ssh_clients: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue  # exited meanwhile
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime
            if self._is_our_ssh(entry):
                ssh_clients.add(pid)
        tree = {self.pid}
        grew = True
        while grew:
            children = {pid for pid, parent in parents.items() if parent in tree} - tree
            grew = bool(children)
            tree |= children
        tree |= ssh_clients
        return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")

    def _is_our_ssh(self, entry: Path) -> bool:
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return Path(os.fsdecode(argv[0])).name == "ssh" and any(
            self.key in os.fsdecode(arg) for arg in argv
        )


@contextmanager
def foreground_mount(argv: list[str], mnt: Path, key: Path) -> Iterator[Mounted]:
    """Run a FUSE file system in the foreground; unmount and wait for it on exit."""
    log = mnt.with_suffix(".log").open("ab")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        if not _wait_until(
            lambda: os.path.ismount(mnt) or process.poll() is not None, MOUNT_TIMEOUT
        ):
            raise RuntimeError(f"{argv[0]} did not mount {mnt}")
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited {process.returncode}; see {log.name}")
        yield Mounted(process.pid, str(key))
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], timeout=120, check=False)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def rxfs_mount(
    server: LoopbackSshd, mnt: Path, remote_dir: str, extra: list[str]
) -> AbstractContextManager[Mounted]:
    rxfs = Path(sys.executable).with_name("rxfs")
    options = ",".join([*(f"{k}={v}" for k, v in server.mount_options().items()), *extra])
    return foreground_mount(
        [str(rxfs), "mount", "-f", server.url(remote_dir), str(mnt), "-o", options],
        mnt,
        server.client_key_path,
    )


def sshfs_mount(
    server: LoopbackSshd, mnt: Path, remote_dir: str
) -> AbstractContextManager[Mounted]:
    """sshfs with the same key and known_hosts; defaults otherwise (as a user runs it)."""
    remote = f"{server.user}@{server.host}:{server.root / remote_dir}"
    options = [
        f"IdentityFile={server.client_key_path}",
        f"UserKnownHostsFile={server.known_hosts_path}",
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        f"port={server.port}",
    ]
    return foreground_mount(
        ["sshfs", "-f", remote, str(mnt), "-o", ",".join(options)], mnt, server.client_key_path
    )


def dd(argv: list[str], nbytes: int, mounted: Mounted) -> tuple[float, float]:
    """Run dd; MB/s (10^6 bytes) over its wall time (fsync included), and the mount's
    CPU seconds per GiB meanwhile."""
    cpu = mounted.cpu_seconds()
    started = time.monotonic()
    subprocess.run(["dd", *argv, "status=none"], timeout=DD_TIMEOUT, check=True)
    elapsed = time.monotonic() - started
    return nbytes / 1e6 / elapsed, (mounted.cpu_seconds() - cpu) / (nbytes / (1 << 30))


def one_round(
    server: LoopbackSshd,
    work: Path,
    fs: str,
    *,
    round_no: int,
    size_mib: int,
    rxfs_options: list[str] | None,
    results: Results,
) -> None:
    """Write a file through one mount, read it back through a fresh one."""
    name = f"{fs}-{round_no}"
    (server.root / name).mkdir()
    mnt = work / f"mnt-{name}"
    mnt.mkdir()

    def mounted() -> AbstractContextManager[Mounted]:
        if rxfs_options is not None:
            return rxfs_mount(server, mnt, name, rxfs_options)
        return sshfs_mount(server, mnt, name)

    nbytes = size_mib * MIB
    with mounted() as mount:
        write, write_cpu = dd(
            ["if=/dev/zero", f"of={mnt}/big", "bs=1M", f"count={size_mib}", "conv=fsync"],
            nbytes,
            mount,
        )
    written = (server.root / name / "big").stat().st_size
    if written != nbytes:
        raise RuntimeError(f"{fs}: {written} bytes landed, expected {nbytes}")
    with mounted() as mount:
        read, read_cpu = dd([f"if={mnt}/big", "of=/dev/null", "bs=1M"], nbytes, mount)
    shutil.rmtree(server.root / name)
    results.add(fs, "write", write)
    results.add(fs, "read", read)
    results.add(fs, "write cpu", write_cpu)
    results.add(fs, "read cpu", read_cpu)
    print(
        f"round {round_no + 1} {fs:8} write {write:6.1f} MB/s ({write_cpu:4.1f} cpu s/GiB)"
        f"  read {read:6.1f} MB/s ({read_cpu:4.1f} cpu s/GiB)",
        flush=True,
    )


def report(results: Results) -> None:
    print(f"\n{'':18}{'median':>8}  {'spread':>13}  runs")
    for (fs, metric), values in sorted(results.runs.items()):
        unit = "cpu s/GiB" if metric.endswith("cpu") else "MB/s"
        label = f"{fs} {metric.split()[0]} {unit}"
        spread = f"{min(values):.1f}-{max(values):.1f}"
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{label:26} {statistics.median(values):6.1f}  {spread:>13}  {runs}")
    for fs in sorted({fs for fs, _ in results.runs} - {"sshfs"}):
        for direction in ("write", "read"):
            ours, theirs = (
                results.runs.get((fs, direction)),
                results.runs.get(("sshfs", direction)),
            )
            if not ours or not theirs:
                continue
            # Per round too: the two ran back to back, so load that drifts between rounds
            # moves both.
            of_medians = statistics.median(ours) / statistics.median(theirs)
            paired = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
            print(
                f"ratio {fs}/sshfs {direction}: {of_medians:.2f} (medians), "
                f"{paired:.2f} (median of the rounds' ratios)"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="MiB per file (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--no-sshfs", action="store_true", help="measure rxfs only")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OPT,OPT",
        help="an rxfs mount to measure, with its -o options (default: rxfs=)",
    )
    args = parser.parse_args()
    variants: dict[str, list[str] | None] = {}
    for spec in args.variant or ["rxfs="]:
        name, _, options = spec.partition("=")
        variants[name] = [option for option in options.split(",") if option]
    if not args.no_sshfs:
        variants["sshfs"] = None
    results = Results()
    print(f"load average {os.getloadavg()[0]:.1f}")
    with LoopbackSshd() as server, tempfile.TemporaryDirectory(prefix="rxfs-bench-") as tmp:
        for round_no in range(args.rounds):
            for fs, options in variants.items():
                one_round(
                    server,
                    Path(tmp),
                    fs,
                    round_no=round_no,
                    size_mib=args.size,
                    rxfs_options=options,
                    results=results,
                )
    print(f"load average {os.getloadavg()[0]:.1f}")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
