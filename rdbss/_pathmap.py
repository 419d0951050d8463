"""PathMap: a dict keyed by core paths that finds a path and everything below it.

Path-prefix work (cache invalidation below a path, subtree moves on rename) goes through
an index, never a scan of every path (DESIGN §11). A leaf: the object tree and the
directory cache import it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["PathMap", "paths_under"]


def paths_under(paths: Iterable[str], path: str) -> list[str]:
    """The keys of ``paths`` that are ``path`` or below it (a list: callers re-key).
    A scan, for the small tables (Fcbs in use, listings on their way); the caches,
    asked on every miss, keep a :class:`PathMap`."""
    prefix = path.rstrip("/") + "/"
    return [p for p in paths if p == path or p.startswith(prefix)]


V = TypeVar("V")


class PathMap(Generic[V]):
    """A dict keyed by core paths that also finds a path and every key below it in
    O(log n): a lookup the server answers "no such file" drops what the caches held
    for the name and below it, and scanning a few thousand cached paths for that cost
    half a millisecond per miss. Iterates in insertion order (oldest first)."""

    __slots__ = ("_items", "_sorted")

    def __init__(self) -> None:
        self._items: dict[str, V] = {}
        self._sorted: list[str] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str) -> V | None:
        return self._items.get(key)

    def __setitem__(self, key: str, value: V) -> None:
        if key not in self._items:
            bisect.insort(self._sorted, key)
        self._items[key] = value

    def pop(self, key: str) -> V | None:
        """Remove ``key``; its value, or None if it was not there."""
        if key not in self._items:
            return None
        del self._sorted[bisect.bisect_left(self._sorted, key)]
        return self._items.pop(key)

    def drop_oldest(self, count: int) -> None:
        for key in list(itertools.islice(self._items, count)):
            del self._items[key]
        self._sorted = sorted(self._items)

    def under(self, path: str) -> list[str]:
        """``path`` (if present) and the keys below it."""
        base = path.rstrip("/")
        keys = self._sorted
        # Keys below base are those from base + "/" up to base + "0" ("0" follows "/").
        below = keys[bisect.bisect_left(keys, base + "/") : bisect.bisect_left(keys, base + "0")]
        if base and path in self._items:
            below.insert(0, path)
        return below
