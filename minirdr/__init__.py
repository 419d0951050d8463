"""Mini-redirectors: the protocol backends implement, and the registry that finds them."""

from ._protocol import Capability, MiniRdrDispatch
from ._registry import BackendInfo, UnknownSchemeError, available_backends, load_backend

__all__ = [
    "BackendInfo",
    "Capability",
    "MiniRdrDispatch",
    "UnknownSchemeError",
    "available_backends",
    "load_backend",
]
