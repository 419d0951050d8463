"""Find mini-redirectors by URL scheme through the ``rxfs.minirdr`` entry-point group."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from ._protocol import MiniRdrDispatch

__all__ = ["BackendInfo", "UnknownSchemeError", "available_backends", "load_backend"]

GROUP = "rxfs.minirdr"


class UnknownSchemeError(LookupError):
    def __init__(self, scheme: str, known: list[str]) -> None:
        super().__init__(
            f"no mini-redirector for the scheme {scheme!r}: installed are "
            + (", ".join(f"{k}://" for k in known) or "none")
            + " (see 'rxfs backends')"
        )
        self.scheme = scheme


@dataclass(frozen=True)
class BackendInfo:
    scheme: str
    entry_point: EntryPoint

    @property
    def distribution(self) -> str:
        dist = self.entry_point.dist
        return dist.name if dist is not None else "?"

    @property
    def version(self) -> str:
        dist = self.entry_point.dist
        return dist.version if dist is not None else "?"

    def load(self) -> type[MiniRdrDispatch]:
        cls = self.entry_point.load()
        if not (isinstance(cls, type) and issubclass(cls, MiniRdrDispatch)):
            raise TypeError(f"{self.entry_point.value} is not a MiniRdrDispatch subclass")
        return cls


def available_backends() -> dict[str, BackendInfo]:
    """The installed backends by scheme (the entry point's name is the scheme)."""
    found: dict[str, BackendInfo] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, BackendInfo(ep.name, ep))
    return dict(sorted(found.items()))


def load_backend(scheme: str) -> type[MiniRdrDispatch]:
    backends = available_backends()
    try:
        return backends[scheme].load()
    except KeyError:
        raise UnknownSchemeError(scheme, list(backends)) from None
