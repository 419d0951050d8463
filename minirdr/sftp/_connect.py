"""SSH connection for sftp://: open the socket (or ProxyCommand), key exchange, log in.

Blocking code: the backend runs it in worker threads. It behaves like OpenSSH's ``ssh``
where a user would notice: settings come from :mod:`._settings` (URL, ``-o``,
~/.ssh/config), the host key is checked by :mod:`._known_hosts` before any credential is
sent, and authentication tries the agent, then key files, then a password.

Every failure is an :class:`NtStatusError` with a one-line message that says what to do.
No secret (password, passphrase, key material) is ever put in a log record or a message.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import logging
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import paramiko
from rxfs.minirdr import NtStatus, NtStatusError

from ._known_hosts import prefer_known_key_types, verify_host_key
from ._settings import ConnectSettings

__all__ = [
    "Credentials",
    "PasswordPrompt",
    "check_host_key",
    "open_transport",
]

log = logging.getLogger(__name__)

PasswordPrompt = Callable[[str], "str | None"]
"""Asked with a prompt such as ``"alice@example.org's password: "``; None means give up."""

_DEFAULT_IDENTITY_FILES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")


@dataclass
class Credentials:
    """Secrets learned while connecting, kept in memory so later connections of the same
    mount (the transport pool, reconnects) need not ask again. Never logged or shown."""

    password: str | None = field(default=None, repr=False)
    keys: dict[str, paramiko.PKey] = field(default_factory=dict, repr=False)
    """Decrypted private keys by file path."""


# -- connecting ----------------------------------------------------------------------


def open_transport(
    settings: ConnectSettings,
    *,
    password_prompt: PasswordPrompt | None = None,
    passphrase_prompt: PasswordPrompt | None = None,
    credentials: Credentials | None = None,
) -> paramiko.Transport:
    """Connect, check the host key, log in; return an authenticated transport.

    ``password_prompt`` replaces the default source of the password (standard input when
    ``settings.password_stdin``, else getpass on a terminal, else none);
    ``passphrase_prompt`` likewise for encrypted keys (default: getpass on a terminal).
    Pass the same ``credentials`` for every connection of a mount so the user is asked
    once. The caller owns the transport and must ``close()`` it.
    """
    credentials = credentials if credentials is not None else Credentials()
    transport = _trusted_transport(settings)
    try:
        _authenticate(
            transport,
            settings,
            credentials,
            password_prompt or _default_password_prompt(settings),
            passphrase_prompt or _terminal_prompt(),
        )
        if settings.server_alive_interval > 0:
            transport.set_keepalive(max(1, round(settings.server_alive_interval)))
    except BaseException:
        transport.close()
        raise
    log.debug("logged in to %s", settings.target)
    return transport


def check_host_key(settings: ConnectSettings) -> None:
    """Blocking: a key exchange without login, to check the server's host key exactly as
    :func:`open_transport` does, for a client that could not say why it refused one (ssh
    in BatchMode names no fingerprint). Raises the same one-line STATUS_ACCESS_DENIED for
    an unknown, changed or revoked key; under accept-new adds an unknown key and returns."""
    _trusted_transport(settings).close()


def _trusted_transport(settings: ConnectSettings) -> paramiko.Transport:
    """Connected, keys exchanged, host key checked against known_hosts; not logged in."""
    deadline = time.monotonic() + settings.connect_timeout
    transport = paramiko.Transport(_open_socket(settings))
    try:
        _negotiate(transport, settings, deadline)
        verify_host_key(transport.get_remote_server_key(), settings)
    except BaseException:
        transport.close()
        raise
    return transport


class _ProxyCommand(paramiko.ProxyCommand):  # type: ignore[misc]
    """paramiko's ProxyCommand, changed where it hurts: the command runs through the shell
    as ssh runs it; its stderr goes to a temp file (a pipe nobody reads can fill and stall
    it) that a failure message can quote; close() reaps the process and its pipes."""

    def __init__(self, command: str) -> None:
        # paramiko's __init__ only spawns the process; the rest of the class needs
        # ``cmd``, ``process`` and ``timeout``.
        self.cmd = ["/bin/sh", "-c", f"exec {command}"]
        # Lives as long as the process; close() closes it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._stderr_tail = ""
        # The transport's thread may close us while a failure message reads the tail.
        self._stderr_lock = threading.Lock()
        self.process = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._pipes: tuple[IO[bytes], IO[bytes]] = (self.process.stdin, self.process.stdout)
        self.timeout: float | None = None

    def recv(self, size: int) -> bytes:
        """Like a socket: what is there (b"" at end of stream), or a timeout.

        paramiko's version spins until its timeout once the command has exited.
        """
        stdout = self._pipes[1]
        ready, _, _ = select.select([stdout], [], [], self.timeout)
        if not ready:
            raise TimeoutError
        return os.read(stdout.fileno(), size)

    def close(self) -> None:
        # End of input first: ssh -W and nc leave by themselves, and a proxy that is
        # failing gets to finish writing why before it is stopped.
        for pipe in self._pipes:
            pipe.close()
        for stop, grace in ((None, 1.0), (self.process.terminate, 5.0), (self.process.kill, 5.0)):
            if stop is not None:
                stop()
            try:
                self.process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        with self._stderr_lock:
            if not self._stderr.closed:
                self._stderr_tail = self._read_stderr_tail()
                self._stderr.close()

    def stderr_tail(self) -> str:
        """The last line the command wrote to stderr."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)  # let a dying proxy finish its complaint
        with self._stderr_lock:
            return self._stderr_tail if self._stderr.closed else self._read_stderr_tail()

    def _read_stderr_tail(self) -> str:
        fd = self._stderr.fileno()
        text = os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
        lines = text.strip().splitlines()
        return lines[-1] if lines else ""


