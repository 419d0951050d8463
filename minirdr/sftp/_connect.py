"""SSH connection and trust for sftp://: settings, host key checking, authentication.

Blocking code: the backend runs it in worker threads. It behaves like OpenSSH's ``ssh``
where a user would notice: ``~/.ssh/config`` is honoured, ``-o`` mount options use ssh's
names and win over the config file, host keys are checked against known_hosts (hashed
entries included), and authentication tries the agent, then key files, then a password.

The host key rules here are the only ones: the openssh transport runs ssh with options
that reproduce them, and asks :func:`check_host_key` to explain a key ssh refused.

Every failure is an :class:`NtStatusError` with a one-line message that says what to do.
No secret (password, passphrase, key material) is ever put in a log record or a message.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import errno
import getpass
import hashlib
import hmac
import logging
import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import paramiko
from rxfs.rdbss import OptionError, option_what, parse_flag, parse_port, parse_seconds
from rxfs.rdbss.ntstatus import NtStatus, NtStatusError

__all__ = [
    "CONNECT_OPTIONS",
    "ConnectSettings",
    "Credentials",
    "HostKeyPolicy",
    "PasswordPrompt",
    "check_host_key",
    "open_transport",
    "resolve_settings",
]

log = logging.getLogger(__name__)

CONNECT_OPTIONS: dict[str, str] = {
    "IdentityFile": "private key file to log in with (tried before ~/.ssh/id_*)",
    "UserKnownHostsFile": "known_hosts file to check the host key in and add new keys to",
    "StrictHostKeyChecking": "yes (default): refuse unknown host keys; accept-new: add "
    "them to known_hosts; no: accept them (a changed key is always refused)",
    "ConnectTimeout": "seconds to wait for the TCP connection and the SSH handshake (default 15)",
    "ServerAliveInterval": "seconds between keepalives, 0 turns them off (default 15)",
    "Port": "server port when the URL names none (default 22)",
    "User": "login name when the URL names none (default: the local user)",
    "password_stdin": "read the login password from the first line of standard input",
}

DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_SERVER_ALIVE_INTERVAL = 15.0
_DEFAULT_IDENTITY_FILES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")
_DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_SSH_PORT = 22
_KNOWN_HOSTS_LOCK = threading.Lock()
# Host key algorithms paramiko negotiates for each key type a known_hosts line can hold.
_ALGORITHMS_FOR_KEY_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}

PasswordPrompt = Callable[[str], "str | None"]
"""Asked with a prompt such as ``"alice@example.org's password: "``; None means give up."""


class HostKeyPolicy(enum.Enum):
    """StrictHostKeyChecking: what to do with a host key that known_hosts does not list."""

    YES = "yes"  # refuse it
    ACCEPT_NEW = "accept-new"  # add it to the known_hosts file and go on
    NO = "no"  # go on without recording it


@dataclass(frozen=True)
class ConnectSettings:
    """Everything needed to reach and log in to one server, resolved once per mount."""

    host: str
    """The host as written in the URL (maybe an alias from ssh_config)."""
    hostname: str
    """The name or address actually connected to (ssh_config ``HostName``)."""
    port: int
    user: str
    remote_path: str
    """The path from the URL, percent-decoded. ``"."`` (no path, ``/~`` or ``/~/``) is the
    login directory; ``/~/rest`` becomes the relative ``rest``; others are absolute."""
    identity_files: tuple[str, ...]
    """Key files to offer, in order (``-o IdentityFile``, then ssh_config's); expanded."""
    known_hosts_files: tuple[str, ...]
    """UserKnownHostsFile(s), expanded; new keys are added to the first."""
    global_known_hosts_files: tuple[str, ...] = _GLOBAL_KNOWN_HOSTS
    host_key_alias: str | None = None
    strict_host_key_checking: HostKeyPolicy = HostKeyPolicy.YES
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    server_alive_interval: float = DEFAULT_SERVER_ALIVE_INTERVAL
    proxy_command: str | None = None
    """A shell command whose stdin/stdout carry the connection (``%h``/``%p`` expanded)."""
    password_stdin: bool = False

    @property
    def target(self) -> str:
        """``user@hostname:port``, for messages."""
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name the host key is filed under, as ssh writes it: ``host``, or
        ``[host]:port`` off port 22; a HostKeyAlias as it stands (ssh adds no port)."""
        if self.host_key_alias is not None:
            return self.host_key_alias
        return self.hostname if self.port == _SSH_PORT else f"[{self.hostname}]:{self.port}"

    @property
    def lookup_known_hosts_files(self) -> tuple[str, ...]:
        """The user known_hosts files a host key is looked up in: UserKnownHostsFile(s),
        then ~/.ssh/known_hosts (a match in any is enough; new keys go to the first)."""
        return tuple(dict.fromkeys([*self.known_hosts_files, _expand(_DEFAULT_KNOWN_HOSTS)]))


@dataclass
class Credentials:
    """Secrets learned while connecting, kept in memory so later connections of the same
    mount (the transport pool, reconnects) need not ask again. Never logged or shown."""

    password: str | None = field(default=None, repr=False)
    keys: dict[str, paramiko.PKey] = field(default_factory=dict, repr=False)
    """Decrypted private keys by file path."""


# -- settings ------------------------------------------------------------------------


def resolve_settings(
    url: urllib.parse.SplitResult,
    options: dict[str, str],
    ssh_config_path: str | None = None,
) -> ConnectSettings:
    """Turn ``sftp://[user@]host[:port]/path``, ``-o`` options and ssh_config into settings.

    Precedence, as with ssh: the URL's user and port, then ``-o`` options, then the first
    matching ssh_config entry, then defaults. ``ssh_config_path`` defaults to
    ``~/.ssh/config`` when that exists. Options this layer does not know are ignored (they
    belong to other layers). A bad value raises STATUS_INVALID_PARAMETER.
    """
    try:
        return _resolve_settings(url, options, ssh_config_path)
    except OptionError as exc:
        raise NtStatusError(NtStatus.STATUS_INVALID_PARAMETER, str(exc)) from None


def _resolve_settings(
    url: urllib.parse.SplitResult, options: dict[str, str], ssh_config_path: str | None
) -> ConnectSettings:
    host, url_user, url_port = _split_url(url)
    opts = _pick_connect_options(options)
    user_override = url_user or _option_user(opts)
    port_override = url_port or _option_port(opts)
    config, config_name = _load_ssh_config(ssh_config_path, user_override, port_override)
    entry = config.lookup(host)

    hostname = entry.get("hostname", host)
    config_port = str(entry.get("port", _SSH_PORT))
    port = port_override or parse_port(config_port, f"Port {config_port} in {config_name}")
    user = user_override or entry.get("user") or getpass.getuser()

    identity_files = [_expand(opts["identityfile"])] if "identityfile" in opts else []
    if identity_files and not Path(identity_files[0]).is_file():
        _invalid(f"-o IdentityFile={opts['identityfile']}: no such file")
    identity_files += [_expand(p) for p in entry.get("identityfile", [])]

    known_hosts = (
        [_expand(opts["userknownhostsfile"])]
        if "userknownhostsfile" in opts
        else [_expand(p) for p in shlex.split(entry.get("userknownhostsfile", ""))]
    ) or [_expand(_DEFAULT_KNOWN_HOSTS)]
    global_known_hosts = tuple(
        _expand(p) for p in shlex.split(entry.get("globalknownhostsfile", ""))
    )

    return ConnectSettings(
        host=host,
        hostname=hostname,
        port=port,
        user=user,
        remote_path=_remote_path(url.path),
        identity_files=tuple(dict.fromkeys(identity_files)),
        known_hosts_files=tuple(dict.fromkeys(known_hosts)),
        global_known_hosts_files=global_known_hosts or _GLOBAL_KNOWN_HOSTS,
        host_key_alias=entry.get("hostkeyalias"),
        strict_host_key_checking=_host_key_policy(opts, entry, config_name),
        connect_timeout=_seconds_setting(
            opts, entry, "ConnectTimeout", DEFAULT_CONNECT_TIMEOUT, config_name
        ),
        server_alive_interval=_seconds_setting(
            opts, entry, "ServerAliveInterval", DEFAULT_SERVER_ALIVE_INTERVAL, config_name
        ),
        proxy_command=_proxy_command(entry, hostname, port, ssh_config_path),
        password_stdin=parse_flag(
            opts.get("password_stdin"), option_what("password_stdin", opts.get("password_stdin"))
        ),
    )


def _invalid(message: str) -> NoReturn:
    raise OptionError(message)


def _split_url(url: urllib.parse.SplitResult) -> tuple[str, str | None, int | None]:
    if url.password is not None:
        # Never echo it back: the message names the problem, not the value.
        _invalid("sftp URL must not contain a password: use -o password_stdin or the prompt")
    if not url.hostname:
        _invalid(f"sftp URL needs a host: sftp://[user@]host[:port]/path, got {url.geturl()!r}")
    try:
        port = url.port
    except ValueError:
        _invalid(f"sftp URL {url.geturl()!r}: the port must be a number from 1 to 65535")
    if port == 0:
        _invalid(f"sftp URL {url.geturl()!r}: the port must be a number from 1 to 65535")
    user = urllib.parse.unquote(url.username) if url.username else None
    return url.hostname, user, port


def _pick_connect_options(options: dict[str, str]) -> dict[str, str]:
    """Our options, keyed by lower-case name (ssh option names are case-insensitive)."""
    known = {name.lower() for name in CONNECT_OPTIONS}
    picked = {}
    for name, value in options.items():
        key = name.lower()
        if key not in known:
            continue
        if "\n" in value or "\r" in value:
            _invalid(f"-o {name}: the value must be on one line")
        picked[key] = value.strip()
    return picked


def _option_user(opts: dict[str, str]) -> str | None:
    if "user" not in opts:
        return None
    user = opts["user"]
    if not user or any(c.isspace() for c in user):
        _invalid(f"-o User={user}: expected a login name without spaces")
    return user


def _option_port(opts: dict[str, str]) -> int | None:
    return parse_port(opts["port"], f"-o Port={opts['port']}") if "port" in opts else None


def _host_key_policy(
    opts: dict[str, str], entry: dict[str, Any], config_name: str
) -> HostKeyPolicy:
    if "stricthostkeychecking" in opts:
        value = opts["stricthostkeychecking"].lower()
        try:
            return HostKeyPolicy(value)
        except ValueError:
            _invalid(
                f"-o StrictHostKeyChecking={opts['stricthostkeychecking']}: "
                "expected yes, accept-new or no"
            )
    value = str(entry.get("stricthostkeychecking", "yes")).lower()
    # ssh_config also allows "ask" (we cannot ask: refuse, like yes) and "off" (= no).
    aliases = {"ask": HostKeyPolicy.YES, "off": HostKeyPolicy.NO, "on": HostKeyPolicy.YES}
    if value in aliases:
        return aliases[value]
    try:
        return HostKeyPolicy(value)
    except ValueError:
        _invalid(
            f"StrictHostKeyChecking {value} in {config_name}: expected yes, ask, accept-new, no"
        )


def _seconds_setting(
    opts: dict[str, str],
    entry: dict[str, Any],
    name: str,
    default: float,
    config_name: str,
) -> float:
    allow_zero = name == "ServerAliveInterval"
    key = name.lower()
    if key in opts:
        return parse_seconds(opts[key], f"-o {name}={opts[key]}", allow_zero=allow_zero)
    if key in entry:
        what = f"{name} {entry[key]} in {config_name}"
        return parse_seconds(entry[key], what, allow_zero=allow_zero)
    return default


def _load_ssh_config(
    path: str | None, user: str | None, port: int | None
) -> tuple[paramiko.SSHConfig, str]:
    """Parse ssh_config with the URL's user and port in front, so that they win (ssh keeps
    the first value it reads) and ``%r``/``%p`` in ProxyCommand expand to them."""
    text, name = "", "ssh config"
    if path is not None or Path(_expand("~/.ssh/config")).is_file():
        name = path or _expand("~/.ssh/config")
        try:
            text = Path(name).read_text()
        except OSError as error:
            _invalid(f"cannot read ssh config {name}: {error.strerror}")
    overrides = [f"User {user}" if user else "", f"Port {port}" if port else ""]
    prefix = "Host *\n" + "".join(f"  {line}\n" for line in overrides if line)
    try:
        return paramiko.SSHConfig.from_text(prefix + text), name
    except paramiko.ConfigParseError as error:
        _invalid(f"ssh config {name}: {error}")


def _proxy_command(
    entry: dict[str, Any], hostname: str, port: int, ssh_config_path: str | None
) -> str | None:
    """ProxyCommand as configured; ProxyJump becomes ``ssh -W`` as OpenSSH does it itself.

    When both are set ProxyCommand wins.
    """
    command = entry.get("proxycommand")
    if command and command.lower() != "none":
        return str(command)
    jump = entry.get("proxyjump")
    if not jump or jump.lower() == "none":
        return None
    if shutil.which("ssh") is None:
        raise NtStatusError(
            NtStatus.STATUS_NOT_SUPPORTED,
            f"ProxyJump {jump} needs the OpenSSH client: apt-get install openssh-client",
        )
    hops = [hop if hop.startswith("ssh://") else f"ssh://{hop}" for hop in jump.split(",")]
    target = f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"
    argv = ["ssh", "-W", target]
    if ssh_config_path is not None:
        argv += ["-F", ssh_config_path]
    if len(hops) > 1:
        argv += ["-J", ",".join(hops[:-1])]
    return shlex.join([*argv, hops[-1]])


def _remote_path(url_path: str) -> str:
    path = urllib.parse.unquote(url_path)
    if path in ("", "/", "/~", "/~/"):
        return "." if path != "/" else "/"
    if path.startswith("/~/"):
        return path[3:]
    return path


def _expand(path: str) -> str:
    return os.path.expanduser(path)


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
        _verify_host_key(transport.get_remote_server_key(), settings)
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
    _prefer_known_key_types(transport, settings)
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


def _prefer_known_key_types(transport: paramiko.Transport, settings: ConnectSettings) -> None:
    """Ask first for host key types known_hosts has, so a server offering several keys
    proves the one we know instead of presenting an unknown one (ssh does the same)."""
    known: list[str] = []
    for entry in _known_host_entries(settings):
        if entry.marker is None and entry.matches(settings.known_hosts_name):
            known += _ALGORITHMS_FOR_KEY_TYPE.get(entry.key_type, (entry.key_type,))
    options = transport.get_security_options()
    offered = tuple(options.key_types)
    preferred = [algorithm for algorithm in dict.fromkeys(known) if algorithm in offered]
    if preferred:
        options.key_types = (*preferred, *(a for a in offered if a not in preferred))


# -- host keys -----------------------------------------------------------------------


@dataclass(frozen=True)
class _KnownHost:
    """One known_hosts line."""

    path: str
    line_number: int
    marker: str | None  # "@revoked", "@cert-authority" or None
    patterns: tuple[str, ...]
    key_type: str
    blob: bytes

    def matches(self, name: str) -> bool:
        """ssh's rules: any pattern matches and no negated (``!``) pattern does."""
        name = name.lower()
        matched = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _pattern_matches(pattern.removeprefix("!"), name):
                if negated:
                    return False
                matched = True
        return matched


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            _, _, salt, digest = pattern.split("|")
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except ValueError:  # binascii.Error is a ValueError
            return False
    # ssh patterns know only * and ?; everything else (the [ ] of [host]:port) is literal.
    regex = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name) is not None


