"""A throwaway OpenSSH server on 127.0.0.1 for tests, benchmarks and the README quick start.

:class:`LoopbackSshd` runs the system's ``sshd -D -e`` in a private temp dir with its own
ed25519 host key, a client key pair for the login user, ``authorized_keys`` and a
``known_hosts`` file that already trusts the host key, so a client can connect with strict
host key checking on. It listens on 127.0.0.1 only and talks to nothing else.

    with LoopbackSshd() as sshd:
        subprocess.run(["rxfs", "mount", sshd.url(), "/mnt/x",
                        *sshd.mount_option_args()])

From a shell, ``python -m rxfs.minirdr.sftp.loopback`` runs one until Ctrl-C (or SIGTERM)
and prints the URL and the ``rxfs mount`` command line for it.

Lessons from these machines (see DESIGN.md section 8): sshd wants /run/sshd; keys in a temp
dir need ``StrictModes no``; with ``UsePAM no`` an account whose password field is ``!`` is
refused even for key logins, so :func:`ensure_test_account` creates accounts with ``*``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = [
    "DEFAULT_TEST_ACCOUNT",
    "LoopbackSshd",
    "SshdError",
    "SshdNotFoundError",
    "child_pids",
    "ensure_test_account",
    "set_account_password",
    "shared_password",
]

DEFAULT_TEST_ACCOUNT = "rxfs-test"
SSHD_PATH = "/usr/sbin/sshd"
_PRIVSEP_DIR = Path("/run/sshd")
_LOOPBACK = "127.0.0.1"
_PASSWORD_DIR = Path("/var/lib/rxfs-test")
# A port picked by binding to 0 can be taken by someone else before sshd binds it.
_BIND_ATTEMPTS = 3


class SshdError(RuntimeError):
    """sshd could not be prepared or did not come up; the message carries its log."""


class SshdNotFoundError(SshdError):
    """No OpenSSH server binary on this machine."""


def ensure_test_account(name: str = DEFAULT_TEST_ACCOUNT) -> pwd.struct_passwd:
    """Create (or repair) a non-root login account for permission tests; needs root.

    The password field is ``*`` ("no password"), never ``!`` ("locked"): with PAM off,
    sshd refuses a locked account even when it offers a valid key.
    """
    _require_root("creating a test account")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        try:
            _run(["useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name])
        except SshdError:
            # Another test session may have created it a moment ago.
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
            raise
        return pwd.getpwnam(name)
    if _shadow_field(name).startswith("!"):
        _run(["usermod", "--password", "*", name])
    return entry


def set_account_password(name: str, password: str) -> None:
    """Give test account ``name`` a password (via chpasswd, so it never shows in ``ps``)."""
    _require_root("setting a password")
    if name == "root":
        raise SshdError("refusing to set a password for root: use a test account")
    subprocess.run(
        ["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True
    )


def shared_password(name: str = DEFAULT_TEST_ACCOUNT) -> str:
    """The password for test account ``name``: random once per machine, then stable.

    Every LoopbackSshd that allows password logins sets the account's password, and an
    account has one: a fresh password per server would lock out the servers already
    running (two fixtures in one test session, or two sessions side by side). Kept in a
    root-only file under /var/lib/rxfs-test.
    """
    _require_root("a test account password")
    _PASSWORD_DIR.mkdir(mode=0o700, exist_ok=True)
    path = _PASSWORD_DIR / f"{name}.password"
    if not path.exists():
        # Write aside, then link into place: link fails if another process won the race,
        # and nobody ever reads a half-written file.
        fd, staging = tempfile.mkstemp(dir=_PASSWORD_DIR)
        with os.fdopen(fd, "w") as staged:
            staged.write(secrets.token_urlsafe(16))
        with contextlib.suppress(FileExistsError):
            os.link(staging, path)
        os.unlink(staging)
    return path.read_text().strip()


class LoopbackSshd:
    """One sshd on 127.0.0.1:<free port>, serving ``root`` to ``user``.

    ``user`` defaults to the current user (root here; root logins are allowed with keys
    only). Give ``password`` to also allow password logins; that needs a non-root account
    (see :func:`ensure_test_account`), whose password is set with chpasswd: pass
    :func:`shared_password` so that servers for the same account agree on it.

    ``root`` is the directory the tests use on the server side; by default a fresh temp
    dir owned by ``user``, removed by :meth:`stop`. ``extra_config`` lines go first in
    sshd_config, so they win over the defaults (sshd keeps the first value it reads).
    ``sftp_subsystem`` is the Subsystem command, e.g. ``internal-sftp -P fsync@openssh.com``
    for a server without fsync.
    """

    def __init__(
        self,
        user: str | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        password: str | None = None,
        extra_config: tuple[str, ...] = (),
        sftp_subsystem: str = "internal-sftp",
        start_timeout: float = 10.0,
    ) -> None:
        self.user = user or pwd.getpwuid(os.getuid()).pw_name
        self.host = _LOOPBACK
        self.port = 0
        self.password = password
        self._given_root = Path(root) if root is not None else None
        self._extra_config = extra_config
        self._sftp_subsystem = sftp_subsystem
        self._start_timeout = start_timeout
        self._state_dir: Path | None = None
        self._owned_root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.host_key_fingerprint = ""
        self._host_key_line = ""

    # -- paths -----------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The private temp dir holding keys, config, log and pid file."""
        if self._state_dir is None:
            raise SshdError("LoopbackSshd is not started")
        return self._state_dir

    @property
    def root(self) -> Path:
        """The server-side directory the tests mount (an absolute path on this machine)."""
        root = self._given_root or self._owned_root
        if root is None:
            raise SshdError("LoopbackSshd is not started")
        return root

    @property
    def client_key_path(self) -> Path:
        return self.state_dir / "client_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def log_path(self) -> Path:
        """sshd's own log (``-e``): handy when a login is refused."""
        return self.state_dir / "sshd.log"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise SshdError("LoopbackSshd is not started")
        return self._process.pid

    # -- what a client needs ---------------------------------------------------------

    def url(self, path: str = "") -> str:
        """``sftp://user@127.0.0.1:PORT/<root>/<path>``: ``path`` is relative to root."""
        remote = self.root / path.lstrip("/") if path.strip("/") else self.root
        return f"sftp://{self.user}@{self.host}:{self.port}{remote.as_posix()}"

    def mount_options(self) -> dict[str, str]:
        """The ``-o`` options a mount of :meth:`url` needs to log in and trust the host."""
        return {
            "IdentityFile": str(self.client_key_path),
            "UserKnownHostsFile": str(self.known_hosts_path),
        }

    def mount_option_args(self) -> list[str]:
        """:meth:`mount_options` as command-line arguments: ``["-o", "k=v,k=v"]``."""
        return ["-o", ",".join(f"{k}={v}" for k, v in self.mount_options().items())]

    # -- lifetime --------------------------------------------------------------------

    def __enter__(self) -> LoopbackSshd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Prepare keys and config, start sshd, and wait until it accepts connections."""
        if self._process is not None:
            raise SshdError("LoopbackSshd is already running")
        sshd = SSHD_PATH if os.access(SSHD_PATH, os.X_OK) else shutil.which("sshd")
        if sshd is None:
            raise SshdNotFoundError("sshd not found: apt-get install openssh-server")
        account = self._check_account()
        try:
            self._prepare(account)
            self._launch(sshd)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill our sshd (and its per-connection children) by PID; remove the temp dirs."""
        if self._process is not None:
            self._terminate(self._process)
            self._process = None
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
        if self._owned_root is not None:
            shutil.rmtree(self._owned_root, ignore_errors=True)
            self._owned_root = None

    def drop_connections(self) -> int:
        """Kill every session of this sshd, as a server restart would; keep listening.

        Returns how many sessions were cut. For reconnect tests.
        """
        children = child_pids(self.pid)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        return len(children)

    # -- internals -------------------------------------------------------------------

    def _check_account(self) -> pwd.struct_passwd:
        try:
            account = pwd.getpwnam(self.user)
        except KeyError:
            raise SshdError(
                f"no account {self.user!r}: create it with ensure_test_account()"
            ) from None
        if self.password is not None:
            set_account_password(self.user, self.password)
        return account

    def _prepare(self, account: pwd.struct_passwd) -> None:
        running_as_root = os.getuid() == 0
        if running_as_root:
            _PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        state = Path(tempfile.mkdtemp(prefix="rxfs-sshd-"))
        self._state_dir = state
        # sshd reads authorized_keys as the login user: the dir must be traversable.
        state.chmod(0o755)
        if self._given_root is None:
            self._owned_root = Path(tempfile.mkdtemp(prefix="rxfs-sftp-root-"))
            if running_as_root:
                os.chown(self._owned_root, account.pw_uid, account.pw_gid)
        _keygen(state / "host_ed25519", "rxfs-loopback-host")
        _keygen(self.client_key_path, f"rxfs-loopback-{self.user}")
        shutil.copyfile(self.client_key_path.with_suffix(".pub"), state / "authorized_keys")
        (state / "authorized_keys").chmod(0o644)
        host_pub = (state / "host_ed25519.pub").read_text().split()
        self.host_key_fingerprint = _sha256_fingerprint(host_pub[1])
        self._host_key_line = f"{host_pub[0]} {host_pub[1]}"

    def _launch(self, sshd: str) -> None:
        for _ in range(_BIND_ATTEMPTS):
            self.port = _free_port()
            (self.state_dir / "sshd_config").write_text(self._config())
            self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {self._host_key_line}\n")
            with self.log_path.open("wb") as log:
                self._process = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", str(self.state_dir / "sshd_config")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            if self._wait_until_listening(self._process):
                return
            log_text = self.log_path.read_text(errors="replace").strip()
            self._terminate(self._process)
            self._process = None
            if "Address already in use" not in log_text:
                raise SshdError(f"sshd failed to start on port {self.port}:\n{log_text}")
        raise SshdError(f"sshd found no free port in {_BIND_ATTEMPTS} attempts")

    def _config(self) -> str:
        state = self.state_dir
        lines = [
            *self._extra_config,
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {state / 'host_ed25519'}",
            f"PidFile {state / 'sshd.pid'}",
            f"AuthorizedKeysFile {state / 'authorized_keys'}",
            f"AllowUsers {self.user}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if self.password is not None else 'no'}",
            "KbdInteractiveAuthentication no",
            "PermitEmptyPasswords no",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "LogLevel VERBOSE",
            # Backends open a pool of channels and connections; the defaults (10) are low.
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            f"Subsystem sftp {self._sftp_subsystem}",
        ]
        return "\n".join(lines) + "\n"

    def _wait_until_listening(self, process: subprocess.Popen[bytes]) -> bool:
        """True once the port accepts; False if sshd exited; SshdError on timeout."""
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                return True
            time.sleep(0.05)
        log_text = self.log_path.read_text(errors="replace").strip()
        raise SshdError(
            f"sshd did not accept connections on {self.host}:{self.port} within "
            f"{self._start_timeout:g}s:\n{log_text}"
        )

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes]) -> None:
        # Collect the per-connection children first: once the listener is gone they are
        # re-parented and can no longer be told apart from other processes.
        children = child_pids(process.pid) if process.poll() is None else []
        for pid in [process.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __repr__(self) -> str:
        state = "running" if self._process is not None else "stopped"
        return f"<LoopbackSshd {self.user}@{self.host}:{self.port} {state}>"


def _require_root(what: str) -> None:
    if os.getuid() != 0:
        raise SshdError(f"{what} needs root")


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SshdError(f"{argv[0]} failed: {result.stderr.strip()}")


def _shadow_field(name: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields[1]
    return ""


def _keygen(path: Path, comment: str) -> None:
    if shutil.which("ssh-keygen") is None:
        raise SshdNotFoundError("ssh-keygen not found: apt-get install openssh-client")
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _sha256_fingerprint(key_base64: str) -> str:
    """The fingerprint as ``ssh-keygen -l`` prints it: SHA256:<unpadded base64>."""
    digest = hashlib.sha256(base64.b64decode(key_base64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def child_pids(parent: int) -> list[int]:
    """PIDs whose parent is ``parent``, read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent PID; the command name (field 2) may contain spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry.name))
    return children


def main(argv: list[str] | None = None) -> int:
    """Run a loopback sshd until SIGINT/SIGTERM, printing how to mount it."""
    parser = argparse.ArgumentParser(
        prog="python -m rxfs.minirdr.sftp.loopback",
        description="Serve a directory over SFTP on 127.0.0.1 with throwaway keys.",
    )
    parser.add_argument("--user", help="login account (default: the current user)")
    parser.add_argument("--root", help="directory to serve (default: a fresh temp dir)")
    args = parser.parse_args(argv)
    # SIGTERM becomes SystemExit, so the with-block below still cleans up.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    try:
        with LoopbackSshd(args.user, root=args.root) as sshd:
            print(f"sftp URL: {sshd.url()}")
            options = " ".join(sshd.mount_option_args())
            print(f"mount:    rxfs mount {sshd.url()} MOUNTPOINT {options}")
            print(f"host key: {sshd.host_key_fingerprint}; Ctrl-C stops the server", flush=True)
            signal.pause()
    except KeyboardInterrupt:
        pass
    except SshdError as error:
        print(f"loopback sshd: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
