"""The directory cache (``-o dir_timeout``): the names directories hold, so that a
lookup of a name a fresh, complete listing lacks is answered "not found" here.

A leaf: each NetRoot holds one (:mod:`._objects`), and the dispatch routines fill and
ask it; it imports nothing of the core but :class:`._pathmap.PathMap` and the IRP's
DirEntry.
"""

from __future__ import annotations

import dataclasses
import posixpath
import time
from dataclasses import dataclass, field

from ._pathmap import PathMap, paths_under
from .irp import DirEntry

__all__ = ["DirectoryCache", "Listing", "ListingInFlight"]

# The directory cache holds at most this many directories and names in all.
_DIRECTORY_CACHE_SIZE = 4096
_DIRECTORY_CACHE_NAMES = 100_000
# Renewing a listing costs about one request per this many names (OpenSSH answers a
# READDIR with up to 100): a listing is renewed only once it has saved that many.
_NAMES_PER_LISTING_REQUEST = 100


@dataclass(slots=True, eq=False)
class Listing:
    """Every name one directory holds, as the server had them at ``learned``."""

    names: set[str]
    # time.monotonic() when the listing was asked for (or the directory made): names
    # other clients add later are unseen, so its age is counted from before the answer.
    learned: float
    # The connection it was learned on (Reconnector.generation).
    generation: int
    # "No such name" answers given from it since it was learned.
    hits: int = 0
    # The entries, attributes and all, as the server listed them, while nothing we did
    # since can have changed them (any change of ours in the directory drops them; the
    # names stay): a listing asked for again within dir_timeout is answered from them.
    entries: list[DirEntry] | None = None


@dataclass(slots=True, eq=False)
class ListingInFlight:
    """A listing asked for and not yet answered."""

    asked: float
    generation: int
    # Our own changes to the directory that completed while it was on its way: the
    # server may have listed before or after each, so they are applied on top of it.
    changes: list[tuple[str, bool]] = field(default_factory=list)
    # False once something made the answer untrustworthy (a failed change, a rename of
    # the directory): it is then dropped on arrival.
    valid: bool = True


