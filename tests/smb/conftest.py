"""The loopback Samba server for the smb:// tests (``smbd``).

It fails (never skips) when smbd is missing or does not start: CI must not pass without it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.smbd import LoopbackSmbd


@pytest.fixture(scope="session")
def smbd() -> Iterator[LoopbackSmbd]:
    """Outside pytest's tmp dirs, which only root may enter: the non-root account logs
    in too, and smbd serves it as that Unix user."""
    base = Path(tempfile.mkdtemp(prefix="rxfs-smbd-"))
    base.chmod(0o711)
    try:
        with LoopbackSmbd(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)
