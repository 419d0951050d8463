"""rxfs against sshfs on one loopback sshd, and rxfs smb:// against the kernel's CIFS
client on one loopback smbd: throughput, small files, latency, memory.

    python -m benchmarks.run [--rounds N] [--quick] [--backend sftp|memory] [--only smb]

Run from the repository root, as root (FUSE, sshd and smbd). See benchmarks/README.md for what
is measured and how to read the output. The Markdown report goes to stdout, progress to
stderr, and everything also to benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.support.faultproxy import FaultProxy
from tests.support.smbd import SHARE as SMB_SHARE
from tests.support.smbd import SMBD_PATH, LoopbackSmbd, SmbdError

from ._mounts import (
    CIFS_VERS,
    BenchmarkError,
    MountedFs,
    RssMonitor,
    SshEndpoint,
    cifs_mount,
    cifs_unavailable,
    cpu_seconds,
    mount,
    option_string,
    rxfs_command,
    ssh_helper_marker,
    sshfs_command,
    unmount,
    watchdog,
)
from ._workloads import (
    GIB,
    KIB,
    MIB,
    Pattern,
    Sample,
    append_from,
    broken_records,
    check_file,
    check_small_files,
    make_file,
    make_tree,
    read_sequential,
    small_files,
    timed_command,
    tree_digest,
    write_sequential,
    write_small_files,
)

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
SYSTEMS = ("rxfs", "sshfs")
SMB_SYSTEMS = ("rxfs", "cifs")  # rxfs smb:// and the kernel's client, on one smbd
PROTOCOLS = ("sftp", "smb")
LATENCY = 0.005  # seconds each way through the fault proxy
SEED = 20240601
# A workload gets this long plus an allowance for its size before its mount is killed: a
# guard against hangs, not a performance floor. On a busy 2-core box sshfs was seen to
# take 308 s for 64 MiB in 4 KiB writes that took 1.5 s a minute later.
BASE_TIMEOUT = 120.0
SECONDS_PER_MIB = 2.0  # a floor of 0.5 MiB/s
SECONDS_PER_FILE = 1.0


@dataclass(frozen=True)
class Sizes:
    seq_1m: int
    seq_4k: int
    small_count: int
    small_max: int
    read: int
    latency_seq_1m: int
    latency_small_count: int
    rss_write: int


FULL = Sizes(GIB, 64 * MIB, 1000, 64 * KIB, GIB, 256 * MIB, 1000, 2 * GIB)
QUICK = Sizes(64 * MIB, 8 * MIB, 100, 64 * KIB, 64 * MIB, 32 * MIB, 100, 256 * MIB)


@dataclass
class Target:
    """One mounted file system under test and what the workloads need to know of it."""

    system: str
    fs: MountedFs
    proxied: bool = False
    protocol: str = "sftp"

    @property
    def path(self) -> Path:
        return self.fs.path

    @property
    def server_dir(self) -> Path | None:
        return self.fs.server_dir


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: str  # "MiB/s" or "files/s"
    proxied: bool
    run: Callable[[Bench, Target, str], Sample]
    timeout: float
    protocol: str = "sftp"  # "smb": on the smbd, rxfs smb:// against cifs

    @property
    def systems(self) -> tuple[str, str]:
        """The two clients compared; the first is rxfs."""
        return SMB_SYSTEMS if self.protocol == "smb" else SYSTEMS

    def label(self, system: str) -> str:
        """The mount this workload runs on for ``system``."""
        return target_label(system, self.proxied, self.protocol)


def target_label(system: str, proxied: bool, protocol: str = "sftp") -> str:
    return f"{'smb-' if protocol == 'smb' else ''}{system}{'-proxied' if proxied else ''}"


@dataclass
class Bench:
    """State shared by the workloads of one run."""

    sizes: Sizes
    pattern: Pattern
    files: list[bytes]
    latency_files: list[bytes]
    log: Callable[[str], None]
    tree: Path  # a local source tree, and tree.tar of it
    tree_entries: int
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)

    # -- workloads: each returns the timed sample after checking the bytes ------------

    def sequential_write(self, target: Target, tag: str, size: int, block: int) -> Sample:
        name = f"seq-{tag}.bin"
        sample = write_sequential(target.path / name, self.pattern, size, block)
        self._check(target, name, lambda path: check_file(path, size, self.pattern.sha256(size)))
        return sample

    def small_write(self, target: Target, tag: str, contents: list[bytes]) -> Sample:
        name = f"small-{tag}"
        (target.path / name).mkdir()
        sample = write_small_files(target.path / name, contents)
        self._check(target, name, lambda path: check_small_files(path, contents))
        return sample

    def sequential_read(self, target: Target, tag: str) -> Sample:
        # A name never read before: neither client's cache can hold any of it.
        name = f"read-{tag}.bin"
        size = self.sizes.read
        home = target.server_dir or target.path
        make_file(home / name, self.pattern, size)
        os.sync()
        sample = read_sequential(target.path / name, self.pattern, size)
        (home / name).unlink()
        return sample

    # A source tree through the mount: tar x, then walks (find, du, ls -laR, twice each:
    # the second run is what the kernel's caches can answer), rsync -a, rm -rf. Each
    # step makes what it needs when run alone (--only).

    def tree_extract(self, target: Target, tag: str) -> Sample:
        name = _tree_name(tag)
        (target.path / name).mkdir()
        sample = timed_command(
            ["tar", "-xf", str(self.tree.with_suffix(".tar")), "-C", str(target.path / name)],
            self.tree_entries,
        )
        self._check(target, name, self._check_tree, remove=False)
        return sample

    def tree_walk(self, target: Target, tag: str) -> Sample:
        root = self._extracted(target, tag)
        walks = [["find", str(root)], ["du", "-s", str(root)], ["ls", "-laR", str(root)]]
        seconds = sum(timed_command(argv, 0).seconds for argv in walks * 2)
        return Sample(seconds, 0, self.tree_entries * len(walks) * 2)

    def tree_rsync(self, target: Target, tag: str) -> Sample:
        name = f"rsync-{tag}"
        sample = timed_command(
            ["rsync", "-a", f"{self.tree}/", str(target.path / name)], self.tree_entries
        )
        self._check(target, name, self._check_tree)
        return sample

    def tree_remove(self, target: Target, tag: str) -> Sample:
        return timed_command(["rm", "-rf", str(self._extracted(target, tag))], self.tree_entries)

    def _extracted(self, target: Target, tag: str) -> Path:
        """The tree tree_extract left for this system and round (extracted untimed if
        that workload did not run)."""
        root = target.path / _tree_name(tag)
        if not root.exists():
            root.mkdir()
            timed_command(["tar", "-xf", str(self.tree.with_suffix(".tar")), "-C", str(root)], 0)
        return root

    def _check_tree(self, path: Path) -> None:
        if tree_digest(path) != tree_digest(self.tree):
            raise BenchmarkError(f"{path}: the tree differs from the one written")

    def _check(
        self, target: Target, name: str, check: Callable[[Path], None], *, remove: bool = True
    ) -> None:
        """Check the bytes on the server (through the mount for memory://, which has no
        server side), then remove them and flush the server's page cache so the next run
        does not pay for this one's writeback."""
        home = target.server_dir or target.path
        check(home / name)
        if not remove:
            return
        if (home / name).is_dir():
            shutil.rmtree(home / name)
        else:
            (home / name).unlink()
        os.sync()


