"""The mount process must never make a request to its own mount (DESIGN §11).

Such a request is answered by the process that made it; if SIGKILL lands while it is
in user space, the kernel waits for an answer that the dying process can never give,
the process cannot exit, /dev/fuse is never closed and the mount wedges. Nothing in
rxfs does it any more (fs/_mounttable.py reads mountinfo instead of stat()ing the
mount point); this guard says so loudly if something starts to, and the test fixtures
fail every test whose mount logged it.
"""

from __future__ import annotations

import logging
import os

import pyfuse3

__all__ = ["OwnRequestGuard", "own_requests"]

log = logging.getLogger(__name__)


class OwnRequestGuard:
    """Logs an error when a request comes from one of this process's threads. The
    kernel names the calling thread (its tid) in every request that carries a
    context; a thread of ours is listed in /proc/self/task. What a tid is is
    remembered, so the hot path costs a dict lookup."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._own: dict[int, bool] = {}

    def check(self, ctx: pyfuse3.RequestContext, operation: str) -> None:
        own = self._own.get(ctx.pid)
        if own is None:
            if len(self._own) >= self.LIMIT:
                self._own.clear()
            own = self._own[ctx.pid] = os.path.exists(f"/proc/self/task/{ctx.pid}")
        if own:
            log.error(
                "%s: the mount process made a request to its own mount (thread %d); "
                "a kill -9 during such a request wedges the mount",
                operation,
                ctx.pid,
            )


own_requests = OwnRequestGuard()
