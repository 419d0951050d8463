"""``-o transport=openssh`` (``auto``'s first choice): SFTP sessions carried by the
system's OpenSSH client.

sshfs's way: run ``ssh ... -s <host> sftp`` as a child process and speak SFTP over its
standard input and output. The SSH ciphers and MACs then run in C in another process
(on another core) instead of in paramiko under our GIL, and a 256 KiB request costs us
one pipe write instead of eight encrypted packets built in Python.

ssh runs in BatchMode: it never prompts (the mount owns no terminal), so this transport
logs in with keys or an agent only; a password, or a key whose passphrase nobody has
given the agent, needs the paramiko transport (``auto`` falls back to it). The options
the mount resolved (user, port, keys, known_hosts files, timeouts, ProxyCommand) are
passed to ssh explicitly; ssh also reads ~/.ssh/config.

Host keys are trusted by :mod:`._known_hosts`' rules, not ssh's own: ssh gets options that
reproduce them, and a key ssh refuses is looked at again by :func:`check_host_key`, whose
one-line message (host, fingerprint, what to do) is the paramiko path's. Other failures
are reported with the last line ssh wrote to its standard error.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile
import threading

import trio
from rxfs.minirdr import NtStatus, NtStatusError

from ._connect import check_host_key
from ._engine import SftpError, SftpSession
from ._pipes import PipeCarrier, PipeLink
from ._settings import ConnectSettings, HostKeyPolicy

__all__ = ["open_openssh_session", "ssh_argv"]

log = logging.getLogger(__name__)

# What ssh's last words mean; the first match wins, the rest is a network error.
_STATUS_OF_SSH_ERROR = (
    ("permission denied", NtStatus.STATUS_LOGON_FAILURE),
    ("connection refused", NtStatus.STATUS_CONNECTION_REFUSED),
    ("timed out", NtStatus.STATUS_IO_TIMEOUT),
    ("could not resolve hostname", NtStatus.STATUS_HOST_UNREACHABLE),
    ("no route to host", NtStatus.STATUS_HOST_UNREACHABLE),
    ("network is unreachable", NtStatus.STATUS_HOST_UNREACHABLE),
)
# ssh's last words when it refused the server's host key (unknown, changed or revoked).
_HOST_KEY_REFUSED = ("host key verification failed", "remote host identification has changed")
# Held while a refused host key is looked at (open_openssh_session).
_host_key_lock = threading.Lock()


class _HostKeyRefusedError(NtStatusError):
    """ssh refused the host key; its message is ssh's, which names no fingerprint."""


def ssh_argv(settings: ConnectSettings, ssh: str = "ssh") -> list[str]:
    """The ssh command line that runs the sftp subsystem for ``settings``. ``ssh`` is
    the client, maybe with options of its own (``ssh -c aes256-gcm@openssh.com``);
    they come first, so they win over ours."""
    options = [
        ("BatchMode", "yes"),
        # AES-GCM first: with AES-NI, OpenSSH's GCM moves bytes at several times the
        # speed of its default chacha20-poly1305. The rest of ssh's list stays behind.
        ("Ciphers", "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"),
        ("ClearAllForwardings", "yes"),
        *_host_key_options(settings),
        ("ConnectTimeout", str(max(1, round(settings.connect_timeout)))),
        ("ServerAliveInterval", str(round(settings.server_alive_interval))),
        ("Port", str(settings.port)),
        ("User", settings.user),
        *(("IdentityFile", _quoted(path)) for path in settings.identity_files),
    ]
    if settings.host_key_alias is not None:
        options.append(("HostKeyAlias", settings.host_key_alias))
    if settings.proxy_command is not None:
        options.append(("ProxyCommand", settings.proxy_command))
    return [
        *shlex.split(ssh),
        "-x",  # no X11 forwarding
        "-a",  # no agent forwarding
        "-T",  # no terminal
        *(f"-o{name}={value}" for name, value in options),
        "-s",
        "--",
        settings.hostname,
        "sftp",
    ]


def _host_key_options(settings: ConnectSettings) -> list[tuple[str, str]]:
    """ssh options under which ssh trusts the keys :mod:`._connect` trusts, no others.

    yes and accept-new run ssh with ``yes``: a key it refuses goes to check_host_key,
    which explains the refusal or (accept-new) adds the key as the paramiko path does
    (same line, same file mode, same log), and ssh tries once more. ssh's own ``no``
    would let a changed key through (it only turns password logins off), so ``no`` runs
    ssh with ``accept-new``, which refuses a changed key, and with /dev/null as the first
    known_hosts file, where the unknown key it accepts is "added": recorded nowhere.
    Both look in the same files, and nothing else decides (no DNS, no IP address check,
    no KnownHostsCommand, no key updates from the server).
    """
    files = settings.lookup_known_hosts_files
    strict = "yes"
    if settings.strict_host_key_checking is HostKeyPolicy.NO:
        strict, files = "accept-new", (os.devnull, *files)
    return [
        ("StrictHostKeyChecking", strict),
        ("UserKnownHostsFile", _path_list(files)),
        ("GlobalKnownHostsFile", _path_list(settings.global_known_hosts_files)),
        ("CheckHostIP", "no"),
        ("VerifyHostKeyDNS", "no"),
        ("KnownHostsCommand", "none"),
        ("UpdateHostKeys", "no"),
    ]