def _tree_name(tag: str) -> str:
    """One extracted tree per system and round, whichever tree workload ``tag`` is of."""
    return f"tree-{tag.split('-', 1)[1]}"


def workloads(sizes: Sizes) -> list[Workload]:
    def timeout(nbytes: int, files: int = 1) -> float:
        return BASE_TIMEOUT + nbytes / MIB * SECONDS_PER_MIB + files * SECONDS_PER_FILE

    small_bytes = sizes.small_count * sizes.small_max
    latency_small_bytes = sizes.latency_small_count * sizes.small_max
    lat = f"{LATENCY * 1000:g} ms each way"
    on_sftp = [
        Workload(
            "seq_write_1m",
            f"write {_size(sizes.seq_1m)} in 1 MiB blocks, fsync, close",
            "MiB/s",
            False,
            lambda b, t, tag: b.sequential_write(t, tag, b.sizes.seq_1m, MIB),
            timeout(sizes.seq_1m),
        ),
        Workload(
            "seq_write_4k",
            f"write {_size(sizes.seq_4k)} in 4 KiB blocks, fsync, close",
            "MiB/s",
            False,
            lambda b, t, tag: b.sequential_write(t, tag, b.sizes.seq_4k, 4 * KIB),
            timeout(sizes.seq_4k),
        ),
        Workload(
            "small_files",
            f"create {sizes.small_count} files of 0-64 KiB",
            "files/s",
            False,
            lambda b, t, tag: b.small_write(t, tag, b.files),
            timeout(small_bytes, sizes.small_count),
        ),
        Workload(
            "seq_read",
            f"read {_size(sizes.read)} in 1 MiB blocks (uncached)",
            "MiB/s",
            False,
            lambda b, t, tag: b.sequential_read(t, tag),
            timeout(sizes.read),
        ),
        Workload(
            "tree_extract",
            "tar x of a source tree (entries/s)",
            "files/s",
            False,
            lambda b, t, tag: b.tree_extract(t, tag),
            timeout(0, 2000),
        ),
        Workload(
            "tree_walk",
            "find, du -s, ls -laR of it, twice each (entries/s)",
            "files/s",
            False,
            lambda b, t, tag: b.tree_walk(t, tag),
            timeout(0, 2000),
        ),
        Workload(
            "tree_rsync",
            "rsync -a of the tree into the mount (entries/s)",
            "files/s",
            False,
            lambda b, t, tag: b.tree_rsync(t, tag),
            timeout(0, 2000),
        ),
        Workload(
            "tree_remove",
            "rm -rf of the extracted tree (entries/s)",
            "files/s",
            False,
            lambda b, t, tag: b.tree_remove(t, tag),
            timeout(0, 2000),
        ),
        Workload(
            "latency_seq_write_1m",
            f"write {_size(sizes.latency_seq_1m)} in 1 MiB blocks, fsync, close; {lat}",
            "MiB/s",
            True,
            lambda b, t, tag: b.sequential_write(t, tag, b.sizes.latency_seq_1m, MIB),
            timeout(sizes.latency_seq_1m),
        ),
        Workload(
            "latency_small_files",
            f"create {sizes.latency_small_count} files of 0-64 KiB; {lat}",
            "files/s",
            True,
            lambda b, t, tag: b.small_write(t, tag, b.latency_files),
            timeout(latency_small_bytes, sizes.latency_small_count),
        ),
    ]
    # On the loopback smbd, three of them again, with the same sizes and bytes.
    on_smb = [
        replace(w, key=f"smb_{w.key}", protocol="smb")
        for w in on_sftp
        if w.key in ("seq_write_1m", "small_files", "seq_read")
    ]
    return [*on_sftp, *on_smb]


