"""Loopback OpenSSH servers for the sftp:// tests.

Both fixtures fail (never skip) when sshd is missing: CI must not pass without it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd, ensure_test_account, shared_password


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """sshd on 127.0.0.1 logging in the current user (root here) by key; root is a tmp dir."""
    with LoopbackSshd(root=tmp_path_factory.mktemp("sftp-root")) as server:
        yield server


@pytest.fixture(scope="session")
def sshd_user() -> Iterator[LoopbackSshd]:
    """sshd for the non-root test account, by key or by ``sshd_user.password``.

    Its root is a fresh dir owned by that account (pytest's tmp dirs are private to root).
    """
    account = ensure_test_account()
    with LoopbackSshd(account.pw_name, password=shared_password(account.pw_name)) as server:
        yield server
