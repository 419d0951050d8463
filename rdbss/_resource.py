"""The Fcb resource: a shared/exclusive lock whose holder is an owner token, not a task.

RDBSS acquires an Fcb's resource in the thread that dispatches a write and releases it in
whatever thread completes the write (RxReleaseFcbResourceForThreadInMRx). trio's own locks
insist that the acquiring task releases, so this one keys ownership on a token that the
RxContext carries (LowIoContext.resource_thread_id) and lets any task release for it.
All methods run on the trio loop; completions from worker threads are marshalled there
first (RxContext.complete_lowio).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

import trio

__all__ = ["FcbResource"]


class FcbResource:
    def __init__(self) -> None:
        self._shared: Counter[Hashable] = Counter()
        self._exclusive: Hashable | None = None
        self._exclusive_depth = 0
        self._exclusive_waiters = 0
        self._lot = trio.lowlevel.ParkingLot()

    def is_held_by(self, owner: Hashable) -> bool:
        return self._exclusive == owner or self._shared[owner] > 0

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
        if self._exclusive == owner:
            # As ExAcquireResourceSharedLite: an exclusive owner's shared acquire is
            # one more exclusive level, so releases unwind in order.
            self._exclusive_depth += 1
            return
        while not self._may_share(owner):
            await self._lot.park()
        self._shared[owner] += 1

    async def acquire_exclusive(self, owner: Hashable) -> None:
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
        elif self._shared[owner] > 0:
            self._shared[owner] -= 1
            if not self._shared[owner]:
                del self._shared[owner]
        else:
            raise RuntimeError(f"Fcb resource released for {owner!r}, which does not hold it")
        self._lot.unpark_all()

    def _may_share(self, owner: Hashable) -> bool:
        if self._exclusive is not None:
            return self._exclusive == owner
        return self._exclusive_waiters == 0 or self._shared[owner] > 0

    def _may_own(self, owner: Hashable) -> bool:
        if self._exclusive is not None:
            return self._exclusive == owner
        others = sum(n for o, n in self._shared.items() if o != owner)
        return others == 0