def _size(nbytes: int) -> str:
    if nbytes >= GIB and nbytes % GIB == 0:
        return f"{nbytes // GIB} GiB"
    return f"{nbytes // MIB} MiB"


# -- mounts ------------------------------------------------------------------------------


@dataclass
class Servers:
    """The sshd, the proxy in front of it, and how each client reaches either; the
    smbd when smb:// workloads run."""

    sshd: LoopbackSshd
    proxy: FaultProxy
    known_hosts: Path  # trusts the host key at the sshd's and at the proxy's port
    smbd: LoopbackSmbd | None = None

    def endpoint(self, proxied: bool) -> SshEndpoint:
        port = self.proxy.port if proxied else self.sshd.port
        return SshEndpoint(
            self.sshd.user, self.sshd.host, port, self.sshd.client_key_path, self.known_hosts
        )


def trust_proxy_port(sshd: LoopbackSshd, proxy: FaultProxy, path: Path) -> Path:
    """A known_hosts file that also names the proxy's port, so that both clients keep
    strict host key checking when they connect through it."""
    lines = sshd.known_hosts_path.read_text().splitlines()
    direct = f"[{sshd.host}]:{sshd.port} "
    proxied = [line.replace(direct, f"[{proxy.host}]:{proxy.port} ", 1) for line in lines]
    path.write_text("\n".join([*lines, *proxied]) + "\n")
    return path