def _parse_known_hosts_line(path: str, line_number: int, line: str) -> _KnownHost | None:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = fields.pop(0) if fields[0].startswith("@") else None
    if len(fields) < 3:
        return None
    try:
        blob = base64.b64decode(fields[2], validate=True)
    except ValueError:
        return None
    key_type = _blob_key_type(blob) or fields[1]
    return _KnownHost(path, line_number, marker, tuple(fields[0].split(",")), key_type, blob)


def _blob_key_type(blob: bytes) -> str | None:
    """The key type an SSH public key blob names in its first field."""
    if len(blob) < 4:
        return None
    length = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + length].decode("ascii", errors="replace") if length < 64 else None


def _known_host_entries(settings: ConnectSettings) -> Iterator[_KnownHost]:
    paths = [*settings.lookup_known_hosts_files, *settings.global_known_hosts_files]
    for path in dict.fromkeys(paths):
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:  # missing or unreadable files are simply empty, as for ssh
            continue
        for number, line in enumerate(lines, start=1):
            entry = _parse_known_hosts_line(path, number, line)
            if entry is not None:
                yield entry


def _fingerprint(blob: bytes) -> str:
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _verify_host_key(key: paramiko.PKey, settings: ConnectSettings) -> None:
    """Check the server's key against known_hosts before any credential is sent."""
    # Serialised so that a mount's parallel first connections add a new key only once.
    with _KNOWN_HOSTS_LOCK:
        _check_known_hosts(key, settings)


