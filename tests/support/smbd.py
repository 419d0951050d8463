"""A throwaway Samba server on 127.0.0.1 for the smb:// tests.

:class:`LoopbackSmbd` runs Debian's ``smbd --foreground`` with a private smb.conf: every
directory Samba keeps state, locks, caches, its pid file and logs in lives under one temp
dir, the accounts are in a private tdbsam passdb there, and smbd listens on a free port
of 127.0.0.1 only. It never reads or writes the system's Samba configuration. Stopped by
its PID. Missing smbd, or an smbd that does not come up, raises: tests fail, never skip.

    with LoopbackSmbd(tmp_path) as smbd:
        subprocess.run(["rxfs", "mount", smbd.url(), "/mnt/x", "-o", smbd.options()])

The login user is root (smbd maps it to the Unix account of that name, so files on the
shares belong to root); ``user_login`` is the non-root test account, for permission tests.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from rxfs.minirdr.sftp.loopback import ensure_test_account

__all__ = ["SMBD_PATH", "LoopbackSmbd", "SmbAccount", "SmbdError", "smbd"]

SMBD_PATH = "/usr/sbin/smbd"
_LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# A port found free by binding to 0 may be taken by someone else before smbd binds it.
_BIND_ATTEMPTS = 3
# Shares every server offers: a writable one, and one Samba refuses writes to.
SHARE = "share"
READ_ONLY_SHARE = "readonly"
_test_dirs = itertools.count(1)


# catia's "unix char:windows char" pairs for the Services for Macintosh mapping: control
# characters to U+F001-U+F01F, then " * : < > ? \ | to U+F020-U+F027.
_SFM_MAPPINGS = ",".join(
    [f"0x{c:02x}:0x{0xF000 + c:04x}" for c in range(0x01, 0x20)]
    + [f"0x{ord(c):02x}:0x{0xF020 + i:04x}" for i, c in enumerate('"*:<>?\\|')]
)


class SmbdError(RuntimeError):
    """smbd is missing, could not be prepared, or did not come up; says why."""


@dataclass(frozen=True)
class SmbAccount:
    user: str
    password: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((_LOOPBACK, port)) == 0


class LoopbackSmbd:
    """smbd on 127.0.0.1 with the shares ``share`` and ``readonly`` under ``base``."""

    def __init__(self, base: Path, *, extra_global: str = "") -> None:
        if not os.path.exists(SMBD_PATH):
            raise SmbdError(f"{SMBD_PATH} is missing: apt-get install samba")
        if os.geteuid() != 0:
            raise SmbdError("the loopback smbd runs as root (it switches to the share's users)")
        self.base = base
        self.extra_global = extra_global
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.root = base / SHARE  # what the share serves
        self.read_only_root = base / READ_ONLY_SHARE
        self.admin = SmbAccount("root", secrets.token_urlsafe(12))
        self.user_login = SmbAccount(ensure_test_account().pw_name, secrets.token_urlsafe(12))

    # -- what a client needs ----------------------------------------------------------

    def url(self, path: str = "", share: str = SHARE, user: str | None = None) -> str:
        login = f"{user}@" if user else ""
        suffix = f"/{path.strip('/')}" if path.strip("/") else ""
        return f"smb://{login}{_LOOPBACK}:{self.port}/{share}{suffix}"

    def credentials_file(self, account: SmbAccount | None = None) -> Path:
        """A mount.cifs credentials file (mode 0600) for ``account`` (root by default)."""
        account = account or self.admin
        path = self.base / f"credentials.{account.user}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"username={account.user}\npassword={account.password}\n")
        return path

    def mount_options(self, account: SmbAccount | None = None) -> dict[str, str]:
        return {"credentials": str(self.credentials_file(account))}

    def options(self, account: SmbAccount | None = None) -> str:
        """``mount_options`` as one ``-o`` value."""
        return ",".join(f"{k}={v}" for k, v in self.mount_options(account).items())

    def opens(self, path: Path) -> list[dict[str, Any]]:
        """The server's own record of the opens of the file at ``path`` (``smbstatus -L
        --json``): one entry per open handle, with its ``opened_at``, ``lease`` ..."""
        files = self._status("-L").get("open_files", {})
        return list(files.get(str(path), {}).get("opens", {}).values())

    def sessions(self) -> list[dict[str, str]]:
        """The server's sessions (``smbstatus --brief --json``): dialect (smbstatus's
        name, e.g. SMB3_11), encryption and signing cipher ("-" for none), the client's
        address."""
        return [
            {
                "client": session["hostname"],
                "dialect": session["session_dialect"],
                "encryption": session["encryption"]["cipher"] or "-",
                "signing": session["signing"]["cipher"] or "-",
            }
            for session in self._status("--brief").get("sessions", {}).values()
        ]

    def _status(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            ["smbstatus", "-s", str(self.base / "smb.conf"), *args, "--json"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise SmbdError(f"smbstatus exited {done.returncode}: {done.stderr.strip()}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def fresh_dir(self, prefix: str = "t") -> Path:
        """A new empty directory of the share for one test, writable by both accounts."""
        path = self.root / f"{prefix}{os.getpid()}-{next(_test_dirs)}"
        path.mkdir()
        path.chmod(0o777)
        return path

    def log_text(self) -> str:
        logs = sorted((self.base / "log").glob("*"))
        return "\n".join(p.read_text(errors="replace") for p in logs if p.is_file())

    # -- lifetime ------------------------------------------------------------------------

    def _config(self) -> str:
        b = self.base
        return f"""\
