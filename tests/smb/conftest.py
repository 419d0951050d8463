"""The loopback Samba server for the smb:// tests (``smbd``).

It fails (never skips) when smbd is missing or does not start: CI must not pass without it.
"""

from __future__ import annotations

from tests.support.smbd import smbd

__all__ = ["smbd"]
