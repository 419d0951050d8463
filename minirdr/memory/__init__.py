"""The in-memory mini-redirector, ``memory://``: the reference a plugin author copies."""

from ._minirdr import MemoryMiniRdr

__all__ = ["MemoryMiniRdr"]
