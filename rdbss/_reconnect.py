"""Surviving a lost connection: reconnect the SrvCall, reopen SrvOpens, replay.

DESIGN §4: a dropped connection is not a failure of the data. A request that fails with
a status saying the connection is gone (or a deadline passed, which counts as the same)
asks the device's :class:`Reconnector` to recover. One reconnect runs at a time; every
request that failed meanwhile waits for it and is then replayed (a positioned write is
idempotent). The reconnect calls the backend's ``create_srv_call`` again, which drops
what is left of the old connection and connects anew, then reopens every SrvOpen with
FILE_OPEN (never truncating) so that descriptors opened before the drop keep working.

Attempts back off with jitter up to ``reconnect_timeout`` seconds after the loss. Past
that the waiting requests fail and held bytes are reported as not landed; the next
request after that tries once more at once, so a server that comes back is used again
without remounting.

RDBSS does this through SrvCall/NetRoot state transitions and the mini-redirector's
reconnect on create; the shape here is the same with the policy in one place.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ._rxcontext import RxContext
from .irp import AccessMask, CreateDisposition, CreateOptions, CreateParameters, Irp, IrpMj
from .ntstatus import NAME_NOT_FOUND, NtStatus, nt_success, status_of

if TYPE_CHECKING:
    from ._device import RxDevice
    from ._objects import SrvOpen

__all__ = ["RETRYABLE", "FinalStatus", "Reconnector", "SrvCallState", "final"]

log = logging.getLogger(__name__)

# How often one request is replayed on a new connection before it fails.
MAX_REPLAYS = 8

# Statuses that mean "the connection is gone", not "the server said no".
RETRYABLE = frozenset(
    {
        NtStatus.STATUS_CONNECTION_DISCONNECTED,
        NtStatus.STATUS_IO_TIMEOUT,
        NtStatus.STATUS_UNEXPECTED_NETWORK_ERROR,
        NtStatus.STATUS_NETWORK_NAME_DELETED,
    }
)


class FinalStatus(Exception):  # noqa: N818 - a status, not an error of the code
    """Raised by a request whose answer is a failure it reports, not one it met: a
    latched write error that says the server stayed away (STATUS_CONNECTION_DISCONNECTED)
    is RETRYABLE by value, but replaying the request would report it a second time, or,
    once reported, not at all (errseq): a close() answered 0 after its bytes were lost.
    :meth:`Reconnector.with_replay` answers ``status`` without a replay."""

    def __init__(self, status: NtStatus) -> None:
        super().__init__(status)
        self.status = status


def final(status: NtStatus) -> NtStatus:
    """``status`` as the request's own answer, never replayed (see FinalStatus)."""
    if status in RETRYABLE:
        raise FinalStatus(status)
    return status


class SrvCallState(enum.Enum):
    ACTIVE = "active"
    RECONNECTING = "reconnecting"
    # The last recovery ran out of time; the next request tries once more.
    UNREACHABLE = "unreachable"


