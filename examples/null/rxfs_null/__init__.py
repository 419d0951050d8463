"""``null://``: the smallest mini-redirector that mounts (the idea of the WDK's nulmrx).

It serves one empty, read-only directory. Mounting needs nothing from a backend (the
MRxStart, MRxCreateSrvCall and MRxCreateVNetRoot entries default to success); what it
takes for ``ls`` to work is the two entries below. Every other entry is left to the
base class, which answers STATUS_NOT_IMPLEMENTED, and users see ENOSYS ("Function not
implemented"): creating a file, so writing one, fails at open(2).
"""

from __future__ import annotations

import stat

from rxfs.minirdr import FileAttributes, MiniRdrDispatch, NtStatus, RxContext

__all__ = ["NullMiniRdr"]


class NullMiniRdr(MiniRdrDispatch):
    scheme = "null"
    description = "one empty directory; everything else answers ENOSYS (example plugin)"

    async def query_file_info(self, rx_context: RxContext) -> NtStatus:
        """MRxQueryFileInfo: the root is an empty directory; no other name exists."""
        assert rx_context.fcb is not None
        if rx_context.fcb.path != "/":
            return NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
        rx_context.irp.attributes = FileAttributes(mode=stat.S_IFDIR | 0o755, nlink=2)
        return NtStatus.STATUS_SUCCESS

    async def query_directory(self, rx_context: RxContext) -> NtStatus:
        """MRxQueryDirectory: nothing in it."""
        rx_context.irp.entries = []
        return NtStatus.STATUS_SUCCESS
