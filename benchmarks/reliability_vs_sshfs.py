"""Run the reliability scenarios of tests/reliability on rxfs and on ``sshfs -o
reconnect`` against the same loopback sshd, and print what each one did.

    .venv/bin/python -m benchmarks.reliability_vs_sshfs [--size-mib 128]

Not part of CI: sshfs may hang or lose data here, which is the point of the comparison.
Each scenario gets a fresh sshd, proxy, server directory and mount; every process and
mount is ours and is taken down by PID / mount point, with bounded waits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.reliability.rig import (
    MIB,
    Endpoint,
    RestartableSshd,
    child_pids,
    endpoint_via,
    fresh_server_dir,
    pattern,
    wait_until,
)
from tests.reliability.scenarios import (
    Outcome,
    concurrent_writers,
    copy_with_cuts,
    sshd_restart,
    stalled_server,
)
from tests.support.faultproxy import FaultProxy

from ._mounts import is_mounted

RXFS = Path(sys.executable).with_name("rxfs")
RXFS_OPTIONS = {"timeout": "5", "reconnect_timeout": "10", "ConnectTimeout": "3"}
MOUNT_TIMEOUT = 20.0


class Mounted:
    """One foreground mount process (rxfs or sshfs) of ``server`` on ``path``."""

    def __init__(self, system: str, endpoint: Endpoint, server: Path, path: Path) -> None:
        self.system, self.server, self.path = system, server, path
        path.mkdir(parents=True, exist_ok=True)
        if system == "rxfs":
            options = {**endpoint.rxfs_options(), **RXFS_OPTIONS}
            argv = [str(RXFS), "mount", "-f", endpoint.sftp_url(server), str(path), "-o"]
            argv.append(",".join(f"{k}={v}" for k, v in options.items()))
        else:
            argv = endpoint.sshfs_argv(server, path)
        self.log = path.with_suffix(".log")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        if not wait_until(lambda: is_mounted(path) or self.process.poll() is not None, 20):
            raise RuntimeError(f"{system} did not mount:\n{self.log.read_text()}")
        if self.process.poll() is not None:
            raise RuntimeError(f"{system} exited:\n{self.log.read_text()}")

    def close(self) -> None:
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], timeout=30, check=False)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        for pid in [self.process.pid, *child_pids(self.process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)


@contextlib.contextmanager
def setup(system: str, work: Path) -> Iterator[tuple[LoopbackSshd, FaultProxy, Mounted]]:
    root = work / "root"
    root.mkdir()
    with LoopbackSshd(root=root) as sshd, FaultProxy((sshd.host, sshd.port)) as proxy:
        endpoint = endpoint_via(proxy, sshd, work)
        mounted = Mounted(system, endpoint, fresh_server_dir(sshd, "d"), work / "mnt")
        try:
            yield sshd, proxy, mounted
        finally:
            mounted.close()


def scenario_copy(system: str, work: Path, size: int) -> Outcome:
    with setup(system, work) as (sshd, _, m):
        return copy_with_cuts(m.path, m.server, work, sshd.drop_connections, size=size)


def scenario_stall(system: str, work: Path, size: int) -> Outcome:
    with setup(system, work) as (_, proxy, m):
        return stalled_server(m.path, m.server, proxy.stall, proxy.resume, give_up_after=60)


def scenario_restart(system: str, work: Path, size: int) -> Outcome:
    with setup(system, work) as (sshd, _, m):
        restartable = RestartableSshd(sshd)
        try:
            return sshd_restart(m.path, m.server, restartable.kill, restartable.relaunch)
        finally:
            restartable.close()


def scenario_concurrent(system: str, work: Path, size: int) -> Outcome:
    with setup(system, work) as (_, proxy, m):
        return concurrent_writers(m.path, m.server, proxy.cut_all)


def scenario_kill_9(system: str, work: Path, size: int) -> Outcome:
    """kill -9 the mount process; clean up the way each tool offers; mount again."""
    outcome = Outcome()
    with setup(system, work) as (sshd, proxy, m):
        data = pattern(5, MIB)
        (m.path / "kept.bin").write_bytes(data)
        m.kill()
        cleanup = (
            [str(RXFS), "umount", str(m.path)]
            if system == "rxfs"
            else ["fusermount3", "-u", str(m.path)]
        )
        done = subprocess.run(cleanup, capture_output=True, text=True, timeout=60, check=False)
        outcome.exit_codes.append(done.returncode)
        if done.stderr.strip():
            outcome.errors.append(done.stderr.strip())
        outcome.note(f"after '{Path(cleanup[0]).name} {cleanup[1]}': mounted={is_mounted(m.path)}")
        again = Mounted(system, endpoint_via(proxy, sshd, work), m.server, m.path)
        try:
            outcome.exact = (again.path / "kept.bin").read_bytes() == data
            outcome.note("mounted again on the same mount point")
        finally:
            again.close()
    return outcome


SCENARIOS: dict[str, Callable[[str, Path, int], Outcome]] = {
    "copy with 3 cuts": scenario_copy,
    "stalled server": scenario_stall,
    "sshd kill -9 + restart": scenario_restart,
    "12 writers + a cut": scenario_concurrent,
    "kill -9 of the mount": scenario_kill_9,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=128, help="size of the copied file")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    args = parser.parse_args(argv)
    for name, scenario in SCENARIOS.items():
        if args.only and args.only not in name:
            continue
        for system in ("rxfs", "sshfs"):
            with tempfile.TemporaryDirectory(prefix="rxfs-rel-") as work:
                start = time.monotonic()
                try:
                    outcome: Outcome | str = scenario(system, Path(work), args.size_mib * MIB)
                except Exception as exc:  # a scenario that breaks is a result too
                    outcome = f"scenario failed: {exc!r}"
                print(
                    f"{name:24} {system:6} {outcome}  [{time.monotonic() - start:.0f}s]",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