class Reconnector:
    def __init__(
        self,
        device: RxDevice,
        reconnect_timeout: float = 120.0,
        first_delay: float = 0.2,
        max_delay: float = 10.0,
    ) -> None:
        self.device = device
        self.reconnect_timeout = reconnect_timeout
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.state = SrvCallState.ACTIVE
        # Bumped by every successful reconnect: a request that failed on an older
        # connection knows a newer one exists and simply replays.
        self.generation = 0
        self.reconnects = 0
        # Why the connection was last lost or could not be had again (rxfs status).
        self.last_error: str | None = None
        self._done: trio.Event | None = None

    async def with_replay(self, attempt: Callable[[], Awaitable[NtStatus]]) -> NtStatus:
        """Run ``attempt``; while it fails because the connection went away, recover and
        run it again — at most MAX_REPLAYS times and not past ``reconnect_timeout``
        after its first failure, so that a request which breaks every connection it is
        sent on cannot loop. What still fails for want of a connection is answered
        STATUS_CONNECTION_DISCONNECTED (EIO: the server stayed away). An attempt that
        raises :class:`FinalStatus` is answered with its status, never replayed."""
        generation = self.generation
        try:
            status = await attempt()
            if status not in RETRYABLE:
                return status
            deadline = time.monotonic() + self.reconnect_timeout
            for _ in range(MAX_REPLAYS):
                if time.monotonic() > deadline or not await self.recover(generation):
                    break
                generation = self.generation
                status = await attempt()
                if status not in RETRYABLE:
                    return status
        except FinalStatus as answer:
            return answer.status
        return NtStatus.STATUS_CONNECTION_DISCONNECTED

    async def recover(self, seen_generation: int) -> bool:
        """Called by a request that failed with a RETRYABLE status on the connection of
        ``seen_generation``. True: a newer connection is up, replay. False: the server
        stayed away; fail the request."""
        if self.generation > seen_generation:
            return True
        if self._done is not None:
            await self._done.wait()
            return self.generation > seen_generation
        self._done = trio.Event()
        try:
            budget = 0.0 if self.state is SrvCallState.UNREACHABLE else self.reconnect_timeout
            return await self._reconnect(budget)
        finally:
            done, self._done = self._done, None
            done.set()

    async def _reconnect(self, budget: float) -> bool:
        self.state = SrvCallState.RECONNECTING
        deadline = time.monotonic() + budget
        delay = self.first_delay
        name = self.device.srv_call.name
        log.warning("connection to %s lost; reconnecting (for up to %gs)", name, budget)
        self.last_error = f"connection lost at {time.strftime('%H:%M:%S')}"
        while True:
            status = await self._reconnect_once()
            if not nt_success(status):
                message = self.device.srv_call.status_message
                self.last_error = f"reconnect failed: {message or status.name}"
            if nt_success(status):
                self.generation += 1
                self.reconnects += 1
                self.state = SrvCallState.ACTIVE
                log.warning("reconnected to %s", name)
                return True
            wait = delay * random.uniform(0.5, 1.0)
            if time.monotonic() + wait > deadline:
                self.state = SrvCallState.UNREACHABLE
                log.error("%s unreachable (%s); failing what waits for it", name, status)
                return False
            await trio.sleep(wait)
            delay = min(delay * 2, self.max_delay)

    async def _reconnect_once(self) -> NtStatus:
        device = self.device
        status = await device.connect_srv_call()
        if not nt_success(status):
            return status
        for srv_open in list(device.srv_opens):
            if srv_open.orphan_status is not None:
                continue  # its file could not be had again once; it is not tried again
            status = await self._reopen(srv_open)
            if status in RETRYABLE:
                return status
        return NtStatus.STATUS_SUCCESS

    async def _reopen(self, srv_open: SrvOpen) -> NtStatus:
        """Reopen a handle that died with the connection, without truncating.

        A handle that cannot be reopened (the file was deleted, renamed or made
        unwritable meanwhile) is orphaned: every request through it fails with the
        server's answer from now on (EACCES, ESTALE ...) instead of going out on the
        dead handle, where it would fail as if the connection were lost again and
        reconnect, over and over. The Fcb's held bytes that no other handle can carry
        then fail with that answer when they are sent (_writebehind._writable_open),
        which latches it for each writer's next fsync() and its close(); a file that
        held nothing lost nothing, and a close of it claims nothing false.
        A file deleted or renamed on the server answers STATUS_FILE_DELETED (ESTALE) and
        its name is forgotten (the Fcb orphaned): a file made under the name later is
        another file, and gets none of these bytes; so does one that was unlinked or
        replaced through this mount, which is never reopened by its old name."""
        fcb = srv_open.fcb
        is_dir = fcb.is_directory
        params = CreateParameters(
            srv_open.desired_access & ~AccessMask.DELETE,
            CreateDisposition.FILE_OPEN,
            CreateOptions.FILE_DIRECTORY_FILE if is_dir else CreateOptions.FILE_NON_DIRECTORY_FILE,
        )
        why = ""
        if fcb.orphaned:
            # Unlinked or replaced through this mount: its name, if it still has one,
            # is another file's now, which must not get these bytes.
            status, why = NtStatus.STATUS_FILE_DELETED, "it was deleted or replaced"
        else:
            irp = Irp(IrpMj.IRP_MJ_CREATE, params, file_name=fcb.path)
            rx_context = RxContext(self.device, irp, fcb=fcb, srv_open=srv_open)
            status, why = await status_of(self.device.minirdr.create(rx_context))
            if status in NAME_NOT_FOUND:
                # Deleted or renamed on the server: the file this descriptor had cannot
                # be reached again (ESTALE, as NFS answers for it).
                self.device.net_root.name_gone(fcb.path)
                status, why = NtStatus.STATUS_FILE_DELETED, "deleted or renamed meanwhile"
        if not nt_success(status) and status not in RETRYABLE:
            held = len(fcb.write_behind.in_flight) + len(fcb.write_behind.dirty)
            log.error(
                "cannot reopen %s after reconnecting (%s): its descriptors fail with %s "
                "from now on%s",
                fcb.path,
                why or "the server refused",
                status,
                f"; {held} range(s) of bytes held for it cannot land" if held else "",
            )
            srv_open.orphan(status)
        return status
