"""What the reliability scenarios run on: a loopback sshd that can be killed and started
again on the same port with the same keys, a fault proxy in front of it, and helpers to
mount through the proxy with rxfs (tests) or sshfs (benchmarks/reliability_vs_sshfs.py).

Everything acts on processes started here, by PID, and on mount points made here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rxfs.minirdr.sftp.loopback import SSHD_PATH, LoopbackSshd, child_pids

from tests.support.faultproxy import FaultProxy

MIB = 1 << 20
LISTEN_TIMEOUT = 10.0


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class RestartableSshd:
    """A :class:`LoopbackSshd` that can crash (SIGKILL of the listener and of every
    session) and come back on the same port with the same host key and config, as a
    server restart looks to a client. Stop with :meth:`close` (before the LoopbackSshd)."""

    def __init__(self, sshd: LoopbackSshd) -> None:
        self.sshd = sshd
        self._relaunched: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self._relaunched.pid if self._relaunched is not None else self.sshd.pid

    def kill(self) -> None:
        """kill -9 sshd and all its sessions; the port stops accepting."""
        victims = [self.pid, *child_pids(self.pid)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._relaunched is not None:
            self._relaunched.wait(5)
        wait_until(lambda: not listening(self.sshd.host, self.sshd.port), 5)

    def relaunch(self) -> None:
        """Start sshd again from the same config (same port, same keys)."""
        state = self.sshd.state_dir
        with (state / "sshd.log").open("ab") as log:
            self._relaunched = subprocess.Popen(
                [SSHD_PATH, "-D", "-e", "-f", str(state / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        if not wait_until(lambda: listening(self.sshd.host, self.sshd.port), LISTEN_TIMEOUT):
            raise RuntimeError(f"sshd did not come back on port {self.sshd.port}")

    def close(self) -> None:
        if self._relaunched is not None and self._relaunched.poll() is None:
            for pid in [self._relaunched.pid, *child_pids(self._relaunched.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            self._relaunched.wait(5)


def known_hosts_for(sshd: LoopbackSshd, port: int, directory: Path) -> Path:
    """A known_hosts file that trusts ``sshd``'s host key at 127.0.0.1:``port`` (the
    proxy's port: the client checks the key against the address it dialled)."""
    key = sshd.known_hosts_path.read_text().split(None, 1)[1]
    path = directory / f"known_hosts_{port}"
    path.write_text(f"[{sshd.host}]:{port} {key}")
    return path


@dataclass
class Endpoint:
    """Where a client logs in: the proxy in front of sshd."""

    user: str
    host: str
    port: int
    identity_file: Path
    known_hosts: Path

    def sftp_url(self, remote_dir: Path) -> str:
        return f"sftp://{self.user}@{self.host}:{self.port}{remote_dir.as_posix()}"

    def rxfs_options(self) -> dict[str, str]:
        return {
            "IdentityFile": str(self.identity_file),
            "UserKnownHostsFile": str(self.known_hosts),
        }

    def sshfs_argv(self, remote_dir: Path, mountpoint: Path) -> list[str]:
        """sshfs -o reconnect as the issue asks, keepalives every 2 s."""
        options = [
            "reconnect",
            "ServerAliveInterval=2",
            "ServerAliveCountMax=3",
            f"IdentityFile={self.identity_file}",
            f"UserKnownHostsFile={self.known_hosts}",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            f"Port={self.port}",
        ]
        remote = f"{self.user}@{self.host}:{remote_dir}"
        return ["sshfs", "-f", remote, str(mountpoint), "-o", ",".join(options)]


def endpoint_via(proxy: FaultProxy, sshd: LoopbackSshd, directory: Path) -> Endpoint:
    return Endpoint(
        sshd.user,
        proxy.host,
        proxy.port,
        sshd.client_key_path,
        known_hosts_for(sshd, proxy.port, directory),
    )


@contextlib.contextmanager
def fault_proxy(sshd: LoopbackSshd) -> Iterator[FaultProxy]:
    with FaultProxy((sshd.host, sshd.port)) as proxy:
        yield proxy


def fresh_server_dir(sshd: LoopbackSshd, name: str) -> Path:
    path = sshd.root / name
    path.mkdir()
    owner = sshd.root.stat()
    os.chown(path, owner.st_uid, owner.st_gid)
    return path


# -- data -----------------------------------------------------------------------------


def pattern(seed: int, size: int) -> bytes:
    """``size`` pseudo-random bytes from ``seed``: any shifted, swapped or lost piece
    shows up as a mismatch."""
    return random.Random(seed).randbytes(size)


def write_pattern_file(path: Path, seed: int, size: int) -> str:
    """Write ``size`` pattern bytes in 8 MiB pieces (no huge buffers); return the sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for start in range(0, size, 8 * MIB):
            piece = pattern(seed * 1_000_003 + start, min(8 * MIB, size - start))
            file.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()