class Mounts:
    """Every mount of the run; all are taken down by :meth:`close`, whatever happened."""

    def __init__(
        self,
        servers: Servers,
        work: Path,
        backend: str,
        rxfs_options: list[str],
        smb_options: list[str] | None = None,
    ):
        self._servers = servers
        self._work = work
        self._backend = backend
        self._rxfs_options = rxfs_options
        self._smb_options = smb_options or []
        self._mounted: list[MountedFs] = []

    def start(self, system: str, proxied: bool, label: str, remote_label: str = "") -> Target:
        """Mount ``remote_label`` (default: ``label``) of the server at MNT-``label``."""
        remote = self._servers.sshd.root / (remote_label or label)
        remote.mkdir(exist_ok=True)
        mountpoint = self._work / f"mnt-{label}"
        log = self._work / f"{label}.log"
        endpoint = self._servers.endpoint(proxied)
        helper_marker = None
        if system == "sshfs":
            argv = sshfs_command(endpoint, remote, mountpoint)
            server_dir: Path | None = remote
            helper_marker = ssh_helper_marker(endpoint)
        elif self._backend == "memory":
            argv = rxfs_command("memory://", mountpoint, self._extra_options())
            server_dir = None
        else:
            url = f"sftp://{endpoint.user}@{endpoint.host}:{endpoint.port}{remote}"
            options = {
                "IdentityFile": str(endpoint.identity_file),
                "UserKnownHostsFile": str(endpoint.known_hosts),
                **self._extra_options(),
            }
            argv = rxfs_command(url, mountpoint, options)
            server_dir = remote
        mounted = mount(system, argv, mountpoint, log, server_dir, helper_marker=helper_marker)
        self._mounted.append(mounted)
        return Target(system, mounted, proxied)

    def start_smb(self, system: str, label: str, cifs_options: dict[str, str | None]) -> Target:
        """Mount directory ``label`` of the smbd's share at MNT-``label``: rxfs smb://,
        or the kernel's client (``system`` "cifs") with ``cifs_options`` added to the
        login and port. Both log in as root with one credentials file."""
        smbd = self._servers.smbd
        assert smbd is not None
        remote = smbd.root / label
        remote.mkdir(exist_ok=True)
        mountpoint = self._work / f"mnt-{label}"
        log = self._work / f"{label}.log"
        credentials = str(smbd.credentials_file())
        if system == "cifs":
            unc = f"//{urlsplit(smbd.url()).hostname}/{SMB_SHARE}/{label}"
            login = {"port": str(smbd.port), "credentials": credentials}
            mounted = cifs_mount(unc, mountpoint, {**login, **cifs_options}, log, remote)
        else:
            options = {"credentials": credentials, **_options(self._smb_options)}
            argv = rxfs_command(smbd.url(label), mountpoint, options)
            mounted = mount(system, argv, mountpoint, log, remote)
        self._mounted.append(mounted)
        return Target(system, mounted, False, "smb")

    def stop(self, target: Target) -> None:
        self._mounted.remove(target.fs)
        problems = unmount(target.fs)
        if problems:
            raise BenchmarkError("\n".join(problems))

    def close(self) -> list[str]:
        problems = []
        for mounted in reversed(self._mounted):
            problems += unmount(mounted)
        self._mounted.clear()
        return problems

    def _extra_options(self) -> dict[str, str]:
        return _options(self._rxfs_options)


def _options(pairs: list[str]) -> dict[str, str]:
    return dict(option.partition("=")[::2] for option in pairs)


# -- the run -----------------------------------------------------------------------------


def run_rounds(
    bench: Bench,
    targets: dict[str, Target],
    rounds: int,
    chosen: list[Workload],
    deadline: float,
) -> None:
    for round_no in range(rounds):
        for workload in chosen:
            # rxfs first in even rounds, the other client first in odd ones: neither
            # always goes first.
            order = workload.systems if round_no % 2 == 0 else workload.systems[::-1]
            for system in order:
                if time.monotonic() > deadline:
                    raise BenchmarkError("the run exceeded --timeout")
                target = targets.get(workload.label(system))
                if target is None:
                    continue
                tag = f"{workload.key}-{system}-{round_no}"
                with watchdog(workload.timeout, target.fs.abort, f"{tag}"):
                    sample = workload.run(bench, target, tag)
                bench.samples.setdefault(workload.key, {}).setdefault(system, []).append(sample)
                bench.log(f"round {round_no + 1} {system:5} {workload.key:22} {_rate(sample)}")


def _rate(sample: Sample) -> str:
    if sample.files > 1:
        return f"{sample.files_per_s:9.1f} files/s ({sample.seconds:.2f} s)"
    return f"{sample.mib_per_s:9.1f} MiB/s ({sample.seconds:.2f} s)"


def measure_rss_while_writing(
    bench: Bench, mounts: Mounts, monitor: RssMonitor, systems: list[str]
) -> dict[str, dict[str, float]]:
    """Peak RSS of a fresh mount process while one file of ``rss_write`` bytes is written
    in 1 MiB blocks (fsync, close): the write-behind must keep memory flat."""
    results = {}
    size = bench.sizes.rss_write
    for system in systems:
        target = mounts.start(system, False, f"rss-{system}")
        pids = target.fs.pids
        for pid in pids:
            monitor.watch(pid)
        idle = sum(monitor.peak(pid) for pid in pids)
        with watchdog(BASE_TIMEOUT + size / MIB * SECONDS_PER_MIB, target.fs.abort, "rss"):
            sample = bench.sequential_write(target, f"rss-{system}", size, MIB)
        peak = sum(monitor.peak(pid) for pid in pids)
        cpu = sum(cpu_seconds(pid) for pid in pids)
        mounts.stop(target)
        results[process_name(target)] = {
            "idle_rss_bytes": idle,
            "peak_rss_bytes": peak,
            "cpu_seconds": cpu,
            "mib_per_s": sample.mib_per_s,
            "bytes_written": size,
        }
        bench.log(f"rss   {system:5} writing {_size(size)}: peak {peak / MIB:.0f} MiB")
    return results


APPEND_RECORDS = 1000
EDIT_ROUNDS = 30