def _open_socket(settings: ConnectSettings) -> socket.socket | _ProxyCommand:
    where = f"{settings.hostname}:{settings.port}"
    if settings.proxy_command is not None:
        log.debug("connecting to %s through ProxyCommand", where)
        try:
            return _ProxyCommand(settings.proxy_command)
        except OSError as error:
            raise NtStatusError(
                NtStatus.STATUS_HOST_UNREACHABLE,
                f"cannot start ProxyCommand for {where}: {error.strerror}",
            ) from None
    log.debug("connecting to %s", where)
    timeout = settings.connect_timeout
    try:
        sock = socket.create_connection((settings.hostname, settings.port), timeout=timeout)
    except ConnectionRefusedError:
        raise NtStatusError(
            NtStatus.STATUS_CONNECTION_REFUSED,
            f"connection to {where} refused: is sshd running and is the port right?",
        ) from None
    except TimeoutError:
        raise NtStatusError(
            NtStatus.STATUS_IO_TIMEOUT, f"cannot reach {where} within {timeout:g}s"
        ) from None
    except socket.gaierror as error:
        raise NtStatusError(
            NtStatus.STATUS_HOST_UNREACHABLE,
            f"cannot resolve host {settings.hostname}: {error.strerror}",
        ) from None
    except OSError as error:
        unreachable = error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)
        raise NtStatusError(
            NtStatus.STATUS_HOST_UNREACHABLE
            if unreachable
            else NtStatus.STATUS_UNEXPECTED_NETWORK_ERROR,
            f"cannot reach {where}: {error.strerror or error}",
        ) from None
    # SFTP is request/reply: without NODELAY, Nagle's algorithm holds each small request
    # back until the previous one is acknowledged, and delayed ACKs make that ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _negotiate(transport: paramiko.Transport, settings: ConnectSettings, deadline: float) -> None:
    """Key exchange, bounded by what is left of ConnectTimeout."""
    timeout = max(0.1, deadline - time.monotonic())
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    transport.auth_timeout = max(settings.connect_timeout, 30.0)
    prefer_known_key_types(transport, settings)
    done = threading.Event()
    transport.start_client(event=done)
    where = f"{settings.hostname}:{settings.port}"
    if not done.wait(timeout):
        raise NtStatusError(
            NtStatus.STATUS_IO_TIMEOUT,
            f"cannot reach {where} within {settings.connect_timeout:g}s: no SSH handshake",
        )
    if transport.is_active():
        return
    error = transport.get_exception()
    sock = transport.sock
    proxy_said = sock.stderr_tail() if isinstance(sock, _ProxyCommand) else ""
    detail = f"ProxyCommand said: {proxy_said}" if proxy_said else str(error or "no answer")
    raise NtStatusError(
        NtStatus.STATUS_UNEXPECTED_NETWORK_ERROR,
        f"SSH handshake with {where} failed: {detail}",
    )


# -- authentication ------------------------------------------------------------------


@dataclass
class _AuthLog:
    """What was tried, for the one-line failure message (names and paths only)."""

    keys: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    password: bool = False

    def summary(self) -> str:
        tried = []
        if self.keys:
            tried.append(f"publickey ({', '.join(self.keys)})")
        if self.password:
            tried.append("password")
        text = "tried " + ", ".join(tried) if tried else "no key or password to try"
        if self.skipped:
            text += "; skipped " + ", ".join(self.skipped)
        return text


def _authenticate(
    transport: paramiko.Transport,
    settings: ConnectSettings,
    credentials: Credentials,
    password_prompt: PasswordPrompt | None,
    passphrase_prompt: PasswordPrompt | None,
) -> None:
    who = f"{settings.user}@{settings.hostname}"
    tried = _AuthLog()
    allowed: list[str] = []
    try:
        allowed = _auth_none(transport, settings.user)
        if "publickey" in allowed:
            allowed = (
                _auth_keys(transport, settings, credentials, passphrase_prompt, tried) or allowed
            )
        if transport.is_authenticated():
            return
        if "password" in allowed or "keyboard-interactive" in allowed:
            _auth_password(transport, settings, credentials, password_prompt, tried)
    except paramiko.AuthenticationException as error:
        # e.g. the server gave up on us (MaxAuthTries) or an auth timeout: a failed login.
        log.debug("login to %s ended early: %s", settings.target, error)
    except (paramiko.SSHException, EOFError, OSError) as error:
        raise NtStatusError(
            NtStatus.STATUS_CONNECTION_DISCONNECTED,
            f"connection to {settings.hostname}:{settings.port} lost while logging in: {error}",
        ) from None
    if transport.is_authenticated():
        return
    offered = ", ".join(allowed) or "nothing"
    raise NtStatusError(
        NtStatus.STATUS_LOGON_FAILURE,
        f"authentication failed for {who}: {tried.summary()} (server accepts {offered})",
    )


