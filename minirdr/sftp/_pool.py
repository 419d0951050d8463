"""The mount's SSH connections, and the pool of SFTP sessions its requests go to.

:class:`Connections` owns what lives as long as the mount: this backend's ``-o`` options
(:class:`Tuning`), the credentials learned at the first login, and which transport carries
the connection (:class:`Transport`; ``auto`` tries the ssh client first and falls back to
paramiko). :meth:`Connections.connect` logs in ``max_conns`` times in worker threads, with
``channels`` SFTP sessions on each, and puts the :class:`SessionPool` in place of the last
one (a reconnect). The dispatch entries (:mod:`._minirdr`) only pick sessions from it.
"""

from __future__ import annotations

import enum
import logging
import shlex
import shutil
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from rxfs.minirdr import NtStatus, NtStatusError

from ._channel import open_channel_session
from ._connect import Credentials, open_transport
from ._engine import EngineStats, SftpError, SftpSession
from ._openssh import open_openssh_session
from ._settings import ConnectSettings, resolve_settings
from ._status import NTSTATUS_OF_SFTP

if TYPE_CHECKING:
    import paramiko

__all__ = [
    "DEFAULT_CHANNELS",
    "DEFAULT_MAX_CONNS",
    "DEFAULT_TIMEOUT",
    "Connections",
    "SessionPool",
    "Transport",
    "Tuning",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNS = 2
DEFAULT_CHANNELS = 1
DEFAULT_TIMEOUT = 30.0
# Threads that may block in connection setup at once (TCP, key exchange, login).
_CONNECT_THREADS = 4


class Transport(enum.Enum):
    """What carries the SSH connection (``-o transport``)."""

    AUTO = "auto"  # openssh where it can log in, else paramiko
    PARAMIKO = "paramiko"  # in this process, in Python
    OPENSSH = "openssh"  # the system's ssh client, as sshfs does (keys or agent only)


# What makes transport=auto give up on ssh and log in with paramiko instead: ssh in
# BatchMode cannot type a password or a key's passphrase (LOGON_FAILURE), or cannot run.
_FALL_BACK_FROM_OPENSSH = (NtStatus.STATUS_LOGON_FAILURE, NtStatus.STATUS_NOT_SUPPORTED)


@dataclass
class Tuning:
    """This backend's own -o options."""

    max_conns: int = DEFAULT_MAX_CONNS
    channels: int = DEFAULT_CHANNELS
    timeout: float = DEFAULT_TIMEOUT
    transport: Transport = Transport.AUTO
    ssh_command: str = "ssh"

    @classmethod
    def from_options(cls, options: dict[str, str]) -> Tuning:
        tuning = cls()
        if "transport" in options:
            try:
                tuning.transport = Transport(options["transport"])
            except ValueError:
                raise NtStatusError(
                    NtStatus.STATUS_INVALID_PARAMETER,
                    f"-o transport={_printable(options['transport'])}: "
                    "expected auto, openssh or paramiko",
                ) from None
        if "ssh_command" in options:
            tuning.ssh_command = options["ssh_command"]
            try:
                words = shlex.split(tuning.ssh_command)
            except ValueError:
                words = []
            if not words:
                raise NtStatusError(
                    NtStatus.STATUS_INVALID_PARAMETER,
                    f"-o ssh_command={_printable(tuning.ssh_command)}: expected a command, "
                    "quoted as for a shell",
                )
        for name, parse in (("max_conns", int), ("channels", int), ("timeout", float)):
            if name not in options:
                continue
            try:
                value = parse(options[name])
            except ValueError:
                value = 0
            if value <= 0 or (parse is int and value > 64):
                raise NtStatusError(
                    NtStatus.STATUS_INVALID_PARAMETER,
                    f"-o {name}={_printable(options[name])}: expected a positive number"
                    + (" up to 64" if parse is int else ""),
                )
            setattr(tuning, name, value)
        return tuning

    def first_transport(self, settings: ConnectSettings) -> tuple[Transport, str]:
        """The transport to connect with first, and why (for the log)."""
        if self.transport is not Transport.AUTO:
            return self.transport, "as -o transport asks"
        if settings.password_stdin:
            return Transport.PARAMIKO, "password_stdin needs it"
        client = shlex.split(self.ssh_command)[0]
        found = shutil.which(client)
        if found is None:
            return Transport.PARAMIKO, f"no {client} on PATH"
        return Transport.OPENSSH, f"found {found}"


def _printable(value: str) -> str:
    """A user's value inside a one-line message: control characters escaped."""
    return value.encode("unicode_escape").decode("ascii")


class SessionPool:
    """The SFTP sessions of one SrvCall, over one or more SSH transports."""

    def __init__(self, transports: list[paramiko.Transport], sessions: list[SftpSession]) -> None:
        self.transports = transports
        self.sessions = sessions

    @property
    def extensions(self) -> dict[str, bytes]:
        return self.sessions[0].extensions if self.sessions else {}

    def has(self, extension: str) -> bool:
        return extension in self.extensions

    def pick(self) -> SftpSession:
        """The least loaded live session; a dead one when all are (its requests then
        fail with NO_CONNECTION, which the caller maps)."""
        alive = [s for s in self.sessions if s.alive] or self.sessions
        return min(alive, key=lambda s: s.load)

    @property
    def stats(self) -> EngineStats:
        total = EngineStats()
        for session in self.sessions:
            for name in ("write_requests", "write_bytes", "read_requests", "failed_replies"):
                setattr(total, name, getattr(total, name) + getattr(session.stats, name))
            total.largest_write_request = max(
                total.largest_write_request, session.stats.largest_write_request
            )
        return total

    def describe(self) -> list[dict[str, object]]:
        """One entry per SFTP session, for ``rxfs status``."""
        return [
            {
                "state": "up" if session.alive else "down",
                "requests_waiting": session.waiting()[0],
                "oldest_request_s": round(session.waiting()[1], 3),
                "in_flight_bytes": session.in_flight_bytes,
                "open_files": session.open_files,
                "write_requests": session.stats.write_requests,
                "read_requests": session.stats.read_requests,
                "failed_replies": session.stats.failed_replies,
            }
            for session in self.sessions
        ]

    def join(self) -> None:
        """Blocking: wait for the sessions' threads to end after :meth:`close`."""
        for session in self.sessions:
            session.join()

    def close(self) -> None:
        """Close every session and transport (does not block on the network)."""
        for session in self.sessions:
            session.close()
        for transport in self.transports:
            transport.close()


class Connections:
    """The SSH connections of one mount, and the credentials and transport that reconnects
    reuse."""

    def __init__(self) -> None:
        self.tuning = Tuning()
        self._pool: SessionPool | None = None
        self._limiter = trio.CapacityLimiter(_CONNECT_THREADS)
        # Kept for the life of the mount: reconnects log in without asking again, over
        # the transport that worked.
        self._credentials = Credentials()
        self._transport: Transport | None = None

    @property
    def transport(self) -> Transport | None:
        """What carries the connection (never AUTO); None before the first one."""
        return self._transport

    @property
    def current_pool(self) -> SessionPool | None:
        """The pool, None while not connected (a reconnect replaces it)."""
        return self._pool

    @property
    def pool(self) -> SessionPool:
        if self._pool is None:
            raise NtStatusError(NtStatus.STATUS_CONNECTION_DISCONNECTED, "not connected")
        return self._pool

    async def connect(
        self, url: urllib.parse.SplitResult, options: dict[str, str]
    ) -> ConnectSettings:
        """Log in ``max_conns`` times (in worker threads) and open ``channels`` SFTP
        sessions on each, over the transport ``-o transport`` names; replaces the pool of
        an earlier call (a reconnect). Returns the settings it connected with. Raises
        NtStatusError with the one-line reason on failure."""
        # A reconnect: what is left of the old connection goes first, so that requests
        # still waiting on it (a stalled server) fail now and are replayed, and its
        # threads and sockets are not kept for the life of the mount.
        old, self._pool = self._pool, None
        if old is not None:
            old.close()
        self.tuning = Tuning.from_options(options)
        settings = resolve_settings(url, options)
        if self._transport is None:
            transport, why = self.tuning.first_transport(settings)
        else:
            transport, why = self._transport, "as before"
        try:
            pool = await self._connect(settings, transport)
        except NtStatusError as exc:
            if not (
                self.tuning.transport is Transport.AUTO
                and transport is Transport.OPENSSH
                and exc.status in _FALL_BACK_FROM_OPENSSH
            ):
                raise
            # DEBUG: a mount that fails after all says one line; the one that works says
            # at INFO which transport carries it, and why.
            log.debug(
                "ssh could not log in to %s (%s); trying paramiko, which can ask for a "
                "password or a passphrase",
                settings.target,
                exc.message,
            )
            transport, why = Transport.PARAMIKO, "ssh could not log in"
            pool = await self._connect(settings, transport)
        self._transport = transport
        self._pool = pool
        if old is not None:
            # Reap what the old connection left (threads; with transport=openssh, the
            # ssh processes and their pipes), now that it cannot hold anyone up.
            await self.in_thread(old.join)
        log.info(
            "connected to %s through %s (%s): %d connection(s), %d SFTP session(s), extensions %s",
            settings.target,
            transport.value,
            why,
            len(pool.transports) or len(pool.sessions),  # openssh: one ssh a session
            len(pool.sessions),
            ", ".join(sorted(pool.extensions)) or "none",
        )
        return settings

    async def _connect(self, settings: ConnectSettings, transport: Transport) -> SessionPool:
        """``max_conns`` logins over ``transport``, ``channels`` sessions on each."""
        token = trio.lowlevel.current_trio_token()
        transports: list[paramiko.Transport] = []
        sessions: list[SftpSession] = []

        def connect() -> None:
            if transport is Transport.OPENSSH:
                for _ in range(self.tuning.channels):
                    add(open_openssh_session(settings, token, self.tuning.ssh_command))
                return
            ssh = open_transport(settings, credentials=self._credentials)
            transports.append(ssh)
            for _ in range(self.tuning.channels):
                add(open_channel_session(ssh, token))

        def add(session: SftpSession) -> None:
            # The request deadline, for every request: see SftpSession._watch_replies.
            session.reply_timeout = self.tuning.timeout
            sessions.append(session)

        try:
            if transport is Transport.OPENSSH:
                # ssh runs in BatchMode and asks nobody anything: every login at once,
                # so a mount waits for one handshake, not max_conns in a row.
                await self._at_once(connect, self.tuning.max_conns)
            else:
                # The first login alone, so a password or passphrase is asked for once
                # and the rest reuse it from the credentials.
                await self.in_thread(connect)
                await self._at_once(connect, self.tuning.max_conns - 1)
        except BaseException as exc:
            SessionPool(transports, sessions).close()
            if isinstance(exc, SftpError):
                raise NtStatusError(
                    NTSTATUS_OF_SFTP[exc.code], f"{settings.target}: {exc.message}"
                ) from exc
            raise
        return SessionPool(transports, sessions)

    async def _at_once(self, work: Callable[[], None], count: int) -> None:
        """``count`` runs of ``work`` in threads at once. The first failure is raised as
        itself, once all have ended: callers turn it into one line, which an
        ExceptionGroup would not be."""
        failures: list[Exception] = []

        async def run() -> None:
            try:
                await self.in_thread(work)
            except Exception as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(run)
        if failures:
            raise failures[0]

    async def in_thread(self, work: Callable[[], None]) -> None:
        await trio.to_thread.run_sync(work, limiter=self._limiter, abandon_on_cancel=True)

    async def close(self) -> None:
        """Close the pool and wait for its threads (and ssh processes) to end."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await self.in_thread(pool.join)