def _check_known_hosts(key: paramiko.PKey, settings: ConnectSettings) -> None:
    blob: bytes = key.asbytes()
    key_type = _blob_key_type(blob) or key.get_name()
    name = settings.known_hosts_name
    fingerprint = _fingerprint(blob)
    changed: _KnownHost | None = None
    for entry in _known_host_entries(settings):
        if entry.marker == "@revoked" and entry.blob == blob:
            _refuse_host_key(
                f"host key {key_type} {fingerprint} of {name} is marked @revoked in "
                f"{entry.path}:{entry.line_number}: refusing to connect"
            )
        if entry.marker is not None or not entry.matches(name):
            continue
        if entry.blob == blob:
            log.debug("host key %s of %s found in %s", fingerprint, name, entry.path)
            return
        if entry.key_type == key_type and changed is None:
            changed = entry
    if changed is not None:
        _refuse_host_key(
            f"WARNING: HOST KEY OF {name} HAS CHANGED, now {key_type} {fingerprint}, which "
            f"does not match {changed.path}:{changed.line_number}: someone may be "
            "intercepting the connection; if the server's key really changed, remove the "
            f"old line with: ssh-keygen -R '{name}' -f {changed.path}"
        )
    policy = settings.strict_host_key_checking
    if policy is HostKeyPolicy.YES:
        _refuse_host_key(
            f"host key of {name} is unknown ({key_type} {fingerprint}): check the "
            "fingerprint with the server's admin, then connect once with "
            "-o StrictHostKeyChecking=accept-new to add it to known_hosts"
        )
    if policy is HostKeyPolicy.ACCEPT_NEW:
        _add_known_host(settings.known_hosts_files[0], name, key_type, blob)
        log.info(
            "added host key %s %s of %s to %s",
            key_type,
            fingerprint,
            name,
            settings.known_hosts_files[0],
        )
    else:
        log.info(
            "accepting unknown host key %s %s of %s (StrictHostKeyChecking=no)",
            key_type,
            fingerprint,
            name,
        )


def _refuse_host_key(message: str) -> NoReturn:
    raise NtStatusError(NtStatus.STATUS_ACCESS_DENIED, message)


def _add_known_host(path: str, name: str, key_type: str, blob: bytes) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        needs_newline = (
            target.is_file()
            and not target.read_bytes().endswith(b"\n")
            and (target.stat().st_size > 0)
        )
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as known_hosts:
            if needs_newline:
                known_hosts.write("\n")
            known_hosts.write(f"{name} {key_type} {base64.b64encode(blob).decode()}\n")
    except OSError as error:
        raise NtStatusError(
            NtStatus.STATUS_ACCESS_DENIED,
            f"cannot add the host key of {name} to {path}: {error.strerror}",
        ) from None


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
    defaults = (_expand(p) for p in _DEFAULT_IDENTITY_FILES)
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
