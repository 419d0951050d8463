"""Fixtures of the smb:// tests. The loopback Samba server (``smbd``) is tests/conftest.py's,
one per session: tests/integration's ``target`` runs the ordinary-tool tests on it too.

smbd fails (never skips) when it is missing or does not start: CI must not pass without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.smbd import LoopbackSmbd


@pytest.fixture
def share(smbd: LoopbackSmbd) -> Path:
    """A fresh directory of the share, open to every account, for one test."""
    return smbd.fresh_dir()
