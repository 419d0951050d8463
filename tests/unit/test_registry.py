"""The backend registry: mini-redirectors found by URL scheme through entry points."""

from __future__ import annotations

import pytest
from rxfs.minirdr import MiniRdrDispatch, UnknownSchemeError, available_backends, load_backend
from rxfs.minirdr.memory import MemoryMiniRdr


def test_available_backends_lists_memory_and_sftp_from_the_entry_point_group() -> None:
    backends = available_backends()
    assert {"memory", "sftp"} <= set(backends)
    assert list(backends) == sorted(backends)
    for scheme in ("memory", "sftp"):
        info = backends[scheme]
        assert info.entry_point.group == "rxfs.minirdr"
        assert info.entry_point.name == scheme
        assert info.distribution == "rxfs"
    assert backends["memory"].entry_point.value == "rxfs.minirdr.memory:MemoryMiniRdr"
    assert backends["sftp"].entry_point.value == "rxfs.minirdr.sftp:SftpMiniRdr"


def test_load_backend_returns_the_mini_redirector_class() -> None:
    cls = load_backend("memory")
    assert cls is MemoryMiniRdr
    assert issubclass(cls, MiniRdrDispatch) and cls.scheme == "memory"


def test_unknown_scheme_raises_with_the_installed_schemes_named() -> None:
    with pytest.raises(UnknownSchemeError) as caught:
        load_backend("gopher")
    message = str(caught.value)
    assert "'gopher'" in message
    assert "memory://" in message and "sftp://" in message
    assert caught.value.scheme == "gopher"
    assert isinstance(caught.value, LookupError)