def coherence_checks(bench: Bench, mounts: Mounts, systems: list[str]) -> dict[str, object]:
    """Two things a user of a shared directory relies on, checked on each client (not
    timed): appends from two mounts at once land whole, and a file edited on the server
    reads back fresh through the mount at the next open."""
    results: dict[str, object] = {}
    for system in systems:
        first = mounts.start(system, False, f"coherence-{system}")
        second = mounts.start(system, False, f"coherence-{system}-2", f"coherence-{system}")
        try:
            results[system] = {
                "append_two_mounts": _append_two_mounts(first, second),
                "edit_on_server": _edit_on_server(first),
            }
        finally:
            mounts.stop(second)
            mounts.stop(first)
        bench.log(f"coherence {system:5} {results[system]}")
    return results


def _append_two_mounts(first: Target, second: Target) -> dict[str, int | str]:
    (first.path / "log").write_bytes(b"")
    failures: list[BaseException] = []
    writers = [
        threading.Thread(target=append_from, args=(t.path / "log", i, APPEND_RECORDS, failures))
        for i, t in enumerate((first, second))
    ]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(BASE_TIMEOUT)
    assert first.server_dir is not None
    broken, total = broken_records((first.server_dir / "log").read_bytes(), 2, APPEND_RECORDS)
    return {"broken_records": broken, "records": total, "errors": "; ".join(map(str, failures))}


def _edit_on_server(target: Target) -> dict[str, int]:
    """Each round reads the file through the mount (so the client caches it), changes
    it on the server (grows, shrinks, same size with new bytes: in turn) and reads it
    through the mount again at once."""
    assert target.server_dir is not None
    rng = random.Random(SEED)
    server, mounted = target.server_dir / "edited", target.path / "edited"
    server.write_bytes(rng.randbytes(3000))
    stale = 0
    for round_no in range(EDIT_ROUNDS):
        mounted.read_bytes()
        old = server.read_bytes()
        if round_no % 3 == 0:
            new = old + rng.randbytes(rng.randint(1, 5000))
        elif round_no % 3 == 1:
            new = old[: rng.randint(1, len(old) - 1)]
        else:
            new = rng.randbytes(len(old))
        server.write_bytes(new)
        stale += mounted.read_bytes() != new
    return {"stale_reads": stale, "rounds": EDIT_ROUNDS}


def measure_memory(
    args: argparse.Namespace,
    bench: Bench,
    mounts: Mounts,
    monitor: RssMonitor,
    targets: dict[str, Target],
) -> dict[str, object]:
    """Peak RSS and CPU of each mount over the rounds, then the 2 GiB write run."""
    memory: dict[str, object] = {}
    for target in targets.values():
        if not target.fs.pids:
            memory[process_name(target)] = "n/a: a kernel client, no process"
            continue
        name = process_name(target) + (", through the proxy" if target.proxied else ", direct")
        memory[name] = {
            "peak_rss_bytes": sum(monitor.peak(pid) for pid in target.fs.pids),
            "cpu_seconds": sum(cpu_seconds(pid) for pid in target.fs.pids),
        }
    size = _size(bench.sizes.rss_write)
    if args.no_rss:
        pass
    elif args.backend == "memory":
        memory[f"writing {size}"] = "n/a: memory:// keeps files in RAM"
    else:
        for name, usage in measure_rss_while_writing(
            bench, mounts, monitor, list(SYSTEMS)
        ).items():
            memory[f"{name}, fresh mount writing {size}"] = usage
    return memory


def process_name(target: Target) -> str:
    """sshfs (and rxfs with transport=openssh) leave the cipher to an ssh process; its
    memory and CPU count with the mount's."""
    scheme = " smb://" if target.protocol == "smb" and target.system == "rxfs" else ""
    return f"{target.system}{scheme}{'+ssh' if target.fs.helpers else ''}"


# -- report ------------------------------------------------------------------------------


def summarize(chosen: list[Workload], bench: Bench) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for workload in chosen:
        per_system = bench.samples.get(workload.key, {})
        row: dict[str, object] = {"key": workload.key, "title": workload.title}
        row["unit"] = workload.unit
        row["protocol"] = workload.protocol
        medians = {}
        for system, samples in per_system.items():
            rates = [s.files_per_s if workload.unit == "files/s" else s.mib_per_s for s in samples]
            medians[system] = statistics.median(rates)
            row[system] = {
                "median": medians[system],
                "min": min(rates),
                "max": max(rates),
                "samples": [asdict(s) for s in samples],
            }
        ours, theirs = workload.systems
        if medians.get(ours) and medians.get(theirs):
            row[f"ratio_{ours}_over_{theirs}"] = medians[ours] / medians[theirs]
        rows.append(row)
    return rows


