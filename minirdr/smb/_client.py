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

No oplocks or leases are requested yet. smbprotocol 1.17 has no path for the server's
break notifications: its reader looks every reply up in ``outstanding_requests`` by
message id, and a break (message id 0xFFFFFFFFFFFFFFFF) would be a KeyError that kills
the reader thread. Seen working here against Samba 4.17 (a spike, not yet wired to the
core): a lease V2 asked for RWH is granted RWH; a dict subclass whose ``__missing__``
answers for that id with a stand-in request receives the LEASE_BREAK notification
(RWH -> RH, ACK_REQUIRED); a LEASE_BREAK_ACK (a 36-byte Structure of our own with
COMMAND SMB2_OPLOCK_BREAK, sent with the session *and tree* id) releases the other
client's open at once (10 ms; unacknowledged, Samba waits 35 s). With the lease, a
DURABLE_HANDLE_REQUEST_V2 context is granted too (timeout 60 s, Samba's defaults), the
ground for replaying opens after a reconnect (DURABLE_HANDLE_RECONNECT_V2, which
smbprotocol has a structure for). Every open shares
read, write and delete, which is what POSIX programs expect of a file system.

Every method blocks: call them from worker threads (see ``_minirdr``), never the trio loop.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rxfs.minirdr import NtStatus, NtStatusError
from smbprotocol.connection import Connection
from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBResponseException,
)
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
from smbprotocol.tree import TreeConnect

from ._settings import Encryption, SmbSettings
from ._wire import FileInfo, FsSize, parse_all_information, parse_fs_full_size

__all__ = ["STATUS_CANNOT_DELETE", "CreateResult", "ServerStatusError", "SmbTree", "nt_status_of"]

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


def _create_request(
    path: str, access: int, disposition: int, options: int, attributes: int = 0
) -> SMB2CreateRequest:
    create = SMB2CreateRequest()
    create["impersonation_level"] = _IMPERSONATION
    create["desired_access"] = access
    create["file_attributes"] = attributes
    create["share_access"] = _SHARE_ALL
    create["create_disposition"] = disposition
    create["create_options"] = options
    create["buffer_path"] = path.encode("utf-16-le") if path else b"\x00\x00"
    return create


def _file_id_of(header: Any) -> bytes:
    reply = SMB2CreateResponse()
    reply.unpack(header["data"].get_value())
    return bytes(reply["file_id"].get_value())


class SmbTree:
    """A logged-in session on one share. ``connect`` before use, ``disconnect`` after."""

    def __init__(self, settings: SmbSettings) -> None:
        self.settings = settings
        self._connection = Connection(uuid.uuid4(), settings.host, settings.port)
        self._session: Session | None = None
        self._tree: TreeConnect | None = None
        self._credits = threading.Condition()
        self.encrypted = False

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
        self, path: str, access: int, disposition: int, options: int, attributes: int = 0
    ) -> CreateResult:
        """CREATE and QUERY_INFO (FileAllInformation) of the new handle in one round
        trip: the link count and file id come with the open."""
        created, queried = self._exchange(
            [
                _create_request(path, access, disposition, options, attributes),
                self._query_all(_RELATED_FILE_ID),
            ],
            related=True,
        )
        if isinstance(created, NtStatusError):
            raise created
        file_id = _file_id_of(created)
        if isinstance(queried, NtStatusError):
            self._close_quietly(file_id)  # opened, but of no use without its attributes
            raise queried
        return CreateResult(file_id, self._parse_query(queried))

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
        (reply,) = self._transact([self._query_all(file_id)])
        return self._parse_query(reply)

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

    def stat(self, path: str, access: int = 0x80, options: int = 0) -> FileInfo:
        """FileAllInformation of ``path`` (FILE_READ_ATTRIBUTES is all it needs)."""
        replies = self._transact(
            [
                _create_request(path, access, 1, options),
                self._query_all(_RELATED_FILE_ID),
                self._close_related(),
            ],
            related=True,
        )
        return self._parse_query(replies[1])

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
