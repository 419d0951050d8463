"""The Fcb resource: a shared/exclusive lock whose holder is an owner token, not a task.

RDBSS acquires an Fcb's resource in the thread that dispatches a write and releases it in
whatever thread completes the write (RxReleaseFcbResourceForThreadInMRx). trio's own locks
insist that the acquiring task releases, so this one keys ownership on a token that the
RxContext carries (LowIoContext.resource_thread_id) and lets any task release for it.
All methods run on the trio loop; completions from worker threads are marshalled there
first (RxContext.complete_lowio).
"""

from __future__ import annotations

from collections.abc import Hashable

import trio

__all__ = ["FcbResource"]


class FcbResource:
    def __init__(self) -> None:
        # Shared acquisitions per owner; an owner with none has no key.
        self._shared: dict[Hashable, int] = {}
        self._exclusive: Hashable | None = None
        self._exclusive_depth = 0
        self._exclusive_waiters = 0
        self._lot = trio.lowlevel.ParkingLot()

    def is_held_by(self, owner: Hashable) -> bool:
        return self._exclusive == owner or owner in self._shared

    @property
    def is_exclusive(self) -> bool:
        return self._exclusive is not None

    @property
    def shared_count(self) -> int:
        return sum(self._shared.values())

    async def acquire_shared(self, owner: Hashable) -> None:
        """Wait until no other owner holds it exclusively; a waiting exclusive request
        goes first, so that a stream of readers cannot starve an extending write.

        Cancellation is checked before acquiring, never after: a cancelled caller
        never holds the resource (nobody would release it)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self.try_acquire_shared(owner):
            await self._lot.park()

    def try_acquire_shared(self, owner: Hashable) -> bool:
        """ExAcquireResourceSharedLite with Wait=FALSE; writes inside the file (an
        overwrite) come here first."""
        if self._exclusive == owner:
            # As ExAcquireResourceSharedLite: an exclusive owner's shared acquire is
            # one more exclusive level, so releases unwind in order.
            self._exclusive_depth += 1
            return True
        if not self._may_share(owner):
            return False
        self._shared[owner] = self._shared.get(owner, 0) + 1
        return True

    def try_acquire_exclusive(self, owner: Hashable) -> bool:
        """ExAcquireResourceExclusiveLite with Wait=FALSE: take it if nobody holds it.

        Every extending write (so each write of a sequential writer) comes here first:
        no coroutine and no checkpoint when the resource is free.
        """
        if self._exclusive is None and not self._shared:
            self._exclusive = owner
            self._exclusive_depth = 1
            return True
        return False

    async def acquire_exclusive(self, owner: Hashable) -> None:
        if self.try_acquire_exclusive(owner):
            return
        self._exclusive_waiters += 1
        try:
            while not self._may_own(owner):
                await self._lot.park()
        except BaseException:
            # Shared requests may be queued behind this waiter alone: let them go.
            self._lot.unpark_all()
            raise
        finally:
            self._exclusive_waiters -= 1
        self._exclusive = owner
        self._exclusive_depth += 1

    def release_for_owner(self, owner: Hashable) -> None:
        """Release one acquisition made for ``owner``, from any task."""
        if self._exclusive == owner and self._exclusive_depth:
            self._exclusive_depth -= 1
            if not self._exclusive_depth:
                self._exclusive = None
        elif owner in self._shared:
            count = self._shared[owner] - 1
            if count:
                self._shared[owner] = count
            else:
                del self._shared[owner]
        else:
            raise RuntimeError(f"Fcb resource released for {owner!r}, which does not hold it")
        if self._lot:
            self._lot.unpark_all()

    def _may_share(self, owner: Hashable) -> bool:
        if self._exclusive is not None:
            return self._exclusive == owner
        return self._exclusive_waiters == 0 or owner in self._shared

    def _may_own(self, owner: Hashable) -> bool:
        if self._exclusive is not None:
            return self._exclusive == owner
        others = sum(n for o, n in self._shared.items() if o != owner)
        return others == 0