def markdown(
    meta: dict[str, object], rows: list[dict[str, object]], memory: dict[str, object]
) -> str:
    sftp_rows = [row for row in rows if row["protocol"] == "sftp"]
    versus = f" vs sshfs ({meta['rxfs_url']})" if sftp_rows else ""
    lines = [
        f"## rxfs{versus}, {meta['rounds']} round(s){', --quick' if meta['quick'] else ''}",
        "",
        f"{meta['date']}, {meta['machine']}; rxfs {meta['rxfs_commit']}, {meta['sshfs']}."
        " Medians with (min-max); ratio of medians, higher = rxfs faster.",
    ]
    if sftp_rows:
        lines += ["", "| workload | unit | rxfs | sshfs | rxfs/sshfs |"]
        lines.append("|---|---|---:|---:|---:|")
    for row in sftp_rows:
        cells = [_cell(row.get(system)) for system in SYSTEMS]
        ratio = row.get("ratio_rxfs_over_sshfs")
        ratio_text = f"{ratio:.2f}" if isinstance(ratio, float) else "n/a"
        lines.append(
            f"| {row['title']} | {row['unit']} | {cells[0]} | {cells[1]} | {ratio_text} |"
        )
    lines += ["", "| mount process | peak RSS | CPU s |", "|---|---:|---:|"]
    for name, usage in memory.items():
        if isinstance(usage, dict) and "peak_rss_bytes" in usage:
            cpu = usage.get("cpu_seconds")
            cpu_text = f"{cpu:.1f}" if isinstance(cpu, float) else ""
            lines.append(f"| {name} | {usage['peak_rss_bytes'] / MIB:.0f} MiB | {cpu_text} |")
        else:
            lines.append(f"| {name} | {usage} | |")
    return "\n".join(lines) + "\n"