[global]
    server role = standalone server
    disable netbios = yes
    smb ports = {self.port}
    interfaces = lo
    bind interfaces only = yes
    state directory = {b}/state
    lock directory = {b}/lock
    cache directory = {b}/cache
    pid directory = {b}/pid
    private dir = {b}/private
    ncalrpc dir = {b}/ncalrpc
    binddns dir = {b}/bind-dns
    log file = {b}/log/log.%m
    log level = 1
    passdb backend = tdbsam:{b}/private/passdb.tdb
    map to guest = never
    server min protocol = SMB2_10
    server smb encrypt = desired
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    map archive = no
    # POSIX programs expect case-sensitive names and any byte but '/' in them.
    case sensitive = yes
    preserve case = yes
    short preserve case = yes
    mangled names = no
    create mask = 0644
    directory mask = 0755
    # Durable handles (SMB3), which rxfs reclaims after a reconnect: Samba grants them
    # only where its own records of opens, share modes and locks are the whole truth.
    durable handles = yes
    kernel oplocks = no
    kernel share modes = no
    posix locking = no
{self.extra_global}
[{SHARE}]
    path = {self.root}
    read only = no
    # Names with characters SMB forbids arrive in Unicode's private use area (the SFM
    # mapping rxfs and mount.cifs's mapposix send); catia stores the real characters.
    vfs objects = catia
    catia:mappings = {_SFM_MAPPINGS}
    # Both accounts write here; files keep the mode bits they are created with.
    force create mode = 0
[{READ_ONLY_SHARE}]
    path = {self.read_only_root}
    read only = yes
"""

    def _prepare(self) -> Path:
        for name in ("state", "lock", "cache", "pid", "private", "ncalrpc", "bind-dns", "log"):
            (self.base / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        for share in (self.root, self.read_only_root):
            share.mkdir(parents=True, exist_ok=True)
        # The non-root account writes in the share (root's files there stay root's).
        self.root.chmod(0o1777)
        self.read_only_root.chmod(0o755)
        conf = self.base / "smb.conf"
        conf.write_text(self._config())
        for account in (self.admin, self.user_login):
            self._add_account(conf, account)
        return conf

    def _add_account(self, conf: Path, account: SmbAccount) -> None:
        done = subprocess.run(
            ["smbpasswd", "-c", str(conf), "-s", "-a", account.user],
            input=f"{account.password}\n{account.password}\n".encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise SmbdError(
                f"smbpasswd -a {account.user} failed: {done.stderr.decode(errors='replace')}"
            )

    def start(self) -> None:
        failures = []
        for _ in range(_BIND_ATTEMPTS):
            self.port = _free_port()
            conf = self._prepare()
            log = (self.base / "log" / "smbd.out").open("wb")
            with log:
                self.process = subprocess.Popen(
                    self._argv(conf),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # smbd's parent signals its whole process group when it exits
                    # (SIGTERM to its children): that group must not be ours.
                    start_new_session=True,
                )
            if self._wait_listening():
                return
            failures.append(self.log_text()[-2000:])
            self.stop()
        raise SmbdError("smbd did not come up:\n" + "\n---\n".join(failures))

    def restart(self) -> None:
        """Stop smbd and start it again on the same port, as a server reboot does:
        every connection is cut, every session and open handle is forgotten."""
        self.stop()
        log = (self.base / "log" / "smbd.out").open("ab")
        with log:
            self.process = subprocess.Popen(
                self._argv(self.base / "smb.conf"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not self._wait_listening():
            raise SmbdError("smbd did not come back on its port:\n" + self.log_text()[-2000:])

    @staticmethod
    def _argv(conf: Path) -> list[str]:
        return [
            SMBD_PATH,
            "--foreground",
            "--no-process-group",
            "--debug-stdout",
            f"--configfile={conf}",
        ]

    def _wait_listening(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _listening(self.port):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM smbd (its child processes follow the parent), then SIGKILL by PID."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def __enter__(self) -> LoopbackSmbd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.base / "lock")


@pytest.fixture(scope="session")
def smbd() -> Iterator[LoopbackSmbd]:
    """A session's loopback smbd. It lives outside pytest's tmp dirs, which only root may
    enter: the non-root account logs in too, and smbd serves it as that Unix user."""
    base = Path(tempfile.mkdtemp(prefix="rxfs-smbd-"))
    base.chmod(0o711)
    try:
        with LoopbackSmbd(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)
