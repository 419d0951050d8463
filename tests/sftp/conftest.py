"""Loopback OpenSSH servers for the sftp:// tests (``sshd``, ``sshd_user``).

Both fail (never skip) when sshd is missing: CI must not pass without it.
"""

from __future__ import annotations

from tests.support.sshd import sshd, sshd_user

__all__ = ["sshd", "sshd_user"]