def smb_markdown(smb: dict[str, object], rows: list[dict[str, object]], other_url: str) -> str:
    """The smb:// table: rxfs against cifs with their ratio when the kernel's client
    ran (else one line saying why not, and no ratio), and rxfs on ``other_url`` (sftp://
    or memory://) of the same run beside it where the same workload ran there."""
    smb_rows = [row for row in rows if row["protocol"] == "smb"]
    if not smb_rows:
        return ""
    rxfs_session = smb["rxfs_session"]
    assert isinstance(rxfs_session, dict)
    lines = [
        "",
        f"## rxfs smb:// vs the kernel's CIFS client, one loopback smbd ({smb['samba']})",
        "",
        f"rxfs `{smb['rxfs_url']}` negotiated {_session_text(rxfs_session)}.",
    ]
    cifs_ran = smb.get("cifs_unavailable") is None
    if cifs_ran:
        cifs_session = smb.get("cifs_session")
        negotiated = (
            f" negotiated {_session_text(cifs_session)}" if isinstance(cifs_session, dict) else ""
        )
        lines.append(f"cifs `mount -t cifs -o {smb['cifs_options']}`{negotiated}.")
    else:
        lines.append(f"Kernel CIFS not measured: {smb['cifs_unavailable']}.")
    sftp = {row["key"]: row.get("rxfs") for row in rows if row["protocol"] == "sftp"}
    with_sftp = any(sftp.get(str(row["key"]).removeprefix("smb_")) for row in smb_rows)
    header = ["workload", "unit", "rxfs smb://"]
    header += ["cifs", "rxfs/cifs"] if cifs_ran else []
    header += [f"rxfs {other_url} (same run)"] if with_sftp else []
    lines += ["", "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in smb_rows:
        cells = [str(row["title"]), str(row["unit"]), _cell(row.get("rxfs"))]
        if cifs_ran:
            ratio = row.get("ratio_rxfs_over_cifs")
            ratio_text = f"{ratio:.2f}" if isinstance(ratio, float) else "n/a"
            cells += [_cell(row.get("cifs")), ratio_text]
        if with_sftp:
            cells.append(_cell(sftp.get(str(row["key"]).removeprefix("smb_"))))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _session_text(session: dict[str, str]) -> str:
    encryption = session["encryption"]
    sealed = f"encrypted with {encryption}" if encryption != "-" else "not encrypted"
    return f"{session['dialect']}, {sealed}, signed with {session['signing']}"


def coherence_markdown(coherence: dict[str, object]) -> str:
    if not coherence:
        return ""
    lines = [
        "",
        "| coherence check | " + " | ".join(coherence) + " |",
        "|---|" + "---:|" * len(coherence),
    ]
    checks = [
        (
            "append from two mounts: records broken or lost",
            "append_two_mounts",
            "broken_records",
            "records",
        ),
        (
            "edit on server, read through mount: stale reads",
            "edit_on_server",
            "stale_reads",
            "rounds",
        ),
    ]
    for title, key, bad, total in checks:
        cells = []
        for result in coherence.values():
            assert isinstance(result, dict)
            check = result[key]
            errors = f" ({check['errors']})" if check.get("errors") else ""
            cells.append(f"{check[bad]} of {check[total]}{errors}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(stats: object) -> str:
    if not isinstance(stats, dict):
        return "n/a"
    return f"{stats['median']:.1f} ({stats['min']:.1f}-{stats['max']:.1f})"


def describe_machine(rxfs_url: str, rounds: int, quick: bool, sizes: Sizes) -> dict[str, object]:
    def output(argv: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            lines = (done.stdout + done.stderr).strip().splitlines()
            # sshfs --version starts with fusermount3's version; keep the line naming argv[0].
            return next((line for line in lines if argv[0] in line.lower()), lines[0])
        return "unknown"

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "load_average_at_start": os.getloadavg(),
        "rxfs_commit": output(["git", "describe", "--always", "--dirty"]),
        "sshfs": output(["sshfs", "--version"]),
        "ssh": output(["ssh", "-V"]),
        "python": platform.python_version(),
        "rxfs_url": rxfs_url,
        "rounds": rounds,
        "quick": quick,
        "sizes": asdict(sizes),
        "latency_each_way_s": LATENCY,
    }


# -- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (default 3; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="1 round, small sizes: a smoke test")
    parser.add_argument(
        "--backend",
        choices=("sftp", "memory"),
        default="sftp",
        help="rxfs on sftp:// to the same sshd (default), or memory:// to test the harness",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY",
        help="run only this workload, or every workload of sftp or smb (repeatable)",
    )
    parser.add_argument("--no-rss", action="store_true", help="skip the 2 GiB memory run")
    parser.add_argument(
        "--no-coherence", action="store_true", help="skip the two-client coherence checks"
    )
    parser.add_argument(
        "-o",
        dest="rxfs_options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra rxfs mount option for sftp:// (or memory://) (repeatable)",
    )
    parser.add_argument(
        "--smb-option",
        dest="smb_options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra rxfs mount option for smb:// (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=7200.0, help="bound on the run (s)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds wants at least 1")
    known = [w.key for w in workloads(QUICK)]
    for only in args.only:
        if only not in (*known, *PROTOCOLS):
            parser.error(f"--only {only}: expected one of {', '.join([*PROTOCOLS, *known])}")
    return args


def _terminate_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"signal {signum}: cleaning up")


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rxfs-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def start_smbd(base: Path) -> Iterator[LoopbackSmbd]:
    try:
        server = LoopbackSmbd(base)
        server.start()
    except SmbdError as exc:
        raise BenchmarkError(f"{exc} (--only sftp runs without smbd)") from None
    try:
        yield server
    finally:
        server.stop()


def mount_targets(
    backend: str, chosen: list[Workload], mounts: Mounts, log: Callable[[str], None]
) -> dict[str, Target]:
    """The sftp:// mounts the chosen workloads run on (direct, through the proxy), by label."""
    targets: dict[str, Target] = {}
    for proxied in sorted({w.proxied for w in chosen if w.protocol == "sftp"}):
        for system in SYSTEMS:
            if proxied and system == "rxfs" and backend == "memory":
                continue  # memory:// has no network to delay
            label = target_label(system, proxied)
            targets[label] = mounts.start(system, proxied, label)
            log(f"mounted {label} at {targets[label].path}")
    return targets


def mount_smb(
    mounts: Mounts, smbd: LoopbackSmbd, targets: dict[str, Target], log: Callable[[str], None]
) -> dict[str, object]:
    """Mount rxfs smb:// on the smbd, then, where the kernel can, its CIFS client with
    what rxfs negotiated (dialect, encryption) and cache=strict. Returns what each
    negotiated, and why cifs did not run if it did not: the rounds go on with rxfs."""
    rxfs_label = target_label("rxfs", False, "smb")
    targets[rxfs_label] = mounts.start_smb("rxfs", rxfs_label, {})
    log(f"mounted {rxfs_label} at {targets[rxfs_label].path}")
    sessions = _sessions(smbd)
    if len(sessions) != 1:
        raise BenchmarkError(f"smbd has {len(sessions)} sessions with rxfs alone mounted")
    info: dict[str, object] = {
        "samba": "Samba " + _first_line([SMBD_PATH, "--version"]).removeprefix("Version "),
        "rxfs_url": smbd.url(rxfs_label),
        "rxfs_session": sessions[0],
    }
    cifs_options: dict[str, str | None] = {"cache": "strict"}
    if sessions[0]["dialect"] in CIFS_VERS:
        cifs_options["vers"] = CIFS_VERS[sessions[0]["dialect"]]
    if sessions[0]["encryption"] != "-":
        cifs_options["seal"] = None
    info["cifs_options"] = option_string(cifs_options)
    reason = cifs_unavailable()
    if reason is None:
        cifs_label = target_label("cifs", False, "smb")
        try:
            targets[cifs_label] = mounts.start_smb("cifs", cifs_label, cifs_options)
        except BenchmarkError as exc:
            reason = str(exc)
        else:
            log(f"mounted {cifs_label} at {targets[cifs_label].path}")
            others = [s for s in _sessions(smbd) if s["client"] != sessions[0]["client"]]
            info["cifs_session"] = others[0] if others else "unknown"
    info["cifs_unavailable"] = reason
    if reason is not None:
        log(f"kernel CIFS not measured: {reason}; rxfs smb:// runs alone")
    return info


def _sessions(smbd: LoopbackSmbd) -> list[dict[str, str]]:
    try:
        return smbd.sessions()
    except SmbdError as exc:
        raise BenchmarkError(str(exc)) from None


def _first_line(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return (done.stdout + done.stderr).strip().splitlines()[0]
    return "unknown"


def prepare(sizes: Sizes, log: Callable[[str], None], tree_root: Path) -> Bench:
    """Seeded data for every workload, made before anything is timed."""
    tree_entries = make_tree(tree_root / "tree", SEED + 3)
    subprocess.run(
        ["tar", "-cf", str(tree_root / "tree.tar"), "-C", str(tree_root / "tree"), "."],
        check=True,
    )
    bench = Bench(
        sizes,
        Pattern(SEED),
        small_files(SEED + 1, sizes.small_count, sizes.small_max),
        small_files(SEED + 2, sizes.latency_small_count, sizes.small_max),
        log,
        tree_root / "tree",
        tree_entries,
    )
    for size in {sizes.seq_1m, sizes.seq_4k, sizes.latency_seq_1m, sizes.rss_write}:
        bench.pattern.sha256(size)
    return bench


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.getuid() != 0:
        print("benchmarks.run: run as root (FUSE mounts and a loopback sshd)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate_on_sigterm)
    sizes = QUICK if args.quick else FULL
    chosen = [
        w
        for w in workloads(sizes)
        if not args.only or w.key in args.only or w.protocol in args.only
    ]
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    log("preparing data")
    tree_root = Path(tempfile.mkdtemp(prefix="rxfs-bench-tree-"))
    bench = prepare(sizes, log, tree_root)
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tree_root, True)
        work = stack.enter_context(scratch())
        sshd = stack.enter_context(LoopbackSshd())
        proxy = stack.enter_context(FaultProxy((sshd.host, sshd.port), latency=LATENCY))
        smbd = None
        if any(w.protocol == "smb" for w in chosen):
            smbd = stack.enter_context(start_smbd(work / "smbd"))
        known_hosts = trust_proxy_port(sshd, proxy, work / "known_hosts")
        servers = Servers(sshd, proxy, known_hosts, smbd)
        rxfs_url = "memory://" if args.backend == "memory" else "sftp://"
        meta = describe_machine(rxfs_url, args.rounds, args.quick, sizes)
        mounts = Mounts(servers, work, args.backend, args.rxfs_options, args.smb_options)
        stack.callback(lambda: problems.extend(mounts.close()))
        monitor = stack.enter_context(RssMonitor())

        targets = mount_targets(args.backend, chosen, mounts, log)
        if smbd is not None:
            meta["smb"] = mount_smb(mounts, smbd, targets, log)
        for target in targets.values():
            for pid in target.fs.pids:
                monitor.watch(pid)

        deadline = started + args.timeout
        run_rounds(bench, targets, args.rounds, chosen, deadline)

        memory = measure_memory(args, bench, mounts, monitor, targets)

        coherence: dict[str, object] = {}
        if not args.no_coherence and args.backend == "sftp":
            coherence = coherence_checks(bench, mounts, list(SYSTEMS))

        rows = summarize(chosen, bench)
        report = markdown(meta, rows, memory) + coherence_markdown(coherence)
        smb = meta.get("smb")
        if isinstance(smb, dict):
            report += smb_markdown(smb, rows, rxfs_url)
        meta["elapsed_s"] = time.monotonic() - started
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"meta": meta, "workloads": rows, "memory": memory, "coherence": coherence},
                indent=2,
            )
            + "\n"
        )
        print(report)
        log(f"done in {meta['elapsed_s']:.0f} s; JSON in {args.json}")
    for problem in problems:
        log(f"FAILED at unmount: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        print(f"benchmarks.run: FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