def _quoted(path: str) -> str:
    return f'"{path}"' if " " in path else path


def _path_list(paths: tuple[str, ...]) -> str:
    return " ".join(_quoted(path) for path in paths) if paths else "none"


def open_openssh_session(
    settings: ConnectSettings, token: trio.lowlevel.TrioToken, ssh: str = "ssh", **budget: int
) -> SftpSession:
    """Blocking: start ssh for ``settings`` and an SFTP session on its pipes. Raises
    NtStatusError: for a refused host key, the paramiko path's message; otherwise ssh's
    own explanation (STATUS_LOGON_FAILURE when it could not log in)."""
    try:
        return _open_session(settings, token, ssh, budget)
    except _HostKeyRefusedError as refused:
        # One look at a time: the mount's logins run at once, and accept-new must add
        # the key to known_hosts once; the next look then finds it there.
        with _host_key_lock:
            _explain_host_key(settings, refused)
    # Our rules trust the key now (accept-new has just added it): ssh will too.
    return _open_session(settings, token, ssh, budget)


def _explain_host_key(settings: ConnectSettings, refused: _HostKeyRefusedError) -> None:
    """ssh in BatchMode names neither the key nor what to do: fetch the key in a key
    exchange of our own (no login) and judge it by the paramiko path's rules, in its
    words. Returns when those rules trust the key."""
    try:
        check_host_key(settings)
    except NtStatusError as error:
        if error.status == NtStatus.STATUS_ACCESS_DENIED:
            raise error from None
        # No second look (the server went away, or paramiko cannot talk to it): ssh's word.
        log.debug("cannot look at the host key of %s: %s", settings.target, error.message)
        raise refused from None


def _open_session(
    settings: ConnectSettings, token: trio.lowlevel.TrioToken, ssh: str, budget: dict[str, int]
) -> SftpSession:
    link = _start_ssh(settings, ssh)
    timed_out = threading.Event()

    def give_up() -> None:
        timed_out.set()
        link.close()

    # ssh's ConnectTimeout covers the TCP connect; this bounds the handshake and login.
    watchdog = threading.Timer(2 * settings.connect_timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        return SftpSession.over(PipeCarrier(link), token, **budget)
    except SftpError as exc:
        said = link.why_closed()
        link.wait_closed()
        if timed_out.is_set():
            raise NtStatusError(
                NtStatus.STATUS_IO_TIMEOUT,
                f"{settings.target}: no SFTP session within {2 * settings.connect_timeout:g}s",
            ) from exc
        # ssh starts its own errors with "ssh: " (not the server's "Permission denied").
        message = f"{settings.target}: ssh: {said.removeprefix('ssh: ')}"
        lowered = said.lower()
        if any(text in lowered for text in _HOST_KEY_REFUSED):
            raise _HostKeyRefusedError(NtStatus.STATUS_ACCESS_DENIED, message) from exc
        status = next(
            (status for text, status in _STATUS_OF_SSH_ERROR if text in lowered),
            NtStatus.STATUS_UNEXPECTED_NETWORK_ERROR,
        )
        raise NtStatusError(status, message) from exc
    finally:
        watchdog.cancel()


def _start_ssh(settings: ConnectSettings, ssh: str) -> PipeLink:
    if settings.password_stdin:
        raise NtStatusError(
            NtStatus.STATUS_NOT_SUPPORTED,
            "-o transport=openssh logs in with keys only (ssh runs in BatchMode); "
            "drop password_stdin, or use -o transport=auto or paramiko",
        )
    argv = ssh_argv(settings, ssh)
    log.debug("starting %s", " ".join(argv))
    stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed by PipeLink.wait_closed)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
            start_new_session=True,  # a Ctrl-C at the mount's terminal is ours to handle
        )
    except OSError as exc:
        stderr.close()
        raise NtStatusError(
            NtStatus.STATUS_NOT_SUPPORTED, f"cannot run {ssh}: {exc.strerror}"
        ) from exc
    return PipeLink(process, stderr)
