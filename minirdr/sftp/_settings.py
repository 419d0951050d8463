"""Connection settings for sftp://: the URL, ``-o`` options and ~/.ssh/config, resolved once.

Pure parsing, no network: :func:`resolve_settings` applies ssh's precedence (the URL, then
``-o`` options, then the first matching ssh_config entry, then defaults) and returns a
frozen :class:`ConnectSettings` that the connection (:mod:`._connect`), the host key check
(:mod:`._known_hosts`) and the openssh transport (:mod:`._openssh`) all read.

A bad value is an :class:`NtStatusError` (STATUS_INVALID_PARAMETER) with a one-line
message that names the option; a password in the URL is refused without being echoed.
"""

from __future__ import annotations

import enum
import getpass
import os
import shlex
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import paramiko
from rxfs.minirdr import (
    NtStatus,
    NtStatusError,
    OptionError,
    option_what,
    parse_flag,
    parse_port,
    parse_seconds,
)

__all__ = [
    "CONNECT_OPTIONS",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SERVER_ALIVE_INTERVAL",
    "ConnectSettings",
    "HostKeyPolicy",
    "resolve_settings",
]

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
_DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_SSH_PORT = 22


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