class DirectoryCache:
    """The names directories hold (``-o dir_timeout``), so that a lookup of a name a
    fresh, complete listing lacks is answered "not found" without asking the server.

    Filled by complete listings and by directories made through this mount (empty at
    birth); kept true by our own changes (create, delete, rename, link, symlink) and by
    what the server answers about single names; a directory is dropped when anything
    leaves it uncertain (a failed change, an error from the server). Trusted for
    ``dir_timeout`` seconds from when it was asked for, and only on the connection it
    was learned on. It only ever short-cuts "not found" answers to lookups: creates and
    opens always go to the server, so a stale listing can delay seeing another client's
    new file by up to ``dir_timeout``, never make one of our operations fail.
    """

    def __init__(self) -> None:
        self._listings: PathMap[Listing] = PathMap()
        self._in_flight: dict[str, list[ListingInFlight]] = {}
        self._names = 0

    # -- answers -------------------------------------------------------------------------

    def lacks(self, path: str, max_age: float, generation: int) -> Listing | None:
        """The listing of ``path``'s directory if it is fresh and does not hold the name:
        the name does not exist. None when that is not known."""
        directory, name = posixpath.split(path)
        listing = self._listings.get(directory)
        if listing is None or not name:
            return None
        if listing.generation != generation or time.monotonic() - listing.learned >= max_age:
            self._drop(directory)
            return None
        if name in listing.names:
            return None
        listing.hits += 1
        return listing

    def absent_for(self, path: str, max_age: float, generation: int) -> float:
        """For how many more seconds a fresh listing vouches that ``path`` does not
        exist (0.0 when none does)."""
        directory, name = posixpath.split(path)
        listing = self._listings.get(directory)
        if listing is None or not name or name in listing.names:
            return 0.0
        if listing.generation != generation:
            return 0.0
        return max(0.0, max_age - (time.monotonic() - listing.learned))

    def entries(self, directory: str, max_age: float, generation: int) -> list[DirEntry] | None:
        """A copy of the entries a fresh listing of ``directory`` holds, or None."""
        listing = self._listings.get(directory)
        if (
            listing is None
            or listing.entries is None
            or listing.generation != generation
            or time.monotonic() - listing.learned >= max_age
        ):
            return None
        return _copies(listing.entries)

    def entries_changed(self, path: str) -> None:
        """Our own change to the file at ``path`` (its size, times, mode, owner): the
        entries its directory's listing holds no longer say the truth about it."""
        listing = self._listings.get(posixpath.dirname(path))
        if listing is not None:
            listing.entries = None

    def worth_renewing(self, directory: str, listing: Listing, max_age: float) -> bool:
        """Past half its life, nobody listing it already, and it has saved the server
        more requests than listing it again will cost: ask again before it expires."""
        return (
            time.monotonic() - listing.learned >= max_age / 2
            and not self._in_flight.get(directory)
            and listing.hits >= 1 + len(listing.names) // _NAMES_PER_LISTING_REQUEST
        )

    # -- filling -------------------------------------------------------------------------

    def begin_listing(self, directory: str, generation: int) -> ListingInFlight:
        """Call before asking the server for the complete listing of ``directory``."""
        pending = ListingInFlight(time.monotonic(), generation)
        self._in_flight.setdefault(directory, []).append(pending)
        return pending

    def end_listing(
        self, directory: str, pending: ListingInFlight, entries: list[DirEntry] | None
    ) -> None:
        """The listing begun as ``pending`` arrived with ``entries``, or failed (None)."""
        waiting = self._in_flight.get(directory, [])
        if pending in waiting:
            waiting.remove(pending)
            if not waiting:
                del self._in_flight[directory]
        if entries is None:
            self.forget(directory)
            return
        current = self._listings.get(directory)
        if not pending.valid or (current is not None and current.learned > pending.asked):
            return
        held = {entry.name for entry in entries}
        for name, present in pending.changes:
            if present:
                held.add(name)
            else:
                held.discard(name)
        listing = Listing(held, pending.asked, pending.generation)
        if not pending.changes:
            listing.entries = _copies(entries)
        self._store(directory, listing)

    def made_directory(self, directory: str, since: float, generation: int) -> None:
        """We created ``directory`` with a request sent at ``since``: it was empty."""
        self._drop_tree(directory)
        self._store(directory, Listing(set(), since, generation))

    # -- what we changed or learned --------------------------------------------------------

    def name_exists(self, path: str) -> None:
        """``path`` exists now: we created or linked it, or the server just said so."""
        self._change(path, present=True)

    def name_gone(self, path: str) -> None:
        """``path`` does not exist now: we deleted it, or the server just said so. What
        was known about the directory it may have been is dropped with it."""
        self._change(path, present=False)
        self._drop_tree(path)

    def renamed(self, old: str, new: str) -> None:
        """We renamed ``old`` to ``new`` (replacing whatever was there): listings of the
        moved directory and below move with it."""
        if old == new:
            return
        self._drop_tree(new)
        for key in self._listings.under(old):
            moved = self._listings.pop(key)
            assert moved is not None
            self._listings[new + key[len(old) :]] = moved
        self._invalidate_in_flight(old)
        self._change(old, present=False)
        self._change(new, present=True)

    def forget(self, directory: str) -> None:
        """Something left ``directory`` uncertain: drop its listing and ignore those on
        their way."""
        self._drop(directory)
        for pending in self._in_flight.get(directory, []):
            pending.valid = False

    # -- internals -----------------------------------------------------------------------

    def _change(self, path: str, *, present: bool) -> None:
        directory, name = posixpath.split(path)
        if not name:
            return
        listing = self._listings.get(directory)
        if listing is not None:
            listing.entries = None
            if present and name not in listing.names:
                listing.names.add(name)
                self._names += 1
                self._trim()
            elif not present and name in listing.names:
                listing.names.discard(name)
                self._names -= 1
        for pending in self._in_flight.get(directory, []):
            pending.changes.append((name, present))

    def _store(self, directory: str, listing: Listing) -> None:
        self._drop(directory)
        self._listings[directory] = listing
        self._names += len(listing.names)
        self._trim()

    def _trim(self) -> None:
        """Oldest first (insertion order) until within both bounds."""
        while self._listings and (
            len(self._listings) > _DIRECTORY_CACHE_SIZE or self._names > _DIRECTORY_CACHE_NAMES
        ):
            self._drop(next(iter(self._listings)))

    def _drop(self, directory: str) -> None:
        listing = self._listings.pop(directory)
        if listing is not None:
            self._names -= len(listing.names)

    def _drop_tree(self, path: str) -> None:
        for key in self._listings.under(path):
            self._drop(key)
        self._invalidate_in_flight(path)

    def _invalidate_in_flight(self, path: str) -> None:
        for key in paths_under(self._in_flight, path):
            for pending in self._in_flight[key]:
                pending.valid = False


def _copies(entries: list[DirEntry]) -> list[DirEntry]:
    """Entries whose attributes the caller may change (held sizes are laid over them)."""
    return [DirEntry(e.name, dataclasses.replace(e.attributes)) for e in entries]
