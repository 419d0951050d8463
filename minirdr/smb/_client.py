"""One SMB2/3 session on one tree (share), on smbprotocol; blocking calls.

smbprotocol is synchronous: ``Connection`` owns a reader thread that matches replies to
requests by message id, and any number of threads may send and wait at once (it locks
the socket and the credit window). :class:`SmbTree` adds what a redirector needs on top:

- every request waits at most ``timeout`` seconds (smbprotocol waits forever by default);
- the NTSTATUS a server answers goes up unchanged as NtStatusError (the identity
  mapping: an SMB server speaks NTSTATUS already); a status the core does not know
  becomes STATUS_IO_DEVICE_ERROR, logged with its value; a closed socket is
  STATUS_CONNECTION_DISCONNECTED and a deadline STATUS_IO_TIMEOUT, so the core reconnects;
- by-path operations (stat, set information, delete) go as one compound request
  CREATE + op + CLOSE: one round trip, the way Windows' own redirector does them.

Leases (SMB 3): an open asks for a lease V2 on the key its caller names (one per
file, so that a file's handles share one lease) and ``CreateResult.lease_state`` says
what the server granted. smbprotocol 1.x has no path for the server's break
notifications: its reader thread looks every reply up in ``outstanding_requests`` by
message id, and a notification (message id 0xFFFFFFFFFFFFFFFF) would be a KeyError that
kills the reader. ``_install_break_hook`` replaces that table with a dict whose
``__missing__`` answers for that one id with a stand-in request (``_Notification``);
where it cannot (another smbprotocol, a table that is not a plain dict) no leases are
asked for, and that is logged once. A LEASE_BREAK goes to the ``on_lease_break``
callback from the reader thread; ``ack_lease_break`` answers it (Samba holds the other
client's open until then, 35 s at most). Every open shares read, write and delete,
which is what POSIX programs expect of a file system.

Durable handles (SMB 3): an open that asks for a lease asks for a durable handle v2
with it (a CreateGuid of its own; Samba grants one only with a handle lease), and
``CreateResult.create_guid`` says whether it got one. ``reclaim`` takes such a handle
back on a new connection (DURABLE_HANDLE_RECONNECT_V2). Both need the connection's
client GUID to be the same on every connection: the mount passes its own.

Modes (``SmbSettings.acl_modes``): opens and stats ask for the file's security
descriptor in the same compound (QUERY_INFO SECURITY, which needs READ_CONTROL on the
open: a file whose DACL grants us nothing is opened again without it, and shows the
default mode); ``FileInfo.permissions`` carries what ``_acl`` reads from it.

Every method blocks: call them from worker threads (see ``_minirdr``), never the trio loop.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import logging
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rxfs.minirdr import NtStatus, NtStatusError
from smbprotocol.connection import Connection, Dialects
from smbprotocol.create_contexts import (
    CreateContextName,
    SMB2CreateContextRequest,
    SMB2CreateDurableHandleReconnectV2,
    SMB2CreateDurableHandleRequestV2,
    SMB2CreateRequestLeaseV2,
)
from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBResponseException,
)
from smbprotocol.header import Commands
from smbprotocol.open import (
    SMB2CloseRequest,
    SMB2CreateRequest,
    SMB2CreateResponse,
    SMB2FlushRequest,
    SMB2QueryDirectoryRequest,
    SMB2QueryDirectoryResponse,
    SMB2QueryInfoRequest,
    SMB2QueryInfoResponse,
    SMB2ReadRequest,
    SMB2ReadResponse,
    SMB2SetInfoRequest,
    SMB2WriteRequest,
    SMB2WriteResponse,
)
from smbprotocol.session import Session, SMB2Logoff
from smbprotocol.structure import BytesField, IntField, Structure
from smbprotocol.tree import TreeConnect

from ._acl import SecurityDescriptor, pack_mode_dacl, parse_security_descriptor
from ._settings import Encryption, SmbSettings
from ._wire import (
    ATTRIBUTE_NORMAL,
    ATTRIBUTE_READONLY,
    FileInfo,
    FsSize,
    pack_basic,
    parse_all_information,
    parse_fs_full_size,
)

__all__ = [
    "LEASE_HANDLE",
    "LEASE_READ",
    "LEASE_WRITE",
    "STATUS_CANNOT_DELETE",
    "CreateResult",
    "Durable",
    "LeaseBreak",
    "ServerStatusError",
    "SmbTree",
    "nt_status_of",
]

log = logging.getLogger(__name__)

# What Samba answers for deleting a file with the read-only attribute; not a code the
# core knows (its errno would be EIO), so handled here (_minirdr._delete).
STATUS_CANNOT_DELETE = 0xC0000121
# smbprotocol logs every request at INFO (with user and share names): far too much for a
# mount's log; and a connection reset at WARNING, which the core reports in its own words
# when it reconnects. Its errors (a reader thread that died) still show.
logging.getLogger("smbprotocol").setLevel(logging.ERROR)

# [MS-SMB2] values used below.
_IMPERSONATION = 2  # SecurityImpersonation
_SHARE_ALL = 0x7  # FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
_INFO_FILE = 1
_INFO_FILESYSTEM = 2
_INFO_SECURITY = 3
_OWNER_GROUP_DACL = 0x7  # OWNER_, GROUP_, DACL_SECURITY_INFORMATION
_DACL_SECURITY_INFORMATION = 0x4
_READ_ATTRIBUTES = 0x80
_WRITE_ATTRIBUTES = 0x100
_READ_CONTROL = 0x20000
_WRITE_DAC = 0x40000
_FILE_BASIC_INFORMATION = 4
_FILE_CREATED = 2  # CreateAction
# A DACL of a few dozen ACEs fits; a bigger one answers BUFFER_TOO_SMALL (no mode read).
_SECURITY_OUTPUT = 16384
_STATUS_ACCESS_DENIED = 0xC0000022
# How long the server keeps a durable handle of a lost connection for us to reclaim:
# 0 asks for the server's own choice (Samba: 60 s; at most "durable handle timeout").
_DURABLE_TIMEOUT_MS = 0
# Dispositions that may make the file: SUPERSEDE, CREATE, OPEN_IF, OVERWRITE_IF.
_MAY_CREATE = frozenset({0, 2, 3, 5})
_FILE_ALL_INFORMATION = 18
_FILE_ID_FULL_DIRECTORY_INFORMATION = 38
_FS_FULL_SIZE_INFORMATION = 7
_RESTART_SCANS = 0x1
_CLOSE_POSTQUERY_ATTRIB = 0x1
_WRITE_THROUGH = 0x1
# The "use the file id of the CREATE before me" id of a related compound request.
_RELATED_FILE_ID = b"\xff" * 16
# A directory listing reply holds up to this many bytes.
_LISTING_CHUNK = 65536
_QUERY_OUTPUT = 4096
# How many credits the client keeps in its window: room for this many 64 KiB units in
# flight (a 1 MiB write costs 16). The server grants up to its "smb2 max credits".
_CREDIT_WINDOW = 512
# Lease states ([MS-SMB2] 2.2.13.2.8) and what a break notification looks like.
LEASE_READ = 0x1
LEASE_HANDLE = 0x2
LEASE_WRITE = 0x4
_OPLOCK_LEVEL_LEASE = 0xFF
_NOTIFICATION_ID = 0xFFFFFFFFFFFFFFFF
_LEASE_BREAK_SIZE = 44  # StructureSize of a LEASE_BREAK notification (an oplock's: 24)
_ACK_REQUIRED = 0x1  # SMB2_NOTIFY_BREAK_LEASE_FLAG_ACK_REQUIRED
# The smbprotocol whose reader thread _install_break_hook knows.
_HOOKED_MAJOR = "1."


# The session is gone (a server restarted, a session expired or was closed by the
# server): to the core, a lost connection, which it re-establishes and replays.
_SESSION_GONE = frozenset({0xC0000203, 0xC000035C})  # USER_SESSION_DELETED, _EXPIRED


def nt_status_of(code: int) -> NtStatus:
    """The server's NTSTATUS as the core's: the identity, for every code it knows."""
    if code in _SESSION_GONE:
        return NtStatus.STATUS_CONNECTION_DISCONNECTED
    try:
        return NtStatus(code)
    except ValueError:
        log.info("the server answered NTSTATUS 0x%08x, which rxfs does not know: EIO", code)
        return NtStatus.STATUS_IO_DEVICE_ERROR


class ServerStatusError(NtStatusError):
    """A failed reply: its NTSTATUS as the core knows it, and the server's own code
    (for codes the core does not know, which it sees as STATUS_IO_DEVICE_ERROR)."""

    def __init__(self, code: int) -> None:
        super().__init__(nt_status_of(code), _describe(code))
        self.code = code


def _describe(code: int) -> str:
    known = NtStatus._value2member_map_.get(code)
    return known.name if isinstance(known, NtStatus) else f"NTSTATUS 0x{code:08x}"


@dataclass(frozen=True)
class CreateResult:
    file_id: bytes
    info: FileInfo
    # What the server granted of the lease asked for (LEASE_*); None: none was asked.
    lease_state: int | None = None
    # The server made the file (CreateAction FILE_CREATED), rather than opened it.
    created: bool = False
    # Its security descriptor, when modes are read and the open could read it.
    security: SecurityDescriptor | None = None
    # The handle may set the DACL (chmod through it: ``set_mode``).
    write_dac: bool = False
    # The server made it durable (or it is a durable handle reclaimed): its CreateGuid.
    create_guid: bytes | None = None


@dataclass(frozen=True)
class LeaseBreak:
    """A LEASE_BREAK notification: the lease ``key`` now holds ``new_state`` only."""

    key: bytes
    current_state: int
    new_state: int
    ack_required: bool


def _parse_lease_break(data: bytes) -> LeaseBreak | None:
    """[MS-SMB2] 2.2.23.2; None for anything else (an oplock break: none are asked for)."""
    if len(data) < _LEASE_BREAK_SIZE or struct.unpack_from("<H", data)[0] != _LEASE_BREAK_SIZE:
        return None
    flags, key, current, new = struct.unpack_from("<4x I 16s I I", data)
    return LeaseBreak(bytes(key), current, new, bool(flags & _ACK_REQUIRED))


class _LeaseBreakAck(Structure):  # type: ignore[misc]
    """[MS-SMB2] 2.2.24.2 LEASE_BREAK_ACK (smbprotocol has no structure for it)."""

    COMMAND = Commands.SMB2_OPLOCK_BREAK

    def __init__(self) -> None:
        self.fields = {
            "structure_size": IntField(size=2, default=36),
            "reserved": IntField(size=2),
            "flags": IntField(size=4),
            "lease_key": BytesField(size=16),
            "lease_state": IntField(size=4),
            "lease_duration": IntField(size=8),
        }
        super().__init__()


class _Zero:
    @staticmethod
    def get_value() -> int:
        return 0


class _Notification:
    """Stands in for the request a server notification would answer: smbprotocol's
    reader thread stores the header in ``response`` and sets ``response_event``, which
    hands the header on (from the reader thread: it must not block)."""

    def __init__(self, received: Callable[[Any], None]) -> None:
        self.session_id = None
        self.async_id: bytes | None = None
        self.response: Any = None
        self.response_event_lock = threading.Lock()
        self.response_event = self
        self.message = {"reserved": _Zero}
        self._received = received

    def set(self) -> None:
        self._received(self.response)


class _Requests(dict[int, Any]):
    """smbprotocol's ``outstanding_requests``, whose ``values()`` is a snapshot: when the
    connection dies, its reader thread walks them while our threads still add and
    remove requests, and a live view raised "dictionary changed size during iteration"
    in that thread (a traceback in the mount's log; seen in a server-restart test)."""

    def values(self) -> list[Any]:  # type: ignore[override]
        # list() of a dict copies in C, under the GIL: no other thread runs meanwhile.
        return list(super().values())


class _Replies(_Requests):
    """``_Requests`` that also answers for the notification id (lease breaks)."""

    def __init__(self, received: Callable[[Any], None]) -> None:
        super().__init__()
        self._received = received

    def __missing__(self, message_id: int) -> Any:
        if message_id != _NOTIFICATION_ID:
            raise KeyError(message_id)
        return _Notification(self._received)


_hook_refused: list[str] = []


def _install_break_hook(connection: Connection, received: Callable[[Any], None]) -> bool:
    """Let ``connection``'s reader thread take server notifications; False (logged
    once per process) where this smbprotocol is not the one the hook was made for."""
    reason = _hook_unsupported(connection)
    if reason is None:
        connection.outstanding_requests = _Replies(received)
        return True
    if not _hook_refused:
        _hook_refused.append(reason)
        log.warning("SMB leases are off (no write caching across clients): %s", reason)
    return False


def _hook_unsupported(connection: Connection) -> str | None:
    version = importlib.metadata.version("smbprotocol")
    if not version.startswith(_HOOKED_MAJOR):
        return f"smbprotocol {version} is not a version rxfs knows how to take breaks from"
    table = getattr(connection, "outstanding_requests", None)
    if type(table) is not dict or table:
        return "smbprotocol's table of outstanding requests is not the plain dict expected"
    try:
        source = inspect.getsource(Connection._process_message_thread)
    except (OSError, TypeError):
        return "smbprotocol's reader thread cannot be checked (no source)"
    if "self.outstanding_requests[message_id]" not in source:
        return "smbprotocol's reader thread does not look replies up as expected"
    return None


def _create_request(
    path: str,
    access: int,
    disposition: int,
    options: int,
    attributes: int = 0,
    *,
    lease_key: bytes | None = None,
    durable: Durable | None = None,
) -> SMB2CreateRequest:
    """With ``durable``, a durable handle is asked for (DH2Q, with its CreateGuid), or,
    when it names the server's file id of a handle of a lost connection, that handle
    is reclaimed (DH2C: the server then ignores the disposition and the access)."""
    create = SMB2CreateRequest()
    create["impersonation_level"] = _IMPERSONATION
    create["desired_access"] = access
    create["file_attributes"] = attributes
    create["share_access"] = _SHARE_ALL
    create["create_disposition"] = disposition
    create["create_options"] = options
    create["buffer_path"] = path.encode("utf-16-le") if path else b"\x00\x00"
    contexts: list[Any] = []
    if lease_key is not None:
        lease = SMB2CreateRequestLeaseV2()
        lease["lease_key"] = lease_key
        lease["lease_state"] = LEASE_READ | LEASE_HANDLE | LEASE_WRITE
        lease["parent_lease_key"] = b"\x00" * 16
        lease["epoch"] = b"\x00\x00"
        create["requested_oplock_level"] = _OPLOCK_LEVEL_LEASE
        contexts.append(lease)
    if durable is not None and durable.file_id is not None:
        reclaim = SMB2CreateDurableHandleReconnectV2()
        reclaim["file_id"] = durable.file_id
        reclaim["create_guid"] = uuid.UUID(bytes=durable.create_guid)
        contexts.append(reclaim)
    elif durable is not None:
        ask = SMB2CreateDurableHandleRequestV2()
        ask["timeout"] = _DURABLE_TIMEOUT_MS
        ask["create_guid"] = uuid.UUID(bytes=durable.create_guid)
        contexts.append(ask)
    if contexts:
        create["buffer_contexts"] = SMB2CreateContextRequest.pack_multiple(contexts)
    return create


def _durable_guid(reply: SMB2CreateResponse, durable: Durable | None) -> bytes | None:
    """The CreateGuid of a durable open: one reclaimed stays durable; a new one is when
    the reply carries DH2Q ([MS-SMB2] 2.2.14.2.12)."""
    if durable is None:
        return None
    if durable.file_id is not None:
        return durable.create_guid
    names = {c["buffer_name"].get_value() for c in reply["buffer"].get_value()}
    granted = CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2 in names
    return durable.create_guid if granted else None


@dataclass(frozen=True)
class Durable:
    """A durable handle's CreateGuid, and the server's file id of the handle to reclaim
    (None: a new open, asking for one)."""

    create_guid: bytes
    file_id: bytes | None = None


def _lease_state_of(reply: SMB2CreateResponse) -> int:
    """The granted state of the reply's lease context; 0 without one."""
    if reply["oplock_level"].get_value() != _OPLOCK_LEVEL_LEASE:
        return 0
    for context in reply["buffer"].get_value():
        if context["buffer_name"].get_value() == CreateContextName.SMB2_CREATE_REQUEST_LEASE_V2:
            return int(struct.unpack_from("<I", context["buffer_data"].get_value(), 16)[0])
    return 0


def _create_reply(header: Any) -> SMB2CreateResponse:
    reply = SMB2CreateResponse()
    reply.unpack(header["data"].get_value())
    return reply


class SmbTree:
    """A logged-in session on one share. ``connect`` before use, ``disconnect`` after."""

    def __init__(
        self,
        settings: SmbSettings,
        on_lease_break: Callable[[LeaseBreak], None] | None = None,
        client_guid: uuid.UUID | None = None,
    ) -> None:
        """``client_guid``: one per mount, the same on every connection: a server ties
        leases and durable handles to the client GUID that took them."""
        self.settings = settings
        self._connection = Connection(client_guid or uuid.uuid4(), settings.host, settings.port)
        self._session: Session | None = None
        self._tree: TreeConnect | None = None
        self._credits = threading.Condition()
        self.encrypted = False
        self._on_lease_break = on_lease_break
        # Whether opens ask for leases: known once connected (SMB 3 and a hook in place).
        self.leases = False
        self._hooked = on_lease_break is not None and _install_break_hook(
            self._connection, self._notified
        )
        if type(self._connection.outstanding_requests) is dict:
            self._connection.outstanding_requests = _Requests()

    def _notified(self, header: Any) -> None:
        """A server notification, on smbprotocol's reader thread: never raise here."""
        try:
            if header["command"].get_value() != Commands.SMB2_OPLOCK_BREAK:
                return
            brk = _parse_lease_break(header["data"].get_value())
            if brk is not None and self._on_lease_break is not None:
                self._on_lease_break(brk)
        except Exception:
            log.exception("a lease break from %s could not be handled", self.settings.host)

    def ack_lease_break(self, brk: LeaseBreak) -> None:
        """LEASE_BREAK_ACK: we hold ``brk.new_state`` only now."""
        ack = _LeaseBreakAck()
        ack["lease_key"] = brk.key
        ack["lease_state"] = brk.new_state
        self._transact([ack])

    # -- connecting ------------------------------------------------------------------------

    def connect(self) -> None:
        """Negotiate, log in and connect the share; raises NtStatusError with a reason
        a user can act on. smbprotocol waits without a deadline in its login and tree
        connect, so a server that stops answering would hold this thread for good: a
        timer closes the socket at the deadline, which wakes every waiter."""
        where = f"{self.settings.host}:{self.settings.port}"
        gave_up = threading.Event()

        def give_up() -> None:
            gave_up.set()
            self.disconnect()

        timer = threading.Timer(self.settings.timeout, give_up)
        timer.daemon = True
        timer.start()
        try:
            self._connect(where)
        except NtStatusError:
            self.disconnect()
            if gave_up.is_set():
                raise self._no_answer(where) from None
            raise
        except (OSError, SMBException, ValueError) as exc:
            self.disconnect()
            if gave_up.is_set():
                raise self._no_answer(where) from None
            raise NtStatusError(
                NtStatus.STATUS_CONNECTION_DISCONNECTED, f"connecting to {where}: {exc}"
            ) from None
        finally:
            timer.cancel()

    def _no_answer(self, where: str) -> NtStatusError:
        return NtStatusError(
            NtStatus.STATUS_IO_TIMEOUT,
            f"{where} did not answer within {self.settings.timeout:g} s (-o timeout)",
        )

    def _connect(self, where: str) -> None:
        settings = self.settings
        try:
            self._connection.connect(timeout=settings.timeout)
        except (OSError, SMBException, ValueError) as exc:
            if "timeout" in str(exc).lower():
                raise self._no_answer(where) from None
            raise NtStatusError(
                NtStatus.STATUS_CONNECTION_REFUSED, f"cannot connect to {where}: {exc}"
            ) from None
        offered = bool(self._connection.supports_encryption)
        if settings.encryption is Encryption.REQUIRED and not offered:
            raise NtStatusError(
                NtStatus.STATUS_ACCESS_DENIED,
                f"{where} offers no SMB3 encryption and -o encrypt=yes requires it",
            )
        encrypt = offered and settings.encryption is not Encryption.OFF
        user = rf"{settings.domain}\{settings.user}" if settings.domain else settings.user
        self._session = Session(
            self._connection,
            user,
            settings.password,
            require_encryption=encrypt,
            auth_protocol="ntlm",
        )
        try:
            self._session.connect()
        except SMBResponseException as exc:
            raise NtStatusError(
                nt_status_of(exc.status),
                f"{where} refused the login of {settings.user!r}: {_describe(exc.status)}",
            ) from None
        except SMBAuthenticationError as exc:
            raise NtStatusError(
                NtStatus.STATUS_LOGON_FAILURE, f"logging in to {where}: {exc}"
            ) from None
        self.encrypted = bool(self._session.encrypt_data)
        self._tree = TreeConnect(self._session, settings.unc)
        try:
            self._tree.connect()
        except SMBResponseException as exc:
            raise NtStatusError(
                nt_status_of(exc.status),
                f"{settings.unc}: the server refused the share: {_describe(exc.status)}",
            ) from None
        self._grow_credits()
        self.leases = self._hooked and self._connection.dialect >= Dialects.SMB_3_0_0

    def describe(self) -> dict[str, object]:
        """How this connection talks to the server, for ``rxfs status``: fields only,
        no request (it is called on the trio loop)."""
        transport = getattr(self._connection, "transport", None)
        dialect = self._connection.dialect
        return {
            "state": "up"
            if self._tree is not None and transport and transport.connected
            else "down",
            "server": f"{self.settings.host}:{self.settings.port}",
            "share": self.settings.unc,
            "dialect": None
            if dialect is None
            else f"{dialect >> 8}.{dialect >> 4 & 15}.{dialect & 15}",
            "encrypted": self.encrypted,
            "signed": self._session is not None and self._session.signing_key is not None,
            "leases": self.leases,
        }

    def _grow_credits(self) -> None:
        """Ask for a window of credits up front, so that parallel requests (a 1 MiB write
        takes 16) need not wait for each other's replies to earn them."""
        assert self._session is not None
        window = self._connection.sequence_window
        wanted = _CREDIT_WINDOW - (window["high"] - window["low"])
        if wanted > 0:
            self._connection.echo(
                sid=self._session.session_id, timeout=self.settings.timeout, credit_request=wanted
            )

    def disconnect(self, logoff: bool = False) -> None:
        """Close the socket, after a LOGOFF (bounded by the request timeout) when asked:
        the server then drops the session's trees and handles at once. A connection
        being replaced is not logged off: it may hang, and the server reaps it anyway.
        smbprotocol's own logoff waits without a deadline, hence ours."""
        if logoff and self._session is not None:
            try:
                self._transact([SMB2Logoff()])
            except NtStatusError as exc:
                log.debug("logging off %s: %s", self.settings.host, exc.message)
        try:
            self._connection.disconnect(close=False)
        except (OSError, SMBException) as exc:
            log.debug("disconnecting from %s: %s", self.settings.host, exc)

    # -- one request -------------------------------------------------------------------

    def _ids(self) -> tuple[int, int]:
        if self._session is None or self._tree is None:
            raise NtStatusError(NtStatus.STATUS_CONNECTION_DISCONNECTED, "not connected")
        return self._session.session_id, self._tree.tree_connect_id

    def _wait_for_credits(self, messages: list[Any]) -> None:
        """smbprotocol refuses a request the credit window cannot pay for; wait (bounded)
        for replies to return credits instead."""
        connection = self._connection
        need = sum(connection._calculate_credit_charge(m) for m in messages)
        deadline = time.monotonic() + self.settings.timeout
        while True:
            window = connection.sequence_window
            if window["high"] - window["low"] >= need:
                return
            if time.monotonic() > deadline:
                raise NtStatusError(NtStatus.STATUS_IO_TIMEOUT, "no SMB credits left")
            time.sleep(0.001)

    def _exchange(self, messages: list[Any], related: bool = False) -> list[Any]:
        """Send ``messages`` (a compound when more than one) and wait for every reply:
        each reply header, or the NtStatusError of a reply that failed. A lost
        connection, a deadline or a refused send raises for the whole exchange."""
        sid, tid = self._ids()
        timeout = self.settings.timeout
        try:
            self._wait_for_credits(messages)
            if len(messages) == 1:
                requests = [self._connection.send(messages[0], sid, tid)]
            else:
                requests = self._connection.send_compound(messages, sid, tid, related=related)
            replies: list[Any] = []
            for request in requests:
                try:
                    replies.append(
                        self._connection.receive(request, timeout=timeout, resolve_symlinks=False)
                    )
                except SMBResponseException as exc:
                    replies.append(ServerStatusError(exc.status))
        except SMBConnectionClosed as exc:
            raise NtStatusError(NtStatus.STATUS_CONNECTION_DISCONNECTED, str(exc)) from None
        except (OSError, SMBException) as exc:
            if "timeout" in str(exc).lower():
                raise NtStatusError(NtStatus.STATUS_IO_TIMEOUT, str(exc)) from None
            raise NtStatusError(NtStatus.STATUS_CONNECTION_DISCONNECTED, str(exc)) from None
        return replies

    def _transact(self, messages: list[Any], related: bool = False) -> list[Any]:
        """``_exchange``, raising the first failed reply's NTSTATUS."""
        replies = self._exchange(messages, related)
        for reply in replies:
            if isinstance(reply, NtStatusError):
                raise reply
        return replies

    # -- handles -----------------------------------------------------------------------------

    def create(
        self,
        path: str,
        access: int,
        disposition: int,
        options: int,
        attributes: int = 0,
        *,
        lease_key: bytes | None = None,
    ) -> CreateResult:
        """CREATE and QUERY_INFO (FileAllInformation) of the new handle in one round
        trip: the link count and file id come with the open, and with ``acl_modes`` its
        security descriptor too. With ``lease_key`` (and ``leases``), a lease on that
        key is asked for, and a durable handle with it (the server grants one only to
        an open that holds a handle lease): ``CreateResult.create_guid`` says whether."""
        if not self.leases:
            lease_key = None
        durable = Durable(uuid.uuid4().bytes) if lease_key is not None else None
        if self.settings.acl_modes and not access & _READ_CONTROL:
            # The mode of a file it makes is set through this handle: WRITE_DAC, which
            # the owner always has (but not on another's file that it opens).
            extra = _READ_CONTROL | (_WRITE_DAC if disposition in _MAY_CREATE else 0)
            try:
                return self._create(
                    path,
                    access | extra,
                    disposition,
                    options,
                    attributes,
                    lease_key=lease_key,
                    security=True,
                    durable=durable,
                )
            except ServerStatusError as exc:
                if exc.code != _STATUS_ACCESS_DENIED:
                    raise
            # The DACL grants us neither: open without them, and show the default mode.
        return self._create(
            path, access, disposition, options, attributes, lease_key=lease_key, durable=durable
        )

    def reclaim(
        self, path: str, durable: Durable, options: int, lease_key: bytes | None
    ) -> CreateResult:
        """DH2C: take back the durable handle ``durable`` of a lost connection (same
        client GUID, same CreateGuid, the lease it held), which the server kept open for
        us: its share modes, lease and position in the file's opens are the same. A
        ServerStatusError when the server has it no more (expired, closed, a restart)."""
        assert durable.file_id is not None
        return self._create(
            path,
            _READ_ATTRIBUTES,  # ignored: the handle keeps the access it was opened with
            1,
            options,
            lease_key=lease_key if self.leases else None,
            security=self.settings.acl_modes,
            durable=durable,
        )

    def _create(
        self,
        path: str,
        access: int,
        disposition: int,
        options: int,
        attributes: int = 0,
        *,
        lease_key: bytes | None = None,
        security: bool = False,
        durable: Durable | None = None,
    ) -> CreateResult:
        request = _create_request(
            path, access, disposition, options, attributes, lease_key=lease_key, durable=durable
        )
        messages = [request, self._query_all(_RELATED_FILE_ID)]
        if security:
            messages.append(_query_security(_RELATED_FILE_ID))
        created, queried, *sd = self._exchange(messages, related=True)
        if isinstance(created, NtStatusError):
            raise created
        reply = _create_reply(created)
        file_id = bytes(reply["file_id"].get_value())
        if isinstance(queried, NtStatusError):
            self._close_quietly(file_id)  # opened, but of no use without its attributes
            raise queried
        descriptor = _security_of(sd[0]) if sd else None
        return CreateResult(
            file_id,
            _with_permissions(self._parse_query(queried), descriptor),
            _lease_state_of(reply) if lease_key is not None else None,
            reply["create_action"].get_value() == _FILE_CREATED,
            descriptor,
            bool(access & _WRITE_DAC),
            _durable_guid(reply, durable),
        )

    def close(self, file_id: bytes) -> None:
        close = SMB2CloseRequest()
        close["file_id"] = file_id
        self._transact([close])

    def read(self, file_id: bytes, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes; b"" at or past the end of the file."""
        parts = []
        limit = self._connection.max_read_size
        while length > 0:
            read = SMB2ReadRequest()
            read["length"] = min(length, limit)
            read["offset"] = offset
            read["file_id"] = file_id
            read["padding"] = b"\x50"
            try:
                (reply,) = self._transact([read])
            except NtStatusError as exc:
                if exc.status == NtStatus.STATUS_END_OF_FILE:
                    break
                raise
            answer = SMB2ReadResponse()
            answer.unpack(reply["data"].get_value())
            data = answer["buffer"].get_value()
            parts.append(data)
            if len(data) < read["length"].get_value():
                break
            offset += len(data)
            length -= len(data)
        return b"".join(parts)

    def write(self, file_id: bytes, offset: int, data: bytes, write_through: bool) -> int:
        """Every byte, in requests of the negotiated maximum; the count written."""
        view = memoryview(data)
        limit = self._connection.max_write_size
        done = 0
        while done < len(view):
            chunk = view[done : done + limit]
            write = SMB2WriteRequest()
            write["length"] = len(chunk)
            write["offset"] = offset + done
            write["file_id"] = file_id
            write["buffer"] = bytes(chunk)
            if write_through:
                write["flags"] = _WRITE_THROUGH
            (reply,) = self._transact([write])
            answer = SMB2WriteResponse()
            answer.unpack(reply["data"].get_value())
            count = answer["count"].get_value()
            if count != len(chunk):
                raise NtStatusError(
                    NtStatus.STATUS_DISK_FULL, f"the server took {count} of {len(chunk)} bytes"
                )
            done += count
        return done

    def flush(self, file_id: bytes) -> None:
        flush = SMB2FlushRequest()
        flush["file_id"] = file_id
        self._transact([flush])

    def query(self, file_id: bytes) -> FileInfo:
        """FileAllInformation of an open handle; with ``acl_modes``, its security
        descriptor in the same round trip (when the handle may read it)."""
        if not self.settings.acl_modes:
            (reply,) = self._transact([self._query_all(file_id)])
            return self._parse_query(reply)
        return self._query_both(file_id)[0]

    def _query_both(self, file_id: bytes) -> tuple[FileInfo, SecurityDescriptor | None]:
        queried, sd = self._exchange([self._query_all(file_id), _query_security(file_id)])
        if isinstance(queried, NtStatusError):
            raise queried
        descriptor = _security_of(sd)
        return _with_permissions(self._parse_query(queried), descriptor), descriptor

    @staticmethod
    def _query_all(file_id: bytes) -> SMB2QueryInfoRequest:
        query = SMB2QueryInfoRequest()
        query["info_type"] = _INFO_FILE
        query["file_info_class"] = _FILE_ALL_INFORMATION
        query["output_buffer_length"] = _QUERY_OUTPUT
        query["file_id"] = file_id
        return query

    @staticmethod
    def _parse_query(reply: Any) -> FileInfo:
        answer = SMB2QueryInfoResponse()
        answer.unpack(reply["data"].get_value())
        return parse_all_information(answer["buffer"].get_value())

    def set_info(self, file_id: bytes, info_class: int, buffer: bytes) -> None:
        self._transact([_set_info_request(file_id, info_class, buffer)])

    # -- by path: CREATE + op + CLOSE in one compound ------------------------------------

    def _close_related(self) -> SMB2CloseRequest:
        close = SMB2CloseRequest()
        close["file_id"] = _RELATED_FILE_ID
        return close

    def stat(self, path: str, access: int = _READ_ATTRIBUTES, options: int = 0) -> FileInfo:
        """FileAllInformation of ``path`` (FILE_READ_ATTRIBUTES is all it needs), and
        with ``acl_modes`` its security descriptor: one round trip either way."""
        if self.settings.acl_modes:
            try:
                return self._stat(path, access | _READ_CONTROL, options, True)
            except ServerStatusError as exc:
                if exc.code != _STATUS_ACCESS_DENIED or access & _READ_CONTROL:
                    raise
        return self._stat(path, access, options, False)

    def _stat(self, path: str, access: int, options: int, security: bool) -> FileInfo:
        messages = [_create_request(path, access, 1, options), self._query_all(_RELATED_FILE_ID)]
        if security:
            messages.append(_query_security(_RELATED_FILE_ID))
        replies = self._exchange([*messages, self._close_related()], related=True)
        for reply in replies[:2]:
            if isinstance(reply, NtStatusError):
                raise reply
        descriptor = _security_of(replies[2]) if security else None
        return _with_permissions(self._parse_query(replies[1]), descriptor)

    def permissions(self, path: str) -> int | None:
        """The mode bits of ``path``'s DACL (CREATE + QUERY_INFO SECURITY + CLOSE: one
        round trip); None where the server will not say (we may not read it, or the
        file of a listing is gone already): it then shows the default mode."""
        replies = self._exchange(
            [
                _create_request(path, _READ_ATTRIBUTES | _READ_CONTROL, 1, 0),
                _query_security(_RELATED_FILE_ID),
                self._close_related(),
            ],
            related=True,
        )
        opened = replies[0]
        gone = NtStatus.STATUS_CONNECTION_DISCONNECTED  # a session the server dropped
        if isinstance(opened, ServerStatusError) and opened.status != gone:
            log.debug("%s: no DACL read: %s", path, opened.message)
            return None
        if isinstance(opened, NtStatusError):
            raise opened  # the connection, not the file
        descriptor = _security_of(replies[1])
        return descriptor.permissions() if descriptor is not None else None

    def set_mode(self, path: str, mode: int, file_id: bytes | None = None) -> FileInfo:
        """chmod: the DACL's owner, group and Everyone ACEs as ``mode`` says, and the
        read-only attribute as its owner write bit (as without ``acl_modes``); through
        ``file_id`` (an open with WRITE_DAC) when given, else by name. Two round trips:
        read the attributes and the descriptor (by name: open), then set what changed
        and read back (by name: and close)."""
        if file_id is not None:
            info, descriptor = self._query_both(file_id)
            return self._set_mode(file_id, info, descriptor, mode)
        access = _READ_ATTRIBUTES | _WRITE_ATTRIBUTES | _READ_CONTROL | _WRITE_DAC
        opened = self._create(path, access, 1, 0, security=True)
        return self._set_mode(opened.file_id, opened.info, opened.security, mode, close=True)

    def _set_mode(
        self,
        file_id: bytes,
        info: FileInfo,
        descriptor: SecurityDescriptor | None,
        mode: int,
        *,
        close: bool = False,
    ) -> FileInfo:
        """Set the DACL and the read-only attribute, read both back, and with ``close``
        close the handle, in one compound (its requests name the handle: each runs,
        whatever the others answer, so the close does too)."""
        if descriptor is None:
            if close:
                self._close_quietly(file_id)
            raise NtStatusError(
                NtStatus.STATUS_ACCESS_DENIED, "the file's security descriptor is unreadable"
            )
        requests: list[Any] = [_set_security_request(file_id, pack_mode_dacl(descriptor, mode))]
        readonly = not mode & 0o200
        if not info.is_dir and bool(info.attributes & ATTRIBUTE_READONLY) != readonly:
            attributes = info.attributes & ~ATTRIBUTE_READONLY
            attributes |= ATTRIBUTE_READONLY if readonly else 0
            basic = pack_basic(attributes=attributes or ATTRIBUTE_NORMAL)
            requests.append(_set_info_request(file_id, _FILE_BASIC_INFORMATION, basic))
        sets = len(requests)
        requests += [self._query_all(file_id), _query_security(file_id)]
        if close:
            closing = SMB2CloseRequest()
            closing["file_id"] = file_id
            requests.append(closing)
        replies = self._exchange(requests)
        if close and isinstance(replies[-1], NtStatusError):
            log.debug("closing a handle: %s", replies[-1].message)
        for reply in replies[: sets + 1]:  # the sets and the attributes read back
            if isinstance(reply, NtStatusError):
                raise reply
        queried, sd = replies[sets], replies[sets + 1]
        return _with_permissions(self._parse_query(queried), _security_of(sd))

    def set_mode_of_new(self, created: CreateResult, mode: int) -> FileInfo:
        """The mode of a file just made, through its handle: the attributes and the
        descriptor came with the open, so one round trip."""
        return self._set_mode(created.file_id, created.info, created.security, mode)

    def set_info_by_path(
        self, path: str, access: int, info_class: int, buffer: bytes, options: int = 0
    ) -> None:
        """Open ``path`` with ``access``, set one information class, close."""
        self._transact(
            [
                _create_request(path, access, 1, options),
                _set_info_request(_RELATED_FILE_ID, info_class, buffer),
                self._close_related(),
            ],
            related=True,
        )

    def read_by_path(self, path: str, length: int) -> bytes:
        """The first ``length`` bytes of ``path``: CREATE + READ + CLOSE in one round trip."""
        read = SMB2ReadRequest()
        read["length"] = length
        read["offset"] = 0
        read["file_id"] = _RELATED_FILE_ID
        read["padding"] = b"\x50"
        replies = self._transact(
            [_create_request(path, 0x1 | 0x80, 1, 0x40), read, self._close_related()],
            related=True,
        )
        answer = SMB2ReadResponse()
        answer.unpack(replies[1]["data"].get_value())
        return bytes(answer["buffer"].get_value())

    def list_directory(self, path: str) -> list[bytes]:
        """The raw FileIdFullDirectoryInformation buffers of every entry of ``path``."""
        opened = self.create(path, 0x1 | 0x80, 1, 0x1)  # FILE_LIST_DIRECTORY, a directory
        buffers: list[bytes] = []
        try:
            flags = _RESTART_SCANS
            while True:
                query = SMB2QueryDirectoryRequest()
                query["file_information_class"] = _FILE_ID_FULL_DIRECTORY_INFORMATION
                query["flags"] = flags
                query["file_id"] = opened.file_id
                query["output_buffer_length"] = _LISTING_CHUNK
                query["buffer"] = "*".encode("utf-16-le")
                flags = 0
                try:
                    (reply,) = self._transact([query])
                except NtStatusError as exc:
                    if exc.status == NtStatus.STATUS_NO_MORE_FILES:
                        return buffers
                    raise
                answer = SMB2QueryDirectoryResponse()
                answer.unpack(reply["data"].get_value())
                buffers.append(answer["buffer"].get_value())
        finally:
            self._close_quietly(opened.file_id)

    def fs_size(self) -> FsSize:
        opened = self.create("", 0x80, 1, 0x1)
        try:
            query = SMB2QueryInfoRequest()
            query["info_type"] = _INFO_FILESYSTEM
            query["file_info_class"] = _FS_FULL_SIZE_INFORMATION
            query["output_buffer_length"] = _QUERY_OUTPUT
            query["file_id"] = opened.file_id
            (reply,) = self._transact([query])
        finally:
            self._close_quietly(opened.file_id)
        answer = SMB2QueryInfoResponse()
        answer.unpack(reply["data"].get_value())
        return parse_fs_full_size(answer["buffer"].get_value())

    def _close_quietly(self, file_id: bytes) -> None:
        try:
            self.close(file_id)
        except NtStatusError as exc:
            log.debug("closing a handle: %s", exc)


def _set_info_request(file_id: bytes, info_class: int, buffer: bytes) -> SMB2SetInfoRequest:
    request = SMB2SetInfoRequest()
    request["info_type"] = _INFO_FILE
    request["file_info_class"] = info_class
    request["file_id"] = file_id
    request["buffer"] = buffer
    return request


def _query_security(file_id: bytes) -> SMB2QueryInfoRequest:
    query = SMB2QueryInfoRequest()
    query["info_type"] = _INFO_SECURITY
    query["additional_information"] = _OWNER_GROUP_DACL
    query["output_buffer_length"] = _SECURITY_OUTPUT
    query["file_id"] = file_id
    return query


def _set_security_request(file_id: bytes, descriptor: bytes) -> SMB2SetInfoRequest:
    request = SMB2SetInfoRequest()
    request["info_type"] = _INFO_SECURITY
    request["additional_information"] = _DACL_SECURITY_INFORMATION
    request["file_id"] = file_id
    request["buffer"] = descriptor
    return request


def _security_of(reply: Any) -> SecurityDescriptor | None:
    """The descriptor a QUERY_INFO SECURITY answered; None where it failed (the open
    may not read it) or is not one we can read."""
    if isinstance(reply, NtStatusError):
        log.debug("no security descriptor: %s", reply.message)
        return None
    answer = SMB2QueryInfoResponse()
    answer.unpack(reply["data"].get_value())
    try:
        return parse_security_descriptor(answer["buffer"].get_value())
    except (ValueError, struct.error, IndexError) as exc:
        log.info("a security descriptor rxfs cannot read (%s): default mode shown", exc)
        return None


def _with_permissions(info: FileInfo, descriptor: SecurityDescriptor | None) -> FileInfo:
    if descriptor is None:
        return info
    return dataclasses.replace(info, permissions=descriptor.permissions())