def _auth_none(transport: paramiko.Transport, user: str) -> list[str]:
    """Ask which methods the server takes ("none" succeeds only on open servers)."""
    try:
        transport.auth_none(user)
    except paramiko.BadAuthenticationType as error:
        return list(error.allowed_types)
    return []


def _auth_keys(
    transport: paramiko.Transport,
    settings: ConnectSettings,
    credentials: Credentials,
    passphrase_prompt: PasswordPrompt | None,
    tried: _AuthLog,
) -> list[str]:
    """Offer keys until one is accepted; return the methods a partial success left."""
    agent = _open_agent()
    try:
        for label, key in _candidate_keys(agent, settings, credentials, passphrase_prompt, tried):
            tried.keys.append(label)
            log.debug("offering key %s to %s", label, settings.target)
            try:
                remaining: list[str] = transport.auth_publickey(settings.user, key)
            except paramiko.BadAuthenticationType:
                return []
            except paramiko.AuthenticationException:
                continue
            return remaining
    finally:
        if agent is not None:
            agent.close()
    return []


def _open_agent() -> paramiko.Agent | None:
    if not os.environ.get("SSH_AUTH_SOCK"):
        return None
    try:
        return paramiko.Agent()
    except paramiko.SSHException as error:
        log.debug("ignoring the ssh agent: %s", error)
        return None


def _candidate_keys(
    agent: paramiko.Agent | None,
    settings: ConnectSettings,
    credentials: Credentials,
    passphrase_prompt: PasswordPrompt | None,
    tried: _AuthLog,
) -> Iterator[tuple[str, paramiko.PKey]]:
    """Agent keys, then IdentityFiles, then the default ~/.ssh/id_* that exist; loaded
    lazily, so a passphrase is asked only when the keys before it were refused."""
    if agent is not None:
        for key in agent.get_keys():
            yield f"agent key {key.comment or key.fingerprint}", key
    defaults = (os.path.expanduser(p) for p in _DEFAULT_IDENTITY_FILES)
    for path in dict.fromkeys([*settings.identity_files, *defaults]):
        if not Path(path).is_file():
            continue
        key = _load_key(path, credentials, passphrase_prompt, tried)
        if key is not None:
            yield path, key


def _load_key(
    path: str,
    credentials: Credentials,
    passphrase_prompt: PasswordPrompt | None,
    tried: _AuthLog,
) -> paramiko.PKey | None:
    if path in credentials.keys:
        return credentials.keys[path]
    try:
        key = paramiko.PKey.from_path(path)
    except (TypeError, paramiko.PasswordRequiredException):
        # cryptography says "password-protected" with a TypeError.
        key = _load_encrypted_key(path, passphrase_prompt, tried)
    except (ValueError, OSError, paramiko.SSHException) as error:
        log.debug("cannot use key %s: %s", path, type(error).__name__)
        tried.skipped.append(f"{path} (unreadable or unsupported)")
        return None
    if key is not None:
        credentials.keys[path] = key
    return key


def _load_encrypted_key(
    path: str, passphrase_prompt: PasswordPrompt | None, tried: _AuthLog
) -> paramiko.PKey | None:
    if passphrase_prompt is None:
        tried.skipped.append(f"{path} (encrypted, no terminal to ask its passphrase)")
        return None
    passphrase = passphrase_prompt(f"Enter passphrase for key '{path}': ")
    if passphrase is None:
        tried.skipped.append(f"{path} (encrypted, no passphrase given)")
        return None
    try:
        return paramiko.PKey.from_path(path, passphrase.encode())
    except (TypeError, ValueError, paramiko.SSHException):
        tried.skipped.append(f"{path} (wrong passphrase)")
        return None


def _auth_password(
    transport: paramiko.Transport,
    settings: ConnectSettings,
    credentials: Credentials,
    password_prompt: PasswordPrompt | None,
    tried: _AuthLog,
) -> None:
    password = credentials.password
    if password is None and password_prompt is not None:
        password = password_prompt(f"{settings.user}@{settings.hostname}'s password: ")
    if password is None:
        return
    tried.password = True
    log.debug("trying password login to %s", settings.target)
    try:
        transport.auth_password(settings.user, password)  # falls back to kbd-interactive
    except paramiko.AuthenticationException:
        return
    credentials.password = password


def _default_password_prompt(settings: ConnectSettings) -> PasswordPrompt | None:
    if settings.password_stdin:
        return _read_stdin_line
    return _terminal_prompt()


def _read_stdin_line(_prompt: str) -> str | None:
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r") if line else None


def _terminal_prompt() -> PasswordPrompt | None:
    """getpass when a person is at a terminal; nobody to ask otherwise."""
    if sys.stdin is None or not sys.stdin.isatty():
        return None
    return getpass.getpass
